"""Zarr v3 stores (``.zarr``): laid out by the client, chunks filled by whoever
computes them (:mod:`vsgen.blockwrite`; a store is never streamed).

What vsgen writes (and the only kind of store it reads back):

- ``zarr_format`` 3, ``regular`` chunk grid, ``default`` chunk keys with the ``/``
  separator (chunk (i, j) of an array lives in ``c/i/j``; a scalar's in ``c``),
  ``fill_value`` 0, and the single codec ``bytes`` (little-endian): a chunk file is
  the chunk's values in C order, edge chunks padded with zeros to the full chunk
  shape. No compression: weights made from a random stream do not compress.
- One tensor: the store's root is the array. Several: the root is a group and
  each tensor an array under its name (``/`` in a name makes nested groups).
- Provenance: the attribute ``vsgen`` of the root (array or group) holds the same
  document that ``.h5``/``.safetensors`` files keep as a string (a JSON object
  here); each array of a group holds the document restricted to itself.

The client writes the metadata (plain JSON), then every chunk directory and an
empty file per chunk; writing needs no ``zarr`` package (reading with it does).
Writers only ever open existing chunk files (never create a name), so a writer
still running after the job was abandoned and its temporary store removed cannot
bring any of it back. ``--force`` replaces only a directory holding a Zarr store.

Reading (every store is untrusted): only what vsgen writes; metadata documents and
chunks are bounded, symbolic links are not followed and chunk files must lie
inside the store.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy

from vsgen._limits import read_capped
from vsgen.dtypes import TensorInfo
from vsgen.fans import auto_block_shape
from vsgen.formats.atomic import TemporaryDirectory, pwrite_all
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
)

_METADATA_FILE = "zarr.json"
#: Readers refuse metadata documents larger than this, and chunks of more values
#: than that (writers too, so vsgen reads every store it writes): a reader holds at
#: most one row of a chunk at once, so this bounds its memory (1 GiB of float64).
_MAX_METADATA_BYTES = 16 << 20
_MAX_CHUNK_VALUES = 1 << 27
#: Readers visit at most this many nodes of a group (hostile stores stay bounded).
_MAX_NODES = 1 << 16
_ZARR_DTYPES = ("float16", "float32", "float64")


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
    counts = [math.ceil(d / c) for d, c in zip(shape, chunk_shape, strict=True)]
    yield from numpy.ndindex(*counts)


def chunk_region(
    shape: Sequence[int], chunk_shape: Sequence[int], index: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(origin, extent)`` of chunk ``index`` inside the array (edge chunks are cut)."""
    origin = tuple(i * c for i, c in zip(index, chunk_shape, strict=True))
    extent = tuple(min(c, d - o) for c, d, o in zip(chunk_shape, shape, origin, strict=True))
    return origin, extent


def chunk_path(array_dir: str, index: Sequence[int]) -> str:
    return os.path.join(array_dir, "c", *(str(i) for i in index))


def array_dir(store: str, name: str | None) -> str:
    return store if name is None else os.path.join(store, *name.split("/"))


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
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": dict(attributes),
        "storage_transformers": [],
    }


def _write_node(directory: str, node: Mapping[str, Any]) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, _METADATA_FILE)
    with open(path, "x", encoding="utf-8") as handle:
        json.dump(node, handle, indent=2, sort_keys=True)
        handle.write("\n")


def create_store(
    store: str,
    tensors: Sequence[TensorInfo],
    chunk_shapes: Sequence[tuple[int, ...]],
    document: Mapping[str, Any],
) -> list[str]:
    """Lay out a store in the existing empty directory ``store``.

    ``document`` is the provenance document (``provenance.file_metadata`` parsed):
    the root gets all of it, each array of a group its own tensor's part. The
    metadata is plain JSON, written here (the ``zarr`` package reads it back; the
    tests check that). Creates every chunk file, empty. Returns each tensor's
    array directory.
    """
    root_attributes = {"vsgen": dict(document)} if document else {}
    if len(tensors) == 1:
        info, chunk_shape = tensors[0], chunk_shapes[0]
        _write_node(store, _array_node(info, chunk_shape, root_attributes))
        _create_chunk_files(store, info.shape, chunk_shape)
        return [store]
    _write_node(store, {"zarr_format": 3, "node_type": "group", "attributes": root_attributes})
    groups = {""}
    directories = []
    for info, chunk_shape in zip(tensors, chunk_shapes, strict=True):
        parts = info.name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in groups:
                groups.add(parent)
                node = {"zarr_format": 3, "node_type": "group", "attributes": {}}
                _write_node(os.path.join(store, *parts[:depth]), node)
        own = {key: value for key, value in document.items() if key != "tensors"}
        own["tensors"] = {info.name: document.get("tensors", {}).get(info.name)}
        directory = array_dir(store, info.name)
        _write_node(directory, _array_node(info, chunk_shape, {"vsgen": own} if document else {}))
        _create_chunk_files(directory, info.shape, chunk_shape)
        directories.append(directory)
    return directories


def _create_chunk_files(directory: str, shape: Sequence[int], chunk_shape: Sequence[int]) -> None:
    made: set[str] = set()
    for index in chunk_indices(shape, chunk_shape):
        path = chunk_path(directory, index)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def write_chunk(
    directory: str, index: Sequence[int], chunk_shape: Sequence[int], values: numpy.ndarray
) -> None:
    """Write the values of chunk ``index`` (its in-bounds part) into its existing file.

    Edge chunks are padded with zeros to the full chunk shape. The caller syncs
    the file (``vsgen.formats.parallel`` does, once per job and writer process).
    Raises FileNotFoundError if the store has been removed meanwhile.
    """
    if tuple(values.shape) != tuple(chunk_shape):
        padded = numpy.zeros(tuple(chunk_shape), dtype=values.dtype)
        padded[tuple(slice(0, e) for e in values.shape)] = values
        values = padded
    data = numpy.ascontiguousarray(values)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    payload = memoryview(data.reshape(-1).view(numpy.uint8).data)
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
        ValueError: per-axis block lists (Zarr grids are regular), or a chunk shape
            that does not fit the array or holds more than 2**27 values.
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
        origin = tuple(int(o) for o in origin)
        index = tuple(o // c for o, c in zip(origin, self.chunk_shape, strict=True))
        expected_origin, extent = chunk_region(self.shape, self.chunk_shape, index)
        if expected_origin != origin or tuple(values.shape) != extent:
            raise ValueError(
                f"a Zarr block must be one whole chunk: got origin {origin} and shape "
                f"{values.shape}, chunk {index} is at {expected_origin} with shape {extent}"
            )
        write_chunk(self.path, index, self.chunk_shape, values)
        return chunk_path(self.path, index)


class ZarrLayout(StoreLayout):
    """A Zarr store of the tensors, each array with its chunk shape."""

    def __init__(self, request: WriteRequest) -> None:
        super().__init__(request)
        self.chunk_shapes = tuple(_chunk_shapes(request.tensors, request.chunk_shapes))

    def create(self, temporary: TemporaryDirectory, presize: bool) -> list[Place]:
        # Chunk files start empty either way: a chunk is written whole, at once.
        shapes = self.chunk_shapes
        directories = create_store(temporary.path, self.tensors, shapes, self.document())
        return [
            ZarrPlace(directory, info.shape, chunk_shape, info.dtype)
            for directory, info, chunk_shape in zip(
                directories, self.tensors, self.chunk_shapes, strict=True
            )
        ]


# --- reading (every store is untrusted) -----------------------------------------------


def _load_node(directory: str, where: str) -> dict[str, Any]:
    path = os.path.join(directory, _METADATA_FILE)
    if os.path.islink(path):
        raise ValueError(f"{where}: zarr.json is a symbolic link; refusing to follow it")
    with open(path, "rb") as handle:
        text = read_capped(handle, _MAX_METADATA_BYTES, f"{where}: zarr.json")
    try:
        node = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{where}: zarr.json is not valid JSON") from None
    if not isinstance(node, dict) or node.get("zarr_format") != 3:
        raise ValueError(f"{where}: not a Zarr v3 node (zarr_format must be 3)")
    if node.get("node_type") not in ("array", "group"):
        raise ValueError(f"{where}: node_type must be 'array' or 'group'")
    return node


class ZarrArrayInfo:
    """What a reader needs of one array: where it is and how its chunks are laid out."""

    def __init__(self, store: str, name: str, directory: str, node: Mapping[str, Any]) -> None:
        where = f"{store}: array {name!r}"
        dtype_name = node.get("data_type")
        if dtype_name not in _ZARR_DTYPES:
            raise ValueError(f"{where}: data type {dtype_name!r} is not float16/32/64")
        shape = node.get("shape")
        grid = node.get("chunk_grid")
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ValueError(f"{where}: malformed shape {shape!r}")
        try:
            assert isinstance(grid, dict) and grid.get("name") == "regular"
            chunk_shape = grid["configuration"]["chunk_shape"]
            assert isinstance(chunk_shape, list) and len(chunk_shape) == len(shape)
            assert all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in chunk_shape
            )
        except (AssertionError, KeyError, TypeError):
            raise ValueError(f"{where}: only regular chunk grids are read") from None
        codecs = node.get("codecs")
        if codecs != [{"name": "bytes", "configuration": {"endian": "little"}}] and not (
            not shape
            and codecs
            in ([{"name": "bytes"}], [{"name": "bytes", "configuration": {"endian": "little"}}])
        ):
            raise ValueError(
                f"{where}: codecs {codecs!r} are not read (vsgen writes uncompressed, "
                "little-endian chunks)"
            )
        encoding = node.get("chunk_key_encoding")
        if encoding not in (
            {"name": "default", "configuration": {"separator": "/"}},
            {"name": "default"},
        ):
            raise ValueError(f"{where}: only the default '/' chunk key encoding is read")
        if math.prod(chunk_shape) > _MAX_CHUNK_VALUES:
            raise ValueError(f"{where}: chunks of {chunk_shape} are too large to read")
        fill = node.get("fill_value", 0)
        if not isinstance(fill, (int, float)) or isinstance(fill, bool):
            raise ValueError(f"{where}: fill_value {fill!r} is not a number")
        self.store = store
        self.name = name
        self.directory = directory
        self.shape = tuple(shape)
        self.chunk_shape = tuple(chunk_shape)
        self.dtype = numpy.dtype(dtype_name)
        self.fill_value = float(fill)
        attributes = node.get("attributes", {})
        self.attributes = attributes if isinstance(attributes, dict) else {}

    @property
    def info(self) -> TensorInfo:
        return TensorInfo(self.name, self.shape, self.dtype)

    def chunk_values(self, max_values: int) -> Iterator[numpy.ndarray]:
        """The array's values chunk by chunk (storage order), in pieces of bounded size.

        A chunk is read in slabs along its first axis; missing chunk files are the
        fill value. Chunk files must be regular files inside the store.
        """
        if not self.shape:
            yield self._read_chunk_slab((), 0, 1).reshape(1)
            return
        if math.prod(self.shape) == 0:
            return
        inner = math.prod(self.chunk_shape[1:])
        slab_rows = max(1, max_values // max(1, inner))
        for index in chunk_indices(self.shape, self.chunk_shape):
            _, extent = chunk_region(self.shape, self.chunk_shape, index)
            for first in range(0, extent[0], slab_rows):
                rows = min(slab_rows, extent[0] - first)
                slab = self._read_chunk_slab(index, first, rows)
                slab = slab.reshape(rows, *self.chunk_shape[1:])
                cut = slab[(slice(None),) + tuple(slice(0, e) for e in extent[1:])]
                yield numpy.ascontiguousarray(cut).reshape(-1)

    def _read_chunk_slab(self, index: Sequence[int], first_row: int, rows: int) -> numpy.ndarray:
        inner = math.prod(self.chunk_shape[1:]) if self.shape else 1
        count = rows * inner
        path = (
            chunk_path(self.directory, index) if self.shape else os.path.join(self.directory, "c")
        )
        stored = self.dtype.newbyteorder("<")
        if not os.path.lexists(path):
            return numpy.full(count, self.fill_value, dtype=self.dtype)
        real_store = os.path.realpath(self.store)
        if os.path.islink(path) or not os.path.realpath(path).startswith(real_store + os.sep):
            raise ValueError(f"{self.store}: chunk file {path!r} leaves the store; refusing it")
        if not os.path.isfile(path):
            raise ValueError(f"{self.store}: chunk {path!r} is not a regular file")
        expected = math.prod(self.chunk_shape) * stored.itemsize if self.shape else stored.itemsize
        if os.path.getsize(path) != expected:
            raise ValueError(
                f"{self.store}: chunk file {path!r} has {os.path.getsize(path)} bytes, "
                f"expected {expected}"
            )
        with open(path, "rb") as handle:
            handle.seek(first_row * inner * stored.itemsize)
            values = numpy.fromfile(handle, dtype=stored, count=count)
        if values.size != count:
            raise ValueError(f"{self.store}: chunk file {path!r} is truncated")
        return values.astype(self.dtype)


def read_arrays(store: str) -> list[ZarrArrayInfo]:
    """The arrays of a store vsgen can read: the root array, or a group's arrays by name.

    Symbolic links are not followed; at most 65,536 nodes are visited.
    """
    root = _load_node(store, store)
    if root["node_type"] == "array":
        name = _root_array_name(store, root)
        return [ZarrArrayInfo(store, name, store, root)]
    arrays: list[ZarrArrayInfo] = []
    visited = 0
    pending = [""]
    while pending:
        relative = pending.pop(0)
        directory = os.path.join(store, *relative.split("/")) if relative else store
        for entry in sorted(os.listdir(directory)):
            child = os.path.join(directory, entry)
            # Chunk directories ("c") hold no zarr.json; a child node named "c" does.
            if os.path.islink(child) or not os.path.isdir(child):
                continue
            if not os.path.isfile(os.path.join(child, _METADATA_FILE)):
                continue
            visited += 1
            if visited > _MAX_NODES:
                raise ValueError(f"{store}: more than {_MAX_NODES} nodes; refusing to read it")
            name = f"{relative}/{entry}" if relative else entry
            node = _load_node(child, f"{store}: {name}")
            if node["node_type"] == "group":
                pending.append(name)
            else:
                arrays.append(ZarrArrayInfo(store, name, child, node))
    order = _recorded_order(root)
    if order:
        position = {name: i for i, name in enumerate(order)}
        arrays.sort(key=lambda a: (position.get(a.name, len(position)), a.name))
    return arrays


def _recorded_order(root: Mapping[str, Any]) -> list[str]:
    document = root.get("attributes", {})
    document = document.get("vsgen") if isinstance(document, dict) else None
    tensors = document.get("tensors") if isinstance(document, dict) else None
    return list(tensors) if isinstance(tensors, dict) else []


def _root_array_name(store: str, node: Mapping[str, Any]) -> str:
    recorded = _recorded_order(node)
    if len(recorded) == 1 and isinstance(recorded[0], str) and recorded[0]:
        return recorded[0]
    stem = os.path.splitext(os.path.basename(os.path.normpath(store)))[0]
    return stem or "weight"


def read_metadata(store: str) -> dict[str, str]:
    """The root's ``vsgen`` attribute as the string other formats store (``{}`` if none)."""
    root = _load_node(store, store)
    attributes = root.get("attributes", {})
    if not isinstance(attributes, dict) or "vsgen" not in attributes:
        return {}
    return {"vsgen": json.dumps(attributes["vsgen"], sort_keys=True, separators=(",", ":"))}


def _zarr_values(tensor: StoredTensor, chunk_size: int, any_order: bool) -> Iterator[numpy.ndarray]:
    try:
        arrays = {array.name: array for array in read_arrays(tensor.path)}
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


# --- the format ------------------------------------------------------------------------


class ZarrFormat(StoreFormat):
    """Zarr v3: array names are paths (groups), float16/32/64 only, regular chunks."""

    label = ".zarr"
    keeps_metadata = True
    holds_complex = False
    commit_syncs = (".json",)
    store_words = "a Zarr store"

    def check_names(self, tensors: Sequence[TensorInfo], target: str = "-") -> None:
        super().check_names(tensors, target)
        check_no_group_clash(tensors, "an array and a group in zarr")

    def check_name(self, name: str) -> None:
        check_path_name(name, self.name)

    def check_dtypes(self, tensors: Sequence[TensorInfo]) -> None:
        for info in tensors:
            if info.dtype.name not in _ZARR_DTYPES:
                raise ValueError(
                    f"dtype {info.dtype.name} cannot be stored in .zarr (Zarr v3 has no bfloat16 "
                    "type); use --format safetensors-sharded, .safetensors or --format raw"
                )

    def plan(self, request: WriteRequest) -> ZarrLayout:
        return ZarrLayout(request)

    def is_replaceable(self, path: str) -> bool:
        """True for a directory holding only a Zarr store: what ``--force`` may replace."""
        if os.path.islink(path) or not os.path.isfile(os.path.join(path, _METADATA_FILE)):
            return False
        for root, directories, files in os.walk(path):
            in_chunks = "c" in os.path.relpath(root, path).split(os.sep)
            for name in files + directories:
                if os.path.islink(os.path.join(root, name)):
                    return False
            if not in_chunks and any(name != _METADATA_FILE for name in files):
                return False
        return True

    def holds(self, directory: str) -> bool:
        """Whether ``directory`` is a directory with a Zarr v3 ``zarr.json`` at its root."""
        return os.path.isdir(directory) and os.path.isfile(os.path.join(directory, _METADATA_FILE))

    def open(self, path: str) -> TensorFile:
        """A Zarr v3 store vsgen wrote (the module docstring says what is read)."""
        try:
            arrays = read_arrays(path)
            metadata = read_metadata(path)
        except (ValueError, OSError) as error:
            raise UnreadableFile(str(error)) from None
        tensors = tuple(
            StoredTensor(
                path, self.name, a.name, a.shape, a.dtype.name, a.dtype.itemsize, reader=self
            )
            for a in arrays
        )
        return TensorFile(path, self.name, tensors, metadata)

    def values(
        self, tensor: StoredTensor, chunk_size: int, any_order: bool
    ) -> Iterator[numpy.ndarray]:
        return _zarr_values(tensor, chunk_size, any_order)
