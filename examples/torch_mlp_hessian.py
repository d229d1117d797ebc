"""Hessian spectrum of a small PyTorch network (the PyHessian analysis, through ``from_torch``).

A multilayer perceptron (64 → h → 10, tanh) is trained on scikit-learn's
handwritten digits (1797 images of 8x8 pixels, shipped with scikit-learn).
At the trained weights, :func:`matfree.from_torch` turns the training loss
into a Hessian operator on the flat parameter vector (reverse-over-reverse
products on the kept gradient graph, batched with ``torch.func.vmap``), and matfree answers the three
questions PyHessian (Yao et al. 2020, arXiv:1912.07145) asks of a network:

* the top eigenvalues (:func:`matfree.lanczos.eigsh`, thick-restart Lanczos),
* the trace (:func:`matfree.trace.trace`, XTrace and plain Hutchinson with the
  same budget of products),
* the spectral density (:func:`matfree.spectral.spectral_density`, stochastic
  Lanczos quadrature), plotted on a log scale.

The network is kept small (about 1800 parameters) so that the dense Hessian
can be formed for comparison: row by row with reverse-over-reverse
differentiation (``torch.func.jacrev`` of the gradient, an independent code
path), then ``torch.linalg.eigvalsh``.  Every estimate is printed beside its
dense reference.  The dense Hessian grows with the square of the number of
parameters; the operator does not.

Run::

    python examples/torch_mlp_hessian.py              # h = 24: 1810 parameters
    python examples/torch_mlp_hessian.py --fast       # CI: h = 8, 500 images
    python examples/torch_mlp_hessian.py --out figs   # write the figure to ./figs

Figures (PNG) go to ``--out DIR``; by default a fresh temporary directory
(printed at the end).  The script exits with status 1 if an estimate disagrees
with its dense reference by more than the printed allowance.
"""

import sys
import time

import numpy as np

from _common import Table, exit_status, limit_threads, output_dir, parse_args, pyplot, save_figure, smoothed_density

SEED = 20261123
TABLE = Table(name_width=30, estimate_width=26, reference_width=18)


# -------------------------------------------------------------- the model
def load_digits_torch(num_images):
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X[:num_images] / 16.0, y[:num_images]
    return torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y)


def train_mlp(X, y, hidden, steps):
    """Full-batch Adam on the mean cross-entropy; returns the model."""
    import torch

    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10)
    ).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
    return model


def dense_hessian(H, loss_of_flat):
    """The full Hessian by reverse-over-reverse (rows of the Jacobian of the gradient)."""
    from torch.func import grad, jacrev

    Hd = jacrev(grad(loss_of_flat), chunk_size=256)(H.x0)
    return 0.5 * (Hd + Hd.T)


# -------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(__doc__, argv, fast_help="CI mode: h = 8, 500 images",
                      threads_help="torch and BLAS threads (default 1)")

    import torch
    from torch.func import functional_call

    import matfree
    from matfree.lanczos import eigsh
    from matfree.spectral import spectral_density
    from matfree.trace import trace

    limit_threads(args.threads, framework="torch")
    hidden, num_images, steps = (8, 500, 150) if args.fast else (24, 1797, 400)
    k, budget = (3, 60) if args.fast else (5, 200)
    probes, lanczos_steps = (10, 40) if args.fast else (16, 60)
    t_start = time.perf_counter()

    X, y = load_digits_torch(num_images)
    model = train_mlp(X, y, hidden, steps)
    params = {name: p.detach() for name, p in model.named_parameters()}
    with torch.no_grad():
        logits = model(X)
        loss0 = float(torch.nn.functional.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).double().mean())

    def loss_fn(p):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (X,)), y)

    H = matfree.from_torch(loss_fn, params)
    n = H.shape[0]
    print(f"MLP 64 -> {hidden} -> 10 (tanh) on {num_images} digits images: {n} parameters")
    print(f"trained by full-batch Adam ({steps} steps): loss {loss0:.4f}, training accuracy {acc:.3f}")

    # ---- matfree: products only
    t0 = time.perf_counter()
    top = eigsh(H, k=k, which="LA", tol=1e-8, rng=SEED)
    t_eig = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr_x = trace(H, method="xtrace", num_matvecs=budget, rng=SEED)
    tr_h = trace(H, method="hutchinson", num_matvecs=budget, rng=SEED)
    t_tr = time.perf_counter() - t0
    t0 = time.perf_counter()
    dens = spectral_density(H, num_probes=probes, num_steps=lanczos_steps, rng=SEED)
    t_dens = time.perf_counter() - t0

    # ---- dense reference
    t0 = time.perf_counter()
    Hd = dense_hessian(H, lambda x: loss_fn(H.unflatten(x)))
    lam = torch.linalg.eigvalsh(Hd).numpy()
    t_dense = time.perf_counter() - t0
    eps = float(np.finfo(np.float64).eps)
    norm_h = float(np.max(np.abs(lam)))

    print(f"\nHessian-vector products spent: eigsh {top.num_matvecs} ({t_eig:.1f} s), "
          f"trace 2 x {budget} ({t_tr:.1f} s), density {dens.num_matvecs} ({t_dens:.1f} s); "
          f"dense Hessian + eigvalsh {t_dense:.1f} s\n")
    TABLE.header()
    ok = True
    theta = np.asarray(top.eigenvalues)
    res = np.asarray(top.residual_norms)
    for i in range(k):
        # a Ritz value θ with residual ‖Hx - θx‖ = r has an eigenvalue within r of it
        ok &= TABLE.check(f"eigenvalue {i + 1} (largest)", float(theta[-1 - i]), float(lam[-1 - i]),
                          float(res[-1 - i]) + 100 * n * eps * norm_h)
    exact_trace = float(torch.trace(Hd))
    # unbiased estimators: 4 standard errors
    ok &= TABLE.check(f"trace, XTrace ({budget} HVPs)", float(tr_x.value), exact_trace,
                      4 * float(tr_x.stderr), float(tr_x.stderr))
    ok &= TABLE.check(f"trace, Hutchinson ({budget} HVPs)", float(tr_h.value), exact_trace,
                      4 * float(tr_h.stderr), float(tr_h.stderr))
    print(f"\nnegative eigenvalues: {int(np.sum(lam < 0))} of {n} (smallest {lam[0]:.3g}); "
          f"|λ| < 1e-3 λ_max: {int(np.sum(np.abs(lam) < 1e-3 * lam[-1]))}")

    grid = np.asarray(dens.grid)
    exact_dens = smoothed_density(lam, grid, dens.bandwidth)
    l1 = float(np.trapezoid(np.abs(np.asarray(dens.values) - exact_dens), grid))
    print(f"spectral density: ∫|φ_SLQ - φ_exact| dt = {l1:.3f} (both smoothed with bandwidth "
          f"{dens.bandwidth:.3g}; 0 = identical, 2 = disjoint)")

    out = output_dir(args.out, "mlp")
    _plot(out, dens, grid, exact_dens, top, n, hidden)
    print(f"\nfigure written to {out}; total time {time.perf_counter() - t_start:.1f} s")
    return exit_status(ok)


def _plot(out, dens, grid, exact_dens, top, n, hidden):
    plt = pyplot(out)
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    dens.plot(ax=ax, label="SLQ estimate (±2 stderr)")
    ax.plot(grid, exact_dens, "k--", lw=1, label="exact eigenvalues, same smoothing")
    for i, t in enumerate(np.asarray(top.eigenvalues)):
        label = "top eigenvalues (eigsh)" if i == 0 else None
        ax.axvline(float(t), color="C3", lw=0.8, ls=":", label=label)
    ax.set_yscale("log")
    peak = float(np.max(exact_dens))
    ax.set_ylim(peak * 1e-7, peak * 3)
    ax.set_xlabel("Hessian eigenvalue λ")
    ax.set_ylabel("spectral density φ(λ) (log scale)")
    ax.set_title(f"Hessian spectrum of an MLP on digits (64-{hidden}-10, {n} parameters)")
    ax.legend(fontsize=8)
    save_figure(fig, out, "mlp_hessian_density.png")


if __name__ == "__main__":
    sys.exit(main())
