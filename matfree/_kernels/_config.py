"""Whether the Numba kernels are used, and how many threads they get.

The kernels are on whenever Numba is installed, unless the environment
variable ``MATFREE_NUMBA`` is ``0`` (read once, at import) or a benchmark
switches them off with :func:`disabled`.  The thread count is Numba's own
(``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``).
"""

from __future__ import annotations

import contextlib
import os

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


def num_threads() -> int:
    """Numba's current thread count (imports Numba)."""
    import numba

    return int(numba.get_num_threads())
