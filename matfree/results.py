"""Result types: small frozen dataclasses with diagnostics that print readably.

Every algorithm of matfree returns one of these instead of a bare number:
estimators an :class:`Estimate`, eigensolvers an :class:`EigResult`, linear
solvers a :class:`SolveResult`.  Array fields stay in the namespace and on the
device of the input; only printing converts small arrays to host floats.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Any

from matfree import _backend as B

__all__ = ["Estimate", "EigResult", "SolveResult"]


def _fmt(x, digits=6):
    """Short text for a scalar or an array (its size and first entries)."""
    if x is None:
        return "None"
    if isinstance(x, (int, float, bool, str)):
        return f"{x:.{digits}g}" if isinstance(x, float) else str(x)
    arr = B.to_numpy(x)
    if arr.ndim == 0:
        return f"{float(arr):.{digits}g}"
    flat = arr.reshape(-1)
    head = ", ".join(f"{float(v):.{digits}g}" for v in flat[:4])
    more = ", ..." if flat.size > 4 else ""
    return f"[{head}{more}] (shape {tuple(arr.shape)})"


def _to_float(x):
    return float(B.to_numpy(x)) if not isinstance(x, (int, float)) else float(x)


@dataclasses.dataclass(frozen=True, repr=False)
class Estimate:
    """A randomised estimate with its standard error.

    Attributes
    ----------
    value : float or array
        The estimate (an array for per-entry estimates such as a diagonal).
    stderr : float or array
        Estimated standard error of ``value`` (0 when exact).
    num_matvecs : int
        Products with the operator spent.
    method : str
        Name of the estimator.
    converged : bool
        Whether a requested tolerance was met (``True`` when none was asked).
    status : str
        ``"exact"``, ``"budget"``, ``"converged"``, ``"max_matvecs"``, ...
    info : dict
        Method-specific diagnostics (e.g. the history of an adaptive run).
    """

    value: Any
    stderr: Any
    num_matvecs: int
    method: str = ""
    converged: bool = True
    status: str = "budget"
    info: dict = dataclasses.field(default_factory=dict)

    def confidence_interval(self, level=0.95):
        """``value ± q · stderr`` at ``level``: q a Student-t quantile with ``info["dof"]``, else normal."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level={level} must be in (0, 1)")
        dof = self.info.get("dof") if isinstance(self.info, dict) else None
        if dof:
            from scipy.special import stdtrit

            z = float(stdtrit(float(dof), 0.5 + level / 2.0))
        else:
            z = NormalDist().inv_cdf(0.5 + level / 2.0)
        return (self.value - z * self.stderr, self.value + z * self.stderr)

    @property
    def ci(self):
        """The 95% confidence interval."""
        return self.confidence_interval(0.95)

    def plot(self, ax=None, *, truth=None):
        """Convergence plot: the estimate ± 2 stderr against products spent (matplotlib).

        Needs the history an adaptive run records (``rtol``/``atol`` given).

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
        truth : float, optional
            Draw the exact value as a horizontal line.

        Returns
        -------
        matplotlib.axes.Axes
        """
        history = self.info.get("history")
        if not history:
            raise ValueError(
                "this estimate has no history to plot; an adaptive run (rtol= or atol=) records one"
            )
        ax = _axes(ax)
        m = [h["num_matvecs"] for h in history]
        v = [h["value"] for h in history]
        s = [2.0 * h["stderr"] for h in history]
        ax.errorbar(m, v, yerr=s, marker="o", capsize=3, label=f"{self.method} ± 2 stderr")
        if truth is not None:
            ax.axhline(float(truth), color="k", ls="--", lw=1, label="exact")
        ax.set_xlabel("matrix-vector products")
        ax.set_ylabel("estimate")
        ax.set_title(f"Convergence of the {self.method} estimate")
        ax.legend()
        return ax

    def __float__(self):
        return _to_float(self.value)

    def __repr__(self):
        parts = [f"value={_fmt(self.value)}", f"stderr={_fmt(self.stderr, 3)}"]
        if getattr(self.value, "ndim", 0) == 0 and not isinstance(self.value, (list, tuple)):
            lo, hi = self.ci
            parts.append(f"95% CI=[{_fmt(lo)}, {_fmt(hi)}]")
        parts += [
            f"num_matvecs={self.num_matvecs}",
            f"method={self.method!r}",
            f"status={self.status!r}",
        ]
        return "Estimate(" + ", ".join(parts) + ")"

    __str__ = __repr__


@dataclasses.dataclass(frozen=True, repr=False)
class EigResult:
    """Eigenpairs from an iterative eigensolver.

    Attributes
    ----------
    eigenvalues : array, shape (k,)
    eigenvectors : array, shape (n, k) or None
    residual_norms : array, shape (k,)
        ``‖A x_i − θ_i x_i‖`` of each pair.
    num_matvecs : int
    converged : bool
        All requested pairs met the tolerance.
    status : str
    info : dict
    """

    eigenvalues: Any
    eigenvectors: Any
    residual_norms: Any
    num_matvecs: int
    converged: bool
    status: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    def __repr__(self):
        return (
            f"EigResult(eigenvalues={_fmt(self.eigenvalues)}, "
            f"max residual={_fmt(_max(self.residual_norms), 3)}, "
            f"num_matvecs={self.num_matvecs}, converged={self.converged}, "
            f"status={self.status!r})"
        )

    __str__ = __repr__


@dataclasses.dataclass(frozen=True, repr=False)
class SolveResult:
    """Solution of a linear system (or a trust-region subproblem).

    Attributes
    ----------
    x : array
        The solution (or step); a block when several right-hand sides or shifts.
    converged : bool or array of bool
        Per column/shift when several.
    num_iters : int
    residual_norms : array
        History of residual norms (one row per iteration; columns per system).
    status : str
        ``"converged"``, ``"maxiter"``, ``"negative_curvature"``,
        ``"boundary"``, ``"non_finite"``, ``"indefinite_preconditioner"``, ...
    num_matvecs : int
    info : dict
        Method-specific diagnostics (e.g. ``hit_boundary``, ``direction``).
    """

    x: Any
    converged: Any
    num_iters: int
    residual_norms: Any
    status: str
    num_matvecs: int = 0
    info: dict = dataclasses.field(default_factory=dict)

    def __repr__(self):
        final = None
        if self.residual_norms is not None and len(self.residual_norms):
            final = self.residual_norms[-1]
        return (
            f"SolveResult(status={self.status!r}, converged={_fmt(self.converged)}, "
            f"num_iters={self.num_iters}, num_matvecs={self.num_matvecs}, "
            f"final residual={_fmt(final, 3)}, x={_fmt(self.x)})"
        )

    __str__ = __repr__

    def plot(self, ax=None):
        """Residual-norm history on a log scale (matplotlib), one line per system.

        Returns
        -------
        matplotlib.axes.Axes
        """
        import numpy as np

        if self.residual_norms is None or len(self.residual_norms) == 0:
            raise ValueError("this result has no residual history to plot")
        ax = _axes(ax)
        r = np.asarray(B.to_numpy(self.residual_norms), dtype=float)
        r = r.reshape(r.shape[0], -1)
        for j in range(r.shape[1]):
            label = None if r.shape[1] == 1 else f"system {j}"
            ax.semilogy(np.arange(r.shape[0]), r[:, j], label=label)
        ax.set_xlabel("iteration")
        ax.set_ylabel("residual norm")
        ax.set_title(f"Residual history ({self.status}, {self.num_iters} iterations)")
        if r.shape[1] > 1:
            ax.legend(fontsize="small", ncol=2)
        return ax


def _axes(ax):
    """``ax`` or new axes on a new figure (matplotlib imported only here)."""
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib; pip install 'matfree-hessian[plot]'") from None
    _, ax = plt.subplots()
    return ax


def _max(x):
    if x is None:
        return None
    arr = B.to_numpy(x)
    return float(arr.max()) if arr.size else math.nan
