"""Hessian operators: from HVP callables, gradients, PyTorch, JAX; curvature approximations.

Every function here returns a :class:`~matfree.operators.LinearOperator`, so
all of matfree's algorithms apply to it.  None of them forms the Hessian.

Backends: :func:`from_hvp` and :func:`from_grad` work on any array library;
:func:`from_torch` needs PyTorch (CPU or CUDA tensors, never moved) and
:func:`from_jax` needs JAX.
"""

from __future__ import annotations

import math

from matfree import _backend as B
from matfree.operators import (
    BlockDiagonal,
    Dense,
    Diagonal,
    FunctionOperator,
    LinearOperator,
    aslinearoperator,
)

__all__ = [
    "from_hvp",
    "from_grad",
    "from_torch",
    "from_jax",
    "gauss_newton",
    "outer_product",
    "empirical_fisher",
    "block_diagonal_hessian",
    "diagonal_approximation",
]


def _backend_of(like, size, dtype):
    """Namespace, device, size and dtype of an operator from ``like=`` or ``size=``."""
    if like is not None:
        if size is not None:
            raise ValueError("pass like= or size=, not both")
        if not hasattr(like, "shape") or like.ndim != 1:
            raise ValueError(
                f"like must be a 1-D array (a vector the operator acts on), got "
                f"{getattr(like, 'shape', type(like).__name__)}"
            )
        xp = B.namespace(like)
        dtype = like.dtype if dtype is None else dtype
        B.check_float_dtype(dtype, "dtype")
        return xp, B.device(like), int(like.shape[0]), dtype
    if size is None:
        raise ValueError(
            "the operator's size is unknown: pass like=x (a vector of the right "
            "size, library, device and dtype) or size=n"
        )
    size = int(size)
    if size < 1:
        raise ValueError(f"size={size} must be >= 1")
    if dtype is not None and type(dtype).__module__ == "torch":
        import array_api_compat.torch as xp

        return xp, xp.empty(0).device, size, dtype
    import array_api_compat.numpy as xp

    dtype = xp.float64 if dtype is None else getattr(xp, B.dtype_name(dtype), dtype)
    B.check_float_dtype(dtype, "dtype")
    return xp, "cpu", size, dtype


def from_hvp(
    hvp,
    *,
    like=None,
    size=None,
    dtype=None,
    symmetric=True,
    positive_semidefinite=False,
    batched=None,
    check_finite=True,
):
    """Wrap a Hessian-vector product callable as a :class:`LinearOperator`.

    Parameters
    ----------
    hvp : callable
        ``hvp(v) -> H v`` for a 1-D array ``v``.
    like : array, optional
        A vector of the operator's size, library, device and dtype (for
        example the parameters the Hessian is taken at).
    size : int, optional
        The size ``n``, when ``like`` is not given (NumPy, float64 by
        default; a ``torch.dtype`` for ``dtype`` selects PyTorch on the CPU).
    dtype : dtype, optional
        Overrides the dtype of ``like``.
    symmetric : bool
        Declared symmetry (Hessians are symmetric).
    positive_semidefinite : bool
        Declared positive semidefiniteness (a convex function's Hessian).
    batched : callable, optional
        ``batched(V) -> H V`` for a 2-D block ``V`` of shape ``(n, k)``; used
        by ``matmat`` instead of a loop over columns.
    check_finite : bool
        Check every product for NaN/Inf and raise
        :class:`~matfree.NonFiniteError` (one reduction per product).

    Returns
    -------
    FunctionOperator
        The operator; it calls ``hvp`` only when applied (the dtype is never
        guessed by probing).

    Examples
    --------
    >>> import numpy as np, matfree
    >>> H = np.array([[2.0, 1.0], [1.0, 3.0]])
    >>> A = matfree.from_hvp(lambda v: H @ v, size=2)
    >>> A @ np.array([1.0, 0.0])
    array([2., 1.])
    """
    xp, dev, n, dtype = _backend_of(like, size, dtype)
    return FunctionOperator(
        hvp,
        (n, n),
        dtype,
        xp,
        dev,
        matmat=batched,
        symmetric=symmetric,
        positive_semidefinite=positive_semidefinite,
        check_finite=check_finite,
        name=getattr(hvp, "__name__", "hvp"),
    )


def from_grad(grad, x0, *, step=None, scheme="central", check_finite=True):
    r"""Hessian of ``f`` at ``x0`` by finite differences of its gradient.

    Parameters
    ----------
    grad : callable
        ``grad(x) -> ∇f(x)``, arrays of the library of ``x0``.
    x0 : array, shape (n,)
        The point.
    step : float, optional
        Step ``t`` along the unit direction ``u = v / ‖v‖``.  Default
        ``eps**(1/3) * max(1, ‖x0‖_∞)`` for central and
        ``sqrt(eps) * max(1, ‖x0‖_∞)`` for forward differences, the steps
        that balance truncation and rounding error (Nocedal & Wright,
        Numerical Optimization, 2nd ed., §8.1).
    scheme : {"central", "forward"}
        Central differences cost two gradients per product; forward
        differences one (``∇f(x0)`` is computed once).
    check_finite : bool
        Check products for NaN/Inf.

    Returns
    -------
    FunctionOperator
        Symmetric operator; products are accurate to the bound below.

    Notes
    -----
    With :math:`u = v/\|v\|`,

    .. math::

        \text{central: } Hv \approx \|v\| \frac{\nabla f(x+tu) - \nabla f(x-tu)}{2t},
        \qquad \|Hv - \cdot\| \le \|v\| \Big(\frac{t^2 M_3}{6} + \frac{\epsilon_g}{t}\Big),

        \text{forward: } Hv \approx \|v\| \frac{\nabla f(x+tu) - \nabla f(x)}{t},
        \qquad \|Hv - \cdot\| \le \|v\| \Big(\frac{t M_2}{2} + \frac{2\epsilon_g}{t}\Big),

    where :math:`M_3` (:math:`M_2`) bounds the norm of the third (second)
    directional derivative of :math:`\nabla f` along :math:`u` on the segment,
    and :math:`\epsilon_g` is the absolute error of one gradient evaluation
    (about :math:`\epsilon \|\nabla f\|` for a gradient computed to rounding).
    For a quadratic :math:`M_3 = 0`, so central differences are exact up to
    rounding.  The product is linear in ``v`` only up to this error.
    """
    if scheme not in ("central", "forward"):
        raise ValueError(f"scheme={scheme!r} is not known; expected 'central' or 'forward'")
    if not callable(grad):
        raise TypeError(f"grad must be callable, got {type(grad).__name__}")
    xp, dev, n, dtype = _backend_of(x0, None, None)
    eps = float(xp.finfo(dtype).eps)
    scale = max(1.0, float(xp.max(xp.abs(x0))) if n else 1.0)
    if step is None:
        step = (eps ** (1 / 3) if scheme == "central" else math.sqrt(eps)) * scale
    step = float(step)
    if not step > 0.0:
        raise ValueError(f"step={step} must be > 0")
    g0 = grad(x0) if scheme == "forward" else None

    def hvp(v):
        nv = xp.linalg.vector_norm(v)
        if float(nv) == 0.0:
            return xp.zeros_like(v)
        u = v / nv
        if scheme == "central":
            d = (grad(x0 + step * u) - grad(x0 - step * u)) / (2.0 * step)
        else:
            d = (grad(x0 + step * u) - g0) / step
        return nv * d

    op = FunctionOperator(
        hvp, (n, n), dtype, xp, dev, symmetric=True, check_finite=check_finite, name="from_grad"
    )
    op.step = step
    op.scheme = scheme
    return op


def _flatten_torch(params):
    """Flat vector of ``params`` (a tensor, or a list/tuple/dict of tensors) and its inverse."""
    import torch

    if isinstance(params, torch.Tensor):
        shape = params.shape

        def unflatten(x):
            return x.reshape(shape)

        return params.detach().reshape(-1), unflatten
    if isinstance(params, dict):
        keys = list(params)
        leaves = [params[k] for k in keys]
    elif isinstance(params, (list, tuple)):
        keys = None
        leaves = list(params)
    else:
        raise TypeError(
            f"params must be a tensor, or a list, tuple or dict of tensors, got {type(params).__name__}"
        )
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        raise TypeError("params must hold at least one tensor, and only tensors")
    shapes = [t.shape for t in leaves]
    sizes = [t.numel() for t in leaves]
    flat = torch.cat([t.detach().reshape(-1) for t in leaves])

    def unflatten(x):
        parts = [p.reshape(s) for p, s in zip(torch.split(x, sizes), shapes)]
        if keys is not None:
            return dict(zip(keys, parts))
        return type(params)(parts) if isinstance(params, tuple) else parts

    return flat, unflatten


def from_torch(loss_fn, params, *, mode="auto", check_finite=False):
    """Exact Hessian of a PyTorch scalar function as an operator on flat vectors.

    By default (``mode="auto"``) products run reverse-over-reverse on the
    gradient's graph, built once at the first product and reused (one
    backward pass per product); ``matmat`` runs the same backward pass
    vectorised with ``torch.func.vmap``, so a block of ``k`` vectors costs one
    batched call.  Vectors stay on the device of ``params``.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params) -> scalar tensor``, taking ``params`` in the same
        structure as given (a tensor, or a list/tuple/dict of tensors; for an
        ``nn.Module`` use ``torch.func.functional_call`` inside ``loss_fn``).
    params : tensor or list/tuple/dict of tensors
        Where the Hessian is taken.  Flattened in order into one vector.
    mode : {"auto", "forward-over-reverse", "reverse-over-reverse"}
        ``"auto"``: products and blocks by reverse-over-reverse on the kept
        graph of the gradient (on the CPU about 0.65x the time of a raw
        double backward or of ``torch.func``'s ``jvp`` of ``grad``, which
        recompute the forward and first backward pass for every product),
        the graph built at the first product.  ``"reverse-over-reverse"``:
        the same, the graph built at once.  ``"forward-over-reverse"``:
        ``jvp`` of ``grad`` for both, vmapped for blocks; keeps nothing
        between products (the least memory; for operations without a
        double-backward formula).  The kept graph holds the activations of
        one forward and backward pass for the operator's lifetime.
    check_finite : bool
        Check products for NaN/Inf (a device synchronisation per product).

    Returns
    -------
    FunctionOperator
        Symmetric operator on flat vectors of size ``sum(p.numel())``, with
        attributes ``x0`` (the flat parameters) and ``unflatten``.

    Raises
    ------
    TypeError
        For ``params`` that are not tensors or a list/tuple/dict of them, or
        not of a real floating dtype.
    ValueError
        For an unknown ``mode``.
    """
    from torch.func import grad, jvp, vjp, vmap

    if mode not in ("auto", "forward-over-reverse", "reverse-over-reverse"):
        raise ValueError(
            f"mode={mode!r} is not known; expected 'auto', 'forward-over-reverse' or "
            "'reverse-over-reverse'"
        )
    x0, unflatten = _flatten_torch(params)
    B.check_float_dtype(x0.dtype, "params")

    def f(x):
        return loss_fn(unflatten(x))

    g = grad(f)

    def forward_hvp(v):
        return jvp(g, (x0,), (v,))[1]

    pullbacks = []

    def pullback():  # the gradient's graph, built at the first product (never under vmap)
        if not pullbacks:
            pullbacks.append(vjp(g, x0)[1])
        return pullbacks[0]

    def reverse_hvp(v):  # Hᵀv = Hv: the Hessian is symmetric
        return pullback()(v)[0]

    if mode == "reverse-over-reverse":
        pullback()  # build the graph now, as documented for this mode
    if mode == "forward-over-reverse":
        hvp, matmat = forward_hvp, vmap(forward_hvp, in_dims=1, out_dims=1)
    else:
        hvp = reverse_hvp

        def matmat(V):
            # vmap over rows of a contiguous (k, n) copy: the batch dimension
            # outermost in memory.  Over the columns of V (in_dims=1) the
            # batched backward pass copies between layouts and cost 1.16-1.4x
            # the single products per column (MLP, 8.5e4 parameters); over
            # rows 0.8-0.97x
            pb = pullback()
            rows = vmap(lambda v: pb(v)[0])(V.T.contiguous())
            return rows.T.contiguous()

    op = from_hvp(hvp, like=x0, batched=matmat, check_finite=check_finite)
    op.name = "from_torch"
    op.x0, op.unflatten = x0, unflatten
    return op


def from_jax(f, x, *, check_finite=False):
    """Exact Hessian of a JAX scalar function ``f`` at ``x`` (``jvp`` of ``grad``, jit-compiled).

    Parameters
    ----------
    f : callable
        ``f(x) -> scalar`` for a 1-D JAX array ``x``.
    x : jax.Array, shape (n,)
        Where the Hessian is taken.  For float64 enable
        ``jax.config.update("jax_enable_x64", True)`` first.
    check_finite : bool
        Check products for NaN/Inf.

    Returns
    -------
    FunctionOperator
        Symmetric operator; ``matmat`` is ``jax.vmap`` of the product, both
        compiled once by ``jax.jit``.
    """
    import jax

    g = jax.grad(f)

    @jax.jit
    def hvp(v):
        return jax.jvp(g, (x,), (v,))[1]

    matmat = jax.jit(jax.vmap(hvp, in_axes=1, out_axes=1))
    op = from_hvp(hvp, like=x, batched=matmat, check_finite=check_finite)
    op.name = "from_jax"
    return op


def gauss_newton(jvp, vjp, loss_hessian, *, like=None, size=None, dtype=None, check_finite=True):
    """Generalised Gauss-Newton operator ``Jᵀ H_L J``.

    Parameters
    ----------
    jvp : callable
        ``jvp(v) -> J v``: Jacobian of the model outputs w.r.t. the parameters
        times a parameter-space vector.
    vjp : callable
        ``vjp(w) -> Jᵀ w`` for an output-space vector.
    loss_hessian : LinearOperator, array or callable
        Hessian of the loss w.r.t. the outputs (PSD for a convex loss); a
        callable is taken as its product ``w -> H_L w``.
    like, size, dtype :
        Parameter-space vector (or its size), as in :func:`from_hvp`.
    check_finite : bool
        Check products for NaN/Inf.

    Returns
    -------
    FunctionOperator
        Symmetric operator, declared positive semidefinite when
        ``loss_hessian`` is.
    """
    xp, dev, n, dtype = _backend_of(like, size, dtype)
    if callable(loss_hessian) and not isinstance(loss_hessian, LinearOperator):
        HL_mv, psd = loss_hessian, False
    else:
        HL = aslinearoperator(loss_hessian)
        HL_mv, psd = HL.matvec, HL.positive_semidefinite

    def ggn(v):
        return vjp(HL_mv(jvp(v)))

    return FunctionOperator(
        ggn,
        (n, n),
        dtype,
        xp,
        dev,
        symmetric=True,
        positive_semidefinite=psd,
        check_finite=check_finite,
        name="gauss_newton",
    )


class _OuterProduct(LinearOperator):
    """``(1/m) GᵀG`` for an ``m``-by-``n`` array or operator ``G``."""

    def __init__(self, G, scale):
        self.G = G if isinstance(G, LinearOperator) else Dense(G, symmetric=False)
        super().__init__(
            (self.G.shape[1], self.G.shape[1]),
            self.G.dtype,
            self.G.xp,
            self.G.device,
            positive_semidefinite=True,
        )
        self.scale = float(scale)

    def _matvec(self, v):
        return self.scale * self.G.rmatvec(self.G.matvec(v))

    def _matmat(self, V):
        return self.scale * self.G.rmatmat(self.G.matmat(V))

    def diagonal(self):
        if isinstance(self.G, Dense):
            return self.scale * self.G.xp.sum(self.G.A * self.G.A, axis=0)
        return super().diagonal()

    def trace(self):
        if isinstance(self.G, Dense):
            return self.scale * self.G.xp.sum(self.G.A * self.G.A)
        return super().trace()


def outer_product(G, *, scale=None):
    """The PSD operator ``scale · GᵀG`` (``scale = 1/m`` by default).

    Parameters
    ----------
    G : array or LinearOperator, shape (m, n)
        Rows are, for example, per-sample gradients or Jacobian rows.  An
        operator needs ``rmatvec``.
    scale : float, optional
        Defaults to ``1 / m``.

    Returns
    -------
    LinearOperator
        Knows its diagonal and trace exactly when ``G`` is an array.
    """
    if not isinstance(G, LinearOperator):
        if not hasattr(G, "ndim") or G.ndim != 2:
            raise ValueError(
                f"G must be a 2-D array or an operator, got {getattr(G, 'shape', type(G).__name__)}"
            )
        B.check_float_dtype(G.dtype, "G")
    m = G.shape[0]
    if m == 0:
        raise ValueError("G has no rows")
    return _OuterProduct(G, 1.0 / m if scale is None else scale)


def empirical_fisher(per_sample_grads):
    """Empirical Fisher ``(1/m) Σ g_i g_iᵀ`` from per-sample gradients ``G`` (m-by-n).

    Parameters
    ----------
    per_sample_grads : array or LinearOperator, shape (m, n), or callable
        The matrix of per-sample gradients, or a zero-argument callable
        returning it (evaluated once, here).

    Returns
    -------
    LinearOperator
        ``outer_product(G)``.
    """
    G = per_sample_grads() if callable(per_sample_grads) and not isinstance(
        per_sample_grads, LinearOperator
    ) else per_sample_grads
    return outer_product(G)


def block_diagonal_hessian(block_hvps, like, *, check_finite=True):
    """Block-diagonal Hessian approximation from per-block HVPs.

    Parameters
    ----------
    block_hvps : sequence of callables or LinearOperators
        ``hvp_b(v_b) -> H_bb v_b`` for the diagonal block of each parameter group.
    like : sequence of arrays
        One 1-D array per block, giving its size, library, device and dtype.
    check_finite : bool
        Check products for NaN/Inf.

    Returns
    -------
    BlockDiagonal
    """
    if len(block_hvps) != len(like):
        raise ValueError(
            f"got {len(block_hvps)} block HVPs but {len(like)} like= arrays; they must match"
        )
    blocks = [
        h if isinstance(h, LinearOperator) else from_hvp(h, like=x, check_finite=check_finite)
        for h, x in zip(block_hvps, like)
    ]
    return BlockDiagonal(blocks)


def diagonal_approximation(A, **estimate_kwargs):
    """The diagonal approximation ``diag(H)`` as a :class:`~matfree.Diagonal` operator.

    Parameters
    ----------
    A : LinearOperator or 1-D array
        A known diagonal, or an operator.  An operator that knows its
        diagonal exactly gives it; otherwise it is estimated with
        :func:`matfree.diagonal` (keyword arguments passed on).

    Returns
    -------
    Diagonal
    """
    if not isinstance(A, LinearOperator):
        return Diagonal(A)
    try:
        return Diagonal(A.diagonal())
    except NotImplementedError:
        pass
    try:
        from matfree.diagonal import diagonal as estimate_diagonal
    except ImportError:  # pragma: no cover - until the estimators land
        raise NotImplementedError(
            f"{type(A).__name__} does not know its diagonal and no estimator is available"
        ) from None
    return Diagonal(estimate_diagonal(A, **estimate_kwargs).value)
