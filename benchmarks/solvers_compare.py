"""matfree's Krylov solvers side by side with SciPy.

Prints these tables:

1. iteration counts of ``matfree.cg`` / ``matfree.minres`` and SciPy's
   ``cg`` / ``minres`` on the same (damped, shifted) systems;
2. CG time per iteration on the 2-D Poisson matrix (and a dense SPD matrix)
   vs ``scipy.sparse.linalg.cg`` (a fixed number of iterations, same matrix,
   same start; the final iterates are compared), next to the memory-bandwidth
   floor: the bytes one fused CG iteration must move (:func:`cg_bytes`)
   divided by the copy bandwidth measured in the same run (issue #7);
   2b. whole solves to rtol 1e-8 at small n (100^2, 300^2): per-iteration
   overhead, same iteration counts;
3. 8 geometrically spaced shifts 1e-4 ... 1 on the 2-D Poisson matrix:
   multi-shift CG (one Krylov space) vs 8 separate SciPy solves
   (vector-bound; issue #5);
4. the same 8 shifts on a dense n = 4,000 SPD matrix (matvec-bound);
5. Nyström-preconditioned CG vs plain CG on ill-conditioned damped problems
   (an RBF kernel matrix; a logistic-regression Hessian with features of
   decaying scale; the Hessian of softmax regression on scikit-learn's
   digits, whose large effective dimension shows where Nyström does not pay).

BLAS threads are pinned with threadpoolctl and Numba's threads (the fused
CG kernels and the parallel CSR kernel behind ``matfree.Sparse``) with
``numba.set_num_threads`` (``--threads``, 2 by default); SciPy's sparse
product is single-threaded.  Timings are minima over alternating runs
(ours, SciPy's, ours, ...), plus the median of the paired ratios.

matfree runs on its own operators (``matfree.Sparse``, ``matfree.Dense``),
as a user would; table 2 also shows ``matfree.cg`` on SciPy's own product
(the solvers compared on equal products), and ``--product scipy`` does the
same in table 3.

On a machine shared with other busy processes, set ``OMP_WAIT_POLICY=PASSIVE``
(Numba's OpenMP threads otherwise spin at every barrier and lose their time
slices; see docs/performance.rst).  All figures of issues #5 and #7 (about
10 minutes on 2 cores)::

    python benchmarks/solvers_compare.py --sizes 1000 2000 --skip counts nystrom

Everything, smaller::

    python benchmarks/solvers_compare.py --sizes 300 --dense-n 1500 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import matfree
from benchmarks.common import pin_threads, poisson2d, power_law_spd
from matfree import _kernels, precond
from matfree.solvers import cg, minres

SHIFTS = np.geomspace(1e-4, 1.0, 8)


def _set_threads(n):
    """Pin BLAS/torch threads (threadpoolctl) and Numba's threads to ``n``."""
    pin_threads(n)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _operator(A, product="scipy"):
    """A matfree operator for ``A``: SciPy's own product, or matfree's ``Sparse``/``Dense``."""
    if not sp.issparse(A):
        return matfree.Dense(A, symmetric=True)
    if product == "sparse":
        return matfree.Sparse(A)
    import array_api_compat.numpy as np_xp

    return matfree.FunctionOperator(
        lambda v: A @ v, A.shape, np_xp.float64, np_xp, "cpu",
        matmat=lambda V: A @ V, symmetric=True, check_finite=False, name="scipy_csr",
    )


def _best(fn, repeats):
    """Best wall time of ``repeats`` calls and the last result."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _scipy_cg(A, b, **kw):
    """SciPy's cg with an iteration counter (its info does not return one)."""
    count = [0]

    def cb(_):
        count[0] += 1

    x, info = spla.cg(A, b, callback=cb, **kw)
    return x, info, count[0]


def _scipy_minres(A, b, **kw):
    count = [0]

    def cb(_):
        count[0] += 1

    x, info = spla.minres(A, b, callback=cb, **kw)
    return x, info, count[0]


def _table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))


# ----------------------------------------------------------------------
# 1. iteration counts side by side
# ----------------------------------------------------------------------


def iteration_counts():
    rows = []
    A = poisson2d(100)
    n = A.shape[0]
    b = np.random.default_rng(0).standard_normal(n)
    op = matfree.Sparse(A)
    eye = sp.identity(n, format="csr")
    for lam in [0.0, 1e-3, 1e-1]:
        res = cg(op, b, damping=lam, rtol=1e-8)
        _, info, its = _scipy_cg((A + lam * eye).tocsr(), b, rtol=1e-8, maxiter=10 * n)
        rows.append(("cg", "Poisson 100^2", f"damping={lam:g}", res.num_iters, its,
                     res.status, "converged" if info == 0 else f"info={info}"))
    for sigma in [0.05, 1.3, 4.1]:  # interior shifts: indefinite systems
        res = minres(op, b, shift=-sigma, rtol=1e-8, maxiter=20 * n)
        _, info, its = _scipy_minres(A, b, shift=sigma, rtol=1e-8, maxiter=20 * n)
        rows.append(("minres", "Poisson 100^2", f"A - {sigma:g} I", res.num_iters, its,
                     res.status, "converged" if info == 0 else f"info={info}"))
    _table(
        "Table 1. Iterations to rtol=1e-8, matfree vs SciPy (minres: SciPy stops on "
        "||r|| <= rtol ||A|| ||x||, matfree on ||r|| <= rtol ||b||)",
        ["solver", "problem", "system", "matfree its", "scipy its", "matfree", "scipy"],
        rows,
    )


# ----------------------------------------------------------------------
# 2. time per CG iteration
# ----------------------------------------------------------------------


_PCOPY = []


def _parallel_copy():
    """A parallel Numba copy ``dst[:] = src`` (compiled once), or ``None`` without Numba."""
    if not _PCOPY:
        try:
            import numba
        except ImportError:
            _PCOPY.append(None)
        else:
            def pcopy(src, dst):
                for i in numba.prange(src.shape[0]):
                    dst[i] = src[i]

            _PCOPY.append(numba.njit(parallel=True)(pcopy))
    return _PCOPY[0]


def _copy_bandwidth(nbytes=1 << 27):
    """Copy bandwidth in bytes/s: the best of NumPy's copy and a parallel Numba copy.

    Bytes read plus bytes written, over arrays far larger than the caches;
    the faster of the two copies, so that the floor below is the stricter one.
    """
    a = np.ones(nbytes // 8)
    c = np.empty_like(a)
    copies = [lambda: np.copyto(c, a)]
    pcopy = _parallel_copy()
    if pcopy is not None:
        pcopy(a, c)
        copies.append(lambda: pcopy(a, c))
    best = min(_best(f, 3)[0] for f in copies)
    return 2 * a.nbytes / best


def cg_bytes(n, nnz, index_bytes=4, value_bytes=8):
    """Bytes one fused CG iteration must move (unpreconditioned, CSR operator).

    Product with p fused with pᵀAp: CSR values + indices + indptr, read p,
    write Ap; update x += αp, r -= αAp with ‖r‖²: read x, r, p, Ap, write x,
    r; direction p = r + βp: read r, p, write p.
    """
    spmv = (value_bytes + index_bytes) * nnz + index_bytes * (n + 1) + 2 * value_bytes * n
    return spmv + 6 * value_bytes * n + 3 * value_bytes * n


def per_iteration(sizes, repeats, iters, dense_A=None):
    """Short runs of ``iters`` iterations, ours and SciPy's alternating ``repeats`` times.

    On a shared machine single timings are noisy; the minimum over many
    short alternating runs is the robust estimate of the undisturbed time,
    and the median of the paired ratios says the same from another angle.
    The copy bandwidth is measured between the runs (the best of them).
    """
    rows = []
    problems = [(f"Poisson {m}^2", poisson2d(m)) for m in sizes]
    if dense_A is not None:
        problems.append((f"dense n={dense_A.shape[0]}", dense_A))
    bandwidth = 0.0
    for name, A in problems:
        n = A.shape[0]
        b = np.random.default_rng(1).standard_normal(n)
        same = _operator(A, "scipy")
        own = _operator(A, "sparse")
        cg(own, b, rtol=0.0, maxiter=2)  # compile / load the kernels
        times = {"same": [], "own": [], "scipy": []}
        for _ in range(repeats):
            t, res = _best(lambda: cg(own, b, rtol=0.0, maxiter=iters), 1)
            times["own"].append(t)
            t, (x_ref, _, its) = _best(lambda: _scipy_cg(A, b, rtol=0.0, maxiter=iters), 1)
            times["scipy"].append(t)
            if sp.issparse(A):
                t, _ = _best(lambda: cg(same, b, rtol=0.0, maxiter=iters), 1)
                times["same"].append(t)
                bandwidth = max(bandwidth, _copy_bandwidth())
        assert res.num_iters == its == iters
        diff = np.linalg.norm(res.x - x_ref) / np.linalg.norm(x_ref)
        t_own, t_scipy = min(times["own"]) / iters, min(times["scipy"]) / iters
        paired = np.median(np.array(times["scipy"]) / np.array(times["own"]))
        if sp.issparse(A):
            floor = cg_bytes(n, A.nnz) / bandwidth
            floor_cols = (f"{1e3 * floor:.2f}", f"{t_own / floor:.2f}", f"{t_scipy / floor:.2f}")
            same_col = f"{1e3 * min(times['same']) / iters:.2f}"
        else:
            floor_cols, same_col = ("-", "-", "-"), "(same)"
        rows.append((name, n, f"{repeats} x {iters}", f"{1e3 * t_scipy:.2f}", f"{1e3 * t_own:.2f}",
                     f"{t_scipy / t_own:.2f}x", f"{paired:.2f}x", *floor_cols, same_col,
                     f"{diff:.1e}"))
    _table(
        "Table 2. CG time per iteration (min over alternating short runs), same matrix and "
        "start; matfree on its Sparse/Dense operator.  floor = bytes of one fused iteration "
        "(12 nnz + 4 (n+1) + 88 n: CSR values, int32 indices and indptr, p, Ap, "
        "x/r/p/Ap updates) / copy bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s (best copy of this run).  'SciPy product': matfree.cg "
        "on SciPy's own A @ v",
        ["problem", "n", "runs x iters", "scipy ms/it", "matfree ms/it", "speed-up",
         "median paired", "floor ms/it", "matfree/floor", "scipy/floor",
         "matfree ms/it (SciPy product)", "rel. diff of x"],
        rows,
    )


def full_solves(sizes, repeats, rtol=1e-8):
    """CG to ``rtol`` from zero, matfree (Sparse operator) vs SciPy, alternating."""
    rows = []
    for m in sizes:
        A = poisson2d(m)
        n = A.shape[0]
        b = np.random.default_rng(5).standard_normal(n)
        op = matfree.Sparse(A)
        cg(op, b, rtol=0.0, maxiter=2)
        t_mf, t_sp = [], []
        for _ in range(repeats):
            t, res = _best(lambda: cg(op, b, rtol=rtol, maxiter=10 * n), 1)
            t_mf.append(t)
            t, (x_ref, info, its) = _best(lambda: _scipy_cg(A, b, rtol=rtol, maxiter=10 * n), 1)
            t_sp.append(t)
        paired = np.median(np.array(t_sp) / np.array(t_mf))
        rows.append((f"Poisson {m}^2", n, res.num_iters, its, f"{min(t_sp):.3f}",
                     f"{min(t_mf):.3f}", f"{min(t_sp) / min(t_mf):.2f}x", f"{paired:.2f}x",
                     f"{1e3 * min(t_mf) / max(res.num_iters, 1):.3f}",
                     f"{1e3 * min(t_sp) / max(its, 1):.3f}", res.status,
                     "converged" if info == 0 else f"info={info}"))
    _table(
        f"Table 2b. Whole CG solves to rtol={rtol:g} (min of {repeats} alternating runs), "
        "matfree.Sparse vs scipy.sparse.linalg.cg",
        ["problem", "n", "matfree its", "scipy its", "scipy s", "matfree s", "speed-up",
         "median paired", "matfree ms/it", "scipy ms/it", "matfree", "scipy"],
        rows,
    )


# ----------------------------------------------------------------------
# 3-4. multi-shift
# ----------------------------------------------------------------------


def multishift(name, A, repeats, rtol=1e-6, product="scipy"):
    n = A.shape[0]
    b = np.random.default_rng(2).standard_normal(n)
    is_sparse = sp.issparse(A)
    op = _operator(A, product)
    shifted = [
        (A + s * sp.identity(n, format="csr")).tocsr() if is_sparse else A + s * np.eye(n)
        for s in SHIFTS
    ]
    t_ms, t_sep = np.inf, np.zeros(len(SHIFTS))
    sep = [None] * len(SHIFTS)
    for _ in range(repeats):  # interleaved
        t, res = _best(lambda: cg(op, b, damping=SHIFTS, rtol=rtol), 1)
        t_ms = min(t_ms, t)
        for j, As in enumerate(shifted):
            t, out = _best(lambda: _scipy_cg(As, b, rtol=rtol, maxiter=10 * n), 1)
            t_sep[j] = t if sep[j] is None else min(t_sep[j], t)
            sep[j] = out
    bnorm = np.linalg.norm(b)
    rows = []
    for j, s in enumerate(SHIFTS):
        x_ref, info, its = sep[j]
        x = res.x[:, j]
        resid = np.linalg.norm(shifted[j] @ x - b) / bnorm
        resid_ref = np.linalg.norm(shifted[j] @ x_ref - b) / bnorm
        rows.append((f"{s:.2e}", res.info["iterations_per_shift"][j], its, f"{t_sep[j]:.2f}",
                     f"{resid:.1e}", f"{resid_ref:.1e}",
                     f"{np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref):.1e}"))
    total = sum(r[2] for r in rows)
    rows.append(("all 8", f"{res.num_matvecs} matvecs", f"{total} matvecs",
                 f"{t_sep.sum():.2f}", "", "", ""))
    _table(
        f"Multi-shift CG on {name} (n={n}), rtol={rtol:g}: matfree {t_ms:.2f} s "
        f"({res.num_matvecs} matvecs) vs 8 separate SciPy solves {t_sep.sum():.2f} s "
        f"({total} matvecs): speed-up {t_sep.sum() / t_ms:.2f}x",
        ["shift", "matfree its", "scipy its", "scipy s", "matfree true res",
         "scipy true res", "rel. diff"],
        rows,
    )
    return t_ms, t_sep.sum(), res.num_matvecs, total


# ----------------------------------------------------------------------
# 5. Nyström PCG
# ----------------------------------------------------------------------


def _kernel_problem(n, rng):
    """RBF kernel matrix of n random points in the unit cube (bandwidth 0.5)."""
    X = rng.uniform(size=(n, 3))
    sq = np.sum(X * X, axis=1)
    D = np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0)
    K = np.exp(-D / (2 * 0.5**2))
    return matfree.Dense(K, symmetric=True), np.linalg.eigvalsh(K)


def _logistic_problem(m, d, rng):
    """Hessian XᵀDX/m of the logistic loss at a point w, features of scale j^-1."""
    X = rng.standard_normal((m, d)) * (np.arange(1, d + 1) ** -1.0)
    w = 0.5 * rng.standard_normal(d)
    p = 1.0 / (1.0 + np.exp(-X @ w))
    D = p * (1 - p) / m
    H = matfree.from_hvp(
        lambda v: X.T @ (D * (X @ v)),
        size=d,
        batched=lambda V: X.T @ (D[:, None] * (X @ V)),
        positive_semidefinite=True,
    )
    return H, np.linalg.eigvalsh(X.T @ (D[:, None] * X))


def _softmax_problem():
    """Hessian of (unregularised) softmax regression on sklearn's digits after 5 Newton steps."""
    from matfree._problems import digits_softmax

    prob = digits_softmax(lam=0.0)
    w = prob.fit(iters=5)
    H = matfree.from_hvp(lambda v: prob.hvp(w, v), size=prob.size,
                         batched=lambda V: prob.hvp(w, V), positive_semidefinite=True)
    return H, np.linalg.eigvalsh(prob.hessian_dense(w))


def nystrom_pcg(kernel_n, repeats):
    rng = np.random.default_rng(3)
    problems = [
        (f"RBF kernel n={kernel_n}", *_kernel_problem(kernel_n, rng), [1e-3, 1e-5], 200),
        ("logistic m=20000 d=2000", *_logistic_problem(20000, 2000, rng), [1e-4, 1e-6], 200),
    ]
    try:
        problems.append(("softmax digits n=650", *_softmax_problem(), [1e-5], 200))
    except ImportError:
        print("(scikit-learn missing: the softmax-regression problem is skipped)")
    rows = []
    for name, A, lam, mus, rank in problems:
        n = A.shape[0]
        b = rng.standard_normal(n)
        for mu in mus:
            d_eff = float(np.sum(np.maximum(lam, 0) / (np.maximum(lam, 0) + mu)))
            t_cg, plain = _best(lambda: cg(A, b, damping=mu, rtol=1e-8, maxiter=20 * n), repeats)

            def run():
                M = precond.nystrom(A, rank, mu, rng=0)
                return M, cg(A, b, damping=mu, M=M, rtol=1e-8, maxiter=20 * n)

            t_pcg, (M, pcg) = _best(run, repeats)
            rows.append((name, f"{mu:g}", f"{d_eff:.0f}", rank, plain.num_iters, pcg.num_iters,
                         f"{plain.num_iters / max(pcg.num_iters, 1):.1f}x",
                         plain.num_matvecs, M.setup_matvecs + pcg.num_matvecs,
                         f"{t_cg:.2f}", f"{t_pcg:.2f}", f"{plain.status}/{pcg.status}"))
    _table(
        "Table 5. Nyström PCG (Frangella-Tropp-Udell) vs CG, rtol=1e-8; d_eff = "
        "sum lam/(lam+mu); PCG products and time include the sketch (rank + 10 products)",
        ["problem", "damping", "d_eff", "rank", "CG its", "PCG its", "reduction",
         "CG mv", "PCG mv", "CG s", "PCG s", "status"],
        rows,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000],
                        help="Poisson grid sides m (n = m^2); default 1000 2000")
    parser.add_argument("--dense-n", type=int, default=4000, help="size of the dense SPD matrix")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (threadpoolctl)")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best is kept)")
    parser.add_argument("--repeats-large", type=int, default=1,
                        help="repeats of table 3 above n = 1e6 (each takes minutes)")
    parser.add_argument("--iters", type=int, default=20,
                        help="CG iterations per timed run in table 2")
    parser.add_argument("--product", choices=["scipy", "sparse"], default="sparse",
                        help="matfree's product in table 3: matfree.Sparse (default) or SciPy's A @ v")
    parser.add_argument("--small-sizes", type=int, nargs="+", default=[100, 300],
                        help="grid sides of the whole solves of table 2b; default 100 300")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["counts", "periter", "small", "poisson", "dense", "nystrom"])
    args = parser.parse_args()
    _set_threads(args.threads)
    print(f"matfree solvers vs SciPy; BLAS and Numba threads pinned to {args.threads}; "
          f"best of {args.repeats} repeat(s); table 3 with matfree product '{args.product}'")
    print(f"matfree from {os.path.dirname(matfree.__file__)}; load average {os.getloadavg()}; "
          f"numba kernels active: {_kernels.active()}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    if "counts" not in args.skip:
        iteration_counts()
    dense_A = None
    if "periter" not in args.skip or "dense" not in args.skip:
        dense_A, _ = power_law_spd(args.dense_n, c=1.0, seed=0)
        dense_A = (dense_A + dense_A.T) / 2
    if "periter" not in args.skip:
        per_iteration(args.sizes, max(10 * args.repeats, 10), args.iters, dense_A)
    if "small" not in args.skip:
        full_solves(args.small_sizes, max(5 * args.repeats, 5))
    summary = []
    if "poisson" not in args.skip:
        print("\nTable 3. Vector-bound: 8 shifts on the 2-D Poisson matrix")
        for m in args.sizes:
            # the biggest runs take many minutes each: one repeat above n = 1e6
            reps = args.repeats_large if m * m > 10**6 else args.repeats
            summary.append((f"Poisson {m}^2",
                            *multishift(f"Poisson {m}^2", poisson2d(m), reps, product=args.product)))
    if "dense" not in args.skip:
        print(f"\nTable 4. Matvec-bound: 8 shifts on a dense SPD matrix, eigenvalues i^-1, "
              f"n={args.dense_n}")
        summary.append((f"dense n={args.dense_n}",
                        *multishift(f"dense n={args.dense_n}", dense_A, args.repeats)))
    if summary:
        _table(
            "Summary of tables 3-4: multi-shift CG vs 8 separate SciPy solves",
            ["problem", "matfree s", "scipy s", "speed-up", "matfree mv", "scipy mv"],
            [(p, f"{a:.2f}", f"{b_:.2f}", f"{b_ / a:.2f}x", c, d) for p, a, b_, c, d in summary],
        )
    if "nystrom" not in args.skip:
        nystrom_pcg(min(args.dense_n, 2000), args.repeats)


if __name__ == "__main__":
    main()
