"""Keras 3 initializers whose numbers come from vsgen's streams.

``vsgen.keras.VarianceScaling`` and the six presets (``GlorotNormal``,
``GlorotUniform``, ``HeNormal``, ``HeUniform``, ``LecunNormal``,
``LecunUniform``) are subclasses of Keras's own classes of the same names, so
Keras treats them as its own: ``EinsumDense`` (and so ``MultiHeadAttention``)
gives them the kernel's ``input_axes``/``output_axes``, layers clone them with
``from_config(get_config())``, and ``model.save`` stores them under the
registered names ``vsgen>VarianceScaling``, ``vsgen>HeNormal``, ...
(``import vsgen.keras`` before ``keras.saving.load_model``).

What the numbers mean is Keras's definition (``stddev = sqrt(scale / n)``, see
``vsgen.initializer.VarianceScaling``); where they come from is the
``stream`` argument:

* ``"vsgen"`` (default): the counter-based stream; the values are byte for
  byte ``vsgen.VarianceScaling(scale, mode, distribution, seed=seed,
  input_axes=..., output_axes=...)(shape, dtype)``;
* ``"keras"``: the bytes Keras 3's numpy backend gives for the same integer
  seed, whatever backend is active.

Seeds follow Keras: an int gives the same values at every call, ``None``
draws one int at construction (and clones made from the config draw their
own, as Keras's do), a ``keras.random.SeedGenerator`` gives fresh values per
call (vsgen stream only; its two state words form the 64-bit seed
``word0 + 2**32 * word1``). The values are made on the host with NumPy: a
NumPy array on the numpy backend, a backend tensor converted from it on the
others.

Importing this module imports keras; ``import vsgen`` does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras.initializers import VarianceScaling as _KerasVarianceScaling

from vsgen import initializer as _initializer
from vsgen.streams import DEFAULT_STREAM, get_stream

__all__ = [
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "VarianceScaling",
]


def _stream_name(stream: object) -> str:
    return get_stream(str(stream)).name


class _VsgenDraws:
    """What every vsgen.keras initializer adds to its Keras base class."""

    scale: float
    mode: str
    distribution: str
    seed: Any
    input_axes: Sequence[int] | None
    output_axes: Sequence[int] | None
    stream: str

    def _core(self, seed: int) -> _initializer.VarianceScaling:
        """The vsgen initializer that draws for integer ``seed``."""
        return _initializer.VarianceScaling(
            self.scale,
            self.mode,
            self.distribution,
            seed,
            input_axes=None if self.input_axes is None else list(self.input_axes),
            output_axes=None if self.output_axes is None else list(self.output_axes),
            stream=self.stream,
        )

    def _check(self) -> None:
        # Keras's constructor has checked mode and distribution with its own
        # messages; vsgen's is stricter (finite scale, integer axes, seed range).
        self._core(self.seed if isinstance(self.seed, int) else 0)
        if not isinstance(self.seed, int) and self.stream != "vsgen":
            raise ValueError(
                "Argument `seed` must be an integer with stream='keras' (a "
                "SeedGenerator's words have no Keras-identical counterpart here). "
                f"Received: seed={self.seed!r}"
            )

    def _call_seed(self) -> int:
        """The integer seed of this call (a SeedGenerator advances by one)."""
        if isinstance(self.seed, int):
            return self.seed
        words = np.asarray(keras.ops.convert_to_numpy(self.seed.next())).astype(np.int64)
        return int(words[0] & 0xFFFFFFFF) | (int(words[1] & 0xFFFFFFFF) << 32)

    def scaling(self, shape: Sequence[int]) -> _initializer.Scaling:
        """Fans, n, variance, stddev and the distribution's parameters for ``shape``."""
        return self._core(self.seed if isinstance(self.seed, int) else 0).scaling(shape)

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> Any:
        """Values of ``shape`` and ``dtype`` (default ``keras.config.floatx()``)."""
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        values = self._core(self._call_seed())(tuple(shape), dtype)
        if keras.backend.backend() == "numpy":
            return values
        return keras.ops.convert_to_tensor(values, dtype=dtype)


def _register(cls: type) -> type:
    return keras.saving.register_keras_serializable(package="vsgen")(cls)


@_register
class VarianceScaling(_VsgenDraws, _KerasVarianceScaling):
    """``keras.initializers.VarianceScaling`` drawing from a vsgen stream.

    With fans from Keras's ``compute_fans`` (``input_axes``/``output_axes``
    when given) and ``n = max(1, fan_in | fan_out | (fan_in + fan_out) / 2)``,
    ``v = scale / n``: truncated_normal is N(0, s**2) cut to [-2s, 2s] with
    ``s = sqrt(v) / 0.87962566103423978``; untruncated_normal is N(0, v);
    uniform is U(-limit, limit) with ``limit = sqrt(3 v)``.

    Args:
        scale, mode, distribution, seed, input_axes, output_axes: as Keras.
        stream: ``"vsgen"`` (default) or ``"keras"`` (Keras-identical bytes).
    """

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: Any = None,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
        stream: str = DEFAULT_STREAM,
    ) -> None:
        self.stream = _stream_name(stream)
        _KerasVarianceScaling.__init__(
            self,
            scale=scale,
            mode=mode,
            distribution=distribution,
            seed=seed,
            input_axes=input_axes,
            output_axes=output_axes,
        )
        self._check()

    def get_config(self) -> dict[str, Any]:
        """Keras's config plus ``"stream"``."""
        return {**_KerasVarianceScaling.get_config(self), "stream": self.stream}


def _preset(keras_class: Any, doc: str) -> Any:
    """A vsgen.keras preset: an instance of both ``VarianceScaling`` above and
    Keras's preset class of the same name."""

    def __init__(
        self: Any,
        seed: Any = None,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
        stream: str = DEFAULT_STREAM,
    ) -> None:
        self.stream = _stream_name(stream)
        keras_class.__init__(self, seed=seed, input_axes=input_axes, output_axes=output_axes)
        self._check()

    def get_config(self: Any) -> dict[str, Any]:
        return {**keras_class.get_config(self), "stream": self.stream}

    get_config.__doc__ = 'Keras\'s config (seed and axes) plus ``"stream"``.'
    namespace = {
        "__init__": __init__,
        "get_config": get_config,
        "__doc__": doc,
        "__module__": __name__,
        "__qualname__": keras_class.__name__,
    }
    return _register(type(keras_class.__name__, (VarianceScaling, keras_class), namespace))


GlorotNormal = _preset(
    keras.initializers.GlorotNormal,
    "Glorot (Xavier) normal: truncated normal, stddev = sqrt(2 / (fan_in + fan_out)).",
)
GlorotUniform = _preset(
    keras.initializers.GlorotUniform,
    "Glorot (Xavier) uniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)).",
)
HeNormal = _preset(
    keras.initializers.HeNormal,
    "He (Kaiming) normal: truncated normal, stddev = sqrt(2 / fan_in).",
)
HeUniform = _preset(
    keras.initializers.HeUniform,
    "He (Kaiming) uniform: U(-limit, limit), limit = sqrt(6 / fan_in).",
)
LecunNormal = _preset(
    keras.initializers.LecunNormal,
    "LeCun normal: truncated normal, stddev = sqrt(1 / fan_in).",
)
LecunUniform = _preset(
    keras.initializers.LecunUniform,
    "LeCun uniform: U(-limit, limit), limit = sqrt(3 / fan_in).",
)
