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
import functools
import time

__all__ = ["map_ordered", "executor_width", "check_executor"]


def map_ordered(fn, items, executor=None, *, timeout=None, what="work item", offset=0, on_result=None):
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
    offset : int
        Number of items of the same kind dispatched before these (in earlier
        rounds): messages count items from ``offset``.
    on_result : callable, optional
        ``on_result(index, result)`` is called in the calling thread for each
        result in item order, as soon as it and all earlier ones are in (to
        advance a progress bar); its exceptions propagate.

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
    check_executor(executor)
    if timeout is not None:
        timeout = float(timeout)
        if not timeout > 0.0:
            raise ValueError(f"timeout={timeout} must be > 0 (or None to wait forever)")
    label = _Label(what, offset, len(items))
    if executor is None:
        results = []
        for i, item in enumerate(items):
            results.append(_call_serial(fn, item, label(i)))
            if on_result is not None:
                on_result(i, results[-1])
        return results
    return _map_executor(fn, items, executor, timeout, label, on_result)


def check_executor(executor):
    """Raise ``TypeError`` unless ``executor`` is ``None`` or has a ``submit`` method."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor (an object with submit()), "
            f"got {type(executor).__name__}; use e.g. dask.distributed.Client.get_executor()"
        )
    return executor


def executor_width(executor):
    """How many items ``executor`` runs at once, where it says so (else 2).

    ``ThreadPoolExecutor``/``ProcessPoolExecutor``: ``max_workers``; the
    executor of a Dask client: the total number of worker threads.
    """
    if executor is None:
        return 1
    width = getattr(executor, "_max_workers", None)
    client = getattr(executor, "_client", None)
    if width is None and client is not None and callable(getattr(client, "nthreads", None)):
        try:
            width = sum(client.nthreads().values())
        except Exception:  # noqa: BLE001 - a closed or odd client: use the fallback
            width = None
    return max(1, int(width)) if isinstance(width, int) and width > 0 else 2


class _Label:
    def __init__(self, what, offset, count):
        self.what, self.offset, self.count = what, int(offset), int(count)

    def __call__(self, index):
        return f"{self.what} {self.offset + index} of {self.offset + self.count}"


def _call_serial(fn, item, label):
    try:
        return fn(item)
    except Exception as err:
        _add_note(err, f"raised while evaluating {label}")
        raise


def _map_executor(fn, items, executor, timeout, label, on_result):
    futures, results = [], []
    deadline = None if timeout is None else time.monotonic() + timeout
    if isinstance(executor, cf.ProcessPoolExecutor):
        fn = _by_cloudpickle(fn)
    try:
        for item in items:
            futures.append(executor.submit(fn, item))
        for index, future in enumerate(futures):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                results.append(future.result(timeout=remaining))
            except (cf.TimeoutError, TimeoutError):
                raise TimeoutError(
                    f"{label(index)} (and possibly later ones) did not "
                    f"finish within timeout={timeout} s"
                ) from None
            except Exception as err:
                _add_note(err, f"raised while evaluating {label(index)}")
                raise
            if on_result is not None:
                on_result(index, results[-1])
    finally:
        if len(results) < len(items):
            for future in futures:  # stop what has not started; finished ones ignore it
                future.cancel()
    return results


def _by_cloudpickle(fn):
    """``fn`` wrapped so that a ``ProcessPoolExecutor`` can ship it.

    The standard pickle refuses what the estimators submit (closures over an
    operator that holds its array-namespace module, users' lambdas);
    cloudpickle (a dependency of Dask) serialises them, and modules by
    reference.  The payload is made once and reused for every item.
    """
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(
            "a ProcessPoolExecutor needs cloudpickle to ship the operator and the work "
            "items (closures) to its processes; pip install cloudpickle (it comes with "
            "the 'dask' extra)"
        ) from None
    return functools.partial(_call_pickled, cloudpickle.dumps(fn))


def _call_pickled(payload, item):
    import pickle

    return pickle.loads(payload)(item)


def _add_note(err, note):
    # PEP 678 notes exist from Python 3.11; on 3.10 the traceback must do.
    if hasattr(err, "add_note"):
        err.add_note(note)
