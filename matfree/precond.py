r"""Preconditioners for the damped solvers: Jacobi, randomized Nyström, L-BFGS.

Each function returns a symmetric positive definite
:class:`~matfree.LinearOperator` :math:`M \approx (A + \lambda I)^{-1}` that
:func:`matfree.cg`, :func:`matfree.minres` and :func:`matfree.steihaug_cg`
accept as ``M=``.

* :func:`jacobi` -- :math:`\operatorname{diag}(A + \lambda I)^{-1}` from the
  exact diagonal or one estimated by :func:`matfree.diagonal`.
* :func:`nystrom` -- the randomized Nyström preconditioner of Frangella,
  Tropp and Udell (2023), built from :func:`matfree.sketch.nystrom`.
* :func:`lbfgs` -- the L-BFGS inverse Hessian of a set of curvature pairs
  (:class:`matfree.quasinewton.LBFGS`).

Backends: NumPy, CuPy, PyTorch, JAX and array-api-strict arrays.
"""

from __future__ import annotations

import math
import numbers

from matfree import _backend as B
from matfree.operators import Diagonal, LinearOperator, aslinearoperator
from matfree.results import Estimate

__all__ = ["jacobi", "nystrom", "lbfgs"]


def _nonnegative(value, name):
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) or getattr(value, "shape", None) == ()
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value) if isinstance(value, numbers.Real) else float(B.to_numpy(value))
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name}={value} is not allowed; expected a finite {name} >= 0")
    return value


# ======================================================================
# Jacobi
# ======================================================================


def jacobi(diagonal, damping=0.0):
    r"""Jacobi (diagonal) preconditioner :math:`M = \operatorname{diag}(d + \lambda)^{-1}`.

    Cheap (one division per entry) and effective when the operator is badly
    scaled; the diagonal may be exact or a stochastic estimate.

    Parameters
    ----------
    diagonal : array, Estimate or LinearOperator
        The diagonal :math:`d` of :math:`A`: a 1-D array (exact, or estimated,
        e.g. ``matfree.diagonal(A).value``), an :class:`~matfree.Estimate`
        whose ``value`` is the diagonal, or an operator that knows its
        diagonal exactly (``A.diagonal()``).
    damping : float
        :math:`\lambda \ge 0` of the damped system.

    Returns
    -------
    Diagonal
        The positive definite operator :math:`\operatorname{diag}(1/(d_i + \lambda))`.

    Raises
    ------
    ValueError
        If an entry of :math:`d + \lambda` is not positive (an estimated
        diagonal can be; clip it first, e.g. ``xp.maximum(d, floor)``), is
        not finite, or ``diagonal`` is not 1-D; ``damping`` negative.
    TypeError
        If ``diagonal`` is none of the accepted kinds, or an operator that
        does not know its diagonal.

    See Also
    --------
    nystrom : Preconditioner from a low-rank sketch.
    matfree.solvers.cg : Takes the result as ``M``.

    Notes
    -----
    For a symmetric positive definite :math:`A` scaled badly (rows of very
    different size), :math:`M^{1/2}(A+\lambda I)M^{1/2}` has unit diagonal,
    which often removes most of the ill-conditioning (van der Sluis 1969:
    among diagonal scalings it is within a factor of the number of nonzeros
    per row of the best one).

    References
    ----------
    .. [1] A. van der Sluis, "Condition numbers and equilibration of
       matrices", Numer. Math. 14 (1969). doi:10.1007/BF02165096

    Examples
    --------
    >>> import numpy as np, matfree
    >>> from matfree.precond import jacobi
    >>> A = np.array([[100.0, 1.0], [1.0, 1.0]])
    >>> M = jacobi(matfree.Dense(A), damping=0.0)
    >>> M @ np.ones(2)
    array([0.01, 1.  ])
    """
    damping = _nonnegative(damping, "damping")
    if isinstance(diagonal, Estimate):
        diagonal = diagonal.value
    if isinstance(diagonal, LinearOperator):
        try:
            d = diagonal.diagonal()
        except NotImplementedError:
            raise TypeError(
                f"{type(diagonal).__name__} does not know its diagonal exactly; estimate "
                "it (matfree.diagonal(A).value) and pass the array"
            ) from None
    elif hasattr(diagonal, "shape") and hasattr(diagonal, "dtype"):
        d = diagonal
    else:
        raise TypeError(
            "diagonal must be a 1-D array, an Estimate or a LinearOperator that knows "
            f"its diagonal, got {type(diagonal).__name__}"
        )
    if d.ndim != 1:
        raise ValueError(f"diagonal must be 1-D, got shape {tuple(d.shape)}")
    B.check_float_dtype(d.dtype, "diagonal")
    xp = B.namespace(d)
    shifted = d + damping if damping else d
    if not bool(xp.all(xp.isfinite(shifted))):
        raise ValueError("diagonal contains NaN or Inf; expected finite entries")
    bad = shifted <= 0
    if bool(xp.any(bad)):
        count = int(xp.sum(xp.astype(bad, xp.int64)))
        smallest = float(xp.min(shifted))
        raise ValueError(
            f"diagonal + damping has {count} entries <= 0 (smallest {smallest:.3e}); a "
            "Jacobi preconditioner needs positive entries: increase damping or clip an "
            "estimated diagonal from below"
        )
    return Diagonal(1.0 / shifted)


# ======================================================================
# Randomized Nyström
# ======================================================================


class NystromPreconditioner(LinearOperator):
    r"""The inverse Nyström preconditioner :math:`P^{-1}` of Frangella-Tropp-Udell.

    .. math::

        P^{-1} = (\hat\lambda_r + \mu)\, U(\hat\Lambda + \mu I)^{-1}U^\top
                 + (I - UU^\top)

    for a Nyström approximation :math:`\hat A = U\hat\Lambda U^\top` with
    orthonormal :math:`U` (n×r) and eigenvalues :math:`\hat\lambda_1 \ge
    \dots \ge \hat\lambda_r \ge 0`.  Build it with :func:`nystrom`.

    Parameters
    ----------
    U : array, shape (n, r)
        Orthonormal eigenvector estimates.
    s : array, shape (r,)
        Eigenvalue estimates, descending, ``>= 0``.
    damping : float
        :math:`\mu`; ``s[-1] + damping`` must be positive.
    setup_matvecs : int
        Products spent on the sketch (for reporting).

    Attributes
    ----------
    U : array, shape (n, r)
    s : array, shape (r,)
        The eigenvalues :math:`\hat\lambda`.
    damping : float
        :math:`\mu`.
    setup_matvecs : int
        Products with ``A`` spent on the sketch.

    See Also
    --------
    nystrom : Builds it from an operator.

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.precond import NystromPreconditioner
    >>> U = np.eye(3)[:, :2]
    >>> P_inv = NystromPreconditioner(U, np.array([4.0, 1.0]), damping=1.0)
    >>> P_inv @ np.ones(3)     # (1 + 1)/(4 + 1), (1 + 1)/(1 + 1), 1
    array([0.4, 1. , 1. ])
    """

    def __init__(self, U, s, damping, setup_matvecs=0):
        xp = B.namespace(U, s)
        super().__init__(
            (U.shape[0], U.shape[0]), U.dtype, xp, B.device(U), positive_definite=True
        )
        self.U, self.s, self.damping = U, s, float(damping)
        self.setup_matvecs = int(setup_matvecs)
        # P^{-1} = I + U diag(c - 1) Uᵀ with c_i = (λ_r + μ)/(λ_i + μ) in (0, 1]
        self._c = (s[-1] + self.damping) / (s + self.damping)

    @property
    def rank(self) -> int:
        """Number of columns ``r`` of ``U``."""
        return int(self.s.shape[0])

    def _cast(self, dtype):
        xp = self.xp
        return tuple(a if a.dtype == dtype else xp.astype(a, dtype) for a in (self.U, self._c))

    def _matvec(self, v):
        U, c = self._cast(v.dtype)
        return v + U @ ((c - 1.0) * (self.xp.matrix_transpose(U) @ v))

    def _matmat(self, V):
        U, c = self._cast(V.dtype)
        return V + U @ ((c - 1.0)[:, None] * (self.xp.matrix_transpose(U) @ V))

    def _shifted_solve(self, b, shift):
        # (P^{-1} + σI)^{-1} = U diag(1/(c + σ)) Uᵀ + (I - UUᵀ)/(1 + σ)
        U, c = self._cast(b.dtype)
        if 1.0 + shift <= 0.0 or bool(self.xp.any(c + shift <= 0)):
            raise ZeroDivisionError(f"P^-1 + {shift} I is singular or indefinite")
        coef = 1.0 / (c + shift) - 1.0 / (1.0 + shift)
        Utb = self.xp.matrix_transpose(U) @ b
        scaled = coef * Utb if b.ndim == 1 else coef[:, None] * Utb
        return b / (1.0 + shift) + U @ scaled

    def __repr__(self):
        return super().__repr__()[:-1] + f", rank={self.rank}, damping={self.damping:g}>"


def nystrom(A, rank, damping, rng=None, *, oversample=10):
    r"""Randomized Nyström preconditioner for :math:`A + \mu I` (Frangella-Tropp-Udell 2023).

    A rank-``rank`` Nyström sketch of ``A`` (``rank + oversample`` products,
    one block) captures the top of the spectrum; the preconditioner inverts
    the damped operator there and leaves the rest alone.

    Parameters
    ----------
    A : LinearOperator or array, shape (n, n)
        Symmetric positive semidefinite.
    rank : int
        Rank :math:`r` of the Nyström approximation, ``1 <= rank < n``.  FTU
        recommend :math:`r \approx 2\,d_{\mathrm{eff}}(\mu)`, the effective
        dimension :math:`\sum_i \lambda_i/(\lambda_i + \mu)`.
    damping : float
        :math:`\mu \ge 0` (with ``damping=0`` the sketch must have no zero
        eigenvalue).
    rng : None, int, numpy.random.Generator or backend generator
        Source of the random test matrix (SPEC 7).
    oversample : int
        Extra sketch columns (the sketch spends ``rank + oversample`` products).

    Returns
    -------
    NystromPreconditioner
        :math:`P^{-1}`, symmetric positive definite; ``setup_matvecs`` holds
        the products spent.

    Raises
    ------
    ValueError
        ``rank`` out of range, ``damping`` negative, ``damping=0`` with a
        zero eigenvalue in the sketch, or ``A`` visibly not PSD (from
        :func:`matfree.sketch.nystrom`).
    TypeError
        ``rank`` not an int.

    See Also
    --------
    NystromPreconditioner : The returned operator.
    matfree.sketch.nystrom : The sketch it is built from.
    matfree.solvers.cg : Takes the result as ``M``.

    Notes
    -----
    With :math:`\hat A = U\hat\Lambda U^\top` the rank-:math:`r` Nyström
    approximation,

    .. math::

        P = \frac{1}{\hat\lambda_r + \mu} U(\hat\Lambda + \mu I)U^\top + (I - UU^\top),
        \qquad
        P^{-1} = (\hat\lambda_r + \mu)\, U(\hat\Lambda + \mu I)^{-1}U^\top + (I - UU^\top).

    On the range of :math:`U` the preconditioned operator has eigenvalues
    :math:`\approx\hat\lambda_r+\mu`, on its complement those of
    :math:`A + \mu I` below :math:`\lambda_{r+1}+\mu`; when
    :math:`r \ge 2\lceil 1.5\, d_{\mathrm{eff}}(\mu)\rceil + 1`, the condition
    number of :math:`P^{-1/2}(A+\mu I)P^{-1/2}` is at most 28 in expectation
    (FTU 2023, Thm 5.1), so PCG converges in a number of iterations
    independent of :math:`\mu`.  Applying :math:`P^{-1}` costs :math:`O(nr)`.

    References
    ----------
    .. [1] Z. Frangella, J. A. Tropp, M. Udell, "Randomized Nyström
       preconditioning", SIAM J. Matrix Anal. Appl. 44 (2023).
       doi:10.1137/21M1466244
    .. [2] J. A. Tropp, A. Yurtsever, M. Udell, V. Cevher, "Fixed-rank
       approximation of a positive-semidefinite matrix from streaming data",
       NeurIPS 2017. arXiv:1706.05736

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.solvers import cg
    >>> from matfree.precond import nystrom
    >>> rng = np.random.default_rng(0)
    >>> G = rng.standard_normal((200, 200)) * 0.5 ** np.arange(200)
    >>> A = G @ G.T                      # fast-decaying spectrum
    >>> b = rng.standard_normal(200)
    >>> M = nystrom(A, rank=30, damping=1e-6, rng=1)
    >>> plain = cg(A, b, damping=1e-6, rtol=1e-8)
    >>> pcg = cg(A, b, damping=1e-6, M=M, rtol=1e-8)
    >>> bool(pcg.num_iters * 5 <= plain.num_iters)
    True
    """
    from matfree import sketch

    damping = _nonnegative(damping, "damping")
    A = aslinearoperator(A)
    approx = sketch.nystrom(A, rank, oversample=oversample, rng=rng)
    U, s = approx.U, approx.s
    xp = B.namespace(s)
    # the smallest kept eigenvalue plus damping scales the whole preconditioner;
    # it must not be zero at the working precision
    floor = A.shape[0] * float(xp.finfo(s.dtype).eps) * float(s[0])
    if not float(s[-1]) + damping > floor:
        raise ValueError(
            f"damping={damping:g} and the Nyström sketch has a (numerically) zero "
            f"eigenvalue {float(s[-1]):.2e}; the preconditioner needs damping > 0 or a "
            "rank below the numerical rank of A"
        )
    setup = min(int(rank) + int(oversample), A.shape[0])
    return NystromPreconditioner(U, s, damping, setup_matvecs=setup)


# ======================================================================
# L-BFGS
# ======================================================================


def _pairs(pairs, name):
    """Curvature vectors from a sequence of 1-D arrays or an (n, m) array of columns."""
    if hasattr(pairs, "shape") and hasattr(pairs, "ndim"):
        if pairs.ndim == 1:
            return [pairs]
        if pairs.ndim != 2:
            raise ValueError(
                f"{name} must be a sequence of 1-D arrays or a 2-D array of columns, "
                f"got shape {tuple(pairs.shape)}"
            )
        return [pairs[:, j] for j in range(pairs.shape[1])]
    if isinstance(pairs, (list, tuple)):
        return list(pairs)
    raise TypeError(
        f"{name} must be a sequence of 1-D arrays or a 2-D array of columns, "
        f"got {type(pairs).__name__}"
    )


def lbfgs(s_pairs, y_pairs, *, gamma="auto"):
    r"""L-BFGS inverse-Hessian preconditioner from curvature pairs.

    Pairs :math:`(s_i, y_i \approx A s_i)` from earlier solves or optimiser
    steps define a positive definite approximation of :math:`A^{-1}` that
    costs :math:`O(mn)` per product.

    Parameters
    ----------
    s_pairs, y_pairs : sequence of 1-D arrays, or 2-D array of shape (n, m)
        Steps :math:`s_i` and gradient changes :math:`y_i \approx A s_i`,
        oldest first (columns of a 2-D array are pairs).  For a damped system
        use :math:`y_i = (A + \lambda I) s_i`.
    gamma : "auto" or float
        Initial inverse Hessian :math:`H_0 = \gamma I`; ``"auto"`` takes
        :math:`s^\top y / y^\top y` of the newest pair.

    Returns
    -------
    LinearOperator
        :meth:`matfree.quasinewton.LBFGS.inverse_hessian` of an
        :class:`~matfree.quasinewton.LBFGS` holding all the pairs: symmetric
        positive definite, applied by the two-loop recursion in
        :math:`O(mn)`.  Pairs failing the curvature condition
        :math:`s^\top y > \varepsilon\|s\|\|y\|` are skipped.

    Raises
    ------
    ValueError
        No pairs, different numbers of ``s`` and ``y``, pairs of wrong shape
        or with NaN/Inf, or no pair satisfying the curvature condition.
    TypeError
        Pairs that are not arrays.

    See Also
    --------
    matfree.quasinewton.LBFGS : The quasi-Newton memory behind it.
    matfree.solvers.cg : Takes the result as ``M``.

    Notes
    -----
    The BFGS update :math:`H_{i+1} = (I - \rho_i s_i y_i^\top) H_i (I - \rho_i
    y_i s_i^\top) + \rho_i s_i s_i^\top`, :math:`\rho_i = 1/y_i^\top s_i`,
    keeps :math:`H` positive definite and makes it exact on the pairs
    (:math:`H_m y_m = s_m`).  Pairs from earlier solves with the same matrix
    (e.g. CG steps :math:`s = \alpha p`, :math:`y = \alpha A p`) make a
    preconditioner for the next ones (Morales & Nocedal 2000).

    References
    ----------
    .. [1] J. Nocedal, S. J. Wright, Numerical Optimization, 2nd ed.,
       Springer (2006), Algorithm 7.4. doi:10.1007/978-0-387-40065-5
    .. [2] J. L. Morales, J. Nocedal, "Automatic preconditioning by limited
       memory quasi-Newton updating", SIAM J. Optim. 10 (2000).
       doi:10.1137/S1052623497327854

    Examples
    --------
    >>> import numpy as np
    >>> from matfree.precond import lbfgs
    >>> A = np.diag([1.0, 10.0, 100.0])
    >>> S = np.eye(3)
    >>> H = lbfgs(S, A @ S)          # three pairs span the space: H = A^{-1}
    >>> np.round(H @ np.ones(3), 10)
    array([1.  , 0.1 , 0.01])
    """
    from matfree.quasinewton import LBFGS

    S = _pairs(s_pairs, "s_pairs")
    Y = _pairs(y_pairs, "y_pairs")
    if len(S) != len(Y):
        raise ValueError(
            f"s_pairs has {len(S)} vectors but y_pairs has {len(Y)}; expected one y per s"
        )
    if not S:
        raise ValueError("s_pairs is empty; expected at least one curvature pair")
    memory = LBFGS(len(S), gamma=gamma)
    for s, y in zip(S, Y):
        memory.update(s, y)
    if memory.num_updates == 0:
        raise ValueError(
            f"none of the {len(S)} pairs satisfies the curvature condition "
            "s^T y > eps ||s|| ||y||; an L-BFGS preconditioner needs positive curvature"
        )
    return memory.inverse_hessian()
