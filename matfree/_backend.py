"""The array backend: the only module that knows which array library is which.

Everything else in matfree asks this module for the namespace of its inputs
(``xp = namespace(v)``) and then uses only calls of the Python array API
standard, so one line of an algorithm runs on NumPy, CuPy, PyTorch, JAX and
array-api-strict alike.

Dtype rules
-----------
matfree computes in real floating point, ``float32`` or ``float64``.

* A vector (or block) handed to an operator must have a real floating dtype;
  integer, boolean and complex vectors raise ``TypeError``.
* The result of ``A @ v`` has the *promoted* dtype of the operator and the
  vector (``float32`` with ``float64`` gives ``float64``), as NumPy and the
  array API standard promote.
* Operators built from arrays (``Dense``, ``Diagonal``, ``LowRank``,
  ``Sparse``) compute in that promoted dtype.  Operators built from a user's
  callable receive the vector cast to the operator's own dtype (the callable
  defines the precision it works in) and their output is returned in the
  promoted dtype.
* Arrays are never moved between libraries or devices implicitly: a NumPy
  vector handed to a PyTorch operator raises ``TypeError``.

Randomness
----------
``rng`` may be ``None``, an ``int`` seed, a ``numpy.random.Generator``, a
``torch.Generator`` or a CuPy generator.  :func:`random_state` normalises it
once, at the public entry of a randomised function, into a
:class:`RandomState` that draws probe blocks directly on the device of the
operator in its dtype.  An int seed gives the same numbers on the same
backend every time; different backends use their own generators.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "device",
    "is_numpy",
    "is_torch",
    "is_cupy",
    "is_jax",
    "to_numpy",
    "check_float_dtype",
    "result_dtype",
    "random_state",
    "RandomState",
    "has_numba",
]

_FLOAT_NAMES = ("float32", "float64")


def namespace(*arrays):
    """Array-API namespace shared by ``arrays`` (NumPy gives array-api-compat's wrapper)."""
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as err:
        kinds = ", ".join(sorted({type(a).__module__.split(".")[0] for a in arrays}))
        raise TypeError(
            f"arrays from different or unsupported libraries were mixed ({kinds}); "
            "matfree never moves data between libraries implicitly"
        ) from err


def device(x):
    """Device on which array ``x`` lives."""
    return array_api_compat.device(x)


def is_numpy(xp) -> bool:
    """Whether ``xp`` is the (wrapped) NumPy namespace."""
    return array_api_compat.is_numpy_namespace(xp)


def is_torch(xp) -> bool:
    """Whether ``xp`` is the (wrapped) PyTorch namespace."""
    return array_api_compat.is_torch_namespace(xp)


def is_cupy(xp) -> bool:
    """Whether ``xp`` is the (wrapped) CuPy namespace."""
    return array_api_compat.is_cupy_namespace(xp)


def is_jax(xp) -> bool:
    """Whether ``xp`` is the JAX namespace."""
    return array_api_compat.is_jax_namespace(xp)


def to_numpy(x) -> np.ndarray:
    """Copy ``x`` to the host as a NumPy array.

    This is the one named place where data leaves a device on purpose (for
    small k-by-k work such as a tridiagonal eigenproblem, or for reporting).
    """
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    mod = type(x).__module__
    if mod.startswith("array_api_strict"):
        # array-api-strict refuses implicit conversion; its buffer protocol
        # is the sanctioned way out.
        return np.asarray(x._array)  # noqa: SLF001
    return np.asarray(x)


def dtype_name(dtype) -> str:
    """Short name of a dtype object of any backend (``"float32"``)."""
    name = str(dtype)
    for prefix in ("torch.", "array_api_strict.", "dtype(", "<class 'numpy.", "jnp."):
        name = name.replace(prefix, "")
    return name.strip("')>\"")


def is_float_dtype(dtype) -> bool:
    """Whether ``dtype`` is real ``float32`` or ``float64``."""
    return dtype_name(dtype) in _FLOAT_NAMES


def check_float_dtype(dtype, name: str) -> None:
    """Raise ``TypeError`` unless ``dtype`` is real float32/float64."""
    if not is_float_dtype(dtype):
        raise TypeError(
            f"{name} has dtype {dtype_name(dtype)}; matfree computes in real "
            "floating point, expected float32 or float64 (cast it first, "
            "e.g. x.astype(float64))"
        )


def result_dtype(xp, *dtypes):
    """Promoted dtype of ``dtypes`` (``float32`` + ``float64`` -> ``float64``)."""
    return xp.result_type(*dtypes)


def float_dtype(xp, name: str):
    """The dtype object called ``name`` in namespace ``xp``."""
    return getattr(xp, name)


@functools.cache
@functools.lru_cache(maxsize=1)
def has_numba() -> bool:
    """Whether Numba can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("numba") is not None


def _torch_generator_type():
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Generator


class RandomState:
    """Draws random probe blocks on one backend and device.

    Build it with :func:`random_state`; algorithms call :meth:`normal`,
    :meth:`rademacher`, :meth:`sphere` and :meth:`probes`.
    """

    def __init__(self, xp, dev, generator, kind):
        self.xp = xp
        self.device = dev
        self.generator = generator
        self._kind = kind  # "numpy" (host draws) | "torch" | "cupy"

    def __repr__(self):
        return f"RandomState(kind={self._kind!r}, device={self.device!r})"

    def _host_to_xp(self, a, dtype):
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def normal(self, shape, dtype):
        """Standard normal samples of ``shape`` and ``dtype`` on the device."""
        shape = tuple(int(s) for s in shape)
        if self._kind == "torch":
            import torch

            return torch.randn(
                shape, generator=self.generator, dtype=dtype, device=self.device
            )
        if self._kind == "cupy":
            return self.generator.standard_normal(shape, dtype=dtype)
        return self._host_to_xp(self.generator.standard_normal(shape), dtype)

    def uniform(self, shape, dtype):
        """Uniform samples on [0, 1)."""
        shape = tuple(int(s) for s in shape)
        if self._kind == "torch":
            import torch

            return torch.rand(
                shape, generator=self.generator, dtype=dtype, device=self.device
            )
        if self._kind == "cupy":
            return self.generator.random(shape, dtype=dtype)
        return self._host_to_xp(self.generator.random(shape), dtype)

    def rademacher(self, shape, dtype):
        """Independent +-1 entries with equal probability.

        On the host, one random bit per entry (bit 1 gives +1), from the
        generator's bytes in order: a tenth of the time of a uniform
        double per entry.  On a device, the sign of a uniform minus 1/2.
        """
        if self._kind == "numpy":
            shape = tuple(int(s) for s in shape)
            size = math.prod(shape)
            raw = np.frombuffer(self.generator.bytes((size + 7) // 8), dtype=np.uint8)
            bits = np.unpackbits(raw, count=size).reshape(shape)
            z = np.multiply(bits, 2.0)
            z -= 1.0
            return self._host_to_xp(z, dtype)
        u = self.uniform(shape, dtype)
        # the sign of u - 1/2 (u = 1/2 gives +0, hence +1): the same values as
        # where(u < 1/2, -1, 1) in a third of the time
        return self.xp.copysign(self.xp.ones_like(u), u - 0.5)

    def sphere(self, shape, dtype):
        """Columns uniform on the sphere of radius sqrt(n) (n = shape[0]).

        Scaled so that E[z zᵀ] = I, like the Gaussian and Rademacher probes.
        """
        z = self.normal(shape, dtype)
        norms = self.xp.linalg.vector_norm(z, axis=0, keepdims=True)
        return z * (math.sqrt(shape[0]) / norms)

    def probes(self, kind: str, shape, dtype):
        """Probe block of ``kind`` in {"rademacher", "gaussian", "sphere"}."""
        if kind == "rademacher":
            return self.rademacher(shape, dtype)
        if kind in ("gaussian", "normal"):
            return self.normal(shape, dtype)
        if kind == "sphere":
            return self.sphere(shape, dtype)
        raise ValueError(
            f"probes={kind!r} is not known; expected 'rademacher', 'gaussian' or 'sphere'"
        )


def random_state(rng, xp, dev=None) -> RandomState:
    """Normalise ``rng`` (SPEC 7) into a :class:`RandomState` for ``xp``/``dev``.

    Parameters
    ----------
    rng : None, int, numpy.random.Generator, torch.Generator or cupy generator
        ``None`` draws fresh entropy; an ``int`` seeds the backend's own
        generator (reproducible per backend); a NumPy ``Generator`` is used
        as is on host-memory backends and seeds the device generator
        otherwise; a backend generator is used as is.
    xp : namespace
        Namespace of the operator the probes are for.
    dev : device, optional
        Device of the operator.
    """
    if isinstance(rng, RandomState):
        return rng
    if isinstance(rng, np.random.RandomState):
        raise TypeError(
            "rng is a legacy numpy.random.RandomState; pass an int seed or "
            "numpy.random.default_rng(seed) instead"
        )
    if rng is not None and not isinstance(rng, (int, np.integer, np.random.Generator)):
        gen_type = _torch_generator_type()
        if gen_type is not None and isinstance(rng, gen_type):
            if not is_torch(xp):
                raise TypeError("rng is a torch.Generator but the operator is not a torch operator")
            return RandomState(xp, dev, rng, "torch")
        if type(rng).__module__.startswith("cupy"):
            if not is_cupy(xp):
                raise TypeError("rng is a CuPy generator but the operator is not a CuPy operator")
            return RandomState(xp, dev, rng, "cupy")
        raise TypeError(
            f"rng has type {type(rng).__name__}; expected None, an int seed, "
            "a numpy.random.Generator, or the backend's own generator"
        )
    if isinstance(rng, bool):
        raise TypeError("rng is a bool; expected None, an int seed or a Generator")
    if is_torch(xp):
        import torch

        gen = torch.Generator(device=dev)
        seed = _seed_from(rng)
        gen.manual_seed(seed)
        return RandomState(xp, dev, gen, "torch")
    if is_cupy(xp):
        import cupy

        with cupy.cuda.Device(dev):
            gen = cupy.random.default_rng(_seed_from(rng))
        return RandomState(xp, dev, gen, "cupy")
    # NumPy, array-api-strict, JAX and anything else on the host: draw with
    # NumPy and wrap (for JAX on an accelerator this is one host->device copy
    # per probe block, outside any iteration).
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return RandomState(xp, dev, gen, "numpy")


def _seed_from(rng) -> int:
    if rng is None:
        return int(np.random.default_rng().integers(2**62))
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**62))
    seed = int(rng)
    if seed < 0:
        raise ValueError(f"rng={seed} is a negative seed; expected a seed >= 0")
    return seed
