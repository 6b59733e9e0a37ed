"""Keras 3 initializers whose numbers come from vsgen's streams.

``vsgen.keras.VarianceScaling``, the six presets (``GlorotNormal``,
``GlorotUniform``, ``HeNormal``, ``HeUniform``, ``LecunNormal``,
``LecunUniform``) and the fixed-parameter ``RandomNormal``,
``TruncatedNormal`` and ``RandomUniform`` are subclasses of Keras's own classes
of the same names, so Keras treats them as its own: ``EinsumDense`` (and so
``MultiHeadAttention``) gives the variance-scaling ones the kernel's
``input_axes``/``output_axes``, layers clone them with
``from_config(get_config())``, and ``model.save`` stores them under the
registered names ``vsgen>VarianceScaling``, ``vsgen>HeNormal``,
``vsgen>RandomNormal``, ... (``import vsgen.keras`` before
``keras.saving.load_model``).

What the numbers mean is Keras's definition (``stddev = sqrt(scale / n)``;
``RandomNormal``'s mean and stddev, ``TruncatedNormal``'s cut at 2 stddevs
from the mean, ``RandomUniform``'s [minval, maxval); see
``vsgen.initializer``); where they come from is the ``stream`` argument:

* ``"vsgen"`` (default): the counter-based stream; the values are byte for
  byte those of the vsgen class of the same name (``vsgen.VarianceScaling(scale,
  mode, distribution, seed=seed, input_axes=..., output_axes=...)(shape,
  dtype)``, ``vsgen.RandomNormal(mean, stddev, seed=seed)(shape, dtype)``, ...);
* ``"keras"``: the bytes Keras 3's numpy backend gives for the same integer
  seed, whatever backend is active.

Seeds follow Keras: an int gives the same values at every call, ``None``
draws one int at construction (Keras's ``make_default_seed``, in [1, 1e9];
clones made from the config draw their own, as Keras's do), a
``keras.random.SeedGenerator`` gives fresh values per call (vsgen stream
only; its two state words form the 64-bit seed ``word0 + 2**32 * word1``).
**The bound on seeds:** Keras 3 takes integer seeds in [0, 2**32)
(``KERAS_MAX_SEED``): its numpy and JAX backends turn the seed into ``uint32``
words and raise OverflowError on anything else when the initializer is
called. ``stream="keras"`` checks that bound at construction; the vsgen
stream takes seeds up to 2**64, but a config holding such a seed is then
loadable only by these classes (``vsgen>...``), not by Keras's own. The
values are made on the host with NumPy: a NumPy array on the numpy backend, a
backend tensor converted from it on the others.

Importing this module imports keras; ``import vsgen`` does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras.initializers import VarianceScaling as _KerasVarianceScaling

from vsgen import initializer as _initializer
from vsgen.initializer import KERAS_MAX_SEED
from vsgen.streams import DEFAULT_STREAM, get_stream

__all__ = [
    "KERAS_MAX_SEED",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
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

    def _core(self, seed: int) -> _initializer.RandomInitializer:
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
        # Keras's constructor has checked what it checks with its own messages;
        # vsgen's checks are stricter (finite numbers, integer axes, seed range).
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


class _FixedDraws(_VsgenDraws):
    """The fixed-parameter initializers: their vsgen class of the same name draws."""

    _CORE: Any = None
    _ARGUMENTS: tuple[str, str] = ("", "")

    def _core(self, seed: int) -> _initializer.RandomInitializer:
        first, second = (getattr(self, name) for name in self._ARGUMENTS)
        return self._CORE(_number(first), _number(second), seed, stream=self.stream)


def _number(value: Any) -> Any:
    """A Python or NumPy number as is; a scalar Keras tensor as a float (Keras
    accepts those for mean, stddev, minval and maxval)."""
    if isinstance(value, (int, float, np.number)):
        return value
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


def _fixed(keras_class: Any, core: Any, arguments: tuple[str, str], doc: str) -> Any:
    """A vsgen.keras fixed-parameter initializer: an instance of Keras's class of the
    same name whose values come from ``core`` (a vsgen class)."""
    first, second = arguments
    defaults = core._KERAS_DEFAULTS

    def __init__(
        self: Any,
        *args: Any,
        stream: str = DEFAULT_STREAM,
        **kwargs: Any,
    ) -> None:
        self.stream = _stream_name(stream)
        keras_class.__init__(self, *args, **kwargs)
        self._check()

    def get_config(self: Any) -> dict[str, Any]:
        return {**keras_class.get_config(self), "stream": self.stream}

    __init__.__doc__ = (
        f"``{keras_class.__name__}({first}={defaults[first]}, {second}={defaults[second]}, "
        'seed=None, stream="vsgen")``: Keras\'s arguments plus ``stream``.'
    )
    get_config.__doc__ = 'Keras\'s config plus ``"stream"``.'
    namespace = {
        "__init__": __init__,
        "get_config": get_config,
        "_CORE": core,
        "_ARGUMENTS": arguments,
        "__doc__": doc,
        "__module__": __name__,
        "__qualname__": keras_class.__name__,
    }
    return _register(type(keras_class.__name__, (_FixedDraws, keras_class), namespace))


RandomNormal = _fixed(
    keras.initializers.RandomNormal,
    _initializer.RandomNormal,
    ("mean", "stddev"),
    "Keras's RandomNormal drawing from a vsgen stream: N(mean, stddev**2).",
)
TruncatedNormal = _fixed(
    keras.initializers.TruncatedNormal,
    _initializer.TruncatedNormal,
    ("mean", "stddev"),
    "Keras's TruncatedNormal drawing from a vsgen stream: N(mean, stddev**2) with values "
    "beyond 2 stddev of the mean redrawn (stddev before truncation).",
)
RandomUniform = _fixed(
    keras.initializers.RandomUniform,
    _initializer.RandomUniform,
    ("minval", "maxval"),
    "Keras's RandomUniform drawing from a vsgen stream: U[minval, maxval).",
)
