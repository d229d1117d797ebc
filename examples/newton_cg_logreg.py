"""Hessian-free Newton-CG with Levenberg-Marquardt damping vs L-BFGS vs gradient descent.

The problem is L2-regularised logistic regression on scikit-learn's breast
cancer data (569 patients, 30 standardised features plus an intercept; shipped
with scikit-learn, no download):

    f(w) = (1/m) Σ_i log(1 + exp(-y_i x_iᵀw)) + (λ/2) ‖w‖²,   λ = 1e-4.

The features are strongly collinear (radius, perimeter, area, ...), so the
Hessian has a condition number in the thousands and plain gradient descent
crawls.  Three methods share the same loss and gradient code:

* **Newton-CG** (Martens 2010, "Hessian-free"): each step solves
  ``(H + μI) p = -g`` inexactly with :func:`matfree.solvers.cg`, the Hessian
  known only through products ``H v = Xᵀ diag(σ(1-σ)) X v / m + λ v``
  (:func:`matfree.from_hvp`), to the forcing tolerance
  ``min(1/2, ‖g‖^½)``.  The Levenberg-Marquardt damping ``μ`` is adapted
  every step from the ratio ρ of the actual to the predicted reduction of
  ``f`` (the predicted one from the undamped quadratic model): a step with
  ρ > 0 is taken and ``μ ← μ · max(1/3, 1 - (2ρ - 1)³)``; otherwise it is
  rejected and ``μ ← νμ, ν ← 2ν`` (Nielsen's rule, Madsen, Nielsen &
  Tingleff 2004, eq. 2.21; Martens' 3/2 and 2/3 factors need ~30 steps to
  move μ from 1 to the scale of this Hessian's small eigenvalues).
* **L-BFGS**: the direction ``-H_k g`` from the two-loop recursion of
  :class:`matfree.quasinewton.LBFGS` (memory 10), with an Armijo backtracking
  line search.
* **Gradient descent** with the textbook step ``1/L``,
  ``L = ‖X‖₂²/(4m) + λ`` (the Lipschitz constant of the gradient).

Cost is counted in passes over the data: a loss costs one (``Xw``), a gradient
or a Hessian-vector product two (``Xv`` and ``Xᵀu``).  The reference optimum
``f*`` is a dense Newton iteration with the Hessian formed and factorised
(affordable at 31 unknowns); scikit-learn's ``LogisticRegression`` is printed
beside it.  With strong convexity (modulus λ), ``f(w) - f* <= ‖∇f(w)‖²/(2λ)``
and ``‖w - w*‖ <= ‖∇f(w)‖/λ``: these bounds are the allowances of the checks.

Run::

    python examples/newton_cg_logreg.py            # budget 3000 passes over the data
    python examples/newton_cg_logreg.py --fast     # CI: budget 1000 passes
    python examples/newton_cg_logreg.py --out figs

Figures (PNG) go to ``--out DIR``; by default a fresh temporary directory
(printed at the end).  The script exits with status 1 if a check fails.
"""

import math
import sys
import time

import numpy as np

from _common import Table, exit_status, limit_threads, output_dir, parse_args, pyplot, save_figure

LAM = 1e-4  # L2 regularisation λ
TABLE = Table(name_width=30, estimate_width=22, reference_width=22, digits=14)


# --------------------------------------------------------------- the problem
class Logistic:
    """Loss, gradient and Hessian-vector products, counting passes over the data."""

    def __init__(self, X, y, lam):
        self.X, self.y, self.lam, self.m = X, y, lam, X.shape[0]
        self.passes = 0
        self.counts = dict(loss=0, grad=0, hvp=0)

    def loss(self, w):
        self.passes += 1
        self.counts["loss"] += 1
        z = self.y * (self.X @ w)
        return float(np.logaddexp(0.0, -z).mean()) + 0.5 * self.lam * float(w @ w)

    def loss_grad(self, w):
        self.passes += 2
        self.counts["grad"] += 1
        z = self.y * (self.X @ w)
        f = float(np.logaddexp(0.0, -z).mean()) + 0.5 * self.lam * float(w @ w)
        g = -(self.X.T @ (self.y * _sigmoid(-z))) / self.m + self.lam * w
        return f, g

    def hessian(self, w):
        """The Hessian at w as a matfree operator (products only; each counted)."""
        import matfree

        s = _sigmoid(self.X @ w)
        d = s * (1.0 - s) / self.m

        def hvp(v):
            self.passes += 2
            self.counts["hvp"] += 1
            return self.X.T @ (d * (self.X @ v)) + self.lam * v

        return matfree.from_hvp(hvp, like=w, positive_semidefinite=True)

    def dense_hessian(self, w):
        s = _sigmoid(self.X @ w)
        return (self.X.T * (s * (1.0 - s) / self.m)) @ self.X + self.lam * np.eye(w.size)


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # overflow-free logistic function


# ----------------------------------------------------------------- methods
class Trace:
    """History of (passes, CPU seconds, f, ‖g‖) of one method."""

    def __init__(self, prob):
        self.prob, self.t0, self.rows = prob, time.process_time(), []

    def record(self, f, g):
        # CPU time of this process: on a shared machine wall-clock time mostly measures the others
        self.rows.append((self.prob.passes, time.process_time() - self.t0, f, float(np.linalg.norm(g))))


def newton_cg(prob, w, budget, gtol):
    """Hessian-free Newton with Levenberg-Marquardt damping adapted by the reduction ratio."""
    from matfree.solvers import cg

    hist, mu, nu, steps, rejected = Trace(prob), 1.0, 2.0, 0, 0
    f, g = prob.loss_grad(w)
    hist.record(f, g)
    while prob.passes < budget and np.linalg.norm(g) > gtol:
        H = prob.hessian(w)
        eta = min(0.5, math.sqrt(float(np.linalg.norm(g))))  # forcing term: superlinear
        sol = cg(H, -g, damping=mu, rtol=eta, maxiter=100)
        p = sol.x
        predicted = -(float(g @ p) + 0.5 * float(p @ (H @ p)))  # model decrease, undamped H
        f_new = prob.loss(w + p)
        rho = (f - f_new) / predicted if predicted > 0 else -1.0
        if rho > 0:  # accept; relax the damping the more the model was right
            mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            nu = 2.0
            w = w + p
            f, g = prob.loss_grad(w)
            steps += 1
        else:  # reject; damp harder, faster each time
            mu, nu = mu * nu, 2.0 * nu
            rejected += 1
        hist.record(f, g)
    return w, hist, dict(steps=steps, final_damping=mu, rejected=rejected)


def lbfgs(prob, w, budget, gtol, memory=10):
    """L-BFGS directions from matfree's two-loop recursion, Armijo backtracking."""
    from matfree.quasinewton import LBFGS

    hist, qn, steps = Trace(prob), LBFGS(m=memory, like=w), 0
    f, g = prob.loss_grad(w)
    hist.record(f, g)
    while prob.passes < budget and np.linalg.norm(g) > gtol:
        p = -(qn.inverse_hessian() @ g)
        slope, t = float(g @ p), 1.0
        if qn.num_updates == 0:  # first step: scale to a unit step, as usual
            t = min(1.0, 1.0 / float(np.linalg.norm(g)))
        for _ in range(40):
            if prob.loss(w + t * p) <= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:  # no decrease representable in floating point: stop
            break
        w_new = w + t * p
        f_new, g_new = prob.loss_grad(w_new)
        qn.update(w_new - w, g_new - g)
        w, f, g = w_new, f_new, g_new
        steps += 1
        hist.record(f, g)
    return w, hist, dict(steps=steps, skipped=qn.num_skipped)


def gradient_descent(prob, w, budget, gtol):
    """Plain gradient descent with the step 1/L."""
    L = float(np.linalg.norm(prob.X, 2)) ** 2 / (4 * prob.m) + prob.lam
    hist, steps = Trace(prob), 0
    f, g = prob.loss_grad(w)
    hist.record(f, g)
    while prob.passes < budget and np.linalg.norm(g) > gtol:
        w = w - g / L
        f, g = prob.loss_grad(w)
        steps += 1
        hist.record(f, g)
    return w, hist, dict(steps=steps, L=L)


def dense_newton(prob, w):
    """The reference: Newton with the formed Hessian and a dense solve, to rounding."""
    for _ in range(100):
        f, g = prob.loss_grad(w)
        step = np.linalg.solve(prob.dense_hessian(w), g)
        w = w - step
        if np.linalg.norm(step) <= 1e-15 * max(1.0, np.linalg.norm(w)):
            break
    f, g = prob.loss_grad(w)
    return w, f, g


# --------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(__doc__, argv, fast_help="CI mode: budget of 1000 data passes")
    limit_threads(args.threads)
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    # below ‖∇f‖ ~ 1e-8 the decrease of f per step is at the rounding level of f,
    # where a line search on function values can no longer see progress
    budget, gtol = (1000 if args.fast else 3000), 1e-8
    X, y01 = load_breast_cancer(return_X_y=True)
    X = np.hstack([(X - X.mean(0)) / X.std(0), np.ones((X.shape[0], 1))])
    y = np.where(y01 > 0, 1.0, -1.0)
    m, n = X.shape
    print(f"L2-regularised logistic regression on the breast cancer data: m = {m}, n = {n}, λ = {LAM:g}")

    w_star, f_star, g_star = dense_newton(Logistic(X, y, LAM), np.zeros(n))
    kappa = np.linalg.cond(Logistic(X, y, LAM).dense_hessian(w_star))
    print(f"dense Newton reference: f* = {f_star:.15g}, ‖∇f(w*)‖ = {np.linalg.norm(g_star):.1e}, "
          f"cond(H(w*)) = {kappa:.3g}")
    print(f"budget {budget} passes over the data per method, stop at ‖∇f‖ <= {gtol:g}\n")

    runs = {}
    methods = [("Newton-CG (LM)", newton_cg), ("L-BFGS (m=10)", lbfgs), ("gradient descent", gradient_descent)]
    for name, method in methods:
        method(Logistic(X, y, LAM), np.zeros(n), 20, gtol)  # warm-up: imports, first calls
        prob = Logistic(X, y, LAM)
        w, hist, extra = method(prob, np.zeros(n), budget, gtol)
        runs[name] = (w, hist, extra, dict(prob.counts), prob.passes)

    print(f"  {'method':<18s} {'steps':>6s} {'gradients':>9s} {'HVPs':>6s} {'losses':>7s} {'passes':>7s} "
          f"{'CPU [s]':>9s} {'f - f*':>9s} {'‖∇f‖':>9s}")
    for name, (w, hist, extra, counts, passes) in runs.items():
        passes_, secs, f, gn = hist.rows[-1]
        print(f"  {name:<18s} {extra['steps']:6d} {counts['grad']:9d} {counts['hvp']:6d} {counts['loss']:7d} "
              f"{passes:7d} {secs:9.3f} {max(f - f_star, 0.0):9.2e} {gn:9.2e}")
    nt = runs["Newton-CG (LM)"][2]
    print(f"\n(Newton-CG: {nt['rejected']} rejected steps, final damping μ = {nt['final_damping']:.3g}; L-BFGS skipped "
          f"{runs['L-BFGS (m=10)'][2]['skipped']} pairs; gradient descent step 1/L = "
          f"{1 / runs['gradient descent'][2]['L']:.3g})")

    # scikit-learn on the same objective: sum of losses + ‖w‖²/(2C), so C = 1/(λ m)
    clf = LogisticRegression(C=1.0 / (LAM * m), fit_intercept=False, tol=1e-12, max_iter=10000)
    clf.fit(X, y01)
    f_sk, g_sk = Logistic(X, y, LAM).loss_grad(clf.coef_.ravel())

    print()
    TABLE.header()
    ok = True
    for name, (w, hist, extra, counts, passes) in runs.items():
        _, _, f, gn = hist.rows[-1]
        # strong convexity: 0 <= f - f* <= ‖g‖²/(2λ)
        ok &= TABLE.check(f"f, {name}", f, f_star, gn**2 / (2 * LAM) + 1e-15 * abs(f_star))
    w_nt, hist_nt = runs["Newton-CG (LM)"][0], runs["Newton-CG (LM)"][1]
    ok &= TABLE.check("‖w - w*‖, Newton-CG (LM)", float(np.linalg.norm(w_nt - w_star)), 0.0,
                      hist_nt.rows[-1][3] / LAM + 1e-12)
    ok &= TABLE.check("f, scikit-learn (lbfgs)", f_sk, f_star, float(g_sk @ g_sk) / (2 * LAM) + 1e-15)
    ok &= hist_nt.rows[-1][3] <= gtol  # Newton-CG must converge within the budget

    out = output_dir(args.out, "newton")
    _plot(out, runs, f_star, budget)
    print(f"\nfigure written to {out}")
    return exit_status(ok, "MISMATCH with the dense reference (or Newton-CG did not converge)")


def _plot(out, runs, f_star, budget):
    plt = pyplot(out)
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    floor = 1e-16
    for (name, (_, hist, _, _, _)), marker in zip(runs.items(), ["o", "s", None]):
        rows = np.array(hist.rows)
        gap = np.maximum(rows[:, 2] - f_star, floor)
        axes[0].semilogy(rows[:, 0], gap, marker=marker, ms=3, label=name)
        axes[1].semilogy(rows[:, 1], gap, marker=marker, ms=3, label=name)
    axes[0].set_xlabel("passes over the data (loss: 1, gradient or HVP: 2)")
    axes[0].set_title("Suboptimality vs work")
    axes[0].set_xlim(0, budget)
    axes[1].set_xlabel("CPU time [s] (one BLAS thread)")
    axes[1].set_title("Suboptimality vs CPU time")
    for ax in axes:
        ax.set_ylabel("f(w) - f*")
        ax.set_ylim(floor, None)
        ax.legend()
    fig.suptitle("L2-regularised logistic regression, breast cancer data")
    save_figure(fig, out, "newton_cg_logreg.png")


if __name__ == "__main__":
    sys.exit(main())
