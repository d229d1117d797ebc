"""Trace and Frobenius-norm estimators against dense NumPy references.

Deterministic checks (exact answers where the theory gives them, formulas
against naive leave-one-out references) run on every backend and dtype;
statistical checks (unbiasedness, calibration of the standard error) use
NumPy, small n, fixed seeds and tolerances from theory.
"""

import functools
import importlib
import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from conftest import to_np

import matfree
from matfree.trace import frobenius_norm, trace

# the module itself (``matfree.trace`` becomes the function once it is exported)
tr = importlib.import_module("matfree.trace")

METHODS = ["hutchinson", "hutchpp", "na_hutchpp", "xtrace", "xnystrace"]
SPECTRA = ["flat", "pow0.5", "pow1", "pow2", "pow3", "exp"]


def spectrum(name, n):
    """Eigenvalues of the test matrices of the papers: flat, i^-c, exponential decay."""
    i = np.arange(1, n + 1, dtype=float)
    if name == "flat":
        return np.ones(n)
    if name.startswith("pow"):
        return i ** -float(name[3:])
    if name == "exp":
        return np.exp(-(i - 1) / 10.0)
    raise ValueError(name)


@functools.lru_cache(maxsize=None)
def _haar(n, seed):
    """A random orthogonal n-by-n matrix (cached: QR is the slow part of building tests)."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    Q.setflags(write=False)
    return Q


def rotated(lam, seed=0):
    """Dense symmetric Q diag(lam) Qᵀ with a random orthogonal Q."""
    Q = _haar(lam.size, seed)
    return (Q * lam) @ Q.T


def hvp_operator(case, M):
    """An operator that only knows its products (like a Hessian), on ``case``'s backend."""
    Ma = case.asarray(M)
    like = case.asarray(np.zeros(M.shape[0]))
    return matfree.from_hvp(lambda v: Ma @ v, like=like, batched=lambda V: Ma @ V)


def low_rank_psd(n, r, seed=3):
    U = np.random.default_rng(seed).standard_normal((n, r))
    return U @ U.T


# ----------------------------------------------------------------------
# exact operators
# ----------------------------------------------------------------------


def exact_operators(case, rng):
    n = 12
    M = rng.standard_normal((n, n))
    d = rng.standard_normal(n)
    U, s = rng.standard_normal((n, 3)), rng.uniform(0.5, 2.0, 3)
    a = case.asarray
    yield matfree.Dense(a(M)), M
    yield matfree.Diagonal(a(d)), np.diag(d)
    yield matfree.LowRank(a(U), a(s)), (U * s) @ U.T
    yield matfree.Dense(a(M)) + matfree.Diagonal(a(d)), M + np.diag(d)
    yield 2.0 * matfree.LowRank(a(U), a(s)) + 0.5 * matfree.Identity(n), 2 * (U * s) @ U.T + 0.5 * np.eye(n)


def test_exact_operators_return_their_trace(case, np_rng):
    for op, dense in exact_operators(case, np_rng):
        est = trace(op, rng=0)
        case.close(est.value, np.trace(dense))
        assert float(est.stderr) == 0.0
        assert est.num_matvecs == 0 and op.num_matvecs == 0
        assert est.status == "exact" and est.converged


def test_exact_for_sparse_and_small_n():
    M = sp.random(5, 5, density=0.5, random_state=1, format="csr") + sp.eye(5)
    est = trace(M)  # n = 5 is below XTrace's default budget: exact needs no budget
    assert est.status == "exact"
    np.testing.assert_allclose(float(est), M.diagonal().sum())


# ----------------------------------------------------------------------
# deterministic correctness on every backend
# ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hutchpp", "na_hutchpp", "xtrace", "xnystrace"])
def test_low_rank_trace_is_exact(case, method):
    """Rank 3 < sketch size: the low-rank part captures A and the estimate is exact."""
    M = low_rank_psd(40, 3)
    A = hvp_operator(case, M)
    est = trace(A, method=method, num_matvecs=24, rng=0)
    case.close(est.value, np.trace(M), rtol=1e3 * case.eps, atol=0)
    assert est.num_matvecs == 24 == A.num_matvecs
    assert est.status == "budget" and est.method == method
    assert est.value.dtype == case.dtype and est.stderr.dtype == case.dtype


@pytest.mark.parametrize("probes", ["rademacher", "gaussian", "sphere"])
def test_each_probe_kind_runs_on_every_backend(case, probes):
    M = rotated(spectrum("pow2", 30))
    A = hvp_operator(case, M)
    for method in METHODS:
        est = trace(A, method=method, num_matvecs=12, probes=probes, rng=1)
        assert est.num_matvecs == 12
        assert abs(float(est) - np.trace(M)) <= 6 * float(est.stderr) + 1e3 * case.eps


def test_hutchinson_rademacher_exact_on_diagonal_matrix(case, np_rng):
    d = np_rng.standard_normal(30)
    A = hvp_operator(case, np.diag(d))
    est = trace(A, method="hutchinson", num_matvecs=7, rng=0)
    case.close(est.value, d.sum(), atol=30 * case.eps)
    assert float(est.stderr) <= 30 * case.eps * np.abs(d).sum()


def test_same_seed_same_result_and_seeds_differ(case):
    A = hvp_operator(case, rotated(spectrum("pow1", 30)))
    for method in METHODS:
        a = trace(A, method=method, num_matvecs=12, rng=5)
        b = trace(A, method=method, num_matvecs=12, rng=5)
        c = trace(A, method=method, num_matvecs=12, rng=6)
        assert float(a) == float(b) and float(a.stderr) == float(b.stderr)
        assert float(a) != float(c)


# ----------------------------------------------------------------------
# the leave-one-out formulas against naive references (NumPy, float64)
# ----------------------------------------------------------------------


def _numpy_setup(M, kind="gaussian"):
    return tr._make_setup(matfree.Dense(M), kind, 64, 0)


def _orth(Y):
    return np.linalg.qr(Y)[0]


def _complement_projector(V):
    Qv = _orth(V)
    return np.eye(V.shape[0]) - Qv @ Qv.T


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_xtrace_matches_naive_leave_one_out(normalize, symmetric):
    rng = np.random.default_rng(7)
    n, k = 30, 6
    M = rotated(spectrum("pow1", n)) if symmetric else rng.standard_normal((n, n))
    Om = rng.standard_normal((n, k))
    Y = M @ Om
    Q, R = np.linalg.qr(Y)
    sk = tr._Sketch(Om, Y, Q, R, M @ Q)
    got = tr._xtrace_estimates(_numpy_setup(M), sk, normalize)
    want = []
    for i in range(k):
        Qi = _orth(np.delete(Y, i, axis=1))
        P = np.eye(n) - Qi @ Qi.T
        w = P @ Om[:, i]
        resid = w @ M @ w
        if normalize:
            resid *= (n - k + 1) / (w @ w)
        want.append(np.trace(Qi.T @ M @ Qi) + resid)
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("normalize", [False, True])
def test_xnystrace_matches_naive_leave_one_out(normalize):
    rng = np.random.default_rng(8)
    n, k = 30, 6
    M = rotated(spectrum("pow1", n))
    Om = rng.standard_normal((n, k))
    Y = M @ Om
    got, nu = tr._xnystrace_estimates(_numpy_setup(M), Om, Y, normalize)
    assert 0 < nu < 1e-12
    want = []
    for i in range(k):
        Oi, Yi = np.delete(Om, i, axis=1), np.delete(Y, i, axis=1)
        Ahat = Yi @ np.linalg.solve(Oi.T @ Yi, Yi.T)
        w = Om[:, i]
        resid = w @ (M - Ahat) @ w
        if normalize:
            pw = _complement_projector(Oi) @ w
            resid *= (n - k + 1) / (pw @ pw)
        want.append(np.trace(Ahat) + resid)
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_extend_qr_gives_a_qr_factorisation_of_the_grown_sketch():
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(9)
    Y1 = rng.standard_normal((50, 6))
    Y2 = np.concatenate([rng.standard_normal((50, 3)), Y1[:, :2] @ rng.standard_normal((2, 2))], axis=1)
    Q1, R1 = tr._extend_qr(xp, None, None, Y1)
    Q2, R = tr._extend_qr(xp, Q1, R1, Y2)
    Q = np.concatenate([Q1, Q2], axis=1)
    np.testing.assert_allclose(Q @ R, np.concatenate([Y1, Y2], axis=1), atol=1e-12)
    np.testing.assert_allclose(Q.T @ Q, np.eye(11), atol=1e-12)
    np.testing.assert_array_equal(np.tril(R, -1), 0.0)


def test_merged_moments_equal_direct_moments():
    import array_api_compat.numpy as xp

    x = np.random.default_rng(10).standard_normal((4, 23))
    mom = None
    for part in np.array_split(x, [1, 8, 9], axis=1):
        mom = tr._merge(mom, tr._moments(xp, part))
    np.testing.assert_allclose(mom.mean, x.mean(axis=1))
    np.testing.assert_allclose(mom.stderr(xp), x.std(axis=1, ddof=1) / np.sqrt(23))


# ----------------------------------------------------------------------
# statistics: unbiasedness and calibration (NumPy, small n, fixed seeds)
# ----------------------------------------------------------------------

N_STAT = 100


@pytest.fixture(scope="module")
def stat_matrices():
    return {name: rotated(spectrum(name, N_STAT), seed=11) for name in SPECTRA}


def _trials(M, num_trials, **kwargs):
    A = matfree.Dense(M)
    ests = [trace(A, use_exact=False, rng=1000 + t, **kwargs) for t in range(num_trials)]
    return np.array([float(e) for e in ests]), np.array([float(e.stderr) for e in ests])


@pytest.mark.parametrize("spectrum_name", SPECTRA)
@pytest.mark.parametrize(
    "method, probes",
    [(m, None) for m in METHODS] + [("xtrace", "rademacher"), ("xnystrace", "rademacher")],
)
def test_unbiased(stat_matrices, spectrum_name, method, probes):
    """Every estimator here is unbiased: the mean of 100 trials lies within 4 standard errors."""
    M = stat_matrices[spectrum_name]
    values, _ = _trials(M, 100, method=method, num_matvecs=24, probes=probes)
    truth = np.trace(M)
    se_of_mean = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - truth) <= 4 * se_of_mean + 1e-10 * truth


@pytest.mark.parametrize("spectrum_name", SPECTRA[1:])
@pytest.mark.parametrize("probes", ["rademacher", "gaussian"])
def test_hutchinson_interval_is_calibrated(stat_matrices, spectrum_name, probes):
    """The 95% interval of Hutchinson covers the truth in >= 90% of 200 trials."""
    M = stat_matrices[spectrum_name]
    values, stderrs = _trials(M, 200, method="hutchinson", num_matvecs=60, probes=probes)
    covered = np.abs(values - np.trace(M)) <= 1.959964 * stderrs
    assert covered.mean() >= 0.90


def test_hutchinson_stderr_matches_its_theoretical_value(stat_matrices):
    """Gaussian probes: Var(zᵀAz) = 2‖A‖_F², so the mean stderr over trials ≈ sqrt(2/m)‖A‖_F."""
    M = stat_matrices["pow0.5"]
    _, stderrs = _trials(M, 100, method="hutchinson", num_matvecs=50, probes="gaussian")
    theory = math.sqrt(2.0 / 50) * np.linalg.norm(M)
    # E[s] is within a few percent of sigma for 50 samples; 100 trials average the noise
    assert abs(np.sqrt(np.mean(stderrs**2)) / theory - 1.0) < 0.1


def test_variance_reduction_on_a_decaying_spectrum(stat_matrices):
    """On i^-2 the low-rank methods beat Hutchinson by a wide margin at the same budget."""
    M = stat_matrices["pow2"]
    truth = np.trace(M)
    err = {}
    for method in METHODS:
        values, _ = _trials(M, 30, method=method, num_matvecs=30)
        err[method] = np.median(np.abs(values - truth))
    assert err["xtrace"] < err["hutchpp"] < err["hutchinson"] / 5
    assert err["xnystrace"] < err["hutchinson"] / 5


@pytest.mark.parametrize("spectrum_name", SPECTRA)
def test_xtrace_not_worse_than_hutchpp(stat_matrices, spectrum_name):
    """XTrace's RMS error is at most Hutch++'s at the same budget (100 paired trials).

    Measured ratios at n = 100-200 are 0-0.93; 1.1 leaves room for the
    sampling noise of an RMS over 100 trials (about 7%).
    """
    M = stat_matrices[spectrum_name]
    truth = np.trace(M)
    rms = {}
    for method in ("xtrace", "hutchpp"):
        values, _ = _trials(M, 100, method=method, num_matvecs=30)
        rms[method] = np.sqrt(np.mean((values - truth) ** 2))
    assert rms["xtrace"] <= 1.1 * rms["hutchpp"] + 1e-12 * truth


# ----------------------------------------------------------------------
# adaptive stopping
# ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp", "xtrace", "xnystrace"])
def test_adaptive_meets_tolerance(case, method):
    M = rotated(spectrum("pow1", 120), seed=4)
    A = hvp_operator(case, M)
    rtol = 0.1
    est = trace(A, method=method, rtol=rtol, max_matvecs=120, rng=2)
    assert est.status == "converged" and est.converged
    assert est.num_matvecs == A.num_matvecs <= 120
    assert 1.959964 * float(est.stderr) <= rtol * abs(float(est))
    spent = [h["num_matvecs"] for h in est.info["history"]]
    assert spent == sorted(spent) and spent[-1] == est.num_matvecs
    # the interval at stopping is a 95% interval; allow a generous 3 sigma here
    assert abs(float(est) - np.trace(M)) <= 3 * float(est.stderr) + 1e3 * case.eps


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp", "xtrace", "xnystrace"])
def test_adaptive_error_within_tolerance_in_most_runs(stat_matrices, method):
    """At stopping the 95% half-width is <= rtol |value|: the error is within rtol in most runs.

    Sequential stopping on an estimated error costs some coverage; 80% of 40
    runs is the bar (the nominal level is 95%).
    """
    M = stat_matrices["pow1"]
    truth = np.trace(M)
    A = matfree.Dense(M)
    ok = []
    for t in range(40):
        est = trace(A, method=method, rtol=0.1, use_exact=False, rng=500 + t)
        assert est.converged
        ok.append(abs(float(est) - truth) <= 0.1 * truth)
    assert np.mean(ok) >= 0.8


def test_adaptive_hutchpp_grows_a_low_rank_part_only_when_it_pays(stat_matrices):
    """A steep spectrum earns a low-rank part; a flat one stops after the first block."""
    kwargs = dict(method="hutchpp", rtol=0.05, use_exact=False, rng=0)
    steep = trace(matfree.Dense(stat_matrices["pow3"]), **kwargs)
    flat = trace(matfree.Dense(stat_matrices["flat"]), **kwargs)
    assert steep.info["rank"] >= 20
    assert flat.info["rank"] <= 10
    assert steep.converged and flat.converged


def test_adaptive_reports_max_matvecs_when_tolerance_unreachable(case):
    A = hvp_operator(case, rotated(spectrum("pow0.5", 60)))
    for method in ["hutchinson", "hutchpp", "xtrace", "xnystrace"]:
        est = trace(A, method=method, rtol=1e-9, max_matvecs=20, rng=0)
        assert est.status == "max_matvecs" and not est.converged
        assert est.num_matvecs <= 20
        if method in ("hutchinson", "hutchpp", "xnystrace"):
            assert est.num_matvecs == 20


def test_atol_alone_and_confidence(stat_matrices):
    A = matfree.Dense(stat_matrices["pow1"])
    loose = trace(A, method="hutchinson", atol=1.0, use_exact=False, rng=0)
    strict = trace(A, method="hutchinson", atol=1.0, confidence=0.999, use_exact=False, rng=0)
    assert loose.converged and strict.converged
    assert strict.num_matvecs >= loose.num_matvecs


# ----------------------------------------------------------------------
# products in blocks
# ----------------------------------------------------------------------


class CountingHVP:
    """A Hessian-vector product that counts its single and batched calls."""

    def __init__(self, M):
        self.M, self.single, self.batched = M, 0, 0

    def matvec(self, v):
        self.single += 1
        return self.M @ v

    def matmat(self, V):
        self.batched += 1
        return self.M @ V


@pytest.mark.parametrize("block_size, calls", [(None, 1), (7, 5), (30, 1)])
def test_hutchinson_probes_go_through_matmat_in_blocks(block_size, calls):
    M = rotated(spectrum("pow1", 40))
    f = CountingHVP(M)
    A = matfree.from_hvp(f.matvec, size=40, batched=f.matmat)
    est = trace(A, method="hutchinson", num_matvecs=30, block_size=block_size, rng=0)
    assert f.single == 0 and f.batched == calls
    assert est.num_matvecs == 30 == A.num_matvecs


def test_block_size_bounds_each_product_for_every_method():
    M = rotated(spectrum("pow1", 40))
    for method in METHODS:
        widths = []
        A = matfree.from_hvp(lambda v: M @ v, size=40,
                             batched=lambda V: widths.append(V.shape[1]) or M @ V)
        est = trace(A, method=method, num_matvecs=24, block_size=4, rng=0)
        assert max(widths) <= 4 and sum(widths) == est.num_matvecs == 24


# ----------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------


def test_errors():
    M = rotated(spectrum("pow1", 10))
    A = matfree.Dense(M)
    with pytest.raises(ValueError, match=r"trace needs a square operator, got shape \(10, 4\)"):
        trace(matfree.Dense(np.ones((10, 4))))
    with pytest.raises(ValueError, match=r"num_matvecs=12 exceeds n=10; expected 4 <= num_matvecs <= 10"):
        trace(A, num_matvecs=12, use_exact=False)
    with pytest.raises(ValueError, match=r"num_matvecs=7 is not a multiple of 3; method='hutchpp'"):
        trace(A, method="hutchpp", num_matvecs=7, use_exact=False)
    with pytest.raises(ValueError, match=r"num_matvecs=3 is below the minimum of method='hutchpp'"):
        trace(A, method="hutchpp", num_matvecs=3, use_exact=False)
    with pytest.raises(ValueError, match=r"num_matvecs=5 is not a multiple of 2; method='xtrace'"):
        trace(A, method="xtrace", num_matvecs=5, use_exact=False)
    with pytest.raises(ValueError, match=r"num_matvecs=1 is below the minimum of method='hutchinson'"):
        trace(A, method="hutchinson", num_matvecs=1, use_exact=False)
    with pytest.raises(ValueError, match=r"method='hutchpp' needs at least 6 products but the operator has n=4"):
        trace(matfree.Dense(np.eye(4)), method="hutchpp", use_exact=False)
    with pytest.raises(ValueError, match=r"method='foo' is not known; expected one of 'xtrace'"):
        trace(A, method="foo")
    with pytest.raises(TypeError, match=r"method must be a string, got int"):
        trace(A, method=3)
    with pytest.raises(ValueError, match=r"probes='uniform' is not known"):
        trace(A, probes="uniform")
    with pytest.raises(ValueError, match=r"num_matvecs=6 and a tolerance \(rtol/atol\) were both given"):
        trace(A, num_matvecs=6, rtol=0.1)
    with pytest.raises(ValueError, match=r"max_matvecs=6 only applies to an adaptive run"):
        trace(A, max_matvecs=6)
    with pytest.raises(ValueError, match=r"method='na_hutchpp' has no adaptive variant"):
        trace(A, method="na_hutchpp", rtol=0.1, use_exact=False)
    with pytest.raises(ValueError, match=r"max_matvecs=11 exceeds n=10"):
        trace(A, rtol=0.1, max_matvecs=11, use_exact=False)
    with pytest.raises(ValueError, match=r"rtol=-0.1 is invalid; expected a finite number >= 0"):
        trace(A, rtol=-0.1)
    with pytest.raises(TypeError, match=r"num_matvecs must be an int, got float"):
        trace(A, num_matvecs=6.0)
    with pytest.raises(ValueError, match=r"block_size=0 is invalid; expected block_size >= 1"):
        trace(A, block_size=0)
    with pytest.raises(ValueError, match=r"confidence=1.5 is invalid; expected 0 < confidence < 1"):
        trace(A, rtol=0.1, confidence=1.5)
    with pytest.raises(TypeError, match=r"rng is a bool"):
        trace(A, use_exact=False, rng=True)


def test_xnystrace_rejects_an_indefinite_operator(case):
    lam = np.concatenate([np.ones(3), -np.ones(3), np.zeros(14)])  # rank 6, trace 0
    A = hvp_operator(case, rotated(lam))
    with pytest.raises(ValueError, match=r"method='xnystrace' needs a positive semidefinite operator, "
                                         r"but the Nyström core ΩᵀAΩ is indefinite"):
        trace(A, method="xnystrace", num_matvecs=8, rng=0)
    # the other methods handle indefinite operators
    est = trace(A, method="xtrace", num_matvecs=20, rng=0)
    case.close(est.value, 0.0, atol=1e3 * case.eps)


def test_non_finite_products_raise(case):
    M = np.eye(8)
    M[2, 3] = np.nan
    with pytest.raises(matfree.NonFiniteError, match=r"returned NaN or Inf"):
        trace(matfree.Dense(case.asarray(M)), method="hutchinson", num_matvecs=4,
              use_exact=False, rng=0)
    A = hvp_operator(case, M)  # a user's HVP: caught by the operator itself
    with pytest.raises(matfree.NonFiniteError, match=r"NaN or Inf"):
        trace(A, method="xtrace", num_matvecs=4, rng=0)


# ----------------------------------------------------------------------
# other inputs and the result type
# ----------------------------------------------------------------------


def test_scipy_linear_operator_and_arrays():
    M = rotated(spectrum("pow2", 30))
    sl = spla.aslinearoperator(M)
    est = trace(sl, method="xtrace", num_matvecs=20, rng=0)
    assert est.status == "budget"
    assert abs(float(est) - np.trace(M)) < 4 * float(est.stderr) + 1e-12
    assert trace(M).status == "exact"


def test_estimate_prints_and_has_an_interval():
    M = rotated(spectrum("pow1", 30))
    est = trace(matfree.Dense(M), num_matvecs=10, use_exact=False, rng=0)
    text = repr(est)
    assert "95% CI" in text and "method='xtrace'" in text and "status='budget'" in text
    lo, hi = est.ci
    assert float(lo) < float(est) < float(hi)
    assert est.info["num_probes"] == 5 and est.info["estimates"].shape == (5,)


# ----------------------------------------------------------------------
# Frobenius norm
# ----------------------------------------------------------------------


def test_frobenius_exact_operators(case, np_rng):
    a = case.asarray
    G = np_rng.standard_normal((7, 5))
    d = np_rng.standard_normal(6)
    U, s = np_rng.standard_normal((6, 2)), np_rng.uniform(0.5, 2.0, 2)
    cases = [
        (matfree.Dense(a(G)), G),
        (matfree.Diagonal(a(d)), np.diag(d)),
        (matfree.LowRank(a(U), a(s)), (U * s) @ U.T),
        (-3.0 * matfree.Dense(a(G)), -3.0 * G),
        (matfree.Identity(6, like=a(d)), np.eye(6)),
    ]
    for op, dense in cases:
        est = frobenius_norm(op)
        assert est.status == "exact" and est.num_matvecs == 0
        case.close(est.value, np.linalg.norm(dense))


def test_frobenius_estimate_on_backends(case, np_rng):
    G = np_rng.standard_normal((9, 20))
    op = matfree.FunctionOperator(
        lambda v, Ga=case.asarray(G): Ga @ v, (9, 20), case.dtype, case.xp,
        matmat=lambda V, Ga=case.asarray(G): Ga @ V,
    )
    est = frobenius_norm(op, num_matvecs=20, rng=0)
    assert est.num_matvecs == 20 == op.num_matvecs
    assert abs(float(est) - np.linalg.norm(G)) <= 4 * float(est.stderr)
    adaptive = frobenius_norm(op, rtol=0.1, rng=0)
    assert adaptive.num_matvecs <= 20


def test_frobenius_squared_is_unbiased():
    G = np.random.default_rng(12).standard_normal((15, 40)) * np.linspace(0.1, 3.0, 40)
    op = matfree.Dense(G)
    sq = np.array([float(frobenius_norm(op, num_matvecs=10, use_exact=False, rng=t).info["squared"])
                   for t in range(200)])
    truth = np.linalg.norm(G) ** 2
    assert abs(sq.mean() - truth) <= 4 * sq.std(ddof=1) / np.sqrt(sq.size)


def test_frobenius_errors():
    with pytest.raises(ValueError, match=r"num_matvecs=21 exceeds n=20"):
        frobenius_norm(matfree.Dense(np.ones((9, 20))), num_matvecs=21, use_exact=False)
    with pytest.raises(ValueError, match=r"probes='x' is not known"):
        frobenius_norm(np.ones((3, 3)), probes="x")


def test_to_np_helper_roundtrip(case):
    # the value of an estimate stays on the operator's backend
    A = hvp_operator(case, rotated(spectrum("pow1", 20)))
    est = trace(A, num_matvecs=10, rng=0)
    assert type(est.value) is type(case.asarray(0.0))
    assert np.isfinite(to_np(est.value))


# ----------------------------------------------------------------------
# executors (issue #9) and progress bars (issue #8)
# ----------------------------------------------------------------------


class FakeTqdm:
    """Records what a progress bar was asked to show (stands in for ``tqdm.auto.tqdm``)."""

    def __init__(self, total=None, desc="", unit="", **kwargs):
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.postfixes, self.closed = 0, [], False

    def update(self, n=1):
        self.n += n

    def set_postfix(self, postfix, refresh=True):
        self.postfixes.append(dict(postfix))

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch):
    """The bars made while the test runs (``progress=True`` gets a :class:`FakeTqdm`)."""
    import types

    bars = []
    module = types.ModuleType("tqdm.auto")

    def make(*args, **kwargs):
        bars.append(FakeTqdm(*args, **kwargs))
        return bars[-1]

    module.tqdm = make
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", module)
    return bars


@pytest.fixture(scope="module")
def pool():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as executor:
        yield executor


def same_estimate(a, b):
    """Bitwise equal values and standard errors."""
    assert np.array_equal(to_np(a.value), to_np(b.value))
    assert np.array_equal(to_np(a.stderr), to_np(b.stderr))
    assert a.status == b.status and a.converged == b.converged


def test_executor_threads_give_the_serial_estimate_bit_for_bit(pool):
    M = rotated(spectrum("pow1", 40)) + 0.05 * np.eye(40)
    A = matfree.from_hvp(lambda v: M @ v, size=40, batched=lambda V: M @ V)
    for method in METHODS:
        runs = [dict(num_matvecs=24, block_size=5), dict(num_matvecs=24)]
        if method != "na_hutchpp":
            runs.append(dict(rtol=1e-3, max_matvecs=40, block_size=4))
        for kw in runs:
            serial = trace(A, method=method, rng=7, **kw)
            threads = trace(A, method=method, rng=7, executor=pool, **kw)
            if "block_size" in kw:
                same_estimate(serial, threads)
            else:  # products split into other column chunks: equal to rounding
                np.testing.assert_allclose(float(threads), float(serial), rtol=1e-12)
            assert threads.num_matvecs == serial.num_matvecs
            assert threads.info["executor"] == "ThreadPoolExecutor"
    serial = frobenius_norm(A, 24, block_size=5, use_exact=False, rng=2)
    same_estimate(serial, frobenius_norm(A, 24, block_size=5, use_exact=False, rng=2, executor=pool))


def test_executor_on_every_backend(case, pool):
    M = rotated(spectrum("pow1", 30))
    A = hvp_operator(case, M)
    for method in ("hutchinson", "xtrace"):
        serial = trace(A, method=method, num_matvecs=12, block_size=3, rng=4)
        same_estimate(serial, trace(A, method=method, num_matvecs=12, block_size=3, rng=4, executor=pool))
    serial = frobenius_norm(A, 8, block_size=3, rng=1)
    same_estimate(serial, frobenius_norm(A, 8, block_size=3, rng=1, executor=pool))


def test_adaptive_rounds_count_the_blocks_past_the_stop(pool):
    """A round holds one block per worker; blocks after the stopping block are spent, not used."""
    d = np.linspace(1.0, 2.0, 60)
    A = matfree.from_hvp(lambda v: d * v, size=60, batched=lambda V: d[:, None] * V)
    kw = dict(method="hutchinson", atol=1e3, block_size=4, rng=0)  # met at the first check
    serial = trace(A, **kw)
    threads = trace(A, executor=pool, **kw)
    same_estimate(serial, threads)
    assert serial.num_matvecs == 4 and threads.info["num_probes"] == 4
    assert threads.num_matvecs == 3 * 4  # the round of 3 blocks was dispatched
    assert threads.info["history"] == serial.info["history"]


def test_executor_errors_keep_their_type_and_name_the_block(pool):
    def hvp(V):
        W = V.copy()
        if V.shape[1] == 2:  # the last chunk of 5 + 5 + 2 probes
            W[0, 0] = np.nan
        return W

    A = matfree.from_hvp(lambda v: v, size=20, batched=hvp)
    with pytest.raises(matfree.NonFiniteError, match="NaN or Inf") as info:
        trace(A, "hutchinson", 12, block_size=5, rng=0, executor=pool)
    assert "raised while evaluating probe chunk 2 of 3" in info.value.__notes__
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        trace(A, "hutchinson", 12, executor="dask")
    with pytest.raises(TypeError, match="progress must be True or False, got str"):
        frobenius_norm(A, 12, progress="yes")


def test_progress_bar_over_the_budget(fake_tqdm):
    A = matfree.from_hvp(lambda v: 2.0 * v, size=30, batched=lambda V: 2.0 * V)
    est = trace(A, method="xtrace", num_matvecs=12, rng=0, progress=True)
    (bar,) = fake_tqdm
    assert bar.total == 12 and bar.n == est.num_matvecs == 12 and bar.closed
    assert bar.desc == "trace (xtrace)" and bar.unit == "matvec"
    trace(A, method="xtrace", num_matvecs=12, rng=0)  # progress=False: no bar
    assert len(fake_tqdm) == 1


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp", "xtrace", "xnystrace"])
def test_progress_bar_of_an_adaptive_run_shows_the_relative_stderr(fake_tqdm, method, pool):
    M = rotated(spectrum("pow1", 40)) + 0.1 * np.eye(40)
    A = matfree.from_hvp(lambda v: M @ v, size=40, batched=lambda V: M @ V)
    for executor in (None, pool):
        est = trace(A, method=method, rtol=1e-9, max_matvecs=36, block_size=4, rng=1,
                    progress=True, executor=executor)
        bar = fake_tqdm[-1]
        assert bar.total == 36 and bar.n == est.num_matvecs and bar.closed
        last, entry = bar.postfixes[-1], est.info["history"][-1]
        assert set(last) == {"estimate", "rel_stderr"}
        assert float(last["rel_stderr"]) == pytest.approx(entry["stderr"] / abs(entry["value"]), rel=1e-2)


def test_progress_with_real_tqdm_and_without_tqdm(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    A = matfree.from_hvp(lambda v: v, size=20, batched=lambda V: V)
    frobenius_norm(A, rtol=1e-9, max_matvecs=20, block_size=5, rng=0, progress=True)
    assert "frobenius_norm" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)  # as if not installed
    with pytest.raises(ImportError, match=r"progress=True needs tqdm; install it with pip install"):
        trace(A, "hutchinson", 10, rng=0, progress=True)
