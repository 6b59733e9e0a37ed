"""Zarr v3 stores (``.zarr``): laid out by the client, chunks filled by whoever
computes them (:mod:`vsgen.blockwrite`; a store is never streamed).

What vsgen writes (and the only kind of store it reads back):

- ``zarr_format`` 3, ``regular`` chunk grid, ``default`` chunk keys with the ``/``
  separator (chunk (i, j) of an array lives in ``c/i/j``; a scalar's in ``c``),
  ``fill_value`` 0 (``false`` for bool), and the single codec ``bytes``
  (little-endian): a chunk file is the chunk's values in C order, edge chunks
  padded with zeros to the full chunk shape. No compression: weights made from a
  random stream do not compress. float16/32/64, bfloat16 (the data type
  ``bfloat16`` of the zarr-extensions registry: 2 bytes, the top half of a float32;
  zarr-python reads it once :func:`vsgen.formats.zarr_bfloat16.register` has run),
  and the integer and bool types of tensors copied from a checkpoint (``--like``).
- One tensor: the store's root is the array. Several: the root is a group and
  each tensor an array under its name (``/`` in a name makes nested groups).
- Provenance: the attribute ``vsgen`` of the root (array or group) holds the same
  document that ``.h5``/``.safetensors`` files keep as a string (a JSON object
  here); each array of a group holds the document restricted to itself.
- Every chunk has its file: at most ``MAX_CHUNKS`` (2**20) chunk files per store,
  checked before anything is made.

The client writes the metadata (plain JSON), then every chunk directory and an
empty file per chunk; writing needs no ``zarr`` package (reading with it does).
Writers only ever open existing chunk files (never create a name), so a writer
still running after the job was abandoned and its temporary store removed cannot
bring any of it back. ``--force`` replaces only a store holding exactly what its
metadata says vsgen wrote (:class:`StoreJudge`).

Reading (every store is untrusted, :func:`read_store`): each ``zarr.json`` is
read through the bounded JSON parser (:mod:`vsgen._limits`); shapes, chunk grids,
chunk counts, nodes and group depth are bounded before any work; no symbolic
link, FIFO or device inside the store is followed or opened; every chunk file
must exist with exactly the chunk's bytes (vsgen writes every chunk, so a missing
one is a damaged store, not a fill value); values are read in pieces of bounded
size whatever the chunk shape.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy

from vsgen._limits import (
    MAX_CHUNKS,
    MAX_NODE_BYTES,
    MAX_NODE_DEPTH,
    MAX_NODES,
    MAX_RANK,
    MAX_TENSORS,
    loads_json,
)
from vsgen.dtypes import TensorInfo
from vsgen.fans import auto_block_shape
from vsgen.formats.atomic import (
    NotOwned,
    TemporaryDirectory,
    describe_file_kind,
    pwrite_all,
    stop_if_cancelled,
)
from vsgen.formats.base import (
    Place,
    StoredTensor,
    StoreFormat,
    StoreLayout,
    TensorFile,
    UnreadableFile,
    WriteRequest,
    check_no_group_clash,
    check_path_name,
    little_endian,
    little_endian_bytes,
)

_METADATA_FILE = "zarr.json"
#: Chunks of more values than this are refused by writers and readers alike (so
#: vsgen reads every store it writes): 1 GiB of float64.
_MAX_CHUNK_VALUES = 1 << 27
#: Largest element count of an array (as for every tensor vsgen writes).
_MAX_ELEMENTS = 2**63 - 1
_FLOATS = ("float16", "bfloat16", "float32", "float64")
#: Integer and bool types are only ever copied (``--like``), never generated.
_ZARR_DTYPES = (
    *_FLOATS,
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
)
_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]
_KEY_ENCODING = {"name": "default", "configuration": {"separator": "/"}}
_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


# --- the grid --------------------------------------------------------------------------


def grid_counts(shape: Sequence[int], chunk_shape: Sequence[int]) -> tuple[int, ...]:
    """Chunks along each axis."""
    return tuple(-(-d // c) for d, c in zip(shape, chunk_shape, strict=True))


def chunk_count(shape: Sequence[int], chunk_shape: Sequence[int]) -> int:
    """Chunk files of an array (one for a scalar; none for an empty array)."""
    return math.prod(grid_counts(shape, chunk_shape))


def check_chunk_shape(shape: Sequence[int], chunk_shape: Sequence[int]) -> tuple[int, ...]:
    chunk = tuple(int(c) for c in chunk_shape)
    if len(chunk) != len(shape) or any(c < 1 for c in chunk):
        raise ValueError(
            "Argument `chunks` must give one positive extent per axis for a Zarr array. "
            f"Received: chunks={tuple(chunk_shape)} for shape {tuple(shape)}"
        )
    if math.prod(chunk) > _MAX_CHUNK_VALUES:
        raise ValueError(
            f"Zarr chunks of {chunk} are too large (more than 2**27 values); give smaller --chunks"
        )
    return chunk


def chunk_indices(shape: Sequence[int], chunk_shape: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every chunk index of the grid, in C order (none for an empty array)."""
    yield from numpy.ndindex(*grid_counts(shape, chunk_shape))


def whole_chunk(
    shape: Sequence[int],
    chunk_shape: Sequence[int],
    origin: Sequence[int],
    block_shape: Sequence[int],
) -> tuple[int, ...]:
    """The index of the chunk a block at ``origin`` of ``block_shape`` is, exactly
    (its in-bounds part).

    Raises:
        ValueError: the block is not exactly one chunk.
    """
    origin = tuple(int(o) for o in origin)
    index = tuple(o // c for o, c in zip(origin, chunk_shape, strict=True))
    expected_origin, extent = chunk_region(shape, chunk_shape, index)
    if expected_origin != origin or tuple(block_shape) != extent:
        raise ValueError(
            f"a Zarr block must be one whole chunk: got origin {origin} and shape "
            f"{tuple(block_shape)}, chunk {index} is at {expected_origin} with shape {extent}"
        )
    return index


def chunk_region(
    shape: Sequence[int], chunk_shape: Sequence[int], index: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(origin, extent)`` of chunk ``index`` inside the array (edge chunks are cut)."""
    origin = tuple(i * c for i, c in zip(index, chunk_shape, strict=True))
    extent = tuple(min(c, d - o) for c, d, o in zip(chunk_shape, shape, origin, strict=True))
    return origin, extent


def chunk_key(index: Sequence[int]) -> tuple[str, ...]:
    """Path components of chunk ``index`` below its array (``c`` for a scalar)."""
    return ("c", *(str(i) for i in index))


def chunk_path(array_dir: str, index: Sequence[int]) -> str:
    return os.path.join(array_dir, *chunk_key(index))


def array_dir(store: str, name: str | None) -> str:
    return store if name is None else os.path.join(store, *name.split("/"))


def _numpy_dtype(name: str) -> numpy.dtype:
    """The NumPy dtype of a Zarr data type vsgen writes (``bfloat16``: ml_dtypes')."""
    if name == "bfloat16":
        import ml_dtypes

        return numpy.dtype(ml_dtypes.bfloat16)
    return numpy.dtype(name)


def _fill_value(dtype: numpy.dtype) -> Any:
    if dtype.kind == "b":
        return False
    return 0.0 if dtype.kind == "f" or dtype.name == "bfloat16" else 0


def _array_node(
    info: TensorInfo, chunk_shape: Sequence[int], attributes: Mapping[str, Any]
) -> dict:
    """The ``zarr.json`` of an array as vsgen writes it (see the module docstring)."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(info.shape),
        "data_type": info.dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk_shape)}},
        "chunk_key_encoding": dict(_KEY_ENCODING),
        "fill_value": _fill_value(info.dtype),
        "codecs": [dict(codec) for codec in _CODECS],
        "attributes": dict(attributes),
        "storage_transformers": [],
    }


# --- writing ---------------------------------------------------------------------------


class _Maker:
    """Makes the store's directories and files in the temporary with its modes."""

    def __init__(self, root: str, directory_mode: int = 0o777, file_mode: int = 0o666) -> None:
        self.root = root
        self.directory_mode = directory_mode
        self.file_mode = file_mode
        self._made: set[str] = {root}

    def directory(self, path: str) -> None:
        if path in self._made:
            return
        self.directory(os.path.dirname(path))
        os.mkdir(path, self.directory_mode)
        self._made.add(path)

    def file(self, path: str, data: bytes = b"") -> None:
        self.directory(os.path.dirname(path))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, self.file_mode)
        try:
            if data:
                pwrite_all(fd, memoryview(data), 0)
        finally:
            os.close(fd)

    def node(self, directory: str, node: Mapping[str, Any]) -> None:
        text = json.dumps(node, indent=2, sort_keys=True) + "\n"
        self.file(os.path.join(directory, _METADATA_FILE), text.encode("utf-8"))

    def chunk_files(self, directory: str, shape: Sequence[int], chunk_shape: Sequence[int]) -> None:
        """An empty file per chunk; the block writers fill them. Cancellable at any file."""
        for index in chunk_indices(shape, chunk_shape):
            stop_if_cancelled()
            self.file(chunk_path(directory, index))


def create_store(
    store: str,
    tensors: Sequence[TensorInfo],
    chunk_shapes: Sequence[tuple[int, ...]],
    document: Mapping[str, Any],
    directory_mode: int = 0o777,
    file_mode: int = 0o666,
) -> list[str]:
    """Lay out a store in the existing empty directory ``store``.

    ``document`` is the provenance document (``provenance.file_metadata`` parsed):
    the root gets all of it, each array of a group its own tensor's part. The
    metadata is plain JSON, written here (the ``zarr`` package reads it back; the
    tests check that). Creates every chunk file, empty, with ``file_mode`` (and
    directories with ``directory_mode``; the umask applies). Returns each tensor's
    array directory.
    """
    make = _Maker(store, directory_mode, file_mode)
    directories = []
    for parts, node in store_documents(tensors, chunk_shapes, document):
        directory = os.path.join(store, *parts)
        make.node(directory, node)
        if node["node_type"] == "array":
            make.chunk_files(
                directory, node["shape"], node["chunk_grid"]["configuration"]["chunk_shape"]
            )
            directories.append(directory)
    return directories


def store_documents(
    tensors: Sequence[TensorInfo],
    chunk_shapes: Sequence[tuple[int, ...]],
    document: Mapping[str, Any],
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every node of a store of ``tensors`` (path components below the root, and its
    ``zarr.json`` document), parents before children, the root first; each array's
    in the order of ``tensors``. ``document`` is the provenance (the root gets all
    of it, each array of a group its own tensor's part)."""
    root_attributes = {"vsgen": dict(document)} if document else {}
    if len(tensors) == 1:
        return [((), _array_node(tensors[0], chunk_shapes[0], root_attributes))]
    nodes: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        ((), {"zarr_format": 3, "node_type": "group", "attributes": root_attributes})
    ]
    groups = {""}
    for info, chunk_shape in zip(tensors, chunk_shapes, strict=True):
        parts = tuple(info.name.split("/"))
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in groups:
                groups.add(parent)
                nodes.append(
                    (parts[:depth], {"zarr_format": 3, "node_type": "group", "attributes": {}})
                )
        own = {key: value for key, value in document.items() if key != "tensors"}
        own["tensors"] = {info.name: document.get("tensors", {}).get(info.name)}
        nodes.append((parts, _array_node(info, chunk_shape, {"vsgen": own} if document else {})))
    return nodes


def chunk_payload(values: numpy.ndarray, chunk_shape: Sequence[int]) -> memoryview:
    """The bytes of a chunk file holding ``values`` (its in-bounds part): padded with
    zeros to ``chunk_shape``, little-endian, C order (the ``bytes`` codec)."""
    if tuple(values.shape) != tuple(chunk_shape):
        padded = numpy.zeros(tuple(chunk_shape), dtype=values.dtype)
        padded[tuple(slice(0, e) for e in values.shape)] = values
        values = padded
    return little_endian_bytes(numpy.ascontiguousarray(values).reshape(-1))


def write_chunk(
    directory: str, index: Sequence[int], chunk_shape: Sequence[int], values: numpy.ndarray
) -> None:
    """Write the values of chunk ``index`` (its in-bounds part) into its existing file.

    Edge chunks are padded with zeros to the full chunk shape. The caller syncs
    the file (``vsgen.formats.parallel`` does, once per job and writer process).
    Raises FileNotFoundError if the store has been removed meanwhile.
    """
    payload = chunk_payload(values, chunk_shape)
    fd = os.open(chunk_path(directory, index), os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        pwrite_all(fd, payload, 0)
    finally:
        os.close(fd)


def _chunk_shapes(
    tensors: Sequence[TensorInfo], given: Sequence[Sequence[Any] | None] | None
) -> list[tuple[int, ...]]:
    """Each array's chunk shape: the one given (cut to the array's extent), else about
    64 MiB of whole trailing axes (:func:`vsgen.fans.auto_block_shape`).

    Raises:
        ValueError: per-axis block lists (Zarr grids are regular), a chunk shape
            that does not fit the array or holds more than 2**27 values, or a store
            of more than ``MAX_CHUNKS`` chunk files.
    """
    shapes = []
    for index, info in enumerate(tensors):
        chunks = None if given is None else given[index]
        if chunks is None:
            shapes.append(auto_block_shape(info.shape, info.dtype.itemsize))
            continue
        if any(isinstance(c, (tuple, list)) for c in chunks):
            raise ValueError(
                "Zarr arrays have regular chunks; give one block shape (e.g. (1024, 512)), "
                f"not per-axis block lists. Received: chunks={chunks!r}"
            )
        cut = tuple(min(int(c), max(1, d)) for c, d in zip(chunks, info.shape, strict=True))
        shapes.append(check_chunk_shape(info.shape, cut))
    total = 0
    for info, chunk_shape in zip(tensors, shapes, strict=True):
        total += chunk_count(info.shape, chunk_shape)
        if total > MAX_CHUNKS:
            given_shape = ",".join(map(str, chunk_shape))
            raise ValueError(
                f"a Zarr store of tensor {info.name!r} in chunks of {given_shape} needs over "
                f"{MAX_CHUNKS:,} chunk files (one per chunk; "
                f"{chunk_count(info.shape, chunk_shape):,} for this tensor); give larger --chunks"
            )
    return shapes


class ZarrPlace(NamedTuple):
    """A tensor stored as the Zarr array in ``path`` with chunks of ``chunk_shape``."""

    path: str
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: numpy.dtype

    @property
    def block_shape(self) -> tuple[int, ...] | None:
        return self.chunk_shape

    def write(self, origin: Sequence[int], values: numpy.ndarray) -> str | None:
        """Write one whole chunk (its in-bounds part) at ``origin`` into its file.

        Raises:
            FileNotFoundError: the store is gone (the job was abandoned).
            ValueError: the block is not exactly one chunk.
        """
        index = whole_chunk(self.shape, self.chunk_shape, origin, values.shape)
        write_chunk(self.path, index, self.chunk_shape, values)
        return chunk_path(self.path, index)


class ZarrLayout(StoreLayout):
    """A Zarr store of the tensors, each array with its chunk shape (refused here, before
    anything exists, if the store would need more than ``MAX_CHUNKS`` chunk files)."""

    def __init__(self, request: WriteRequest) -> None:
        super().__init__(request)
        self.chunk_shapes = tuple(_chunk_shapes(request.tensors, request.chunk_shapes))

    def create(self, temporary: TemporaryDirectory, presize: bool) -> list[Place]:
        # Chunk files start empty either way: a chunk is written whole, at once.
        directories = create_store(
            temporary.path,
            self.tensors,
            self.chunk_shapes,
            self.document(),
            temporary.directory_mode,
            temporary.file_mode,
        )
        return [
            ZarrPlace(directory, info.shape, chunk_shape, info.dtype)
            for directory, info, chunk_shape in zip(
                directories, self.tensors, self.chunk_shapes, strict=True
            )
        ]


# --- reading (every store is untrusted) -----------------------------------------------


class StoreError(UnreadableFile):
    """A store vsgen refuses to read; ``entry`` is the offending path inside it."""

    def __init__(self, store: str, entry: Sequence[str], problem: str) -> None:
        self.entry = os.path.join(*entry) if entry else ""
        self.problem = problem
        where = os.path.join(store, self.entry) if self.entry else store
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> Any:
        # Crosses processes (a cluster's workers) as the plain refusal it is.
        return UnreadableFile, (str(self),)


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _load_node(store: str, parts: tuple[str, ...], display: str) -> dict[str, Any]:
    """The ``zarr.json`` at ``parts`` below ``store``: a regular file (never a link,
    FIFO or device) of at most ``MAX_NODE_BYTES``, bounded JSON, a Zarr v3 node."""
    entry = (*parts, _METADATA_FILE)
    path = os.path.join(store, *entry)
    try:
        kind = os.lstat(path).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISLNK(kind)):
            raise StoreError(display, entry, f"is {describe_file_kind(kind)}, not a file")
        descriptor = os.open(path, _FLAGS | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise StoreError(display, entry, "missing (every Zarr node has one)") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StoreError(display, entry, "is a symbolic link; refusing to follow it") from None
        raise StoreError(display, entry, f"cannot be read: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(display, entry, f"is {describe_file_kind(info.st_mode)}, not a file")
        os.set_blocking(descriptor, True)
        data = handle.read(MAX_NODE_BYTES + 1)
    return parse_node(data, display, entry)


def parse_node(data: bytes, display: str, entry: tuple[str, ...]) -> dict[str, Any]:
    """A ``zarr.json`` document (``entry`` of the store ``display``) read as at most
    ``MAX_NODE_BYTES + 1`` bytes: bounded JSON, a Zarr v3 node (StoreError if not)."""
    if len(data) > MAX_NODE_BYTES:
        raise StoreError(display, entry, f"is larger than {MAX_NODE_BYTES >> 20} MiB; refusing it")
    try:
        node = loads_json(data, "document")
    except ValueError as error:
        raise StoreError(display, entry, str(error).removeprefix("document: ")) from None
    if not isinstance(node, dict) or node.get("zarr_format") != 3:
        raise StoreError(display, entry, "not a Zarr v3 node (zarr_format must be 3)")
    if node.get("node_type") not in ("array", "group"):
        raise StoreError(display, entry, "node_type must be 'array' or 'group'")
    if not isinstance(node.get("attributes", {}), dict):
        raise StoreError(display, entry, "attributes must be an object")
    return node


class ZarrArray:
    """One array of a store as vsgen reads it: its layout, checked and bounded."""

    def __init__(
        self, store: str, name: str, parts: tuple[str, ...], node: Mapping[str, Any], display: str
    ) -> None:
        entry = (*parts, _METADATA_FILE)

        def refuse(problem: str) -> StoreError:
            return StoreError(display, entry, f"array {name[:200]!r}: {problem}")

        dtype_name = node.get("data_type")
        if dtype_name not in _ZARR_DTYPES:
            shown = dtype_name[:40] if isinstance(dtype_name, str) else type(dtype_name).__name__
            raise refuse(f"data type {shown!r} is not one vsgen writes")
        shape = node.get("shape")
        if not (
            isinstance(shape, list)
            and len(shape) <= MAX_RANK
            and all(_is_int(d, 0, _MAX_ELEMENTS) for d in shape)
        ):
            raise refuse(f"shape must be at most {MAX_RANK} non-negative integers below 2**63")
        if math.prod(shape) > _MAX_ELEMENTS:
            raise refuse("shape holds 2**63 values or more")
        grid = node.get("chunk_grid")
        configuration = grid.get("configuration") if isinstance(grid, dict) else None
        chunk_shape = configuration.get("chunk_shape") if isinstance(configuration, dict) else None
        if not (
            isinstance(grid, dict)
            and grid.get("name") == "regular"
            and isinstance(chunk_shape, list)
            and len(chunk_shape) == len(shape)
            and all(_is_int(c, 1, _MAX_ELEMENTS) for c in chunk_shape)
        ):
            raise refuse("only regular chunk grids of one positive extent per axis are read")
        if math.prod(chunk_shape) > _MAX_CHUNK_VALUES:
            raise refuse(f"chunks of {tuple(chunk_shape)} hold over 2**27 values")
        count = 1
        for extent, chunk in zip(shape, chunk_shape, strict=True):
            count *= -(-extent // chunk)
            if count > MAX_CHUNKS:
                raise refuse(
                    f"{tuple(shape)} in chunks of {tuple(chunk_shape)} is over {MAX_CHUNKS:,} "
                    "chunks (vsgen writes at most that many chunk files)"
                )
        dtype = _numpy_dtype(dtype_name)
        codecs = node.get("codecs")
        short = [{"name": "bytes"}]
        if codecs != _CODECS and not ((not shape or dtype.itemsize == 1) and codecs == short):
            raise refuse("codecs other than uncompressed little-endian bytes are not read")
        if node.get("chunk_key_encoding") not in (_KEY_ENCODING, {"name": "default"}):
            raise refuse("only the default '/' chunk key encoding is read")
        if node.get("storage_transformers", []) != []:
            raise refuse("storage transformers are not read")
        fill = node.get("fill_value", 0)
        if not isinstance(fill, (int, float)):
            raise refuse("fill_value must be a number")
        self.store = store
        self.display = display
        self.name = name
        self.parts = parts
        self.directory = os.path.join(store, *parts)
        self.shape = tuple(shape)
        self.chunk_shape = tuple(chunk_shape)
        self.dtype = dtype
        self.chunk_count = count if shape else 1
        self.attributes: dict[str, Any] = node.get("attributes", {})

    @property
    def info(self) -> TensorInfo:
        return TensorInfo(self.name, self.shape, self.dtype)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def chunk_bytes(self) -> int:
        """Bytes of every chunk file (edge chunks are padded to the full chunk)."""
        return math.prod(self.chunk_shape) * self.dtype.itemsize

    @property
    def in_rows(self) -> bool:
        """Chunks span whole trailing axes, so the chunks in order are the values in C order."""
        return self.chunk_shape[1:] == self.shape[1:]

    def chunk_values(
        self, max_values: int, first_chunk: int = 0
    ) -> Iterator[tuple[int, numpy.ndarray]]:
        """``(chunk, piece)``: the values chunk by chunk (storage order) from chunk
        number ``first_chunk`` on, each chunk's in-bounds values in C order in pieces
        of at most ``max_values`` values (one row of a wider chunk axis at a time).

        Raises:
            StoreError: a chunk file is missing, a link, not a regular file, or not
                exactly the chunk's bytes.
        """
        if self.size == 0:
            return
        max_values = max(1, int(max_values))
        stored = little_endian(self.dtype)
        counts = grid_counts(self.shape, self.chunk_shape)
        for number in range(first_chunk, self.chunk_count):
            index = _unravel(number, counts)
            _, extent = chunk_region(self.shape, self.chunk_shape, index)
            descriptor = self._open_chunk(index)
            try:
                for offset, count, cut in _pieces(self.chunk_shape, extent, max_values):
                    data = self._pread(
                        descriptor, count * stored.itemsize, offset * stored.itemsize
                    )
                    if len(data) != count * stored.itemsize:
                        raise self._refuse(index, "is truncated")
                    values = numpy.frombuffer(data, dtype=stored)
                    if cut is not None:
                        values = values.reshape(cut[0])[cut[1]].reshape(-1)
                    yield number, values.astype(self.dtype)
            finally:
                self._close(descriptor)

    # How a chunk is read (an object store's arrays read theirs by range requests).

    def _pread(self, handle: Any, size: int, offset: int) -> bytes:
        return os.pread(handle, size, offset)

    def _close(self, handle: Any) -> None:
        os.close(handle)

    def _refuse(self, index: Sequence[int], problem: str) -> StoreError:
        key = chunk_key(index)
        return StoreError(
            self.display, (*self.parts, *key), f"chunk of array {self.name[:200]!r} {problem}"
        )

    def _open_chunk(self, index: Sequence[int]) -> Any:
        """The chunk file, reached one directory at a time without following a link."""
        key = chunk_key(index)
        directory = os.open(self.directory, _FLAGS | getattr(os, "O_DIRECTORY", 0))
        try:
            for position, part in enumerate(key):
                last = position == len(key) - 1
                flags = _FLAGS | getattr(os, "O_NONBLOCK" if last else "O_DIRECTORY", 0)
                try:
                    if last:
                        # Judged before it is opened: a device or FIFO is never opened.
                        kind = os.stat(part, dir_fd=directory, follow_symlinks=False).st_mode
                        if not stat.S_ISREG(kind):
                            what = describe_file_kind(kind)
                            raise self._refuse(index, f"is {what}, not a file")
                    opened = os.open(part, flags, dir_fd=directory)
                except FileNotFoundError:
                    raise self._refuse(index, "is missing (vsgen writes every chunk)") from None
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR):
                        problem = (
                            "is reached through a symbolic link or a file; refusing to follow it"
                        )
                        raise self._refuse(index, problem) from None
                    raise
                os.close(directory)
                directory = opened
        except BaseException:
            os.close(directory)
            raise
        info = os.fstat(directory)
        if not stat.S_ISREG(info.st_mode):
            os.close(directory)
            raise self._refuse(index, f"is {describe_file_kind(info.st_mode)}, not a file")
        if info.st_size != self.chunk_bytes:
            os.close(directory)
            raise self._refuse(
                index, f"has {info.st_size:,} bytes; the chunk holds {self.chunk_bytes:,}"
            )
        os.set_blocking(directory, True)
        return directory


def _unravel(number: int, counts: Sequence[int]) -> tuple[int, ...]:
    """The grid index of the ``number``-th chunk in C order."""
    index = []
    for count in reversed(counts):
        number, position = divmod(number, count)
        index.append(position)
    return tuple(reversed(index))


def _pieces(
    chunk_shape: Sequence[int], extent: Sequence[int], max_values: int
) -> Iterator[tuple[int, int, Any]]:
    """``(offset, count, cut)`` of every read of a chunk's in-bounds values in C order:
    ``count`` stored values from value ``offset`` of the chunk file, then ``cut``
    (a shape and the slices of the in-bounds part; None: all of them). Whole rows of
    the chunk's first axis are read together when they fit ``max_values``; a wider
    row is split along the next axis, and so on, so no read exceeds ``max_values``."""

    def region(offset: int, dims: tuple[int, ...], cuts: tuple[int, ...]) -> Iterator:
        if not dims:
            yield offset, 1, None
            return
        inner = math.prod(dims[1:])
        if inner <= max_values:
            rows = max(1, max_values // inner)
            for first in range(0, cuts[0], rows):
                count = min(rows, cuts[0] - first)
                whole = cuts[1:] == dims[1:]
                cut = (
                    None
                    if whole
                    else ((count, *dims[1:]), (slice(None),) + tuple(slice(0, c) for c in cuts[1:]))
                )
                yield offset + first * inner, count * inner, cut
        else:
            for row in range(cuts[0]):
                yield from region(offset + row * inner, dims[1:], cuts[1:])

    yield from region(0, tuple(chunk_shape), tuple(extent))


class ZarrStore(NamedTuple):
    """A store as :func:`read_store` found it: its arrays (in the recorded order) and
    the node paths of its groups (the root's is ``()``), and the root's attributes."""

    path: str
    arrays: tuple[ZarrArray, ...]
    groups: tuple[tuple[str, ...], ...]
    attributes: dict[str, Any]


def read_store(store: str, display: str | None = None) -> ZarrStore:
    """Every node of the store ``store`` (``display`` names it in messages): the root
    array, or a group's arrays by name, at most ``MAX_NODES`` nodes, ``MAX_TENSORS``
    arrays and ``MAX_NODE_DEPTH`` levels. A symbolic link, FIFO, socket or device
    where a node could be is refused; other entries of a group are not nodes.

    Raises:
        StoreError: the store is not one vsgen reads (the message names the entry).
    """
    shown = store if display is None else display
    root = _load_node(store, (), shown)
    if root["node_type"] == "array":
        name = _root_array_name(store, root)
        return ZarrStore(store, (ZarrArray(store, name, (), root, shown),), (), root["attributes"])
    arrays: list[ZarrArray] = []
    groups: list[tuple[str, ...]] = [()]
    pending: list[tuple[str, ...]] = [()]
    nodes = 1
    while pending:
        parts = pending.pop()
        with os.scandir(os.path.join(store, *parts)) as entries:
            children = []
            for entry in entries:
                stop_if_cancelled()
                info = entry.stat(follow_symlinks=False)
                here = (*parts, entry.name)
                if stat.S_ISLNK(info.st_mode):
                    raise StoreError(shown, here, "is a symbolic link; refusing to follow it")
                if not stat.S_ISDIR(info.st_mode):
                    continue
                try:
                    kind = os.lstat(os.path.join(entry.path, _METADATA_FILE)).st_mode
                except FileNotFoundError:
                    continue  # not a node (a chunk directory of no array here, or foreign)
                if not stat.S_ISREG(kind):
                    what = describe_file_kind(kind)
                    raise StoreError(shown, (*here, _METADATA_FILE), f"is {what}, not a file")
                children.append(here)
        for here in sorted(children):
            nodes += 1
            if nodes > MAX_NODES or len(here) > MAX_NODE_DEPTH:
                problem = (
                    f"nested over {MAX_NODE_DEPTH} groups deep"
                    if len(here) > MAX_NODE_DEPTH
                    else f"the store holds over {MAX_NODES:,} nodes"
                )
                raise StoreError(shown, here, f"{problem}; refusing to read further")
            node = _load_node(store, here, shown)
            if node["node_type"] == "group":
                groups.append(here)
                pending.append(here)
            else:
                arrays.append(ZarrArray(store, "/".join(here), here, node, shown))
                if len(arrays) > MAX_TENSORS:
                    raise StoreError(shown, (), f"holds over {MAX_TENSORS:,} arrays")
    order = _recorded_order(root)
    position = {name: i for i, name in enumerate(order)}
    arrays.sort(key=lambda a: (position.get(a.name, len(position)), a.name))
    return ZarrStore(store, tuple(arrays), tuple(groups), root["attributes"])


def _recorded_order(root: Mapping[str, Any]) -> list[str]:
    document = root.get("attributes", {}).get("vsgen")
    tensors = document.get("tensors") if isinstance(document, dict) else None
    return [name for name in tensors if isinstance(name, str)] if isinstance(tensors, dict) else []


def _root_array_name(store: str, node: Mapping[str, Any]) -> str:
    recorded = _recorded_order(node)
    if len(recorded) == 1 and recorded[0]:
        return recorded[0]
    stem = os.path.splitext(os.path.basename(os.path.normpath(store)))[0]
    return stem or "weight"


def _metadata(found: ZarrStore) -> dict[str, str]:
    """The root's ``vsgen`` attribute as the string other formats store (``{}`` if none)."""
    if "vsgen" not in found.attributes:
        return {}
    text = json.dumps(found.attributes["vsgen"], sort_keys=True, separators=(",", ":"))
    return {"vsgen": text}


def read_metadata(store: str) -> dict[str, str]:
    """The root's ``vsgen`` attribute as the string other formats store (``{}`` if none)."""
    root = _load_node(store, (), store)
    if "vsgen" not in root.get("attributes", {}):
        return {}
    text = json.dumps(root["attributes"]["vsgen"], sort_keys=True, separators=(",", ":"))
    return {"vsgen": text}


def _zarr_values(
    tensor: StoredTensor, chunk_size: int, any_order: bool, start: int = 0
) -> Iterator[numpy.ndarray]:
    """The values of an opened array; from the chunk that holds flat index ``start``
    on (arrays chunked in whole rows), the first piece cut to begin at ``start``."""
    array: ZarrArray = tensor.source
    # Chunks of whole rows are stored in C order; tiles only chunk by chunk.
    if not any_order and not array.in_rows:
        raise UnreadableFile(
            f"{tensor.path}: array {tensor.name!r} is chunked in tiles {array.chunk_shape}; "
            "only arrays chunked in whole rows are read in order"
        )
    first_chunk = position = 0
    if start and array.shape:
        chunk_values = math.prod(array.chunk_shape)
        first_chunk = start // chunk_values
        position = first_chunk * chunk_values
    for _, piece in array.chunk_values(chunk_size, first_chunk):
        if position < start:
            skip = min(piece.size, start - position)
            position += skip
            piece = piece[skip:]
            if piece.size == 0:
                continue
        yield piece


# --- what --force may replace --------------------------------------------------------------


class StoreJudge:
    """What vsgen wrote in a store, from its own metadata (:func:`read_store`): the
    nodes' ``zarr.json``, the node directories, each array's ``c`` directories and
    chunk files at the keys of its grid (decimal numbers in range), each exactly the
    chunk's bytes. Anything else is not vsgen's."""

    def __init__(self, found: ZarrStore) -> None:
        self._groups = set(found.groups)
        self._arrays = {array.parts: array for array in found.arrays}

    def _in_array(self, parts: tuple[str, ...]) -> tuple[ZarrArray, tuple[str, ...]] | None:
        for depth in range(len(parts) - 1, -1, -1):
            array = self._arrays.get(parts[:depth])
            if array is not None:
                key = parts[depth:]
                return (array, key) if key[0] == "c" else None
        return None

    @staticmethod
    def _index(array: ZarrArray, key: tuple[str, ...]) -> bool:
        """Whether ``key[1:]`` are the leading decimal indices of a chunk of the grid."""
        counts = grid_counts(array.shape, array.chunk_shape)
        for axis, text in enumerate(key[1:]):
            if axis >= len(counts) or not (text.isascii() and text.isdigit()):
                return False
            if str(int(text)) != text or int(text) >= counts[axis]:
                return False
        return True

    def directory(self, parts: tuple[str, ...]) -> str | None:
        if parts in self._groups or parts in self._arrays:
            return None
        found = self._in_array(parts)
        if found is not None:
            array, key = found
            # Directories: c and every index but the last (a scalar's c is a file).
            if array.shape and len(key) <= len(array.shape) and self._index(array, key):
                return None
        return "not part of the store"

    def file(self, parts: tuple[str, ...], size: int, path: str) -> str | None:
        if parts[-1] == _METADATA_FILE and (
            parts[:-1] in self._groups or parts[:-1] in self._arrays
        ):
            return None
        found = self._in_array(parts)
        if found is None:
            return "not part of the store"
        array, key = found
        if len(key) != len(array.shape) + 1 or not self._index(array, key):
            return "not a chunk of the store"
        if size != array.chunk_bytes:
            return f"{size:,} bytes; vsgen writes {array.chunk_bytes:,} per chunk"
        return None


# --- the format ------------------------------------------------------------------------


class ZarrFormat(StoreFormat):
    """Zarr v3: array names are paths (groups), float16/32/64 and bfloat16 (integer
    and bool types for copied tensors), regular chunks."""

    label = ".zarr"
    keeps_metadata = True
    holds_bfloat16 = True
    holds_complex = False
    commit_syncs = (".json",)
    replace_words = "a Zarr store vsgen wrote"

    def check_names(self, tensors: Sequence[TensorInfo], target: str = "-") -> None:
        super().check_names(tensors, target)
        check_no_group_clash(tensors, "an array and a group in zarr")

    def check_name(self, name: str) -> None:
        check_path_name(name, self.name)

    def check_dtypes(self, tensors: Sequence[TensorInfo]) -> None:
        super().check_dtypes(tensors)
        for info in tensors:
            if info.dtype.name not in _ZARR_DTYPES:
                raise ValueError(
                    f"dtype {info.dtype.name} cannot be stored in .zarr (Zarr v3 has no such "
                    "type); use --format safetensors-sharded, .safetensors or --format raw"
                )

    def plan(self, request: WriteRequest) -> ZarrLayout:
        return ZarrLayout(request)

    def judge(self, path: str, display: str) -> StoreJudge:
        """The store's own metadata says what vsgen wrote; NotOwned if it is unreadable."""
        try:
            return StoreJudge(read_store(path, display))
        except StoreError as error:
            raise NotOwned(str(error), error.entry, error.problem) from None
        except OSError as error:
            raise NotOwned(str(error), "", error.strerror or str(error)) from None

    def holds(self, directory: str) -> bool:
        """Whether ``directory`` is a directory with a ``zarr.json`` at its root (not
        through a link: such a store is refused when it is opened)."""
        return os.path.isdir(directory) and os.path.lexists(os.path.join(directory, _METADATA_FILE))

    def open(self, path: str) -> TensorFile:
        """A Zarr v3 store vsgen wrote (the module docstring says what is read)."""
        found = read_store(path)
        tensors = tuple(
            StoredTensor(
                path,
                self.name,
                array.name,
                array.shape,
                array.dtype.name,
                array.dtype.itemsize,
                reader=self,
                source=array,
            )
            for array in found.arrays
        )
        return TensorFile(path, self.name, tensors, _metadata(found))

    def read_metadata(self, path: str) -> dict[str, str]:
        return read_metadata(path)

    def values(
        self, tensor: StoredTensor, chunk_size: int, any_order: bool
    ) -> Iterator[numpy.ndarray]:
        return _zarr_values(tensor, chunk_size, any_order)

    def values_from(self, tensor: StoredTensor, start: int) -> Iterator[numpy.ndarray]:
        """The values in C order from flat index ``start`` (skipping whole chunks)."""
        return _zarr_values(tensor, 1 << 20, False, start)
