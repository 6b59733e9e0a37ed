"""The one place vsgen opens tensor files it did not just write.

``check``, ``sample --like`` and ``sample --config-from`` read ``.npy``,
``.h5``/``.hdf5``, ``.safetensors`` files, npy directories, Zarr stores and
sharded safetensors through this module, and every such file is treated as hostile:

- **One format sniffer** (:func:`sniff`): the first bytes decide, never the
  suffix; anything but a regular file or a directory (a FIFO, a device, a
  socket) is refused before it is read, so nothing blocks. A directory is a
  Zarr store or sharded safetensors by its contents, else a directory of ``.npy``.
- **One parser per format**, in the format's module: the safetensors header
  (:mod:`vsgen.formats.safetensors`: capped, pre-scanned, every entry checked,
  the regions tiling the data exactly), the HDF5 walker (:mod:`vsgen.formats.h5`:
  hard links only, no external storage or plugins, bounded decompression), the
  NPY header (:mod:`vsgen.formats.npy`: capped, numeric dtypes only), Zarr
  metadata (:mod:`vsgen.formats.zarr`) and the shard index
  (:mod:`vsgen.formats.sharded`).
- **One way to open and read** (:mod:`vsgen.formats.base`):
  :func:`open_regular` and :func:`read_values`, values in bounded chunks in flat
  C order.

Every refusal is an :class:`UnreadableFile` (a ``ValueError``) whose one-line
message starts with the file's path and names the offending field.
"""

from __future__ import annotations

import os
import stat
import threading

import numpy

from vsgen.dtypes import TensorInfo
from vsgen.formats import registry
from vsgen.formats.base import (
    READ_CHUNK,
    Format,
    StoredTensor,
    TensorFile,
    UnreadableFile,
    open_binary,
    open_regular,
    read_values,
)

__all__ = [
    "READ_CHUNK",
    "StoredTensor",
    "TensorFile",
    "UnreadableFile",
    "open_file",
    "open_regular",
    "read_metadata",
    "read_tensor_infos",
    "read_tensor_range",
    "read_values",
    "sniff",
]


def sniff(path: str) -> str:
    """The format of the file or directory ``path``: from a file's first bytes
    (``npy``, ``h5``, ``safetensors``), from a directory's contents (``zarr``,
    ``safetensors-sharded``, else ``npydir``).

    Raises:
        UnreadableFile: missing, not a regular file or directory, or none of those formats.
    """
    return _format_of(path).name


def _format_of(path: str) -> Format | _Remote:
    if "://" in path:
        return _Remote()
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UnreadableFile(f"file not found: {path}") from None
    if stat.S_ISDIR(mode):
        # Stores are known by their contents; any other directory holds .npy files.
        for fmt in registry.formats():
            if fmt.holds(path):
                return fmt
        return registry.get("npydir")
    with open_binary(path) as handle:
        head = handle.read(9)
    for fmt in registry.formats():
        if fmt.sniff(head):
            return fmt
    raise UnreadableFile(
        f"{path}: not a .npy, .h5 or .safetensors file (unrecognised first bytes; "
        "raw files have no header)"
    )


class _Remote:
    """The reader of an object store's URL (:mod:`vsgen.formats.remote`), as a format."""

    name = "remote"

    def open(self, path: str) -> TensorFile:
        from vsgen.formats import remote

        if not remote.is_url(path):
            raise UnreadableFile(f"file not found: {path}")
        return remote.open_file(path)

    def read_metadata(self, path: str) -> dict[str, str]:
        return self.open(path).metadata


def open_file(path: str) -> TensorFile:
    """Read and validate the headers of a tensor file (no values are read).

    Raises:
        UnreadableFile: not a tensor file, or a header vsgen refuses (see the module).
        OSError: the file cannot be read.
    """
    return _format_of(path).open(path)


def read_tensor_infos(path: str) -> list[TensorInfo]:
    """Names, shapes and dtypes of the tensors in a file, reading headers only.

    Reads ``.npy`` (the tensor is named after the file's stem), HDF5 (every
    dataset, in creation order where tracked, else by name), safetensors (in
    header order, which is the writer's tensor order for vsgen's files) and
    npydir directories (by relative path). The format is told from the
    file's first bytes, not its suffix.

    Raises:
        ValueError: not one of those formats, a header vsgen refuses, a
            dtype vsgen does not write, or Fortran order / big-endian data.
        OSError: the file cannot be read.
    """
    infos = []
    for tensor in open_file(path).tensors:
        if tensor.fortran_order:
            raise UnreadableFile(f"{tensor.path!r} is in Fortran order; vsgen writes C order only")
        if tensor.byteorder == ">" and tensor.itemsize > 1:
            raise UnreadableFile(
                f"{tensor.path!r} holds big-endian data; vsgen writes little-endian only"
            )
        try:
            infos.append(TensorInfo(tensor.name, tensor.shape, tensor.numpy_dtype()))
        except ValueError:
            raise UnreadableFile(
                f"{path}: tensor {tensor.name[:200]!r} has an unsupported dtype {tensor.dtype}"
            ) from None
    return infos


def read_metadata(path: str) -> dict[str, str]:
    """File-level metadata: HDF5 root attributes or safetensors ``__metadata__``.

    npy files and npydir directories hold none and give ``{}``. Zarr stores give
    their root's ``vsgen`` attribute, sharded safetensors their shards' provenance.
    """
    return _format_of(path).read_metadata(path)


#: The file :func:`read_tensor_range` opened last, by its signature: a copied tensor
#: is read block by block, and its file's headers (a store's every node, a shard
#: directory's index and shards) are read once, not once per block.
_opened: dict[str, tuple[tuple, TensorFile]] = {}
_opened_lock = threading.Lock()


def _signature(path: str) -> tuple:
    """What changes when a file (or a store's root document) changes."""
    signature = []
    for part in (path, *(os.path.join(path, name) for name in _ROOT_DOCUMENTS)):
        try:
            info = os.lstat(part) if part != path else os.stat(part)
        except OSError:
            continue
        signature.append((part, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(signature)


#: The documents at a store's root whose change means the store changed.
_ROOT_DOCUMENTS = ("zarr.json", "model.safetensors.index.json")


def _open_cached(path: str) -> TensorFile:
    signature = _signature(path)
    with _opened_lock:
        cached = _opened.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    tensor_file = open_file(path)
    with _opened_lock:
        _opened.clear()
        _opened[path] = (signature, tensor_file)
    return tensor_file


def read_tensor_range(path: str, name: str, start: int, stop: int) -> numpy.ndarray:
    """Flat C-order values ``[start, stop)`` of tensor ``name``, in its native-order dtype.

    Goes through :func:`open_file` (once for consecutive calls on an unchanged file),
    so every check of this module applies. npy and safetensors values are read at
    their byte offset (only ``stop - start`` values); Zarr arrays chunked in whole
    rows from the chunk holding ``start``; HDF5 values are read in order up to
    ``stop`` through :func:`read_values`, so copy whole tensors with that instead.

    Raises:
        UnreadableFile: no such tensor, a range outside it, big-endian or
            Fortran-order data, or anything :func:`open_file` refuses.
    """
    tensor_file = _open_cached(path)
    found = [tensor for tensor in tensor_file.tensors if tensor.name == name]
    if not found:
        raise UnreadableFile(f"{path} has no readable tensor {name!r}")
    tensor = found[0]
    if tensor.byteorder == ">" and tensor.itemsize > 1:
        raise UnreadableFile(f"{tensor.path}: tensor {name!r} holds big-endian data")
    if tensor.fortran_order and len(tensor.shape) > 1:
        raise UnreadableFile(f"{tensor.path}: tensor {name!r} is in Fortran order")
    if not 0 <= start <= stop <= tensor.size:
        raise UnreadableFile(
            f"{path}: range [{start}, {stop}) is outside tensor {name!r} of {tensor.size} values"
        )
    native = tensor.numpy_dtype()
    pieces: list[numpy.ndarray] = []
    if start == stop:
        return numpy.empty(0, dtype=native)
    if tensor.offset is not None:
        part = tensor._replace(
            shape=(stop - start,), offset=tensor.offset + start * tensor.itemsize
        )
        pieces.extend(read_values(part))
    else:
        position = 0
        values = read_values(tensor)
        values_from = getattr(tensor.reader, "values_from", None)
        if values_from is not None and getattr(tensor.source, "in_rows", False):
            values, position = values_from(tensor, start), start
        for piece in values:
            low, high = max(start, position), min(stop, position + piece.size)
            if low < high:
                pieces.append(piece[low - position : high - position])
            position += piece.size
            if position >= stop:
                break
    return numpy.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()
