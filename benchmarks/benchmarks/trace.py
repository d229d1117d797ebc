"""asv benchmarks of the trace, diagonal and Frobenius-norm estimators (issue 4).

Dense power-law operators Q diag(i^-c) Qᵀ, wrapped so that the estimators
cannot read the answer off the matrix (``use_exact=False``).  Each class
times the estimator and tracks its relative error and products; the smallest
parameters run in well under two seconds.  BLAS and torch threads are pinned
to ``common.THREADS``; seeds are fixed in ``setup``.
"""

import numpy as np

import matfree
from matfree.diagonal import diagonal
from matfree.trace import frobenius_norm, trace

from .common import BACKENDS, pin_threads, power_law_spd, to_backend

_MATRICES = {}


def _matrix(n, c):
    """Cached dense SPD test matrix and its spectrum (the QR behind it is the costly part).

    Built with one BLAS thread: on a busy machine a two-thread QR ran 25x
    slower here, and setup is not what is measured.
    """
    from threadpoolctl import threadpool_limits

    key = (n, c)
    if key not in _MATRICES:
        with threadpool_limits(limits=1):
            _MATRICES[key] = power_law_spd(n, c=c, seed=0)
    return _MATRICES[key]


def _sync(x):
    """Force the result to the host so GPU work is finished inside the timing."""
    return float(matfree._backend.to_numpy(x).reshape(-1)[0])


class TraceEstimators:
    """Time, relative error and products of each trace estimator at a fixed budget (i^-2, n=500)."""

    params = [BACKENDS, ["hutchinson", "hutchpp", "na_hutchpp", "xtrace", "xnystrace"], [30, 300]]
    param_names = ["backend", "method", "num_matvecs"]
    timeout = 120

    def setup(self, backend, method, num_matvecs):
        self._limits = pin_threads()
        M, lam = _matrix(500, 2.0)
        self.A = matfree.Dense(to_backend(M, backend), symmetric=True)
        self.truth = float(lam.sum())
        self.budget = num_matvecs - num_matvecs % 3 if method == "hutchpp" else num_matvecs

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def _run(self, method, seed=0):
        return trace(self.A, method=method, num_matvecs=self.budget, use_exact=False, rng=seed)

    def time_trace(self, backend, method, num_matvecs):
        _sync(self._run(method).value)

    def track_median_relative_error(self, backend, method, num_matvecs):
        errs = [abs(float(self._run(method, s)) - self.truth) / self.truth for s in range(5)]
        return float(np.median(errs))

    track_median_relative_error.unit = "relative error"

    def track_num_matvecs(self, backend, method, num_matvecs):
        return self._run(method).num_matvecs

    track_num_matvecs.unit = "matvecs"

    def peakmem_trace(self, backend, method, num_matvecs):
        self._run(method)


class AdaptiveTrace:
    """Products and time of adaptive runs to a 2% tolerance (i^-1 spectrum, n=500)."""

    params = [["xtrace", "hutchpp", "xnystrace", "hutchinson"]]
    param_names = ["method"]
    timeout = 120

    def setup(self, method):
        self._limits = pin_threads()
        M, lam = _matrix(500, 1.0)
        self.A = matfree.Dense(M, symmetric=True)
        self.truth = float(lam.sum())

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def _run(self, method):
        return trace(self.A, method=method, rtol=0.02, use_exact=False, rng=0)

    def time_adaptive(self, method):
        self._run(method)

    def track_num_matvecs(self, method):
        return self._run(method).num_matvecs

    track_num_matvecs.unit = "matvecs"

    def track_relative_error(self, method):
        return abs(float(self._run(method)) - self.truth) / self.truth

    track_relative_error.unit = "relative error"


class DiagonalEstimators:
    """Diagonal estimators on a low-rank-plus-diagonal Hessian-like matrix."""

    params = [BACKENDS, ["hutchinson", "xdiag", "xnysdiag"], [40, 200]]
    param_names = ["backend", "method", "num_matvecs"]
    timeout = 120

    def setup(self, backend, method, num_matvecs):
        self._limits = pin_threads()
        n = 1000
        rng = np.random.default_rng(0)
        U = rng.standard_normal((n, 10))
        M = 10 * (U @ U.T) / n + np.diag(np.linspace(1.0, 2.0, n))
        self.d = np.diag(M).copy()
        self.A = matfree.Dense(to_backend(M, backend), symmetric=True)

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def _run(self, method, budget):
        return diagonal(self.A, method=method, num_matvecs=budget, use_exact=False, rng=0)

    def time_diagonal(self, backend, method, num_matvecs):
        _sync(self._run(method, num_matvecs).value)

    def track_relative_error(self, backend, method, num_matvecs):
        est = matfree._backend.to_numpy(self._run(method, num_matvecs).value)
        return float(np.linalg.norm(est - self.d) / np.linalg.norm(self.d))

    track_relative_error.unit = "relative error"


class BlockProbing:
    """Hutchinson with 300 probes: one matmat of 300 columns vs 300 matvec calls (dense baseline)."""

    params = [[500, 4000]]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self._limits = pin_threads()
        rng = np.random.default_rng(0)
        G = rng.standard_normal((n, n))
        self.A = matfree.Dense((G + G.T) / 2, symmetric=True)
        self.Z = rng.choice([-1.0, 1.0], size=(n, 300))

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def time_matmat_block(self, n):
        trace(self.A, method="hutchinson", num_matvecs=300, block_size=300, use_exact=False,
              rng=0)

    def time_matvec_loop(self, n):
        A, Z = self.A, self.Z
        sum(float(Z[:, j] @ A.matvec(Z[:, j])) for j in range(300))

    def time_dense_numpy_trace(self, n):
        np.trace(self.A.A)


class FrobeniusNorm:
    """Hutchinson on AᵀA for a rectangular operator."""

    params = [[50, 300]]
    param_names = ["num_matvecs"]

    def setup(self, num_matvecs):
        self._limits = pin_threads()
        rng = np.random.default_rng(0)
        self.G = rng.standard_normal((800, 1000)) / np.arange(1, 1001)
        self.A = matfree.Dense(self.G)
        self.truth = float(np.linalg.norm(self.G))

    def teardown(self, *params):
        self._limits.restore_original_limits()

    def time_frobenius(self, num_matvecs):
        frobenius_norm(self.A, num_matvecs=num_matvecs, use_exact=False, rng=0)

    def track_relative_error(self, num_matvecs):
        est = frobenius_norm(self.A, num_matvecs=num_matvecs, use_exact=False, rng=0)
        return abs(float(est) - self.truth) / self.truth

    track_relative_error.unit = "relative error"
