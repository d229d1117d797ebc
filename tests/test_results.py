"""Result types print readably, give intervals, plot; progress bars are optional."""

import numpy as np
import pytest

from matfree import EigResult, Estimate, SolveResult
from matfree._progress import progress_bar


def test_estimate_interval_and_repr():
    est = Estimate(value=10.0, stderr=0.5, num_matvecs=30, method="hutchinson")
    lo, hi = est.ci
    assert lo == pytest.approx(10 - 1.959964 * 0.5) and hi == pytest.approx(10 + 1.959964 * 0.5)
    lo90, _ = est.confidence_interval(0.90)
    assert lo90 == pytest.approx(10 - 1.644854 * 0.5)
    text = repr(est)
    assert "value=10" in text and "95% CI=[9.0200" in text and "num_matvecs=30" in text
    assert float(est) == 10.0
    with pytest.raises(ValueError, match="level=1.5 must be in"):
        est.confidence_interval(1.5)


def test_array_estimate_repr():
    est = Estimate(value=np.arange(6.0), stderr=np.ones(6), num_matvecs=4, method="xdiag")
    assert "(shape (6,))" in repr(est) and "CI" not in repr(est)


def test_eig_and_solve_repr():
    e = EigResult(np.array([3.0, 2.0]), None, np.array([1e-9, 1e-10]), 40, True)
    assert "max residual=1e-09" in repr(e)
    s = SolveResult(np.ones(3), True, 5, np.array([1.0, 0.1, 1e-7]), "converged", 5)
    assert "status='converged'" in repr(s) and "final residual=1e-07" in repr(s)


@pytest.fixture
def plt():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_plots_have_labels(plt):
    hist = [{"num_matvecs": m, "value": 1.0 + 1 / m, "stderr": 1 / m} for m in (10, 20, 40)]
    est = Estimate(1.0, 0.02, 40, method="hutchinson", info={"history": hist})
    ax = est.plot(truth=1.0)
    assert ax.get_xlabel() == "matrix-vector products" and "hutchinson" in ax.get_title()
    s = SolveResult(np.ones(2), np.array([True, True]), 3, np.array([[1.0, 1.0], [0.1, 0.2], [1e-3, 1e-2]]), "converged")
    ax = s.plot()
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2
    with pytest.raises(ValueError, match="no history to plot"):
        Estimate(1.0, 0.0, 0).plot()


def test_progress_bar_optional(capsys):
    with progress_bar(False, 10) as bar:
        bar.update(3, err=0.1)
    pytest.importorskip("tqdm")
    with progress_bar(True, 10, desc="cg") as bar:
        bar.update(5, err=0.5)


def test_confidence_interval_uses_student_t_when_dof_is_known():
    """Few exchangeable estimates (XTrace family): the interval takes the t quantile."""
    from scipy import stats

    normal = Estimate(value=10.0, stderr=2.0, num_matvecs=8, method="m")
    lo, hi = normal.confidence_interval(0.9)
    assert hi - 10.0 == pytest.approx(2.0 * stats.norm.ppf(0.95), rel=1e-12)
    few = Estimate(value=10.0, stderr=2.0, num_matvecs=8, method="m", info={"dof": 3})
    lo, hi = few.ci
    assert hi - 10.0 == pytest.approx(2.0 * stats.t.ppf(0.975, 3), rel=1e-12)
    assert 10.0 - lo == pytest.approx(hi - 10.0)
