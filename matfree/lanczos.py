"""Lanczos tridiagonalisation, block Lanczos and a thick-restart Lanczos eigensolver.

:func:`lanczos` runs the symmetric Lanczos process from one starting vector
(or from a block of independent starting vectors at once, one ``matmat`` per
step) with full, partial or no reorthogonalisation; :func:`block_lanczos`
runs the block Lanczos process from a block of vectors; :func:`eigsh` finds a
few extreme eigenpairs (or eigenpairs near a shift ``sigma``) with the
thick-restart Lanczos method of Wu and Simon.

Design
------
* The three-term recurrence step (:func:`_lanczos_recurrence`) and the
  reorthogonalisation step (:func:`_reorthogonalise`) are small pure
  array-API functions, batched over leading axes, so that fused kernels can
  replace them for NumPy inputs without touching the algorithms.
* The projected problems (tridiagonal, arrowhead, block tridiagonal matrices
  of size at most a few hundred) are solved on the host by LAPACK in one
  named helper, :func:`_small_dense_on_host`; everything of size ``n`` stays in
  the namespace and on the device of the operator.
* Every product with the operator is counted and reported as ``num_matvecs``.

Backends: NumPy, PyTorch, CuPy, array-api-strict (any array-API namespace
with in-place slice assignment); JAX arrays are supported through ``.at``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any

import numpy as np
import scipy.linalg

from matfree import _backend as B
from matfree import _kernels, _progress
from matfree.operators import Dense, LinearOperator, NonFiniteError, aslinearoperator
from matfree.results import EigResult

__all__ = ["lanczos", "block_lanczos", "eigsh", "LanczosResult", "BlockLanczosResult"]

_REORTH = ("full", "partial", "none")
_WHICH = ("LA", "SA", "LM", "BE")
#: Daniel-Gragg-Kaufman-Stewart factor: a second Gram-Schmidt pass is needed
#: only when the first one removed more than 1 - 1/sqrt(2) of the norm.
_DGKS = 1.0 / math.sqrt(2.0)
#: converged Ritz pairs are locked once their residual is below this fraction of the tolerance
_LOCK_FACTOR = 0.1
#: block size of the multiplicity check of eigsh (at least the solver's own; 2 was
#: measured slower than repeating single-vector checks)
_CHECK_BLOCK = 1
#: smallest basis (per block column) of the complement in a multiplicity check
_CHECK_NCV = 20
#: smallest default basis (per block column) of eigsh: ARPACK's 20 doubled; on the
#: clustered top of the 2-D Poisson matrix (m = 200, 300) it halves the products
#: and the time, with the check, and changes nothing on well separated spectra
_NCV_MIN = 40


# ======================================================================
# Result types
# ======================================================================


def _fmt_shape(x):
    return "None" if x is None else str(tuple(int(s) for s in x.shape))


@dataclasses.dataclass(frozen=True, repr=False)
class LanczosResult:
    r"""Output of :func:`lanczos`: the tridiagonal matrix and (optionally) the basis.

    With one starting vector ``v0`` (1-D) the fields satisfy

    .. math:: A Q = Q T + r e_m^\top, \qquad Q^\top Q = I,\ Q^\top r = 0,

    where ``T`` is tridiagonal with diagonal ``alpha`` and off-diagonal
    ``beta[:-1]``, and ``r = residual`` has norm ``beta[-1]``.  With a block
    ``V0`` of ``p`` independent starting vectors (2-D) every field gets a
    leading probe axis and each probe runs its own process.

    Attributes
    ----------
    alpha : array, shape (m,) or (p, m)
        Diagonal of ``T`` (zero-padded after a breakdown).
    beta : array, shape (m,) or (p, m)
        ``beta[j]`` couples ``q_j`` and ``q_{j+1}``; ``beta[m-1]`` is the norm
        of the final residual (0 after a breakdown).
    basis : array, shape (n, m) or (p, n, m), or None
        The orthonormal Lanczos vectors as columns (``None`` unless kept).
    residual : array, shape (n,) or (p, n)
        The unnormalised final residual ``r = beta[m-1] q_{m}``.
    num_steps : int or tuple of int
        Steps taken (per probe with a block; shorter after a breakdown).
    num_matvecs : int
        Products with the operator spent.
    breakdown : bool or tuple of bool
        Whether the Krylov space became invariant (``beta`` fell to rounding
        level): its Ritz values are then exact eigenvalues of ``A``.
    status : str
        ``"completed"``, ``"breakdown"`` (stopped early on an invariant
        subspace) or ``"clipped"`` (``num_steps > n`` was reduced to ``n``).
    info : dict
        ``num_steps_requested``, ``clipped``, ``reorth``, ``num_reorth``
        (steps that were reorthogonalised), ``accumulate_dtype``.
    """

    alpha: Any
    beta: Any
    basis: Any
    residual: Any
    num_steps: Any
    num_matvecs: int
    breakdown: Any
    status: str
    info: dict = dataclasses.field(default_factory=dict)

    def tridiagonal(self):
        """The tridiagonal matrix ``T``, dense.

        Returns
        -------
        array, shape (m, m) or (p, m, m)
            On the device of ``alpha``.
        """
        return _tridiagonal(self.alpha, self.beta)

    def __repr__(self):
        return (
            f"LanczosResult(num_steps={self.num_steps}, num_matvecs={self.num_matvecs}, "
            f"breakdown={self.breakdown}, status={self.status!r}, "
            f"alpha shape={_fmt_shape(self.alpha)}, basis shape={_fmt_shape(self.basis)})"
        )

    __str__ = __repr__


@dataclasses.dataclass(frozen=True, repr=False)
class BlockLanczosResult:
    r"""Output of :func:`block_lanczos`: a block tridiagonal matrix and its basis.

    With ``V0 = Q_0 R_0`` (thin QR), the block Lanczos process builds
    orthonormal blocks ``Q_0, ..., Q_{m-1}`` (each ``n x b``) with

    .. math::

        A Q_j = Q_{j-1} B_{j-1}^\top + Q_j A_j + Q_{j+1} B_j,
        \qquad A\,[Q_0 \cdots Q_{m-1}] = [Q_0 \cdots Q_{m-1}]\, T + R\, E_m^\top,

    where ``T`` is block tridiagonal with diagonal blocks ``A_j`` and
    sub-diagonal blocks ``B_j`` (``R = residual = Q_m B_{m-1}``).

    Attributes
    ----------
    diagonal_blocks : array, shape (m, b, b)
        ``A_j = Q_j^T A Q_j``.
    offdiagonal_blocks : array, shape (m, b, b)
        ``B_j`` with ``W_j = Q_{j+1} B_j``; ``B_{m-1}`` couples the final residual.
        Rows of a rank-deficient ``W_j`` are zero (see ``info["deflated"]``).
    R0 : array, shape (b, b)
        Factor of ``V0 = Q_0 R_0`` (upper triangular up to an orthogonal
        rotation from the rank check).
    basis : array, shape (n, m * b) or None
        ``[Q_0, ..., Q_{m-1}]`` when kept.
    residual : array, shape (n, b)
    num_steps : int
    num_matvecs : int
    breakdown : bool
        The block Krylov space became invariant (or filled the space).
    status : str
    info : dict
        ``deflated`` (number of random directions injected per step when a
        residual block lost rank), ``reorth``, ``clipped``.
    """

    diagonal_blocks: Any
    offdiagonal_blocks: Any
    R0: Any
    basis: Any
    residual: Any
    num_steps: int
    num_matvecs: int
    breakdown: bool
    status: str
    info: dict = dataclasses.field(default_factory=dict)

    def tridiagonal(self):
        """The block tridiagonal matrix ``T``, dense.

        Returns
        -------
        array, shape (m * b, m * b)
            On the device of the blocks.
        """
        D, Bk = self.diagonal_blocks, self.offdiagonal_blocks
        xp = B.namespace(D)
        m, b = int(D.shape[0]), int(D.shape[1])
        rows = []
        zero = xp.zeros((b, b), dtype=D.dtype, device=B.device(D))
        for i in range(m):
            row = []
            for j in range(m):
                if j == i:
                    row.append(D[i, ...])
                elif j == i - 1:
                    row.append(Bk[i - 1, ...])
                elif j == i + 1:
                    row.append(xp.matrix_transpose(Bk[i, ...]))
                else:
                    row.append(zero)
            rows.append(xp.concat(row, axis=1))
        return xp.concat(rows, axis=0)

    def __repr__(self):
        return (
            f"BlockLanczosResult(num_steps={self.num_steps}, block_size="
            f"{int(self.R0.shape[0])}, num_matvecs={self.num_matvecs}, "
            f"breakdown={self.breakdown}, status={self.status!r})"
        )

    __str__ = __repr__


def _tridiagonal(alpha, beta):
    xp = B.namespace(alpha)
    m = int(alpha.shape[-1])
    dev = B.device(alpha)
    eye = xp.eye(m, dtype=alpha.dtype, device=dev)
    T = alpha[..., None] * eye
    if m > 1:
        sup = xp.eye(m, k=1, dtype=alpha.dtype, device=dev)
        off = beta[..., :-1]
        zero = xp.zeros(off.shape[:-1] + (1,), dtype=alpha.dtype, device=dev)
        b_row = xp.concat([off, zero], axis=-1)  # b_row[i] = T[i, i+1]
        upper = b_row[..., :, None] * sup
        T = T + upper + xp.matrix_transpose(upper)
    return T


# ======================================================================
# Building blocks (pure array API; candidates for fused kernels)
# ======================================================================


@_kernels.fused(_kernels.lanczos.recurrence)
def _lanczos_recurrence(xp, w, q, q_prev, beta_prev, axis=-1):
    r"""One three-term Lanczos update, batched over the other axes.

    ``alpha = <q, w>`` and ``w <- w - alpha q - beta_prev q_prev`` where
    ``w = A q``; the vectors run along ``axis`` (``-1``: rows ``(..., n)``,
    ``0``: columns ``(n, p)``), ``beta_prev`` has the shape of ``alpha``.
    Returns ``(w, alpha)``.  For NumPy inputs the call goes to the fused
    Numba kernel :func:`matfree._kernels.lanczos.recurrence` when it applies
    (two sweeps over memory instead of five); this function is its reference.
    """
    alpha = xp.sum(q * w, axis=axis)
    a = xp.expand_dims(alpha, axis=axis)
    b = xp.expand_dims(beta_prev, axis=axis)
    w = w - a * q - b * q_prev
    return w, alpha


@_kernels.fused(_kernels.lanczos.normalise_columns)
def _normalise_columns(xp, W, beta, spare):
    """The next Lanczos vectors ``W * (1 / beta)`` (columns with ``beta = 0`` times one).

    A product with the reciprocal (within an ulp of the quotient) instead of a
    division: half the time on the CPU.  ``spare`` is a block the caller no
    longer needs; the kernel writes into it.
    """
    inv = 1.0 / xp.where(beta > 0, beta, xp.ones_like(beta))
    return W * inv[None, :]


@_kernels.fused(_kernels.lanczos.recurrence_norm)
def _lanczos_recurrence_norm(xp, w, q, q_prev, beta_prev, axis=-1, step=0, alpha=None):
    """:func:`_lanczos_recurrence` and the norms of the new vectors: ``(w, alpha, beta)``.

    ``w = A q`` is checked for NaN and Inf first (:func:`_check_finite_product`,
    ``step`` for its message).  The fused kernel sums the norms in the sweep
    that writes ``w`` (for ``(n, p)`` blocks of columns, the probes of
    stochastic Lanczos quadrature) and skips that check: a NaN or Inf in
    ``w`` makes its ``alpha`` or ``beta`` non-finite, which the caller checks.
    ``alpha``, when given, holds the dots ``<q, w>`` (summed in the pass of
    the product, :func:`_product_alphas`).
    """
    _check_finite_product(xp, w, step)
    if alpha is None:
        w, alpha = _lanczos_recurrence(xp, w, q, q_prev, beta_prev, axis=axis)
    else:
        a = xp.expand_dims(alpha, axis=axis)
        b = xp.expand_dims(beta_prev, axis=axis)
        w = w - a * q - b * q_prev
    return w, alpha, xp.linalg.vector_norm(w, axis=axis)


def _gram_schmidt_pass(xp, Q, w):
    """One classical Gram-Schmidt pass of ``w`` against the rows of ``Q`` (BLAS-2/3).

    ``Q`` is ``(j, n)`` with ``w`` ``(n,)``, or ``(..., j, n)`` with ``w``
    ``(..., n)`` (batched).  Returns ``(w - Q^T h, h)`` with ``h = Q w``.
    """
    if w.ndim == 1:
        h = Q @ w
        return w - h @ Q, h
    h = (Q @ w[..., None])[..., 0]
    return w - (xp.matrix_transpose(Q) @ h[..., None])[..., 0], h


def _reorthogonalise(xp, Q, w, *, passes=2):
    """Block classical Gram-Schmidt of ``w`` against the rows of ``Q``, ``passes`` times.

    Twice is enough (Giraud, Langou, Rozložník 2005): two passes leave ``w``
    orthogonal to the rows of ``Q`` to working precision.  Returns ``(w, h)``
    with ``h`` the summed projection coefficients (used to correct the
    recurrence coefficients).
    """
    h_total = None
    for _ in range(passes):
        w, h = _gram_schmidt_pass(xp, Q, w)
        h_total = h if h_total is None else h_total + h
    return w, h_total


def _norm(xp, w):
    """``‖w‖`` of a vector as a float (through :func:`matfree._kernels.inner`: no BLAS threads)."""
    return math.sqrt(float(_kernels.inner(xp, w, w)))


def _reorthogonalise_dgks(xp, Q, w, norm_w):
    """Gram-Schmidt of a single vector with a conditional second pass (DGKS criterion).

    The second pass runs only when the first one removed more than
    ``1 - 1/sqrt(2)`` of ``norm_w``, in which case cancellation may have left
    components along ``Q`` (Daniel, Gragg, Kaufman, Stewart 1976).  Returns
    ``(w, h, norm_of_new_w, passes)``.
    """
    w, h = _gram_schmidt_pass(xp, Q, w)
    nrm = _norm(xp, w)
    if nrm > _DGKS * norm_w:
        return w, h, nrm, 1
    w, h2 = _gram_schmidt_pass(xp, Q, w)
    return w, h + h2, _norm(xp, w), 2


def _reorthogonalise_block(xp, Q, W, *, passes=2):
    """Block classical Gram-Schmidt (BLAS-3) of the columns of ``W`` against those of ``Q``.

    ``Q`` is ``(n, j)`` with orthonormal columns, ``W`` is ``(n, b)``;
    returns ``(W - Q C, C)`` with the coefficients ``C = Q^T W`` summed over
    the passes.
    """
    C_total = None
    for _ in range(passes):
        C = xp.matrix_transpose(Q) @ W
        W = W - Q @ C
        C_total = C if C_total is None else C_total + C
    return W, C_total


def _reorthogonalise_rows_dgks(xp, Q, W):
    """Block Gram-Schmidt (BLAS-3) of the rows of ``W`` against the rows of ``Q``.

    A second pass runs only when the first removed more than ``1 - 1/sqrt(2)``
    of some row's norm (the DGKS criterion row by row).  Returns ``(W, C,
    passes)`` with the summed coefficients ``C = W Q^T``.
    """
    before = xp.linalg.vector_norm(W, axis=-1)
    C = W @ xp.matrix_transpose(Q)
    W = W - C @ Q
    after = xp.linalg.vector_norm(W, axis=-1)
    if bool(xp.all(after > _DGKS * before)):
        return W, C, 1
    C2 = W @ xp.matrix_transpose(Q)
    return W - C2 @ Q, C + C2, 2


def _set(xp, arr, index, value):
    """``arr[index] = value`` (functional ``.at`` for JAX); returns the array."""
    if B.is_jax(xp):
        return arr.at[index].set(value)
    arr[index] = value
    return arr


# ======================================================================
# The one place where data goes to the host
# ======================================================================


def _small_dense_on_host(kind, M):
    """Small dense eigen/singular-value problems, solved ON THE HOST by LAPACK.

    This is the only function of this module that moves data off the device,
    and it only ever sees projected matrices (tridiagonal, arrowhead, block
    tridiagonal, or a block-size square ``R`` factor) of size at most a few
    hundred.  LAPACK solves those in microseconds, whereas on an accelerator
    the same call would launch many tiny kernels and the result (Ritz values
    to sort and compare) is needed on the host anyway to steer the
    iteration.  One copy per outer step, O(m^2) numbers.

    Parameters
    ----------
    kind : {"eigh", "svd"}
    M : array of any backend or NumPy array, shape (..., k, k)

    Returns
    -------
    tuple of float64 NumPy arrays
        ``(eigenvalues ascending, eigenvectors)`` for ``"eigh"`` and
        ``(U, s, Vt)`` for ``"svd"``.  Callers move what they need back with
        ``xp.asarray(..., device=...)``.
    """
    M = np.asarray(B.to_numpy(M), dtype=np.float64)
    if kind == "eigh":
        if M.ndim == 2:
            # LAPACK's MRRR driver: numpy's divide-and-conquer (syevd) calls the
            # multithreaded BLAS even for a 40 x 40 matrix, which took 15 ms instead
            # of 0.4 ms per call on a loaded machine (eigsh calls this every step)
            return scipy.linalg.eigh(M, driver="evr", check_finite=False)
        return np.linalg.eigh(M)
    if kind == "svd":
        return np.linalg.svd(M)
    raise ValueError(kind)


def _to_device(xp, device, a, dtype):
    """Bring a small host result back (the return leg of :func:`_small_dense_on_host`)."""
    return xp.asarray(np.ascontiguousarray(a), dtype=dtype, device=device)


# ======================================================================
# Entry checks shared with matfree.spectral
# ======================================================================


def _check_int(value, name, low, high=None, hint=""):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f"{low} <= {name}" + (f" <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value} is out of range; expected {allowed}{hint}")
    return value


def _symmetric_operator(A, name="A"):
    """``A`` as a square, symmetric :class:`LinearOperator` (or a clear error).

    Dense arrays that are symmetric to rounding (``|M - M^T| <= 100 eps |M|``)
    are accepted as symmetric, as ARPACK would; other operators must be
    declared symmetric (Hessians from :func:`matfree.from_hvp` are).
    """
    op = aslinearoperator(A)
    if op.shape[0] != op.shape[1]:
        raise ValueError(
            f"{name} must be square, got an operator of shape {tuple(op.shape)}; "
            "expected shape (n, n)"
        )
    if op.shape[0] < 1:
        raise ValueError(f"{name} has size 0; expected n >= 1")
    if op.symmetric:
        return op
    if isinstance(op, Dense):
        xp = op.xp
        M = op.A
        asym = float(xp.max(xp.abs(M - xp.matrix_transpose(M))))
        scale = float(xp.max(xp.abs(M)))
        eps = float(xp.finfo(M.dtype).eps)
        if asym <= 100.0 * eps * scale:
            return Dense(M, symmetric=True)
        raise ValueError(
            f"{name} is not symmetric: max |A - A^T| = {asym:.3g} against max |A| = "
            f"{scale:.3g}; this method needs a symmetric operator (symmetrise it, "
            "e.g. (A + A.T) / 2)"
        )
    raise ValueError(
        f"{name} ({type(op).__name__}) is not declared symmetric; this method needs "
        "a symmetric operator: declare it with matfree.aslinearoperator(A, symmetric=True) "
        "or matfree.from_hvp(..., symmetric=True)"
    )


def _namespace_of(op, like=None):
    """Namespace and device of the operator (or of ``like`` for operators taking any)."""
    if op.xp is not None:
        return op.xp, op.device
    if like is not None:
        return B.namespace(like), B.device(like)
    import array_api_compat.numpy as np_xp

    return np_xp, "cpu"


def _resolve_dtype(xp, dtype, name):
    """A float dtype of ``xp`` from a dtype object or a name (``"float64"``)."""
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"{name}={dtype!r} is not known; expected 'float32' or 'float64'")
        return getattr(xp, dtype)
    B.check_float_dtype(dtype, name)
    return getattr(xp, B.dtype_name(dtype))


def _working_dtypes(xp, op, like_dtype, accumulate_dtype):
    """(dtype of the products, dtype of the recurrence and basis)."""
    op_dtype = op.dtype if op.dtype is not None else like_dtype
    if op_dtype is None:
        op_dtype = xp.float64
    op_dtype = getattr(xp, B.dtype_name(op_dtype))
    if accumulate_dtype is None:
        return op_dtype, op_dtype
    acc = _resolve_dtype(xp, accumulate_dtype, "accumulate_dtype")
    if B.dtype_name(acc) == "float32" and B.dtype_name(op_dtype) == "float64":
        raise ValueError(
            "accumulate_dtype=float32 is lower than the operator's float64; "
            "expected accumulate_dtype=None or float64"
        )
    return op_dtype, acc


def _eps(xp, dtype):
    return float(xp.finfo(dtype).eps)


def _apply_rows(op, Q, op_dtype, acc_dtype, xp):
    """``(A Q^T)^T`` for a block ``Q`` of row vectors, cast to/from the product dtype."""
    b = int(Q.shape[0])
    Q = Q if Q.dtype == op_dtype else xp.astype(Q, op_dtype)
    if b == 1:
        W = op.matvec(Q[0, :])[None, :]
    else:
        # stack (not transpose) so that the operator gets, and we keep, contiguous blocks
        AX = op.matmat(xp.stack([Q[i, :] for i in range(b)], axis=1))
        W = xp.stack([AX[:, i] for i in range(b)], axis=0)
    return W if W.dtype == acc_dtype else xp.astype(W, acc_dtype)


def _check_finite_product(xp, w, step):
    """Raise :class:`NonFiniteError` when a product ``w = A q`` holds NaN or Inf."""
    if not bool(xp.all(xp.isfinite(w))):
        raise NonFiniteError(
            f"the operator returned NaN or Inf at Lanczos step {step}; check the "
            "matvec/HVP for overflow or invalid values"
        )


def _check_finite_scalars(values, what, step):
    if not np.all(np.isfinite(values)):
        raise NonFiniteError(
            f"the operator returned NaN or Inf at Lanczos step {step} ({what} is not "
            "finite); check the matvec/HVP for overflow or invalid values"
        )


# ======================================================================
# Lanczos from one vector or a block of independent vectors
# ======================================================================


def _blas_owns_threads(fn):
    """Run ``fn`` with the Numba kernels on one thread (:func:`matfree._kernels._config.serial`).

    The Lanczos iterations call multithreaded BLAS every step (Gram-Schmidt
    against the basis) and at restarts; Numba parallel regions between those
    calls wait for OpenBLAS's spinning threads.  Measured on two cores, eigsh
    on the Poisson 300^2 matrix: 9.8 ms per product with both pools, 2.2 ms
    with the kernels serial.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _kernels._config.serial():
            return fn(*args, **kwargs)

    return run


@_blas_owns_threads
def lanczos(A, v0, num_steps, *, reorth="full", return_basis=True, accumulate_dtype=None):
    r"""Symmetric Lanczos tridiagonalisation :math:`A Q = Q T + r e_m^\top`.

    Parameters
    ----------
    A : LinearOperator, array or sparse matrix
        Symmetric ``n x n`` operator (declared symmetric; dense arrays are
        checked).
    v0 : array, shape (n,) or (n, p)
        Starting vector, or ``p`` independent starting vectors as columns: the
        ``p`` processes then advance together, one ``A.matmat`` per step
        (this is how stochastic Lanczos quadrature runs its probes).
    num_steps : int
        Number of Lanczos steps ``m`` (matrix-vector products per vector).
        Values above ``n`` are clipped to ``n`` and reported in ``status``.
    reorth : {"full", "partial", "none"}
        ``"full"``: each new vector is orthogonalised against all previous
        ones by block classical Gram-Schmidt, twice (``Q(Q^T w)``, BLAS-2),
        which keeps :math:`\|Q^\top Q - I\|` at working precision.
        ``"partial"``: Simon's partial reorthogonalisation; the loss of
        orthogonality is monitored by the :math:`\omega`-recurrence and a full
        reorthogonalisation (of two consecutive vectors) happens only when it
        exceeds :math:`\sqrt{\epsilon}` (semi-orthogonality, enough for ``T``
        to be accurate to working precision).  ``"none"``: plain three-term
        recurrence (no basis needs to be stored).
    return_basis : bool
        Keep and return the basis ``Q`` (memory ``n m`` per vector).
    accumulate_dtype : dtype or {"float32", "float64"}, optional
        Dtype of the recurrence coefficients, the basis and the
        reorthogonalisation.  ``float64`` with a ``float32`` operator is the
        classical remedy for float32 Lanczos failures: only the products run in
        float32.  Default: the operator's dtype.

    Returns
    -------
    LanczosResult
        ``alpha``, ``beta``, ``basis``, ``residual`` (see
        :class:`LanczosResult`), ``num_steps``, ``num_matvecs``,
        ``breakdown`` and ``status``.

    Raises
    ------
    ValueError
        Non-square or non-symmetric ``A``, a zero starting vector, a shape
        mismatch, ``num_steps < 1`` or an unknown ``reorth``.
    TypeError
        Non-integer ``num_steps``, non-float arrays.
    matfree.NonFiniteError
        The operator returned NaN or Inf.

    Notes
    -----
    With :math:`q_0 = v_0/\|v_0\|` and :math:`\beta_{-1} q_{-1} = 0`, step
    :math:`j` computes

    .. math::

        \alpha_j = q_j^\top A q_j, \quad
        w = A q_j - \alpha_j q_j - \beta_{j-1} q_{j-1}, \quad
        \beta_j = \|w\|, \quad q_{j+1} = w / \beta_j

    (Golub & Van Loan, Algorithm 10.1.1).  When :math:`\beta_j` falls to
    rounding level, :math:`\mathcal K_{j+1}(A, v_0)` is an invariant subspace:
    the process stops (``breakdown=True``) and the eigenvalues of ``T`` are
    eigenvalues of ``A``.  This is a result, not an error.

    Backends: NumPy, PyTorch, CuPy, array-api-strict, JAX.

    References
    ----------
    .. [1] G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., ch. 10,
       Johns Hopkins University Press, 2013.
    .. [2] H. D. Simon, "The Lanczos algorithm with partial reorthogonalization",
       Math. Comp. 42 (1984), 115-142. :doi:`10.1090/S0025-5718-1984-0725988-X`
    .. [3] L. Giraud, J. Langou, M. Rozložník, "The loss of orthogonality in the
       Gram-Schmidt orthogonalization process", Comput. Math. Appl. 50 (2005),
       1069-1075. :doi:`10.1016/j.camwa.2005.08.009`

    Examples
    --------
    >>> import numpy as np, matfree
    >>> A = np.diag([1.0, 2.0, 3.0, 4.0])
    >>> res = matfree.lanczos(A, np.ones(4), num_steps=4)
    >>> np.round(np.linalg.eigvalsh(res.tridiagonal()), 10)
    array([1., 2., 3., 4.])
    >>> Q = res.basis
    >>> bool(np.allclose(A @ Q, Q @ res.tridiagonal(), atol=1e-12))
    True
    """
    op = _symmetric_operator(A)
    n = op.shape[0]
    if reorth not in _REORTH:
        raise ValueError(f"reorth={reorth!r} is not known; expected 'full', 'partial' or 'none'")
    if not hasattr(v0, "shape") or isinstance(v0, LinearOperator):
        raise TypeError(f"v0 must be an array, got {type(v0).__name__}")
    if v0.ndim not in (1, 2):
        raise ValueError(f"v0 must be 1-D (n,) or 2-D (n, p), got shape {tuple(v0.shape)}")
    if v0.shape[0] != n:
        raise ValueError(
            f"shape mismatch: v0 has shape {tuple(v0.shape)} but A has shape {tuple(op.shape)}; "
            f"expected v0.shape[0] == {n}"
        )
    B.check_float_dtype(v0.dtype, "v0")
    num_steps = _check_int(num_steps, "num_steps", 1)
    requested = num_steps
    clipped = num_steps > n
    num_steps = min(num_steps, n)
    xp, dev = _namespace_of(op, v0)
    if op.xp is not None and B.namespace(v0) is not xp:
        raise TypeError("v0 is an array of another library than the operator")
    op_dtype, acc = _working_dtypes(xp, op, v0.dtype, accumulate_dtype)
    single = v0.ndim == 1
    V0 = xp.astype(v0[:, None] if single else v0, acc)
    norms = B.to_numpy(xp.linalg.vector_norm(V0, axis=0))
    if not np.all(np.isfinite(norms)):
        raise ValueError("v0 contains NaN or Inf; expected a finite starting vector")
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(
            "v0 is the zero vector; expected a nonzero starting vector"
            if single
            else f"column {bad} of v0 is zero; expected nonzero starting vectors"
        )
    run = _lanczos_columns(op, V0, num_steps, reorth, return_basis, op_dtype, acc, xp, dev)
    alpha, beta, basis, resid, lengths, brk, nmv, nre = run
    stopped_early = bool(np.any(brk & (lengths < num_steps)))
    status = "breakdown" if stopped_early else ("clipped" if clipped else "completed")
    info = {
        "num_steps_requested": requested,
        "clipped": clipped,
        "reorth": reorth,
        "num_reorth": nre,
        "accumulate_dtype": B.dtype_name(acc),
    }
    if basis is not None:
        basis = xp.matrix_transpose(basis)  # (p, n, m): columns are the vectors
    if single:
        return LanczosResult(
            alpha[0, ...],
            beta[0, ...],
            None if basis is None else basis[0, ...],
            resid[:, 0],
            int(lengths[0]),
            nmv,
            bool(brk[0]),
            status,
            info,
        )
    return LanczosResult(
        alpha,
        beta,
        basis,
        xp.matrix_transpose(resid),
        tuple(int(t) for t in lengths),
        nmv,
        tuple(bool(b) for b in brk),
        status,
        info,
    )


def _breakdown_tol(n, eps, anorm):
    """``beta`` below this is rounding noise: the Krylov space is invariant."""
    return 10.0 * math.sqrt(n) * eps * anorm


def _lanczos_columns(op, Q, m, reorth, keep, op_dtype, acc, xp, dev):
    """Lanczos for each column of ``Q`` (``(n, p)``, nonzero), advancing all columns together.

    The vectors are kept as ``(n, p)`` blocks, the layout in which ``A.matmat``
    returns them, so the recurrence runs on contiguous arrays; the stored
    basis is ``(p, m, n)`` (rows) for the batched Gram-Schmidt products.

    Returns ``(alpha (p, m'), beta (p, m'), basis (p, m', n) or None,
    residual (n, p), lengths, breakdown, num_matvecs, num_reorth)`` with
    ``m' = max(lengths)``; broken-down probes are zero-padded and stop
    spending products.
    """
    n, p = int(Q.shape[0]), int(Q.shape[1])
    eps = _eps(xp, op_dtype)
    Q = Q / xp.linalg.vector_norm(Q, axis=0)[None, :]
    store = keep or reorth != "none"
    basis = xp.zeros((p, m, n), dtype=acc, device=dev) if store else None
    q_prev = xp.zeros_like(Q)
    beta_prev = xp.zeros((p,), dtype=acc, device=dev)
    alphas, betas = [], []
    active = np.ones(p, dtype=bool)
    lengths = np.full(p, m, dtype=np.int64)
    brk = np.zeros(p, dtype=bool)
    anorm = np.zeros(p)
    alpha_hist = np.zeros((p, m))
    beta_hist = np.zeros((p, m))
    pro = _PartialReorth(p, m, n, eps) if reorth == "partial" else None
    nmv = 0
    nre = 0
    W = xp.zeros_like(Q)
    for j in range(m):
        if store:
            basis = _set(xp, basis, (slice(None), j, slice(None)), xp.matrix_transpose(Q))
        fused = None
        if reorth != "full" and bool(active.all()):
            fused = _product_alphas(op, Q, op_dtype, acc)
        if fused is None:
            W, n_used = _apply_active(op, Q, active, op_dtype, acc, xp, dev)
            alpha0 = None
        else:
            (W, alpha0), n_used = fused, p
        nmv += n_used
        if reorth == "full":
            _check_finite_product(xp, W, j)
            W, alpha = _lanczos_recurrence(xp, W, Q, q_prev, beta_prev, axis=0)
            W, h = _reorthogonalise_columns(xp, basis[:, : j + 1, :], W)
            alpha = alpha + h[:, j]
            nre += 1
            beta = xp.linalg.vector_norm(W, axis=0)
        else:
            W, alpha, beta = _lanczos_recurrence_norm(
                xp, W, Q, q_prev, beta_prev, axis=0, step=j, alpha=alpha0
            )
        a_h = np.asarray(B.to_numpy(alpha), dtype=np.float64)
        b_h = np.asarray(B.to_numpy(beta), dtype=np.float64)
        _check_finite_scalars(np.concatenate([a_h, b_h]), "a recurrence coefficient", j)
        if pro is not None and pro.update(j, a_h, b_h, alpha_hist, beta_hist, anorm):
            W, h = _reorthogonalise_columns(xp, basis[:, : j + 1, :], W)
            alpha = alpha + h[:, j]
            beta = xp.linalg.vector_norm(W, axis=0)
            a_h = np.asarray(B.to_numpy(alpha), dtype=np.float64)
            b_h = np.asarray(B.to_numpy(beta), dtype=np.float64)
            pro.reset(j)
            nre += 1
        alpha_hist[:, j] = a_h
        beta_hist[:, j] = b_h
        anorm = np.maximum(anorm, np.abs(a_h) + b_h + (beta_hist[:, j - 1] if j else 0.0))
        newly = active & (b_h <= _breakdown_tol(n, eps, anorm))
        if np.any(newly):
            lengths[newly] = j + 1
            brk[newly] = True
            active &= ~newly
            keep_mask = xp.asarray(active.astype(np.float64), dtype=acc, device=dev)
            beta = beta * keep_mask
            beta_hist[newly, j] = 0.0
            W = W * keep_mask[None, :]
        alphas.append(alpha)
        betas.append(beta)
        if not np.any(active):
            break
        # the old q_prev is no longer needed: the kernel writes the next block there
        q_prev, Q = Q, _normalise_columns(xp, W, beta, q_prev)
        beta_prev = beta
    width = len(alphas)
    alpha = xp.stack(alphas, axis=1)
    beta = xp.stack(betas, axis=1)
    if store:
        basis = basis[:, :width, :] if width < m else basis
        if not keep:
            basis = None
    # A vector that reached the full dimension n is an invariant subspace too.
    last = beta_hist[np.arange(p), np.minimum(lengths, m) - 1]
    brk = brk | ((lengths == n) & (last <= _breakdown_tol(n, eps, anorm)))
    return alpha, beta, basis, W, lengths, brk, nmv, nre


def _reorthogonalise_columns(xp, basis, W):
    """Gram-Schmidt (twice) of each column ``W[:, i]`` against the rows of ``basis[i]``."""
    Wt, h = _reorthogonalise(xp, basis, xp.matrix_transpose(W))
    return xp.matrix_transpose(Wt), h


def _apply_active(op, Q, active, op_dtype, acc, xp, dev):
    """``A`` applied to the active columns of ``Q`` (inactive ones give zeros and cost nothing)."""
    p = int(Q.shape[1])
    n_act = int(active.sum())
    if n_act == p:
        return _apply_columns(op, Q, op_dtype, acc, xp), p
    idx = np.flatnonzero(active)
    Qa = xp.take(Q, xp.asarray(idx, device=dev), axis=1)
    Wa = _apply_columns(op, Qa, op_dtype, acc, xp)
    # scatter back through a one-hot (n_act, p) matrix (no integer-array setitem in the standard)
    E = np.zeros((n_act, p))
    E[np.arange(n_act), idx] = 1.0
    return Wa @ _to_device(xp, dev, E, acc), n_act


def _product_alphas(op, Q, op_dtype, acc):
    """``(A Q, alpha)`` with the column dots ``alpha_j = <Q_j, (A Q)_j>`` from one pass, or ``None``.

    Through the operator's private hook ``_matmat_dot`` (:class:`~matfree.Sparse`
    on NumPy); ``None`` when there is none or it declines, or dtypes differ.
    """
    hook = getattr(op, "_matmat_dot", None)
    if hook is None or Q.dtype != op_dtype or op_dtype != acc:
        return None
    out = hook(Q)
    if out is NotImplemented:
        return None
    W, d = out
    return W, d.astype(W.dtype)


def _fused_lanczos(op, Z, m, op_dtype, acc, xp):
    """``_lanczos_columns(op, Z, m, "none", False, ...)``'s coefficients from one kernel, or ``None``.

    Through the operator's private hook ``_lanczos_coefficients``
    (:class:`~matfree.Sparse` on NumPy: every step of every column in one
    parallel kernel, the columns in tasks that wait for no other); ``None``
    when there is none or it declines, or dtypes differ.  Returns
    ``(alpha, beta, lengths, breakdown, num_matvecs)``, ``alpha`` and
    ``beta`` ``(p, m')`` with ``m' = max(lengths)``.
    """
    hook = getattr(op, "_lanczos_coefficients", None)
    if hook is None or Z.dtype != op_dtype or op_dtype != acc:
        return None
    out = hook(Z, m, _eps(xp, op_dtype))
    if out is NotImplemented:
        return None
    alpha, beta, lengths, brk, bad = out
    if (bad >= 0).any():  # the earliest non-finite step over the columns
        _check_finite_scalars([math.nan], "a recurrence coefficient", int(bad[bad >= 0].min()))
    width = int(lengths.max())
    return alpha[:, :width], beta[:, :width], lengths, brk, int(lengths.sum())


def _apply_columns(op, X, op_dtype, acc, xp):
    """``A X`` for a block of columns, cast to/from the product dtype."""
    if X.dtype != op_dtype:
        X = xp.astype(X, op_dtype)
    W = op.matvec(X[:, 0])[:, None] if X.shape[1] == 1 else op.matmat(X)
    return W if W.dtype == acc else xp.astype(W, acc)


class _PartialReorth:
    r"""Simon's :math:`\omega`-recurrence estimating :math:`q_{j+1}^\top q_k` (host, per probe).

    .. math::

        \beta_j \omega_{j+1,k} = \beta_k \omega_{j,k+1} + (\alpha_k - \alpha_j)\omega_{j,k}
        + \beta_{k-1}\omega_{j,k-1} - \beta_{j-1}\omega_{j-1,k} \pm \epsilon\,\|A\|\sqrt n,

    with :math:`\omega_{k,k} = 1`.  When :math:`\max_k |\omega_{j+1,k}| > \sqrt\epsilon`
    the new vector and the next one are reorthogonalised against all previous
    vectors.
    """

    def __init__(self, p, m, n, eps):
        self.cur = np.zeros((p, m + 1))  # omega_{j, .}
        self.prev = np.zeros((p, m + 1))  # omega_{j-1, .}
        self.cur[:, 0] = 1.0
        self.eps = eps
        self.noise_scale = eps * math.sqrt(n)
        self.threshold = math.sqrt(eps)
        self.pending = False

    def update(self, j, a_j, b_j, alpha_hist, beta_hist, anorm):
        """Advance to omega_{j+1,.}; return whether to reorthogonalise now."""
        b_safe = np.where(b_j > 0, b_j, 1.0)
        noise = self.noise_scale * np.maximum(anorm, np.abs(a_j) + b_j) / b_safe
        new = np.zeros_like(self.cur)
        if j > 0:
            k = np.arange(j)
            a_k = alpha_hist[:, :j]
            b_k = beta_hist[:, :j]
            b_km1 = np.concatenate([np.zeros((a_k.shape[0], 1)), beta_hist[:, : j - 1]], axis=1)
            w_km1 = np.concatenate([np.zeros((a_k.shape[0], 1)), self.cur[:, : j - 1]], axis=1)
            val = (
                b_k * self.cur[:, k + 1]
                + (a_k - a_j[:, None]) * self.cur[:, :j]
                + b_km1 * w_km1
                - (beta_hist[:, j - 1][:, None]) * self.prev[:, :j]
            ) / b_safe[:, None]
            val = val + np.where(val >= 0, 1.0, -1.0) * noise[:, None]
            new[:, :j] = val
        new[:, j] = noise
        new[:, j + 1] = 1.0
        self.prev, self.cur = self.cur, new
        lost = j > 0 and bool(np.max(np.abs(new[:, : j + 1])) > self.threshold)
        # Simon: reorthogonalise this vector and the next one (which inherits the loss)
        trigger = self.pending or lost
        self.pending = lost and not self.pending
        return trigger

    def reset(self, j):
        """After reorthogonalising q_{j+1}: its overlaps are back at rounding level."""
        self.cur[:, : j + 1] = self.noise_scale


# ======================================================================
# Block Lanczos
# ======================================================================


@_blas_owns_threads
def block_lanczos(A, V0, num_steps, *, reorth="full", return_basis=True, accumulate_dtype=None, rng=None):
    r"""Block Lanczos process from a block of starting vectors (one ``matmat`` per step).

    Parameters
    ----------
    A : LinearOperator, array or sparse matrix
        Symmetric ``n x n`` operator.
    V0 : array, shape (n, b)
        Starting block (full column rank is not required: dependent columns
        are replaced by random directions).
    num_steps : int
        Number of block steps ``m``; the Krylov space has dimension ``m b``.
        Clipped to ``ceil(n / b)``.
    reorth : {"full", "none"}
        ``"full"``: each new block is orthogonalised against all previous
        blocks by block classical Gram-Schmidt, twice (BLAS-3).
    return_basis : bool
        Keep and return ``[Q_0, ..., Q_{m-1}]``.
    accumulate_dtype : dtype or {"float32", "float64"}, optional
        Dtype of the basis and the recurrence (see :func:`lanczos`).
    rng : None, int or Generator
        Source of the random directions injected when a residual block loses
        rank (SPEC 7).

    Returns
    -------
    BlockLanczosResult
        Diagonal blocks :math:`A_j`, off-diagonal blocks :math:`B_j`,
        :math:`R_0`, the basis and the final residual block.

    Raises
    ------
    ValueError
        Non-square or non-symmetric ``A``, shape mismatch, a zero block,
        ``reorth="partial"`` (not available for blocks).
    matfree.NonFiniteError
        The operator returned NaN or Inf.

    Notes
    -----
    With :math:`V_0 = Q_0 R_0` and :math:`Q_{-1} B_{-1}^\top = 0`, step
    :math:`j` computes

    .. math::

        A_j = Q_j^\top A Q_j,\quad
        W = A Q_j - Q_j A_j - Q_{j-1} B_{j-1}^\top,\quad
        W = Q_{j+1} B_j

    (Golub & Van Loan §10.3.6).  ``W = Q_{j+1} B_j`` is a thin QR followed by
    an SVD of the small ``R`` factor, so that a residual block of deficient
    rank is detected: its null directions get zero rows in :math:`B_j` and
    are replaced by random vectors orthogonal to the basis, which keeps the
    block size and the relation exact.

    Backends: NumPy, PyTorch, CuPy, array-api-strict.

    References
    ----------
    .. [1] G. H. Golub, R. Underwood, "The block Lanczos method for computing
       eigenvalues", in *Mathematical Software III*, Academic Press, 1977,
       361-377.
    .. [2] G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., §10.3.6.

    Examples
    --------
    >>> import numpy as np, matfree
    >>> A = np.diag(np.arange(1.0, 9.0))
    >>> res = matfree.block_lanczos(A, np.eye(8)[:, :2] + 1.0, num_steps=4)
    >>> np.round(np.linalg.eigvalsh(res.tridiagonal()), 8)
    array([1., 2., 3., 4., 5., 6., 7., 8.])
    """
    op = _symmetric_operator(A)
    n = op.shape[0]
    if reorth not in ("full", "none"):
        raise ValueError(
            f"reorth={reorth!r} is not available for block Lanczos; expected 'full' or 'none'"
        )
    if not hasattr(V0, "shape") or getattr(V0, "ndim", 0) != 2:
        raise ValueError(
            f"V0 must be a 2-D block of shape (n, b), got {getattr(V0, 'shape', type(V0).__name__)}"
        )
    if V0.shape[0] != n:
        raise ValueError(
            f"shape mismatch: V0 has shape {tuple(V0.shape)} but A has shape {tuple(op.shape)}"
        )
    B.check_float_dtype(V0.dtype, "V0")
    b = int(V0.shape[1])
    if b < 1 or b > n:
        raise ValueError(f"V0 has {b} columns; expected 1 <= b <= n={n}")
    num_steps = _check_int(num_steps, "num_steps", 1)
    requested = num_steps
    max_steps = -(-n // b)
    clipped = num_steps > max_steps
    m = min(num_steps, max_steps)
    xp, dev = _namespace_of(op, V0)
    op_dtype, acc = _working_dtypes(xp, op, V0.dtype, accumulate_dtype)
    eps = _eps(xp, op_dtype)
    rs = B.random_state(rng, xp, dev)
    V = xp.astype(V0, acc)
    v_norm = float(xp.linalg.vector_norm(V))
    if not math.isfinite(v_norm):
        raise ValueError("V0 contains NaN or Inf; expected a finite starting block")
    if v_norm == 0.0:
        raise ValueError("V0 is zero; expected a nonzero starting block")
    Q0, R0 = xp.linalg.qr(V)
    # a rank-deficient start block gets random directions for its null space
    Qj, R0, dropped0 = _orthonormal_block(xp, Q0, R0, None, rs, acc, dev, n, eps, v_norm)
    blocks = []  # the orthonormal (n, b) blocks; kept for reorthogonalisation and injections
    As, Bs = [], []
    deflated = [dropped0]
    anorm = 0.0
    nmv = 0
    Q_prev = B_prev = W = None
    brk = False
    for j in range(m):
        blocks.append(Qj)
        X = Qj if Qj.dtype == op_dtype else xp.astype(Qj, op_dtype)
        W = op.matmat(X)
        W = W if W.dtype == acc else xp.astype(W, acc)
        nmv += b
        _check_finite_product(xp, W, j)
        Aj = xp.matrix_transpose(Qj) @ W
        Aj = (Aj + xp.matrix_transpose(Aj)) / 2.0
        W = W - Qj @ Aj
        if Q_prev is not None:
            W = W - Q_prev @ xp.matrix_transpose(B_prev)
        Qall = xp.concat(blocks, axis=1) if len(blocks) > 1 else Qj
        if reorth == "full":
            W, C = _reorthogonalise_block(xp, Qall, W)
            Cj = C[-b:, :]  # the part along Q_j corrects A_j
            Aj = Aj + (Cj + xp.matrix_transpose(Cj)) / 2.0
        nrm = float(xp.linalg.vector_norm(W))
        a_max = float(xp.max(xp.abs(Aj)))
        _check_finite_scalars(np.array([nrm, a_max]), "a block coefficient", j)
        anorm = max(anorm, a_max * b + nrm)
        As.append(Aj)
        if (j + 1) * b >= n or nrm <= _breakdown_tol(n, eps, anorm):
            brk = True
            Bs.append(xp.zeros((b, b), dtype=acc, device=dev))
            W = xp.zeros_like(W)
            break
        Qw, Rw = xp.linalg.qr(W)
        Qn, Bj, dropped = _orthonormal_block(xp, Qw, Rw, Qall, rs, acc, dev, n, eps, anorm)
        deflated.append(dropped)
        Bs.append(Bj)
        Q_prev, B_prev, Qj = Qj, Bj, Qn
    steps = len(As)
    D = xp.stack(As, axis=0)
    Bk = xp.stack(Bs, axis=0)
    basis = (xp.concat(blocks, axis=1) if len(blocks) > 1 else blocks[0]) if return_basis else None
    residual = W if brk else Qj @ Bs[-1]
    stopped = brk and steps < min(requested, max_steps)
    status = "breakdown" if stopped else ("clipped" if clipped else "completed")
    return BlockLanczosResult(
        D,
        Bk,
        R0,
        basis,
        residual,
        steps,
        nmv,
        brk,
        status,
        {
            "num_steps_requested": requested,
            "clipped": clipped,
            "reorth": reorth,
            "deflated": deflated,
            "accumulate_dtype": B.dtype_name(acc),
        },
    )


def _orthonormal_block(xp, Qw, Rw, basis, rs, acc, dev, n, eps, anorm):
    """From ``W = Qw Rw`` build an orthonormal block ``Q`` and ``Bj`` with ``W = Q Bj``.

    Directions of ``W`` with singular value at rounding level are dropped:
    their rows of ``Bj`` are zero and their columns of ``Q`` are random
    vectors orthogonalised against ``basis`` and the kept columns.
    Returns ``(Q, Bj, number_dropped)``.
    """
    b = int(Rw.shape[1])
    U, s, Vt = _small_dense_on_host("svd", Rw)
    tol = _breakdown_tol(n, eps, max(anorm, float(s[0]) if s.size else 0.0))
    keep = int(np.sum(s > tol))
    Bj = np.diag(s) @ Vt
    Bj[keep:, :] = 0.0
    Q = Qw @ _to_device(xp, dev, U, acc)
    if keep < b:
        Z = rs.normal((n, b - keep), acc)
        parts = [Q[:, :keep]] if keep else []
        if basis is not None:
            parts.insert(0, basis)
        Prev = xp.concat(parts, axis=1) if parts else None
        for _ in range(2):
            if Prev is not None:
                Z = Z - Prev @ (xp.matrix_transpose(Prev) @ Z)
            Z, _ = xp.linalg.qr(Z)
        Q = xp.concat([Q[:, :keep], Z], axis=1) if keep else Z
    return Q, _to_device(xp, dev, Bj, acc), b - keep


# ======================================================================
# Thick-restart Lanczos eigensolver
# ======================================================================


def _wanted_order(theta, which):
    """Indices of the Ritz values ``theta`` (ascending, host) from most to least wanted."""
    m = theta.shape[0]
    if which == "LA":
        return np.arange(m)[::-1]
    if which == "SA":
        return np.arange(m)
    if which == "LM":
        return np.argsort(-np.abs(theta), kind="stable")
    # "BE": alternate between the top and the bottom, starting at the top
    order = np.empty(m, dtype=np.int64)
    lo, hi = 0, m - 1
    for i in range(m):
        if i % 2 == 0:
            order[i] = hi
            hi -= 1
        else:
            order[i] = lo
            lo += 1
    return order


def _restart_size(k, m, num_converged, block_size=1):
    """Number ``l`` of Ritz vectors kept at a thick restart.

    The ``k`` wanted ones plus one more for every wanted pair that has
    already converged (at most ``m - k - 2``, so that a cycle takes at least
    two new steps).  This is ARPACK's adjustment of the number of kept
    values, ``nev + min(nconv, ...)`` (Lehoucq & Sorensen 1996), transplanted
    to the thick restart: converged pairs stay in the basis as a deflation
    while the unconverged wanted ones keep the room they had.  Measured over
    a set of test spectra it needs ~10% fewer products than ARPACK's own
    rule and than fixed fractions or the gap-ratio objective of Yamazaki et al.
    """
    return k + min(num_converged, max(m - k - 2 * block_size, 0))


@_blas_owns_threads
def eigsh(
    A,
    k=6,
    which=None,
    *,
    tol=1e-8,
    maxiter=None,
    v0=None,
    rng=None,
    sigma=None,
    ncv=None,
    return_eigenvectors=True,
    check_symmetric=False,
    accumulate_dtype=None,
    block_size=1,
    minres_rtol=None,
    minres_maxiter=None,
    check_multiplicity=True,
    progress=False,
):
    r"""A few eigenpairs of a symmetric operator by thick-restart Lanczos.

    Parameters
    ----------
    A : LinearOperator, array or sparse matrix
        Symmetric ``n x n`` operator (declared symmetric; dense arrays are
        checked).
    k : int
        Number of eigenpairs, ``1 <= k < n``.
    which : {"LA", "SA", "LM", "BE"}, optional
        Largest algebraic, smallest algebraic, largest magnitude, or both
        ends (``k // 2`` from the bottom, the rest from the top).  Default
        ``"LA"``; with ``sigma`` it refers to the transformed eigenvalues
        :math:`1/(\lambda - \sigma)` and defaults to ``"LM"`` (the eigenvalues
        nearest ``sigma``; ``"LA"``/``"SA"`` give those just above/below it).
    tol : float
        Relative residual tolerance: a pair :math:`(\theta, x)` is converged
        when :math:`\|A x - \theta x\| \le \mathrm{tol}\cdot|\theta|`
        (with an absolute floor of :math:`10\,\epsilon\,\|A\|` for
        eigenvalues at rounding level, and ``tol`` raised to the machine
        epsilon of the working dtype).
    maxiter : int, optional
        Maximum number of restarts (default ``10 n``, as ARPACK).
    v0 : array, shape (n,), optional
        Starting vector (default: Gaussian from ``rng``).
    rng : None, int or Generator
        Random source (SPEC 7) for ``v0`` and for the fresh directions
        injected when the Krylov space becomes invariant early.
    sigma : float, optional
        Shift-invert: run Lanczos on :math:`(A - \sigma I)^{-1}`, applied by
        inner MINRES solves on ``A`` (:func:`matfree.minres`), which finds the
        eigenvalues nearest ``sigma`` with products by ``A`` only.
    ncv : int, optional
        Size of the Lanczos basis; memory is ``O(n ncv)``.  Default
        ``min(n, max(2 k + 1, 40))`` (ARPACK uses 20; 40 needs far fewer
        products on clustered spectra) for ``block_size=1``, with
        ``k < ncv <= n``; for blocks ``b`` times that, with
        ``k + 2 b <= ncv <= n - b``.
    return_eigenvectors : bool
        Also return the Ritz vectors.
    check_symmetric : bool
        Run one random test of :math:`u^\top A v = v^\top A u` first
        (two products) and raise if it fails.
    accumulate_dtype : dtype or {"float32", "float64"}, optional
        Dtype of the Lanczos basis and recurrence (see :func:`lanczos`).
    block_size : int
        ``b = 1``: single-vector Lanczos (like ARPACK).  ``b > 1``: block
        thick-restart Lanczos, one ``matmat`` with ``b`` columns per step; it
        finds up to ``b`` copies of a multiple eigenvalue, which a single
        Krylov vector sees only through rounding errors (see Notes).
    minres_rtol, minres_maxiter : float, int, optional
        Inner MINRES settings with ``sigma`` (default ``rtol = tol / 10``
        floored at ``10 eps``, ``maxiter = 10 n``).
    check_multiplicity : bool
        After the ``k`` pairs have converged, lock them and continue from a
        fresh random vector in their orthogonal complement until its best
        pair has converged too, so that further copies of a multiple
        eigenvalue are found (see Notes).  Costs the products of converging
        one more eigenvalue (``info["multiplicity_check_matvecs"]``).  With
        ``False`` the result may silently lack copies of a multiple
        eigenvalue, as ARPACK's does.
    progress : bool
        Show a tqdm progress bar of the products, with the number of
        converged pairs and the largest relative residual (updated at each
        restart).  Needs tqdm (``ImportError`` otherwise); ``False`` does
        not import it.

    Returns
    -------
    EigResult
        ``eigenvalues`` (ascending, shape ``(k,)``), ``eigenvectors``
        (``(n, k)`` or ``None``), ``residual_norms`` (the Lanczos residual
        estimates :math:`|\beta_m y_{m,i}|`, equal to
        :math:`\|A x_i - \theta_i x_i\|` up to rounding because the basis is
        kept orthonormal; with ``sigma`` the residuals for ``A`` are computed
        explicitly), ``num_matvecs`` (all products with ``A``, including those
        inside MINRES), ``converged`` and ``status`` (``"converged"`` or
        ``"maxiter"``).  ``info`` holds ``num_restarts``, ``ncv``,
        ``num_converged``, ``which``, ``multiplicity_check`` (``"done"``,
        ``"off"``, or ``"skipped"`` when ``ncv`` left no room for it),
        ``num_multiplicity_checks``, ``multiplicity_check_matvecs`` and, with
        ``sigma``, ``num_solves`` and ``inner_failures``.

    Raises
    ------
    ValueError
        Non-square or non-symmetric ``A``, ``k >= n``, bad ``which``, ``tol``,
        ``ncv``, a zero ``v0``, or a failed symmetry check.
    TypeError
        Non-integer ``k``/``ncv``/``maxiter``.
    matfree.NonFiniteError
        The operator returned NaN or Inf.

    Notes
    -----
    After ``ncv`` Lanczos steps, :math:`A V = V T + \beta v_{m+1} e_m^\top`,
    the Ritz pairs :math:`T y_i = \theta_i y_i` have residuals
    :math:`\|A V y_i - \theta_i V y_i\| = |\beta\, e_m^\top y_i|`.  The thick
    restart (Wu & Simon) keeps ``l`` Ritz vectors :math:`V y_i` and the
    residual direction :math:`v_{m+1}`; the projected matrix becomes

    .. math::

        T^+ = \begin{pmatrix} \operatorname{diag}(\theta_1..\theta_l) & s \\
              s^\top & \alpha_{l+1} \end{pmatrix},\qquad s_i = \beta\, e_m^\top y_i,

    and the Lanczos recurrence continues from :math:`v_{m+1}`.  It is
    mathematically equivalent to ARPACK's implicit restart with exact shifts
    but needs no QR sweeps.  ``l`` is chosen adaptively (Yamazaki et al.);
    every new vector is reorthogonalised against the whole basis by block
    Gram-Schmidt (second pass when the DGKS criterion asks for it), and the
    Ritz values are checked after every step, so the solver stops as soon as
    all ``k`` wanted pairs have converged.  Pairs converged far below the
    tolerance are locked (kept, no longer rotated at restarts).

    A starting vector has a single component in each eigenspace, so a
    single-vector Krylov method (ARPACK, ``block_size=1``) finds the copies of
    a multiple eigenvalue only through rounding errors and may return fewer
    copies than exist, with every residual small.  The multiplicity check
    therefore restarts, once the wanted pairs :math:`X` have converged, from
    a random :math:`r \perp X` and continues in
    :math:`\mathcal K((I - XX^\top)A, r)`, which contains a further copy of
    each multiple eigenvalue, until its best Ritz pair has converged; a
    wanted value found there displaces a locked pair, and the check is then
    repeated.  ``block_size=b`` sees up to ``b`` copies in one space.

    Backends: NumPy, PyTorch, CuPy, array-api-strict.

    References
    ----------
    .. [1] K. Wu, H. Simon, "Thick-restart Lanczos method for large symmetric
       eigenvalue problems", SIAM J. Matrix Anal. Appl. 22 (2000), 602-616.
       :doi:`10.1137/S0895479898334605`
    .. [2] I. Yamazaki, Z. Bai, H. Simon, L.-W. Wang, K. Wu, "Adaptive projection
       subspace dimension for the thick-restart Lanczos method", ACM Trans.
       Math. Softw. 37 (2010), 27. :doi:`10.1145/1824801.1824805`
    .. [3] G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., §10.5.
    .. [4] C. C. Paige, M. A. Saunders, "Solution of sparse indefinite systems of
       linear equations", SIAM J. Numer. Anal. 12 (1975), 617-629 (MINRES).

    Examples
    --------
    >>> import numpy as np, matfree
    >>> A = np.diag(np.arange(1.0, 101.0))
    >>> res = matfree.eigsh(A, k=3, which="LA", rng=0)
    >>> res.eigenvalues
    array([ 98.,  99., 100.])
    >>> bool(res.converged)
    True
    >>> matfree.eigsh(A, k=2, which="SA", rng=0).eigenvalues
    array([1., 2.])
    """
    op = _symmetric_operator(A)
    n = op.shape[0]
    k = _check_int(k, "k", 1, n - 1, hint=" (k >= n: use a dense eigensolver such as numpy.linalg.eigh)")
    if which is None:
        which = "LM" if sigma is not None else "LA"
    if which not in _WHICH:
        raise ValueError(f"which={which!r} is not known; expected one of 'LA', 'SA', 'LM', 'BE'")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (tol >= 0) or not math.isfinite(tol):
        raise ValueError(f"tol={tol!r} is invalid; expected a finite float >= 0")
    b = _check_int(block_size, "block_size", 1, n)
    # a block residual must fit beside the basis: ncv <= n - b for blocks
    cap = n if b == 1 else n - b
    if ncv is None:
        # blocks: b times the single-vector size, so that a cycle reaches the same
        # polynomial degree (measured: far fewer products than a tight basis)
        ncv = min(cap, max(2 * k + 1, _NCV_MIN) * b)
    low = k + 1 if b == 1 else k + 2 * b
    if cap < low:
        raise ValueError(
            f"n={n} is too small for k={k} and block_size={b} (need n >= k + 3 * block_size); "
            "use a smaller block_size or a dense eigensolver such as numpy.linalg.eigh"
        )
    ncv = _check_int(ncv, "ncv", low, cap)
    if maxiter is None:
        maxiter = 10 * n
    maxiter = _check_int(maxiter, "maxiter", 1)
    xp, dev = _namespace_of(op, v0)
    op_dtype, acc = _working_dtypes(xp, op, None if v0 is None else v0.dtype, accumulate_dtype)
    rs = B.random_state(rng, xp, dev)
    extra_matvecs = 0
    if check_symmetric:
        before = op.num_matvecs
        ok = op.check_symmetric(rng=rs)
        extra_matvecs += op.num_matvecs - before
        if not ok:
            raise ValueError(
                "A failed the symmetry check u^T (A v) == v^T (A u); this method needs "
                "a symmetric operator"
            )
    Q0 = _starting_block(xp, v0, n, b, rs, acc)
    if sigma is None:
        with _progress.progress_bar(progress, None, f"eigsh k={k} {which}") as bar:
            res = _trlan(
                op, Q0, k, which, tol, maxiter, ncv, rs, op_dtype, acc, xp, dev, return_eigenvectors,
                check=bool(check_multiplicity), bar=bar,
            )
        theta, X, resid, nmv, converged, info = res
        info["which"] = which
        return EigResult(
            _to_device(xp, dev, theta, acc),
            X,
            _to_device(xp, dev, resid, acc),
            nmv + extra_matvecs,
            converged,
            "converged" if converged else "maxiter",
            info,
        )
    with _progress.progress_bar(progress, None, f"eigsh k={k} sigma={sigma}", unit="solve") as bar:
        return _eigsh_shift_invert(
            op, Q0, k, which, tol, maxiter, ncv, rs, op_dtype, acc, xp, dev, sigma,
            minres_rtol, minres_maxiter, return_eigenvectors, extra_matvecs,
            bool(check_multiplicity), bar,
        )


def _starting_block(xp, v0, n, b, rs, acc):
    """The ``(b, n)`` block of starting rows from ``v0`` (vector or ``(n, b)`` block) and ``rs``."""
    if v0 is None:
        return rs.normal((b, n), acc)
    if not hasattr(v0, "shape") or v0.ndim not in (1, 2) or v0.shape[0] != n or (
        v0.ndim == 2 and v0.shape[1] != b
    ):
        allowed = f"({n},)" + ("" if b == 1 else f" or ({n}, {b})")
        raise ValueError(
            f"v0 must have shape {allowed}, got {getattr(v0, 'shape', type(v0).__name__)}"
        )
    B.check_float_dtype(v0.dtype, "v0")
    if B.namespace(v0) is not xp:
        raise TypeError("v0 is an array of another library than the operator")
    Q0 = xp.astype(v0[None, :] if v0.ndim == 1 else xp.matrix_transpose(v0), acc)
    nrm = float(xp.linalg.vector_norm(Q0))
    if not math.isfinite(nrm):
        raise ValueError("v0 contains NaN or Inf; expected a finite starting vector")
    if nrm == 0.0:
        raise ValueError("v0 is the zero vector; expected a nonzero starting vector")
    if Q0.shape[0] < b:
        Q0 = xp.concat([Q0, rs.normal((b - int(Q0.shape[0]), n), acc)], axis=0)
    return Q0


def _trlan(
    op, Q0, k, which, tol, maxiter, ncv, rs, op_dtype, acc, xp, dev, want_vectors, *,
    apply=None, check=False, bar=None,
):
    """(Block) thick-restart Lanczos with locking: host control, device vectors.

    ``Q0`` is a ``(b, n)`` block of starting rows (``b = 1``: single-vector
    Lanczos with the DGKS-conditional second Gram-Schmidt pass).  Layout of
    the basis ``V`` (rows): ``[0, c)`` locked converged Ritz vectors (decoupled),
    ``[c, l)`` kept Ritz vectors (coupled to the first new block by the
    arrowhead), then Lanczos blocks; the current block occupies ``[s, s + b)``.
    ``apply(Q)`` returns ``(A Q^T)^T`` for a block of rows.

    With ``check`` the run does not stop when the ``k`` wanted pairs have
    converged: it locks them and continues from a fresh random block in their
    orthogonal complement until the best pair(s) there are resolved (the
    multiplicity check of :func:`eigsh`, see :func:`_check_targets`); if a
    wanted value turns up, the check is repeated.  ``bar`` is a progress bar
    from :func:`matfree._progress.progress_bar`.

    Returns ``(theta (k,) ascending host, X (n, k) device or None, residual
    estimates (k,) host, num_products, converged, info)``.
    """
    n = op.shape[0]
    b = int(Q0.shape[0])
    m = ncv
    eps = _eps(xp, op_dtype)
    tol = max(float(tol), _eps(xp, acc))
    if apply is None:

        def apply(Q):
            return _apply_rows(op, Q, op_dtype, acc, xp)

    cap = n if b == 1 else n - b  # largest basis (a block residual must fit beside it)
    V = xp.zeros((m, n), dtype=acc, device=dev)
    T = np.zeros((m, m))
    Q = _orthonormal_rows(xp, Q0, None, rs, acc, dev, n, eps)
    V = _set(xp, V, (slice(0, b), slice(None)), Q)
    c = 0  # number of locked pairs
    locked_theta = np.zeros(0)
    locked_res = np.zeros(0)
    s = l = 0  # start of the current block; end of the kept (arrowhead) region
    Q_prev = B_prev = None
    nmv = restarts = n_passes = 0
    anorm = 0.0
    converged = False
    checking = check_skipped = False  # in a multiplicity check; a check found no room
    checked = []  # indices (into theta) of the pairs locked at the start of the check
    check_starts = []  # products spent before each check
    bar = _progress.progress_bar(False) if bar is None else bar
    nmv_shown = 0
    while True:
        W = apply(Q)
        nmv += b
        _check_finite_product(xp, W, nmv - b)
        # block three-term recurrence: W <- W - A_j Q - B_{j-1} Q_prev (rows)
        if b == 1:
            if Q_prev is not None:
                W, a = _lanczos_recurrence(xp, W, Q, Q_prev, _to_device(xp, dev, B_prev[0], acc))
                Aj_h = np.array([[float(a[0])]])
            else:  # first block of a cycle: the arrowhead goes with the Gram-Schmidt pass
                Aj_h = np.array([[float(_kernels.inner(xp, Q[0, :], W[0, :]))]])
                W = W - float(Aj_h[0, 0]) * Q
        else:
            Aj = Q @ xp.matrix_transpose(W)
            Aj = (Aj + xp.matrix_transpose(Aj)) / 2.0
            W = W - Aj @ Q
            if Q_prev is not None:
                W = W - _to_device(xp, dev, B_prev, acc) @ Q_prev
            Aj_h = np.asarray(B.to_numpy(Aj), dtype=np.float64)
        # full reorthogonalisation against the whole basis (the arrowhead part
        # after a restart is removed here too)
        Vs = V[: s + b, :]
        if b == 1:
            norm_w = _norm(xp, W[0, :])
            _check_finite_scalars(np.array([Aj_h[0, 0], norm_w]), "a recurrence coefficient", nmv)
            w, h, beta, passes = _reorthogonalise_dgks(xp, Vs, W[0, :], norm_w)
            n_passes += passes
            Aj_h = Aj_h + float(h[s])
            W = w[None, :]
            Bj = np.array([[beta]])
            sing = np.array([beta])
        else:
            W, C, passes = _reorthogonalise_rows_dgks(xp, Vs, W)
            n_passes += passes
            row_norms = np.asarray(B.to_numpy(xp.linalg.vector_norm(W, axis=-1)), dtype=np.float64)
            Cj = np.asarray(B.to_numpy(C[:, s : s + b]), dtype=np.float64)
            Aj_h = Aj_h + (Cj + Cj.T) / 2.0
            Qw, Rw = xp.linalg.qr(xp.matrix_transpose(W))
            U, sing, Vt = _small_dense_on_host("svd", Rw)
            _check_finite_scalars(np.concatenate([Aj_h.ravel(), sing]), "a block coefficient", nmv)
            Bj = np.diag(sing) @ Vt  # W^T = (Qw U) Bj
        T[s : s + b, s : s + b] = Aj_h
        # ||A|| from below (Rayleigh quotients, residual norms, Ritz values): a
        # residual direction at eps ||A|| is rounding noise; dropping it changes the
        # relation by less than the convergence floor 10 eps ||A|| below
        anorm = max(anorm, float(np.abs(Aj_h).max()), float(sing.max(initial=0.0)))
        dead = sing <= eps * anorm
        Bj[dead, :] = 0.0
        # Ritz pairs of the active block and the locked ones; stop once k converge
        theta_a, Y = _small_dense_on_host("eigh", T[c : s + b, c : s + b])
        res_a = np.linalg.norm(Bj @ Y[-b:, :], axis=0)
        theta = np.concatenate([locked_theta, theta_a])
        res = np.concatenate([locked_res, res_a])
        srt = np.argsort(theta, kind="stable")
        order = srt[_wanted_order(theta[srt], which)]
        wanted = order[:k]
        anorm = max(anorm, float(np.max(np.abs(theta))))
        thr = np.maximum(tol * np.abs(theta), 10.0 * eps * anorm)
        ok = res <= thr
        # a multiplicity check also waits for the best pair(s) of the complement
        targets = _check_targets(theta, c, order, k, which) if checking else wanted
        if theta.shape[0] >= k and bool(np.all(ok[targets])):
            if check and (not checking or _check_found_new(theta, thr, wanted, checked, b)):
                b_chk = max(b, _CHECK_BLOCK)
                if c + int(np.sum(wanted >= c)) <= n - 3 * b_chk - 1 and s + b < n:
                    # ---- multiplicity check: lock the k wanted pairs and restart from a
                    # fresh random block orthogonal to them (see _check_targets)
                    V, c, locked_theta, locked_res, checked = _lock_pairs(
                        xp, V, Y, c, s, b, wanted, theta_a, res_a, locked_theta, locked_res, dev, acc
                    )
                    # the complement gets a basis of its own size (the locked vectors
                    # would otherwise crowd it; a small window converges slowly)
                    b = b_chk
                    cap = n if b == 1 else n - b
                    m_new = min(c + max(ncv - k, _CHECK_NCV * b), cap)
                    if m_new > m:
                        # the old basis goes before the new one is made (peak: c + m_new rows)
                        locked_rows = xp.asarray(V[:c, :], copy=True)
                        V = Q = Q_prev = None
                        V = xp.zeros((m_new, n), dtype=acc, device=dev)
                        V = _set(xp, V, (slice(0, c), slice(None)), locked_rows)
                        del locked_rows
                        T = np.zeros((m_new, m_new))
                        m = m_new
                    checking = True
                    check_starts.append(nmv)
                    T[:] = 0.0
                    T[np.arange(c), np.arange(c)] = locked_theta
                    s = l = c
                    Q_prev = B_prev = None
                    Q = _fresh_rows(xp, rs, V[:c, :], b, n, acc)
                    V = _set(xp, V, (slice(s, s + b), slice(None)), Q)
                    bar.update(nmv - nmv_shown, converged=f"{k}/{k}", check=len(check_starts))
                    nmv_shown = nmv
                    continue
                check_skipped = True
            converged = True
            break
        if s + b >= n:  # the basis spans the whole space: everything is exact
            converged = True
            break
        # the next block: orthonormal rows with Bj^T as coupling; dead directions
        # are replaced by fresh random ones orthogonal to the basis (coupling 0)
        if b == 1:
            if dead[0]:
                Q_next = _fresh_direction(xp, rs, Vs, n, acc)[None, :]
            else:
                Q_next = W / beta
        else:
            Qn = xp.matrix_transpose(Qw @ _to_device(xp, dev, U, acc))
            alive = ~dead
            if np.any(alive) and float(sing[alive].min()) < _DGKS * float(np.max(row_norms)):
                # nearly dependent residual rows: the QR amplified their rounding
                # errors along the basis by max|row| / sigma_min, so the new block
                # is orthogonalised once more (and Bj follows the rotation)
                Qn, R2 = _reorthogonalise_block_again(xp, Qn, Vs)
                n_passes += 1
                Bj = R2 @ Bj
            Q_next = _replace_dead_rows(xp, Qn, dead, Vs, rs, acc, n)
        if s + 2 * b <= m:
            T[s + b : s + 2 * b, s : s + b] = Bj
            T[s : s + b, s + b : s + 2 * b] = Bj.T
            Q_prev, B_prev = Q, Bj
            Q = Q_next
            s += b
            V = _set(xp, V, (slice(s, s + b), slice(None)), Q)
            continue
        # ---- thick restart
        if restarts >= maxiter:
            break
        restarts += 1
        nconv = int(np.sum(ok[targets]))
        rel = res[wanted] / np.maximum(np.abs(theta[wanted]), eps * anorm)
        bar.update(nmv - nmv_shown, converged=f"{int(np.sum(ok[wanted]))}/{k}",
                   max_res=float(np.max(rel)), **({"check": len(check_starts)} if checking else {}))
        nmv_shown = nmv
        l_total = _restart_size(targets.size, m, nconv, b)
        # Dropping a coupling perturbs T by its size, so only pairs whose residual
        # is far below the tolerance of every wanted pair are locked.
        # (only wanted pairs are locked: the extra pair of a multiplicity check stays
        # active, else the next one would have to converge in its place)
        lock_thr = _LOCK_FACTOR * float(np.min(thr[wanted]))
        act_wanted = wanted[wanted >= c] - c
        new_lock = [i for i in act_wanted if res[c + i] <= lock_thr][: max(m - 2 * b - 1 - c, 0)]
        new_lock = np.asarray(new_lock, dtype=np.int64)
        locked_set = set(new_lock.tolist())
        act_order = order[order >= c] - c
        rest = [i for i in act_order if i not in locked_set]
        n_keep = min(max(l_total - c - new_lock.size, 1), m - 2 * b - c - new_lock.size)
        n_keep = max(n_keep, 1)
        keep = np.concatenate([new_lock, np.asarray(rest[:n_keep], dtype=np.int64)])
        Yk = _to_device(xp, dev, Y[:, keep], acc)
        V = _set(xp, V, (slice(c, c + keep.size), slice(None)), xp.matrix_transpose(Yk) @ V[c : s + b, :])
        locked_theta = np.concatenate([locked_theta, theta_a[new_lock]])
        locked_res = np.concatenate([locked_res, res_a[new_lock]])
        c += new_lock.size
        l = c + n_keep
        kept = keep[new_lock.size :]
        T[:] = 0.0
        T[np.arange(c), np.arange(c)] = locked_theta
        T[np.arange(c, l), np.arange(c, l)] = theta_a[kept]
        S = Bj @ Y[-b:, kept]  # coupling of the residual block to the kept Ritz vectors
        T[l : l + b, c:l] = S
        T[c:l, l : l + b] = S.T
        Q_prev = B_prev = None
        Q = Q_next
        s = l
        V = _set(xp, V, (slice(s, s + b), slice(None)), Q)
    # ---- final Ritz pairs: locked vectors are rows of V, active ones V[c:s+b]^T Y
    sel = wanted[np.argsort(theta[wanted], kind="stable")]  # ascending eigenvalues
    X = None
    if want_vectors:
        act = np.asarray([int(i) - c for i in sel if i >= c], dtype=np.int64)
        X_act = None
        if act.size:
            X_act = xp.matrix_transpose(V[c : s + b, :]) @ _to_device(xp, dev, Y[:, act], acc)
        parts, a_pos = [], 0
        for i in sel:
            if i < c:
                parts.append(xp.matrix_transpose(V[int(i) : int(i) + 1, :]))
            else:
                parts.append(X_act[:, a_pos : a_pos + 1])
                a_pos += 1
        X = xp.concat(parts, axis=1)
    info = {
        "num_restarts": restarts,
        "ncv": ncv,
        "block_size": b,
        "num_converged": int(np.sum(ok[wanted])),
        "num_locked": c,
        "num_gram_schmidt_passes": n_passes,
        "multiplicity_check": "skipped" if check_skipped else ("done" if check_starts else "off"),
        "num_multiplicity_checks": len(check_starts),
        "multiplicity_check_matvecs": nmv - check_starts[0] if check_starts else 0,
        "multiplicity_check_matvecs_each": np.diff(check_starts + [nmv]).tolist() if check_starts else [],
    }
    bar.update(nmv - nmv_shown, converged=f"{int(np.sum(ok[wanted]))}/{k}")
    return theta[sel], X, res[sel], nmv, converged, info


def _check_targets(theta, c, order, k, which):
    r"""Indices (into the Ritz values) of the pairs a multiplicity check waits for.

    After the ``k`` wanted pairs have converged they are locked and the
    iteration continues from a fresh random vector ``r`` orthogonal to them.
    A single Krylov space ``K(A, v0)`` contains only the component of ``v0``
    in each eigenspace, so a further copy of a multiple eigenvalue is missing
    from it in exact arithmetic (and appears only through rounding errors);
    in the complement, ``K((I - X X^T) A, r)`` sees it.  The check runs
    until the best Ritz pair of the complement (one per end for ``"BE"``) has
    converged to the tolerance too: Ritz values approach the extreme
    eigenvalues from the inside, and a converged one is the usual Krylov
    evidence that nothing lies beyond it.  A wanted value found there
    displaces a locked one and must converge as well.  ``theta`` are the
    Ritz values (``c`` locked ones first, then those of the complement).
    Returns the ``k`` wanted indices followed by the extra ones (the best
    pair(s) of the complement unless already wanted).
    """
    wanted = order[:k]
    act = np.arange(c, theta.shape[0])
    if act.size == 0:
        return wanted
    if which == "LA":
        best = [act[np.argmax(theta[act])]]
    elif which == "SA":
        best = [act[np.argmin(theta[act])]]
    elif which == "LM":
        best = [act[np.argmax(np.abs(theta[act]))]]
    else:
        best = [act[np.argmax(theta[act])], act[np.argmin(theta[act])]]
    extra = [i for i in dict.fromkeys(best) if i not in set(wanted.tolist())]
    return np.concatenate([wanted, np.asarray(extra, dtype=wanted.dtype)])


def _check_found_new(theta, thr, wanted, checked, p):
    """Whether a multiplicity check run with block size ``p`` must be repeated.

    ``checked`` are the indices of the pairs that were wanted (and locked)
    when the check started, ``wanted`` those wanted now.  A block Krylov
    space with ``p`` random starting vectors contains ``min(p, m)`` copies of
    an eigenvalue of multiplicity ``m`` (in the complement), so the check is
    repeated only when it found ``p`` or more new copies of one value.  A
    pair displaced by a new one of the same value (to the tolerance ``thr``)
    does not count: the returned values are the same.
    """
    now, before = set(int(i) for i in wanted), set(checked)
    new = [i for i in now if i not in before]
    dropped = [j for j in before if j not in now]
    # new pairs that replace a dropped one of the same value are ties, not finds
    ties = set()
    for j in dropped:
        for i in new:
            if i not in ties and abs(theta[i] - theta[j]) <= max(thr[i], thr[j]):
                ties.add(i)
                break
    found = [i for i in new if i not in ties]
    for i in found:
        copies = sum(abs(theta[i] - theta[j]) <= max(thr[i], thr[j]) for j in found)
        if copies >= p:
            return True
    return False


def _lock_pairs(xp, V, Y, c, s, b, wanted, theta_a, res_a, locked_theta, locked_res, dev, acc):
    """Lock the wanted active Ritz pairs (rows ``[c, c + a)`` of ``V`` become their vectors).

    Returns ``(V, c, locked_theta, locked_res, checked)`` with ``checked`` the
    indices of all wanted pairs in the new numbering (locked first, in order).
    """
    act = np.asarray([int(i) - c for i in wanted if i >= c], dtype=np.int64)
    checked = [int(i) for i in wanted if i < c] + list(range(c, c + act.size))
    if act.size:
        Yk = _to_device(xp, dev, Y[:, act], acc)
        V = _set(xp, V, (slice(c, c + act.size), slice(None)), xp.matrix_transpose(Yk) @ V[c : s + b, :])
        locked_theta = np.concatenate([locked_theta, theta_a[act]])
        locked_res = np.concatenate([locked_res, res_a[act]])
    return V, c + act.size, locked_theta, locked_res, checked


def _fresh_rows(xp, rs, Vc, b, n, acc):
    """``b`` random orthonormal rows orthogonal to the rows of ``Vc`` (two Gram-Schmidt passes)."""
    dead = np.ones(b, dtype=bool)
    return _replace_dead_rows(xp, xp.zeros((b, n), dtype=acc, device=B.device(Vc)), dead, Vc, rs, acc, n)


def _reorthogonalise_block_again(xp, Qn, Vs):
    """One more Gram-Schmidt pass of the rows of ``Qn`` against ``Vs`` and a QR.

    Returns ``(Q2, R2)`` with ``Qn^T ~ Q2^T R2`` (host ``R2``), so a coupling
    ``W^T = Qn^T Bj`` becomes ``W^T = Q2^T (R2 Bj)``.
    """
    Z = Qn - (Qn @ xp.matrix_transpose(Vs)) @ Vs
    Q2, R2 = xp.linalg.qr(xp.matrix_transpose(Z))
    return xp.matrix_transpose(Q2), np.asarray(B.to_numpy(R2), dtype=np.float64)


def _orthonormal_rows(xp, Q0, basis, rs, acc, dev, n, eps):
    """Orthonormalise the rows of a starting block (rank-deficient rows become random)."""
    b = int(Q0.shape[0])
    if b == 1:
        return Q0 / xp.linalg.vector_norm(Q0)
    Qw, Rw = xp.linalg.qr(xp.matrix_transpose(Q0))
    U, sing, _ = _small_dense_on_host("svd", Rw)
    dead = sing <= _breakdown_tol(n, eps, float(sing.max()))
    Qn = xp.matrix_transpose(Qw @ _to_device(xp, dev, U, acc))
    return _replace_dead_rows(xp, Qn, dead, basis, rs, acc, n)


def _replace_dead_rows(xp, Qn, dead, basis, rs, acc, n):
    """Rows of ``Qn`` flagged ``dead`` become random unit vectors orthogonal to all others."""
    if not np.any(dead):
        return Qn
    alive = np.flatnonzero(~dead)
    parts = [] if basis is None else [basis]
    if alive.size:
        parts.append(xp.take(Qn, xp.asarray(alive, device=B.device(Qn)), axis=0))
    Prev = xp.concat(parts, axis=0) if parts else None
    Z = rs.normal((int(dead.sum()), n), acc)
    for _ in range(2):
        if Prev is not None:
            Z = Z - (Z @ xp.matrix_transpose(Prev)) @ Prev
        Zq, _ = xp.linalg.qr(xp.matrix_transpose(Z))
        Z = xp.matrix_transpose(Zq)
    rows = []
    zi = ai = 0
    for d in dead:
        if d:
            rows.append(Z[zi : zi + 1, :])
            zi += 1
        else:
            rows.append(xp.take(Qn, xp.asarray([int(alive[ai])], device=B.device(Qn)), axis=0))
            ai += 1
    return xp.concat(rows, axis=0)


def _fresh_direction(xp, rs, Vb, n, acc):
    """A random unit vector orthogonal to the rows of ``Vb`` (after an invariant subspace)."""
    for _ in range(3):
        z = rs.normal((n,), acc)
        z, _ = _reorthogonalise(xp, Vb, z)
        nz = float(xp.linalg.vector_norm(z))
        if nz > 0.0:
            return z / nz
    raise RuntimeError("could not find a direction orthogonal to the Krylov basis")


def _eigsh_shift_invert(
    op, q0, k, which, tol, maxiter, ncv, rs, op_dtype, acc, xp, dev, sigma,
    minres_rtol, minres_maxiter, want_vectors, extra_matvecs, check, bar,
):
    """Lanczos on (A - sigma I)^{-1} through inner MINRES solves."""
    try:
        from matfree.solvers import minres
    except ImportError:  # pragma: no cover - depends on the solvers module being present
        raise NotImplementedError(
            "eigsh(sigma=...) needs matfree.solvers.minres, which is not available in "
            "this installation"
        ) from None
    sigma = float(sigma)
    if not math.isfinite(sigma):
        raise ValueError(f"sigma={sigma} must be finite")
    n = op.shape[0]
    eps = _eps(xp, op_dtype)
    user_inner_rtol = minres_rtol
    if minres_maxiter is None:
        minres_maxiter = 10 * n
    counts = {"inner": 0, "solves": 0, "failures": 0, "residual_checks": 0}
    inner = {"rtol": None}

    def solve(q):
        rhs = q if q.dtype == op_dtype else xp.astype(q, op_dtype)
        sol = minres(op, rhs, shift=-sigma, rtol=inner["rtol"], maxiter=minres_maxiter)
        counts["inner"] += int(sol.num_matvecs)
        counts["solves"] += 1
        if not bool(sol.converged):
            counts["failures"] += 1
        x = sol.x
        if not bool(xp.all(xp.isfinite(x))):
            raise NonFiniteError("an inner MINRES solve of (A - sigma I) x = b returned NaN or Inf")
        return x if x.dtype == acc else xp.astype(x, acc)

    def apply(Q):  # rows of (A - sigma I)^{-1} Q^T, one MINRES solve per row
        return xp.stack([solve(Q[i, :]) for i in range(int(Q.shape[0]))], axis=0)

    # The outer test bounds the residual of (A - sigma I)^{-1}, not that of A, so
    # the residuals for A are checked explicitly (k products) and, when one is
    # too large, the outer tolerance is tightened and Lanczos restarted from the
    # current Ritz vectors (at most a few times).
    tol_abs = max(float(tol), _eps(xp, acc))
    tol_outer = tol_abs
    start = q0
    restarts = 0
    for attempt in range(4):
        inner["rtol"] = (
            float(user_inner_rtol)
            if user_inner_rtol is not None
            else max(tol_outer / 10.0, 10.0 * eps)
        )
        nu, X, _, _, outer_conv, info = _trlan(
            op, start, k, which, tol_outer, maxiter, ncv, rs, op_dtype, acc, xp, dev, True,
            apply=apply, check=check and attempt == 0, bar=bar,
        )
        restarts += info["num_restarts"]
        if np.any(nu == 0):
            raise ValueError("a Ritz value of (A - sigma I)^{-1} is zero; cannot map it back")
        lam = sigma + 1.0 / nu
        order = np.argsort(lam)
        lam = lam[order]
        Xs = xp.take(X, xp.asarray(order, device=dev), axis=1)
        Xo = Xs if Xs.dtype == op_dtype else xp.astype(Xs, op_dtype)
        AX = op.matmat(Xo)
        counts["residual_checks"] += k
        AX = AX if AX.dtype == acc else xp.astype(AX, acc)
        lam_d = _to_device(xp, dev, lam, acc)
        R = AX - Xs * lam_d[None, :]
        resid = np.asarray(B.to_numpy(xp.linalg.vector_norm(R, axis=0)), dtype=np.float64)
        scale = float(np.max(np.abs(lam)))
        thr = np.maximum(tol_abs * np.abs(lam), 10.0 * eps * scale)
        converged = bool(outer_conv and np.all(resid <= thr))
        if converged or not outer_conv or tol_outer <= 10.0 * _eps(xp, acc):
            break
        worst = float(np.max(resid / thr))
        tol_outer = max(tol_outer / max(10.0, 2.0 * worst), _eps(xp, acc))
        nb = int(start.shape[0])
        start = xp.matrix_transpose(Xs)[: min(nb, k), :]
        if nb > k:
            start = xp.concat([start, rs.normal((nb - k, n), acc)], axis=0)
        if nb == 1:
            start = xp.sum(Xs, axis=1)[None, :]
    info.update(
        which=which,
        sigma=sigma,
        num_restarts=restarts,
        num_solves=counts["solves"],
        inner_failures=counts["failures"],
        outer_converged=bool(outer_conv),
        num_refinements=attempt,
    )
    status = "converged" if converged else ("maxiter" if not outer_conv else "inexact_inner_solves")
    return EigResult(
        lam_d,
        Xs if want_vectors else None,
        _to_device(xp, dev, resid, acc),
        counts["inner"] + counts["residual_checks"] + extra_matvecs,
        converged,
        status,
        info,
    )
