"""Whether the Numba kernels are used, and how many threads they get.

The kernels are on whenever Numba is installed, unless the environment
variable ``MATFREE_NUMBA`` is ``0`` (read once, at import) or a benchmark
switches them off with :func:`disabled`.  The thread count is Numba's own
(``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``), or one inside
:func:`serial`.
"""

from __future__ import annotations

import contextlib
import os
import threading

from matfree import _backend as B

_ENABLED = [os.environ.get("MATFREE_NUMBA", "1").strip().lower() not in ("0", "false", "off", "no")]


def active() -> bool:
    """Whether the kernels are on: Numba installed and not switched off."""
    return _ENABLED[0] and B.has_numba()


def set_enabled(flag: bool) -> None:
    """Switch the kernels on or off for the whole process."""
    _ENABLED[0] = bool(flag)


@contextlib.contextmanager
def disabled():
    """Context in which every product and update takes the pure array-API path."""
    old = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = old


_STATE = threading.local()  # .serial: inside serial() (per thread)


def in_serial() -> bool:
    """Whether this thread is inside :func:`serial`."""
    return getattr(_STATE, "serial", False)


@contextlib.contextmanager
def serial():
    """Context in which the kernels run on one thread (their serial twins).

    For algorithms whose iterations call multithreaded BLAS (Gram-Schmidt
    against a basis, restarts): after every call OpenBLAS's threads spin for
    milliseconds on the cores, and a Numba parallel region started meanwhile
    waits for a scheduler time slice (measured: a 0.04 ms kernel took 18 ms
    after ``np.linalg.norm`` on two cores).  One thread pool at a time: BLAS
    keeps the threads and the kernels stay serial.
    """
    old = in_serial()
    _STATE.serial = True
    try:
        yield
    finally:
        _STATE.serial = old


def num_threads() -> int:
    """Threads the kernels may use: Numba's thread count, or 1 inside :func:`serial` (imports Numba)."""
    if in_serial():
        return 1
    import numba

    return int(numba.get_num_threads())
