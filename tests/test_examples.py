"""Run every script in ``examples/`` in its fast mode and check what it prints.

Each example is run in a subprocess (``python examples/<name>.py --fast --out
<tmp>``) with a timeout.  The test then checks

* the exit status is 0 (an example exits with 1 when an estimate disagrees
  with its dense reference),
* every comparison row the example prints, ``name | estimate [± stderr] |
  dense reference | |diff| | allowed | verdict``, is consistent when re-read
  from the text: the printed ``|diff|`` is ``|estimate - reference|`` of the
  printed numbers, it is within the printed allowance, and the verdict is
  ``ok``; and at least the expected number of such rows appeared (so a
  script that stopped printing them fails),
* the PNG figures it should write exist and are real images (not blank),
  when matplotlib is installed.

Examples that need PyTorch, JAX or Dask are skipped when the library is
missing.  BLAS thread pools are pinned to one thread (the problems are small;
on a busy CI machine extra threads only contend).
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 300  # seconds per example; the fast modes take 5-40 s on a loaded 2-core machine

# script, modules it needs, minimum number of comparison rows, figures it writes
CASES = {
    "gp_logdet.py": (["sklearn"], 5, ["gp_log_marginal_likelihood.png", "gp_cg_residuals.png"]),
    "newton_cg_logreg.py": (["sklearn"], 5, ["newton_cg_logreg.png"]),
    "numerical_rank.py": (["sklearn"], 3, ["numerical_rank.png"]),
    "torch_mlp_hessian.py": (["torch", "sklearn"], 5, ["mlp_hessian_density.png"]),
    "jax_hvp.py": (["jax", "sklearn"], 7, []),
    "text_classification.py": (["torch"], 9, ["text_classification.png"]),  # 3 losses, 3 traces, 3 ranks
    # owned by the distributed module; it checks itself and prints no comparison rows
    "distributed_newton_cg.py": (["dask", "distributed", "sklearn"], 0, []),
}

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
ROW = re.compile(
    rf"^\s*(?P<name>\S.*?)\s+\|\s+(?P<est>{_NUMBER})(?:\s+±\s+\S+)?\s+\|\s+(?P<ref>{_NUMBER})\s+\|"
    rf"\s+(?P<diff>{_NUMBER})\s+\|\s+(?P<allowed>{_NUMBER})\s+\|\s+(?P<verdict>ok|MISMATCH)\s*$"
)


def comparison_rows(stdout):
    """The parsed comparison rows of an example's output."""
    rows = []
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            d = m.groupdict()
            rows.append((d["name"], *(float(d[k]) for k in ("est", "ref", "diff", "allowed")), d["verdict"], line))
    return rows


def check_rows(rows):
    """Re-check each printed comparison from the printed numbers."""
    for name, est, ref, diff, allowed, verdict, line in rows:
        assert verdict == "ok", line
        # the printed |diff| is that of the printed numbers (to their printed precision)
        recomputed = abs(est - ref)
        assert abs(recomputed - diff) <= 0.01 * diff + 1e-9 * max(abs(est), abs(ref)), line
        # and it is within the allowance (printed to 3 significant digits)
        assert diff <= allowed * 1.005, line


def run_example(script, out_dir):
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYTHONIOENCODING="utf-8",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    cmd = [sys.executable, "-W", "error::RuntimeWarning", str(EXAMPLES / script), "--fast"]
    if script != "distributed_newton_cg.py":
        cmd += ["--out", str(out_dir)]
    return subprocess.run(
        cmd, capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT, env=env, cwd=str(out_dir)
    )


def test_every_example_is_run():
    """A new script in examples/ must be added to CASES (and so run in CI)."""
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
    assert scripts == sorted(CASES)


def test_row_parser_rejects_inconsistent_rows():
    """The checker fails on a wrong |diff|, an exceeded allowance and a MISMATCH verdict."""
    good = "  log det K        |   -78.38813021 ± 2.6 |  -76.87854696 |  1.51e+00 |  1.05e+01 | ok"
    assert len(comparison_rows(good)) == 1
    check_rows(comparison_rows(good))
    for bad in [
        good.replace("1.51e+00", "1.00e-03"),  # |diff| not that of the numbers
        good.replace("1.05e+01", "1.00e+00"),  # beyond the allowance
        good.replace("| ok", "| MISMATCH"),
    ]:
        with pytest.raises(AssertionError):
            check_rows(comparison_rows(bad))


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_fast_mode(script, tmp_path):
    modules, min_rows, figures = CASES[script]
    for mod in modules:
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{script} needs {mod}, which is not installed")
    proc = run_example(script, tmp_path)
    report = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    rows = comparison_rows(proc.stdout)
    assert len(rows) >= min_rows, report
    check_rows(rows)
    if figures and importlib.util.find_spec("matplotlib") is not None:
        import matplotlib.image
        import numpy as np

        for name in figures:
            path = tmp_path / name
            assert path.is_file(), f"{name} was not written\n{report}"
            img = matplotlib.image.imread(path)
            assert img.shape[0] >= 300 and img.shape[1] >= 400, (name, img.shape)
            assert float(np.std(img[..., :3])) > 0.02, f"{name} looks blank"
