"""Gaussian-process log marginal likelihood without factorising the kernel matrix.

The log marginal likelihood of GP regression with kernel matrix ``K`` (an RBF
kernel plus noise ``σ² I``) is

    log p(y) = -½ yᵀK⁻¹y - ½ log det K - (n/2) log 2π.

Both hard terms are computed here from products ``K v`` only:

* ``log det K`` by stochastic Lanczos quadrature (:class:`matfree.spectral.SLQ`),
  printed with its standard error beside ``numpy.linalg.slogdet``;
* ``K⁻¹y`` by conjugate gradients (:func:`matfree.solvers.cg`), once plain and
  once preconditioned with a randomized Nyström preconditioner
  (:func:`matfree.precond.nystrom`), with the iteration counts side by side
  and the answer beside ``numpy.linalg.solve``.

The data is scikit-learn's diabetes set (442 patients, 10 standardised
features, shipped with scikit-learn: no download).  The hyperparameters
(signal variance, lengthscale, noise) are fitted by scikit-learn's
``GaussianProcessRegressor``, whose own (Cholesky) log marginal likelihood is
the reference for the total.  The script then profiles the log marginal
likelihood over the lengthscale, estimate ± 2 stderr beside the exact curve.

In a real application the kernel product would be computed on the fly (in
blocks, or by a library such as KeOps) and never stored; here the matrix is
formed once so that the dense reference is available.

Run::

    python examples/gp_logdet.py               # full: n = 442, ~10 s
    python examples/gp_logdet.py --fast        # CI: n = 150, 3 lengthscales
    python examples/gp_logdet.py --out figs    # write the figures to ./figs

Figures (PNG) go to ``--out DIR``; by default a fresh temporary directory
(printed at the end), so running an example never writes into the working
directory.  The script exits with status 1 if an estimate disagrees with its
dense reference by more than the printed allowance.
"""

import math
import sys
import time

import numpy as np

from _common import Table, exit_status, limit_threads, output_dir, parse_args, pyplot, save_figure

SEED = 20261123
TABLE = Table(name_width=36, estimate_width=26, reference_width=18)


# -------------------------------------------------------------- the problem
def load_data(n):
    """The diabetes data: standardised features and target, the first ``n`` rows."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = X[:n], y[:n]
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    return X, y


def sq_distances(X):
    """Matrix of squared Euclidean distances between the rows of X."""
    sq = np.sum(X * X, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * X @ X.T, 0.0)


def kernel_operator(D2, signal, lengthscale):
    """The noise-free RBF kernel ``s² exp(-d²/2ℓ²)`` as a matfree operator (PSD)."""
    import matfree

    Kf = signal * np.exp(-0.5 * D2 / lengthscale**2)
    op = matfree.from_hvp(
        lambda v: Kf @ v,
        batched=lambda V: Kf @ V,
        size=Kf.shape[0],
        positive_semidefinite=True,
    )
    return op, Kf


def fit_hyperparameters(X, y):
    """Signal variance, lengthscale and noise variance maximising the evidence (scikit-learn)."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(3.0, (1e-1, 1e2)) + WhiteKernel(
        0.5, (1e-3, 1e1)
    )
    gpr = GaussianProcessRegressor(kernel, normalize_y=False, random_state=0).fit(X, y)
    k = gpr.kernel_
    signal, lengthscale, noise = k.k1.k1.constant_value, k.k1.k2.length_scale, k.k2.noise_level
    return (signal, lengthscale, noise), gpr


def estimate_log_ml(Kop, y, noise, args, rng):
    """log p(y) from products with K only: SLQ for log det, (Nyström-P)CG for K⁻¹y."""
    import matfree
    from matfree.precond import nystrom
    from matfree.solvers import cg
    from matfree.spectral import SLQ

    n = y.shape[0]
    A = matfree.damped(Kop, noise)  # K = K_f + σ² I, lazily
    slq = SLQ(A, num_probes=args.probes, num_steps=args.steps, rng=rng)
    logdet = slq.logdet()
    M = nystrom(Kop, rank=args.rank, damping=noise, rng=rng)
    sol = cg(Kop, y, damping=noise, M=M, rtol=args.rtol)
    # true residual, one more product: ‖x - K⁻¹y‖ <= ‖y - Kx‖ / σ² because λ_min(K) >= σ²
    resid = float(np.linalg.norm(y - A @ sol.x))
    fit = float(y @ sol.x)
    fit_bound = float(np.linalg.norm(y)) * resid / noise
    value = -0.5 * fit - 0.5 * float(logdet.value) - 0.5 * n * math.log(2 * math.pi)
    return dict(
        value=value, logdet=logdet, fit=fit, fit_bound=fit_bound, resid=resid, solve=sol, M=M,
        num_matvecs=logdet.num_matvecs + sol.num_matvecs + M.setup_matvecs + 1,
    )


def exact_log_ml(Kf, y, noise):
    """Dense reference: slogdet and solve of the formed matrix."""
    K = Kf + noise * np.eye(Kf.shape[0])
    sign, logdet = np.linalg.slogdet(K)
    assert sign > 0
    alpha = np.linalg.solve(K, y)
    fit = float(y @ alpha)
    n = y.shape[0]
    return dict(value=-0.5 * fit - 0.5 * logdet - 0.5 * n * math.log(2 * math.pi),
                logdet=float(logdet), fit=fit, alpha=alpha)


# -------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(__doc__, argv, fast_help="CI mode: n = 150, 3 lengthscales",
                      out_help="directory for the PNG figures (default: a new temporary directory)")
    limit_threads(args.threads)
    from matfree.solvers import cg

    n = 150 if args.fast else 442
    args.probes, args.steps = (30, 30) if args.fast else (128, 30)
    args.rank, args.rtol = (30 if args.fast else 60), 1e-8
    rng = np.random.default_rng(SEED)
    t_start = time.perf_counter()

    X, y = load_data(n)
    D2 = sq_distances(X)
    (signal, ell, noise), gpr = fit_hyperparameters(X, y)
    print(f"GP regression on the diabetes data: n = {n}, d = {X.shape[1]}")
    print(f"hyperparameters fitted by scikit-learn: signal variance {signal:.4g}, "
          f"lengthscale {ell:.4g}, noise variance {noise:.4g}")

    Kop, Kf = kernel_operator(D2, signal, ell)
    est = estimate_log_ml(Kop, y, noise, args, rng)
    ref = exact_log_ml(Kf, y, noise)
    plain = cg(Kop, y, damping=noise, rtol=args.rtol)
    eig = np.linalg.eigvalsh(Kf + noise * np.eye(n))
    ld = est["logdet"]
    print(f"\ncondition number of K: {eig[-1] / eig[0]:.3g}")
    print(f"SLQ: {args.probes} probes x {args.steps} Lanczos steps = {ld.num_matvecs} products with K")
    print(f"CG to rtol {args.rtol:g}: plain {plain.num_iters} iterations, "
          f"Nyström-preconditioned (rank {args.rank}, {est['M'].setup_matvecs} products to build) "
          f"{est['solve'].num_iters} iterations\n")
    TABLE.header()
    ok = True
    # SLQ: unbiased up to the quadrature error, which decays like ρ^(-2m) (negligible
    # at these m for κ ~ 1e3); 4 standard errors cover the sampling error
    ok &= TABLE.check("log det K", float(ld.value), ref["logdet"], 4 * float(ld.stderr), float(ld.stderr))
    ok &= TABLE.check("yᵀK⁻¹y (Nyström-PCG)", est["fit"], ref["fit"], est["fit_bound"])
    x_err = float(np.linalg.norm(est["solve"].x - ref["alpha"]))
    ok &= TABLE.check("‖x_pcg - K⁻¹y‖", x_err, 0.0, est["resid"] / noise)
    # the total against scikit-learn's Cholesky-based value (independent code); its
    # default jitter α = 1e-10 on the diagonal moves log det by <= α n/σ² and the
    # data fit by <= α ‖y‖²/σ⁴
    sk_value = float(gpr.log_marginal_likelihood_value_)
    jitter = 0.5 * 1e-10 * (n / noise + float(y @ y) / noise**2)
    ok &= TABLE.check("log p(y) vs scikit-learn", est["value"], sk_value,
                      0.5 * 4 * float(ld.stderr) + 0.5 * est["fit_bound"] + jitter, 0.5 * float(ld.stderr))
    ok &= TABLE.check("log p(y) vs numpy (slogdet, solve)", est["value"], ref["value"],
                      0.5 * 4 * float(ld.stderr) + 0.5 * est["fit_bound"], 0.5 * float(ld.stderr))

    # profile over the lengthscale
    factors = [0.5, 1.0, 2.0] if args.fast else [0.4, 0.63, 1.0, 1.6, 2.5]
    ells = [ell * f for f in factors]
    print("\nlog marginal likelihood over the lengthscale (signal and noise fixed; "
          "the same probes at every lengthscale):")
    print(f"  {'lengthscale':>11s} {'SLQ + PCG':>22s} {'exact':>14s} {'CG its':>7s} {'PCG its':>8s} {'products':>9s}")
    prof = []
    for e in ells:
        Kop_e, Kf_e = kernel_operator(D2, signal, e)
        # common random numbers: the same probes at every lengthscale, so the errors
        # are correlated and the estimated curve is smooth (its differences are accurate)
        est_e = estimate_log_ml(Kop_e, y, noise, args, np.random.default_rng(SEED + 1))
        ref_e = exact_log_ml(Kf_e, y, noise)
        cg_plain = cg(Kop_e, y, damping=noise, rtol=args.rtol)
        se = 0.5 * float(est_e["logdet"].stderr)
        prof.append((e, est_e["value"], se, ref_e["value"], cg_plain.num_iters, est_e["solve"].num_iters))
        print(f"  {e:11.4g} {est_e['value']:13.4f} ± {se:6.3f} {ref_e['value']:14.4f} "
              f"{cg_plain.num_iters:7d} {est_e['solve'].num_iters:8d} {est_e['num_matvecs']:9d}")
        ok &= abs(est_e["value"] - ref_e["value"]) <= 4 * se + 0.5 * est_e["fit_bound"]

    out = output_dir(args.out, "gp")
    _plot(out, prof, plain, est["solve"], args, n)
    print(f"\nfigures written to {out}; total time {time.perf_counter() - t_start:.1f} s")
    return exit_status(ok)


def _plot(out, prof, plain, pcg, args, n):
    plt = pyplot(out, "figures")
    if plt is None:
        return
    e, v, se, ref, _, _ = (np.array(c) for c in zip(*prof))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(e, ref, "k-", lw=1.5, label="exact (Cholesky)")
    ax.errorbar(e, v, yerr=2 * se, fmt="o", color="C0", capsize=3,
                label=f"SLQ + Nyström-PCG (±2 stderr; the same {args.probes} probes at each ℓ)")
    ax.set_xscale("log")
    ax.set_xticks(e, [f"{t:.3g}" for t in e])
    ax.minorticks_off()
    ax.set_xlabel("RBF lengthscale ℓ")
    ax.set_ylabel("log marginal likelihood  log p(y)")
    ax.set_title(f"GP evidence on the diabetes data (n = {n})")
    ax.legend()
    save_figure(fig, out, "gp_log_marginal_likelihood.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for res, label in [(plain, "CG"), (pcg, f"Nyström-PCG (rank {args.rank})")]:
        r = np.asarray(res.residual_norms, dtype=float).reshape(len(res.residual_norms), -1)[:, 0]
        ax.semilogy(np.arange(r.size), r / r[0], label=f"{label}: {res.num_iters} iterations")
    ax.axhline(args.rtol, color="gray", ls=":", label=f"rtol = {args.rtol:g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative residual ‖y - Kx‖ / ‖y‖")
    ax.set_title("Solving K x = y at the fitted hyperparameters")
    ax.legend()
    save_figure(fig, out, "gp_cg_residuals.png")


if __name__ == "__main__":
    sys.exit(main())
