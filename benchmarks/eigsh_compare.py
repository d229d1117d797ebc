"""matfree.eigsh (thick-restart Lanczos) side by side with ARPACK and LOBPCG.

For each problem the table lists, for the ``k`` largest eigenvalues at
relative residual tolerance ``--tol``:

* the number of products with the matrix (ARPACK counted through a
  ``LinearOperator`` wrapper, LOBPCG by columns of its block products,
  matfree by its own ``num_matvecs``),
* the wall time (best of ``--repeats`` / ``--dense-repeats``; all solvers start from the same
  random vector seeded by ``--seed``; LOBPCG from a random block),
* the largest relative difference of the eigenvalues to ARPACK's, and the
  largest relative error against the exact eigenvalues (known in closed form
  for the 2-D Poisson matrix, by construction for the power-law matrix),
* the number of exact eigenvalues found (a single-vector Krylov method like
  ARPACK can miss a copy of a multiple eigenvalue; the top of the 2-D Poisson
  spectrum has double eigenvalues ``lambda_ij = lambda_ji``).  matfree runs
  with its default multiplicity check (rows ``block b``), which finds them,
  and without it (``block 1, no check``: what ARPACK does), and the extra
  products of the check are listed in the last column.

Problems: the 2-D Poisson (5-point Laplacian) matrix on ``m x m`` grids
(``--sizes``, ``n = m^2``; the issue asks for ``m = 500``) and a dense SPD
operator with eigenvalues ``i^-1`` (``--dense-n``, ``n = 4000``).

BLAS threads are pinned with threadpoolctl (``--threads``, 2 by default),
and so are Numba's (matfree's parallel CSR kernel); SciPy's sparse products
are single-threaded either way.  The load average is printed: on a shared
machine use ``--threads 1`` (parallel kernels degrade badly when the cores
are oversubscribed).

Run (the sizes of the issue; several minutes, ARPACK alone needs minutes on
the Poisson matrix)::

    python benchmarks/eigsh_compare.py --sizes 500

smaller::

    python benchmarks/eigsh_compare.py --sizes 100 200 --dense-n 1500
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse.linalg as spla

import matfree
from benchmarks.common import pin_threads, poisson2d, power_law_spd
from matfree.lanczos import eigsh


def _counting(A):
    """A SciPy LinearOperator around ``A`` that counts products (columns)."""
    count = [0]

    def mv(x):
        count[0] += 1
        return A @ x

    def mm(X):
        count[0] += X.shape[1]
        return A @ X

    op = spla.LinearOperator(A.shape, matvec=mv, matmat=mm, dtype=np.float64)
    return op, count


def _rel(a, b):
    return float(np.max(np.abs(np.sort(a) - np.sort(b)) / np.abs(np.sort(b))))


def _found(got, exact, tol):
    """How many of the exact top-k eigenvalues (with multiplicity) are matched by ``got``."""
    got = list(np.sort(got))
    hits = 0
    for lam in np.sort(exact):
        j = int(np.argmin([abs(g - lam) for g in got])) if got else -1
        if j >= 0 and abs(got[j] - lam) <= 100 * tol * abs(lam):
            hits += 1
            got.pop(j)
    return hits


def _run_arpack(A, k, tol, v0):
    op, count = _counting(A)
    t0 = time.perf_counter()
    w = spla.eigsh(op, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=True)[0]
    return time.perf_counter() - t0, np.sort(w), count[0]


def _run_lobpcg(A, k, tol, seed, maxiter):
    op, count = _counting(A)
    X = np.random.default_rng(seed).standard_normal((A.shape[0], k))
    t0 = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w, _ = spla.lobpcg(op, X, largest=True, tol=tol, maxiter=maxiter)
    return time.perf_counter() - t0, np.sort(w), count[0]


def _run_matfree(A, k, tol, v0, block_size, seed, check=True):
    op = matfree.aslinearoperator(A, symmetric=True)
    t0 = time.perf_counter()
    res = eigsh(op, k, "LA", tol=tol, v0=v0 if block_size == 1 else None, rng=seed, block_size=block_size,
                check_multiplicity=check)
    return time.perf_counter() - t0, np.asarray(res.eigenvalues), res.num_matvecs, res


def _print_row(label, mv, t, mv_ar, t_ar, d_ar, d_ex, found, k, status):
    def ratio(x, y):
        return f"{x / y:9.2f}" if np.isfinite(y) else f"{'-':>9s}"

    d_ar = f"{d_ar:10.1e}" if np.isfinite(d_ar) else f"{'-':>10s}"
    print(
        f"{label:28s} {mv:8d} {ratio(mv, mv_ar)} {t:9.2f} {ratio(t, t_ar)} "
        f"{d_ar} {d_ex:10.1e} {found:3d}/{k:<2d}  {status}",
        flush=True,
    )


def _check_note(res):
    info = res.info
    if info.get("multiplicity_check") == "off":
        return "converged (no check)" if res.converged else res.status
    return (f"{'converged' if res.converged else res.status}; check {info['multiplicity_check_matvecs']} mv "
            f"in {info['num_multiplicity_checks']}")


def compare(name, A, exact, args, repeats):
    n = A.shape[0]
    k, tol = args.k, args.tol
    v0 = np.random.default_rng(args.seed).standard_normal(n)
    print(f"\n{name}: n = {n}, top k = {k}, tol = {tol:g}; load average {os.getloadavg()[0]:.2f}")
    head = (
        f"{'solver':28s} {'matvecs':>8s} {'x ARPACK':>9s} {'time [s]':>9s} {'x ARPACK':>9s} "
        f"{'vs ARPACK':>10s} {'vs exact':>10s} {'found':>6s}  status"
    )
    print(head)
    print("-" * len(head), flush=True)
    t_ar, mv_ar, w_ar = np.nan, np.nan, None
    if args.arpack:
        t_ar = np.inf
        for _ in range(repeats):
            t, w_ar, mv_ar = _run_arpack(A, k, tol, v0)
            t_ar = min(t_ar, t)
        _print_row("ARPACK (scipy eigsh)", mv_ar, t_ar, mv_ar, t_ar, 0.0, _rel(w_ar, exact),
                   _found(w_ar, exact, tol), k, "ok")
    runs = [(b, True) for b in args.block_sizes] + ([(1, False)] if args.no_check_row else [])
    for b, check in runs:
        t_mf = np.inf
        for _ in range(repeats):
            t, w_mf, mv_mf, res = _run_matfree(A, k, tol, v0, b, args.seed, check)
            t_mf = min(t_mf, t)
        d_ar = _rel(w_mf, w_ar) if w_ar is not None else np.nan
        label = f"matfree eigsh (block {b})" if check else "matfree (block 1, no check)"
        _print_row(label, mv_mf, t_mf, mv_ar, t_ar, d_ar,
                   _rel(w_mf, exact), _found(w_mf, exact, tol), k, _check_note(res))
    if args.lobpcg:
        atol = tol * float(np.max(np.abs(exact)))  # LOBPCG's tolerance is absolute
        t_lo, w_lo, mv_lo = _run_lobpcg(A, k, atol, args.seed, args.lobpcg_maxiter)
        d_ar = _rel(w_lo, w_ar) if w_ar is not None else np.nan
        _print_row("LOBPCG (scipy)", mv_lo, t_lo, mv_ar, t_ar, d_ar, _rel(w_lo, exact),
                   _found(w_lo, exact, tol), k, f"orientation (maxiter {args.lobpcg_maxiter})")


def poisson_exact(m, k):
    t = 2.0 - 2.0 * np.cos(np.arange(1, m + 1) * np.pi / (m + 1))
    # the k largest of t_i + t_j, with multiplicity, without forming all m^2 sums
    top = np.sort(t)[-(k + 1) :]
    return np.sort(np.add.outer(top, top).ravel())[-k:]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[500], help="Poisson grid sizes m (n = m^2)")
    p.add_argument("--dense-n", type=int, default=4000, help="size of the dense power-law operator (0: skip)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="timing repeats on the Poisson matrices")
    p.add_argument("--dense-repeats", type=int, default=3, help="timing repeats on the dense operator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-sizes", type=int, nargs="*", default=[1, 2],
                   help="block sizes of matfree runs with the multiplicity check")
    p.add_argument("--no-check-row", action=argparse.BooleanOptionalAction, default=True,
                   help="also run block 1 without the multiplicity check (default: yes)")
    p.add_argument("--no-lobpcg", dest="lobpcg", action="store_false")
    p.add_argument("--no-arpack", dest="arpack", action="store_false",
                   help="skip ARPACK (ratio columns then show '-')")
    p.add_argument("--lobpcg-maxiter", type=int, default=200)
    args = p.parse_args(argv)
    pin_threads(args.threads)
    if matfree._backend.has_numba():
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"BLAS and Numba threads pinned to {args.threads} (threadpoolctl, numba.set_num_threads); "
          f"seed {args.seed}; {os.cpu_count()} CPUs")
    if args.dense_n:
        P, lam = power_law_spd(args.dense_n, c=1.0, seed=args.seed)
        P = np.ascontiguousarray((P + P.T) / 2)
        compare("dense power-law operator, eigenvalues i^-1", P, np.sort(lam)[-args.k :], args, args.dense_repeats)
    for m in args.sizes:
        compare(f"2-D Poisson {m}x{m}", poisson2d(m), poisson_exact(m, args.k), args, args.repeats)


if __name__ == "__main__":
    main()
