"""The floating-point output types vsgen produces, their working precision, and
the tensors a file holds (:class:`TensorInfo`: a name, a shape and a dtype).

float16, bfloat16 (via ``ml_dtypes``, imported only when asked for), float32
(the default, as Keras' ``floatx``), float64, and complex64/complex128 (JAX's
complex variance scaling; the vsgen stream only). Integer, bool and unknown
types are refused: an initializer for integer weights makes no sense (Keras 3
silently returns integers; TF1 raises, and so does vsgen). A file may also hold
integer and bool tensors that a model copies (:data:`COPY_DTYPE_NAMES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vsgen.names import spelling

DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
COMPLEX_DTYPE_NAMES = ("complex64", "complex128")
DEFAULT_DTYPE = "float32"

#: Dtypes a file may hold besides the floating ones vsgen generates.
COPY_DTYPE_NAMES = (
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
)

#: Other names for the output types (matched by ``vsgen.names.spelling``).
DTYPE_ALIASES = {
    "half": "float16",
    "f16": "float16",
    "fp16": "float16",
    "bf16": "bfloat16",
    "single": "float32",
    "float": "float32",
    "f32": "float32",
    "fp32": "float32",
    "double": "float64",
    "f64": "float64",
    "fp64": "float64",
    "c64": "complex64",
    "c128": "complex128",
    "cfloat": "complex64",
    "cdouble": "complex128",
}


def bfloat16() -> np.dtype:
    """NumPy dtype of bfloat16 (1 sign, 8 exponent, 7 mantissa bits), from ml_dtypes."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def resolve_dtype(dtype: object = None) -> np.dtype:
    """Return the NumPy dtype for ``dtype`` (None means float32), or raise.

    Accepts names (``"float32"``, ``"bfloat16"``, ``"fp16"``...), NumPy dtypes
    and scalar types, ``ml_dtypes.bfloat16``, and objects with a ``name``
    attribute naming one of those (e.g. ``torch.float16``'s string form).
    """
    if dtype is None:
        return np.dtype(DEFAULT_DTYPE)
    name = dtype
    if not isinstance(dtype, str):
        name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
        if not isinstance(name, str):
            name = str(dtype)
    key = spelling(str(name)).removeprefix("torch.").removeprefix("numpy.")
    key = DTYPE_ALIASES.get(key, key)
    if key == "bfloat16":
        return bfloat16()
    if key in ("float16", "float32", "float64", *COMPLEX_DTYPE_NAMES):
        return np.dtype(key)
    raise ValueError(
        f"Argument `dtype` must be a floating or complex type, one of {', '.join(DTYPE_NAMES)}. "
        f"Received: dtype={dtype!r}"
    )


def dtype_name(dtype: np.dtype) -> str:
    """The canonical name (one of ``DTYPE_NAMES``) of a resolved dtype."""
    return np.dtype(dtype).name


def real_dtype(dtype: np.dtype) -> np.dtype:
    """The type of each part: float32 for complex64, float64 for complex128,
    ``dtype`` itself for real types."""
    dtype = np.dtype(dtype)
    return np.dtype(f"float{dtype.itemsize * 4}") if dtype.kind == "c" else dtype


def working_dtype(dtype: np.dtype) -> np.dtype:
    """Precision the ``vsgen`` stream computes in: float64 for float64 (and
    complex128) outputs, float32 for every output (part) of 32 bits or fewer."""
    part = real_dtype(dtype)
    return np.dtype(np.float64) if part.itemsize == 8 else np.dtype(np.float32)


def _largest_at_most(value: float, dtype: np.dtype, strictly: bool) -> float:
    """The largest ``dtype`` value ``<= value`` (``< value`` if ``strictly``),
    for a finite ``value`` > 0 and a 16-bit float type."""
    nearest = np.array(value, dtype=np.float64).astype(dtype)
    bits = nearest.view(np.uint16)
    while float(nearest) > value or (strictly and float(nearest) == value):
        # For positive finite 16-bit floats, one less in the bit pattern is the
        # next smaller value.
        bits = bits - np.uint16(1)
        nearest = bits.view(dtype)
    return float(nearest)


def narrow_bounds(
    dtype: np.dtype, distribution: str, multiplier: float
) -> tuple[float, float] | None:
    """The interval that rounded float16/bfloat16 values are clamped to.

    Rounding to a 16-bit type can carry a value onto or past the bound it was
    drawn inside (e.g. a uniform value just below ``limit`` rounds to
    ``limit`` or above). The documented ranges are ``[-2s, 2s]`` for
    truncated_normal (``multiplier`` = s) and ``[-limit, limit)`` for uniform
    (``multiplier`` = limit); this returns ``(low, high)``: the representable
    values closest to those ends, inside them. None for other dtypes (their
    rounding is left alone so their bytes never change) and for
    untruncated_normal (no bound).
    """
    dtype = np.dtype(dtype)
    if dtype.itemsize != 2 or distribution not in ("truncated_normal", "uniform"):
        return None
    if distribution == "truncated_normal":
        bound = 2.0 * multiplier
        high = _largest_at_most(bound, dtype, strictly=False)
        return -high, high
    high = _largest_at_most(multiplier, dtype, strictly=True)
    low = -_largest_at_most(multiplier, dtype, strictly=False)
    return low, high


def largest_at_most(value: float, dtype: np.dtype, strictly: bool = False) -> float:
    """The largest finite ``dtype`` value ``<= value`` (``< value`` if ``strictly``),
    for a finite ``value`` of either sign and any real output type."""
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore"):
        nearest = np.array(value, dtype=np.float64).astype(dtype)
    down = np.array(-np.inf, dtype=dtype)
    while (
        not np.isfinite(nearest) or float(nearest) > value or (strictly and float(nearest) == value)
    ):
        if np.isneginf(nearest) or not np.isfinite(value):
            raise ValueError(f"no finite {dtype.name} value is at most {value!r}")
        nearest = np.nextafter(nearest, down)
    return float(nearest)


def interval_bounds(
    dtype: np.dtype, low: float, high: float, open_high: bool
) -> tuple[float, float]:
    """The ``dtype`` values closest to the ends of ``[low, high]`` (``[low, high)``
    if ``open_high``) and inside it: ``(smallest >= low, largest <= high)`` (``<``).

    Clamping a value of the working precision to these and then rounding it to
    ``dtype`` gives the same bytes as rounding first: rounding is monotone and
    keeps values of ``dtype``. The interval may hold no ``dtype`` value at all:
    then the first is larger than the second.
    """
    return -largest_at_most(-low, dtype), largest_at_most(high, dtype, strictly=open_high)


def round_into(out: np.ndarray, values: np.ndarray, bounds: tuple[float, float] | None) -> None:
    """``out[...] = values`` rounded to ``out.dtype``, then clamped to ``bounds``.

    ``bounds`` are values of ``out.dtype`` (``narrow_bounds``), so ``values``
    is clamped first, in place: rounding is monotone and keeps those values,
    hence clamp-then-round gives round-then-clamp's bytes, and clamping float32
    is vectorised where NumPy clamps float16 one value at a time.
    """
    if bounds is not None:
        np.clip(values, bounds[0], bounds[1], out=values)
    np.copyto(out, values, casting="unsafe")


def normalize_dtype(dtype: object) -> np.dtype:
    """The canonical (native-order) dtype of a tensor a file may hold: a floating
    dtype vsgen writes (:func:`vsgen.dtypes.resolve_dtype`) or one of
    :data:`COPY_DTYPE_NAMES`; files get little-endian bytes."""
    # ml_dtypes is imported only when bfloat16 is asked for (start-up cost).
    try:
        name: object = np.dtype(dtype).name  # type: ignore[call-overload]
    except TypeError:
        name = dtype  # e.g. "bfloat16" before ml_dtypes is imported
    if name in COPY_DTYPE_NAMES:
        return np.dtype(str(name))
    try:
        resolved = resolve_dtype(name)
    except ValueError:
        raise ValueError(
            f"Argument `dtype` must be one of {', '.join(DTYPE_NAMES + COPY_DTYPE_NAMES)}. "
            f"Received: dtype={dtype!r}"
        ) from None
    assert resolved.name in DTYPE_NAMES
    return resolved


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one tensor of an output file.

    ``dtype`` is normalised to one of numpy float16, float32, float64,
    complex64, complex128 or ``ml_dtypes.bfloat16`` (what vsgen generates), or
    to one of the integer and bool types of :data:`COPY_DTYPE_NAMES` (tensors
    copied from another file); ``shape`` to a tuple of non-negative ints
    (``()`` is a scalar, a 0 anywhere makes an empty tensor).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "\x00" in self.name:
            raise ValueError(
                "Argument `name` must be a non-empty string without NUL characters. "
                f"Received: name={self.name!r}"
            )
        try:
            dims = tuple(self.shape)
        except TypeError:
            dims = None
        if dims is None or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims
        ):
            raise ValueError(
                "Argument `shape` must be a sequence of non-negative integers. "
                f"Received: shape={self.shape!r}"
            )
        object.__setattr__(self, "shape", tuple(int(d) for d in dims))
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))

    @property
    def size(self) -> int:
        """Number of values (product of the shape; 1 for a scalar)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the values in bytes."""
        return self.size * self.dtype.itemsize
