"""asv benchmarks of matfree.sketch and matfree.quasinewton.

* ``RandomizedSVD``: matfree ``rsvd`` beside scikit-learn's
  ``randomized_svd`` and SciPy's ``svds`` on the same matrix with a
  power-law spectrum (time, peak memory, error relative to the optimal
  ``σ_{k+1}``), matfree on NumPy and PyTorch.
* ``Sketches``: ``reig`` and ``nystrom`` (time, error, products) and the
  Woodbury solve of ``nystrom(A) + λI``.
* ``QuasiNewton``: products with the L-BFGS two-loop inverse and compact
  Hessian, L-SR1 and DFP operators, and the cost of an update.

BLAS threads are pinned to ``common.THREADS`` in every ``setup``.
"""

import functools

import numpy as np
import scipy.sparse.linalg as spla
from sklearn.utils.extmath import randomized_svd

import matfree
from matfree import sketch as sk
from matfree._backend import to_numpy
from matfree.quasinewton import DFP, LBFGS, LSR1

from . import common

RANK, OVERSAMPLE, POWER_ITERS = 20, 10, 2


@functools.lru_cache(maxsize=4)
def _decaying(n, seed=0):
    """``U diag(j^-1) Vᵀ`` with Haar-random orthogonal ``U``, ``V``; and the spectrum."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    sig = np.arange(1, n + 1, dtype=float) ** -1.0
    return np.ascontiguousarray((U * sig) @ V.T), sig


@functools.lru_cache(maxsize=4)
def _psd(n, seed=0):
    A, lam = common.power_law_spd(n, c=2.0, seed=seed)
    return np.ascontiguousarray((A + A.T) / 2), lam


def _spectral_error(A, U, s, Vt):
    """‖A − U diag(s) Vt‖₂ by ARPACK on the residual (NumPy arrays)."""
    def mv(x):
        x = np.ravel(x)
        return A @ x - U @ (s * (Vt @ x))

    def rmv(y):
        y = np.ravel(y)
        return A.T @ y - Vt.T @ (s * (U.T @ y))

    R = spla.LinearOperator(A.shape, matvec=mv, rmatvec=rmv, dtype=A.dtype)
    return float(spla.svds(R, k=1, tol=1e-6, return_singular_vectors=False, random_state=0)[0])


class RandomizedSVD:
    """Rank-20 SVD of an n x n power-law matrix: matfree vs scikit-learn vs SciPy."""

    params = (["matfree-numpy", "matfree-torch", "sklearn", "svds"], [500, 2000])
    param_names = ["method", "n"]
    timeout = 300

    def setup(self, method, n):
        if method == "matfree-torch" and "torch" not in common.BACKENDS:
            raise NotImplementedError("torch is not installed")
        self._threads = common.pin_threads()
        self.A, self.sig = _decaying(n)
        self.Ab = common.to_backend(self.A, "torch" if method == "matfree-torch" else "numpy")

    def teardown(self, method, n):
        self._threads.restore_original_limits()

    def _run(self, method):
        if method.startswith("matfree"):
            res = sk.rsvd(self.Ab, RANK, oversample=OVERSAMPLE, power_iters=POWER_ITERS, rng=0)
            return tuple(to_numpy(x) for x in (res.U, res.s, res.V))
        if method == "sklearn":
            U, s, Vt = randomized_svd(self.A, RANK, n_oversamples=OVERSAMPLE, random_state=0)
            return U, s, Vt.T
        U, s, Vt = spla.svds(self.A, k=RANK, random_state=0)
        return U, s, Vt.T

    def time_svd(self, method, n):
        self._run(method)

    def peakmem_svd(self, method, n):
        self._run(method)

    def track_error_over_optimal(self, method, n):
        U, s, V = self._run(method)
        return _spectral_error(self.A, U, s, V.T) / self.sig[RANK]

    track_error_over_optimal.unit = "sigma_(k+1)"


class Sketches:
    """reig and Nyström on a PSD power-law (j^-2) matrix, NumPy and PyTorch."""

    params = (common.BACKENDS, [500, 2000])
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, backend, n):
        self._threads = common.pin_threads()
        self.A_np, self.lam = _psd(n)
        self.A = common.to_backend(self.A_np, backend)
        self.L = sk.nystrom(self.A, RANK, oversample=OVERSAMPLE, rng=0)
        self.P = self.L + 1e-3 * matfree.Identity(n)
        self.b = common.to_backend(np.ones(n), backend)

    def teardown(self, backend, n):
        self._threads.restore_original_limits()

    def time_nystrom(self, backend, n):
        sk.nystrom(self.A, RANK, oversample=OVERSAMPLE, rng=0)

    def time_reig(self, backend, n):
        sk.reig(self.A, RANK, oversample=OVERSAMPLE, power_iters=POWER_ITERS, rng=0)

    def time_nystrom_woodbury_solve(self, backend, n):
        self.P.solve(self.b)

    def track_nystrom_trace_error_over_optimal(self, backend, n):
        E = self.A_np - to_numpy(self.L.todense())
        return float(np.trace(E) / self.lam[RANK:].sum())

    track_nystrom_trace_error_over_optimal.unit = "optimal trace error"

    def track_reig_num_matvecs(self, backend, n):
        return sk.reig(self.A, RANK, oversample=OVERSAMPLE, power_iters=POWER_ITERS, rng=0).num_matvecs

    track_reig_num_matvecs.unit = "products"


class QuasiNewton:
    """Products with L-BFGS (m = 10), L-SR1 and DFP operators of size n."""

    params = (common.BACKENDS, [1000, 100_000])
    param_names = ["backend", "n"]

    def setup(self, backend, n):
        self._threads = common.pin_threads()
        rng = np.random.default_rng(0)
        d = np.linspace(1.0, 100.0, n)  # a diagonal quadratic
        self.pairs = []
        for _ in range(12):
            s = rng.standard_normal(n)
            self.pairs.append((common.to_backend(s, backend), common.to_backend(d * s, backend)))
        self.qn = {}
        for name, cls in (("lbfgs", LBFGS), ("lsr1", LSR1), ("dfp", DFP)):
            qn = cls(m=10)
            for s, y in self.pairs[:-1]:
                qn.update(s, y)
            self.qn[name] = qn
        self.H = self.qn["lbfgs"].inverse_hessian()
        self.B = self.qn["lbfgs"].hessian()
        self.S1 = self.qn["lsr1"].hessian()
        self.D1 = self.qn["dfp"].inverse_hessian()
        self.v = common.to_backend(rng.standard_normal(n), backend)
        self.V = common.to_backend(rng.standard_normal((n, 8)), backend)

    def teardown(self, backend, n):
        self._threads.restore_original_limits()

    def time_lbfgs_two_loop_matvec(self, backend, n):
        self.H @ self.v

    def time_lbfgs_two_loop_matmat8(self, backend, n):
        self.H @ self.V

    def time_lbfgs_compact_hessian_matvec(self, backend, n):
        self.B @ self.v

    def time_lsr1_hessian_matvec(self, backend, n):
        self.S1 @ self.v

    def time_dfp_inverse_matvec(self, backend, n):
        self.D1 @ self.v

    def time_lbfgs_update_and_operator(self, backend, n):
        qn = LBFGS(10)
        for s, y in self.pairs:
            qn.update(s, y)
        qn.inverse_hessian() @ self.v
