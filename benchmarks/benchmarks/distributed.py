"""asv benchmarks of matfree.distributed.ShardedSum.

``ShardedSumProduct`` times one product ``H v`` and one block product
``H V`` of a Gauss-Newton Hessian summed over ``S`` shards on a local Dask
cluster of 2 worker processes (1 thread each, loopback), and tracks the
pure overhead of a product whose shards do no work (64-by-64 shards).  The
serial in-process sum of the same shard products is the baseline.

The cluster is started in ``setup`` (about 1-3 s) and closed in ``teardown``.
Skipped (``NotImplementedError`` in ``setup``) when Dask is not installed.
"""

import functools
import importlib.util
import time

import numpy as np

from . import common

WORKERS = 2


class _GaussNewtonShard:
    def __init__(self, X, d):
        self.X, self.d = X, d

    def matvec(self, v):
        return self.X.T @ (self.d * (self.X @ v))

    def matmat(self, V):
        return self.X.T @ (self.d[:, None] * (self.X @ V))


def _make_shard(s, rows, n, seed):
    rng = np.random.default_rng([seed, s])
    return _GaussNewtonShard(rng.standard_normal((rows, n)), rng.uniform(0.05, 0.25, rows))


class ShardedSumProduct:
    """Products with ``H = Σ_s X_sᵀ D_s X_s`` (``rows`` data rows in total, ``n`` columns)."""

    params = ([2, 8], [(20_000, 200)])
    param_names = ["shards", "rows_n"]
    timeout = 180

    def setup(self, shards, rows_n):
        if importlib.util.find_spec("distributed") is None:
            raise NotImplementedError("dask.distributed is not installed")
        from dask.distributed import Client, LocalCluster

        from matfree.distributed import ShardedSum

        common.pin_threads(1)  # the serial baseline; workers run 1 BLAS thread each
        rows, n = rows_n
        self.cluster = LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        )
        self.client = Client(self.cluster)
        factory = functools.partial(_make_shard, rows=rows // shards, n=n, seed=0)
        self.H = ShardedSum(self.client, shard_factory=factory, num_shards=shards, size=n)
        self.H.wait(timeout=120)
        tiny = functools.partial(_make_shard, rows=64, n=64, seed=0)
        self.H_tiny = ShardedSum(self.client, shard_factory=tiny, num_shards=shards, size=64)
        self.H_tiny.wait(timeout=120)
        self.local = [_make_shard(s, rows // shards, n, 0) for s in range(shards)]
        rng = np.random.default_rng(0)
        self.v = rng.standard_normal(n)
        self.V = rng.standard_normal((n, 16))
        self.H @ self.v  # warm-up: locate the shards

    def teardown(self, shards, rows_n):
        self.client.close()
        self.cluster.close()

    def time_matvec(self, shards, rows_n):
        self.H @ self.v

    def time_matmat16(self, shards, rows_n):
        self.H @ self.V

    def time_serial_matvec(self, shards, rows_n):
        functools.reduce(np.add, (sh.matvec(self.v) for sh in self.local))

    def time_serial_matmat16(self, shards, rows_n):
        functools.reduce(np.add, (sh.matmat(self.V) for sh in self.local))

    def track_overhead_ms(self, shards, rows_n):
        """Median milliseconds of a product with shards that do no work."""
        v = np.ones(64)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            self.H_tiny @ v
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times))

    track_overhead_ms.unit = "ms"

    def track_error(self, shards, rows_n):
        """Relative difference of the distributed and the serial product."""
        ref = functools.reduce(np.add, (sh.matvec(self.v) for sh in self.local))
        return float(np.linalg.norm(self.H @ self.v - ref) / np.linalg.norm(ref))
