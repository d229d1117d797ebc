"""Jacobi, Nyström and L-BFGS preconditioners against their dense formulas."""

import numpy as np
import pytest
from conftest import to_np

import matfree
from matfree import precond, sketch
from matfree.quasinewton import LBFGS
from matfree.solvers import cg, minres, steihaug_cg

N = 40


def _kernel(rng, n, bandwidth=0.3):
    """RBF kernel matrix of n random points in the unit square (fast spectral decay)."""
    X = rng.uniform(size=(n, 2))
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-D / (2 * bandwidth**2))


def _badly_scaled_spd(rng, n):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.linspace(1.0, 3.0, n)) @ Q.T
    d = np.logspace(0, 3, n)
    return np.sqrt(d)[:, None] * ((A + A.T) / 2) * np.sqrt(d)[None, :]


# ----------------------------------------------------------------------
# Jacobi
# ----------------------------------------------------------------------


def test_jacobi_from_array_estimate_and_operator(case, np_rng):
    A = _badly_scaled_spd(np_rng, N)
    d = np.diag(A)
    want = 1.0 / (d + 0.5)
    v = np_rng.standard_normal(N)
    for source in (
        case.asarray(d),
        matfree.Estimate(case.asarray(d), case.asarray(np.zeros(N)), 0),
        matfree.Dense(case.asarray(A)),
    ):
        M = precond.jacobi(source, damping=0.5)
        assert isinstance(M, matfree.Diagonal) and M.positive_definite
        case.close(M.diagonal(), want)
        case.close(M @ case.asarray(v), want * v)


def test_jacobi_pcg_cuts_iterations(case, np_rng):
    A = _badly_scaled_spd(np_rng, N)
    b = np_rng.standard_normal(N)
    rtol = 1e-4 if case.dtype_name == "float32" else 1e-10
    Aa, ba = case.asarray(A), case.asarray(b)
    M = precond.jacobi(matfree.Dense(Aa))
    plain = cg(Aa, ba, rtol=rtol, maxiter=20 * N)
    pcg = cg(Aa, ba, M=M, rtol=rtol)
    assert pcg.status == "converged"
    assert pcg.num_iters < plain.num_iters
    want = np.linalg.solve(A, b)
    err = np.linalg.norm(to_np(pcg.x) - want) / np.linalg.norm(want)
    assert err <= 100 * np.linalg.cond(A) * max(rtol, case.eps)


def test_jacobi_errors(np_rng):
    with pytest.raises(ValueError, match=r"diagonal \+ damping has 1 entries <= 0 \(smallest -1.000e\+00\)"):
        precond.jacobi(np.array([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="diagonal must be 1-D"):
        precond.jacobi(np.ones((2, 2)))
    with pytest.raises(ValueError, match="diagonal contains NaN"):
        precond.jacobi(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="damping=-1.0 is not allowed"):
        precond.jacobi(np.ones(3), damping=-1.0)
    op = matfree.from_hvp(lambda v: v, size=3)
    with pytest.raises(TypeError, match="does not know its diagonal exactly"):
        precond.jacobi(op)
    with pytest.raises(TypeError, match="diagonal must be a 1-D array, an Estimate"):
        precond.jacobi([1.0, 2.0])
    # damping rescues an estimated diagonal with a small negative entry
    M = precond.jacobi(np.array([1.0, -0.1]), damping=0.2)
    np.testing.assert_allclose(M.diagonal(), [1 / 1.2, 10.0])


# ----------------------------------------------------------------------
# Nyström
# ----------------------------------------------------------------------


def test_nystrom_matches_dense_formula(case, np_rng):
    K = _kernel(np_rng, N)
    rank, mu = 8, 1e-3
    Ka = case.asarray(K)
    M = precond.nystrom(Ka, rank, mu, rng=5)
    # the same sketch, built directly, gives U and the eigenvalues
    L = sketch.nystrom(Ka, rank, rng=5)
    U, s = to_np(L.U).astype(float), to_np(L.s).astype(float)
    dense = (s[-1] + mu) * (U / (s + mu)) @ U.T + np.eye(N) - U @ U.T
    case.close(M.todense(), dense, rtol=50 * case.eps, atol=50 * case.eps)
    assert M.positive_definite and M.symmetric and M.rank == rank
    assert M.setup_matvecs == rank + 10
    assert np.linalg.eigvalsh(dense).min() > 0
    b = np_rng.standard_normal(N)
    # solve() applies P itself: P^{-1} P b = b
    case.close(M @ M.solve(case.asarray(b)), b, rtol=1e3 * case.eps, atol=1e3 * case.eps)


def test_nystrom_pcg_five_times_fewer_iterations():
    """Frangella-Tropp-Udell: rank ~ 2 d_eff(mu) makes PCG iterations O(1)."""
    rng = np.random.default_rng(0)
    n = 400
    K = _kernel(rng, n)
    b = rng.standard_normal(n)
    lam = np.linalg.eigvalsh(K)
    for mu in [1e-3, 1e-5]:
        d_eff = float(np.sum(lam / (lam + mu)))
        M = precond.nystrom(K, int(np.ceil(2 * d_eff)), mu, rng=1)
        plain = cg(K, b, damping=mu, rtol=1e-8, maxiter=10 * n)
        pcg = cg(K, b, damping=mu, M=M, rtol=1e-8)
        assert plain.converged and pcg.converged
        assert 5 * pcg.num_iters <= plain.num_iters, (mu, plain.num_iters, pcg.num_iters)
        np.testing.assert_allclose(pcg.x, np.linalg.solve(K + mu * np.eye(n), b), rtol=1e-4)
    # the preconditioned spectrum is clustered (FTU 2023, Prop. 5.3: cond <= 28 in expectation)
    P_inv = M.todense()
    w, V = np.linalg.eigh(P_inv)
    half = (V * np.sqrt(w)) @ V.T
    ev = np.linalg.eigvalsh(half @ (K + 1e-5 * np.eye(n)) @ half)
    assert ev.max() / ev.min() <= 28


def test_nystrom_errors():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((30, 4))
    A = G @ G.T  # rank 4
    with pytest.raises(ValueError, match=r"damping=0 and the Nyström sketch has a \(numerically\) zero eigenvalue"):
        precond.nystrom(A, 8, 0.0, rng=0)
    with pytest.raises(ValueError, match="damping=-0.1 is not allowed"):
        precond.nystrom(A, 3, -0.1, rng=0)
    with pytest.raises(ValueError, match="rank"):
        precond.nystrom(A, 30, 1e-3, rng=0)
    with pytest.raises(ValueError, match="not positive semidefinite"):
        precond.nystrom(-A - np.eye(30), 3, 1e-3, rng=0)


# ----------------------------------------------------------------------
# L-BFGS
# ----------------------------------------------------------------------


def test_lbfgs_matches_quasinewton_and_is_exact_on_a_spanning_set(case, np_rng):
    Q, _ = np.linalg.qr(np_rng.standard_normal((8, 8)))
    A = (Q * np.linspace(1.0, 4.0, 8)) @ Q.T
    A = (A + A.T) / 2
    S = Q * np_rng.uniform(0.5, 2.0, 8)  # A-conjugate steps, as CG makes them
    Y = A @ S
    H = precond.lbfgs(case.asarray(S), case.asarray(Y))
    ref = LBFGS(8)
    for j in range(8):
        ref.update(case.asarray(S[:, j]), case.asarray(Y[:, j]))
    v = case.asarray(np_rng.standard_normal(8))
    case.close(H @ v, ref.inverse_hessian() @ v)
    # n conjugate pairs of a quadratic: BFGS reproduces A^{-1} exactly
    cond = np.linalg.cond(A)
    case.close(H.todense(), np.linalg.inv(A), rtol=1e2 * cond * case.eps,
               atol=1e2 * cond * case.eps)
    # a list of pairs gives the same operator
    H2 = precond.lbfgs([case.asarray(S[:, j]) for j in range(8)],
                       [case.asarray(Y[:, j]) for j in range(8)])
    case.close(H2 @ v, H @ v)


def test_lbfgs_preconditioner_from_cg_pairs_cuts_iterations(np_rng):
    """Pairs from a first solve precondition the next one (Morales-Nocedal)."""
    n = 200
    Q, _ = np.linalg.qr(np_rng.standard_normal((n, n)))
    lam = np.r_[np.logspace(2, 4, 10), np.linspace(1, 2, n - 10)]
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    steps = []
    cg(A, np_rng.standard_normal(n), rtol=1e-10, callback=lambda x: steps.append(x.copy()))
    S = np.diff(np.column_stack([np.zeros(n)] + steps), axis=1)[:, :15]
    H = precond.lbfgs(S, A @ S)
    b = np_rng.standard_normal(n)
    plain = cg(A, b, rtol=1e-8)
    pcg = cg(A, b, M=H, rtol=1e-8)
    assert pcg.converged and pcg.num_iters < plain.num_iters
    want = np.linalg.solve(A, b)
    assert np.linalg.norm(pcg.x - want) <= 1e-5 * np.linalg.norm(want)


def test_lbfgs_errors():
    s = np.ones(3)
    with pytest.raises(ValueError, match="s_pairs has 2 vectors but y_pairs has 1"):
        precond.lbfgs([s, s], [s])
    with pytest.raises(ValueError, match="s_pairs is empty"):
        precond.lbfgs([], [])
    with pytest.raises(ValueError, match="none of the 1 pairs satisfies the curvature condition"):
        precond.lbfgs([s], [-s])
    with pytest.raises(TypeError, match="s_pairs must be a sequence of 1-D arrays"):
        precond.lbfgs(3.0, [s])
    with pytest.raises(ValueError, match="y_pairs must be a sequence of 1-D arrays or a 2-D"):
        precond.lbfgs([s], np.ones((3, 1, 1)))


# ----------------------------------------------------------------------
# Every preconditioner works as M of every solver
# ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jacobi", "nystrom", "lbfgs"])
def test_solvers_accept_each_preconditioner(case, np_rng, kind):
    A = _badly_scaled_spd(np_rng, N)
    mu = 0.1
    Ad = A + mu * np.eye(N)
    Aa = case.asarray(A)
    if kind == "jacobi":
        M = precond.jacobi(matfree.Dense(Aa), damping=mu)
    elif kind == "nystrom":
        M = precond.nystrom(Aa, 10, mu, rng=0)
    else:
        S = np_rng.standard_normal((N, 6))
        M = precond.lbfgs(case.asarray(S), case.asarray(Ad @ S))
    b = np_rng.standard_normal(N)
    want = np.linalg.solve(Ad, b)
    cond = np.linalg.cond(Ad)
    rtol = 1e-4 if case.dtype_name == "float32" else 1e-10
    tol = 100 * cond * max(rtol, case.eps)
    res = cg(Aa, case.asarray(b), damping=mu, M=M, rtol=rtol, maxiter=20 * N)
    assert res.status == "converged"
    assert np.linalg.norm(to_np(res.x) - want) <= tol * np.linalg.norm(want)
    res = minres(Aa, case.asarray(b), shift=mu, M=M, rtol=rtol, maxiter=20 * N)
    assert res.status == "converged"
    assert np.linalg.norm(to_np(res.x) - want) <= tol * np.linalg.norm(want)
    res = steihaug_cg(Aa, case.asarray(b), 1e8, damping=mu, M=M, rtol=rtol, maxiter=20 * N)
    assert res.status == "converged"
    assert np.linalg.norm(to_np(res.x) + want) <= tol * np.linalg.norm(want)
