"""Text classification with second-order steps: damped Newton-CG, L-BFGS and SR1.

The corpus is on every machine that runs Python: the docstrings of the public
functions, classes and methods of eight standard-library modules (``os``,
``math``, ``re``, ``collections``, ``datetime``, ``threading``, ``pathlib``,
``logging``), collected with :mod:`inspect` and labelled by module (docstrings
shared by two modules are dropped).  Each docstring becomes a bag of words
(the 300 most common words of the training split, counts damped by
``log(1 + c)``, rows normalised), and a linear softmax classifier
``logits = [x, 1] W`` is trained in PyTorch on the mean cross-entropy plus
``(λ/2)‖W‖²`` (full batch, float64).  Its Hessian-vector products come from
:func:`matfree.from_torch`.  Three second-order methods share the budget:

* **Newton-CG** with Levenberg-Marquardt damping: ``(H + μI) p = -g`` solved
  by :func:`matfree.solvers.cg` to the forcing tolerance ``min(1/2, ‖g‖^½)``,
  ``μ`` adapted by the ratio ρ of actual to predicted reduction (Nielsen's
  rule: ``μ ← μ max(1/3, 1 - (2ρ-1)³)`` on success, ``μ ← νμ, ν ← 2ν`` on
  failure);
* **L-BFGS** (:class:`matfree.quasinewton.LBFGS`, memory 10) with an Armijo
  backtracking line search;
* **SR1 trust region**: the limited-memory SR1 matrix
  (:class:`matfree.quasinewton.LSR1`, memory 10, possibly indefinite) as the
  model Hessian, the step from Steihaug-Toint CG
  (:func:`matfree.solvers.steihaug_cg`), and the radius updated as in
  Nocedal & Wright, Algorithm 6.2.

Along the Newton-CG run the script looks at the Hessian of the data term at a
few checkpoints: its trace (XTrace) and numerical rank (stochastic Lanczos
quadrature) from products, beside the dense Hessian's (formed by
reverse-over-reverse differentiation, affordable at 2408 parameters).  The
cross-entropy Hessian is singular by construction (adding the same vector to
every class's weights changes no probability: 301 zero eigenvalues), and as
the classifier grows confident its spectrum decays further.

Every claim is checked, and the script exits with status 1 if one fails:

* each method reaches the optimum: ``0 <= f - f* <= min(‖∇f‖, gtol)²/(2λ)``
  (strong convexity with modulus λ), with ``f*`` from a dense Newton step;
* each trace estimate is within 4 standard errors of the exact trace
  (XTrace is unbiased);
* each SLQ rank is within 4 standard errors **plus its quadrature bound** of
  the exact count of eigenvalues above the threshold η.  The standard error
  only measures the spread over the probes.  The count is also biased,
  because each probe's Gauss rule integrates a step function at η: by the
  Chebyshev-Markov-Stieltjes inequalities the distribution function of the
  probe's spectral measure at η lies between the sums of the quadrature
  weights below the Ritz values on either side of η, so the error of a
  probe's count is at most ``‖z‖²`` times the larger weight of those two Ritz
  values.  The mean over the probes bounds the bias from the SLQ run alone
  (the exact spectrum is not used), and is printed beside the number of exact
  eigenvalues that lie between the two Ritz values (what 60 Lanczos steps
  cannot resolve).  With η = 10⁻³ λ_max inside the dense, decaying part of
  the spectrum that bound is large (90-130 of 2408 here, about the number
  of exact eigenvalues between the two Ritz values; the observed errors are
  23-36, i.e. 4-8 standard errors, so a check on the standard error alone
  would fail): the rank is known only to that resolution, which more Lanczos
  steps or a threshold in a spectral gap would sharpen.  The Lanczos runs
  are fully reorthogonalised (no extra products) so that their Ritz values
  and weights are a Gauss rule, as the bound assumes.

The docstrings, and so the printed figures, depend on the Python version.

Run::

    python examples/text_classification.py             # 8 modules, 2408 parameters
    python examples/text_classification.py --fast      # CI: 4 modules, 100 words
    python examples/text_classification.py --out figs

Figures (PNG) go to ``--out DIR``; by default a fresh temporary directory
(printed at the end).  The script exits with status 1 if an estimate disagrees
with its dense reference by more than the printed allowance.
"""

import collections
import importlib
import inspect
import math
import re
import sys
import time
import warnings

import numpy as np

from _common import Table, exit_status, limit_threads, output_dir, parse_args, pyplot, save_figure

SEED = 20261123
LAM = 1e-3  # L2 regularisation λ
RANK_RTOL = 1e-3  # effective rank: count eigenvalues above this fraction of the largest
MODULES = ["os", "math", "re", "collections", "datetime", "threading", "pathlib", "logging"]
MODULES_FAST = ["math", "collections", "datetime", "pathlib"]
TABLE = Table(name_width=30, estimate_width=24, reference_width=16)


# ------------------------------------------------------------------ corpus
def _docstrings(module_name):
    """Docstrings (at least 5 words) of the public routines, classes and methods of a module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = importlib.import_module(module_name)
        names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
        docs = []
        for name in names:
            obj = getattr(mod, name, None)
            if inspect.isroutine(obj) or inspect.isclass(obj):
                docs.append(inspect.getdoc(obj))
            if inspect.isclass(obj):
                docs += [inspect.getdoc(f) for n, f in vars(obj).items()
                         if not n.startswith("_") and inspect.isroutine(f)]
    return [d for d in dict.fromkeys(docs) if d and len(_words(d)) >= 5]


def _words(text):
    return re.findall(r"[a-z]{2,}", text.lower())


def load_corpus(modules):
    """(texts, labels) with docstrings that occur in exactly one of the modules."""
    per_module = {m: _docstrings(m) for m in modules}
    seen = collections.Counter(d for docs in per_module.values() for d in docs)
    texts, labels = [], []
    for label, m in enumerate(modules):
        for d in per_module[m]:
            if seen[d] == 1:
                texts.append(d)
                labels.append(label)
    return texts, np.array(labels)


def bag_of_words(train, test, vocab_size):
    """Rows log(1 + counts) over the most common training words, normalised; plus a ones column."""
    df = collections.Counter(w for t in train for w in set(_words(t)))
    # ties broken alphabetically: set order depends on PYTHONHASHSEED, the vocabulary must not
    words = sorted(df, key=lambda w: (-df[w], w))[:vocab_size]
    vocab = {w: j for j, w in enumerate(words)}

    def encode(texts):
        X = np.zeros((len(texts), len(vocab) + 1))
        for i, t in enumerate(texts):
            for w, c in collections.Counter(_words(t)).items():
                if w in vocab:
                    X[i, vocab[w]] = math.log1p(c)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        X[:, -1] = 1.0
        return X

    return encode(train), encode(test), vocab


# ------------------------------------------------------------------- model
class Problem:
    """Loss, gradient and Hessian operators of the softmax classifier, counting passes."""

    def __init__(self, X, y, num_classes, lam):
        import torch

        self.X = torch.as_tensor(X)
        self.y = torch.as_tensor(y)
        self.shape = (X.shape[1], num_classes)
        self.lam = lam
        self.passes = 0
        self.counts = dict(loss=0, grad=0, hvp=0)

    def data_loss(self, w):
        import torch

        return torch.nn.functional.cross_entropy(self.X @ w.reshape(self.shape), self.y)

    def objective(self, w):
        return self.data_loss(w) + 0.5 * self.lam * (w * w).sum()

    def loss(self, w):
        import torch

        self.passes += 1
        self.counts["loss"] += 1
        with torch.no_grad():
            return float(self.objective(w))

    def loss_grad(self, w):
        import torch

        self.passes += 2
        self.counts["grad"] += 1
        w = w.detach().requires_grad_(True)
        f = self.objective(w)
        (g,) = torch.autograd.grad(f, w)
        return float(f.detach()), g

    def hessian(self, w, data_only=False):
        """The Hessian at w as a matfree operator (reverse-over-reverse products on the kept gradient graph, counted)."""
        import matfree

        H = matfree.from_torch(self.data_loss if data_only else self.objective, w.detach())
        if data_only:
            return H
        counts = self

        def hvp(v):
            counts.passes += 2
            counts.counts["hvp"] += 1
            return H @ v

        return matfree.from_hvp(hvp, like=w.detach(), positive_semidefinite=True)

    def dense_data_hessian(self, w):
        """The data term's Hessian, formed by reverse-over-reverse (an independent code path)."""
        from torch.func import grad, jacrev

        Hd = jacrev(grad(self.data_loss), chunk_size=512)(w.detach())
        return 0.5 * (Hd + Hd.T)


def accuracy(X, y, w, shape):
    """Fraction of documents whose largest logit is their module."""
    import torch

    with torch.no_grad():
        logits = torch.as_tensor(X) @ w.reshape(shape)
        return float((logits.argmax(1) == torch.as_tensor(y)).double().mean())


# --------------------------------------------------------------- rank check
def rank_quadrature_bound(slq, eta, exact_eigenvalues):
    """Bound on the quadrature bias of SLQ's count of eigenvalues above ``eta``; and what it hides.

    For one probe z, the Gauss rule (Ritz values θ_1 < ... < θ_m, weights
    w_j) of its spectral measure μ (``μ({λ_i}) = (q_iᵀz)²/‖z‖²``) satisfies the
    Chebyshev-Markov-Stieltjes inequalities ``Σ_{j<k} w_j <= μ((-∞, θ_k]) <=
    Σ_{j<=k} w_j``.  With θ_k <= η < θ_{k+1}, the count estimate ``‖z‖² Σ_{j>k}
    w_j`` of ``zᵀ 1[H > η] z`` is therefore off by at most ``‖z‖² max(w_k,
    w_{k+1})``.  The data-term Hessian is positive semidefinite, so ``|λ| > η``
    is ``λ > η``.  Returns the mean of that bound over the probes and the mean
    number of exact eigenvalues strictly between θ_k and θ_{k+1}.
    """
    nodes, weights = np.asarray(slq.nodes), np.asarray(slq.weights)
    norms2 = np.asarray(slq.probe_norms2)
    bounds, hidden = [], []
    for theta, w, z2 in zip(nodes, weights, norms2):
        order = np.argsort(theta)
        theta, w = theta[order], w[order]
        k = int(np.searchsorted(theta, eta, side="right"))  # theta[:k] <= eta < theta[k:]
        below = w[k - 1] if k > 0 else 0.0
        above = w[k] if k < theta.size else 0.0
        bounds.append(z2 * max(below, above))
        lo = theta[k - 1] if k > 0 else -np.inf
        hi = theta[k] if k < theta.size else np.inf
        hidden.append(np.sum((exact_eigenvalues > lo) & (exact_eigenvalues < hi)))
    return float(np.mean(bounds)), float(np.mean(hidden))


# ----------------------------------------------------------------- methods
class History:
    """(passes, CPU seconds, f, ‖g‖) after every step of a method."""

    def __init__(self, prob):
        self.prob, self.t0, self.rows = prob, time.process_time(), []

    def record(self, f, g):
        # CPU time: on a shared machine wall-clock time mostly measures the others
        self.rows.append((self.prob.passes, time.process_time() - self.t0, f, float(g.norm())))


def newton_cg(prob, w, budget, gtol, checkpoints=(), on_checkpoint=None):
    """Damped (Levenberg-Marquardt) Newton-CG; calls on_checkpoint(step, w) at the listed steps."""
    from matfree.solvers import cg

    hist, mu, nu, steps = History(prob), 1.0, 2.0, 0
    f, g = prob.loss_grad(w)
    hist.record(f, g)
    while prob.passes < budget and float(g.norm()) > gtol:
        if on_checkpoint and steps in checkpoints:
            t0 = time.process_time()
            on_checkpoint(steps, w)
            hist.t0 += time.process_time() - t0  # the analysis is not part of the training time
            checkpoints = [c for c in checkpoints if c != steps]
        H = prob.hessian(w)
        eta = min(0.5, math.sqrt(float(g.norm())))
        p = cg(H, -g, damping=mu, rtol=eta, maxiter=200).x
        predicted = -(float(g @ p) + 0.5 * float(p @ (H @ p)))
        f_new = prob.loss(w + p)
        rho = (f - f_new) / predicted if predicted > 0 else -1.0
        if rho > 0:
            mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            nu = 2.0
            w = w + p
            f, g = prob.loss_grad(w)
            steps += 1
        else:
            mu, nu = mu * nu, 2.0 * nu
        hist.record(f, g)
    if on_checkpoint:
        on_checkpoint(steps, w)  # the final iterate
    return w, hist, dict(steps=steps)


def lbfgs(prob, w, budget, gtol, memory=10):
    """L-BFGS with matfree's two-loop recursion and Armijo backtracking."""
    from matfree.quasinewton import LBFGS

    hist, qn, steps = History(prob), LBFGS(m=memory, like=w), 0
    f, g = prob.loss_grad(w)
    hist.record(f, g)
    while prob.passes < budget and float(g.norm()) > gtol:
        p = -(qn.inverse_hessian() @ g)
        slope, t = float(g @ p), (1.0 if qn.num_updates else min(1.0, 1.0 / float(g.norm())))
        for _ in range(40):
            if prob.loss(w + t * p) <= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:  # no decrease representable in floating point
            break
        w_new = w + t * p
        f_new, g_new = prob.loss_grad(w_new)
        qn.update(w_new - w, g_new - g)
        w, f, g = w_new, f_new, g_new
        steps += 1
        hist.record(f, g)
    return w, hist, dict(steps=steps)


def sr1_trust_region(prob, w, budget, gtol, memory=10):
    """Limited-memory SR1 trust region with Steihaug-Toint CG (Nocedal-Wright, Alg. 6.2)."""
    from matfree.quasinewton import LSR1
    from matfree.solvers import steihaug_cg

    hist, qn, steps, radius = History(prob), LSR1(m=memory, like=w), 0, 1.0
    f, g = prob.loss_grad(w)
    hist.record(f, g)
    while prob.passes < budget and float(g.norm()) > gtol:
        sol = steihaug_cg(qn.hessian(), g, radius, rtol=min(0.5, math.sqrt(float(g.norm()))))
        p = sol.x
        predicted = float(sol.info["model_decrease"])
        f_new, g_new = prob.loss_grad(w + p)
        rho = (f - f_new) / predicted if predicted > 0 else -1.0
        qn.update(p, g_new - g)  # SR1 learns from rejected steps too
        if rho > 0.75 and float(p.norm()) > 0.8 * radius:
            radius *= 2.0
        elif rho < 0.1:
            radius *= 0.5
        if rho > 1e-4:
            w, f, g = w + p, f_new, g_new
            steps += 1
        hist.record(f, g)
    return w, hist, dict(steps=steps)


# --------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(__doc__, argv, fast_help="CI mode: 4 modules, 100 words",
                      threads_help="torch and BLAS threads (default 1)")

    import torch

    from matfree.spectral import SLQ
    from matfree.trace import trace

    limit_threads(args.threads, framework="torch")
    modules = MODULES_FAST if args.fast else MODULES
    vocab_size, budget, gtol = (100, 600, 1e-6) if args.fast else (300, 1500, 1e-6)
    trace_budget, probes, steps = (40, 20, 60) if args.fast else (60, 20, 60)
    checkpoints = (0, 2) if args.fast else (0, 3)
    t_start = time.perf_counter()

    texts, labels = load_corpus(modules)
    order = np.random.default_rng(SEED).permutation(len(texts))
    n_test = len(texts) // 5
    test, train = order[:n_test], order[n_test:]
    Xtr, Xte, vocab = bag_of_words([texts[i] for i in train], [texts[i] for i in test], vocab_size)
    ytr, yte = labels[train], labels[test]
    C = len(modules)
    prob = Problem(Xtr, ytr, C, LAM)
    n = Xtr.shape[1] * C
    sizes = ", ".join(f"{m}: {int(np.sum(labels == i))}" for i, m in enumerate(modules))
    print(f"{len(texts)} docstrings from {C} modules ({sizes})")
    print(f"train {len(train)}, test {n_test}; {len(vocab)} words + intercept, {C} classes: {n} parameters\n")

    # ---- the three methods, and the Hessian analysis at checkpoints of Newton-CG
    analysis = []

    def analyse(step, w):
        H = prob.hessian(w, data_only=True)
        tr = trace(H, method="xtrace", num_matvecs=trace_budget, rng=SEED)
        # full reorthogonalisation (no extra products): the Ritz values and weights are then
        # a Gauss rule of each probe's spectral measure, which the quadrature bound assumes
        slq = SLQ(H, num_probes=probes, num_steps=steps, rng=SEED, reorth="full")
        rk = slq.rank(rtol=RANK_RTOL)  # effective rank: eigenvalues above RANK_RTOL x the largest
        Hd = prob.dense_data_hessian(w)
        lam = torch.linalg.eigvalsh(Hd).numpy()
        eta = rk.info["threshold"]
        bound, hidden = rank_quadrature_bound(slq, eta, lam)
        analysis.append(dict(
            step=step, w=w, Hd=Hd, lam=lam, trace=tr, rank=rk, eta=eta, bound=bound, hidden=hidden,
            exact_trace=float(torch.trace(Hd)), exact_rank=int(np.sum(np.abs(lam) > eta)),
        ))

    w0 = torch.zeros(n, dtype=torch.float64)
    prob.hessian(w0) @ w0  # warm-up: torch.func's first forward-mode call sets itself up (seconds)
    runs = {}
    for name, method, kw in [
        ("Newton-CG (LM)", newton_cg, dict(checkpoints=checkpoints, on_checkpoint=analyse)),
        ("L-BFGS (m=10)", lbfgs, {}),
        ("SR1 trust region", sr1_trust_region, {}),
    ]:
        prob.passes, prob.counts = 0, dict(loss=0, grad=0, hvp=0)
        w, hist, extra = method(prob, w0.clone(), budget, gtol, **kw)
        acc_tr, acc_te = accuracy(prob.X, prob.y, w, prob.shape), accuracy(Xte, yte, w, prob.shape)
        runs[name] = (w, hist, extra, dict(prob.counts), acc_tr, acc_te)

    # reference optimum: one dense Newton step from the last Newton-CG iterate, with the
    # Hessian formed at the last checkpoint (that iterate); the error is quadratic in ‖g‖
    w_last = analysis[-1]["w"]
    _, g_last = prob.loss_grad(w_last)
    H_full = analysis[-1]["Hd"] + LAM * torch.eye(n, dtype=torch.float64)
    w_star = w_last - torch.linalg.solve(H_full, g_last)
    f_star, g_star = prob.loss_grad(w_star)
    print(f"reference f* = {f_star:.15g} (dense Newton step, ‖∇f‖ = {float(g_star.norm()):.1e})\n")
    print(f"  {'method':<18s} {'steps':>6s} {'grads':>6s} {'HVPs':>6s} {'losses':>7s} {'passes':>7s} "
          f"{'CPU [s]':>8s} {'f - f*':>10s} {'‖∇f‖':>9s} {'train acc':>9s} {'test acc':>8s}")
    for name, (w, hist, extra, counts, acc_tr, acc_te) in runs.items():
        passes, secs, f, gn = hist.rows[-1]
        print(f"  {name:<18s} {extra['steps']:6d} {counts['grad']:6d} {counts['hvp']:6d} {counts['loss']:7d} "
              f"{passes:7d} {secs:8.2f} {f - f_star:10.2e} {gn:9.2e} {acc_tr:9.3f} {acc_te:8.3f}")

    print(f"\nfinal objective of each method against f*: it must reach ‖∇f‖ <= gtol = {gtol:g}, and by "
          "strong convexity 0 <= f - f* <= min(‖∇f‖, gtol)²/(2λ);")
    print(f"the Hessian of the data term along the Newton-CG run: trace by XTrace ({trace_budget} HVPs) "
          "within 4 standard errors of the exact one (XTrace is unbiased); effective rank (eigenvalues "
          f"above η = {RANK_RTOL:g} λ_max) by SLQ ({probes} probes x {steps} Lanczos steps, the same runs "
          "give the density) within 4 standard errors plus the bound on its quadrature bias (below):")
    TABLE.header()
    ok = True
    for name, (_, hist, _, _, _, _) in runs.items():
        _, _, f, gn = hist.rows[-1]
        allowed = min(gn, gtol) ** 2 / (2 * LAM) + 1e-15 * abs(f_star)  # + rounding of f
        ok &= TABLE.check(f"f, {name}", f, f_star, allowed)
    for a in analysis:
        tr = a["trace"]
        se = float(tr.stderr)
        ok &= TABLE.check(f"step {a['step']}: trace", float(tr.value), a["exact_trace"], 4 * se, se)
    for a in analysis:
        rk = a["rank"]
        se = float(rk.stderr)
        ok &= TABLE.check(f"step {a['step']}: rank", float(rk.value), a["exact_rank"], 4 * se + a["bound"], se)
    print("\nthe rank is a count, tr 1[H > η], and each probe's Gauss rule integrates a step function at η:")
    print("its error is at most ‖z‖² x the larger weight of the two Ritz values around η (Chebyshev-Markov-")
    print("Stieltjes), a bias the standard error does not see. 'bias bound' is its mean over the probes (from")
    print("the SLQ run alone); 'λ in gap' the mean number of exact eigenvalues between those two Ritz values,")
    print("which the Lanczos runs cannot resolve. The difference is printed in standard errors:")
    print(f"  {'step':>5s} {'λ_max':>9s} {'SLQ rank':>16s} {'exact':>6s} {'(SLQ-exact)/stderr':>19s} "
          f"{'bias bound':>11s} {'λ in gap':>9s} {'exact zeros':>12s} {'of':>5s}")
    for a in analysis:
        lam, rk = a["lam"], a["rank"]
        zeros = int(np.sum(np.abs(lam) <= 1e-12 * lam[-1]))
        z = (float(rk.value) - a["exact_rank"]) / float(rk.stderr)
        print(f"  {a['step']:5d} {lam[-1]:9.3g} {float(rk.value):9.1f} ± {float(rk.stderr):4.1f} "
              f"{a['exact_rank']:6d} {z:19.1f} {a['bound']:11.1f} {a['hidden']:9.1f} {zeros:12d} {lam.size:5d}")

    out = output_dir(args.out, "text")
    _plot(out, runs, f_star, analysis, n)
    print(f"\nfigure written to {out}; total time {time.perf_counter() - t_start:.1f} s")
    return exit_status(ok)


def _plot(out, runs, f_star, analysis, n):
    plt = pyplot(out)
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    floor = 1e-16
    for (name, (_, hist, _, _, _, _)), marker in zip(runs.items(), ["o", "s", "^"]):
        rows = np.array(hist.rows)
        gap = np.maximum(rows[:, 2] - f_star, floor)
        axes[0].semilogy(rows[:, 0], gap, marker=marker, ms=3, label=name)
        axes[1].semilogy(rows[:, 1], gap, marker=marker, ms=3, label=name)
    axes[0].set_xlabel("passes over the data (loss: 1, gradient or HVP: 2)")
    axes[1].set_xlabel("CPU time [s] (one thread)")
    for ax in axes[:2]:
        ax.set_ylabel("f(w) - f*")
        ax.set_ylim(floor, None)
        ax.legend(fontsize=8)
    axes[0].set_title("Training loss vs work")
    axes[1].set_title("Training loss vs CPU time")
    ax = axes[2]
    for a in analysis:
        lam = np.sort(np.abs(a["lam"]))[::-1]
        ax.semilogy(np.arange(1, lam.size + 1), np.maximum(lam, 1e-16), label=f"Newton step {a['step']}")
        # the SLQ rank at η, with the allowance it is checked against (4 stderr + bias bound)
        ax.errorbar([float(a["rank"].value)], [a["eta"]], xerr=[[4 * float(a["rank"].stderr) + a["bound"]]],
                    fmt="kx", ms=8, capsize=3, lw=1)
    ax.set_ylim(3e-17, None)
    ax.text(0.98, 0.04, "exact zeros (|λ| at rounding level)\ndrawn at 1e-16", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=8)
    ax.set_xlabel("index i (eigenvalues sorted by |λ|)")
    ax.set_ylabel("|λ_i| of the data-term Hessian")
    ax.set_title(f"Data-term Hessian spectra\n(x: SLQ rank at η = {RANK_RTOL:g} λ_max, bar: its allowance)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(f"Bag-of-words softmax classifier on standard-library docstrings ({n} parameters)")
    save_figure(fig, out, "text_classification.png")


if __name__ == "__main__":
    sys.exit(main())
