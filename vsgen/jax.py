"""JAX-style initializers whose numbers come from vsgen's stream.

``vsgen.jax.variance_scaling(scale, mode, distribution, in_axis=-2,
out_axis=-1, batch_axis=(), dtype=None)`` has the signature and meaning of
``jax.nn.initializers.variance_scaling`` and returns ``init(key, shape,
dtype=dtype, out_sharding=None)`` giving a ``jax.Array``; the presets
(``glorot_normal``, ``he_uniform``, ...) follow ``jax.nn.initializers``, and so
do ``normal(stddev)``, ``truncated_normal(stddev)`` and ``uniform(scale)``.

Meaning (JAX's): fans by ``vsgen.fans.axis_fans`` (the axes in none of
``in_axis``, ``out_axis``, ``batch_axis`` form the receptive field);
``n = fan_in | fan_out | (fan_in + fan_out) / 2 | sqrt(fan_in * fan_out)``
by mode; ``v = scale / n``. ``"normal"`` here is JAX's *untruncated* normal
N(0, v) (in Keras and the rest of vsgen, ``"normal"`` means truncated);
``"truncated_normal"`` is cut at 2 pre-truncation stddevs with stddev sqrt(v);
``"uniform"`` is U(-sqrt(3 v), sqrt(3 v)). complex64/complex128 follow JAX's
complex variance scaling (see ``vsgen.initializer.Scaling``). ``normal(stddev)``
is N(0, stddev**2) (complex too, E|z|**2 = stddev**2), ``truncated_normal(stddev)``
N(0, stddev**2) cut at +-2 stddev (stddev before truncation, as JAX), and
``uniform(scale)`` is U[0, scale): JAX's meanings, not Keras's.

Where the numbers come from: the ``vsgen`` stream, seeded from the key.
**Key -> seed:** the key's data words ``w = jax.random.key_data(key)`` (uint32;
a legacy ``uint32[2]`` key is its own data) give

* two words (threefry, JAX's default): ``seed = w[0] * 2**32 + w[1]``, so
  ``jax.random.key(n)`` (and ``PRNGKey(n)``) maps to seed n for 0 <= n < 2**32
  (and for n < 2**64 with ``jax_enable_x64``), and distinct keys never share
  a seed;
* any other number of words: ``h = 0``; for each word ``h = mix64(h ^ word)
  ``, ``mix64(z) = splitmix64's finaliser of (z + 0x9E3779B97F4A7C15) mod
  2**64``; ``seed = h``.

So ``init(jax.random.key(n), shape)`` equals, byte for byte,
``vsgen.VarianceScaling(scale, mode, dist, seed=n, in_axis=..., out_axis=...,
batch_axis=...)(shape, dtype)`` (with JAX's ``"normal"`` spelled
``"untruncated_normal"``), ``vsgen.RandomNormal(0.0, stddev, seed=n)``,
``vsgen.TruncatedNormal(0.0, stddev, seed=n)`` or ``vsgen.RandomUniform(0.0,
scale, seed=n)``. The values are made on the host with NumPy; under
``jax.jit`` the same function runs through ``jax.pure_callback``.

**64-bit types.** As in ``jax.nn.initializers``: with ``jax_enable_x64`` off, a
requested float64 (complex128) gives float32 (complex64) values, made as for
float32, with JAX's own "Explicitly requested dtype ... is not available"
UserWarning, eagerly and under ``jax.jit`` alike.

Importing this module imports jax; ``import vsgen`` does not.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vsgen.dtypes import resolve_dtype
from vsgen.fans import AxisSpec
from vsgen.initializer import (
    PRESETS,
    RandomInitializer,
    RandomNormal,
    RandomUniform,
    TruncatedNormal,
    VarianceScaling,
)
from vsgen.streams._constants import GAMMA, MIX1, MIX2

__all__ = [
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "key_to_seed",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
]

_MASK64 = (1 << 64) - 1

#: JAX's distribution names -> vsgen's (JAX's "normal" is untruncated).
_DISTRIBUTIONS = {
    "truncated_normal": "truncated_normal",
    "normal": "untruncated_normal",
    "untruncated_normal": "untruncated_normal",
    "uniform": "uniform",
}


def _mix64(value: int) -> int:
    value = (value + GAMMA) & _MASK64
    value = ((value ^ (value >> 30)) * MIX1) & _MASK64
    value = ((value ^ (value >> 27)) * MIX2) & _MASK64
    return value ^ (value >> 31)


def _seed_from_words(words: np.ndarray) -> int:
    flat = [int(w) & 0xFFFFFFFF for w in np.asarray(words).reshape(-1)]
    if len(flat) == 2:
        return (flat[0] << 32) | flat[1]
    seed = 0
    for word in flat:
        seed = _mix64(seed ^ word)
    return seed


def _key_words(key: Any) -> Any:
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def key_to_seed(key: Any) -> int:
    """The vsgen seed of a JAX PRNG key (see the module docstring); the key
    must be concrete (not traced)."""
    words = np.asarray(_key_words(key))
    if words.dtype.kind not in "ui":
        raise TypeError(
            f"Argument `key` must be a JAX PRNG key. Received: key of dtype {words.dtype}"
        )
    return _seed_from_words(words)


_X64_MESSAGE = (
    "Explicitly requested dtype {} is not available, and will be truncated to dtype {}. "
    "To enable more dtypes, set the jax_enable_x64 configuration option or the "
    "JAX_ENABLE_X64 shell environment variable. "
    "See https://github.com/jax-ml/jax#current-gotchas for more."
)


def _available_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` as JAX makes it: with x64 off, float64 -> float32 and complex128
    -> complex64, with JAX's own warning (JAX's function when it has one, so that
    its ``jax_explicit_x64_dtypes`` setting applies; else the same words)."""
    try:
        from jax._src.dtypes import check_and_canonicalize_user_dtype
    except ImportError:  # another jax: its public canonicalisation and the words
        canonical = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
        if canonical != dtype:
            warnings.warn(_X64_MESSAGE.format(dtype.name, canonical.name), stacklevel=3)
        return canonical
    return np.dtype(check_and_canonicalize_user_dtype(dtype))


def _initializer(
    make: Callable[[int], RandomInitializer], default_dtype: Any
) -> Callable[..., jax.Array]:
    """``init(key, shape, dtype, out_sharding)`` drawing ``make(seed)(shape, dtype)``."""

    def init(
        key: Any,
        shape: Sequence[int],
        dtype: Any = default_dtype,
        out_sharding: Any = None,
    ) -> jax.Array:
        shape = tuple(int(d) for d in shape)
        if dtype is None:
            dtype = jnp.zeros((), dtype=float).dtype  # float32, float64 with x64
        resolved = resolve_dtype(np.dtype(dtype).name if not isinstance(dtype, str) else dtype)
        resolved = _available_dtype(resolved)
        # Checks the dtype (complex where there is none, a scale it cannot hold)
        # now, eagerly and while tracing alike, rather than inside a callback.
        make(0).plan(shape, resolved)

        def host(words: np.ndarray) -> np.ndarray:
            return make(_seed_from_words(words))(shape, resolved)

        words = _key_words(key)
        if isinstance(words, jax.core.Tracer):
            result = jax.pure_callback(
                host, jax.ShapeDtypeStruct(shape, resolved), words, vmap_method="sequential"
            )
        else:
            result = jnp.asarray(host(np.asarray(words)))
        if out_sharding is not None:
            result = jax.device_put(result, out_sharding)
        return result

    return init


def variance_scaling(
    scale: float,
    mode: str,
    distribution: str,
    in_axis: AxisSpec = -2,
    out_axis: AxisSpec = -1,
    batch_axis: AxisSpec = (),
    dtype: Any = None,
) -> Callable[..., jax.Array]:
    """``jax.nn.initializers.variance_scaling`` drawing from vsgen's stream.

    ``n`` is fan_in, fan_out, (fan_in + fan_out) / 2 or sqrt(fan_in * fan_out)
    (``mode``) with JAX's fans; ``v = scale / n``. ``distribution``:
    ``"truncated_normal"`` (stddev sqrt(v) after cutting at 2 pre-truncation
    stddevs), ``"normal"`` (untruncated N(0, v), as in JAX) or ``"uniform"``
    (U(-sqrt(3 v), sqrt(3 v)); a disk of radius sqrt(2 v) for complex dtypes).
    Returns ``init(key, shape, dtype=dtype, out_sharding=None)``.
    """
    if not isinstance(distribution, str) or distribution.lower() not in _DISTRIBUTIONS:
        raise ValueError(
            f"invalid distribution for variance scaling initializer: {distribution!r}; "
            f"expected one of {', '.join(_DISTRIBUTIONS)}"
        )
    vsgen_distribution = _DISTRIBUTIONS[distribution.lower()]

    def make(seed: int) -> RandomInitializer:
        return VarianceScaling(
            scale,
            mode,
            vsgen_distribution,
            seed,
            in_axis=in_axis,
            out_axis=out_axis,
            batch_axis=batch_axis,
        )

    make(0)  # checks scale, mode and the axes now rather than at the first call
    return _initializer(make, dtype)


def normal(stddev: float = 1e-2, dtype: Any = None) -> Callable[..., jax.Array]:
    """``jax.nn.initializers.normal``: N(0, stddev**2), untruncated; complex dtypes
    give a complex normal with E|z|**2 = stddev**2 (as JAX). The values are
    ``vsgen.RandomNormal(0.0, stddev, seed)``'s."""

    def make(seed: int) -> RandomInitializer:
        return RandomNormal(0.0, stddev, seed)

    make(0)
    return _initializer(make, dtype)


def truncated_normal(
    stddev: float = 1e-2, dtype: Any = None, lower: float = -2.0, upper: float = 2.0
) -> Callable[..., jax.Array]:
    """``jax.nn.initializers.truncated_normal``: N(0, stddev**2) cut at ``lower``
    and ``upper`` stddevs, ``stddev`` before truncation (JAX applies no
    correction); real dtypes only. vsgen's stream cuts at -2 and 2, JAX's
    defaults, and refuses other bounds. The values are
    ``vsgen.TruncatedNormal(0.0, stddev, seed)``'s."""
    if (lower, upper) != (-2.0, 2.0):
        raise ValueError(
            "vsgen's truncated normal is cut at 2 stddevs: only lower=-2.0, upper=2.0 "
            f"(JAX's defaults) are available. Received: lower={lower!r}, upper={upper!r}"
        )

    def make(seed: int) -> RandomInitializer:
        return TruncatedNormal(0.0, stddev, seed)

    make(0)
    return _initializer(make, dtype)


def uniform(scale: float = 1e-2, dtype: Any = None) -> Callable[..., jax.Array]:
    """``jax.nn.initializers.uniform``: U[0, scale), JAX's meaning (Keras's and
    vsgen's other uniforms are centred on 0); real dtypes only, ``scale`` > 0.
    The values are ``vsgen.RandomUniform(0.0, scale, seed)``'s."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(
            f"Argument `scale` must be a positive finite float. Received: scale={scale!r}"
        )

    def make(seed: int) -> RandomInitializer:
        return RandomUniform(0.0, scale, seed)

    make(0)
    return _initializer(make, dtype)


def _preset(name: str) -> Callable[..., Callable[..., jax.Array]]:
    """``jax.nn.initializers.<name>``: the variance-scaling preset of the same name
    (its scale, mode and distribution are ``vsgen.initializer.PRESETS[name]``'s)."""
    cls = PRESETS[name]
    scale, mode, distribution = cls._PARAMS

    def preset(
        in_axis: AxisSpec = -2,
        out_axis: AxisSpec = -1,
        batch_axis: AxisSpec = (),
        dtype: Any = None,
    ) -> Callable[..., jax.Array]:
        return variance_scaling(scale, mode, distribution, in_axis, out_axis, batch_axis, dtype)

    preset.__name__ = preset.__qualname__ = name
    preset.__doc__ = f"``jax.nn.initializers.{name}``: {cls.__doc__}"
    return preset


glorot_normal = _preset("glorot_normal")
glorot_uniform = _preset("glorot_uniform")
he_normal = _preset("he_normal")
he_uniform = _preset("he_uniform")
lecun_normal = _preset("lecun_normal")
lecun_uniform = _preset("lecun_uniform")
xavier_normal = glorot_normal
xavier_uniform = glorot_uniform
kaiming_normal = he_normal
kaiming_uniform = he_uniform
