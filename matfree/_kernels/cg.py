"""Fused conjugate-gradient vector updates (Numba; parallel above :data:`PARALLEL_MIN_SIZE`).

Twins of the array-API updates of :mod:`matfree.solvers`, with their
semantics: the solvers own ``x``, ``r`` and ``p`` and the updates work **in
place**.

* :func:`update` -- ``x += alpha p``, ``r -= alpha Ap`` and ``‖r‖²`` in one
  pass over memory: six vectors of traffic (read x, r, p, Ap; write x, r)
  where the array-API path moves eleven (two temporaries ``alpha p`` and
  ``alpha Ap``, then the norm);
* :func:`residual` -- the residual half of it (multi-shift CG);
* :func:`direction` -- ``p = z + beta p`` in one pass (the same kernel):
  three vectors of traffic instead of five.
* :func:`inner` -- ``uᵀv`` (per column of blocks) on Numba's threads.  Not
  for the traffic: a BLAS dot wakes OpenBLAS's threads, which then spin
  for tens of milliseconds on the cores Numba's threads need; on two cores
  the first iterations after one ran up to seven times slower.

Vectors are 1-D, or blocks ``(n, k)`` whose columns are separate systems
(``alpha`` and ``beta`` then hold one value per column), in C or Fortran
order.  The element-wise results equal the twins' bit for bit (same
operations in the same order, no fused multiply-add); only the squared norm
is summed in another order: per chunk of :data:`CHUNK` entries in float64
(SIMD lanes), then over chunks in order, so it does not depend on the number
of threads and differs from the twin's by rounding.

Every function returns ``NotImplemented`` when it cannot take its inputs
(not NumPy, mixed dtypes or memory orders, too small, Numba missing or
switched off); the dispatcher then calls the array-API twin.
"""

from __future__ import annotations

import numbers

import numpy as np

from matfree._kernels import _config


#: entries summed per task of a reduction (fixed, so results do not depend
#: on the number of threads)
CHUNK = 4096


#: fewest entries (``n`` times columns) for which the kernels are used;
#: below it the launch of the threads costs more than the fusion saves
MIN_SIZE = 1 << 16


#: fewest entries for which the kernels run on several threads; below it a
#: serial twin of the same code runs (same results).  A parallel region
#: costs a wake-up of every thread and a barrier at its end: a few
#: microseconds on an idle machine, but up to a scheduler time slice when
#: other processes compete for the cores, which would dominate the in-cache
#: updates of small problems (three regions per CG iteration).
PARALLEL_MIN_SIZE = 1 << 18


def _driver(form, size, name="axpy_norm"):
    """The kernel ``<name>_<form>``, threaded or not by ``size``."""
    suffix = "" if size >= PARALLEL_MIN_SIZE and not _config.in_serial() else "_serial"
    return getattr(_jit(), name + "_" + form + suffix)


def _jit():
    from matfree._kernels import _numba_cg as jit

    return jit


# ----------------------------------------------------------------------
# Layout: every kernel works on 2-D C-contiguous arrays, "rows" (k, n) or
# "cols" (n, k).  A vector is one row; an F-ordered block is its transpose.
# ----------------------------------------------------------------------


def _layout(arrays, writes):
    """``("rows", views)``, ``("cols", views)`` or ``None`` when the kernels cannot take them.

    The first ``writes`` arrays are written in place.
    """
    first = arrays[0]
    if not _config.active() or type(first) is not np.ndarray:
        return None
    dtype, shape = first.dtype, first.shape
    if dtype not in (np.float32, np.float64) or first.ndim not in (1, 2):
        return None
    if first.size < MIN_SIZE:
        return None
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape:
            return None
    if not all(a.flags.writeable for a in arrays[:writes]):
        return None  # the twin raises on read-only outputs; let it
    if first.ndim == 1:
        if all(a.flags.c_contiguous for a in arrays):
            return "rows", [a.reshape(1, -1) for a in arrays]
        return None
    # prefer rows (a column of the block contiguous: SIMD along it); an
    # (n, 1) block is both C and F contiguous and goes this way
    if all(a.flags.f_contiguous for a in arrays):
        return "rows", [a.T for a in arrays]
    if all(a.flags.c_contiguous for a in arrays):
        return "cols", list(arrays)
    return None


def _coefficients(c, dtype, k):
    """The step lengths as a (k,) array of ``dtype``, or ``None`` if the twin would promote."""
    if isinstance(c, numbers.Real) and not isinstance(c, (bool, np.generic)):
        return np.full(k, c, dtype=dtype)  # a Python scalar adopts the array dtype
    if isinstance(c, (np.ndarray, np.generic)) and c.dtype == dtype:
        c = np.asarray(c)
        if c.ndim == 0:
            return np.full(k, c, dtype=dtype)
        if c.shape == (k,):
            return np.ascontiguousarray(c)
    return None


def _norms_back(rr, dtype, ndim):
    if ndim == 1:
        return dtype.type(rr[0])
    return rr.astype(dtype)


def _axpy_norm(with_x, arrays, alpha, with_norm=True):
    lay = _layout(arrays, 2 if with_x else 1)
    if lay is None:
        return NotImplemented
    form, views = lay
    ndim, dtype = arrays[0].ndim, arrays[0].dtype
    k = views[0].shape[0] if form == "rows" else views[0].shape[1]
    a = _coefficients(alpha, dtype, k)
    if a is None:
        return NotImplemented
    kern = _driver(form, arrays[0].size)
    if with_x:
        X, R, P, AP = views
    else:
        R, AP = views
        X, P = R, AP  # placeholders, never read or written
    # in place, as the twins: x and r (or p) are overwritten
    rr = kern(with_x, with_norm, X, R, P, AP, a, X, R)
    if not with_x:
        return arrays[0], _norms_back(rr, dtype, ndim)
    return arrays[0], arrays[1], _norms_back(rr, dtype, ndim)


def update(x, r, p, Ap, alpha):
    """``x += alpha p``, ``r -= alpha Ap`` in one pass; ``(x, r, ‖r‖²)`` or ``NotImplemented``.

    ``alpha`` is a Python float for vectors, or a ``(k,)`` array (one step
    per column, dtype of the block) for ``(n, k)`` blocks.  ``x`` and ``r``
    are overwritten and returned.
    """
    return _axpy_norm(True, [x, r, p, Ap], alpha)


def residual(r, Ap, alpha):
    """``r -= alpha Ap`` in one pass; ``(r, ‖r‖²)`` or ``NotImplemented``."""
    return _axpy_norm(False, [r, Ap], alpha)


def direction(z, p, beta):
    """``p = z + beta p`` in place, in one pass; ``p`` or ``NotImplemented``.

    Runs the residual kernel (without its norm) on ``p`` as
    ``z - (-beta) p``, which rounds exactly as the twin's ``p *= beta;
    p += z`` (negation is exact).
    """
    lay = _layout([p, z], 1)
    if lay is None:
        return NotImplemented
    form, views = lay
    k = views[0].shape[0] if form == "rows" else views[0].shape[1]
    b = _coefficients(beta, z.dtype, k)
    if b is None:
        return NotImplemented
    kern = _driver(form, p.size)
    P, Z = views
    kern(False, False, P, Z, P, P, -b, P, P)  # P = Z - (-b) P
    return p


def inner(u, v):
    """``uᵀv`` for vectors (a 0-D value of their dtype), per column for blocks; or ``NotImplemented``.

    Summed in float64 per chunk of :data:`CHUNK` entries, then over chunks
    in order (independent of the number of threads).  Blocks must be
    F-ordered (columns contiguous); C-ordered ones go to the twin.
    """
    lay = _layout([u, v], 0)
    if lay is None or lay[0] != "rows":
        return NotImplemented
    U, V = lay[1]
    return _norms_back(_driver("rows", u.size, "inner")(U, V), u.dtype, u.ndim)
