"""Object stores, write side: Zarr stores and sharded safetensors at any fsspec URL,
with no shared file system (``s3://bucket/ckpt.zarr``, ``gs://...``,
``memory://...``). :func:`open_output` is called by :func:`vsgen.blockwrite.write`:
the same tasks, on local threads or on a Dask cluster.


* A Zarr store is written through zarr-python's store API: each task sets its
  chunks' bytes (vsgen's own encoding, :func:`vsgen.formats.zarr.chunk_payload`) with
  ``Store.set``, in a ``zarr.storage.FsspecStore`` opened from the URL by every
  worker (or in any zarr ``Store`` object handed to the Python API). The nodes'
  ``zarr.json`` documents are written at the commit, the root's last.
* Each shard of sharded safetensors is one object. On S3 it is a multipart upload:
  the client starts it, each task uploads one part (a contiguous run of the shard's
  bytes, about 64 MiB, the first holding the header; every part but the last at
  least 5 MiB, at most 10,000 parts), and the client completes every upload at the
  commit. Other stores have no parts: each task writes its part as an object beside
  the shard (``.NAME.vsgen-part-TOKEN-00001``) and the commit joins them into the
  shard and removes them. Companion files, then the index, last.

**Atomicity.** An object store has no rename. What vsgen promises there: the output
appears only once complete (a Zarr store is not a store until its root
``zarr.json`` exists, sharded safetensors have no index until every shard is
complete, and no S3 shard exists before its upload completes); a failed or
interrupted job removes what it wrote (aborted uploads, deleted objects).
``--force``: the old output must hold only what vsgen wrote there (as on a file
system: its own metadata says what); an old Zarr store is deleted when the job
starts (its chunks would be overwritten one by one), old sharded safetensors at the
commit, their index first. So a job that fails after that leaves no output at all:
with ``--force`` on an object store the old output is not kept. Without ``--force``,
anything under the target's prefix is an existing target. Objects written under
the prefix by someone else during the run may be deleted with the job's.

Reading (``check``, ``--like``, ``--config-from``, ``describe`` of a URL) is
:mod:`vsgen.formats.remote`'s, which also says where credentials come from: only
fsspec's usual sources, never the URL.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy

from vsgen._limits import MAX_CHUNKS, MAX_NODES
from vsgen.dtypes import TensorInfo
from vsgen.fans import DEFAULT_BLOCK_BYTES, block_runs, block_start
from vsgen.formats.atomic import NotOwned, exists_message, stop_if_cancelled
from vsgen.formats.base import little_endian_bytes
from vsgen.formats.parallel import TaskResult
from vsgen.formats.remote import (
    bucket_of,
    check_url,
    filesystem,
    is_store,
    join,
    read_index,
    read_store,
    url_of,
)

__all__ = [
    "FORMATS",
    "PartTask",
    "RemoteOutput",
    "open_output",
    "preflight",
]

#: S3's rules for multipart uploads.
MIN_PART_BYTES = 5 << 20
MAX_PART_BYTES = 5 << 30
MAX_PARTS = 10_000
#: Bytes a part of a shard aims at (a task's, ``vsgen.blockwrite.TASK_BYTES``): every
#: part but a shard's last is at least this large, so at least S3's minimum.
PART_BYTES = DEFAULT_BLOCK_BYTES
#: Formats written to object stores.
FORMATS = ("zarr", "safetensors-sharded")


# --- the target ------------------------------------------------------------------------


class Old(NamedTuple):
    """An output at the target that ``force`` may replace: its objects, and its root
    document (deleted first)."""

    objects: tuple[str, ...]
    root: str


def preflight(target: str, fmt: str, force: bool, display: str | None = None) -> Old | None:
    """The checks before an output is written at the URL ``target``: the format is
    one vsgen writes there, the bucket exists, and anything under the target's prefix
    is an existing output, refused without ``force`` and with it unless it holds only
    what vsgen wrote (the survey of it is returned).

    Raises:
        ValueError: as :func:`vsgen.formats.atomic.preflight` (exit 2).
        OSError: the store cannot be reached.
    """
    shown = target if display is None else display
    if fmt not in FORMATS:
        raise ValueError(
            f"{shown}: to an object store vsgen writes .zarr stores and --format "
            f"safetensors-sharded, not {fmt}"
        )
    fs, path = filesystem(target)
    bucket = bucket_of(fs, path)
    if bucket is not None and not fs.exists(bucket):
        raise ValueError(f"bucket {bucket!r} of output {shown!r} does not exist")
    if not path or path == bucket:
        raise ValueError(f"output {shown!r} names a whole bucket; give a name inside it")
    fs.invalidate_cache(path)
    found = _objects(fs, path)
    if not found:
        return None
    if not force:
        raise ValueError(exists_message(shown, True))
    try:
        if fmt == "zarr":
            return _zarr_survey(fs, path, shown, found)
        return _sharded_survey(fs, path, shown, found)
    except NotOwned as refused:
        words = "a Zarr store vsgen wrote" if fmt == "zarr" else "sharded safetensors vsgen wrote"
        what = refused.reason or str(refused)
        if refused.entry:
            what = f"{shown.rstrip('/')}/{refused.entry}: {what}"
        raise NotOwned(
            f"output {shown!r} is not {words} ({what}); --force only replaces {words}: "
            "choose another name",
            refused.entry,
            refused.reason,
        ) from None


def _objects(fs: Any, path: str) -> dict[str, int]:
    """Every object under ``path`` (the object ``path`` itself included), by key
    relative to it, with its size (refused beyond what a store vsgen writes holds)."""
    with contextlib.suppress(FileNotFoundError):
        if fs.isfile(path):
            return {"": int(fs.size(path))}
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    if len(found) > MAX_CHUNKS + MAX_NODES:
        raise NotOwned("", "", f"more than {MAX_CHUNKS + MAX_NODES:,} objects")
    objects = {}
    for key, info in found.items():
        if info.get("type") == "directory":
            continue
        relative = key[len(path) :].lstrip("/")
        objects[relative] = int(info.get("size") or 0)
    return objects


def _zarr_survey(fs: Any, path: str, shown: str, objects: dict[str, int]) -> Old:
    from vsgen.formats.zarr import StoreError, StoreJudge

    try:
        judge = StoreJudge(read_store(fs, path, shown))
    except StoreError as error:
        raise NotOwned(str(error), error.entry, error.problem) from None
    for relative, size in sorted(objects.items()):
        stop_if_cancelled()
        parts = tuple(relative.split("/"))
        for depth in range(1, len(parts)):
            reason = judge.directory(parts[:depth])
            if reason is not None:
                raise NotOwned("", "/".join(parts[:depth]), reason)
        reason = judge.file(parts, size, "")
        if reason is not None:
            raise NotOwned("", relative, reason)
    return Old(tuple(join(path, key) for key in objects), join(path, "zarr.json"))


def _sharded_survey(fs: Any, path: str, shown: str, objects: dict[str, int]) -> Old:
    import hashlib

    from vsgen.formats.sharded import INDEX_NAME, MAX_COMPANION_BYTES

    index = read_index(fs, path, shown)
    if index.files is None:
        raise NotOwned("", INDEX_NAME, "an index without vsgen's record of its files")
    for file_name in index.weight_map.values():
        if file_name not in index.files:
            raise NotOwned("", file_name, "a shard the index names but vsgen did not record")
    for relative, size in sorted(objects.items()):
        if relative == INDEX_NAME:
            continue
        expected = index.files.get(relative)
        if expected is None:
            raise NotOwned("", relative, "not a file vsgen wrote (the index does not record it)")
        if size != expected[0]:
            raise NotOwned("", relative, f"{size:,} bytes; vsgen wrote {expected[0]:,}")
        if expected[1] is not None:
            data = fs.cat_file(
                join(path, relative), start=0, end=min(size, MAX_COMPANION_BYTES + 1)
            )
            if hashlib.sha256(data).hexdigest() != expected[1]:
                raise NotOwned("", relative, "changed since vsgen wrote it")
    return Old(tuple(join(path, key) for key in objects), join(path, INDEX_NAME))


# --- writing -------------------------------------------------------------------------------


class RemoteOutput:
    """An output being written to an object store, until :meth:`commit` or
    :meth:`abort` (leaving a ``with`` block without a commit aborts)."""

    def __init__(self, target: str, fmt: str, tensors: Sequence[TensorInfo]) -> None:
        self.target = target
        self.format = fmt
        self.tensors = tuple(tensors)
        #: What the runner is told the output is (workers see it through the URL).
        self.temp = target
        self.places: tuple[Any, ...] = ()
        self._state = "open"

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def __enter__(self) -> RemoteOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state == "open":
            self.abort()

    def commit(self) -> None:
        if self._state != "open":
            raise ValueError(f"output {self.target!r} is already {self._state}")
        try:
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._state = "committed"

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        with contextlib.suppress(Exception):
            self._abort()

    def keep(self) -> None:  # pragma: no cover - resume is refused for object stores
        self.abort()

    def receive_task(self, index: int, result: TaskResult) -> None:
        """What a finished task reports (the parts it uploaded)."""

    def _commit(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


def open_output(
    target: Any,
    fmt: str,
    layout: Any,
    *,
    force: bool = False,
    display: str | None = None,
) -> RemoteOutput:
    """The output of ``layout`` (a Zarr or shards layout) at the URL (or zarr
    ``Store``) ``target``, checked (:func:`preflight`) and begun.

    Raises:
        ValueError, OSError: as :func:`preflight`.
    """
    if is_store(target):
        return _ZarrOutput(target, None, "", layout, None, display or repr(target))
    shown = target if display is None else display
    old = preflight(target, fmt, force, shown)
    fs, path = filesystem(target)
    if fmt == "zarr":
        return _ZarrOutput(target, fs, path, layout, old, shown)
    return _ShardedOutput(target, fs, path, layout, old, shown)


# Zarr ------------------------------------------------------------------------------------

_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def _store(store: Any) -> Any:
    """A zarr store: the object itself, or the ``FsspecStore`` of a URL, opened once per
    process (every worker opens its own, with its own credentials)."""
    if not isinstance(store, str):
        return store
    with _stores_lock:
        opened = _stores.get(store)
        if opened is None:
            from zarr.storage import FsspecStore

            check_url(store)
            opened = _stores[store] = FsspecStore.from_url(store, read_only=False)
        return opened


def _set(store: Any, key: str, data: bytes | memoryview) -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buffer = default_buffer_prototype().buffer.from_bytes(memoryview(data).cast("B"))
    sync(_store(store).set(key, buffer))


class StorePlace(NamedTuple):
    """A tensor stored as the Zarr array at ``key`` of ``store`` (a URL or a zarr
    ``Store``), in chunks of ``chunk_shape``, written through the store's API."""

    store: Any
    key: str
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: numpy.dtype

    @property
    def path(self) -> str:
        where = self.store if isinstance(self.store, str) else "store"
        return join(where, self.key) if self.key else where

    @property
    def block_shape(self) -> tuple[int, ...] | None:
        return self.chunk_shape

    def write(self, origin: Sequence[int], values: numpy.ndarray) -> str | None:
        """Set one whole chunk (its in-bounds part) at ``origin``; nothing to sync.

        Raises:
            ValueError: the block is not exactly one chunk.
        """
        from vsgen.formats.zarr import chunk_key, chunk_payload, whole_chunk

        index = whole_chunk(self.shape, self.chunk_shape, origin, values.shape)
        _set(self.store, join(self.key, *chunk_key(index)), chunk_payload(values, self.chunk_shape))
        return None


class _ZarrOutput(RemoteOutput):
    def __init__(
        self, target: Any, fs: Any, path: str, layout: Any, old: Old | None, display: str
    ) -> None:
        from vsgen.formats.zarr import store_documents

        super().__init__(display, "zarr", layout.tensors)
        self.temp = target if isinstance(target, str) else f"zarr-store://{type(target).__name__}"
        self._target = target
        self._fs = fs
        self._documents = store_documents(layout.tensors, layout.chunk_shapes, layout.document())
        arrays = [(parts, node) for parts, node in self._documents if node["node_type"] == "array"]
        self.places = tuple(
            StorePlace(target, "/".join(parts), info.shape, chunk_shape, info.dtype)
            for (parts, _), info, chunk_shape in zip(
                arrays, layout.tensors, layout.chunk_shapes, strict=True
            )
        )
        if not isinstance(target, str):
            self._refuse_used_store(target, display)
        if old is not None:
            # Chunks are written in place: the old store goes when the new one starts,
            # its root first, so that no reader ever sees the two mixed.
            fs.rm_file(old.root)
            rest = [key for key in old.objects if key != old.root]
            if rest:
                fs.rm(rest)

    @staticmethod
    def _refuse_used_store(store: Any, display: str) -> None:
        from zarr.core.sync import sync

        async def first() -> list[str]:
            async for key in store.list_prefix(""):
                return [key]
            return []

        if sync(first()):
            raise ValueError(f"the zarr store {display} is not empty; give an empty one")

    def _commit(self) -> None:
        import json

        # Children first, the root's document last: the store exists once complete.
        for parts, node in [*self._documents[1:], self._documents[0]]:
            stop_if_cancelled()
            text = json.dumps(node, indent=2, sort_keys=True) + "\n"
            _set(self._target, join(*parts, "zarr.json"), text.encode("utf-8"))

    def _abort(self) -> None:
        from zarr.core.sync import sync

        sync(_store(self._target).delete_dir(""))


# Sharded safetensors --------------------------------------------------------------------


class PartPlace(NamedTuple):
    """A tensor stored from byte ``offset`` of the shard object ``path`` (a URL), which
    is written in parts (:class:`PartTask`), never block by block."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: numpy.dtype

    @property
    def block_shape(self) -> tuple[int, ...] | None:
        return None

    def write(self, origin: Sequence[int], values: numpy.ndarray) -> str | None:
        raise TypeError("a shard in an object store is written in parts (PartTask), not blocks")


@dataclass(frozen=True)
class S3Upload:
    """A multipart upload of the object ``key`` of ``bucket`` (``url`` opens the store)."""

    url: str
    bucket: str
    key: str
    upload_id: str

    @classmethod
    def start(cls, fs: Any, path: str) -> S3Upload:
        bucket, key, _ = fs.split_path(path)
        started = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        return cls(url_of(fs, path), bucket, key, str(started["UploadId"]))

    def put(self, number: int, data: bytes) -> tuple[int, str]:
        fs, _ = filesystem(self.url)
        done = fs.call_s3(
            "upload_part",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
        )
        return number, str(done["ETag"])

    def complete(self, fs: Any, receipts: dict[int, str]) -> None:
        parts = [{"PartNumber": n, "ETag": receipts[n]} for n in sorted(receipts)]
        fs.call_s3(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )

    def abort(self, fs: Any) -> None:
        fs.call_s3(
            "abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
        )


@dataclass(frozen=True)
class PartObjects:
    """Parts of the object ``path`` as objects beside it, joined at the commit (stores
    without multipart uploads)."""

    url: str
    path: str
    token: str

    @classmethod
    def start(cls, fs: Any, path: str) -> PartObjects:
        return cls(url_of(fs, path), path, os.urandom(6).hex())

    def _part(self, number: int) -> str:
        directory, name = self.path.rsplit("/", 1) if "/" in self.path else ("", self.path)
        return join(directory, f".{name}.vsgen-part-{self.token}-{number:05d}")

    def put(self, number: int, data: bytes) -> tuple[int, str]:
        fs, _ = filesystem(self.url)
        fs.pipe_file(self._part(number), data)
        return number, self._part(number)

    def complete(self, fs: Any, receipts: dict[int, str]) -> None:
        with fs.open(self.path, "wb") as joined:
            for number in sorted(receipts):
                stop_if_cancelled()
                joined.write(fs.cat_file(self._part(number)))
        fs.rm([self._part(number) for number in receipts])

    def abort(self, fs: Any) -> None:
        directory = self.path.rsplit("/", 1)[0] if "/" in self.path else ""
        name = self.path.rsplit("/", 1)[-1]
        pattern = join(directory, f".{name}.vsgen-part-{self.token}-*")
        left = fs.glob(pattern)
        if left:
            fs.rm(left)


@dataclass(frozen=True)
class PartTask:
    """One part of a shard: the bytes ``[start, end)`` of the object, made from its
    ``blocks`` (and the shard's header, ``prefix``, in the first part), uploaded at once."""

    upload: Any
    number: int
    start: int
    end: int
    prefix: bytes
    blocks: tuple[tuple[Any, PartPlace, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def values(self) -> int:
        return sum(math.prod(extent) for _, _, _, extent in self.blocks)

    def __call__(self, threads: int = 1, report: Callable[[int], None] | None = None) -> TaskResult:
        part = bytearray(self.end - self.start)
        part[: len(self.prefix)] = self.prefix
        for position, (source, place, origin, extent) in enumerate(self.blocks):
            values = source.block(origin, extent, threads)
            data = little_endian_bytes(numpy.ascontiguousarray(values).reshape(-1))
            at = place.offset + block_start(origin, place.shape) * place.dtype.itemsize - self.start
            part[at : at + len(data)] = data
            if report is not None and position + 1 < len(self.blocks):
                report(math.prod(extent))
        receipt = self.upload.put(self.number, bytes(part))
        return TaskResult(self.values, None, (receipt,))


def _contiguous(extent: Sequence[int], shape: Sequence[int]) -> bool:
    run, outer, _ = block_runs(tuple(extent), tuple(shape))
    return math.prod(outer) <= 1


class _ShardedOutput(RemoteOutput):
    def __init__(
        self, target: str, fs: Any, path: str, layout: Any, old: Old | None, display: str
    ) -> None:
        super().__init__(display, "safetensors-sharded", layout.tensors)
        self._fs = fs
        self._path = path
        self._old = old
        self._layout = layout
        self._shards = layout.files()
        places: list[Any] = [None] * len(layout.tensors)
        multipart = getattr(fs, "call_s3", None) is not None
        self._uploads: dict[str, Any] = {}
        for shard in self._shards:
            stop_if_cancelled()
            object_path = join(path, shard.name)
            upload = (S3Upload if multipart else PartObjects).start(fs, object_path)
            self._uploads[shard.name] = upload
            for index, offset in shard.starts:
                info = layout.tensors[index]
                places[index] = PartPlace(url_of(fs, object_path), offset, info.shape, info.dtype)
        self.places = tuple(places)
        self._receipts: dict[str, dict[int, str]] = {name: {} for name in self._uploads}
        self._part_of: dict[int, str] = {}
        self._completed: list[str] = []

    def make_tasks(self, groups: Sequence[Sequence[Any]]) -> list[PartTask]:
        """The parts of every shard, from the blocks of ``groups`` (each must be a
        contiguous run of its tensor: whole trailing axes)."""
        by_shard: dict[str, list[tuple[int, Any]]] = {shard.name: [] for shard in self._shards}
        shard_of = {place.path: name for name, place in self._paths()}
        for group in groups:
            for block in group:
                _, place, origin, extent = block
                if not _contiguous(extent, place.shape):
                    raise ValueError(
                        "Argument `chunks` must span whole trailing axes (e.g. rows of a "
                        "matrix) for sharded safetensors in an object store, where each "
                        f"part is a contiguous run of a shard. Received: chunks={tuple(extent)}"
                    )
                start = place.offset + block_start(origin, place.shape) * place.dtype.itemsize
                by_shard[shard_of[place.path]].append((start, block))
        tasks: list[PartTask] = []
        for shard in self._shards:
            blocks = sorted(by_shard[shard.name], key=lambda pair: pair[0])
            tasks.extend(self._parts(shard, blocks, len(tasks)))
        return tasks

    def _paths(self) -> Iterator[tuple[str, PartPlace]]:
        for shard in self._shards:
            for index, _ in shard.starts:
                yield shard.name, self.places[index]

    def _parts(self, shard: Any, blocks: list[tuple[int, Any]], first: int) -> list[PartTask]:
        upload = self._uploads[shard.name]
        parts: list[PartTask] = []
        start, members = 0, []
        for position, (_, block) in enumerate(blocks):
            members.append(block)
            end = blocks[position + 1][0] if position + 1 < len(blocks) else shard.size
            if end - start >= max(PART_BYTES, MIN_PART_BYTES) or position + 1 == len(blocks):
                parts.append(self._part(upload, len(parts) + 1, start, end, shard, members))
                start, members = end, []
        if not parts:  # a shard of empty tensors: its header alone
            parts.append(self._part(upload, 1, 0, shard.size, shard, []))
        for part in parts:
            self._part_of[first + part.number - 1] = shard.name
        return parts

    @staticmethod
    def _part(
        upload: Any, number: int, start: int, end: int, shard: Any, members: list
    ) -> PartTask:
        if number > MAX_PARTS or end - start > MAX_PART_BYTES:
            raise ValueError(
                f"shard {shard.name} would need parts of over {MAX_PART_BYTES >> 30} GiB or over "
                f"{MAX_PARTS:,} parts in an object store; give a smaller --max-shard-size "
                "or other --chunks"
            )
        prefix = shard.prefix if number == 1 else b""
        return PartTask(upload, number, start, end, prefix, tuple(members))

    def receive_task(self, index: int, result: TaskResult) -> None:
        """A task's receipts: the part it uploaded."""
        name = self._part_of[index]
        for number, receipt in result.receipts:
            self._receipts[name][int(number)] = str(receipt)

    def _commit(self) -> None:
        from vsgen.formats.sharded import INDEX_NAME

        fs = self._fs
        old = self._old
        if old is not None:
            fs.rm_file(old.root)  # the old checkpoint goes (its index first)
        for shard in self._shards:
            stop_if_cancelled()
            self._uploads[shard.name].complete(fs, self._receipts[shard.name])
            self._completed.append(shard.name)
        written = {join(self._path, shard.name) for shard in self._shards}
        if old is not None:
            stale = [key for key in old.objects if key not in written and key != old.root]
            if stale:
                fs.rm(stale)
        for name, data in self._layout.companions.items():
            fs.pipe_file(join(self._path, name), data)
        fs.pipe_file(join(self._path, INDEX_NAME), self._layout.index_text().encode("utf-8"))

    def _abort(self) -> None:
        fs = self._fs
        for upload in self._uploads.values():
            with contextlib.suppress(Exception):
                upload.abort(fs)
        # Shards the commit completed before it failed go too.
        for name in self._completed:
            with contextlib.suppress(Exception):
                fs.rm_file(join(self._path, name))
