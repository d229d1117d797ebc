"""Diagonal estimators against dense NumPy references.

Deterministic checks on every backend and dtype; statistical checks on NumPy
with small n, fixed seeds and tolerances from theory.
"""

import importlib

import numpy as np
import pytest
from conftest import to_np
from test_trace import hvp_operator, low_rank_psd, rotated, spectrum

import matfree
from matfree.diagonal import diagonal

# the modules themselves (``matfree.trace``/``matfree.diagonal`` become functions once exported)
dg = importlib.import_module("matfree.diagonal")
tr = importlib.import_module("matfree.trace")

METHODS = ["hutchinson", "xdiag", "xnysdiag"]


# ----------------------------------------------------------------------
# exact operators
# ----------------------------------------------------------------------


def test_exact_operators_return_their_diagonal(case, np_rng):
    n = 10
    a = case.asarray
    M = np_rng.standard_normal((n, n))
    d = np_rng.standard_normal(n)
    U, s = np_rng.standard_normal((n, 2)), np_rng.uniform(0.5, 2.0, 2)
    cases = [
        (matfree.Dense(a(M)), M),
        (matfree.Diagonal(a(d)), np.diag(d)),
        (matfree.LowRank(a(U), a(s)), (U * s) @ U.T),
        (matfree.Dense(a(M)) + matfree.LowRank(a(U), a(s)), M + (U * s) @ U.T),
        (matfree.damped(matfree.Diagonal(a(d)), 0.5), np.diag(d) + 0.5 * np.eye(n)),
    ]
    for op, dense in cases:
        est = diagonal(op, rng=0)
        case.close(est.value, np.diag(dense))
        assert est.value.shape == est.stderr.shape == (n,)
        assert float(case.xp.max(est.stderr)) == 0.0
        assert est.num_matvecs == 0 == op.num_matvecs and est.status == "exact"


# ----------------------------------------------------------------------
# deterministic correctness on every backend
# ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["xdiag", "xnysdiag"])
def test_low_rank_diagonal_is_exact(case, method):
    M = low_rank_psd(40, 3)
    A = hvp_operator(case, M)
    est = diagonal(A, method=method, num_matvecs=24, rng=0)
    case.close(est.value, np.diag(M), rtol=0, atol=1e3 * case.eps)
    assert est.num_matvecs == 24 == A.num_matvecs
    assert est.value.shape == (40,) and est.value.dtype == case.dtype
    assert est.status == "budget"


def test_hutchinson_rademacher_exact_on_diagonal_matrix(case, np_rng):
    d = np_rng.standard_normal(25)
    A = hvp_operator(case, np.diag(d))
    est = diagonal(A, method="hutchinson", num_matvecs=3, rng=0)
    case.close(est.value, d)
    assert float(case.xp.max(est.stderr)) <= 10 * case.eps


def test_xdiag_of_a_non_symmetric_operator_uses_its_transpose(case, np_rng):
    n = 30
    U = np_rng.standard_normal((n, 2))
    M = U @ np_rng.standard_normal((2, n))  # rank 2, not symmetric
    Ma = case.asarray(M)
    xp = case.xp
    A = matfree.FunctionOperator(
        lambda v: Ma @ v, (n, n), case.dtype, xp,
        matmat=lambda V: Ma @ V, rmatmat=lambda V: xp.matrix_transpose(Ma) @ V,
    )
    est = diagonal(A, method="xdiag", num_matvecs=12, rng=0)
    case.close(est.value, np.diag(M), rtol=0, atol=1e3 * case.eps * np.abs(M).max())


@pytest.mark.parametrize("method", METHODS)
def test_probe_kinds_and_reproducibility(case, method):
    M = rotated(spectrum("pow2", 30)) + np.eye(30)
    A = hvp_operator(case, M)
    for probes in ["rademacher", "gaussian", "sphere"]:
        a = diagonal(A, method=method, num_matvecs=12, probes=probes, rng=3)
        b = diagonal(A, method=method, num_matvecs=12, probes=probes, rng=3)
        np.testing.assert_array_equal(to_np(a.value), to_np(b.value))
        # normwise: per-entry spreads of 6 leave-one-out estimates are too noisy
        err = np.linalg.norm(to_np(a.value) - np.diag(M))
        assert err <= 4 * np.linalg.norm(to_np(a.stderr)) + 1e3 * case.eps


# ----------------------------------------------------------------------
# the leave-one-out formulas against naive references (NumPy, float64)
# ----------------------------------------------------------------------


def _orth(Y):
    return np.linalg.qr(Y)[0]


@pytest.mark.parametrize("symmetric", [True, False])
def test_xdiag_matches_naive_leave_one_out(symmetric):
    rng = np.random.default_rng(21)
    n, k = 25, 5
    M = rotated(spectrum("pow1", n)) if symmetric else rng.standard_normal((n, n))
    Om = rng.choice([-1.0, 1.0], size=(n, k))
    Y = M @ Om
    Q, R = np.linalg.qr(Y)
    sk = tr._Sketch(Om, Y, Q, R, M.T @ Q)
    setup = tr._make_setup(matfree.Dense(M), "rademacher", 64, 0)
    got = dg._xdiag_estimates(setup, sk)
    for i in range(k):
        Qi = _orth(np.delete(Y, i, axis=1))
        P = Qi @ Qi.T
        want = np.diag(P @ M) + Om[:, i] * ((np.eye(n) - P) @ M @ Om[:, i])
        np.testing.assert_allclose(got[:, i], want, atol=1e-12)


def test_xnysdiag_matches_naive_leave_one_out():
    rng = np.random.default_rng(22)
    n, k = 25, 5
    M = rotated(spectrum("pow1", n))
    Om = rng.standard_normal((n, k))
    Y = M @ Om
    setup = tr._make_setup(matfree.Dense(M), "gaussian", 64, 0)
    got, _ = dg._xnysdiag_estimates(setup, Om, Y)
    for i in range(k):
        Oi, Yi = np.delete(Om, i, axis=1), np.delete(Y, i, axis=1)
        Ahat = Yi @ np.linalg.solve(Oi.T @ Yi, Yi.T)
        want = np.diag(Ahat) + Om[:, i] * ((M - Ahat) @ Om[:, i])
        np.testing.assert_allclose(got[:, i], want, atol=1e-9)


# ----------------------------------------------------------------------
# statistics (NumPy, small n, fixed seeds)
# ----------------------------------------------------------------------

N_STAT = 60


@pytest.fixture(scope="module")
def stat_matrix():
    # a Hessian-like matrix: decaying spectrum plus a diagonal part
    return rotated(spectrum("pow1", N_STAT), seed=13) + np.diag(np.linspace(0.1, 0.5, N_STAT))


@pytest.mark.parametrize("method", METHODS)
def test_unbiased_entrywise(stat_matrix, method):
    """Every entry's mean over 150 trials lies within 4.5 standard errors of the truth.

    With 60 entries, 4.5 sigma keeps the chance of a false alarm below 1e-3.
    """
    A = matfree.Dense(stat_matrix)
    vals = np.array([to_np(diagonal(A, method=method, num_matvecs=20, use_exact=False,
                                    rng=t).value) for t in range(150)])
    se = vals.std(axis=0, ddof=1) / np.sqrt(vals.shape[0])
    assert np.all(np.abs(vals.mean(axis=0) - np.diag(stat_matrix)) <= 4.5 * se)


def test_hutchinson_diagonal_interval_is_calibrated(stat_matrix):
    """Entrywise 95% intervals of the diagonal Hutchinson estimator cover >= 90% of the truth."""
    A = matfree.Dense(stat_matrix)
    cover = []
    for t in range(200):
        est = diagonal(A, method="hutchinson", num_matvecs=50, use_exact=False, rng=t)
        cover.append(np.abs(est.value - np.diag(stat_matrix)) <= 1.959964 * est.stderr)
    assert np.mean(cover) >= 0.90


def test_xdiag_beats_hutchinson_on_a_low_rank_plus_diagonal_hessian():
    """Low rank dominates the off-diagonal part: XDiag removes it, Hutchinson cannot."""
    n = 120
    M = 100 * low_rank_psd(n, 4, seed=5) / n + np.diag(np.linspace(1.0, 2.0, n))
    A = matfree.Dense(M)
    err = {}
    for method in METHODS:
        errs = [np.linalg.norm(diagonal(A, method=method, num_matvecs=40, use_exact=False,
                                        rng=t).value - np.diag(M)) for t in range(10)]
        err[method] = np.median(errs)
    assert err["xdiag"] < err["hutchinson"] / 4
    assert err["xnysdiag"] < err["hutchinson"] / 4


# ----------------------------------------------------------------------
# adaptive stopping
# ----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_adaptive_normwise_tolerance(case, method):
    M = low_rank_psd(50, 5, seed=6) / 20 + np.diag(np.linspace(1.0, 2.0, 50))
    A = hvp_operator(case, M)
    est = diagonal(A, method=method, rtol=0.2, rng=0)
    assert est.converged and est.status == "converged"
    assert est.num_matvecs == A.num_matvecs <= 50
    value, se = to_np(est.value), to_np(est.stderr)
    assert 1.959964 * np.linalg.norm(se) <= 0.2 * np.linalg.norm(value)
    unreachable = diagonal(A, method=method, rtol=1e-9, max_matvecs=12, rng=0)
    assert unreachable.status == "max_matvecs" and not unreachable.converged
    assert unreachable.num_matvecs <= 12


# ----------------------------------------------------------------------
# bad input and integration
# ----------------------------------------------------------------------


def test_errors():
    A = matfree.Dense(rotated(spectrum("pow1", 10)))
    with pytest.raises(ValueError, match=r"diagonal needs a square operator, got shape \(10, 3\)"):
        diagonal(np.ones((10, 3)))
    with pytest.raises(ValueError, match=r"num_matvecs=7 is not a multiple of 2; method='xdiag'"):
        diagonal(A, method="xdiag", num_matvecs=7, use_exact=False)
    with pytest.raises(ValueError, match=r"num_matvecs=11 exceeds n=10"):
        diagonal(A, method="hutchinson", num_matvecs=11, use_exact=False)
    with pytest.raises(ValueError, match=r"method='xtrace' is not known; expected one of 'xdiag'"):
        diagonal(A, method="xtrace")
    lam = np.concatenate([np.ones(3), -np.ones(3), np.zeros(4)])
    with pytest.raises(ValueError, match=r"method='xnysdiag' needs a positive semidefinite operator"):
        diagonal(matfree.Dense(rotated(lam)), method="xnysdiag", num_matvecs=8, use_exact=False)
    M = np.eye(6)
    M[0, 5] = np.inf
    with pytest.raises(matfree.NonFiniteError, match=r"NaN or Inf"), np.errstate(invalid="ignore"):
        diagonal(matfree.Dense(M), method="hutchinson", num_matvecs=4, use_exact=False)


def test_hessian_diagonal_approximation_uses_the_estimator():
    M = low_rank_psd(30, 3)  # rank 3 < 10 probes: XNysDiag is exact
    A = matfree.from_hvp(lambda v: M @ v, size=30, batched=lambda V: M @ V)
    D = matfree.diagonal_approximation(A, method="xnysdiag", num_matvecs=10, rng=0)
    assert isinstance(D, matfree.Diagonal)
    np.testing.assert_allclose(to_np(D.d), np.diag(M), atol=1e-10)


# ----------------------------------------------------------------------
# executors (issue #9) and progress bars (issue #8)
# ----------------------------------------------------------------------

from test_trace import fake_tqdm, pool, same_estimate  # noqa: E402, F401 - shared fixtures


@pytest.mark.parametrize("method", METHODS)
def test_executor_threads_give_the_serial_estimate_bit_for_bit(case, method, pool):
    M = rotated(spectrum("pow1", 30)) + 0.05 * np.eye(30)
    A = hvp_operator(case, M)
    for kw in (dict(num_matvecs=12, block_size=5), dict(rtol=1e-6, max_matvecs=20, block_size=4)):
        serial = diagonal(A, method=method, rng=3, **kw)
        threads = diagonal(A, method=method, rng=3, executor=pool, **kw)
        same_estimate(serial, threads)
        assert threads.num_matvecs == serial.num_matvecs
    serial = diagonal(A, method=method, num_matvecs=12, rng=3)
    threads = diagonal(A, method=method, num_matvecs=12, rng=3, executor=pool)
    case.close(threads.value, to_np(serial.value), rtol=100 * case.eps, atol=100 * case.eps)


def test_diagonal_progress_bar(fake_tqdm):
    d = np.linspace(1.0, 2.0, 30)
    A = matfree.from_hvp(lambda v: d * v, size=30, batched=lambda V: d[:, None] * V)
    est = diagonal(A, "xdiag", rtol=1e-9, max_matvecs=24, block_size=4, rng=0, progress=True)
    (bar,) = fake_tqdm
    assert bar.total == 24 and bar.n == est.num_matvecs and bar.closed
    assert bar.desc == "diagonal (xdiag)" and "rel_stderr" in bar.postfixes[-1]
    with pytest.raises(TypeError, match="progress must be True or False, got int"):
        diagonal(A, progress=1)
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        diagonal(A, executor=4)
