"""L-BFGS, L-SR1 and DFP operators against the dense quasi-Newton recursions."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from conftest import to_np

import matfree
from matfree.quasinewton import DFP, LBFGS, LSR1

N = 12


# ------------------------------------------------------- dense references


def _orthogonal(rng, n):
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def _quadratic(seed, eigenvalues):
    Q = _orthogonal(np.random.default_rng(seed), len(eigenvalues))
    A = (Q * eigenvalues) @ Q.T
    return (A + A.T) / 2


def _pairs(A, k, seed):
    """``k`` curvature pairs ``(s, A s)`` along random directions."""
    rng = np.random.default_rng(seed)
    S = [rng.standard_normal(A.shape[0]) for _ in range(k)]
    return S, [A @ s for s in S]


def _bfgs_inverse(S, Y, gamma):
    """Dense BFGS: H⁺ = (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ from H₀ = γI."""
    n = len(S[0])
    H = gamma * np.eye(n)
    for s, y in zip(S, Y):
        rho = 1.0 / (s @ y)
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


def _bfgs_forward(S, Y, gamma):
    """Dense BFGS: B⁺ = B − B s sᵀ B / sᵀBs + y yᵀ / yᵀs from B₀ = I/γ."""
    Bm = np.eye(len(S[0])) / gamma
    for s, y in zip(S, Y):
        Bs = Bm @ s
        Bm = Bm - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (y @ s)
    return Bm


def _sr1(S, Y, gamma):
    Bm = np.eye(len(S[0])) / gamma
    for s, y in zip(S, Y):
        v = y - Bm @ s
        Bm = Bm + np.outer(v, v) / (v @ s)
    return Bm


def _dfp_inverse(S, Y, gamma):
    H = gamma * np.eye(len(S[0]))
    for s, y in zip(S, Y):
        Hy = H @ y
        H = H - np.outer(Hy, Hy) / (y @ Hy) + np.outer(s, s) / (s @ y)
    return H


def _feed(qn, case, S, Y):
    return [qn.update(case.asarray(s), case.asarray(y)) for s, y in zip(S, Y)]


def _tol(case, k, cond):
    """Rounding of k rank-two updates of size-n matrices with condition ``cond``."""
    return 10 * k * N * case.eps * cond


def _rel_close(got, want, tol):
    got, want = to_np(got).astype(np.float64), np.asarray(want)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= tol, f"relative error {err:.2e} > {tol:.2e}"


SPD_EIGS = np.logspace(0, 2, N)  # condition number 100


# ------------------------------------------------------------------ L-BFGS


def test_lbfgs_matches_dense_bfgs(case):
    A = _quadratic(0, SPD_EIGS)
    S, Y = _pairs(A, 6, seed=1)
    qn = LBFGS(m=8)
    assert _feed(qn, case, S, Y) == [True] * 6
    assert qn.num_updates == 6 and qn.num_skipped == 0 and len(qn) == 6
    gamma = S[-1] @ Y[-1] / (Y[-1] @ Y[-1])
    assert qn.gamma == pytest.approx(gamma, rel=10 * case.eps)
    H_ref = _bfgs_inverse(S, Y, gamma)
    tol = _tol(case, 6, np.linalg.cond(A))
    if case.dtype_name == "float64":
        assert tol <= 1e-10  # the 1e-10 is within the rounding bound
    H, Bop = qn.inverse_hessian(), qn.hessian()
    _rel_close(H.todense(), H_ref, tol)
    _rel_close(Bop.todense(), _bfgs_forward(S, Y, gamma), tol)
    _rel_close(Bop.todense(), np.linalg.inv(H_ref), tol)
    # inverses of each other, on blocks and on vectors
    V = case.asarray(np.random.default_rng(2).standard_normal((N, 3)))
    _rel_close(H @ (Bop @ V), to_np(V), tol)
    _rel_close(Bop @ (H @ V[:, 0]), to_np(V[:, 0]), tol)
    for op in (H, Bop):
        assert op.symmetric and op.positive_definite
        assert op.shape == (N, N) and op.dtype == case.dtype
        assert matfree._backend.namespace(op @ V) is matfree._backend.namespace(V)


def test_lbfgs_memory_keeps_the_newest_pairs(case):
    A = _quadratic(3, SPD_EIGS)
    S, Y = _pairs(A, 7, seed=4)
    qn = LBFGS(m=3, gamma=0.5)
    _feed(qn, case, S, Y)
    assert len(qn) == 3 and qn.num_updates == 7
    tol = _tol(case, 3, np.linalg.cond(A))
    _rel_close(qn.inverse_hessian().todense(), _bfgs_inverse(S[-3:], Y[-3:], 0.5), tol)
    _rel_close(qn.hessian().todense(), _bfgs_forward(S[-3:], Y[-3:], 0.5), tol)
    np.testing.assert_array_equal(to_np(qn.pairs[0][0]), to_np(case.asarray(S[-3])))


def test_lbfgs_exact_knowledge_and_damped_solve(case):
    A = _quadratic(5, SPD_EIGS)
    S, Y = _pairs(A, 4, seed=6)
    qn = LBFGS(m=5)
    _feed(qn, case, S, Y)
    Bop, H = qn.hessian(), qn.inverse_hessian()
    Bd = to_np(Bop.todense()).astype(np.float64)
    tol = _tol(case, 4, np.linalg.cond(A))
    _rel_close(Bop.diagonal(), np.diag(Bd), tol)
    _rel_close(Bop.trace(), np.trace(Bd), tol)
    b = np.linspace(1.0, 2.0, N)
    _rel_close(H.solve(case.asarray(b)), Bd @ b, tol)
    _rel_close(Bop.solve(case.asarray(b)), np.linalg.solve(Bd, b), tol)
    lam = 0.3
    _rel_close((Bop + lam * matfree.Identity(N)).solve(case.asarray(b)),
               np.linalg.solve(Bd + lam * np.eye(N), b), tol)
    with pytest.raises(NotImplementedError, match="only without a shift"):
        (H + lam * matfree.Identity(N)).solve(case.asarray(b))


def test_lbfgs_skips_pairs_failing_the_curvature_condition(case):
    qn = LBFGS(m=4, eps=0.1)
    s = np.array([1.0, 0.0, 0.0])
    assert not qn.update(case.asarray(s), case.asarray(np.array([-1.0, 0.0, 0.0])))
    # sᵀy = 0.05 <= 0.1 ‖s‖‖y‖ = 0.1: skipped too
    assert not qn.update(case.asarray(s), case.asarray(np.array([0.05, 1.0, 0.0])))
    assert qn.update(case.asarray(s), case.asarray(np.array([2.0, 0.0, 0.0])))
    assert (qn.num_skipped, qn.num_updates, len(qn)) == (2, 1, 1)
    assert "skipped=2" in repr(qn)


def test_lbfgs_before_any_pair():
    with pytest.raises(ValueError, match="has seen no curvature pair yet, .* pass like=x0"):
        LBFGS().inverse_hessian()
    qn = LBFGS(like=np.zeros(4), gamma=2.0)
    np.testing.assert_allclose(qn.inverse_hessian() @ np.ones(4), 2.0 * np.ones(4))
    np.testing.assert_allclose(qn.hessian() @ np.ones(4), 0.5 * np.ones(4))
    assert LBFGS(like=np.zeros(3)).gamma == 1.0


def test_lbfgs_preconditions_scipy_cg():
    """A plain operator for M=: CG on the quadratic converges with it."""
    A = _quadratic(7, np.logspace(0, 4, 40))
    qn = LBFGS(m=20)
    S, Y = _pairs(A, 20, seed=8)
    for s, y in zip(S, Y):
        qn.update(s, y)
    b = np.ones(40)
    counts = {}
    for label, M in (("none", None), ("lbfgs", qn.inverse_hessian().to_scipy())):
        calls = []
        x, info = spla.cg(A, b, M=M, rtol=1e-10, maxiter=500, callback=calls.append)
        assert info == 0
        np.testing.assert_allclose(A @ x, b, atol=1e-8 * np.linalg.norm(b))
        counts[label] = len(calls)
    assert counts["lbfgs"] < counts["none"]


# ------------------------------------------------------------------ L-SR1


def test_lsr1_matches_dense_sr1(case):
    A = _quadratic(9, np.linspace(-3.0, 5.0, N) + 0.1)  # indefinite
    S, Y = _pairs(A, 6, seed=10)
    qn = LSR1(m=10, gamma=1.0)
    assert _feed(qn, case, S, Y) == [True] * 6
    B_ref = _sr1(S, Y, 1.0)
    cond = np.linalg.cond(B_ref)
    tol = _tol(case, 6, cond)
    Bop, H = qn.hessian(), qn.inverse_hessian()
    _rel_close(Bop.todense(), B_ref, tol)
    _rel_close(H.todense(), np.linalg.inv(B_ref), tol)
    V = case.asarray(np.random.default_rng(3).standard_normal((N, 2)))
    _rel_close(Bop @ (H @ V), to_np(V), tol)
    assert Bop.symmetric and not Bop.positive_semidefinite


def test_lsr1_finite_termination(case):
    """n pairs along independent directions of a quadratic recover its Hessian."""
    A = _quadratic(11, np.linspace(-4.0, 6.0, N) + 0.05)
    D = _orthogonal(np.random.default_rng(12), N) + 0.3 * np.eye(N)  # independent
    qn = LSR1(m=N + 2, gamma=1.0)
    accepted = _feed(qn, case, list(D.T), [A @ d for d in D.T])
    assert all(accepted) and qn.num_skipped == 0
    tol = _tol(case, N, np.linalg.cond(D) * np.linalg.cond(A))
    _rel_close(qn.hessian().todense(), A, tol)
    # B now satisfies every secant equation: a further pair is redundant, skipped
    d = D[:, 0] + D[:, 1]
    assert not qn.update(case.asarray(d), case.asarray(A @ d))
    assert qn.num_skipped == 1


def test_lsr1_memory_keeps_the_newest_pairs(case):
    A = _quadratic(17, np.linspace(-3.0, 5.0, N) + 0.1)
    S, Y = _pairs(A, 7, seed=18)
    qn = LSR1(m=3, gamma=0.5)
    assert _feed(qn, case, S, Y) == [True] * 7
    assert len(qn) == 3
    B_ref = _sr1(S[-3:], Y[-3:], 0.5)
    _rel_close(qn.hessian().todense(), B_ref, _tol(case, 3, np.linalg.cond(B_ref)))


def test_lsr1_auto_gamma_and_skipping_rule():
    qn = LSR1(m=5)
    s, y = np.array([1.0, 0.0, 0.0]), np.array([2.0, 1.0, 0.0])
    assert qn.update(s, y)
    assert qn.gamma == pytest.approx(2.0 / 5.0)
    # v = y − B s with sᵀv ≈ 0 but ‖v‖ large: the SR1 denominator vanishes -> skipped
    s2 = np.array([0.0, 1.0, 0.0])
    v_target = np.array([0.0, 0.0, 1.0])
    y2 = qn.hessian() @ s2 + v_target
    assert not qn.update(s2, y2)
    assert qn.num_skipped == 1 and len(qn) == 1


def test_lsr1_singular_hessian_has_no_inverse():
    qn = LSR1(m=3, gamma=1.0)
    # B = diag(0, 1): s = e1, y = 0  (v = −e1, sᵀv = −1)
    assert qn.update(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(qn.hessian().todense(), np.diag([0.0, 1.0]), atol=1e-15)
    with pytest.raises(ValueError, match="inverse Hessian is singular or numerically so"):
        qn.inverse_hessian()


# -------------------------------------------------------------------- DFP


def test_dfp_matches_dense_recursion(case):
    A = _quadratic(13, SPD_EIGS)
    S, Y = _pairs(A, 7, seed=14)
    qn = DFP(gamma=0.2)
    assert _feed(qn, case, S, Y) == [True] * 7
    H_ref = _dfp_inverse(S, Y, 0.2)
    tol = _tol(case, 7, np.linalg.cond(H_ref))
    H, Bop = qn.inverse_hessian(), qn.hessian()
    _rel_close(H.todense(), H_ref, tol)
    _rel_close(Bop.todense(), np.linalg.inv(H_ref), tol)
    assert H.positive_definite and Bop.positive_definite
    b = np.linspace(-1.0, 1.0, N)
    _rel_close(H.solve(case.asarray(b)), np.linalg.solve(H_ref, b), tol)


def test_dfp_auto_gamma_and_memory(case):
    A = _quadratic(15, SPD_EIGS)
    S, Y = _pairs(A, 6, seed=16)
    qn = DFP(m=3)
    _feed(qn, case, S, Y)
    gamma = S[0] @ Y[0] / (Y[0] @ Y[0])  # fixed by the first pair
    assert qn.gamma == pytest.approx(gamma, rel=10 * case.eps)
    H_ref = _dfp_inverse(S[-3:], Y[-3:], gamma)
    _rel_close(qn.inverse_hessian().todense(), H_ref, _tol(case, 3, np.linalg.cond(H_ref)))
    assert len(qn) == 3


def test_dfp_skips_negative_curvature():
    qn = DFP()
    assert not qn.update(np.array([1.0, 0.0]), np.array([-1.0, 0.0]))
    assert qn.num_skipped == 1 and qn.num_updates == 0
    qn.reset()
    assert len(qn) == 0 and qn.n == 2


# ----------------------------------------------------- validation and repr


@pytest.mark.parametrize("cls", [LBFGS, LSR1, DFP])
def test_bad_pairs_are_rejected(cls):
    qn = cls()
    with pytest.raises(ValueError, match=r"s must be a 1-D array, got shape \(3, 1\)"):
        qn.update(np.ones((3, 1)), np.ones(3))
    with pytest.raises(ValueError, match=r"s and y must have the same shape, got \(3,\) and \(4,\)"):
        qn.update(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="y contains NaN or Inf; curvature pairs must be finite"):
        qn.update(np.ones(3), np.array([1.0, np.nan, 1.0]))
    with pytest.raises(TypeError, match="s must be an array, got list"):
        qn.update([1.0, 2.0], np.ones(2))
    with pytest.raises(TypeError, match="s and y must have the same dtype"):
        qn.update(np.ones(3, dtype=np.float32), np.ones(3))
    with pytest.raises(TypeError, match="s has dtype int64"):
        qn.update(np.ones(3, dtype=np.int64), np.ones(3, dtype=np.int64))
    qn.update(np.array([1.0, 0.0, 0.0]), np.array([2.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="s and y have length 4 but earlier pairs .* had length 3"):
        qn.update(np.ones(4), np.ones(4))
    with pytest.raises(TypeError, match="have dtype float32 but earlier pairs had float64"):
        qn.update(np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="but earlier pairs were .*numpy arrays"):
        qn.update(torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("cls", [LBFGS, LSR1, DFP])
def test_bad_constructor_arguments(cls):
    with pytest.raises(ValueError, match="m=0 must be >= 1"):
        cls(0)
    with pytest.raises(TypeError, match="m must be an int"):
        cls(2.5)
    with pytest.raises(ValueError, match="gamma='newest' is not known"):
        cls(gamma="newest")
    with pytest.raises(ValueError, match="gamma=-1.0 must be 'auto' or a positive finite float"):
        cls(gamma=-1.0)
    with pytest.raises(ValueError, match=r"like must be a 1-D array, got shape \(2, 2\)"):
        cls(like=np.ones((2, 2)))


def test_tolerance_arguments():
    with pytest.raises(ValueError, match=r"eps=1.5 is out of range; expected 0 <= eps < 1"):
        LBFGS(eps=1.5)
    with pytest.raises(ValueError, match=r"r=-0.1 is out of range"):
        LSR1(r=-0.1)
    with pytest.raises(TypeError, match="eps must be a float"):
        DFP(eps="small")
    assert DFP(m=None).m is None
    with pytest.raises(TypeError, match="m must be an int, got NoneType"):
        LBFGS(m=None)


def test_operators_stay_on_the_pairs_backend(xp):
    """Pairs of 2I give H = I/2 and B = 2I exactly, in the pairs' namespace."""
    qn = LBFGS(m=3)
    for k in range(3):
        s = xp.asarray(np.eye(4)[k] + 0.1)
        qn.update(s, 2.0 * s)
    ones = xp.asarray(np.ones(4))
    for op, factor in ((qn.hessian(), 2.0), (qn.inverse_hessian(), 0.5)):
        assert op.xp is xp and op.device == matfree._backend.device(s)
        out = op @ ones
        assert matfree._backend.namespace(out) is matfree._backend.namespace(s)
        np.testing.assert_allclose(to_np(out), factor * np.ones(4), rtol=1e-14)
