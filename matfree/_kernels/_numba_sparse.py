"""Numba code of :mod:`matfree._kernels.sparse` (imported on first use; imports Numba)."""

import numba
import numpy as np

from matfree._kernels._numba_cg import dot
from matfree._kernels._serial import serial_twin


# Every index in the row loops is unsigned (``np.uintp``): with a signed
# index Numba guards each load with the negative-index wraparound test, a
# shift, an "and" and a conditional move, which made the loop 1.6 times
# slower than SciPy's on one thread; unsigned, it is faster than SciPy's.
# (Mixing uintp with a plain int gives a float in Numba, hence ``one``.)


@numba.njit(cache=True, nogil=True)
def _rows(indptr, indices, data, x, out, lo, hi):
    # rows lo..hi-1 of the product, each summed in storage order as SciPy does;
    # a serial helper, so that the hot loop is compiled as plain code
    one = np.uintp(1)
    i = np.uintp(lo)
    stop = np.uintp(hi)
    jj = np.uintp(indptr[i])
    while i < stop:
        end = np.uintp(indptr[i + one])
        acc = data.dtype.type(0.0)
        while jj < end:
            acc += data[jj] * x[np.uintp(indices[jj])]
            jj += one
        out[i] = acc
        i += one


@numba.njit(cache=True, nogil=True)
def _rows_block(indptr, indices, data, X, out, lo, hi):
    k = np.uintp(X.shape[1])
    one = np.uintp(1)
    i = np.uintp(lo)
    stop = np.uintp(hi)
    jj = np.uintp(indptr[i])
    while i < stop:
        end = np.uintp(indptr[i + one])
        c = np.uintp(0)
        while c < k:
            out[i, c] = 0.0
            c += one
        while jj < end:
            a = data[jj]
            row = np.uintp(indices[jj])
            c = np.uintp(0)
            while c < k:
                out[i, c] += a * X[row, c]
                c += one
            jj += one
        i += one


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
    # their part of xᵀ out in float64 (SIMD lanes, as `dot`).  The rows first (the tight loop of
    # ``_rows``), then the shift and the dot over the part while it is in cache:
    # one loop doing both ran 35% slower
    _rows(indptr, indices, data, x, out, lo, hi)
    xs = x[lo:hi]  # views from 0: contiguous SIMD loads, no index tests
    ys = out[lo:hi]
    if shift != 0.0:
        for i in range(ys.shape[0]):
            ys[i] = ys[i] + shift * xs[i]
    return dot(xs, ys)


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



@numba.njit(cache=True, nogil=True)
def _rows_block_dot(indptr, indices, data, X, out, lo, hi, part):
    # rows lo..hi-1 of M X (as _rows_block), then part[c] += X[i, c] out[i, c]
    # over those rows while they are in cache
    _rows_block(indptr, indices, data, X, out, lo, hi)
    k = X.shape[1]
    for i in range(lo, hi):
        x = X[i]
        o = out[i]
        for c in range(k):
            part[c] += np.float64(x[c]) * np.float64(o[c])


@numba.njit(parallel=True, cache=True, nogil=True)
def matmat_dot(indptr, indices, data, X, out, bounds):
    """``out = M X`` and the column dots ``X[:, c]ᵀ out[:, c]``, the parts summed in order."""
    nparts = bounds.shape[0] - 1
    k = X.shape[1]
    part = np.zeros((nparts, k), dtype=np.float64)
    for t in numba.prange(nparts):
        _rows_block_dot(indptr, indices, data, X, out, bounds[t], bounds[t + 1], part[t])
    d = np.zeros(k, dtype=np.float64)
    for t in range(nparts):
        for c in range(k):
            d[c] += part[t, c]
    return d

# without threads: for one thread, inside serial(), and (the fused product) for
# matrices below :data:`matfree._kernels.sparse.PARALLEL_DOT_NNZ`
matvec_dot_serial = serial_twin(matvec_dot, "matvec_dot_serial")
matvec_serial = serial_twin(matvec, "matvec_serial")
matmat_serial = serial_twin(matmat, "matmat_serial")
matmat_dot_serial = serial_twin(matmat_dot, "matmat_dot_serial")
