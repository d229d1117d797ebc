"""Fused CPU kernels (Numba) for NumPy inputs, chosen here and never by callers.

Every kernel has a pure array-API twin in an algorithm module, which stays
the reference; a test checks the two agree to rounding in float32 and
float64.  An algorithm marks its twin with :func:`fused`::

    @_kernels.fused(_kernels.cg.update)
    def _cg_update(xp, x, r, p, Ap, alpha):
        ...  # the array-API reference

and keeps calling ``_cg_update(xp, ...)``: for NumPy float32/float64 inputs
the call goes to the Numba kernel when Numba is installed, the kernels are
switched on and the inputs suit it; otherwise (and whenever the kernel
answers ``NotImplemented``) to the twin.  Numba is imported lazily, on the
first kernel call, so ``import matfree`` never imports it.

Kernels: :mod:`~matfree._kernels.cg` (CG updates), :mod:`~matfree._kernels.lanczos`
(three-term recurrence), :mod:`~matfree._kernels.sparse`
(parallel CSR products for the ``Sparse`` operator, the CSR product
fused with ``pᵀAp`` that CG asks the ``Sparse`` operator for, and the whole
Lanczos run of SLQ's probes on a ``Sparse`` matrix).  The CG and
fused-product kernels run on one thread below a size threshold (a serial
twin of the same code: the same numbers), where waking threads would cost
more than it saves.  Switch all of them off
with ``MATFREE_NUMBA=0`` in the environment or, for a benchmark, with
``with matfree._kernels.disabled(): ...``.
"""

from __future__ import annotations

import functools
import inspect
import time

import numpy as np

from matfree import _backend as B
from matfree._kernels import cg, lanczos, sparse
from matfree._kernels._config import active, disabled, num_threads, set_enabled

__all__ = [
    "usable",
    "fused",
    "active",
    "disabled",
    "set_enabled",
    "num_threads",
    "warm_up",
    "inner",
    "cg",
    "lanczos",
    "sparse",
]


def usable(*arrays) -> bool:
    """Whether the Numba kernels apply: Numba installed and on, all NumPy float32/float64 of one dtype."""
    if not active():
        return False
    dt = None
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype not in (np.float32, np.float64):
            return False
        if dt is None:
            dt = a.dtype
        elif a.dtype != dt:
            return False
    return True


def fused(kernel):
    """Decorator: route calls of an array-API twin to ``kernel`` for NumPy inputs.

    The twin may take the namespace ``xp`` as its first argument (the kernel
    then gets the remaining arguments).  ``kernel`` returns
    ``NotImplemented`` for inputs it does not take, and the twin runs.  The
    twin stays reachable as ``.reference`` (and ``__wrapped__``) for tests.
    """

    def decorate(twin):
        params = list(inspect.signature(twin).parameters)
        takes_xp = bool(params) and params[0] == "xp"

        if takes_xp:

            @functools.wraps(twin)
            def dispatch(xp, *args, **kwargs):
                if B.is_numpy(xp) and active():
                    out = kernel(*args, **kwargs)
                    if out is not NotImplemented:
                        return out
                return twin(xp, *args, **kwargs)

        else:

            @functools.wraps(twin)
            def dispatch(*args, **kwargs):
                if active():
                    out = kernel(*args, **kwargs)
                    if out is not NotImplemented:
                        return out
                return twin(*args, **kwargs)

        dispatch.reference = twin
        dispatch.kernel = kernel
        return dispatch

    return decorate


@fused(cg.inner)
def inner(xp, u, v):
    """``uᵀv`` (per column for a block) as a 0-D or 1-D array, in the namespace ``xp``.

    The algorithms' dot product.  On NumPy with Numba, a kernel instead of
    BLAS: OpenBLAS's threads spin after every call and then contend with the
    Numba threads of the next kernel.
    """
    return xp.vecdot(u, v, axis=-u.ndim)


def warm_up(dtypes=("float32", "float64")) -> dict:
    """Compile (or load from the on-disk cache) every kernel for ``dtypes``.

    Returns the seconds each kernel took on its first call, keyed by name;
    benchmarks report this apart from steady-state times.  Empty when the
    kernels are not active.
    """
    if not active():
        return {}
    import scipy.sparse as sp

    times = {}
    k = 3

    def first(name, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        if out is NotImplemented:
            raise RuntimeError(f"kernel {name} refused its warm-up inputs")

    # a size below and one above the thread thresholds: serial and threaded twins
    sizes = (max(cg.MIN_SIZE, sparse.MIN_NNZ), max(cg.PARALLEL_MIN_SIZE, sparse.PARALLEL_DOT_NNZ // 4))
    for name in dtypes:
        dt = np.dtype(name)
        for n in sizes:
            v = np.ones(n, dtype=dt)
            V = np.ones((n, k), dtype=dt)
            VF = np.asfortranarray(V)
            first("cg.update", cg.update, v, v, v, v, 0.5)
            first("cg.update", cg.update, V, V, V, V, np.ones(k, dtype=dt))
            first("cg.residual", cg.residual, v, v, 0.5)
            first("cg.residual", cg.residual, VF, VF, np.ones(k, dtype=dt))
            first("cg.direction", cg.direction, v, v, 0.5)
            first("cg.direction", cg.direction, V, V, np.ones(k, dtype=dt))
            first("cg.inner", cg.inner, v, v)
            M = sp.random(n, n, density=5.0 / n, format="csr", dtype=dt, rng=0)
            first("sparse.csr_matvec_dot", sparse.csr_matvec_dot, M, v, 0.5)
            first("sparse.csr_matmat_dot", sparse.csr_matmat_dot, M, V)
            first("sparse.csr_lanczos", sparse.csr_lanczos, M, np.ones((n, k), dtype=dt), 3,
                  float(np.finfo(dt).eps))
        W = np.ones((2, n), dtype=dt)
        first("lanczos.recurrence", lanczos.recurrence, W, W, W, np.ones(2, dtype=dt))
        if num_threads() >= 2:
            first("sparse.csr_matvec", sparse.csr_matvec, M, v)
            first("sparse.csr_matmat", sparse.csr_matmat, M, V)
    return times
