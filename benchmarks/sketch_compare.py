"""Randomized SVD side by side: matfree.sketch.rsvd, scikit-learn, SciPy svds.

Prints two tables:

1. time and error of a rank-``k`` approximation of an ``n``-by-``n`` matrix
   with a decaying spectrum (default 5000 x 5000, k = 50) by
   ``matfree.sketch.rsvd`` (NumPy and, if installed, PyTorch),
   ``sklearn.utils.extmath.randomized_svd`` and ``scipy.sparse.linalg.svds``,
   all in the same run with BLAS pinned to ``--threads`` threads;
2. the Halko-Martinsson-Tropp check: mean error of ``rsvd`` / ``reig`` over
   seeds for q = 0..3 power iterations against the optimal ``σ_{k+1}`` and
   the HMT expected-error bound (Cor. 10.10 plus Thm 9.3).

Errors: ``spec/opt`` is ``‖A − Â‖₂ / σ_{k+1}`` (1 is optimal: the truncated
SVD), ``fro rel`` is ``‖A − Â‖_F / ‖A‖_F``.  Time is the median of
``--repeats`` rounds after one warm-up round, the methods taking turns in
every round (svds: one run).

Usage::

    python benchmarks/sketch_compare.py                 # 5000 x 5000, k = 50
    python benchmarks/sketch_compare.py --n 1000 --rank 20 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time

import numpy as np
import scipy.sparse.linalg as spla
from sklearn.utils.extmath import randomized_svd

from matfree import sketch as sk


# ------------------------------------------------------------------ problems


def orthogonal(rng, n):
    """Haar-random orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def spectrum(kind, n):
    j = np.arange(1, n + 1, dtype=float)
    if kind == "power_law":
        return j**-1.0  # slow decay: power iterations matter
    if kind == "exponential":
        return np.exp(-(j - 1) / 10.0)  # fast decay
    raise ValueError(kind)


def test_matrix(kind, n, seed):
    rng = np.random.default_rng(seed)
    sig = spectrum(kind, n)
    U, V = orthogonal(rng, n), orthogonal(rng, n)
    return np.ascontiguousarray((U * sig) @ V.T), sig


# ------------------------------------------------------------------ errors


def spectral_error(A, U, s, Vt):
    """‖A − U diag(s) Vt‖₂ by ARPACK on the residual operator (tol 1e-6)."""
    def mv(x):
        x = np.ravel(x)
        return A @ x - U @ (s * (Vt @ x))

    def rmv(y):
        y = np.ravel(y)
        return A.T @ y - Vt.T @ (s * (U.T @ y))

    R = spla.LinearOperator(A.shape, matvec=mv, rmatvec=rmv, dtype=A.dtype)
    return float(spla.svds(R, k=1, tol=1e-6, return_singular_vectors=False, random_state=0)[0])


def frobenius_error(A, U, s, Vt, normA2):
    """‖A − U diag(s) Vt‖_F without forming the residual."""
    cross = np.sum(s * np.einsum("ij,ij->j", U, A @ Vt.T))
    return math.sqrt(max(normA2 - 2 * cross + np.sum((s[:, None] * (Vt @ Vt.T) * s[None, :]) * (U.T @ U)), 0.0))


# ------------------------------------------------------------------ methods


def run_matfree(A, k, q, probes, seed, backend):
    if backend == "torch":
        import torch

        At = torch.from_numpy(A)
        res = sk.rsvd(At, k, oversample=10, power_iters=q, error_probes=probes, rng=seed)
        return res.U.numpy(), res.s.numpy(), res.V.numpy().T, res
    res = sk.rsvd(A, k, oversample=10, power_iters=q, error_probes=probes, rng=seed)
    return res.U, res.s, res.V.T, res


def run_sklearn(A, k, n_iter, seed):
    U, s, Vt = randomized_svd(A, k, n_oversamples=10, n_iter=n_iter, random_state=seed)
    return U, s, Vt, None


def run_svds(A, k, seed):
    U, s, Vt = spla.svds(A, k=k, random_state=seed)
    order = np.argsort(s)[::-1]
    return U[:, order], s[order], Vt[order], None


def timed_round_robin(fns, repeats):
    """Median wall time of each function over ``repeats`` rounds (plus one warm-up round).

    The functions take turns inside every round, so a change of the machine's
    load during the run affects all of them alike.
    """
    times = [[] for _ in fns]
    outs = [None] * len(fns)
    for rnd in range(repeats + 1):
        for i, (fn, once) in enumerate(fns):
            if once and rnd != repeats:
                continue  # run once, in the last round
            t0 = time.perf_counter()
            outs[i] = fn()
            if rnd > 0 or once:
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times], outs


# ------------------------------------------------------------------ tables


def comparison_table(args):
    have_torch = importlib.util.find_spec("torch") is not None
    for kind in args.spectra:
        A, sig = test_matrix(kind, args.n, seed=0)
        normA2 = float(np.sum(sig**2))
        k = args.rank
        rows = [
            ("matfree rsvd q=2 (numpy)", lambda: run_matfree(A, k, 2, 10, 1, "numpy"), "incl. 10 error probes"),
            ("matfree rsvd q=2, no probes", lambda: run_matfree(A, k, 2, 0, 1, "numpy"), ""),
            ("matfree rsvd q=4 (numpy)", lambda: run_matfree(A, k, 4, 10, 1, "numpy"), ""),
            ("matfree rsvd q=7 (numpy)", lambda: run_matfree(A, k, 7, 10, 1, "numpy"), "sklearn's auto q"),
        ]
        if have_torch:
            rows.append(("matfree rsvd q=2 (torch)", lambda: run_matfree(A, k, 2, 10, 1, "torch"), "CPU tensors"))
        rows += [
            ("sklearn randomized_svd auto(q=7)", lambda: run_sklearn(A, k, "auto", 1), "LU normaliser"),
            ("sklearn randomized_svd q=4", lambda: run_sklearn(A, k, 4, 1), "LU normaliser"),
            ("sklearn randomized_svd q=2", lambda: run_sklearn(A, k, 2, 1), "QR normaliser"),
            ("scipy svds (ARPACK)", lambda: run_svds(A, k, 1), "1 run"),
        ]
        print(f"\n=== {args.n} x {args.n}, {kind} spectrum, rank {k} "
              f"(sigma_(k+1) = {sig[k]:.3e}), oversample 10, {args.threads} BLAS threads ===")
        header = f"{'method':34s} {'time [s]':>9s} {'spec/opt':>9s} {'fro rel':>10s} {'matvecs':>8s} {'HMT bound/opt':>13s}"
        print(header)
        print("-" * len(header))
        fns = [(fn, name.startswith("scipy")) for name, fn, _ in rows]
        times, outs = timed_round_robin(fns, args.repeats)
        for (name, _, note), t, (U, s, Vt, res) in zip(rows, times, outs):
            spec = spectral_error(A, U, s, Vt) / sig[k]
            fro = frobenius_error(A, U, s, Vt, normA2) / math.sqrt(normA2)
            mv = "" if res is None else str(res.num_matvecs)
            bound = "" if res is None or res.error_estimate is None else f"{res.error_estimate / sig[k]:.2f}"
            print(f"{name:34s} {t:9.3f} {spec:9.4f} {fro:10.3e} {mv:>8s} {bound:>13s}  {note}")


def hmt_bound(sig, k, p, q):
    e = 2 * q + 1
    tail = math.sqrt(np.sum(sig[k:] ** (2 * e)))
    val = (1 + math.sqrt(k / (p - 1))) * sig[k] ** e + math.e * math.sqrt(k + p) / p * tail
    return val ** (1.0 / e)


def hmt_table(args):
    n, k, p, seeds = args.hmt_n, 20, 10, range(5)
    print(f"\n=== HMT check: {n} x {n}, rank {k}, oversample {p}, mean over {len(seeds)} seeds ===")
    print("ratios to the optimal error sigma_(k+1); bound = 1 + HMT Cor. 10.10 (truncation, Thm 9.3)")
    header = f"{'spectrum':12s} {'method':6s} {'q':>2s} {'mean err/opt':>13s} {'max err/opt':>12s} {'HMT bound':>10s} {'posterior/opt':>14s}"
    print(header)
    print("-" * len(header))
    for kind in args.spectra:
        sig = spectrum(kind, n)
        mats = [test_matrix(kind, n, seed)[0] for seed in seeds]
        signs = np.where(np.arange(n) % 3 == 1, -1.0, 1.0)
        syms = []
        for seed in seeds:
            Q = orthogonal(np.random.default_rng(100 + seed), n)
            syms.append(np.ascontiguousarray((Q * (sig * signs)) @ Q.T))
        for method, fn, As in (("rsvd", sk.rsvd, mats), ("reig", sk.reig, syms)):
            for q in range(4):
                ratios, post = [], []
                for seed, A in zip(seeds, As):
                    res = fn(A, k, oversample=p, power_iters=q, rng=seed)
                    ratios.append(np.linalg.norm(A - res.operator.todense(), 2) / sig[k])
                    post.append(res.error_estimate / sig[k])
                bound = 1 + hmt_bound(sig, k, p, q) / sig[k]
                print(f"{kind:12s} {method:6s} {q:2d} {np.mean(ratios):13.4f} {np.max(ratios):12.4f} "
                      f"{bound:10.3f} {np.mean(post):14.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rank", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hmt-n", type=int, default=600)
    parser.add_argument("--spectra", nargs="+", default=["power_law", "exponential"])
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        if importlib.util.find_spec("torch") is not None:
            import torch

            torch.set_num_threads(args.threads)
        comparison_table(args)
        hmt_table(args)


if __name__ == "__main__":
    main()
