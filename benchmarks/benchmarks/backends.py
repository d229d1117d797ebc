"""asv benchmarks of matvec-bound work on every CPU backend: numpy, numpy+numba, torch.

One class per workload of issue 7, each at two sizes and parametrised by
backend:

* ``numpy``       -- NumPy arrays, Numba kernels switched off (the pure
  array-API path, SciPy's single-threaded CSR product);
* ``numpy+numba`` -- NumPy arrays with the fused/parallel Numba kernels
  (compiled, or loaded from the on-disk cache, in ``setup``, so compile time
  is never timed; ``track_kernel_first_call_seconds`` reports it);
* ``torch``       -- PyTorch CPU tensors (a sparse CSR tensor for Poisson).

``time_*`` is the wall time, ``peakmem_*`` the peak resident memory (asv),
``track_*`` the products spent or the error.  Sizes: the smaller parameter
runs in well under 2 s (the CI smoke run calls it once).  Threads: BLAS,
PyTorch and Numba are pinned to ``common.THREADS``.

Skipped (``NotImplementedError`` in ``setup``) when a backend's library is
missing.
"""

import functools
import importlib.util

import numpy as np

import matfree
from matfree import _kernels
from matfree._backend import to_numpy

from . import common

BACKENDS = ["numpy", "numpy+numba"] + (["torch"] if importlib.util.find_spec("torch") else [])


# ----------------------------------------------------------------------
# Backend plumbing
# ----------------------------------------------------------------------


class _Backend:
    """Pins threads, switches the Numba kernels on or off, converts inputs."""

    def setup_backend(self, backend):
        if backend == "numpy+numba" and not importlib.util.find_spec("numba"):
            raise NotImplementedError("numba is not installed")
        if backend == "torch" and "torch" not in BACKENDS:
            raise NotImplementedError("torch is not installed")
        self._threads = common.pin_threads()
        self._kernels_were = _kernels.active()
        _kernels.set_enabled(backend == "numpy+numba")
        if backend == "numpy+numba":
            import numba

            numba.set_num_threads(min(common.THREADS, numba.config.NUMBA_NUM_THREADS))
            self.first_call = sum(_kernels.warm_up().values())
        else:
            self.first_call = 0.0
        self.backend = backend

    def teardown(self, *params):
        _kernels.set_enabled(self._kernels_were)
        self._threads.restore_original_limits()

    def array(self, a):
        return common.to_backend(np.ascontiguousarray(a), "torch" if self.backend == "torch" else "numpy")

    def sparse(self, M, **flags):
        """An operator for the SciPy CSR matrix ``M`` on this backend."""
        if self.backend != "torch":
            return matfree.Sparse(M, **flags)
        import warnings

        import torch

        with warnings.catch_warnings():  # "sparse CSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            T = torch.sparse_csr_tensor(
                torch.from_numpy(M.indptr.astype(np.int64)),
                torch.from_numpy(M.indices.astype(np.int64)),
                torch.from_numpy(M.data),
                size=M.shape,
                check_invariants=False,
            )
        return matfree.from_hvp(
            lambda v: T @ v,
            like=torch.zeros(M.shape[0], dtype=torch.float64),
            batched=lambda V: T @ V,
            positive_semidefinite=flags.get("positive_definite", False),
            check_finite=False,
        )

    def dense(self, A, **flags):
        return matfree.Dense(self.array(A), **flags)

    def track_kernel_first_call_seconds(self, *params):
        """Seconds the Numba kernels took on their first call (compile or cache load)."""
        return self.first_call

    track_kernel_first_call_seconds.unit = "seconds"


@functools.lru_cache(maxsize=4)
def _poisson(m, shift=0.0):
    A = common.poisson2d(m)
    if shift:
        import scipy.sparse as sp

        A = (A + shift * sp.identity(A.shape[0], format="csr")).tocsr()
    return A


@functools.lru_cache(maxsize=2)
def _power_law(n, c=2.0):
    A, lam = common.power_law_spd(n, c=c, seed=0)
    return np.ascontiguousarray((A + A.T) / 2), lam


def _rhs(n, seed=1):
    return np.random.default_rng(seed).standard_normal(n)


# ----------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------


class CG(_Backend):
    """50 CG iterations on the 2-D Poisson matrix (n = m^2)."""

    params = (BACKENDS, [100, 1000])
    param_names = ["backend", "m"]
    timeout = 300

    def setup(self, backend, m):
        self.setup_backend(backend)
        self.A = self.sparse(_poisson(m), positive_definite=True)
        self.b = self.array(_rhs(m * m))

    def _run(self):
        from matfree.solvers import cg

        return cg(self.A, self.b, rtol=0.0, maxiter=50)

    def time_cg_50_iterations(self, backend, m):
        self._run()

    def peakmem_cg_50_iterations(self, backend, m):
        self._run()

    def track_num_matvecs(self, backend, m):
        return self._run().num_matvecs


class MultiShiftCG(_Backend):
    """Multi-shift CG, 8 shifts 1e-3 ... 1, 40 iterations, Poisson matrix."""

    params = (BACKENDS, [100, 500])
    param_names = ["backend", "m"]
    timeout = 300

    def setup(self, backend, m):
        self.setup_backend(backend)
        self.A = self.sparse(_poisson(m), positive_definite=True)
        self.b = self.array(_rhs(m * m))
        self.shifts = np.geomspace(1e-3, 1.0, 8)

    def _run(self):
        from matfree.solvers import cg

        return cg(self.A, self.b, damping=self.shifts, rtol=0.0, maxiter=40)

    def time_multishift(self, backend, m):
        self._run()

    def peakmem_multishift(self, backend, m):
        self._run()

    def track_num_matvecs(self, backend, m):
        return self._run().num_matvecs


class Eigsh(_Backend):
    """Top-10 eigenpairs (tol 1e-8) of the Poisson matrix by thick-restart Lanczos."""

    params = (BACKENDS, [30, 300])
    param_names = ["backend", "m"]
    timeout = 600

    def setup(self, backend, m):
        self.setup_backend(backend)
        self.A = self.sparse(_poisson(m), positive_definite=True)

    def _run(self):
        from matfree.lanczos import eigsh

        return eigsh(self.A, k=10, which="LA", tol=1e-8, rng=0)

    def time_eigsh_top10(self, backend, m):
        self._run()

    def peakmem_eigsh_top10(self, backend, m):
        self._run()

    def track_num_matvecs(self, backend, m):
        return self._run().num_matvecs


class TraceEstimators(_Backend):
    """XTrace and Hutchinson with 100 products on a dense n x n matrix, spectrum i^-2."""

    params = (BACKENDS, ["xtrace", "hutchinson"], [500, 2000])
    param_names = ["backend", "method", "n"]
    timeout = 300

    def setup(self, backend, method, n):
        self.setup_backend(backend)
        A, lam = _power_law(n)
        self.A = self.dense(A, symmetric=True)
        self.exact = float(lam.sum())

    def _run(self, method):
        from matfree.trace import trace

        return trace(self.A, method, 100, use_exact=False, rng=0)

    def time_trace(self, backend, method, n):
        self._run(method)

    def peakmem_trace(self, backend, method, n):
        self._run(method)

    def track_relative_error(self, backend, method, n):
        return abs(float(to_numpy(self._run(method).value)) - self.exact) / self.exact


class SLQLogdet(_Backend):
    """SLQ log-determinant, 30 probes x 20 steps, Poisson m^2 + 0.1 I."""

    params = (BACKENDS, [30, 100])
    param_names = ["backend", "m"]
    timeout = 300

    def setup(self, backend, m):
        self.setup_backend(backend)
        M = _poisson(m, 0.1)
        self.A = self.sparse(M, positive_definite=True)
        t = 4.0 * np.sin(np.arange(1, m + 1) * np.pi / (2 * (m + 1))) ** 2
        self.exact = float(np.sum(np.log(t[:, None] + t[None, :] + 0.1)))

    def _run(self):
        from matfree.spectral import logdet

        return logdet(self.A, num_probes=30, num_steps=20, rng=0)

    def time_logdet(self, backend, m):
        self._run()

    def peakmem_logdet(self, backend, m):
        self._run()

    def track_relative_error(self, backend, m):
        return abs(float(to_numpy(self._run().value)) - self.exact) / abs(self.exact)


class Sketches(_Backend):
    """Rank-20 randomized SVD (2 power iterations) and Nyström of a dense PSD matrix."""

    params = (BACKENDS, [500, 2000])
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, backend, n):
        self.setup_backend(backend)
        A, _ = _power_law(n)
        self.A = self.dense(A, symmetric=True, positive_semidefinite=True)

    def time_rsvd(self, backend, n):
        from matfree.sketch import rsvd

        rsvd(self.A, 20, power_iters=2, rng=0)

    def peakmem_rsvd(self, backend, n):
        from matfree.sketch import rsvd

        rsvd(self.A, 20, power_iters=2, rng=0)

    def time_nystrom(self, backend, n):
        from matfree.sketch import nystrom

        nystrom(self.A, 20, rng=0)


class SparseProduct(_Backend):
    """One product with the Poisson matrix (SciPy CSR, the Numba kernel, torch CSR)."""

    params = (BACKENDS, [300, 1000])
    param_names = ["backend", "m"]

    def setup(self, backend, m):
        self.setup_backend(backend)
        self.A = self.sparse(_poisson(m))
        self.v = self.array(_rhs(m * m))
        self.V = self.array(np.random.default_rng(2).standard_normal((m * m, 8)))

    def time_matvec(self, backend, m):
        self.A @ self.v

    def time_matmat_8(self, backend, m):
        self.A @ self.V
