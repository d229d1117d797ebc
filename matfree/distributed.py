r"""Hessians summed over data shards, evaluated on a Dask cluster.

When the data behind a Hessian does not fit one machine, the Hessian is a
sum of per-shard Hessians, :math:`H = \sum_s H_s`, and a product
:math:`Hv = \sum_s H_s v` needs each shard's HVP evaluated where that shard's
data lives.  :class:`ShardedSum` does this on an existing engine,
`Dask <https://distributed.dask.org>`_ (``dask.distributed``): the shard data
is created on the workers once and kept there, every product scatters the
vector once, runs one task per shard next to its data and adds the results
with a tree reduction on the cluster, so that only the final ``n``-vector (or
``n``-by-``k`` block) comes back.  It is a :class:`~matfree.LinearOperator`,
so every algorithm of matfree works on it unchanged.

Dask is an optional dependency (``pip install matfree-hessian[dask]``); it is
imported only when a :class:`ShardedSum` is built, never by ``import matfree``.

Backends: host-memory arrays that pickle -- NumPy (the default), PyTorch on
the CPU, array-api-strict.  The vectors the shard functions receive are in the
operator's namespace and dtype.
"""

from __future__ import annotations

import functools
import numbers
import time
import types
import uuid

from matfree import _backend as B
from matfree.hessian import _backend_of
from matfree.operators import LinearOperator, NonFiniteError

__all__ = ["ShardedSum", "ShardError"]

_KEY_PREFIX = "matfree-shard"


class ShardError(RuntimeError):
    """A shard's product (or its creation) failed; ``shard`` is the shard's index.

    The message names the shard and the original exception; in the process
    where it was raised ``__cause__`` is the original exception (Dask does
    not carry ``__cause__`` back to the client, the message does).

    Parameters
    ----------
    message : str
        What failed, naming the shard.
    shard : int or None
        Index of the shard (``None`` when not known).

    Examples
    --------
    >>> from matfree.distributed import ShardError
    >>> err = ShardError("shard 3 raised ValueError in its matvec: bad data", 3)
    >>> err.shard
    3
    """

    def __init__(self, message, shard=None):
        super().__init__(message)
        self.shard = shard


# ======================================================================
# Functions that run on the workers (module level, so they pickle by name)
# ======================================================================


class _Shard:
    """A shard's HVP object on its worker, with an honest size for Dask's scheduler.

    Dask sizes an arbitrary object with ``sys.getsizeof``, which for a closure
    or a small class holding big arrays reports a few hundred bytes; the
    scheduler would then think moving the shard is free.  The holder reports
    the bytes of the arrays reachable from the object instead (see
    :func:`_estimate_nbytes`), so that placement and work stealing weigh the
    shard's data as what it is.
    """

    __slots__ = ("obj", "nbytes")

    def __init__(self, obj):
        self.obj = obj
        self.nbytes = _estimate_nbytes(obj)

    def __sizeof__(self):
        return self.nbytes


def _estimate_nbytes(obj):
    """Bytes of the arrays reachable from ``obj``, at least Dask's own ``sizeof``.

    Follows closures, instance attributes, bound methods, ``functools.partial``
    and containers a few levels deep; an estimate for the scheduler's cost
    model only, never used for correctness.
    """
    from dask.sizeof import sizeof  # knows NumPy, SciPy sparse, containers, ...

    try:
        found = _reachable_nbytes(obj, 4, set())
    except Exception:  # noqa: BLE001 - exotic objects: fall back to Dask's guess
        found = 0
    return max(found, int(sizeof(obj)))


def _reachable_nbytes(obj, depth, seen):
    if obj is None or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, (str, bytes, numbers.Number, type, types.ModuleType)):
        return 0
    nbytes = getattr(obj, "nbytes", None)  # NumPy, PyTorch, CuPy, JAX arrays
    if isinstance(nbytes, numbers.Integral):
        return int(nbytes)
    inner = getattr(obj, "_array", None)  # array-api-strict wraps a NumPy array
    if isinstance(getattr(inner, "nbytes", None), numbers.Integral):
        return int(inner.nbytes)
    if depth == 0:
        return 0
    if isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    else:
        children = []
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                children.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        if isinstance(obj, functools.partial):
            children += [obj.func, obj.args, obj.keywords]
        children.append(getattr(obj, "__self__", None))
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            children += list(attrs.values())
    return sum(_reachable_nbytes(c, depth - 1, seen) for c in children)


def _check_shard_object(shard, index, origin):
    if not (callable(shard) or callable(getattr(shard, "matvec", None))):
        raise ShardError(
            f"{origin} a {type(shard).__name__} for shard {index}; expected a callable "
            "hvp(v) or an object with matvec (e.g. a matfree LinearOperator)",
            index,
        )
    return _Shard(shard)


def _create_shard(factory, index):
    """Run ``factory(index)`` on a worker; its result stays in the worker's memory."""
    try:
        shard = factory(index)
    except Exception as err:
        raise ShardError(
            f"shard_factory raised {type(err).__name__} for shard {index}: {err}", index
        ) from err
    return _check_shard_object(shard, index, "shard_factory returned")


def _hold_shard(shard, index):
    """Keep a given shard HVP on a worker (a task, so Dask can recompute it)."""
    if isinstance(shard, _Shard):
        shard = shard.obj
    return _check_shard_object(shard, index, "shard_hvps gave")


def _apply_shard(shard, V, method):
    """``shard.method(V)`` for a vector or a block, whatever kind of object ``shard`` is."""
    block = V.ndim == 2
    has_method = callable(getattr(shard, method, None))
    if has_method:
        if block:
            blocked = getattr(shard, "matmat" if method == "matvec" else "rmatmat", None)
            if callable(blocked):
                return blocked(V)
        single = getattr(shard, method)
    elif method == "matvec":
        single = shard
    else:
        raise NotImplementedError(
            f"a plain callable has no transpose product; give the shard an object with "
            f"{method}, or declare symmetric=True"
        )
    if not block:
        return single(V)
    xp = B.namespace(V)
    cols = [single(V[:, j]) for j in range(V.shape[1])]
    if not cols:
        return xp.zeros(V.shape, dtype=V.dtype, device=B.device(V))
    return xp.stack(cols, axis=1)


def _nonfinite(index, message):
    err = NonFiniteError(message)
    err.shard = index
    return err


def _check_shard_output(W, V, index):
    if not hasattr(W, "shape"):
        raise ShardError(
            f"shard {index} returned {type(W).__name__}, expected an array", index
        )
    xp = B.namespace(V)
    try:
        same = B.namespace(W) is xp
    except TypeError:
        same = False
    if not same:
        raise ShardError(
            f"shard {index} returned an array of {type(W).__module__} for an input of "
            f"{xp.__name__}; a shard must answer in the library of its input",
            index,
        )
    if tuple(W.shape) != tuple(V.shape):
        raise ShardError(
            f"shard {index} returned shape {tuple(W.shape)} for an input of shape "
            f"{tuple(V.shape)}; expected {tuple(V.shape)}",
            index,
        )


def _shard_product(shard, V, index, method, check_finite):
    """One shard's ``H_s V`` on the worker that holds the shard, checked."""
    try:
        W = _apply_shard(shard.obj, V, method)
    except NonFiniteError as err:
        raise _nonfinite(index, f"shard {index}: {err}") from err
    except Exception as err:
        raise ShardError(
            f"shard {index} raised {type(err).__name__} in its {method}: {err}", index
        ) from err
    _check_shard_output(W, V, index)
    if check_finite:
        xp = B.namespace(W)
        if not bool(xp.all(xp.isfinite(W))):
            raise _nonfinite(
                index,
                f"shard {index} returned NaN or Inf (pass check_finite=False to skip this check)",
            )
    return W


def _shard_query(shard, name, index):
    """``shard.diagonal()`` or ``shard.trace()``; NotImplementedError when unknown."""
    shard = shard.obj
    fn = getattr(shard, name, None)
    if not callable(fn):
        raise NotImplementedError(
            f"shard {index} ({type(shard).__name__}) does not know its {name} exactly; "
            f"estimate it with matfree.{name}"
        )
    try:
        return fn()
    except NotImplementedError as err:
        raise NotImplementedError(f"shard {index}: {err}") from err
    except Exception as err:
        raise ShardError(
            f"shard {index} raised {type(err).__name__} in its {name}(): {err}", index
        ) from err


def _sum_parts(*parts):
    """Sum of partial results, left to right (a fixed order: bitwise reproducible)."""
    total = parts[0] + parts[1]
    for part in parts[2:]:
        total = total + part
    return total


# ======================================================================
# The operator
# ======================================================================


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            "matfree.distributed.ShardedSum needs Dask: pip install 'matfree-hessian[dask]' "
            "(or 'dask[distributed]')"
        ) from err
    return distributed


def _shard_index(key):
    """Shard index encoded in one of our task keys, else ``None``."""
    key = key[0] if isinstance(key, tuple) else key
    if isinstance(key, str) and key.startswith(_KEY_PREFIX):
        tail = key.rsplit("-", 1)[-1]
        if tail.isdigit():
            return int(tail)
    return None


class ShardedSum(LinearOperator):
    r"""The sum :math:`H = \sum_{s=0}^{S-1} H_s` of per-shard HVPs, evaluated on Dask.

    Each shard is an object living on a Dask worker: a callable
    ``hvp(v) -> H_s v``, or an object with ``matvec`` (and ideally
    ``matmat``), such as a matfree :class:`~matfree.LinearOperator` built on
    the worker with :func:`matfree.from_hvp`.  It is created there once
    (``shard_factory``), or shipped there once (``shard_hvps``), and kept
    until :meth:`close`.

    Parameters
    ----------
    client : dask.distributed.Client
        A synchronous client of the cluster.
    shard_hvps : sequence, optional
        One entry per shard: a callable ``hvp(v)``, an object with ``matvec``,
        or a ``distributed.Future`` holding one of these on a worker (for
        example the result of ``client.submit(load_shard, ...)``).  Callables
        and objects are sent to the workers once, inside a task, so keep
        their data small; load large data on the workers with
        ``shard_factory`` instead.
    shard_factory : callable, optional
        ``shard_factory(s) -> hvp_s``, run once per shard ``s = 0, ...,
        num_shards - 1`` on a worker (shards are placed in contiguous blocks
        over the workers).  It should load or create the shard's data there.
    num_shards : int, optional
        Number of shards; required with ``shard_factory``.
    size : int, optional
        The size ``n`` when ``like`` is not given (NumPy, float64 by default).
    like : array, optional
        A vector of the operator's size, library and dtype.
    dtype : dtype, optional
        Overrides the dtype of ``like``.
    symmetric : bool
        Declared symmetry (Hessians are symmetric).  A non-symmetric sum needs
        shards with ``rmatvec`` for the transpose product.
    positive_semidefinite : bool
        Declared positive semidefiniteness (every ``H_s`` convex, say).
    check_finite : bool
        Check each shard's product for NaN/Inf on its worker and raise
        :class:`~matfree.NonFiniteError` naming the shard.
    retries : int
        Automatic retries of a shard's product that raised (for flaky I/O);
        a lost worker is handled by Dask independently of this (see Notes).
    timeout : float, optional
        Seconds a product may take before ``TimeoutError`` (``None``: no limit).
    split_every : int
        Fan-in of the tree reduction (at least 2).  Each level of the tree is
        one more scheduling round trip, each addition fetches up to
        ``split_every - 1`` partial results from other workers: larger values
        suit many shards and small ``n``, 2 (pairwise) suits very large ``n``.

    Attributes
    ----------
    client : dask.distributed.Client
    num_shards : int

    Raises
    ------
    TypeError
        For a client that is not a synchronous ``distributed.Client``, or
        shards that are neither callables nor Futures.
    ValueError
        For inconsistent ``shard_hvps``/``shard_factory``/``num_shards``, bad
        sizes, or a cluster without workers.
    ShardError
        From a product (or :meth:`wait`) whose shard raised; its message and
        its ``shard`` attribute name the shard.

    See Also
    --------
    matfree.from_hvp : The same kind of operator for one HVP in this process.

    Notes
    -----
    A product :math:`W = HV` with a block :math:`V \in \mathbb{R}^{n\times k}`
    costs one scatter of :math:`V` to the workers, :math:`S` shard tasks
    :math:`W_s = H_s V` (each where shard :math:`s` lives) and :math:`S - 1`
    additions in a tree of fan-in ``split_every`` and depth
    :math:`\lceil \log_{\text{split\_every}} S \rceil`; one :math:`n \times k`
    block is gathered.  The additions run in a fixed order, so the same
    operator and vector give bitwise the same result whichever worker ran
    what.

    Faults.  The result depends on every shard's task, so a failure cannot
    produce a partial sum: a shard that raises errs the product with a
    :class:`ShardError` (``retries=`` retries it first); a worker that dies
    mid-product has its tasks -- including the creation of the shards it held,
    whose recipe Dask keeps -- recomputed on the remaining workers, up to
    ``distributed.scheduler.allowed-failures`` deaths per task, after which
    the product raises a :class:`ShardError` caused by ``KilledWorker``.  The
    vector is scattered to every worker, so losing one keeps it available.

    References
    ----------
    .. [1] M. Rocklin, "Dask: Parallel computation with blocked algorithms and
       task scheduling", Proc. 14th Python in Science Conf., 2015.
       doi:10.25080/Majora-7b98e3ed-013
    .. [2] J. Martens, "Deep learning via Hessian-free optimization",
       ICML 2010 (Hessians summed over mini-batches).

    Examples
    --------
    Two shards of a quadratic, on a small in-process cluster:

    >>> import numpy as np, matfree
    >>> from dask.distributed import Client, LocalCluster
    >>> from matfree.distributed import ShardedSum
    >>> cluster = LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0")
    >>> client = Client(cluster)
    >>> def make_shard(s):      # runs on a worker: load shard s there
    ...     Hs = np.diag([1.0, 2.0]) * (s + 1)
    ...     return lambda v: Hs @ v
    >>> H = ShardedSum(client, shard_factory=make_shard, num_shards=2, size=2)
    >>> H @ np.array([1.0, 1.0])
    array([3., 6.])
    >>> H.close(); client.close(); cluster.close()
    """

    _casts_to_own_dtype = True

    def __init__(
        self,
        client,
        shard_hvps=None,
        *,
        shard_factory=None,
        num_shards=None,
        size=None,
        like=None,
        dtype=None,
        symmetric=True,
        positive_semidefinite=False,
        check_finite=True,
        retries=0,
        timeout=None,
        split_every=4,
    ):
        distributed = _import_distributed()
        if not isinstance(client, distributed.Client):
            raise TypeError(
                f"client must be a dask.distributed.Client, got {type(client).__name__}"
            )
        if client.asynchronous:
            raise TypeError("client is asynchronous; ShardedSum needs a synchronous Client")
        num_shards = self._check_shards(distributed, shard_hvps, shard_factory, num_shards)
        retries = _check_int(retries, "retries", 0)
        split_every = _check_int(split_every, "split_every", 2)
        if timeout is not None:
            timeout = float(timeout)
            if not timeout > 0.0:
                raise ValueError(f"timeout={timeout} must be > 0 (or None for no limit)")
        xp, dev, n, dtype = _backend_of(like, size, dtype)
        super().__init__(
            (n, n),
            dtype,
            xp,
            dev,
            symmetric=symmetric,
            positive_semidefinite=positive_semidefinite,
        )
        self.client = client
        self.num_shards = num_shards
        self.check_finite = bool(check_finite)
        self.retries = retries
        self.timeout = timeout
        self.split_every = split_every
        self._token = uuid.uuid4().hex[:12]
        self._shards = self._place_shards(distributed, shard_hvps, shard_factory)

    # ----------------------------------------------------------- building
    @staticmethod
    def _check_shards(distributed, shard_hvps, shard_factory, num_shards):
        if (shard_hvps is None) == (shard_factory is None):
            raise ValueError(
                "pass exactly one of shard_hvps (a sequence of per-shard HVPs) and "
                "shard_factory (a function creating shard s on a worker)"
            )
        if shard_factory is not None:
            if not callable(shard_factory):
                raise TypeError(
                    f"shard_factory must be callable, got {type(shard_factory).__name__}"
                )
            if num_shards is None:
                raise ValueError("shard_factory needs num_shards=, the number of shards")
            return _check_int(num_shards, "num_shards", 1)
        if isinstance(shard_hvps, (str, bytes)) or not hasattr(shard_hvps, "__len__"):
            raise TypeError(
                f"shard_hvps must be a sequence (list or tuple), got {type(shard_hvps).__name__}"
            )
        if len(shard_hvps) == 0:
            raise ValueError("shard_hvps is empty; expected at least one shard")
        for s, item in enumerate(shard_hvps):
            ok = (
                isinstance(item, distributed.Future)
                or callable(item)
                or callable(getattr(item, "matvec", None))
            )
            if not ok:
                raise TypeError(
                    f"shard_hvps[{s}] is a {type(item).__name__}; expected a callable hvp(v), "
                    "an object with matvec, or a dask Future holding one"
                )
        if num_shards is not None and _check_int(num_shards, "num_shards", 1) != len(shard_hvps):
            raise ValueError(
                f"num_shards={num_shards} does not match len(shard_hvps)={len(shard_hvps)}"
            )
        return len(shard_hvps)

    def _place_shards(self, distributed, shard_hvps, shard_factory):
        """Create (or hand over) each shard on a worker; returns one Future per shard."""
        workers = sorted(self.client.scheduler_info()["workers"])
        if not workers:
            raise ValueError(
                "the Dask cluster of client has no workers; start some (or wait for them "
                "with client.wait_for_workers) before building a ShardedSum"
            )
        S = self.num_shards
        shards, self._locations = [], []
        for s in range(S):
            # contiguous blocks of shards per worker, so that the first level of
            # the tree mostly adds results that already sit on one worker
            home = (workers[s * len(workers) // S],)
            where = dict(workers=list(home), allow_other_workers=True)
            key = f"{_KEY_PREFIX}-create-{self._token}-{s}"
            if shard_factory is not None:
                fut = self.client.submit(_create_shard, shard_factory, s, key=key, **where)
            else:
                item = shard_hvps[s]
                if isinstance(item, distributed.Future):
                    where, home = {}, None  # run where the user's future already lives
                fut = self.client.submit(_hold_shard, item, s, key=key, **where)
            shards.append(fut)
            self._locations.append(home)
        self._located = False
        return shards

    def _refresh_locations(self):
        """Ask the scheduler where the shards are (one round trip).

        Products are pinned *loosely* to these workers: Dask runs a shard's
        task there while one of them is alive, and elsewhere (fetching the
        shard) only if none is.  Stale locations cost a copy, never a wrong
        result.
        """
        who = self.client.who_has(self._shards)
        located = True
        for s, fut in enumerate(self._shards):
            holders = tuple(who.get(fut.key, ()))
            if holders:
                self._locations[s] = holders
            else:
                located = False
        self._located = located

    # ------------------------------------------------------------ products
    def _matvec(self, v):
        return self._product(v, "matvec")

    _matmat = _matvec

    def _rmatvec(self, u):
        return self._product(u, "matvec" if self.symmetric else "rmatvec")

    _rmatmat = _rmatvec

    def _check_open(self):
        if self._shards is None:
            raise RuntimeError("this ShardedSum is closed; its shards were released")

    def _product(self, V, method):
        self._check_open()
        client = self.client
        token = uuid.uuid4().hex[:12]
        if not self._located:
            self._refresh_locations()
        # broadcast: every worker holds V, so losing one worker does not lose V
        [vf] = client.scatter([V], broadcast=True, hash=False)
        parts = []
        for s, (shard, home) in enumerate(zip(self._shards, self._locations)):
            where = {} if home is None else dict(workers=list(home), allow_other_workers=True)
            parts.append(
                client.submit(
                    _shard_product,
                    shard,
                    vf,
                    s,
                    method,
                    self.check_finite,
                    key=f"{_KEY_PREFIX}-{method}-{token}-{s}",
                    retries=self.retries,
                    **where,
                )
            )
        pending = [vf, *parts]
        level, depth = parts, 0
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level), self.split_every):
                group = level[j : j + self.split_every]
                if len(group) == 1:
                    nxt.append(group[0])
                    continue
                key = f"{_KEY_PREFIX}-sum-{token}-{depth}-{j // self.split_every}"
                nxt.append(client.submit(_sum_parts, *group, key=key))
            pending += nxt
            level, depth = nxt, depth + 1
        return self._gather(level[0], pending, f"{method} product")

    def _gather(self, total, pending, what):
        """The final result; on any failure cancel the rest and raise a clear error."""
        distributed = _import_distributed()
        try:
            return total.result(timeout=self.timeout)
        except BaseException as err:
            self.client.cancel(pending)
            self._located = False  # a worker may have gone: look again next time
            if isinstance(err, (TimeoutError, distributed.TimeoutError)):
                raise TimeoutError(
                    f"the {what} of this ShardedSum did not finish within "
                    f"timeout={self.timeout} s"
                ) from None
            if isinstance(err, distributed.KilledWorker):
                shard = _shard_index(err.task)
                where = f"shard {shard}" if shard is not None else f"task {err.task!r}"
                raise ShardError(
                    f"the {what} failed: workers died {err.allowed_failures + 1} times "
                    f"while running {where}; raise distributed.scheduler.allowed-failures "
                    "or find out why the workers die (memory limit?)",
                    shard,
                ) from err
            raise

    # ---------------------------------------------------- exact knowledge
    def _reduce_query(self, name):
        self._check_open()
        client = self.client
        token = uuid.uuid4().hex[:12]
        parts = client.map(
            _shard_query,
            self._shards,
            [name] * self.num_shards,
            range(self.num_shards),
            key=[f"{_KEY_PREFIX}-{name}-{token}-{s}" for s in range(self.num_shards)],
        )
        total = parts[0] if len(parts) == 1 else client.submit(
            _sum_parts, *parts, key=f"{_KEY_PREFIX}-sum-{name}-{token}"
        )
        out = self._gather(total, parts + [total], name)
        if out.dtype != self.dtype:
            out = self.xp.astype(out, self.dtype)
        return out

    def diagonal(self):
        """Exact diagonal ``sum_s diag(H_s)``, when every shard knows its own.

        Returns
        -------
        array, shape (n,)
            In the operator's namespace and dtype.

        Raises
        ------
        NotImplementedError
            When a shard has no exact ``diagonal()``; estimate it with
            :func:`matfree.diagonal` instead.
        """
        return self._reduce_query("diagonal")

    def trace(self):
        """Exact trace ``sum_s tr(H_s)``, when every shard knows its own.

        Returns
        -------
        array, shape ()
            In the operator's namespace and dtype.

        Raises
        ------
        NotImplementedError
            When a shard has no exact ``trace()``; estimate it with
            :func:`matfree.trace` instead.
        """
        return self._reduce_query("trace")

    # ------------------------------------------------------------ lifetime
    def wait(self, timeout=None):
        """Block until every shard exists on the workers; raise the first shard error.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait in total.

        Returns
        -------
        ShardedSum
            ``self``, for chaining.

        Raises
        ------
        ShardError
            If a shard could not be created.
        TimeoutError
            If the shards are not all created in time.
        """
        self._check_open()
        distributed = _import_distributed()
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        for s, fut in enumerate(self._shards):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                err = fut.exception(timeout=remaining)  # waits; moves no shard data
            except (TimeoutError, distributed.TimeoutError):
                raise TimeoutError(
                    f"shard {s} was not created within timeout={timeout} s"
                ) from None
            if err is not None:
                raise err
        self._refresh_locations()
        return self

    def shard_workers(self):
        """Ask the scheduler which workers hold each shard.

        Returns
        -------
        list of tuple of str
            Worker addresses per shard, in shard order (empty while a shard
            is being created; more than one if Dask replicated it).
        """
        self._check_open()
        who = self.client.who_has(self._shards)
        return [tuple(who.get(f.key, ())) for f in self._shards]

    def close(self):
        """Release the shards on the workers; the operator cannot be used afterwards."""
        if self._shards is not None:
            shards, self._shards = self._shards, None
            try:
                self.client.cancel(shards)
            except Exception:  # noqa: BLE001 - the client may be closed already
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._shards is None else f"{self.num_shards} shards"
        return super().__repr__()[:-1] + f", {state} on Dask>"


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low:
        raise ValueError(f"{name}={value} must be >= {low}")
    return value

