"""Tensor files: streaming, atomic, bounded-memory writers and header readers.

Every format stores values little-endian in C (row-major) order:

- ``npy``: one tensor; the standard NPY header (version 1.0, or 2.0 when the
  header needs more than 64 KiB) then the raw values. ``numpy.load`` reads it,
  with ``mmap_mode`` too. No metadata.
- ``h5`` (``.h5`` / ``.hdf5``): one contiguous, unfiltered dataset per tensor,
  named after it (``/`` in a name makes groups). ``metadata`` becomes string
  attributes of the file, stored once; ``tensor_metadata[name]`` becomes
  attributes of that tensor's dataset only (so a file grows linearly with
  its tensors).
- ``safetensors``: an 8-byte little-endian header length N, N bytes of JSON
  header padded with spaces to a multiple of 8, then the data. The header
  holds ``__metadata__`` (str -> str) and, per tensor, ``dtype`` (F16, BF16,
  F32, F64), ``shape`` and ``data_offsets`` ``[begin, end)`` relative to the
  data start. Readers require the data regions to tile the buffer without
  gaps or overlaps, in any header order. Tensors are laid out by element size,
  largest first, and otherwise in the caller's order, so that every tensor
  starts at an offset aligned to its element size (zero-copy loaders such as
  ``safetensors.torch`` rely on that).
- ``raw``: the bare values with no header; several tensors are concatenated
  in the caller's order. No metadata.
- ``npydir``: a directory holding one ``<name>.npy`` per tensor (``/`` in a
  name makes subdirectories). No metadata.
- ``zarr`` (``.zarr``): a Zarr v3 store of uncompressed chunks, provenance in
  attributes (:mod:`vsgen.formats.zarr_format`).
- ``safetensors-sharded``: a directory of ``model-0000K-of-0000N.safetensors``
  shards and ``model.safetensors.index.json`` (:mod:`vsgen.formats.sharded`).

The last two are written block by block, by many writers at once, through
:mod:`vsgen.formats.parallel` (which writes every other file format too); the
others also stream through :func:`open_output`.

bfloat16 (``ml_dtypes.bfloat16``) is stored by ``safetensors``,
``safetensors-sharded`` and ``raw`` only; float16, float32 and float64 by every
format.

Files are written to a hidden temporary beside the target
(``.<target>.vsgen-tmp-<random>``), flushed to disk and renamed into place by
``Output.commit``; an error or interrupt removes the temporary and leaves any
existing target untouched. ``target == "-"`` streams NPY (or raw) bytes to
standard output, where no atomicity is possible.
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
