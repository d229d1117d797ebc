"""Serial twins of parallel Numba kernels (imports Numba).

A twin runs the same code with ``prange`` as ``range``: identical arithmetic
and summation order, no parallel region, for inputs too small for threads.
"""

import types

import numba


def serial_twin(kernel, name):
    """A serial copy of the ``parallel=True`` dispatcher ``kernel``, cached as ``name``.

    Numba files its disk cache under a function's module, qualified name and
    first line, not under its compile flags: ``njit(kernel.py_func)`` shares
    ``kernel``'s cache entry and loads whichever build was compiled first,
    so the "serial" twin could run the parallel code (and start threads that
    then contend with BLAS's).  The copy made here has its own qualified name.
    """
    f = kernel.py_func
    g = types.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    g.__qualname__ = name
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    return numba.njit(cache=True, nogil=True)(g)
