"""Shared fixtures: the backends and dtypes every reference test runs on.

``xp`` runs a test on NumPy, array-api-strict (which refuses implicit
conversions, so a hidden host round-trip fails there), PyTorch on the CPU and
CuPy where a GPU exists; each is skipped when its library is missing.
"""

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import settings

from matfree import _backend as B

# CI draws the same property-test examples on every run (a failure there is
# reproducible); elsewhere Hypothesis explores new ones each run
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _cupy_usable():
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device
        return False


BACKENDS = ["numpy", "array_api_strict", "torch", "cupy"]


def _namespace(name):
    if name == "numpy":
        import array_api_compat.numpy as xp

        return xp
    if name == "array_api_strict":
        if importlib.util.find_spec("array_api_strict") is None:
            pytest.skip("array-api-strict is not installed")
        import array_api_strict as xp

        return xp
    if name == "torch":
        if importlib.util.find_spec("torch") is None:
            pytest.skip("torch is not installed")
        import array_api_compat.torch as xp

        return xp
    if name == "cupy":
        if not _cupy_usable():
            pytest.skip("CuPy with a GPU is not available here")
        import array_api_compat.cupy as xp

        return xp
    raise ValueError(name)


@pytest.fixture(params=BACKENDS)
def xp(request):
    """Array namespace of one backend."""
    return _namespace(request.param)


@pytest.fixture(params=["float32", "float64"])
def dtype_name(request):
    """Name of a floating dtype."""
    return request.param


class Case:
    """A backend, a dtype and tolerances scaled by its machine epsilon."""

    def __init__(self, xp, dtype_name):
        self.xp = xp
        self.dtype_name = dtype_name
        self.dtype = getattr(xp, dtype_name)
        self.eps = float(np.finfo(dtype_name).eps)
        # products of size <= 50 lose a few hundred eps at most
        self.rtol = 200 * self.eps
        self.atol = 200 * self.eps

    def asarray(self, a):
        """A NumPy array (or nested list) moved to this backend and dtype."""
        return self.xp.asarray(np.array(a, dtype=self.dtype_name, copy=True))

    def close(self, got, want, rtol=None, atol=None):
        got = B.to_numpy(got)
        want = B.to_numpy(want)
        scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
        np.testing.assert_allclose(
            got,
            want,
            rtol=self.rtol if rtol is None else rtol,
            atol=(self.atol if atol is None else atol) * scale,
        )


@pytest.fixture
def case(xp, dtype_name):
    """Backend x dtype with tolerances."""
    return Case(xp, dtype_name)


@pytest.fixture
def np_rng():
    """A seeded NumPy generator for building test problems."""
    return np.random.default_rng(20261123)


def to_np(x):
    """Host NumPy copy of an array of any backend."""
    return B.to_numpy(x)
