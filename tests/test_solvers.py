"""CG (damped, block, multi-shift), Steihaug-Toint and MINRES against dense NumPy/SciPy."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from conftest import to_np

import matfree
from matfree import precond, solvers
from matfree.solvers import cg, minres, steihaug_cg

N = 30


def _spd(rng, n, lo=1.0, hi=10.0):
    """Dense SPD matrix with eigenvalues spread in [lo, hi] and its condition number."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.linspace(lo, hi, n)
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2, hi / lo


def _sym_indefinite(rng, n):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([np.linspace(-3.0, -0.5, n // 3), np.linspace(0.5, 4.0, n - n // 3)])
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


def _rel(got, want):
    got, want = to_np(got), np.asarray(want)
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def _solve_rtol(case):
    """A CG tolerance every backend reaches: a few hundred eps."""
    return 500 * case.eps


# ----------------------------------------------------------------------
# CG against numpy.linalg.solve on every backend and dtype
# ----------------------------------------------------------------------


@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_cg_matches_dense_solve(case, np_rng, damping):
    A, cond = _spd(np_rng, N)
    b = np_rng.standard_normal(N)
    rtol = _solve_rtol(case)
    res = cg(case.asarray(A), case.asarray(b), damping=damping, rtol=rtol)
    want = np.linalg.solve(A + damping * np.eye(N), b)
    assert res.status == "converged" and res.converged is True
    assert res.x.dtype == case.dtype
    assert matfree._backend.namespace(res.x) is matfree._backend.namespace(case.asarray(b))
    assert _rel(res.x, want) <= 10 * cond * rtol
    assert res.num_matvecs == res.num_iters
    assert res.residual_norms.shape == (res.num_iters + 1,)
    assert res.residual_norms[-1] <= rtol * np.linalg.norm(b) * (1 + 1e-6)


def test_cg_block_matches_dense_solve_one_matmat_per_iteration(case, np_rng):
    A, cond = _spd(np_rng, N)
    # columns of different difficulty: one is an eigenvector (1 iteration)
    w, V = np.linalg.eigh(A)
    Bm = np.column_stack([np_rng.standard_normal(N), V[:, 3], np_rng.standard_normal(N)])
    Aa = case.asarray(A)
    calls = []

    def matmat(X):
        calls.append(X.shape[1])
        return Aa @ X

    op = matfree.FunctionOperator(lambda v: Aa @ v, (N, N), case.dtype, case.xp,
                                  matmat=matmat, symmetric=True)
    rtol = _solve_rtol(case)
    res = cg(op, case.asarray(Bm), damping=0.25, rtol=rtol)
    want = np.linalg.solve(A + 0.25 * np.eye(N), Bm)
    assert res.status == "converged" and res.converged.all()
    assert res.x.shape == (N, 3) and res.x.dtype == case.dtype
    for j in range(3):
        assert _rel(res.x[:, j], want[:, j]) <= 10 * cond * rtol
    # one block product per iteration; the eigenvector column left after one step
    assert len(calls) == res.num_iters
    assert calls[0] == 3 and calls[1] == 2 and calls == sorted(calls, reverse=True)
    assert res.num_matvecs == sum(calls) < 3 * res.num_iters
    assert res.residual_norms.shape == (res.num_iters + 1, 3)


def test_cg_zero_rhs_and_exact_start(case, np_rng):
    A, _ = _spd(np_rng, N)
    res = cg(case.asarray(A), case.asarray(np.zeros(N)))
    assert res.status == "converged" and res.num_iters == 0 and res.num_matvecs == 0
    assert float(np.abs(to_np(res.x)).max()) == 0.0
    x = np_rng.standard_normal(N)
    b = A @ x
    res = cg(case.asarray(A), case.asarray(b), x0=case.asarray(x), rtol=1e-3)
    assert res.status == "converged" and res.num_iters == 0 and res.num_matvecs == 1


def test_solvers_leave_their_inputs_alone(case, np_rng):
    """The solvers update their own iterates in place, never the caller's arrays."""
    A, _ = _spd(np_rng, N)
    b_np, x0_np = np_rng.standard_normal(N), np_rng.standard_normal(N)
    Bm_np = np_rng.standard_normal((N, 2))
    b, x0, Bm = case.asarray(b_np), case.asarray(x0_np), case.asarray(Bm_np)
    Aa = case.asarray(A)
    cg(Aa, b)
    cg(Aa, b, x0=x0, M=matfree.Identity(N))
    cg(Aa, Bm, x0=Bm)
    cg(Aa, b, damping=[0.1, 1.0])
    steihaug_cg(Aa, b, 1.0)
    minres(Aa, b, x0=x0)
    for got, want in ((b, b_np), (x0, x0_np), (Bm, Bm_np)):
        np.testing.assert_array_equal(to_np(got), want.astype(case.dtype_name))


def test_cg_maxiter_is_a_status(case, np_rng):
    A, _ = _spd(np_rng, N, 1e-3, 1.0)
    b = np_rng.standard_normal(N)
    res = cg(case.asarray(A), case.asarray(b), maxiter=3, rtol=1e-12)
    assert res.status == "maxiter" and res.converged is False
    assert res.num_iters == 3 and res.num_matvecs == 3
    res0 = cg(case.asarray(A), case.asarray(b), maxiter=0)
    assert res0.status == "maxiter" and res0.num_iters == 0


# ----------------------------------------------------------------------
# CG against SciPy: same iterates, same iteration counts
# ----------------------------------------------------------------------


def _scipy_cg(A, b, **kw):
    iterates = []
    x, info = spla.cg(A, b, callback=lambda xk: iterates.append(xk.copy()), **kw)
    return x, info, iterates


@pytest.mark.parametrize("variant", ["plain", "x0", "jacobi", "sparse"])
def test_cg_iterates_equal_scipy(np_rng, variant):
    n = 60
    if variant == "sparse":
        m = 8
        T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
        A = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsr()
        n = m * m
        dense = A.toarray()
    else:
        Q, _ = np.linalg.qr(np_rng.standard_normal((n, n)))
        scale = np.logspace(0, 2, n)
        dense = (Q * np.logspace(-2, 0, n)) @ Q.T
        dense = scale[:, None] * (dense + dense.T) / 2 * scale[None, :]
        A = dense
    b = np_rng.standard_normal(n)
    kw = dict(rtol=1e-9, maxiter=10 * n)
    ours_kw = dict(kw)
    if variant == "x0":
        x0 = np_rng.standard_normal(n)
        kw["x0"] = x0.copy()
        ours_kw["x0"] = x0.copy()
    if variant == "jacobi":
        kw["M"] = sp.diags(1.0 / np.diag(dense))
        ours_kw["M"] = precond.jacobi(np.diag(dense))
    x_ref, info, ref_iterates = _scipy_cg(A, b, **kw)
    ours = []
    res = cg(A, b, callback=lambda xk: ours.append(xk.copy()), **ours_kw)
    assert info == 0 and res.status == "converged"
    # same iteration count, and every iterate equal to rounding
    assert res.num_iters == len(ref_iterates)
    scale = np.linalg.norm(x_ref)
    cond = np.linalg.cond(dense)
    for mine, theirs in zip(ours, ref_iterates):
        assert np.linalg.norm(mine - theirs) <= 1e3 * np.finfo(float).eps * cond * scale
    np.testing.assert_allclose(res.x, x_ref, rtol=0, atol=1e3 * np.finfo(float).eps * cond * scale)


def test_cg_iteration_counts_side_by_side_with_scipy(np_rng):
    """Iteration counts of matfree.cg and scipy's cg agree over a range of dampings."""
    n = 80
    Q, _ = np.linalg.qr(np_rng.standard_normal((n, n)))
    A = (Q * np.logspace(-4, 0, n)) @ Q.T
    A = (A + A.T) / 2
    b = np_rng.standard_normal(n)
    rows = []
    for damping in [1e-4, 1e-3, 1e-2, 1e-1]:
        Ad = A + damping * np.eye(n)
        _, info, its = _scipy_cg(Ad, b, rtol=1e-8, maxiter=2000)
        same = cg(Ad, b, rtol=1e-8, maxiter=2000)
        damped = cg(A, b, damping=damping, rtol=1e-8, maxiter=2000)
        rows.append((damping, same.num_iters, damped.num_iters, len(its)))
        assert info == 0 and same.converged and damped.converged
    for _, same, damped, theirs in rows:
        # same matrix: same rounding, same count; damping applied as A p + lam p
        # rounds differently, and CG past n iterations amplifies that a little
        assert same == theirs, rows
        assert abs(damped - theirs) <= 0.05 * theirs + 2, rows


# ----------------------------------------------------------------------
# Multi-shift CG
# ----------------------------------------------------------------------

SHIFTS = np.geomspace(1e-4, 1.0, 8)


def test_multishift_matches_separate_solves_one_matvec_per_iteration(case, np_rng):
    n = 40
    Q, _ = np.linalg.qr(np_rng.standard_normal((n, n)))
    A = (Q * np.logspace(-3, 0, n)) @ Q.T
    A = (A + A.T) / 2
    b = np_rng.standard_normal(n)
    op = matfree.Dense(case.asarray(A), symmetric=True)
    rtol = 1e-5 if case.dtype_name == "float32" else 1e-10
    shifts = SHIFTS[::-1]  # any order; the smallest drives the iteration
    res = solvers.cg(op, case.asarray(b), damping=case.asarray(shifts), rtol=rtol)
    assert res.status == "converged" and res.converged.all()
    assert res.x.shape == (n, 8) and res.x.dtype == case.dtype
    # one product per iteration in total, counted by the operator itself
    assert op.num_matvecs == res.num_matvecs == res.num_iters
    separate_matvecs = 0
    for j, shift in enumerate(shifts):
        Ms = A + shift * np.eye(n)
        want = np.linalg.solve(Ms, b)
        cond = np.linalg.cond(Ms)
        assert _rel(res.x[:, j], want) <= 50 * cond * max(rtol, 10 * case.eps), shift
        resid = np.linalg.norm(Ms @ to_np(res.x[:, j]).astype(float) - b) / np.linalg.norm(b)
        assert resid <= 50 * rtol + 1e3 * case.eps * cond, shift
        single = cg(op, case.asarray(b), damping=float(shift), rtol=rtol)
        separate_matvecs += single.num_matvecs
        # each shift stopped when its own residual converged, not later than CG alone
        assert res.info["iterations_per_shift"][j] <= single.num_iters + 2
    its = res.info["iterations_per_shift"]
    assert list(its) == sorted(its)  # larger shifts converge earlier (shifts descending)
    assert res.num_matvecs < separate_matvecs


def test_multishift_blocked_updates_equal_step_by_step(np_rng):
    """The deferred (BLAS-3) shifted updates give the iterates of the plain recurrence."""
    n = 50
    A, _ = _spd(np_rng, n, 1e-3, 1.0)
    b = np_rng.standard_normal(n)
    seen = []
    step = cg(A, b, damping=SHIFTS, rtol=1e-10, callback=lambda X: seen.append(X))
    blocked = cg(A, b, damping=SHIFTS, rtol=1e-10)
    assert step.info["block"] == 1 and blocked.info["block"] > 1
    assert len(seen) == step.num_iters == blocked.num_iters
    np.testing.assert_allclose(blocked.x, step.x, rtol=1e-9, atol=1e-12 * np.abs(step.x).max())
    # the last callback iterate is the answer of every shift still running then
    np.testing.assert_allclose(seen[-1][:, 0], step.x[:, 0])
    np.testing.assert_array_equal(step.info["iterations_per_shift"],
                                  blocked.info["iterations_per_shift"])


def test_multishift_input_rules(np_rng):
    A, _ = _spd(np_rng, 10)
    b = np_rng.standard_normal(10)
    with pytest.raises(ValueError, match="several shifts .* need a 1-D b"):
        cg(A, np.ones((10, 2)), damping=[0.1, 1.0])
    with pytest.raises(ValueError, match="M is not supported with several shifts"):
        cg(A, b, damping=[0.1, 1.0], M=np.eye(10))
    with pytest.raises(ValueError, match="x0 is not supported with several shifts"):
        cg(A, b, damping=[0.1, 1.0], x0=b)
    with pytest.raises(ValueError, match="expected a number or a non-empty 1-D array"):
        cg(A, b, damping=np.ones((2, 2)))
    with pytest.raises(ValueError, match="damping contains NaN"):
        cg(A, b, damping=[0.1, np.nan])
    with pytest.raises(TypeError, match="damping must be a real number"):
        cg(A, b, damping="big")


def test_multishift_negative_curvature_of_the_smallest_shift(np_rng):
    A, _ = _spd(np_rng, 20, 0.1, 1.0)
    b = np_rng.standard_normal(20)
    res = cg(A, b, damping=[-2.0, 0.5, 1.0], rtol=1e-10)
    assert res.status == "negative_curvature"
    d = res.info["direction"]
    assert d @ (A - 2.0 * np.eye(20)) @ d <= 0
    assert res.info["statuses"][0] == "negative_curvature"
    assert np.all(np.isfinite(res.x))


# ----------------------------------------------------------------------
# Faults: negative curvature, indefinite preconditioner, non-finite products
# ----------------------------------------------------------------------


def test_cg_negative_curvature_returns_direction(case, np_rng):
    A = _sym_indefinite(np_rng, N)
    b = np_rng.standard_normal(N)
    res = cg(case.asarray(A), case.asarray(b), rtol=1e-12)
    assert res.status == "negative_curvature" and res.converged is False
    d = to_np(res.info["direction"]).astype(float)
    assert d @ A @ d <= 1e3 * case.eps * np.linalg.norm(A, 2) * (d @ d)
    assert res.info["curvature"] <= 0
    assert "steihaug_cg" in res.info["message"] and "minres" in res.info["message"]
    assert np.all(np.isfinite(to_np(res.x)))


def test_cg_damping_making_the_system_indefinite(case, np_rng):
    A, _ = _spd(np_rng, N, 0.5, 2.0)
    b = np_rng.standard_normal(N)
    res = cg(case.asarray(A), case.asarray(b), damping=-1.0, rtol=1e-12)
    assert res.status == "negative_curvature"
    d = to_np(res.info["direction"]).astype(float)
    assert d @ (A - np.eye(N)) @ d <= 0


def test_cg_block_negative_curvature_per_column(np_rng):
    A = np.diag(np.r_[np.linspace(1, 2, 9), -1.0])
    e = np.zeros(10)
    e[0] = 1.0
    Bm = np.column_stack([e, np_rng.standard_normal(10)])  # column 0 never sees -1
    res = cg(A, Bm, rtol=1e-10)
    assert res.info["statuses"] == ["converged", "negative_curvature"]
    assert res.status == "negative_curvature"
    assert list(res.converged) == [True, False]
    np.testing.assert_allclose(res.x[:, 0], e)
    d = res.info["directions"][1]
    assert d @ A @ d <= 0


def test_cg_indefinite_preconditioner(case, np_rng):
    A, _ = _spd(np_rng, N)
    b = np_rng.standard_normal(N)
    m = -np.ones(N)
    m[0] = 1.0  # indefinite, and rᵀMr < 0 at the start
    M = matfree.Diagonal(case.asarray(m))
    res = cg(case.asarray(A), case.asarray(b), M=M)
    assert res.status == "indefinite_preconditioner" and res.num_iters == 0
    assert "not positive definite" in res.info["message"]
    res = steihaug_cg(case.asarray(A), case.asarray(b), 1.0, M=M)
    assert res.status == "indefinite_preconditioner"
    res = minres(case.asarray(A), case.asarray(b), M=M)
    assert res.status == "indefinite_preconditioner"


def _failing_operator(case, A, fail_at):
    """An HVP operator whose product number ``fail_at`` (0-based) returns NaN."""
    Aa = case.asarray(A)
    count = [0]

    def hvp(v):
        count[0] += 1
        out = Aa @ v
        return out * float("nan") if count[0] - 1 == fail_at else out

    return matfree.from_hvp(hvp, like=case.asarray(np.zeros(A.shape[0])))


def test_cg_non_finite_product_keeps_last_good_iterate(case, np_rng):
    A, _ = _spd(np_rng, N, 1e-2, 1.0)
    b = np_rng.standard_normal(N)
    seen = []
    res = cg(_failing_operator(case, A, 4), case.asarray(b), rtol=1e-12,
             callback=lambda x: seen.append(to_np(x).copy()))
    assert res.status == "non_finite" and res.converged is False
    assert res.num_iters == 4 and len(seen) == 4
    np.testing.assert_array_equal(to_np(res.x), seen[-1])
    assert "NaN or Inf" in res.info["message"]
    # an operator that does not check its output: detected from the curvature
    bad = A.copy()
    bad[0, 0] = np.nan
    res = cg(case.asarray(bad), case.asarray(b))
    assert res.status == "non_finite" and np.all(np.isfinite(to_np(res.x)))


def test_non_finite_in_block_multishift_steihaug_minres(np_rng):
    case_xp = pytest.importorskip("array_api_compat.numpy")

    class _C:
        xp = case_xp
        dtype = case_xp.float64

        @staticmethod
        def asarray(a):
            return np.asarray(a, dtype=float)

    A, _ = _spd(np_rng, 12, 1e-2, 1.0)
    b = np_rng.standard_normal(12)
    res = cg(_failing_operator(_C, A, 2), np.column_stack([b, 2 * b]), rtol=1e-12)
    assert res.status == "non_finite" and res.info["statuses"] == ["non_finite"] * 2
    assert np.all(np.isfinite(res.x))
    res = cg(_failing_operator(_C, A, 2), b, damping=[0.1, 1.0], rtol=1e-12)
    assert res.status == "non_finite" and np.all(np.isfinite(res.x))
    res = steihaug_cg(_failing_operator(_C, A, 2), b, 100.0, rtol=1e-12)
    assert res.status == "non_finite" and res.num_iters == 2
    res = minres(_failing_operator(_C, A, 2), b, rtol=1e-12)
    assert res.status == "non_finite" and res.num_iters == 2 and np.all(np.isfinite(res.x))


# ----------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------


def test_cg_input_errors(np_rng):
    A, _ = _spd(np_rng, 5)
    b = np.ones(5)
    with pytest.raises(ValueError, match=r"shape mismatch: b has shape \(4,\) but A has shape \(5, 5\)"):
        cg(A, np.ones(4))
    with pytest.raises(ValueError, match=r"expected b of shape \(5,\) or \(5, k\)"):
        cg(A, np.ones((5, 2, 1)))
    with pytest.raises(ValueError, match="b contains NaN or Inf"):
        cg(A, np.array([1.0, np.inf, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"x0 has shape \(3,\)"):
        cg(A, b, x0=np.ones(3))
    with pytest.raises(ValueError, match="x0 contains NaN"):
        cg(A, b, x0=np.full(5, np.nan))
    with pytest.raises(ValueError, match=r"M has shape \(4, 4\)"):
        cg(A, b, M=np.eye(4))
    with pytest.raises(ValueError, match="rtol=-1.0 is negative"):
        cg(A, b, rtol=-1.0)
    with pytest.raises(ValueError, match="atol=inf must be finite"):
        cg(A, b, atol=np.inf)
    with pytest.raises(ValueError, match="maxiter=-1 is negative"):
        cg(A, b, maxiter=-1)
    with pytest.raises(TypeError, match="maxiter must be an int"):
        cg(A, b, maxiter=2.5)
    with pytest.raises(TypeError, match="callback must be callable"):
        cg(A, b, callback=3)
    with pytest.raises(TypeError, match="b has dtype int64"):
        cg(A, np.ones(5, dtype=np.int64))
    with pytest.raises(TypeError, match="b must be an array"):
        cg(A, [1.0] * 5)
    with pytest.raises(ValueError, match="square"):
        cg(np.ones((5, 4)), b)
    with pytest.raises(TypeError, match="A must be a LinearOperator"):
        cg(3.0, b)


def test_cg_library_mismatch():
    torch = pytest.importorskip("torch")
    A = np.eye(3)
    with pytest.raises(TypeError, match="b is a torch array but A works on numpy arrays"):
        cg(A, torch.ones(3, dtype=torch.float64))


def test_cg_accepts_callable_preconditioner_and_scipy_operator(np_rng):
    A, _ = _spd(np_rng, 20)
    b = np_rng.standard_normal(20)
    d = np.diag(A)
    res = cg(spla.aslinearoperator(A), b, M=lambda r: r / d, rtol=1e-10)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-8)
    assert "SolveResult(status='converged'" in repr(res)


def test_cg_float32_system_with_float64_preconditioner(np_rng):
    A, _ = _spd(np_rng, 20)
    b = np_rng.standard_normal(20).astype(np.float32)
    M = precond.jacobi(np.diag(A))
    res = cg(A.astype(np.float32), b, M=M, rtol=1e-5)
    assert res.x.dtype == np.float32 and res.status == "converged"


# ----------------------------------------------------------------------
# Steihaug-Toint
# ----------------------------------------------------------------------


def _model(A, g, p):
    return g @ p + 0.5 * p @ A @ p


def _cauchy_decrease(A, g, radius):
    """m(0) - m(p_C) of the Cauchy point (Nocedal-Wright, eq. 4.12)."""
    gnorm = np.linalg.norm(g)
    gAg = g @ A @ g
    tau = 1.0 if gAg <= 0 else min(gnorm**3 / (radius * gAg), 1.0)
    pc = -tau * radius / gnorm * g
    return -_model(A, g, pc)


def test_steihaug_indefinite_hits_boundary_with_negative_curvature(case, np_rng):
    A = _sym_indefinite(np_rng, N)
    g = np_rng.standard_normal(N)
    radius = 1e3  # large: the iteration meets negative curvature before the boundary
    res = steihaug_cg(case.asarray(A), case.asarray(g), radius)
    p = to_np(res.x).astype(float)
    assert res.status == "negative_curvature" and res.converged is True
    assert res.info["negative_curvature"] and res.info["hit_boundary"]
    assert abs(np.linalg.norm(p) - radius) <= 100 * case.eps * radius
    d = to_np(res.info["direction"]).astype(float)
    assert d @ A @ d <= 1e3 * case.eps * np.linalg.norm(A, 2) * (d @ d)
    model = _model(A, g, p)
    assert abs(res.info["model_value"] - model) <= 1e3 * case.eps * max(1.0, abs(model))
    assert res.info["model_decrease"] >= _cauchy_decrease(A, g, radius) * (1 - 1e3 * case.eps)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius", [0.05, 1.0, 20.0])
def test_steihaug_decrease_at_least_cauchy(seed, radius):
    rng = np.random.default_rng(seed)
    n = 25
    A = _sym_indefinite(rng, n) if seed % 2 else _spd(rng, n, 0.01, 3.0)[0]
    g = rng.standard_normal(n)
    res = steihaug_cg(A, g, radius, rtol=1e-10)
    p = res.x
    assert np.linalg.norm(p) <= radius * (1 + 1e-12)
    decrease = -_model(A, g, p)
    assert decrease >= _cauchy_decrease(A, g, radius) * (1 - 1e-12)
    np.testing.assert_allclose(res.info["model_decrease"], decrease, rtol=1e-9)
    if res.status in ("boundary", "negative_curvature"):
        np.testing.assert_allclose(np.linalg.norm(p), radius, rtol=1e-12)


def test_steihaug_interior_is_the_newton_step(case, np_rng):
    A, cond = _spd(np_rng, N)
    g = np_rng.standard_normal(N)
    newton = -np.linalg.solve(A + 0.1 * np.eye(N), g)
    res = steihaug_cg(case.asarray(A), case.asarray(g), 10 * np.linalg.norm(newton),
                      damping=0.1, rtol=_solve_rtol(case))
    assert res.status == "converged" and not res.info["hit_boundary"]
    assert _rel(res.x, newton) <= 10 * cond * _solve_rtol(case)


def test_steihaug_positive_definite_boundary(np_rng):
    A, _ = _spd(np_rng, N)
    g = np_rng.standard_normal(N)
    res = steihaug_cg(A, g, 0.01)
    assert res.status == "boundary" and res.info["hit_boundary"]
    assert not res.info["negative_curvature"]
    np.testing.assert_allclose(np.linalg.norm(res.x), 0.01, rtol=1e-12)


def test_steihaug_preconditioned_norm(np_rng):
    """With M, the region is ‖p‖_{M⁻¹} <= radius, tracked by recurrences."""
    n = 30
    A = _sym_indefinite(np_rng, n)
    d = np.logspace(0, 2, n)
    A = np.sqrt(d)[:, None] * A * np.sqrt(d)[None, :]
    g = np_rng.standard_normal(n)
    M = matfree.Diagonal(1.0 / d)
    for radius in [0.01, 1.0, 100.0]:
        res = steihaug_cg(A, g, radius, M=M, rtol=1e-10)
        p = res.x
        mnorm = np.sqrt(p @ (d * p))
        assert mnorm <= radius * (1 + 1e-10)
        if res.info["hit_boundary"]:
            np.testing.assert_allclose(mnorm, radius, rtol=1e-9)
        np.testing.assert_allclose(res.info["model_value"], _model(A, g, p), rtol=1e-9)
    # interior solve with a PD matrix equals the Newton step
    S = _spd(np_rng, n)[0] * np.sqrt(d)[:, None] * np.sqrt(d)[None, :]
    res = steihaug_cg(S, g, 1e6, M=M, rtol=1e-12)
    assert res.status == "converged"
    np.testing.assert_allclose(res.x, -np.linalg.solve(S, g), rtol=1e-8)


def test_steihaug_zero_gradient_and_errors(np_rng):
    A = _sym_indefinite(np_rng, 9)
    res = steihaug_cg(A, np.zeros(9), 1.0)
    assert res.status == "converged" and res.num_iters == 0 and not np.any(res.x)
    with pytest.raises(ValueError, match="radius=0.0 must be positive"):
        steihaug_cg(A, np.ones(9), 0.0)
    with pytest.raises(ValueError, match="radius=inf must be finite"):
        steihaug_cg(A, np.ones(9), np.inf)
    with pytest.raises(TypeError, match="radius must be a real number"):
        steihaug_cg(A, np.ones(9), "1")
    with pytest.raises(ValueError, match=r"expected g of shape \(9,\)"):
        steihaug_cg(A, np.ones((9, 2)), 1.0)


# ----------------------------------------------------------------------
# MINRES
# ----------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0.0, -0.7, 0.3])
def test_minres_matches_dense_solve_indefinite(case, np_rng, shift):
    A = _sym_indefinite(np_rng, N)
    b = np_rng.standard_normal(N)
    Ms = A + shift * np.eye(N)
    cond = np.linalg.cond(Ms)
    rtol = _solve_rtol(case)
    res = minres(case.asarray(A), case.asarray(b), shift=shift, rtol=rtol)
    assert res.status == "converged" and res.converged is True
    assert res.x.dtype == case.dtype
    assert _rel(res.x, np.linalg.solve(Ms, b)) <= 10 * cond * rtol
    assert res.num_matvecs == res.num_iters
    assert np.all(np.diff(res.residual_norms) <= 1e-12 * res.residual_norms[0])


@pytest.mark.parametrize("variant", ["plain", "x0", "jacobi"])
def test_minres_iterates_equal_scipy(np_rng, variant):
    """Same iterates as scipy's minres (which solves (A - shift I)x = b)."""
    n = 50
    A = _sym_indefinite(np_rng, n)
    d = np.logspace(0, 1, n)
    A = np.sqrt(d)[:, None] * A * np.sqrt(d)[None, :]
    b = np_rng.standard_normal(n)
    kw, ours_kw = {}, {}
    if variant == "x0":
        x0 = np_rng.standard_normal(n)
        kw["x0"], ours_kw["x0"] = x0.copy(), x0.copy()
    if variant == "jacobi":
        kw["M"] = sp.diags(1.0 / d)
        ours_kw["M"] = matfree.Diagonal(1.0 / d)
    # scipy 1.17 forgets the shift in its initial residual b - A x0, so compare
    # with x0 at shift 0 only (matfree's shifted solve with x0 is checked below)
    shift = 0.0 if variant == "x0" else 0.2
    ref = []
    x_ref, _ = spla.minres(A, b, shift=-shift, rtol=1e-10, callback=lambda x: ref.append(x.copy()), **kw)
    ours = []
    res = minres(A, b, shift=shift, rtol=1e-10, callback=lambda x: ours.append(x.copy()), **ours_kw)
    k = min(len(ref), len(ours))
    assert k >= 10 and abs(len(ref) - len(ours)) <= 10
    cond = np.linalg.cond(A + shift * np.eye(n))
    for mine, theirs in zip(ours[:k], ref[:k]):
        assert np.linalg.norm(mine - theirs) <= 1e3 * np.finfo(float).eps * cond * np.linalg.norm(x_ref)
    # both solve the system (their stopping tests differ: SciPy's is ‖r‖ <= rtol ‖A‖ ‖x‖)
    want = np.linalg.solve(A + shift * np.eye(n), b)
    assert _rel(res.x, want) <= 1e-7 and _rel(x_ref, want) <= 1e-6
    res = minres(A, b, shift=0.2, rtol=1e-10, **ours_kw)
    assert _rel(res.x, np.linalg.solve(A + 0.2 * np.eye(n), b)) <= 1e-7


def test_minres_singular_systems(np_rng):
    n = 20
    Q, _ = np.linalg.qr(np_rng.standard_normal((n, n)))
    lam = np.r_[0.0, 0.0, np.linspace(-2, 3, n - 2)]
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    # consistent right-hand side: converges to a solution
    b = A @ np_rng.standard_normal(n)
    res = minres(A, b, rtol=1e-10)
    assert res.status == "converged"
    assert np.linalg.norm(A @ res.x - b) <= 1e-8 * np.linalg.norm(b)
    # inconsistent: stops with status "singular" at a least-squares solution
    b = b + Q[:, 0]
    res = minres(A, b, rtol=1e-10)
    assert res.status == "singular" and res.converged is False
    x_ls = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.linalg.norm(A @ (res.x - x_ls)) <= 1e-6 * np.linalg.norm(b)
    assert "least-squares" in res.info["message"]
    # a shift exactly at an eigenvalue: the Krylov space runs out after n steps
    # and the last pivot is ~0; x must not be thrown along the null space
    A2 = (Q * np.linspace(0.1, 2.0, n)) @ Q.T
    A2 = (A2 + A2.T) / 2
    b2 = np_rng.standard_normal(n)
    res = minres(A2, b2, shift=-1.0, rtol=1e-10)  # 1.0 is the 10th eigenvalue
    x_ls = np.linalg.lstsq(A2 - np.eye(n), b2, rcond=None)[0]
    assert res.status == "singular"
    assert np.linalg.norm(res.x) <= 1.5 * np.linalg.norm(x_ls)
    assert res.num_matvecs == res.num_iters + 1


def test_minres_near_singular_shift_invert_use(np_rng):
    """Shift-invert: sigma next to an eigenvalue gives a solve dominated by its eigenvector."""
    n = 40
    Q, _ = np.linalg.qr(np_rng.standard_normal((n, n)))
    lam = np.linspace(-1, 1, n)
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    sigma = lam[17] + 1e-6
    b = np_rng.standard_normal(n)
    res = minres(A, b, shift=-sigma, rtol=1e-10, maxiter=2000)
    assert res.status == "converged"
    y = res.x / np.linalg.norm(res.x)
    assert abs(abs(y @ Q[:, 17]) - 1.0) <= 1e-8
    np.testing.assert_allclose(res.x, np.linalg.solve(A - sigma * np.eye(n), b), rtol=1e-5)


def test_minres_errors_and_trivial_cases(np_rng):
    A = _sym_indefinite(np_rng, 9)
    with pytest.raises(ValueError, match=r"expected b of shape \(9,\)"):
        minres(A, np.ones((9, 2)))
    with pytest.raises(ValueError, match="shift=nan must be finite"):
        minres(A, np.ones(9), shift=np.nan)
    with pytest.raises(ValueError, match="b contains NaN"):
        minres(A, np.full(9, np.nan))
    res = minres(A, np.zeros(9))
    assert res.status == "converged" and res.num_iters == 0
    res = minres(A, np.ones(9), maxiter=2, rtol=1e-14)
    assert res.status == "maxiter" and res.num_iters == 2
