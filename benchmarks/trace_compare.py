"""Trace estimators side by side: matfree vs curvlinops vs imate (issue 4).

For a dense n-by-n operator ``Q diag(lam) Qᵀ`` (Q Haar-random, from the QR
of a Gaussian matrix) with the spectra of the papers -- flat, i^-0.5, i^-1,
i^-2, i^-3 and exponential decay exp(-(i-1)/10) -- and budgets of 30 / 100 /
300 products, print the median relative error of every estimator over
seeded trials, the fitted error slope d log(err) / d log(matvecs), the wall
time per estimate, and the speed-up of probing through one ``matmat`` over a
loop of ``matvec`` calls.

Peers, when installed: curvlinops (``hutchinson_trace``, ``hutchpp_trace``,
``xtrace`` on the same dense matrix as a torch tensor) and imate's Hutchinson
(``imate.traceinv(I, B=A, method="hutchinson")`` = tr(B I^-1) = tr(A); imate
has no Hutchinson for tr(A) itself, and needs A as a sparse matrix there).
Hutch++ needs a multiple of 3, so its "100" budget is 99 (for both libraries).

The issue's target, "XTrace never worse than Hutch++ at the same budget", is
checked in its own table: the median relative error of each over the trials
with a distribution-free 95% interval for the median (order statistics of a
Binomial(trials, 1/2)), their ratio, and a verdict: ``yes`` (XTrace's median
is at most Hutch++'s), ``tie`` (it is larger but the two intervals overlap, so
the trials cannot tell them apart) or ``NO`` (XTrace's interval lies above
Hutch++'s).  A last table gives the coverage of the 95% intervals of
matfree's estimators over the trials: normal quantile (``est.ci``) and, for
the XTrace family, the Student-t quantile with ``info["dof"]`` = k - 1.

BLAS and torch are pinned to ``--threads`` threads (default 2, the machine's
cores) with threadpoolctl.  On an oversubscribed machine pass ``--threads 1``:
with other jobs running, two OpenBLAS threads made LAPACK's QR about five
times slower here than one (matmat speed was the same).

Seeds are fixed: ``rng=seed`` for matfree, imate's ``seed=``; curvlinops has
no generator argument, so torch's global generator is seeded right before
each of its calls.

Run::

    PYTHONPATH=. /work/venv/bin/python benchmarks/trace_compare.py  # n=4000, this checkout
    /work/venv/bin/python benchmarks/trace_compare.py --threads 1    # busy machine
    /work/venv/bin/python benchmarks/trace_compare.py --n 1000 --trials 4

The default of 30 trials takes about 10 minutes with peers on a quiet
2-core machine (every estimate is a dense n=4000 product); ``--trials`` and
``--peer-trials`` trade time for the width of the median intervals.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

import matfree
from matfree.trace import trace

SPECTRA = ("flat", "i^-0.5", "i^-1", "i^-2", "i^-3", "exp")
BUDGETS = (30, 100, 300)
OURS = ("hutchinson", "hutchpp", "na_hutchpp", "xtrace", "xnystrace")
#: errors below this relative size are rounding, not sampling error (coverage table)
ROUNDING = 1e3 * np.finfo(float).eps
CURVLINOPS = {"hutchinson": "hutchinson_trace", "hutchpp": "hutchpp_trace", "xtrace": "xtrace"}


def spectrum(name, n):
    i = np.arange(1, n + 1, dtype=float)
    if name == "flat":
        return np.ones(n)
    if name.startswith("i^"):
        return i ** float(name[2:])
    if name == "exp":
        return np.exp(-(i - 1) / 10.0)
    raise ValueError(name)


def budget_for(method, m):
    """The largest budget <= m that ``method`` accepts (Hutch++: multiple of 3; XTrace: even)."""
    if method.endswith("hutchpp") and method != "na_hutchpp":
        return m - m % 3
    if method == "xtrace":
        return m - m % 2
    return m


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------
# estimators
# ----------------------------------------------------------------------


def run_ours(A, method, m, seed):
    """Value, stderr, degrees of freedom (``None``: normal) and wall time of one estimate."""
    est, dt = timed(lambda: trace(A, method=method, num_matvecs=budget_for(method, m),
                                  use_exact=False, rng=seed))
    return float(est), float(est.stderr), est.info.get("dof"), dt


def load_curvlinops():
    if importlib.util.find_spec("curvlinops") is None:
        return None, "not installed (pip install curvlinops-for-pytorch)"
    try:
        import curvlinops  # noqa: F401
        import torch  # noqa: F401
    except Exception as err:  # noqa: BLE001 - report whatever broke the import
        return None, f"installed but failed to import: {err!r}"
    return curvlinops, f"curvlinops (torch {sys.modules['torch'].__version__})"


def run_curvlinops(cl, Mt, method, m, seed):
    import torch

    fn = getattr(cl, CURVLINOPS[method])
    torch.manual_seed(seed)  # curvlinops draws from torch's global generator only
    est, dt = timed(lambda: fn(Mt, budget_for(method, m)))
    return float(est), dt


def load_imate():
    if importlib.util.find_spec("imate") is None:
        return None, "not installed (pip install imate)"
    try:
        import imate
    except Exception as err:  # noqa: BLE001
        return None, f"installed but failed to import: {err!r}"
    return imate, f"imate {imate.__version__}"


def run_imate(imate, identity, Bsp, budgets, seed, threads):
    """One imate Hutchinson run of max(budgets) samples; smaller budgets are its prefixes.

    Hutchinson with budget m is the mean of the first m samples, so one run
    gives all budgets with the probes imate would draw anyway.
    """
    mmax = max(budgets)
    (val, info), dt = timed(lambda: imate.traceinv(
        identity, B=Bsp, method="hutchinson", min_num_samples=mmax, max_num_samples=mmax,
        error_rtol=0.0, error_atol=0.0, orthogonalize=False, seed=seed,
        num_threads=threads, return_info=True))
    # i.i.d. samples: any m of them form an m-probe Hutchinson run (NaN = outlier dropped)
    samples = np.asarray(info["convergence"]["samples"], dtype=float)
    out = {m: float(np.nanmean(samples[:m])) for m in budgets}
    out[mmax] = float(val)  # imate's own answer (it may drop outliers)
    return out, dt


# ----------------------------------------------------------------------
# block probing speed
# ----------------------------------------------------------------------


def block_speedup(A, xp, n, num_probes=300, repeats=2):
    """Hutchinson with one matmat of 300 probes vs the same probes as 300 matvec calls."""
    rs = matfree._backend.random_state(0, xp)
    Z = rs.rademacher((n, num_probes), A.dtype)
    t_block, t_loop, t_narrow = math.inf, math.inf, math.inf
    for _ in range(repeats):
        _, dt = timed(lambda: trace(A, method="hutchinson", num_matvecs=num_probes,
                                    block_size=num_probes, use_exact=False, rng=0))
        t_block = min(t_block, dt)

        def loop():
            total = 0.0
            for j in range(num_probes):
                z = Z[:, j]
                total += float(xp.vecdot(z, A.matvec(z)))
            return total / num_probes

        _, dt = timed(loop)
        t_loop = min(t_loop, dt)
        _, dt = timed(lambda: trace(A, method="hutchinson", num_matvecs=num_probes,
                                    block_size=1, use_exact=False, rng=0))
        t_narrow = min(t_narrow, dt)
    return t_block, t_loop, t_narrow


# ----------------------------------------------------------------------
# main
# ----------------------------------------------------------------------


def median_interval(x, level=0.95):
    """Median of ``x`` and a distribution-free ``level`` interval for it (order statistics).

    The number of samples below the true median is Binomial(T, 1/2), so
    ``[x_(l), x_(u)]`` with ``l``, ``u`` its lower and upper quantiles covers
    the median with probability at least ``level`` (about ``level`` for T >= 30).
    """
    x = np.sort(np.asarray(x, dtype=float))
    T = len(x)
    lo = int(stats.binom.ppf((1 - level) / 2, T, 0.5))
    hi = int(stats.binom.isf((1 - level) / 2, T, 0.5))
    lo, hi = max(lo, 1), min(hi, T - 1)
    return float(np.median(x)), float(x[lo - 1]), float(x[hi])


def verdict(x, h):
    """``yes`` / ``tie`` / ``NO`` for "XTrace <= Hutch++" from two (median, lo, hi)."""
    if x[0] <= h[0]:
        return "yes"
    return "tie" if x[1] <= h[2] else "NO"


def fmt_med(t):
    return f"{t[0]:8.2e} [{t[1]:8.2e}, {t[2]:8.2e}]"


def fmt_err(x):
    return f"{x:9.2e}" if math.isfinite(x) else "        -"


def slope(errs):
    ms = [m for m in BUDGETS if m in errs and errs[m] > 0]
    if len(ms) < 2:
        return math.nan
    x, y = np.log(ms), np.log([errs[m] for m in ms])
    return float(np.polyfit(x, y, 1)[0])


def compare_xtrace_hutchpp(spectra, rels, with_peers, T, T_peer, with_ours):
    """The issue's target table: XTrace <= Hutch++ at the same budget, with median intervals."""
    pairs = []
    if with_ours:
        pairs.append(("matfree", "mf:xtrace", "mf:hutchpp", T))
    if with_peers:
        pairs.append(("curvlinops", "cl:xtrace", "cl:hutchpp", T_peer))
    for label, xc, hc, trials in pairs:
        print(f"\n## XTrace <= Hutch++? ({label}, {trials} trials; Hutch++ budget rounded "
              "down to a multiple of 3): median relative error [95% interval for the median]")
        print(f"{'spectrum':8s} {'budget':>6s} {'XTrace':>32s} {'Hutch++':>32s} "
              f"{'ratio':>6s}  XTrace <= Hutch++?")
        for name in spectra:
            for m in BUDGETS:
                x = median_interval(rels[(name, xc)][m])
                h = median_interval(rels[(name, hc)][m])
                ratio = x[0] / h[0] if h[0] > 0 else (1.0 if x[0] == 0 else math.inf)
                print(f"{name:8s} {m:6d} {fmt_med(x):>32s} {fmt_med(h):>32s} {ratio:6.2f}  "
                      f"{verdict(x, h)}")


def print_coverage(spectra, ours, coverage, T):
    """Share of trials whose 95% interval holds the truth: normal / Student-t (XTrace family)."""
    half = 1.959964 * math.sqrt(0.95 * 0.05 / T)
    print(f"\n## coverage of the 95% interval over {T} trials (normal z=1.96 / Student t "
          f"with k-1 dof for the XTrace family; binomial 95% spread around 0.95: "
          f"+-{half:.2f})")
    print(f"{'spectrum':8s} {'budget':>6s} " + " ".join(f"{m:>13s}" for m in ours))
    for name in spectra:
        for m in BUDGETS:
            cells = []
            for method in ours:
                z, t = coverage[(name, method)][m]
                cells.append(f"{z:.2f}/{t:.2f}" if method.startswith("x") else f"{z:.2f}")
            print(f"{name:8s} {m:6d} " + " ".join(f"{c:>13s}" for c in cells))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--trials", type=int, default=30, help="seeded trials per estimator")
    ap.add_argument("--peer-trials", type=int, default=None,
                    help="trials for curvlinops (default: --trials)")
    ap.add_argument("--imate-trials", type=int, default=1, help="imate is slow here (sparse B)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--spectra", default=",".join(SPECTRA),
                    help=f"comma-separated subset of {', '.join(SPECTRA)}")
    ap.add_argument("--methods", default=",".join(OURS),
                    help=f"comma-separated subset of matfree's {', '.join(OURS)}")
    ap.add_argument("--no-block-test", action="store_true", help="skip the matmat/matvec timing")
    args = ap.parse_args(argv)
    n, T = args.n, args.trials
    T_peer = T if args.peer_trials is None else min(args.peer_trials, T)
    spectra = [s for s in args.spectra.split(",") if s]
    ours = [m for m in args.methods.split(",") if m]
    for s in spectra:
        spectrum(s, 1)  # unknown names fail here
    if not set(ours) <= set(OURS):
        ap.error(f"--methods: unknown method in {ours}; expected a subset of {OURS}")

    limits = threadpool_limits(limits=args.threads)
    cl, cl_note = (None, "skipped") if args.no_peers else load_curvlinops()
    imate, im_note = (None, "skipped") if args.no_peers else load_imate()
    if cl is not None:
        import torch

        torch.set_num_threads(args.threads)
    print(f"# trace estimators, n={n}, budgets {BUDGETS}, {T} trials (curvlinops {T_peer}, "
          f"imate {args.imate_trials}), BLAS/torch threads pinned to {args.threads}")
    print(f"# load average {os.getloadavg()}")
    print(f"# matfree {matfree.__version__} from {matfree.__file__}; numpy {np.__version__}; "
          f"{cl_note}; {im_note}")
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print("# the machine is busy (load average above half the cores): timings are noisy")

    t_setup = time.perf_counter()
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    print(f"# random orthogonal basis: {time.perf_counter() - t_setup:.1f} s")

    columns = [f"mf:{m}" for m in ours]
    if cl is not None:
        columns += [f"cl:{m}" for m in CURVLINOPS]
    if imate is not None:
        columns += ["imate:hutchinson"]
    errors = {}  # (spectrum, column) -> {budget: median rel err}
    rels = {}  # (spectrum, column) -> {budget: [rel err per trial]}
    coverage = {}  # (spectrum, method) -> {budget: (normal, student-t) coverage}
    times = {c: {m: [] for m in BUDGETS} for c in columns}

    for name in spectra:
        lam = spectrum(name, n)
        M = (Q * lam) @ Q.T
        M = (M + M.T) / 2
        truth = float(np.trace(M))
        A = matfree.Dense(M, symmetric=True)
        rel = {c: {m: [] for m in BUDGETS} for c in columns}
        hits = {(meth, m): [] for meth in ours for m in BUDGETS}  # (normal, t) covered?
        for m in BUDGETS:
            for t in range(T):
                seed = 1000 * m + t
                for method in ours:
                    val, se, dof, dt = run_ours(A, method, m, seed)
                    rel[f"mf:{method}"][m].append(abs(val - truth) / abs(truth))
                    times[f"mf:{method}"][m].append(dt)
                    # an error at rounding level counts as covered (XTrace is exact on "flat")
                    err = max(abs(val - truth) - ROUNDING * abs(truth), 0.0)
                    q = stats.t.ppf(0.975, dof) if dof else 1.959964
                    hits[(method, m)].append((err <= 1.959964 * se, err <= q * se))
                if cl is not None and t < T_peer:
                    import torch

                    Mt = torch.from_numpy(M)
                    for method in CURVLINOPS:
                        val, dt = run_curvlinops(cl, Mt, method, m, seed)
                        rel[f"cl:{method}"][m].append(abs(val - truth) / abs(truth))
                        times[f"cl:{method}"][m].append(dt)
        if imate is not None:
            import scipy.sparse as sp

            Bsp = sp.csr_matrix(M)
            identity = sp.identity(n, format="csr")
            for t in range(args.imate_trials):
                vals, dt = run_imate(imate, identity, Bsp, BUDGETS, 7 + t, args.threads)
                for m in BUDGETS:
                    rel["imate:hutchinson"][m].append(abs(vals[m] - truth) / abs(truth))
                times["imate:hutchinson"][max(BUDGETS)].append(dt)
        for c in columns:
            errors[(name, c)] = {m: statistics.median(v) for m, v in rel[c].items() if v}
            rels[(name, c)] = rel[c]
        for (method, m), h in hits.items():
            coverage.setdefault((name, method), {})[m] = tuple(np.mean(h, axis=0))
        print(f"\n## spectrum {name}: tr(A) = {truth:.6g}; median relative error")
        print("budget " + " ".join(f"{c:>13s}" for c in columns))
        for m in BUDGETS:
            row = [errors[(name, c)].get(m, math.nan) for c in columns]
            print(f"{m:6d} " + " ".join(f"{fmt_err(x):>13s}" for x in row))
        sys.stdout.flush()

    print("\n## fitted slope of log(median rel. error) vs log(matvecs) "
          "(Hutchinson theory -0.5; Hutch++ -1 on decaying spectra)")
    print("spectrum " + " ".join(f"{c:>13s}" for c in columns))
    for name in spectra:
        print(f"{name:8s} " + " ".join(f"{slope(errors[(name, c)]):13.2f}" for c in columns))

    compare_xtrace_hutchpp(spectra, rels, cl is not None and set(ours) >= {"xtrace", "hutchpp"},
                           T, T_peer, set(ours) >= {"xtrace", "hutchpp"})
    print_coverage(spectra, ours, coverage, T)

    print("\n## median wall time per estimate [ms] (all spectra; imate: one 300-sample run)")
    print("budget " + " ".join(f"{c:>13s}" for c in columns))
    for m in BUDGETS:
        row = []
        for c in columns:
            v = times[c][m]
            row.append(f"{1e3 * statistics.median(v):13.1f}" if v else f"{'-':>13s}")
        print(f"{m:6d} " + " ".join(row))

    if args.no_block_test:
        print(f"\n# total {time.perf_counter() - t_setup:.0f} s")
        limits.restore_original_limits()
        return
    print("\n## block probing: 300 Hutchinson probes on a dense n=%d operator (best of 2)" % n)
    M = (Q * spectrum("i^-1", n)) @ Q.T
    backends = [("numpy", matfree.Dense(M, symmetric=True))]
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(args.threads)
        backends.append(("torch", matfree.Dense(torch.from_numpy(M), symmetric=True)))
    for label, A in backends:
        t_block, t_loop, t_narrow = block_speedup(A, A.xp, n)
        print(f"{label:6s} one matmat of 300: {t_block:7.3f} s | 300 matvec calls: "
              f"{t_loop:7.3f} s | 300 one-column matmats: {t_narrow:7.3f} s | "
              f"speed-up matmat vs matvec loop: {t_loop / t_block:5.1f}x")
    print(f"\n# total {time.perf_counter() - t_setup:.0f} s")
    limits.restore_original_limits()


if __name__ == "__main__":
    main()
