"""The Hessian workflow with JAX: ``from_jax``, top eigenvalues, trace and log-determinant.

Bayesian softmax regression on scikit-learn's handwritten digits (1797 images,
64 pixels plus an intercept, 10 classes: 650 weights; shipped with
scikit-learn) with a Gaussian prior ``N(0, I/α)``.  The negative log posterior

    E(w) = Σ_i CE(softmax(W x_i), y_i) + (α/2) ‖w‖²

is minimised (SciPy's L-BFGS-B with the JAX gradient), and at the minimum
:func:`matfree.from_jax` turns ``E`` into a Hessian operator (forward-over-
reverse products, ``jit``-compiled, batched with ``vmap``; the vectors stay
JAX arrays in float64).  On it matfree computes

* the top eigenvalues (:func:`matfree.lanczos.eigsh`),
* the trace (:func:`matfree.trace.trace`, XTrace),
* the log-determinant (:func:`matfree.spectral.logdet`, stochastic Lanczos
  quadrature), which enters the Laplace approximation of the log evidence

      log p(D) ≈ -E(w*) + (d/2) log α - ½ log det ∇²E(w*),

each printed beside the dense answer from ``jax.hessian`` (650 x 650).

Run::

    python examples/jax_hvp.py             # all 1797 images
    python examples/jax_hvp.py --fast      # CI: 500 images

Most of the run time is JAX compiling each new operation once (the
algorithms run eagerly, operation by operation, on JAX arrays); the products
themselves take milliseconds.  No figures.  The script exits with status 1
if an estimate disagrees with its dense reference by more than the printed
allowance.
"""

import math
import sys
import time

import numpy as np

from _common import Table, exit_status, limit_threads, parse_args

SEED = 20261123
ALPHA = 1.0  # prior precision
TABLE = Table(name_width=30, estimate_width=24, reference_width=18)


# --------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(__doc__, argv, fast_help="CI mode: 500 images",
                      out_help="accepted for uniformity with the other examples; no figures",
                      threads_help="XLA and BLAS threads (default 1)")
    limit_threads(args.threads, framework="jax")  # before JAX is imported

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # before any array is created
    from scipy.optimize import minimize
    from sklearn.datasets import load_digits

    import matfree
    from matfree.lanczos import eigsh
    from matfree.spectral import logdet
    from matfree.trace import trace

    m = 500 if args.fast else 1797
    k, budget, probes, steps = 4, 100, 60, 40
    t_start = time.perf_counter()

    X, y = load_digits(return_X_y=True)
    X = np.hstack([X[:m] / 16.0, np.ones((m, 1))])
    Y = np.eye(10)[y[:m]]
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    shape = (X.shape[1], 10)

    def energy(w):
        logits = X @ w.reshape(shape)
        ce = jnp.sum(jax.nn.logsumexp(logits, axis=1) - jnp.sum(Y * logits, axis=1))
        return ce + 0.5 * ALPHA * jnp.sum(w * w)

    value_and_grad = jax.jit(jax.value_and_grad(energy))

    def fun(w):
        v, g = value_and_grad(jnp.asarray(w))
        return float(v), np.asarray(g)

    opt = minimize(fun, np.zeros(shape[0] * shape[1]), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=5000, gtol=1e-9, ftol=1e-15))
    w_star = jnp.asarray(opt.x)
    E_star = float(energy(w_star))
    d = w_star.shape[0]
    print(f"Bayesian softmax regression on {m} digits images: d = {d} weights, prior precision α = {ALPHA:g}")
    print(f"MAP by L-BFGS-B: E(w*) = {E_star:.6f} after {opt.nit} iterations, "
          f"‖∇E‖∞ = {np.max(np.abs(opt.jac)):.1e}")

    # ---- matfree on JAX arrays
    H = matfree.from_jax(energy, w_star)
    t0 = time.perf_counter()
    # ncv: a basis of 12 vectors (ARPACK's default would be 20) means fewer distinct
    # array shapes, and JAX compiles each new shape of each operation once
    top = eigsh(H, k=k, which="LA", tol=1e-10, ncv=12, rng=SEED)
    t_eig = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr = trace(H, method="xtrace", num_matvecs=budget, rng=SEED)
    t_tr = time.perf_counter() - t0
    t0 = time.perf_counter()
    ld = logdet(H, num_probes=probes, num_steps=steps, rng=SEED)
    t_ld = time.perf_counter() - t0
    assert isinstance(top.eigenvalues, jax.Array) and top.eigenvalues.dtype == jnp.float64

    # ---- dense reference
    t0 = time.perf_counter()
    Hd = np.asarray(jax.jit(jax.hessian(energy))(w_star))  # one compiled call
    lam = np.linalg.eigvalsh(Hd)
    sign, logdet_exact = np.linalg.slogdet(Hd)
    t_dense = time.perf_counter() - t0
    assert float(sign) > 0
    eps = float(np.finfo(np.float64).eps)

    print(f"\nproducts: eigsh {top.num_matvecs} ({t_eig:.1f} s), trace {tr.num_matvecs} ({t_tr:.1f} s), "
          f"logdet {ld.num_matvecs} ({t_ld:.1f} s), first calls include JAX compilation; "
          f"jax.hessian + eigvalsh + slogdet {t_dense:.1f} s")
    print(f"spectrum: [{lam[0]:.4g}, {lam[-1]:.4g}], condition number {lam[-1] / lam[0]:.3g}\n")
    TABLE.header()
    ok = True
    theta, res = np.asarray(top.eigenvalues), np.asarray(top.residual_norms)
    for i in range(k):
        # a Ritz value θ with residual r has an eigenvalue within r of it
        ok &= TABLE.check(f"eigenvalue {i + 1} (largest)", float(theta[-1 - i]), float(lam[-1 - i]),
                          float(res[-1 - i]) + 100 * d * eps * float(lam[-1]))
    ok &= TABLE.check(f"trace, XTrace ({budget} HVPs)", float(tr.value), float(np.trace(Hd)),
                      4 * float(tr.stderr), float(tr.stderr))
    # SLQ: the quadrature error decays like ρ^(-2m), negligible here; 4 standard errors
    ok &= TABLE.check(f"log det, SLQ ({probes}x{steps})", float(ld.value), float(logdet_exact),
                      4 * float(ld.stderr), float(ld.stderr))
    evidence = -E_star + 0.5 * d * math.log(ALPHA) - 0.5 * float(ld.value)
    evidence_exact = -E_star + 0.5 * d * math.log(ALPHA) - 0.5 * float(logdet_exact)
    se = 0.5 * float(ld.stderr)  # the evidence has -½ log det
    ok &= TABLE.check("Laplace log evidence", evidence, evidence_exact, 4 * se, se)
    print(f"\ntotal time {time.perf_counter() - t_start:.1f} s")
    return exit_status(ok)


if __name__ == "__main__":
    sys.exit(main())
