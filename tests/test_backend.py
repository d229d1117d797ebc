"""The array backend: namespaces, dtypes, random probes, optional imports."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import to_np

from matfree import _backend as B


def test_namespace_and_device(xp):
    a = xp.asarray(np.ones(3))
    assert B.namespace(a) is xp
    assert B.device(a) == B.device(xp.asarray(np.zeros(2)))


def test_mixed_libraries_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different or unsupported libraries were mixed"):
        B.namespace(np.ones(2), torch.ones(2))


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_float_dtypes_accepted(xp, name):
    B.check_float_dtype(getattr(xp, name), "v")
    assert B.is_float_dtype(getattr(xp, name))


@pytest.mark.parametrize("name", ["int32", "int64", "bool", "complex128"])
def test_other_dtypes_rejected(xp, name):
    if not hasattr(xp, name):
        pytest.skip(f"{name} missing")
    with pytest.raises(TypeError, match=r"v has dtype .*expected float32 or float64"):
        B.check_float_dtype(getattr(xp, name), "v")


def test_promotion(xp):
    assert B.result_dtype(xp, xp.float32, xp.float64) == xp.float64
    assert B.result_dtype(xp, xp.float32, xp.float32) == xp.float32


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "sphere"])
def test_probes_reproducible_on_device_and_dtype(case, kind):
    xp = case.xp
    dev = B.device(xp.asarray(np.zeros(1)))
    Z1 = B.random_state(7, xp, dev).probes(kind, (50, 6), case.dtype)
    Z2 = B.random_state(7, xp, dev).probes(kind, (50, 6), case.dtype)
    Z3 = B.random_state(8, xp, dev).probes(kind, (50, 6), case.dtype)
    assert Z1.dtype == case.dtype and tuple(Z1.shape) == (50, 6)
    assert B.namespace(Z1) is xp and B.device(Z1) == dev
    np.testing.assert_array_equal(to_np(Z1), to_np(Z2))
    assert not np.array_equal(to_np(Z1), to_np(Z3))
    Z = to_np(Z1)
    if kind == "rademacher":
        assert set(np.unique(Z)) <= {-1.0, 1.0}
    if kind == "sphere":
        np.testing.assert_allclose(np.linalg.norm(Z, axis=0), np.sqrt(50), rtol=10 * case.eps)


def test_rademacher_is_one_bit_per_entry_of_the_host_stream(case):
    """On the host: entry i is +1 where bit i of the generator's bytes is set (in order)."""
    xp = case.xp
    dev = B.device(xp.asarray(np.zeros(1)))
    rs = B.random_state(7, xp, dev)
    if rs._kind != "numpy":
        pytest.skip("device generators draw uniforms (next test)")
    z = to_np(rs.rademacher((64, 5), case.dtype))
    raw = np.frombuffer(np.random.default_rng(7).bytes(40), dtype=np.uint8)
    expected = np.where(np.unpackbits(raw).reshape(64, 5) == 1, 1.0, -1.0)
    np.testing.assert_array_equal(z, expected)


def test_device_rademacher_is_the_side_of_one_half_of_the_uniform_stream(case):
    """On a device: signs of ``u - 1/2`` for the generator's uniforms (``u = 1/2`` gives +1)."""
    xp = case.xp
    dev = B.device(xp.asarray(np.zeros(1)))
    if B.random_state(7, xp, dev)._kind == "numpy":
        pytest.skip("host draws are bits (previous test)")
    u = to_np(B.random_state(7, xp, dev).uniform((64, 5), case.dtype))
    z = to_np(B.random_state(7, xp, dev).rademacher((64, 5), case.dtype))
    np.testing.assert_array_equal(z, np.where(u < 0.5, -1.0, 1.0))
    half = B.random_state(0, xp, dev)
    half.uniform = lambda shape, dtype: xp.asarray(np.array([0.0, 0.5, 0.75]), dtype=dtype)
    np.testing.assert_array_equal(to_np(half.rademacher((3,), case.dtype)), [-1.0, 1.0, 1.0])


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "sphere"])
def test_probes_are_isotropic(kind):
    """E[z zᵀ] = I: the sample second moment over 20,000 probes is within 5 standard errors."""
    n, m = 4, 20000
    Z = B.random_state(3, B.namespace(np.zeros(1))).probes(kind, (n, m), np.float64)
    S = Z @ Z.T / m
    # each entry is a mean of m terms of variance <= 3 (Gaussian diagonal: 2)
    assert np.max(np.abs(S - np.eye(n))) < 5 * np.sqrt(3.0 / m)


def test_numpy_generator_is_used_as_is():
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    xp = B.namespace(np.zeros(1))
    a = B.random_state(g1, xp).normal((3,), np.float64)
    np.testing.assert_array_equal(a, g2.standard_normal(3))


def test_torch_generators():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as txp

    g = torch.Generator().manual_seed(3)
    a = B.random_state(g, txp, torch.device("cpu")).normal((4,), torch.float64)
    b = torch.randn(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(a, b)
    # a NumPy generator seeds the device generator: reproducible
    x1 = B.random_state(np.random.default_rng(1), txp, "cpu").normal((3,), torch.float32)
    x2 = B.random_state(np.random.default_rng(1), txp, "cpu").normal((3,), torch.float32)
    assert torch.equal(x1, x2)
    with pytest.raises(TypeError, match="torch.Generator but the operator is not a torch"):
        B.random_state(g, B.namespace(np.zeros(1)))


@pytest.mark.parametrize(
    ("rng", "exc", "msg"),
    [
        ("seed", TypeError, "rng has type str"),
        (True, TypeError, "rng is a bool"),
        (np.random.RandomState(0), TypeError, "legacy numpy.random.RandomState"),
    ],
)
def test_bad_rng(rng, exc, msg):
    with pytest.raises(exc, match=msg):
        B.random_state(rng, B.namespace(np.zeros(1)))


def test_unknown_probe_kind():
    rs = B.random_state(0, B.namespace(np.zeros(1)))
    with pytest.raises(ValueError, match="probes='uniform' is not known"):
        rs.probes("uniform", (2, 2), np.float64)


def test_to_numpy_every_backend(xp):
    a = xp.asarray(np.arange(3.0))
    np.testing.assert_array_equal(B.to_numpy(a), np.arange(3.0))


def test_has_numba_is_a_bool():
    assert isinstance(B.has_numba(), bool)


def test_import_matfree_imports_no_optional_package():
    code = (
        "import sys, matfree\n"
        "bad = [m for m in ('torch', 'jax', 'cupy', 'numba', 'dask', 'matplotlib', 'tqdm', 'sklearn')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
