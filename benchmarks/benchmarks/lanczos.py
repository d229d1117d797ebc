"""asv benchmarks of matfree.lanczos and matfree.spectral (issue 3), side by side with SciPy.

* ``EigshPowerLaw``: top-10 eigenpairs of a dense SPD operator with
  eigenvalues ``i^-1`` (n = 1000 / 4000), matfree ``eigsh`` on NumPy and
  PyTorch vs ARPACK (``scipy.sparse.linalg.eigsh``): time, products, and the
  largest relative eigenvalue error.
* ``EigshPoisson``: the same on the 2-D Poisson matrix (m x m grid,
  clustered top spectrum with double eigenvalues), ARPACK vs matfree with
  block sizes 1 and 2 (the number of exact eigenvalues found is tracked).
* ``LanczosReorth``: 100 Lanczos steps with full / partial / no
  reorthogonalisation: time and loss of orthogonality.
* ``SLQLogdet``: SLQ log-determinant of a shifted Poisson matrix (exact
  value known): time, products and relative error.

BLAS (and torch) threads are pinned to ``common.THREADS`` in every
``setup``; seeds are fixed.  The first parameter of every class runs in well
under two seconds.
"""

import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import matfree
from matfree.lanczos import eigsh, lanczos
from matfree.spectral import SLQ

from . import common

K = 10
TOL = 1e-8


@functools.lru_cache(maxsize=2)
def _power_law(n):
    A, lam = common.power_law_spd(n, c=1.0, seed=0)
    return np.ascontiguousarray((A + A.T) / 2), np.sort(lam)


@functools.lru_cache(maxsize=3)
def _poisson(m):
    t = 2.0 - 2.0 * np.cos(np.arange(1, m + 1) * np.pi / (m + 1))
    top = np.sort(t)[-(K + 1) :]
    return common.poisson2d(m), np.sort(np.add.outer(top, top).ravel())[-K:]


def _counting(A):
    count = [0]

    def mv(x):
        count[0] += 1
        return A @ x

    return spla.LinearOperator(A.shape, matvec=mv, dtype=np.float64), count


def _found(got, exact):
    got = list(np.sort(np.asarray(got)))
    hits = 0
    for lam in exact:
        j = int(np.argmin([abs(g - lam) for g in got]))
        if abs(got[j] - lam) <= 1e-6 * abs(lam):
            hits += 1
            got.pop(j)
    return hits


class EigshPowerLaw:
    """Top-10 eigenpairs of Q diag(i^-1) Q^T: matfree (NumPy, torch) vs ARPACK."""

    params = [[1000, 4000], ["arpack"] + [f"matfree-{b}" for b in common.BACKENDS]]
    param_names = ["n", "solver"]
    timeout = 300

    def setup(self, n, solver):
        self._limits = common.pin_threads()
        M, lam = _power_law(n)
        self.exact = lam[-K:]
        self.v0 = np.random.default_rng(0).standard_normal(n)
        if solver == "arpack":
            self.M = M
        else:
            backend = solver.split("-", 1)[1]
            self.A = matfree.Dense(common.to_backend(M, backend), symmetric=True)
            self.v0b = common.to_backend(self.v0, backend)

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def _run(self, solver):
        if solver == "arpack":
            op, count = _counting(self.M)
            w = spla.eigsh(op, k=K, which="LA", tol=TOL, v0=self.v0)[0]
            return np.sort(w), count[0]
        res = eigsh(self.A, K, "LA", tol=TOL, v0=self.v0b)
        return matfree._backend.to_numpy(res.eigenvalues), res.num_matvecs

    def time_eigsh(self, n, solver):
        self._run(solver)

    def track_num_matvecs(self, n, solver):
        return self._run(solver)[1]

    track_num_matvecs.unit = "matvecs"

    def track_max_relative_error(self, n, solver):
        w = self._run(solver)[0]
        return float(np.max(np.abs(w - self.exact) / self.exact))

    track_max_relative_error.unit = "relative error"

    def peakmem_eigsh(self, n, solver):
        self._run(solver)


class EigshPoisson:
    """Top-10 eigenpairs of the 2-D Poisson matrix (double eigenvalues at the top)."""

    params = [[60, 150], ["arpack", "matfree-block1", "matfree-block2", "matfree-block1-nocheck"]]
    param_names = ["m", "solver"]
    timeout = 600

    def setup(self, m, solver):
        self._limits = common.pin_threads()
        self.M, self.exact = _poisson(m)
        self.v0 = np.random.default_rng(0).standard_normal(m * m)
        self.A = matfree.Sparse(self.M, symmetric=True)

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def _run(self, solver):
        if solver == "arpack":
            op, count = _counting(self.M)
            w = spla.eigsh(op, k=K, which="LA", tol=TOL, v0=self.v0)[0]
            return np.sort(w), count[0]
        check = not solver.endswith("-nocheck")  # the multiplicity check (default) or not
        b = int(solver.removesuffix("-nocheck")[-1])
        res = eigsh(
            self.A, K, "LA", tol=TOL, v0=self.v0 if b == 1 else None, rng=0, block_size=b,
            check_multiplicity=check,
        )
        return np.asarray(res.eigenvalues), res.num_matvecs

    def time_eigsh(self, m, solver):
        self._run(solver)

    def track_num_matvecs(self, m, solver):
        return self._run(solver)[1]

    track_num_matvecs.unit = "matvecs"

    def track_exact_eigenvalues_found(self, m, solver):
        return _found(self._run(solver)[0], self.exact)

    track_exact_eigenvalues_found.unit = "of 10"


class LanczosReorth:
    """100 Lanczos steps on a dense n = 2000 matrix with each reorthogonalisation."""

    params = [["none", "partial", "full"]]
    param_names = ["reorth"]
    timeout = 120

    def setup(self, reorth):
        self._limits = common.pin_threads()
        M, _ = _power_law(1000)
        self.A = matfree.Dense(M, symmetric=True)
        self.v0 = np.random.default_rng(0).standard_normal(1000)

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def _run(self, reorth):
        return lanczos(self.A, self.v0, 100, reorth=reorth)

    def time_lanczos(self, reorth):
        self._run(reorth)

    def track_loss_of_orthogonality(self, reorth):
        Q = self._run(reorth).basis
        return float(np.abs(Q.T @ Q - np.eye(Q.shape[1])).max())

    track_loss_of_orthogonality.unit = "max |Q^T Q - I|"


class SLQLogdet:
    """SLQ log-determinant of Poisson(m) + 0.01 I (exact value in closed form)."""

    params = [[100, 316], [10, 30]]
    param_names = ["m", "num_probes"]
    timeout = 300

    def setup(self, m, num_probes):
        self._limits = common.pin_threads()
        t = 2.0 - 2.0 * np.cos(np.arange(1, m + 1) * np.pi / (m + 1))
        self.exact = float(np.sum(np.log(np.add.outer(t, t).ravel() + 1e-2)))
        M = (common.poisson2d(m) + 1e-2 * sp.identity(m * m, format="csr")).tocsr()
        self.A = matfree.Sparse(M, positive_definite=True)

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def _run(self, num_probes, seed=0):
        return SLQ(self.A, num_probes=num_probes, num_steps=20, rng=seed).logdet()

    def time_slq_logdet(self, m, num_probes):
        self._run(num_probes)

    def track_num_matvecs(self, m, num_probes):
        return self._run(num_probes).num_matvecs

    track_num_matvecs.unit = "matvecs"

    def track_median_relative_error(self, m, num_probes):
        errs = [abs(float(self._run(num_probes, s).value) - self.exact) / abs(self.exact) for s in range(3)]
        return float(np.median(errs))

    track_median_relative_error.unit = "relative error"

    def peakmem_slq_logdet(self, m, num_probes):
        self._run(num_probes)
