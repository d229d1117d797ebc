"""The Numba kernels against their array-API twins, and the dispatch between them.

The twins (the references) are the pure array-API functions of the algorithm
modules: ``matfree.solvers._cg_update``, ``_cg_residual``, ``_cg_direction``
and ``matfree.lanczos._lanczos_recurrence`` (``.reference`` once they are
routed through :func:`matfree._kernels.fused`).  Inputs are random, float32
and float64, vectors and blocks in both memory orders; tolerances come from
the standard rounding-error bounds of the operations.
"""

import importlib.util

import array_api_compat.numpy as np_xp
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import to_np

import matfree
from matfree import _kernels as K

# the modules, not the functions of the same name that ``matfree`` exports
lanczos = importlib.import_module("matfree.lanczos")
solvers = importlib.import_module("matfree.solvers")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="Numba is not installed"
)

N = 3 * K.cg.MIN_SIZE // 2 + 17  # above the size threshold, not a multiple of the chunk


def _twin(f):
    return getattr(f, "reference", f)


CG_UPDATE = _twin(solvers._cg_update)
CG_RESIDUAL = _twin(solvers._cg_residual)
CG_DIRECTION = _twin(solvers._cg_direction)
RECURRENCE = _twin(lanczos._lanczos_recurrence)


@pytest.fixture(params=["float32", "float64"])
def dt(request):
    return np.dtype(request.param)


@pytest.fixture(params=["vector", "block_c", "block_f"])
def layout(request):
    return request.param


def _random(rng, layout, dt, k=3):
    if layout == "vector":
        return rng.standard_normal(N).astype(dt)
    a = rng.standard_normal((N, k)).astype(dt)
    return np.asfortranarray(a) if layout == "block_f" else a


def _step(rng, layout, dt, k=3):
    """A step length as the solvers pass it: a Python float, or one per column."""
    if layout == "vector":
        return float(rng.uniform(0.1, 2.0))
    return rng.uniform(0.1, 2.0, k).astype(dt)


def _sum_bound(terms, eps):
    """Bound on the difference of two summation orders of ``terms`` (per column)."""
    n = terms.shape[0]
    return 2 * n * eps * np.sum(np.abs(terms.astype(np.float64)), axis=0)


def _axpy_bound(a, alpha, b, eps):
    """Bound on the distance of a computed ``a ± alpha b`` from a float64 reference."""
    return 4 * eps * (np.abs(a) + np.abs(alpha) * np.abs(b)).astype(np.float64)


# ---------------------------------------------------------------------- CG
#
# The twins may update their arguments in place (the solvers own x, r and p);
# a kernel must have exactly the same side effects.  Each comparison runs
# the twin and the kernel on separate copies of the same inputs.


def _copies(arrays):
    return [a.copy(order="K") for a in arrays]


def _same_side_effects(args_twin, out_twin, args_kern, out_kern):
    """Outputs alias the same arguments, and every argument ends up equal."""
    outs_t = out_twin if isinstance(out_twin, tuple) else (out_twin,)
    outs_k = out_kern if isinstance(out_kern, tuple) else (out_kern,)
    for ot, ok in zip(outs_t, outs_k):
        alias_t = [i for i, a in enumerate(args_twin) if ot is a]
        alias_k = [i for i, a in enumerate(args_kern) if ok is a]
        assert alias_t == alias_k
    for at, ak in zip(args_twin, args_kern):
        np.testing.assert_array_equal(ak, at)


def test_cg_update_matches_twin(np_rng, layout, dt):
    args = [_random(np_rng, layout, dt) for _ in range(4)]
    x0, r0, p, Ap = (a.copy() for a in args)
    alpha = _step(np_rng, layout, dt)
    mine, theirs = _copies(args), _copies(args)
    got = K.cg.update(*mine, alpha)
    assert got is not NotImplemented
    want = CG_UPDATE(np_xp, *theirs, alpha)
    eps = np.finfo(dt).eps
    # x and r: the same operations in the same order, no fused multiply-add,
    # hence equal bits (and within two roundings of the exact update)
    _same_side_effects(theirs, want[:2], mine, got[:2])
    for g, (a, b) in zip(got[:2], [(x0, p), (r0, Ap)]):
        assert g.dtype == dt
        exact = a.astype(np.float64) + np.asarray(alpha, dtype=np.float64) * b * (1 if a is x0 else -1)
        assert np.all(np.abs(g - exact) <= _axpy_bound(a, alpha, b, eps))
    # the squared norm: another summation order, equal to rounding
    assert type(got[2]) is type(want[2]) and got[2].dtype == want[2].dtype
    rnew = want[1].astype(np.float64)
    assert np.all(np.abs(got[2] - want[2]) <= _sum_bound(rnew * rnew, eps) + eps * want[2])


def test_cg_residual_matches_twin(np_rng, layout, dt):
    args = [_random(np_rng, layout, dt) for _ in range(2)]
    alpha = _step(np_rng, layout, dt)
    mine, theirs = _copies(args), _copies(args)
    got = K.cg.residual(*mine, alpha)
    want = CG_RESIDUAL(np_xp, *theirs, alpha)
    eps = np.finfo(dt).eps
    _same_side_effects(theirs, want[:1], mine, got[:1])
    assert type(got[1]) is type(want[1]) and got[1].dtype == want[1].dtype
    rnew = want[0].astype(np.float64)
    assert np.all(np.abs(got[1] - want[1]) <= _sum_bound(rnew * rnew, eps) + eps * want[1])


def test_cg_direction_matches_twin(np_rng, layout, dt):
    args = [_random(np_rng, layout, dt) for _ in range(2)]
    beta = _step(np_rng, layout, dt)
    mine, theirs = _copies(args), _copies(args)
    got = K.cg.direction(*mine, beta)
    assert got is not NotImplemented
    want = CG_DIRECTION(*theirs, beta)
    assert got.dtype == want.dtype and got.shape == want.shape
    _same_side_effects(theirs, want, mine, got)


def test_cg_kernels_leave_read_only_inputs_alone(np_rng):
    x, r, p, Ap = (_random(np_rng, "vector", np.float64) for _ in range(4))
    copies = _copies([p, Ap])
    for a in (p, Ap):
        a.flags.writeable = False
    K.cg.update(x, r, p, Ap, 0.5)
    K.cg.residual(r, Ap, 0.5)
    K.cg.direction(r, x, 0.5)
    np.testing.assert_array_equal(p, copies[0])
    np.testing.assert_array_equal(Ap, copies[1])
    r.flags.writeable = False  # an output: the kernel declines, the twin would raise
    assert K.cg.residual(r, Ap, 0.5) is NotImplemented


def test_cg_nonfinite_propagates_like_twin(np_rng):
    args = [_random(np_rng, "vector", np.float64) for _ in range(4)]
    args[3][7] = np.inf
    mine, theirs = _copies(args), _copies(args)
    got = K.cg.update(*mine, 0.5)
    want = CG_UPDATE(np_xp, *theirs, 0.5)
    assert not np.isfinite(got[2]) and not np.isfinite(want[2])
    _same_side_effects(theirs, want[:2], mine, got[:2])


@pytest.mark.parametrize(
    "why",
    ["small", "mixed_dtype", "numpy_scalar_promotes", "strided", "mixed_order", "3d", "int"],
)
def test_cg_kernel_declines(np_rng, why):
    x, r, p, Ap = (_random(np_rng, "vector", np.float32) for _ in range(4))
    alpha = 0.5
    if why == "small":
        x, r, p, Ap = (a[: K.cg.MIN_SIZE - 1] for a in (x, r, p, Ap))
    elif why == "mixed_dtype":
        Ap = Ap.astype(np.float64)
    elif why == "numpy_scalar_promotes":
        alpha = np.float64(0.5)  # the twin promotes float32 * float64 scalar to float64
    elif why == "strided":
        x, r, p, Ap = (np.repeat(a, 2)[::2] for a in (x, r, p, Ap))
    elif why == "mixed_order":
        x, r, p, Ap = (_random(np_rng, "block_c", np.float32) for _ in range(4))
        Ap = np.asfortranarray(Ap)
        alpha = np.full(3, 0.5, dtype=np.float32)
    elif why == "3d":
        x, r, p, Ap = (a[: 3 * 5 * 4096].reshape(3, 5, 4096) for a in (x, r, p, Ap))
    elif why == "int":
        x, r, p, Ap = (np.ones(N, dtype=np.int64) for _ in range(4))
    assert K.cg.update(x, r, p, Ap, alpha) is NotImplemented


def test_cg_reduction_independent_of_threads(np_rng):
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    args = [_random(np_rng, "vector", np.float64) for _ in range(4)]
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = K.cg.update(*_copies(args), 0.7)
        numba.set_num_threads(2)
        two = K.cg.update(*_copies(args), 0.7)
    finally:
        numba.set_num_threads(old)
    assert one[2] == two[2]
    np.testing.assert_array_equal(one[1], two[1])


def test_inner_matches_twin(np_rng, layout, dt):
    u, v = _random(np_rng, layout, dt), _random(np_rng, layout, dt)
    got = K.cg.inner(u, v)
    if layout == "block_c":
        assert got is NotImplemented  # rows of a C block are not contiguous: the twin
        return
    want = _twin(solvers._inner)(np_xp, u, v)
    assert type(got) is type(want) and got.dtype == want.dtype == dt
    prod = u.astype(np.float64) * v.astype(np.float64)
    eps = np.finfo(dt).eps
    # the kernel sums in float64, the twin in dt (NumPy's float32 dot sums in
    # float32): two summation orders, then the kernel's rounding to dt
    assert np.all(np.abs(got - want) <= _sum_bound(prod, eps) + eps * np.abs(want))


def test_serial_twins_run_no_threads(tmp_path):
    """A serial twin is cached under its own name, never as its parallel sibling.

    Numba files its disk cache by function name and line, not by compile
    flags: were the twin ``njit(parallel_kernel.py_func)``, a process that
    found the parallel build in the cache would run it (and start threads).
    The first process fills a fresh cache with the parallel builds; the
    second runs only the serial twins and must not start a thread pool.
    """
    import os
    import subprocess
    import sys

    setup = (
        "import numpy as np, numba\n"
        "from matfree._kernels import _numba_cg as C, _numba_sparse as S, _numba_lanczos as L\n"
        "import scipy.sparse as sp\n"
        "M = sp.random(300, 300, density=0.05, format='csr', random_state=0) + sp.identity(300, format='csr')\n"
        "b = np.array([0, 150, 300], dtype=np.intp)\n"
        "x = np.ones((1, 5000)); v = np.ones(300)\n"
    )
    parallel = setup + (
        "C.axpy_norm_rows(True, True, x, x.copy(), x, x, np.ones(1), x.copy(), x.copy())\n"
        "C.inner_rows(x, x)\n"
        "L.recurrence_rows(x, x, x, np.ones(1), x.copy())\n"
        "S.matvec_dot(M.indptr, M.indices, M.data, v, 0.0, np.empty(300), b)\n"
        "print(numba.threading_layer())\n"
    )
    serial = setup + (
        "C.axpy_norm_rows_serial(True, True, x, x.copy(), x, x, np.ones(1), x.copy(), x.copy())\n"
        "C.inner_rows_serial(x, x)\n"
        "L.recurrence_rows_serial(x, x, x, np.ones(1), x.copy())\n"
        "S.matvec_dot_serial(M.indptr, M.indices, M.data, v, 0.0, np.empty(300), b)\n"
        "try:\n    print(numba.threading_layer())\nexcept ValueError:\n    print('no threads')\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    outs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        for code in (parallel, serial)
    ]
    assert outs[0].strip() != "no threads" and list(tmp_path.rglob("*.nbi"))
    assert outs[1].strip() == "no threads"


# ---------------------------------------------------------------- Lanczos


@pytest.mark.parametrize(
    "form", ["vector", "rows_1", "rows_4", "cols_4", "cols_4_fortran", "rows_4_fortran"]
)
def test_lanczos_recurrence_matches_twin(np_rng, dt, form):
    p = 1 if form == "vector" else int(form.split("_")[1])
    axis = 0 if form.startswith("cols") else -1
    shape = (N,) if form == "vector" else ((p, N) if axis == -1 else (N, p))
    order = "F" if form.endswith("fortran") else "C"
    w, q, q_prev = (np.asarray(np_rng.standard_normal(shape), dtype=dt, order=order) for _ in range(3))
    beta = np.asarray(np_rng.uniform(0.1, 2.0, () if p == 1 and form == "vector" else (p,)), dtype=dt)
    args = [w, q, q_prev]
    mine, theirs = _copies(args), _copies(args)
    got = K.lanczos.recurrence(*mine, beta, axis=axis)
    assert got is not NotImplemented
    want = RECURRENCE(np_xp, *theirs, beta, axis=axis)
    _same_side_effects(theirs, want[:1], mine, got[:1])  # (pure: w is not modified)
    eps = np.finfo(dt).eps
    assert type(got[1]) is type(want[1]) and got[1].dtype == want[1].dtype
    assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
    qw = np.moveaxis(q.astype(np.float64) * w, axis, 0)  # vectors along axis 0
    d_alpha = _sum_bound(qw, eps)
    assert np.all(np.abs(got[1] - want[1]) <= d_alpha + eps * np.abs(want[1]))
    a = np.expand_dims(np.asarray(want[1], dtype=np.float64), axis)
    b = np.expand_dims(beta.astype(np.float64), axis)
    bound = np.expand_dims(d_alpha, axis) * np.abs(q) + 3 * eps * (
        np.abs(w) + np.abs(a * q) + np.abs(b * q_prev)
    )
    assert np.all(np.abs(got[0].astype(np.float64) - want[0]) <= bound)


def test_lanczos_recurrence_declines(np_rng):
    w, q, q_prev = (np_rng.standard_normal((2, N)) for _ in range(3))
    assert K.lanczos.recurrence(w, q, q_prev, [0.5, 0.5]) is NotImplemented
    assert K.lanczos.recurrence(w, q, q_prev, np.ones(2, dtype=np.float32)) is NotImplemented
    assert K.lanczos.recurrence(w[:, ::2], q[:, ::2], q_prev[:, ::2], np.ones(2)) is NotImplemented
    assert K.lanczos.recurrence(w, q, q_prev, np.ones(2), axis=0) is NotImplemented  # beta shape
    assert K.lanczos.recurrence(w[:, :100], q[:, :100], q_prev[:, :100], np.ones(2)) is NotImplemented


# --------------------------------------------------------------- dispatch


def _spied_kernel(calls):
    def kernel(x, r, p, Ap, alpha):
        calls.append("kernel")
        return K.cg.update(x, r, p, Ap, alpha)

    return kernel


def test_fused_routes_numpy_to_kernel_and_keeps_reference(np_rng):
    calls = []
    routed = K.fused(_spied_kernel(calls))(CG_UPDATE)
    assert routed.reference is CG_UPDATE and routed.__wrapped__ is CG_UPDATE
    args = [_random(np_rng, "vector", np.float64) for _ in range(4)]
    mine, theirs = _copies(args), _copies(args)
    got = routed(np_xp, *mine, 0.25)
    assert calls == ["kernel"]
    want = CG_UPDATE(np_xp, *theirs, 0.25)
    _same_side_effects(theirs, want[:2], mine, got[:2])


def test_fused_off_switch(np_rng):
    calls = []
    routed = K.fused(_spied_kernel(calls))(CG_UPDATE)
    x, r, p, Ap = (_random(np_rng, "vector", np.float64) for _ in range(4))
    with K.disabled():
        assert not K.active()
        routed(np_xp, x, r, p, Ap, 0.25)
        assert K.sparse.pays_off(sp.identity(N, format="csr"), x) is False
    assert calls == []
    assert K.active()


def test_fused_falls_back_on_other_backends(case, np_rng):
    """array-api-strict and PyTorch (and CuPy) take the twin and give its answer."""
    calls = []
    routed = K.fused(_spied_kernel(calls))(CG_UPDATE)
    raw = [np_rng.standard_normal(N) for _ in range(4)]
    got = routed(case.xp, *[case.asarray(a) for a in raw], 0.5)
    want = CG_UPDATE(case.xp, *[case.asarray(a) for a in raw], 0.5)
    assert calls == (["kernel"] if case.xp.__name__.endswith("numpy") else [])
    case.close(got[0], want[0])
    case.close(got[1], want[1])
    case.close(got[2], want[2], rtol=N * case.eps)


def test_fused_without_namespace_argument(np_rng):
    routed = K.fused(K.cg.direction)(CG_DIRECTION)
    args = [_random(np_rng, "block_f", np.float32) for _ in range(2)]
    beta = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    mine, theirs = _copies(args), _copies(args)
    _same_side_effects(theirs, CG_DIRECTION(*theirs, beta), mine, routed(*mine, beta))
    small = [a[:10] for a in _copies(args)]
    small2 = _copies(small)
    _same_side_effects(small2, CG_DIRECTION(*small2, beta), small, routed(*small, beta))


def test_usable():
    a32, a64 = np.ones(3, dtype=np.float32), np.ones(3)
    assert K.usable(a32, a32) and K.usable(a64)
    assert not K.usable(a32, a64)
    assert not K.usable(np.ones(3, dtype=np.int32))
    assert not K.usable([1.0, 2.0])


def test_warm_up_reports_first_call_times():
    times = K.warm_up(("float64",))
    assert {"cg.update", "cg.direction", "lanczos.recurrence", "sparse.csr_lanczos"} <= set(times)
    assert all(t >= 0.0 for t in times.values())
    with K.disabled():
        assert K.warm_up() == {}


# ------------------------------------------------------------------ sparse


def _csr(rng, n, dt, nnz_per_row=7, symmetric=False):
    M = sp.random(n, n, density=nnz_per_row / n, format="csr", dtype=np.float64, rng=rng)
    M = M + sp.diags(np.arange(1.0, n + 1.0))
    if symmetric:
        M = M + M.T
    return M.astype(dt).tocsr()


@pytest.mark.parametrize("shape", ["vector", "block_c", "block_f"])
def test_sparse_kernel_matches_scipy(np_rng, dt, shape):
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, dt)
    if shape == "vector":
        v = np_rng.standard_normal(n).astype(dt)
    else:
        v = np_rng.standard_normal((n, 5)).astype(dt)
        v = np.asfortranarray(v) if shape == "block_f" else v
    assert M.nnz >= K.sparse.MIN_NNZ
    got = K.sparse.csr_product(M, v)
    want = M @ v
    assert got.dtype == want.dtype and got.shape == want.shape
    # each row is summed in storage order, as SciPy does
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k", [1, 3, 7, 8, 13])
def test_sparse_block_kernel_matches_scipy_either_side_of_narrow(np_rng, dt, k):
    """Blocks narrower than 8 columns take the column-first loop, wider ones the row-first: SciPy's bits."""
    M = _csr(np_rng, K.sparse.MIN_NNZ // 4, dt)
    X = np_rng.standard_normal((M.shape[0], k)).astype(dt)
    np.testing.assert_array_equal(K.sparse.csr_matmat(M, X), M @ X)
    W, _ = K.sparse.csr_matmat_dot(M, X)  # the fused product: the same rows
    np.testing.assert_array_equal(W, M @ X)


def test_sparse_operator_routes_and_agrees(np_rng, dt):
    numba = pytest.importorskip("numba")
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, dt)
    A = matfree.Sparse(M)
    v = np_rng.standard_normal(n).astype(dt)
    V = np_rng.standard_normal((n, 3)).astype(dt)
    assert K.sparse.pays_off(A.M, v) == (numba.get_num_threads() >= 2)
    np.testing.assert_array_equal(A @ v, M @ v)
    np.testing.assert_array_equal(A @ V, M @ V)
    eps = np.finfo(dt).eps
    absM = abs(M).T
    np.testing.assert_array_less(np.abs(A.rmatvec(v) - M.T @ v), 16 * eps * (absM @ np.abs(v)) + 1e-30)
    np.testing.assert_array_less(np.abs(A.rmatmat(V) - M.T @ V), 16 * eps * (absM @ np.abs(V)) + 1e-30)
    with K.disabled():
        np.testing.assert_array_equal(A @ v, M @ v)
    assert A.num_matvecs == 1 + 3 + 1 + 3 + 1


def test_sparse_operator_mixed_dtypes_cast_once(np_rng):
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, np.float32)
    A = matfree.Sparse(M)
    v = np_rng.standard_normal(n)
    first = A @ v
    assert first.dtype == np.float64
    np.testing.assert_array_equal(first, M.astype(np.float64) @ v)
    cast = A._mat(np.dtype(np.float64))
    np.testing.assert_array_equal(A @ v, first)
    assert A._mat(np.dtype(np.float64)) is cast
    assert A._mat(np.dtype(np.float32)) is A.M


def test_sparse_pays_off_only_when_large(np_rng, monkeypatch):
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, np.float64)
    v = np.ones(n)
    assert K.sparse.pays_off(M, v) and K.sparse.pays_off(M, np.ones((n, 2)))
    assert not K.sparse.pays_off(M[:100, :100], v[:100])  # too little work
    small = M[: n // 8, : n // 8]
    assert small.nnz < K.sparse.MIN_NNZ <= small.nnz * 30
    assert K.sparse.pays_off(small, np.ones((n // 8, 30))) and not K.sparse.pays_off(small, v[: n // 8])
    assert not K.sparse.pays_off(M, v.astype(np.float32))  # dtype of the matrix only
    assert not K.sparse.pays_off(M.tocsc(), v)
    assert not K.sparse.pays_off(M, np.repeat(v, 2)[::2])
    with K.disabled():
        assert not K.sparse.pays_off(M, v)


@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_kernels_on_one_thread_are_serial_twins(np_rng, monkeypatch, threads):
    """One thread (or ``serial()``): the serial twins run, with the threaded kernels' bits."""
    M = _csr(np_rng, K.sparse.MIN_NNZ // 4, np.float64)
    x = np_rng.standard_normal(M.shape[0])
    X = np_rng.standard_normal((M.shape[0], 3))
    jit = K.sparse._jit()
    monkeypatch.setattr(K._config, "num_threads", lambda: threads)
    suffix = "" if threads >= 2 else "_serial"
    assert K.sparse._threaded("matvec")[0] is getattr(jit, "matvec" + suffix)
    assert K.sparse._threaded("matmat")[0] is getattr(jit, "matmat" + suffix)
    np.testing.assert_array_equal(K.sparse.csr_matvec(M, x), M @ x)
    np.testing.assert_array_equal(K.sparse.csr_matmat(M, X), M @ X)


def test_sparse_poisson_cg_unchanged_by_kernels():
    """End to end: SciPy-backed products and kernel products give the same CG iterates."""
    m = 160  # n = 25600, nnz = 127360 > MIN_NNZ
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    M = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsr()
    b = np.random.default_rng(3).standard_normal(M.shape[0])
    A = matfree.Sparse(M, positive_definite=True)
    res = solvers.cg(A, b, rtol=1e-8, maxiter=40)
    with K.disabled():
        ref = solvers.cg(A, b, rtol=1e-8, maxiter=40)
    assert res.num_iters == ref.num_iters == 40
    eps = np.finfo(np.float64).eps
    scale = np.max(np.abs(to_np(ref.x)))
    np.testing.assert_allclose(to_np(res.x), to_np(ref.x), atol=1e4 * eps * scale, rtol=0)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_sparse_matvec_dot_matches_twin(np_rng, dt, shift):
    numba = pytest.importorskip("numba")
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, dt, symmetric=True)
    x = np_rng.standard_normal(n).astype(dt)
    y, d = K.sparse.csr_matvec_dot(M, x, shift)
    want = M @ x + shift * x if shift else M @ x
    assert y.dtype == want.dtype
    np.testing.assert_array_equal(y, want)  # the twin's rounding, row by row
    terms = x.astype(np.float64) * want.astype(np.float64)
    assert isinstance(d, float)
    assert abs(d - float(np.vecdot(x, want))) <= _sum_bound(terms, np.finfo(dt).eps)
    # the dot product is cut into parts independent of the number of threads
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert K.sparse.csr_matvec_dot(M, x, shift)[1] == d
    finally:
        numba.set_num_threads(old)


def test_sparse_matvec_dot_declines(np_rng):
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, np.float64)
    x = np.ones(n)
    assert K.sparse.csr_matvec_dot(M[:100, :100], x[:100]) is NotImplemented  # too small
    assert K.sparse.csr_matvec_dot(M, x.astype(np.float32)) is NotImplemented
    assert K.sparse.csr_matvec_dot(M.tocsc(), x) is NotImplemented
    assert K.sparse.csr_matvec_dot(M, np.repeat(x, 2)[::2]) is NotImplemented
    assert K.sparse.csr_matvec_dot(M[:, :-1], x[:-1]) is NotImplemented  # not square
    with K.disabled():
        assert K.sparse.csr_matvec_dot(M, x) is NotImplemented


def test_sparse_operator_matvec_dot_hook_counts(np_rng):
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, np.float32)
    A = matfree.Sparse(M)
    v = np_rng.standard_normal(n).astype(np.float32)
    w, d = A._matvec_dot(v, 0.5)
    np.testing.assert_array_equal(w, A @ v + np.float32(0.5) * v)
    assert A.num_matvecs == 2
    assert A._matvec_dot(v.astype(np.float64)) is NotImplemented  # mixed: matvec's path
    assert A.num_matvecs == 2


def test_solvers_route_cg_updates_to_kernels():
    assert solvers._cg_update.kernel is K.cg.update
    assert solvers._cg_residual.kernel is K.cg.residual
    assert solvers._cg_direction.kernel is K.cg.direction
    assert solvers._inner.kernel is K.cg.inner


@pytest.mark.parametrize("damping", [0.0, 1e-2, [1e-3, 1e-2, 1e-1]])
def test_cg_with_all_kernels_agrees_with_array_api_path(damping):
    """CG end to end above every size threshold: kernels on and off agree to rounding."""
    m = 272  # n = 73984 >= cg.MIN_SIZE, nnz > sparse.MIN_NNZ
    assert m * m >= K.cg.MIN_SIZE
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    M = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T)).tocsr()
    b = np.random.default_rng(4).standard_normal(M.shape[0])
    A = matfree.Sparse(M, positive_definite=True)
    res = solvers.cg(A, b, damping=damping, rtol=1e-12, maxiter=30)
    with K.disabled():
        ref = solvers.cg(A, b, damping=damping, rtol=1e-12, maxiter=30)
    assert res.num_iters == ref.num_iters == 30 and res.num_matvecs == ref.num_matvecs
    eps = np.finfo(np.float64).eps
    scale = np.max(np.abs(ref.x))
    # 30 steps, each rounding n-term dot products: a generous multiple of eps
    np.testing.assert_allclose(res.x, ref.x, atol=1e5 * eps * scale, rtol=0)
    np.testing.assert_allclose(res.residual_norms, ref.residual_norms, rtol=1e5 * eps)


def test_serial_and_threaded_kernels_agree_bit_for_bit(np_rng, monkeypatch):
    """Below the thread thresholds a serial twin of the same code runs: same bits."""
    args = [_random(np_rng, "vector", np.float64) for _ in range(4)]
    M = _csr(np_rng, K.sparse.MIN_NNZ // 4, np.float64, symmetric=True)
    x = np_rng.standard_normal(M.shape[0])
    outs = []
    for threshold in (1 << 60, 0):  # serial, then threaded
        monkeypatch.setattr(K.cg, "PARALLEL_MIN_SIZE", threshold)
        monkeypatch.setattr(K.sparse, "PARALLEL_DOT_NNZ", threshold)
        monkeypatch.setattr(K.lanczos, "PARALLEL_MIN_SIZE", threshold)
        x_, r_, rr = K.cg.update(*_copies(args), 0.3)
        p_ = K.cg.direction(args[0], args[1].copy(), 0.7)
        y, d = K.sparse.csr_matvec_dot(M, x, 0.1)
        W, a = K.lanczos.recurrence(args[0], args[1], args[2], np.float64(0.4))
        outs.append((x_, r_, rr, p_, y, d, K.cg.inner(args[2], args[3]), W, a))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_sparse_operator_matvec_dot_small_matrix(np_rng):
    """Below the kernel's size the hook still answers (SciPy's product and a dot)."""
    M = _csr(np_rng, 50, np.float64, symmetric=True)
    A = matfree.Sparse(M)
    v = np_rng.standard_normal(50)
    w, d = A._matvec_dot(v, 0.25)
    np.testing.assert_array_equal(w, M @ v + 0.25 * v)
    assert abs(d - float(v @ (M @ v + 0.25 * v))) <= _sum_bound(v * w, np.finfo(np.float64).eps)
    assert A.num_matvecs == 1
    with K.disabled():
        assert A._matvec_dot(v) is NotImplemented  # the reference path then runs


def test_sparse_operator_matvec_dot_uses_kernel_on_any_thread_count(np_rng, monkeypatch):
    n = K.sparse.MIN_NNZ // 4
    M = _csr(np_rng, n, np.float64, symmetric=True)
    A = matfree.Sparse(M)
    v = np_rng.standard_normal(n)
    calls = []
    real = K.sparse.csr_matvec_dot

    def spy(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(K.sparse, "csr_matvec_dot", spy)
    monkeypatch.setattr(K.sparse, "PARALLEL_DOT_NNZ", 0)
    monkeypatch.setattr(K, "num_threads", lambda: 2)
    w, _ = A._matvec_dot(v, 0.5)
    assert calls == [1]
    np.testing.assert_array_equal(w, M @ v + 0.5 * v)
    monkeypatch.setattr(K._config, "num_threads", lambda: 1)
    w1, _ = A._matvec_dot(v, 0.5)
    assert calls == [1, 1]  # one thread: the serial twin, same bits
    np.testing.assert_array_equal(w1, w)


def test_serial_context_keeps_kernels_on_one_thread(np_rng, monkeypatch):
    """Inside ``serial()`` every kernel takes its serial twin (same bits) and products skip threads."""
    monkeypatch.setattr(K.cg, "PARALLEL_MIN_SIZE", 0)
    monkeypatch.setattr(K.lanczos, "PARALLEL_MIN_SIZE", 0)
    monkeypatch.setattr(K.sparse, "PARALLEL_DOT_NNZ", 0)
    jit_cg, jit_l = K.cg._jit(), K.lanczos._jit()
    assert K.cg._driver("rows", 10) is jit_cg.axpy_norm_rows
    assert K.lanczos._driver("rows", 10) is jit_l.recurrence_rows
    with K._config.serial():
        assert K._config.in_serial() and K.num_threads() == 1
        assert K.cg._driver("rows", 10) is jit_cg.axpy_norm_rows_serial
        assert K.cg._driver("cols", 10, "axpy_norm") is jit_cg.axpy_norm_cols_serial
        assert K.lanczos._driver("cols", 10) is jit_l.recurrence_cols_serial
        assert K.sparse._threaded("matvec")[0] is K.sparse._jit().matvec_serial
        with K._config.serial():
            pass
        assert K._config.in_serial()  # nesting restores the outer state
    assert not K._config.in_serial()


def test_lanczos_family_runs_kernels_serial_and_cg_threaded():
    """eigsh, lanczos and block_lanczos hold the serial context (BLAS owns the threads); cg does not."""
    seen = {}
    d = np.linspace(1.0, 2.0, 60)

    def recorder(name):
        def mv(v):
            seen.setdefault(name, set()).add(K._config.in_serial())
            return d[:, None] * v if v.ndim == 2 else d * v
        return matfree.from_hvp(mv, size=60)

    ones = np.ones(60)
    matfree.eigsh(recorder("eigsh"), k=2, rng=0)
    matfree.lanczos(recorder("lanczos"), ones, 5)
    matfree.block_lanczos(recorder("block"), np.eye(60)[:, :2], 3)
    matfree.cg(recorder("cg"), ones)
    assert seen == {"eigsh": {True}, "lanczos": {True}, "block": {True}, "cg": {False}}
    assert not K._config.in_serial()


def test_lanczos_recurrence_norm_matches_twin(np_rng, dt):
    n, p = K.cg.MIN_SIZE // 8 + 5, 9
    W, Q, Qp = (np_rng.standard_normal((n, p)).astype(dt) for _ in range(3))
    beta = np_rng.random(p).astype(dt)
    got = K.lanczos.recurrence_norm(W, Q, Qp, beta, axis=0)
    assert got is not NotImplemented
    want = _twin(lanczos._lanczos_recurrence_norm)(np_xp, W, Q, Qp, beta, axis=0)
    eps = np.finfo(dt).eps
    # the vectors: the recurrence kernel's rounding (equal bits for equal alpha)
    ref_w, ref_a = K.lanczos.recurrence(W, Q, Qp, beta, axis=0)
    np.testing.assert_array_equal(got[0], ref_w)
    np.testing.assert_array_equal(got[1], ref_a)
    assert got[2].dtype == dt and got[2].shape == (p,)
    np.testing.assert_allclose(got[2], want[2], rtol=4 * n * eps)
    # other layouts go to the twin
    assert K.lanczos.recurrence_norm(W.T, Q.T, Qp.T, beta, axis=-1) is NotImplemented
    assert K.lanczos.recurrence_norm(np.asfortranarray(W), Q, Qp, beta, axis=0) is NotImplemented


def test_slq_on_fused_path_still_reports_non_finite_products():
    """The fused recurrence skips the pass over A Q; NaN/Inf still raise (through the coefficients)."""
    n = 3000
    d = np.linspace(1.0, 2.0, n)
    for bad in (np.nan, np.inf):
        def mv(V, bad=bad):
            out = d[:, None] * V if V.ndim == 2 else d * V
            out[7] = bad
            return out
        A = matfree.from_hvp(mv, size=n, check_finite=False)
        with pytest.raises(matfree.NonFiniteError, match="NaN or Inf at Lanczos step 0"):
            matfree.logdet(A, num_probes=30, num_steps=5, rng=0)


def test_normalise_columns_matches_twin_bit_for_bit(np_rng, dt):
    n, p = K.cg.MIN_SIZE // 8 + 3, 9
    W = np_rng.standard_normal((n, p)).astype(dt)
    beta = np_rng.random(p).astype(dt)
    beta[2] = 0  # a broken-down column: times one
    spare = np.empty_like(W)
    got = K.lanczos.normalise_columns(W, beta, spare)
    assert got is spare
    want = _twin(lanczos._normalise_columns)(np_xp, W, beta, None)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, 2], W[:, 2])
    # within an ulp of the quotient
    np.testing.assert_allclose(got[:, :2], W[:, :2] / beta[:2], rtol=2 * np.finfo(dt).eps, atol=0)
    assert K.lanczos.normalise_columns(W, beta, W) is NotImplemented  # never in place over W
    assert K.lanczos.normalise_columns(W, beta, np.empty((n, p), dtype=dt, order="F")) is NotImplemented


def test_sparse_matmat_dot_hook_matches_product_and_dots(np_rng, dt):
    M = _csr(np_rng, K.sparse.MIN_NNZ // 4, dt, symmetric=True)
    X = np_rng.standard_normal((M.shape[0], 5)).astype(dt)
    A = matfree.Sparse(M)
    W, d = A._matmat_dot(X)
    np.testing.assert_array_equal(W, M @ X)  # the product: SciPy's bits
    prod = (X.astype(np.float64) * W.astype(np.float64))
    assert d.dtype == np.float64
    assert np.all(np.abs(d - prod.sum(axis=0)) <= _sum_bound(prod, np.finfo(np.float64).eps))
    assert A.num_matvecs == 5
    assert A._matmat_dot(np.asfortranarray(X)) is NotImplemented  # C order only
    assert A._matmat_dot(X.astype(np.float64 if dt == np.float32 else np.float32)) is NotImplemented
    with K.disabled():
        assert A._matmat_dot(X) is NotImplemented


def test_slq_with_fused_alphas_agrees_with_plain_products():
    """SLQ on a Sparse matrix (alphas from the product's pass, recurrence without its first sweep)
    against the same matrix behind a plain callable: equal to rounding, same products."""
    m = 120
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    M = (sp.kron(T, sp.identity(m)) + sp.kron(sp.identity(m), T) + 0.1 * sp.identity(m * m)).tocsr()
    fused = matfree.Sparse(M, positive_definite=True)
    plain = matfree.from_hvp(lambda v: M @ v, size=m * m, positive_semidefinite=True)
    a = matfree.logdet(fused, num_probes=8, num_steps=15, rng=3, control_variates=False)
    b = matfree.logdet(plain, num_probes=8, num_steps=15, rng=3)
    assert a.num_matvecs == b.num_matvecs == 8 * 15
    # 15 steps of rounding-level differences in the coefficients of an n = 14400 problem
    assert abs(float(a.value) - float(b.value)) <= 1e-9 * abs(float(b.value))


# ------------------------------------------- SLQ: the whole Lanczos run in one kernel


def _symmetric_csr(rng, n, dt):
    M = sp.random(n, n, density=7 / n, format="csr", dtype=np.float64, rng=rng)
    return (M + M.T + sp.diags(3.0 * rng.standard_normal(n))).astype(dt).tocsr()


def _reference_columns(M, Z, m, dt):
    """``_lanczos_columns`` of the array-API path (kernels off) on ``M`` behind a callable."""
    plain = matfree.from_hvp(lambda V: M @ V, size=M.shape[0], dtype=dt)
    xp, dev = lanczos._namespace_of(plain)
    with K.disabled():
        a, b, _, _, lengths, brk, nmv, _ = lanczos._lanczos_columns(
            plain, Z, m, "none", False, dt, dt, xp, dev
        )
    return a, b, lengths, brk, nmv


def test_csr_lanczos_matches_array_api_path(np_rng, dt):
    n, p, m = K.sparse.MIN_NNZ // 4, 11, 12
    M = _symmetric_csr(np_rng, n, dt)
    Z = np_rng.standard_normal((n, p)).astype(dt)
    alpha, beta, lengths, broke, bad = K.sparse.csr_lanczos(M, Z, m, np.finfo(dt).eps)
    ra, rb, rl, rbrk, nmv = _reference_columns(M, Z, m, dt)
    assert alpha.dtype == beta.dtype == dt and alpha.shape == beta.shape == (p, m)
    np.testing.assert_array_equal(lengths, rl)
    np.testing.assert_array_equal(broke, rbrk)
    assert not broke.any() and (bad == -1).all() and nmv == lengths.sum() == p * m
    # step j's coefficients are sums of n rounded terms (float64 in the kernel,
    # pairwise in the working dtype on the reference path: <= log2(n) eps |A|
    # each), and the vectors carry the errors of the earlier steps forward
    norm = float(abs(M).astype(np.float64).sum(axis=1).max())  # >= ||M|| (Gershgorin)
    bound = 4 * np.arange(1, m + 1) * np.log2(n) * np.finfo(dt).eps * norm
    assert np.all(np.abs(alpha - ra) <= bound)
    assert np.all(np.abs(beta - rb) <= bound)


def test_csr_lanczos_independent_of_cut_and_threads(np_rng, monkeypatch):
    """Each column's arithmetic is its own: the same bits for any task width, threaded or serial."""
    n, p, m = K.sparse.MIN_NNZ // 4, 9, 6
    M = _symmetric_csr(np_rng, n, np.float64)
    Z = np_rng.standard_normal((n, p))
    runs = []
    for width, threads in [(1, 2), (2, 2), (4, 2), (9, 2), (3, 1)]:
        monkeypatch.setattr(K.sparse, "lanczos_width", lambda p, t, w=width: w)
        monkeypatch.setattr(K.sparse._config, "num_threads", lambda t=threads: t)
        runs.append(K.sparse.csr_lanczos(M, Z, m, np.finfo(np.float64).eps))
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            np.testing.assert_array_equal(got, want)


def test_lanczos_width_cuts_equal_tasks():
    for p in range(1, 200):
        for threads in (1, 2, 3, 8):
            w = K.sparse.lanczos_width(p, threads)
            tasks = -(-p // w)
            assert 1 <= w <= p
            assert w <= max(K.sparse.LANCZOS_MAX_TASK, 1) or p <= K.sparse.LANCZOS_MAX_TASK
            if w >= K.sparse.LANCZOS_MIN_TASK and p > w:
                assert tasks % threads == 0 or tasks * w - p < w  # the last task alone is short
    assert K.sparse.lanczos_width(100, 2) == 25 and K.sparse.lanczos_width(30, 2) == 15


def test_csr_lanczos_breakdown_like_array_api_path(np_rng):
    """Three distinct eigenvalues: every column breaks down after three steps, as on the reference path."""
    n, p, m = K.sparse.MIN_NNZ // 5, 6, 10
    M = sp.diags(np_rng.choice([1.0, 2.0, 5.0], size=n)).tocsr()
    Z = np_rng.standard_normal((n, p))
    alpha, beta, lengths, broke, bad = K.sparse.csr_lanczos(M, Z, m, np.finfo(np.float64).eps)
    ra, rb, rl, rbrk, nmv = _reference_columns(M, Z, m, np.float64)
    np.testing.assert_array_equal(lengths, [3] * p)
    np.testing.assert_array_equal(lengths, rl)
    assert broke.all() and rbrk.all() and (bad == -1).all()
    assert np.all(alpha[:, 3:] == 0) and np.all(beta[:, 2:] == 0)
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(alpha[:, :3], ra, atol=100 * eps * 5.0, rtol=0)
    np.testing.assert_allclose(beta[:, :3], rb, atol=100 * eps * 5.0, rtol=0)
    # SLQ then spends 3 products a probe, and its Gauss rule is exact for f(x) = log x
    A = matfree.Sparse(M, positive_definite=True)
    est = matfree.logdet(A, num_probes=p, num_steps=m, rng=1)
    assert est.num_matvecs == 3 * p == A.num_matvecs
    with K.disabled():
        ref = matfree.logdet(matfree.Sparse(M, positive_definite=True), num_probes=p, num_steps=m,
                             rng=1)
    assert ref.num_matvecs == est.num_matvecs
    assert abs(float(est.value) - float(ref.value)) <= 1e-10 * abs(float(ref.value))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_slq_fused_lanczos_raises_on_non_finite_matrix(np_rng, bad):
    n = K.sparse.MIN_NNZ // 4
    M = _symmetric_csr(np_rng, n, np.float64)
    M.data[M.indptr[7]] = bad  # row 7: reached at step 1 at the latest
    A = matfree.Sparse(M, symmetric=True)
    with pytest.raises(matfree.NonFiniteError, match="NaN or Inf at Lanczos step [01] "):
        matfree.logdet(A, num_probes=30, num_steps=5, rng=0)
    _, _, lengths, _, first = K.sparse.csr_lanczos(M, np_rng.standard_normal((n, 4)), 5, 1e-16)
    assert np.all((first == 0) | (first == 1))


def test_csr_lanczos_zero_or_non_finite_start_is_bad_at_step_0(np_rng):
    """A start vector of norm 0 (NaN after 0/0 on the array-API path) or with NaN: bad at step 0."""
    M = _symmetric_csr(np_rng, K.sparse.MIN_NNZ // 4, np.float64)
    Z = np_rng.standard_normal((M.shape[0], 3))
    Z[:, 0] = 0.0
    Z[5, 2] = np.nan
    alpha, beta, lengths, broke, bad = K.sparse.csr_lanczos(M, Z, 4, 1e-16)
    assert bad.tolist() == [0, -1, 0] and not broke.any()
    assert np.all(alpha[[0, 2]] == 0.0) and np.all(np.isfinite(alpha[1])) and np.all(beta[1] > 0)


def test_slq_takes_the_fused_lanczos_kernel_and_counts_its_products(np_rng, monkeypatch):
    n = K.sparse.MIN_NNZ // 4
    M = _symmetric_csr(np_rng, n, np.float64)
    M = (M + sp.diags(np.full(n, 40.0))).tocsr()  # positive definite
    calls = []
    real = K.sparse.csr_lanczos
    monkeypatch.setattr(K.sparse, "csr_lanczos", lambda *a: calls.append(1) or real(*a))
    A = matfree.Sparse(M, positive_definite=True)
    est = matfree.logdet(A, num_probes=12, num_steps=9, rng=5)
    assert calls == [1] and est.num_matvecs == A.num_matvecs == 12 * 9
    with K.disabled():
        ref = matfree.logdet(matfree.Sparse(M, positive_definite=True), num_probes=12,
                             num_steps=9, rng=5)
    # 9 steps of rounding-level differences in the coefficients (see the test above)
    assert abs(float(est.value) - float(ref.value)) <= 1e-10 * abs(float(ref.value))
    # other reorthogonalisation modes keep the step-by-step path
    matfree.logdet(A, num_probes=12, num_steps=9, rng=5, reorth="full")
    assert calls == [1]


def test_fixed_bounds_cut_the_work_of_all_columns(np_rng):
    M = _csr(np_rng, 20_000, np.float64)
    for columns in (1, 7, 30):
        b = K.sparse.fixed_bounds(M.indptr, columns)
        parts = b.shape[0] - 1
        assert parts == max(1, M.nnz * columns // K.sparse.DOT_PART_NNZ)
        assert b[0] == 0 and b[-1] == M.shape[0] and np.all(np.diff(b) >= 0)
        X = np.ascontiguousarray(np_rng.standard_normal((M.shape[0], columns)))
        W, d = K.sparse.csr_matmat_dot(M, X, b) if M.nnz * columns >= K.sparse.MIN_NNZ else (
            M @ X, np.einsum("ij,ij->j", X, M @ X))
        np.testing.assert_array_equal(W, M @ X)
