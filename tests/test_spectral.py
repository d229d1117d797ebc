"""Stochastic Lanczos quadrature against dense NumPy references."""

import math

import numpy as np
import pytest
from conftest import to_np

import matfree
from matfree import _backend as B
from matfree.spectral import SLQ, Density, logdet, rank, spectral_density, trace_function


def _orthogonal(rng, n):
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def _with_spectrum(rng, lam):
    Q = _orthogonal(rng, lam.size)
    M = (Q * lam) @ Q.T
    return (M + M.T) / 2


SPECTRA = {
    "flat": lambda rng, n: np.linspace(1.0, 2.0, n),
    "power_law": lambda rng, n: np.arange(1, n + 1, dtype=float) ** -1.0,
    "exponential": lambda rng, n: 0.95 ** np.arange(n),
    "clustered": lambda rng, n: np.concatenate(
        [1.0 + 1e-2 * rng.standard_normal(n // 4), 5.0 + 1e-2 * rng.standard_normal(n - n // 4)]
    ),
}


# ------------------------------------------------------------- estimates


def test_logdet_and_trace_function_across_backends(case, np_rng):
    n = 40
    lam = np.linspace(0.5, 3.0, n)
    M = _with_spectrum(np_rng, lam)
    A = case.asarray(M)
    xp = case.xp
    est = logdet(A, num_probes=30, num_steps=15, rng=3)
    assert est.num_matvecs == 30 * 15 and est.method == "slq:logdet"
    exact = np.sum(np.log(lam))
    stderr = float(est.stderr)
    assert 0 < stderr < 5.0
    assert abs(float(est.value) - exact) <= 4 * stderr + 1e3 * case.eps * n
    assert B.namespace(est.value) is xp and est.value.dtype == case.dtype
    tr2 = trace_function(A, lambda t: t * t, num_probes=30, num_steps=15, rng=3)
    assert abs(float(tr2.value) - np.sum(lam**2)) <= 4 * float(tr2.stderr) + 1e3 * case.eps * n


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
def test_coverage_of_three_stderr_intervals(spectrum):
    """tr f and logdet fall within 3 stderr in >= 95% of seeded trials."""
    rng = np.random.default_rng(11)
    n, trials = 60, 40
    lam = SPECTRA[spectrum](rng, n)
    M = _with_spectrum(rng, lam)
    exact = {"logdet": np.sum(np.log(lam)), "inv": np.sum(1.0 / (lam + 0.1))}
    hits = {"logdet": 0, "inv": 0}
    for seed in range(trials):
        slq = SLQ(M, num_probes=20, num_steps=20, rng=seed)
        for name, est in (("logdet", slq.logdet()), ("inv", slq.trace_function(lambda t: 1 / (t + 0.1)))):
            hits[name] += abs(float(est.value) - exact[name]) <= 3 * float(est.stderr)
    for name in hits:
        assert hits[name] >= 0.95 * trials, (name, hits[name])


def test_quadrature_is_exact_for_low_degree_polynomials(np_rng):
    """Gauss quadrature with m nodes integrates degree 2m - 1 exactly: z^T A^3 z for m = 2."""
    n = 30
    d = np_rng.uniform(1.0, 2.0, n)
    # Rademacher probes on a diagonal matrix: z^T D^j z = tr D^j exactly, zero variance
    slq = SLQ(np.diag(d), num_probes=5, num_steps=2, rng=0)
    est = slq.trace_function(lambda t: t**3)
    np.testing.assert_allclose(float(est.value), np.sum(d**3), rtol=1e-12)
    assert float(est.stderr) < 1e-10


def test_one_set_of_runs_answers_everything_without_new_products(np_rng):
    n = 60
    lam = np.concatenate([np.zeros(20), np_rng.uniform(1.0, 4.0, 40)])
    M = _with_spectrum(np_rng, lam)
    A = matfree.Dense(M)
    slq = SLQ(A, num_probes=12, num_steps=10, rng=1)
    spent = A.num_matvecs
    assert spent == slq.num_matvecs == 12 * 10
    slq.trace_function(lambda t: t)
    slq.density()
    slq.rank()
    shifted = SLQ(matfree.damped(A, 1.0), num_probes=4, num_steps=5, rng=1).logdet()
    assert shifted.num_matvecs <= 20
    assert A.num_matvecs == spent + shifted.num_matvecs
    for est in (slq.trace_function(np.exp), slq.rank()):
        assert est.num_matvecs == spent


def test_same_rng_same_result(case, np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 25))
    a = logdet(case.asarray(M), num_probes=5, num_steps=6, rng=9)
    b = logdet(case.asarray(M), num_probes=5, num_steps=6, rng=9)
    assert float(a.value) == float(b.value) and float(a.stderr) == float(b.stderr)


@pytest.mark.parametrize("probes", ["rademacher", "gaussian", "sphere"])
def test_probe_kinds(probes, np_rng):
    n = 50
    lam = np.linspace(1.0, 3.0, n)
    M = _with_spectrum(np_rng, lam)
    est = trace_function(M, lambda t: t, num_probes=40, num_steps=4, probes=probes, rng=2)
    assert abs(float(est.value) - lam.sum()) <= 4 * float(est.stderr)
    assert est.info["probes"] == probes


@pytest.mark.parametrize("reorth", ["none", "full", "partial"])
def test_reorthogonalisation_choices_agree(reorth, np_rng):
    n = 120
    lam = np.geomspace(1e-2, 10.0, n)
    M = _with_spectrum(np_rng, lam)
    est = logdet(M, num_probes=10, num_steps=40, reorth=reorth, rng=4)
    ref = logdet(M, num_probes=10, num_steps=40, reorth="full", rng=4)
    # same probes: the quadrature values agree to far below the statistical error
    assert abs(float(est.value) - float(ref.value)) <= 1e-2 * float(ref.stderr)
    assert abs(float(est.value) - np.sum(np.log(lam))) <= 4 * float(est.stderr)


def test_float32_operator_with_float64_accumulation(xp, np_rng):
    n = 60
    lam = np.linspace(0.5, 2.0, n)
    M = _with_spectrum(np_rng, lam).astype(np.float32)
    A = matfree.Dense(xp.asarray(M))
    est = logdet(A, num_probes=20, num_steps=12, rng=0, accumulate_dtype="float64")
    assert est.value.dtype == xp.float64
    exact = np.linalg.slogdet(M.astype(np.float64))[1]
    assert abs(float(est.value) - exact) <= 4 * float(est.stderr) + 1e-4 * n


# ---------------------------------------------------------------- logdet


def test_logdet_of_an_indefinite_operator_is_an_error(np_rng):
    lam = np.concatenate([[-0.5], np.linspace(1.0, 2.0, 29)])
    M = _with_spectrum(np_rng, lam)
    with pytest.raises(ValueError, match=r"positive definite.*Ritz value theta=-0.5\d* <= 0"):
        logdet(M, num_probes=4, num_steps=30, rng=0)
    # shifting fixes it
    est = logdet(matfree.damped(matfree.Dense(M), 1.0), num_probes=30, num_steps=30, rng=0)
    assert abs(float(est.value) - np.sum(np.log(lam + 1.0))) <= 4 * float(est.stderr) + 1e-10


def test_non_finite_values_are_never_passed_on(np_rng):
    M = _with_spectrum(np_rng, np.linspace(-1.0, 1.0, 20))
    slq = SLQ(M, num_probes=3, num_steps=20, rng=0)
    with np.errstate(all="ignore"):
        with pytest.raises(ValueError, match="f returned NaN or Inf at the quadrature node"):
            slq.trace_function(np.log)
    with pytest.raises(TypeError, match="f must be callable"):
        slq.trace_function("log")
    with pytest.raises(TypeError, match="f must act elementwise"):
        slq.trace_function(lambda t: t.sum())
    bad = matfree.from_hvp(lambda v: v * np.nan, size=5)
    with pytest.raises(matfree.NonFiniteError, match="NaN or Inf"):
        logdet(bad, num_probes=2, num_steps=3, rng=0)


def test_single_probe_has_infinite_stderr(np_rng):
    est = logdet(np.diag(np.linspace(1, 2, 10)), num_probes=1, num_steps=5, rng=0)
    assert math.isinf(float(est.stderr)) and "no standard error" in est.info["note"]


def test_num_steps_above_n_is_clipped_and_reported(np_rng):
    lam = np.linspace(1.0, 2.0, 8)
    M = _with_spectrum(np_rng, lam)
    est = logdet(M, num_probes=4, num_steps=50, rng=0)
    assert est.status == "clipped" and est.info["clipped"] and est.info["num_steps"] == 8
    assert est.info["num_steps_requested"] == 50


# --------------------------------------------------------------- density


def _smoothed_truth(lam, grid, h):
    return np.mean(np.exp(-0.5 * ((grid[:, None] - lam[None, :]) / h) ** 2), axis=1) / (
        h * math.sqrt(2 * math.pi)
    )


def test_density_integrates_to_one_and_matches_the_true_spectrum(case, np_rng):
    n = 150
    lam = np.concatenate([np_rng.normal(1.0, 0.1, 90), np_rng.uniform(3.0, 5.0, 60)])
    M = _with_spectrum(np_rng, lam)
    dens = spectral_density(case.asarray(M), num_probes=40, num_steps=40, rng=5)
    assert isinstance(dens, Density)
    assert abs(dens.integral() - 1.0) < 1e-3
    grid = to_np(dens.grid).astype(np.float64)
    vals = to_np(dens.values).astype(np.float64)
    truth = _smoothed_truth(lam, grid, dens.bandwidth)
    l1 = np.sum(np.abs(vals - truth)[:-1] * np.diff(grid))
    assert l1 < 0.1, l1
    # the histogram of the true eigenvalues: mass per bin agrees
    edges = np.linspace(grid[0], grid[-1], 9)
    cdf = np.concatenate([[0.0], np.cumsum((vals[1:] + vals[:-1]) / 2 * np.diff(grid))])
    mass = np.diff(np.interp(edges, grid, cdf))
    hist = np.histogram(lam, bins=edges)[0] / n
    assert np.abs(mass - hist).max() < 0.06
    assert B.namespace(dens.values) is case.xp


def test_density_kernels_grid_and_bandwidth(np_rng):
    lam = np.concatenate([np.zeros(30), np.full(30, 2.0)])
    M = _with_spectrum(np_rng, lam)
    slq = SLQ(M, num_probes=10, num_steps=5, rng=0)
    grid = np.linspace(-1.0, 3.0, 401)
    g = slq.density(grid, bandwidth=0.1)
    # two exact clusters: the estimate is the truth up to the sampling error of the weights
    err = np.abs(to_np(g.values) - _smoothed_truth(lam, grid, 0.1))
    assert np.all(err <= 4 * to_np(g.stderr) + 1e-8)
    lor = slq.density(grid, bandwidth=0.05, kernel="lorentzian")
    assert lor.kernel == "lorentzian" and 0.9 < lor.integral() < 1.0  # heavy tails leave the grid
    lor_truth = np.mean(0.05 / np.pi / ((grid[:, None] - lam[None, :]) ** 2 + 0.05**2), axis=1)
    assert np.all(np.abs(to_np(lor.values) - lor_truth) <= 4 * to_np(lor.stderr) + 1e-8)
    assert np.all(to_np(g.stderr) >= 0)
    with pytest.raises(ValueError, match="kernel='box' is not known"):
        slq.density(kernel="box")
    with pytest.raises(ValueError, match="bandwidth=0.0 is invalid"):
        slq.density(bandwidth=0.0)
    with pytest.raises(ValueError, match="grid must be a 1-D array"):
        slq.density(np.zeros((3, 3)))


def test_density_plot_labels_axes(np_rng):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    dens = spectral_density(np.diag(np.linspace(0, 1, 30)), num_probes=4, num_steps=6, rng=0)
    ax = dens.plot()
    assert ax.get_xlabel() == "eigenvalue" and ax.get_ylabel() == "spectral density"
    assert "Spectral density" in ax.get_title() and "4 probes" in ax.get_title()
    assert len(ax.lines) == 1
    plt.close(ax.figure)
    assert "Density(512 points" in repr(dens)


# ------------------------------------------------------------------ rank


def test_rank_with_exact_zero_eigenvalues(case, np_rng):
    n, r = 60, 12
    lam = np.concatenate([np_rng.uniform(1.0, 5.0, r), np.zeros(n - r)])
    M = _with_spectrum(np_rng, lam)
    est = rank(case.asarray(M), num_probes=40, num_steps=20, rng=1)
    eta = est.info["threshold"]
    assert 0 < eta < 1.0 and est.info["threshold_rule"] == "widest logarithmic gap"
    assert abs(float(est.value) - r) <= 4 * float(est.stderr)


def test_rank_is_exact_on_a_clear_gap_once_the_stderr_is_small(np_rng):
    """With enough probes (stderr well below 1/2) the rounded estimate is the rank."""
    n, r = 40, 4
    lam = np.concatenate([np_rng.uniform(1.0, 2.0, r), 1e-9 * np_rng.uniform(size=n - r)])
    M = _with_spectrum(np_rng, lam)
    est = rank(M, num_probes=600, num_steps=8, rng=2)
    assert 1e-9 < est.info["threshold"] < 1.0
    assert float(est.stderr) < 0.15
    assert round(float(est.value)) == r


def test_rank_thresholds(np_rng):
    n = 50
    lam = np.concatenate([np.linspace(1.0, 2.0, 10), 1e-4 * np.ones(n - 10)])
    M = _with_spectrum(np_rng, lam)
    slq = SLQ(M, num_probes=30, num_steps=12, rng=0)
    noise_gap = slq.rank()  # the gap between 1e-4 and 1 is found
    assert 1e-4 < noise_gap.info["threshold"] < 1.0
    assert abs(float(noise_gap.value) - 10) <= 4 * float(noise_gap.stderr)
    everything = slq.rank(threshold=1e-5)
    assert abs(float(everything.value) - n) <= 4 * float(everything.stderr) + 1e-9
    rel = slq.rank(rtol=1e-2)
    assert rel.info["threshold"] == pytest.approx(1e-2 * 2.0, rel=1e-6)
    full = rank(np.diag(np.linspace(1.0, 2.0, 20)), num_probes=3, num_steps=5, rng=0)
    assert full.info["threshold_rule"].startswith("matrix_rank default")
    assert float(full.value) == pytest.approx(20.0)
    indefinite = rank(np.diag([-3.0, 2.0, 0.0, 0.0]), threshold=0.5, num_probes=3, num_steps=4, rng=0)
    assert float(indefinite.value) == pytest.approx(2.0)  # counts |lambda| > threshold
    with pytest.raises(ValueError, match="pass threshold= or rtol=, not both"):
        slq.rank(threshold=1.0, rtol=0.1)
    with pytest.raises(ValueError, match="threshold=-1.0 is invalid"):
        slq.rank(threshold=-1.0)


def test_rank_bias_bound_covers_the_quadrature_error(np_rng):
    """Without a gap the count is biased; stderr + the Chebyshev-Markov-Stieltjes bound cover it."""
    n = 300
    lam = np.linspace(0.01, 1.0, n)
    M = _with_spectrum(np_rng, lam)
    exact = int(np.sum(lam > 0.5))
    bounds = []
    for steps in (6, 12, 40):
        est = rank(matfree.Dense(M, positive_semidefinite=True), threshold=0.5,
                   num_probes=400, num_steps=steps, reorth="full", rng=1)
        bound = est.info["bias_bound"]
        assert abs(float(est.value) - exact) <= 4 * float(est.stderr) + bound
        bounds.append(bound)
    assert bounds[0] > bounds[1] > bounds[2] > 0  # more steps resolve the threshold better
    two_cuts = rank(M, threshold=0.5, num_probes=400, num_steps=12, reorth="full", rng=1)
    assert two_cuts.info["bias_bound"] >= bounds[1]  # -eta is a cut too unless declared PSD


# ------------------------------------------------------------- bad input


def test_bad_input(np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 10))
    with pytest.raises(ValueError, match=r"num_probes=0 is out of range; expected 1 <= num_probes"):
        SLQ(M, num_probes=0)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        SLQ(M, num_steps=2.5)
    with pytest.raises(ValueError, match="probes='uniform' is not known"):
        SLQ(M, probes="uniform")
    with pytest.raises(ValueError, match="reorth='twice' is not known"):
        SLQ(M, reorth="twice")
    with pytest.raises(ValueError, match=r"A must be square"):
        logdet(np.ones((3, 4)))
    with pytest.raises(ValueError, match="A is not symmetric"):
        logdet(np.triu(np.ones((4, 4))) + np.eye(4))
    assert "SLQ(n=10, num_probes=3" in repr(SLQ(M, num_probes=3, num_steps=4, rng=0))


# ------------------------------------------- executors and progress bars

from test_trace import fake_tqdm, pool  # noqa: E402, F401 - shared fixtures


@pytest.mark.parametrize("reorth", ["none", "partial"])
def test_executor_threads_give_the_serial_quadrature_bit_for_bit(case, reorth, pool, np_rng):
    M = _with_spectrum(np_rng, np.linspace(0.5, 3.0, 30))
    A = case.asarray(M)
    kw = dict(num_probes=8, num_steps=6, rng=5, reorth=reorth, block_size=3)
    serial = SLQ(A, **kw)
    threads = SLQ(A, executor=pool, **kw)
    assert np.array_equal(to_np(serial.nodes), to_np(threads.nodes))
    assert np.array_equal(to_np(serial.weights), to_np(threads.weights))
    assert threads.num_matvecs == serial.num_matvecs == 48
    assert threads.info["num_blocks"] == 3 and threads.info["executor"] == "ThreadPoolExecutor"
    # default blocks: one serially, about two per worker with the executor
    one, split = SLQ(A, num_probes=8, num_steps=6, rng=5), SLQ(A, num_probes=8, num_steps=6, rng=5, executor=pool)
    assert one.info["num_blocks"] == 1 and split.info["num_blocks"] == 4
    case.close(split.logdet().value, to_np(one.logdet().value), rtol=1e3 * case.eps, atol=0)


def test_one_call_functions_take_an_executor(pool, np_rng):
    M = _with_spectrum(np_rng, np.concatenate([np.zeros(10), np.linspace(1.0, 2.0, 20)]))
    kw = dict(num_probes=6, num_steps=8, rng=1, block_size=2)
    P = M + np.eye(30)
    assert float(logdet(P, executor=pool, **kw).value) == float(logdet(P, **kw).value)
    assert float(trace_function(M, np.exp, executor=pool, **kw).value) == float(
        trace_function(M, np.exp, **kw).value
    )
    assert float(rank(M, executor=pool, **kw).value) == float(rank(M, **kw).value)
    np.testing.assert_array_equal(
        spectral_density(M, executor=pool, **kw).values, spectral_density(M, **kw).values
    )


def test_an_error_in_a_block_names_it(pool):
    def hvp(V):
        W = 2.0 * V
        if V.shape[1] == 2:  # the last block of 3 + 3 + 2 probes
            W[0, 0] = np.inf
        return W

    A = matfree.from_hvp(lambda v: 2.0 * v, size=20, batched=hvp)
    for executor in (None, pool):
        with pytest.raises(matfree.NonFiniteError) as info:
            SLQ(A, num_probes=8, num_steps=4, block_size=3, rng=0, executor=executor)
        assert "raised while evaluating probe block 2 of 3" in info.value.__notes__
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        SLQ(A, 4, 4, executor=object())
    with pytest.raises(TypeError, match="progress must be True or False"):
        logdet(A, progress=None)


def test_progress_bar_shows_the_running_estimate(fake_tqdm, pool, np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 30))
    for executor in (None, pool):
        est = logdet(M, num_probes=6, num_steps=5, block_size=2, rng=0, progress=True, executor=executor)
        bar = fake_tqdm[-1]
        assert bar.total == 30 and bar.n == est.num_matvecs == 30 and bar.closed
        assert bar.desc == "SLQ" and len(bar.postfixes) == 3  # one per block
        value, _, se = bar.postfixes[-1]["estimate"].partition(" ± ")
        # the bar shows the plain running mean; the result adds control variates
        assert float(value) == pytest.approx(float(est.info["value_plain"]), rel=1e-5)
        assert float(se) == pytest.approx(float(est.info["stderr_plain"]), rel=0.05)
        assert bar.postfixes[-1]["probes"] == 6
    SLQ(M, 4, 3, rng=0, progress=True)  # the class: a bar over the products, no estimate
    assert fake_tqdm[-1].n == 12 and fake_tqdm[-1].postfixes == []


# ------------------------------------------------------------- control variates


def _poisson(m, shift):
    import scipy.sparse as sp

    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    return (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T) + shift * sp.identity(m * m)).tocsr()


def test_operators_know_the_trace_of_their_square(np_rng):
    M = _with_spectrum(np_rng, np.linspace(-1.0, 2.0, 12))
    S = _poisson(4, 0.3)
    d = np_rng.standard_normal(7)
    cases = [
        (matfree.Dense(M), M),
        (matfree.Sparse(S), S.toarray()),
        (matfree.Diagonal(d), np.diag(d)),
        (matfree.Identity(5), np.eye(5)),
        (matfree.damped(matfree.Sparse(S), 0.7), S.toarray() + 0.7 * np.eye(16)),
        (matfree.damped(matfree.Dense(M), -0.2), M - 0.2 * np.eye(12)),
    ]
    for op, ref in cases:
        assert op._trace_of_square() == pytest.approx(np.trace(ref @ ref), rel=1e-12)
    assert matfree.from_hvp(lambda v: M @ v, size=12)._trace_of_square() is None
    assert matfree.Dense(np_rng.standard_normal((3, 3)))._trace_of_square() is None  # not symmetric


def test_control_variates_variance_matches_theory_and_intervals_cover():
    """Over 300 seeds: the regression estimator's error variance is the residual variance
    predicted from the exact covariances of Rademacher quadratic forms, and its 95% t
    interval covers the exact logdet about 95% of the time."""
    S = _poisson(20, 1.0)  # n = 400, condition 9: 15 steps make the quadrature exact to 1e-9
    A = S.toarray()
    lam, V = np.linalg.eigh(A)
    F = (V * np.log(lam)) @ V.T
    exact = float(np.log(lam).sum())
    # Rademacher: Cov(z'Fz, z'Gz) = 2 sum_{i != j} F_ij G_ij
    G = [A, A @ A]
    off = lambda X, Y: 2.0 * (np.sum(X * Y) - np.sum(np.diag(X) * np.diag(Y)))  # noqa: E731
    sxx = np.array([[off(a, b) for b in G] for a in G])
    sxf = np.array([off(a, F) for a in G])
    var_f = off(F, F)
    var_r = var_f - sxf @ np.linalg.solve(sxx, sxf)
    p, q, seeds = 20, 2, 300
    assert var_r < var_f / 10  # what the control variates are for, on this matrix
    errs, plain_errs, covered = [], [], 0
    op = matfree.Sparse(S, positive_definite=True)
    for seed in range(seeds):
        est = logdet(op, num_probes=p, num_steps=15, rng=seed)
        assert est.info["control_variates"] == ("tr A", "tr A^2") and est.info["dof"] == p - 1 - q
        errs.append(float(est.value) - exact)
        plain_errs.append(float(est.info["value_plain"]) - exact)
        lo, hi = est.confidence_interval(0.95)
        covered += lo <= exact <= hi
    # fitted coefficients inflate the variance by (p - 2) / (p - q - 2) (normal regression);
    # a variance from 300 draws has relative sd sqrt(2 / 299) = 0.08: +-4 sd, and 5% slack
    # for the non-normal forms
    predicted = var_r / p * (p - 2) / (p - q - 2)
    assert 0.62 <= np.mean(np.square(errs)) / predicted <= 1.38
    assert 0.62 <= np.mean(np.square(plain_errs)) / (var_f / p) <= 1.38
    # binomial(300, 0.95): sd 1.3%; +-4 sd
    assert 0.90 <= covered / seeds <= 1.0


def test_control_variates_need_known_moments_and_enough_probes(np_rng):
    M = _with_spectrum(np_rng, np.linspace(1.0, 2.0, 30))
    hvp = matfree.from_hvp(lambda v: M @ v, size=30, symmetric=True)
    assert "control_variates" not in logdet(hvp, num_probes=6, num_steps=5, rng=0).info
    few = logdet(M, num_probes=3, num_steps=5, rng=0)  # 3 probes, 2 variates: no residual left
    assert "control_variates" not in few.info
    one_step = trace_function(M, np.exp, num_probes=6, num_steps=1, rng=0)  # exact to degree 1
    assert one_step.info["control_variates"] == ("tr A",)
    off = logdet(M, num_probes=6, num_steps=5, rng=0, control_variates=False)
    on = logdet(M, num_probes=6, num_steps=5, rng=0)
    assert "control_variates" not in off.info
    assert float(off.value) == float(on.info["value_plain"])
    # f(t) = t is its own control variate: the exact trace, to rounding
    lin = trace_function(M, lambda t: 2.0 * t, num_probes=6, num_steps=5, rng=0)
    assert float(lin.value) == pytest.approx(2.0 * np.trace(M), rel=1e-13)


def test_quadrature_change_is_the_last_steps_move_on_the_same_probes():
    S = _poisson(20, 0.01)  # condition ~ 800: 6 steps are far from converged
    op = matfree.Sparse(S, positive_definite=True)
    slq6 = SLQ(op, num_probes=12, num_steps=6, rng=4)
    slq5 = SLQ(op, num_probes=12, num_steps=5, rng=4)  # the same probes, one step fewer
    change = slq6.quadrature_change(np.log)
    plain6 = slq6.logdet(control_variates=False)
    plain5 = slq5.logdet(control_variates=False)
    assert change == pytest.approx(float(plain6.value) - float(plain5.value), rel=1e-10)
    assert slq6.quadrature_change(np.log) == change  # cached rule, same answer
    # the probes' noise cancels: what is left shrinks geometrically with the steps
    changes = [abs(SLQ(op, 12, m, rng=4).quadrature_change(np.log)) for m in (4, 6, 8, 12)]
    assert changes == sorted(changes, reverse=True) and changes[-1] < changes[0] / 20
    # converged: nothing left to move
    M = _with_spectrum(np.random.default_rng(0), np.linspace(1.0, 2.0, 40))
    assert abs(SLQ(M, 6, 15, rng=0).quadrature_change(np.log)) < 1e-12 * 40
    # three distinct eigenvalues: every probe breaks down after 3 steps with an exact rule
    D = _with_spectrum(np.random.default_rng(1), np.repeat([1.0, 2.0, 3.0], 10))
    assert SLQ(D, 6, 8, rng=0).quadrature_change(np.log) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(SLQ(M, 6, 1, rng=0).quadrature_change(np.log))
