"""Shared helpers for the asv benchmarks: pinned BLAS threads, backends, test matrices."""

import importlib.util

import numpy as np

#: BLAS threads used by every benchmark (the machine has 2 cores)
THREADS = 2

BACKENDS = ["numpy"] + (["torch"] if importlib.util.find_spec("torch") else [])


def pin_threads(n=THREADS):
    """Pin BLAS, torch and Numba thread pools; returns the threadpoolctl controller."""
    from threadpoolctl import threadpool_limits

    ctl = threadpool_limits(limits=n)
    if importlib.util.find_spec("torch"):
        import torch

        torch.set_num_threads(n)
    if importlib.util.find_spec("numba"):
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return ctl


def to_backend(a, backend):
    """Move a NumPy array to ``backend`` ("numpy" or "torch")."""
    if backend == "numpy":
        return a
    if backend == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(a))
    raise ValueError(backend)


def power_law_spd(n, c=1.0, seed=0):
    """Dense SPD matrix Q diag(i^-c) Qᵀ with a random orthogonal Q."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.arange(1, n + 1, dtype=float) ** (-c)
    return (Q * lam) @ Q.T, lam


def poisson2d(m):
    """The 2-D Poisson (5-point Laplacian) matrix on an m-by-m grid, CSR."""
    import scipy.sparse as sp

    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    I = sp.identity(m)
    return (sp.kron(T, I) + sp.kron(I, T)).tocsr()
