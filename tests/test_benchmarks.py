"""Smoke run of the asv suite: a broken benchmark fails CI (what ``asv check`` would catch, and more).

Every module of ``benchmarks/benchmarks/`` is imported the way asv imports
it; every benchmark class is instantiated, ``setup`` is called with the
FIRST combination of its parameters (``setup_cache`` first, where defined),
every ``time_*``, ``peakmem_*`` and ``track_*`` method is called once, and
``teardown`` last.  A ``setup`` that raises ``NotImplementedError`` (asv's
way of skipping) or needs an optional library that is missing skips the
class.  ``track_*`` must return a number.

Classes whose setup is slow are listed in :data:`SLOW` and run only when
``MATFREE_BENCH_SLOW=1`` is set (``distributed.ShardedSumProduct`` starts a
Dask cluster of two processes, about 20 s), which keeps this module well
under a minute.  ``benchmarks/compare.py`` gets a ``--quick`` run of its
cheapest tasks.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import numbers
import os
import pkgutil
import sys
from pathlib import Path

import pytest

BENCH_ROOT = Path(__file__).resolve().parents[1] / "benchmarks"
PACKAGE = "benchmarks"  # asv's benchmark_dir, imported as a package from its parent

#: "module.Class" whose setup takes long; run with MATFREE_BENCH_SLOW=1
SLOW = {"distributed.ShardedSumProduct"}

_PREFIXES = ("time_", "peakmem_", "track_", "mem_", "timeraw_")


def _import_package():
    """Import ``benchmarks/benchmarks`` as the package ``benchmarks`` (as asv does)."""
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent != BENCH_ROOT / PACKAGE:
        del sys.modules[PACKAGE]  # e.g. the namespace package of the repository's benchmarks/
    if str(BENCH_ROOT) not in sys.path:
        sys.path.insert(0, str(BENCH_ROOT))
    return importlib.import_module(PACKAGE)


def _modules():
    pkg = _import_package()
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _benchmark_classes(module):
    out = []
    for name, obj in vars(module).items():
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_"):
            if any(m.startswith(_PREFIXES) for m in dir(obj)):
                out.append(name)
    return sorted(out)


def _cases():
    cases = []
    for mod in _modules():
        try:
            module = importlib.import_module(f"{PACKAGE}.{mod}")
        except ImportError as err:
            cases.append(pytest.param(mod, None, id=f"{mod}-import", marks=pytest.mark.skip(reason=str(err))))
            continue
        for cls in _benchmark_classes(module):
            cases.append(pytest.param(mod, cls, id=f"{mod}.{cls}"))
        if any(n.startswith(_PREFIXES) and callable(f) for n, f in vars(module).items()):
            cases.append(pytest.param(mod, "<functions>", id=f"{mod}.functions"))
    return cases


def first_params(cls):
    """The first combination of an asv ``params`` attribute (one or several parameters)."""
    params = getattr(cls, "params", None)
    if params is None:
        return ()
    names = getattr(cls, "param_names", None)
    nested = isinstance(params, (list, tuple)) and params and all(isinstance(p, (list, tuple)) for p in params)
    if nested and (names is None or len(names) == len(params)):
        return tuple(p[0] for p in params)
    return (params[0],)


def _call_once(obj, name, args):
    result = getattr(obj, name)(*args)
    if name.startswith("track_"):
        assert isinstance(result, numbers.Real), f"{name} returned {result!r}, not a number"
        assert not math.isnan(float(result)), f"{name} returned NaN"


def test_benchmark_modules_found():
    mods = _modules()
    assert "backends" in mods and "common" in mods


@pytest.mark.parametrize(("module_name", "class_name"), _cases())
def test_benchmark_runs_once(module_name, class_name):
    module = importlib.import_module(f"{PACKAGE}.{module_name}")
    if class_name == "<functions>":
        for name, fn in sorted(vars(module).items()):
            if name.startswith(_PREFIXES) and callable(fn):
                fn()
        return
    if f"{module_name}.{class_name}" in SLOW and os.environ.get("MATFREE_BENCH_SLOW") != "1":
        pytest.skip("slow setup; set MATFREE_BENCH_SLOW=1 to run it")
    cls = getattr(module, class_name)
    obj = cls()
    args = first_params(cls)
    if hasattr(obj, "setup_cache"):
        args = (obj.setup_cache(), *args)
    try:
        if hasattr(obj, "setup"):
            obj.setup(*args)
    except NotImplementedError as err:
        pytest.skip(f"setup skipped itself: {err}")
    except ImportError as err:
        pytest.skip(f"optional library missing: {err}")
    try:
        for name in sorted(n for n in dir(obj) if n.startswith(_PREFIXES)):
            _call_once(obj, name, args)
    finally:
        if hasattr(obj, "teardown"):
            obj.teardown(*args)


def test_first_params_convention():
    class One:
        params = [3, 4]
        param_names = ["n"]

    class Two:
        params = (["a", "b"], [1, 2])
        param_names = ["x", "y"]

    class Lists:  # one parameter whose values are lists
        params = [[1, 2], [3, 4]]
        param_names = ["pair"]

    class NoParams:
        pass

    assert first_params(One) == (3,)
    assert first_params(Two) == ("a", 1)
    assert first_params(Lists) == ([1, 2],)
    assert first_params(NoParams) == ()
    assert list(itertools.islice(iter(first_params(Two)), 1)) == ["a"]


def test_compare_script_quick():
    """``benchmarks/compare.py --quick`` on its cheapest tasks prints one table."""
    if str(BENCH_ROOT) not in sys.path:
        sys.path.insert(0, str(BENCH_ROOT))
    compare = importlib.import_module("compare")
    tab = compare.main(["--quick", "--tasks", "sparse", "cg", "--repeat", "1"])
    tasks = [row[0] for row in tab.rows]
    assert any(t.startswith("CSR matvec") for t in tasks)
    assert any(t.startswith("CG to rtol 1e-8") for t in tasks)
    assert not [n for n in tab.notes if "failed" in n]
