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
