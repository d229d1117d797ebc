"""Quasi-Newton curvature operators: L-BFGS, L-SR1 and DFP.

Each class collects curvature pairs ``(s, y)`` -- a step and the change of
gradient along it, ``y ≈ H s`` -- through ``update(s, y)`` and turns them into
symmetric :class:`~matfree.operators.LinearOperator` approximations of the
Hessian (``.hessian()``) and of its inverse (``.inverse_hessian()``).  The
operators are snapshots of the pairs at the time of the call; they are plain
operators with ``matvec``/``matmat``, so the solvers take them as
preconditioners (``M=``), and they solve exactly with each other
(``B.solve(b) == H @ b``).

* :class:`LBFGS` -- limited-memory BFGS: two-loop recursion for the inverse,
  compact representation (Byrd, Nocedal, Schnabel 1994) for the Hessian; both
  positive definite.  Pairs violating ``sᵀy > ε‖s‖‖y‖`` are skipped.
* :class:`LSR1` -- limited-memory symmetric rank-one, compact forward and
  inverse representations; may be indefinite.  Standard skipping rule.
* :class:`DFP` -- Davidon-Fletcher-Powell, a rank-two update of the inverse
  Hessian, kept as ``γI`` plus two rank-one terms per pair; positive
  definite.

The operators live in the namespace, on the device and in the dtype of the
pairs.  Products cost ``O(m n)`` for ``m`` stored pairs.

Backends: NumPy, CuPy, PyTorch, JAX and array-api-strict.
"""

from __future__ import annotations

import functools
import math
import numbers

from matfree import _backend as B
from matfree.operators import LinearOperator

__all__ = ["LBFGS", "LSR1", "DFP"]


# ======================================================================
# Operators
# ======================================================================


class _Compact(LinearOperator):
    """``σ I + W M⁻¹ Wᵀ`` with ``W`` (n×p) and a small symmetric ``M`` (p×p).

    The compact form of all three quasi-Newton matrices.  Products cost
    ``O(p n)``; ``(σ + shift) I + W M⁻¹ Wᵀ`` solves exactly by Woodbury,
    ``x = (b − W (aM + WᵀW)⁻¹ Wᵀ b) / a`` with ``a = σ + shift``; and its
    inverse is again compact: ``σ⁻¹ I + W (−σ(σM + WᵀW))⁻¹ Wᵀ``.
    """

    def __init__(self, sigma, W, M, xp, device, dtype, *, name, positive_definite=False):
        n = int(W.shape[0])
        super().__init__(
            (n, n), dtype, xp, device, symmetric=True, positive_definite=positive_definite
        )
        self.sigma, self.W, self.M, self.name = float(sigma), W, M, name
        self._Minv = xp.linalg.inv(M) if W.shape[1] else None

    def __repr__(self):
        return super().__repr__()[:-1] + f", {self.name}, {int(self.W.shape[1])} terms>"

    def _cast(self, dtype):
        xp = self.xp
        W, Minv = self.W, self._Minv
        if W.dtype != dtype:
            W, Minv = xp.astype(W, dtype), xp.astype(Minv, dtype)
        return W, Minv

    def _matmat(self, V):
        if self._Minv is None:
            return self.sigma * V
        W, Minv = self._cast(V.dtype)
        return self.sigma * V + W @ (Minv @ (self.xp.matrix_transpose(W) @ V))

    def _matvec(self, v):
        return self._matmat(v[:, None])[:, 0]

    def diagonal(self):
        xp = self.xp
        diag = xp.full((self.shape[0],), self.sigma, dtype=self.dtype, device=self.device)
        if self._Minv is None:
            return diag
        return diag + xp.sum((self.W @ self._Minv) * self.W, axis=1)

    def trace(self):
        xp = self.xp
        total = xp.asarray(self.sigma * self.shape[0], dtype=self.dtype, device=self.device)
        if self._Minv is None:
            return total
        WtW = xp.matrix_transpose(self.W) @ self.W
        return total + xp.sum(self._Minv * WtW)

    def _shifted_solve(self, b, shift):
        a = self.sigma + float(shift)
        if a == 0.0:
            raise ZeroDivisionError(f"{self.name} + {shift:g} I has a zero scaling")
        if self._Minv is None:
            return b / a
        xp = self.xp
        W = self.W if self.W.dtype == b.dtype else xp.astype(self.W, b.dtype)
        M = self.M if self.M.dtype == b.dtype else xp.astype(self.M, b.dtype)
        Wt = xp.matrix_transpose(W)
        K = a * M + Wt @ W
        rhs = Wt @ (b if b.ndim == 2 else b[:, None])
        corr = W @ xp.linalg.solve(K, rhs)
        return (b - (corr if b.ndim == 2 else corr[:, 0])) / a

    def inverse(self, name):
        """The inverse operator, again in compact form (Woodbury)."""
        xp = self.xp
        if self._Minv is None:
            M = self.M
        else:
            M = -self.sigma * (self.sigma * self.M + xp.matrix_transpose(self.W) @ self.W)
        return _Compact(
            1.0 / self.sigma, self.W, M, xp, self.device, self.dtype,
            name=name, positive_definite=self.positive_definite,
        )


class _TwoLoopInverse(LinearOperator):
    """L-BFGS inverse Hessian ``H`` applied by the two-loop recursion (NW Alg. 7.4)."""

    def __init__(self, S, Y, rho, gamma, forward, n, xp, device, dtype):
        super().__init__((n, n), dtype, xp, device, positive_definite=True)
        self.S, self.Y, self.rho, self.gamma = S, Y, rho, float(gamma)
        self._make_forward = forward  # builds the compact B = H⁻¹, for exact solves
        self._forward = None

    def __repr__(self):
        return super().__repr__()[:-1] + f", L-BFGS inverse Hessian, {len(self.rho)} pairs>"

    def _pairs(self, dtype):
        xp = self.xp
        if self.S and self.S[0].dtype != dtype:
            return [xp.astype(s, dtype) for s in self.S], [xp.astype(y, dtype) for y in self.Y]
        return self.S, self.Y

    def _matmat(self, V):
        xp = self.xp
        S, Y = self._pairs(V.dtype)
        q = V
        alphas = []
        for s, y, rho in zip(reversed(S), reversed(Y), reversed(self.rho)):
            alpha = rho * (xp.matrix_transpose(q) @ s)  # one coefficient per column
            q = q - y[:, None] * alpha[None, :]
            alphas.append(alpha)
        r = self.gamma * q
        for s, y, rho, alpha in zip(S, Y, self.rho, reversed(alphas)):
            beta = rho * (xp.matrix_transpose(r) @ y)
            r = r + s[:, None] * (alpha - beta)[None, :]
        return r

    def _matvec(self, v):
        xp = self.xp
        S, Y = self._pairs(v.dtype)
        q = v
        alphas = []
        for s, y, rho in zip(reversed(S), reversed(Y), reversed(self.rho)):
            alpha = rho * xp.vecdot(s, q)  # 0-D: stays on the device
            q = q - alpha * y
            alphas.append(alpha)
        r = self.gamma * q
        for s, y, rho, alpha in zip(S, Y, self.rho, reversed(alphas)):
            r = r + (alpha - rho * xp.vecdot(y, r)) * s
        return r

    def _shifted_solve(self, b, shift):
        if float(shift) != 0.0:
            raise NotImplementedError(
                "the L-BFGS inverse Hessian solves exactly only without a shift; "
                "solve with LBFGS.hessian() + lam*I instead"
            )
        if self._forward is None:
            self._forward = self._make_forward()
        return self._forward.matvec(b) if b.ndim == 1 else self._forward.matmat(b)


# ======================================================================
# Pair storage and validation
# ======================================================================


def _check_memory(m, allow_none):
    if m is None and allow_none:
        return None
    if isinstance(m, bool) or not isinstance(m, numbers.Integral):
        raise TypeError(f"m must be an int{' or None' if allow_none else ''}, got {type(m).__name__}")
    if m < 1:
        raise ValueError(f"m={m} must be >= 1 (the number of curvature pairs kept)")
    return int(m)


def _check_gamma(gamma):
    if isinstance(gamma, str):
        if gamma != "auto":
            raise ValueError(f"gamma={gamma!r} is not known; expected 'auto' or a positive float")
        return gamma
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"gamma must be 'auto' or a positive float, got {type(gamma).__name__}")
    gamma = float(gamma)
    if not (math.isfinite(gamma) and gamma > 0.0):
        raise ValueError(f"gamma={gamma} must be 'auto' or a positive finite float")
    return gamma


def _check_tol(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value} is out of range; expected 0 <= {name} < 1")
    return value


class _QuasiNewton:
    """Curvature-pair memory shared by :class:`LBFGS`, :class:`LSR1`, :class:`DFP`."""

    _label = ""

    def __init__(self, m, gamma, like, allow_unlimited=False):
        self.m = _check_memory(m, allow_unlimited)
        self._gamma_option = _check_gamma(gamma)
        self._S, self._Y = [], []
        self.num_updates = 0
        self.num_skipped = 0
        self.xp = self.device = self.dtype = self.n = None
        if like is not None:
            self._adopt(like, "like")

    # ------------------------------------------------------------- state
    def _adopt(self, v, name):
        if not hasattr(v, "shape") or isinstance(v, LinearOperator):
            raise TypeError(f"{name} must be an array, got {type(v).__name__}")
        if v.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array, got shape {tuple(v.shape)}")
        B.check_float_dtype(v.dtype, name)
        self.xp, self.device = B.namespace(v), B.device(v)
        self.dtype, self.n = v.dtype, int(v.shape[0])

    def __len__(self):
        return len(self._S)

    @property
    def num_pairs(self) -> int:
        """Number of pairs currently stored (at most ``m``)."""
        return len(self._S)

    @property
    def pairs(self):
        """The stored pairs ``((s_1, y_1), ...)``, oldest first."""
        return tuple(zip(self._S, self._Y))

    def reset(self):
        """Forget all pairs (the backend and size stay fixed)."""
        self._S, self._Y = [], []
        self._reset_extra()

    def _reset_extra(self):
        pass

    def __repr__(self):
        mem = "unlimited" if self.m is None else self.m
        return (
            f"{type(self).__name__}(m={mem}, pairs={self.num_pairs}, "
            f"updates={self.num_updates}, skipped={self.num_skipped})"
        )

    # -------------------------------------------------------- validation
    def _validate(self, s, y):
        for name, v in (("s", s), ("y", y)):
            if not hasattr(v, "shape") or isinstance(v, LinearOperator):
                raise TypeError(f"{name} must be an array, got {type(v).__name__}")
            if v.ndim != 1:
                raise ValueError(f"{name} must be a 1-D array, got shape {tuple(v.shape)}")
            B.check_float_dtype(v.dtype, name)
        if tuple(s.shape) != tuple(y.shape):
            raise ValueError(
                f"s and y must have the same shape, got {tuple(s.shape)} and {tuple(y.shape)}"
            )
        xp = B.namespace(s, y)
        if s.dtype != y.dtype:
            raise TypeError(f"s and y must have the same dtype, got {s.dtype} and {y.dtype}")
        if self.xp is None:
            self._adopt(s, "s")
        if xp is not self.xp:
            raise TypeError(
                f"s and y are {xp.__name__} arrays but earlier pairs were "
                f"{self.xp.__name__} arrays; matfree does not convert between libraries"
            )
        if B.device(s) != self.device or B.device(y) != self.device:
            raise ValueError(
                f"s and y are on device {B.device(s)}/{B.device(y)} but earlier "
                f"pairs were on {self.device}; move them explicitly"
            )
        if s.dtype != self.dtype:
            raise TypeError(
                f"s and y have dtype {B.dtype_name(s.dtype)} but earlier pairs "
                f"had {B.dtype_name(self.dtype)}; cast them first"
            )
        if int(s.shape[0]) != self.n:
            raise ValueError(
                f"s and y have length {int(s.shape[0])} but earlier pairs (or like=) "
                f"had length {self.n}"
            )
        for name, v in (("s", s), ("y", y)):
            if not bool(xp.all(xp.isfinite(v))):
                raise ValueError(
                    f"{name} contains NaN or Inf; curvature pairs must be finite "
                    "(check the gradient or the line search that produced them)"
                )

    def _need_backend(self):
        if self.xp is None:
            raise ValueError(
                f"{type(self).__name__} has seen no curvature pair yet, so it does not "
                "know the size or backend of its operators; call update(s, y) first "
                "or pass like=x0 to the constructor"
            )

    def _store(self, s, y):
        self._S.append(s)
        self._Y.append(y)
        if self.m is not None and len(self._S) > self.m:
            del self._S[0], self._Y[0]
            return True  # the oldest pair was dropped
        return False

    def _curvature(self, s, y):
        """``sᵀy`` of a valid pair, or ``None`` (counted as skipped) if ``sᵀy <= ε‖s‖‖y‖``."""
        self._validate(s, y)
        xp = self.xp
        sy = _dot(xp, s, y)
        if not sy > self._eps(self.eps) * _norm(xp, s) * _norm(xp, y):
            self.num_skipped += 1
            return None
        return sy

    def _eps(self, value):
        if value is not None:
            return value
        return math.sqrt(float(self.xp.finfo(self.dtype).eps))

    def _stacked(self, cols):
        """Columns as an (n, k) array."""
        return self.xp.stack(cols, axis=1)

    def _compact(self, sigma, W, M, name, positive_definite):
        return _Compact(
            sigma, W, M, self.xp, self.device, self.dtype,
            name=name, positive_definite=positive_definite,
        )

    def _identity_compact(self, sigma, name):
        xp = self.xp
        W = xp.zeros((self.n, 0), dtype=self.dtype, device=self.device)
        M = xp.zeros((0, 0), dtype=self.dtype, device=self.device)
        return self._compact(sigma, W, M, name, True)


def _dot(xp, a, b):
    return float(xp.vecdot(a, b))


def _norm(xp, a):
    return float(xp.linalg.vector_norm(a))


# ======================================================================
# L-BFGS
# ======================================================================


class LBFGS(_QuasiNewton):
    """Limited-memory BFGS approximation of a Hessian and its inverse.

    Keeps the last ``m`` curvature pairs ``(s_i, y_i)`` with
    ``s_iᵀy_i > ε‖s_i‖‖y_i‖``; a pair failing this curvature condition is
    skipped (``update`` returns ``False``) and counted in ``num_skipped``.

    Parameters
    ----------
    m : int, optional
        Memory: number of pairs kept (oldest dropped first).
    gamma : "auto" or float, optional
        Initial inverse Hessian ``H_0 = γ I``.  ``"auto"``:
        ``γ = s_kᵀy_k / y_kᵀy_k`` of the newest pair (1 before any pair).
    eps : float, optional
        ``ε`` of the curvature condition, ``0 <= ε < 1``; default
        ``sqrt(machine epsilon)`` of the pairs' dtype.
    like : array, optional
        A vector fixing size, namespace, device and dtype, so that the
        operators exist (as ``γ I``) before the first pair.

    Attributes
    ----------
    num_updates : int
        Accepted pairs.
    num_skipped : int
        Skipped pairs.

    Raises
    ------
    ValueError
        For ``m < 1``, an unknown ``gamma``, ``eps`` outside ``[0, 1)``; in
        :meth:`update` for pairs of wrong or differing shape, NaN/Inf, another
        device.
    TypeError
        For non-integer ``m``; in :meth:`update` for non-arrays, another
        library or dtype than earlier pairs.

    Notes
    -----
    The inverse is applied by the two-loop recursion (Nocedal-Wright,
    Algorithm 7.4), ``O(mn)`` per vector.  The Hessian uses the compact
    representation of Byrd, Nocedal, Schnabel (1994), eq. (2.17), with
    ``δ = 1/γ``, ``S = [s_i]``, ``Y = [y_i]``, ``L = tril(SᵀY, −1)``,
    ``D = diag(SᵀY)``:

    .. math::

        B = δI - \\begin{bmatrix} δS & Y \\end{bmatrix}
        \\begin{bmatrix} δS^TS & L \\\\ L^T & -D \\end{bmatrix}^{-1}
        \\begin{bmatrix} δS^T \\\\ Y^T \\end{bmatrix}.

    With ``m`` at least the number of updates, ``B`` and ``H = B⁻¹`` equal
    the dense BFGS recursion from ``H_0 = γ I``.

    Backends: NumPy, CuPy, PyTorch, JAX, array-api-strict.

    References
    ----------
    R. H. Byrd, J. Nocedal, R. B. Schnabel, "Representations of quasi-Newton
    matrices and their use in limited memory methods", Math. Programming
    63, 1994. doi:10.1007/BF01582063

    J. Nocedal, S. J. Wright, Numerical Optimization, 2nd ed., Springer 2006,
    Chapters 6-7. doi:10.1007/978-0-387-40065-5

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.quasinewton import LBFGS
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> qn = LBFGS(m=5)
    >>> for s in np.eye(3):
    ...     _ = qn.update(s, A @ s)
    >>> H = qn.inverse_hessian()
    >>> np.round(H @ np.array([1.0, 2.0, 4.0]), 10)
    array([1., 1., 1.])
    >>> np.round(qn.hessian().todense(), 10)
    array([[1., 0., 0.],
           [0., 2., 0.],
           [0., 0., 4.]])
    """

    def __init__(self, m=10, *, gamma="auto", eps=None, like=None):
        super().__init__(m, gamma, like)
        self.eps = _check_tol(eps, "eps")
        self._rho = []

    def _reset_extra(self):
        self._rho = []

    @property
    def gamma(self) -> float:
        """Current scaling ``γ`` of ``H_0 = γ I``."""
        if self._gamma_option != "auto":
            return self._gamma_option
        if not self._S:
            return 1.0
        xp = self.xp
        s, y = self._S[-1], self._Y[-1]
        return _dot(xp, s, y) / _dot(xp, y, y)

    def update(self, s, y):
        """Add the pair ``(s, y)`` unless it fails ``sᵀy > ε‖s‖‖y‖``.

        Parameters
        ----------
        s, y : array, shape (n,)
            Step and gradient change, same library, device and dtype as
            earlier pairs, finite.

        Returns
        -------
        bool
            Whether the pair was accepted.
        """
        sy = self._curvature(s, y)
        if sy is None:
            return False
        self._rho.append(1.0 / sy)
        if self._store(s, y):
            del self._rho[0]
        self.num_updates += 1
        return True

    def hessian(self):
        """The L-BFGS Hessian approximation ``B`` (compact form), a PD LinearOperator.

        Returns
        -------
        LinearOperator
            Symmetric positive definite, on the device of the pairs; it knows
            ``diagonal()``, ``trace()`` and solves ``(B + λI) x = b`` exactly.
        """
        self._need_backend()
        return self._compact_hessian(list(self._S), list(self._Y), self.gamma)

    def _compact_hessian(self, S_list, Y_list, gamma):
        """BNS (1994) eq. (2.17) for the given pairs (a snapshot)."""
        delta = 1.0 / gamma
        if not S_list:
            return self._identity_compact(delta, "L-BFGS Hessian")
        xp = self.xp
        S, Y = self._stacked(S_list), self._stacked(Y_list)
        SY = xp.matrix_transpose(S) @ Y
        L = xp.tril(SY, k=-1)
        D = xp.linalg.diagonal(SY)
        Dm = xp.eye(len(S_list), dtype=self.dtype, device=self.device) * D[None, :]
        top = xp.concat([-delta * (xp.matrix_transpose(S) @ S), -L], axis=1)
        bottom = xp.concat([-xp.matrix_transpose(L), Dm], axis=1)
        M = xp.concat([top, bottom], axis=0)
        W = xp.concat([delta * S, Y], axis=1)
        return self._compact(delta, W, M, "L-BFGS Hessian", True)

    def inverse_hessian(self):
        """The L-BFGS inverse Hessian ``H`` (two-loop recursion), a PD LinearOperator.

        Returns
        -------
        LinearOperator
            Symmetric positive definite, on the device of the pairs;
            ``H.solve(b)`` applies ``B`` exactly.
        """
        self._need_backend()
        S, Y, gamma = list(self._S), list(self._Y), self.gamma
        forward = functools.partial(self._compact_hessian, S, Y, gamma)
        return _TwoLoopInverse(
            S, Y, list(self._rho), gamma, forward, self.n, self.xp, self.device, self.dtype
        )


# ======================================================================
# L-SR1
# ======================================================================


class LSR1(_QuasiNewton):
    """Limited-memory symmetric rank-one (SR1) approximation, forward and inverse.

    Keeps the last ``m`` pairs; the pair ``(s, y)`` is skipped (and counted
    in ``num_skipped``) unless ``|sᵀv| >= r‖s‖‖v‖`` with ``v = y − B s``, and
    also when ``‖v‖ <= sqrt(eps) ‖y‖`` (``B`` already satisfies the secant
    equation to working precision, the update would divide by ~0).  The
    approximation can be indefinite.

    Parameters
    ----------
    m : int, optional
        Memory.
    gamma : "auto" or float, optional
        ``B_0 = I/γ``, ``H_0 = γ I``.  ``"auto"``: ``γ = |sᵀy|/yᵀy`` of the
        first accepted pair (``‖s‖/‖y‖`` if ``sᵀy = 0``), then fixed, so
        that earlier skipping decisions stay valid.
    r : float, optional
        Skipping threshold, ``0 <= r < 1`` (Nocedal-Wright eq. 6.26).
    like : array, optional
        Fixes size and backend before the first pair.

    Attributes
    ----------
    num_updates : int
    num_skipped : int

    Raises
    ------
    ValueError
        As :class:`LBFGS`, and for ``r`` outside ``[0, 1)``.
    TypeError
        As :class:`LBFGS`.

    Notes
    -----
    Compact representations (Byrd, Nocedal, Schnabel 1994, eqs. 5.2, 5.4),
    with ``L = tril(SᵀY, −1)``, ``D = diag(SᵀY)``, ``R = triu(SᵀY)``:

    .. math::

        B = B_0 + (Y - B_0S)(D + L + L^T - S^TB_0S)^{-1}(Y - B_0S)^T,

        H = H_0 + (S - H_0Y)(R + R^T - D - Y^TH_0Y)^{-1}(S - H_0Y)^T.

    With full memory and no skipped update, ``n`` pairs along independent
    directions of a quadratic recover its Hessian exactly.  When the memory
    is full, a new pair is tested against the pairs that remain after the
    oldest is dropped; if those alone give a numerically singular compact
    form (dropping a pair changes the SR1 denominators of the later ones),
    further old pairs are dropped, so the stored pairs always define a
    nonsingular ``B``.

    Backends: NumPy, CuPy, PyTorch, JAX, array-api-strict.

    References
    ----------
    R. H. Byrd, J. Nocedal, R. B. Schnabel, Math. Programming 63, 1994.
    doi:10.1007/BF01582063

    J. Nocedal, S. J. Wright, Numerical Optimization, 2nd ed., Section 6.2.

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.quasinewton import LSR1
    >>> A = np.array([[2.0, 1.0], [1.0, -3.0]])
    >>> qn = LSR1(m=2, gamma=1.0)
    >>> [qn.update(s, A @ s) for s in np.eye(2)]
    [True, True]
    >>> np.round(qn.hessian().todense(), 10)
    array([[ 2.,  1.],
           [ 1., -3.]])
    """

    def __init__(self, m=10, *, gamma="auto", r=1e-8, like=None):
        super().__init__(m, gamma, like)
        self.r = _check_tol(r, "r")
        self._gamma_fixed = None if gamma == "auto" else gamma

    def _reset_extra(self):
        if self._gamma_option == "auto":
            self._gamma_fixed = None

    @property
    def gamma(self) -> float:
        """Scaling ``γ`` of ``H_0 = γ I`` (1 until fixed by the first pair)."""
        return 1.0 if self._gamma_fixed is None else self._gamma_fixed

    def update(self, s, y):
        """Add ``(s, y)`` unless the SR1 skipping rule rejects it.

        Parameters
        ----------
        s, y : array, shape (n,)
            Step and gradient change, same library, device and dtype as
            earlier pairs, finite.

        Returns
        -------
        bool
            Whether the pair was accepted.
        """
        self._validate(s, y)
        xp = self.xp
        gamma = self.gamma
        if self._gamma_fixed is None:
            sy, yy = _dot(xp, s, y), _dot(xp, y, y)
            if yy == 0.0:
                self.num_skipped += 1
                return False
            gamma = abs(sy) / yy if sy != 0.0 else _norm(xp, s) / math.sqrt(yy)
        # test against the pairs that will remain after this update; should
        # dropping the oldest pair leave a singular compact form (possible
        # only after a wrap-around), drop further old pairs until it is not
        start = 1 if self.m is not None and len(self._S) == self.m else 0
        while True:
            Bk = self._forward(gamma, start)
            if Bk is not None:
                break
            start += 1
        v = y - Bk @ s
        nv = _norm(xp, v)
        small = math.sqrt(float(xp.finfo(self.dtype).eps)) * _norm(xp, y)
        if nv <= small or abs(_dot(xp, s, v)) < self.r * _norm(xp, s) * nv:
            self.num_skipped += 1
            return False
        self._gamma_fixed = gamma
        del self._S[:start], self._Y[:start]
        self._store(s, y)
        self.num_updates += 1
        return True

    def _forward(self, gamma, start=0):
        """Compact ``B`` from the pairs ``start:``; ``None`` if numerically singular."""
        delta = 1.0 / gamma
        if len(self._S) <= start:
            return self._identity_compact(delta, "L-SR1 Hessian")
        xp = self.xp
        S, Y = self._stacked(self._S[start:]), self._stacked(self._Y[start:])
        St = xp.matrix_transpose(S)
        SY = St @ Y
        L = xp.tril(SY, k=-1)
        M = xp.tril(SY) + xp.matrix_transpose(L) - delta * (St @ S)
        M = (M + xp.matrix_transpose(M)) / 2
        if self._singular(M):
            return None
        return self._compact(delta, Y - delta * S, M, "L-SR1 Hessian", False)

    def _singular(self, M):
        """Whether the compact middle matrix ``M`` is (numerically) singular."""
        xp = self.xp
        ev = xp.abs(xp.linalg.eigvalsh(M))
        eps = float(xp.finfo(self.dtype).eps)
        return float(xp.min(ev)) <= eps * float(xp.max(ev)) * M.shape[0]

    def _singular_error(self, what):
        return ValueError(
            f"the L-SR1 {what} is singular or numerically so for the stored "
            "pairs (its middle matrix has a near-zero eigenvalue); call "
            "reset() or use a larger memory m"
        )

    def hessian(self):
        """The L-SR1 Hessian approximation ``B`` (compact form).

        Returns
        -------
        LinearOperator
            Symmetric (possibly indefinite); knows ``diagonal()``, ``trace()``,
            and solves ``(B + λI) x = b`` exactly by Woodbury.

        Raises
        ------
        ValueError
            If the compact middle matrix is numerically singular.
        """
        self._need_backend()
        op = self._forward(self.gamma)
        if op is None:
            raise self._singular_error("Hessian")
        return op

    def inverse_hessian(self):
        """The L-SR1 inverse Hessian ``H = B⁻¹`` (compact inverse form).

        Returns
        -------
        LinearOperator
            Symmetric (possibly indefinite).

        Raises
        ------
        ValueError
            If ``B`` is numerically singular (no inverse), detected from the
            compact middle matrix.
        """
        self._need_backend()
        gamma = self.gamma
        if not self._S:
            return self._identity_compact(gamma, "L-SR1 inverse Hessian")
        xp = self.xp
        S, Y = self._stacked(self._S), self._stacked(self._Y)
        Yt = xp.matrix_transpose(Y)
        SY = xp.matrix_transpose(S) @ Y
        R = xp.triu(SY)
        N = R + xp.matrix_transpose(R) - xp.eye(SY.shape[0], dtype=self.dtype, device=self.device) * xp.linalg.diagonal(SY)[None, :]
        N = N - gamma * (Yt @ Y)
        N = (N + xp.matrix_transpose(N)) / 2
        if self._singular(N):
            raise self._singular_error("inverse Hessian")
        return self._compact(gamma, S - gamma * Y, N, "L-SR1 inverse Hessian", False)


# ======================================================================
# DFP
# ======================================================================


class DFP(_QuasiNewton):
    """Davidon-Fletcher-Powell approximation: rank-two updates of the inverse Hessian.

    ``H_{k+1} = H_k − H_k y yᵀ H_k / (yᵀH_k y) + s sᵀ / (yᵀs)``, kept as
    ``γ I`` plus the two rank-one terms of every pair (``u_k = H_k y_k`` is
    stored), so products cost ``O(kn)``.  Pairs failing
    ``sᵀy > ε‖s‖‖y‖`` are skipped, which keeps ``H`` positive definite.

    Parameters
    ----------
    m : int or None, optional
        Memory; ``None`` (default) keeps every pair, i.e. the full DFP
        recursion.  With a limit, the oldest pair is dropped and the ``u_k``
        are recomputed (``O(m² n)`` once per dropped pair).
    gamma : "auto" or float, optional
        ``H_0 = γ I``; ``"auto"``: ``γ = sᵀy/yᵀy`` of the first accepted
        pair, then fixed.
    eps : float, optional
        ``ε`` of the curvature condition; default ``sqrt(machine epsilon)``.
    like : array, optional
        Fixes size and backend before the first pair.

    Attributes
    ----------
    num_updates : int
    num_skipped : int

    Raises
    ------
    ValueError, TypeError
        As :class:`LBFGS`.

    Notes
    -----
    With ``U = [u_k]``,
    ``H = γI + [S\\ U]\\,\\mathrm{diag}(1/(s_k^Ty_k),\\ -1/(y_k^Tu_k))\\,[S\\ U]^T``;
    ``.hessian()`` is its exact inverse ``B = H⁻¹`` by the Woodbury identity,
    again of the form ``γ⁻¹I + W M⁻¹ Wᵀ``.

    Backends: NumPy, CuPy, PyTorch, JAX, array-api-strict.

    References
    ----------
    W. C. Davidon, "Variable metric method for minimization", SIAM J. Optim.
    1(1), 1991 (report of 1959). doi:10.1137/0801001

    R. Fletcher, M. J. D. Powell, "A rapidly convergent descent method for
    minimization", Comput. J. 6(2), 1963. doi:10.1093/comjnl/6.2.163

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.quasinewton import DFP
    >>> A = np.diag([1.0, 3.0])
    >>> qn = DFP(gamma=1.0)
    >>> [qn.update(s, A @ s) for s in np.eye(2)]
    [True, True]
    >>> np.round(qn.inverse_hessian().todense(), 10)
    array([[1.        , 0.        ],
           [0.        , 0.33333333]])
    """

    def __init__(self, m=None, *, gamma="auto", eps=None, like=None):
        super().__init__(m, gamma, like, allow_unlimited=True)
        self.eps = _check_tol(eps, "eps")
        self._gamma_fixed = None if gamma == "auto" else gamma
        self._U, self._sy, self._yu = [], [], []

    def _reset_extra(self):
        self._U, self._sy, self._yu = [], [], []
        if self._gamma_option == "auto":
            self._gamma_fixed = None

    @property
    def gamma(self) -> float:
        """Scaling ``γ`` of ``H_0 = γ I`` (1 until fixed by the first pair)."""
        return 1.0 if self._gamma_fixed is None else self._gamma_fixed

    def _apply_inverse(self, y, k):
        """``H_k y`` from the first ``k`` stored terms."""
        xp = self.xp
        out = self.gamma * y
        for j in range(k):
            s, u = self._S[j], self._U[j]
            out = out + (_dot(xp, s, y) / self._sy[j]) * s - (_dot(xp, u, y) / self._yu[j]) * u
        return out

    def _append_terms(self, s, y):
        u = self._apply_inverse(y, len(self._U))
        self._U.append(u)
        self._sy.append(_dot(self.xp, s, y))
        self._yu.append(_dot(self.xp, y, u))

    def update(self, s, y):
        """Add ``(s, y)`` unless it fails ``sᵀy > ε‖s‖‖y‖``.

        Parameters
        ----------
        s, y : array, shape (n,)
            Step and gradient change, same library, device and dtype as
            earlier pairs, finite.

        Returns
        -------
        bool
            Whether the pair was accepted.
        """
        sy = self._curvature(s, y)
        if sy is None:
            return False
        if self._gamma_fixed is None:
            self._gamma_fixed = sy / _dot(self.xp, y, y)
        if self._store(s, y):
            # the oldest pair left: rebuild every u_k = H_k y_k without it
            self._U, self._sy, self._yu = [], [], []
            for s_k, y_k in zip(self._S, self._Y):
                self._append_terms(s_k, y_k)
        else:
            self._append_terms(s, y)
        self.num_updates += 1
        return True

    def inverse_hessian(self):
        """The DFP inverse Hessian ``H`` (compact: ``γI`` + 2 terms per pair), PD.

        Returns
        -------
        LinearOperator
            Symmetric positive definite; knows ``diagonal()``, ``trace()``
            and solves ``(H + λI) x = b`` exactly.
        """
        self._need_backend()
        if not self._S:
            return self._identity_compact(self.gamma, "DFP inverse Hessian")
        xp = self.xp
        W = xp.concat([self._stacked(self._S), self._stacked(self._U)], axis=1)
        d = xp.asarray(self._sy + [-v for v in self._yu], dtype=self.dtype, device=self.device)
        M = xp.eye(int(d.shape[0]), dtype=self.dtype, device=self.device) * d[None, :]
        return self._compact(self.gamma, W, M, "DFP inverse Hessian", True)

    def hessian(self):
        """The DFP Hessian ``B = H⁻¹`` (Woodbury on the compact inverse), PD.

        Returns
        -------
        LinearOperator
            Symmetric positive definite.
        """
        return self.inverse_hessian().inverse("DFP Hessian")
