"""Numba code of :mod:`matfree._kernels.cg` (imported on first use; imports Numba).

The hot loops are serial helpers on 1-D views that run from 0 to their
length, so that Numba sees non-negative indices and LLVM emits contiguous
SIMD loads and stores (a loop over ``range(lo, hi)`` of a larger array keeps
the negative-index test and ends up with gathers and scatters, three times
slower).  The parallel drivers spread fixed chunks over the threads.
"""

import numba
import numpy as np
from numba import prange

from matfree._kernels._serial import serial_twin
from matfree._kernels.cg import CHUNK


@numba.njit(cache=True, nogil=True)
def _axpy(x, a, p, out):
    # out = x + a p, rounded as NumPy rounds it (no fused multiply-add)
    for i in range(out.shape[0]):
        out[i] = x[i] + a * p[i]


@numba.njit(cache=True, nogil=True)
def _axmy(r, a, ap, out):
    # out = r - a ap
    for i in range(out.shape[0]):
        out[i] = r[i] - a * ap[i]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def sumsq(v):
    """Sum of squares of a 1-D chunk in float64 (reassociated: SIMD lanes)."""
    s = 0.0
    for i in range(v.shape[0]):
        s += np.float64(v[i]) * np.float64(v[i])
    return s


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def dot(u, v):
    """Dot product of two 1-D chunks in float64 (reassociated: SIMD lanes)."""
    s = 0.0
    for i in range(v.shape[0]):
        s += np.float64(u[i]) * np.float64(v[i])
    return s


@numba.njit(parallel=True, cache=True, nogil=True)
def axpy_norm_rows(with_x, with_norm, X, R, P, AP, alpha, Xo, Ro):
    """Rows (k, n): ``Xo = X + alpha P`` (if ``with_x``), ``Ro = R - alpha AP``, ``‖Ro_j‖²``.

    The squared norms are zero unless ``with_norm``.
    """
    k, n = R.shape
    nch = (n + CHUNK - 1) // CHUNK
    part = np.empty(k * nch, dtype=np.float64)
    for t in prange(k * nch):
        j = t // nch
        lo = (t - j * nch) * CHUNK
        hi = min(lo + CHUNK, n)
        a = alpha[j]
        if with_x:
            _axpy(X[j, lo:hi], a, P[j, lo:hi], Xo[j, lo:hi])
        ro = Ro[j, lo:hi]
        _axmy(R[j, lo:hi], a, AP[j, lo:hi], ro)
        part[t] = sumsq(ro) if with_norm else 0.0
    rr = np.zeros(k, dtype=np.float64)
    for t in range(k * nch):
        rr[t // nch] += part[t]
    return rr


@numba.njit(cache=True, nogil=True)
def _axpy_cols(X, alpha, P, Xo):
    # Xo = X + alpha P for a chunk of rows of (m, k) blocks, alpha per column
    m, k = Xo.shape
    for i in range(m):
        for j in range(k):
            Xo[i, j] = X[i, j] + alpha[j] * P[i, j]


@numba.njit(cache=True, nogil=True)
def _axmy_sumsq_cols(R, alpha, AP, Ro, part, with_norm):
    # Ro = R - alpha AP; part[j] += Ro[:, j]^2 (independent sums per column:
    # the inner loop over columns vectorises without reassociation)
    m, k = Ro.shape
    for i in range(m):
        for j in range(k):
            v = R[i, j] - alpha[j] * AP[i, j]
            Ro[i, j] = v
            if with_norm:
                part[j] += np.float64(v) * np.float64(v)


@numba.njit(parallel=True, cache=True, nogil=True)
def axpy_norm_cols(with_x, with_norm, X, R, P, AP, alpha, Xo, Ro):
    """Blocks (n, k) in C order: the same as :func:`axpy_norm_rows` per column."""
    n, k = R.shape
    rows = max(1, CHUNK // k)
    nch = (n + rows - 1) // rows
    part = np.zeros((nch, k), dtype=np.float64)
    for c in prange(nch):
        lo = c * rows
        hi = min(lo + rows, n)
        if with_x:
            _axpy_cols(X[lo:hi], alpha, P[lo:hi], Xo[lo:hi])
        _axmy_sumsq_cols(R[lo:hi], alpha, AP[lo:hi], Ro[lo:hi], part[c], with_norm)
    rr = np.zeros(k, dtype=np.float64)
    for c in range(nch):
        for j in range(k):
            rr[j] += part[c, j]
    return rr


@numba.njit(parallel=True, cache=True, nogil=True)
def inner_rows(U, V):
    """Rows (k, n): ``<U_j, V_j>`` in float64, per chunk (SIMD lanes), then over chunks in order."""
    k, n = U.shape
    nch = (n + CHUNK - 1) // CHUNK
    part = np.empty(k * nch, dtype=np.float64)
    for t in prange(k * nch):
        j = t // nch
        lo = (t - j * nch) * CHUNK
        hi = min(lo + CHUNK, n)
        part[t] = dot(U[j, lo:hi], V[j, lo:hi])
    out = np.zeros(k, dtype=np.float64)
    for t in range(k * nch):
        out[t // nch] += part[t]
    return out


# The same drivers compiled without threads (``prange`` runs as ``range``),
# for blocks below :data:`matfree._kernels.cg.PARALLEL_MIN_SIZE`: identical
# arithmetic and summation order, no thread synchronisation.
axpy_norm_rows_serial = serial_twin(axpy_norm_rows, "axpy_norm_rows_serial")
axpy_norm_cols_serial = serial_twin(axpy_norm_cols, "axpy_norm_cols_serial")
inner_rows_serial = serial_twin(inner_rows, "inner_rows_serial")
