"""Built-in real problems for the command line, examples and benchmarks.

The Hessian of L2-regularised multinomial logistic (softmax) regression on
scikit-learn's digits data set (1,797 images of 8x8 pixels, 10 classes; no
download: the data ships inside scikit-learn).  With weights ``W`` (d x K),
logits ``Z = X W``, probabilities ``P = softmax(Z)`` and mean cross-entropy
plus ``lam/2 ‖W‖²``, the Hessian-vector product is

    dZ = X V,   dP = P * (dZ - rowsum(P * dZ)),   H V = Xᵀ dP / m + lam V,

which is exact and costs two products with ``X``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SoftmaxRegression:
    """Data and weights of a softmax-regression problem (NumPy, host)."""

    X: np.ndarray  # (m, d) standardised features with a bias column
    Y: np.ndarray  # (m, K) one-hot labels
    lam: float
    name: str

    @property
    def shape(self):
        return self.X.shape[1], self.Y.shape[1]

    @property
    def size(self) -> int:
        d, K = self.shape
        return d * K

    def _probs(self, W):
        Z = self.X @ W
        Z = Z - Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        return P / P.sum(axis=1, keepdims=True)

    def loss(self, w):
        """Mean cross-entropy plus ``lam/2 ‖w‖²`` at flat weights ``w``."""
        W = w.reshape(self.shape)
        Z = self.X @ W
        zmax = Z.max(axis=1, keepdims=True)
        lse = (zmax[:, 0] + np.log(np.exp(Z - zmax).sum(axis=1)))
        return float(np.mean(lse - np.sum(Z * self.Y, axis=1)) + 0.5 * self.lam * w @ w)

    def grad(self, w):
        """Gradient of :meth:`loss` at flat ``w``."""
        W = w.reshape(self.shape)
        P = self._probs(W)
        return (self.X.T @ (P - self.Y) / self.X.shape[0]).reshape(-1) + self.lam * w

    def hvp(self, w, v):
        """Exact Hessian-vector product at ``w`` (1-D ``v``) or block (2-D ``v``, one column each)."""
        P = self._probs(w.reshape(self.shape))
        d, K = self.shape
        if v.ndim == 1:
            return self._hvp_one(P, v.reshape(d, K)).reshape(-1) + self.lam * v
        cols = [self._hvp_one(P, v[:, j].reshape(d, K)).reshape(-1) for j in range(v.shape[1])]
        return np.stack(cols, axis=1) + self.lam * v

    def _hvp_one(self, P, V):
        dZ = self.X @ V
        dP = P * (dZ - np.sum(P * dZ, axis=1, keepdims=True))
        return self.X.T @ dP / self.X.shape[0]

    def hessian_dense(self, w):
        """The dense Hessian (n products; for checking on this small problem)."""
        return self.hvp(w, np.eye(self.size))

    def fit(self, iters=30):
        """Weights after a few damped Newton-CG steps from zero (a realistic point).

        Uses SciPy's Newton-CG on purpose: the demo's operator should be the
        Hessian at a trained model, independently of matfree's own solvers.
        """
        from scipy.optimize import minimize

        res = minimize(
            self.loss,
            np.zeros(self.size),
            jac=self.grad,
            hessp=lambda w, v: self.hvp(w, v),
            method="Newton-CG",
            options={"maxiter": iters},
        )
        return res.x


def digits_softmax(lam=1e-3) -> SoftmaxRegression:
    """Softmax regression on scikit-learn's digits (d = 65 with bias, K = 10; n = 650)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the built-in problem needs scikit-learn (pip install 'matfree-hessian[demo]')"
        ) from err
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X = (X - X.mean(axis=0)) / np.maximum(X.std(axis=0), 1e-12)
    X = np.hstack([X, np.ones((X.shape[0], 1))])
    Y = np.eye(10)[y]
    return SoftmaxRegression(X=X, Y=Y, lam=lam, name="softmax regression on sklearn digits")
