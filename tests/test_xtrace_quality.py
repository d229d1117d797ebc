"""Quality of the XTrace family (issue 4): exactness, budgets, error bars and their coverage.

Deterministic properties run on every backend and dtype; the statistical
checks use NumPy, small n, fixed seeds, and bounds derived from the
binomial spread of a coverage over a fixed number of trials.  The operator
of the statistical checks is ``Diagonal(lam)`` estimated without its exact
trace: XTrace and XNysTrace with sphere probes are rotation invariant, so
their errors on ``diag(lam)`` have the same law as on ``Q diag(lam) Qᵀ`` for
any orthogonal ``Q``, and the products cost O(n).
"""

import importlib
import math

import numpy as np
import pytest
from conftest import to_np
from scipy import stats

import matfree
from matfree.diagonal import diagonal
from matfree.trace import trace

tr = importlib.import_module("matfree.trace")

Z95 = 1.959964


def _spectrum(name, n):
    i = np.arange(1, n + 1, dtype=float)
    if name == "flat":
        return np.ones(n)
    if name.startswith("pow"):
        return i ** -float(name[3:])
    return np.exp(-(i - 1) / 10.0)


def _rotated(lam, seed=0):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((lam.size, lam.size)))
    return (Q * lam) @ Q.T


def _hvp(case, M):
    Ma = case.asarray(M)
    return matfree.from_hvp(
        lambda v: Ma @ v, like=case.asarray(np.zeros(M.shape[0])), batched=lambda V: Ma @ V
    )


# ----------------------------------------------------------------------
# exactness of the normalised ("improved") estimators
# ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["xtrace", "xnystrace"])
@pytest.mark.parametrize("probes", ["sphere", "gaussian"])
def test_normalized_estimators_are_exact_on_a_multiple_of_identity(case, method, probes):
    """For A = c·Qᵀ I Q every normalised leave-one-out estimate is exactly c·n.

    XTrace: tr(Q_iᵀ A Q_i) = c(k-1) and the rescaled residual term is
    c(n-k+1); XNysTrace likewise.  Without normalisation (Rademacher) the
    residual term fluctuates, so this is what the normalisation buys on a
    flat spectrum (Epperly, Tropp, Webber 2024, section 2.2).
    """
    n, c = 40, 2.5
    M = _rotated(c * np.ones(n), seed=3)
    est = trace(_hvp(case, M), method=method, num_matvecs=12, probes=probes, rng=1)
    assert est.info["normalized"] is True
    tol = 50 * n * case.eps * c * n
    assert abs(float(est) - c * n) <= tol
    assert float(est.stderr) <= tol
    np.testing.assert_allclose(to_np(est.info["estimates"]), c * n, atol=tol)


def test_rademacher_xtrace_is_not_normalized_and_not_exact_on_identity():
    M = _rotated(np.ones(40), seed=3)
    est = trace(matfree.Dense(M), method="xtrace", num_matvecs=12, probes="rademacher",
                use_exact=False, rng=1)
    assert est.info["normalized"] is False
    assert float(est.stderr) > 1e-6  # the residual term fluctuates with the probe


# ----------------------------------------------------------------------
# budgets: even split, odd budgets, blocks that do not divide the budget
# ----------------------------------------------------------------------


def test_xtrace_budget_splits_into_sketch_and_basis():
    """m products: m/2 probes (Y = AΩ), m/2 basis products (Z = AQ); k - 1 degrees of freedom."""
    M = _rotated(_spectrum("pow1", 60), seed=1)
    A = matfree.from_hvp(lambda v: M @ v, size=60, batched=lambda V: M @ V)
    est = trace(A, method="xtrace", num_matvecs=18, rng=0)
    assert est.num_matvecs == A.num_matvecs == 18
    assert est.info["num_probes"] == 9 and est.info["dof"] == 8
    assert to_np(est.info["estimates"]).shape == (9,)


def test_odd_xtrace_budget_is_refused_with_the_rule():
    A = matfree.Dense(np.eye(20))
    with pytest.raises(ValueError, match=r"num_matvecs=7 is not a multiple of 2; method='xtrace'"):
        trace(A, method="xtrace", num_matvecs=7, use_exact=False)


@pytest.mark.parametrize("method", ["xtrace", "xnystrace"])
@pytest.mark.parametrize("block_size", [1, 4, 7])
def test_block_size_not_dividing_the_budget_changes_nothing(method, block_size):
    """Blocks only group the products: the probes and hence the estimate are the same."""
    M = _rotated(_spectrum("pow1", 50), seed=2)
    A = matfree.Dense(M)
    whole = trace(A, method=method, num_matvecs=20, use_exact=False, rng=5)
    split = trace(A, method=method, num_matvecs=20, block_size=block_size, use_exact=False, rng=5)
    assert split.num_matvecs == 20
    np.testing.assert_allclose(float(split), float(whole), rtol=1e-12)
    np.testing.assert_allclose(float(split.stderr), float(whole.stderr), rtol=1e-8)


# ----------------------------------------------------------------------
# leave-two-out estimates (the covariance correction) against naive ones
# ----------------------------------------------------------------------


def _setup(M):
    return tr._make_setup(matfree.Dense(M), "gaussian", 64, 0)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_xtrace_leave_two_out_matches_naive(normalize, symmetric):
    rng = np.random.default_rng(7)
    n, k = 30, 6
    M = _rotated(_spectrum("pow1", n)) if symmetric else rng.standard_normal((n, n))
    Om = rng.standard_normal((n, k))
    Y = M @ Om
    Q, R = np.linalg.qr(Y)
    got = tr._xtrace_leave_two_out(_setup(M), tr._Sketch(Om, Y, Q, R, M @ Q), normalize)
    want = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            Qij = np.linalg.qr(np.delete(Y, [i, j], axis=1))[0]
            w = Om[:, i] - Qij @ (Qij.T @ Om[:, i])
            resid = w @ M @ w * ((n - k + 2) / (w @ w) if normalize else 1.0)
            want[i, j] = np.trace(Qij.T @ M @ Qij) + resid
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("normalize", [False, True])
def test_xnystrace_leave_two_out_matches_naive(normalize):
    rng = np.random.default_rng(8)
    n, k = 30, 6
    M = _rotated(_spectrum("pow1", n))
    Om = rng.standard_normal((n, k))
    Y = M @ Om
    setup = _setup(M)
    core = tr._nystrom_core(setup, Om, Y, "xnystrace")
    one, got = tr._xnystrace_leave_outs(setup, Om, core, normalize)
    want_one, _ = tr._xnystrace_estimates(setup, Om, Y, normalize)
    np.testing.assert_allclose(one, want_one, rtol=1e-10)
    want = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            keep = [a for a in range(k) if a not in (i, j)]
            Oij, Yij = Om[:, keep], Y[:, keep]
            Ahat = Yij @ np.linalg.solve(Oij.T @ Yij, Yij.T)
            w = Om[:, i]
            resid = w @ (M - Ahat) @ w
            if normalize:
                Qo = np.linalg.qr(Oij)[0]
                pw = w - Qo @ (Qo.T @ w)
                resid *= (n - k + 2) / (pw @ pw)
            want[i, j] = np.trace(Ahat) + resid
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11 * np.abs(want).max())


def test_pairwise_interaction_is_the_mean_product_of_leave_two_out_changes():
    rng = np.random.default_rng(3)
    k = 5
    ests, pair = rng.standard_normal(k), rng.standard_normal((k, k))
    D = ests[:, None] - pair
    want = sum(D[i, j] * D[j, i] for i in range(k) for j in range(k) if i != j) / (k * (k - 1))
    assert math.isclose(float(tr._pairwise_interaction(np, ests, pair)), want, rel_tol=1e-12)


# ----------------------------------------------------------------------
# degrees of freedom and the Student-t stopping rule
# ----------------------------------------------------------------------


@pytest.mark.parametrize("dof", [1, 4, 9, 14, 149])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_student_t_quantile_matches_scipy(dof, level):
    assert math.isclose(tr._student_t_quantile(level, dof), stats.t.ppf(0.5 + level / 2, dof),
                        rel_tol=1e-10)


def test_dof_is_reported_by_every_member_of_the_family():
    M = _rotated(_spectrum("pow1", 40), seed=6)
    A = matfree.Dense(M)
    assert trace(A, method="xtrace", num_matvecs=16, use_exact=False, rng=0).info["dof"] == 7
    assert trace(A, method="xnystrace", num_matvecs=16, use_exact=False, rng=0).info["dof"] == 15
    assert diagonal(A, method="xdiag", num_matvecs=16, use_exact=False, rng=0).info["dof"] == 7
    assert diagonal(A, method="xnysdiag", num_matvecs=16, use_exact=False, rng=0).info["dof"] == 15


@pytest.mark.parametrize("method", ["xtrace", "xnystrace"])
def test_adaptive_run_stops_on_the_student_t_half_width(case, method):
    """At stopping t_{k-1}·stderr <= rtol·|value|; at the round before it was not yet met."""
    M = _rotated(_spectrum("pow1", 150), seed=4)
    rtol = 0.02
    est = trace(_hvp(case, M), method=method, rtol=rtol, max_matvecs=150, rng=3)
    assert est.status == "converged"
    q = stats.t.ppf(0.975, est.info["dof"])
    assert q * float(est.stderr) <= rtol * abs(float(est)) * (1 + 10 * case.eps)
    history = est.info["history"]
    assert len(history) >= 2
    prev = history[-2]
    # the previous round had fewer probes (a larger quantile) and did not stop
    k_prev = (prev["num_matvecs"] // 2) if method == "xtrace" else prev["num_matvecs"]
    q_prev = stats.t.ppf(0.975, k_prev - 1)
    assert q_prev * prev["stderr"] > rtol * abs(prev["value"])


# ----------------------------------------------------------------------
# coverage of the 95% interval over seeded trials
# ----------------------------------------------------------------------

_ROUNDING = 1e3 * np.finfo(float).eps


def _coverage(method, lam, m, trials, seed0=2000):
    """Share of ``trials`` runs whose 95% interval (normal, Student t) holds the truth."""
    A = matfree.Diagonal(lam)
    truth = lam.sum()
    z_hits = t_hits = 0
    for t in range(trials):
        est = trace(A, method=method, num_matvecs=m, use_exact=False, rng=seed0 + t)
        err = max(abs(float(est) - truth) - _ROUNDING * truth, 0.0)
        se = float(est.stderr)
        z_hits += err <= Z95 * se
        t_hits += err <= stats.t.ppf(0.975, est.info["dof"]) * se
    return z_hits / trials, t_hits / trials


def _binomial_floor(p, trials, sigmas=3.0):
    """``p - sigmas · sqrt(p(1-p)/trials)``: a coverage of ``p`` stays above this."""
    return p - sigmas * math.sqrt(p * (1 - p) / trials)


def _binomial_ceiling(p, trials, sigmas=3.0):
    """``p + sigmas · sqrt(p(1-p)/trials)``: a coverage of ``p`` stays below this."""
    return p + sigmas * math.sqrt(p * (1 - p) / trials)


def test_xtrace_interval_is_calibrated_on_a_slowly_decaying_spectrum():
    """n = 400, i^-0.5, k = 10: the Student-t interval covers the truth in 95% of runs.

    Up to the binomial spread of 200 trials; the paper's ``std / sqrt(k)``
    with the normal quantile covers about 0.88 here.
    """
    trials = 200
    z_cov, t_cov = _coverage("xtrace", _spectrum("pow0.5", 400), 20, trials)
    assert _binomial_floor(0.95, trials) <= t_cov <= _binomial_ceiling(0.95, trials)
    assert t_cov >= z_cov


@pytest.mark.parametrize("method", ["xtrace", "xnystrace"])
@pytest.mark.parametrize("spectrum_name", ["pow1", "pow2", "exp"])
def test_interval_is_calibrated_on_decaying_spectra(method, spectrum_name):
    """The covariance-corrected standard error gives 95% intervals that cover 95%.

    At n = 100, m = 20 the paper's ``std / sqrt(k)`` with the Student-t
    quantile covered only 0.79-0.90 of 200 runs (the leave-one-out estimates
    are positively correlated); adding the leave-two-out estimate of their
    covariance brings the coverage to 0.95 up to the binomial spread, and
    not above it (the intervals are not needlessly wide either).
    """
    trials = 200
    _, t_cov = _coverage(method, _spectrum(spectrum_name, 100), 20, trials)
    assert _binomial_floor(0.95, trials) <= t_cov <= _binomial_ceiling(0.95, trials)


def test_paper_stderr_is_kept_in_info_and_is_smaller():
    M = _rotated(_spectrum("pow1", 60), seed=9)
    est = trace(matfree.Dense(M), method="xtrace", num_matvecs=20, use_exact=False, rng=4)
    paper, gamma = float(est.info["stderr_paper"]), float(est.info["interaction"])
    ests = to_np(est.info["estimates"])
    assert math.isclose(paper, ests.std(ddof=1) / math.sqrt(ests.size), rel_tol=1e-10)
    want = math.sqrt(paper**2 + max(gamma, 0.0))
    assert math.isclose(float(est.stderr), want, rel_tol=1e-10)
