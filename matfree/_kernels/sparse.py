"""Parallel CSR products (SciPy's sparse product runs on one thread).

The rows are cut into ``4 x threads`` contiguous parts holding about equal
numbers of nonzeros, and the parts are spread over Numba's threads with
``prange``.  Each row is accumulated exactly as SciPy does it (in the dtype
of the data, nonzeros in storage order), so the results agree with
``M @ x`` to the last bit on the matrices we tested, and in any case to
rounding.  Compiled once per signature and cached on disk (``cache=True``).

The row loops index with unsigned integers (a signed index costs a
wraparound test per load in Numba); so written, the kernel is as fast as
SciPy's on one thread in cache and faster out of cache (4.0 against 4.2 ms
at Poisson 1000², 0.36 against 0.41 ms for a block of 30 at 100²), and it
runs on all of Numba's threads.  On one thread, and inside
:func:`matfree._kernels._config.serial`, serial twins of the same code run.
:func:`pays_off` says when a product goes to the kernel, and the ``Sparse``
operator of :mod:`matfree.operators` asks it before every product.
"""

from __future__ import annotations


import numpy as np

from matfree._kernels import _config


#: least work (nonzeros times columns) for which the kernel is used; below
#: it the kernel and SciPy's product take the same time and SciPy's runs
MIN_NNZ = 100_000


#: parts per thread (load balance for matrices with uneven rows)
_PARTS_PER_THREAD = 4


def _jit():
    from matfree._kernels import _numba_sparse as jit

    return jit


def _bounds(indptr, threads):
    """Row boundaries of ``4 * threads`` parts with about equal nonzeros."""
    n = indptr.shape[0] - 1
    parts = max(1, min(n, _PARTS_PER_THREAD * threads))
    targets = np.linspace(0, indptr[-1], parts + 1)
    bounds = np.searchsorted(indptr, targets, side="left").astype(np.intp)
    bounds[0], bounds[-1] = 0, n
    return np.maximum.accumulate(bounds)


def pays_off(M, x) -> bool:
    """Whether ``M @ x`` should run on the parallel kernel.

    Yes when Numba is installed and enabled, ``M`` is a SciPy CSR matrix,
    ``x`` is a contiguous NumPy array of the same float32/float64 dtype (1-D,
    or 2-D of either memory order), and the nonzeros times the columns of
    ``x`` are at least :data:`MIN_NNZ`.
    """
    if not _config.active() or type(x) is not np.ndarray or x.dtype != M.dtype:
        return False
    if x.dtype not in (np.float32, np.float64) or getattr(M, "format", None) != "csr":
        return False
    if x.ndim not in (1, 2) or M.nnz * (x.shape[1] if x.ndim == 2 else 1) < MIN_NNZ:
        return False
    return x.ndim == 2 or x.flags.c_contiguous


def _threaded(name):
    """The kernel ``name`` and its row cut: threaded with two or more threads, else its serial twin."""
    threads = _config.num_threads()
    return getattr(_jit(), name if threads >= 2 else name + "_serial"), threads


def csr_matvec(M, x):
    """``M @ x`` for a SciPy CSR matrix ``M`` and a contiguous 1-D ``x`` of its dtype."""
    out = np.empty(M.shape[0], dtype=x.dtype)
    kern, threads = _threaded("matvec")
    return kern(M.indptr, M.indices, M.data, x, out, _bounds(M.indptr, threads))


def csr_matmat(M, X):
    """``M @ X`` for a SciPy CSR matrix and a 2-D block ``X`` (copied to C order if needed)."""
    X = np.ascontiguousarray(X)
    out = np.empty((M.shape[0], X.shape[1]), dtype=X.dtype)
    kern, threads = _threaded("matmat")
    return kern(M.indptr, M.indices, M.data, X, out, _bounds(M.indptr, threads))


#: fewest nonzeros for which the fused product runs on several threads
#: (below it, a serial twin of the same code: same results); see
#: :data:`matfree._kernels.cg.PARALLEL_MIN_SIZE` for why small problems
#: stay on one thread
PARALLEL_DOT_NNZ = 1 << 20


#: work (nonzeros times columns) per part of the fused products
#: :func:`csr_matvec_dot` and :func:`csr_matmat_dot` (a fixed cut, so that
#: their dot products do not depend on the number of threads)
DOT_PART_NNZ = 1 << 15


def fixed_bounds(indptr, columns=1):
    """Row boundaries of parts of about :data:`DOT_PART_NNZ` nonzeros times ``columns`` of work.

    Independent of the number of threads.  A block's parts count its columns:
    a block of 30 columns of Poisson 100² (5·10⁴ nonzeros) is cut into 45
    parts, not one, so that its product runs on all threads.
    """
    n = indptr.shape[0] - 1
    parts = max(1, min(n, int(indptr[-1]) * int(columns) // DOT_PART_NNZ))
    targets = np.linspace(0, indptr[-1], parts + 1)
    bounds = np.searchsorted(indptr, targets, side="left").astype(np.intp)
    bounds[0], bounds[-1] = 0, n
    return np.maximum.accumulate(bounds)


def csr_matvec_dot(M, x, shift=0.0, bounds=None):
    """``y = (M + shift I) x`` and ``xᵀy`` (a float) in one pass over ``M`` and ``x``.

    ``M`` is a square SciPy CSR matrix, ``x`` a contiguous 1-D array of its
    dtype.  ``y`` is rounded exactly as ``M @ x + shift * x`` (each row in
    storage order, then the shift); ``xᵀy`` is summed in float64, per part
    of about :data:`DOT_PART_NNZ` nonzeros, then over the parts in order, so
    it does not depend on the number of threads.  ``bounds`` (from
    :func:`fixed_bounds`) may be cached by the caller.  Returns
    ``NotImplemented`` for inputs it does not take (see :func:`pays_off`).
    """
    if not _config.active() or type(x) is not np.ndarray or x.ndim != 1:
        return NotImplemented
    if getattr(M, "format", None) != "csr" or x.dtype != M.dtype or M.shape[0] != M.shape[1]:
        return NotImplemented
    if x.dtype not in (np.float32, np.float64) or not x.flags.c_contiguous:
        return NotImplemented
    if M.nnz < MIN_NNZ or x.shape[0] != M.shape[1]:
        return NotImplemented
    if bounds is None:
        bounds = fixed_bounds(M.indptr)
    out = np.empty(M.shape[0], dtype=x.dtype)
    threaded = M.nnz >= PARALLEL_DOT_NNZ and _config.num_threads() >= 2
    kern = _jit().matvec_dot if threaded else _jit().matvec_dot_serial
    s = kern(M.indptr, M.indices, M.data, x, x.dtype.type(shift), out, bounds)
    return out, float(s)



def csr_product(M, x):
    """``M @ x`` (1-D or 2-D ``x``) on the parallel kernel; check :func:`pays_off` first."""
    return csr_matvec(M, x) if x.ndim == 1 else csr_matmat(M, x)


def csr_matmat_dot(M, X, bounds=None):
    """``W = M X`` and the column dots ``X[:, c]ᵀ W[:, c]`` (float64) in one pass; or ``NotImplemented``.

    For a square SciPy CSR matrix and a C-ordered ``(n, k)`` block of its
    dtype with enough work for :func:`pays_off`.  ``W`` equals ``M @ X`` bit
    for bit; the dots are summed per part of :func:`fixed_bounds` for the
    block's columns (``bounds``, cacheable) and then over parts in order.
    """
    if not pays_off(M, X) or X.ndim != 2 or not X.flags.c_contiguous or M.shape[0] != M.shape[1]:
        return NotImplemented
    if bounds is None:
        bounds = fixed_bounds(M.indptr, X.shape[1])
    out = np.empty((M.shape[0], X.shape[1]), dtype=X.dtype)
    kern, _ = _threaded("matmat_dot")
    d = kern(M.indptr, M.indices, M.data, X, out, bounds)
    return out, d


#: fewest and most columns of a task of :func:`csr_lanczos`.  Its product
#: is SIMD across the columns of a block from 8 columns on; narrower blocks
#: take a column at a time (on the Xeon here, 2 threads, a column of Poisson
#: 100² costs 31 µs alone, 16 µs in a block of 4, 9 µs in a block of 8).
#: The cap bounds a task's blocks and leaves several tasks for the threads.
LANCZOS_MIN_TASK = 8
LANCZOS_MAX_TASK = 32


def lanczos_width(p, threads):
    """Columns per task of :func:`csr_lanczos`: equal tasks, a multiple of the threads in number.

    One task per thread when that is within the bounds above; else the
    fewest rounds of equal tasks (100 columns on 2 threads: 4 tasks of 25,
    not 3 of 32 and one of 4).
    """
    threads = max(1, threads)
    rounds = -(-p // (threads * LANCZOS_MAX_TASK))
    width = -(-p // (threads * rounds))
    return max(1, min(p, max(LANCZOS_MIN_TASK, width)))


def csr_lanczos(M, Z, m, eps):
    """Lanczos coefficients (no reorthogonalisation) of every column of ``Z``, or ``NotImplemented``.

    ``M`` is a square SciPy CSR matrix, ``Z`` a NumPy ``(n, p)`` block of its
    float32/float64 dtype (the starting vectors, normalised here), with
    nonzeros times columns at least :data:`MIN_NNZ`.  Each column runs
    ``m`` steps of the recurrence of
    :func:`matfree.lanczos._lanczos_recurrence_norm`, stopping after a step
    whose ``beta`` is at most ``10 sqrt(n) eps ||T||`` (a breakdown: that
    ``beta`` is set to zero).  The columns are cut into tasks of
    :func:`lanczos_width` columns run in parallel, each in its own blocks,
    with the CSR product, recurrence, norms and next vectors fused as in
    the block path; no thread waits for another between steps.  Each
    column's numbers do not depend on the cut or on the threads.

    Returns ``(alpha, beta, lengths, broke, bad)``: ``(p, m)`` coefficients
    (zeros after a column's length), steps run per column, whether it broke
    down, and per column the first step with a non-finite coefficient
    (``-1`` for none).
    """
    if not pays_off(M, Z) or Z.ndim != 2 or M.shape[0] != M.shape[1] or Z.shape[0] != M.shape[0]:
        return NotImplemented
    n, p = Z.shape
    threads = _config.num_threads()
    width = lanczos_width(p, threads)
    alpha = np.zeros((p, m), dtype=Z.dtype)
    beta = np.zeros((p, m), dtype=Z.dtype)
    lengths = np.full(p, m, dtype=np.int64)
    broke = np.zeros(p, dtype=np.bool_)
    bad = np.full(p, -1, dtype=np.int64)
    kern, _ = _threaded("lanczos_cols")
    tol_scale = 10.0 * float(np.sqrt(n)) * float(eps)
    kern(M.indptr, M.indices, M.data, np.ascontiguousarray(Z), int(m), tol_scale, width,
         alpha, beta, lengths, broke, bad)
    return alpha, beta, lengths, broke, bad
