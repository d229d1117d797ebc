"""The command line: ``matfree analyze [SOURCE]`` (also ``python -m matfree``).

Prints a report on a symmetric matrix or Hessian: size, trace (estimate ±
stderr, and exact when cheap), log-determinant, numerical rank, top
eigenvalues, and a damped CG solve, each with the products it spent.
SOURCE is a ``.npy`` (dense), ``.npz`` (SciPy sparse, ``scipy.sparse.save_npz``)
or Matrix Market ``.mtx`` file; without SOURCE the built-in problem is the
Hessian of softmax regression on scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import os
import sys
import time

import numpy as np

import matfree
from matfree import _backend as B

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A problem with the user's input, reported in one line with exit code 2."""


# ---------------------------------------------------------------- sources


def _load_matrix(path, dtype):
    """A matfree operator from a matrix file (dense .npy, sparse .npz, Matrix Market .mtx)."""
    import scipy.io
    import scipy.sparse as sp

    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            M = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            M = sp.load_npz(path)
        elif ext == ".mtx":
            M = scipy.io.mmread(path)
        else:
            raise InputError(f"{path}: unknown file type {ext!r}; expected .npy, .npz or .mtx")
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is the user's file
        raise InputError(f"{path}: cannot read it as {ext}: {str(err).splitlines()[0]}") from None
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise InputError(f"{path}: expected a square matrix, got shape {tuple(M.shape)}")
    if M.shape[0] == 0:
        raise InputError(f"{path}: the matrix is empty")
    if M.dtype.kind not in "fiu" :
        raise InputError(f"{path}: expected a real matrix, got dtype {M.dtype}")
    M = M.astype(dtype)
    values = M.data if sp.issparse(M) else M
    if not np.all(np.isfinite(values)):
        raise InputError(f"{path}: the matrix has NaN or Inf entries")
    # symmetric up to rounding is accepted (and symmetrised); anything else is refused
    skew = abs(M - M.T).max() if sp.issparse(M) else np.max(np.abs(M - M.T))
    scale = abs(M).max() if sp.issparse(M) else np.max(np.abs(M))
    if skew > 1e3 * np.finfo(dtype).eps * max(scale, np.finfo(dtype).tiny):
        raise InputError(
            f"{path}: the matrix is not symmetric (max |M - Mᵀ| = {skew:.3g}); "
            "matfree analyze needs a symmetric matrix"
        )
    M = (M + M.T) / 2
    if sp.issparse(M):
        A = matfree.Sparse(M.tocsr(), symmetric=True)
    else:
        A = matfree.Dense(np.ascontiguousarray(M, dtype=dtype), symmetric=True)
    return A, os.path.basename(path)


def _builtin(dtype):
    from matfree._problems import digits_softmax

    try:
        prob = digits_softmax()
    except ImportError as err:
        raise InputError(str(err)) from None
    w = prob.fit()
    w_t = w.astype(dtype)
    A = matfree.from_hvp(
        lambda v: prob.hvp(w, v.astype(np.float64)).astype(dtype),
        like=w_t,
        batched=lambda V: prob.hvp(w, V.astype(np.float64)).astype(dtype),
        positive_semidefinite=True,
    )
    return A, f"Hessian of {prob.name} (n = {prob.size})"


def _opaque(A):
    """Hide what a structured operator knows, so the estimators are shown at work."""
    return matfree.from_hvp(
        A.matvec,
        like=A.xp.zeros(A.shape[0], dtype=A.dtype),
        batched=A.matmat,
        positive_semidefinite=A.positive_semidefinite,
        check_finite=False,
    )


# ----------------------------------------------------------------- report


def _progress_kw(fn, progress):
    """``{"progress": True}`` if a bar is wanted and ``fn`` takes a ``progress`` parameter, else ``{}``.

    The solvers, eigsh and the estimators gain ``progress=`` independently;
    asking each callee's signature keeps the command line working with
    those that do not have it yet (they then run without a bar).
    """
    if not progress:
        return {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return {}
    return {"progress": True} if "progress" in params else {}


def _estimate_row(name, est, exact=None):
    row = {
        "quantity": name,
        "value": float(est.value),
        "stderr": float(est.stderr),
        "num_matvecs": int(est.num_matvecs),
        "method": est.method,
        "status": est.status,
    }
    if exact is not None:
        row["exact"] = float(exact)
    return row


def analyze(A, label, args, progress):
    """Run every analysis on operator ``A``; returns the report as a dict."""
    from matfree.lanczos import eigsh
    from matfree.solvers import cg
    from matfree.spectral import SLQ

    n = A.shape[0]
    report = {"source": label, "n": n, "dtype": B.dtype_name(A.dtype), "seed": args.seed}
    small = n <= args.exact_limit
    dense = None
    if small:
        dense = B.to_numpy(A.todense()).astype(np.float64)
        dense = (dense + dense.T) / 2
        evals = np.linalg.eigvalsh(dense)
    H = _opaque(A)
    rows = []
    t0 = time.perf_counter()

    est = matfree.trace(
        H, method="xtrace", num_matvecs=args.trace_matvecs, rng=args.seed,
        **_progress_kw(matfree.trace, progress),
    )
    rows.append(_estimate_row("trace", est, np.trace(dense) if small else None))

    slq = SLQ(
        H, num_probes=args.probes, num_steps=args.steps, rng=args.seed, **_progress_kw(SLQ, progress)
    )
    try:
        ld = slq.logdet()
        rows.append(_estimate_row("logdet", ld, np.sum(np.log(evals)) if small and evals[0] > 0 else None))
    except (ValueError, ArithmeticError) as err:
        rows.append({"quantity": "logdet", "error": str(err)})
    rk = slq.rank(rtol=args.rank_rtol)
    row = _estimate_row("numerical rank", rk)
    row["threshold"] = float(rk.info["threshold"])
    if small:
        row["exact"] = float(np.sum(evals > row["threshold"]))
    rows.append(row)
    report["estimates"] = rows

    k = min(args.k, n - 1)
    eig = eigsh(H, k=k, which="LA", tol=args.tol, rng=args.seed, **_progress_kw(eigsh, progress))
    report["top_eigenvalues"] = {
        "values": [float(v) for v in np.sort(B.to_numpy(eig.eigenvalues))[::-1]],
        "num_matvecs": int(eig.num_matvecs),
        "converged": bool(eig.converged),
    }
    if small:
        report["top_eigenvalues"]["exact"] = [float(v) for v in evals[::-1][:k]]

    xp = H.xp
    b = xp.asarray(np.random.default_rng(args.seed).standard_normal(n), dtype=H.dtype)
    sol = cg(H, b, damping=args.damping, rtol=args.rtol, **_progress_kw(cg, progress))
    res = {
        "damping": args.damping,
        "rtol": args.rtol,
        "num_iters": int(sol.num_iters),
        "num_matvecs": int(sol.num_matvecs),
        "status": sol.status,
        "converged": bool(np.all(B.to_numpy(xp.asarray(sol.converged)))),
    }
    if small:
        x_exact = np.linalg.solve(dense + args.damping * np.eye(n), B.to_numpy(b).astype(np.float64))
        res["relative_error"] = float(
            np.linalg.norm(B.to_numpy(sol.x) - x_exact) / np.linalg.norm(x_exact)
        )
    report["damped_cg"] = res
    report["seconds"] = time.perf_counter() - t0

    if args.plot:
        dens = slq.density()
        ax = dens.plot()
        ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        report["plot"] = args.plot
    return report


def _print_report(r, out):
    w = out.write
    w(f"matfree analyze: {r['source']}\n")
    w(f"  size n = {r['n']}, dtype {r['dtype']}, seed {r['seed']}\n\n")
    w(f"  {'quantity':<16}{'estimate':>14}{'± stderr':>12}{'exact':>14}{'matvecs':>9}  method\n")
    for row in r["estimates"]:
        if "error" in row:
            w(f"  {row['quantity']:<16}{'-':>14}  ({row['error']})\n")
            continue
        exact = f"{row['exact']:14.6g}" if "exact" in row else f"{'-':>14}"
        w(
            f"  {row['quantity']:<16}{row['value']:14.6g}{row['stderr']:12.2g}{exact}"
            f"{row['num_matvecs']:9d}  {row['method']}\n"
        )
    te = r["top_eigenvalues"]
    vals = ", ".join(f"{v:.6g}" for v in te["values"])
    w(f"\n  top {len(te['values'])} eigenvalues (Lanczos, {te['num_matvecs']} matvecs"
      f"{'' if te['converged'] else ', NOT converged'}): {vals}\n")
    if "exact" in te:
        w("  exact:                                  " + ", ".join(f"{v:.6g}" for v in te["exact"]) + "\n")
    cg = r["damped_cg"]
    line = (
        f"\n  damped CG (H + {cg['damping']:g} I) x = b (random b) to rtol {cg['rtol']:g}: "
        f"{cg['num_iters']} iterations, {cg['num_matvecs']} matvecs, status {cg['status']}"
    )
    if "relative_error" in cg:
        line += f", error vs dense solve {cg['relative_error']:.2e}"
    w(line + "\n")
    if "plot" in r:
        w(f"\n  spectral density written to {r['plot']}\n")
    w(f"\n  total {r['seconds']:.2f} s\n")


def _parser():
    p = argparse.ArgumentParser(prog="matfree", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    a = sub.add_parser("analyze", help="report on a symmetric matrix or the built-in Hessian")
    a.add_argument("source", nargs="?", help=".npy, .npz (scipy sparse) or .mtx file; omit for the built-in problem")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    a.add_argument("--plot", metavar="PNG", help="write the spectral density figure here")
    a.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    a.add_argument("--trace-matvecs", type=int, default=60, help="budget of the trace estimate")
    a.add_argument("--probes", type=int, default=20, help="SLQ probe vectors")
    a.add_argument("--steps", type=int, default=40, help="Lanczos steps per SLQ probe")
    a.add_argument("-k", type=int, default=5, help="number of top eigenvalues")
    a.add_argument("--tol", type=float, default=1e-8, help="eigenpair tolerance")
    a.add_argument("--damping", type=float, default=1e-3, help="damping of the CG solve")
    a.add_argument("--rtol", type=float, default=1e-8, help="CG relative tolerance")
    a.add_argument("--rank-rtol", type=float, default=None,
                   help="rank threshold relative to the largest eigenvalue (default: the widest spectral gap)")
    a.add_argument("--exact-limit", type=int, default=3000, help="compute exact answers up to this n")
    prog = a.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show tqdm progress bars for the long steps (eigenvalues, SLQ, trace, "
                           "CG); default: on when stderr is a terminal, tqdm is installed and not --json")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv=None):
    """Entry point of ``matfree`` and ``python -m matfree``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["analyze", *([] if argv is None else argv)])
    for name in ("trace_matvecs", "probes", "steps", "k"):
        if getattr(args, name) < 1:
            print(f"matfree: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return EXIT_BAD_INPUT
    progress = _want_progress(args)
    if progress is None:
        print(
            "matfree: error: --progress needs tqdm; install it with pip install 'matfree-hessian[progress]'",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    dtype = np.dtype(args.dtype)
    try:
        A, label = _load_matrix(args.source, dtype) if args.source else _builtin(dtype)
        report = analyze(A, label, args, progress)
    except InputError as err:
        print(f"matfree: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
    else:
        _print_report(report, sys.stdout)
    return 0


def _want_progress(args):
    """Whether to show bars: ``--progress``/``--no-progress``, else on a terminal without ``--json``.

    ``None`` when ``--progress`` was asked for but tqdm is missing; by default
    the bars are silently left out then.
    """
    have_tqdm = importlib.util.find_spec("tqdm") is not None
    if args.progress is not None:
        return (True if have_tqdm else None) if args.progress else False
    return bool(have_tqdm and not args.json and _isatty(sys.stderr))


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
