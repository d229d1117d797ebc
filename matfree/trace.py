r"""Stochastic trace and Frobenius-norm estimation from matrix-vector products.

:func:`trace` estimates :math:`\operatorname{tr}(A)` of a square operator
known only through products ``A @ V``; :func:`frobenius_norm` estimates
:math:`\|A\|_F` of any operator.  Every result is an
:class:`~matfree.results.Estimate` with a standard error, so a confidence
interval comes with each number.

Five trace estimators share one entry point (``method=``):

``"hutchinson"``
    Hutchinson (1990): :math:`\frac1m\sum_j z_j^\top A z_j` over random
    probes :math:`z_j` with :math:`\mathbb E[z z^\top] = I`.
``"hutchpp"``
    Hutch++ (Meyer, Musco, Musco, Woodruff 2021): the trace of a
    randomised low-rank approximation plus Hutchinson on the deflated rest.
``"na_hutchpp"``
    NA-Hutch++, the non-adaptive (single-pass) variant of Hutch++.
``"xtrace"``
    XTrace (Epperly, Tropp, Webber 2024): Hutch++ made exchangeable; every
    probe serves both the low-rank part and the residual part.
``"xnystrace"``
    XNysTrace, XTrace with a Nyström approximation, for positive
    semidefinite operators; every probe costs one product.

With ``rtol``/``atol`` instead of a fixed budget the estimators run in
blocks until the confidence interval is narrow enough (adaptive Hutchinson,
an adaptive Hutch++ in the spirit of Persson, Cortinovis and Kressner 2022,
and the adaptive XTrace/XNysTrace of Epperly, Tropp and Webber).

The private helpers below (moments, probe blocks, the XTrace sketch, the
Nyström core) are shared with :mod:`matfree.diagonal`.

Backends: NumPy, CuPy, PyTorch, JAX and array-api-strict operators; every
array stays in the operator's namespace and on its device.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import numbers
from statistics import NormalDist
from typing import Any, Callable

from matfree import _backend as B
from matfree._parallel import check_executor, executor_width, map_ordered
from matfree._progress import progress_bar
from matfree.operators import (
    Dense,
    Diagonal,
    Identity,
    LinearOperator,
    LowRank,
    NonFiniteError,
    Scaled,
    aslinearoperator,
)
from matfree.results import Estimate

__all__ = ["trace", "frobenius_norm"]

TRACE_METHODS = ("xtrace", "xnystrace", "hutchpp", "na_hutchpp", "hutchinson")
PROBE_KINDS = ("rademacher", "gaussian", "sphere")

#: fixed budget used when neither ``num_matvecs`` nor a tolerance is given
_DEFAULT_BUDGET = 120
#: cap on the products of an adaptive run when ``max_matvecs`` is not given
_DEFAULT_MAX_MATVECS = 1000
#: a default probe block holds at most this many entries (128 MiB in float64)
_BLOCK_ENTRIES = 2**24
#: probes per block (and between two convergence checks) of an adaptive run
_ADAPTIVE_BLOCK = 10


# ======================================================================
# Input checks
# ======================================================================


def _check_method(method, known, name="method"):
    if not isinstance(method, str):
        raise TypeError(f"{name} must be a string, got {type(method).__name__}")
    if method not in known:
        allowed = ", ".join(repr(m) for m in known)
        raise ValueError(f"{name}={method!r} is not known; expected one of {allowed}")
    return method


def _check_int(name, value, *, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _check_tol(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name}={value} is invalid; expected a finite number >= 0")
    return value


def _check_probes(probes, default):
    if probes is None:
        return default
    if not isinstance(probes, str):
        raise TypeError(f"probes must be a string, got {type(probes).__name__}")
    if probes not in PROBE_KINDS:
        allowed = ", ".join(repr(p) for p in PROBE_KINDS)
        raise ValueError(f"probes={probes!r} is not known; expected one of {allowed}")
    return probes


def _as_operator(A, what, *, square=True):
    A = aslinearoperator(A)
    if square and A.shape[0] != A.shape[1]:
        raise ValueError(
            f"{what} needs a square operator, got shape {tuple(A.shape)}; "
            f"expected shape (n, n)"
        )
    return A


@dataclasses.dataclass(frozen=True)
class _Rule:
    """Budget rule of one estimator: ``minimum <= num_matvecs <= n``, a multiple of ``multiple``."""

    minimum: int
    multiple: int = 1
    why: str = ""


@dataclasses.dataclass(frozen=True)
class _Tolerance:
    """Stop once ``z * stderr <= max(atol, rtol * |value|)``."""

    rtol: float
    atol: float
    z: float

    def target(self, scale):
        return max(self.atol, self.rtol * abs(scale))

    def met(self, scale, stderr):
        return self.z * stderr <= self.target(scale)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a call asked for: a fixed ``budget`` or a ``tolerance`` with ``max_matvecs``."""

    budget: int | None
    tolerance: _Tolerance | None
    max_matvecs: int | None
    block: int
    block_given: bool = False

    @property
    def adaptive(self):
        return self.tolerance is not None


@dataclasses.dataclass(frozen=True)
class _Args:
    """Budget and tolerance arguments after the checks that do not depend on ``n``."""

    num_matvecs: int | None
    rtol: float | None
    atol: float | None
    max_matvecs: int | None
    block_size: int | None
    confidence: float


def _check_args(num_matvecs, rtol, atol, max_matvecs, block_size, confidence):
    """Types and ranges of the budget/tolerance arguments (independent of the operator)."""
    num_matvecs = _check_int("num_matvecs", num_matvecs, allow_none=True)
    max_matvecs = _check_int("max_matvecs", max_matvecs, allow_none=True)
    block_size = _check_int("block_size", block_size, allow_none=True)
    rtol, atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size={block_size} is invalid; expected block_size >= 1")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise TypeError(f"confidence must be a real number, got {type(confidence).__name__}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence={confidence} is invalid; expected 0 < confidence < 1")
    adaptive = rtol is not None or atol is not None
    if adaptive and num_matvecs is not None:
        raise ValueError(
            f"num_matvecs={num_matvecs} and a tolerance (rtol/atol) were both given; "
            "pass num_matvecs for a fixed budget, or rtol/atol (with max_matvecs) "
            "for an adaptive run"
        )
    if not adaptive and max_matvecs is not None:
        raise ValueError(
            f"max_matvecs={max_matvecs} only applies to an adaptive run; pass rtol "
            "and/or atol as well, or use num_matvecs for a fixed budget"
        )
    return _Args(num_matvecs, rtol, atol, max_matvecs, block_size, float(confidence))


def _plan(n, method, rule, args, *, adaptive_ok=True):
    """Check the budget/tolerance arguments against ``rule`` and the size ``n``."""
    num_matvecs, rtol, atol = args.num_matvecs, args.rtol, args.atol
    max_matvecs, block_size, confidence = args.max_matvecs, args.block_size, args.confidence
    if rule.minimum > n:
        raise ValueError(
            f"method={method!r} needs at least {rule.minimum} products but the operator "
            f"has n={n}; for n this small form the matrix (A.todense()) and use it exactly"
        )
    adaptive = rtol is not None or atol is not None
    if adaptive and not adaptive_ok:
        raise ValueError(
            f"method={method!r} has no adaptive variant, so rtol/atol cannot be used; "
            "pass num_matvecs, or use a method with adaptive stopping"
        )
    if adaptive:
        if max_matvecs is None:
            max_matvecs = min(n, _DEFAULT_MAX_MATVECS)
        _check_budget("max_matvecs", max_matvecs, n, method, _Rule(rule.minimum))
        z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
        tol = _Tolerance(rtol or 0.0, atol or 0.0, z)
        block = block_size if block_size is not None else _ADAPTIVE_BLOCK
        return _Plan(None, tol, max_matvecs, _fit_block(block, n), block_size is not None)
    if num_matvecs is None:
        num_matvecs = _largest_valid(min(n, _DEFAULT_BUDGET), rule)
    _check_budget("num_matvecs", num_matvecs, n, method, rule)
    block = block_size if block_size is not None else _default_block(n, num_matvecs)
    return _Plan(num_matvecs, None, None, block, block_size is not None)


def _largest_valid(m, rule):
    return max(rule.minimum, m - m % rule.multiple)


def _check_budget(name, m, n, method, rule):
    lo = rule.minimum
    if m > n:
        raise ValueError(f"{name}={m} exceeds n={n}; expected {lo} <= {name} <= {n}.")
    if m < lo:
        why = f" ({rule.why})" if rule.why else ""
        raise ValueError(
            f"{name}={m} is below the minimum of method={method!r}{why}; "
            f"expected {lo} <= {name} <= {n}."
        )
    if m % rule.multiple:
        raise ValueError(
            f"{name}={m} is not a multiple of {rule.multiple}; method={method!r} "
            f"{rule.why}; expected a multiple of {rule.multiple} with "
            f"{lo} <= {name} <= {n}."
        )


def _default_block(n, budget):
    """As many probes per block as fit in ``_BLOCK_ENTRIES`` entries."""
    return max(1, min(budget, _BLOCK_ENTRIES // max(n, 1)))


def _dispatch_chunk(plan, width):
    """Columns per work item of an executor: a block, or about two items per worker.

    The probe blocks themselves (what is drawn from ``rng`` at once and merged
    into the statistics at once) do not depend on the executor, so neither do
    the probes.  A block is split further only when ``block_size`` was left
    to its default (so a fixed budget, one block, is shared out); this changes
    only how many columns each product gets.
    """
    if width <= 1 or plan.adaptive or plan.block_given:  # adaptive: a round is a block per worker
        return plan.block
    return max(1, min(plan.block, -(-plan.budget // (2 * width))))


def _fit_block(block, n):
    return max(1, min(block, _BLOCK_ENTRIES // max(n, 1)))


# ======================================================================
# Shared machinery: setup, products, moments, probe blocks
# ======================================================================


@dataclasses.dataclass
class _Setup:
    """Operator, namespace, dtype, size and the probe source of one estimation run."""

    A: LinearOperator
    xp: Any
    dtype: Any
    device: Any
    n: int
    rs: B.RandomState
    kind: str
    block: int
    spent: int = 0
    executor: Any = None
    bar: Any = None
    chunk: int = 0
    blocks_dispatched: int = 0

    def __getstate__(self):
        # What a worker needs to evaluate a probe block: the operator and its
        # namespace.  The random state, executor and progress bar stay here.
        return {**self.__dict__, "rs": None, "executor": None, "bar": None}

    @property
    def width(self):
        """Probe blocks evaluated at once (1 without an executor)."""
        return executor_width(self.executor)

    def count(self, k, *, bar=True):
        """Count ``k`` products spent (and advance the progress bar unless ``bar=False``)."""
        self.spent += int(k)
        if bar:
            self.advance(k)

    def advance(self, k):
        """Advance the progress bar (if any) by ``k`` products."""
        if self.bar is not None:
            self.bar.update(int(k))

    def chunks(self, V):
        """The column chunks of ``V`` that an executor evaluates as separate work items."""
        k, c = int(V.shape[1]), self.chunk
        return [V[:, s : min(s + c, k)] for s in range(0, k, c)]

    def dispatch(self, fn, blocks, what):
        """``fn`` on the column chunks of each block through the executor, reassembled per block.

        Returns one result per block, the chunk results concatenated along
        the last axis in order; the progress bar advances as chunks finish.
        """
        items, owner = [], []
        for i, V in enumerate(blocks):
            parts = self.chunks(V)
            items += parts
            owner += [i] * len(parts)
        results = map_ordered(
            fn, items, self.executor, what=what, offset=self.blocks_dispatched,
            on_result=lambda j, _: self.advance(items[j].shape[1]),
        )
        self.blocks_dispatched += len(items)
        grouped = [[] for _ in blocks]
        for i, r in zip(owner, results):
            grouped[i].append(r)
        return [g[0] if len(g) == 1 else self.xp.concat(g, axis=-1) for g in grouped]

    def probes(self, k):
        """A fresh ``(n, k)`` block of probes of ``self.kind``."""
        return self.rs.probes(self.kind, (self.n, k), self.dtype)

    def product(self, V, *, transpose=False):
        """``A @ V`` (``A.T @ V``) in column blocks, checked but not counted.

        Touches no state of the run, so probe blocks may call it concurrently;
        the caller counts the products (see :func:`_run_probe_blocks`).
        """
        return _apply_blocks(self.A, self.xp, V, self.block, transpose=transpose)

    def apply(self, V, *, transpose=False):
        """``A @ V`` (``A.T @ V``) in column blocks of ``self.block``, counted and checked.

        With an executor the column blocks are evaluated through it and
        concatenated in order, which gives the serial result.
        """
        k = int(V.shape[1])
        if self.executor is None:
            W = self.product(V, transpose=transpose)
            self.count(k)
            return W
        fn = _TransposedProduct(self) if transpose else self.product
        blocks = [V[:, s : min(s + self.block, k)] for s in range(0, k, self.block)]
        W = self.xp.concat(self.dispatch(fn, blocks, "column block"), axis=1)
        self.count(k, bar=False)
        return W


@dataclasses.dataclass(frozen=True)
class _TransposedProduct:
    """``Aᵀ V`` of a setup, as a picklable callable (a work item for an executor)."""

    setup: _Setup

    def __call__(self, V):
        return self.setup.product(V, transpose=True)


def _make_setup(A, kind, block, rng, executor=None, bar=None, chunk=None):
    if A.xp is None or A.dtype is None:
        raise TypeError(
            f"{type(A).__name__} has no array namespace or dtype, so probes cannot be "
            "drawn for it; build it with like=... (an array of the right library and dtype)"
        )
    xp = A.xp
    rs = B.random_state(rng, xp, A.device)
    chunk = block if chunk is None else chunk
    return _Setup(A, xp, A.dtype, A.device, int(A.shape[1]), rs, kind, block, 0, executor, bar, chunk)


def _apply_blocks(A, xp, V, block, *, transpose=False):
    """``A @ V`` through ``matmat`` (``rmatmat``), ``block`` columns per call.

    Each column block is an independent unit of work: an executor may
    evaluate them concurrently and concatenate in order with the same result.
    """
    product = A.rmatmat if transpose else A.matmat
    k = int(V.shape[1])
    parts = []
    for start in range(0, k, block):
        W = product(V[:, start : min(start + block, k)])
        _check_finite(xp, W)
        parts.append(W)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def _check_finite(xp, W):
    if not bool(xp.all(xp.isfinite(W))):
        raise NonFiniteError(
            "the operator returned NaN or Inf for a block of probe vectors; "
            "the estimate would be meaningless (check the operator's matvec)"
        )


@dataclasses.dataclass(frozen=True)
class _Moments:
    """Count, mean and sum of squared deviations of samples (over the last axis)."""

    count: int
    mean: Any
    m2: Any

    def stderr(self, xp):
        """Standard error of :attr:`mean` (``inf`` below two samples)."""
        if self.count < 2:
            return xp.full_like(self.mean, math.inf)
        return xp.sqrt(self.m2 / float((self.count - 1) * self.count))


def _moments(xp, samples):
    """:class:`_Moments` of one block of ``samples`` (probes along the last axis)."""
    mean = xp.mean(samples, axis=-1)
    dev = samples - xp.expand_dims(mean, axis=-1)
    return _Moments(int(samples.shape[-1]), mean, xp.sum(dev * dev, axis=-1))


def _merge(a, b):
    """Combine the moments of two disjoint sample sets (Chan, Golub, LeVeque 1983)."""
    if a is None:
        return b
    count = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / count)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / count)
    return _Moments(count, mean, m2)


def _run_probe_blocks(setup, samples_fn, num_probes, check=None):
    """Draw probe blocks, evaluate ``samples_fn`` on each, and merge the moments.

    ``samples_fn(Z)`` maps an ``(n, b)`` probe block to per-probe samples
    (last axis of length ``b``) with ``b`` products made through
    ``setup.product`` (uncounted; this loop counts them); it is the
    independent unit of work and touches no shared state.  With a
    fixed number of probes (``check=None``) the blocks are independent of each
    other: an executor may evaluate ``samples_fn`` on the blocks of
    ``_probe_blocks`` concurrently and merge the moments in submission order
    to get the same result as this loop.  With ``check(moments) -> bool`` the
    loop stops after the first block at which it returns ``True``.

    With ``setup.executor`` the blocks go through it: all at once for a fixed
    number of probes, ``setup.width`` blocks per round with ``check``.  Every
    probe is drawn before its round is dispatched and the moments are merged
    (and ``check`` called) block by block in order, so the estimate is that of
    the serial loop bit for bit.  Blocks of a round that follow the one at
    which ``check`` stopped are computed but not used; their products are
    counted (they were spent).

    Returns ``(moments, num_probes_used, stopped_by_check)``.
    """
    if setup.executor is not None:
        return _run_probe_blocks_parallel(setup, samples_fn, num_probes, check)
    mom = None
    used = 0
    for Z in _probe_blocks(setup, num_probes):
        mom = _merge(mom, _moments(setup.xp, samples_fn(Z)))
        used += int(Z.shape[1])
        setup.count(int(Z.shape[1]))
        if check is not None and mom.count >= 2 and check(mom):
            return mom, used, True
    return mom, used, False


def _run_probe_blocks_parallel(setup, samples_fn, num_probes, check):
    """:func:`_run_probe_blocks` through ``setup.executor``, one round of blocks at a time."""
    mom, used, remaining = None, 0, num_probes
    per_round = num_probes if check is None else setup.width * setup.block
    while remaining > 0:
        blocks = list(_probe_blocks(setup, min(remaining, per_round)))  # drawn before dispatch
        remaining -= sum(int(Z.shape[1]) for Z in blocks)
        results = setup.dispatch(samples_fn, blocks, "probe chunk")
        for i, (Z, samples) in enumerate(zip(blocks, results)):
            mom = _merge(mom, _moments(setup.xp, samples))
            used += int(Z.shape[1])
            setup.count(int(Z.shape[1]), bar=False)
            if check is not None and mom.count >= 2 and check(mom):
                setup.count(sum(int(W.shape[1]) for W in blocks[i + 1 :]), bar=False)
                return mom, used, True
    return mom, used, False


def _probe_blocks(setup, num_probes):
    """Probe blocks of at most ``setup.block`` columns, ``num_probes`` columns in all, in order."""
    done = 0
    while done < num_probes:
        b = min(setup.block, num_probes - done)
        yield setup.probes(b)
        done += b


def _quadratic_samples(setup, Q=None):
    """Per-probe Hutchinson samples ``zᵀ P A P z`` with ``P = I - Q Qᵀ`` (``P = I`` without ``Q``)."""
    xp = setup.xp

    def samples(Z):
        if Q is not None:
            Z = Z - Q @ (xp.matrix_transpose(Q) @ Z)
        return xp.sum(Z * setup.product(Z), axis=0)

    return samples


def _scalar(x):
    return float(x)


#: progress bar of the estimation run in progress in this thread (see :func:`_running`)
_ACTIVE_BAR = contextvars.ContextVar("matfree_trace_bar", default=None)


def _history_entry(spent, value, stderr):
    """One entry of an adaptive run's history; also shown on the run's progress bar."""
    entry = {"num_matvecs": int(spent), "value": _scalar(value), "stderr": _scalar(stderr)}
    bar = _ACTIVE_BAR.get()
    if bar is not None:
        scale = abs(entry["value"])
        rel = entry["stderr"] / scale if scale > 0 else math.inf
        bar.update(0, estimate=entry["value"], rel_stderr=rel)
    return entry


def _check_progress(progress):
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {type(progress).__name__}")
    return progress


def _run(impl, A, kind, plan, rng, executor, progress, desc):
    """``impl(setup, plan)`` with the run's setup, executor and progress bar (closed afterwards)."""
    total = plan.budget if plan.budget is not None else plan.max_matvecs
    with progress_bar(progress, total=total, desc=desc) as bar:
        chunk = _dispatch_chunk(plan, executor_width(executor))
        setup = _make_setup(A, kind, plan.block, rng, executor, bar if progress else None, chunk)
        token = _ACTIVE_BAR.set(bar if progress else None)
        try:
            value, stderr, met, info = impl(setup, plan)
        finally:
            _ACTIVE_BAR.reset(token)
    return setup, value, stderr, met, info


def _exact(fn):
    """``fn()`` or ``None`` when the operator does not know the answer exactly."""
    try:
        return fn()
    except NotImplementedError:
        return None


def _exact_estimate(xp, value, method, what):
    value = xp.asarray(value)
    zero = xp.zeros_like(value)
    return Estimate(
        value=value,
        stderr=zero,
        num_matvecs=0,
        method=method,
        converged=True,
        status="exact",
        info={"source": what},
    )


def _finish(setup, method, value, stderr, plan, converged, info):
    """The :class:`Estimate` of a run (status from the plan and whether the tolerance was met)."""
    if not bool(setup.xp.all(setup.xp.isfinite(value))):
        raise NonFiniteError(
            f"method={method!r} produced a non-finite estimate; the operator's products "
            "overflowed or the sketch broke down"
        )
    if plan.adaptive:
        status = "converged" if converged else "max_matvecs"
    else:
        status, converged = "budget", True
    info = {"probes": setup.kind, "block_size": setup.block, **info}
    if setup.executor is not None:
        info["executor"] = type(setup.executor).__name__
    return Estimate(
        value=setup.xp.asarray(value),
        stderr=setup.xp.asarray(stderr),
        num_matvecs=setup.spent,
        method=method,
        converged=bool(converged),
        status=status,
        info=info,
    )


# ======================================================================
# Orthonormal sketches (XTrace, XDiag) and the Nyström core (XNys*)
# ======================================================================


@dataclasses.dataclass
class _Sketch:
    """Probes ``Om``, ``Y = A Om = Q R`` and ``Z = A Q`` (``Aᵀ Q`` for a diagonal)."""

    Om: Any = None
    Y: Any = None
    Q: Any = None
    R: Any = None
    Z: Any = None

    @property
    def k(self):
        return 0 if self.Om is None else int(self.Om.shape[1])


def _grow_sketch(setup, sk, b, *, transpose_z=False):
    """Add ``b`` probes to the sketch ``sk``: ``2 b`` products (``Y`` and ``Z`` columns)."""
    xp = setup.xp
    Om_new = setup.probes(b)
    Y_new = setup.apply(Om_new)
    Q_new, R = _extend_qr(xp, sk.Q, sk.R, Y_new)
    Z_new = setup.apply(Q_new, transpose=transpose_z)
    if sk.Q is None:
        return _Sketch(Om_new, Y_new, Q_new, R, Z_new)
    return _Sketch(
        xp.concat([sk.Om, Om_new], axis=1),
        xp.concat([sk.Y, Y_new], axis=1),
        xp.concat([sk.Q, Q_new], axis=1),
        R,
        xp.concat([sk.Z, Z_new], axis=1),
    )


def _extend_qr(xp, Q, R, Y_new):
    """New orthonormal columns and the updated ``R`` with ``[Y, Y_new] = [Q, Q_new] R``.

    Block classical Gram-Schmidt run twice, then a third projection of the new
    columns for the case where ``Y_new`` adds (numerically) nothing to ``Q``.
    """
    if Q is None:
        Q_new, R_new = xp.linalg.qr(Y_new)
        return Q_new, R_new
    Qt = xp.matrix_transpose(Q)
    C = Qt @ Y_new
    Yp = Y_new - Q @ C
    C2 = Qt @ Yp
    Yp = Yp - Q @ C2
    C = C + C2
    Q1, R1 = xp.linalg.qr(Yp)
    C3 = Qt @ Q1
    Q2, R2 = xp.linalg.qr(Q1 - Q @ C3)
    C = C + C3 @ R1
    R_new = R2 @ R1
    k_old, b = int(R.shape[0]), int(R_new.shape[0])
    zeros = xp.zeros((b, k_old), dtype=R.dtype, device=B.device(R))
    top = xp.concat([R, C], axis=1)
    bottom = xp.concat([zeros, R_new], axis=1)
    return Q2, xp.concat([top, bottom], axis=0)


def _safe_inv_triu(xp, R):
    """Inverse of the upper-triangular ``R``, with (numerically) zero pivots lifted to ``eps·max|r_ii|``.

    A zero pivot means the sketch ``Y`` was rank deficient (the operator has
    rank below the number of probes); lifting it perturbs ``Y = QR`` only at
    rounding level and keeps the leave-one-out formulas finite.
    """
    d = xp.linalg.diagonal(R)
    eps = float(xp.finfo(R.dtype).eps)
    floor = eps * max(_scalar(xp.max(xp.abs(d))), float(xp.finfo(R.dtype).smallest_normal) / eps)
    sign = xp.where(d < 0, -xp.ones_like(d), xp.ones_like(d))
    lifted = xp.where(xp.abs(d) < floor, floor * sign, d)
    k = int(R.shape[0])
    eye = xp.eye(k, dtype=R.dtype, device=B.device(R))
    return xp.linalg.inv(R + eye * (lifted - d)[None, :])


def _loo_directions(xp, R):
    """Columns ``s_i = R^{-T} e_i / ‖R^{-T} e_i‖``: ``Q s_i`` is orthogonal to every ``y_j``, ``j != i``.

    So ``Q (I - s_i s_iᵀ) Qᵀ`` projects onto the span of all sketch columns
    but the ``i``-th (Epperly, Tropp, Webber 2024, section 2.1).
    Also returns ``1 / ‖R^{-T} e_i‖ = s_iᵀ r_i``.
    """
    Rinv = _safe_inv_triu(xp, R)
    norms = xp.linalg.vector_norm(Rinv, axis=1)
    S = xp.matrix_transpose(Rinv) / norms[None, :]
    return S, 1.0 / norms


def _xtrace_estimates(setup, sk, normalize):
    """The ``k`` leave-one-out XTrace estimates of the sketch ``sk`` (``Z = A Q``).

    Estimate ``i`` is ``tr(Q_iᵀ A Q_i) + ω_iᵀ P_i A P_i ω_i`` with ``Q_i`` an
    orthonormal basis of all sketch columns but the ``i``-th and
    ``P_i = I - Q_i Q_iᵀ``; everything follows from ``k``-by-``k`` products.
    """
    xp = setup.xp
    Om, Q, R, Z = sk.Om, sk.Q, sk.R, sk.Z
    Qt = xp.matrix_transpose(Q)
    W = Qt @ Om  # w_i = Qᵀ ω_i
    H = Qt @ Z  # Qᵀ A Q
    T = xp.matrix_transpose(Z) @ Om  # t_i = Zᵀ ω_i
    S, sr = _loo_directions(xp, R)  # sr_i = s_iᵀ r_i
    alpha = xp.sum(S * W, axis=0)  # s_iᵀ w_i
    C = W - S * alpha[None, :]  # c_i = (I - s_i s_iᵀ) w_i, so P_i ω_i = ω_i - Q c_i
    # (P_i ω)ᵀ A (P_i ω) = ωᵀy - tᵀc - cᵀr + cᵀHc, and ωᵀy = wᵀr since y = Q r
    resid = alpha * sr - xp.sum(T * C, axis=0) + xp.sum(C * (H @ C), axis=0)
    lowrank = xp.linalg.trace(H) - xp.sum(S * (H @ S), axis=0)
    if normalize:
        # rotation-invariant probes: P_i ω_i is uniform in directions within the
        # (n - k + 1)-dimensional complement, so its squared norm can be replaced
        # by its mean n - k + 1 ("improved" XTrace, ibid. section 2.2)
        k = sk.k
        norm2 = xp.sum(Om * Om, axis=0) - xp.sum(W * W, axis=0) + alpha * alpha
        resid = resid * ((setup.n - k + 1) / norm2)
    return lowrank + resid


def _pair_gram(xp, C):
    """``c_ij`` and ``1 - c_ij²`` for a Gram matrix ``C`` with unit diagonal (``1`` on the diagonal).

    ``1 - c_ij²`` is the determinant of the ``2 × 2`` block of the pair
    ``{i, j}``; the diagonal (no pair) gets 1 so that divisions stay finite.
    """
    k = int(C.shape[0])
    eye = xp.eye(k, dtype=C.dtype, device=B.device(C))
    c = C * (1.0 - eye)
    det = 1.0 - c * c
    tiny = float(xp.finfo(C.dtype).eps)
    return c, xp.where(det > tiny, det, xp.full_like(det, tiny))


def _xtrace_leave_two_out(setup, sk, normalize):
    """``E[i, j]``: the XTrace estimate of probe ``i`` with probes ``i`` and ``j`` left out of the basis.

    Same algebra as :func:`_xtrace_estimates` with the rank-two downdate
    ``Q_(ij) Q_(ij)ᵀ = Q (I - Π_ij) Qᵀ``, ``Π_ij`` the projector onto
    ``span{s_i, s_j}``; every pair costs O(1) after a few ``k``-by-``k``
    products.  The diagonal ``E[i, i]`` is meaningless (set to 0).
    """
    xp = setup.xp
    Om, Q, R, Z = sk.Om, sk.Q, sk.R, sk.Z
    k = sk.k
    Qt = xp.matrix_transpose(Q)
    W, H = Qt @ Om, Qt @ Z
    T = xp.matrix_transpose(Z) @ Om
    S, sr = _loo_directions(xp, R)
    St = xp.matrix_transpose(S)
    c, det = _pair_gram(xp, St @ S)
    K = St @ H @ S
    Kd = xp.linalg.diagonal(K)
    PW, GT = St @ W, St @ T  # (a, i): s_aᵀ w_i, s_aᵀ t_i
    GHW, WHG = St @ H @ W, St @ xp.matrix_transpose(H) @ W  # s_aᵀ H w_i, w_iᵀ H s_a

    def own(M):  # M[i, i] as a column: the pair member i of row i
        return xp.linalg.diagonal(M)[:, None]

    def other(M):  # M[j, i] at [i, j]: the pair member j of row i
        return xp.matrix_transpose(M)

    p1, p2 = own(PW), other(PW)
    a1, a2 = (p1 - c * p2) / det, (p2 - c * p1) / det  # (C_SS)^{-1} p
    Ksym = K + xp.matrix_transpose(K)
    lowrank = xp.linalg.trace(H) - (Kd[:, None] - c * Ksym + Kd[None, :]) / det
    tw = xp.sum(T * W, axis=0)[:, None]
    wHw = xp.sum(W * (H @ W), axis=0)[:, None]
    resid = (
        a1 * sr[:, None]
        - (tw - own(GT) * a1 - other(GT) * a2)
        + wHw
        - (own(WHG) + own(GHW)) * a1
        - (other(WHG) + other(GHW)) * a2
        + Kd[:, None] * a1 * a1
        + Ksym * a1 * a2
        + Kd[None, :] * a2 * a2
    )
    if normalize:
        om2 = xp.sum(Om * Om, axis=0)[:, None]
        ww = xp.sum(W * W, axis=0)[:, None]
        norm2 = om2 - ww + p1 * a1 + p2 * a2  # ‖ω_i‖² - ‖(I - Π_ij) w_i‖²
        resid = resid * ((setup.n - k + 2) / norm2)
    eye = xp.eye(k, dtype=H.dtype, device=B.device(H))
    return (lowrank + resid) * (1.0 - eye)


def _pairwise_interaction(xp, ests, pair_ests):
    """``γ̂ = mean_{i≠j} D_ij D_ji`` with ``D_ij = t̂_i - t̂_(i|j)`` (the leave-two-out change).

    ``D_ij`` measures how estimate ``i`` depends on probe ``j`` through the
    basis; ``γ̂`` estimates the covariance ``E[δ_i δ_j]`` of two
    leave-one-out errors that ``std / sqrt(k)`` misses.
    """
    k = int(ests.shape[-1])
    eye = xp.eye(k, dtype=ests.dtype, device=B.device(ests))
    D = (ests[:, None] - pair_ests) * (1.0 - eye)
    return xp.sum(D * xp.matrix_transpose(D)) / float(k * (k - 1))


@dataclasses.dataclass(frozen=True)
class _NystromCore:
    """Shifted sketch ``Y_nu = (A + nu I) Om`` and ``F`` with ``(Omᵀ Y_nu)^{-1} = F Fᵀ``."""

    nu: float
    Y: Any
    F: Any


def _nystrom_core(setup, Om, Y, method):
    """Stable Nyström factors; raises ``ValueError`` when ``Omᵀ A Om`` is indefinite.

    The shift ``nu = sqrt(n) eps ‖Y‖_F`` (Tropp, Yurtsever, Udell, Cevher
    2017) makes ``A + nu I`` strictly positive definite for PSD ``A`` so the
    core can be inverted; the estimators are exact algebra for ``A + nu I``
    and subtract ``nu`` afterwards.
    """
    xp = setup.xp
    eps = float(xp.finfo(Y.dtype).eps)
    nu = math.sqrt(setup.n) * eps * _scalar(xp.linalg.matrix_norm(Y))
    Yn = Y + nu * Om
    H = xp.matrix_transpose(Om) @ Yn
    H = (H + xp.matrix_transpose(H)) / 2.0
    g, V = xp.linalg.eigh(H)
    gmin, gmax = _scalar(xp.min(g)), _scalar(xp.max(g))
    if not gmin > 0.0:
        raise ValueError(
            f"method={method!r} needs a positive semidefinite operator, but the Nyström "
            f"core ΩᵀAΩ is indefinite (eigenvalues from {gmin:.3g} to {gmax:.3g}), so A "
            "is not positive semidefinite; use method='xtrace' (or 'xdiag') instead"
        )
    return _NystromCore(nu, Yn, V / xp.sqrt(g)[None, :])


def _normalization_scale(setup, Om):
    """``(n - k + 1) / ‖P_i ω_i‖²`` with ``P_i`` the projector onto the complement of the other probes."""
    xp = setup.xp
    _, R_om = xp.linalg.qr(Om)
    _, inv_norm = _loo_directions(xp, R_om)  # ‖P_i ω_i‖ = s_iᵀ r_i
    return (setup.n - int(Om.shape[1]) + 1) / (inv_norm * inv_norm)


def _xnystrace_estimates(setup, Om, Y, normalize, method="xnystrace"):
    """The ``k`` leave-one-out XNysTrace estimates from probes ``Om`` and ``Y = A Om``.

    With ``G = Omᵀ Y``, ``u_i = Y G^{-1} e_i`` and ``d_i = (G^{-1})_{ii}``, the
    Nyström approximation without probe ``i`` is ``Â - u_i u_iᵀ / d_i`` and its
    residual on ``ω_i`` is ``ω_iᵀ (A - Â_i) ω_i = 1 / d_i``.
    """
    xp = setup.xp
    core = _nystrom_core(setup, Om, Y, method)
    _, R_y = xp.linalg.qr(core.Y)
    Bm = R_y @ core.F  # Â = Q_y Bm Bmᵀ Q_yᵀ
    M = Bm @ xp.matrix_transpose(core.F)  # column i is Q_yᵀ u_i
    d = xp.sum(core.F * core.F, axis=1)
    resid = 1.0 / d
    if normalize:
        resid = resid * _normalization_scale(setup, Om)
    return xp.sum(Bm * Bm) - xp.sum(M * M, axis=0) / d + resid - core.nu * setup.n, core.nu


def _xnystrace_leave_outs(setup, Om, core, normalize):
    """Leave-one-out estimates ``e[i]`` and leave-two-out estimates ``E[i, j]`` of XNysTrace.

    ``e`` equals :func:`_xnystrace_estimates`; ``E[i, j]`` is the estimate of
    probe ``i`` with probes ``i`` and ``j`` left out.  Both come from the same
    two QR factorisations (of ``Y_nu`` and, to normalise, of ``Om``).

    The Nyström approximation without the pair ``S = {i, j}`` is
    ``Â - Y G⁻¹_{:S} (G⁻¹_{SS})⁻¹ G⁻¹_{S:} Yᵀ`` (``G = Ωᵀ Y``), and its
    residual on ``ω_i`` is ``((G⁻¹_{SS})⁻¹)_{ii}``; the ``2 × 2`` blocks are
    inverted in closed form after scaling to unit diagonal.  The diagonal
    ``E[i, i]`` is set to 0.  ``core`` is the shifted core of
    :func:`_nystrom_core`; ``ν n`` is subtracted as there.
    """
    xp = setup.xp
    k = int(Om.shape[1])
    _, R_y = xp.linalg.qr(core.Y)
    Bm = R_y @ core.F  # Â = Q_y Bm Bmᵀ Q_yᵀ
    Ft = xp.matrix_transpose(core.F)
    Ginv = core.F @ Ft
    d = xp.linalg.diagonal(Ginv)
    sd = xp.sqrt(d)
    Mq = Bm @ Ft  # column i is Q_yᵀ u_i
    Un = (xp.matrix_transpose(Mq) @ Mq) / (sd[:, None] * sd[None, :])  # u_aᵀ u_b, scaled
    c, det = _pair_gram(xp, Ginv / (sd[:, None] * sd[None, :]))
    Ud = xp.linalg.diagonal(Un)
    trace_hat = xp.sum(Bm * Bm)
    removed = (Ud[:, None] - 2.0 * c * Un + Ud[None, :]) / det
    resid = 1.0 / (d[:, None] * det)
    one = trace_hat - Ud + 1.0 / d  # ‖u_i‖² / d_i = Un_ii
    if normalize:
        _, R_om = xp.linalg.qr(Om)
        Gi = _safe_inv_triu(xp, R_om)
        Gram = Gi @ xp.matrix_transpose(Gi)  # (R^{-1} R^{-T})_{ab} = g_aᵀ g_b
        gd = xp.linalg.diagonal(Gram)
        sg = xp.sqrt(gd)
        _, det_o = _pair_gram(xp, Gram / (sg[:, None] * sg[None, :]))
        norm2 = 1.0 / (gd[:, None] * det_o)  # ‖P_(ij) ω_i‖²
        resid = resid * ((setup.n - k + 2) / norm2)
        one = trace_hat - Ud + (setup.n - k + 1) * gd / d  # ‖P_i ω_i‖² = 1 / gd_i
    eye = xp.eye(k, dtype=d.dtype, device=B.device(d))
    two = (trace_hat - removed + resid - core.nu * setup.n) * (1.0 - eye)
    return one - core.nu * setup.n, two


def _exchangeable_stderr(xp, ests, pair_ests):
    """Mean of the ``k`` leave-one-out estimates and a standard error that includes their covariance.

    ``Var t̂ = E δ_i² / k + (1 - 1/k) E δ_i δ_j`` for the errors ``δ_i`` of
    the exchangeable estimates, and the sample variance ``s²`` estimates
    ``E δ_i² - E δ_i δ_j``; so ``Var t̂ = E[s²] / k + E δ_i δ_j``, and the
    covariance is estimated by :func:`_pairwise_interaction` from the
    leave-two-out estimates (clipped at 0: a negative estimate leaves the
    paper's ``s / sqrt(k)``).  Returns ``(mean, stderr, paper_stderr, γ̂)``.
    """
    mean, paper = _mean_and_stderr(xp, ests)
    gamma = _pairwise_interaction(xp, ests, pair_ests)
    stderr = xp.sqrt(paper * paper + xp.clip(gamma, 0.0, None))
    return mean, stderr, paper, gamma


def _growth(k, block, room):
    """Probes to add to a sketch of ``k`` probes: about half as many again, at least ``block``."""
    return min(max(block, k // 2), room)


# ======================================================================
# Trace estimators
# ======================================================================


def _trace_hutchinson(setup, plan):
    xp = setup.xp
    samples = _quadratic_samples(setup)
    history = []
    if plan.adaptive:
        tol = plan.tolerance

        def check(mom):
            se = _scalar(mom.stderr(xp))
            history.append(_history_entry(setup.spent, mom.mean, se))
            return tol.met(_scalar(mom.mean), se)

        mom, used, met = _run_probe_blocks(setup, samples, plan.max_matvecs, check)
    else:
        mom, used, met = _run_probe_blocks(setup, samples, plan.budget)
    info = {"num_probes": used}
    if plan.adaptive:
        info["history"] = history
    return mom.mean, mom.stderr(xp), met, info


def _lowrank_trace(setup, Q):
    AQ = setup.apply(Q)
    return setup.xp.sum(Q * AQ), AQ


def _trace_hutchpp(setup, plan):
    if plan.adaptive:
        return _trace_hutchpp_adaptive(setup, plan)
    xp = setup.xp
    k = plan.budget // 3
    Q, _ = xp.linalg.qr(setup.apply(setup.probes(k)))
    t_low, _ = _lowrank_trace(setup, Q)
    mom, used, _ = _run_probe_blocks(setup, _quadratic_samples(setup, Q), plan.budget - 2 * k)
    info = {"rank": k, "num_residual_probes": used, "lowrank_trace": _scalar(t_low)}
    return t_low + mom.mean, mom.stderr(xp), True, info


def _trace_hutchpp_adaptive(setup, plan):
    """Adaptive Hutch++: grow the low-rank part while it pays, then Hutchinson until the tolerance.

    Growth phase (after Persson, Cortinovis, Kressner 2022, Algorithm 3): with
    ``Q`` of ``k`` columns, Hutchinson on the deflated rest needs about
    ``l(k) = 2 z² ‖Δ_k‖_F² / tol²`` probes, and for symmetric ``A``
    ``‖Δ_k‖_F² = ‖A‖_F² - 2‖AQ‖_F² + ‖QᵀAQ‖_F²`` is known up to the constant
    ``‖A‖_F²`` from products already made.  Blocks of ``b`` columns are added
    (``2b`` products each) as long as the predicted total ``2k + l(k)`` falls.
    """
    xp = setup.xp
    tol, b = plan.tolerance, setup.block
    reserve = max(2, b)  # keep room for at least one residual block
    eps = float(xp.finfo(setup.dtype).eps)
    Q = AQ = None
    t_low = xp.zeros((), dtype=setup.dtype, device=setup.device)
    gain_prev, k_prev = 0.0, 0  # g(k) = -2‖AQ‖² + ‖QᵀAQ‖², g(0) = 0
    growth = []
    while setup.spent + 2 * b + reserve <= plan.max_matvecs:
        S = setup.probes(b)
        Y = setup.apply(S)
        y_norm = _scalar(xp.linalg.matrix_norm(Y))
        # scale for rtol: the current trace estimate, t_low plus a Hutchinson
        # estimate of the rest from this block (its products are all at hand)
        if Q is None:
            scale = _scalar(xp.mean(xp.sum(S * Y, axis=0)))
        else:
            QtS = xp.matrix_transpose(Q) @ S
            rest = xp.sum((S - Q @ QtS) * (Y - AQ @ QtS), axis=0)
            scale = _scalar(t_low + xp.mean(rest))
            Y = Y - Q @ (xp.matrix_transpose(Q) @ Y)
            Y = Y - Q @ (xp.matrix_transpose(Q) @ Y)
        if _scalar(xp.linalg.matrix_norm(Y)) <= math.sqrt(eps) * y_norm:
            growth.append({"rank": 0 if Q is None else int(Q.shape[1]), "captured": True})
            break  # the range of A is captured: nothing left for the low-rank part
        Q_new, _ = xp.linalg.qr(Y)
        if Q is not None:
            Q_new, _ = xp.linalg.qr(Q_new - Q @ (xp.matrix_transpose(Q) @ Q_new))
        AQ_new = setup.apply(Q_new)
        Q = Q_new if Q is None else xp.concat([Q, Q_new], axis=1)
        AQ = AQ_new if AQ is None else xp.concat([AQ, AQ_new], axis=1)
        H = xp.matrix_transpose(Q) @ AQ
        t_low = xp.linalg.trace(H)
        gain = -2.0 * _scalar(xp.sum(AQ * AQ)) + _scalar(xp.sum(H * H))
        k = int(Q.shape[1])
        target = tol.target(scale)
        growth.append({"rank": k, "lowrank_trace": _scalar(t_low), "trace_estimate": scale})
        if target > 0.0:
            c = 2.0 * tol.z**2 / target**2
            if 2 * k + c * gain >= 2 * k_prev + c * gain_prev:
                break  # the last block did not pay for its 2b products
        gain_prev, k_prev = gain, k
    history = []

    def check(mom):
        se = _scalar(mom.stderr(xp))
        value = _scalar(t_low + mom.mean)
        history.append(_history_entry(setup.spent, value, se))
        return tol.met(value, se)

    remaining = plan.max_matvecs - setup.spent
    mom, used, met = _run_probe_blocks(setup, _quadratic_samples(setup, Q), remaining, check)
    info = {
        "rank": 0 if Q is None else int(Q.shape[1]),
        "num_residual_probes": used,
        "lowrank_trace": _scalar(t_low),
        "growth": growth,
        "history": history,
    }
    return t_low + mom.mean, mom.stderr(xp), met, info


def _trace_na_hutchpp(setup, plan):
    """NA-Hutch++ with the split c1, c2, c3 = 1/6, 1/3, 1/2 of Meyer et al. (2021)."""
    xp = setup.xp
    m = plan.budget
    s, r = m // 6, m // 3
    S = setup.probes(s)
    Rp = setup.probes(r)
    Z = setup.apply(Rp)  # A R
    W = setup.apply(S, transpose=True)  # Aᵀ S
    P = xp.linalg.pinv(xp.matrix_transpose(S) @ Z)  # (Sᵀ A R)^+, r-by-s
    Wt = xp.matrix_transpose(W)
    t_low = xp.linalg.trace(P @ (Wt @ Z))  # tr(Â), Â = A R (SᵀAR)^+ SᵀA

    def samples(G):
        AG = setup.product(G)
        GZP = xp.matrix_transpose(G) @ Z @ P
        return xp.sum(G * AG, axis=0) - xp.sum(GZP * xp.matrix_transpose(Wt @ G), axis=1)

    mom, used, _ = _run_probe_blocks(setup, samples, m - s - r)
    info = {"sketch_sizes": (s, r), "num_residual_probes": used, "lowrank_trace": _scalar(t_low)}
    return t_low + mom.mean, mom.stderr(xp), True, info


def _mean_and_stderr(xp, ests):
    """Mean of the ``k`` exchangeable estimates and the paper's ``std / sqrt(k)``.

    The estimates share all but one probe, so they are positively correlated
    and this standard error alone is optimistic; XTrace and XNysTrace add
    the covariance (:func:`_exchangeable_stderr`).  XDiag/XNysDiag still
    report it as it is.
    """
    k = int(ests.shape[-1])
    mean = xp.mean(ests, axis=-1)
    return mean, xp.std(ests, axis=-1, correction=1) / math.sqrt(k)


def _student_t_quantile(level, dof):
    """Two-sided Student-``t`` quantile ``t_{dof}((1 + level) / 2)`` (a host scalar)."""
    from scipy.special import stdtrit  # scipy is a core dependency; one scalar

    return float(stdtrit(dof, 0.5 + level / 2.0))


def _tolerance_level(tol):
    """The confidence level behind ``tol.z`` (``z`` is the normal quantile of the level)."""
    return 2.0 * NormalDist().cdf(tol.z) - 1.0


def _xtrace_met(tol, value, stderr, dof):
    """The stopping rule ``t_dof · stderr <= max(atol, rtol |value|)``, ``dof = k - 1``.

    The ``k`` leave-one-out estimates give a standard error with ``k - 1``
    degrees of freedom; with the normal quantile an adaptive XTrace stopped
    too early at small ``k`` (a 15-probe sketch needs 2.14, not 1.96, for 95%).
    """
    t = _student_t_quantile(_tolerance_level(tol), dof)
    return t * stderr <= tol.target(value)


def _xtrace_summary(setup, sk, normalize):
    """Leave-one-out estimates, value, standard error and diagnostics of one XTrace sketch."""
    xp = setup.xp
    ests = _xtrace_estimates(setup, sk, normalize)
    pair = _xtrace_leave_two_out(setup, sk, normalize)
    value, se, paper, gamma = _exchangeable_stderr(xp, ests, pair)
    return ests, value, se, {"dof": sk.k - 1, "stderr_paper": paper, "interaction": gamma}


def _xnystrace_summary(setup, Om, Y, normalize):
    """As :func:`_xtrace_summary` for XNysTrace; also returns the shift ``nu``."""
    xp = setup.xp
    core = _nystrom_core(setup, Om, Y, "xnystrace")
    ests, pair = _xnystrace_leave_outs(setup, Om, core, normalize)
    value, se, paper, gamma = _exchangeable_stderr(xp, ests, pair)
    k = int(Om.shape[1])
    return ests, core.nu, value, se, {"dof": k - 1, "stderr_paper": paper, "interaction": gamma}


def _trace_xtrace(setup, plan):
    normalize = setup.kind in ("gaussian", "sphere")
    if not plan.adaptive:
        sk = _grow_sketch(setup, _Sketch(), plan.budget // 2)
        ests, value, se, extra = _xtrace_summary(setup, sk, normalize)
        info = {"num_probes": sk.k, "estimates": ests, "normalized": normalize, **extra}
        return value, se, True, info
    tol, sk, history, met = plan.tolerance, _Sketch(), [], False
    while True:
        b = _growth(sk.k, max(2, setup.block), (plan.max_matvecs - setup.spent) // 2)
        if b < 1 or (sk.k == 0 and b < 2):
            break
        sk = _grow_sketch(setup, sk, b)
        ests, value, se, extra = _xtrace_summary(setup, sk, normalize)
        history.append(_history_entry(setup.spent, value, se))
        if _xtrace_met(tol, _scalar(value), _scalar(se), sk.k - 1):
            met = True
            break
    info = {
        "num_probes": sk.k,
        "estimates": ests,
        "normalized": normalize,
        **extra,
        "history": history,
    }
    return value, se, met, info


def _trace_xnystrace(setup, plan):
    xp = setup.xp
    normalize = setup.kind in ("gaussian", "sphere")
    if not plan.adaptive:
        Om = setup.probes(plan.budget)
        ests, nu, value, se, extra = _xnystrace_summary(setup, Om, setup.apply(Om), normalize)
        info = {
            "num_probes": plan.budget,
            "estimates": ests,
            "shift": nu,
            "normalized": normalize,
            **extra,
        }
        return value, se, True, info
    tol, Om, Y, history, met = plan.tolerance, None, None, [], False
    while True:
        k = 0 if Om is None else int(Om.shape[1])
        b = _growth(k, max(2, setup.block), plan.max_matvecs - setup.spent)
        if b < 1 or (k == 0 and b < 2):
            break
        Om_new = setup.probes(b)
        Y_new = setup.apply(Om_new)
        Om = Om_new if Om is None else xp.concat([Om, Om_new], axis=1)
        Y = Y_new if Y is None else xp.concat([Y, Y_new], axis=1)
        ests, nu, value, se, extra = _xnystrace_summary(setup, Om, Y, normalize)
        history.append(_history_entry(setup.spent, value, se))
        if _xtrace_met(tol, _scalar(value), _scalar(se), int(Om.shape[1]) - 1):
            met = True
            break
    info = {
        "num_probes": int(Om.shape[1]),
        "estimates": ests,
        "shift": nu,
        "normalized": normalize,
        **extra,
        "history": history,
    }
    return value, se, met, info


_TRACE_RULES = {
    "hutchinson": _Rule(2, 1, "two probes are needed for a standard error"),
    "hutchpp": _Rule(
        6, 3, "spends a third of the budget on each of its three stages (sketch, "
        "low-rank trace, residual probes) and needs two residual probes"
    ),
    "na_hutchpp": _Rule(6, 1, "splits the budget 1/6, 1/3, 1/2 and needs a probe in each part"),
    "xtrace": _Rule(
        4, 2, "spends half of the budget on probes and half on the basis, and needs "
        "two probes for a standard error"
    ),
    "xnystrace": _Rule(2, 1, "two probes are needed for a standard error"),
}

_TRACE_IMPLS: dict[str, Callable] = {
    "hutchinson": _trace_hutchinson,
    "hutchpp": _trace_hutchpp,
    "na_hutchpp": _trace_na_hutchpp,
    "xtrace": _trace_xtrace,
    "xnystrace": _trace_xnystrace,
}


def trace(
    A,
    method="xtrace",
    num_matvecs=None,
    *,
    rtol=None,
    atol=None,
    max_matvecs=None,
    probes=None,
    block_size=None,
    confidence=0.95,
    use_exact=True,
    rng=None,
    executor=None,
    progress=False,
):
    r"""Estimate the trace of a square operator from matrix-vector products.

    Five randomised estimators share this entry point; each returns an
    :class:`~matfree.Estimate` with a standard error, and each can run with a
    fixed budget of products or (all but NA-Hutch++) until a tolerance is met.

    Parameters
    ----------
    A : LinearOperator, array, sparse matrix or scipy LinearOperator
        Square operator of size ``n`` (anything
        :func:`~matfree.aslinearoperator` accepts).
    method : {"xtrace", "xnystrace", "hutchpp", "na_hutchpp", "hutchinson"}
        The estimator; see Notes.  ``"xnystrace"`` needs a positive
        semidefinite ``A``.
    num_matvecs : int, optional
        Fixed budget of products with ``A``, ``<= n``.  Hutch++ needs a
        multiple of 3 (at least 6), XTrace an even number (at least 4),
        NA-Hutch++ at least 6, Hutchinson and XNysTrace at least 2.  Default
        (when no tolerance is given): 120, or the largest valid budget
        ``<= n``.
    rtol, atol : float, optional
        Adaptive run: probes are added in blocks until the half-width of the
        ``confidence`` interval, ``z · stderr``, is at most
        ``max(atol, rtol · |value|)``, or ``max_matvecs`` products are spent.
        Not with ``num_matvecs``, and not for ``"na_hutchpp"``.
    max_matvecs : int, optional
        Cap of an adaptive run; default ``min(n, 1000)``.
    probes : {"rademacher", "gaussian", "sphere"}, optional
        Probe distribution, each with :math:`\mathbb E[zz^\top] = I`
        (``"sphere"``: uniform on the sphere of radius :math:`\sqrt n`).
        Default ``"sphere"`` for XTrace and XNysTrace (which then use the
        normalised "improved" estimators of Epperly, Tropp and Webber; so do
        Gaussian probes), ``"rademacher"`` otherwise.
    block_size : int, optional
        Probes per ``matmat`` call.  Default: the whole budget where its
        probe block fits in :math:`2^{24}` entries, fewer otherwise; 10 per
        block (and between convergence checks) in an adaptive run.
    confidence : float
        Level of the interval used by the adaptive stopping rule (0.95).
    use_exact : bool
        When ``A`` knows its trace (``A.trace()`` does not raise
        ``NotImplementedError``: ``Dense``, ``Diagonal``, ``LowRank``,
        ``Sparse``, and sums, scalings and dampings of those), return it
        exactly with ``stderr = 0`` and no products.  ``False`` estimates
        anyway.
    rng : None, int, numpy.random.Generator or backend generator
        Source of the probes (SPEC 7), drawn on the operator's device in its
        dtype.  The same seed gives the same result on the same backend.
    executor : concurrent.futures.Executor, optional
        Evaluates independent probe blocks (and the column blocks of sketch
        products ``A @ Ω``) in parallel: a ``ThreadPoolExecutor``, or
        ``dask.distributed.Client.get_executor()`` for worker processes (the
        operator is pickled with each block: see :doc:`distributed`).  All
        probes are drawn from ``rng`` in the blocks of the serial run, before
        dispatch, and combined in order, so the probes and the statistics do
        not depend on the executor: with ``block_size`` given, each block is
        one work item and the estimate equals the serial one bit for bit (for
        a deterministic product); with the default, the single block of a
        fixed budget is split into column chunks (about two per worker), which
        changes the result only by the rounding of the products.  An adaptive
        run dispatches one round of blocks (one per worker) between checks;
        blocks of a round past the stopping point are counted in
        ``num_matvecs`` but not used.  ``num_matvecs`` counts the products
        dispatched (products in other processes do not reach the operator's
        own counters).  An exception in a worker keeps its type, with a note
        naming the probe block.
    progress : bool
        Show a tqdm progress bar (optional dependency) over the budget, or
        over ``max_matvecs`` in an adaptive run with the current estimate and
        relative standard error.

    Returns
    -------
    Estimate
        ``value`` and ``stderr`` (0-D arrays in the operator's namespace),
        ``num_matvecs`` (products spent, counted), ``method``, ``status``
        (``"exact"``, ``"budget"``, ``"converged"`` or ``"max_matvecs"``),
        ``converged`` (whether a requested tolerance was met) and ``info``
        (``num_probes``, the low-rank ``rank``, the leave-one-out
        ``estimates`` of XTrace/XNysTrace, the ``history`` of an adaptive
        run ...).  ``est.ci`` is the 95% confidence interval.

    Raises
    ------
    ValueError
        Non-square ``A``; a budget above ``n`` or invalid for the method;
        ``num_matvecs`` together with ``rtol``/``atol``; an unknown method or
        probe kind; ``"xnystrace"`` on an operator whose Nyström core
        :math:`\Omega^\top A\Omega` is indefinite (so ``A`` is not PSD).
    TypeError
        Arguments of the wrong type (an ``executor`` without ``submit``).
    ImportError
        ``progress=True`` without tqdm installed.
    matfree.NonFiniteError
        The operator returned NaN or Inf.

    See Also
    --------
    matfree.diagonal.diagonal : The diagonal, estimated the same ways.
    frobenius_norm : Hutchinson on :math:`A^\top A`.

    Notes
    -----
    With probes :math:`\omega_1,\dots,\omega_m`, :math:`\mathbb E[\omega\omega^\top]=I`:

    * Hutchinson: :math:`\hat t = \frac1m\sum_j \omega_j^\top A\omega_j`,
      unbiased, standard error :math:`s/\sqrt m` from the sample standard
      deviation :math:`s`; error :math:`O(1/\sqrt m)`.
    * Hutch++: :math:`Q = \operatorname{orth}(AS)` from :math:`m/3` probes,
      :math:`\hat t = \operatorname{tr}(Q^\top AQ) + \frac3m\sum_j g_j^\top
      (I-QQ^\top)A(I-QQ^\top) g_j`; unbiased, error :math:`O(1/m)` for
      PSD :math:`A`.  The standard error is that of the Hutchinson part.
    * NA-Hutch++: :math:`\hat t = \operatorname{tr}\big((S^\top AR)^+
      (S^\top A)(AR)\big) + \frac1{|G|}\sum_j g_j^\top(A - AR(S^\top AR)^+
      S^\top A)g_j` with :math:`|S|,|R|,|G| = m/6, m/3, m/2`, all products
      in one pass.
    * XTrace: :math:`Y = A\Omega`, :math:`k = m/2`, and for each :math:`i`
      the basis :math:`Q_{(i)}` of all columns of :math:`Y` but the
      :math:`i`-th; :math:`\hat t_i = \operatorname{tr}(Q_{(i)}^\top A
      Q_{(i)}) + \omega_i^\top(I-Q_{(i)}Q_{(i)}^\top)A(I-Q_{(i)}Q_{(i)}^\top)
      \omega_i`, :math:`\hat t = \operatorname{mean}_i \hat t_i`, standard
      error from :math:`\operatorname{std}_i(\hat t_i)^2/k` plus the
      covariance of the leave-one-out estimates, estimated from their
      leave-two-out versions (:doc:`/trace`; the paper's
      :math:`\operatorname{std}_i/\sqrt k` runs low and is kept in
      ``info["stderr_paper"]``), with :math:`k-1` degrees of freedom.  All
      :math:`Q_{(i)}` come from one QR factorisation :math:`Y = QR`:
      :math:`Q_{(i)}Q_{(i)}^\top = Q(I - s_is_i^\top)Q^\top` with
      :math:`s_i \propto R^{-\top}e_i`.
    * XNysTrace: the Nyström approximation :math:`\hat A = Y(\Omega^\top
      Y)^{-1}Y^\top` from all :math:`m` probes, and its leave-one-out
      versions :math:`\hat A_{(i)} = \hat A - u_iu_i^\top/d_i`
      (:math:`u_i = Y(\Omega^\top Y)^{-1}e_i`, :math:`d_i = ((\Omega^\top
      Y)^{-1})_{ii}`), so :math:`\hat t_i = \operatorname{tr}\hat A -
      \|u_i\|^2/d_i + 1/d_i`.  A shift :math:`\nu = \sqrt n\,\epsilon\,
      \|Y\|_F` keeps the core invertible and is subtracted exactly.

    The adaptive Hutch++ grows the low-rank part in blocks while the
    predicted total cost :math:`2k + 2z^2\|\Delta_k\|_F^2/\mathrm{tol}^2`
    falls (Persson, Cortinovis, Kressner 2022), then adds residual probes
    until the interval is narrow enough.  Adaptive XTrace/XNysTrace grow the
    sketch by half its size per round.  Stopping on an estimated error makes
    the adaptive estimates very slightly biased.

    References
    ----------
    .. [1] M. F. Hutchinson, "A stochastic estimator of the trace of the
       influence matrix for Laplacian smoothing splines", Commun. Stat.
       Simul. Comput. 19(2), 1990. doi:10.1080/03610919008812866
    .. [2] R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal
       stochastic trace estimation", SOSA 2021. doi:10.1137/1.9781611976496.16,
       arXiv:2010.09649
    .. [3] E. N. Epperly, J. A. Tropp, R. J. Webber, "XTrace: Making the most
       of every sample in stochastic trace estimation", SIAM J. Matrix Anal.
       Appl. 45(1), 2024. doi:10.1137/23M1548323, arXiv:2301.07825
    .. [4] D. Persson, A. Cortinovis, D. Kressner, "Improved variants of the
       Hutch++ algorithm for trace estimation", SIAM J. Matrix Anal. Appl.
       43(3), 2022. doi:10.1137/21M1447623, arXiv:2109.10659

    Examples
    --------
    >>> import numpy as np, matfree
    >>> from matfree.trace import trace
    >>> rng = np.random.default_rng(0)
    >>> U = rng.standard_normal((200, 5))
    >>> M = U @ U.T + 0.01 * np.eye(200)              # PSD, nearly rank 5
    >>> A = matfree.from_hvp(lambda v: M @ v, size=200, batched=lambda V: M @ V)
    >>> est = trace(A, method="xtrace", num_matvecs=40, rng=1)
    >>> est.num_matvecs, est.status
    (40, 'budget')
    >>> bool(abs(float(est) - np.trace(M)) < 1e-2 * np.trace(M))
    True
    >>> trace(matfree.Dense(M)).status                 # known exactly
    'exact'

    Supported backends: NumPy, CuPy, PyTorch, JAX and array-api-strict.
    """
    method = _check_method(method, TRACE_METHODS)
    A = _as_operator(A, "trace")
    kind = _check_probes(probes, "sphere" if method in ("xtrace", "xnystrace") else "rademacher")
    args = _check_args(num_matvecs, rtol, atol, max_matvecs, block_size, confidence)
    executor, progress = check_executor(executor), _check_progress(progress)
    if use_exact:
        exact = _exact(A.trace)
        if exact is not None:
            xp = A.xp if A.xp is not None else B.namespace(exact)
            return _exact_estimate(xp, exact, method, "A.trace()")
    n = int(A.shape[0])
    plan = _plan(n, method, _TRACE_RULES[method], args, adaptive_ok=method != "na_hutchpp")
    impl = _TRACE_IMPLS[method]
    setup, value, stderr, met, info = _run(
        impl, A, kind, plan, rng, executor, progress, f"trace ({method})"
    )
    return _finish(setup, method, value, stderr, plan, met, info)


# ======================================================================
# Frobenius norm
# ======================================================================


def _exact_frobenius(A):
    """``‖A‖_F`` for operators whose entries are at hand, else ``None``."""
    if isinstance(A, Dense):
        return A.xp.linalg.matrix_norm(A.A)
    if isinstance(A, Diagonal):
        return A.xp.linalg.vector_norm(A.d)
    if isinstance(A, LowRank):
        xp = A.xp
        UtU = xp.matrix_transpose(A.U) @ A.U
        VtV = xp.matrix_transpose(A.V) @ A.V
        return xp.sqrt(xp.sum((A.s[:, None] * UtU * A.s[None, :]) * VtV))
    if isinstance(A, Identity) and A.xp is not None:
        return A.xp.sqrt(A.trace())
    if isinstance(A, Scaled):
        inner = _exact_frobenius(A.A)
        return None if inner is None else abs(A.c) * inner
    return None


def frobenius_norm(
    A,
    num_matvecs=None,
    *,
    rtol=None,
    atol=None,
    max_matvecs=None,
    probes="rademacher",
    block_size=None,
    confidence=0.95,
    use_exact=True,
    rng=None,
    executor=None,
    progress=False,
):
    r"""Estimate the Frobenius norm :math:`\|A\|_F` of an operator (Hutchinson on :math:`A^\top A`).

    One product per probe; the operator may be rectangular.  Operators that
    hold their entries give the norm exactly.

    Parameters
    ----------
    A : LinearOperator, array, sparse matrix or scipy LinearOperator
        Operator of shape ``(m, n)``; it need not be square.
    num_matvecs : int, optional
        Fixed number of products (probes), ``2 <= num_matvecs <= n``;
        default 120 or ``n`` if smaller.
    rtol, atol : float, optional
        Adaptive run: probes are added in blocks until ``z · stderr <=
        max(atol, rtol · value)`` for the norm, or ``max_matvecs`` is spent.
    max_matvecs : int, optional
        Cap of an adaptive run; default ``min(n, 1000)``.
    probes : {"rademacher", "gaussian", "sphere"}
        Probe distribution.
    block_size : int, optional
        Probes per ``matmat`` call (as in :func:`trace`).
    confidence : float
        Level of the interval used by the adaptive stopping rule.
    use_exact : bool
        Operators that hold their entries (``Dense``, ``Diagonal``,
        ``LowRank``, ``Identity`` and their scalings) give the norm exactly.
    rng : None, int, numpy.random.Generator or backend generator
        Source of the probes.
    executor : concurrent.futures.Executor, optional
        Evaluates the probe blocks in parallel, with the serial result (see
        :func:`trace`).
    progress : bool
        Show a tqdm progress bar (see :func:`trace`).

    Returns
    -------
    Estimate
        ``value`` is :math:`\|A\|_F` (0-D array); ``info["squared"]`` and
        ``info["squared_stderr"]`` give the estimate of :math:`\|A\|_F^2`
        (unbiased) and its standard error.

    Raises
    ------
    ValueError
        Budgets out of range, bad tolerances or probe kinds.
    TypeError
        Arguments of the wrong type.
    matfree.NonFiniteError
        The operator returned NaN or Inf.

    See Also
    --------
    trace : The trace estimators, Hutchinson among them.

    Notes
    -----
    :math:`\|A\|_F^2 = \operatorname{tr}(A^\top A) = \mathbb E\,\|Az\|^2`, so
    :math:`\widehat{\|A\|_F^2} = \frac1m\sum_j\|Az_j\|^2` costs one product
    per probe.  The reported norm is its square root, with the delta-method
    standard error :math:`\mathrm{se}(\widehat{\|A\|_F^2}) / (2\widehat{\|A\|_F})`.

    References
    ----------
    .. [1] M. F. Hutchinson, "A stochastic estimator of the trace of the
       influence matrix for Laplacian smoothing splines", Commun. Stat.
       Simul. Comput. 19(2), 1990. doi:10.1080/03610919008812866

    Examples
    --------
    >>> import numpy as np, matfree
    >>> from matfree.trace import frobenius_norm
    >>> M = np.arange(12.0).reshape(3, 4)
    >>> est = frobenius_norm(matfree.Dense(M), num_matvecs=4, use_exact=False, rng=0)
    >>> est.num_matvecs
    4
    >>> bool(abs(float(est) - np.linalg.norm(M)) < 4 * float(est.stderr))
    True
    >>> bool(np.isclose(float(frobenius_norm(matfree.Dense(M))), np.linalg.norm(M)))
    True

    Supported backends: NumPy, CuPy, PyTorch, JAX and array-api-strict.
    """
    A = _as_operator(A, "frobenius_norm", square=False)
    kind = _check_probes(probes, "rademacher")
    args = _check_args(num_matvecs, rtol, atol, max_matvecs, block_size, confidence)
    executor, progress = check_executor(executor), _check_progress(progress)
    if use_exact:
        exact = _exact_frobenius(A)
        if exact is not None:
            return _exact_estimate(A.xp, exact, "hutchinson", "entries of A")
    n = int(A.shape[1])
    plan = _plan(n, "hutchinson", _Rule(2, 1, "two probes are needed for a standard error"), args)
    setup, value, se, met, info = _run(
        _frobenius_hutchinson, A, kind, plan, rng, executor, progress, "frobenius_norm"
    )
    return _finish(setup, "hutchinson", value, se, plan, met, info)


@dataclasses.dataclass(frozen=True)
class _SquaredNormSamples:
    """Per-probe samples ``‖A z‖²`` of a probe block (a picklable work item)."""

    setup: _Setup

    def __call__(self, Z):
        W = self.setup.product(Z)
        return self.setup.xp.sum(W * W, axis=0)


def _frobenius_hutchinson(setup, plan):
    xp = setup.xp

    def norm_and_stderr(mom):
        sq = mom.mean
        value = xp.sqrt(xp.clip(sq, 0.0, None))
        safe = xp.where(value > 0, value, xp.ones_like(value))
        return value, mom.stderr(xp) / (2.0 * safe)

    samples = _SquaredNormSamples(setup)
    history = []
    if plan.adaptive:
        tol = plan.tolerance

        def check(mom):
            value, se = norm_and_stderr(mom)
            history.append(_history_entry(setup.spent, value, se))
            return tol.met(_scalar(value), _scalar(se))

        mom, used, met = _run_probe_blocks(setup, samples, plan.max_matvecs, check)
    else:
        mom, used, met = _run_probe_blocks(setup, samples, plan.budget)
    value, se = norm_and_stderr(mom)
    info = {"num_probes": used, "squared": mom.mean, "squared_stderr": mom.stderr(xp)}
    if plan.adaptive:
        info["history"] = history
    return value, se, met, info
