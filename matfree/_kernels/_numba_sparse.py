"""Numba code of :mod:`matfree._kernels.sparse` (imported on first use; imports Numba)."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _rows(indptr, indices, data, x, out, lo, hi):
    # rows lo..hi-1 of the product, each summed in storage order as SciPy does;
    # a serial helper, so that the hot loop is compiled as plain code
    jj = np.intp(indptr[lo])
    for i in range(lo, hi):
        end = np.intp(indptr[i + 1])
        acc = data.dtype.type(0.0)
        while jj < end:
            # an unsigned index saves the negative-index wraparound test
            acc += data[jj] * x[np.uintp(indices[jj])]
            jj += 1
        out[i] = acc


@numba.njit(cache=True, nogil=True)
def _rows_block(indptr, indices, data, X, out, lo, hi):
    k = X.shape[1]
    jj = np.intp(indptr[lo])
    for i in range(lo, hi):
        end = np.intp(indptr[i + 1])
        for c in range(k):
            out[i, c] = 0.0
        while jj < end:
            a = data[jj]
            row = np.uintp(indices[jj])
            for c in range(k):
                out[i, c] += a * X[row, c]
            jj += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def matvec(indptr, indices, data, x, out, bounds):
    for t in numba.prange(bounds.shape[0] - 1):
        _rows(indptr, indices, data, x, out, bounds[t], bounds[t + 1])
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def matmat(indptr, indices, data, X, out, bounds):
    for t in numba.prange(bounds.shape[0] - 1):
        _rows_block(indptr, indices, data, X, out, bounds[t], bounds[t + 1])
    return out


@numba.njit(cache=True, nogil=True)
def _rows_dot(indptr, indices, data, x, shift, out, lo, hi):
    # rows lo..hi-1 of (M + shift I) x, rounded as ``M @ x + shift * x``, and
    # their part of xᵀ out in float64.  The rows first (the tight loop of
    # ``_rows``), then the shift and the dot over the part while it is in cache:
    # one loop doing both ran 35% slower
    _rows(indptr, indices, data, x, out, lo, hi)
    s = 0.0
    if shift != 0.0:
        for i in range(lo, hi):
            out[i] = out[i] + shift * x[i]
    for i in range(lo, hi):
        s += np.float64(x[i]) * np.float64(out[i])
    return s


@numba.njit(parallel=True, cache=True, nogil=True)
def matvec_dot(indptr, indices, data, x, shift, out, bounds):
    """``out = (M + shift I) x`` and ``xᵀ out``, the parts summed in order."""
    nparts = bounds.shape[0] - 1
    part = np.empty(nparts, dtype=np.float64)
    for t in numba.prange(nparts):
        part[t] = _rows_dot(indptr, indices, data, x, shift, out, bounds[t], bounds[t + 1])
    s = 0.0
    for t in range(nparts):
        s += part[t]
    return s


# without threads, for matrices below :data:`matfree._kernels.sparse.PARALLEL_DOT_NNZ`
matvec_dot_serial = numba.njit(cache=True, nogil=True)(matvec_dot.py_func)
