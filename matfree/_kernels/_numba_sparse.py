"""Numba code of :mod:`matfree._kernels.sparse` (imported on first use; imports Numba)."""

import numba
import numpy as np

from matfree._kernels._numba_cg import dot
from matfree._kernels._numba_lanczos import _scale_cols, _three_term_cols_sumsq
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


#: blocks narrower than this take the column-first loop of ``_rows_narrow``
_NARROW = 8


@numba.njit(cache=True, nogil=True)
def _rows_narrow(indptr, indices, data, X, out, lo, hi):
    # rows lo..hi-1 of M X, one column at a time per row with the sum in a
    # register (the same order of additions, so the same bits, as the
    # row-first loop of _rows_block).  Row-first, a narrow block adds into
    # out[i, c] through memory at every nonzero: a chain of stores and
    # loads that made one column 3x slower than _rows
    k = np.uintp(X.shape[1])
    one = np.uintp(1)
    i = np.uintp(lo)
    stop = np.uintp(hi)
    while i < stop:
        start = np.uintp(indptr[i])
        end = np.uintp(indptr[i + one])
        c = np.uintp(0)
        while c < k:
            acc = data.dtype.type(0.0)
            jj = start
            while jj < end:
                acc += data[jj] * X[np.uintp(indices[jj]), c]
                jj += one
            out[i, c] = acc
            c += one
        i += one


@numba.njit(cache=True, nogil=True)
def _rows_block(indptr, indices, data, X, out, lo, hi):
    k = np.uintp(X.shape[1])
    if k < _NARROW:
        _rows_narrow(indptr, indices, data, X, out, lo, hi)
        return
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


@numba.njit(cache=True, nogil=True)
def _lanczos_task(indptr, indices, data, Z, c0, c1, m, tol_scale, alpha, beta, lengths, broke,
                  bad):
    # Lanczos (no reorthogonalisation) on columns c0..c1-1 of Z, in the
    # task's own (n, k) blocks; each column's arithmetic is independent of
    # the others in its block, so the results do not depend on the cut
    n = Z.shape[0]
    k = c1 - c0
    dt = Z.dtype
    Q = np.empty((n, k), dtype=dt)
    Qp = np.zeros((n, k), dtype=dt)
    W = np.empty((n, k), dtype=dt)
    ss = np.zeros(k, dtype=np.float64)
    for i in range(n):
        for c in range(k):
            v = np.float64(Z[i, c0 + c])
            ss[c] += v * v
    live = np.ones(k, dtype=np.bool_)
    nrm = np.sqrt(ss).astype(dt)
    left = k
    for c in range(k):
        if nrm[c] == 0.0 or not np.isfinite(nrm[c]):  # NaN from 0/0 on the array-API path
            bad[c0 + c] = 0
            live[c] = False
            left -= 1
            nrm[c] = 1.0
    for i in range(n):
        for c in range(k):
            Q[i, c] = Z[i, c0 + c] / nrm[c]
    inv = np.empty(k, dtype=dt)
    anorm = np.zeros(k, dtype=np.float64)
    b_last = np.zeros(k, dtype=np.float64)
    b_prev = np.zeros(k, dtype=dt)
    for j in range(m):
        if left == 0:
            break
        part = np.zeros(k, dtype=np.float64)
        _rows_block_dot(indptr, indices, data, Q, W, 0, n, part)
        a = part.astype(dt)
        sumsq = np.zeros(k, dtype=np.float64)
        _three_term_cols_sumsq(W, a, Q, b_prev, Qp, W, sumsq)
        b = np.sqrt(sumsq).astype(dt)
        for c in range(k):
            inv[c] = 0.0
            if not live[c]:
                b[c] = 0.0
                continue
            ah = np.float64(a[c])
            bh = np.float64(b[c])
            alpha[c0 + c, j] = a[c]
            if not (np.isfinite(ah) and np.isfinite(bh)):
                bad[c0 + c] = j
                live[c] = False
                left -= 1
                b[c] = 0.0
                continue
            anorm[c] = max(anorm[c], abs(ah) + bh + b_last[c])
            b_last[c] = bh
            if bh <= tol_scale * anorm[c]:
                lengths[c0 + c] = j + 1
                broke[c0 + c] = True
                live[c] = False
                left -= 1
                b[c] = 0.0
                continue
            beta[c0 + c, j] = b[c]
            inv[c] = 1.0 / b[c]
        if left == 0:
            break
        _scale_cols(W, inv, Qp)  # the next vectors, into the previous ones' memory
        Q, Qp = Qp, Q
        b_prev = b


@numba.njit(parallel=True, cache=True, nogil=True)
def lanczos_cols(indptr, indices, data, Z, m, tol_scale, width, alpha, beta, lengths, broke, bad):
    """Lanczos coefficients of every column of ``Z`` (``(n, p)``), ``width`` columns per task.

    ``alpha``, ``beta`` ``(p, m)`` zeros on entry; ``lengths`` (``m`` on
    entry) the steps run per column; ``broke`` (``False`` on entry) whether
    it stopped at a breakdown (``beta <= tol_scale * ||T||``); ``bad``
    (``-1`` on entry) the step at which its coefficients were not finite
    (0 for a start vector of norm zero).  Tasks run in parallel, each wholly
    in its own blocks: no synchronisation between steps.
    """
    p = Z.shape[1]
    tasks = (p + width - 1) // width
    for t in numba.prange(tasks):
        c0 = t * width
        _lanczos_task(indptr, indices, data, Z, c0, min(c0 + width, p), m, tol_scale,
                      alpha, beta, lengths, broke, bad)


# without threads: for one thread, inside serial(), and (the fused product) for
# matrices below :data:`matfree._kernels.sparse.PARALLEL_DOT_NNZ`
matvec_dot_serial = serial_twin(matvec_dot, "matvec_dot_serial")
matvec_serial = serial_twin(matvec, "matvec_serial")
matmat_serial = serial_twin(matmat, "matmat_serial")
matmat_dot_serial = serial_twin(matmat_dot, "matmat_dot_serial")
lanczos_cols_serial = serial_twin(lanczos_cols, "lanczos_cols_serial")
