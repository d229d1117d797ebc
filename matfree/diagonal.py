r"""Stochastic estimation of the diagonal of an operator from matrix-vector products.

:func:`diagonal` estimates :math:`\operatorname{diag}(A)` of a square
operator known only through products, with a standard error for every
entry.  Three estimators share one entry point (``method=``):

``"hutchinson"``
    The diagonal Hutchinson estimator (Bekas, Kokiopoulou, Saad 2007):
    :math:`\frac1m\sum_j z_j\odot Az_j`.
``"xdiag"``
    XDiag (Epperly, Tropp, Webber 2024): the diagonal of a randomised
    low-rank approximation plus a diagonal Hutchinson correction, with
    every probe used in both parts by exchangeability.
``"xnysdiag"``
    The same with a Nyström approximation, for positive semidefinite
    operators; one product per probe.

Backends: NumPy, CuPy, PyTorch, JAX and array-api-strict operators.
"""

from __future__ import annotations

from matfree import _backend as B
from matfree._parallel import check_executor
from matfree.results import Estimate
from matfree.trace import (
    _as_operator,
    _check_args,
    _check_method,
    _check_probes,
    _check_progress,
    _exact,
    _exact_estimate,
    _finish,
    _grow_sketch,
    _growth,
    _history_entry,
    _loo_directions,
    _mean_and_stderr,
    _nystrom_core,
    _plan,
    _Rule,
    _run,
    _run_probe_blocks,
    _scalar,
    _Sketch,
    _student_t_quantile,
    _tolerance_level,
)

__all__ = ["diagonal"]

DIAGONAL_METHODS = ("xdiag", "xnysdiag", "hutchinson")

_DIAGONAL_RULES = {
    "hutchinson": _Rule(2, 1, "two probes are needed for a standard error"),
    "xdiag": _Rule(
        4, 2, "spends half of the budget on probes and half on the basis, and needs "
        "two probes for a standard error"
    ),
    "xnysdiag": _Rule(2, 1, "two probes are needed for a standard error"),
}


def _norm_met(xp, tol, value, stderr):
    """The normwise stopping rule ``z ‖stderr‖₂ <= max(atol, rtol ‖value‖₂)``."""
    return tol.met(
        _scalar(xp.linalg.vector_norm(value)), _scalar(xp.linalg.vector_norm(stderr))
    )


def _xdiag_norm_met(xp, tol, value, stderr, dof):
    """:func:`_norm_met` with the Student-``t`` quantile of ``dof = k - 1`` (XDiag family).

    The per-entry standard errors come from ``k`` exchangeable leave-one-out
    estimates, so their intervals use ``k - 1`` degrees of freedom, as for
    XTrace (:func:`matfree.trace._xtrace_met`).
    """
    t = _student_t_quantile(_tolerance_level(tol), dof)
    value_norm = _scalar(xp.linalg.vector_norm(value))
    return t * _scalar(xp.linalg.vector_norm(stderr)) <= tol.target(value_norm)


def _diagonal_hutchinson(setup, plan):
    xp = setup.xp

    def samples(Z):
        return Z * setup.product(Z)  # (n, b): one column of z ⊙ A z per probe

    history = []
    if plan.adaptive:

        def check(mom):
            se = mom.stderr(xp)
            history.append(
                _history_entry(
                    setup.spent, xp.linalg.vector_norm(mom.mean), xp.linalg.vector_norm(se)
                )
            )
            return _norm_met(xp, plan.tolerance, mom.mean, se)

        mom, used, met = _run_probe_blocks(setup, samples, plan.max_matvecs, check)
    else:
        mom, used, met = _run_probe_blocks(setup, samples, plan.budget)
    info = {"num_probes": used}
    if plan.adaptive:
        info["history"] = history
    return mom.mean, mom.stderr(xp), met, info


def _xdiag_estimates(setup, sk):
    """The ``(n, k)`` leave-one-out XDiag estimates of the sketch ``sk`` (``Z = Aᵀ Q``).

    Column ``i`` is ``diag(Q_i Q_iᵀ A) + ω_i ⊙ (I - Q_i Q_iᵀ) A ω_i`` with
    ``Q_i Q_iᵀ = Q (I - s_i s_iᵀ) Qᵀ``; since ``A ω_i = Q r_i``, the second
    term is ``ω_i ⊙ Q s_i (s_iᵀ r_i)``.
    """
    xp = setup.xp
    S, sr = _loo_directions(xp, sk.R)
    QS = sk.Q @ S
    base = xp.sum(sk.Q * sk.Z, axis=1)  # diag(Q Qᵀ A)
    return base[:, None] - QS * (sk.Z @ S) + sk.Om * QS * sr[None, :]


def _diagonal_xdiag(setup, plan):
    xp = setup.xp
    if not plan.adaptive:
        sk = _grow_sketch(setup, _Sketch(), plan.budget // 2, transpose_z=True)
        value, se = _mean_and_stderr(xp, _xdiag_estimates(setup, sk))
        return value, se, True, {"num_probes": sk.k, "dof": sk.k - 1}
    sk, history, met = _Sketch(), [], False
    while True:
        b = _growth(sk.k, max(2, setup.block), (plan.max_matvecs - setup.spent) // 2)
        if b < 1 or (sk.k == 0 and b < 2):
            break
        sk = _grow_sketch(setup, sk, b, transpose_z=True)
        value, se = _mean_and_stderr(xp, _xdiag_estimates(setup, sk))
        history.append(
            _history_entry(setup.spent, xp.linalg.vector_norm(value), xp.linalg.vector_norm(se))
        )
        if _xdiag_norm_met(xp, plan.tolerance, value, se, sk.k - 1):
            met = True
            break
    return value, se, met, {"num_probes": sk.k, "dof": sk.k - 1, "history": history}


def _xnysdiag_estimates(setup, Om, Y):
    """The ``(n, k)`` leave-one-out XNysDiag estimates from ``Om`` and ``Y = A Om``.

    With ``u_i = Y G^{-1} e_i`` and ``d_i = (G^{-1})_{ii}`` (``G = Omᵀ Y``),
    column ``i`` is ``diag(Â) - u_i ⊙ u_i / d_i + ω_i ⊙ u_i / d_i``: the
    diagonal of the Nyström approximation without probe ``i``, plus the
    diagonal Hutchinson term of its residual, ``(A - Â_i) ω_i = u_i / d_i``.
    """
    xp = setup.xp
    core = _nystrom_core(setup, Om, Y, "xnysdiag")
    YF = core.Y @ core.F
    U = YF @ xp.matrix_transpose(core.F)  # Y_nu G^{-1}
    d = xp.sum(core.F * core.F, axis=1)
    base = xp.sum(YF * YF, axis=1)  # diag(Â)
    return base[:, None] + (Om - U) * U / d[None, :] - core.nu, core.nu


def _diagonal_xnysdiag(setup, plan):
    xp = setup.xp
    if not plan.adaptive:
        Om = setup.probes(plan.budget)
        ests, nu = _xnysdiag_estimates(setup, Om, setup.apply(Om))
        value, se = _mean_and_stderr(xp, ests)
        return value, se, True, {"num_probes": plan.budget, "shift": nu, "dof": plan.budget - 1}
    Om, Y, history, met = None, None, [], False
    while True:
        k = 0 if Om is None else int(Om.shape[1])
        b = _growth(k, max(2, setup.block), plan.max_matvecs - setup.spent)
        if b < 1 or (k == 0 and b < 2):
            break
        Om_new = setup.probes(b)
        Y_new = setup.apply(Om_new)
        Om = Om_new if Om is None else xp.concat([Om, Om_new], axis=1)
        Y = Y_new if Y is None else xp.concat([Y, Y_new], axis=1)
        ests, nu = _xnysdiag_estimates(setup, Om, Y)
        value, se = _mean_and_stderr(xp, ests)
        history.append(
            _history_entry(setup.spent, xp.linalg.vector_norm(value), xp.linalg.vector_norm(se))
        )
        if _xdiag_norm_met(xp, plan.tolerance, value, se, int(Om.shape[1]) - 1):
            met = True
            break
    info = {"num_probes": int(Om.shape[1]), "shift": nu, "dof": int(Om.shape[1]) - 1}
    return value, se, met, {**info, "history": history}


_DIAGONAL_IMPLS = {
    "hutchinson": _diagonal_hutchinson,
    "xdiag": _diagonal_xdiag,
    "xnysdiag": _diagonal_xnysdiag,
}


def diagonal(
    A,
    method="xdiag",
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
) -> Estimate:
    r"""Estimate the diagonal of a square operator, with a standard error per entry.

    Three randomised estimators share this entry point; the result is an
    :class:`~matfree.Estimate` whose ``value`` and ``stderr`` are arrays.

    Parameters
    ----------
    A : LinearOperator, array, sparse matrix or scipy LinearOperator
        Square operator of size ``n``.  ``"xdiag"`` on a non-symmetric
        operator needs its transpose product (``rmatvec``).
    method : {"xdiag", "xnysdiag", "hutchinson"}
        The estimator; see Notes.  ``"xnysdiag"`` needs a positive
        semidefinite ``A``.
    num_matvecs : int, optional
        Fixed budget of products, ``<= n``: XDiag an even number (at least
        4), Hutchinson and XNysDiag at least 2.  Default 120, or the largest
        valid budget ``<= n``.
    rtol, atol : float, optional
        Adaptive run: probes are added until ``z · ‖stderr‖₂ <= max(atol,
        rtol · ‖value‖₂)`` (a normwise rule: entries near zero would never
        meet a relative one), or ``max_matvecs`` is spent.
    max_matvecs : int, optional
        Cap of an adaptive run; default ``min(n, 1000)``.
    probes : {"rademacher", "gaussian", "sphere"}
        Probe distribution.  Rademacher probes make the Hutchinson part exact
        on the diagonal of the matrix it is applied to, the usual choice.
    block_size : int, optional
        Probes per ``matmat`` call (see :func:`matfree.trace.trace`).
    confidence : float
        Level of the interval used by the adaptive stopping rule.
    use_exact : bool
        When ``A`` knows its diagonal (``A.diagonal()`` does not raise
        ``NotImplementedError``), return it with zero standard errors and no
        products; ``False`` estimates anyway.
    rng : None, int, numpy.random.Generator or backend generator
        Source of the probes.
    executor : concurrent.futures.Executor, optional
        Evaluates independent probe blocks (Hutchinson) or the column blocks
        of the sketch products (XDiag, XNysDiag) in parallel, with the serial
        result for the same ``block_size`` (see :func:`matfree.trace.trace`).
    progress : bool
        Show a tqdm progress bar over the budget (over ``max_matvecs`` with
        the current estimate's norm and relative standard error in an
        adaptive run).

    Returns
    -------
    Estimate
        ``value`` and ``stderr`` are arrays of shape ``(n,)`` in the
        operator's namespace; ``num_matvecs``, ``status``, ``converged`` and
        ``info`` as for :func:`matfree.trace.trace`.

    Raises
    ------
    ValueError
        Non-square ``A``; a budget above ``n`` or invalid for the method;
        ``"xnysdiag"`` on an operator whose Nyström core is indefinite.
    TypeError
        Arguments of the wrong type (an ``executor`` without ``submit``).
    ImportError
        ``progress=True`` without tqdm installed.
    matfree.NonFiniteError
        The operator returned NaN or Inf.

    See Also
    --------
    matfree.trace.trace : The trace, estimated the same ways.
    matfree.diagonal_approximation : A ``Diagonal`` operator from this estimate.

    Notes
    -----
    * Hutchinson: :math:`\hat d = \frac1m\sum_j z_j\odot Az_j`, unbiased
      when :math:`\mathbb E[zz^\top] = I`; entry :math:`i` has variance
      :math:`\sum_{l\ne i} A_{il}^2/m` for Rademacher probes.
    * XDiag: :math:`Y = A\Omega = QR` from :math:`k = m/2` probes, :math:`Z
      = A^\top Q`, and for each :math:`i` the projector :math:`Q_{(i)}
      Q_{(i)}^\top = Q(I - s_is_i^\top)Q^\top` onto all sketch columns but
      the :math:`i`-th; :math:`\hat d_i = \operatorname{diag}(Q_{(i)}
      Q_{(i)}^\top A) + \omega_i\odot(I - Q_{(i)}Q_{(i)}^\top)A\omega_i`,
      :math:`\hat d = \operatorname{mean}_i\hat d_i`, standard errors
      :math:`\operatorname{std}_i(\hat d_i)/\sqrt k` entrywise.  Unbiased.
    * XNysDiag: with :math:`\hat A_{(i)} = \hat A - u_iu_i^\top/d_i` as in
      XNysTrace, :math:`\hat d_i = \operatorname{diag}\hat A_{(i)} +
      \omega_i\odot u_i/d_i`.  Unbiased for PSD :math:`A`.

    References
    ----------
    .. [1] C. Bekas, E. Kokiopoulou, Y. Saad, "An estimator for the diagonal
       of a matrix", Appl. Numer. Math. 57(11-12), 2007.
       doi:10.1016/j.apnum.2007.01.003
    .. [2] E. N. Epperly, J. A. Tropp, R. J. Webber, "XTrace: Making the most
       of every sample in stochastic trace estimation", SIAM J. Matrix Anal.
       Appl. 45(1), 2024. doi:10.1137/23M1548323, arXiv:2301.07825

    Examples
    --------
    >>> import numpy as np, matfree
    >>> from matfree.diagonal import diagonal
    >>> rng = np.random.default_rng(0)
    >>> U = rng.standard_normal((100, 4))
    >>> M = U @ U.T + np.diag(np.linspace(1.0, 2.0, 100))
    >>> A = matfree.from_hvp(lambda v: M @ v, size=100, batched=lambda V: M @ V)
    >>> est = diagonal(A, method="xdiag", num_matvecs=40, rng=0)
    >>> est.value.shape, est.stderr.shape, est.num_matvecs
    ((100,), (100,), 40)
    >>> err = np.linalg.norm(est.value - np.diag(M)) / np.linalg.norm(np.diag(M))
    >>> bool(err < 0.1)
    True

    Supported backends: NumPy, CuPy, PyTorch, JAX and array-api-strict.
    """
    method = _check_method(method, DIAGONAL_METHODS)
    A = _as_operator(A, "diagonal")
    kind = _check_probes(probes, "rademacher")
    args = _check_args(num_matvecs, rtol, atol, max_matvecs, block_size, confidence)
    executor, progress = check_executor(executor), _check_progress(progress)
    if use_exact:
        exact = _exact(A.diagonal)
        if exact is not None:
            xp = A.xp if A.xp is not None else B.namespace(exact)
            return _exact_estimate(xp, exact, method, "A.diagonal()")
    plan = _plan(int(A.shape[0]), method, _DIAGONAL_RULES[method], args)
    setup, value, stderr, met, info = _run(
        _DIAGONAL_IMPLS[method], A, kind, plan, rng, executor, progress, f"diagonal ({method})"
    )
    return _finish(setup, method, value, stderr, plan, met, info)

