"""Tensor files: one module per format, the writers and the hostile-file reader.

Every format stores values little-endian in C (row-major) order. Each has its
module, with its writer and reader halves (its docstring gives the byte layout):
:mod:`~vsgen.formats.npy` (one tensor, the NPY header), :mod:`~vsgen.formats.h5`,
:mod:`~vsgen.formats.safetensors`, :mod:`~vsgen.formats.raw` (bare values),
:mod:`~vsgen.formats.npydir` (a directory of ``.npy`` files),
:mod:`~vsgen.formats.zarr` (a Zarr v3 store) and :mod:`~vsgen.formats.sharded`
(sharded safetensors in the Hugging Face layout). :mod:`~vsgen.formats.registry`
knows them all and chooses one for a target (:func:`resolve_format`); what they
share is in :mod:`~vsgen.formats.base`.

Writing: :func:`open_output` streams every format but Zarr and sharded
safetensors (:data:`FORMATS`; :mod:`~vsgen.formats.output`);
:mod:`~vsgen.formats.parallel` lays any format out for block writers
(:mod:`vsgen.blockwrite`). Both share one life cycle
(:mod:`~vsgen.formats.atomic`): the target is checked first, the output is
written to a hidden temporary beside it (``.<target>.vsgen-tmp-<random>``),
flushed to disk and renamed into place by ``commit``; an error or interrupt
removes the temporary and leaves any existing target untouched. ``target == "-"``
streams NPY (or raw) bytes to standard output, where no atomicity is possible.
bfloat16 (``ml_dtypes.bfloat16``) is stored by ``safetensors``,
``safetensors-sharded``, ``zarr`` and ``raw`` only; float16, float32 and float64
by every format. Zarr stores and sharded safetensors also go to object stores
(fsspec URLs: :mod:`vsgen.formats.remote` reads them, :mod:`vsgen.objectstore`
writes them).

Reading: :mod:`~vsgen.formats.readers`, the one place that opens files vsgen did
not just write (:func:`read_tensor_infos`, :func:`read_metadata`).
"""

from typing import TYPE_CHECKING, Any

from vsgen.dtypes import TensorInfo
from vsgen.formats.output import Output, open_output
from vsgen.formats.pipeline import write_chunks
from vsgen.formats.registry import resolve_format

__all__ = [
    "FORMATS",
    "METADATA_FORMATS",
    "PARALLEL_ONLY_FORMATS",
    "Output",
    "TensorInfo",
    "open_output",
    "read_metadata",
    "read_tensor_infos",
    "resolve_format",
    "write_chunks",
]

if TYPE_CHECKING:
    from vsgen.formats.readers import read_metadata, read_tensor_infos
    from vsgen.formats.registry import FORMATS, METADATA_FORMATS, PARALLEL_ONLY_FORMATS


def __getattr__(name: str) -> Any:
    # Reading needs the reader and every format's module (`check`, `--like`,
    # `--config-from`), and so do the lists of format names; a plain
    # `vsgen sample` of a .npy file loads the NPY module alone.
    if name in ("read_metadata", "read_tensor_infos"):
        from vsgen.formats import readers

        return getattr(readers, name)
    if name in ("FORMATS", "METADATA_FORMATS", "PARALLEL_ONLY_FORMATS"):
        from vsgen.formats import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
