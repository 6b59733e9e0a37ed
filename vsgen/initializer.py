"""The initializers: what the numbers mean.

``VarianceScaling`` and its presets (Keras's Glorot/He/LeCun, PyTorch's
Kaiming/Xavier with ``torch.nn.init``'s arguments) scale with the tensor's
fans; ``RandomNormal``, ``TruncatedNormal`` and ``RandomUniform`` (Keras 3's
siblings of VarianceScaling) have fixed parameters. All of them share
:class:`RandomInitializer`: seeds, streams, plans and sampling.

No I/O and no printing here; files are written by ``vsgen.formats`` and the
command line lives in ``vsgen.cli``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeGuard

import numpy as np

from vsgen.dtypes import resolve_dtype
from vsgen.fans import (
    AxisSpec,
    check_axes_pair,
    check_jax_axes_alone,
    check_layout,
    compute_fans,
    normalize_shape,
    resolve_rows,
    row_range,
)
from vsgen.names import canonical
from vsgen.streams import (
    DEFAULT_CHUNK,
    DEFAULT_STREAM,
    DISTRIBUTIONS,
    Draw,
    Stream,
    get_stream,
)

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
#: The modes Keras 3 knows (``fan_geo_avg`` is JAX's).
KERAS_MODES = ("fan_in", "fan_out", "fan_avg")
#: Seeds Keras 3 accepts for its initializers: its numpy and JAX backends
#: turn the seed into ``uint32`` words and raise OverflowError outside [0, 2**32).
KERAS_MAX_SEED = 2**32

#: Standard deviation of a standard normal truncated to [-2, 2]:
#: sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)). Dividing by it makes the truncated
#: distribution's stddev equal the target.
TRUNCATED_STD_FACTOR = 0.87962566103423978
#: JAX's divisor for complex truncated normals (``jax.nn.initializers``): the
#: truncated complex normal's E|z|**2 is (1 - 5 e**-4) / (1 - e**-4) = 0.92537...,
#: not this constant squared (0.90842...), so, as in JAX, complex
#: truncated_normal values have E|z|**2 = 1.018657... * v rather than v.
COMPLEX_TRUNCATED_STD_FACTOR = 0.95311164380491208


def _is_seed_sequence(value: object) -> TypeGuard[np.random.SeedSequence]:
    # A SeedSequence exists only once numpy.random is imported; not importing
    # it here saves every process that never uses one ~7 ms of start-up.
    random = sys.modules.get("numpy.random")
    return random is not None and isinstance(value, random.SeedSequence)


@dataclass(frozen=True)
class Scaling:
    """What a configuration means for one shape.

    Variance scaling: ``n`` is fan_in, fan_out, (fan_in + fan_out) / 2 or
    sqrt(fan_in * fan_out) by mode, floored at 1;
    ``variance = scale / n``; ``stddev = sqrt(variance)``. For truncated_normal
    the pre-truncation stddev is ``s = stddev / 0.87962566103423978`` and values
    lie in ``[-2s, 2s]``; for uniform ``limit = sqrt(3 * variance)`` and values
    lie in ``[-limit, limit)``.

    Fixed parameters (``RandomNormal``, ``TruncatedNormal``, ``RandomUniform``):
    no fans, ``n``, ``scale`` or ``mode`` (None); values are centred on
    ``mean``: within ``[mean - bound, mean + bound]`` (``bound = 2s``) for the
    truncated normal, within ``[minval, maxval)`` (``interval``; ``limit`` is
    half its width) for the uniform. ``stddev`` is always the values' own.

    Complex dtypes follow JAX (variance split evenly between real and
    imaginary parts): truncated_normal is ``s * w`` with ``w`` a complex
    standard normal (E|w|**2 = 1) conditioned on ``|w| <= 2`` and
    ``s = stddev / 0.95311164380491208``, so ``|z| <= bound = 2s``;
    untruncated_normal is ``stddev * w``; uniform is uniform in the disk of
    radius ``limit = sqrt(2 * variance)``.
    """

    shape: tuple[int, ...]
    fan_in: int | None
    fan_out: int | None
    n: float | None
    scale: float | None
    mode: str | None
    distribution: str
    variance: float
    stddev: float
    pre_truncation_std: float | None
    bound: float | None
    limit: float | None
    #: Complex outputs (complex64/complex128): ``bound`` and ``limit`` bound |z|.
    complex_valued: bool = False
    #: The values' centre: a normal's mean, a uniform range's midpoint.
    mean: float = 0.0
    #: Uniform only: the exact ``(minval, maxval)`` an initializer states.
    interval: tuple[float, float] | None = None

    @property
    def multiplier(self) -> float:
        """What the unit distribution is multiplied by: s, stddev or limit."""
        if self.distribution == "truncated_normal":
            assert self.pre_truncation_std is not None
            return self.pre_truncation_std
        if self.distribution == "uniform":
            assert self.limit is not None
            return self.limit
        return self.stddev

    @property
    def fixed(self) -> bool:
        """True for fixed-parameter initializers (no fans, n, scale or mode)."""
        return self.n is None

    def value_range(self) -> tuple[float, float] | None:
        """The interval the values lie in (as ``vsgen.streams.Draw.value_range``):
        ``(mean - 2s, mean + 2s)`` for truncated_normal, ``interval`` or ``(mean -
        limit, mean + limit)`` for uniform, None for untruncated_normal and for
        complex values."""
        if self.complex_valued:
            return None
        draw = Draw(self.distribution, self.multiplier, 0, np.dtype(np.float64), self.mean)
        return self.interval if self.interval is not None else draw.value_range()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types; keys as printed by ``vsgen describe --json``."""
        if self.fixed:
            info: dict[str, Any] = {
                "shape": list(self.shape),
                "distribution": self.distribution,
                "mean": self.mean,
                "stddev": self.stddev,
                "variance": self.variance,
                "pre_truncation_std": self.pre_truncation_std,
                "bound": self.bound,
                "limit": self.limit,
            }
            if self.distribution == "uniform":
                low, high = self.value_range() or (None, None)
                info["minval"], info["maxval"] = low, high
            return {**info, **({"complex": True} if self.complex_valued else {})}
        return {
            "shape": list(self.shape),
            "fan_in": self.fan_in,
            "fan_out": self.fan_out,
            "n": self.n,
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "variance": self.variance,
            "stddev": self.stddev,
            "pre_truncation_std": self.pre_truncation_std,
            "bound": self.bound,
            "limit": self.limit,
            **({"complex": True} if self.complex_valued else {}),
        }


def _check_real(value: object, argument: str, *, positive: bool = False) -> float:
    """``value`` as a float: a finite real number (not a bool), > 0 if ``positive``."""
    wording = "a positive finite float" if positive else "a finite float"
    message = f"Argument `{argument}` must be {wording}. Received: {argument}={value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(message)
    try:
        number = float(value)
    except OverflowError:  # an integer such as 10**400
        number = math.inf
    if not math.isfinite(number) or (positive and number <= 0.0):
        raise ValueError(message)
    return number


def _check_scale(scale: object) -> float:
    return _check_real(scale, "scale", positive=True)


def _check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ValueError(
            f"Argument `mode` must be one of {', '.join(MODES)}. Received: mode={mode!r}"
        )
    return str(mode)


def _check_distribution(distribution: object) -> str:
    if not isinstance(distribution, str):
        raise TypeError(
            f"Argument `distribution` must be one of {', '.join(DISTRIBUTIONS)}. "
            f"Received: distribution={distribution!r}"
        )
    value = distribution.lower()
    if value == "normal":
        value = "truncated_normal"
    if value not in DISTRIBUTIONS:
        raise ValueError(
            f"Argument `distribution` must be one of {', '.join(DISTRIBUTIONS)} "
            f"(or 'normal', an alias of truncated_normal). Received: "
            f"distribution={distribution!r}"
        )
    return value


def _check_seed(seed: object, stream: Stream) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"Argument `seed` must be None or a non-negative integer. Received: seed={seed!r}"
        )
    value = int(seed)
    if not 0 <= value < stream.max_seed:
        raise ValueError(
            f"Argument `seed` must be in [0, 2**{stream.max_seed.bit_length() - 1}) for the "
            f"{stream.name!r} stream. Received: seed={seed!r}"
        )
    return value


def _check_axes(axes: object, argument: str) -> tuple[int, ...] | None:
    if axes is None:
        return None
    if isinstance(axes, int) and not isinstance(axes, bool):
        axes = [axes]
    if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence):
        raise TypeError(
            f"Argument `{argument}` must be None or a list of integers. Received: "
            f"{argument}={axes!r}"
        )
    if any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
        raise TypeError(
            f"Argument `{argument}` must be None or a list of integers. Received: "
            f"{argument}={list(axes)!r}"
        )
    return tuple(axes)


def _check_jax_axis(axes: object, argument: str) -> int | tuple[int, ...] | None:
    if axes is None or (isinstance(axes, int) and not isinstance(axes, bool)):
        return axes
    checked = _check_axes(axes, argument)
    assert checked is not None
    return checked


def check_keras_seed(seed: object) -> None:
    """Refuse a seed Keras 3 cannot take: outside [0, 2**32) (its numpy and JAX
    backends make ``uint32`` words of it and raise OverflowError when it is called).
    None is fine: Keras then draws one."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"Argument `seed` must be None or an integer. Received: seed={seed!r}")
    if not 0 <= int(seed) < KERAS_MAX_SEED:
        raise ValueError(
            "Argument `seed` must be in [0, 2**32) for Keras 3, whose numpy and JAX backends "
            f"raise OverflowError on larger seeds. Received: seed={seed!r}"
        )


class RandomInitializer:
    """What every vsgen initializer shares: its seed, its stream, plans and sampling.

    Subclasses say what the numbers mean (``_scaling``: a :class:`Scaling` for
    a shape) and how they are configured (``get_config``/``from_config``,
    ``keras_config``); drawing them is common. Calling an initializer again
    returns the same values (Keras 3), unless its seed is a
    ``numpy.random.SeedSequence``, which gives fresh values per call.
    """

    #: The ``kind`` of the provenance records of tensors made with it.
    kind: ClassVar[str] = ""
    #: Whether the values depend on the tensor's fans (variance scaling).
    uses_fans: ClassVar[bool] = True
    # Fan conventions; fixed-parameter initializers have none and keep these.
    layout: str = "keras"
    input_axes: tuple[int, ...] | None = None
    output_axes: tuple[int, ...] | None = None
    in_axis: int | tuple[int, ...] | None = None
    out_axis: int | tuple[int, ...] | None = None
    batch_axis: int | tuple[int, ...] = ()

    def _set_seed(self, seed: int | np.random.SeedSequence | None, stream: str) -> None:
        self._stream = get_stream(stream)
        self._seed_sequence: np.random.SeedSequence | None = None
        self.seed_was_drawn = False
        if _is_seed_sequence(seed):
            self._seed_sequence = seed
            self.seed: int | None = None
        elif seed is None:
            self.seed = self._stream.draw_seed()
            self.seed_was_drawn = True
        else:
            self.seed = _check_seed(seed, self._stream)
        #: The integer seed behind the most recent call (useful with a SeedSequence).
        self.last_seed: int | None = self.seed

    @property
    def stream(self) -> str:
        """Name of the random stream: ``"vsgen"`` or ``"keras"``."""
        return self._stream.name

    @property
    def stream_label(self) -> str:
        """``name/version`` of the random stream, as recorded in files."""
        return self._stream.label

    @property
    def _jax_axes_set(self) -> bool:
        return self.in_axis is not None or self.out_axis is not None or self.batch_axis != ()

    # --- what the numbers mean -------------------------------------------------

    def fans(self, shape: Sequence[int]) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of ``shape`` under this initializer's layout/axes."""
        return compute_fans(
            shape,
            self.layout,
            self.input_axes,
            self.output_axes,
            in_axis=self.in_axis,
            out_axis=self.out_axis,
            batch_axis=self.batch_axis,
        )

    def scaling(self, shape: Sequence[int], dtype: object = None) -> Scaling:
        """What the numbers mean for ``shape`` (and ``dtype``: complex dtypes have
        their own parameters, see ``Scaling``)."""
        return self._scaling(normalize_shape(shape), resolve_dtype(dtype).kind == "c")

    def _scaling(self, shape: tuple[int, ...], complex_valued: bool = False) -> Scaling:
        raise NotImplementedError

    def _fit_argument(self) -> tuple[str, object]:
        """The argument a dtype that cannot hold the numbers is blamed on."""
        return "scale", getattr(self, "scale", None)

    # --- sampling --------------------------------------------------------------

    def _next_seed(self) -> int:
        if self._seed_sequence is None:
            assert self.seed is not None
            return self.seed
        child = self._seed_sequence.spawn(1)[0]
        words = child.generate_state(2, np.uint32)
        value = int(words[0]) | (int(words[1]) << 32)
        self.last_seed = value % self._stream.max_seed
        return self.last_seed

    def plan(
        self,
        shape: Sequence[int],
        dtype: object = None,
        *,
        rows: tuple[int | None, int | None] | None = None,
        fan_shape: Sequence[int] | None = None,
    ) -> SamplePlan:
        """Resolve what a call would sample, without sampling.

        ``rows=(a, b)`` selects rows a..b-1 along axis 0 of the full ``shape``
        (``None`` for an open end: ``(100, None)`` is rows 100 to the end)
        (bit-identical to slicing the full tensor); fans then still come from
        the full shape. ``fan_shape`` computes fans from another shape (TF1's
        ``partition_info``) while sampling ``shape``.
        """
        shape = normalize_shape(shape)
        resolved = resolve_dtype(dtype)
        if resolved.kind == "c" and not self._stream.random_access:
            raise ValueError(
                f"Argument `dtype` {resolved.name} needs the vsgen stream; the "
                f"{self.stream!r} stream (Keras) has no complex values. Received: "
                f"dtype={dtype!r}"
            )
        scaling = self._scaling(
            shape if fan_shape is None else normalize_shape(fan_shape), resolved.kind == "c"
        )
        out_shape, start, stop = row_range(shape, rows)
        argument, value = self._fit_argument()
        _check_fits_dtype(scaling, resolved, argument, value)
        interval = scaling.interval
        if interval is not None and interval == (
            scaling.mean - scaling.multiplier,
            scaling.mean + scaling.multiplier,
        ):
            interval = None  # the same doubles: no need to state them
        draw = Draw(
            scaling.distribution,
            scaling.multiplier,
            self._next_seed(),
            resolved,
            scaling.mean,
            interval,
        )
        return SamplePlan(
            stream=self._stream,
            draw=draw,
            scaling=scaling,
            full_shape=shape,
            shape=out_shape,
            start=start,
            stop=stop,
            rows=None if rows is None else resolve_rows(shape, rows),
        )

    def sample(
        self,
        shape: Sequence[int],
        dtype: object = None,
        *,
        rows: tuple[int | None, int | None] | None = None,
        fan_shape: Sequence[int] | None = None,
        threads: int | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return the tensor (or rows ``a..b-1`` of it) as a NumPy array.

        With ``out``, a writeable C-contiguous NumPy array of the sampled
        shape, the values are written into it (no allocation) and ``out`` is
        returned; its dtype is used when ``dtype`` is None. For torch tensors
        and other buffers use ``vsgen.fill_``.
        """
        if out is None:
            return self.plan(shape, dtype, rows=rows, fan_shape=fan_shape).array(threads)
        if dtype is None and isinstance(out, np.ndarray):
            dtype = out.dtype
        self.plan(shape, dtype, rows=rows, fan_shape=fan_shape).fill(out, threads)
        return out

    def __call__(
        self, shape: Sequence[int], dtype: object = None, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Return a ``shape`` array of ``dtype`` (default float32) drawn as documented,
        or write it into ``out`` (see ``sample``) and return that."""
        return self.sample(shape, dtype, out=out)

    # --- configuration ---------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The plain JSON config, its seed included; ``from_config`` rebuilds it."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomInitializer:
        """Rebuild an initializer from ``get_config()`` output."""
        raise NotImplementedError

    def keras_config(self) -> dict[str, Any]:
        """The Keras 3 serialized form, accepted by ``keras.initializers.deserialize``."""
        raise NotImplementedError

    def _keras_seed(self) -> int | None:
        """The seed of the Keras form: the given seed, refused outside [0, 2**32)
        (:func:`check_keras_seed`); a seed vsgen drew (``seed=None``) taken
        modulo 2**32, itself a uniformly drawn seed Keras can take."""
        if self.seed_was_drawn and self.seed is not None:
            return self.seed % KERAS_MAX_SEED
        check_keras_seed(self.seed)
        return self.seed

    def _keras_form(self, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
        """``{"module", "class_name", "config", "registered_name"}``, with the seed
        Keras takes (``_keras_seed``)."""
        if "seed" in config:
            config["seed"] = self._keras_seed()
        return {
            "module": "keras.initializers",
            "class_name": class_name,
            "config": config,
            "registered_name": None,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RandomInitializer):
            return NotImplemented
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _unknown_keys(
    config: Mapping[str, Any], allowed: Sequence[str], shown: Sequence[str] | None = None
) -> None:
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(
            f"Argument `config` has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed if shown is None else shown)}"
        )


def _config_mapping(config: object) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise TypeError(
            f"Argument `config` must be a JSON object (a dict). Received: config={config!r}"
        )
    return dict(config)


class VarianceScaling(RandomInitializer):
    """Initializer whose scale adapts to the shape of the weights.

    With fans from ``vsgen.compute_fans`` and
    ``n = max(1, fan_in | fan_out | (fan_in + fan_out) / 2 | sqrt(fan_in * fan_out))``
    by ``mode``, the target variance is ``v = scale / n``:

    * ``truncated_normal``: N(0, s**2) truncated to [-2s, 2s] with
      ``s = sqrt(v) / 0.87962566103423978``, so the result's stddev is sqrt(v);
    * ``untruncated_normal``: N(0, v);
    * ``uniform``: U(-limit, limit) with ``limit = sqrt(3 v)``.

    complex64/complex128 outputs follow JAX's complex variance scaling (see
    ``Scaling``).

    Args:
        scale: positive finite scaling factor.
        mode: ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` or ``"fan_geo_avg"``
            (JAX's geometric mean, ``n = sqrt(fan_in * fan_out)``).
        distribution: ``"truncated_normal"`` (alias ``"normal"``),
            ``"untruncated_normal"`` or ``"uniform"``; case-insensitive.
        seed: None (draw a fresh seed now; see ``seed``), a non-negative int
            (below 2**32 for the keras stream, 2**64 for the vsgen stream), or
            a ``numpy.random.SeedSequence``, which gives fresh values per call.
            A seed indexes one stream of numbers: the same seed with another
            distribution, scale or shape gives related values (the same
            underlying draws), so give each tensor its own seed (model specs
            derive one per tensor name).
        input_axes, output_axes: explicit fan axes (Keras 3.15); together.
        in_axis, out_axis, batch_axis: JAX's fan axes (int or list); the axes
            in none of them form the receptive field, ``batch_axis`` is left
            out; unset in/out axes are the layout's. Not with input_axes.
        layout: ``"keras"`` (channels-last) or ``"torch"`` (``(out, in, *k)``).
        stream: ``"vsgen"`` (fast, parallel, default) or ``"keras"``
            (bit-identical to Keras 3 with its numpy backend; the JAX and
            TensorFlow backends draw from their own generators, so they give
            other values from the same distribution).

    Calling the initializer repeatedly returns the same values (Keras 3).
    """

    kind = "variance_scaling"

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | np.random.SeedSequence | None = None,
        *,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
        in_axis: AxisSpec | None = None,
        out_axis: AxisSpec | None = None,
        batch_axis: AxisSpec | None = None,
        layout: str = "keras",
        stream: str = DEFAULT_STREAM,
    ) -> None:
        self.scale = _check_scale(scale)
        self.mode = _check_mode(mode)
        self.distribution = _check_distribution(distribution)
        stream_name = get_stream(stream).name
        self.layout = check_layout(layout)
        self.input_axes = _check_axes(input_axes, "input_axes")
        self.output_axes = _check_axes(output_axes, "output_axes")
        check_axes_pair(input_axes, output_axes)
        self.in_axis = _check_jax_axis(in_axis, "in_axis")
        self.out_axis = _check_jax_axis(out_axis, "out_axis")
        checked_batch = _check_jax_axis(batch_axis, "batch_axis")
        self.batch_axis = () if checked_batch is None else checked_batch
        check_jax_axes_alone(input_axes, output_axes, self.in_axis, self.out_axis, self.batch_axis)
        self._set_seed(seed, stream_name)

    # --- what the numbers mean -------------------------------------------------

    def scaling(self, shape: Sequence[int], dtype: object = None) -> Scaling:
        """Fans, n, variance, stddev and the distribution's parameters for ``shape``
        (and ``dtype``: complex dtypes have their own parameters, see ``Scaling``).

        The float arithmetic follows Keras 3 step by step
        (``scale / max(1.0, n)``, then ``sqrt``), so the parameters are the
        same doubles Keras computes; ``fan_geo_avg`` takes
        ``sqrt(float(fan_in) * float(fan_out))`` (correctly rounded, where JAX
        writes ``** 0.5``).
        """
        return self._scaling(normalize_shape(shape), resolve_dtype(dtype).kind == "c")

    def _scaling(self, shape: tuple[int, ...], complex_valued: bool = False) -> Scaling:
        fan_in, fan_out = self.fans(shape)
        if self.mode == "fan_in":
            n = max(1.0, fan_in)
        elif self.mode == "fan_out":
            n = max(1.0, fan_out)
        elif self.mode == "fan_avg":
            n = max(1.0, (fan_in + fan_out) / 2.0)
        else:
            n = max(1.0, math.sqrt(float(fan_in) * float(fan_out)))
        variance = self.scale / n
        stddev = math.sqrt(variance)
        pre_truncation_std = bound = limit = None
        if self.distribution == "truncated_normal":
            factor = COMPLEX_TRUNCATED_STD_FACTOR if complex_valued else TRUNCATED_STD_FACTOR
            pre_truncation_std = math.sqrt(variance) / factor
            bound = 2 * pre_truncation_std
        elif self.distribution == "uniform":
            limit = math.sqrt((2.0 if complex_valued else 3.0) * variance)
        return Scaling(
            shape=shape,
            fan_in=fan_in,
            fan_out=fan_out,
            n=float(n),
            scale=self.scale,
            mode=self.mode,
            distribution=self.distribution,
            variance=variance,
            stddev=stddev,
            pre_truncation_std=pre_truncation_std,
            bound=bound,
            limit=limit,
            complex_valued=complex_valued,
        )

    # --- configuration ---------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """``{"scale", "mode", "distribution", "seed"}`` plus, where they are not
        the defaults, ``input_axes``/``output_axes``, ``layout`` and ``stream``."""
        config: dict[str, Any] = {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }
        if self.input_axes is not None:
            config["input_axes"] = list(self.input_axes)
            config["output_axes"] = list(self.output_axes or ())
        for key in ("in_axis", "out_axis", "batch_axis"):
            axes = getattr(self, key)
            if axes is not None and axes != ():
                config[key] = axes if isinstance(axes, int) else list(axes)
        if self.layout != "keras":
            config["layout"] = self.layout
        if self.stream != DEFAULT_STREAM:
            config["stream"] = self.stream
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomInitializer:
        """Rebuild an initializer from ``get_config()`` output (unknown keys are refused).

        ``VarianceScaling.from_config`` of a config naming a ``"preset"`` (the
        PyTorch presets and the fixed-parameter initializers record theirs)
        builds that class, so any plain config vsgen writes reads back here.
        """
        config = _config_mapping(config)
        if config.get("preset") is not None and cls is VarianceScaling:
            return from_config(config)
        # (A "preset": null names nothing; the message lists every key a config may have.)
        _unknown_keys(config, [key for key in _CONFIG_KEYS if key != "preset"], _CONFIG_KEYS)
        return cls(**config)

    def keras_config(self) -> dict[str, Any]:
        """The Keras 3 serialized form, accepted by ``keras.initializers.deserialize``.

        Only keys Keras knows are emitted; the stream is not part of it (Keras
        always draws as vsgen's ``keras`` stream does). The ``torch`` layout has
        no rank-free Keras equivalent and is refused: give explicit axes instead.
        So is a seed Keras cannot take (outside [0, 2**32), see
        :func:`check_keras_seed`).
        """
        if self.layout != "keras":
            raise ValueError(
                f"Argument `layout` {self.layout!r} has no Keras equivalent; give explicit "
                f"`input_axes` and `output_axes` instead. Received: layout={self.layout!r}"
            )
        if self.mode not in KERAS_MODES:
            raise ValueError(f"mode {self.mode!r} has no Keras equivalent (JAX only)")
        if self._jax_axes_set:
            raise ValueError(
                "in_axis/out_axis/batch_axis (JAX's fan axes) have no Keras equivalent; "
                "use input_axes/output_axes instead"
            )
        config: dict[str, Any] = {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }
        if self.input_axes is not None:
            config["input_axes"] = list(self.input_axes)
            config["output_axes"] = list(self.output_axes or ())
        return self._keras_form("VarianceScaling", config)


_CONFIG_KEYS = (
    "scale",
    "mode",
    "distribution",
    "seed",
    "input_axes",
    "output_axes",
    "in_axis",
    "out_axis",
    "batch_axis",
    "layout",
    "stream",
    "preset",
)


class Plan(Protocol):
    """A tensor's values, resolved but not yet produced: what writers consume.

    :class:`SamplePlan` (sampled values) and ``vsgen.modelspec.ConstantPlan``
    (one value everywhere) both satisfy it.
    """

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the values produced."""
        ...

    @property
    def dtype(self) -> np.dtype:
        """Output dtype of the values produced."""
        ...

    @property
    def size(self) -> int:
        """Number of values produced."""
        ...

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """The values as consecutive flat chunks of at most ``chunk_size``."""
        ...

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        ...


@dataclass(frozen=True)
class SamplePlan:
    """A resolved request: which stream draws which flat range, and its meaning."""

    stream: Stream
    draw: Draw
    scaling: Scaling
    full_shape: tuple[int, ...]
    shape: tuple[int, ...]
    start: int
    stop: int
    rows: tuple[int, int] | None = None

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return self.stop - self.start

    @property
    def dtype(self) -> np.dtype:
        """Output dtype of the values (``draw.dtype``)."""
        return self.draw.dtype

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None, recycle: int = 0
    ) -> Iterator[np.ndarray]:
        """The values as consecutive flat chunks of at most ``chunk_size``.

        With ``recycle=k > 0`` the chunks are views of k buffers used in turn
        (``Stream.recycled_chunks``): for a consumer that holds fewer than k
        chunks at once, such as ``formats.write_chunks(prefetch=k - 2)``.
        """
        if recycle > 0:
            return self.stream.recycled_chunks(
                self.draw, self.start, self.stop, chunk_size, threads, recycle
            )
        return self.stream.chunks(self.draw, self.start, self.stop, chunk_size, threads)

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        out = np.empty(self.shape, dtype=self.draw.dtype)
        if out.size:
            self.stream.fill(out.reshape(-1), self.start, self.draw, threads)
        return out

    def fill(self, out: np.ndarray, threads: int | None = None) -> None:
        """Write the values into ``out``: a writeable, C-contiguous NumPy array of
        ``shape`` and of the plan's dtype. Nothing is allocated but bounded
        scratch space (narrow dtypes are rounded from float32 a chunk at a time)."""
        if not isinstance(out, np.ndarray):
            raise TypeError(
                "Argument `out` must be a numpy array (use vsgen.fill_ for torch tensors "
                f"and other buffers). Received: out={type(out).__name__}"
            )
        if out.shape != self.shape:
            raise ValueError(
                f"Argument `out` must have the sampled shape {self.shape}. "
                f"Received: out with shape {out.shape}"
            )
        if out.dtype != self.draw.dtype:
            raise ValueError(
                f"Argument `out` must have dtype {self.draw.dtype.name}. "
                f"Received: out with dtype {out.dtype.name}"
            )
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(
                "Argument `out` must be a writeable C-contiguous array. "
                f"Received: out with strides {out.strides}, writeable={out.flags.writeable}"
            )
        if out.size:
            self.stream.fill(out.reshape(-1), self.start, self.draw, threads)


#: Largest finite value of each output type.
_DTYPE_MAX = {
    "float16": 65504.0,
    "bfloat16": 3.3895313892515355e38,
    "float32": 3.4028234663852886e38,
    "float64": 1.7976931348623157e308,
    "complex64": 3.4028234663852886e38,
    "complex128": 1.7976931348623157e308,
}
#: Smallest positive normal value of each output type: below it values lose
#: precision (subnormals) or become zero.
_DTYPE_TINY = {
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
    "float32": 2.0**-126,
    "float64": 2.0**-1022,
    "complex64": 2.0**-126,
    "complex128": 2.0**-1022,
}
#: Beyond this many stddevs an untruncated normal value has probability ~1e-23.
_NORMAL_REACH = 10.0


def _check_fits_dtype(
    scaling: Scaling, dtype: np.dtype, argument: str = "scale", value: object = None
) -> None:
    """Refuse parameters whose numbers ``dtype`` cannot represent.

    Overflow: the largest magnitude (``|mean|`` plus the bound 2s, the limit,
    or for the untruncated normal 10 stddevs) must be finite in double
    precision and in ``dtype``. Underflow: the stddev must be at least the
    smallest normal number of ``dtype``, or the values would be subnormal
    (few significant bits) or zero. Values around a mean other than 0 (or in
    a stated range) need instead that the range holds a value of ``dtype``.
    ``argument`` and ``value`` name what the message blames.
    """
    name = np.dtype(dtype).name
    if scaling.distribution == "untruncated_normal":
        reach = _NORMAL_REACH * scaling.stddev
    else:
        reach = scaling.bound if scaling.bound is not None else scaling.multiplier
    reach += abs(scaling.mean)
    shown = scaling.scale if argument == "scale" else value
    received = f"Received: {argument}={shown!r}, dtype={name}"
    largest = _DTYPE_MAX[name]
    if not math.isfinite(reach) or reach > largest:
        raise ValueError(
            f"Argument `{argument}` is too large for `dtype` {name}: values would reach "
            f"{reach:.4g}, beyond its largest finite value {largest:.4g}. {received}"
        )
    tiny = _DTYPE_TINY[name]
    centred = scaling.mean == 0.0 and scaling.interval is None
    # The variance is a double too; a subnormal one has lost its precision.
    # (Around a mean the values are not small: the range check below applies.)
    if centred and not (scaling.stddev >= tiny and scaling.variance >= sys.float_info.min):
        raise ValueError(
            f"Argument `{argument}` is too small for `dtype` {name}: the stddev "
            f"{scaling.stddev:.4g} is below its smallest normal number {tiny:.4g}, so "
            f"values would be subnormal or zero. {received}"
        )
    if not centred and not scaling.complex_valued:
        from vsgen.streams._offset import offset_bounds

        draw = Draw(scaling.distribution, scaling.multiplier, 0, np.dtype(dtype), scaling.mean)
        if scaling.interval is not None:
            draw = dataclasses.replace(draw, interval=scaling.interval)
        try:
            offset_bounds(draw, np.dtype(dtype))
        except ValueError as error:
            raise ValueError(f"Argument `{argument}`: {error}. {received}") from None


class _Preset(VarianceScaling):
    """A VarianceScaling with fixed scale, mode and distribution (Keras presets)."""

    _PARAMS: tuple[float, str, str] = (1.0, "fan_in", "truncated_normal")

    def __init__(
        self,
        seed: int | np.random.SeedSequence | None = None,
        *,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
        in_axis: AxisSpec | None = None,
        out_axis: AxisSpec | None = None,
        batch_axis: AxisSpec | None = None,
        layout: str = "keras",
        stream: str = DEFAULT_STREAM,
    ) -> None:
        scale, mode, distribution = self._PARAMS
        super().__init__(
            scale,
            mode,
            distribution,
            seed,
            input_axes=input_axes,
            output_axes=output_axes,
            in_axis=in_axis,
            out_axis=out_axis,
            batch_axis=batch_axis,
            layout=layout,
            stream=stream,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomInitializer:
        """Accept the preset's own config (``{"seed": ...}``) or a full one that
        matches the preset's fixed parameters."""
        if not isinstance(config, Mapping):
            raise TypeError(
                f"Argument `config` must be a JSON object (a dict). Received: config={config!r}"
            )
        config = dict(config)
        preset = config.pop("preset", None)
        if preset is not None and get_preset(preset) is not cls:
            raise ValueError(f"{cls.__name__} config names another preset: {preset!r}")
        fixed = dict(zip(("scale", "mode", "distribution"), cls._PARAMS, strict=True))
        for key, expected in fixed.items():
            if key in config:
                given = config.pop(key)
                same = (
                    _check_distribution(given) == expected
                    if key == "distribution"
                    else given == expected
                )
                if not same:
                    raise ValueError(
                        f"{cls.__name__} has {key}={expected!r}; the config says {given!r}"
                    )
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"Argument `config` has unknown key(s) {', '.join(map(repr, unknown))}"
            )
        return cls(**config)

    def keras_config(self) -> dict[str, Any]:
        """Keras' serialized form of the preset: its class name and ``{"seed"}``."""
        form = super().keras_config()
        config = {"seed": form["config"]["seed"]}
        if self.input_axes is not None:
            config["input_axes"] = form["config"]["input_axes"]
            config["output_axes"] = form["config"]["output_axes"]
        form["class_name"] = type(self).__name__
        form["config"] = config
        return form


class GlorotNormal(_Preset):
    """Glorot (Xavier) normal: truncated normal, stddev = sqrt(2 / (fan_in + fan_out))."""

    _PARAMS = (1.0, "fan_avg", "truncated_normal")


class GlorotUniform(_Preset):
    """Glorot (Xavier) uniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""

    _PARAMS = (1.0, "fan_avg", "uniform")


class HeNormal(_Preset):
    """He (Kaiming) normal: truncated normal, stddev = sqrt(2 / fan_in)."""

    _PARAMS = (2.0, "fan_in", "truncated_normal")


class HeUniform(_Preset):
    """He (Kaiming) uniform: U(-limit, limit), limit = sqrt(6 / fan_in)."""

    _PARAMS = (2.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """LeCun normal: truncated normal, stddev = sqrt(1 / fan_in)."""

    _PARAMS = (1.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """LeCun uniform: U(-limit, limit), limit = sqrt(3 / fan_in)."""

    _PARAMS = (1.0, "fan_in", "uniform")


#: ``torch.nn.init.calculate_gain``'s nonlinearities: the linear ones (gain 1).
LINEAR_NONLINEARITIES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
#: Every nonlinearity ``calculate_gain`` knows, in its order.
NONLINEARITIES = (*LINEAR_NONLINEARITIES, "sigmoid", "tanh", "relu", "leaky_relu", "selu")
#: Activations of ``torch.nn`` that ``calculate_gain`` has no gain for: a real name,
#: not a misspelling of one it knows (``gelu`` is not a typo of ``selu``).
NO_TORCH_GAIN = (
    "gelu",
    "silu",
    "swish",
    "mish",
    "elu",
    "celu",
    "softplus",
    "softsign",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "relu6",
    "prelu",
    "rrelu",
    "glu",
    "logsigmoid",
    "tanhshrink",
    "softmax",
    "log_softmax",
)


def _check_nonlinearity(nonlinearity: object) -> str:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"Argument `nonlinearity` must be one of {', '.join(NONLINEARITIES)} "
            f"(torch.nn.init.calculate_gain's). Received: nonlinearity={nonlinearity!r}"
        )
    return str(nonlinearity)


def _check_negative_slope(a: object) -> float | int:
    """``a`` as torch takes it: an int or a float, not a bool; finite here."""
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        raise TypeError(f"Argument `a` must be a finite number. Received: a={a!r}")
    if not math.isfinite(a):
        raise ValueError(f"Argument `a` must be a finite number. Received: a={a!r}")
    return a


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """``torch.nn.init.calculate_gain``, with torch's arithmetic.

    linear, conv*, conv_transpose*, sigmoid: 1; tanh: 5/3; relu: sqrt(2);
    leaky_relu: sqrt(2 / (1 + negative_slope**2)), ``param`` the negative slope
    (default 0.01); selu: 3/4.

    Raises:
        ValueError: an unknown nonlinearity, or a slope that is not a number.
    """
    nonlinearity = _check_nonlinearity(nonlinearity)
    if nonlinearity in LINEAR_NONLINEARITIES or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        negative_slope = 0.01 if param is None else _check_negative_slope(param)
        return math.sqrt(2.0 / (1 + negative_slope**2))
    return 3.0 / 4


def _gain_squared(nonlinearity: str, param: float | int) -> float:
    """The variance scale of a gain, gain**2 without the square root's rounding:
    2 for relu and leaky_relu with slope 0, so the default Kaiming presets keep
    ``scale = 2.0`` in their configs."""
    if nonlinearity in LINEAR_NONLINEARITIES or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 25.0 / 9
    if nonlinearity == "relu":
        return 2.0
    if nonlinearity == "leaky_relu":
        return 2.0 / (1 + param**2)
    return 9.0 / 16


#: What ``torch.nn.init`` says for a rank-0 or rank-1 tensor.
_TORCH_RANK_MESSAGE = (
    "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
)
#: What ``torch.nn.init`` warns for a tensor without elements.
ZERO_ELEMENT_WARNING = "Initializing zero-element tensors is a no-op"


class _TorchPreset(_Preset):
    """A ``torch.nn.init`` function with its arguments, bit for bit.

    PyTorch computes the parameters in its own order (``gain / sqrt(fan)``,
    then ``sqrt(3) * std``), which can differ from ``sqrt(scale / n)`` in the
    last bit; these presets compute them as PyTorch does, so ``stddev`` and
    ``limit`` are the very doubles ``torch.nn.init`` uses. The layout is
    PyTorch's ``(out, in, *kernel)`` unless another is given. As in torch, a
    tensor of rank below 2 is refused (ValueError) and one without elements
    gets a UserWarning. Their configs carry ``"preset"`` and the arguments
    that differ from torch's defaults, so that a file's record rebuilds the
    same numbers.
    """

    _TORCH_NAME = ""
    #: torch's keyword arguments of this function and their defaults.
    _TORCH_DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        seed: int | np.random.SeedSequence | None = None,
        *,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
        layout: str = "torch",
        stream: str = DEFAULT_STREAM,
        **torch_arguments: Any,
    ) -> None:
        unknown = sorted(set(torch_arguments) - set(self._TORCH_DEFAULTS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) "
                f"{', '.join(map(repr, unknown))}; its torch arguments are "
                f"{', '.join(self._TORCH_DEFAULTS) or 'none'}"
            )
        self._set_torch_arguments({**self._TORCH_DEFAULTS, **torch_arguments})
        scale, mode, distribution = self._PARAMS
        VarianceScaling.__init__(
            self,
            scale,
            mode,
            distribution,
            seed,
            input_axes=input_axes,
            output_axes=output_axes,
            layout=layout,
            stream=stream,
        )

    def _set_torch_arguments(self, arguments: dict[str, Any]) -> None:
        """Check torch's arguments, keep them, and set ``_PARAMS`` for this instance."""
        raise NotImplementedError

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        raise NotImplementedError

    @property
    def torch_arguments(self) -> dict[str, Any]:
        """torch's keyword arguments of this initializer (``a``, ``mode``,
        ``nonlinearity`` or ``gain``), as torch would receive them."""
        return {key: getattr(self, key) for key in self._TORCH_DEFAULTS}

    def plan(
        self,
        shape: Sequence[int],
        dtype: object = None,
        *,
        rows: tuple[int | None, int | None] | None = None,
        fan_shape: Sequence[int] | None = None,
    ) -> SamplePlan:
        """As ``VarianceScaling.plan``; a shape without elements warns as torch does."""
        if 0 in normalize_shape(shape):
            warnings.warn(ZERO_ELEMENT_WARNING, UserWarning, stacklevel=2)
        return super().plan(shape, dtype, rows=rows, fan_shape=fan_shape)

    def _scaling(self, shape: tuple[int, ...], complex_valued: bool = False) -> Scaling:
        """As ``VarianceScaling``'s, with PyTorch's stddev and limit.

        Fans below 1 are floored at 1 (PyTorch divides by zero there). Real
        dtypes and shapes of rank >= 2 only, as ``torch.nn.init`` (a shape
        without elements, which torch leaves alone with a warning, passes).
        """
        if complex_valued:
            raise ValueError(
                "PyTorch presets make real tensors only (torch.nn.init defines no complex "
                "variant). Received: a complex dtype"
            )
        if len(shape) < 2 and math.prod(shape) > 0:
            raise ValueError(f"{_TORCH_RANK_MESSAGE}. Received: shape={shape}")
        base = super()._scaling(shape)
        assert base.fan_in is not None and base.fan_out is not None
        stddev = self._torch_std(max(1, base.fan_in), max(1, base.fan_out))
        limit = math.sqrt(3.0) * stddev if self.distribution == "uniform" else None
        return dataclasses.replace(base, stddev=stddev, limit=limit)

    def get_config(self) -> dict[str, Any]:
        """The plain config, plus ``"preset"``, ``"layout"`` (always given) and the
        torch arguments that are not torch's defaults."""
        config = super().get_config()
        config["preset"] = _preset_key(type(self))
        config["layout"] = self.layout
        for key, default in self._TORCH_DEFAULTS.items():
            if key != "mode" and getattr(self, key) != default:
                config[key] = getattr(self, key)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomInitializer:
        """Accept the preset's own config (``{"seed": ...}`` and torch's arguments) or
        a full one whose scale, mode and distribution match those arguments."""
        config = _config_mapping(config)
        preset = config.pop("preset", None)
        if preset is not None and get_preset(preset) is not cls:
            raise ValueError(f"{cls.__name__} config names another preset: {preset!r}")
        _unknown_keys(
            config,
            [
                "scale",
                "mode",
                "distribution",
                "seed",
                "input_axes",
                "output_axes",
                "layout",
                "stream",
                *cls._TORCH_DEFAULTS,
            ],
        )
        stated = {
            key: config.pop(key) for key in ("scale", "mode", "distribution") if key in config
        }
        if "mode" in stated and "mode" in cls._TORCH_DEFAULTS:
            config["mode"] = stated.pop("mode")
        built = cls(**config)
        for key, given in stated.items():
            expected = getattr(built, key)
            same = (
                _check_distribution(given) == expected
                if key == "distribution"
                else given == expected
            )
            if not same:
                raise ValueError(
                    f"{cls.__name__} has {key}={expected!r}; the config says {given!r}"
                )
        return built

    def keras_config(self) -> dict[str, Any]:
        """Keras' ``VarianceScaling`` form (Keras has no class for PyTorch's presets;
        it computes the stddev its own way, which may differ in the last bit)."""
        return VarianceScaling.keras_config(self)


class _Kaiming(_TorchPreset):
    """``kaiming_*_(w, a, mode, nonlinearity)``: std = gain / sqrt(fan), fan = fan_in
    or fan_out by ``mode``, gain = ``calculate_gain(nonlinearity, a)``."""

    _TORCH_DEFAULTS: ClassVar[dict[str, Any]] = {
        "a": 0,
        "mode": "fan_in",
        "nonlinearity": "leaky_relu",
    }
    _DISTRIBUTION = ""

    def _set_torch_arguments(self, arguments: dict[str, Any]) -> None:
        self.a = _check_negative_slope(arguments["a"])
        mode = arguments["mode"]
        lowered = mode.lower() if isinstance(mode, str) else mode
        if lowered not in ("fan_in", "fan_out"):
            raise ValueError(
                f"Argument `mode` must be fan_in or fan_out (torch.nn.init's kaiming modes). "
                f"Received: mode={mode!r}"
            )
        self.nonlinearity = _check_nonlinearity(arguments["nonlinearity"])
        self._PARAMS = (_gain_squared(self.nonlinearity, self.a), lowered, self._DISTRIBUTION)

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        fan = fan_in if self.mode == "fan_in" else fan_out
        gain = calculate_gain(self.nonlinearity, self.a)
        return gain / math.sqrt(fan)


class KaimingNormal(_Kaiming):
    """PyTorch ``kaiming_normal_(w, a=0, mode="fan_in", nonlinearity="leaky_relu")``:
    an untruncated normal, stddev = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a)
    (sqrt(2) by default)."""

    _DISTRIBUTION = "untruncated_normal"
    _PARAMS = (2.0, "fan_in", "untruncated_normal")


class KaimingUniform(_Kaiming):
    """PyTorch ``kaiming_uniform_(w, a=0, mode="fan_in", nonlinearity="leaky_relu")``:
    U(-limit, limit), limit = sqrt(3) * gain / sqrt(fan). ``nn.Linear``'s and
    ``nn.Conv*``'s default is ``a=sqrt(5)``: limit = 1 / sqrt(fan_in)."""

    _DISTRIBUTION = "uniform"
    _PARAMS = (2.0, "fan_in", "uniform")


class _Xavier(_TorchPreset):
    """``xavier_*_(w, gain)``: std = gain * sqrt(2 / (fan_in + fan_out))."""

    _TORCH_DEFAULTS: ClassVar[dict[str, Any]] = {"gain": 1.0}
    _DISTRIBUTION = ""

    def _set_torch_arguments(self, arguments: dict[str, Any]) -> None:
        self.gain = _check_real(arguments["gain"], "gain", positive=True)
        self._PARAMS = (self.gain**2, "fan_avg", self._DISTRIBUTION)

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        return self.gain * math.sqrt(2.0 / float(fan_in + fan_out))


class XavierNormal(_Xavier):
    """PyTorch ``xavier_normal_(w, gain=1.0)``: an untruncated normal,
    stddev = gain * sqrt(2 / (fan_in + fan_out))."""

    _DISTRIBUTION = "untruncated_normal"
    _PARAMS = (1.0, "fan_avg", "untruncated_normal")


class XavierUniform(_Xavier):
    """PyTorch ``xavier_uniform_(w, gain=1.0)``: U(-limit, limit),
    limit = sqrt(3) * gain * sqrt(2 / (fan_in + fan_out))."""

    _DISTRIBUTION = "uniform"
    _PARAMS = (1.0, "fan_avg", "uniform")


# --- fixed parameters: Keras 3's RandomNormal, TruncatedNormal, RandomUniform ---------


class _Fixed(RandomInitializer):
    """An initializer whose parameters do not depend on the shape (no fans)."""

    uses_fans = False
    #: Keras's argument names, in Keras's order, with Keras's defaults.
    _KERAS_DEFAULTS: ClassVar[dict[str, float]] = {}

    def get_config(self) -> dict[str, Any]:
        """``{"preset", <Keras's arguments>, "seed"}`` plus ``"stream"`` if not vsgen."""
        config: dict[str, Any] = {"preset": _preset_key(type(self))}
        config.update({key: getattr(self, key) for key in self._KERAS_DEFAULTS})
        config["seed"] = self.seed
        if self.stream != DEFAULT_STREAM:
            config["stream"] = self.stream
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomInitializer:
        """Accept ``get_config()`` output or Keras's own config of the class."""
        config = _config_mapping(config)
        preset = config.pop("preset", None)
        if preset is not None and get_preset(preset) is not cls:
            raise ValueError(f"{cls.__name__} config names another initializer: {preset!r}")
        _unknown_keys(config, [*cls._KERAS_DEFAULTS, "seed", "stream"])
        return cls(**config)

    def keras_config(self) -> dict[str, Any]:
        """Keras 3's serialized form: ``{"seed", <Keras's arguments>}``, which
        ``keras.initializers.deserialize`` turns into Keras's own class."""
        config: dict[str, Any] = {"seed": self.seed}
        config.update({key: getattr(self, key) for key in self._KERAS_DEFAULTS})
        return self._keras_form(type(self).__name__, config)

    def _scaling(self, shape: tuple[int, ...], complex_valued: bool = False) -> Scaling:
        if complex_valued:
            raise ValueError(
                f"{type(self).__name__} makes real tensors only (Keras has no complex "
                "initializers). Received: a complex dtype"
            )
        return self._fixed_scaling(shape)

    def _fixed_scaling(self, shape: tuple[int, ...]) -> Scaling:
        raise NotImplementedError


class _MeanStddev(_Fixed):
    """A normal family of Keras 3's: ``mean`` and ``stddev`` (Keras's defaults 0.0 and
    0.05), ``stddev`` the one a fit may raise."""

    _KERAS_DEFAULTS: ClassVar[dict[str, float]] = {"mean": 0.0, "stddev": 0.05}

    def __init__(
        self,
        mean: float = 0.0,
        stddev: float = 0.05,
        seed: int | np.random.SeedSequence | None = None,
        *,
        stream: str = DEFAULT_STREAM,
    ) -> None:
        self.mean = _check_real(mean, "mean")
        self.stddev = _check_real(stddev, "stddev", positive=True)
        self._set_seed(seed, stream)

    def _fit_argument(self) -> tuple[str, object]:
        return "stddev", self.stddev


class RandomNormal(_MeanStddev):
    """Keras 3's ``RandomNormal``: N(mean, stddev**2), untruncated.

    Args:
        mean: the values' mean, a finite float (Keras's default 0.0).
        stddev: their standard deviation, a positive finite float (0.05).
        seed: as for ``VarianceScaling``.
        stream: ``"vsgen"`` (default) or ``"keras"`` (Keras 3's numpy backend, bit
            for bit: ``rng.normal(loc=mean, scale=stddev)`` cast to the dtype).

    complex64/complex128 (mean 0 only) follow ``jax.nn.initializers.normal``:
    a complex normal with E|z|**2 = stddev**2, split evenly between the parts.
    """

    kind = "random_normal"

    def _scaling(self, shape: tuple[int, ...], complex_valued: bool = False) -> Scaling:
        if complex_valued and self.mean != 0.0:
            raise ValueError(
                "RandomNormal makes complex values only with mean 0 (as "
                f"jax.nn.initializers.normal). Received: mean={self.mean!r}"
            )
        return dataclasses.replace(self._fixed_scaling(shape), complex_valued=complex_valued)

    def _fixed_scaling(self, shape: tuple[int, ...]) -> Scaling:
        return _fixed(shape, "untruncated_normal", self.stddev, self.stddev, mean=self.mean)


class TruncatedNormal(_MeanStddev):
    """Keras 3's ``TruncatedNormal``: N(mean, stddev**2) with values more than two
    standard deviations from the mean redrawn.

    ``stddev`` is the normal's before truncation (Keras's meaning): values lie
    in [mean - 2 stddev, mean + 2 stddev] and their own standard deviation is
    ``0.87962566103423978 * stddev``.

    Args:
        mean: a finite float (Keras's default 0.0).
        stddev: a positive finite float (0.05), before truncation.
        seed, stream: as for ``RandomNormal``.
    """

    kind = "truncated_normal"

    def _fixed_scaling(self, shape: tuple[int, ...]) -> Scaling:
        return _fixed(
            shape,
            "truncated_normal",
            self.stddev * TRUNCATED_STD_FACTOR,
            self.stddev,
            mean=self.mean,
        )


class RandomUniform(_Fixed):
    """Keras 3's ``RandomUniform``: U[minval, maxval).

    The vsgen stream draws ``centre + half * u`` with ``u`` uniform in [-1, 1),
    ``half = maxval / 2 - minval / 2`` and ``centre = minval / 2 + maxval / 2``
    (docs/stream-v1.md, section 12), clamped into [minval, maxval) in the
    output type; a symmetric range (-a, a) gives the bytes of a variance-scaling
    uniform with limit a. The stddev of the values is ``(maxval - minval) / sqrt(12)``.

    Args:
        minval: the lower bound, inclusive, a finite float (Keras's default -0.05).
        maxval: the upper bound, exclusive, a finite float above minval (0.05).
        seed, stream: as for ``RandomNormal`` (the keras stream is
            ``rng.uniform(low=minval, high=maxval)``).
    """

    kind = "random_uniform"
    _KERAS_DEFAULTS: ClassVar[dict[str, float]] = {"minval": -0.05, "maxval": 0.05}

    def __init__(
        self,
        minval: float = -0.05,
        maxval: float = 0.05,
        seed: int | np.random.SeedSequence | None = None,
        *,
        stream: str = DEFAULT_STREAM,
    ) -> None:
        self.minval = _check_real(minval, "minval")
        self.maxval = _check_real(maxval, "maxval")
        if not self.maxval > self.minval:
            raise ValueError(
                "Argument `maxval` must be greater than `minval`. Received: "
                f"minval={minval!r}, maxval={maxval!r}"
            )
        self._set_seed(seed, stream)

    def _fit_argument(self) -> tuple[str, object]:
        return "maxval", self.maxval

    def _fixed_scaling(self, shape: tuple[int, ...]) -> Scaling:
        half = self.maxval / 2 - self.minval / 2
        centre = self.minval / 2 + self.maxval / 2
        return _fixed(
            shape,
            "uniform",
            half / math.sqrt(3.0),
            half,
            mean=centre,
            interval=(self.minval, self.maxval),
        )


def _fixed(
    shape: tuple[int, ...],
    distribution: str,
    stddev: float,
    multiplier: float,
    *,
    mean: float,
    interval: tuple[float, float] | None = None,
) -> Scaling:
    """The Scaling of a fixed-parameter initializer: the multiplier is the stddev
    (normal), the pre-truncation stddev (truncated normal) or the half-width (uniform)."""
    return Scaling(
        shape=shape,
        fan_in=None,
        fan_out=None,
        n=None,
        scale=None,
        mode=None,
        distribution=distribution,
        variance=stddev * stddev,
        stddev=stddev,
        pre_truncation_std=multiplier if distribution == "truncated_normal" else None,
        bound=2 * multiplier if distribution == "truncated_normal" else None,
        limit=multiplier if distribution == "uniform" else None,
        mean=mean,
        interval=interval,
    )


#: Keras' presets (channels-last fans, truncated normals), then PyTorch's.
PRESETS: dict[str, type[_Preset]] = {
    "glorot_normal": GlorotNormal,
    "glorot_uniform": GlorotUniform,
    "he_normal": HeNormal,
    "he_uniform": HeUniform,
    "lecun_normal": LecunNormal,
    "lecun_uniform": LecunUniform,
    "kaiming_normal": KaimingNormal,
    "kaiming_uniform": KaimingUniform,
    "xavier_normal": XavierNormal,
    "xavier_uniform": XavierUniform,
}
#: Names of the Keras presets and of PyTorch's, in PRESETS order.
KERAS_PRESETS = tuple(key for key, cls in PRESETS.items() if not issubclass(cls, _TorchPreset))
TORCH_PRESETS = tuple(key for key, cls in PRESETS.items() if issubclass(cls, _TorchPreset))
#: The fixed-parameter initializers by Keras's string identifiers.
FIXED: dict[str, type[_Fixed]] = {
    "random_normal": RandomNormal,
    "truncated_normal": TruncatedNormal,
    "random_uniform": RandomUniform,
}
#: Every initializer a name selects (``--preset``, a spec's string): presets and fixed.
INITIALIZERS: dict[str, type[RandomInitializer]] = {**PRESETS, **FIXED}
#: Other spellings of those names: class names, PyTorch's function names.
PRESET_ALIASES: dict[str, str] = {
    **{cls.__name__: key for key, cls in INITIALIZERS.items()},
    **{f"{key}_": key for key, cls in PRESETS.items() if issubclass(cls, _TorchPreset)},
}
_CLASSES: dict[str, type[RandomInitializer]] = {
    "VarianceScaling": VarianceScaling,
    **{cls.__name__: cls for cls in INITIALIZERS.values()},
}
#: Keras's own aliases, accepted where Keras's forms are (``deserialize``).
_KERAS_ALIASES = {"normal": RandomNormal, "uniform": RandomUniform}


def _preset_key(cls: type[RandomInitializer]) -> str:
    return next(key for key, value in INITIALIZERS.items() if value is cls)


def get_preset(name: str) -> type[RandomInitializer]:
    """The class a name selects: a preset (``"he_normal"``, ``"HeNormal"``,
    ``"he-normal"``, ``"kaiming_normal"``, ``"kaiming_normal_"``...) or a
    fixed-parameter initializer (``"random_normal"``, ``"TruncatedNormal"``,
    ``"random_uniform"``); see ``vsgen.names`` for the spelling rule."""
    key = canonical(name, INITIALIZERS, PRESET_ALIASES, argument="preset")
    return INITIALIZERS[key]


def from_config(config: Mapping[str, Any]) -> RandomInitializer:
    """The initializer a plain config describes: the class its ``"preset"`` names,
    else ``VarianceScaling``."""
    config = _config_mapping(config)
    preset = config.get("preset")
    if preset is None:
        return VarianceScaling.from_config(config)
    if not isinstance(preset, str):
        raise TypeError(f"config field 'preset' must be a name. Received: preset={preset!r}")
    return get_preset(preset).from_config(config)


def deserialize(obj: object) -> RandomInitializer:
    """Build an initializer from any of the accepted config forms.

    * the plain config ``{"scale", "mode", "distribution", "seed", ...}`` (with
      ``"preset"`` for PyTorch's presets and the fixed-parameter initializers);
    * the Keras serialized form ``{"class_name": "VarianceScaling" | "HeNormal"
      | "RandomNormal" | ..., "config": {...}, "module": ..., "registered_name": ...}``
      (Keras's aliases ``"normal"`` and ``"uniform"`` too);
    * a name as a string (``"he_normal"``, ``"GlorotUniform"``, ``"random_normal"``).
    """
    if isinstance(obj, str):
        if obj in _CLASSES:
            return _CLASSES[obj]()
        if obj in _KERAS_ALIASES:
            return _KERAS_ALIASES[obj]()
        return get_preset(obj)()
    if not isinstance(obj, Mapping):
        raise TypeError(
            'config must be a JSON object such as {"scale": 2.0, "mode": "fan_in"} or a '
            f"Keras serialized initializer. Received: {type(obj).__name__}"
        )
    if "class_name" in obj:
        class_name = obj["class_name"]
        cls: type[RandomInitializer] | None = None
        if isinstance(class_name, str):
            # Class names, Keras's snake-case identifiers and its aliases.
            cls = (
                _CLASSES.get(class_name)
                or INITIALIZERS.get(class_name)
                or _KERAS_ALIASES.get(class_name)
                or (VarianceScaling if class_name == "variance_scaling" else None)
            )
        if cls is None:
            raise ValueError(
                f"config class_name must be one of {', '.join(_CLASSES)}. Received: "
                f"class_name={class_name!r}"
            )
        module = obj.get("module", "keras.initializers")
        if module not in ("keras.initializers", "keras.src.initializers", "vsgen", None):
            raise ValueError(f"config module {module!r} is not keras.initializers")
        inner = obj.get("config", {})
        if not isinstance(inner, Mapping):
            raise TypeError(f"config['config'] must be a JSON object. Received: {inner!r}")
        inner = dict(inner)
        # Keras writes these as null when unset; that is our default too.
        for key in ("input_axes", "output_axes"):
            if key in inner and inner[key] is None:
                del inner[key]
        return cls.from_config(inner)
    return from_config(obj)


def loads(text: str | bytes, source: str = "config") -> RandomInitializer:
    """Parse a JSON config (any form ``deserialize`` accepts).

    ``source`` names the document in errors. The text is parsed under
    :mod:`vsgen._limits`' caps: at most ``MAX_CONFIG_BYTES``, nested at
    most ``MAX_NESTING`` levels, no ``NaN``/``Infinity`` or overflowing numbers.
    """
    from vsgen._limits import MAX_CONFIG_BYTES, loads_json

    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source} is larger than {MAX_CONFIG_BYTES} bytes; refusing to parse it")
    try:
        obj = loads_json(text, source)
    except ValueError as error:
        message = str(error).replace(f"{source}: invalid JSON:", f"{source} is not valid JSON:", 1)
        raise ValueError(message) from None
    return deserialize(obj)
