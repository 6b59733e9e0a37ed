"""bfloat16 for zarr-python: the ``bfloat16`` data type of vsgen's Zarr stores.

Zarr v3's core data types have no bfloat16; the zarr-extensions registry names one,
``bfloat16`` (2 bytes: the sign, exponent and top 7 mantissa bits of a float32;
little-endian through the ``bytes`` codec; fill values as JSON numbers). vsgen
writes it (:mod:`vsgen.formats.zarr`) and reads it with its own reader.
zarr-python 3.1 reads and writes it through this class, a data type of its
extension point (``zarr.core.dtype``), once :func:`register` has run in the
process; ``zarr.open_array`` then gives ``ml_dtypes.bfloat16`` arrays. vsgen's
package metadata also declares the class under the entry-point group
``zarr.data_type``, which zarr documents for this; zarr 3.1.6 collects such entry
points but never loads them, so for now :func:`register` is needed.

Importing this module imports zarr; nothing else of vsgen imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

import ml_dtypes
import numpy
from zarr.core.dtype import data_type_registry
from zarr.core.dtype.common import DataTypeValidationError
from zarr.core.dtype.npy.float import BaseFloat

__all__ = ["BFloat16", "register"]

_BFLOAT16 = numpy.dtype(ml_dtypes.bfloat16)


@dataclass(frozen=True, kw_only=True)
class BFloat16(BaseFloat):
    """The Zarr v3 data type ``bfloat16`` (``ml_dtypes.bfloat16`` in NumPy)."""

    dtype_cls: ClassVar[Any] = type(_BFLOAT16)
    _zarr_v3_name: ClassVar[str] = "bfloat16"
    # Zarr v2 has no name for it.
    _zarr_v2_names: ClassVar[tuple[str, ...]] = ()

    @property
    def item_size(self) -> int:
        return 2

    @classmethod
    def _check_native_dtype(cls, dtype: numpy.dtype) -> TypeGuard[Any]:
        return bool(dtype == _BFLOAT16)

    @classmethod
    def from_native_dtype(cls, dtype: Any) -> BFloat16:
        if cls._check_native_dtype(dtype):
            # A 2-byte word; the bytes codec stores it little-endian.
            return cls(endianness="little")
        raise DataTypeValidationError(f"Invalid data type: {dtype}. Expected bfloat16")

    def to_native_dtype(self) -> Any:
        # ml_dtypes' bfloat16 has no byte-order variants: the codec swaps bytes.
        return _BFLOAT16


def register() -> None:
    """Make zarr-python know ``bfloat16`` in this process (what the entry point does)."""
    data_type_registry.register(BFloat16._zarr_v3_name, BFloat16)
