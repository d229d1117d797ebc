"""Hessian operators against exact Hessians of known functions."""

import numpy as np
import pytest
import scipy.optimize as so
from conftest import to_np

import matfree

# --------------------------------------------------------------- problems


def _quadratic(rng, n=8):
    M = rng.standard_normal((n, n))
    Q = M @ M.T + np.eye(n)
    b = rng.standard_normal(n)
    return Q, b


@pytest.fixture(scope="module")
def breast_cancer():
    """Standardised breast-cancer data shipped with scikit-learn (569 x 30), labels +-1."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return X, 2.0 * y - 1.0


LAM = 1e-2


def _logreg_hessian(X, y, w, lam=LAM):
    """Exact Hessian of mean log(1 + exp(-y xᵀw)) + lam/2 ‖w‖²: Xᵀ diag(σ(1-σ)) X / m + lam I."""
    s = 1.0 / (1.0 + np.exp(-(X @ w) * y))
    d = s * (1.0 - s)
    return (X.T * d) @ X / X.shape[0] + lam * np.eye(X.shape[1])


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ------------------------------------------------------------------ from_hvp


def test_from_hvp_quadratic_on_every_backend(case, np_rng):
    Q, _ = _quadratic(np_rng)
    Qa = case.asarray(Q)
    A = matfree.from_hvp(lambda v: Qa @ v, like=case.asarray(np.zeros(8)))
    assert A.symmetric and A.dtype == case.dtype
    case.close(A.todense(), Q)


def test_from_hvp_size_and_torch_dtype():
    torch = pytest.importorskip("torch")
    A = matfree.from_hvp(lambda v: 2 * v, size=3, dtype=torch.float32)
    out = A @ torch.ones(3)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="size=0 must be >= 1"):
        matfree.from_hvp(lambda v: v, size=0)
    with pytest.raises(TypeError, match="dtype has dtype int64"):
        matfree.from_hvp(lambda v: v, size=3, dtype=np.int64)


# ------------------------------------------------------------------ from_grad


def _rosen_M3_bound(x, t):
    """Bound on ‖D³f(ξ)[u, u, ·]‖ for unit u, ξ within t of x: the Frobenius norm of D³f.

    Rosenbrock's third derivatives: ∂³f/∂x_i³ = 2400 x_i and ∂³f/∂x_i²∂x_{i+1} = -400
    (three index permutations each).
    """
    xmax = np.abs(x) + t
    n = x.size
    return np.sqrt(np.sum((2400 * xmax[:-1]) ** 2) + 3 * 400.0**2 * (n - 1))


def _rosen_grad_error(x):
    """Absolute rounding error bound of scipy's rosen_der: a few eps times its largest terms."""
    a = np.abs(x)
    terms = 400 * a**3 + 400 * a * np.roll(a, -1) + 200 * a**2 + 200 * np.roll(a, -1) + 2 * (1 + a)
    return 8 * np.finfo(float).eps * np.sqrt(x.size) * terms.max()


@pytest.mark.parametrize("scheme", ["central", "forward"])
def test_from_grad_within_documented_bound(scheme, np_rng):
    n = 10
    x = np_rng.uniform(-1.2, 1.2, n)
    A = matfree.from_grad(so.rosen_der, x, scheme=scheme)
    H = so.rosen_hess(x)
    t = A.step
    eg = _rosen_grad_error(x)
    for _ in range(5):
        v = np_rng.standard_normal(n)
        err = np.linalg.norm(A @ v - H @ v)
        nv = np.linalg.norm(v)
        if scheme == "central":
            bound = nv * (t**2 * _rosen_M3_bound(x, t) / 6 + eg / t)
        else:
            M2 = np.linalg.norm(so.rosen_hess(x), 2) + t * _rosen_M3_bound(x, t)
            bound = nv * (t * M2 / 2 + 2 * eg / t)
        assert err <= bound
        assert err <= (1e-4 if scheme == "central" else 1e-2) * np.linalg.norm(H @ v)


def test_from_grad_exact_on_quadratic(np_rng):
    Q, b = _quadratic(np_rng)
    x0 = np_rng.standard_normal(8)
    A = matfree.from_grad(lambda x: Q @ x + b, x0)
    # truncation error is zero; only rounding (eps/t ~ eps^(2/3)) remains
    assert _rel(A.todense(), Q) < 1e-8
    np.testing.assert_array_equal(A @ np.zeros(8), np.zeros(8))


def test_from_grad_bad_input():
    with pytest.raises(ValueError, match="scheme='backward' is not known"):
        matfree.from_grad(lambda x: x, np.ones(2), scheme="backward")
    with pytest.raises(ValueError, match="step=-1.0 must be > 0"):
        matfree.from_grad(lambda x: x, np.ones(2), step=-1.0)
    with pytest.raises(TypeError, match="grad must be callable"):
        matfree.from_grad(3, np.ones(2))


def test_from_grad_torch():
    torch = pytest.importorskip("torch")
    Q = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    A = matfree.from_grad(lambda x: Q @ x, torch.ones(2, dtype=torch.float64))
    assert _rel(to_np(A.todense()), Q.numpy()) < 1e-8


# ------------------------------------------------------------------ from_torch


def test_from_torch_quadratic_rosenbrock_logreg(breast_cancer):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    Q, b = _quadratic(rng)
    Qt, bt = torch.from_numpy(Q), torch.from_numpy(b)
    x0 = torch.from_numpy(rng.standard_normal(8))
    A = matfree.from_torch(lambda x: 0.5 * x @ Qt @ x + bt @ x, x0)
    assert _rel(to_np(A.todense()), Q) < 1e-12

    def rosen(x):
        return torch.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    xr = rng.uniform(-1.2, 1.2, 12)
    A = matfree.from_torch(rosen, torch.from_numpy(xr))
    assert _rel(to_np(A.todense()), so.rosen_hess(xr)) < 1e-10

    X, y = breast_cancer
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    w = rng.standard_normal(X.shape[1]) * 0.1

    def loss(w):
        return torch.nn.functional.softplus(-(Xt @ w) * yt).mean() + 0.5 * LAM * w @ w

    A = matfree.from_torch(loss, torch.from_numpy(w))
    assert _rel(to_np(A.todense()), _logreg_hessian(X, y, w)) < 1e-10


def test_from_torch_structured_params_and_vmap():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    X = torch.randn(10, 3, dtype=torch.float64)
    Y = torch.randn(10, 1, dtype=torch.float64)

    def loss(p):
        out = torch.func.functional_call(net, p, (X,))
        return ((out - Y) ** 2).mean()

    A = matfree.from_torch(loss, params)
    n = sum(p.numel() for p in params.values())
    assert A.shape == (n, n)
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def flat_loss(x):
        return loss(A.unflatten(x))

    H = torch.autograd.functional.hessian(flat_loss, flat)
    V = torch.randn(n, 5, dtype=torch.float64)
    torch.testing.assert_close(A @ V, H @ V, rtol=1e-10, atol=1e-12)
    loop = torch.stack([A @ V[:, j] for j in range(5)], 1)
    torch.testing.assert_close(A @ V, loop, rtol=1e-12, atol=1e-14)
    for p in (list(params.values()), tuple(params.values())):
        B2 = matfree.from_torch(lambda q: loss(dict(zip(params, q))), p)
        torch.testing.assert_close(B2 @ V, H @ V, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["auto", "forward-over-reverse", "reverse-over-reverse"])
def test_from_torch_modes_match_dense_hessian(mode):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    X = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    params = {"W": torch.randn(3, 4, dtype=torch.float64), "b": torch.zeros(3, dtype=torch.float64)}

    def loss(p):
        return torch.nn.functional.cross_entropy(torch.tanh(X @ p["W"].T) + p["b"], y)

    A = matfree.from_torch(loss, params, mode=mode)
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    H = torch.autograd.functional.hessian(lambda x: loss(A.unflatten(x)), flat)
    V = torch.randn(flat.numel(), 3, dtype=torch.float64)
    torch.testing.assert_close(A @ V, H @ V, rtol=1e-10, atol=1e-12)
    # single products, repeated: the kept graph (auto, reverse) is reused
    for j in (0, 1, 0):
        torch.testing.assert_close(A @ V[:, j], H @ V[:, j], rtol=1e-10, atol=1e-12)
    assert A.num_matvecs == 3 + 3
    with pytest.raises(ValueError, match="mode='backward' is not known"):
        matfree.from_torch(loss, params, mode="backward")


def test_from_torch_float32_and_bad_params():
    torch = pytest.importorskip("torch")
    x0 = torch.ones(4)
    A = matfree.from_torch(lambda x: (x**4).sum(), x0)
    assert A.dtype == torch.float32
    torch.testing.assert_close(A @ torch.ones(4), 12 * torch.ones(4))
    with pytest.raises(TypeError, match="params must be a tensor"):
        matfree.from_torch(lambda x: x, np.ones(3))
    with pytest.raises(TypeError, match="params has dtype int64"):
        matfree.from_torch(lambda x: x, torch.ones(3, dtype=torch.int64))


# ------------------------------------------------------------------ from_jax


def test_from_jax_rosenbrock_and_logreg(breast_cancer):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rng = np.random.default_rng(2)

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    xr = rng.uniform(-1.2, 1.2, 12)
    A = matfree.from_jax(rosen, jnp.asarray(xr))
    assert A.dtype == jnp.float64
    assert _rel(np.asarray(A.todense()), so.rosen_hess(xr)) < 1e-10
    v = jnp.asarray(rng.standard_normal(12))
    assert _rel(np.asarray(A @ v), so.rosen_hess(xr) @ np.asarray(v)) < 1e-10

    X, y = breast_cancer
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    w = rng.standard_normal(X.shape[1]) * 0.1

    def loss(w):
        return jnp.mean(jnp.logaddexp(0.0, -(Xj @ w) * yj)) + 0.5 * LAM * w @ w

    A = matfree.from_jax(loss, jnp.asarray(w))
    assert _rel(np.asarray(A.todense()), _logreg_hessian(X, y, w)) < 1e-10


# ------------------------------------------------------- curvature matrices


def test_gauss_newton_matches_dense_JtHJ(case, np_rng):
    m, n = 15, 6
    X = np_rng.standard_normal((m, n))
    w = np_rng.standard_normal(n) * 0.3
    t = np.tanh(X @ w)
    J = (1 - t**2)[:, None] * X
    h = np_rng.uniform(0.5, 2.0, m)
    Xa, da, ha = case.asarray(X), case.asarray(1 - t**2), case.asarray(h)
    xp = case.xp
    G = matfree.gauss_newton(
        lambda v: da * (Xa @ v),
        lambda u: xp.matrix_transpose(Xa) @ (da * u),
        matfree.Diagonal(ha),
        like=case.asarray(np.zeros(n)),
    )
    assert G.symmetric and G.positive_semidefinite
    case.close(G.todense(), J.T @ np.diag(h) @ J)
    Gc = matfree.gauss_newton(
        lambda v: da * (Xa @ v),
        lambda u: xp.matrix_transpose(Xa) @ (da * u),
        lambda u: ha * u,
        like=case.asarray(np.zeros(n)),
    )
    case.close(Gc.todense(), J.T @ np.diag(h) @ J)


def test_outer_product_and_fisher(case, np_rng):
    G = np_rng.standard_normal((20, 7))
    F = matfree.outer_product(case.asarray(G))
    dense = G.T @ G / 20
    assert F.positive_semidefinite
    case.close(F.todense(), dense)
    case.close(F.diagonal(), np.diag(dense))
    case.close(F.trace(), np.trace(dense))
    E = matfree.empirical_fisher(lambda: case.asarray(G))
    case.close(E.todense(), dense)
    S = matfree.outer_product(matfree.Dense(case.asarray(G)), scale=2.0)
    case.close(S.todense(), 2 * G.T @ G)
    case.close(S.trace(), 2 * np.sum(G * G))
    Ga = case.asarray(G)
    xp = case.xp
    opaque = matfree.FunctionOperator(
        lambda v: Ga @ v, G.shape, case.dtype, xp, rmatvec=lambda u: xp.matrix_transpose(Ga) @ u
    )
    O = matfree.outer_product(opaque)
    case.close(O.todense(), dense)
    with pytest.raises(NotImplementedError, match="trace"):
        O.trace()
    with pytest.raises(ValueError, match="G must be a 2-D array"):
        matfree.outer_product(case.asarray(np.ones(3)))


def test_block_diagonal_hessian(case, np_rng):
    Q1, _ = _quadratic(np_rng, 3)
    Q2, _ = _quadratic(np_rng, 5)
    a1, a2 = case.asarray(Q1), case.asarray(Q2)
    A = matfree.block_diagonal_hessian(
        [lambda v: a1 @ v, lambda v: a2 @ v], [case.asarray(np.zeros(3)), case.asarray(np.zeros(5))]
    )
    dense = np.zeros((8, 8))
    dense[:3, :3], dense[3:, 3:] = Q1, Q2
    case.close(A.todense(), dense)
    with pytest.raises(ValueError, match="2 block HVPs but 1 like= arrays"):
        matfree.block_diagonal_hessian([lambda v: v, lambda v: v], [case.asarray(np.zeros(3))])


def test_diagonal_approximation(case, np_rng):
    Q, _ = _quadratic(np_rng)
    D = matfree.diagonal_approximation(matfree.Dense(case.asarray(Q)))
    assert isinstance(D, matfree.Diagonal)
    case.close(D.diagonal(), np.diag(Q))
    D2 = matfree.diagonal_approximation(case.asarray(np.diag(Q)))
    case.close(D2.todense(), np.diag(np.diag(Q)))
