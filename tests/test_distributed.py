"""ShardedSum on a local Dask cluster, and the ordered executor map of matfree._parallel.

One module-scoped LocalCluster (loopback, 2 worker processes with 1 thread
each) serves every test; the fault tests that kill a worker come last.  Every
wait is bounded by a timeout.  Shard data is built on the workers from a
seed, and the dense reference from the same seed in the test process.
"""

import concurrent.futures as cf
import functools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import to_np

import matfree
from matfree._parallel import map_ordered
from matfree.distributed import ShardError, ShardedSum  # imports Dask only when used

# Everything that needs Dask gets it through the ``client`` fixture (or asks
# for it itself), so without Dask those tests skip and the rest still runs.

# No warning filters: this module runs clean under ``filterwarnings = error``
# (also with ``python -X dev``), because the scheduler's HTTP server is put on a
# free port (no "Port 8787 is already in use" UserWarning) and every cluster
# and client is closed explicitly.


N = 12
WAIT = 60  # seconds: upper bound for any single product in this module


# ----------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def distributed():
    pytest.importorskip("dask")
    return pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client(distributed):
    # Worker processes on loopback; the scheduler's HTTP server on a free
    # loopback port without the dashboard (which would need bokeh and 8787).
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
    )
    cl = distributed.Client(cluster, timeout=30)
    try:
        cl.wait_for_workers(2, timeout=30)
        yield cl
    finally:
        cl.close(timeout=30)
        cluster.close(timeout=30)


# ------------------------------------------ shard builders (run on workers)
def _shard_matrix(s, n, seed):
    """Symmetric positive semidefinite matrix of shard ``s`` (same on any process)."""
    rng = np.random.default_rng([seed, s])
    X = rng.standard_normal((n + s, n))
    return X.T @ X / (n + s)


def _namespace(name):
    if name == "numpy":
        import array_api_compat.numpy as xp
    elif name == "torch":
        import array_api_compat.torch as xp
    else:
        import array_api_strict as xp
    return xp


def _backend_name(xp):
    name = xp.__name__
    return "numpy" if "numpy" in name else "torch" if "torch" in name else "array_api_strict"


def dense_shard(s, n, seed, backend="numpy", dtype="float64"):
    """Shard factory: a matfree.Dense operator built on the worker."""
    xp = _namespace(backend)
    return matfree.Dense(xp.asarray(_shard_matrix(s, n, seed), dtype=getattr(xp, dtype)))


def callable_shard(s, n, seed):
    """Shard factory: a plain hvp callable (no matmat, no diagonal)."""
    M = _shard_matrix(s, n, seed)
    return lambda v: M @ v


def failing_shard(s, n, seed, bad):
    M = _shard_matrix(s, n, seed)

    def hvp(v):
        if s == bad:
            raise ValueError("bad data in this shard")
        return M @ v

    return hvp


def nan_shard(s, n, seed, bad):
    M = _shard_matrix(s, n, seed)
    return lambda v: M @ v * (np.nan if s == bad else 1.0)


def wrong_shape_shard(s, n, seed, bad):
    M = _shard_matrix(s, n, seed)
    return lambda v: (M @ v)[: n - 1] if s == bad else M @ v


def failing_factory(s, n, seed, bad):
    if s == bad:
        raise OSError(f"cannot read shard file {s}")
    return callable_shard(s, n, seed)


def flaky_shard(s, n, seed, marker):
    """Raises on its first call anywhere in the cluster (a marker file records it)."""
    M = _shard_matrix(s, n, seed)

    def hvp(v):
        if s == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            raise ConnectionError("transient read error")
        return M @ v

    return hvp


def slow_shard(s, n, seed, delay):
    M = _shard_matrix(s, n, seed)

    def hvp(v):
        time.sleep(delay)
        return M @ v

    return hvp


def _dense_sum(S, n=N, seed=0):
    return sum(_shard_matrix(s, n, seed) for s in range(S))


# =================================================================== ShardedSum
def test_matches_dense_sum(client, case, np_rng):
    S, seed = 5, 1
    backend = _backend_name(case.xp)
    factory = functools.partial(
        dense_shard, n=N, seed=seed, backend=backend, dtype=case.dtype_name
    )
    like = case.asarray(np.zeros(N))
    with ShardedSum(client, shard_factory=factory, num_shards=S, like=like, timeout=WAIT) as H:
        ref = _dense_sum(S, seed=seed)
        v, V = np_rng.standard_normal(N), np_rng.standard_normal((N, 3))
        w = H @ case.asarray(v)
        W = H @ case.asarray(V)
        assert w.dtype == case.dtype and W.dtype == case.dtype
        case.close(w, ref @ v)
        case.close(W, ref @ V)
        case.close(H.rmatvec(case.asarray(v)), ref @ v)
        case.close(H.todense(), ref)
        assert H.num_matvecs == 1 + 3 + 1 + N
        case.close(H.diagonal(), np.diag(ref))
        case.close(H.trace(), np.trace(ref))


def nonsymmetric_shard(s, n, seed):
    return matfree.Dense(np.random.default_rng([seed, s]).standard_normal((n, n)))


def test_nonsymmetric_sum_and_transpose(client, np_rng):
    S, seed = 3, 19
    ref = sum(nonsymmetric_shard(s, N, seed).A for s in range(S))
    factory = functools.partial(nonsymmetric_shard, n=N, seed=seed)
    with ShardedSum(
        client, shard_factory=factory, num_shards=S, size=N, symmetric=False, timeout=WAIT
    ) as H:
        u, U = np_rng.standard_normal(N), np_rng.standard_normal((N, 2))
        np.testing.assert_allclose(H @ u, ref @ u, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(H.rmatvec(u), ref.T @ u, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(H.rmatmat(U), ref.T @ U, rtol=1e-12, atol=1e-12)
    plain = functools.partial(callable_shard, n=N, seed=seed)
    with ShardedSum(
        client, shard_factory=plain, num_shards=2, size=N, symmetric=False, timeout=WAIT
    ) as H:
        with pytest.raises(ShardError, match="plain callable has no transpose product"):
            H.rmatvec(u)


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_tree_reduction_fan_in(client, np_rng, split_every):
    S = 7
    factory = functools.partial(callable_shard, n=N, seed=2)
    with ShardedSum(
        client, shard_factory=factory, num_shards=S, size=N, split_every=split_every, timeout=WAIT
    ) as H:
        V = np_rng.standard_normal((N, 2))
        np.testing.assert_allclose(H @ V, _dense_sum(S, seed=2) @ V, rtol=1e-13, atol=1e-13)


def test_bitwise_reproducible(client, np_rng):
    factory = functools.partial(callable_shard, n=N, seed=3)
    with ShardedSum(client, shard_factory=factory, num_shards=6, size=N, timeout=WAIT) as H:
        v = np_rng.standard_normal(N)
        first = H @ v
        for _ in range(3):
            assert np.array_equal(H @ v, first)


def test_shard_hvps_callables_and_futures(client, np_rng):
    seed, S = 4, 3
    hvps = [callable_shard(s, N, seed) for s in range(S)]
    loaded = [client.submit(callable_shard, s, N, seed, pure=False) for s in range(S)]
    ref = _dense_sum(S, seed=seed)
    v = np_rng.standard_normal(N)
    with ShardedSum(client, hvps, size=N, timeout=WAIT) as H1:
        np.testing.assert_allclose(H1 @ v, ref @ v, rtol=1e-13, atol=1e-13)
    with ShardedSum(client, loaded, num_shards=S, size=N, timeout=WAIT) as H2:
        del loaded  # the operator keeps its own handles on the shards
        np.testing.assert_allclose(H2 @ v, ref @ v, rtol=1e-13, atol=1e-13)
        assert len(H2.shard_workers()) == S


def test_dtype_rules(client):
    """float32 operator: a float64 vector promotes the result, as for from_hvp."""
    factory = functools.partial(callable_shard, n=N, seed=5)
    with ShardedSum(
        client, shard_factory=factory, num_shards=2, size=N, dtype=np.float32, timeout=WAIT
    ) as H:
        assert (H @ np.ones(N, dtype=np.float32)).dtype == np.float32
        assert (H @ np.ones(N)).dtype == np.float64
        with pytest.raises(TypeError, match="float32 or float64"):
            H @ np.ones(N, dtype=np.int64)
        with pytest.raises(ValueError, match="shape mismatch"):
            H @ np.ones(N + 1)


def test_data_created_once_and_never_reshipped(client, distributed, np_rng):
    """During products only product and sum tasks run: shards are not recreated or moved."""
    S = 4
    factory = functools.partial(callable_shard, n=N, seed=6)
    with ShardedSum(
        client, shard_factory=factory, num_shards=S, size=N, split_every=2, timeout=WAIT
    ) as H:
        H.wait(timeout=WAIT)
        where = H.shard_workers()
        with distributed.get_task_stream(client) as ts:
            for _ in range(3):
                H @ np_rng.standard_normal(N)
        kinds = [d["key"].split("-")[2] for d in ts.data if d["key"].startswith("matfree-")]
        assert kinds.count("matvec") == 3 * S
        assert kinds.count("sum") == 3 * (S - 1)
        assert "create" not in kinds
        assert H.shard_workers() == where


def test_works_with_matfree_and_scipy_algorithms(client, np_rng):
    import scipy.linalg as sla
    import scipy.sparse.linalg as spla

    S, lam = 3, 0.5
    factory = functools.partial(dense_shard, n=N, seed=7)
    with ShardedSum(
        client, shard_factory=factory, num_shards=S, size=N, positive_semidefinite=True,
        timeout=WAIT,
    ) as H:
        ref = _dense_sum(S, seed=7)
        assert H.check_symmetric(rng=0)
        A = matfree.damped(H, lam)
        b = np_rng.standard_normal(N)
        np.testing.assert_allclose(A @ b, (ref + lam * np.eye(N)) @ b, rtol=1e-13)
        x, info = spla.cg(A.to_scipy(), b, rtol=1e-12, maxiter=4 * N)
        assert info == 0
        np.testing.assert_allclose(x, sla.solve(ref + lam * np.eye(N), b), rtol=1e-8)


def test_matfree_cg_on_sharded_sum(client, np_rng):
    solvers = pytest.importorskip("matfree.solvers")
    S, lam = 3, 0.1
    factory = functools.partial(dense_shard, n=N, seed=8)
    with ShardedSum(
        client, shard_factory=factory, num_shards=S, size=N, positive_semidefinite=True,
        timeout=WAIT,
    ) as H:
        b = np_rng.standard_normal(N)
        res = solvers.cg(H, b, damping=lam, rtol=1e-10)
        ref = np.linalg.solve(_dense_sum(S, seed=8) + lam * np.eye(N), b)
        assert res.converged
        np.testing.assert_allclose(to_np(res.x), ref, rtol=1e-7, atol=1e-9)


def test_shards_report_the_size_of_their_data(distributed):
    """Dask's scheduler must see a closure over a big array as big (placement, stealing)."""
    import array_api_strict

    from matfree.distributed import _Shard

    n = 200
    data = n * n * 8
    assert _Shard(callable_shard(0, n, 0)).__sizeof__() >= data
    assert _Shard(dense_shard(0, n, 0)).__sizeof__() >= data
    assert _Shard(matfree.Dense(array_api_strict.asarray(np.eye(n)))).__sizeof__() >= data
    assert _Shard(functools.partial(np.dot, np.eye(n))).__sizeof__() >= data
    assert _Shard(lambda v: v).__sizeof__() < 10_000


def test_unknown_diagonal_raises_not_implemented(client):
    factory = functools.partial(callable_shard, n=N, seed=9)
    with ShardedSum(client, shard_factory=factory, num_shards=2, size=N, timeout=WAIT) as H:
        with pytest.raises(NotImplementedError, match=r"shard [01] .*diagonal"):
            H.diagonal()
        with pytest.raises(NotImplementedError, match="trace"):
            H.trace()


# ------------------------------------------------------------------ errors
def test_shard_exception_names_the_shard(client):
    factory = functools.partial(failing_shard, n=N, seed=10, bad=3)
    with ShardedSum(client, shard_factory=factory, num_shards=5, size=N, timeout=WAIT) as H:
        message = "shard 3 raised ValueError in its matvec: bad data"
        with pytest.raises(ShardError, match=message) as info:
            H @ np.ones(N)
        assert info.value.shard == 3
        # the operator stays usable: the failure was not cached as a partial sum
        with pytest.raises(ShardError, match="shard 3"):
            H @ np.ones((N, 2))


def test_factory_exception_names_the_shard(client):
    factory = functools.partial(failing_factory, n=N, seed=11, bad=1)
    with ShardedSum(client, shard_factory=factory, num_shards=3, size=N, timeout=WAIT) as H:
        with pytest.raises(ShardError, match="shard_factory raised OSError for shard 1"):
            H.wait(timeout=WAIT)
        with pytest.raises(ShardError, match="for shard 1: cannot read shard file 1"):
            H @ np.ones(N)


def test_nonfinite_names_the_shard(client):
    factory = functools.partial(nan_shard, n=N, seed=12, bad=2)
    with ShardedSum(client, shard_factory=factory, num_shards=3, size=N, timeout=WAIT) as H:
        with pytest.raises(matfree.NonFiniteError, match="shard 2 returned NaN or Inf"):
            H @ np.ones(N)
    with ShardedSum(
        client, shard_factory=factory, num_shards=3, size=N, check_finite=False, timeout=WAIT
    ) as H:
        assert np.isnan(H @ np.ones(N)).all()


def test_wrong_output_shape_names_the_shard(client):
    factory = functools.partial(wrong_shape_shard, n=N, seed=13, bad=1)
    with ShardedSum(client, shard_factory=factory, num_shards=2, size=N, timeout=WAIT) as H:
        with pytest.raises(ShardError, match=r"shard 1 returned shape \(11,\)"):
            H @ np.ones(N)


def test_bad_shard_object_names_the_shard(client):
    with ShardedSum(
        client, shard_factory=lambda s: [1, 2], num_shards=2, size=N, timeout=WAIT
    ) as H:
        with pytest.raises(ShardError, match="shard_factory returned a list for shard 0"):
            H.wait(timeout=WAIT)


def test_retries_recover_a_flaky_shard(client, tmp_path):
    ref = _dense_sum(2, seed=14)
    factory = functools.partial(flaky_shard, n=N, seed=14, marker=str(tmp_path / "a"))
    with ShardedSum(client, shard_factory=factory, num_shards=2, size=N, timeout=WAIT) as H:
        with pytest.raises(ShardError, match="shard 0 raised ConnectionError"):
            H @ np.ones(N)
    factory = functools.partial(flaky_shard, n=N, seed=14, marker=str(tmp_path / "b"))
    with ShardedSum(
        client, shard_factory=factory, num_shards=2, size=N, retries=1, timeout=WAIT
    ) as H:
        np.testing.assert_allclose(H @ np.ones(N), ref @ np.ones(N), rtol=1e-13)


def test_timeout(client):
    factory = functools.partial(slow_shard, n=N, seed=15, delay=0.3)
    with ShardedSum(client, shard_factory=factory, num_shards=2, size=N, timeout=0.1) as H:
        with pytest.raises(TimeoutError, match=r"did not finish within timeout=0.1 s"):
            H @ np.ones(N)


def test_closed_operator(client):
    H = ShardedSum(client, shard_factory=functools.partial(callable_shard, n=N, seed=0),
                   num_shards=2, size=N)
    assert "2 shards on Dask" in repr(H)
    H.close()
    H.close()  # idempotent
    assert "closed" in repr(H)
    with pytest.raises(RuntimeError, match="closed"):
        H @ np.ones(N)


def test_input_validation(client):
    f = functools.partial(callable_shard, n=N, seed=0)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client, got str"):
        ShardedSum("tcp://127.0.0.1:8786", shard_factory=f, num_shards=2, size=N)
    with pytest.raises(ValueError, match="exactly one of shard_hvps"):
        ShardedSum(client, size=N)
    with pytest.raises(ValueError, match="exactly one of shard_hvps"):
        ShardedSum(client, [f], shard_factory=f, num_shards=1, size=N)
    with pytest.raises(ValueError, match="shard_factory needs num_shards="):
        ShardedSum(client, shard_factory=f, size=N)
    with pytest.raises(ValueError, match="num_shards=0 must be >= 1"):
        ShardedSum(client, shard_factory=f, num_shards=0, size=N)
    with pytest.raises(TypeError, match="num_shards must be an int, got float"):
        ShardedSum(client, shard_factory=f, num_shards=2.0, size=N)
    with pytest.raises(TypeError, match="shard_factory must be callable, got int"):
        ShardedSum(client, shard_factory=3, num_shards=2, size=N)
    with pytest.raises(TypeError, match=r"shard_hvps\[1\] is a str"):
        ShardedSum(client, [f, "x"], size=N)
    with pytest.raises(TypeError, match="shard_hvps must be a sequence"):
        ShardedSum(client, f, size=N)
    with pytest.raises(ValueError, match="shard_hvps is empty"):
        ShardedSum(client, [], size=N)
    with pytest.raises(ValueError, match=r"num_shards=3 does not match len\(shard_hvps\)=1"):
        ShardedSum(client, [f], num_shards=3, size=N)
    with pytest.raises(ValueError, match="split_every=1 must be >= 2"):
        ShardedSum(client, [f], size=N, split_every=1)
    with pytest.raises(ValueError, match="retries=-1 must be >= 0"):
        ShardedSum(client, [f], size=N, retries=-1)
    with pytest.raises(ValueError, match=r"timeout=0.0 must be > 0"):
        ShardedSum(client, [f], size=N, timeout=0)
    with pytest.raises(ValueError, match="operator's size is unknown"):
        ShardedSum(client, [f])


def test_missing_dask_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs Dask: pip install 'matfree-hessian\[dask\]'"):
        ShardedSum(None, shard_factory=abs, num_shards=1, size=2)


def test_import_matfree_does_not_import_dask():
    code = (
        "import sys, matfree, matfree.distributed, matfree._parallel; "
        "bad = [m for m in ('dask', 'distributed') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=WAIT)


# ============================================================ _parallel
def _block_product(item):
    """A probe-block product with a deterministic cost profile (later items finish first)."""
    index, block = item
    time.sleep(0.02 * (3 - index % 4))
    return _shard_matrix(0, N, 16) @ block


def _raise_on_two(item):
    if item[0] == 2:
        raise matfree.NonFiniteError("the hvp returned NaN")
    return item[1]


def _check_same_as_serial(got, serial):
    assert len(got) == len(serial)
    for a, b in zip(got, serial):
        assert np.array_equal(a, b)
    # combined in order, the statistics are the serial ones bit for bit
    assert np.array_equal(sum(got), sum(serial))


def test_map_ordered_threads_match_serial(np_rng):
    items = [(i, np_rng.standard_normal((N, 2))) for i in range(8)]
    serial = map_ordered(_block_product, items)
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        _check_same_as_serial(map_ordered(_block_product, items, pool, timeout=WAIT), serial)
        assert map_ordered(_block_product, [], pool) == []


def test_map_ordered_dask_executor_matches_serial(client, np_rng):
    items = [(i, np_rng.standard_normal((N, 2))) for i in range(8)]
    serial = map_ordered(_block_product, items)
    dask_exec = client.get_executor(pure=False)
    _check_same_as_serial(map_ordered(_block_product, items, dask_exec, timeout=WAIT), serial)
    assert map_ordered(_block_product, [], dask_exec) == []


@pytest.mark.parametrize("where", ["serial", "threads", "dask"])
def test_map_ordered_error_names_item(request, where):
    items = [(i, np.ones(2)) for i in range(4)]
    if where == "dask":
        executor = request.getfixturevalue("client").get_executor(pure=False)
    else:
        executor = cf.ThreadPoolExecutor(max_workers=2) if where == "threads" else None
    try:
        with pytest.raises(matfree.NonFiniteError, match="NaN") as info:
            map_ordered(_raise_on_two, items, executor, what="probe block", timeout=WAIT)
        assert "raised while evaluating probe block 2 of 4" in info.value.__notes__
    finally:
        if where == "threads":
            executor.shutdown()


@pytest.mark.parametrize("where", ["serial", "threads"])
def test_map_ordered_reports_results_in_order_and_counts_from_offset(where, np_rng):
    from matfree._parallel import executor_width

    items = [(i, np_rng.standard_normal((N, 2))) for i in range(6)]
    seen = []
    executor = cf.ThreadPoolExecutor(max_workers=3) if where == "threads" else None
    try:
        got = map_ordered(_block_product, items, executor, on_result=lambda i, r: seen.append((i, r)))
        assert [i for i, _ in seen] == list(range(6))  # in item order, whatever finished first
        assert all(np.array_equal(r, g) for (_, r), g in zip(seen, got))
        with pytest.raises(matfree.NonFiniteError) as info:
            map_ordered(_raise_on_two, items[:4], executor, what="probe block", offset=10)
        assert "raised while evaluating probe block 12 of 14" in info.value.__notes__
        assert executor_width(executor) == (3 if executor else 1)
    finally:
        if executor is not None:
            executor.shutdown()


def test_executor_width_of_a_dask_client(client):
    from matfree._parallel import executor_width

    assert executor_width(client.get_executor(pure=False)) == 2  # 2 workers x 1 thread
    assert executor_width(object()) == 2  # unknown: a guess of 2


def test_map_ordered_validation_and_timeout():
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        map_ordered(abs, [1], executor="dask")
    with pytest.raises(ValueError, match=r"timeout=0.0 must be > 0"):
        map_ordered(abs, [1], cf.ThreadPoolExecutor(1), timeout=0)
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(TimeoutError, match=r"work item 0 of 3 .*timeout=0.05 s"):
            map_ordered(time.sleep, [0.3, 0.3, 0.3], pool, timeout=0.05)


# ================================================ distributed probing
def _bounded(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the wait bounded by ``WAIT`` seconds."""
    with cf.ThreadPoolExecutor(max_workers=1) as runner:
        return runner.submit(fn, *args, **kwargs).result(timeout=WAIT)


def test_estimators_on_dask_workers_match_serial(client, np_rng):
    """Probe blocks (and sketch column blocks) run on 2 worker processes; the estimate is the serial one.

    The operator (a closure over a small matrix) is pickled with each block.
    """
    from matfree.diagonal import diagonal
    from matfree.spectral import SLQ
    from matfree.trace import trace

    n = 30
    M = _shard_matrix(1, n, 21) + 0.1 * np.eye(n)
    A = matfree.from_hvp(lambda v: M @ v, size=n, batched=lambda V: M @ V)
    dask_exec = client.get_executor(pure=False)
    for method, kw in [
        ("hutchinson", dict(num_matvecs=20, block_size=5)),
        ("xtrace", dict(num_matvecs=20)),
        ("hutchinson", dict(rtol=1e-3, max_matvecs=30, block_size=5)),
    ]:
        serial = trace(A, method=method, rng=3, **kw)
        remote = _bounded(trace, A, method=method, rng=3, executor=dask_exec, **kw)
        np.testing.assert_allclose(float(remote), float(serial), rtol=1e-13)
        np.testing.assert_allclose(float(remote.stderr), float(serial.stderr), rtol=1e-12)
        assert remote.num_matvecs == serial.num_matvecs and remote.info["executor"] == "ClientExecutor"
    serial = diagonal(A, "xdiag", 20, block_size=4, rng=3)
    remote = _bounded(diagonal, A, "xdiag", 20, block_size=4, rng=3, executor=dask_exec)
    np.testing.assert_allclose(remote.value, serial.value, rtol=1e-12, atol=1e-14)
    serial = SLQ(A, num_probes=6, num_steps=5, block_size=2, rng=3)
    remote = _bounded(SLQ, A, num_probes=6, num_steps=5, block_size=2, rng=3, executor=dask_exec)
    np.testing.assert_allclose(to_np(remote.nodes), to_np(serial.nodes), rtol=1e-12)
    np.testing.assert_allclose(float(remote.logdet().value), float(serial.logdet().value), rtol=1e-12)
    assert remote.num_matvecs == serial.num_matvecs == 30


def test_estimator_error_on_a_dask_worker_keeps_its_type(client):
    from matfree.trace import trace

    def batched(V):
        W = 1.0 * V
        if V.shape[1] == 2:  # the last of the blocks 4 + 4 + 2
            W[0, 0] = np.nan
        return W

    A = matfree.from_hvp(lambda v: v, size=12, batched=batched)
    dask_exec = client.get_executor(pure=False)
    with pytest.raises(matfree.NonFiniteError, match="NaN or Inf") as info:
        _bounded(trace, A, "hutchinson", 10, block_size=4, rng=0, executor=dask_exec)
    assert "raised while evaluating probe chunk 2 of 3" in info.value.__notes__


# ====================================================== worker faults (last)
def _processing_worker(client, prefix, timeout):
    """Address of a worker running a task whose key starts with ``prefix``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for addr, keys in client.processing().items():
            if any(str(k).startswith(prefix) for k in keys):
                return addr
        time.sleep(0.02)
    raise AssertionError(f"no task {prefix}* started within {timeout} s")


def _kill_during_product(client, H, v):
    """Run ``H @ v`` in a thread and SIGKILL a worker that is busy with it."""
    pids = client.run(os.getpid)
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        product = pool.submit(H.matvec, v)
        victim = _processing_worker(client, "matfree-shard-matvec", timeout=WAIT)
        time.sleep(0.1)  # let the shard's slow hvp start
        os.kill(pids[victim], signal.SIGKILL)
        try:
            return product.result(timeout=WAIT), victim, pids[victim]
        except Exception as err:  # noqa: BLE001 - handed to the test
            return err, victim, pids[victim]


def test_killed_worker_mid_product_is_recomputed(client, np_rng):
    S, seed = 4, 17
    factory = functools.partial(slow_shard, n=N, seed=seed, delay=0.4)
    with ShardedSum(client, shard_factory=factory, num_shards=S, size=N, timeout=WAIT) as H:
        H.wait(timeout=WAIT)
        v = np_rng.standard_normal(N)
        w, victim, pid = _kill_during_product(client, H, v)
        assert not isinstance(w, Exception), w
        np.testing.assert_allclose(w, _dense_sum(S, seed=seed) @ v, rtol=1e-13)
        client.wait_for_workers(2, timeout=WAIT)  # the nanny restarted the worker
        assert pid not in client.run(os.getpid).values()
        # later products still work, with the shards recreated where needed
        np.testing.assert_allclose(H @ v, w, rtol=1e-13)


def _set_allowed_failures(dask_scheduler, value):
    old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, value
    return old


def test_killed_worker_beyond_allowed_failures_is_reported(client):
    """With allowed-failures=0 a worker death fails the product with a ShardError, no partial sum.

    ``Scheduler.allowed_failures`` is what ``distributed.scheduler.allowed-failures``
    sets when a scheduler starts; setting it on the running scheduler saves a
    second cluster.
    """
    old = client.run_on_scheduler(_set_allowed_failures, value=0)
    try:
        factory = functools.partial(slow_shard, n=N, seed=18, delay=0.4)
        with ShardedSum(client, shard_factory=factory, num_shards=2, size=N, timeout=WAIT) as H:
            H.wait(timeout=WAIT)
            err, _, _ = _kill_during_product(client, H, np.ones(N))
        assert isinstance(err, ShardError), err
        assert "workers died 1 times while running shard" in str(err)
        assert "allowed-failures" in str(err)
        assert err.shard in (0, 1)
    finally:
        client.run_on_scheduler(_set_allowed_failures, value=old)
        client.wait_for_workers(2, timeout=WAIT)


def test_process_pool_gives_the_serial_estimate():
    """A ProcessPoolExecutor ships operator and work items by cloudpickle."""
    pytest.importorskip("cloudpickle")
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    M = np.random.default_rng(3).standard_normal((40, 40))
    A = matfree.from_hvp(lambda v: M.T @ (M @ v), size=40, batched=lambda V: M.T @ (M @ V))
    serial = matfree.trace(A, "hutchinson", 24, block_size=8, rng=5)
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        par = matfree.trace(A, "hutchinson", 24, block_size=8, rng=5, executor=pool)
    assert par.num_matvecs == serial.num_matvecs == 24
    np.testing.assert_allclose(par.value, serial.value, rtol=1e-13)
    np.testing.assert_allclose(par.stderr, serial.stderr, rtol=1e-12)
