"""The one place vsgen opens tensor files it did not just write.

``check``, ``sample --like`` and ``sample --config-from`` read ``.npy``,
``.h5``/``.hdf5``, ``.safetensors`` files and npy directories through this
module, and every such file is treated as hostile:

- **One format sniffer** (:func:`sniff`): the first bytes decide, never the
  suffix; anything but a regular file or a directory (a FIFO, a device, a
  socket) is refused before it is read, so nothing blocks.
- **One safetensors header parser**: the 8-byte length is capped at the
  format's own 100,000,000 bytes and must fit the file; the JSON is
  pre-scanned for size and depth before it is parsed
  (:mod:`vsgen._limits`); every entry needs a known ``dtype``, a
  ``shape`` of non-negative integers and ``data_offsets`` of two integers
  ``0 <= begin <= end`` whose length matches the shape; the regions must
  tile the data buffer exactly (no gap, no overlap, nothing after the last).
- **One HDF5 walker**: objects are reached through hard links only, each
  object once by its address (hard-link cycles and diamonds cost one visit),
  with a cap on links and objects. External links, user-defined links,
  datasets with external raw storage and virtual datasets are refused (they
  would make HDF5 open other files); soft links are aliases of objects
  already reached and are not listed. Before values are read, a dataset's
  storage must be allocated (no iterating 2**40 fill values), only
  HDF5's own filters are accepted (no plugin is loaded), a chunk may hold at
  most :data:`H5_MAX_CHUNK_BYTES` once decompressed, and a filtered dataset
  at most :data:`H5_MAX_EXPANSION` times its stored bytes.
- **One NPY header reader**: the header length is capped, a truncated
  header is a clean error, and only numeric dtypes are accepted (never
  objects, so nothing is unpickled).

Values are read in bounded chunks (:func:`read_values`), in flat C order.
Every refusal is a :class:`UnreadableFile` (a ``ValueError``) whose one-line
message starts with the file's path and names the offending field.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy

from vsgen._limits import (
    MAX_METADATA_BYTES,
    MAX_RANK,
    MAX_TENSORS,
    SAFETENSORS_MAX_HEADER,
    loads_json,
)
from vsgen.dtypes import TensorInfo
from vsgen.formats.atomic import describe_file_kind

_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

#: Largest NPY header accepted (numpy's own reader refuses more than 10,000
#: bytes by default; vsgen writes a few hundred).
NPY_MAX_HEADER = 100_000
#: Most links an HDF5 walk examines and most objects it visits.
H5_MAX_LINKS = 1 << 17
H5_MAX_OBJECTS = 1 << 16
#: Most root attributes read as metadata.
H5_MAX_ATTRIBUTES = 4096
#: Largest decompressed HDF5 chunk read (a chunk is inflated whole).
H5_MAX_CHUNK_BYTES = 16 << 20
#: Largest chunk cache used to read a chunked dataset in C order (one row of
#: chunks must stay cached, or each chunk is inflated once per row read).
H5_MAX_CACHE_BYTES = 64 << 20
#: A filtered dataset may hold at most this many times its stored bytes. Float
#: weights compress by 2x at most; deflate reaches about 1032:1 only on
#: constant data, which is how a 16 MB file can make a reader inflate 16 GiB.
H5_MAX_EXPANSION = 100
#: HDF5 filters vsgen lets HDF5 run: deflate, shuffle, fletcher32, scale-offset,
#: n-bit (built into HDF5) and LZF (built into h5py). Any other filter id would
#: make HDF5 search for and load a plugin library.
H5_FILTERS = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
}
#: Values per chunk of :func:`read_values`.
READ_CHUNK = 1 << 20

#: safetensors dtype codes: (vsgen/numpy dtype name, bytes per value).
SAFETENSORS_DTYPES = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "U16": ("uint16", 2),
    "I16": ("int16", 2),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "U32": ("uint32", 4),
    "I32": ("int32", 4),
    "F32": ("float32", 4),
    "U64": ("uint64", 8),
    "I64": ("int64", 8),
    "F64": ("float64", 8),
}
_NUMERIC_KINDS = "biuf"


class UnreadableFile(ValueError):
    """A file vsgen refuses to read: malformed, hostile, or not a tensor file."""


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as a file stores it (headers only; values via :func:`read_values`).

    ``dtype`` is a NumPy/ml_dtypes name (``float32``, ``bfloat16``, ``int64``,
    ``bool``...). ``offset`` is the absolute byte offset of the values for
    npy and safetensors (``None`` for HDF5, read through h5py); ``byteorder``
    is ``"<"`` or ``">"``; ``fortran_order`` only for npy.
    """

    path: str
    format: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    offset: int | None = None
    byteorder: str = "<"
    fortran_order: bool = False

    @property
    def size(self) -> int:
        """Number of values."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the values take in the file (before any HDF5 compression)."""
        return self.size * self.itemsize

    def numpy_dtype(self) -> numpy.dtype:
        """The native-order NumPy dtype of the values (imports ml_dtypes when needed)."""
        if self.dtype in ("bfloat16", "float8_e5m2", "float8_e4m3fn"):
            import ml_dtypes

            return numpy.dtype(getattr(ml_dtypes, self.dtype))
        return numpy.dtype(self.dtype)

    def chunks(self, chunk_size: int | None = None) -> Iterator[numpy.ndarray]:
        """The values as flat C-order pieces; see :func:`read_values`."""
        return read_values(self, chunk_size)


@dataclass(frozen=True)
class TensorFile:
    """A tensor file's tensors, in file order, and its file-level metadata."""

    path: str
    format: str
    tensors: tuple[StoredTensor, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Tensor names in file order."""
        return [tensor.name for tensor in self.tensors]

    def tensor(self, name: str) -> StoredTensor:
        """The tensor called ``name``; ValueError listing the names if there is none."""
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise UnreadableFile(
            f"{self.path} has no tensor named {name!r}; it holds: {_list(self.names)}"
        )


def _list(names: list[str], limit: int = 20) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# --- opening safely --------------------------------------------------------------------


def open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    Opened without blocking and checked with ``fstat`` on the descriptor
    itself, so a FIFO or device (even one swapped in after a check) is
    refused instead of hanging the reader.

    Raises:
        UnreadableFile: missing, a directory, or not a regular file.
        OSError: the file exists but cannot be opened (e.g. permissions).
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableFile(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UnreadableFile(f"{path} is a directory, not a tensor file") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise UnreadableFile(f"{path} is a directory, not a tensor file")
        raise UnreadableFile(
            f"{path} is {describe_file_kind(mode)}, not a .npy, .h5 or .safetensors file"
        )
    os.set_blocking(descriptor, True)
    return descriptor


def _open_binary(path: str) -> Any:
    return os.fdopen(open_regular(path), "rb")


def sniff(path: str) -> str:
    """``npy``, ``h5``, ``safetensors`` or ``npydir`` (a directory), from the first bytes.

    Raises:
        UnreadableFile: missing, not a regular file or directory, or none of those formats.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UnreadableFile(f"file not found: {path}") from None
    if stat.S_ISDIR(mode):
        return "npydir"
    with _open_binary(path) as handle:
        head = handle.read(9)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_HDF5_MAGIC):
        return "h5"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    raise UnreadableFile(
        f"{path}: not a .npy, .h5 or .safetensors file (unrecognised first bytes; "
        "raw files have no header)"
    )


def open_file(path: str) -> TensorFile:
    """Read and validate the headers of a tensor file (no values are read).

    Raises:
        UnreadableFile: not a tensor file, or a header vsgen refuses (see the module).
        OSError: the file cannot be read.
    """
    if os.path.isdir(path):
        from vsgen.formats import sharded, zarr_format

        if zarr_format.is_zarr(path):
            return _open_zarr(path)
        if sharded.is_sharded(path):
            return _open_sharded(path)
    kind = sniff(path)
    if kind == "npy":
        stem = os.path.splitext(os.path.basename(path))[0]
        return TensorFile(path, "npy", (_npy_tensor(path, stem),), {})
    if kind == "npydir":
        return _open_npydir(path)
    if kind == "safetensors":
        tensors, metadata = _read_safetensors(path)
        return TensorFile(path, "safetensors", tensors, metadata)
    return _open_h5(path)


def _open_zarr(path: str) -> TensorFile:
    """A Zarr v3 store vsgen wrote (``vsgen.formats.zarr_format`` says what it reads)."""
    from vsgen.formats import zarr_format

    try:
        arrays = zarr_format.read_arrays(path)
        metadata = zarr_format.read_metadata(path)
    except (ValueError, OSError) as error:
        raise UnreadableFile(str(error)) from None
    tensors = tuple(
        StoredTensor(path, "zarr", array.name, array.shape, array.dtype.name, array.dtype.itemsize)
        for array in arrays
    )
    return TensorFile(path, "zarr", tensors, metadata)


def _open_sharded(path: str) -> TensorFile:
    """A sharded safetensors directory: each shard read as a safetensors file, the
    tensors in the index's order, the shards' provenance merged."""
    from vsgen.formats import sharded

    try:
        weight_map = sharded.read_weight_map(path)
    except (ValueError, OSError) as error:
        raise UnreadableFile(str(error)) from None
    if len(weight_map) > MAX_TENSORS:
        raise UnreadableFile(f"{path}: the index lists more than {MAX_TENSORS} tensors")
    shards: dict[str, dict[str, StoredTensor]] = {}
    tensors = []
    for name, file_name in weight_map.items():
        if file_name not in shards:
            found, _ = _read_safetensors(os.path.join(path, file_name))
            shards[file_name] = {tensor.name: tensor for tensor in found}
        if name not in shards[file_name]:
            raise UnreadableFile(f"{path}: the index puts {name!r} in {file_name}, which lacks it")
        tensors.append(shards[file_name][name])
    return TensorFile(path, "safetensors-sharded", tuple(tensors), sharded.read_metadata(path))


# --- npy -------------------------------------------------------------------------------


def read_npy_header(path: str) -> tuple[tuple[int, ...], bool, numpy.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` of a .npy file, from its header.

    The dtype is the stored one (its byte order included). Only numeric and
    bool dtypes are accepted: an object array would need unpickling.

    Raises:
        UnreadableFile: a malformed, truncated or oversized header, or a
            dtype that is not numeric.
    """
    with _open_binary(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8 or not prefix.startswith(_NPY_MAGIC):
            raise UnreadableFile(f"{path}: truncated NPY header (magic)")
        major, minor = prefix[6], prefix[7]
        if (major, minor) == (1, 0):
            length_format = "<H"
        elif major in (2, 3) and minor == 0:
            length_format = "<I"
        else:
            raise UnreadableFile(f"{path}: unsupported NPY version {major}.{minor}")
        length_bytes = handle.read(struct.calcsize(length_format))
        if len(length_bytes) < struct.calcsize(length_format):
            raise UnreadableFile(f"{path}: truncated NPY header (header length)")
        (length,) = struct.unpack(length_format, length_bytes)
        if length > NPY_MAX_HEADER:
            raise UnreadableFile(
                f"{path}: NPY header length {length} is over the {NPY_MAX_HEADER}-byte limit"
            )
        text = handle.read(length)
        if len(text) < length:
            raise UnreadableFile(
                f"{path}: truncated NPY header (expected {length} bytes, found {len(text)})"
            )
        offset = handle.tell()
    shape, fortran_order, dtype = _parse_npy_header(path, prefix + length_bytes + text, major)
    if offset + math.prod(shape) * dtype.itemsize > size:
        raise UnreadableFile(
            f"{path}: file is truncated (the header promises {math.prod(shape) * dtype.itemsize} "
            f"bytes of values, {size - offset} follow)"
        )
    return shape, fortran_order, dtype, offset


def _parse_npy_header(
    path: str, header: bytes, major: int
) -> tuple[tuple[int, ...], bool, numpy.dtype]:
    import io

    from numpy.lib import format as npy_format

    handle = io.BytesIO(header)
    npy_format.read_magic(handle)
    read = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read(handle, max_header_size=NPY_MAX_HEADER)
    except Exception:  # noqa: BLE001 - numpy's parser raises many types on garbage
        # (ValueError, SyntaxError, tokenize.TokenError, RecursionError...); the
        # input is at most NPY_MAX_HEADER bytes, so any failure just means "malformed".
        raise UnreadableFile(f"{path}: malformed NPY header") from None
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnreadableFile(f"{path}: NPY field 'descr' is {dtype.str!r}, not a numeric dtype")
    if len(shape) > MAX_RANK:
        raise UnreadableFile(f"{path}: NPY field 'shape' has {len(shape)} dimensions")
    return tuple(int(d) for d in shape), bool(fortran_order), dtype


def _npy_tensor(path: str, name: str) -> StoredTensor:
    shape, fortran_order, dtype, offset = read_npy_header(path)
    return StoredTensor(
        path,
        "npy",
        name,
        shape,
        dtype.name,
        dtype.itemsize,
        offset,
        ">" if dtype.byteorder == ">" else "<",
        fortran_order and len(shape) > 1,
    )


def _open_npydir(path: str) -> TensorFile:
    tensors = []
    # A walk that follows no symlink: a link out of the directory is not read.
    for root, directories, files in os.walk(path, followlinks=False):
        directories.sort()
        for file_name in sorted(files):
            if not file_name.endswith(".npy"):
                continue
            full = os.path.join(root, file_name)
            if os.path.islink(full):
                raise UnreadableFile(f"{full} is a symbolic link; npy directories hold files only")
            relative = os.path.relpath(os.path.join(root, file_name[:-4]), path)
            tensors.append(_npy_tensor(full, relative.replace(os.sep, "/")))
            if len(tensors) > MAX_TENSORS:
                raise UnreadableFile(f"{path} holds over {MAX_TENSORS} .npy files")
    return TensorFile(path, "npydir", tuple(tensors), {})


# --- safetensors -----------------------------------------------------------------------


def _read_safetensors(path: str) -> tuple[tuple[StoredTensor, ...], dict[str, str]]:
    with _open_binary(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise UnreadableFile(f"{path} is too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > SAFETENSORS_MAX_HEADER:
            raise UnreadableFile(
                f"{path}: safetensors header length {length} is over the format's "
                f"limit of {SAFETENSORS_MAX_HEADER} bytes"
            )
        if length > size - 8:
            raise UnreadableFile(
                f"{path}: safetensors header length {length} exceeds the file ({size} bytes)"
            )
        text = handle.read(length)
    if len(text) < length:
        raise UnreadableFile(f"{path}: safetensors header is truncated")
    _check_text_memory(path, text)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(
            f"{path}: safetensors header is not UTF-8 text (byte {error.start})"
        ) from None
    # Only the text is kept while parsing: header bytes, text and parsed
    # strings together would be three times the header.
    del text
    header = loads_json(decoded, f"{path}: safetensors header")
    del decoded
    if not isinstance(header, dict):
        raise UnreadableFile(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + length
    data_size = size - data_start
    metadata = _safetensors_metadata(path, header.pop("__metadata__", None))
    if len(header) > MAX_TENSORS:
        raise UnreadableFile(f"{path}: safetensors file holds over {MAX_TENSORS} tensors")
    tensors = []
    for name, entry in header.items():
        tensors.append(_safetensors_entry(path, name, entry, data_start, data_size))
    _check_tiling(path, tensors, data_start, data_size)
    return tuple(tensors), metadata


def _check_text_memory(path: str, text: bytes) -> None:
    """Refuse text whose decoded form would need over 4 bytes per byte of budget.

    Python stores a string with 1, 2 or 4 bytes per character, by its widest
    character; a large header full of 4-byte characters would cost four
    times its size, so the budget is the format's limit in decoded bytes.
    """
    if len(text) <= SAFETENSORS_MAX_HEADER // 4:
        return
    widest = int(numpy.frombuffer(text, dtype=numpy.uint8).max())
    width = 4 if widest >= 0xF0 else 2 if widest >= 0xC4 else 1
    if len(text) * width > SAFETENSORS_MAX_HEADER:
        raise UnreadableFile(
            f"{path}: safetensors header of {len(text)} bytes would take {width} bytes per "
            f"character once decoded, over the {SAFETENSORS_MAX_HEADER}-byte limit"
        )


def _safetensors_metadata(path: str, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UnreadableFile(f"{path}: safetensors field '__metadata__' is not a JSON object")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise UnreadableFile(
                f"{path}: safetensors field '__metadata__'[{key[:80]!r}] is a "
                f"{_json_type(value)}, not a string"
            )
    return metadata


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _safetensors_entry(
    path: str, name: str, entry: object, data_start: int, data_size: int
) -> StoredTensor:
    if type(entry) is not dict:
        raise UnreadableFile(f"{_where(path, name)} is a {_json_type(entry)}, not an object")
    try:
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    except KeyError as missing:
        raise UnreadableFile(f"{_where(path, name)} has no field {missing}") from None
    if type(code) is not str or code not in SAFETENSORS_DTYPES:
        shown = code[:40] if isinstance(code, str) else _json_type(code)
        raise UnreadableFile(
            f"{_where(path, name)}: field 'dtype' is {shown!r}; known: "
            f"{', '.join(SAFETENSORS_DTYPES)}"
        )
    dtype, itemsize = SAFETENSORS_DTYPES[code]
    # type() is int, not isinstance: JSON's true/false must not pass as 1/0.
    if type(shape) is not list or set(map(type, shape)) - {int} or (shape and min(shape) < 0):
        raise UnreadableFile(
            f"{_where(path, name)}: field 'shape' must be a list of non-negative integers"
        )
    if len(shape) > MAX_RANK:
        raise UnreadableFile(f"{_where(path, name)}: field 'shape' has {len(shape)} dimensions")
    if not (
        type(offsets) is list
        and len(offsets) == 2
        and type(offsets[0]) is int
        and type(offsets[1]) is int
    ):
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' must be a list of two integers"
        )
    begin, end = offsets
    if not 0 <= begin <= end:
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' [{begin}, {end}] must satisfy "
            "0 <= begin <= end"
        )
    if end > data_size:
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' ends at {end}, past the {data_size} "
            "bytes of data (file truncated?)"
        )
    nbytes = math.prod(shape) * itemsize
    if end - begin != nbytes:
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' spans {end - begin} bytes; shape "
            f"{tuple(shape)} of {code} needs {nbytes}"
        )
    return StoredTensor(
        path, "safetensors", name, tuple(shape), dtype, itemsize, data_start + begin
    )


def _where(path: str, name: str) -> str:
    return f"{path}: safetensors tensor {name[:200]!r}"


def _check_tiling(path: str, tensors: list[StoredTensor], data_start: int, data_size: int) -> None:
    """The tensors' byte ranges must cover the data exactly once, as the format requires."""
    position = 0
    for tensor in sorted(tensors, key=lambda t: (t.offset or 0, t.nbytes)):
        begin = (tensor.offset or 0) - data_start
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap"
            raise UnreadableFile(
                f"{path}: safetensors tensor {tensor.name[:200]!r}: field 'data_offsets' "
                f"starts at {begin}, which {problem} (expected {position})"
            )
        position = begin + tensor.nbytes
    if position != data_size:
        raise UnreadableFile(
            f"{path}: safetensors data is {data_size} bytes but the tensors cover {position}"
        )


# --- HDF5 ------------------------------------------------------------------------------


def _h5_error(path: str, error: BaseException) -> UnreadableFile:
    message = " ".join(str(error).split()) or type(error).__name__
    return UnreadableFile(f"{path}: damaged or unsupported HDF5 file ({message[:300]})")


def _open_h5(path: str) -> TensorFile:
    import h5py

    # sniff() has checked it is a regular HDF5 file; h5py re-opens it by name.
    try:
        with h5py.File(path, "r") as h5:
            tensors = tuple(_h5_tensor(path, name, dataset) for name, dataset in _h5_walk(path, h5))
            metadata = _h5_metadata(path, h5)
    except UnreadableFile:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
        raise _h5_error(path, error) from None
    return TensorFile(path, "h5", tensors, metadata)


def _h5_walk(path: str, h5: Any) -> Iterator[tuple[str, Any]]:
    """Every dataset reachable through hard links, once, as ``(path, DatasetID)``.

    Depth first, each group's links in creation order where the file tracks
    it (vsgen's files do), else by name. Refuses external and user-defined
    links and stops past :data:`H5_MAX_LINKS` links or
    :data:`H5_MAX_OBJECTS` objects.
    """
    import h5py

    seen = {h5py.h5o.get_info(h5.id).addr}
    links = 0

    def link_names(group: Any) -> list[bytes]:
        nonlocal links
        names: list[bytes] = []
        budget = H5_MAX_LINKS - links

        def collect(name: bytes) -> int | None:
            names.append(name)
            return 1 if len(names) > budget else None

        try:
            group.links.iterate(collect, idx_type=h5py.h5.INDEX_CRT_ORDER)
        except RuntimeError:  # creation order not tracked: by name
            names.clear()
            group.links.iterate(collect, idx_type=h5py.h5.INDEX_NAME)
        links += len(names)
        if links > H5_MAX_LINKS:
            raise UnreadableFile(f"{path}: HDF5 file has over {H5_MAX_LINKS} links")
        return names

    # Pre-order, as a recursive walk would go, with an explicit stack.
    stack: list[tuple[str, Any, Iterator[bytes]]] = [("", h5.id, iter(link_names(h5.id)))]
    while stack:
        prefix, group, pending = stack[-1]
        raw = next(pending, None)
        if raw is None:
            stack.pop()
            continue
        name = prefix + raw.decode("utf-8", "replace")
        info = group.links.get_info(raw)
        if info.type == h5py.h5l.TYPE_SOFT:
            continue  # an alias of an object reached through its hard link
        if info.type == h5py.h5l.TYPE_EXTERNAL:
            raise UnreadableFile(
                f"{path}: HDF5 link {name!r} points into another file; "
                "vsgen reads nothing outside the file it is given"
            )
        if info.type != h5py.h5l.TYPE_HARD:
            raise UnreadableFile(f"{path}: HDF5 link {name!r} has user-defined type {info.type}")
        if info.u in seen:
            continue  # a cycle or a second path to an object already listed
        seen.add(info.u)
        if len(seen) > H5_MAX_OBJECTS:
            raise UnreadableFile(f"{path}: HDF5 file has over {H5_MAX_OBJECTS} objects")
        child = h5py.h5o.open(group, raw)
        kind = h5py.h5o.get_info(child).type
        if kind == h5py.h5o.TYPE_GROUP:
            stack.append((name + "/", child, iter(link_names(child))))
        elif kind == h5py.h5o.TYPE_DATASET:
            yield name, child


def _h5_tensor(path: str, name: str, dataset: Any) -> StoredTensor:
    """Validate a dataset's layout and type; refuse anything that reads other files."""
    import h5py

    plist = dataset.get_create_plist()
    if plist.get_external_count():
        raise UnreadableFile(
            f"{path}: HDF5 dataset {name!r} keeps its values in external files; "
            "vsgen reads nothing outside the file it is given"
        )
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise UnreadableFile(
            f"{path}: HDF5 dataset {name!r} is a virtual dataset (its values live in "
            "other datasets or files); vsgen reads nothing outside the file it is given"
        )
    space = dataset.get_space()
    if space.get_simple_extent_type() == h5py.h5s.NULL:
        shape: tuple[int, ...] = (0,)
    else:
        shape = tuple(int(d) for d in space.shape)
    if len(shape) > MAX_RANK:
        raise UnreadableFile(f"{path}: HDF5 dataset {name!r} has {len(shape)} dimensions")
    try:
        dtype = dataset.dtype
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in _NUMERIC_KINDS or dtype.fields or dtype.subdtype:
        raise UnreadableFile(
            f"{path}: HDF5 dataset {name!r} has type {dtype}; only numeric tensors are read"
        )
    label = dtype.name
    if dtype.kind == "V" or (dtype.kind == "f" and dtype.itemsize not in (2, 4, 8)):
        raise UnreadableFile(f"{path}: HDF5 dataset {name!r} has type {dtype}")
    return StoredTensor(
        path, "h5", name, shape, label, dtype.itemsize, None, ">" if dtype.byteorder == ">" else "<"
    )


def _h5_metadata(path: str, h5: Any) -> dict[str, str]:
    """Root attributes as strings: text attributes and small numeric ones only."""
    import h5py

    names: list[bytes | str] = []

    def collect(name: bytes | str, *_: Any) -> int | None:
        names.append(name)
        return 1 if len(names) > H5_MAX_ATTRIBUTES else None

    h5py.h5a.iterate(h5.id, collect)
    if len(names) > H5_MAX_ATTRIBUTES:
        raise UnreadableFile(f"{path}: HDF5 file has over {H5_MAX_ATTRIBUTES} root attributes")
    result: dict[str, str] = {}
    for raw in names:
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        attribute = h5py.h5a.open(h5.id, raw if isinstance(raw, bytes) else raw.encode())
        type_class = attribute.get_type().get_class()
        if attribute.get_storage_size() > MAX_METADATA_BYTES:
            raise UnreadableFile(
                f"{path}: HDF5 attribute {name!r} is over {MAX_METADATA_BYTES} bytes"
            )
        if type_class not in (h5py.h5t.STRING, h5py.h5t.INTEGER, h5py.h5t.FLOAT):
            continue  # references, compounds...: not metadata vsgen understands
        if type_class != h5py.h5t.STRING and attribute.shape not in ((), (1,)):
            continue
        value = h5.attrs[name]
        if isinstance(value, numpy.ndarray):
            value = value.reshape(-1)[0] if value.size else ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_METADATA_BYTES:
            raise UnreadableFile(
                f"{path}: HDF5 attribute {name!r} is over {MAX_METADATA_BYTES} bytes"
            )
        result[name] = text
    return result


def _h5_read_plan(path: str, tensor: StoredTensor, dataset: Any) -> int:
    """Refuse a dataset whose values cannot be read in bounded work; the cache size to use."""
    import h5py

    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if tensor.size == 0:
        return 0
    if layout == h5py.h5d.COMPACT:
        return 0
    if layout == h5py.h5d.CONTIGUOUS:
        if dataset.id.get_offset() is None:
            raise UnreadableFile(
                f"{path}: HDF5 dataset {tensor.name!r} has no storage allocated "
                "(it would read as fill values only)"
            )
        return 0
    if layout != h5py.h5d.CHUNKED:
        raise UnreadableFile(f"{path}: HDF5 dataset {tensor.name!r} has an unknown layout")
    chunk = tuple(int(c) for c in plist.get_chunk())
    chunk_bytes = math.prod(chunk) * tensor.itemsize
    if chunk_bytes > H5_MAX_CHUNK_BYTES:
        raise UnreadableFile(
            f"{path}: HDF5 dataset {tensor.name!r} has chunks of {chunk_bytes} bytes once "
            f"decompressed, over the {H5_MAX_CHUNK_BYTES}-byte limit"
        )
    filters = [plist.get_filter(index)[0] for index in range(plist.get_nfilters())]
    for code in filters:
        if code not in H5_FILTERS:
            raise UnreadableFile(
                f"{path}: HDF5 dataset {tensor.name!r} uses filter {code}, which is not one of "
                f"HDF5's own ({', '.join(H5_FILTERS.values())}); vsgen loads no filter plugins"
            )
    expected = math.prod(
        -(-extent // size) for extent, size in zip(tensor.shape, chunk, strict=True)
    )
    if dataset.id.get_num_chunks() < expected:
        raise UnreadableFile(
            f"{path}: HDF5 dataset {tensor.name!r} has storage for "
            f"{dataset.id.get_num_chunks()} of its {expected} chunks "
            "(the rest would read as fill values)"
        )
    stored = dataset.id.get_storage_size()
    if filters and tensor.nbytes > H5_MAX_EXPANSION * stored + H5_MAX_CHUNK_BYTES:
        raise UnreadableFile(
            f"{path}: HDF5 dataset {tensor.name!r} would inflate {stored} stored bytes to "
            f"{tensor.nbytes}, over {H5_MAX_EXPANSION} times"
        )
    # Reading in C order touches one row of chunks at a time; keep it cached.
    row_of_chunks = chunk_bytes * math.prod(
        -(-extent // size) for extent, size in zip(tensor.shape[1:], chunk[1:], strict=True)
    )
    if row_of_chunks > H5_MAX_CACHE_BYTES:
        raise UnreadableFile(
            f"{path}: HDF5 dataset {tensor.name!r} needs {row_of_chunks} bytes of chunk cache "
            f"to be read in order, over the {H5_MAX_CACHE_BYTES}-byte limit"
        )
    return row_of_chunks


# --- values ----------------------------------------------------------------------------


def read_values(
    tensor: StoredTensor, chunk_size: int | None = None, any_order: bool = False
) -> Iterator[numpy.ndarray]:
    """The values of ``tensor`` as consecutive flat pieces of at most ``chunk_size``.

    Pieces are in C order (npy files in Fortran order are read in storage
    order; Zarr arrays chunked in tiles are refused unless ``any_order``, then
    read chunk by chunk), in the native-order dtype (:meth:`StoredTensor.numpy_dtype`).
    npy and safetensors are read sequentially at the data offset (not a
    memory map, so the resident set stays one piece); HDF5 through h5py in
    slices along the leading axes, after the checks of the module docstring.

    Raises:
        UnreadableFile: the file changed or is truncated, or an HDF5 dataset
            cannot be read in bounded work.
    """
    chunk_size = max(1, READ_CHUNK if chunk_size is None else int(chunk_size))
    if tensor.size == 0:
        return
    if tensor.format == "h5":
        yield from _h5_values(tensor, chunk_size)
        return
    if tensor.format == "zarr":
        yield from _zarr_values(tensor, chunk_size, any_order)
        return
    native = tensor.numpy_dtype()
    # ml_dtypes types (bfloat16, float8) have no byte-order variant: read
    # their bits as unsigned words and reinterpret.
    bits = native.kind == "V" or native.type.__module__.startswith("ml_dtypes")
    stored = numpy.dtype(f"u{tensor.itemsize}") if bits else native
    if stored.itemsize > 1:
        stored = stored.newbyteorder(">" if tensor.byteorder == ">" else "<")
    assert tensor.offset is not None
    with _open_binary(tensor.path) as handle:
        handle.seek(tensor.offset)
        for start in range(0, tensor.size, chunk_size):
            count = min(chunk_size, tensor.size - start)
            data = handle.read(count * tensor.itemsize)
            if len(data) != count * tensor.itemsize:
                raise UnreadableFile(f"{tensor.path}: file is truncated (tensor {tensor.name!r})")
            piece = numpy.frombuffer(data, dtype=stored)
            if bits:
                yield piece.astype(stored.newbyteorder("=")).view(native)
            else:
                yield piece.astype(native)


def _zarr_values(tensor: StoredTensor, chunk_size: int, any_order: bool) -> Iterator[numpy.ndarray]:
    from vsgen.formats import zarr_format

    try:
        arrays = {array.name: array for array in zarr_format.read_arrays(tensor.path)}
        array = arrays[tensor.name]
    except (ValueError, OSError, KeyError) as error:
        raise UnreadableFile(f"{tensor.path}: {error}") from None
    # Chunks of whole rows are stored in C order; tiles only chunk by chunk.
    if not any_order and tuple(array.chunk_shape[1:]) != tuple(array.shape[1:]):
        raise UnreadableFile(
            f"{tensor.path}: array {tensor.name!r} is chunked in tiles {array.chunk_shape}; "
            "only arrays chunked in whole rows are read in order"
        )
    try:
        yield from array.chunk_values(chunk_size)
    except (ValueError, OSError) as error:
        raise UnreadableFile(str(error)) from None


def _h5_values(tensor: StoredTensor, chunk_size: int) -> Iterator[numpy.ndarray]:
    import h5py

    native = tensor.numpy_dtype()
    try:
        with h5py.File(tensor.path, "r") as h5:
            cache = _h5_read_plan(tensor.path, tensor, _h5_dataset(tensor, h5))
        # A cache for one row of chunks (HDF5's default holds 1 MiB).
        options = {"rdcc_nbytes": cache + (1 << 20), "rdcc_nslots": 10007} if cache else {}
        with h5py.File(tensor.path, "r", **options) as h5:
            dataset = _h5_dataset(tensor, h5)
            if not tensor.shape:
                yield numpy.asarray(dataset[()]).reshape(1).astype(native)
                return
            shape = tensor.shape
            # Index the leading axes one by one until the trailing block fits a chunk.
            axis = 0
            while axis < len(shape) - 1 and math.prod(shape[axis + 1 :]) > chunk_size:
                axis += 1
            inner = math.prod(shape[axis + 1 :])
            step = max(1, chunk_size // max(1, inner))
            for outer in numpy.ndindex(*shape[:axis]):
                for first in range(0, shape[axis], step):
                    last = min(shape[axis], first + step)
                    block = dataset[tuple(outer) + (slice(first, last),)]
                    yield numpy.asarray(block).astype(native).reshape(-1)
    except UnreadableFile:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
        raise _h5_error(tensor.path, error) from None


def _h5_dataset(tensor: StoredTensor, h5: Any) -> Any:
    """The dataset at the walked path ``tensor.name``, reached through hard links only."""
    import h5py

    group = h5
    parts = tensor.name.split("/")
    for depth, part in enumerate(parts):
        link = group.get(part, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise UnreadableFile(f"{tensor.path}: HDF5 path {tensor.name!r} changed while reading")
        group = group[part]
        if depth < len(parts) - 1 and not isinstance(group, h5py.Group):
            raise UnreadableFile(f"{tensor.path}: HDF5 path {tensor.name!r} changed while reading")
    if not isinstance(group, h5py.Dataset):
        raise UnreadableFile(f"{tensor.path}: HDF5 path {tensor.name!r} is not a dataset")
    _h5_tensor(tensor.path, tensor.name, group.id)
    return group


# --- the public header API --------------------------------------------------------------


def _directory_format(path: str) -> Any:
    """The reader module of a Zarr store or a sharded safetensors directory, else None."""
    from vsgen.formats import sharded, zarr_format

    if zarr_format.is_zarr(path):
        return zarr_format
    if sharded.is_sharded(path):
        return sharded
    return None


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
    kind = sniff(path)
    if kind == "npy":
        return {}
    return open_file(path).metadata


def read_tensor_range(path: str, name: str, start: int, stop: int) -> numpy.ndarray:
    """Flat C-order values ``[start, stop)`` of tensor ``name``, in its native-order dtype.

    Goes through :func:`open_file`, so every check of this module applies.
    npy and safetensors values are read at their byte offset (only
    ``stop - start`` values); HDF5 values are read in order up to ``stop``
    through :func:`read_values`, so copy whole tensors with that instead.

    Raises:
        UnreadableFile: no such tensor, a range outside it, big-endian or
            Fortran-order data, or anything :func:`open_file` refuses.
    """
    tensor_file = open_file(path)
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
        part = dataclasses.replace(
            tensor, shape=(stop - start,), offset=tensor.offset + start * tensor.itemsize
        )
        pieces.extend(read_values(part))
    else:
        position = 0
        for piece in read_values(tensor):
            low, high = max(start, position), min(stop, position + piece.size)
            if low < high:
                pieces.append(piece[low - position : high - position])
            position += piece.size
            if position >= stop:
                break
    return numpy.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()
