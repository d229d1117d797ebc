"""Scaling of matfree.distributed.ShardedSum on this machine: 1 vs 2 Dask workers.

The operator is a Gauss-Newton Hessian summed over data shards,
``H = Σ_s X_sᵀ diag(d_s) X_s`` (logistic regression's Hessian), with the shard
data ``X_s`` (``rows/S``-by-``n``) generated on the workers from a seed.
Prints two tables:

1. **Scaling.**  Milliseconds per product ``H v`` and per block product
   ``H V`` (``k`` columns), for the same shard HVPs evaluated

   * serially in this process (no Dask), BLAS pinned to 1 and to 2 threads
     with ``threadpoolctl``: the baselines;
   * by :class:`~matfree.distributed.ShardedSum` on a ``LocalCluster`` of 1
     and of 2 worker processes (1 thread each; Dask's nanny starts workers
     with ``OMP/OPENBLAS/MKL_NUM_THREADS=1``, checked below).

   The speed-up column compares 2 workers with 1 worker.
2. **Overhead per product.**  Shards that do almost nothing (``n = 64``,
   64 rows): the time of a product is then Dask's cost -- the scatter of the
   vector, one task per shard, the tree of additions, the gather -- for
   ``S = 1, 2, 4, 8`` shards, next to the two primitives it is made of (a
   broadcast scatter, one ``submit(...).result()`` round trip).
3. **Distributed probing.**  Hutchinson's trace estimate and an SLQ
   log-determinant on a dense ``n = 4000`` operator, run serially (BLAS
   pinned to 1 thread) and with ``executor=`` a 2-thread
   ``ThreadPoolExecutor`` and the executor of a Dask ``LocalCluster`` of 1
   and 2 worker processes (1 thread each), with the same probe blocks, so
   the estimates agree (checked).  The operator is created once per worker
   from a seed (:class:`SeededDense` pickles as ``(n, seed)``, and the
   workers import this module by name -- a ``LocalCluster``'s workers inherit
   ``sys.path`` -- so the class and its per-process cache are found there by
   reference), so a block ships only its probes.  Below it, the overhead per probe block:
   the same runs on an ``n = 64`` operator whose products cost nothing.

Times are the median (and minimum) of ``--repeats`` products after one
warm-up product.  Other jobs may be sharing the machine: the load average
is printed before and after.

Usage::

    python benchmarks/distributed_scaling.py            # 200 000 x 400 data, 4 shards
    python benchmarks/distributed_scaling.py --quick    # small, for a smoke test
    python benchmarks/distributed_scaling.py --tables probing   # only table 3
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


# ------------------------------------------------------------ the shards
class GaussNewtonShard:
    """``X_sᵀ diag(d_s) X_s`` for one shard; products only, data stays here."""

    def __init__(self, X, d):
        self.X, self.d = X, d

    def matvec(self, v):
        return self.X.T @ (self.d * (self.X @ v))

    def matmat(self, V):
        return self.X.T @ (self.d[:, None] * (self.X @ V))


def make_shard(s, rows, n, seed):
    """Shard ``s``: ``rows`` random rows and curvature weights, from the seed (any process)."""
    rng = np.random.default_rng([seed, s])
    X = rng.standard_normal((rows, n))
    d = rng.uniform(0.05, 0.25, rows)  # p(1-p) of a logistic model lies in (0, 1/4]
    return GaussNewtonShard(X, d)


# ------------------------------------------- an operator created per worker
_MATRICES = {}  # per process: (n, seed) -> matrix, built on first use


class SeededDense:
    """Products with a dense symmetric positive definite matrix generated from a seed.

    Pickles as ``(n, seed)``: a worker builds the matrix on first use and keeps
    it (``_MATRICES`` of this module, imported on the workers by
    ``client.upload_file``), so no block ever ships the ``n x n`` matrix.
    """

    def __init__(self, n, seed):
        self.n, self.seed = n, seed

    def __reduce__(self):
        return SeededDense, (self.n, self.seed)

    @property
    def matrix(self):
        key = (self.n, self.seed)
        if key not in _MATRICES:
            X = np.random.default_rng(self.seed).standard_normal((self.n, self.n))
            S = (X + X.T) / (2.0 * np.sqrt(self.n))  # spectrum about [-1.4, 1.4]
            S[np.diag_indices(self.n)] += 3.0
            _MATRICES[key] = S
        return _MATRICES[key]

    def matvec(self, v):
        return self.matrix @ v

    def matmat(self, V):
        return self.matrix @ V


def seeded_operator(n, seed):
    """``matfree.from_hvp`` of a :class:`SeededDense` (symmetric, products only)."""
    import matfree

    hvp = SeededDense(n, seed)
    return matfree.from_hvp(hvp.matvec, size=n, batched=hvp.matmat)


# ------------------------------------------------------------------ timing
def _times(fn, repeats):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(out), 1e3 * min(out)


def _cluster(workers):
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
    )
    client = Client(cluster)
    client.wait_for_workers(workers, timeout=60)
    return cluster, client


def _worker_blas_threads(client):
    info = client.run(lambda: sorted({d["num_threads"] for d in threadpool_info()}))
    return sorted({t for threads in info.values() for t in threads})


def serial_rows(S, rows, n, k, seed, repeats):
    """The shard HVPs summed in this process, BLAS pinned to 1 and 2 threads."""
    shards = [make_shard(s, rows // S, n, seed) for s in range(S)]
    rng = np.random.default_rng(1)
    v, V = rng.standard_normal(n), rng.standard_normal((n, k))

    def mv():
        return functools.reduce(np.add, (sh.matvec(v) for sh in shards))

    def mm():
        return functools.reduce(np.add, (sh.matmat(V) for sh in shards))

    out = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            out.append((f"serial, no Dask, {threads} BLAS thread(s)", _times(mv, repeats),
                        _times(mm, repeats)))
    reference = (mv(), mm())
    return out, reference


def dask_row(workers, S, rows, n, k, seed, repeats, reference):
    from matfree.distributed import ShardedSum

    cluster, client = _cluster(workers)
    try:
        factory = functools.partial(make_shard, rows=rows // S, n=n, seed=seed)
        with ShardedSum(client, shard_factory=factory, num_shards=S, size=n, timeout=600) as H:
            H.wait(timeout=600)
            rng = np.random.default_rng(1)
            v, V = rng.standard_normal(n), rng.standard_normal((n, k))
            err = max(
                np.linalg.norm(H @ v - reference[0]) / np.linalg.norm(reference[0]),
                np.linalg.norm(H @ V - reference[1]) / np.linalg.norm(reference[1]),
            )
            t_mv = _times(lambda: H @ v, repeats)
            t_mm = _times(lambda: H @ V, repeats)
            placement = [len(w) for w in H.shard_workers()]
        blas = _worker_blas_threads(client)
    finally:
        client.close()
        cluster.close()
    assert err < 1e-12, f"distributed product differs from the serial sum: {err:.2e}"
    assert placement == [1] * S, f"a shard was copied to a second worker: {placement}"
    return (f"ShardedSum, {workers} worker(s) (BLAS threads {blas})", t_mv, t_mm)


def overhead_rows(workers_list, shard_counts, repeats):
    from matfree.distributed import ShardedSum

    rows = []
    for workers in workers_list:
        cluster, client = _cluster(workers)
        try:
            v = np.ones(64)
            scatter = _times(lambda: client.scatter([v], broadcast=True, hash=False), repeats)
            roundtrip = _times(lambda: client.submit(np.sum, v, pure=False).result(), repeats)
            per_s = {}
            for S in shard_counts:
                factory = functools.partial(make_shard, rows=64, n=64, seed=0)
                with ShardedSum(client, shard_factory=factory, num_shards=S, size=64) as H:
                    H.wait(timeout=60)
                    per_s[S] = _times(lambda: H @ v, repeats)
            rows.append((workers, scatter, roundtrip, per_s))
        finally:
            client.close()
            cluster.close()
    return rows


def _probing_runs(A, executor, probes, lanczos):
    """Callables for (Hutchinson trace, SLQ logdet) with ``executor``; probe blocks fixed here."""
    from matfree.spectral import logdet
    from matfree.trace import trace

    p_tr, b_tr = probes
    p_sl, m_sl, b_sl = lanczos
    return (
        lambda: trace(A, "hutchinson", p_tr, block_size=b_tr, rng=0, executor=executor),
        lambda: logdet(A, num_probes=p_sl, num_steps=m_sl, block_size=b_sl, rng=0, executor=executor),
    )


def probing_rows(n, probes, lanczos, repeats, workers_list=(1, 2)):
    """Milliseconds of the two estimators serially, on 2 threads and on Dask workers."""
    import concurrent.futures as cf

    import distributed_scaling as this  # by reference, so that workers import it too

    A = this.seeded_operator(n, seed=0)
    A.matvec(np.ones(n))  # build the matrix here before timing

    def timed(executor):
        runs = _probing_runs(A, executor, probes, lanczos)
        times = {name: _times(run, repeats) for name, run in zip(("trace", "logdet"), runs)}
        return times, [run() for run in runs]

    rows = []
    with threadpool_limits(limits=1):
        times, ref = timed(None)
        rows.append(("serial, 1 BLAS thread", times, 0.0))
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            times, got = timed(pool)
        rows.append(("ThreadPoolExecutor, 2 threads x 1 BLAS", times, _rel_diff(got, ref)))
    for workers in workers_list:
        cluster, client = _cluster(workers)
        try:
            _prepare_workers(client, n, seed=0)
            times, got = timed(client.get_executor(pure=False))
        finally:
            client.close()
            cluster.close()
        rows.append((f"Dask, {workers} worker(s) x 1 thread", times, _rel_diff(got, ref)))
    return rows


def _prepare_workers(client, n, seed):
    """Build the operator's matrix on every worker before timing.

    The workers import this module by name (a LocalCluster's workers inherit
    ``sys.path``; on a real cluster install it there or use
    ``client.upload_file``).
    """
    client.run(lambda: __import__("distributed_scaling").SeededDense(n, seed).matrix.shape)


def _rel_diff(got, ref):
    return max(abs(float(g.value) - float(r.value)) / abs(float(r.value)) for g, r in zip(got, ref))


def overhead_per_block_rows(probes, repeats, workers=2):
    """Milliseconds per probe block an executor adds, on an ``n = 64`` operator (products free)."""
    import concurrent.futures as cf

    import distributed_scaling as this

    A = this.seeded_operator(64, seed=1)
    p, b = probes
    num_blocks = -(-p // b)

    def run(executor):
        from matfree.trace import trace

        return trace(A, "hutchinson", p, block_size=b, rng=0, executor=executor)

    with threadpool_limits(limits=1):
        serial = _times(lambda: run(None), repeats)
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            threads = _times(lambda: run(pool), repeats)
    cluster, client = _cluster(workers)
    try:
        _prepare_workers(client, 64, seed=1)
        dask = _times(lambda: run(client.get_executor(pure=False)), repeats)
    finally:
        client.close()
        cluster.close()
    per_block = [(t[0] - serial[0]) / num_blocks for t in (threads, dask)]
    return num_blocks, serial, threads, dask, per_block


def print_probing(args):
    n, repeats = args.probe_n, args.probe_repeats
    probes = (args.hutchinson_probes, args.hutchinson_block)
    lanczos = (args.slq_probes, args.slq_steps, args.slq_block)
    print()
    print(
        f"distributed probing, dense n = {n} operator created per worker: Hutchinson trace "
        f"({probes[0]} probes in blocks of {probes[1]}), SLQ logdet ({lanczos[0]} probes x "
        f"{lanczos[1]} steps, blocks of {lanczos[2]}); median (min) of {repeats} runs, ms"
    )
    rows = probing_rows(n, probes, lanczos, repeats)
    print(f"{'':40s} {'trace':>17s} {'logdet':>17s} {'vs serial':>17s} {'rel. diff':>10s}")
    base = rows[0][1]
    for label, t, diff in rows:
        speed = "  ".join(f"{base[k][0] / t[k][0]:6.2f}x" for k in ("trace", "logdet"))
        cells = "".join(f"{t[k][0]:8.1f} ({t[k][1]:6.1f})" for k in ("trace", "logdet"))
        print(f"{label:40s} {cells} {speed:>17s} {diff:10.1e}")
    nb, serial, threads, dask, per_block = overhead_per_block_rows((64, 2), repeats)
    print()
    print(f"overhead per probe block: n = 64, 64 probes in {nb} blocks of 2, median (min) ms")
    print(f"{'':40s} {'run':>17s} {'per block':>12s}")
    print(f"{'serial':40s} {serial[0]:8.1f} ({serial[1]:6.1f})")
    print(f"{'ThreadPoolExecutor, 2 threads':40s} {threads[0]:8.1f} ({threads[1]:6.1f}) {per_block[0]:12.2f}")
    print(f"{'Dask, 2 workers':40s} {dask[0]:8.1f} ({dask[1]:6.1f}) {per_block[1]:12.2f}")


def _load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of data in total")
    parser.add_argument("--n", type=int, default=400, help="parameters (size of H)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--k", type=int, default=16, help="columns of the block product")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="20 000 x 100 data, 5 repeats")
    parser.add_argument("--tables", nargs="+", choices=("products", "overhead", "probing"),
                        default=("products", "overhead", "probing"), help="which tables to print")
    parser.add_argument("--probe-n", type=int, default=4000, help="size of the probing operator")
    parser.add_argument("--probe-repeats", type=int, default=3)
    parser.add_argument("--hutchinson-probes", type=int, default=128)
    parser.add_argument("--hutchinson-block", type=int, default=16)
    parser.add_argument("--slq-probes", type=int, default=16)
    parser.add_argument("--slq-steps", type=int, default=30)
    parser.add_argument("--slq-block", type=int, default=8)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.n, args.repeats = 20_000, 100, 5
        args.probe_n, args.probe_repeats = 500, 2
    S, rows, n, k, seed = args.shards, args.rows, args.n, args.k, 0

    print(f"machine: {os.cpu_count()} cores; {_load()} at start")
    if "products" in args.tables:
        print_products(S, rows, n, k, seed, args.repeats)
    if "overhead" in args.tables:
        print_overhead(args.repeats)
    if "probing" in args.tables:
        print_probing(args)
    print()
    print(f"{_load()} at the end")


def print_products(S, rows, n, k, seed, repeats):
    mb = rows * n * 8 / 2**20
    print(
        f"H = sum of {S} shards X_s^T D_s X_s, data {rows} x {n} ({mb:.0f} MB, "
        f"{mb / S:.0f} MB per shard), block products with k = {k} columns; "
        f"median (min) of {repeats} products, ms"
    )
    serial, reference = serial_rows(S, rows, n, k, seed, repeats)
    results = serial + [
        dask_row(w, S, rows, n, k, seed, repeats, reference) for w in (1, 2)
    ]

    print()
    print(f"{'':48s} {'H v':>17s} {'H V (k=' + str(k) + ')':>17s}")
    for label, (mv, mv_min), (mm, mm_min) in results:
        print(f"{label:48s} {mv:8.1f} ({mv_min:6.1f}) {mm:8.1f} ({mm_min:6.1f})")
    (_, mv1, mm1), (_, mv2, mm2) = results[-2], results[-1]
    print(
        f"{'speed-up 2 workers vs 1 worker (medians)':48s} {mv1[0] / mv2[0]:8.2f}x"
        f"{'':9s}{mm1[0] / mm2[0]:8.2f}x"
    )
    print(
        f"{'speed-up 2 workers vs serial, 1 thread':48s} {results[0][1][0] / mv2[0]:8.2f}x"
        f"{'':9s}{results[0][2][0] / mm2[0]:8.2f}x"
    )
    print(
        f"{'speed-up 2 workers vs serial, 2 threads':48s} {results[1][1][0] / mv2[0]:8.2f}x"
        f"{'':9s}{results[1][2][0] / mm2[0]:8.2f}x"
    )


def print_overhead(repeats):
    counts = (1, 2, 4, 8)
    print()
    print("overhead per product: shards of 64 x 64 (no real work), median (min) ms")
    head = "".join(f"{'S=' + str(c):>16s}" for c in counts)
    print(f"{'workers':>8s} {'scatter':>15s} {'round trip':>15s}{head}")
    for workers, sc, rt, per_s in overhead_rows((1, 2), counts, repeats):
        cells = "".join(f"{per_s[c][0]:8.1f} ({per_s[c][1]:5.1f})" for c in counts)
        print(f"{workers:8d} {sc[0]:6.1f} ({sc[1]:5.1f}) {rt[0]:6.1f} ({rt[1]:5.1f}){cells}")


if __name__ == "__main__":
    main()
