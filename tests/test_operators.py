"""Every operator and every algebra result against its dense NumPy twin."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from conftest import to_np
from hypothesis import given, settings
from hypothesis import strategies as st

import matfree
from matfree import operators as ops

N = 12


def _sym(rng, n):
    M = rng.standard_normal((n, n))
    return (M + M.T) / 2


def _spd(rng, n):
    M = rng.standard_normal((n, n))
    return M @ M.T / n + np.eye(n)


def build(name, case, rng):
    """An operator of kind ``name`` on ``case``'s backend and its dense twin."""
    a = case.asarray
    if name == "dense":
        M = rng.standard_normal((N, N))
        return matfree.Dense(a(M)), M
    if name == "dense_sym":
        M = _sym(rng, N)
        return matfree.Dense(a(M)), M
    if name == "dense_rect":
        M = rng.standard_normal((N, N - 4))
        return matfree.Dense(a(M)), M
    if name == "diagonal":
        d = rng.standard_normal(N)
        return matfree.Diagonal(a(d)), np.diag(d)
    if name == "identity":
        return matfree.Identity(N, like=a(np.zeros(N))), np.eye(N)
    if name == "lowrank_sym":
        U = rng.standard_normal((N, 3))
        s = rng.uniform(0.5, 2.0, 3)
        return matfree.LowRank(a(U), a(s)), U @ np.diag(s) @ U.T
    if name == "lowrank":
        U, V = rng.standard_normal((N, 3)), rng.standard_normal((N - 2, 3))
        s = rng.uniform(0.5, 2.0, 3)
        return matfree.LowRank(a(U), a(s), a(V)), U @ np.diag(s) @ V.T
    if name == "blockdiag":
        M1, M2 = _spd(rng, 5), rng.standard_normal((N - 5, N - 5))
        d = rng.uniform(1, 2, 0)
        op = matfree.BlockDiagonal([a(M1), matfree.Dense(a(M2))])
        del d
        dense = np.zeros((N, N))
        dense[:5, :5], dense[5:, 5:] = M1, M2
        return op, dense
    if name == "function":
        M = rng.standard_normal((N, N))
        Ma = a(M)
        xp = case.xp
        return (
            matfree.FunctionOperator(
                lambda v: Ma @ v,
                (N, N),
                case.dtype,
                xp,
                rmatvec=lambda u: xp.matrix_transpose(Ma) @ u,
            ),
            M,
        )
    if name == "hvp":
        M = _spd(rng, N)
        Ma = a(M)
        return matfree.from_hvp(lambda v: Ma @ v, like=a(np.zeros(N))), M
    if name == "sum":
        (A, Ad), (Bo, Bd) = build("dense", case, rng), build("lowrank_sym", case, rng)
        return A + Bo, Ad + Bd
    if name == "difference":
        (A, Ad), (Bo, Bd) = build("diagonal", case, rng), build("dense_sym", case, rng)
        return A - Bo, Ad - Bd
    if name == "product":
        (A, Ad), (Bo, Bd) = build("dense", case, rng), build("function", case, rng)
        return A @ Bo, Ad @ Bd
    if name == "scaled":
        A, Ad = build("dense", case, rng)
        return 2.5 * A, 2.5 * Ad
    if name == "divided":
        A, Ad = build("lowrank", case, rng)
        return A / 4.0, Ad / 4.0
    if name == "negated":
        A, Ad = build("diagonal", case, rng)
        return -A, -Ad
    if name == "transpose":
        A, Ad = build("function", case, rng)
        return A.T, Ad.T
    if name == "damped":
        A, Ad = build("lowrank_sym", case, rng)
        return A + 0.7 * matfree.Identity(N), Ad + 0.7 * np.eye(N)
    if name == "damped_fn":
        A, Ad = build("hvp", case, rng)
        return matfree.damped(A, 0.3), Ad + 0.3 * np.eye(N)
    if name == "damped_block":
        M1 = _spd(rng, 4)
        d = rng.uniform(1.0, 2.0, N - 4)
        A = matfree.BlockDiagonal([matfree.Dense(a(M1)), matfree.Diagonal(a(d))])
        dense = np.zeros((N, N))
        dense[:4, :4], dense[4:, 4:] = M1, np.diag(d)
        return matfree.damped(A, 0.5), dense + 0.5 * np.eye(N)
    raise ValueError(name)


KINDS = [
    "dense",
    "dense_sym",
    "dense_rect",
    "diagonal",
    "identity",
    "lowrank_sym",
    "lowrank",
    "blockdiag",
    "function",
    "hvp",
    "sum",
    "difference",
    "product",
    "scaled",
    "divided",
    "negated",
    "transpose",
    "damped",
    "damped_fn",
    "damped_block",
]
#: operators that must know their diagonal and trace exactly
KNOWS_DIAGONAL = {
    "dense",
    "dense_sym",
    "diagonal",
    "identity",
    "lowrank_sym",
    "blockdiag",
    "sum",
    "difference",
    "scaled",
    "negated",
    "damped",
    "damped_block",
}
#: operators that must solve exactly
KNOWS_SOLVE = {"dense", "dense_sym", "diagonal", "identity", "damped", "damped_block", "blockdiag"}


@pytest.mark.parametrize("kind", KINDS)
def test_products_match_dense(kind, case, np_rng):
    A, M = build(kind, case, np_rng)
    assert A.shape == M.shape
    n, m = M.shape[1], M.shape[0]
    v = np_rng.standard_normal(n)
    V = np_rng.standard_normal((n, 3))
    u = np_rng.standard_normal(m)
    case.close(A @ case.asarray(v), M @ v)
    case.close(A @ case.asarray(V), M @ V)
    case.close(A.matvec(case.asarray(v)), M @ v)
    case.close(A.rmatvec(case.asarray(u)), M.T @ u)
    case.close(A.rmatmat(case.asarray(np.stack([u, 2 * u], 1))), M.T @ np.stack([u, 2 * u], 1))
    case.close(A.todense(), M)
    case.close(A.T @ case.asarray(u), M.T @ u)
    out = A @ case.asarray(v)
    assert out.dtype == case.dtype
    assert matfree._backend.namespace(out) is matfree._backend.namespace(case.asarray(v))


@pytest.mark.parametrize("kind", sorted(KNOWS_DIAGONAL))
def test_exact_diagonal_and_trace(kind, case, np_rng):
    A, M = build(kind, case, np_rng)
    case.close(A.diagonal(), np.diag(M))
    case.close(A.trace(), np.trace(M))


@pytest.mark.parametrize("kind", sorted(KNOWS_SOLVE))
def test_exact_solve(kind, case, np_rng):
    A, M = build(kind, case, np_rng)
    b = np_rng.standard_normal(N)
    Bm = np_rng.standard_normal((N, 2))
    cond = np.linalg.cond(M)
    rtol = 50 * case.eps * cond
    case.close(A.solve(case.asarray(b)), np.linalg.solve(M, b), rtol=rtol, atol=rtol)
    case.close(A.solve(case.asarray(Bm)), np.linalg.solve(M, Bm), rtol=rtol, atol=rtol)


def test_lowrank_woodbury_solve_is_exact(case, np_rng):
    n, k = 40, 5
    U = np.linalg.qr(np_rng.standard_normal((n, k)))[0] * 3.0  # not orthonormal
    s = np_rng.uniform(0.1, 10.0, k)
    lam = 1e-2
    A = matfree.LowRank(case.asarray(U), case.asarray(s)) + lam * matfree.Identity(n)
    dense = U @ np.diag(s) @ U.T + lam * np.eye(n)
    b = np_rng.standard_normal(n)
    cond = np.linalg.cond(dense)
    tol = 20 * case.eps * cond  # normwise backward-stable solve bound
    case.close(A.solve(case.asarray(b)), np.linalg.solve(dense, b), rtol=tol, atol=tol)


def test_unknown_exact_quantities_raise(np_rng):
    A = matfree.from_hvp(lambda v: 2.0 * v, size=4)
    with pytest.raises(NotImplementedError, match="estimate it with matfree.trace"):
        A.trace()
    with pytest.raises(NotImplementedError, match="diagonal"):
        A.diagonal()
    with pytest.raises(NotImplementedError, match="iterative solver"):
        A.solve(np.ones(4))
    with pytest.raises(ZeroDivisionError, match="singular"):
        matfree.LowRank(np.ones((4, 1)), np.ones(1)).solve(np.ones(4))


def test_flags_are_propagated(np_rng):
    P = matfree.Dense(_spd(np_rng, 5), positive_definite=True)
    assert P.symmetric and P.positive_semidefinite and P.positive_definite
    assert (2.0 * P).positive_definite and not (-P).positive_semidefinite
    assert (P + P).positive_definite
    L = matfree.LowRank(np_rng.standard_normal((5, 2)), np.array([1.0, 2.0]))
    assert L.positive_semidefinite and not L.positive_definite
    assert (L + 0.1 * matfree.Identity(5)).positive_definite
    assert not matfree.Dense(np_rng.standard_normal((5, 5))).symmetric
    assert matfree.Dense(_sym(np_rng, 5)).symmetric  # checked exactly
    assert matfree.Diagonal(np.array([1.0, -1.0])).symmetric
    assert not matfree.Diagonal(np.array([1.0, -1.0])).positive_semidefinite
    S = matfree.Dense(_sym(np_rng, 5))
    assert S.T is S


def test_counter_counts_columns(np_rng):
    A = matfree.from_hvp(lambda v: 2.0 * v, size=6)
    A @ np.ones(6)
    A @ np.ones((6, 4))
    assert A.num_matvecs == 5
    (A + A) @ np.ones(6)
    assert A.num_matvecs == 7
    A.reset_counter()
    assert A.num_matvecs == 0


def test_batched_hvp_is_used_for_blocks():
    calls = []

    def hvp(v):
        calls.append("vec")
        return 3.0 * v

    def batched(V):
        calls.append("block")
        return 3.0 * V

    A = matfree.from_hvp(hvp, size=5, batched=batched)
    np.testing.assert_allclose(A @ np.ones((5, 4)), 3.0 * np.ones((5, 4)))
    assert calls == ["block"]


# ----------------------------------------------------------- dtype rules


def test_promotion_float32_operator_float64_vector(xp, np_rng):
    M = np_rng.standard_normal((4, 4))
    A = matfree.Dense(xp.asarray(M.astype(np.float32)))
    v = xp.asarray(np.ones(4))
    w = A @ v
    assert w.dtype == xp.float64
    np.testing.assert_allclose(to_np(w), M.astype(np.float32).astype(np.float64) @ np.ones(4))


def test_callable_receives_its_own_dtype(xp):
    seen = []

    def hvp(v):
        seen.append(v.dtype)
        return v

    A = matfree.from_hvp(hvp, like=xp.asarray(np.zeros(3, dtype=np.float32)))
    w = A @ xp.asarray(np.ones(3))
    assert seen == [xp.float32]
    assert w.dtype == xp.float64


@pytest.mark.parametrize(
    "bad",
    [np.ones(3, dtype=np.int64), np.ones(3, dtype=np.complex128), np.ones(3, dtype=bool)],
)
def test_non_float_vectors_are_rejected(bad):
    A = matfree.Dense(np.eye(3))
    with pytest.raises(TypeError, match="v has dtype .* expected float32 or float64"):
        A @ bad


def test_integer_matrix_is_rejected():
    with pytest.raises(TypeError, match="A has dtype int64"):
        matfree.Dense(np.eye(3, dtype=np.int64))


# ------------------------------------------------------------ bad input


def test_shape_mismatch_names_both_shapes():
    A, Bo = matfree.Dense(np.eye(3)), matfree.Dense(np.eye(4))
    with pytest.raises(ValueError, match=r"shapes \(3, 3\) and \(4, 4\)"):
        A + Bo
    with pytest.raises(ValueError, match=r"shapes \(3, 3\) and \(4, 4\)"):
        A @ Bo
    with pytest.raises(ValueError, match=r"operator of shape \(3, 3\) cannot be applied to v of shape \(4,\)"):
        A @ np.ones(4)
    with pytest.raises(ValueError, match=r"V of shape \(4, 2\)"):
        A @ np.ones((4, 2))


def test_wrong_ndim():
    A = matfree.Dense(np.eye(3))
    with pytest.raises(ValueError, match=r"1-D vector or a 2-D block"):
        A @ np.ones((3, 1, 1))
    with pytest.raises(ValueError, match=r"v must be 1-D"):
        A.matvec(np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"A must be 2-D"):
        matfree.Dense(np.ones(3))


def test_mixing_backends_is_refused():
    torch = pytest.importorskip("torch")
    A = matfree.Dense(torch.eye(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="v is a numpy array but the operator works on torch"):
        A @ np.ones(3)
    with pytest.raises(TypeError, match="different array libraries"):
        A + matfree.Dense(np.eye(3))


def test_non_finite_callable_output_is_detected():
    A = matfree.from_hvp(lambda v: v * np.nan, size=3)
    with pytest.raises(matfree.NonFiniteError, match="returned NaN or Inf"):
        A @ np.ones(3)
    unchecked = matfree.from_hvp(lambda v: v * np.inf, size=3, check_finite=False)
    assert np.isinf(unchecked @ np.ones(3)).all()


def test_callable_returning_wrong_shape_or_library():
    A = matfree.from_hvp(lambda v: v[:2], size=3)
    with pytest.raises(ValueError, match=r"returned shape \(2,\) .* expected \(3,\)"):
        A @ np.ones(3)
    Bo = matfree.from_hvp(lambda v: list(v), size=3)
    with pytest.raises(TypeError, match="returned list"):
        Bo @ np.ones(3)


def test_non_symmetric_callable_without_rmatvec():
    A = matfree.from_hvp(lambda v: v, size=3, symmetric=False)
    with pytest.raises(NotImplementedError, match="no transpose product"):
        A.rmatvec(np.ones(3))


def test_size_or_like_is_required():
    with pytest.raises(ValueError, match="pass like=x .* or size=n"):
        matfree.from_hvp(lambda v: v)
    with pytest.raises(ValueError, match="like must be a 1-D array"):
        matfree.from_hvp(lambda v: v, like=np.ones((2, 2)))


def test_bad_scalar_and_conversion():
    A = matfree.Dense(np.eye(2))
    with pytest.raises(ValueError, match="must be finite"):
        A * float("nan")
    with pytest.raises(ZeroDivisionError):
        A / 0
    with pytest.raises(TypeError, match="cannot make a LinearOperator from str"):
        matfree.aslinearoperator("matrix")


# ------------------------------------------------------------- interop


def test_scipy_round_trip(np_rng):
    M = np_rng.standard_normal((7, 5))
    A = matfree.aslinearoperator(M)
    S = A.to_scipy()
    v, u = np_rng.standard_normal(5), np_rng.standard_normal(7)
    np.testing.assert_allclose(S @ v, M @ v)
    np.testing.assert_allclose(S.rmatvec(u), M.T @ u)
    np.testing.assert_allclose(S.matmat(np.eye(5)), M)
    back = matfree.aslinearoperator(spla.aslinearoperator(M))
    np.testing.assert_allclose(back @ v, M @ v)
    np.testing.assert_allclose(back.rmatvec(u), M.T @ u)
    # scipy solvers run on matfree operators
    P = _spd(np_rng, 6)
    x, info = spla.cg(matfree.aslinearoperator(P).to_scipy(), np.ones(6), rtol=1e-12)
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(P, np.ones(6)), rtol=1e-8)


def test_to_scipy_refuses_other_backends():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="needs an operator on NumPy arrays"):
        matfree.Dense(torch.eye(2, dtype=torch.float64)).to_scipy()


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse(fmt, np_rng):
    M = sp.random(30, 30, density=0.2, random_state=1, format=fmt)
    M = M + M.T
    A = matfree.aslinearoperator(M)
    assert isinstance(A, matfree.Sparse) and A.symmetric
    D = M.toarray()
    v = np_rng.standard_normal(30)
    np.testing.assert_allclose(A @ v, D @ v)
    np.testing.assert_allclose(A @ np.eye(30), D)
    np.testing.assert_allclose(A.rmatvec(v), D.T @ v)
    np.testing.assert_allclose(A.diagonal(), np.diag(D))
    np.testing.assert_allclose(float(A.trace()), np.trace(D))
    np.testing.assert_allclose(A.todense(), D)
    f32 = matfree.Sparse(M.astype(np.float32))
    assert (f32 @ v).dtype == np.float64
    N = sp.random(5, 4, density=0.5, random_state=2, format="csr")
    np.testing.assert_allclose(matfree.Sparse(N).rmatvec(np.ones(5)), N.T @ np.ones(5))


def test_object_with_matvec():
    class Shift:
        shape = (3, 3)

        def matvec(self, v):
            return v + 1.0

    A = matfree.aslinearoperator(Shift())
    np.testing.assert_allclose(A @ np.zeros(3), np.ones(3))


def test_rmatmul_with_numpy():
    M = np.arange(6.0).reshape(2, 3)
    A = matfree.aslinearoperator(M)
    u = np.array([1.0, -1.0])
    np.testing.assert_allclose(u @ A, u @ M)
    np.testing.assert_allclose(np.eye(2) @ A, M)


def test_check_symmetric(np_rng):
    assert matfree.from_hvp(lambda v: _spd(np.random.default_rng(0), 8) @ v, size=8).check_symmetric(rng=1)
    M = np_rng.standard_normal((8, 8))
    assert not matfree.from_hvp(lambda v: M @ v, size=8).check_symmetric(rng=1)


def test_repr_is_readable(np_rng):
    text = repr(matfree.damped(matfree.Dense(_spd(np_rng, 3), positive_definite=True), 0.1))
    assert text == "<Damped 3x3 float64 on numpy, positive definite, damping=0.1>"


# OpenBLAS's small single-precision kernels can raise the invalid-operation
# flag with finite inputs and outputs (numpy/numpy#24067: seen here once, not
# reproducible); the values are checked below, so the flag is not an error
@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    f32=st.booleans(),
)
def test_adjoint_and_linearity_properties(m, n, k, seed, f32):
    rng = np.random.default_rng(seed)
    dt = np.float32 if f32 else np.float64
    M = rng.standard_normal((m, n)).astype(dt)
    U = rng.standard_normal((m, k)).astype(dt)
    V = rng.standard_normal((n, k)).astype(dt)
    s = rng.standard_normal(k).astype(dt)
    eps = np.finfo(dt).eps
    # rounding is relative to the size of the terms, not of their sum: the
    # difference of two operators can cancel to far below either (m = n = 1,
    # k = 3, seed = 1 gives |2M - U s V^T| = 8e-6 from terms of size 1)
    size_dense = np.linalg.norm(M)
    size_lowrank = np.linalg.norm(U) * np.max(np.abs(s)) * np.linalg.norm(V)
    for A, size in (
        (matfree.Dense(M), size_dense),
        (matfree.LowRank(U, s, V), size_lowrank),
        (2.0 * matfree.Dense(M) - matfree.LowRank(U, s, V), 2.0 * size_dense + size_lowrank),
    ):
        x, y = rng.standard_normal(n).astype(dt), rng.standard_normal(m).astype(dt)
        lhs, rhs = float(y @ (A @ x)), float((A.T @ y) @ x)
        scale = np.linalg.norm(y) * size * np.linalg.norm(x)
        assert abs(lhs - rhs) <= 50 * eps * scale + 1e-30
        a, b = 0.3, -1.7
        z = rng.standard_normal(n).astype(dt)
        np.testing.assert_allclose(
            A @ (a * x + b * z), a * (A @ x) + b * (A @ z), rtol=0, atol=50 * eps * (scale / max(np.linalg.norm(y), 1e-30) + 1)
        )


def test_ops_module_exports():
    for name in ops.__all__:
        assert hasattr(ops, name)
