"""Fused Lanczos recurrence (Numba, parallel).

Twin of :func:`matfree.lanczos._lanczos_recurrence`: ``alpha = <q, w>`` and
``w - alpha q - beta_prev q_prev`` for one vector or a batch of rows
``(p, n)`` or columns ``(n, p)``, in two sweeps over memory: six vectors of
traffic (read q, w; then read w, q, q_prev and write the result) where the
array-API path moves fourteen and allocates four temporaries.  The
element-wise update rounds exactly as the twin's
``(w - alpha q) - beta_prev q_prev``; ``alpha`` is summed per chunk in
float64 (SIMD lanes) and then over chunks in order, so it does not depend
on the number of threads, and differs from the twin's by rounding.

Reorthogonalisation (classical Gram-Schmidt, ``Q w`` and ``w - Qᵀ h``) has
no kernel here: it is BLAS-2 work that NumPy's BLAS already runs at memory
speed with fused multiply-adds.  A Numba version that fuses the
subtraction of one pass with the projection of the next (three sweeps over
``Q`` instead of four) measured 1.4-1.5x *slower* than the two BLAS calls
per pass for 20-100 basis vectors (one thread, n = 1e4 ... 1e6), so the
array-API path is kept.

Results are new arrays (inputs are never modified).  A function returns
``NotImplemented`` for inputs it cannot take, and the dispatcher then calls
the array-API twin.
"""

from __future__ import annotations

import numpy as np

from matfree._kernels import _config
from matfree._kernels.cg import CHUNK, MIN_SIZE, PARALLEL_MIN_SIZE


def _jit():
    from matfree._kernels import _numba_lanczos as jit

    return jit


def _driver(form, size, name="recurrence"):
    """``<name>_<form>``, threaded above ``PARALLEL_MIN_SIZE`` entries outside ``serial()``."""
    threaded = size >= PARALLEL_MIN_SIZE and not _config.in_serial()
    return getattr(_jit(), name + "_" + form + ("" if threaded else "_serial"))


def _floats(*arrays):
    dtype = arrays[0].dtype
    return (
        _config.active()
        and dtype in (np.float32, np.float64)
        and all(type(a) is np.ndarray and a.dtype == dtype for a in arrays)
    )


def recurrence(w, q, q_prev, beta_prev, axis=-1):
    """``(w - alpha q - beta_prev q_prev, alpha)`` with ``alpha = <q, w>``, or ``NotImplemented``.

    The vectors run along ``axis``: ``-1`` for a vector ``(n,)`` or rows
    ``(p, n)``, ``0`` for a vector or columns ``(n, p)``; ``w, q, q_prev`` are
    C-contiguous arrays of one dtype (or, for ``axis=0``, all in Fortran
    order) and ``beta_prev`` an array of that dtype with the shape of
    ``alpha``.  ``w`` is not modified; the result is a new array.
    """
    if not isinstance(beta_prev, (np.ndarray, np.generic)) or axis not in (-1, 0, 1):
        return NotImplemented
    arrays = (w, q, q_prev)
    if not _floats(*arrays) or np.asarray(beta_prev).dtype != w.dtype:
        return NotImplemented
    if w.ndim not in (1, 2) or w.size < MIN_SIZE or any(a.shape != w.shape for a in arrays):
        return NotImplemented
    beta = np.asarray(beta_prev)
    if w.ndim == 1:
        if beta.shape != () or not all(a.flags.c_contiguous for a in arrays):
            return NotImplemented
        Wo = np.empty_like(w)
        alpha = _driver("rows", w.size)(
            w[None, :], q[None, :], q_prev[None, :], beta.reshape(1), Wo[None, :]
        )
        return Wo, w.dtype.type(alpha[0])
    along_rows = axis in (-1, 1)
    p = w.shape[0] if along_rows else w.shape[1]
    if beta.shape != (p,):
        return NotImplemented
    beta = np.ascontiguousarray(beta)
    # prefer rows (one contiguous vector per row: SIMD along the vector)
    if all(a.flags.c_contiguous if along_rows else a.flags.f_contiguous for a in arrays):
        form, views = "rows", (arrays if along_rows else tuple(a.T for a in arrays))
    elif all(a.flags.f_contiguous if along_rows else a.flags.c_contiguous for a in arrays):
        form, views = "cols", (tuple(a.T for a in arrays) if along_rows else arrays)
    else:
        return NotImplemented
    out = np.empty(views[0].shape, dtype=w.dtype)
    alpha = _driver(form, w.size)(*views, beta, out)
    return (out if views[0] is w else out.T), alpha


def recurrence_norm(w, q, q_prev, beta_prev, axis=-1, step=0, alpha=None):
    """:func:`recurrence` and the norms of the new vectors: ``(w_new, alpha, beta)``; or ``NotImplemented``.

    Only for columns: ``axis=0`` and C-contiguous ``(n, p)`` blocks (the
    layout of stochastic Lanczos quadrature's probes), where the squared norms
    are summed in the sweep that writes ``w_new`` (per chunk of rows in
    float64, then over chunks in order) instead of a third sweep.  Other
    layouts go to the twin, which runs :func:`recurrence` and a norm.
    ``step`` is the twin's (for its message); unused here.  A given
    ``alpha`` (the ``(p,)`` dots ``<q, w>`` of the product's pass) skips
    the first sweep.
    """
    if axis != 0 or not isinstance(beta_prev, np.ndarray):
        return NotImplemented
    arrays = (w, q, q_prev)
    if not _floats(*arrays) or beta_prev.dtype != w.dtype or w.ndim != 2 or w.size < MIN_SIZE:
        return NotImplemented
    if any(a.shape != w.shape or not a.flags.c_contiguous for a in arrays):
        return NotImplemented
    if beta_prev.shape != (w.shape[1],):
        return NotImplemented
    given = alpha is not None
    if given and (type(alpha) is not np.ndarray or alpha.dtype != w.dtype or alpha.shape != beta_prev.shape):
        return NotImplemented
    a_in = np.ascontiguousarray(alpha) if given else np.zeros(w.shape[1], dtype=w.dtype)
    out = np.empty_like(w)
    kern = _driver("cols", w.size, "recurrence_norm")
    alpha, sumsq = kern(w, q, q_prev, np.ascontiguousarray(beta_prev), out, a_in, given)
    return out, alpha, np.sqrt(sumsq).astype(w.dtype)


def normalise_columns(W, beta, spare):
    """``W * (1 / beta)`` per column (``beta = 0``: times one), written into ``spare``; or ``NotImplemented``.

    ``spare`` is a block of the same shape the caller no longer needs (the
    previous Lanczos vectors): writing there saves the allocation of a new
    block every step.  Rounds as the twin (bit for bit).
    """
    if not _floats(W, beta, spare) or W.ndim != 2 or W.size < MIN_SIZE or beta.shape != (W.shape[1],):
        return NotImplemented
    if spare.shape != W.shape or not (W.flags.c_contiguous and spare.flags.c_contiguous):
        return NotImplemented
    if not spare.flags.writeable or np.shares_memory(spare, W):
        return NotImplemented
    inv = 1.0 / np.where(beta > 0, beta, np.ones_like(beta))
    return _driver("cols", W.size, "scale")(W, inv, spare)
