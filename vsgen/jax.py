"""JAX-style initializers whose numbers come from vsgen's stream.

``vsgen.jax.variance_scaling(scale, mode, distribution, in_axis=-2,
out_axis=-1, batch_axis=(), dtype=None)`` has the signature and meaning of
``jax.nn.initializers.variance_scaling`` and returns ``init(key, shape,
dtype=dtype, out_sharding=None)`` giving a ``jax.Array``; the presets
(``glorot_normal``, ``he_uniform``, ...) follow ``jax.nn.initializers``.

Meaning (JAX's): fans by ``vsgen.fans.axis_fans`` (the axes in none of
``in_axis``, ``out_axis``, ``batch_axis`` form the receptive field);
``n = fan_in | fan_out | (fan_in + fan_out) / 2 | sqrt(fan_in * fan_out)``
by mode; ``v = scale / n``. ``"normal"`` here is JAX's *untruncated* normal
N(0, v) (in Keras and the rest of vsgen, ``"normal"`` means truncated);
``"truncated_normal"`` is cut at 2 pre-truncation stddevs with stddev sqrt(v);
``"uniform"`` is U(-sqrt(3 v), sqrt(3 v)). complex64/complex128 follow JAX's
complex variance scaling (see ``vsgen.initializer.Scaling``).

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
``"untruncated_normal"``). The values are made on the host with NumPy; under
``jax.jit`` the same function runs through ``jax.pure_callback``.

Importing this module imports jax; ``import vsgen`` does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vsgen.dtypes import resolve_dtype
from vsgen.fans import AxisSpec
from vsgen.initializer import VarianceScaling

__all__ = [
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "key_to_seed",
    "lecun_normal",
    "lecun_uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
]

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1

#: JAX's distribution names -> vsgen's (JAX's "normal" is untruncated).
_DISTRIBUTIONS = {
    "truncated_normal": "truncated_normal",
    "normal": "untruncated_normal",
    "untruncated_normal": "untruncated_normal",
    "uniform": "uniform",
}


def _mix64(value: int) -> int:
    value = (value + _GAMMA) & _MASK64
    value = ((value ^ (value >> 30)) * _MIX1) & _MASK64
    value = ((value ^ (value >> 27)) * _MIX2) & _MASK64
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
    # Checks scale, mode and the axes now rather than at the first call.
    VarianceScaling(
        scale,
        mode,
        vsgen_distribution,
        0,
        in_axis=in_axis,
        out_axis=out_axis,
        batch_axis=batch_axis,
    )
    default_dtype = dtype

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

        def host(words: np.ndarray) -> np.ndarray:
            initializer = VarianceScaling(
                scale,
                mode,
                vsgen_distribution,
                _seed_from_words(words),
                in_axis=in_axis,
                out_axis=out_axis,
                batch_axis=batch_axis,
            )
            return initializer(shape, resolved)

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


def _preset(scale: float, mode: str, distribution: str, name: str, doc: str):
    def preset(
        in_axis: AxisSpec = -2,
        out_axis: AxisSpec = -1,
        batch_axis: AxisSpec = (),
        dtype: Any = None,
    ) -> Callable[..., jax.Array]:
        return variance_scaling(scale, mode, distribution, in_axis, out_axis, batch_axis, dtype)

    preset.__name__ = preset.__qualname__ = name
    preset.__doc__ = doc
    return preset


glorot_normal = _preset(
    1.0,
    "fan_avg",
    "truncated_normal",
    "glorot_normal",
    "``jax.nn.initializers.glorot_normal``: stddev sqrt(2 / (fan_in + fan_out)).",
)
glorot_uniform = _preset(
    1.0,
    "fan_avg",
    "uniform",
    "glorot_uniform",
    "``jax.nn.initializers.glorot_uniform``: limit sqrt(6 / (fan_in + fan_out)).",
)
he_normal = _preset(
    2.0,
    "fan_in",
    "truncated_normal",
    "he_normal",
    "``jax.nn.initializers.he_normal``: stddev sqrt(2 / fan_in).",
)
he_uniform = _preset(
    2.0,
    "fan_in",
    "uniform",
    "he_uniform",
    "``jax.nn.initializers.he_uniform``: limit sqrt(6 / fan_in).",
)
lecun_normal = _preset(
    1.0,
    "fan_in",
    "truncated_normal",
    "lecun_normal",
    "``jax.nn.initializers.lecun_normal``: stddev sqrt(1 / fan_in).",
)
lecun_uniform = _preset(
    1.0,
    "fan_in",
    "uniform",
    "lecun_uniform",
    "``jax.nn.initializers.lecun_uniform``: limit sqrt(3 / fan_in).",
)
xavier_normal = glorot_normal
xavier_uniform = glorot_uniform
kaiming_normal = he_normal
kaiming_uniform = he_uniform
