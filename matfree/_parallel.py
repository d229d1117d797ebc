"""Evaluate independent work items serially or through an executor, in order.

The randomised estimators spend their products on independent probe blocks.
:func:`map_ordered` evaluates such a list of work items either in the calling
thread or through any :class:`concurrent.futures.Executor` --- a
``ThreadPoolExecutor``, a ``ProcessPoolExecutor``, or the executor of a Dask
cluster, ``dask.distributed.Client.get_executor()`` --- and returns the results
in the order of the items, whatever the order in which they finished.  A
caller that draws all its probe blocks from its ``rng`` *before* dispatching
them and then combines the returned list in order gets the same numbers from
every path (up to the bitwise reproducibility of the per-item work itself),
because neither the random stream nor the order of the floating-point
reduction depends on the executor.

Notes for callers
-----------------
* Items and ``fn`` must be picklable for process-based executors and Dask
  (Dask uses cloudpickle, so closures and lambdas are fine there).
* Work done in another process does not update the ``num_matvecs`` counter of
  the operator object in the calling process: a caller counts the products it
  dispatched itself (``sum of block widths``), as matfree estimators do anyway.
* An exception raised by ``fn`` keeps its type (so a
  :class:`~matfree.NonFiniteError` stays one) and gets a note naming the item;
  the items not yet started are cancelled.

This module is private: the public entry points are the estimators'
``executor=`` arguments.
"""

from __future__ import annotations

import concurrent.futures as cf
import time

__all__ = ["map_ordered"]


def map_ordered(fn, items, executor=None, *, timeout=None, what="work item"):
    """``[fn(item) for item in items]``, serially or through ``executor``.

    Parameters
    ----------
    fn : callable
        Function of one item.
    items : iterable
        The independent work items (e.g. probe blocks drawn beforehand).
    executor : concurrent.futures.Executor or None
        ``None`` evaluates in the calling thread, in order.  Otherwise every
        item is submitted at once with ``executor.submit(fn, item)``.
    timeout : float or None
        Seconds to wait for all results together (executor path only;
        ``None`` waits forever).
    what : str
        Name of one item in messages (``"probe block"``).

    Returns
    -------
    list
        ``fn(item)`` for each item, in the order of ``items``.

    Raises
    ------
    TypeError
        If ``executor`` has no ``submit`` method.
    ValueError
        If ``timeout`` is not positive.
    TimeoutError
        If the results are not all in after ``timeout`` seconds.
    Exception
        Whatever ``fn`` raised first in item order, with a note naming the item.

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from matfree._parallel import map_ordered
    >>> map_ordered(abs, [-3, 1, -2])
    [3, 1, 2]
    >>> with ThreadPoolExecutor(max_workers=2) as pool:
    ...     map_ordered(abs, [-3, 1, -2], pool, timeout=10)
    [3, 1, 2]
    """
    items = list(items)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor (an object with submit()), "
            f"got {type(executor).__name__}; use e.g. dask.distributed.Client.get_executor()"
        )
    if timeout is not None:
        timeout = float(timeout)
        if not timeout > 0.0:
            raise ValueError(f"timeout={timeout} must be > 0 (or None to wait forever)")
    if executor is None:
        return [_call_serial(fn, item, i, len(items), what) for i, item in enumerate(items)]
    return _map_executor(fn, items, executor, timeout, what)


def _call_serial(fn, item, index, count, what):
    try:
        return fn(item)
    except Exception as err:
        _add_note(err, f"raised while evaluating {what} {index} of {count}")
        raise


def _map_executor(fn, items, executor, timeout, what):
    futures, results = [], []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for item in items:
            futures.append(executor.submit(fn, item))
        for index, future in enumerate(futures):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                results.append(future.result(timeout=remaining))
            except (cf.TimeoutError, TimeoutError):
                raise TimeoutError(
                    f"{what} {index} of {len(items)} (and possibly later ones) did not "
                    f"finish within timeout={timeout} s"
                ) from None
            except Exception as err:
                _add_note(err, f"raised while evaluating {what} {index} of {len(items)}")
                raise
    finally:
        if len(results) < len(items):
            for future in futures:  # stop what has not started; finished ones ignore it
                future.cancel()
    return results


def _add_note(err, note):
    # PEP 678 notes exist from Python 3.11; on 3.10 the traceback must do.
    if hasattr(err, "add_note"):
        err.add_note(note)
