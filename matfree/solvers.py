r"""Krylov solvers for damped symmetric systems and trust-region subproblems.

* :func:`cg` -- conjugate gradients for :math:`(A + \lambda I)x = b` with
  symmetric positive (semi)definite :math:`A`: damped, preconditioned, for a
  block of right-hand sides (one ``matmat`` per iteration for all columns),
  and **multi-shift** (a 1-D ``damping`` solves every shifted system from one
  Krylov space, one product per iteration in total).
* :func:`steihaug_cg` -- the Steihaug-Toint truncated CG for the trust-region
  subproblem :math:`\min_p g^\top p + \tfrac12 p^\top A p`, :math:`\|p\|\le\Delta`,
  with indefinite :math:`A`.
* :func:`minres` -- Paige-Saunders MINRES for symmetric indefinite
  :math:`(A + \sigma I)x = b`.

Every solver takes a :class:`~matfree.LinearOperator` (or anything
:func:`~matfree.aslinearoperator` accepts), counts the products it spends,
never raises on non-convergence and returns a :class:`~matfree.SolveResult`
whose ``status`` says how the iteration ended: ``"converged"``,
``"maxiter"``, ``"negative_curvature"``, ``"boundary"``, ``"non_finite"``,
``"indefinite_preconditioner"``, ``"singular"`` or ``"ill_conditioned"``.

Decisions (convergence, curvature, breakdown) are taken on the host from the
few scalars each iteration produces (one per column or shift); vectors of
length ``n`` never leave their device.  ``residual_norms`` is therefore a
host NumPy history.

Backends: NumPy, CuPy, PyTorch, JAX and array-api-strict arrays.
"""

from __future__ import annotations

import math
import numbers
import time

# NumPy is used here only for host-side bookkeeping of per-column scalars
# (step lengths, residual norms, multi-shift coefficients); every vector of
# length n is handled through the array namespace of the input.
import numpy as np

from matfree import _backend as B
from matfree import _kernels
from matfree._progress import progress_bar
from matfree.operators import FunctionOperator, LinearOperator, NonFiniteError, aslinearoperator
from matfree.results import SolveResult

__all__ = ["cg", "minres", "steihaug_cg"]

#: number of iterations whose residuals multi-shift CG buffers before it
#: applies them to all shifted solutions with one matrix product
_MULTISHIFT_BLOCK = 16

_STATUS_ORDER = (
    "non_finite",
    "indefinite_preconditioner",
    "negative_curvature",
    "singular",
    "ill_conditioned",
    "maxiter",
    "converged",
)


# ======================================================================
# Vector updates: pure array API, the reference; NumPy inputs of at least
# _kernels.cg.MIN_SIZE entries go to the fused Numba twins (one pass each)
# ======================================================================


_inner = _kernels.inner  # uᵀv: a Numba kernel on NumPy (see its docstring), else vecdot


def _sqnorm(xp, r):
    """``‖r‖²`` (per column for a block) as a 0-D or 1-D array."""
    return _inner(xp, r, r)


# The solvers own the arrays they pass as x, r and p (never a caller's array,
# never one handed out through a result) and update them in place, which
# halves the memory traffic of the vector updates on NumPy, CuPy and PyTorch;
# on immutable arrays (JAX) the augmented assignments simply rebind.


@_kernels.fused(_kernels.cg.update)
def _cg_update(xp, x, r, p, Ap, alpha):
    """One CG step: ``x += alpha p``, ``r -= alpha Ap``; returns ``x, r, ‖r‖²``.

    ``alpha`` is a Python float for a vector, or an array of one step length
    per column for a block (broadcast along the last axis).
    """
    x += alpha * p
    r -= alpha * Ap
    return x, r, _sqnorm(xp, r)


@_kernels.fused(_kernels.cg.residual)
def _cg_residual(xp, r, Ap, alpha):
    """The residual half of :func:`_cg_update` (multi-shift keeps no seed ``x``)."""
    r -= alpha * Ap
    return r, _sqnorm(xp, r)


@_kernels.fused(_kernels.cg.direction)
def _cg_direction(z, p, beta):
    """Next search direction ``p = z + beta p`` (``p`` updated in place)."""
    p *= beta
    p += z
    return p


def _minres_update(x, v, w1, w2, oldeps, delta, gamma, phi):
    """MINRES: new direction ``w = (v - oldeps w1 - delta w2) / gamma`` and ``x += phi w``."""
    w = (v - oldeps * w1 - delta * w2) * (1.0 / gamma)
    x += phi * w
    return x, w


def _copy(xp, v):
    """A copy the solver owns (it will update it in place)."""
    return xp.asarray(v, copy=True)


# ======================================================================
# Host <-> device for per-column scalars
# ======================================================================


def _host(v):
    """Per-column scalars (a 0-D or 1-D array of length k) on the host, float64.

    This is the one place the solvers move data to the host on purpose: the
    k scalars an iteration needs for its decisions, never a vector of length n.
    """
    return np.asarray(B.to_numpy(v), dtype=np.float64)


def _device(xp, a, dtype, dev):
    """Host per-column scalars back on the device, as step lengths for a block."""
    return xp.asarray(np.asarray(a, dtype=np.float64), dtype=dtype, device=dev)


# ======================================================================
# Input checks shared by the solvers
# ======================================================================


def _square_operator(A, name="A"):
    if isinstance(A, (bool, numbers.Number)) or A is None:
        raise TypeError(
            f"{name} must be a LinearOperator, an array or a sparse matrix, "
            f"got {type(A).__name__}"
        )
    A = aslinearoperator(A)
    if A.shape[0] != A.shape[1]:
        raise ValueError(
            f"{name} has shape {A.shape}; the solvers need a square (symmetric) operator"
        )
    return A


def _rhs(A, b, name, ndims):
    """Check ``b`` against ``A``; return it in the working dtype with ``xp`` and device."""
    if isinstance(b, LinearOperator) or not hasattr(b, "shape") or not hasattr(b, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(b).__name__}")
    xp = B.namespace(b)
    n = A.shape[0]
    if b.ndim not in ndims or b.shape[0] != n:
        allowed = " or ".join(
            f"({n},)" if d == 1 else f"({n}, k)" for d in ndims
        )
        raise ValueError(
            f"shape mismatch: {name} has shape {tuple(b.shape)} but A has shape "
            f"{A.shape}; expected {name} of shape {allowed}"
        )
    B.check_float_dtype(b.dtype, name)
    if A.xp is not None and A.xp is not xp:
        raise TypeError(
            f"{name} is a {_lib(xp)} array but A works on {_lib(A.xp)} arrays; "
            "matfree does not convert between libraries implicitly"
        )
    dev = B.device(b)
    if A.device is not None and dev != A.device:
        raise ValueError(f"{name} is on device {dev} but A is on {A.device}; move it explicitly")
    dtype = b.dtype if A.dtype is None else B.result_dtype(xp, A.dtype, b.dtype)
    if b.dtype != dtype:
        b = xp.astype(b, dtype)
    if not bool(xp.all(xp.isfinite(b))):
        raise ValueError(f"{name} contains NaN or Inf; expected finite entries")
    return b, xp, dtype, dev


def _lib(xp):
    return xp.__name__.replace("array_api_compat.", "")


def _x0(x0, b, xp, dtype, dev):
    if x0 is None:
        return None
    if not hasattr(x0, "shape") or not hasattr(x0, "dtype"):
        raise TypeError(f"x0 must be an array or None, got {type(x0).__name__}")
    if B.namespace(x0) is not xp:
        raise TypeError("x0 and b are arrays of different libraries")
    if tuple(x0.shape) != tuple(b.shape):
        raise ValueError(
            f"shape mismatch: x0 has shape {tuple(x0.shape)}; expected the shape of b, "
            f"{tuple(b.shape)}"
        )
    B.check_float_dtype(x0.dtype, "x0")
    x0 = xp.astype(x0, dtype, copy=True)  # the solver updates its iterate in place
    if not bool(xp.all(xp.isfinite(x0))):
        raise ValueError("x0 contains NaN or Inf; expected finite entries")
    return x0


def _real(value, name):
    """A finite Python float from a real number or 0-D array."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) or getattr(value, "shape", None) == ()
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value) if isinstance(value, numbers.Real) else float(_host(value))
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} must be finite")
    return value


def _tolerances(rtol, atol):
    rtol, atol = _real(rtol, "rtol"), _real(atol, "atol")
    if rtol < 0:
        raise ValueError(f"rtol={rtol} is negative; expected rtol >= 0")
    if atol < 0:
        raise ValueError(f"atol={atol} is negative; expected atol >= 0")
    return rtol, atol


def _maxiter(maxiter, default):
    if maxiter is None:
        return default
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral):
        raise TypeError(f"maxiter must be an int or None, got {type(maxiter).__name__}")
    maxiter = int(maxiter)
    if maxiter < 0:
        raise ValueError(f"maxiter={maxiter} is negative; expected maxiter >= 0")
    return maxiter


def _preconditioner(M, A, xp, dtype, dev):
    """``M`` as a LinearOperator of A's shape (a callable ``M(r)`` is wrapped)."""
    if M is None:
        return None
    n = A.shape[0]
    if callable(M) and not isinstance(M, LinearOperator) and not hasattr(M, "shape"):
        return FunctionOperator(M, (n, n), dtype, xp, dev, symmetric=True, name="M")
    try:
        M = aslinearoperator(M)
    except TypeError:
        raise TypeError(
            f"M must be a LinearOperator, an array, a sparse matrix or a callable, "
            f"got {type(M).__name__}"
        ) from None
    if M.shape != A.shape:
        raise ValueError(
            f"shape mismatch: M has shape {M.shape}; expected the shape of A, {A.shape}"
        )
    if M.xp is not None and M.xp is not xp:
        raise TypeError(f"M works on {_lib(M.xp)} arrays but b is a {_lib(xp)} array")
    return M


def _damping(damping):
    """A float, or a host float64 array of shifts when ``damping`` is 1-D."""
    if isinstance(damping, bool):
        raise TypeError("damping must be a real number or a 1-D array of shifts, got bool")
    if isinstance(damping, numbers.Real):
        return _real(damping, "damping")
    if isinstance(damping, (list, tuple)):
        shifts = np.asarray(damping, dtype=np.float64)
    elif hasattr(damping, "shape"):
        if damping.ndim == 0:
            return _real(damping, "damping")
        shifts = _host(damping)
    else:
        raise TypeError(
            f"damping must be a real number or a 1-D array of shifts, got {type(damping).__name__}"
        )
    if shifts.ndim != 1 or shifts.size == 0:
        raise ValueError(
            f"damping has shape {shifts.shape}; expected a number or a non-empty 1-D array of shifts"
        )
    if not np.all(np.isfinite(shifts)):
        raise ValueError("damping contains NaN or Inf; expected finite shifts")
    return shifts


def _product(op, v, shift, block):
    """``(op + shift I) v`` with one (block) product."""
    w = op.matmat(v) if block else op.matvec(v)
    return w + shift * v if shift != 0.0 else w


def _product_curvature(xp, op, p, shift):
    """``Ap = (op + shift I) p`` and ``pᵀAp`` (a float) for one vector.

    An operator with the private hook ``_matvec_dot`` (``Sparse``) does both
    in one pass over the matrix and ``p`` (a fused kernel); its answer then
    differs from the two-step one only by the rounding of the dot product.
    """
    hook = getattr(op, "_matvec_dot", None)
    if hook is not None:
        out = hook(p, shift)
        if out is not NotImplemented:
            return out
    Ap = _product(op, p, shift, False)
    return Ap, float(_inner(xp, p, Ap))


def _preconditioned(M, r, rr, dtype, xp, it):
    """``(z, rho, None)`` with ``z = M r`` and ``rho = rᵀz`` (``r`` and ``rr`` without ``M``),
    or ``(None, None, (status, message))`` when ``M r`` is not finite or ``M`` is not
    positive definite (``rho <= 0``).  Host scalar: ``rho``.
    """
    if M is None:
        return r, rr, None
    try:
        z = _precondition(M, r, dtype, xp, False)
    except NonFiniteError as err:
        return None, None, ("non_finite", str(err))
    rho = float(_inner(xp, r, z))
    if not math.isfinite(rho):
        return None, None, ("non_finite", f"r^T M r is not finite at iteration {it}")
    if rho <= 0.0:
        return None, None, ("indefinite_preconditioner", (
            f"r^T M r = {rho:.3e} <= 0 at iteration {it}: the preconditioner M "
            "is not positive definite"
        ))
    return z, rho, None


def _precondition(M, r, dtype, xp, block):
    z = M.matmat(r) if block else M.matvec(r)
    return z if z.dtype == dtype else xp.astype(z, dtype)


def _worst(statuses):
    """The overall status of several systems: the most serious of theirs."""
    present = set(statuses)
    for s in _STATUS_ORDER:
        if s in present:
            return s
    return statuses[0]


def _check_progress(progress):
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False, got {type(progress).__name__}")
    return bool(progress)


class _Progress:
    """A solver's progress bar: iterations, with the current relative residual as postfix.

    ``step(rel_res)`` takes the relative residual the loop already has on the
    host (no extra device synchronisation) and refreshes the bar at most every
    :attr:`INTERVAL` seconds, so that even iterations of a few microseconds
    pay only a counter increment and a clock read; :meth:`close` shows the
    last value and removes the bar.
    """

    INTERVAL = 0.1  # seconds between refreshes (tqdm's default mininterval)

    def __init__(self, total, desc):
        self._bar = progress_bar(True, total=total, desc=desc, unit="iter")
        self._pending = 0
        self._value = None
        self._next = 0.0  # refresh at the first step

    def step(self, rel_res):
        self._pending += 1
        self._value = rel_res
        now = time.monotonic()
        if now >= self._next:
            self._flush()
            self._next = now + self.INTERVAL

    def _flush(self):
        if self._pending:
            self._bar.update(self._pending, rel_res=float(self._value))
            self._pending = 0

    def close(self):
        self._flush()
        self._bar.close()


def _with_progress(progress, total, desc, run, *args):
    """``run(*args, bar)`` with a :class:`_Progress` bar, or ``bar=None`` when ``progress`` is false."""
    if not progress:
        return run(*args, None)
    bar = _Progress(total, desc)
    try:
        return run(*args, bar)
    finally:
        bar.close()


def _inverse(norms):
    """``1/‖b‖`` for relative residuals (1 where ``b = 0``: the residual itself is shown)."""
    norms = np.asarray(norms, dtype=np.float64)
    return 1.0 / np.where(norms > 0.0, norms, 1.0)


_NEGATIVE_CURVATURE_HINT = (
    "the damped operator is not positive definite along this direction; use "
    "matfree.steihaug_cg (trust region) or matfree.minres (indefinite systems), "
    "or increase the damping"
)


# ======================================================================
# CG
# ======================================================================


def cg(
    A, b, damping=0.0, M=None, x0=None, rtol=1e-6, atol=0.0, maxiter=None, callback=None, *,
    progress=False,
):
    r"""Conjugate gradients for :math:`(A + \lambda I)x = b`, damped, preconditioned, multi-shift.

    One product with ``A`` per iteration: for one right-hand side, for a
    block of them (one ``matmat``), and for a whole family of dampings
    (multi-shift).  Non-convergence, negative curvature, an indefinite
    preconditioner and NaN/Inf products end the iteration with a ``status``,
    never with an exception.

    Parameters
    ----------
    A : LinearOperator, array or sparse matrix
        Symmetric positive (semi)definite ``n``-by-``n`` operator (symmetry is
        assumed, not checked).
    b : array, shape (n,) or (n, k)
        Right-hand side.  A block is solved column by column in lock step:
        one ``A.matmat`` per iteration for all unconverged columns, each
        column with its own step lengths and its own tolerance; a converged
        column leaves the block and costs nothing more.
    damping : float or 1-D array of shifts
        :math:`\lambda`.  A 1-D array of ``s`` shifts runs **multi-shift CG**:
        all systems :math:`(A + \lambda_j I)x_j = b` are solved from the
        Krylov space of the smallest shift, with one product per iteration in
        total; ``b`` must then be 1-D, ``M`` and ``x0`` are not supported, and
        ``x`` has shape ``(n, s)`` with column ``j`` for ``damping[j]``.
    M : LinearOperator, array or callable, optional
        Symmetric positive definite preconditioner approximating
        :math:`(A + \lambda I)^{-1}` (see :mod:`matfree.precond`).
    x0 : array, optional
        Starting guess (shape of ``b``); zero by default.
    rtol, atol : float
        Column ``j`` has converged when
        :math:`\|r_j\| \le \max(\mathrm{atol}, \mathrm{rtol}\,\|b_j\|)`
        (the recursively updated residual, as in SciPy).
    maxiter : int, optional
        Iteration limit; ``10 n`` by default.  Reaching it is a status, not an
        error.
    callback : callable, optional
        ``callback(x)`` after every iteration with the current iterate.  For
        one right-hand side this is the solver's own array, updated in place
        by the next iterations (as in SciPy): copy it to keep it.
    progress : bool
        Show a tqdm progress bar (optional dependency: ``pip install
        'matfree-hessian[progress]'``) counting iterations up to ``maxiter``,
        with the current relative residual :math:`\|r\|/\|b\|` as
        ``rel_res`` (for a block or several shifts the largest one among the
        systems still iterating).  It uses the residual norm the iteration
        already has on the host (no extra synchronisation) and refreshes at
        most ten times a second.

    Returns
    -------
    SolveResult
        ``x`` (shape of ``b``, or ``(n, s)`` for several shifts);
        ``converged`` (a bool, or a bool array per column/shift);
        ``num_iters``; ``residual_norms`` (host history, row 0 the initial
        residual); ``status``; ``num_matvecs``; ``info`` with ``"tol"``,
        ``"damping"``, per-column ``"statuses"`` for blocks and shifts,
        ``"direction"`` and ``"curvature"`` (:math:`p^\top(A+\lambda I)p/p^\top p`)
        on negative curvature, ``"message"`` on faults.

    Raises
    ------
    ValueError
        Shape mismatch of ``b``, ``x0`` or ``M``; NaN/Inf in ``b`` or ``x0``;
        negative tolerances or ``maxiter``; unsupported combinations with
        several shifts.
    TypeError
        Arrays of another library than ``A``; non-float dtypes; bad types.
    ImportError
        ``progress=True`` without tqdm installed.

    See Also
    --------
    steihaug_cg : Trust-region CG for indefinite model Hessians.
    minres : Symmetric indefinite systems.
    matfree.precond.nystrom : Randomized Nyström preconditioner for ``M``.

    Notes
    -----
    Preconditioned CG (Hestenes & Stiefel) with :math:`z = M r`:

    .. math::

        \alpha_k = \frac{r_k^\top z_k}{p_k^\top (A+\lambda I) p_k},\quad
        x_{k+1} = x_k + \alpha_k p_k,\quad
        r_{k+1} = r_k - \alpha_k (A+\lambda I) p_k,\quad
        p_{k+1} = z_{k+1} + \frac{r_{k+1}^\top z_{k+1}}{r_k^\top z_k}\, p_k,

    in the same order of operations as :func:`scipy.sparse.linalg.cg`, so
    the iterates agree with SciPy's to rounding.  The iteration stops with
    ``status="negative_curvature"`` when :math:`p^\top(A+\lambda I)p \le 0`
    (returning ``p`` in ``info["direction"]``), ``"indefinite_preconditioner"``
    when :math:`r^\top M r \le 0`, and ``"non_finite"`` when a product returns
    NaN/Inf; ``x`` is then the last finite iterate.

    Multi-shift CG (Frommer 2003) uses that the residuals of the shifted
    systems are collinear with the seed residual, :math:`r^{(\delta)}_k =
    \zeta^{(\delta)}_k r_k` for :math:`\delta = \lambda_j - \lambda_{\min}`,
    with

    .. math::

        \zeta_{k+1} = \frac{\zeta_k\zeta_{k-1}\alpha_{k-1}}
        {\alpha_{k-1}\zeta_{k-1}(1+\alpha_k\delta)
        + \alpha_k\beta_{k-1}(\zeta_{k-1}-\zeta_k)},\quad
        \alpha^{(\delta)}_k = \alpha_k\frac{\zeta_{k+1}}{\zeta_k},\quad
        \beta^{(\delta)}_k = \beta_k\Big(\frac{\zeta_{k+1}}{\zeta_k}\Big)^2 .

    The shifted vector updates are deferred: the seed residuals of up to 16
    iterations are buffered and applied to all shifted iterates and
    directions with one matrix product (BLAS-3), which is what makes the
    method cheaper than separate solves when the product with ``A`` is
    cheap.  The smallest shift drives the iteration; if it meets negative
    curvature, all unconverged shifts stop.

    References
    ----------
    .. [1] M. R. Hestenes, E. Stiefel, "Methods of conjugate gradients for
       solving linear systems", J. Res. Natl. Bur. Stand. 49 (1952).
       doi:10.6028/jres.049.044
    .. [2] A. Frommer, "BiCGStab(l) for families of shifted linear systems",
       Computing 70 (2003). doi:10.1007/s00607-003-1472-6
    .. [3] B. Jegerlehner, "Krylov space solvers for shifted linear systems",
       arXiv:hep-lat/9612014 (1996).
    .. [4] J. Martens, "Deep learning via Hessian-free optimization", ICML 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.solvers import cg
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> b = np.array([1.0, 2.0])
    >>> res = cg(A, b, damping=0.5, rtol=1e-10)
    >>> res.status, bool(np.allclose(res.x, np.linalg.solve(A + 0.5 * np.eye(2), b)))
    ('converged', True)
    >>> res = cg(A, b, damping=[0.1, 1.0, 10.0], rtol=1e-10)
    >>> res.x.shape, res.num_matvecs
    ((2, 3), 2)
    """
    A = _square_operator(A)
    b, xp, dtype, dev = _rhs(A, b, "b", (1, 2))
    rtol, atol = _tolerances(rtol, atol)
    n = A.shape[0]
    maxiter = _maxiter(maxiter, 10 * n)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    progress = _check_progress(progress)
    shifts = _damping(damping)
    if isinstance(shifts, np.ndarray):
        if b.ndim != 1:
            raise ValueError(
                f"several shifts (damping of shape {shifts.shape}) need a 1-D b, got b of "
                f"shape {tuple(b.shape)}; solve each column separately"
            )
        if M is not None:
            raise ValueError(
                "M is not supported with several shifts: a preconditioner breaks the "
                "shift invariance of the Krylov space; solve each shift separately"
            )
        if x0 is not None:
            raise ValueError(
                "x0 is not supported with several shifts: all shifted systems share the "
                "Krylov space of b, which needs x0 = 0"
            )
        bnorm = math.sqrt(float(_host(_sqnorm(xp, b))))
        tol = max(atol, rtol * bnorm)
        return _with_progress(
            progress, maxiter, f"cg ({shifts.size} shifts)", _cg_multishift,
            A, b, shifts, tol, maxiter, callback, xp, dtype, dev, float(_inverse(bnorm)),
        )
    M = _preconditioner(M, A, xp, dtype, dev)
    x0 = _x0(x0, b, xp, dtype, dev)
    bnorms = np.sqrt(_host(_sqnorm(xp, b)))
    tols = np.maximum(atol, rtol * bnorms)
    if b.ndim == 1:
        return _with_progress(
            progress, maxiter, "cg", _cg_single,
            A, b, shifts, M, x0, float(tols), maxiter, callback, xp, dtype, float(_inverse(bnorms)),
        )
    return _with_progress(
        progress, maxiter, f"cg (block of {b.shape[1]})", _cg_block,
        A, b, shifts, M, x0, tols, maxiter, callback, xp, dtype, dev, _inverse(bnorms),
    )


def _cg_single(A, b, shift, M, x, tol, maxiter, callback, xp, dtype, inv_bnorm, bar):
    """CG for one right-hand side (the hot path; same operation order as SciPy)."""
    num_matvecs = 0
    info = {"tol": tol, "damping": shift}
    if x is None:
        x = xp.zeros_like(b)
        r = _copy(xp, b)
    else:
        try:
            r = b - _product(A, x, shift, False)
        except NonFiniteError as err:
            return _cg_fault(x, 0, [], "non_finite", 1, info, str(err))
        num_matvecs += 1
    rr = float(_sqnorm(xp, r))
    history = [math.sqrt(rr) if math.isfinite(rr) else math.inf]
    if not math.isfinite(rr):
        return _cg_fault(x, 0, history, "non_finite", num_matvecs, info, "A @ x0 is not finite")
    p = None
    rho_prev = 1.0
    status, it = "maxiter", 0
    while True:
        if math.sqrt(rr) <= tol:
            status = "converged"
            break
        if it >= maxiter:
            break
        z, rho, fault = _preconditioned(M, r, rr, dtype, xp, it)
        if fault is not None:
            return _cg_fault(x, it, history, fault[0], num_matvecs, info, fault[1])
        p = _copy(xp, z) if p is None else _cg_direction(z, p, rho / rho_prev)
        try:
            Ap, pAp = _product_curvature(xp, A, p, shift)
        except NonFiniteError as err:
            return _cg_fault(x, it, history, "non_finite", num_matvecs + 1, info, str(err))
        num_matvecs += 1
        if not math.isfinite(pAp):
            msg = f"p^T (A + damping I) p is not finite at iteration {it}"
            return _cg_fault(x, it, history, "non_finite", num_matvecs, info, msg)
        if pAp <= 0.0:
            info["direction"] = p
            info["curvature"] = pAp / float(_inner(xp, p, p))
            msg = f"p^T (A + damping I) p = {pAp:.3e} <= 0 at iteration {it}: " + (
                _NEGATIVE_CURVATURE_HINT
            )
            return _cg_fault(x, it, history, "negative_curvature", num_matvecs, info, msg)
        x, r, rr = _cg_update(xp, x, r, p, Ap, rho / pAp)
        rr = float(rr)
        if not math.isfinite(rr):  # pAp was finite, so only an overflow gets here
            msg = f"the residual overflowed at iteration {it}"
            return _cg_fault(x, it, history, "non_finite", num_matvecs, info, msg)
        rho_prev = rho
        it += 1
        history.append(math.sqrt(rr))
        if bar is not None:
            bar.step(history[-1] * inv_bnorm)
        if callback is not None:
            callback(x)
    return SolveResult(
        x=x,
        converged=status == "converged",
        num_iters=it,
        residual_norms=np.asarray(history),
        status=status,
        num_matvecs=num_matvecs,
        info=info,
    )


def _cg_fault(x, it, history, status, num_matvecs, info, message):
    info["message"] = message
    return SolveResult(
        x=x,
        converged=False,
        num_iters=it,
        residual_norms=np.asarray(history, dtype=np.float64),
        status=status,
        num_matvecs=num_matvecs,
        info=info,
    )


class _Columns:
    """The unconverged columns of a block CG run and the retired ones' answers."""

    def __init__(self, xp, k):
        self.xp = xp
        self.cols = np.arange(k)  # original index of each active column
        self.out = [None] * k
        self.status = ["maxiter"] * k
        self.directions = {}
        self.curvatures = {}

    def retire(self, mask, status, X, dev_arrays, host_arrays, P=None, pAp=None, pp=None):
        """Store the columns in ``mask`` as answers and drop them from the arrays."""
        idx = np.flatnonzero(mask)
        for i in idx:
            j = int(self.cols[i])
            self.out[j] = X[:, int(i)]
            self.status[j] = status
            if P is not None:
                self.directions[j] = P[:, int(i)]
                self.curvatures[j] = float(pAp[i] / pp[i])
        keep = np.flatnonzero(~mask)
        self.cols = self.cols[keep]
        if keep.size == mask.size:
            return X, dev_arrays, host_arrays
        kidx = self.xp.asarray(keep, dtype=self.xp.int64, device=B.device(X))
        X = self.xp.take(X, kidx, axis=1)
        dev_arrays = [None if a is None else self.xp.take(a, kidx, axis=1) for a in dev_arrays]
        host_arrays = [None if a is None else a[keep] for a in host_arrays]
        return X, dev_arrays, host_arrays

    def assemble(self, X):
        """All columns: the retired answers and the active iterates of ``X``."""
        cols = list(self.out)
        for i, j in enumerate(self.cols):
            cols[int(j)] = X[:, i]
        return self.xp.stack(cols, axis=1)


def _cg_block(A, Bm, shift, M, X, tols, maxiter, callback, xp, dtype, dev, inv_bnorms, bar):
    """CG for a block of right-hand sides: one ``matmat`` per iteration, per-column steps."""
    n, k = Bm.shape
    state = _Columns(xp, k)
    info = {"damping": shift, "tol": tols}
    num_matvecs = 0
    if X is None:
        X = xp.zeros_like(Bm)
        R = _copy(xp, Bm)
    else:
        try:
            R = Bm - _product(A, X, shift, True)
        except NonFiniteError as err:
            info["message"] = str(err)
            state.retire(np.ones(k, dtype=bool), "non_finite", X, [], [])
            return _block_result(state, X, 0, [], k, info)
        num_matvecs += k
    rr = _host(_sqnorm(xp, R))
    resid = np.sqrt(rr)
    history = [resid.copy()]
    tol = tols.copy()
    P, rho_prev = None, np.ones(k)
    it = 0
    while state.cols.size:
        finite = np.isfinite(rr)
        X, (R, P), (rr, rho_prev, tol) = state.retire(
            ~finite, "non_finite", X, [R, P], [rr, rho_prev, tol]
        )
        done = np.sqrt(rr) <= tol
        X, (R, P), (rr, rho_prev, tol) = state.retire(
            done, "converged", X, [R, P], [rr, rho_prev, tol]
        )
        if not state.cols.size:
            break
        if it >= maxiter:
            state.retire(np.ones(state.cols.size, dtype=bool), "maxiter", X, [], [])
            break
        if M is None:
            Z, rho = R, rr
        else:
            try:
                Z = _precondition(M, R, dtype, xp, True)
            except NonFiniteError as err:
                info["message"] = str(err)
                state.retire(np.ones(state.cols.size, dtype=bool), "non_finite", X, [], [])
                break
            rho = _host(_inner(xp, R, Z))
            for why in ("non_finite", "indefinite_preconditioner"):
                bad = ~np.isfinite(rho) if why == "non_finite" else rho <= 0
                if np.any(bad):
                    info["message"] = f"r^T M r is {why.replace('_', ' ')} in some columns"
                X, (R, P, Z), (rr, rho_prev, tol, rho) = state.retire(
                    bad, why, X, [R, P, Z], [rr, rho_prev, tol, rho]
                )
            if not state.cols.size:
                break
        beta = _device(xp, rho / rho_prev, dtype, dev)
        P = _copy(xp, Z) if P is None else _cg_direction(Z, P, beta)
        try:
            AP = _product(A, P, shift, True)
        except NonFiniteError as err:
            info["message"] = str(err)
            num_matvecs += int(state.cols.size)
            state.retire(np.ones(state.cols.size, dtype=bool), "non_finite", X, [], [])
            break
        num_matvecs += int(state.cols.size)
        pAp = _host(_inner(xp, P, AP))
        bad = ~np.isfinite(pAp)
        X, (R, P, AP), (rr, rho_prev, tol, rho, pAp) = state.retire(
            bad, "non_finite", X, [R, P, AP], [rr, rho_prev, tol, rho, pAp]
        )
        neg = pAp <= 0
        if np.any(neg):
            pp = _host(_inner(xp, P, P))
            X, (R, P, AP), (rr, rho_prev, tol, rho, pAp) = state.retire(
                neg, "negative_curvature", X, [R, P, AP], [rr, rho_prev, tol, rho, pAp],
                P=P, pAp=pAp, pp=pp,
            )
            info["message"] = _NEGATIVE_CURVATURE_HINT
        if not state.cols.size:
            break
        alpha = _device(xp, rho / pAp, dtype, dev)
        X, R, rr_dev = _cg_update(xp, X, R, P, AP, alpha)
        rr, rho_prev = _host(rr_dev), rho
        it += 1
        resid = resid.copy()
        resid[state.cols] = np.sqrt(rr)
        history.append(resid)
        if bar is not None:  # the largest relative residual of the columns still iterating
            bar.step(float(np.max(resid[state.cols] * inv_bnorms[state.cols])))
        if callback is not None:
            callback(state.assemble(X))
    return _block_result(state, X, it, history, num_matvecs, info)


def _block_result(state, X, it, history, num_matvecs, info):
    xp = state.xp
    x = xp.stack(state.out, axis=1)
    converged = np.array([s == "converged" for s in state.status])
    info["statuses"] = list(state.status)
    if state.directions:
        info["directions"] = state.directions
        info["curvatures"] = state.curvatures
    return SolveResult(
        x=x,
        converged=converged,
        num_iters=it,
        residual_norms=np.asarray(history, dtype=np.float64),
        status=_worst(state.status),
        num_matvecs=num_matvecs,
        info=info,
    )


# ======================================================================
# Multi-shift CG
# ======================================================================


class _ShiftedIterates:
    """Iterates and directions of the shifted systems, updated lazily in blocks.

    Over a block of iterations starting at ``k0`` the shifted direction and
    iterate are linear combinations of the direction ``P`` at ``k0`` and the
    seed residuals ``r_{k0+1} .. r_k``:

        p_k = a P + R c_p,      x_k = X + e P + R c_x,

    whose coefficients are scalar recurrences on the host.  :meth:`flush`
    forms them with one matrix product (BLAS-3) instead of two vector
    updates per shift and iteration.  Rows of ``X`` and ``P`` are shifts.
    ``P`` and the buffered residuals share one array ``S = [P; R]``, so that
    the product reads them in one pass without copying them together.
    """

    def __init__(self, xp, b, s, block, dtype, dev):
        self.xp, self.dtype, self.dev = xp, dtype, dev
        n = b.shape[0]
        self.s, self.block = s, block
        self.X = xp.zeros((s, n), dtype=dtype, device=dev)
        # mutable arrays: S holds P (rows :s) then the residuals; immutable
        # ones (JAX): P and a list of residuals, stacked at each flush
        self._mutable = not B.is_jax(xp)
        if self._mutable:
            self._S = xp.zeros((s + block, n), dtype=dtype, device=dev)
            self._S[:s, :] = xp.zeros((s, n), dtype=dtype, device=dev) + b
        else:
            self._P = xp.zeros((s, n), dtype=dtype, device=dev) + b
            self._R = []
        self._reset()

    def _reset(self):
        self.j = 0
        self.a = np.ones(self.s)
        self.e = np.zeros(self.s)
        self.cp = np.zeros((self.block, self.s))
        self.cx = np.zeros((self.block, self.s))

    @property
    def full(self):
        return self.j == self.block

    @property
    def P(self):
        """Directions of the shifts at the start of the current block."""
        return self._S[: self.s, :] if self._mutable else self._P

    def step(self, r_next, alpha_s, beta_s, zeta_next):
        """Record ``x += alpha_s p`` then ``p = zeta_next r_next + beta_s p`` for every shift."""
        self.e += alpha_s * self.a
        self.cx[: self.j] += alpha_s * self.cp[: self.j]
        self.a *= beta_s
        self.cp[: self.j] *= beta_s
        self.cp[self.j] = zeta_next
        if self._mutable:
            self._S[self.s + self.j, :] = r_next
        else:
            self._R.append(r_next)
        self.j += 1

    def flush(self):
        """Apply the buffered combinations to ``X`` and ``P`` with one matrix product.

        ``[ΔX; P_new] = C [P; r_{k0+1}; ...; r_k]`` with the ``2s``-by-``(s + j)``
        coefficient matrix ``C = [[diag(e), c_xᵀ], [diag(a), c_pᵀ]]``.
        """
        xp = self.xp
        j, s = self.j, self.s
        if j == 0:
            return
        C = np.zeros((2 * s, s + j))
        C[np.arange(s), np.arange(s)] = self.e
        C[s + np.arange(s), np.arange(s)] = self.a
        C[:s, s:] = self.cx[:j].T
        C[s:, s:] = self.cp[:j].T
        C = _device(xp, C, self.dtype, self.dev)
        if not self._mutable:
            G = C @ xp.concat([self._P, xp.stack(self._R, axis=0)], axis=0)
            self.X = self.X + G[:s, :]
            self._P = G[s:, :]
            self._R = []
            self._reset()
            return
        # column chunks of about 2 MB of S: the product's output stays small
        # (no large temporary per flush) and P is written back while in cache
        n = int(self.X.shape[1])
        step = max(4096, (1 << 21) // (8 * (s + j)))
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            G = C @ self._S[: s + j, c0:c1]
            self.X[:, c0:c1] += G[:s, :]
            self._S[:s, c0:c1] = G[s:, :]
        self._reset()

    def drop(self, keep):
        """Keep only the shifts (rows) ``keep`` (call right after :meth:`flush`)."""
        idx = self.xp.asarray(keep, dtype=self.xp.int64, device=self.dev)
        self.X = self.xp.take(self.X, idx, axis=0)
        P = self.xp.take(self.P, idx, axis=0)
        self.s = int(keep.size)
        if self._mutable:
            self._S[: self.s, :] = P
        else:
            self._P = P
        self._reset()


def _cg_multishift(A, b, shifts, tol, maxiter, callback, xp, dtype, dev, inv_bnorm, bar):
    """Multi-shift CG: all ``(A + shifts[j] I) x = b`` from one Krylov space."""
    s = shifts.size
    seed = float(np.min(shifts))
    delta = shifts - seed
    block = 1 if callback is not None else _MULTISHIFT_BLOCK
    info = {"damping": shifts.copy(), "seed_shift": seed, "tol": tol, "block": block}
    it_done = np.full(s, -1)
    statuses = ["maxiter"] * s
    out = [None] * s
    # per-shift scalars of the active shifts (host)
    cols = np.arange(s)
    zeta, zeta_prev = np.ones(s), np.ones(s)
    r, p = _copy(xp, b), _copy(xp, b)
    rr = float(_sqnorm(xp, r))
    resid = np.full(s, math.sqrt(rr))
    history = [resid.copy()]
    shifted = _ShiftedIterates(xp, b, s, block, dtype, dev)
    alpha_prev, beta_prev = 1.0, 0.0
    num_matvecs, it = 0, 0
    fault = None

    def retire(mask, status):
        nonlocal cols, zeta, zeta_prev
        shifted.flush()
        for i in np.flatnonzero(mask):
            j = int(cols[i])
            out[j] = shifted.X[int(i), :]
            statuses[j] = status
            it_done[j] = it
        keep = np.flatnonzero(~mask)
        if keep.size < mask.size:
            shifted.drop(keep)
            cols, zeta, zeta_prev = cols[keep], zeta[keep], zeta_prev[keep]

    while True:
        res = np.abs(zeta) * math.sqrt(rr)
        done = (res <= tol) | (zeta == 0.0)
        if np.any(done):
            retire(done, "converged")
        if not cols.size:
            break
        if it >= maxiter:
            retire(np.ones(cols.size, dtype=bool), "maxiter")
            break
        try:
            Ap, pAp = _product_curvature(xp, A, p, seed)
        except NonFiniteError as err:
            num_matvecs += 1
            fault = ("non_finite", str(err))
            break
        num_matvecs += 1
        if not math.isfinite(pAp):
            fault = ("non_finite", f"p^T (A + damping I) p is not finite at iteration {it}")
            break
        if pAp <= 0.0:
            info["direction"] = p
            info["curvature"] = pAp / float(_inner(xp, p, p))
            fault = (
                "negative_curvature",
                f"p^T (A + {seed:g} I) p = {pAp:.3e} <= 0 at iteration {it} for the smallest "
                "shift, which drives all shifts: " + _NEGATIVE_CURVATURE_HINT,
            )
            break
        alpha = rr / pAp
        r_next, rr_next = _cg_residual(xp, r, Ap, alpha)
        rr_next = float(rr_next)
        if not math.isfinite(rr_next):
            fault = ("non_finite", f"the residual overflowed at iteration {it}")
            break
        beta = rr_next / rr
        d = delta[cols]
        denom = alpha_prev * zeta_prev * (1.0 + alpha * d) + alpha * beta_prev * (zeta_prev - zeta)
        zeta_next = zeta * zeta_prev * alpha_prev / denom
        ratio = zeta_next / zeta
        shifted.step(r_next, alpha * ratio, beta * ratio * ratio, zeta_next)
        zeta_prev, zeta = zeta, zeta_next
        p = _cg_direction(r_next, p, beta)
        r, rr = r_next, rr_next
        alpha_prev, beta_prev = alpha, beta
        it += 1
        resid = resid.copy()
        resid[cols] = np.abs(zeta) * math.sqrt(rr)
        history.append(resid)
        if bar is not None:  # the largest relative residual of the shifts still iterating
            bar.step(float(np.max(resid[cols])) * inv_bnorm)
        if shifted.full:
            shifted.flush()
        if callback is not None:
            current = list(out)
            for i, j in enumerate(cols):
                current[int(j)] = shifted.X[i, :]
            callback(xp.stack(current, axis=1))
    if fault is not None:
        info["message"] = fault[1]
        retire(np.ones(cols.size, dtype=bool), fault[0])
    info["statuses"] = statuses
    info["iterations_per_shift"] = it_done
    return SolveResult(
        x=xp.stack(out, axis=1),
        converged=np.array([st == "converged" for st in statuses]),
        num_iters=it,
        residual_norms=np.asarray(history, dtype=np.float64),
        status=_worst(statuses),
        num_matvecs=num_matvecs,
        info=info,
    )


# ======================================================================
# Steihaug-Toint trust-region CG
# ======================================================================


def steihaug_cg(
    A, g, radius, *, damping=0.0, M=None, rtol=1e-6, atol=0.0, maxiter=None, callback=None,
    progress=False,
):
    r"""Steihaug-Toint truncated CG for the trust-region subproblem.

    Approximately solves

    .. math::

        \min_p\; m(p) = g^\top p + \tfrac12 p^\top (A + \lambda I) p
        \quad\text{subject to}\quad \|p\| \le \Delta

    by CG on :math:`(A+\lambda I)p = -g` from :math:`p_0 = 0`, stopping at
    the boundary when a step leaves the region or a direction of
    non-positive curvature appears.  :math:`A` may be indefinite.

    Parameters
    ----------
    A : LinearOperator, array or sparse matrix
        Symmetric ``n``-by-``n`` model Hessian (indefinite allowed).
    g : array, shape (n,)
        The gradient.
    radius : float
        Trust-region radius :math:`\Delta > 0`.
    damping : float
        :math:`\lambda` added to ``A``.
    M : LinearOperator, array or callable, optional
        Symmetric positive definite preconditioner :math:`M \approx
        (A+\lambda I)^{-1}`; the trust region is then measured in the norm
        :math:`\|p\|_{M^{-1}} = (p^\top M^{-1} p)^{1/2}`, computed by
        recurrences without applying :math:`M^{-1}`.
    rtol, atol : float
        Interior convergence when
        :math:`\|g + (A+\lambda I)p\| \le \max(\mathrm{atol}, \mathrm{rtol}\|g\|)`
        (Newton-CG codes pass a forcing term here, e.g. ``rtol=min(0.5, sqrt(‖g‖))``).
    maxiter : int, optional
        Iteration limit; ``n`` by default.
    callback : callable, optional
        ``callback(p)`` after every interior iteration (the solver's own
        array, updated in place later: copy it to keep it).
    progress : bool
        Show a tqdm progress bar (optional dependency: ``pip install
        'matfree-hessian[progress]'``) counting iterations up to ``maxiter``,
        with the relative residual :math:`\|g + (A+\lambda I)p\|/\|g\|` as
        ``rel_res`` (already on the host each iteration; refreshed at most
        ten times a second).

    Returns
    -------
    SolveResult
        ``x`` is the step :math:`p`.  ``status``: ``"converged"`` (interior
        solution), ``"boundary"`` (a positive-curvature step reached
        :math:`\|p\| = \Delta`), ``"negative_curvature"`` (stopped on the
        boundary along a direction :math:`d` with :math:`d^\top(A+\lambda I)d\le 0`),
        ``"maxiter"``, ``"non_finite"`` or ``"indefinite_preconditioner"``.
        ``converged`` is true for the first three.  ``info`` holds
        ``hit_boundary``, ``negative_curvature``, ``direction`` (when met),
        ``model_value`` :math:`m(p)`, ``model_decrease`` :math:`-m(p)`,
        ``step_norm`` (in the trust-region norm) and ``radius``.

    Raises
    ------
    ValueError
        ``radius`` not positive and finite; shape mismatches; NaN/Inf in ``g``.
    TypeError
        Bad types or arrays of another library.
    ImportError
        ``progress=True`` without tqdm installed.

    See Also
    --------
    cg : The same iteration without a trust region.
    minres : Symmetric indefinite systems.

    Notes
    -----
    With :math:`r_j = -(g + (A+\lambda I)s_j)`, :math:`z_j = M r_j` and the CG
    directions :math:`d_j`, the step :math:`s_j` grows monotonically in norm
    and :math:`m(s_j)` decreases monotonically (Steihaug 1983, Thm 2.1).
    When :math:`\kappa_j = d_j^\top(A+\lambda I)d_j \le 0`, the method returns
    :math:`s_j + \tau d_j` with :math:`\|s_j + \tau d_j\| = \Delta`, choosing
    of the two roots the one of smaller model value
    :math:`m(s_j) - \tau\, d_j^\top r_j + \tfrac12\tau^2\kappa_j`.  The first
    iterate is the Cauchy point, so the model decrease is at least the
    Cauchy decrease :math:`\tfrac12\|g\|\min(\Delta, \|g\|/\|A+\lambda I\|)`.

    References
    ----------
    .. [1] T. Steihaug, "The conjugate gradient method and trust regions in
       large scale optimization", SIAM J. Numer. Anal. 20 (1983).
       doi:10.1137/0720042
    .. [2] Ph. L. Toint, "Towards an efficient sparsity exploiting Newton
       method for minimization", in Sparse Matrices and Their Uses (1981).
    .. [3] J. Nocedal, S. J. Wright, Numerical Optimization, 2nd ed.,
       Springer (2006), Algorithm 7.2. doi:10.1007/978-0-387-40065-5
    .. [4] A. R. Conn, N. I. M. Gould, Ph. L. Toint, Trust-Region Methods,
       SIAM (2000), Algorithm 7.5.1. doi:10.1137/1.9780898719857

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.solvers import steihaug_cg
    >>> A = np.diag([2.0, -1.0])  # indefinite
    >>> g = np.array([1.0, 1.0])
    >>> res = steihaug_cg(A, g, radius=10.0)
    >>> res.status, round(float(np.linalg.norm(res.x)), 12)
    ('negative_curvature', 10.0)
    """
    A = _square_operator(A)
    g, xp, dtype, dev = _rhs(A, g, "g", (1,))
    radius = _real(radius, "radius")
    if not radius > 0.0:
        raise ValueError(f"radius={radius} must be positive; expected 0 < radius < inf")
    shift = _real(damping, "damping")
    rtol, atol = _tolerances(rtol, atol)
    n = A.shape[0]
    maxiter = _maxiter(maxiter, n)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    progress = _check_progress(progress)
    M = _preconditioner(M, A, xp, dtype, dev)
    return _with_progress(
        progress, maxiter, "steihaug_cg", _steihaug,
        A, g, radius, shift, M, rtol, atol, maxiter, callback, xp, dtype,
    )


def _boundary_roots(ss, sd, dd, radius):
    """Both roots ``tau`` of ``‖s + tau d‖² = radius²`` (``ss < radius²``), stably."""
    gap = max(radius * radius - ss, 0.0)
    disc = math.sqrt(sd * sd + dd * gap)
    if sd >= 0.0:
        tau_pos = gap / (sd + disc) if sd + disc > 0.0 else 0.0
        tau_neg = -(sd + disc) / dd
    else:
        tau_pos = (disc - sd) / dd
        tau_neg = -gap / (disc - sd) if disc - sd > 0.0 else 0.0
    return tau_pos, tau_neg


def _steihaug(A, g, radius, shift, M, rtol, atol, maxiter, callback, xp, dtype, bar):
    gnorm = math.sqrt(float(_sqnorm(xp, g)))
    inv_gnorm = float(_inverse(gnorm))
    tol = max(atol, rtol * gnorm)
    info = {"radius": radius, "damping": shift, "tol": tol}
    s = xp.zeros_like(g)
    r = -g
    rr = gnorm * gnorm
    history = [gnorm]
    model = 0.0  # m(s)
    ss = 0.0  # ‖s‖² in the trust-region norm
    d = None
    rho_prev = 1.0
    sd_prev = dd_prev = alpha_prev = 0.0
    num_matvecs, it = 0, 0
    status = "maxiter"

    def finish(step, status, step_model, **extra):
        info.update(extra)
        info.setdefault("hit_boundary", status in ("boundary", "negative_curvature"))
        info.setdefault("negative_curvature", status == "negative_curvature")
        info["model_value"] = step_model
        info["model_decrease"] = -step_model
        info.setdefault("step_norm", math.sqrt(max(ss, 0.0)))
        return SolveResult(
            x=step,
            converged=status in ("converged", "boundary", "negative_curvature"),
            num_iters=it,
            residual_norms=np.asarray(history, dtype=np.float64),
            status=status,
            num_matvecs=num_matvecs,
            info=info,
        )

    while True:
        if math.sqrt(rr) <= tol:
            status = "converged"
            break
        if it >= maxiter:
            break
        z, rho, fault = _preconditioned(M, r, rr, dtype, xp, it)
        if fault is not None:
            return finish(s, fault[0], model, message=fault[1])
        beta = rho / rho_prev
        d = _copy(xp, z) if d is None else _cg_direction(z, d, beta)
        # sd = sᵀW d, dd = dᵀW d in the trust-region norm W (I, or M^{-1} by recurrence)
        if M is None:
            sd, dd = float(_inner(xp, s, d)), float(_inner(xp, d, d))
        elif it == 0:
            sd, dd = 0.0, rho
        else:
            sd, dd = beta * (sd_prev + alpha_prev * dd_prev), rho + beta * beta * dd_prev
        try:
            Hd = _product(A, d, shift, False)
        except NonFiniteError as err:
            num_matvecs += 1
            return finish(s, "non_finite", model, message=str(err))
        num_matvecs += 1
        kappa = float(_inner(xp, d, Hd))
        if not math.isfinite(kappa):
            return finish(s, "non_finite", model, message="d^T (A + damping I) d is not finite")
        dr = float(_inner(xp, d, r))
        if kappa <= 0.0:
            tau_pos, tau_neg = _boundary_roots(ss, sd, dd, radius)
            m_pos = model - tau_pos * dr + 0.5 * tau_pos * tau_pos * kappa
            m_neg = model - tau_neg * dr + 0.5 * tau_neg * tau_neg * kappa
            tau, m_new = (tau_pos, m_pos) if m_pos <= m_neg else (tau_neg, m_neg)
            return finish(
                s + tau * d,
                "negative_curvature",
                m_new,
                direction=d,
                curvature=kappa / dd,
                step_norm=radius,
                message="d^T (A + damping I) d <= 0: stopped on the trust-region boundary",
            )
        alpha = rho / kappa
        if ss + 2.0 * alpha * sd + alpha * alpha * dd >= radius * radius:
            tau, _ = _boundary_roots(ss, sd, dd, radius)
            m_new = model - tau * dr + 0.5 * tau * tau * kappa
            return finish(s + tau * d, "boundary", m_new, step_norm=radius)
        s, r, rr = _cg_update(xp, s, r, d, Hd, alpha)
        rr = float(rr)
        if not math.isfinite(rr):  # kappa was finite, so only an overflow gets here
            return finish(s, "non_finite", model, message="the residual overflowed")
        model = model - alpha * dr + 0.5 * alpha * alpha * kappa
        ss = ss + 2.0 * alpha * sd + alpha * alpha * dd
        if M is None:
            ss = float(_sqnorm(xp, s))
        rho_prev, sd_prev, dd_prev, alpha_prev = rho, sd, dd, alpha
        it += 1
        history.append(math.sqrt(rr))
        if bar is not None:
            bar.step(history[-1] * inv_gnorm)
        if callback is not None:
            callback(s)
    return finish(s, status, model)


# ======================================================================
# MINRES
# ======================================================================


def minres(
    A, b, shift=0.0, *, M=None, x0=None, rtol=1e-6, atol=0.0, maxiter=None, callback=None,
    progress=False,
):
    r"""MINRES (Paige-Saunders) for symmetric, possibly indefinite :math:`(A + \sigma I)x = b`.

    Minimises the residual norm over the Krylov space with one product per
    iteration; robust for indefinite and nearly singular shifted systems,
    which makes it the inner solver of shift-invert eigensolvers.

    Parameters
    ----------
    A : LinearOperator, array or sparse matrix
        Symmetric ``n``-by-``n`` operator (symmetry is assumed, not checked);
        indefinite and singular operators are fine.
    b : array, shape (n,)
        Right-hand side.
    shift : float
        :math:`\sigma` **added** to ``A`` (note: :func:`scipy.sparse.linalg.minres`
        subtracts its ``shift``).  Shift-invert eigensolvers pass
        ``shift=-sigma``.
    M : LinearOperator, array or callable, optional
        Symmetric positive definite preconditioner; residuals are then
        measured in the norm :math:`\|r\|_M = (r^\top M r)^{1/2}`.
    x0 : array, optional
        Starting guess; zero by default.
    rtol, atol : float
        Converged when the MINRES residual estimate satisfies
        :math:`\|r_k\| \le \max(\mathrm{atol}, \mathrm{rtol}\,\|b\|)` (both in
        the :math:`M`-norm when ``M`` is given).
    maxiter : int, optional
        Iteration limit; ``5 n`` by default (as SciPy).
    callback : callable, optional
        ``callback(x)`` after every iteration (the solver's own array,
        updated in place later: copy it to keep it).
    progress : bool
        Show a tqdm progress bar (optional dependency: ``pip install
        'matfree-hessian[progress]'``) counting iterations up to ``maxiter``,
        with the relative residual estimate :math:`\bar\phi_k/\|b\|` (in
        the :math:`M`-norm when preconditioned) as ``rel_res``; it is a
        host scalar of the recurrence, so the bar costs no synchronisation
        (refreshed at most ten times a second).

    Returns
    -------
    SolveResult
        ``status``: ``"converged"``; ``"singular"`` (the residual is
        numerically in the null space of :math:`A+\sigma I`,
        :math:`\|(A+\sigma I)r\| \le \mathrm{rtol}\,\|A+\sigma I\|\,\|r\|`:
        the system is singular and inconsistent, or too ill-conditioned for
        ``rtol``; ``x`` approximates a least-squares solution); ``"ill_conditioned"`` (the condition estimate exceeded
        :math:`0.1/\varepsilon`); ``"maxiter"``; ``"non_finite"``;
        ``"indefinite_preconditioner"``.  ``residual_norms`` holds the
        residual estimates :math:`\bar\phi_k`; ``info`` has the estimates
        ``"Anorm"``, ``"Acond"``, ``"Arnorm"`` (:math:`\|(A+\sigma I)r\|`).

    Raises
    ------
    ValueError
        Shape mismatches (``b`` must be 1-D); NaN/Inf in ``b`` or ``x0``;
        bad tolerances.
    TypeError
        Bad types or arrays of another library.
    ImportError
        ``progress=True`` without tqdm installed.

    See Also
    --------
    cg : Faster for positive definite systems.
    steihaug_cg : Indefinite model Hessians in a trust region.

    Notes
    -----
    The Lanczos process on :math:`A+\sigma I` (preconditioned by :math:`M`)
    gives :math:`(A+\sigma I)V_k = V_{k+1}\underline{T}_k`; MINRES minimises
    :math:`\|\beta_1 e_1 - \underline{T}_k y\|` by Givens rotations and updates
    :math:`x_k = x_{k-1} + \phi_k w_k` with short recurrences, so the residual
    norm :math:`\bar\phi_k` decreases monotonically and is known without
    forming the residual.  The order of operations is that of
    :func:`scipy.sparse.linalg.minres`.

    References
    ----------
    .. [1] C. C. Paige, M. A. Saunders, "Solution of sparse indefinite
       systems of linear equations", SIAM J. Numer. Anal. 12 (1975).
       doi:10.1137/0712047
    .. [2] S.-C. T. Choi, C. C. Paige, M. A. Saunders, "MINRES-QLP: a Krylov
       subspace method for indefinite or singular symmetric systems",
       SIAM J. Sci. Comput. 33 (2011). doi:10.1137/100787921

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.solvers import minres
    >>> A = np.diag([3.0, 1.0, -2.0])
    >>> b = np.ones(3)
    >>> res = minres(A, b, shift=0.5, rtol=1e-12)
    >>> res.status, np.round(res.x, 6)
    ('converged', array([ 0.285714,  0.666667, -0.666667]))
    """
    A = _square_operator(A)
    b, xp, dtype, dev = _rhs(A, b, "b", (1,))
    shift = _real(shift, "shift")
    rtol, atol = _tolerances(rtol, atol)
    n = A.shape[0]
    maxiter = _maxiter(maxiter, 5 * n)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    progress = _check_progress(progress)
    M = _preconditioner(M, A, xp, dtype, dev)
    x0 = _x0(x0, b, xp, dtype, dev)
    return _with_progress(
        progress, maxiter, "minres", _minres,
        A, b, shift, M, x0, rtol, atol, maxiter, callback, xp, dtype,
    )


def _minres(A, b, shift, M, x, rtol, atol, maxiter, callback, xp, dtype, bar):
    eps = float(xp.finfo(dtype).eps)
    info = {"shift": shift}
    num_matvecs = 0
    history = []

    def done(status, it, message=None):
        if message is not None:
            info["message"] = message
        return SolveResult(
            x=x,
            converged=status == "converged",
            num_iters=it,
            residual_norms=np.asarray(history, dtype=np.float64),
            status=status,
            num_matvecs=num_matvecs,
            info=info,
        )

    def prec(v):
        return v if M is None else _precondition(M, v, dtype, xp, False)

    try:
        if x is None:
            x = xp.zeros_like(b)
            r1 = b
        else:
            num_matvecs += 1
            r1 = b - _product(A, x, shift, False)
        y = prec(r1)
    except NonFiniteError as err:
        return done("non_finite", 0, str(err))
    beta1 = float(_inner(xp, r1, y))
    if not math.isfinite(beta1):
        return done("non_finite", 0, "the initial residual is not finite")
    if beta1 < 0.0:
        return done("indefinite_preconditioner", 0, f"r^T M r = {beta1:.3e} < 0")
    # reference norm of b (in the M-norm when preconditioned)
    if M is None:
        bnorm = math.sqrt(float(_sqnorm(xp, b)))
    elif num_matvecs == 0:
        bnorm = math.sqrt(beta1)
    else:
        try:
            bnorm = math.sqrt(max(float(_inner(xp, b, prec(b))), 0.0))
        except NonFiniteError as err:
            return done("non_finite", 0, str(err))
    tol = max(atol, rtol * bnorm)
    info["tol"] = tol
    inv_bnorm = float(_inverse(bnorm))
    beta1 = math.sqrt(beta1)
    history.append(beta1)
    if beta1 <= tol:
        return done("converged", 0)

    oldb, beta, dbar, epsln, phibar = 0.0, beta1, 0.0, 0.0, beta1
    tnorm2, gmax, gmin = 0.0, 0.0, math.inf
    cs, sn = -1.0, 0.0
    w = xp.zeros_like(b)
    w2 = xp.zeros_like(b)
    r2 = r1
    it = 0
    Anorm = Acond = Arnorm = 0.0
    status = "maxiter"
    while it < maxiter:
        it += 1
        v = (1.0 / beta) * y
        try:
            num_matvecs += 1
            y = _product(A, v, shift, False)
            if it >= 2:
                y = y - (beta / oldb) * r1
            alfa = float(_inner(xp, v, y))
            y = y - (alfa / beta) * r2
            r1, r2 = r2, y
            y = prec(r2)
        except NonFiniteError as err:
            it -= 1
            return done("non_finite", it, str(err))
        oldb = beta
        beta2 = float(_inner(xp, r2, y))
        if not (math.isfinite(alfa) and math.isfinite(beta2)):
            it -= 1
            return done("non_finite", it, f"a Lanczos coefficient is not finite at iteration {it}")
        if beta2 < 0.0:
            it -= 1
            return done(
                "indefinite_preconditioner",
                it,
                f"r^T M r = {beta2:.3e} < 0: M is not positive definite (or A is not symmetric)",
            )
        beta = math.sqrt(beta2)
        tnorm2 += alfa * alfa + oldb * oldb + beta * beta
        # apply the previous rotation, then compute the next one
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        root = math.hypot(gbar, dbar)
        Arnorm = phibar * root  # ‖(A + σI) r‖ of the current iterate
        gamma = max(math.hypot(gbar, beta), eps)
        Anorm = math.sqrt(tnorm2)
        Acond = max(gmax, gamma) / min(gmin, gamma)
        info.update(Anorm=Anorm, Acond=Acond, Arnorm=Arnorm)
        # Both tests look at the current iterate before it is updated: in a
        # singular or numerically singular system the pivot gamma is ~0 and
        # the update would throw x far along the null space (the known
        # failure of MINRES that MINRES-QLP repairs), so x stays as it is.
        if root <= max(rtol, 10.0 * eps) * Anorm:
            status, it = "singular", it - 1
            info["message"] = (
                "||(A + shift I) r|| <= rtol ||A + shift I|| ||r||: the residual is "
                "numerically in the null space, the system is singular and inconsistent "
                "(or too ill-conditioned for rtol); x approximates a least-squares solution"
            )
            break
        if Acond >= 0.1 / eps:
            status, it = "ill_conditioned", it - 1
            info["message"] = f"the condition estimate {Acond:.2e} exceeds 0.1/eps"
            break
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        x, w = _minres_update(x, v, w1, w2, oldeps, delta, gamma, phi)
        gmax, gmin = max(gmax, gamma), min(gmin, gamma)
        history.append(phibar)
        if bar is not None:
            bar.step(phibar * inv_bnorm)
        if callback is not None:
            callback(x)
        if phibar <= tol:
            status = "converged"
            break
        if beta == 0.0:  # invariant Krylov space: x is final (phibar is 0 unless singular)
            status = "singular"
            info["message"] = "Lanczos breakdown with a nonzero residual: the system is singular"
            break
    return done(status, it)
