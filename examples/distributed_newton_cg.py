"""Newton-CG for logistic regression with the Hessian summed over data shards on Dask.

The data (scikit-learn's handwritten digits, 1797 images of 8x8 pixels; the
task: is the digit 5 or more?) is split into shards, and every shard is
loaded *on a Dask worker* and stays there.  Each Newton step

1. broadcasts the iterate ``w`` to the workers and sums the shards' losses
   and gradients,
2. builds the Hessian of the data term as a :class:`matfree.distributed.ShardedSum`
   of the shards' Gauss-Newton/Hessian products ``X_sᵀ D_s X_s v`` (each shard's
   ``D_s`` is computed next to its data), with its exact diagonal as a Jacobi
   preconditioner,
3. solves ``(H + λI) p = -g`` inexactly with :func:`matfree.solvers.cg`
   (``damping=λ`` is the L2 regularisation, forcing term
   ``min(0.5, sqrt(‖g‖/‖g₀‖))``), and
4. backtracks along ``p`` until the Armijo condition holds.

The answer is printed beside scikit-learn's ``LogisticRegression`` on the same
objective (``C = 1/λ``, no separate intercept: a column of ones is a feature),
and the script exits with status 1 if they disagree.

Run::

    python examples/distributed_newton_cg.py            # 4 shards on 2 workers
    python examples/distributed_newton_cg.py --fast     # CI: 2 shards, gtol 1e-3
"""

import argparse
import math
import sys
import time

import numpy as np

LAM = 1.0  # L2 regularisation λ (scikit-learn's C = 1/λ)


# ------------------------------------------------ what lives on the workers
class DigitsShard:
    """Rows ``s, s + S, s + 2S, ...`` of the digits data, loaded on the worker."""

    def __init__(self, s, num_shards):
        from sklearn.datasets import load_digits  # shipped with scikit-learn

        X, y = load_digits(return_X_y=True)
        X = np.hstack([X / 16.0, np.ones((X.shape[0], 1))])
        rows = np.arange(s, X.shape[0], num_shards)
        self.X = X[rows]
        self.y = np.where(y[rows] >= 5, 1.0, -1.0)

    def loss_grad(self, w):
        """Σ_i log(1 + exp(-y_i x_iᵀw)) over the shard, and its gradient."""
        z = self.y * (self.X @ w)
        loss = float(np.logaddexp(0.0, -z).sum())
        grad = -(self.X.T @ (self.y * _sigmoid(-z)))
        return loss, grad

    def loss(self, w):
        return float(np.logaddexp(0.0, -self.y * (self.X @ w)).sum())

    def hessian_at(self, w):
        """This shard's Hessian ``Xᵀ diag(p(1-p)) X`` at ``w`` (shares X, no copy)."""
        p = _sigmoid(self.X @ w)
        return ShardHessian(self.X, p * (1.0 - p))


class ShardHessian:
    """Products with ``Xᵀ D X`` and its exact diagonal, on the worker holding X."""

    def __init__(self, X, d):
        self.X, self.d = X, d

    def matvec(self, v):
        return self.X.T @ (self.d * (self.X @ v))

    def matmat(self, V):
        return self.X.T @ (self.d[:, None] * (self.X @ V))

    def diagonal(self):
        return (self.X * self.X).T @ self.d


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # overflow-free logistic function


# ------------------------------------------------------------ the solver
def _objective(client, shards, w):
    """λ/2 ‖w‖² + Σ_s loss_s(w), summed from the workers."""
    [wf] = client.scatter([w], broadcast=True, hash=False)
    losses = client.gather(client.map(DigitsShard.loss, shards, [wf] * len(shards)))
    return 0.5 * LAM * float(w @ w) + sum(losses)


def newton_cg(client, shards, n, gtol, max_newton, log):
    import matfree
    from matfree.distributed import ShardedSum
    from matfree.solvers import cg

    w = np.zeros(n)
    g0norm = None
    totals = dict(products=0, product_seconds=0.0, newton=0)
    for k in range(max_newton + 1):
        [wf] = client.scatter([w], broadcast=True, hash=False)
        pieces = client.gather(client.map(DigitsShard.loss_grad, shards, [wf] * len(shards)))
        f = 0.5 * LAM * float(w @ w) + sum(p[0] for p in pieces)
        g = LAM * w + sum(p[1] for p in pieces)
        gnorm = float(np.linalg.norm(g))
        g0norm = gnorm if g0norm is None else g0norm
        if gnorm <= gtol * g0norm or k == max_newton:
            log(f"  {k:2d}  f = {f:.10f}   ‖g‖ = {gnorm:.2e}   (stop)")
            break
        # the data Hessian at w: one HVP object per shard, built next to its data
        hessians = client.map(DigitsShard.hessian_at, shards, [wf] * len(shards), pure=False)
        with ShardedSum(client, hessians, like=w, positive_semidefinite=True, timeout=60) as H:
            M = matfree.Diagonal(1.0 / (H.diagonal() + LAM))  # Jacobi: exact diagonal
            eta = min(0.5, math.sqrt(gnorm / g0norm))
            t0 = time.perf_counter()
            res = cg(H, -g, damping=LAM, M=M, rtol=eta)
            totals["product_seconds"] += time.perf_counter() - t0
            totals["products"] += res.num_matvecs
        p = res.x
        # Armijo backtracking (the Newton step is accepted almost always)
        step, slope = 1.0, float(g @ p)
        while _objective(client, shards, w + step * p) > f + 1e-4 * step * slope:
            step *= 0.5
        log(
            f"  {k:2d}  f = {f:.10f}   ‖g‖ = {gnorm:.2e}   CG: {res.num_iters:2d} its "
            f"(rtol {eta:.1e}, {res.status})   step {step:g}"
        )
        w = w + step * p
        totals["newton"] += 1
    return w, f, totals


def _sklearn_reference(num_features):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    X = np.hstack([X / 16.0, np.ones((X.shape[0], 1))])
    y = (y >= 5).astype(float)
    clf = LogisticRegression(C=1.0 / LAM, fit_intercept=False, tol=1e-12, max_iter=10_000)
    clf.fit(X, y)
    w = clf.coef_.ravel()
    z = np.where(y > 0, 1.0, -1.0) * (X @ w)
    f = 0.5 * LAM * float(w @ w) + float(np.logaddexp(0.0, -z).sum())
    assert w.shape == (num_features,)
    return w, f, X, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="CI mode: 2 shards, gtol 1e-3")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=None)
    args = parser.parse_args(argv)
    num_shards = args.shards or (2 if args.fast else 4)
    gtol = 1e-3 if args.fast else 1e-9

    from dask.distributed import Client, LocalCluster

    t_start = time.perf_counter()
    with LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
    ) as cluster, Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        # create each shard on a worker (contiguous blocks); the data never leaves it
        shards = [
            client.submit(
                DigitsShard, s, num_shards, pure=False,
                workers=[workers[s * len(workers) // num_shards]], allow_other_workers=True,
            )
            for s in range(num_shards)
        ]
        client.gather(client.map(lambda d: d.X.shape, shards))  # wait; moves only shapes
        n = 65
        print(
            f"logistic regression on the digits data (1797 x {n}), {num_shards} shards "
            f"on {len(workers)} Dask workers, λ = {LAM}"
        )
        t0 = time.perf_counter()
        w, f, totals = newton_cg(client, shards, n, gtol, max_newton=30, log=print)
        t_solve = time.perf_counter() - t0

        # a spot check of the distributed Hessian product against the dense one
        from matfree.distributed import ShardedSum

        [wf] = client.scatter([w], broadcast=True, hash=False)
        hessians = client.map(DigitsShard.hessian_at, shards, [wf] * num_shards, pure=False)
        with ShardedSum(client, hessians, like=w, timeout=60) as H:
            v = np.random.default_rng(0).standard_normal(n)
            Hv = H @ v

    w_ref, f_ref, X, y = _sklearn_reference(n)
    p = _sigmoid(X @ w)
    Hv_dense = X.T @ (p * (1 - p) * (X @ v))
    rel_w = float(np.linalg.norm(w - w_ref) / np.linalg.norm(w_ref))
    rel_f = abs(f - f_ref) / abs(f_ref)
    rel_h = float(np.linalg.norm(Hv - Hv_dense) / np.linalg.norm(Hv_dense))
    accuracy = float(np.mean((X @ w > 0) == (y > 0)))
    per_product = 1e3 * totals["product_seconds"] / max(totals["products"], 1)
    print()
    print(f"{'':28s}{'matfree (Dask)':>18s}{'scikit-learn':>18s}")
    print(f"{'objective':28s}{f:18.10f}{f_ref:18.10f}")
    print(f"{'training accuracy':28s}{accuracy:18.4f}")
    print(f"relative difference of w        {rel_w:.2e}")
    print(f"relative difference of f        {rel_f:.2e}")
    print(f"‖Hv - H_dense v‖ / ‖H_dense v‖  {rel_h:.2e}")
    print(
        f"{totals['newton']} Newton steps, {totals['products']} distributed Hessian products, "
        f"{per_product:.1f} ms per CG iteration (product + vector updates); "
        f"Newton-CG {t_solve:.1f} s, script {time.perf_counter() - t_start:.1f} s"
    )
    ok = rel_h < 1e-12 and rel_f < (1e-6 if args.fast else 1e-10) and rel_w < (
        1e-2 if args.fast else 1e-5
    )
    if not ok:
        print("MISMATCH with the dense / scikit-learn reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
