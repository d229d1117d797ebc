"""Linear operators: a matrix known only through its products with vectors.

A :class:`LinearOperator` has a ``shape``, a ``dtype``, the array namespace
``xp`` and ``device`` its vectors live on, and a product with vectors
(``A @ v``) and blocks of vectors (``A @ V``, one call for many columns).
Operators combine lazily: ``A + B``, ``A - B``, ``A @ B``, ``c * A``, ``-A``,
``A.T`` and damping ``A + lam * I`` (:func:`damped`) build new operators
without forming any matrix.

Structured operators know more than a product and say so through
:meth:`LinearOperator.diagonal`, :meth:`LinearOperator.trace` and
:meth:`LinearOperator.solve`; an operator that does not know one of them
raises ``NotImplementedError``, and the estimators of matfree then estimate it.

Properties that algorithms rely on (``symmetric``, ``positive_semidefinite``,
``positive_definite``) are declared by whoever builds the operator, never
guessed by probing; the only exceptions are the array-backed operators, which
check symmetry exactly at construction when it is not given.

Backends: NumPy, CuPy, PyTorch, JAX and array-api-strict arrays.
"""

from __future__ import annotations

import math
import numbers

from matfree import _backend as B

__all__ = [
    "LinearOperator",
    "FunctionOperator",
    "Dense",
    "Diagonal",
    "Identity",
    "LowRank",
    "BlockDiagonal",
    "Sparse",
    "Sum",
    "Scaled",
    "Product",
    "Transpose",
    "Damped",
    "NonFiniteError",
    "aslinearoperator",
    "damped",
]


class NonFiniteError(FloatingPointError):
    """A product with an operator returned NaN or Inf."""


def _shape_str(shape):
    return str(tuple(int(s) for s in shape))


class LinearOperator:
    """Base class of all matfree operators.

    Subclasses implement ``_matvec`` and, where a block product is cheaper
    than a loop over columns, ``_matmat``; non-symmetric operators implement
    ``_rmatvec``.  The public methods check their input, count products and
    apply the dtype rules of :mod:`matfree._backend`.

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)``.
    dtype : dtype
        Dtype of the operator in its namespace (``float32`` or ``float64``);
        ``None`` for an operator that adapts to its input (:class:`Identity`).
    xp : namespace or None
        Array namespace of the vectors the operator takes; ``None`` for one
        that takes any.
    device : device, optional
        Device of those vectors.
    symmetric, positive_semidefinite, positive_definite : bool
        Declared properties.  ``positive_definite`` implies the other two.
    """

    #: operators built from user callables get vectors in their own dtype
    _casts_to_own_dtype = False
    #: make NumPy defer ``ndarray @ A`` and ``numpy_scalar * A`` to us
    __array_ufunc__ = None

    def __init__(
        self,
        shape,
        dtype,
        xp=None,
        device=None,
        *,
        symmetric=False,
        positive_semidefinite=False,
        positive_definite=False,
    ):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError(f"shape={shape!r} is not a 2-D shape of sizes >= 0")
        if dtype is not None:
            B.check_float_dtype(dtype, "the operator")
        self.shape = shape
        self.dtype = dtype
        self.xp = xp
        self.device = device
        self.positive_definite = bool(positive_definite)
        self.positive_semidefinite = bool(positive_semidefinite) or self.positive_definite
        self.symmetric = bool(symmetric) or self.positive_semidefinite
        if self.symmetric and shape[0] != shape[1]:
            raise ValueError(f"an operator of shape {_shape_str(shape)} cannot be symmetric")
        self._num_matvecs = 0

    # ------------------------------------------------------------------ info
    @property
    def num_matvecs(self) -> int:
        """Number of vectors this operator has been applied to (``matmat`` counts columns)."""
        return self._num_matvecs

    def reset_counter(self) -> None:
        """Set :attr:`num_matvecs` back to zero."""
        self._num_matvecs = 0

    @property
    def ndim(self) -> int:
        return 2

    def _flags(self):
        if self.positive_definite:
            return "positive definite"
        if self.positive_semidefinite:
            return "positive semidefinite"
        return "symmetric" if self.symmetric else ""

    def __repr__(self):
        backend = "any" if self.xp is None else self.xp.__name__.replace("array_api_compat.", "")
        dtype = "any" if self.dtype is None else B.dtype_name(self.dtype)
        flags = self._flags()
        flags = f", {flags}" if flags else ""
        return (
            f"<{type(self).__name__} {self.shape[0]}x{self.shape[1]} "
            f"{dtype} on {backend}{flags}>"
        )

    # --------------------------------------------------------------- checks
    def _check_input(self, v, ndim, name, rows):
        if isinstance(v, LinearOperator) or not hasattr(v, "shape"):
            raise TypeError(f"{name} must be an array, got {type(v).__name__}")
        if v.ndim != ndim:
            raise ValueError(
                f"{name} must be {ndim}-D, got an array of shape {_shape_str(v.shape)}"
            )
        if v.shape[0] != rows:
            raise ValueError(
                f"shape mismatch: operator of shape {_shape_str(self.shape)} "
                f"cannot be applied to {name} of shape {_shape_str(v.shape)}"
            )
        B.check_float_dtype(v.dtype, name)
        if self.xp is not None:
            xp = B.namespace(v)
            if xp is not self.xp:
                raise TypeError(
                    f"{name} is a {xp.__name__.replace('array_api_compat.', '')} array "
                    f"but the operator works on {self.xp.__name__.replace('array_api_compat.', '')} "
                    "arrays; matfree does not convert between libraries implicitly"
                )
            if self.device is not None and B.device(v) != self.device:
                raise ValueError(
                    f"{name} is on device {B.device(v)} but the operator is on "
                    f"{self.device}; move it explicitly"
                )

    def _out_dtype(self, v):
        if self.dtype is None:
            return v.dtype
        xp = self.xp if self.xp is not None else B.namespace(v)
        return B.result_dtype(xp, self.dtype, v.dtype)

    def _apply(self, fn, v, name, rows, out_rows, ndim):
        self._check_input(v, ndim, name, rows)
        xp = self.xp if self.xp is not None else B.namespace(v)
        out_dtype = self._out_dtype(v)
        in_dtype = self.dtype if self._casts_to_own_dtype else out_dtype
        if v.dtype != in_dtype:
            v = xp.astype(v, in_dtype)
        w = fn(v)
        self._check_output(w, v, xp, out_rows, name)
        if w.dtype != out_dtype:
            w = xp.astype(w, out_dtype)
        self._num_matvecs += 1 if ndim == 1 else int(v.shape[1])
        return w

    def _check_output(self, w, v, xp, out_rows, name):
        """Validate what a product returned (only user callables need it)."""

    # ------------------------------------------------------------- products
    def matvec(self, v):
        """Product ``A v`` of the operator with a 1-D array ``v``."""
        return self._apply(self._matvec, v, "v", self.shape[1], self.shape[0], 1)

    def matmat(self, V):
        """Product ``A V`` with a 2-D array ``V`` of shape ``(n, k)``."""
        return self._apply(self._matmat, V, "V", self.shape[1], self.shape[0], 2)

    def rmatvec(self, u):
        """Product ``Aᵀ u``."""
        return self._apply(self._rmatvec, u, "u", self.shape[0], self.shape[1], 1)

    def rmatmat(self, U):
        """Product ``Aᵀ U`` with a 2-D array ``U``."""
        return self._apply(self._rmatmat, U, "U", self.shape[0], self.shape[1], 2)

    def _matvec(self, v):
        raise NotImplementedError(f"{type(self).__name__} does not define a product")

    def _matmat(self, V):
        xp = B.namespace(V)
        cols = [self._matvec(V[:, j]) for j in range(V.shape[1])]
        if not cols:
            return xp.zeros((self.shape[0], 0), dtype=V.dtype, device=B.device(V))
        return xp.stack(cols, axis=1)

    def _rmatvec(self, u):
        if self.symmetric:
            return self._matvec(u)
        raise NotImplementedError(
            f"{type(self).__name__} has no transpose product; pass rmatvec= "
            "or declare symmetric=True"
        )

    def _rmatmat(self, U):
        if self.symmetric:
            return self._matmat(U)
        xp = B.namespace(U)
        cols = [self._rmatvec(U[:, j]) for j in range(U.shape[1])]
        if not cols:
            return xp.zeros((self.shape[1], 0), dtype=U.dtype, device=B.device(U))
        return xp.stack(cols, axis=1)

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return Product(self, other)
        ndim = getattr(other, "ndim", None)
        if ndim == 1:
            return self.matvec(other)
        if ndim == 2:
            return self.matmat(other)
        if ndim is None:
            return NotImplemented
        raise ValueError(
            f"A @ x needs a 1-D vector or a 2-D block, got an array of shape {_shape_str(other.shape)}"
        )

    def __rmatmul__(self, other):
        ndim = getattr(other, "ndim", None)
        if ndim == 1:
            return self.rmatvec(other)
        if ndim == 2:
            xp = B.namespace(other)
            return xp.matrix_transpose(self.rmatmat(xp.matrix_transpose(other)))
        return NotImplemented

    # -------------------------------------------------------------- algebra
    def __add__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _add(self, other)

    def __sub__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _add(self, Scaled(-1.0, other))

    def __neg__(self):
        return Scaled(-1.0, self)

    def __mul__(self, c):
        if isinstance(c, numbers.Real) or _is_scalar_array(c):
            return Scaled(c, self)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, c):
        if isinstance(c, numbers.Real) or _is_scalar_array(c):
            c = float(c)
            if c == 0.0:
                raise ZeroDivisionError("division of an operator by zero")
            return Scaled(1.0 / c, self)
        return NotImplemented

    @property
    def T(self):
        """The transpose, lazily (the operator itself when symmetric)."""
        return self if self.symmetric else Transpose(self)

    # ------------------------------------------------------ exact knowledge
    def diagonal(self):
        """The exact diagonal, where the operator knows it.

        Raises
        ------
        NotImplementedError
            When it does not; estimate it with :func:`matfree.diagonal`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not know its diagonal exactly; "
            "estimate it with matfree.diagonal"
        )

    def trace(self):
        """The exact trace as a 0-D array, where the operator knows it.

        Raises
        ------
        NotImplementedError
            When it does not; estimate it with :func:`matfree.trace`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not know its trace exactly; "
            "estimate it with matfree.trace"
        )

    def _trace_of_square(self):
        """``tr(A²)`` as a float for a symmetric operator that knows it exactly, else ``None``.

        For symmetric ``A``, ``tr(A²)`` is the sum of the squared entries.
        Stochastic Lanczos quadrature uses it as a control variate.
        """
        return None

    def solve(self, b):
        """Exact solution of ``A x = b`` (b 1-D or 2-D), where the operator knows it.

        Raises
        ------
        NotImplementedError
            When it does not; use an iterative solver such as :func:`matfree.cg`.
        """
        self._check_input(b, b.ndim if b.ndim in (1, 2) else 1, "b", self.shape[0])
        return self._shifted_solve(b, 0.0)

    def _shifted_solve(self, b, shift):
        """Solve ``(A + shift I) x = b`` exactly or raise NotImplementedError."""
        raise NotImplementedError(
            f"{type(self).__name__} has no exact solve; use an iterative solver "
            "such as matfree.cg or matfree.minres"
        )

    # ---------------------------------------------------------------- dense
    def todense(self):
        """The operator as a dense array (``n`` products; for small problems and tests)."""
        xp = self.xp
        if xp is None:
            raise TypeError(f"{type(self).__name__} has no namespace; apply it to an identity")
        eye = xp.eye(self.shape[1], dtype=self.dtype, device=self.device)
        return self.matmat(eye)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` with the same products (NumPy operators)."""
        import numpy as np
        import scipy.sparse.linalg as spla

        if self.xp is not None and not B.is_numpy(self.xp):
            raise TypeError(
                "to_scipy() needs an operator on NumPy arrays; this one works on "
                f"{self.xp.__name__}"
            )
        op = self
        dtype = np.float64 if self.dtype is None else np.dtype(B.dtype_name(self.dtype))

        class _Wrapped(spla.LinearOperator):
            def __init__(self):
                super().__init__(dtype=dtype, shape=op.shape)

            def _matvec(self, x):
                return op.matvec(np.asarray(x, dtype=dtype).reshape(-1))

            def _rmatvec(self, x):
                return op.rmatvec(np.asarray(x, dtype=dtype).reshape(-1))

            def _matmat(self, X):
                return op.matmat(np.asarray(X, dtype=dtype))

            def _rmatmat(self, X):
                return op.rmatmat(np.asarray(X, dtype=dtype))

        return _Wrapped()

    def check_symmetric(self, rng=None, rtol=None) -> bool:
        """One random test of symmetry: ``uᵀ(Av) == vᵀ(Au)`` (two products).

        Parameters
        ----------
        rng : None, int or Generator
            Source of the two random vectors.
        rtol : float, optional
            Tolerance relative to ``‖u‖ ‖Av‖``; ``sqrt(eps)`` of the dtype by default.
        """
        if self.shape[0] != self.shape[1]:
            return False
        xp, dtype = self._xp_dtype()
        rs = B.random_state(rng, xp, self.device)
        UV = rs.normal((self.shape[0], 2), dtype)
        AUV = self.matmat(UV)
        a = float(xp.vecdot(UV[:, 0], AUV[:, 1]))
        b = float(xp.vecdot(UV[:, 1], AUV[:, 0]))
        scale = float(xp.linalg.vector_norm(UV[:, 0]) * xp.linalg.vector_norm(AUV[:, 1]))
        if rtol is None:
            rtol = math.sqrt(float(xp.finfo(dtype).eps))
        return abs(a - b) <= rtol * max(scale, float(xp.finfo(dtype).tiny))

    def _xp_dtype(self):
        import array_api_compat.numpy as np_xp

        xp = self.xp if self.xp is not None else np_xp
        dtype = self.dtype if self.dtype is not None else xp.float64
        return xp, dtype


def _is_scalar_array(c):
    return getattr(c, "ndim", None) == 0 and getattr(c, "shape", None) == ()


def _common(ops, what):
    """Namespace, device and promoted dtype shared by ``ops`` (a ``what`` operation)."""
    xps = {id(op.xp): op.xp for op in ops if op.xp is not None}
    if len(xps) > 1:
        names = ", ".join(x.__name__ for x in xps.values())
        raise TypeError(f"cannot {what} operators on different array libraries ({names})")
    xp = next(iter(xps.values()), None)
    devices = [op.device for op in ops if op.device is not None]
    if any(d != devices[0] for d in devices[1:]):
        raise ValueError(f"cannot {what} operators on different devices ({devices})")
    dtypes = [op.dtype for op in ops if op.dtype is not None]
    dtype = None
    if dtypes:
        dtype = B.result_dtype(xp, *dtypes) if xp is not None else dtypes[0]
    return xp, (devices[0] if devices else None), dtype


# ======================================================================
# Operators from callables and arrays
# ======================================================================


class FunctionOperator(LinearOperator):
    """An operator given by callables (``matvec``, optionally ``matmat``/``rmatvec``).

    The callables receive arrays in the operator's namespace and dtype and
    must return arrays of the same namespace.  With ``check_finite=True``
    (the default) every product is checked for NaN/Inf, which raises
    :class:`NonFiniteError` naming the operator.

    Use :func:`matfree.from_hvp` to build one from a Hessian-vector product.
    """

    _casts_to_own_dtype = True

    def __init__(
        self,
        matvec,
        shape,
        dtype,
        xp,
        device=None,
        *,
        matmat=None,
        rmatvec=None,
        rmatmat=None,
        symmetric=False,
        positive_semidefinite=False,
        positive_definite=False,
        check_finite=True,
        name=None,
    ):
        if not callable(matvec):
            raise TypeError(f"matvec must be callable, got {type(matvec).__name__}")
        for label, fn in (("matmat", matmat), ("rmatvec", rmatvec), ("rmatmat", rmatmat)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{label} must be callable or None, got {type(fn).__name__}")
        super().__init__(
            shape,
            dtype,
            xp,
            device,
            symmetric=symmetric,
            positive_semidefinite=positive_semidefinite,
            positive_definite=positive_definite,
        )
        self._user_matvec = matvec
        self._user_matmat = matmat
        self._user_rmatvec = rmatvec
        self._user_rmatmat = rmatmat
        self.check_finite = bool(check_finite)
        self.name = name or getattr(matvec, "__name__", "matvec")

    def _check_output(self, w, v, xp, out_rows, name):
        if not hasattr(w, "shape"):
            raise TypeError(
                f"the callable {self.name!r} returned {type(w).__name__}, expected an array"
            )
        if B.namespace(w) is not xp:
            raise TypeError(
                f"the callable {self.name!r} returned an array of another library "
                f"({type(w).__module__}) than its input ({xp.__name__})"
            )
        expected = (out_rows,) if v.ndim == 1 else (out_rows, v.shape[1])
        if tuple(w.shape) != expected:
            raise ValueError(
                f"the callable {self.name!r} returned shape {_shape_str(w.shape)} "
                f"for {name} of shape {_shape_str(v.shape)}; expected {_shape_str(expected)}"
            )
        if self.check_finite and not bool(xp.all(xp.isfinite(w))):
            raise NonFiniteError(
                f"the callable {self.name!r} returned NaN or Inf "
                "(pass check_finite=False to skip this check)"
            )

    def _matvec(self, v):
        return self._user_matvec(v)

    def _matmat(self, V):
        if self._user_matmat is not None:
            return self._user_matmat(V)
        return super()._matmat(V)

    def _rmatvec(self, u):
        if self._user_rmatvec is not None:
            return self._user_rmatvec(u)
        return super()._rmatvec(u)

    def _rmatmat(self, U):
        if self._user_rmatmat is not None:
            return self._user_rmatmat(U)
        if self._user_rmatvec is not None or not self.symmetric:
            return super()._rmatmat(U)
        return self._matmat(U)


def _check_symmetric_array(xp, M):
    """Exact symmetry test; most non-symmetric matrices fail on the first row already."""
    if M.shape[0] != M.shape[1]:
        return False
    if M.shape[0] and not bool(xp.all(M[0, :] == M[:, 0])):
        return False
    return bool(xp.all(M == xp.matrix_transpose(M)))


class Dense(LinearOperator):
    """An operator backed by a dense 2-D array ``A`` of any supported backend.

    Parameters
    ----------
    A : array, shape (m, n)
        Real floating-point matrix.
    symmetric : bool, optional
        Declared symmetry; by default checked exactly (one pass over ``A``).
    positive_semidefinite, positive_definite : bool
        Declared properties.
    """

    def __init__(self, A, *, symmetric=None, positive_semidefinite=False, positive_definite=False):
        xp = B.namespace(A)
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D, got shape {_shape_str(A.shape)}")
        B.check_float_dtype(A.dtype, "A")
        if symmetric is None:
            symmetric = _check_symmetric_array(xp, A) or positive_semidefinite or positive_definite
        super().__init__(
            A.shape,
            A.dtype,
            xp,
            B.device(A),
            symmetric=symmetric,
            positive_semidefinite=positive_semidefinite,
            positive_definite=positive_definite,
        )
        self.A = A

    def _mat(self, dtype):
        return self.A if self.A.dtype == dtype else self.xp.astype(self.A, dtype)

    def _matvec(self, v):
        return self._mat(v.dtype) @ v

    _matmat = _matvec

    def _rmatvec(self, u):
        return self.xp.matrix_transpose(self._mat(u.dtype)) @ u

    def _rmatmat(self, U):
        # (Uᵀ A)ᵀ streams the rows of a row-major A: faster than Aᵀ U on NumPy/OpenBLAS
        xp = self.xp
        return xp.matrix_transpose(xp.matrix_transpose(U) @ self._mat(U.dtype))

    def diagonal(self):
        return self.xp.linalg.diagonal(self.A)

    def trace(self):
        return self.xp.sum(self.xp.linalg.diagonal(self.A))

    def _trace_of_square(self):
        return float(self.xp.linalg.vector_norm(self.A)) ** 2 if self.symmetric else None

    def _shifted_solve(self, b, shift):
        xp = self.xp
        M = self._mat(b.dtype)
        if shift != 0.0:
            M = M + shift * xp.eye(self.shape[0], dtype=b.dtype, device=self.device)
        return xp.linalg.solve(M, b) if b.ndim == 2 else xp.linalg.solve(M, b[:, None])[:, 0]

    def todense(self):
        return self.A


class Diagonal(LinearOperator):
    """The diagonal matrix ``diag(d)``.

    Parameters
    ----------
    d : array, shape (n,)
        The diagonal.  Positive (semi)definiteness is read off its entries.
    """

    def __init__(self, d):
        xp = B.namespace(d)
        if d.ndim != 1:
            raise ValueError(f"d must be 1-D, got shape {_shape_str(d.shape)}")
        B.check_float_dtype(d.dtype, "d")
        super().__init__(
            (d.shape[0], d.shape[0]),
            d.dtype,
            xp,
            B.device(d),
            symmetric=True,
            positive_semidefinite=bool(xp.all(d >= 0)),
            positive_definite=bool(xp.all(d > 0)),
        )
        self.d = d

    def _dd(self, dtype):
        return self.d if self.d.dtype == dtype else self.xp.astype(self.d, dtype)

    def _matvec(self, v):
        return self._dd(v.dtype) * v

    def _matmat(self, V):
        return self._dd(V.dtype)[:, None] * V

    def diagonal(self):
        return self.d

    def trace(self):
        return self.xp.sum(self.d)

    def _trace_of_square(self):
        return float(self.xp.linalg.vector_norm(self.d)) ** 2

    def _shifted_solve(self, b, shift):
        d = self._dd(b.dtype) + shift
        if bool(self.xp.any(d == 0)):
            raise ZeroDivisionError("the diagonal operator is singular (a zero on the diagonal)")
        return b / d if b.ndim == 1 else b / d[:, None]

    def todense(self):
        eye = self.xp.eye(self.shape[0], dtype=self.dtype, device=self.device)
        return self.d[:, None] * eye


class Identity(LinearOperator):
    """The ``n``-by-``n`` identity.

    Without ``like`` it takes vectors of any library and dtype, so
    ``A + lam * Identity(n)`` works for every ``A``.

    Parameters
    ----------
    n : int
        Size.
    like : array or LinearOperator, optional
        Take namespace, device and dtype from this.
    """

    def __init__(self, n, *, like=None):
        xp = dev = dtype = None
        if isinstance(like, LinearOperator):
            xp, dev, dtype = like.xp, like.device, like.dtype
        elif like is not None:
            xp, dev, dtype = B.namespace(like), B.device(like), like.dtype
        super().__init__((n, n), dtype, xp, dev, positive_definite=True)

    def _matvec(self, v):
        return v

    _matmat = _matvec

    def diagonal(self):
        xp, dtype = self._xp_dtype()
        return xp.ones(self.shape[0], dtype=dtype, device=self.device)

    def trace(self):
        xp, dtype = self._xp_dtype()
        return xp.asarray(float(self.shape[0]), dtype=dtype, device=self.device)

    def _trace_of_square(self):
        return float(self.shape[0])

    def _shifted_solve(self, b, shift):
        if 1.0 + shift == 0.0:
            raise ZeroDivisionError("I - I is singular")
        return b / (1.0 + shift)

    def todense(self):
        xp, dtype = self._xp_dtype()
        return xp.eye(self.shape[0], dtype=dtype, device=self.device)


class LowRank(LinearOperator):
    """The low-rank operator ``U diag(s) Vᵀ`` (``V = U`` when ``V`` is omitted).

    With ``V`` omitted the operator is symmetric, and positive semidefinite
    when ``s >= 0``.  ``LowRank + lam * I`` solves exactly through the
    Woodbury identity at the cost of one ``k``-by-``k`` solve.

    Parameters
    ----------
    U : array, shape (m, k)
    s : array, shape (k,)
    V : array, shape (n, k), optional
    """

    def __init__(self, U, s, V=None):
        xp = B.namespace(U, s) if V is None else B.namespace(U, s, V)
        if U.ndim != 2 or s.ndim != 1 or U.shape[1] != s.shape[0]:
            raise ValueError(
                f"LowRank needs U of shape (m, k) and s of shape (k,), got "
                f"{_shape_str(U.shape)} and {_shape_str(s.shape)}"
            )
        if V is not None and (V.ndim != 2 or V.shape[1] != s.shape[0]):
            raise ValueError(
                f"V must have shape (n, {s.shape[0]}), got {_shape_str(V.shape)}"
            )
        for label, arr in (("U", U), ("s", s), ("V", V)):
            if arr is not None:
                B.check_float_dtype(arr.dtype, label)
        dtype = B.result_dtype(xp, U.dtype, s.dtype, *(() if V is None else (V.dtype,)))
        sym = V is None
        psd = sym and bool(xp.all(s >= 0))
        n = U.shape[0] if V is None else V.shape[0]
        super().__init__(
            (U.shape[0], n), dtype, xp, B.device(U), symmetric=sym, positive_semidefinite=psd
        )
        self.U, self.s = U, s
        self.V = U if V is None else V

    @property
    def rank(self) -> int:
        """Number of columns ``k`` of ``U``."""
        return int(self.s.shape[0])

    def _cast(self, dtype):
        xp = self.xp
        return tuple(a if a.dtype == dtype else xp.astype(a, dtype) for a in (self.U, self.s, self.V))

    def _matvec(self, v):
        U, s, V = self._cast(v.dtype)
        return U @ (s * (self.xp.matrix_transpose(V) @ v))

    def _matmat(self, X):
        U, s, V = self._cast(X.dtype)
        return U @ (s[:, None] * (self.xp.matrix_transpose(V) @ X))

    def _rmatvec(self, u):
        U, s, V = self._cast(u.dtype)
        return V @ (s * (self.xp.matrix_transpose(U) @ u))

    def _rmatmat(self, X):
        U, s, V = self._cast(X.dtype)
        return V @ (s[:, None] * (self.xp.matrix_transpose(U) @ X))

    def diagonal(self):
        if self.shape[0] != self.shape[1]:
            raise ValueError("diagonal() of a non-square LowRank")
        return self.xp.sum(self.U * self.s * self.V, axis=1)

    def trace(self):
        if self.shape[0] != self.shape[1]:
            raise ValueError("trace() of a non-square LowRank")
        return self.xp.sum(self.s * self.xp.sum(self.U * self.V, axis=0))

    def _shifted_solve(self, b, shift):
        # Woodbury: (shift I + U S Vᵀ)^{-1} = (I - U (shift I + S VᵀU)^{-1} S Vᵀ) / shift
        if self.shape[0] != self.shape[1]:
            raise ValueError("solve() of a non-square LowRank")
        if shift == 0.0:
            raise ZeroDivisionError(
                "a LowRank operator is singular; solve (LowRank + lam*I) with lam != 0"
            )
        xp = self.xp
        U, s, V = self._cast(b.dtype)
        Vt = xp.matrix_transpose(V)
        k = self.rank
        core = shift * xp.eye(k, dtype=b.dtype, device=self.device) + s[:, None] * (Vt @ U)
        rhs = Vt @ b
        rhs = s * rhs if b.ndim == 1 else s[:, None] * rhs
        y = xp.linalg.solve(core, rhs if rhs.ndim == 2 else rhs[:, None])
        y = y if b.ndim == 2 else y[:, 0]
        return (b - U @ y) / shift


class BlockDiagonal(LinearOperator):
    """Block-diagonal operator ``diag(A_1, ..., A_p)`` from a list of operators or arrays."""

    def __init__(self, blocks):
        blocks = [aslinearoperator(b) for b in blocks]
        if not blocks:
            raise ValueError("BlockDiagonal needs at least one block")
        xp, dev, dtype = _common(blocks, "stack")
        sym = all(b.symmetric for b in blocks)
        super().__init__(
            (sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)),
            dtype,
            xp,
            dev,
            symmetric=sym,
            positive_semidefinite=all(b.positive_semidefinite for b in blocks),
            positive_definite=all(b.positive_definite for b in blocks),
        )
        self.blocks = blocks

    def _split_apply(self, x, method, axis):
        """Apply ``method`` of each block to its slice of ``x`` (rows by ``shape[axis]``)."""
        xp = B.namespace(x)
        out, start = [], 0
        for blk in self.blocks:
            n = blk.shape[axis]
            out.append(getattr(blk, method)(x[start : start + n, ...]))
            start += n
        return xp.concat(out, axis=0)

    def _matvec(self, v):
        return self._split_apply(v, "matvec", 1)

    def _matmat(self, V):
        return self._split_apply(V, "matmat", 1)

    def _rmatvec(self, u):
        return self._split_apply(u, "rmatvec", 0)

    def _rmatmat(self, U):
        return self._split_apply(U, "rmatmat", 0)

    def diagonal(self):
        return self.xp.concat([b.diagonal() for b in self.blocks], axis=0)

    def trace(self):
        return sum((b.trace() for b in self.blocks[1:]), self.blocks[0].trace())

    def _shifted_solve(self, b, shift):
        xp = B.namespace(b)
        out, start = [], 0
        for blk in self.blocks:
            n = blk.shape[0]
            out.append(blk._shifted_solve(b[start : start + n, ...], shift))
            start += n
        return xp.concat(out, axis=0)


class Sparse(LinearOperator):
    """An operator backed by a SciPy (or cupyx) sparse matrix.

    Parameters
    ----------
    M : scipy.sparse matrix or array, or cupyx.scipy.sparse matrix
        Real floating point; converted to CSR once.
    symmetric : bool, optional
        Declared symmetry; by default checked exactly.

    Notes
    -----
    For NumPy vectors and blocks the product runs on matfree's CSR kernel
    (:mod:`matfree._kernels.sparse`, Numba ``prange`` over rows, or its
    serial twin on one thread) when Numba is installed and the work (nonzeros
    times columns) is at least ``_kernels.sparse.MIN_NNZ``; otherwise (and for cupyx
    matrices) it is SciPy's (cuSPARSE's) own product.  Both give the same
    numbers: each row is summed in storage order.  A vector of another
    dtype than the matrix is multiplied with a cast copy of the matrix, made
    once and kept.
    """

    def __init__(self, M, *, symmetric=None, positive_semidefinite=False, positive_definite=False):
        mod = type(M).__module__
        if mod.startswith("cupyx"):
            import array_api_compat.cupy as xp
            import cupy

            dev = cupy.cuda.Device()
        else:
            import array_api_compat.numpy as xp

            dev = "cpu"
        if len(M.shape) != 2:
            raise ValueError(f"M must be 2-D, got shape {_shape_str(M.shape)}")
        B.check_float_dtype(M.dtype, "M")
        M = M.tocsr()
        if symmetric is None:
            symmetric = (M.shape[0] == M.shape[1] and (M != M.T).nnz == 0) or (
                positive_semidefinite or positive_definite
            )
        super().__init__(
            M.shape,
            getattr(xp, str(M.dtype)),
            xp,
            dev,
            symmetric=symmetric,
            positive_semidefinite=positive_semidefinite,
            positive_definite=positive_definite,
        )
        self.M = M
        self._MT = None
        self._casts = {}  # (transposed, dtype) -> cast copy, made on first use
        self._dot_bounds = {}  # columns -> row cut of the fused products, made on first use

    def _mat(self, dtype, transposed=False):
        M = self.M
        if transposed:
            if self._MT is None:
                self._MT = self.M.T.tocsr()
            M = self._MT
        if M.dtype == dtype:
            return M
        key = (transposed, str(dtype))
        if key not in self._casts:
            self._casts[key] = M.astype(dtype)
        return self._casts[key]

    @staticmethod
    def _product(M, v):
        from matfree._kernels import sparse as kernels

        if kernels.pays_off(M, v):
            return kernels.csr_product(M, v)
        return M @ v

    def _matvec(self, v):
        return self._product(self._mat(v.dtype), v)

    _matmat = _matvec

    def _matvec_dot(self, v, shift=0.0):
        """``w = (M + shift I) v`` and ``vᵀw`` in one pass (solvers' hook), or ``NotImplemented``.

        For a contiguous 1-D NumPy ``v`` of the matrix's dtype, with Numba on:
        the fused kernel :func:`matfree._kernels.sparse.csr_matvec_dot` (on
        threads from ``PARALLEL_DOT_NNZ`` nonzeros) when the matrix has at
        least ``MIN_NNZ`` nonzeros, else SciPy's product and a dot; counts
        one product like :meth:`matvec`.  ``w`` equals
        ``matvec(v) + shift * v`` bit for bit; ``vᵀw`` differs from
        ``vecdot(v, w)`` by rounding.
        """
        from matfree import _kernels as kernels

        if not (B.is_numpy(self.xp) and kernels.usable(v)) or v.ndim != 1:
            return NotImplemented
        if v.dtype != self.M.dtype:
            return NotImplemented  # mixed dtypes: the caller takes matvec's path
        out = kernels.sparse.csr_matvec_dot(self.M, v, shift, self._bounds(1))
        if out is NotImplemented:
            # a small matrix: SciPy's product and a dot, without the input
            # checks of matvec (the solver made v), which cost more than the
            # product itself for small matrices
            w = self.M @ v
            if shift != 0.0:
                w = w + shift * v
            out = (w, float(v @ w))
        self._num_matvecs += 1
        return out

    def _bounds(self, columns):
        """The fixed row cut of the fused products for blocks of ``columns`` (cached)."""
        from matfree._kernels import sparse as kernels

        if columns not in self._dot_bounds:
            self._dot_bounds[columns] = kernels.fixed_bounds(self.M.indptr, columns)
        return self._dot_bounds[columns]

    def _matmat_dot(self, V):
        """``W = M V`` and the column dots ``V[:, c]ᵀ W[:, c]`` (float64 NumPy), or ``NotImplemented``.

        The hook of stochastic Lanczos quadrature (the ``alpha`` of every
        probe in the pass of the product): for a C-ordered NumPy block of the
        matrix's dtype on the kernel (:func:`matfree._kernels.sparse.csr_matmat_dot`);
        counts ``V.shape[1]`` products like :meth:`matmat`.
        """
        from matfree import _kernels as kernels

        if not (B.is_numpy(self.xp) and kernels.usable(V)) or V.dtype != self.M.dtype:
            return NotImplemented
        out = kernels.sparse.csr_matmat_dot(self.M, V, self._bounds(int(V.shape[1])))
        if out is not NotImplemented:
            self._num_matvecs += int(V.shape[1])
        return out

    def _lanczos_coefficients(self, Z, m, eps):
        """Lanczos coefficients of every column of ``Z`` in one fused kernel, or ``NotImplemented``.

        The hook of stochastic Lanczos quadrature without
        reorthogonalisation (:func:`matfree._kernels.sparse.csr_lanczos`):
        ``(alpha, beta, lengths, broke, bad)`` for a NumPy block of the matrix's
        dtype; counts one product per step run of each column.
        """
        from matfree import _kernels as kernels

        if not (B.is_numpy(self.xp) and kernels.usable(Z)) or Z.dtype != self.M.dtype:
            return NotImplemented
        out = kernels.sparse.csr_lanczos(self.M, Z, m, eps)
        if out is not NotImplemented:
            self._num_matvecs += int(out[2].sum())
        return out

    def _rmatvec(self, u):
        return self._product(self._mat(u.dtype, transposed=True), u)

    _rmatmat = _rmatvec

    def diagonal(self):
        return self.xp.asarray(self.M.diagonal())

    def trace(self):
        return self.xp.sum(self.diagonal())

    def _trace_of_square(self):
        if not self.symmetric:
            return None
        return float(self.M.multiply(self.M).data.sum(dtype="float64"))

    def todense(self):
        return self.xp.asarray(self.M.toarray())


# ======================================================================
# Lazy algebra
# ======================================================================


def _add(A, Bop):
    if A.shape != Bop.shape:
        raise ValueError(
            f"shape mismatch: cannot add operators of shapes {_shape_str(A.shape)} "
            f"and {_shape_str(Bop.shape)}"
        )
    for left, right in ((A, Bop), (Bop, A)):
        shift = _identity_scale(right)
        if shift is not None:
            _common((left, right), "add")
            return Damped(left, shift)
    return Sum(A, Bop)


def _identity_scale(op):
    """``c`` when ``op`` is ``c * I`` (with ``c`` a float), else ``None``."""
    if isinstance(op, Identity):
        return 1.0
    if isinstance(op, Scaled) and isinstance(op.A, Identity):
        return op.c
    return None


class Sum(LinearOperator):
    """Lazy ``A + B``."""

    def __init__(self, A, B_):
        xp, dev, dtype = _common((A, B_), "add")
        super().__init__(
            A.shape,
            dtype,
            xp,
            dev,
            symmetric=A.symmetric and B_.symmetric,
            positive_semidefinite=A.positive_semidefinite and B_.positive_semidefinite,
            positive_definite=(A.positive_semidefinite and B_.positive_semidefinite)
            and (A.positive_definite or B_.positive_definite),
        )
        self.A, self.B = A, B_

    def _matvec(self, v):
        return self.A.matvec(v) + self.B.matvec(v)

    def _matmat(self, V):
        return self.A.matmat(V) + self.B.matmat(V)

    def _rmatvec(self, u):
        return self.A.rmatvec(u) + self.B.rmatvec(u)

    def _rmatmat(self, U):
        return self.A.rmatmat(U) + self.B.rmatmat(U)

    def diagonal(self):
        return self.A.diagonal() + self.B.diagonal()

    def trace(self):
        return self.A.trace() + self.B.trace()


class Scaled(LinearOperator):
    """Lazy ``c * A`` for a real scalar ``c``."""

    def __init__(self, c, A):
        c = float(c)
        if not math.isfinite(c):
            raise ValueError(f"c={c} must be finite")
        super().__init__(
            A.shape,
            A.dtype,
            A.xp,
            A.device,
            symmetric=A.symmetric,
            positive_semidefinite=A.positive_semidefinite and c >= 0,
            positive_definite=A.positive_definite and c > 0,
        )
        self.c, self.A = c, A

    def _matvec(self, v):
        return self.c * self.A.matvec(v)

    def _matmat(self, V):
        return self.c * self.A.matmat(V)

    def _rmatvec(self, u):
        return self.c * self.A.rmatvec(u)

    def _rmatmat(self, U):
        return self.c * self.A.rmatmat(U)

    def diagonal(self):
        return self.c * self.A.diagonal()

    def trace(self):
        return self.c * self.A.trace()

    def _shifted_solve(self, b, shift):
        if self.c == 0.0:
            raise ZeroDivisionError("0 * A is singular")
        return self.A._shifted_solve(b, shift / self.c) / self.c

    def __mul__(self, c):
        if isinstance(c, numbers.Real) or _is_scalar_array(c):
            return Scaled(self.c * float(c), self.A)
        return NotImplemented

    __rmul__ = __mul__

    def __neg__(self):
        return Scaled(-self.c, self.A)


class Product(LinearOperator):
    """Lazy ``A @ B``."""

    def __init__(self, A, B_):
        if A.shape[1] != B_.shape[0]:
            raise ValueError(
                f"shape mismatch: cannot multiply operators of shapes {_shape_str(A.shape)} "
                f"and {_shape_str(B_.shape)}"
            )
        xp, dev, dtype = _common((A, B_), "multiply")
        super().__init__((A.shape[0], B_.shape[1]), dtype, xp, dev)
        self.A, self.B = A, B_

    def _matvec(self, v):
        return self.A.matvec(self.B.matvec(v))

    def _matmat(self, V):
        return self.A.matmat(self.B.matmat(V))

    def _rmatvec(self, u):
        return self.B.rmatvec(self.A.rmatvec(u))

    def _rmatmat(self, U):
        return self.B.rmatmat(self.A.rmatmat(U))


class Transpose(LinearOperator):
    """Lazy ``Aᵀ`` (through ``A.rmatvec``)."""

    def __init__(self, A):
        super().__init__(
            (A.shape[1], A.shape[0]),
            A.dtype,
            A.xp,
            A.device,
            symmetric=A.symmetric,
            positive_semidefinite=A.positive_semidefinite,
            positive_definite=A.positive_definite,
        )
        self.A = A

    def _matvec(self, v):
        return self.A.rmatvec(v)

    def _matmat(self, V):
        return self.A.rmatmat(V)

    def _rmatvec(self, u):
        return self.A.matvec(u)

    def _rmatmat(self, U):
        return self.A.matmat(U)

    @property
    def T(self):
        return self.A

    def diagonal(self):
        return self.A.diagonal()

    def trace(self):
        return self.A.trace()


class Damped(LinearOperator):
    """Lazy ``A + damping * I`` (build it with :func:`damped` or ``A + lam * I``).

    Knows its diagonal, trace and exact solve whenever ``A`` knows them
    (``LowRank`` through Woodbury, ``Diagonal``, ``BlockDiagonal``, ``Dense``).
    """

    def __init__(self, A, damping):
        damping = float(damping)
        if not math.isfinite(damping):
            raise ValueError(f"damping={damping} must be finite")
        if A.shape[0] != A.shape[1]:
            raise ValueError(
                f"damping needs a square operator, got shape {_shape_str(A.shape)}"
            )
        super().__init__(
            A.shape,
            A.dtype,
            A.xp,
            A.device,
            symmetric=A.symmetric,
            positive_semidefinite=A.positive_semidefinite and damping >= 0,
            positive_definite=A.positive_semidefinite and damping > 0
            or (A.positive_definite and damping >= 0),
        )
        self.base, self.damping = A, damping

    def _matvec(self, v):
        return self.base.matvec(v) + self.damping * v

    def _matmat(self, V):
        return self.base.matmat(V) + self.damping * V

    def _rmatvec(self, u):
        return self.base.rmatvec(u) + self.damping * u

    def _rmatmat(self, U):
        return self.base.rmatmat(U) + self.damping * U

    def diagonal(self):
        return self.base.diagonal() + self.damping

    def trace(self):
        return self.base.trace() + self.damping * self.shape[0]

    def _trace_of_square(self):
        # tr (A + d I)^2 = tr A^2 + 2 d tr A + n d^2
        sq = self.base._trace_of_square()
        if sq is None:
            return None
        try:
            tr = float(self.base.trace())
        except NotImplementedError:
            return None
        return sq + 2.0 * self.damping * tr + self.shape[0] * self.damping**2

    def _shifted_solve(self, b, shift):
        return self.base._shifted_solve(b, shift + self.damping)

    def __repr__(self):
        return super().__repr__()[:-1] + f", damping={self.damping:g}>"


def damped(A, damping):
    """``A + damping * I`` as a lazy operator.

    Parameters
    ----------
    A : LinearOperator or array
        Square operator.
    damping : float
        The shift ``lambda``.

    Returns
    -------
    Damped
        The damped operator; it solves exactly when ``A`` does.

    Examples
    --------
    >>> import numpy as np, matfree
    >>> A = matfree.Diagonal(np.array([1.0, 2.0]))
    >>> matfree.damped(A, 0.5) @ np.ones(2)
    array([1.5, 2.5])
    """
    return Damped(aslinearoperator(A), damping)


# ======================================================================
# Conversion
# ======================================================================


def aslinearoperator(obj, *, symmetric=None, positive_semidefinite=False, positive_definite=False):
    """Turn ``obj`` into a matfree :class:`LinearOperator`.

    Parameters
    ----------
    obj : LinearOperator, array, sparse matrix, scipy LinearOperator, or object
        A matfree operator is returned unchanged.  A 2-D array of any
        supported backend becomes :class:`Dense`; a SciPy/cupyx sparse matrix
        :class:`Sparse`; a ``scipy.sparse.linalg.LinearOperator`` (or any
        object with ``shape`` and ``matvec``) a :class:`FunctionOperator` on
        NumPy arrays.
    symmetric, positive_semidefinite, positive_definite : bool, optional
        Declared properties of the result.

    Returns
    -------
    LinearOperator

    Raises
    ------
    TypeError
        For objects of none of these kinds.
    """
    flags = dict(positive_semidefinite=positive_semidefinite, positive_definite=positive_definite)
    if isinstance(obj, LinearOperator):
        return obj
    mod = type(obj).__module__
    if (mod.startswith("scipy.sparse") or mod.startswith("cupyx.scipy.sparse")) and hasattr(
        obj, "tocsr"
    ):
        return Sparse(obj, symmetric=symmetric, **flags)
    if hasattr(obj, "matvec") and hasattr(obj, "shape"):
        import array_api_compat.numpy as np_xp
        import numpy as np

        dtype = np.dtype(getattr(obj, "dtype", None) or np.float64)
        if dtype.kind != "f":
            dtype = np.dtype(np.float64)
        rmatvec = getattr(obj, "rmatvec", None)
        matmat = getattr(obj, "matmat", None)

        def _mv(v, _f=obj.matvec):
            return np.asarray(_f(v)).reshape(-1)

        return FunctionOperator(
            _mv,
            obj.shape,
            getattr(np_xp, dtype.name),
            np_xp,
            "cpu",
            matmat=None if matmat is None else (lambda V, _f=matmat: np.asarray(_f(V))),
            rmatvec=None if rmatvec is None else (lambda u, _f=rmatvec: np.asarray(_f(u)).reshape(-1)),
            symmetric=bool(symmetric),
            name=type(obj).__name__,
            **flags,
        )
    try:
        B.namespace(obj)
    except TypeError:
        raise TypeError(
            f"cannot make a LinearOperator from {type(obj).__name__}; expected an "
            "array, a sparse matrix, a scipy LinearOperator or an object with "
            "shape and matvec"
        ) from None
    return Dense(obj, symmetric=symmetric, **flags)
