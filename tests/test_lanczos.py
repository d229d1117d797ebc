"""Lanczos, block Lanczos and eigsh against dense NumPy references."""

import math
import sys

import numpy as np
import pytest
from conftest import to_np

import matfree
from matfree import _backend as B
from matfree.lanczos import block_lanczos, eigsh, lanczos

# ----------------------------------------------------------------- helpers


def _orthogonal(rng, n):
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def _with_spectrum(rng, lam):
    """Exactly symmetric dense matrix Q diag(lam) Q^T."""
    Q = _orthogonal(rng, lam.size)
    M = (Q * lam) @ Q.T
    return (M + M.T) / 2


SPECTRA = {
    "flat": lambda rng, n: np.linspace(1.0, 2.0, n),
    "power_law": lambda rng, n: np.arange(1, n + 1, dtype=float) ** -1.0,
    "exponential": lambda rng, n: 0.97 ** np.arange(n),
    "clustered": lambda rng, n: np.concatenate(
        [1.0 + 1e-3 * rng.standard_normal(n // 4), 5.0 + 1e-3 * rng.standard_normal(n - n // 4)]
    ),
    "exact_zeros": lambda rng, n: np.concatenate([np.zeros(n // 4), rng.uniform(1.0, 3.0, n - n // 4)]),
    "indefinite": lambda rng, n: rng.uniform(-3.0, 2.0, n),
}


def _reference_lanczos(M, v, m):
    """Textbook Lanczos with full reorthogonalisation (float64, explicit loop)."""
    n = M.shape[0]
    Q = np.zeros((n, m))
    alpha, beta = np.zeros(m), np.zeros(m)
    q, q_prev, b_prev = v / np.linalg.norm(v), np.zeros(n), 0.0
    for j in range(m):
        Q[:, j] = q
        w = M @ q - b_prev * q_prev
        alpha[j] = q @ w
        w = w - alpha[j] * q
        for _ in range(2):
            for i in range(j + 1):
                w = w - (Q[:, i] @ w) * Q[:, i]
        beta[j] = np.linalg.norm(w)
        q_prev, q, b_prev = q, w / beta[j], beta[j]
    return alpha, beta


def _relation_error(M, res):
    """max |A Q - Q T - r e_m^T| for a single-vector LanczosResult."""
    Q = to_np(res.basis).astype(np.float64)
    T = to_np(res.tridiagonal()).astype(np.float64)
    r = to_np(res.residual).astype(np.float64)
    E = np.zeros(Q.shape[1])
    E[-1] = 1.0
    return np.abs(M @ Q - Q @ T - np.outer(r, E)).max()


# ------------------------------------------------------------------ lanczos


@pytest.mark.parametrize("reorth", ["full", "partial", "none"])
def test_lanczos_matches_reference_and_relation(case, reorth, np_rng):
    n, m = 40, 12
    lam = np.linspace(1.0, 10.0, n)
    M = _with_spectrum(np_rng, lam)
    v = np_rng.standard_normal(n)
    res = lanczos(case.asarray(M), case.asarray(v), m, reorth=reorth)
    a_ref, b_ref = _reference_lanczos(M, v, m)
    tol = 2000 * case.eps * 10.0
    np.testing.assert_allclose(to_np(res.alpha), a_ref, atol=tol)
    np.testing.assert_allclose(to_np(res.beta), b_ref, atol=tol)
    assert _relation_error(M, res) <= 100 * case.eps * 10.0 * math.sqrt(m)
    assert res.num_matvecs == m and res.num_steps == m
    assert res.status == "completed" and not res.breakdown
    assert B.namespace(res.alpha) is B.namespace(case.asarray(v))
    assert res.alpha.dtype == case.dtype


def test_full_reorth_keeps_basis_orthonormal_over_hundreds_of_steps(np_rng):
    n, m = 500, 300
    lam = np.concatenate([np.logspace(-6, 0, n - 5), [10, 100, 1000, 1e4, 1e5]])
    M = _with_spectrum(np_rng, lam)
    res = lanczos(M, np_rng.standard_normal(n), m, reorth="full")
    Q = res.basis
    assert np.abs(Q.T @ Q - np.eye(m)).max() <= 1e-12
    plain = lanczos(M, np_rng.standard_normal(n), m, reorth="none", return_basis=True)
    assert np.abs(plain.basis.T @ plain.basis - np.eye(m)).max() > 1e-3  # what full reorth prevents


def test_partial_reorth_is_semiorthogonal_and_cheaper(np_rng):
    n, m = 300, 150
    M = _with_spectrum(np_rng, np.linspace(0.0, 1.0, n) ** 3)
    res = lanczos(M, np_rng.standard_normal(n), m, reorth="partial")
    Q = res.basis
    eps = np.finfo(float).eps
    assert np.abs(Q.T @ Q - np.eye(m)).max() <= 10 * math.sqrt(eps)
    assert 0 < res.info["num_reorth"] < m
    # semi-orthogonality is enough for T: extreme Ritz values as accurate as with full reorth
    full = lanczos(M, to_np(Q[:, 0]), m, reorth="full")
    ext = lambda r: np.linalg.eigvalsh(r.tridiagonal())[[0, -1]]  # noqa: E731
    np.testing.assert_allclose(ext(res), ext(full), atol=1e-12)


def test_block_of_starting_vectors_runs_independent_processes(case, np_rng):
    n, m, p = 30, 8, 3
    M = _with_spectrum(np_rng, np_rng.uniform(1.0, 4.0, n))
    V = np_rng.standard_normal((n, p))
    res = lanczos(case.asarray(M), case.asarray(V), m)
    assert tuple(res.alpha.shape) == (p, m) and tuple(res.basis.shape) == (p, n, m)
    assert res.num_matvecs == p * m and res.num_steps == (m,) * p
    for i in range(p):
        single = lanczos(case.asarray(M), case.asarray(V[:, i]), m)
        case.close(res.alpha[i, :], single.alpha, rtol=500 * case.eps, atol=500 * case.eps)
        case.close(res.beta[i, :], single.beta, rtol=500 * case.eps, atol=500 * case.eps)


def test_breakdown_is_a_result(case):
    d = np.repeat([1.0, 2.0, 3.0], 8)
    A = matfree.Diagonal(case.asarray(d))
    res = lanczos(A, case.asarray(np.ones(24)), 10)
    assert res.breakdown and res.status == "breakdown" and res.num_steps == 3
    assert res.num_matvecs == 3
    np.testing.assert_allclose(np.linalg.eigvalsh(to_np(res.tridiagonal())), [1, 2, 3], atol=50 * case.eps)
    # per probe in a block: the exhausted probe stops spending products
    V = np.zeros((24, 2))
    V[:, 0] = 1.0
    V[0, 1] = 1.0  # an eigenvector: invariant after one step
    res = lanczos(A, case.asarray(V), 10)
    assert res.num_steps == (3, 1) and res.breakdown == (True, True)
    assert res.num_matvecs == 3 + 1
    assert float(res.beta[1, 0]) == 0.0


def test_num_steps_larger_than_n_is_clipped(np_rng):
    M = _with_spectrum(np_rng, np.linspace(1, 2, 6))
    res = lanczos(M, np.ones(6), 50)
    assert res.info["clipped"] and res.info["num_steps_requested"] == 50
    assert res.num_steps == 6 and res.status == "clipped"
    np.testing.assert_allclose(np.linalg.eigvalsh(res.tridiagonal()), np.linspace(1, 2, 6), atol=1e-13)


def test_mixed_precision_accumulation(xp, np_rng):
    n, m = 200, 120
    lam = np.linspace(1e-3, 1.0, n) ** 2
    M = _with_spectrum(np_rng, lam).astype(np.float32)
    seen = []
    Ma = xp.asarray(M)

    def hvp(v):
        seen.append(v.dtype)
        return Ma @ v

    A = matfree.from_hvp(hvp, like=xp.asarray(np.zeros(n, dtype=np.float32)))
    res = lanczos(A, xp.asarray(np.ones(n, dtype=np.float32)), m, accumulate_dtype="float64")
    assert seen and all(d == xp.float32 for d in seen)  # the products ran in float32
    assert res.alpha.dtype == xp.float64 and res.basis.dtype == xp.float64
    Q = to_np(res.basis)
    assert np.abs(Q.T @ Q - np.eye(m)).max() <= 1e-12
    # the relation holds to float32 accuracy of the products
    eps32 = np.finfo(np.float32).eps
    assert _relation_error(M.astype(np.float64), res) <= 50 * eps32 * math.sqrt(n)
    with pytest.raises(ValueError, match="accumulate_dtype=float32 is lower than the operator's float64"):
        lanczos(np.eye(3), np.ones(3), 2, accumulate_dtype="float32")


def test_non_finite_products_raise(np_rng):
    A = matfree.from_hvp(lambda v: v * np.nan, size=5)
    with pytest.raises(matfree.NonFiniteError, match="NaN or Inf"):
        lanczos(A, np.ones(5), 3)
    unchecked = matfree.from_hvp(lambda v: v * np.inf, size=5, check_finite=False)
    with pytest.raises(matfree.NonFiniteError, match="Lanczos step 0"):
        lanczos(unchecked, np.ones(5), 3)
    with pytest.raises(matfree.NonFiniteError, match="NaN or Inf"):
        eigsh(unchecked, 2, rng=0)


def test_lanczos_bad_input():
    with pytest.raises(ValueError, match=r"A must be square, got an operator of shape \(3, 4\)"):
        lanczos(np.ones((3, 4)), np.ones(4), 2)
    with pytest.raises(ValueError, match="A is not symmetric: max |A - A\\^T|"):
        lanczos(np.triu(np.ones((4, 4))), np.ones(4), 2)
    scipy_op = pytest.importorskip("scipy.sparse.linalg").aslinearoperator(np.eye(4))
    with pytest.raises(ValueError, match="not declared symmetric"):
        lanczos(scipy_op, np.ones(4), 2)
    with pytest.raises(ValueError, match="v0 is the zero vector"):
        lanczos(np.eye(4), np.zeros(4), 2)
    with pytest.raises(ValueError, match="column 1 of v0 is zero"):
        lanczos(np.eye(4), np.array([[1.0, 0.0]] * 4), 2)
    with pytest.raises(ValueError, match=r"shape mismatch: v0 has shape \(3,\)"):
        lanczos(np.eye(4), np.ones(3), 2)
    with pytest.raises(ValueError, match=r"num_steps=0 is out of range; expected 1 <= num_steps"):
        lanczos(np.eye(4), np.ones(4), 0)
    with pytest.raises(TypeError, match="num_steps must be an int, got float"):
        lanczos(np.eye(4), np.ones(4), 2.0)
    with pytest.raises(ValueError, match="reorth='twice' is not known"):
        lanczos(np.eye(4), np.ones(4), 2, reorth="twice")
    with pytest.raises(TypeError, match="v0 has dtype int64"):
        lanczos(np.eye(4), np.ones(4, dtype=np.int64), 2)


# ------------------------------------------------------------ block Lanczos


def test_block_lanczos_relation_and_eigenvalues(case, np_rng):
    n, b, m = 40, 3, 6
    lam = np.linspace(1.0, 5.0, n)
    M = _with_spectrum(np_rng, lam)
    V0 = np_rng.standard_normal((n, b))
    res = block_lanczos(case.asarray(M), case.asarray(V0), m)
    Q = to_np(res.basis).astype(np.float64)
    T = to_np(res.tridiagonal()).astype(np.float64)
    R = to_np(res.residual).astype(np.float64)
    E = np.zeros((m * b, b))
    E[-b:, :] = np.eye(b)
    assert np.abs(Q.T @ Q - np.eye(m * b)).max() <= 200 * case.eps
    assert np.abs(M @ Q - Q @ T - R @ E.T).max() <= 500 * case.eps * 5.0
    Q0 = Q[:, :b]
    np.testing.assert_allclose(Q0 @ to_np(res.R0), V0, atol=500 * case.eps * np.abs(V0).max())
    assert res.num_matvecs == m * b
    # Ritz values equal those of the block Krylov space span{V0, A V0, ..., A^5 V0}
    K = np.concatenate([np.linalg.matrix_power(M / 5.0, j) @ V0 for j in range(m)], axis=1)
    Qk = np.linalg.qr(K)[0]
    want = np.linalg.eigvalsh(Qk.T @ M @ Qk)
    np.testing.assert_allclose(np.linalg.eigvalsh(T), want, atol=max(1e-7, 2000 * case.eps))


def test_block_lanczos_rank_deficiency_and_breakdown(np_rng):
    d = np.repeat([1.0, 2.0, 3.0, 4.0], 5)
    A = np.diag(d)
    V0 = np.ones((20, 2))  # two equal columns: rank one
    res = block_lanczos(A, V0, 10, rng=0)
    assert res.info["deflated"][0] == 1
    Q = res.basis
    assert np.abs(Q.T @ Q - np.eye(Q.shape[1])).max() <= 1e-13
    assert np.abs(A @ Q - Q @ res.tridiagonal() - res.residual @ np.eye(Q.shape[1])[-2:, :]).max() <= 1e-12
    assert {1.0, 2.0, 3.0, 4.0} <= set(np.round(np.linalg.eigvalsh(res.tridiagonal()), 10))
    D4 = np.diag([1.0, 2.0, 3.0, 4.0])
    small = block_lanczos(D4, np.eye(4)[:, :2], 10)  # A V0 = V0 diag(1, 2): invariant at once
    assert small.breakdown and small.num_steps == 1 and small.status == "breakdown"
    full = block_lanczos(D4, np_rng.standard_normal((4, 2)), 10)  # clipped to ceil(4 / 2) steps
    assert full.num_steps == 2 and full.status == "clipped" and full.info["clipped"]
    np.testing.assert_allclose(np.linalg.eigvalsh(full.tridiagonal()), [1, 2, 3, 4], atol=1e-13)
    with pytest.raises(ValueError, match="reorth='partial' is not available for block Lanczos"):
        block_lanczos(A, V0, 2, reorth="partial")
    with pytest.raises(ValueError, match="V0 is zero"):
        block_lanczos(A, np.zeros((20, 2)), 2)
    with pytest.raises(ValueError, match=r"V0 must be a 2-D block"):
        block_lanczos(A, np.ones(20), 2)


# -------------------------------------------------------------------- eigsh


def _reference(lam, which, k):
    ex = np.sort(lam)
    if which == "LA":
        return ex[-k:]
    if which == "SA":
        return ex[:k]
    if which == "LM":
        return np.sort(lam[np.argsort(-np.abs(lam), kind="stable")[:k]])
    return np.concatenate([ex[: k // 2], ex[len(ex) - (k - k // 2) :]])


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
@pytest.mark.parametrize("which", ["LA", "SA", "LM", "BE"])
def test_eigsh_matches_dense_eigh(spectrum, which, np_rng):
    n, k, tol = 100, 4, 1e-8
    lam = SPECTRA[spectrum](np_rng, n)
    M = _with_spectrum(np_rng, lam)
    # a multiple eigenvalue (the zeros) needs a block at least as large as the
    # number of its copies wanted: a single Krylov vector sees one per eigenspace
    b = k if spectrum == "exact_zeros" and which in ("SA", "BE") else 1
    res = eigsh(M, k, which, tol=tol, rng=1, block_size=b)
    assert res.converged and res.status == "converged"
    want = _reference(np.linalg.eigvalsh(M), which, k)
    scale = np.abs(lam).max()
    eps = np.finfo(float).eps
    # eigenvalue error <= residual^2 / gap <= residual: bound it by the residual tolerance
    np.testing.assert_allclose(res.eigenvalues, want, rtol=tol, atol=100 * eps * scale)
    X = res.eigenvectors
    true_res = np.linalg.norm(M @ X - X * res.eigenvalues, axis=0)
    bound = np.maximum(tol * np.abs(res.eigenvalues), 10 * eps * scale)
    assert np.all(true_res <= 1.5 * bound + 100 * eps * scale)
    np.testing.assert_allclose(res.residual_norms, true_res, atol=100 * eps * scale + 0.1 * bound.max())
    assert np.abs(X.T @ X - np.eye(k)).max() < 1e-10


def test_block_eigsh_finds_multiple_eigenvalues():
    """2-D Laplacian: lambda_ij = lambda_ji, so the top eigenvalues come in pairs."""
    m = 12
    t = 2.0 - 2.0 * np.cos(np.arange(1, m + 1) * np.pi / (m + 1))
    T1 = np.diag(np.full(m, 2.0)) - np.diag(np.ones(m - 1), 1) - np.diag(np.ones(m - 1), -1)
    L = np.kron(T1, np.eye(m)) + np.kron(np.eye(m), T1)
    want = np.sort(np.add.outer(t, t).ravel())[-6:]
    assert np.sum(np.isclose(want, want[-2])) == 2  # a double eigenvalue among the wanted
    for seed in range(3):
        res = eigsh(L, 6, "LA", block_size=2, rng=seed)
        assert res.converged and res.info["block_size"] == 2
        np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-8)
        assert np.abs(res.eigenvectors.T @ res.eigenvectors - np.eye(6)).max() < 1e-10


def test_eigsh_smallest_of_an_indefinite_hessian(np_rng):
    """A damping is chosen from lambda_min, so "SA" must work on indefinite operators."""
    n = 300
    lam = np.concatenate([[-2.0, -0.5, -1e-3], np.linspace(1e-3, 50.0, n - 3)])
    M = _with_spectrum(np_rng, lam)
    H = matfree.from_hvp(lambda v: M @ v, size=n)
    res = eigsh(H, 3, "SA", rng=0)
    np.testing.assert_allclose(res.eigenvalues, [-2.0, -0.5, -1e-3], rtol=1e-8)
    assert res.num_matvecs == H.num_matvecs


def test_eigsh_across_backends(case, np_rng):
    n, k = 60, 3
    lam = np.concatenate([np.linspace(0.1, 1.0, n - 3), [2.0, 3.0, 4.0]])
    M = _with_spectrum(np_rng, lam)
    tol = 1e-8 if case.dtype_name == "float64" else 1e-5
    A = case.asarray(M)
    for which, want in (("LA", [2.0, 3.0, 4.0]), ("SA", np.sort(lam)[:3])):
        res = eigsh(A, k, which, tol=tol, rng=0)
        assert res.converged
        case.close(res.eigenvalues, want, rtol=10 * tol, atol=100 * case.eps * 4.0)
        X = to_np(res.eigenvectors).astype(np.float64)
        lam_h = to_np(res.eigenvalues).astype(np.float64)
        assert np.all(np.linalg.norm(M @ X - X * lam_h, axis=0) <= 10 * tol * 4.0 + 1e3 * case.eps)
        assert B.namespace(res.eigenvalues) is B.namespace(A)
        assert res.eigenvectors.dtype == case.dtype


def test_eigsh_float32_operator_with_float64_accumulation(xp, np_rng):
    n = 120
    lam = np.linspace(1.0, 2.0, n)
    M = _with_spectrum(np_rng, lam)
    A = matfree.Dense(xp.asarray(M.astype(np.float32)))
    res = eigsh(A, 2, "LA", tol=1e-6, rng=0, accumulate_dtype="float64")
    assert res.eigenvalues.dtype == xp.float64 and res.converged
    want = np.linalg.eigvalsh(M.astype(np.float32).astype(np.float64))[-2:]
    np.testing.assert_allclose(to_np(res.eigenvalues), want, rtol=1e-6)


def test_eigsh_same_rng_same_result(case, np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 3.0, 50))
    a = eigsh(case.asarray(M), 2, rng=7)
    b = eigsh(case.asarray(M), 2, rng=7)
    np.testing.assert_array_equal(to_np(a.eigenvalues), to_np(b.eigenvalues))
    assert a.num_matvecs == b.num_matvecs


def test_eigsh_recovers_from_an_invariant_starting_vector():
    A = np.diag(np.arange(1.0, 41.0))
    v0 = np.zeros(40)
    v0[5] = 1.0  # an eigenvector: the Krylov space is invariant after one step
    res = eigsh(A, 3, "LA", v0=v0, rng=0)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, [38.0, 39.0, 40.0], rtol=1e-10)


def test_eigsh_full_space_and_maxiter(np_rng):
    M = _with_spectrum(np_rng, np.linspace(-1.0, 1.0, 12))
    res = eigsh(M, 11, "LA", ncv=12, rng=0)  # the basis spans everything: exact
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, np.linspace(-1, 1, 12)[1:], atol=1e-13)
    hard = _with_spectrum(np_rng, np.linspace(0.0, 1.0, 400) ** 0.5)
    res = eigsh(hard, 4, "SA", ncv=8, maxiter=2, rng=0)
    assert not res.converged and res.status == "maxiter"
    assert 8 < res.num_matvecs <= 8 + 2 * (8 - 4)
    assert res.info["num_restarts"] == 2
    assert "converged=False" in repr(res)


def test_eigsh_counts_every_product(np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 9.0, 80))
    A = matfree.Dense(M)
    res = eigsh(A, 3, "BE", rng=0, check_symmetric=True)
    assert res.num_matvecs == A.num_matvecs


def test_eigsh_shift_invert_finds_interior_eigenvalues(np_rng):
    pytest.importorskip("matfree.solvers")
    n = 120
    lam = np.linspace(-3.0, 5.0, n)
    M = _with_spectrum(np_rng, lam)
    A = matfree.Dense(M)
    sigma = 0.51
    res = eigsh(A, 3, sigma=sigma, rng=0)
    near = np.sort(lam[np.argsort(np.abs(lam - sigma))[:3]])
    assert res.converged, res
    np.testing.assert_allclose(res.eigenvalues, near, rtol=1e-8)
    X = res.eigenvectors
    assert np.all(np.linalg.norm(M @ X - X * res.eigenvalues, axis=0) <= 1e-8 * np.abs(near) + 1e-12)
    assert res.num_matvecs == A.num_matvecs  # inner MINRES products included
    above = eigsh(A, 2, "LA", sigma=sigma, rng=0)
    np.testing.assert_allclose(above.eigenvalues, np.sort(lam[lam > sigma])[:2], rtol=1e-8)


def test_eigsh_bad_input(np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 10))
    with pytest.raises(ValueError, match=r"k=10 is out of range; expected 1 <= k <= 9 \(k >= n: use a dense"):
        eigsh(M, 10)
    with pytest.raises(ValueError, match="which='XX' is not known; expected one of"):
        eigsh(M, 2, "XX")
    with pytest.raises(ValueError, match=r"tol=-1.0 is invalid"):
        eigsh(M, 2, tol=-1.0)
    with pytest.raises(ValueError, match=r"ncv=2 is out of range; expected 3 <= ncv <= 10"):
        eigsh(M, 2, ncv=2)
    with pytest.raises(TypeError, match="k must be an int"):
        eigsh(M, 2.5)
    with pytest.raises(ValueError, match=r"v0 must have shape \(10,\)"):
        eigsh(M, 2, v0=np.ones(3))
    with pytest.raises(ValueError, match="v0 is the zero vector"):
        eigsh(M, 2, v0=np.zeros(10))
    with pytest.raises(ValueError, match=r"A must be square"):
        eigsh(np.ones((4, 5)), 2)
    lying = matfree.from_hvp(lambda v: np.triu(np.ones((10, 10))) @ v, size=10)  # declared symmetric
    with pytest.raises(ValueError, match="failed the symmetry check"):
        eigsh(lying, 2, check_symmetric=True, rng=0)
    with pytest.raises(ValueError, match="sigma=nan must be finite"):
        eigsh(M, 2, sigma=float("nan"))


def test_result_reprs(np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 10))
    assert "LanczosResult(num_steps=4" in repr(lanczos(M, np.ones(10), 4))
    assert "BlockLanczosResult(num_steps=2, block_size=2" in repr(block_lanczos(M, np.eye(10)[:, :2], 2))
    assert "EigResult(eigenvalues=" in repr(eigsh(M, 2, rng=0))


def test_fused_kernel_path_matches_the_array_api_path(np_rng):
    """For NumPy inputs the recurrence may run in a Numba kernel; results agree to rounding."""
    from matfree import _kernels

    n = _kernels.cg.MIN_SIZE + 1  # large enough for the kernel to take it
    A = matfree.Diagonal(np_rng.uniform(1.0, 2.0, n))
    V = np_rng.standard_normal((n, 2))
    fast = lanczos(A, V, 6, reorth="none", return_basis=False)  # columns
    e_fast = eigsh(A, 1, "LA", rng=0, ncv=5, maxiter=1)  # rows
    with _kernels.disabled():
        ref = lanczos(A, V, 6, reorth="none", return_basis=False)
        e_ref = eigsh(A, 1, "LA", rng=0, ncv=5, maxiter=1)
    np.testing.assert_allclose(fast.alpha, ref.alpha, rtol=1e-10)
    np.testing.assert_allclose(fast.beta, ref.beta, rtol=1e-10)
    np.testing.assert_allclose(e_fast.eigenvalues, e_ref.eigenvalues, rtol=1e-10)


# ------------------------------------------------------- multiple eigenvalues


def _multiple_copies(rng):
    """Block diagonal diag(S, S, C): a double top eigenvalue and a triple bottom one.

    A single Krylov vector sees one direction of each eigenspace, and the block
    structure and the wide gaps (quick convergence) keep rounding errors from
    revealing the others: without the check every ``which`` below misses copies.
    """
    s = np.concatenate([[-4.0, -3.0], np.linspace(-1.0, 1.0, 16), [3.0, 4.0]])
    c = np.concatenate([[-4.0], np.linspace(-3.0, 3.0, 19)])  # shares the bottom only
    blocks = [_with_spectrum(rng, s), _with_spectrum(rng, s), _with_spectrum(rng, c)]
    M = np.zeros((60, 60))
    for i, blk in enumerate(blocks):
        M[20 * i : 20 * i + 20, 20 * i : 20 * i + 20] = blk
    return M


@pytest.mark.parametrize("which", ["LA", "SA", "BE"])
def test_eigsh_returns_every_copy_of_a_multiple_eigenvalue(case, which, np_rng):
    M = _multiple_copies(np_rng)
    lam = np.linalg.eigvalsh(M)
    assert np.sum(np.isclose(lam, 4.0)) == 2 and np.sum(np.isclose(lam, -4.0)) == 3
    k = 6
    want = {"LA": lam[-k:], "SA": lam[:k], "BE": np.concatenate([lam[: k // 2], lam[-(k - k // 2) :]])}[which]
    tol = 1e-8 if case.dtype_name == "float64" else 1e-4
    res = eigsh(case.asarray(M), k, which, tol=tol, rng=1, block_size=1)
    assert res.converged and res.info["multiplicity_check"] == "done"
    case.close(res.eigenvalues, np.sort(want), rtol=10 * tol, atol=100 * case.eps * 4.0)
    X = to_np(res.eigenvectors).astype(np.float64)
    assert np.abs(X.T @ X - np.eye(k)).max() < 1e3 * case.eps  # the copies are distinct vectors


def test_multiplicity_check_cost_and_opt_out(np_rng):
    M = _multiple_copies(np_rng)
    lam = np.linalg.eigvalsh(M)
    A = matfree.Dense(M)
    res = eigsh(A, 6, "LA", rng=1)
    np.testing.assert_allclose(res.eigenvalues, lam[-6:], rtol=1e-8)
    assert res.num_matvecs == A.num_matvecs  # the check's products are counted
    assert 0 < res.info["multiplicity_check_matvecs"] < res.num_matvecs
    assert res.info["num_multiplicity_checks"] >= 2  # the first check found second copies
    off = eigsh(M, 6, "LA", rng=1, check_multiplicity=False)
    assert off.info["multiplicity_check"] == "off" and off.info["multiplicity_check_matvecs"] == 0
    assert off.converged and not np.allclose(off.eigenvalues, lam[-6:], rtol=1e-3)  # what is given up
    assert off.num_matvecs < res.num_matvecs
    # a simple spectrum: one check that finds nothing
    simple = eigsh(_with_spectrum(np_rng, np.linspace(1.0, 2.0, 60)), 3, "LA", rng=0)
    assert simple.info["num_multiplicity_checks"] == 1


# ------------------------------------------------------------------ progress


class _FakeTqdm:
    instances = []

    def __init__(self, total=None, desc="", unit="", **kwargs):
        self.n, self.desc, self.unit, self.postfixes, self.closed = 0, desc, unit, [], False
        _FakeTqdm.instances.append(self)

    def set_postfix(self, postfix, refresh=True):
        self.postfixes.append(dict(postfix))

    def update(self, n=1):
        self.n += n

    def close(self):
        self.closed = True


def test_eigsh_progress_bar_reports_matvecs_and_convergence(monkeypatch, np_rng):
    import types

    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = _FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    _FakeTqdm.instances = []
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 200))
    res = eigsh(M, 3, "LA", rng=0, ncv=8, progress=True)
    (bar,) = _FakeTqdm.instances
    assert bar.closed and bar.n == res.num_matvecs and bar.unit == "matvec"
    assert "eigsh" in bar.desc
    assert {"converged", "max_res"} <= set(bar.postfixes[0])
    assert bar.postfixes[-1]["converged"] == "3/3"
    assert any("check" in p for p in bar.postfixes)  # the multiplicity check shows itself


def test_eigsh_progress_without_tqdm(monkeypatch, np_rng):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm fails
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 30))
    assert eigsh(M, 2, rng=0).converged  # progress=False never imports tqdm
    with pytest.raises(ImportError, match="progress=True needs tqdm"):
        eigsh(M, 2, rng=0, progress=True)
