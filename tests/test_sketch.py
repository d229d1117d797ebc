"""Randomized sketches against dense NumPy references and the HMT/TYUC error bounds."""

import math

import numpy as np
import pytest
from conftest import to_np

import matfree
from matfree import sketch as sk

SEEDS = range(5)


# ------------------------------------------------------------- problems


def _orthogonal(rng, n):
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def _matrix(sig, m, n, seed):
    """``U diag(sig) Vᵀ`` (m×n) with Haar-random orthogonal factors."""
    rng = np.random.default_rng(seed)
    U, V = _orthogonal(rng, m)[:, : len(sig)], _orthogonal(rng, n)[:, : len(sig)]
    return (U * sig) @ V.T


def _symmetric(lam, seed):
    rng = np.random.default_rng(seed)
    Q = _orthogonal(rng, len(lam))
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


SPECTRA = {
    "power_law": lambda n: np.arange(1, n + 1, dtype=float) ** -1.0,
    "exponential": lambda n: 0.7 ** np.arange(n, dtype=float),
}


def _hmt_bound(sig, k, p, q):
    """HMT (2011) Cor. 10.10: bound on E‖(I − QQᵀ)A‖₂ after q power iterations."""
    e = 2 * q + 1
    tail = np.sqrt(np.sum(sig[k:] ** (2 * e)))
    val = (1 + math.sqrt(k / (p - 1))) * sig[k] ** e + math.e * math.sqrt(k + p) / p * tail
    return val ** (1.0 / e)


def _norm2(M):
    return np.linalg.norm(M, 2)


def _orthonormality_error(case, U):
    U = to_np(U).astype(np.float64)
    return np.abs(U.T @ U - np.eye(U.shape[1])).max()


# ------------------------------------------------------------ range finder


def test_range_finder_orthonormal_basis(case):
    A = _matrix(SPECTRA["exponential"](20), 30, 24, seed=0)
    Q = sk.range_finder(case.asarray(A), 5, oversample=3, power_iters=1, rng=0)
    assert tuple(Q.shape) == (30, 8)
    assert matfree._backend.namespace(Q) is matfree._backend.namespace(case.asarray(A))
    assert Q.dtype == case.dtype
    assert _orthonormality_error(case, Q) < 50 * case.eps
    # sketch size is capped at min(A.shape)
    assert tuple(sk.range_finder(case.asarray(A), 20, oversample=10, rng=0).shape) == (30, 24)


def test_orthonormalisation_paths(case, np_rng):
    """Gram/SVQB for well-conditioned blocks, Householder QR for (near) rank-deficient ones."""
    xp = case.xp
    Y = case.asarray(np_rng.standard_normal((30, 5)))
    Qg = sk._orth_gram(xp, Y)
    assert Qg is not None
    assert _orthonormality_error(case, Qg) < 50 * case.eps
    Qh = to_np(sk._orth_householder(xp, Y)).astype(np.float64)
    Qg = to_np(Qg).astype(np.float64)
    assert np.abs(Qg @ Qg.T - Qh @ Qh.T).max() < 100 * case.eps  # same span
    deficient = case.asarray(np_rng.standard_normal((30, 3)) @ np_rng.standard_normal((3, 5)))
    assert sk._orth_gram(xp, deficient) is None
    assert _orthonormality_error(case, sk._orth(xp, deficient)) < 50 * case.eps


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
@pytest.mark.parametrize("q", [0, 1, 2])
def test_range_finder_within_hmt_expected_error(spectrum, q):
    m, n, k, p = 90, 70, 10, 5
    sig = SPECTRA[spectrum](n)
    errs = []
    for seed in SEEDS:
        A = _matrix(sig, m, n, seed)
        Q = sk.range_finder(A, k, oversample=p, power_iters=q, rng=100 + seed)
        errs.append(_norm2(A - Q @ (Q.T @ A)))
    # the mean of 5 draws against the bound on the expectation (HMT Cor. 10.10);
    # the projection can never beat the optimal rank-(k+p) error
    assert np.mean(errs) <= _hmt_bound(sig, k, p, q)
    assert min(errs) >= sig[k + p] * (1 - 1e-8)


# ------------------------------------------------------------------- rsvd


def test_rsvd_recovers_exact_low_rank(case, np_rng):
    sig = np.array([5.0, 3.0, 2.0, 1.0])
    A = _matrix(sig, 30, 20, seed=1)
    Ma = case.asarray(A)
    Aop = matfree.FunctionOperator(
        lambda v: Ma @ v,
        A.shape,
        case.dtype,
        case.xp,
        rmatvec=lambda u: case.xp.matrix_transpose(Ma) @ u,
    )
    res = sk.rsvd(Aop, 4, oversample=3, power_iters=1, error_probes=5, rng=2)
    assert isinstance(res.operator, matfree.LowRank)
    assert tuple(res.U.shape) == (30, 4) and tuple(res.V.shape) == (20, 4)
    case.close(res.s, sig, rtol=100 * case.eps, atol=100 * case.eps)
    case.close(res.operator.todense(), A, atol=100 * case.eps)
    assert _orthonormality_error(case, res.U) < 50 * case.eps
    assert _orthonormality_error(case, res.V) < 50 * case.eps
    # products: ℓ(2q + 2) + error probes, all counted by the operator itself
    assert res.num_matvecs == 7 * 4 + 5 == Aop.num_matvecs
    assert res.error_estimate <= 1e3 * case.eps * sig[0]
    assert res.s.dtype == case.dtype


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
@pytest.mark.parametrize("q", [0, 2])
def test_rsvd_error_within_hmt_bound(spectrum, q):
    m, n, k, p = 90, 70, 10, 5
    sig = SPECTRA[spectrum](n)
    errs, bounds_ok = [], []
    for seed in SEEDS:
        A = _matrix(sig, m, n, seed)
        res = sk.rsvd(A, k, oversample=p, power_iters=q, rng=200 + seed)
        err = _norm2(A - res.operator.todense())
        errs.append(err)
        bounds_ok.append(err <= res.error_estimate)  # fails w.p. <= 1e-10
        np.testing.assert_allclose(res.s, np.sort(res.s)[::-1])
    # HMT Thm 9.3: truncation adds at most σ_{k+1} to the projection error
    assert np.mean(errs) <= sig[k] + _hmt_bound(sig, k, p, q)
    assert min(errs) >= sig[k] * (1 - 1e-8)  # never better than the truncated SVD
    assert all(bounds_ok)


def test_rsvd_two_power_iterations_are_close_to_optimal():
    """On a slowly decaying spectrum q = 2 brings the error near σ_{k+1}.

    Per draw, ``‖A − Â_k‖² <= σ_{k+1}² + ‖(I − QQᵀ)A‖²`` (the two error parts
    have orthogonal ranges and ``σ_{k+1}(QᵀA) <= σ_{k+1}``), and HMT Cor. 10.10
    bounds the mean projection error by 1.40 σ_{k+1} for q = 2 (8.5 for q = 0).
    """
    m, n, k, p = 90, 70, 10, 5
    sig = SPECTRA["power_law"](n)
    ratios = {0: [], 2: []}
    for q in ratios:
        proj = []
        for seed in SEEDS:
            A = _matrix(sig, m, n, seed)
            res = sk.rsvd(A, k, oversample=p, power_iters=q, error_probes=0, rng=seed)
            Q = sk.range_finder(A, k, oversample=p, power_iters=q, rng=seed)  # same draw
            err, x = _norm2(A - res.operator.todense()), _norm2(A - Q @ (Q.T @ A))
            assert err <= math.sqrt(sig[k] ** 2 + x**2) * (1 + 1e-10)
            proj.append(x)
            ratios[q].append(err / sig[k])
        assert np.mean(proj) <= _hmt_bound(sig, k, p, q)
    assert _hmt_bound(sig, k, p, 2) / sig[k] < 1.41
    assert np.mean(ratios[2]) < np.mean(ratios[0])


def test_rsvd_posterior_frobenius_estimate_is_unbiased_in_square():
    sig = SPECTRA["power_law"](60)
    A = _matrix(sig, 60, 60, seed=3)
    res = sk.rsvd(A, 5, oversample=5, power_iters=0, error_probes=400, rng=4)
    E = A - res.operator.todense()
    s = np.linalg.svd(E, compute_uv=False)
    # ‖Eω‖² has mean ‖E‖_F² and variance 2 Σ σ⁴; the mean of r draws is within 4 stderr
    stderr = math.sqrt(2 * np.sum(s**4) / 400)
    assert abs(res.info["frobenius_estimate"] ** 2 - np.sum(s**2)) <= 4 * stderr
    assert res.info["error_probes"] == 400 and res.info["sketch_size"] == 10


def test_rsvd_without_probes_and_repr():
    A = _matrix(SPECTRA["exponential"](10), 12, 10, seed=0)
    res = sk.rsvd(A, 3, error_probes=0, power_iters=0, oversample=2, rng=0)
    assert res.error_estimate is None and res.info["frobenius_estimate"] is None
    assert res.num_matvecs == 2 * 5
    assert "SketchResult(method='rsvd', rank=3" in repr(res)


def test_rsvd_needs_the_transpose():
    A = matfree.from_hvp(lambda v: 2.0 * v, size=6, symmetric=False)
    with pytest.raises(NotImplementedError, match="no transpose product"):
        sk.rsvd(A, 2, rng=0)


def test_same_seed_same_result(xp):
    A = xp.asarray(_matrix(SPECTRA["power_law"](15), 15, 15, seed=0))
    r1, r2 = sk.rsvd(A, 3, rng=7), sk.rsvd(A, 3, rng=7)
    np.testing.assert_array_equal(to_np(r1.U), to_np(r2.U))
    assert r1.error_estimate == r2.error_estimate


def test_torch_generator_is_accepted():
    torch = pytest.importorskip("torch")
    A = torch.from_numpy(_symmetric(SPECTRA["exponential"](12), 0))
    g = torch.Generator().manual_seed(3)
    L = sk.nystrom(A, 3, rng=g)
    assert isinstance(L.U, torch.Tensor)


# ------------------------------------------------------------------- reig


def test_reig_recovers_symmetric_indefinite(case):
    lam = np.concatenate([[6.0, -4.0, 2.0, -1.0], np.zeros(16)])
    A = _symmetric(lam, seed=2)
    res = sk.reig(case.asarray(A), 4, oversample=2, power_iters=1, error_probes=3, rng=1)
    case.close(res.s, [6.0, -4.0, 2.0, -1.0], atol=100 * case.eps)
    case.close(res.operator.todense(), A, atol=100 * case.eps)
    assert res.operator.symmetric
    assert res.num_matvecs == 6 * 4 + 3
    la = sk.reig(case.asarray(A), 2, which="LA", oversample=4, power_iters=1, rng=1)
    case.close(la.s, [6.0, 2.0], atol=100 * case.eps)


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
def test_reig_error_within_hmt_bound(spectrum):
    n, k, p, q = 80, 8, 5, 1
    sig = SPECTRA[spectrum](n)
    signs = np.where(np.arange(n) % 3 == 1, -1.0, 1.0)  # indefinite
    errs = []
    for seed in SEEDS:
        A = _symmetric(sig * signs, seed)
        res = sk.reig(A, k, oversample=p, power_iters=q, rng=300 + seed)
        errs.append(_norm2(A - res.operator.todense()))
        assert errs[-1] <= res.error_estimate
    assert np.mean(errs) <= sig[k] + _hmt_bound(sig, k, p, q)
    assert min(errs) >= sig[k] * (1 - 1e-8)


def test_reig_detects_non_symmetric_input(np_rng):
    A = np_rng.standard_normal((10, 10))
    with pytest.raises(ValueError, match="A is not symmetric: its compression QᵀAQ"):
        sk.reig(A, 3, rng=0)
    res = sk.reig(A, 3, check=False, rng=0)  # uses the symmetric part of QᵀAQ
    assert res.operator.symmetric


# ---------------------------------------------------------------- Nyström


def test_nystrom_recovers_exact_psd_low_rank(case):
    lam = np.concatenate([[5.0, 3.0, 1.0], np.zeros(17)])
    A = _symmetric(lam, seed=4)
    L = sk.nystrom(case.asarray(A), 3, oversample=2, rng=0)
    assert isinstance(L, matfree.LowRank)
    assert L.symmetric and L.positive_semidefinite
    assert tuple(L.U.shape) == (20, 3)
    assert _orthonormality_error(case, L.U) < 50 * case.eps
    # the shift ν = sqrt(n) eps ‖Y‖_F perturbs eigenvalues by O(ν)
    tol = 50 * math.sqrt(20) * case.eps
    case.close(L.s, lam[:3], atol=tol)
    case.close(L.todense(), A, atol=tol)
    assert L.s.dtype == case.dtype


def test_nystrom_eigenvalues_descending_nonnegative(case):
    lam = SPECTRA["power_law"](25) ** 2
    L = sk.nystrom(case.asarray(_symmetric(lam, 5)), 6, oversample=4, rng=1)
    s = to_np(L.s)
    assert np.all(s >= 0) and np.all(np.diff(s) <= 0)
    assert np.all(s <= lam[0] * (1 + 100 * case.eps))  # Nyström never overshoots ‖A‖


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
def test_nystrom_trace_norm_error_within_tyuc_bound(spectrum):
    n, r, ell = 100, 8, 20
    lam = SPECTRA[spectrum](n)
    errs = []
    for seed in SEEDS:
        A = _symmetric(lam, seed)
        L = sk.nystrom(A, r, oversample=ell - r, rng=400 + seed)
        E = A - L.todense()
        # A − Â_r is PSD, so its trace norm is its trace
        assert np.linalg.eigvalsh((E + E.T) / 2).min() >= -1e-12
        errs.append(np.trace(E))
    # TYUC (2017) Thm 4.1 on the expectation, tested on the mean of 5 draws
    assert np.mean(errs) <= (1 + r / (ell - r - 1)) * lam[r:].sum()
    assert min(errs) >= lam[r:].sum() * (1 - 1e-8)


def test_nystrom_woodbury_solve(case):
    """The Nyström preconditioner path: (L + λI).solve is the dense solve."""
    lam = SPECTRA["exponential"](30)
    L = sk.nystrom(case.asarray(_symmetric(lam, 6)), 5, rng=2)
    lam_shift = 1e-2
    P = L + lam_shift * matfree.Identity(30)
    dense = to_np(L.todense()).astype(np.float64) + lam_shift * np.eye(30)
    b = np.linspace(-1.0, 1.0, 30)
    tol = 20 * case.eps * np.linalg.cond(dense)
    case.close(P.solve(case.asarray(b)), np.linalg.solve(dense, b), rtol=tol, atol=tol)


def test_nystrom_rejects_non_psd_and_non_symmetric(np_rng):
    A = _symmetric(-SPECTRA["exponential"](12), 0)
    with pytest.raises(ValueError, match="A is not positive semidefinite: its compression"):
        sk.nystrom(A, 3, rng=0)
    with pytest.raises(ValueError, match="A is not symmetric"):
        sk.nystrom(np_rng.standard_normal((12, 12)), 3, rng=0)
    # check=False drops the negative part and still returns a PSD operator
    indefinite = _symmetric(np.array([3.0, 2.0, -1.0] + [0.0] * 9), 1)
    L = sk.nystrom(indefinite, 2, check=False, rng=0)
    assert np.all(L.s >= 0) and L.positive_semidefinite


def test_nystrom_single_pass_on_a_counting_operator(case):
    lam = SPECTRA["exponential"](16)
    M = case.asarray(_symmetric(lam, 3))
    A = matfree.from_hvp(lambda v: M @ v, like=case.asarray(np.zeros(16)), batched=lambda V: M @ V)
    sk.nystrom(A, 4, oversample=3, rng=0)
    assert A.num_matvecs == 7


def test_nystrom_non_finite_hvp_is_reported():
    A = matfree.from_hvp(lambda v: v * np.nan, size=8)
    with pytest.raises(matfree.NonFiniteError, match="NaN or Inf"):
        sk.nystrom(A, 2, rng=0)


# --------------------------------------------------------- streaming Nyström


def test_streaming_sketch_equals_one_shot_nystrom(case):
    rng = np.random.default_rng(8)
    n = 18
    G = rng.standard_normal((n, 4))
    H1 = _symmetric(SPECTRA["exponential"](n), 1)
    H2 = _symmetric(SPECTRA["power_law"](n), 2)
    total = 0.5 * (H1 + H2) + 4.0 * G @ G.T
    S = sk.NystromSketch(n, 9, like=case.asarray(np.zeros(n)), rng=11)
    S.update(case.asarray(H1))
    S.update(matfree.Dense(case.asarray(H2)))
    S.update_outer(case.asarray(G), weight=4.0, decay=0.5)  # 0.5 (H1 + H2) + 4 G Gᵀ
    S.update_outer(case.asarray(G[:, 0]), weight=0.0)  # a no-op term
    assert S.num_matvecs == 18
    want = sk.nystrom(case.asarray(total), 5, oversample=4, rng=11)
    got = S.approximation(5)
    tol = 1e3 * case.eps
    case.close(got.s, want.s, atol=tol)
    case.close(got.todense(), want.todense(), atol=tol)
    assert "NystromSketch(n=18, sketch_size=9" in repr(S)


def test_streaming_sketch_bad_input():
    S = sk.NystromSketch(6, 3, like=np.zeros(6), rng=0)
    with pytest.raises(ValueError, match=r"H has shape \(5, 5\); the sketch is for \(6, 6\)"):
        S.update(np.eye(5))
    with pytest.raises(ValueError, match=r"G must have shape \(6,\) or \(6, b\)"):
        S.update_outer(np.ones((5, 2)))
    with pytest.raises(ValueError, match="rank=4 exceeds sketch_size=3"):
        S.approximation(4)
    with pytest.raises(ValueError, match="sketch_size=7 exceeds n=6"):
        sk.NystromSketch(6, 7, like=np.zeros(6))
    with pytest.raises(ValueError, match="must be finite"):
        S.update(np.eye(6), weight=float("nan"))


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [sk.rsvd, sk.reig, sk.nystrom, sk.range_finder])
def test_rank_out_of_range(fn):
    A = np.eye(6)
    with pytest.raises(ValueError, match=r"rank=6 is out of range .* expected 1 <= rank < min\(A.shape\) = 6"):
        fn(A, 6)
    with pytest.raises(ValueError, match="rank=0 is out of range"):
        fn(A, 0)
    with pytest.raises(TypeError, match="rank must be an int, got float"):
        fn(A, 2.0)
    with pytest.raises(ValueError, match="oversample=-1 is too small; expected oversample >= 0"):
        fn(A, 2, oversample=-1)


def test_other_bad_arguments():
    A = np.eye(6)
    with pytest.raises(ValueError, match="power_iters=-1 is too small"):
        sk.rsvd(A, 2, power_iters=-1)
    with pytest.raises(TypeError, match="error_probes must be an int"):
        sk.reig(A, 2, error_probes=1.5)
    with pytest.raises(ValueError, match="which='SM' is not known"):
        sk.reig(A, 2, which="SM")
    with pytest.raises(ValueError, match=r"A must be square \(symmetric\), got shape \(6, 4\)"):
        sk.nystrom(np.ones((6, 4)), 2)
    with pytest.raises(TypeError, match="has no array namespace or dtype"):
        sk.nystrom(matfree.Identity(6), 2)
    with pytest.raises(TypeError, match="rng has type str"):
        sk.nystrom(A, 2, rng="seed")
