"""``progress=True`` in cg (single, block, multi-shift), minres and steihaug_cg.

A fake ``tqdm.auto`` module records what the solvers ask of the bar; the
postfix values are checked against the residual history the solver returns
(an independent record of the same iteration).  Real tqdm is exercised once
with ``capsys``; without tqdm, only ``progress=True`` fails.
"""

import sys
import time
import types

import numpy as np
import pytest
from conftest import to_np

from matfree import solvers
from matfree import NonFiniteError, from_hvp
from matfree.solvers import cg, minres, steihaug_cg

N = 24


class FakeTqdm:
    """Records the constructor arguments, every update with its postfix, and close."""

    instances = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.updates = []  # (n, postfix dict)
        self.postfix = {}
        self.closed = False
        FakeTqdm.instances.append(self)

    def set_postfix(self, postfix, refresh=True):
        self.postfix = dict(postfix)

    def update(self, n=1):
        self.updates.append((n, dict(self.postfix)))

    def close(self):
        self.closed = True

    # the postfix values as numbers (matfree._progress formats floats with 3 digits)
    def values(self):
        return np.array([float(p["rel_res"]) for _, p in self.updates])

    def total(self):
        return sum(n for n, _ in self.updates)


@pytest.fixture
def fake_tqdm(monkeypatch):
    FakeTqdm.instances = []
    module = types.ModuleType("tqdm.auto")
    module.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm.auto", module)
    return FakeTqdm


@pytest.fixture
def every_step(monkeypatch):
    """Refresh the bar at every iteration (the default is at most every 0.1 s)."""
    monkeypatch.setattr(solvers._Progress, "INTERVAL", 0.0)


def _spd(rng, n=N, lo=0.01, hi=10.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.geomspace(lo, hi, n)) @ Q.T
    return (A + A.T) / 2


def _close3(got, want):
    """The postfix is printed to 3 significant digits."""
    np.testing.assert_allclose(got, want, rtol=6e-3, atol=0)


def _only_bar(fake):
    assert len(fake.instances) == 1
    bar = fake.instances[0]
    assert bar.closed
    return bar


# ----------------------------------------------------------------------
# The postfix is the relative residual of the history, every iteration
# ----------------------------------------------------------------------


def test_cg_single_bar_every_backend(case, np_rng, fake_tqdm, every_step):
    A, b = _spd(np_rng), np_rng.standard_normal(N)
    res = cg(case.asarray(A), case.asarray(b), damping=0.1, rtol=100 * case.eps, progress=True)
    bar = _only_bar(fake_tqdm)
    assert bar.kwargs["total"] == 10 * N and bar.kwargs["desc"] == "cg" and bar.kwargs["unit"] == "iter"
    assert [n for n, _ in bar.updates] == [1] * res.num_iters
    bnorm = np.linalg.norm(to_np(case.asarray(b)).astype(np.float64))
    _close3(bar.values(), res.residual_norms[1:] / bnorm)


def test_cg_block_bar_shows_worst_unconverged_column(np_rng, fake_tqdm, every_step):
    A = _spd(np_rng)
    Bm = np_rng.standard_normal((N, 3)) * np.array([1.0, 1e3, 1e-2])
    # atol retires the small column early at a relative residual above the others' final
    # ones: the bar must stop showing it once it has left the block
    res = cg(A, Bm, rtol=1e-10, atol=1e-4, progress=True)
    bar = _only_bar(fake_tqdm)
    assert bar.kwargs["desc"] == "cg (block of 3)" and bar.total() == res.num_iters
    H, tol, bnorm = res.residual_norms, res.info["tol"], np.linalg.norm(Bm, axis=0)
    want = [np.max((H[i] / bnorm)[H[i - 1] > tol]) for i in range(1, res.num_iters + 1)]
    _close3(bar.values(), want)
    assert res.info["statuses"] == ["converged"] * 3
    assert bar.values()[-1] < 0.1 * H[-1, 2] / bnorm[2]


def test_cg_multishift_bar_shows_worst_unconverged_shift(np_rng, fake_tqdm, every_step):
    A, b = _spd(np_rng), np_rng.standard_normal(N)
    shifts = [0.0, 1.0, 100.0]
    res = cg(A, b, damping=shifts, rtol=1e-10, progress=True)
    bar = _only_bar(fake_tqdm)
    assert bar.kwargs["desc"] == "cg (3 shifts)" and bar.total() == res.num_iters
    H, tol = res.residual_norms, res.info["tol"]
    want = [np.max(H[i][H[i - 1] > tol]) / np.linalg.norm(b) for i in range(1, res.num_iters + 1)]
    _close3(bar.values(), want)
    # a large shift converges first, so the worst residual is that of the smallest shift
    assert res.info["iterations_per_shift"][2] < res.info["iterations_per_shift"][0]


def test_minres_and_steihaug_bars(np_rng, fake_tqdm, every_step):
    Q, _ = np.linalg.qr(np_rng.standard_normal((N, N)))
    A = (Q * np.linspace(-2.0, 3.0, N)) @ Q.T
    A = (A + A.T) / 2
    b = np_rng.standard_normal(N)
    res = minres(A, b, shift=0.05, rtol=1e-10, progress=True)
    bar = _only_bar(fake_tqdm)
    assert bar.kwargs["desc"] == "minres" and bar.kwargs["total"] == 5 * N
    _close3(bar.values(), res.residual_norms[1:] / np.linalg.norm(b))
    assert bar.total() == res.num_iters

    fake_tqdm.instances = []
    S = _spd(np_rng, lo=1.0)
    res = steihaug_cg(S, b, radius=1e6, rtol=1e-8, progress=True)
    bar = _only_bar(fake_tqdm)
    assert res.status == "converged" and bar.kwargs["desc"] == "steihaug_cg"
    _close3(bar.values(), res.residual_norms[1:] / np.linalg.norm(b))


# ----------------------------------------------------------------------
# Throttling, closing, and the cost of progress=False
# ----------------------------------------------------------------------


def test_default_throttle_still_counts_every_iteration(np_rng, fake_tqdm):
    """Refreshed at most every 0.1 s, but close() flushes: the count and last value are exact."""
    A, b = _spd(np_rng, lo=1e-3), np_rng.standard_normal(N)
    res = cg(A, b, rtol=1e-12, progress=True)
    bar = _only_bar(fake_tqdm)
    assert res.num_iters > 5 and bar.total() == res.num_iters
    assert len(bar.updates) < res.num_iters  # throttled: not one refresh per iteration
    _close3(bar.values()[-1], res.residual_norms[-1] / np.linalg.norm(b))


def test_bar_closed_on_fault_and_on_exception(np_rng, fake_tqdm, every_step):
    A, b = _spd(np_rng), np_rng.standard_normal(N)
    calls = {"n": 0}

    def hvp(v, fail):
        calls["n"] += 1
        if calls["n"] == 3:
            raise fail
        return A @ v

    op = from_hvp(lambda v: hvp(v, NonFiniteError("NaN in the product")), like=b)
    res = cg(op, b, progress=True)
    assert res.status == "non_finite" and _only_bar(fake_tqdm).total() == res.num_iters == 2

    fake_tqdm.instances, calls["n"] = [], 0
    op = from_hvp(lambda v: hvp(v, KeyboardInterrupt()), like=b)
    with pytest.raises(KeyboardInterrupt):
        cg(op, b, progress=True)
    assert _only_bar(fake_tqdm).total() == 2


def test_no_bar_and_no_import_without_progress(np_rng, fake_tqdm, monkeypatch):
    monkeypatch.delitem(sys.modules, "tqdm.auto")
    A, b = _spd(np_rng), np_rng.standard_normal(N)
    cg(A, b)
    cg(A, np.stack([b, 2 * b], axis=1), progress=False)
    cg(A, b, damping=[0.0, 1.0])
    minres(A, b)
    steihaug_cg(A, b, radius=1.0)
    assert fake_tqdm.instances == [] and "tqdm.auto" not in sys.modules


def test_missing_tqdm_fails_only_with_progress(np_rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    A, b = _spd(np_rng), np_rng.standard_normal(N)
    assert cg(A, b).status == "converged"
    for run in (
        lambda: cg(A, b, progress=True),
        lambda: cg(A, b, damping=[0.0, 1.0], progress=True),
        lambda: minres(A, b, progress=True),
        lambda: steihaug_cg(A, b, 1.0, progress=True),
    ):
        with pytest.raises(ImportError, match=r"pip install 'matfree-hessian\[progress\]'"):
            run()


@pytest.mark.parametrize("solver", ["cg", "minres", "steihaug_cg"])
def test_progress_must_be_a_bool(np_rng, solver):
    A, b = _spd(np_rng), np_rng.standard_normal(N)
    call = {
        "cg": lambda p: cg(A, b, progress=p),
        "minres": lambda p: minres(A, b, progress=p),
        "steihaug_cg": lambda p: steihaug_cg(A, b, 1.0, progress=p),
    }[solver]
    with pytest.raises(TypeError, match="progress must be True or False, got str"):
        call("yes")
    assert call(np.bool_(False)).num_matvecs > 0


def test_real_tqdm_writes_the_bar_to_stderr(np_rng, capsys):
    pytest.importorskip("tqdm")
    A = np.diag([1.0, 2.0, 3.0])
    b = np.ones(3)
    # slow iterations (0.15 s each) so that tqdm redraws past its 0.1 s mininterval
    res = cg(A, b, rtol=1e-12, callback=lambda x: time.sleep(0.15), progress=True)
    err = capsys.readouterr().err
    assert res.status == "converged" and res.num_iters == 3
    assert "cg:" in err and "rel_res=" in err and "iter" in err
