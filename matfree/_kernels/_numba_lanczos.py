"""Numba code of :mod:`matfree._kernels.lanczos` (imported on first use; imports Numba).

As in :mod:`matfree._kernels._numba_cg`, hot loops are serial helpers on 1-D
views (contiguous SIMD), driven in parallel over fixed chunks.
"""

import numba
import numpy as np
from numba import prange

from matfree._kernels._numba_cg import dot
from matfree._kernels._serial import serial_twin
from matfree._kernels.cg import CHUNK


@numba.njit(cache=True, nogil=True)
def _three_term(w, a, q, b, qp, out):
    # out = (w - a q) - b qp, in the order (and rounding) of the array-API twin
    for i in range(out.shape[0]):
        out[i] = (w[i] - a * q[i]) - b * qp[i]


@numba.njit(parallel=True, cache=True, nogil=True)
def recurrence_rows(W, Q, Qp, beta, Wo):
    """Rows (p, n): ``alpha_j = <Q_j, W_j>``, ``Wo_j = W_j - alpha_j Q_j - beta_j Qp_j``."""
    p, n = W.shape
    nch = (n + CHUNK - 1) // CHUNK
    part = np.empty(p * nch, dtype=np.float64)
    for t in prange(p * nch):
        j = t // nch
        lo = (t - j * nch) * CHUNK
        hi = min(lo + CHUNK, n)
        part[t] = dot(Q[j, lo:hi], W[j, lo:hi])
    acc = np.zeros(p, dtype=np.float64)
    for t in range(p * nch):
        acc[t // nch] += part[t]
    alpha = acc.astype(W.dtype)
    for t in prange(p * nch):
        j = t // nch
        lo = (t - j * nch) * CHUNK
        hi = min(lo + CHUNK, n)
        _three_term(W[j, lo:hi], alpha[j], Q[j, lo:hi], beta[j], Qp[j, lo:hi], Wo[j, lo:hi])
    return alpha


@numba.njit(cache=True, nogil=True)
def _dot_cols(Q, W, part):
    # part[j] = sum_i Q[i, j] W[i, j] over a chunk of rows of (m, p) blocks
    m, p = W.shape
    for i in range(m):
        for j in range(p):
            part[j] += np.float64(Q[i, j]) * np.float64(W[i, j])


@numba.njit(cache=True, nogil=True)
def _three_term_cols(W, alpha, Q, beta, Qp, Wo):
    m, p = W.shape
    for i in range(m):
        for j in range(p):
            Wo[i, j] = (W[i, j] - alpha[j] * Q[i, j]) - beta[j] * Qp[i, j]


@numba.njit(parallel=True, cache=True, nogil=True)
def recurrence_cols(W, Q, Qp, beta, Wo):
    """Columns (n, p) in C order: :func:`recurrence_rows` for each column."""
    n, p = W.shape
    rows = max(1, CHUNK // p)
    nch = (n + rows - 1) // rows
    part = np.zeros((nch, p), dtype=np.float64)
    for c in prange(nch):
        lo = c * rows
        hi = min(lo + rows, n)
        _dot_cols(Q[lo:hi], W[lo:hi], part[c])
    acc = np.zeros(p, dtype=np.float64)
    for c in range(nch):
        for j in range(p):
            acc[j] += part[c, j]
    alpha = acc.astype(W.dtype)
    for c in prange(nch):
        lo = c * rows
        hi = min(lo + rows, n)
        _three_term_cols(W[lo:hi], alpha, Q[lo:hi], beta, Qp[lo:hi], Wo[lo:hi])
    return alpha



@numba.njit(cache=True, nogil=True)
def _three_term_cols_sumsq(W, alpha, Q, beta, Qp, Wo, part):
    # _three_term_cols and part[j] += Wo[i, j]^2 in float64, in the same pass
    m, p = W.shape
    for i in range(m):
        for j in range(p):
            v = (W[i, j] - alpha[j] * Q[i, j]) - beta[j] * Qp[i, j]
            Wo[i, j] = v
            part[j] += np.float64(v) * np.float64(v)


@numba.njit(parallel=True, cache=True, nogil=True)
def recurrence_norm_cols(W, Q, Qp, beta, Wo, alpha_in, have_alpha):
    """:func:`recurrence_cols` and the squared norms of the columns of ``Wo``; ``(alpha, sumsq)``.

    With ``have_alpha`` the coefficients ``alpha_in`` are given (summed in
    the pass of the product) and the first sweep is skipped.
    """
    n, p = W.shape
    rows = max(1, CHUNK // p)
    nch = (n + rows - 1) // rows
    part = np.zeros((nch, p), dtype=np.float64)
    if have_alpha:
        alpha = alpha_in.copy()
    else:
        for c in prange(nch):
            lo = c * rows
            hi = min(lo + rows, n)
            _dot_cols(Q[lo:hi], W[lo:hi], part[c])
        acc = np.zeros(p, dtype=np.float64)
        for c in range(nch):
            for j in range(p):
                acc[j] += part[c, j]
        alpha = acc.astype(W.dtype)
        part[:, :] = 0.0
    for c in prange(nch):
        lo = c * rows
        hi = min(lo + rows, n)
        _three_term_cols_sumsq(W[lo:hi], alpha, Q[lo:hi], beta, Qp[lo:hi], Wo[lo:hi], part[c])
    sumsq = np.zeros(p, dtype=np.float64)
    for c in range(nch):
        for j in range(p):
            sumsq[j] += part[c, j]
    return alpha, sumsq


@numba.njit(cache=True, nogil=True)
def _scale_cols(W, inv, out):
    m, p = W.shape
    for i in range(m):
        w = W[i]
        o = out[i]
        for j in range(p):
            o[j] = w[j] * inv[j]


@numba.njit(parallel=True, cache=True, nogil=True)
def scale_cols(W, inv, out):
    """``out = W * inv`` per column for C-ordered ``(n, p)`` blocks (NumPy's rounding)."""
    n, p = W.shape
    rows = max(1, CHUNK // p)
    nch = (n + rows - 1) // rows
    for c in prange(nch):
        lo = c * rows
        hi = min(lo + rows, n)
        _scale_cols(W[lo:hi], inv, out[lo:hi])
    return out

# serial twins, for small inputs and inside matfree._kernels._config.serial()
recurrence_rows_serial = serial_twin(recurrence_rows, "recurrence_rows_serial")
recurrence_cols_serial = serial_twin(recurrence_cols, "recurrence_cols_serial")
recurrence_norm_cols_serial = serial_twin(recurrence_norm_cols, "recurrence_norm_cols_serial")
scale_cols_serial = serial_twin(scale_cols, "scale_cols_serial")
