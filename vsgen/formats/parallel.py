"""Outputs written in parallel: the client lays out, many writers fill, the client commits.

:func:`open_parallel_output` checks the target as :func:`vsgen.formats.open_output`
does, then creates the whole output as a hidden temporary beside it, laid out by
its format (headers written, files sized to their final length with
``ftruncate``, Zarr metadata and empty chunk files made). It returns a
:class:`ParallelOutput` whose ``places`` say where each tensor's values go.
Writers, in any process or on any machine that sees the same file system, call
:func:`write_block` with a block of a tensor; they open existing files only
(``O_WRONLY``, never ``O_CREAT``), write their byte ranges with ``os.pwrite`` (a
block written twice, by a retried task, leaves the same bytes), and remember what
they wrote; a writer that outlives an abandoned job cannot recreate a removed
temporary. Before committing, every writer process runs :func:`sync_written` once
(an ``fsync`` per file it wrote: correct on shared file systems too, where only
the writer can flush its data, and cheaper than one ``fsync`` per block, which
stalls the writer while the disk catches up). Finally the client's
:meth:`ParallelOutput.commit` syncs and renames the temporary into place, or
:meth:`ParallelOutput.abort` removes it: the life cycle of every output
(:mod:`vsgen.formats.atomic`). An existing target is untouched until the rename
and replaced only with ``force``.

Every format can be written so: one file (``npy``, ``raw``, ``safetensors``,
``h5``), a directory of ``.npy`` (``npydir``), a Zarr store (``zarr``) or sharded
safetensors (``safetensors-sharded``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy

from vsgen.dtypes import TensorInfo
from vsgen.formats import registry
from vsgen.formats.atomic import AtomicFile, StagedOutput, TemporaryDirectory, preflight
from vsgen.formats.base import Place, check_output, lay_out
from vsgen.formats.sharded import DEFAULT_MAX_SHARD_SIZE

__all__ = [
    "ParallelOutput",
    "Place",
    "TaskResult",
    "forget_written",
    "note_written",
    "open_parallel_output",
    "reopen_parallel_output",
    "sync_written",
    "write_block",
]


class TaskResult(NamedTuple):
    """What a task of parallel writers reports: the values it wrote, the CRC-32 of
    their bytes (resumable jobs, :mod:`vsgen.resume`), and receipts its output needs
    at the commit (an object store's part tags)."""

    values: int
    checksum: int | None = None
    receipts: tuple[Any, ...] = ()


def write_block(place: Place, origin: Sequence[int], values: numpy.ndarray) -> None:
    """Write ``values``, the block of the tensor at ``origin``, where ``place`` says.

    A file's block is written as its contiguous runs at their offsets (one write
    when the block spans whole trailing axes); a Zarr block must be exactly one
    chunk (its in-bounds part). The caller runs :func:`sync_written` in this
    process before committing.

    Raises:
        FileNotFoundError: the temporary output is gone (the job was abandoned).
        ValueError: the block does not fit the place.
    """
    written = place.write(origin, values)
    if written is not None:
        with _unsynced_lock:
            _unsynced.add(written)


#: Files this process wrote and has not synced yet (writers run in many threads).
_unsynced: set[str] = set()
_unsynced_lock = threading.Lock()


def _take_unsynced(root: str) -> list[str]:
    prefix = os.path.join(root, "")
    with _unsynced_lock:
        paths = [path for path in _unsynced if path == root or path.startswith(prefix)]
        _unsynced.difference_update(paths)
    return paths


def sync_written(root: str, between: Callable[[], None] | None = None) -> int:
    """``fsync`` every file under ``root`` that this process wrote; return how many.

    Files that are gone (an abandoned job) are skipped. ``between()`` is called before
    each file (it may raise to stop: a cancelled job).
    """
    paths = _take_unsynced(root)
    for path in sorted(paths):
        if between is not None:
            between()
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
    _take_unsynced(root)


class ParallelOutput(StagedOutput):
    """A temporary output laid out for parallel writers; see the module docstring."""

    def __init__(
        self,
        target: str,
        fmt: str,
        tensors: Sequence[TensorInfo],
        temporary: AtomicFile | TemporaryDirectory,
        places: Sequence[Place],
    ) -> None:
        super().__init__(target, fmt, tensors, temporary)
        self.temp = temporary.path
        self.places = tuple(places)


def open_parallel_output(
    target: str,
    fmt: str,
    tensors: Sequence[TensorInfo],
    *,
    force: bool = False,
    metadata: Mapping[str, str] | None = None,
    tensor_metadata: Mapping[str, Mapping[str, str]] | None = None,
    chunk_shapes: Sequence[Sequence[Any] | None] | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    companions: Mapping[str, bytes] | None = None,
    at: str | None = None,
) -> ParallelOutput:
    """Check ``target`` and lay out its temporary for parallel writers.

    ``fmt`` is any format of :mod:`vsgen.formats.registry`. ``metadata`` (as for
    ``open_output``: ``{"vsgen": json}``) is kept by h5, safetensors, zarr (as
    attributes) and safetensors-sharded (per shard); ``tensor_metadata`` (by
    tensor name) becomes each HDF5 dataset's attributes. ``chunk_shapes`` gives the
    Zarr chunk shape of each tensor (None: about 64 MiB of whole trailing axes).
    ``max_shard_size`` is in bytes. ``companions`` (sharded safetensors only: name ->
    bytes, e.g. ``config.json``) are written beside the shards and recorded in the index
    as vsgen's, so ``--force`` may replace them later. ``at`` names the temporary (a
    resumable job's, :mod:`vsgen.resume`; default: a fresh random name).

    Raises:
        ValueError: bad arguments, a dtype the format cannot hold, or an existing
            target without ``force`` (or one ``force`` may not replace).
        OSError: the directory is not writable, too little free space, or
            creating the temporary failed.
    """
    spec = registry.get(fmt)
    if target == "-":
        raise ValueError(f"format {fmt!r} cannot be written in parallel to standard output")
    request = check_output(
        target,
        spec,
        tensors,
        metadata,
        tensor_metadata,
        chunk_shapes=chunk_shapes,
        max_shard_size=max_shard_size,
        companions=companions,
    )
    layout = spec.plan(request)
    temporary, places = lay_out(target, spec, layout, force, presize=True, at=at)
    return ParallelOutput(target, spec.name, request.tensors, temporary, places)


def reopen_parallel_output(
    target: str,
    fmt: str,
    tensors: Sequence[TensorInfo],
    places: Sequence[Place],
    at: str,
    *,
    force: bool = False,
    needed: int = 0,
) -> ParallelOutput:
    """The laid-out temporary ``at`` of an unfinished job (:mod:`vsgen.resume`) as a
    :class:`ParallelOutput` again, with the ``places`` its layout made. ``target`` is
    checked as :func:`open_parallel_output` checks it (``needed``: bytes still to come)."""
    spec = registry.get(fmt)
    path = os.path.abspath(target)
    old = preflight(
        target,
        path,
        directory=spec.directory,
        force=force,
        needed=needed,
        refuse_replacing=spec.refuse_replacing,
    )
    temporary = spec.temporary(path, target, force, old, at=at, reopen=True)
    return ParallelOutput(target, spec.name, tuple(tensors), temporary, places)


def note_written(path: str) -> None:
    """Have :func:`sync_written` sync ``path`` too (a file an earlier process wrote and
    this one checked: its data may still be in the page cache)."""
    with _unsynced_lock:
        _unsynced.add(path)
