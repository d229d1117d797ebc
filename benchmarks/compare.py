"""matfree side by side with its peers: ONE table, same inputs, same run (issue 7).

Every row is one task of the issue's targets: the time of matfree, the time
of a peer on the same input in the same process, their ratio (matfree /
peer: below 1 means matfree is faster -- the ratio, not the absolute time,
is the figure of merit), and the accuracy each reached.  Peers are imported
when present and skipped (with a note) when not; this script installs
nothing.  Peers: SciPy (CSR product, ``cg``, ARPACK ``eigsh``), scikit-learn
(``randomized_svd``), curvlinops-for-pytorch (``xtrace``, ``hutchpp_trace``,
``HessianLinearOperator``), imate (``logdet(method="slq")``), PyLops
(``cg``, ``trace_hutchpp``), plus plain loops and raw PyTorch autograd where
the issue names them.

Timing: each measurement is the best (minimum) of ``--repeat`` runs after one
warm-up run, wall clock; Numba kernels are compiled (or loaded from their
on-disk cache) before any timing, and their compile times are printed apart
(cold: a subprocess with an empty ``NUMBA_CACHE_DIR``; cached: this process).
BLAS/OpenMP thread pools are pinned with threadpoolctl to ``--threads``, and
so are PyTorch's and Numba's.  Seeds are fixed; peers without a generator
argument (curvlinops, PyLops) get the global torch/NumPy seed right before
each call.

Notes under the table: the memory-bandwidth floor of a CG iteration (the
bytes a fused iteration must move, matvec included, divided by the copy
bandwidth measured in this run), peak memory of ``cg`` and ``eigsh`` in
vectors of size n (tracemalloc), and the kernel compile times.

Run::

    /work/venv/bin/python benchmarks/compare.py                  # every task
    /work/venv/bin/python benchmarks/compare.py --quick          # small sizes, 1 repeat
    /work/venv/bin/python benchmarks/compare.py --tasks cg sparse --grids 1000 2000 --repeat 5
    /work/venv/bin/python benchmarks/compare.py --passive        # shared machine: OMP_WAIT_POLICY=PASSIVE

On a machine shared with other jobs, pass ``--passive``: OpenMP threads (Numba's
default threading layer, PyTorch) then sleep instead of spinning between
parallel regions; with spinning workers and a load average of 7 on 2 cores,
CG with two Numba threads ran 3x slower here than with passive waits.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

TASKS = ("sparse", "cg", "eigsh", "hutchinson", "slq", "trace", "rsvd", "hvp")


# ======================================================================
# Helpers
# ======================================================================


class Table:
    """Rows of (task, matfree s, peer, peer s, matfree accuracy, peer accuracy)."""

    def __init__(self):
        self.rows = []
        self.notes = []

    def add(self, task, ours, peer, theirs, acc_ours, acc_peer):
        self.rows.append((task, ours, peer, theirs, acc_ours, acc_peer))

    def note(self, text):
        self.notes.append(text)

    def print(self, out=sys.stdout):
        head = ("task", "matfree", "peer", "peer time", "ratio", "matfree accuracy", "peer accuracy")
        body = []
        for task, ours, peer, theirs, acc_o, acc_p in self.rows:
            ratio = "" if ours is None or theirs is None else f"{ours / theirs:.2f}"
            body.append((task, _fmt_t(ours), peer, _fmt_t(theirs), ratio, acc_o, acc_p))
        width = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, width)).rstrip()  # noqa: E731
        print(line(head), file=out)
        print("  ".join("-" * w for w in width), file=out)
        for r in body:
            print(line(r), file=out)
        print("\nratio = matfree time / peer time (< 1: matfree faster).", file=out)
        for n in self.notes:
            print(f"* {n}", file=out)


def _fmt_t(t):
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.0f} us"
    if t < 1.0:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def interleaved_best(fns, rounds):
    """Best wall time of each of ``fns`` over ``rounds`` alternating calls (after a warm-up each).

    Returns ``[(best, last result), ...]`` in the order of ``fns``.
    """
    outs = [fn() for fn in fns]
    best = [math.inf] * len(fns)
    for _ in range(max(1, rounds)):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return list(zip(best, outs))


def best_time(fn, repeat, slow=5.0, warmup=True):
    """Best wall time of ``repeat`` calls after one warm-up call; also the last result.

    A call whose warm-up took more than ``slow`` seconds is timed once.
    """
    if warmup:
        t0 = time.perf_counter()
        out = fn()
        if time.perf_counter() - t0 > slow:
            repeat = 1
    best = math.inf
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def have(module):
    return importlib.util.find_spec(module) is not None


def poisson2d(m, shift=0.0):
    """The 2-D Poisson matrix (5-point Laplacian, Dirichlet) on an m x m grid, CSR, plus shift I."""
    import scipy.sparse as sp

    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    I = sp.identity(m)
    A = sp.kron(T, I) + sp.kron(I, T)
    if shift:
        A = A + shift * sp.identity(m * m)
    return A.tocsr()


def poisson2d_eigenvalues(m, shift=0.0):
    """All eigenvalues of :func:`poisson2d` (analytic), ascending."""
    import numpy as np

    t = 4.0 * np.sin(np.arange(1, m + 1) * np.pi / (2 * (m + 1))) ** 2
    return np.sort((t[:, None] + t[None, :]).ravel()) + shift


def peak_vectors(fn, n):
    """Peak of the memory NumPy allocates during ``fn()``, in vectors of n float64."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / (8.0 * n)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    l3 = ""
    for idx in range(4, -1, -1):
        p = f"/sys/devices/system/cpu/cpu0/cache/index{idx}"
        try:
            with open(f"{p}/level") as fh:
                level = fh.read().strip()
            if level == "3":
                with open(f"{p}/size") as fh:
                    l3 = f", L3 {fh.read().strip()}"
                break
        except OSError:
            continue
    return f"{cpu}, {os.cpu_count()} logical CPUs{l3}{mem}, {platform.system()} {platform.release()}"


# ======================================================================
# Setup: threads, kernels
# ======================================================================


def pin_threads(threads):
    """Pin BLAS/OpenMP (threadpoolctl), PyTorch and Numba to ``threads``; returns a description."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    desc = [f"BLAS/OpenMP {threads} (threadpoolctl)"]
    if have("torch"):
        import torch

        torch.set_num_threads(threads)
        desc.append(f"torch {threads}")
    if have("numba"):
        import numba

        k = min(threads, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(k)
        desc.append(f"numba {k}")
    return ", ".join(desc)


def kernel_compile_times(cold):
    """(cold compile times from a fresh subprocess, cached first-call times here)."""
    from matfree import _kernels

    if not _kernels.active():
        return None, None
    cold_times = None
    if cold:
        code = "import json, matfree._kernels as K; print(json.dumps(K.warm_up()))"
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
            )
        if done.returncode == 0:
            import json

            cold_times = json.loads(done.stdout.strip().splitlines()[-1])
    return cold_times, _kernels.warm_up()


def copy_bandwidth(threads):
    """Copy bandwidth in bytes/s (read + write counted, as STREAM): best of NumPy and Numba."""
    import numpy as np

    src = np.random.default_rng(0).random(16 * 2**20)  # 128 MiB, 4x the L3 here
    dst = np.empty_like(src)
    t_np, _ = best_time(lambda: np.copyto(dst, src), 10)
    best = 2 * src.nbytes / t_np
    if have("numba") and threads > 1:
        import numba

        @numba.njit(parallel=True)
        def pcopy(d, s):
            for i in numba.prange(s.shape[0]):
                d[i] = s[i]

        t_nb, _ = best_time(lambda: pcopy(dst, src), 10)
        best = max(best, 2 * src.nbytes / t_nb)
    return best


# ======================================================================
# Tasks
# ======================================================================


def task_sparse(tab, args):
    """CSR product y = A x on the 2-D Poisson matrix: matfree.Sparse vs SciPy."""
    import numpy as np

    import matfree

    for m in args.grids:
        A = poisson2d(m)
        op = matfree.Sparse(A)
        x = np.random.default_rng(0).standard_normal(A.shape[0])
        t_o, y_o = best_time(lambda: op @ x, args.repeat * 3)
        t_s, y_s = best_time(lambda: A @ x, args.repeat * 3)
        err = float(np.max(np.abs(y_o - y_s)) / np.max(np.abs(y_s)))
        tab.add(f"CSR matvec, Poisson {m}^2", t_o, "scipy A @ x", t_s, f"max rel diff {err:.0e}", "reference")


def _cg_bytes(A):
    """Bytes one fused CG iteration must move: CSR arrays + 11 vectors.

    Product: values, column indices and row pointers once, p read, Ap written
    (2 vectors); update x += a p, r -= a Ap with ‖r‖² (read 4, write 2);
    direction p = r + b p (read 2, write 1).  p·Ap is taken inside the
    product's pass in the ideal iteration, so it costs no extra traffic.
    """
    n = A.shape[0]
    return A.data.nbytes + A.indices.nbytes + A.indptr.nbytes + 11 * n * A.data.itemsize


def task_cg(tab, args, bandwidth):
    import numpy as np
    import scipy.sparse.linalg as spla

    import matfree
    from matfree.solvers import cg

    iters = args.cg_iters
    for m in args.grids:
        A = poisson2d(m)
        n = A.shape[0]
        op = matfree.Sparse(A, positive_definite=True)
        b = np.random.default_rng(1).standard_normal(n)
        bn = np.linalg.norm(b)

        def ours():
            return cg(op, b, rtol=1e-30, maxiter=iters)

        def theirs():
            return spla.cg(A, b, rtol=1e-30, maxiter=iters)[0]

        t_o, res = best_time(ours, args.repeat)
        t_s, xs = best_time(theirs, args.repeat)
        assert res.num_iters == iters
        r_o = np.linalg.norm(b - A @ np.asarray(res.x)) / bn
        r_s = np.linalg.norm(b - A @ xs) / bn
        tab.add(f"CG per iteration, Poisson {m}^2 ({iters} it)", t_o / iters, "scipy cg", t_s / iters,
                f"rel res {r_o:.2e}", f"rel res {r_s:.2e}")
        floor = _cg_bytes(A) / bandwidth
        tab.note(
            f"CG Poisson {m}^2: bandwidth floor {floor * 1e3:.2f} ms/iteration "
            f"({_cg_bytes(A) / 1e6:.0f} MB at {bandwidth / 1e9:.1f} GB/s copy bandwidth); "
            f"matfree {t_o / iters / floor:.2f}x the floor, scipy {t_s / iters / floor:.2f}x "
            "(target: matfree <= 1.25x the floor and >= 1.4x faster than scipy)"
        )
        if have("pylops"):
            import pylops
            from pylops.optimization.basic import cg as pylops_cg

            Op = pylops.MatrixMult(A, dtype=np.float64)
            t_p, xp_ = best_time(lambda: pylops_cg(Op, b, np.zeros(n), niter=iters, tol=0.0)[0], args.repeat)
            r_p = np.linalg.norm(b - A @ xp_) / bn
            tab.add(f"CG per iteration, Poisson {m}^2 ({iters} it)", t_o / iters, "pylops cg", t_p / iters,
                    f"rel res {r_o:.2e}", f"rel res {r_p:.2e}")
    # same iteration count to rtol 1e-8 (a grid small enough to converge quickly)
    m = args.conv_grid
    A = poisson2d(m)
    op = matfree.Sparse(A, positive_definite=True)
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    count = [0]

    def theirs_conv():
        count[0] = 0
        return spla.cg(A, b, rtol=1e-8, maxiter=50 * m, callback=lambda _: count.__setitem__(0, count[0] + 1))

    t_o, res = best_time(lambda: cg(op, b, rtol=1e-8, maxiter=50 * m), args.repeat)
    t_s, (xs, _) = best_time(theirs_conv, args.repeat)
    bn = np.linalg.norm(b)
    tab.add(f"CG to rtol 1e-8, Poisson {m}^2", t_o, "scipy cg", t_s,
            f"{res.num_iters} it, rel res {np.linalg.norm(b - A @ np.asarray(res.x)) / bn:.1e}",
            f"{count[0]} it, rel res {np.linalg.norm(b - A @ xs) / bn:.1e}")
    # peak memory, in vectors of n (tracemalloc sees NumPy's allocations)
    n = A.shape[0]
    mem_o = peak_vectors(lambda: cg(op, b, rtol=1e-30, maxiter=30), n)
    mem_s = peak_vectors(lambda: spla.cg(A, b, rtol=1e-30, maxiter=30), n)
    tab.note(f"peak memory of 30 CG iterations, Poisson {m}^2: matfree {mem_o:.1f} vectors of n, scipy {mem_s:.1f}")


def task_eigsh(tab, args):
    import numpy as np
    import scipy.sparse.linalg as spla

    import matfree
    from matfree.lanczos import eigsh

    m, k = args.eigsh_grid, 10
    A = poisson2d(m)
    n = A.shape[0]
    exact = poisson2d_eigenvalues(m)[-k:]
    op = matfree.Sparse(A, positive_definite=True)
    v0 = np.random.default_rng(2).standard_normal(n)

    def ours(block_size):
        res = eigsh(op, k=k, which="LA", tol=1e-8, v0=v0 if block_size == 1 else None, rng=2,
                    block_size=block_size)
        return np.sort(np.asarray(res.eigenvalues))

    def theirs():
        return np.sort(spla.eigsh(A, k=k, which="LA", tol=1e-8, v0=v0, return_eigenvectors=False))

    t_s, ls = best_time(theirs, args.repeat)
    e_s = float(np.max(np.abs(ls - exact) / exact))
    for bs in (1, 2):
        t_o, lo = best_time(lambda bs=bs: ours(bs), args.repeat)
        e_o = float(np.max(np.abs(lo - exact) / exact))
        tab.add(f"eigsh top-10, tol 1e-8, Poisson {m}^2, block_size={bs}", t_o, "scipy eigsh (ARPACK)", t_s,
                f"max rel err {e_o:.1e}", f"max rel err {e_s:.1e}")
    tab.note("eigsh: the top of the 2-D Poisson spectrum has double eigenvalues (lambda_ij = lambda_ji); "
             "a single-vector Krylov method can miss a copy, which shows as a large max rel err.")
    mem_o = peak_vectors(lambda: eigsh(op, k=k, which="LA", tol=1e-8, v0=v0), n)
    mem_s = peak_vectors(lambda: spla.eigsh(A, k=k, which="LA", tol=1e-8, v0=v0), n)
    tab.note(f"peak memory of eigsh(k=10), Poisson {m}^2: matfree {mem_o:.1f} vectors of n, scipy {mem_s:.1f}")


def task_hutchinson(tab, args):
    import numpy as np

    import matfree
    from matfree.trace import trace

    n, probes = args.hutch_n, 300
    rng = np.random.default_rng(3)
    M = rng.standard_normal((n, n))
    A = (M + M.T) / 2 + n**0.5 * np.eye(n)
    exact = float(np.trace(A))
    op = matfree.Dense(A, symmetric=True)
    Z = rng.choice([-1.0, 1.0], size=(probes, n))

    def loop():
        return sum(float(z @ (A @ z)) for z in Z) / probes

    t_o, est = best_time(lambda: trace(op, "hutchinson", probes, use_exact=False, rng=0), args.repeat)
    t_l, val = best_time(loop, args.repeat)
    tab.add(f"Hutchinson, {probes} probes, dense n={n}", t_o, "loop of matvecs", t_l,
            f"rel err {abs(float(est.value) - exact) / abs(exact):.1e}", f"rel err {abs(val - exact) / abs(exact):.1e}")


def task_slq(tab, args):
    import numpy as np

    import matfree
    from matfree.spectral import logdet

    m, shift, probes, steps = args.slq_grid, 0.1, 30, 20
    A = poisson2d(m, shift)
    exact = float(np.sum(np.log(poisson2d_eigenvalues(m, shift))))
    op = matfree.Sparse(A, positive_definite=True)
    seeds = range(args.seeds)

    def run(fn):
        ts, errs = [], []
        for s in seeds:
            t, v = best_time(lambda: fn(s), 1, warmup=s == 0)
            ts.append(t)
            errs.append(abs(v - exact) / abs(exact))
        return statistics.median(ts), statistics.median(errs)

    def ours(cv):
        return lambda s: float(
            logdet(op, num_probes=probes, num_steps=steps, rng=s, control_variates=cv).value
        )

    label = f"SLQ logdet, Poisson {m}^2 + 0.1 I, {steps} steps x {probes} probes"
    rows = [(f"{label}, plain mean", *run(ours(False))),
            (f"{label}, control variates", *run(ours(True)))]
    if not have("imate"):
        for name, t_o, e_o in rows:
            tab.add(name, t_o, "imate (not installed)", None, f"median rel err {e_o:.1e}", "-")
        return
    import imate

    def ours_imate(s):
        return float(imate.logdet(A, method="slq", min_num_samples=probes, max_num_samples=probes,
                                  lanczos_degree=steps, orthogonalize=0, error_rtol=1e-12, seed=s,
                                  num_threads=args.threads, gpu=False))

    t_i, e_i = run(ours_imate)
    for name, t_o, e_o in rows:
        tab.add(name, t_o, f"imate {imate.__version__} slq", t_i,
                f"median rel err {e_o:.1e}", f"median rel err {e_i:.1e}")
    tab.note(f"SLQ: median over {args.seeds} seeds (one timed call each) of time and relative error "
             "against the exact logdet.  'plain mean': the same estimator as imate's; 'control "
             "variates': the default, which also uses the exact tr A and tr A^2 of the Sparse "
             "operator (same products).")


def _spectrum(kind, n):
    import numpy as np

    i = np.arange(1, n + 1, dtype=float)
    return {"flat": np.ones(n), "i^-1": 1 / i, "i^-2": i**-2.0, "i^-3": i**-3.0,
            "exp": np.exp(-(i - 1) / 10.0)}[kind]


def task_trace(tab, args):
    import numpy as np

    import matfree
    from matfree.trace import trace

    n = args.trace_n
    rng = np.random.default_rng(4)
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    Q = Q * np.sign(np.diag(R))
    cl = None
    if have("curvlinops") and have("torch"):
        import curvlinops as cl
        import torch
    for kind in args.spectra:
        lam = _spectrum(kind, n)
        A = (Q * lam) @ Q.T
        A = (A + A.T) / 2
        exact = float(lam.sum())
        op = matfree.Dense(A, symmetric=True)
        At = torch.from_numpy(A) if cl is not None else None
        # against curvlinops (PyTorch), matfree runs on the same torch tensor:
        # the same array library and BLAS (MKL in PyTorch's wheels, OpenBLAS in
        # NumPy's; the products are most of the time), so the ratio compares
        # the estimators, not the BLAS builds
        op_peer = matfree.Dense(At, symmetric=True) if cl is not None else op
        for ours_m, budget, peer_fn, peer_name in (
            ("xtrace", 100, "xtrace", "curvlinops xtrace"),
            ("hutchpp", 99, "hutchpp_trace", "curvlinops hutchpp_trace"),
        ):
            ts, errs, pts, perrs = [], [], [], []
            for s in range(args.seeds):
                first = s == 0
                t, est = best_time(lambda: trace(op_peer, ours_m, budget, use_exact=False, rng=s), 1, warmup=first)
                ts.append(t)
                errs.append(abs(float(est.value) - exact) / exact)
                if cl is not None:
                    fn = getattr(cl, peer_fn)

                    def peer(fn=fn, s=s):
                        torch.manual_seed(s)  # curvlinops draws from torch's global generator
                        return float(fn(At, budget))

                    t, v = best_time(peer, 1, warmup=first)
                    pts.append(t)
                    perrs.append(abs(v - exact) / exact)
            label = f"trace {ours_m}, {budget} matvecs, n={n}, spectrum {kind}" + (", torch" if cl is not None else "")
            if cl is None:
                tab.add(label, statistics.median(ts), "curvlinops (not installed)", None,
                        f"median rel err {statistics.median(errs):.1e}", "-")
                continue
            tab.add(label, statistics.median(ts), peer_name, statistics.median(pts),
                    f"median rel err {statistics.median(errs):.1e}",
                    f"median rel err {statistics.median(perrs):.1e}")
        if have("pylops") and kind == "i^-2":
            import pylops
            from pylops.utils.estimators import trace_hutchpp

            Op = pylops.MatrixMult(A, dtype=np.float64)
            pts, perrs, ts, errs = [], [], [], []
            for s in range(args.seeds):
                t, est = best_time(lambda: trace(op, "hutchpp", 99, use_exact=False, rng=s), 1, warmup=s == 0)
                ts.append(t)
                errs.append(abs(float(est.value) - exact) / exact)

                def peer(s=s):
                    np.random.seed(s)  # pylops draws from NumPy's global generator
                    return float(trace_hutchpp(Op, neval=99))

                t, v = best_time(peer, 1, warmup=s == 0)
                pts.append(t)
                perrs.append(abs(v - exact) / exact)
            tab.add(f"trace hutchpp, 99 matvecs, n={n}, spectrum {kind}", statistics.median(ts),
                    "pylops trace_hutchpp", statistics.median(pts),
                    f"median rel err {statistics.median(errs):.1e}",
                    f"median rel err {statistics.median(perrs):.1e}")
    tab.note(f"trace: median over {args.seeds} seeds (one timed call each); Hutch++ needs a multiple "
             "of 3 matvecs (99).")


def _spectral_error(A, U, s, Vt):
    """‖A − U diag(s) Vᵀ‖₂ by ARPACK on the residual operator (k = 1)."""
    import numpy as np
    import scipy.sparse.linalg as spla

    n = A.shape[1]

    def mv(x):
        x = x.reshape(-1)
        return A @ x - U @ (s * (Vt @ x))

    def rmv(y):
        y = y.reshape(-1)
        return A.T @ y - Vt.T @ (s * (U.T @ y))

    R = spla.LinearOperator(A.shape, matvec=mv, rmatvec=rmv, dtype=np.float64)
    v0 = np.random.default_rng(9).standard_normal(n)
    return float(spla.svds(R, k=1, tol=1e-3, v0=v0, return_singular_vectors=False)[0])


def task_rsvd(tab, args):
    import numpy as np
    import scipy.fft

    import matfree
    from matfree.sketch import rsvd

    n, k = args.rsvd_n, 50
    # A = C diag(sigma) Sᵀ with orthogonal C (DCT-II) and S (DST-II): an exact SVD, built fast
    C = scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)
    S = scipy.fft.dst(np.eye(n), type=2, norm="ortho", axis=0)
    sigma = _spectrum("i^-1", n)
    A = np.ascontiguousarray((C * sigma) @ S.T)
    op = matfree.Dense(A)
    opt = sigma[k]

    def ours():
        lr = rsvd(op, k, power_iters=2, rng=0).operator
        return np.asarray(lr.U), np.asarray(lr.s), np.asarray(lr.V).T

    t_o, (U, s, Vt) = best_time(ours, args.repeat)
    e_o = _spectral_error(A, U, s, Vt) / opt
    if not have("sklearn"):
        tab.add(f"rSVD rank {k}, dense {n}x{n}, sigma_i = 1/i", t_o, "sklearn (not installed)", None,
                f"err {e_o:.3f}x optimal", "-")
        return
    from sklearn.utils.extmath import randomized_svd

    t_s, (U2, s2, Vt2) = best_time(lambda: randomized_svd(A, k, n_iter=2, random_state=0), args.repeat)
    e_s = _spectral_error(A, U2, s2, Vt2) / opt
    tab.add(f"rSVD rank {k}, dense {n}x{n}, sigma_i = 1/i", t_o, "sklearn randomized_svd(n_iter=2)", t_s,
            f"err {e_o:.3f}x optimal", f"err {e_s:.3f}x optimal")


def _mlp_problem(width, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    d_in, d_out, batch = 64, 10, 256
    X = torch.randn(batch, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, d_out, (batch,), generator=g)
    model = torch.nn.Sequential(
        torch.nn.Linear(d_in, width), torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh(),
        torch.nn.Linear(width, d_out),
    ).double()
    params = [p.detach().clone() for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]

    def loss_fn(ps):
        out = torch.func.functional_call(model, dict(zip(names, ps)), (X,))
        return torch.nn.functional.cross_entropy(out, y)

    return model, X, y, params, loss_fn


def task_hvp(tab, args):
    if not have("torch"):
        tab.add("from_torch HVP", None, "torch (not installed)", None, "-", "-")
        return
    import torch

    import matfree

    model, X, y, params, loss_fn = _mlp_problem(args.hvp_width)
    nparams = sum(p.numel() for p in params)
    H = matfree.from_torch(loss_fn, params)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(nparams, generator=g, dtype=torch.float64)
    V = torch.randn(nparams, 16, generator=g, dtype=torch.float64)
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def split(flat):
        return [c.reshape(s) for c, s in zip(torch.split(flat, sizes), shapes)]

    def double_backward():
        ps = [p.detach().requires_grad_(True) for p in params]
        grads = torch.autograd.grad(loss_fn(ps), ps, create_graph=True)
        hv = torch.autograd.grad(grads, ps, grad_outputs=split(v))
        return torch.cat([h.reshape(-1) for h in hv])

    flat0 = torch.cat([p.reshape(-1) for p in params])

    def loss_flat(theta):
        return loss_fn(split(theta))

    def func_hvp():
        return torch.func.jvp(torch.func.grad(loss_flat), (flat0,), (v,))[1]

    # alternating rounds (ours, double backward, torch.func, ours, ...): on a
    # shared machine the load changes within seconds, and the minimum over
    # interleaved calls compares like with like
    rep = args.repeat * 3
    (t_m, hv_m), (t_db, hv_db), (t_fn, hv_fn) = interleaved_best(
        [lambda: H @ v, double_backward, func_hvp], 5 * args.repeat
    )
    ref = hv_db
    rel = lambda a: float(torch.linalg.vector_norm(a - ref) / torch.linalg.vector_norm(ref))  # noqa: E731
    best_name, t_best = ("raw double-backward", t_db) if t_db <= t_fn else ("torch.func jvp(grad)", t_fn)
    tab.add(f"from_torch HVP, MLP {nparams} params", t_m, f"{best_name} (faster of 2)", t_best,
            f"rel diff {rel(hv_m):.0e}", "reference" if best_name.startswith("raw") else f"rel diff {rel(hv_fn):.0e}")
    # the 16 products get contiguous vectors (a column of V is strided), and
    # the two are timed alternately, as above
    cols = [V[:, j].contiguous() for j in range(16)]
    (t_mm, HV), (t_16, _) = interleaved_best(
        [lambda: H @ V, lambda: [H @ c for c in cols]], 3 * args.repeat
    )
    err = float(torch.linalg.vector_norm(HV[:, 0] - H @ cols[0]) / torch.linalg.vector_norm(HV[:, 0]))
    tab.add(f"from_torch matmat 16 cols, MLP {nparams} params", t_mm / 16, "16 matvecs (per column)", t_16 / 16,
            f"col 0 rel diff {err:.0e}", "reference")
    if have("curvlinops"):
        try:
            from curvlinops import HessianLinearOperator

            Hc = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(),
                                       list(model.parameters()), [(X, y)], check_deterministic=False)
            for p, q in zip(model.parameters(), params):
                p.data.copy_(q)
            try:
                t_c, hv_c = best_time(lambda: Hc @ v, rep)
            except Exception:  # noqa: BLE001 - older API: list of tensors in and out
                t_c, hv_c = best_time(lambda: Hc @ split(v), rep)
            hv_c = hv_c if torch.is_tensor(hv_c) else torch.cat([h.reshape(-1) for h in hv_c])
            tab.add(f"from_torch HVP, MLP {nparams} params", t_m, "curvlinops HessianLinearOperator", t_c,
                    f"rel diff {rel(hv_m):.0e}", f"rel diff {rel(hv_c.reshape(-1)):.0e}")
        except Exception as err:  # noqa: BLE001 - report, do not hide, a peer that failed
            tab.note(f"curvlinops HessianLinearOperator failed: {err!r}")


# ======================================================================
# Main
# ======================================================================


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    ap.add_argument("--threads", type=int, default=2, help="threads for BLAS, OpenMP, torch and Numba")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is kept)")
    ap.add_argument("--grids", type=int, nargs="*", default=[1000, 2000], help="Poisson grids m (n = m^2)")
    ap.add_argument("--cg-iters", type=int, default=100)
    ap.add_argument("--conv-grid", type=int, default=300)
    ap.add_argument("--eigsh-grid", type=int, default=500)
    ap.add_argument("--hutch-n", type=int, default=4000)
    ap.add_argument("--slq-grid", type=int, default=100)
    ap.add_argument("--trace-n", type=int, default=2000)
    ap.add_argument("--spectra", nargs="*", default=["flat", "i^-1", "i^-2", "i^-3", "exp"])
    ap.add_argument("--rsvd-n", type=int, default=5000)
    ap.add_argument("--hvp-width", type=int, default=256, help="MLP width (256: 8.5e4 parameters)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes and one repeat (a smoke run)")
    ap.add_argument("--passive", action="store_true", help="set OMP_WAIT_POLICY=PASSIVE (before any import)")
    ap.add_argument("--no-cold-compile", action="store_true", help="skip the cold Numba compile measurement")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.grids, args.cg_iters, args.conv_grid = 1, [100], 10, 40
        args.eigsh_grid, args.hutch_n, args.slq_grid, args.trace_n = 40, 300, 30, 300
        args.spectra, args.rsvd_n, args.hvp_width, args.seeds = ["i^-2"], 400, 16, 2
        args.no_cold_compile = True
    return args


def main(argv=None):
    args = parse(argv)
    if args.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before libgomp is loaded (numba, torch)
    import numpy as np
    import scipy

    import matfree
    from matfree import _kernels

    load0 = os.getloadavg()
    threads = pin_threads(args.threads)
    cold, cached = kernel_compile_times(cold=not args.no_cold_compile)
    bandwidth = copy_bandwidth(args.threads) if "cg" in args.tasks else None
    tab = Table()
    runners = {
        "sparse": lambda: task_sparse(tab, args),
        "cg": lambda: task_cg(tab, args, bandwidth),
        "eigsh": lambda: task_eigsh(tab, args),
        "hutchinson": lambda: task_hutchinson(tab, args),
        "slq": lambda: task_slq(tab, args),
        "trace": lambda: task_trace(tab, args),
        "rsvd": lambda: task_rsvd(tab, args),
        "hvp": lambda: task_hvp(tab, args),
    }
    t0 = time.perf_counter()
    for name in args.tasks:
        t1 = time.perf_counter()
        try:
            runners[name]()
        except Exception as err:  # noqa: BLE001 - one broken task must not hide the others
            tab.note(f"task {name} failed: {type(err).__name__}: {err}")
        print(f"[compare] {name}: {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()

    print(f"matfree {matfree.__version__} side by side -- {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"machine: {machine()}")
    print(f"load average (1 min) {load0[0]:.1f} at start, {load1[0]:.1f} at end"
          + ("  ** shared machine: timings are noisy **" if max(load0[0], load1[0]) > 1.5 else ""))
    from importlib import metadata

    versions = [f"numpy {np.__version__}", f"scipy {scipy.__version__}"]
    for dist in ("numba", "torch", "scikit-learn", "curvlinops-for-pytorch", "imate", "pylops"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} absent")
    print("versions: " + ", ".join(versions))
    layer = ""
    if have("numba") and _kernels.active():
        import numba

        try:
            layer = f", Numba threading layer {numba.threading_layer()}"
        except ValueError:
            layer = ""
    print(f"threads: {threads}{layer}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"Numba kernels {'on' if _kernels.active() else 'off'}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}   ({elapsed:.0f} s)\n")
    if cached is not None:
        fmt = lambda d: ", ".join(f"{k} {v:.2f} s" for k, v in d.items())  # noqa: E731
        if cold is not None:
            tab.note(f"Numba kernels, cold compile (fresh cache, float32 + float64): total {sum(cold.values()):.1f} s "
                     f"({fmt(cold)})")
        tab.note(f"Numba kernels, first call in this run (on-disk cache): total {sum(cached.values()):.2f} s; "
                 "excluded from every time above")
    tab.print()
    return tab


if __name__ == "__main__":
    main()
