"""The VarianceScaling initializer and its presets: what the numbers mean.

No I/O and no printing here; files are written by ``vsgen.formats`` and the
command line lives in ``vsgen.cli``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

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

    ``n`` is fan_in, fan_out, (fan_in + fan_out) / 2 or sqrt(fan_in * fan_out)
    by mode, floored at 1;
    ``variance = scale / n``; ``stddev = sqrt(variance)``. For truncated_normal
    the pre-truncation stddev is ``s = stddev / 0.87962566103423978`` and values
    lie in ``[-2s, 2s]``; for uniform ``limit = sqrt(3 * variance)`` and values
    lie in ``[-limit, limit)``.

    Complex dtypes follow JAX (variance split evenly between real and
    imaginary parts): truncated_normal is ``s * w`` with ``w`` a complex
    standard normal (E|w|**2 = 1) conditioned on ``|w| <= 2`` and
    ``s = stddev / 0.95311164380491208``, so ``|z| <= bound = 2s``;
    untruncated_normal is ``stddev * w``; uniform is uniform in the disk of
    radius ``limit = sqrt(2 * variance)``.
    """

    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    n: float
    scale: float
    mode: str
    distribution: str
    variance: float
    stddev: float
    pre_truncation_std: float | None
    bound: float | None
    limit: float | None
    #: Complex outputs (complex64/complex128): ``bound`` and ``limit`` bound |z|.
    complex_valued: bool = False

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

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types; keys as printed by ``vsgen describe --json``."""
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


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(
            f"Argument `scale` must be a positive finite float. Received: scale={scale!r}"
        )
    try:
        value = float(scale)
    except OverflowError:  # an integer such as 10**400
        value = math.inf
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"Argument `scale` must be a positive finite float. Received: scale={scale!r}"
        )
    return value


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


class VarianceScaling:
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
        self._stream = get_stream(stream)
        self.layout = check_layout(layout)
        self.input_axes = _check_axes(input_axes, "input_axes")
        self.output_axes = _check_axes(output_axes, "output_axes")
        check_axes_pair(input_axes, output_axes)
        self.in_axis = _check_jax_axis(in_axis, "in_axis")
        self.out_axis = _check_jax_axis(out_axis, "out_axis")
        checked_batch = _check_jax_axis(batch_axis, "batch_axis")
        self.batch_axis: int | tuple[int, ...] = () if checked_batch is None else checked_batch
        check_jax_axes_alone(input_axes, output_axes, self.in_axis, self.out_axis, self.batch_axis)
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
        _check_fits_dtype(scaling, resolved)
        draw = Draw(self.distribution, scaling.multiplier, self._next_seed(), resolved)
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
    def from_config(cls, config: Mapping[str, Any]) -> VarianceScaling:
        """Rebuild an initializer from ``get_config()`` output (unknown keys are refused)."""
        if not isinstance(config, Mapping):
            raise TypeError(
                f"Argument `config` must be a JSON object (a dict). Received: config={config!r}"
            )
        if config.get("preset") is not None and cls is VarianceScaling:
            # PyTorch's presets record their name: their stddev is computed their way.
            return get_preset(config["preset"]).from_config(config)
        allowed = set(_CONFIG_KEYS) - {"preset"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ValueError(
                f"Argument `config` has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_CONFIG_KEYS)}"
            )
        return cls(**dict(config))

    def keras_config(self) -> dict[str, Any]:
        """The Keras 3 serialized form, accepted by ``keras.initializers.deserialize``.

        Only keys Keras knows are emitted; the stream is not part of it (Keras
        always draws as vsgen's ``keras`` stream does). The ``torch`` layout has
        no rank-free Keras equivalent and is refused: give explicit axes instead.
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
        return {
            "module": "keras.initializers",
            "class_name": "VarianceScaling",
            "config": config,
            "registered_name": None,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VarianceScaling):
            return NotImplemented
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


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


def _check_fits_dtype(scaling: Scaling, dtype: np.dtype) -> None:
    """Refuse a scale whose numbers ``dtype`` cannot represent.

    Overflow: the largest magnitude (the bound 2s, the limit, or for the
    untruncated normal 10 stddevs) must be finite in double precision and
    in ``dtype``. Underflow: the stddev must be at least the smallest normal
    number of ``dtype``, or the values would be subnormal (few significant
    bits) or zero.
    """
    name = np.dtype(dtype).name
    if scaling.distribution == "untruncated_normal":
        reach = _NORMAL_REACH * scaling.stddev
    else:
        reach = scaling.bound if scaling.bound is not None else scaling.multiplier
    received = f"Received: scale={scaling.scale!r}, dtype={name}"
    largest = _DTYPE_MAX[name]
    if not math.isfinite(reach) or reach > largest:
        raise ValueError(
            f"Argument `scale` is too large for `dtype` {name}: values would reach "
            f"{reach:.4g}, beyond its largest finite value {largest:.4g}. {received}"
        )
    tiny = _DTYPE_TINY[name]
    # The variance is a double too; a subnormal one has lost its precision.
    if not (scaling.stddev >= tiny and scaling.variance >= sys.float_info.min):
        raise ValueError(
            f"Argument `scale` is too small for `dtype` {name}: the stddev "
            f"{scaling.stddev:.4g} is below its smallest normal number {tiny:.4g}, so "
            f"values would be subnormal or zero. {received}"
        )


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
    def from_config(cls, config: Mapping[str, Any]) -> VarianceScaling:
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
        config = {"seed": self.seed}
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


class _TorchPreset(_Preset):
    """A ``torch.nn.init`` function with its default arguments, bit for bit.

    PyTorch computes the parameters in its own order (``gain / sqrt(fan)``,
    then ``sqrt(3) * std``), which can differ from ``sqrt(scale / n)`` in the
    last bit; these presets compute them as PyTorch does, so ``stddev`` and
    ``limit`` are the very doubles ``torch.nn.init`` uses. The layout is
    PyTorch's ``(out, in, *kernel)`` unless another is given. Their configs
    carry ``"preset"`` so that a file's record rebuilds the same numbers.
    """

    _TORCH_NAME = ""

    def __init__(
        self,
        seed: int | np.random.SeedSequence | None = None,
        *,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
        layout: str = "torch",
        stream: str = DEFAULT_STREAM,
    ) -> None:
        super().__init__(
            seed, input_axes=input_axes, output_axes=output_axes, layout=layout, stream=stream
        )

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        raise NotImplementedError

    def scaling(self, shape: Sequence[int], dtype: object = None) -> Scaling:
        """As ``VarianceScaling.scaling``, with PyTorch's stddev and limit.

        Fans below 1 are floored at 1 (PyTorch divides by zero there). Real
        dtypes only: ``torch.nn.init`` defines no complex variant.
        """
        if dtype is not None and resolve_dtype(dtype).kind == "c":
            raise ValueError(f"PyTorch presets make real tensors only. Received: dtype={dtype!r}")
        base = super().scaling(shape)
        stddev = self._torch_std(max(1, base.fan_in), max(1, base.fan_out))
        limit = math.sqrt(3.0) * stddev if self.distribution == "uniform" else None
        return dataclasses.replace(base, stddev=stddev, limit=limit)

    def get_config(self) -> dict[str, Any]:
        """The plain config, plus ``"preset"`` and ``"layout"`` (always given)."""
        config = super().get_config()
        config["preset"] = _preset_key(type(self))
        config["layout"] = self.layout
        return config

    def keras_config(self) -> dict[str, Any]:
        """Keras' ``VarianceScaling`` form (Keras has no class for PyTorch's presets;
        it computes the stddev its own way, which may differ in the last bit)."""
        return VarianceScaling.keras_config(self)


class KaimingNormal(_TorchPreset):
    """PyTorch ``kaiming_normal_`` defaults (a=0, mode fan_in, leaky_relu): an
    untruncated normal, stddev = gain / sqrt(fan_in), gain = sqrt(2)."""

    _PARAMS = (2.0, "fan_in", "untruncated_normal")

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        gain = math.sqrt(2.0 / (1 + 0**2))  # calculate_gain("leaky_relu", 0)
        return gain / math.sqrt(fan_in)


class KaimingUniform(_TorchPreset):
    """PyTorch ``kaiming_uniform_`` defaults: U(-limit, limit),
    limit = sqrt(3) * gain / sqrt(fan_in), gain = sqrt(2)."""

    _PARAMS = (2.0, "fan_in", "uniform")

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        gain = math.sqrt(2.0 / (1 + 0**2))
        return gain / math.sqrt(fan_in)


class XavierNormal(_TorchPreset):
    """PyTorch ``xavier_normal_`` (gain 1): an untruncated normal,
    stddev = sqrt(2 / (fan_in + fan_out))."""

    _PARAMS = (1.0, "fan_avg", "untruncated_normal")

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        return 1.0 * math.sqrt(2.0 / float(fan_in + fan_out))


class XavierUniform(_TorchPreset):
    """PyTorch ``xavier_uniform_`` (gain 1): U(-limit, limit),
    limit = sqrt(3) * sqrt(2 / (fan_in + fan_out))."""

    _PARAMS = (1.0, "fan_avg", "uniform")

    def _torch_std(self, fan_in: int, fan_out: int) -> float:
        return 1.0 * math.sqrt(2.0 / float(fan_in + fan_out))


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
#: Other spellings of preset names: class names, PyTorch's function names.
PRESET_ALIASES: dict[str, str] = {
    **{cls.__name__: key for key, cls in PRESETS.items()},
    **{f"{key}_": key for key, cls in PRESETS.items() if issubclass(cls, _TorchPreset)},
}
_CLASSES: dict[str, type[VarianceScaling]] = {
    "VarianceScaling": VarianceScaling,
    **{cls.__name__: cls for cls in PRESETS.values()},
}


def _preset_key(cls: type[VarianceScaling]) -> str:
    return next(key for key, value in PRESETS.items() if value is cls)


def get_preset(name: str) -> type[_Preset]:
    """The preset class for a name: ``"he_normal"``, ``"HeNormal"``, ``"he-normal"``,
    ``"kaiming_normal"``, ``"kaiming_normal_"``... (see ``vsgen.names``)."""
    key = canonical(name, PRESETS, PRESET_ALIASES, argument="preset")
    return PRESETS[key]


def deserialize(obj: object) -> VarianceScaling:
    """Build an initializer from any of the accepted config forms.

    * the plain config ``{"scale", "mode", "distribution", "seed", ...}``;
    * the Keras serialized form ``{"class_name": "VarianceScaling" | "HeNormal"
      | ..., "config": {...}, "module": ..., "registered_name": ...}``;
    * a preset or class name as a string (``"he_normal"``, ``"GlorotUniform"``).
    """
    if isinstance(obj, str):
        if obj in _CLASSES:
            return _CLASSES[obj]()
        return get_preset(obj)()
    if not isinstance(obj, Mapping):
        raise TypeError(
            'config must be a JSON object such as {"scale": 2.0, "mode": "fan_in"} or a '
            f"Keras serialized initializer. Received: {type(obj).__name__}"
        )
    if "class_name" in obj:
        class_name = obj["class_name"]
        cls = _CLASSES.get(class_name) if isinstance(class_name, str) else None
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
    return VarianceScaling.from_config(obj)


def loads(text: str | bytes, source: str = "config") -> VarianceScaling:
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
