"""asv benchmarks of matfree.solvers and matfree.precond, side by side with SciPy.

* ``CGPoisson``: a fixed number of CG iterations on the 2-D Poisson matrix,
  ``matfree.cg`` vs ``scipy.sparse.linalg.cg`` (time per iteration), and
  the iterations each needs on a damped system.
* ``MultiShift``: 8 shifts 1e-4 ... 1 by multi-shift CG vs 8 separate
  solves (SciPy, and matfree's own) on the Poisson matrix (vector-bound)
  and on a dense SPD matrix with eigenvalues i^-1 (matvec-bound), matfree
  on NumPy and PyTorch.
* ``NystromPCG``: Nyström-preconditioned CG on an RBF kernel matrix.
* ``Minres``: MINRES on an indefinite shifted Poisson matrix vs SciPy.
* ``SteihaugCG``: the trust-region subproblem on an indefinite matrix.

BLAS threads are pinned to ``common.THREADS`` in every ``setup``.
"""

import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import matfree
from matfree import precond
from matfree._backend import to_numpy
from matfree.solvers import cg, minres, steihaug_cg

from . import common

SHIFTS = np.geomspace(1e-4, 1.0, 8)
RTOL = 1e-6


@functools.lru_cache(maxsize=4)
def _poisson(m):
    return common.poisson2d(m)


@functools.lru_cache(maxsize=2)
def _power_law(n):
    A, _ = common.power_law_spd(n, c=1.0, seed=0)
    return np.ascontiguousarray((A + A.T) / 2)


@functools.lru_cache(maxsize=2)
def _kernel(n, seed=0):
    X = np.random.default_rng(seed).uniform(size=(n, 3))
    sq = np.sum(X * X, axis=1)
    D = np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0)
    return np.exp(-D / (2 * 0.5**2))


def _rhs(n, seed=1):
    return np.random.default_rng(seed).standard_normal(n)


def _scipy_cg_count(A, b, **kw):
    count = [0]
    x, _ = spla.cg(A, b, callback=lambda _: count.__setitem__(0, count[0] + 1), **kw)
    return x, count[0]


class CGPoisson:
    """CG on the 2-D Poisson matrix (n = m^2): time of 50 iterations and iterations to converge."""

    params = (["matfree", "scipy"], [100, 1000])
    param_names = ["method", "m"]
    timeout = 300

    def setup(self, method, m):
        self._threads = common.pin_threads()
        self.A = _poisson(m)
        self.n = self.A.shape[0]
        self.op = matfree.Sparse(self.A)
        self.b = _rhs(self.n)
        self.A_damped = (self.A + 1e-2 * sp.identity(self.n, format="csr")).tocsr()

    def teardown(self, method, m):
        self._threads.restore_original_limits()

    def time_50_iterations(self, method, m):
        if method == "matfree":
            cg(self.op, self.b, rtol=0.0, maxiter=50)
        else:
            spla.cg(self.A, self.b, rtol=0.0, maxiter=50)

    def track_iterations_damped(self, method, m):
        """Iterations to rtol=1e-8 for (A + 0.01 I) x = b (equal for both)."""
        if method == "matfree":
            return cg(self.op, self.b, damping=1e-2, rtol=1e-8).num_iters
        return _scipy_cg_count(self.A_damped, self.b, rtol=1e-8)[1]

    track_iterations_damped.unit = "iterations"


class MultiShift:
    """8 shifts 1e-4 ... 1: one multi-shift CG vs 8 separate solves."""

    params = (
        ["poisson-64", "dense-1000", "poisson-1000", "dense-4000"],
        ["matfree-multishift", "matfree-multishift-torch", "scipy-separate", "matfree-separate"],
    )
    param_names = ["problem", "method"]
    timeout = 900

    def setup(self, problem, method):
        self._threads = common.pin_threads()
        kind, size = problem.split("-")
        size = int(size)
        torch = method.endswith("torch")
        if torch and ("torch" not in common.BACKENDS or kind == "poisson"):
            raise NotImplementedError("multi-shift on torch is benchmarked on the dense problem")
        if kind == "poisson":
            self.A = _poisson(size)
            self.op = matfree.Sparse(self.A)
            eye = sp.identity(self.A.shape[0], format="csr")
            self.shifted = [(self.A + s * eye).tocsr() for s in SHIFTS]
        else:
            self.A = _power_law(size)
            self.op = matfree.Dense(common.to_backend(self.A, "torch" if torch else "numpy"),
                                    symmetric=True)
            self.shifted = None  # formed on demand by the SciPy method only
        n = self.A.shape[0]
        self.b = common.to_backend(_rhs(n), "torch" if torch else "numpy")
        if method == "scipy-separate" and self.shifted is None:
            self.shifted = [self.A + s * np.eye(n) for s in SHIFTS]

    def teardown(self, problem, method):
        self._threads.restore_original_limits()

    def _run(self, method):
        """Solutions (n x 8, NumPy) and the products spent."""
        if method.startswith("matfree-multishift"):
            res = cg(self.op, self.b, damping=SHIFTS, rtol=RTOL)
            return to_numpy(res.x), res.num_matvecs
        if method == "matfree-separate":
            runs = [cg(self.op, self.b, damping=float(s), rtol=RTOL) for s in SHIFTS]
            return np.column_stack([r.x for r in runs]), sum(r.num_matvecs for r in runs)
        runs = [_scipy_cg_count(As, self.b, rtol=RTOL, maxiter=10 * self.A.shape[0])
                for As in self.shifted]
        return np.column_stack([x for x, _ in runs]), sum(c for _, c in runs)

    def time_solve_8_shifts(self, problem, method):
        self._run(method)

    def peakmem_solve_8_shifts(self, problem, method):
        self._run(method)

    def track_matvecs(self, problem, method):
        return self._run(method)[1]

    track_matvecs.unit = "products"


class NystromPCG:
    """(K + mu I) x = b for an RBF kernel matrix K (n = 600): CG vs Nyström PCG of a given rank."""

    params = ([50, 0, 200], [1e-3, 1e-5])
    param_names = ["rank", "damping"]
    timeout = 300

    def setup(self, rank, damping):
        self._threads = common.pin_threads()
        self.K = matfree.Dense(_kernel(600), symmetric=True)
        self.b = _rhs(600)

    def teardown(self, rank, damping):
        self._threads.restore_original_limits()

    def _solve(self, rank, damping):
        M = precond.nystrom(self.K, rank, damping, rng=0) if rank else None
        res = cg(self.K, self.b, damping=damping, M=M, rtol=1e-8, maxiter=20000)
        return res, (M.setup_matvecs if M is not None else 0)

    def time_solve(self, rank, damping):
        self._solve(rank, damping)

    def track_iterations(self, rank, damping):
        return self._solve(rank, damping)[0].num_iters

    track_iterations.unit = "iterations"

    def track_matvecs_including_sketch(self, rank, damping):
        res, setup = self._solve(rank, damping)
        return res.num_matvecs + setup

    track_matvecs_including_sketch.unit = "products"


class Minres:
    """(A - sigma I) x = b with sigma inside the spectrum of the Poisson matrix."""

    params = (["matfree", "scipy"], [40, 200])
    param_names = ["method", "m"]
    timeout = 300
    sigma = 1.3

    def setup(self, method, m):
        self._threads = common.pin_threads()
        self.A = _poisson(m)
        self.op = matfree.Sparse(self.A)
        self.b = _rhs(self.A.shape[0])

    def teardown(self, method, m):
        self._threads.restore_original_limits()

    def _solve(self, method):
        maxiter = 50 * self.A.shape[0]
        if method == "matfree":
            res = minres(self.op, self.b, shift=-self.sigma, rtol=1e-8, maxiter=maxiter)
            return res.x, res.num_iters
        count = [0]
        x, _ = spla.minres(self.A, self.b, shift=self.sigma, rtol=1e-8, maxiter=maxiter,
                           callback=lambda _: count.__setitem__(0, count[0] + 1))
        return x, count[0]

    def time_solve(self, method, m):
        self._solve(method)

    def track_iterations(self, method, m):
        return self._solve(method)[1]

    track_iterations.unit = "iterations"

    def track_relative_residual(self, method, m):
        x = self._solve(method)[0]
        r = self.A @ x - self.sigma * x - self.b
        return float(np.linalg.norm(r) / np.linalg.norm(self.b))


class SteihaugCG:
    """Trust-region subproblem on an indefinite dense matrix GGᵀ/n - 0.05 I (few negative eigenvalues)."""

    params = ([300, 3000], [1000.0, 30.0])
    param_names = ["n", "radius"]

    def setup(self, n, radius):
        self._threads = common.pin_threads()
        rng = np.random.default_rng(0)
        G = rng.standard_normal((n, n)) / np.sqrt(n)
        H = G @ G.T - 0.05 * np.eye(n)
        self.A = matfree.Dense((H + H.T) / 2, symmetric=True)
        self.g = rng.standard_normal(n)

    def teardown(self, n, radius):
        self._threads.restore_original_limits()

    def time_steihaug(self, n, radius):
        steihaug_cg(self.A, self.g, radius)

    def track_iterations(self, n, radius):
        return steihaug_cg(self.A, self.g, radius).num_iters

    track_iterations.unit = "iterations"

    def track_model_decrease_over_cauchy(self, n, radius):
        """m(0) - m(p) of the Steihaug step over that of the Cauchy point (>= 1)."""
        res = steihaug_cg(self.A, self.g, radius)
        g, Ag = self.g, self.A @ self.g
        gnorm = np.linalg.norm(g)
        gAg = g @ Ag
        tau = 1.0 if gAg <= 0 else min(gnorm**3 / (radius * gAg), 1.0)
        t = tau * radius / gnorm
        cauchy = t * gnorm**2 - 0.5 * t * t * gAg
        return res.info["model_decrease"] / cauchy
