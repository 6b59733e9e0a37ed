"""The floating-point output types vsgen produces, and their working precision.

float16, bfloat16 (via ``ml_dtypes``, imported only when asked for), float32
(the default, as Keras' ``floatx``), float64, and complex64/complex128 (JAX's
complex variance scaling; the vsgen stream only). Integer, bool and unknown
types are refused: an initializer for integer weights makes no sense (Keras 3
silently returns integers; TF1 raises, and so does vsgen).
"""

from __future__ import annotations

import numpy as np

DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
COMPLEX_DTYPE_NAMES = ("complex64", "complex128")
DEFAULT_DTYPE = "float32"

_ALIASES = {
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
    key = str(name).strip().lower().removeprefix("torch.").removeprefix("numpy.")
    key = _ALIASES.get(key, key)
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
