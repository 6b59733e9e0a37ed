"""Outputs written in parallel: the client lays out, many writers fill, the client commits.

:func:`open_parallel_output` checks the target as :func:`vsgen.formats.open_output`
does, then creates the whole output as a hidden temporary beside it: headers
written, files sized to their final length (``ftruncate``), Zarr metadata and
empty chunk files made. It returns a :class:`ParallelOutput` whose ``places``
say where each tensor's values go. Writers, in any process or on any machine
that sees the same file system, call :func:`write_block` with a block of a
tensor; they open existing files only (``O_WRONLY``, never ``O_CREAT``), write
their byte ranges with ``os.pwrite`` (a block written twice, by a retried task,
leaves the same bytes), and remember what they wrote; a writer that outlives an
abandoned job cannot recreate a removed temporary. Before committing, every
writer process runs :func:`sync_written` once (an ``fsync`` per file it wrote:
correct on shared file systems too, where only the writer can flush its data,
and cheaper than one ``fsync`` per block, which stalls the writer while the disk
catches up). Finally the client's
:meth:`ParallelOutput.commit` syncs and renames the temporary into place, or
:meth:`ParallelOutput.abort` removes it; an existing target is untouched until
the rename and replaced only with ``force``.

Formats: ``npy``, ``raw``, ``safetensors``, ``h5`` (one file), ``npydir`` (a
directory of ``.npy``), ``zarr`` (see :mod:`vsgen.formats.zarr_format`) and
``safetensors-sharded`` (see :mod:`vsgen.formats.sharded`).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy

from vsgen.fans import auto_block_shape, block_runs, block_start, check_block
from vsgen.formats import sharded, zarr_format
from vsgen.formats.atomic import (
    AtomicFile,
    exists_message,
    fsync_directory,
    install_directory,
    pwrite_all,
    remove_quietly,
    temp_path,
)
from vsgen.formats.headers import npy_header, safetensors_header, safetensors_layout
from vsgen.formats.output import (
    _H5_OVERHEAD,
    _H5_OVERHEAD_PER_TENSOR,
    _create_h5_or_discard,
    _io_error,
    _little_endian_bytes,
    _preflight,
    format_bytes,
)
from vsgen.formats.tensors import (
    TensorInfo,
    check_dtypes,
    check_metadata,
    check_names,
)

DIRECTORY_FORMATS = ("zarr", "safetensors-sharded", "npydir")
PARALLEL_FORMATS = ("npy", "raw", "safetensors", "h5", "npydir", "zarr", "safetensors-sharded")


@dataclass(frozen=True)
class FilePlace:
    """A tensor stored C-order, little-endian, from byte ``offset`` of the file ``path``."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: numpy.dtype


@dataclass(frozen=True)
class ZarrPlace:
    """A tensor stored as the Zarr array in ``directory`` with chunks of ``chunk_shape``."""

    directory: str
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: numpy.dtype


Place = FilePlace | ZarrPlace


def write_block(place: Place, origin: Sequence[int], values: numpy.ndarray) -> None:
    """Write ``values``, the block of the tensor at ``origin``, where ``place`` says.

    For a :class:`FilePlace` the block's contiguous runs are written at their
    offsets (one write when the block spans whole trailing axes). For a
    :class:`ZarrPlace` the block must be exactly one chunk (its in-bounds part).
    The caller runs :func:`sync_written` in this process before committing.

    Raises:
        FileNotFoundError: the temporary output is gone (the job was abandoned).
        ValueError: the block does not fit the place.
    """
    origin = tuple(int(o) for o in origin)
    if isinstance(place, ZarrPlace):
        index = tuple(o // c for o, c in zip(origin, place.chunk_shape, strict=True))
        expected_origin, extent = zarr_format.chunk_region(place.shape, place.chunk_shape, index)
        if expected_origin != origin or tuple(values.shape) != extent:
            raise ValueError(
                f"a Zarr block must be one whole chunk: got origin {origin} and shape "
                f"{values.shape}, chunk {index} is at {expected_origin} with shape {extent}"
            )
        zarr_format.write_chunk(place.directory, index, place.chunk_shape, values)
        _remember(zarr_format.chunk_path(place.directory, index))
        return
    values = numpy.ascontiguousarray(values)
    check_block(values.shape, origin, place.shape)
    if values.size == 0:
        return
    itemsize = place.dtype.itemsize
    data = _little_endian_bytes(values.reshape(-1))
    fd = os.open(place.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        run, outer_shape, outer_strides = block_runs(values.shape, place.shape)
        base = place.offset + block_start(origin, place.shape) * itemsize
        run_bytes = run * itemsize
        for position, outer in enumerate(numpy.ndindex(*outer_shape)):
            offset = base + sum(i * s for i, s in zip(outer, outer_strides, strict=True)) * itemsize
            pwrite_all(fd, data[position * run_bytes : (position + 1) * run_bytes], offset)
    finally:
        os.close(fd)
    _remember(place.path)


#: Files this process wrote and has not synced yet (writers run in many threads).
_unsynced: set[str] = set()
_unsynced_lock = threading.Lock()


def _remember(path: str) -> None:
    with _unsynced_lock:
        _unsynced.add(path)


def sync_written(root: str) -> int:
    """``fsync`` every file under ``root`` that this process wrote; return how many.

    Files that are gone (an abandoned job) are skipped.
    """
    prefix = os.path.join(root, "")
    with _unsynced_lock:
        paths = [path for path in _unsynced if path == root or path.startswith(prefix)]
        _unsynced.difference_update(paths)
    for path in sorted(paths):
        try:
            fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(paths)


def forget_written(root: str) -> None:
    """Drop what :func:`sync_written` would sync under ``root`` (an aborted job)."""
    prefix = os.path.join(root, "")
    with _unsynced_lock:
        _unsynced.difference_update(
            [path for path in _unsynced if path == root or path.startswith(prefix)]
        )


class ParallelOutput:
    """A temporary output laid out for parallel writers; see the module docstring."""

    def __init__(
        self,
        target: str,
        fmt: str,
        tensors: Sequence[TensorInfo],
        places: Sequence[Place],
        temp: str,
        force: bool,
        atomic: AtomicFile | None,
    ) -> None:
        self.target = target
        self.format = fmt
        self.tensors = tuple(tensors)
        self.places = tuple(places)
        self.temp = temp
        self._force = force
        self._atomic = atomic
        self._state = "open"
        self._finalizer = weakref.finalize(self, remove_quietly, temp)

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def __enter__(self) -> ParallelOutput:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if self._state == "open":
            self.abort()

    def commit(self) -> None:
        """Sync everything and move the temporary into place (atomically for files)."""
        if self._state != "open":
            raise ValueError(f"output {self.target!r} is already {self._state}")
        final = os.path.abspath(self.target)
        try:
            if self._atomic is not None:
                self._atomic.install()
            else:
                _sync_tree(self.temp)
                install_directory(
                    self.temp, final, self.target, self._force, _replace_check(self.format)
                )
                fsync_directory(os.path.dirname(final) or ".")
        except BaseException as error:
            self.abort()
            if isinstance(error, OSError):
                raise _io_error(error, self.target) from error
            raise
        self._finalizer.detach()
        self._state = "committed"

    def abort(self) -> None:
        """Remove the temporary; the target stays as it was. Idempotent."""
        if self._state == "committed":
            return
        self._state = "aborted"
        if self._atomic is not None:
            self._atomic.discard()
        self._finalizer()


def _sync_tree(root: str) -> None:
    # Writers synced their data; metadata, headers and the directories remain.
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith((".json", ".npy", ".safetensors")):
                fd = os.open(os.path.join(directory, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_directory(directory)


def _replace_check(fmt: str) -> Callable[[str], None] | None:
    """What a committed Zarr store or shard directory may replace (None: npydir's rule)."""
    replaceable = {
        "zarr": zarr_format.is_replaceable,
        "safetensors-sharded": sharded.is_replaceable,
    }.get(fmt)
    if replaceable is None:
        return None

    def check(path: str) -> None:
        if not replaceable(path):
            raise ValueError(
                f"output {path!r} changed during the run and holds more than vsgen's "
                "output; it was left in place"
            )

    return check


def _preflight_directory(target: str, path: str, fmt: str, force: bool, needed: int) -> None:
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise ValueError(
            f"directory {os.path.dirname(target) or '.'!r} of output {target!r} does not exist"
        )
    if os.path.lexists(path):
        if not force:
            raise ValueError(exists_message(target, True))
        replaceable = {
            "zarr": zarr_format.is_replaceable,
            "safetensors-sharded": sharded.is_replaceable,
        }[fmt](path)
        if not replaceable:
            what = "a Zarr store" if fmt == "zarr" else "sharded safetensors and their index"
            raise ValueError(
                f"output {target!r} exists and holds more than {what}; --force only replaces "
                "an earlier output of the same kind: choose another name"
            )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"directory {parent!r} is not writable")
    free = shutil.disk_usage(parent).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"not enough free space for {target!r}: needs {format_bytes(needed)}, "
            f"{format_bytes(free)} free in {parent!r}",
        )


def _make_temp_directory(path: str, target: str) -> str:
    for _ in range(100):
        temp = temp_path(path)
        try:
            os.mkdir(temp, 0o777)
        except FileExistsError:
            continue
        return temp
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary directory for {target!r}")


def _sized_file(path: str, prefix: bytes, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        pwrite_all(fd, memoryview(prefix), 0)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def open_parallel_output(
    target: str,
    fmt: str,
    tensors: Sequence[TensorInfo],
    *,
    metadata: Mapping[str, str] | None = None,
    tensor_metadata: Mapping[str, Mapping[str, str]] | None = None,
    force: bool = False,
    chunk_shapes: Sequence[Sequence[int] | None] | None = None,
    max_shard_size: int = sharded.DEFAULT_MAX_SHARD_SIZE,
) -> ParallelOutput:
    """Check ``target`` and lay out its temporary for parallel writers.

    ``fmt`` is one of :data:`PARALLEL_FORMATS`. ``metadata`` (as for
    ``open_output``: ``{"vsgen": json}``) is kept by h5, safetensors, zarr (as
    attributes) and safetensors-sharded (per shard); ``tensor_metadata`` (by
    tensor name) becomes each HDF5 dataset's attributes. ``chunk_shapes`` gives the Zarr
    chunk shape of each tensor (None: about 64 MiB of whole trailing axes).
    ``max_shard_size`` is in bytes.

    Raises:
        ValueError: bad arguments, a dtype the format cannot hold, or an existing
            target without ``force`` (or one ``force`` may not replace).
        OSError: the directory is not writable, too little free space, or
            creating the temporary failed.
    """
    if fmt not in PARALLEL_FORMATS:
        raise ValueError(
            f"Argument `fmt` must be one of {', '.join(PARALLEL_FORMATS)}. Received: fmt={fmt!r}"
        )
    tensors = tuple(tensors)
    if not tensors or not all(isinstance(info, TensorInfo) for info in tensors):
        raise ValueError("Argument `tensors` must hold at least one TensorInfo.")
    if target == "-":
        raise ValueError(f"format {fmt!r} cannot be written in parallel to standard output")
    if fmt == "npy" and len(tensors) > 1:
        raise ValueError(f"a .npy file holds one tensor, got {len(tensors)}")
    metadata = check_metadata(metadata)
    check_names(tensors, "h5" if fmt in ("zarr", "npydir") else fmt)
    if fmt == "zarr":
        zarr_format.check_dtypes(tensors)
    elif fmt == "safetensors-sharded":
        check_dtypes(tensors, "safetensors")
        check_names(tensors, "safetensors")
    else:
        check_dtypes(tensors, fmt)
    path = os.path.abspath(target)
    data_bytes = sum(info.nbytes for info in tensors)

    if fmt in ("zarr", "safetensors-sharded"):
        overhead = 4096 * (len(tensors) + 1) + sum(len(v) for v in metadata.values()) * 2
        _preflight_directory(target, path, fmt, force, data_bytes + overhead)
        if fmt == "zarr":
            return _directory_output(
                target,
                path,
                fmt,
                force,
                tensors,
                lambda temp: _lay_out_zarr(temp, tensors, metadata, chunk_shapes),
            )
        return _directory_output(
            target,
            path,
            fmt,
            force,
            tensors,
            lambda temp: _lay_out_shards(temp, tensors, metadata, max_shard_size),
        )

    if fmt == "npydir":
        needed = data_bytes + sum(len(npy_header(info)) for info in tensors)
        _preflight(target, path, fmt, force, needed)
        return _directory_output(
            target, path, fmt, force, tensors, lambda temp: _lay_out_npydir(temp, tensors)
        )

    if fmt == "safetensors":
        relative = safetensors_layout(tensors)
        prefix = safetensors_header(tensors, relative, metadata)
        offsets = [len(prefix) + offset for offset in relative]
    elif fmt == "npy":
        prefix = npy_header(tensors[0])
        offsets = [len(prefix)]
    else:
        prefix = b""
        offsets = list(itertools.accumulate((info.nbytes for info in tensors[:-1]), initial=0))
    needed = len(prefix) + data_bytes
    if fmt == "h5":
        needed += _H5_OVERHEAD + len(tensors) * _H5_OVERHEAD_PER_TENSOR
    _preflight(target, path, fmt, force, needed)
    try:
        atomic = AtomicFile(path, target, force)
    except OSError as error:
        raise _io_error(error, target) from error
    try:
        if fmt == "h5":
            offsets = _create_h5_or_discard(atomic, tensors, metadata, tensor_metadata or {})
            size = max(
                [os.path.getsize(atomic.path)]
                + [offset + info.nbytes for offset, info in zip(offsets, tensors, strict=True)]
            )
        else:
            atomic.file.write(prefix)
            atomic.file.flush()
            size = len(prefix) + data_bytes
        os.ftruncate(atomic.file.fileno(), size)
    except BaseException as error:
        atomic.discard()
        if isinstance(error, OSError):
            raise _io_error(error, target) from error
        raise
    places = [
        FilePlace(atomic.path, offset, info.shape, info.dtype)
        for offset, info in zip(offsets, tensors, strict=True)
    ]
    return ParallelOutput(target, fmt, tensors, places, atomic.path, force, atomic)


def _directory_output(
    target: str,
    path: str,
    fmt: str,
    force: bool,
    tensors: tuple[TensorInfo, ...],
    lay_out: Callable[[str], list[Place]],
) -> ParallelOutput:
    """A ParallelOutput into a new temporary directory beside ``path``, laid out
    by ``lay_out(temp)``; if laying out fails, the temporary is removed and an
    OSError is reported as ``_io_error`` names it."""
    try:
        temp = _make_temp_directory(path, target)
    except OSError as error:
        raise _io_error(error, target) from error
    try:
        places = lay_out(temp)
    except BaseException as error:
        remove_quietly(temp)
        if isinstance(error, OSError):
            raise _io_error(error, target) from error
        raise
    return ParallelOutput(target, fmt, tensors, places, temp, force, None)


def _lay_out_npydir(temp: str, tensors: Sequence[TensorInfo]) -> list[Place]:
    """One pre-sized ``<name>.npy`` per tensor (``/`` in a name makes subdirectories)."""
    places: list[Place] = []
    for info in tensors:
        file_path = os.path.join(temp, *info.name.split("/")) + ".npy"
        os.makedirs(os.path.dirname(file_path), exist_ok=True)
        header = npy_header(info)
        _sized_file(file_path, header, len(header) + info.nbytes)
        places.append(FilePlace(file_path, len(header), info.shape, info.dtype))
    return places


def _lay_out_zarr(
    temp: str,
    tensors: Sequence[TensorInfo],
    metadata: Mapping[str, str],
    chunk_shapes: Sequence[Sequence[int] | None] | None,
) -> list[Place]:
    document = json.loads(metadata["vsgen"]) if "vsgen" in metadata else {}
    shapes = []
    for index, info in enumerate(tensors):
        given = None if chunk_shapes is None else chunk_shapes[index]
        if given is None:
            shapes.append(auto_block_shape(info.shape, info.dtype.itemsize))
        else:
            shapes.append(zarr_format.check_chunk_shape(info.shape, given))
    directories = zarr_format.create_store(temp, tensors, shapes, document)
    return [
        ZarrPlace(directory, info.shape, chunk_shape, info.dtype)
        for directory, info, chunk_shape in zip(directories, tensors, shapes, strict=True)
    ]


def _lay_out_shards(
    temp: str,
    tensors: Sequence[TensorInfo],
    metadata: Mapping[str, str],
    max_shard_size: int,
) -> list[Place]:
    document = json.loads(metadata["vsgen"]) if "vsgen" in metadata else None
    shards = sharded.split_shards(tensors, max_shard_size)
    places: list[Place | None] = [None] * len(tensors)
    for number, members in enumerate(shards, start=1):
        infos = [tensors[i] for i in members]
        relative = safetensors_layout(infos)
        shard_meta = sharded.shard_metadata(document, [info.name for info in infos])
        prefix = safetensors_header(infos, relative, shard_meta)
        file_path = os.path.join(temp, sharded.shard_name(number, len(shards)))
        _sized_file(file_path, prefix, len(prefix) + sum(info.nbytes for info in infos))
        for index, offset in zip(members, relative, strict=True):
            info = tensors[index]
            places[index] = FilePlace(file_path, len(prefix) + offset, info.shape, info.dtype)
    index_path = os.path.join(temp, sharded.INDEX_NAME)
    text = json.dumps(sharded.index_document(tensors, shards), indent=2) + "\n"
    _sized_file(index_path, text.encode("utf-8"), len(text.encode("utf-8")))
    return [place for place in places if place is not None]


def shard_groups(output: ParallelOutput) -> list[list[int]]:
    """Tensor indices grouped by the file they are written to, in order."""
    groups: dict[str, list[int]] = {}
    for index, place in enumerate(output.places):
        key = place.path if isinstance(place, FilePlace) else place.directory
        groups.setdefault(key, []).append(index)
    return list(groups.values())
