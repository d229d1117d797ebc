"""SLQ log-determinant of a sparse SPD matrix (n ~ 1e5): error against products, vs imate.

The matrix is the 2-D Poisson matrix on an ``m x m`` grid plus ``shift * I``
(``--grid 316``: n = 99,856), whose eigenvalues
``t_i + t_j + shift`` with ``t_i = 2 - 2 cos(i pi / (m + 1))`` are known, so
the exact log-determinant is a sum of logarithms.

For every budget (``--probes`` x ``--steps``) the table gives, averaged over
``--seeds`` seeds, the relative error of matfree's SLQ estimate (Rademacher
probes advancing as one block through ``A.matmat``, no reorthogonalisation,
as imate's default), its relative standard error, the products spent, the
wall time, and the same error and wall time for imate's SLQ
(``imate.logdet(method="slq")``, same number of samples and Lanczos degree,
no reorthogonalisation, ``--threads`` OpenMP threads) when imate is
installed.  imate does not report products; it spends ``probes x steps``.

BLAS threads are pinned with threadpoolctl (``--threads``, 2 by default).

Run::

    python benchmarks/slq_logdet.py
    python benchmarks/slq_logdet.py --grid 100 --probes 10 30 --steps 10 20 --seeds 2
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import scipy.sparse as sp

import matfree
from benchmarks.common import pin_threads, poisson2d
from matfree.spectral import SLQ


def problem(m, shift):
    t = 2.0 - 2.0 * np.cos(np.arange(1, m + 1) * np.pi / (m + 1))
    exact = float(np.sum(np.log(np.add.outer(t, t).ravel() + shift)))
    A = (poisson2d(m) + shift * sp.identity(m * m, format="csr")).tocsr()
    cond = (t.max() * 2 + shift) / (t.min() * 2 + shift)
    return A, exact, cond


def run_matfree(A, p, m, seed):
    op = matfree.aslinearoperator(A, positive_definite=True)
    t0 = time.perf_counter()
    est = SLQ(op, num_probes=p, num_steps=m, rng=seed).logdet()
    t = time.perf_counter() - t0
    plain = float(est.info.get("value_plain", est.value))  # without control variates
    return t, float(est.value), float(est.stderr), est.num_matvecs, plain


def run_imate(A, p, m, seed, threads):
    import imate

    t0 = time.perf_counter()
    value = imate.logdet(
        A,
        method="slq",
        min_num_samples=p,
        max_num_samples=p,
        lanczos_degree=m,
        orthogonalize=0,
        error_rtol=1e-12,
        seed=seed,
        num_threads=threads,
        gpu=False,
    )
    return time.perf_counter() - t0, float(value)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=int, default=316, help="Poisson grid size m (n = m^2)")
    ap.add_argument("--shift", type=float, default=1e-2)
    ap.add_argument("--probes", type=int, nargs="*", default=[10, 30, 100])
    ap.add_argument("--steps", type=int, nargs="*", default=[10, 20, 40])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    A, exact, cond = problem(args.grid, args.shift)
    have_imate = importlib.util.find_spec("imate") is not None
    print(f"BLAS threads pinned to {args.threads} (threadpoolctl); imate: "
          f"{'installed, num_threads=%d' % args.threads if have_imate else 'not installed'}")
    print(f"A = Poisson {args.grid}x{args.grid} + {args.shift:g} I: n = {A.shape[0]}, nnz = {A.nnz}, "
          f"cond = {cond:.3g}, exact logdet = {exact:.10g}")
    print(f"relative errors |est - exact| / |exact| averaged over {args.seeds} seeds\n")
    print("matfree err: the default estimate (control variates tr A, tr A^2 of the Sparse "
          "operator); plain err: the plain mean of the same probes (imate's estimator)\n")
    head = (f"{'probes':>6s} {'steps':>5s} {'matvecs':>8s} | {'matfree err':>11s} {'stderr':>9s} "
            f"{'plain err':>9s} {'time [s]':>8s} | {'imate err':>10s} {'time [s]':>8s}")
    print(head)
    print("-" * len(head))
    for m in args.steps:
        for p in args.probes:
            errs, ses, times, ierrs, itimes, perrs = [], [], [], [], [], []
            for seed in range(args.seeds):
                t, val, se, nmv, plain = run_matfree(A, p, m, seed)
                errs.append(abs(val - exact) / abs(exact))
                perrs.append(abs(plain - exact) / abs(exact))
                ses.append(se / abs(exact))
                times.append(t)
                if have_imate:
                    ti, vi = run_imate(A, p, m, seed + 1, args.threads)
                    ierrs.append(abs(vi - exact) / abs(exact))
                    itimes.append(ti)
            imate_cols = (
                f"{np.mean(ierrs):10.2e} {np.median(itimes):8.2f}" if have_imate else f"{'-':>10s} {'-':>8s}"
            )
            print(
                f"{p:6d} {m:5d} {nmv:8d} | {np.mean(errs):11.2e} {np.mean(ses):9.2e} "
                f"{np.mean(perrs):9.2e} {np.median(times):8.2f} | {imate_cols}",
                flush=True,
            )


if __name__ == "__main__":
    main()
