"""Jobs that outlive a lost cluster: a kept temporary and a journal of finished tasks.

With ``resume=True`` (``vsgen sample --resume``), :func:`vsgen.blockwrite.write`
lays its output out under a name known in advance and keeps, beside it, a journal
of the tasks that finished::

    .NAME.vsgen-resume-KEY            the temporary (a file or a directory)
    .NAME.vsgen-resume-KEY.journal    what the temporary is, and what is done in it

``KEY`` is 16 hex digits of the SHA-256 of the job's identity (:func:`identity`:
the target, the format, vsgen's version, every tensor's stream, seed and options,
the chunks and the shard size). The journal is text: ``vsgen-resume 1``, then one
line of JSON (the identity, the layout's places, the number of tasks), then one
line per finished task, ``<task> <crc32>``, the CRC-32 of the bytes the task
wrote (its blocks' values, little-endian, in C order). When a job fails (a lost
cluster, a full disk, an interrupt) the temporary and the journal stay; the same
job run again with ``resume=True`` finds them by name, reads back each finished
task's bytes and compares their CRC-32 with the journal's (no values are
generated), writes again any task whose bytes differ, runs the rest, and commits:
the bytes are those of an uninterrupted run. The journal goes when the output is
in place.

A kept temporary is never taken for the litter of a dead run (its mark is not
``.vsgen-tmp-``), and a job that is not the kept one's is refused rather than
mixed into it. Only one run at a time holds a journal (an exclusive ``flock``).
The journal is read as untrusted (bounded sizes, a malformed line ends it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import stat
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy

from vsgen._limits import MAX_CHUNKS, loads_json
from vsgen.fans import block_runs, block_start
from vsgen.formats.atomic import remove_quietly, stop_if_cancelled
from vsgen.formats.base import FilePlace, little_endian_bytes

__all__ = [
    "MARK",
    "Journal",
    "checksum",
    "find_kept",
    "identity",
    "journal_path",
    "key_of",
    "kept_path",
    "places_from_json",
    "places_to_json",
    "read_block_bytes",
    "verify",
]

#: The mark of a kept temporary's name (``.NAME<MARK><KEY>``).
MARK = ".vsgen-resume-"
_JOURNAL = ".journal"
_FIRST_LINE = b"vsgen-resume 1\n"
#: Largest journal read: the header (places, identity) and a line per task.
MAX_JOURNAL_BYTES = 64 << 20
#: Seconds between two syncs of the journal while a job runs.
SYNC_SECONDS = 1.0
_KEY = re.compile(r"[0-9a-f]{16}")


# --- names ---------------------------------------------------------------------------


def key_of(document: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``document`` (canonical JSON)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _base(final: str) -> str:
    directory, name = os.path.split(final)
    return os.path.join(directory, f".{name}{MARK}")


def kept_path(final: str, key: str) -> str:
    """The kept temporary of the job ``key`` writing ``final`` (an absolute path)."""
    return _base(final) + key


def journal_path(final: str, key: str) -> str:
    """The journal beside :func:`kept_path`."""
    return kept_path(final, key) + _JOURNAL


def find_kept(final: str) -> list[str]:
    """Keys of the kept temporaries and journals beside ``final``, sorted."""
    directory, name = os.path.split(final)
    prefix = f".{name}{MARK}"
    keys = set()
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return []
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        rest = entry[len(prefix) :]
        rest = rest.removesuffix(_JOURNAL)
        if _KEY.fullmatch(rest):
            keys.add(rest)
    return sorted(keys)


# --- what a job is ---------------------------------------------------------------------


def _source_identity(source: Any) -> dict[str, Any]:
    """What makes one tensor's bytes: its stream and draw, constant, copied checkpoint
    (with the file's size and modification time), rows set after drawing, values held."""
    found: dict[str, Any] = {
        "name": source.name,
        "shape": list(source.shape),
        "dtype": str(source.dtype),
        "full_shape": list(source.full_shape),
        "row_offset": source.row_offset,
        "stream": source.stream,
        "draw": None if source.draw is None else repr(source.draw),
        "constant": source.constant,
        "set_rows": [list(pair) for pair in source.set_rows],
    }
    if source.copy_of is not None:
        path, name = source.copy_of
        signature = None
        if path is not None and "://" not in path:
            with contextlib.suppress(OSError):
                info = os.stat(path)
                signature = [info.st_size, info.st_mtime_ns]
        found["copy_of"] = [path, name, signature]
    if source.values is not None:
        values = numpy.ascontiguousarray(source.values)
        found["values"] = hashlib.sha256(values.view(numpy.uint8).data).hexdigest()
    return found


def identity(
    target: str,
    fmt: str,
    sources: Sequence[Any],
    metadata: Mapping[str, str],
    chunks: Any,
    max_shard_size: int,
) -> dict[str, Any]:
    """The identity of a block-written job: everything its bytes depend on."""
    from vsgen._version import __version__

    return {
        "vsgen": __version__,
        "target": os.path.abspath(target),
        "format": fmt,
        "metadata": dict(metadata),
        "tensors": [_source_identity(source) for source in sources],
        "chunks": None if chunks is None else [_plain(c) for c in chunks],
        "max_shard_size": max_shard_size,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return None if value is None else int(value)


def differences(kept: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """The fields in which two identities differ, in words (``seed, chunks``)."""
    fields = []
    for key in sorted(set(kept) | set(wanted)):
        if kept.get(key) != wanted.get(key):
            fields.append("vsgen version" if key == "vsgen" else key.replace("_", " "))
    return ", ".join(fields) or "its identity"


# --- places --------------------------------------------------------------------------


def places_to_json(places: Sequence[Any], temp: str) -> list[dict[str, Any]]:
    """The layout's places (where each tensor goes in the temporary ``temp``) as JSON."""
    documents = []
    for place in places:
        relative = os.path.relpath(place.path, temp)
        common = {"path": relative, "shape": list(place.shape), "dtype": place.dtype.name}
        if isinstance(place, FilePlace):
            documents.append({"kind": "file", "offset": place.offset, **common})
        else:
            documents.append({"kind": "zarr", "chunk_shape": list(place.chunk_shape), **common})
    return documents


def _dtype(name: object) -> numpy.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return numpy.dtype(ml_dtypes.bfloat16)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"not a dtype: {str(name)[:40]!r}")
    return numpy.dtype(name)


def _counts(values: object) -> tuple[int, ...]:
    if not isinstance(values, list) or len(values) > 64:
        raise ValueError("not a shape")
    if not all(type(v) is int and 0 <= v < 2**63 for v in values):
        raise ValueError("not a shape")
    return tuple(values)


def places_from_json(documents: object, temp: str) -> list[Any]:
    """The places :func:`places_to_json` wrote, under ``temp`` (ValueError if malformed
    or naming anything outside ``temp``)."""
    from vsgen.formats.zarr import ZarrPlace

    if not isinstance(documents, list):
        raise ValueError("places must be a list")
    places: list[Any] = []
    for document in documents:
        if not isinstance(document, dict):
            raise ValueError("a place must be an object")
        relative = document.get("path")
        if (
            not isinstance(relative, str)
            or os.path.isabs(relative)
            or ".." in relative.split(os.sep)
            or "\x00" in relative
        ):
            raise ValueError(f"place outside the temporary: {str(relative)[:80]!r}")
        path = os.path.normpath(os.path.join(temp, relative))
        shape = _counts(document.get("shape"))
        dtype = _dtype(document.get("dtype"))
        if document.get("kind") == "file":
            offset = document.get("offset")
            if type(offset) is not int or not 0 <= offset < 2**63:
                raise ValueError("a file place needs a byte offset")
            places.append(FilePlace(path, offset, shape, dtype))
        elif document.get("kind") == "zarr":
            chunk_shape = _counts(document.get("chunk_shape"))
            if len(chunk_shape) != len(shape) or 0 in chunk_shape:
                raise ValueError("a Zarr place needs a chunk shape of its rank")
            places.append(ZarrPlace(path, shape, chunk_shape, dtype))
        else:
            raise ValueError(f"unknown place kind {str(document.get('kind'))[:40]!r}")
    return places


# --- checksums -----------------------------------------------------------------------


def checksum(values: numpy.ndarray, crc: int = 0) -> int:
    """CRC-32 of ``values`` as files store them (little-endian, C order), continuing ``crc``."""
    return zlib.crc32(little_endian_bytes(numpy.ascontiguousarray(values).reshape(-1)), crc)


def read_block_bytes(place: Any, origin: Sequence[int], extent: Sequence[int]) -> bytes | None:
    """The bytes the block of ``extent`` at ``origin`` has in ``place`` (little-endian, C
    order, as :func:`checksum` sees them), or None if they cannot be read (a missing or
    short file)."""
    origin = tuple(int(o) for o in origin)
    extent = tuple(int(e) for e in extent)
    itemsize = place.dtype.itemsize
    try:
        fd = _open_place_file(place, origin)
    except OSError:
        return None
    try:
        if isinstance(place, FilePlace):
            if math.prod(extent) == 0:
                return b""
            run, outer_shape, outer_strides = block_runs(extent, place.shape)
            base = place.offset + block_start(origin, place.shape) * itemsize
            pieces = []
            for outer in numpy.ndindex(*outer_shape):
                offset = (
                    base + sum(i * s for i, s in zip(outer, outer_strides, strict=True)) * itemsize
                )
                piece = os.pread(fd, run * itemsize, offset)
                if len(piece) != run * itemsize:
                    return None
                pieces.append(piece)
            return b"".join(pieces)
        chunk_bytes = math.prod(place.chunk_shape) * itemsize
        data = os.pread(fd, chunk_bytes + 1, 0)
        if len(data) != chunk_bytes:
            return None
        cells = numpy.frombuffer(data, numpy.uint8).reshape(*place.chunk_shape, itemsize)
        inside = tuple(slice(0, e) for e in extent)
        return numpy.ascontiguousarray(cells[inside]).tobytes()
    finally:
        os.close(fd)


def _open_place_file(place: Any, origin: tuple[int, ...]) -> int:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if isinstance(place, FilePlace):
        path = place.path
    else:
        from vsgen.formats.zarr import chunk_path

        index = tuple(o // c for o, c in zip(origin, place.chunk_shape, strict=True))
        path = chunk_path(place.path, index)
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def verify(blocks: Iterable[tuple[Any, Any, Sequence[int], Sequence[int]]]) -> int | None:
    """The CRC-32 of a task's blocks as they are in their files now (None if a block
    cannot be read); each file read is noted for the commit's sync."""
    from vsgen.formats import parallel

    crc = 0
    for _, place, origin, extent in blocks:
        data = read_block_bytes(place, origin, extent)
        if data is None:
            return None
        crc = zlib.crc32(data, crc)
        if isinstance(place, FilePlace):
            parallel.note_written(place.path)
        else:
            from vsgen.formats.zarr import chunk_path

            index = tuple(o // c for o, c in zip(origin, place.chunk_shape, strict=True))
            parallel.note_written(chunk_path(place.path, index))
    return crc


# --- the journal ---------------------------------------------------------------------


class JournalError(ValueError):
    """A journal that cannot be used (malformed, or held by another run)."""


class Journal:
    """The journal of a kept temporary: its header (identity, places, task count) and the
    checksum of every finished task; held with an exclusive lock while open."""

    def __init__(self, path: str, fd: int, header: dict[str, Any], done: dict[int, int]) -> None:
        self.path = path
        self.header = header
        self.done = done
        self._fd = fd
        self._pending: list[str] = []
        self._synced = time.monotonic()

    @property
    def tasks(self) -> int:
        return int(self.header["tasks"])

    @classmethod
    def create(cls, path: str, header: Mapping[str, Any]) -> Journal:
        """A new journal at ``path`` with ``header`` (synced before it is returned)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o644)
        try:
            _lock(fd, path)
            text = json.dumps(dict(header), sort_keys=True, separators=(",", ":"))
            os.write(fd, _FIRST_LINE + text.encode("utf-8") + b"\n")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            remove_quietly(path)
            raise
        return cls(path, fd, dict(header), {})

    @classmethod
    def open(cls, path: str) -> Journal:
        """The journal at ``path``, locked (JournalError if it is malformed or another
        run holds it). A torn last line (a run that died mid-write) is ignored."""
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise JournalError(f"{path} is not a regular file")
            os.set_blocking(fd, True)
            _lock(fd, path)
            data = os.pread(fd, MAX_JOURNAL_BYTES + 1, 0)
            if len(data) > MAX_JOURNAL_BYTES:
                raise JournalError(f"{path} is larger than {MAX_JOURNAL_BYTES >> 20} MiB")
            header, done, good = _parse(path, data)
            # Drop a torn tail so that new lines start on a line of their own.
            os.ftruncate(fd, good)
            os.lseek(fd, good, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, header, done)

    def add(self, index: int, crc: int) -> None:
        """Record that task ``index`` finished with checksum ``crc`` (written by :meth:`sync`)."""
        if self.done.get(index) == crc:
            return
        self.done[index] = crc
        self._pending.append(f"{index} {crc:08x}\n")

    def sync(self, force: bool = False) -> None:
        """Write and ``fsync`` the new lines, at most once per :data:`SYNC_SECONDS`
        unless ``force``."""
        if not self._pending or (not force and time.monotonic() - self._synced < SYNC_SECONDS):
            return
        data = "".join(self._pending).encode("ascii")
        self._pending.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self._synced = time.monotonic()

    def close(self) -> None:
        """Write what is pending and release the journal (it stays in place)."""
        if self._fd < 0:
            return
        try:
            with contextlib.suppress(OSError):
                self.sync(force=True)
        finally:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Close and delete the journal (its output is in place, or was removed)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise JournalError(
                f"another run is finishing this job ({os.path.basename(path)} is in use)"
            ) from None
        raise


def _parse(path: str, data: bytes) -> tuple[dict[str, Any], dict[int, int], int]:
    """Header, finished tasks, and the length of the journal's whole lines."""
    name = os.path.basename(path)
    if not data.startswith(_FIRST_LINE):
        raise JournalError(f"{name} is not a vsgen resume journal")
    end = data.find(b"\n", len(_FIRST_LINE))
    if end < 0:
        raise JournalError(f"{name}: its header is incomplete")
    try:
        header = loads_json(data[len(_FIRST_LINE) : end], f"{name} header")
    except ValueError as error:
        raise JournalError(str(error)) from None
    tasks = header.get("tasks") if isinstance(header, dict) else None
    if type(tasks) is not int or not 0 <= tasks <= MAX_CHUNKS:
        raise JournalError(f"{name}: its header does not say how many tasks the job has")
    done: dict[int, int] = {}
    good = end + 1
    for line in data[good:].split(b"\n")[:-1]:
        parts = line.split(b" ")
        if (
            len(parts) != 2
            or not parts[0].isdigit()
            or len(parts[0]) > 8
            or len(parts[1]) != 8
            or not all(c in b"0123456789abcdef" for c in parts[1])
            or int(parts[0]) >= tasks
        ):
            break
        done[int(parts[0])] = int(parts[1], 16)
        good += len(line) + 1
    stop_if_cancelled()
    return header, done, good


# --- one resumable run -----------------------------------------------------------------


class Session:
    """The kept temporary and journal of one resumable job writing ``final``.

    :meth:`begin` finds what an earlier run of the same job kept (``journal`` is then
    open, and :meth:`places` says where the tensors are in the temporary ``temp``), or
    clears the way for a fresh start (``journal`` None until :meth:`start`).
    """

    def __init__(self, final: str, display: str, key: str, wanted: dict[str, Any]) -> None:
        self.final = final
        self.display = display
        self.key = key
        self.identity = wanted
        self.temp = kept_path(final, key)
        self.journal: Journal | None = None

    @classmethod
    def begin(cls, target: str, wanted: dict[str, Any]) -> Session:
        """The session of the job ``wanted`` (:func:`identity`) writing ``target``.

        Raises:
            ValueError: beside the target lies the kept temporary of another job
                (naming it and what differs), or a journal that cannot be used.
        """
        final = os.path.abspath(target)
        session = cls(final, target, key_of(wanted), wanted)
        for other in find_kept(final):
            if other != session.key:
                raise ValueError(session._other_job(other))
        journal = journal_path(final, session.key)
        has_temp = os.path.lexists(session.temp)
        if os.path.lexists(journal) and has_temp:
            try:
                session.journal = Journal.open(journal)
            except JournalError as error:
                raise ValueError(
                    f"cannot resume the job writing {target!r}: {error}; delete "
                    f"{os.path.basename(session.temp)} and its {_JOURNAL} to start afresh"
                ) from None
            if session.journal.header.get("identity") != wanted:
                session.journal.close()
                raise ValueError(
                    f"cannot resume the job writing {target!r}: "
                    f"{os.path.basename(journal)} records another job"
                )
        elif has_temp:
            # Laid out, but the run ended before its journal was made: nothing is done.
            _remove_kept(session.temp)
        elif os.path.lexists(journal):
            # The output was committed (or removed) just before the journal went.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(journal)
        return session

    def _other_job(self, other: str) -> str:
        name = os.path.basename(kept_path(self.final, other))
        what = "other arguments"
        with contextlib.suppress(OSError, ValueError):
            with open(journal_path(self.final, other), "rb") as handle:
                data = handle.read(MAX_JOURNAL_BYTES)
            header, done, _ = _parse(name, data)
            kept = header.get("identity")
            if isinstance(kept, dict):
                what = f"{len(done):,} of {header['tasks']:,} tasks done; it differs in " + (
                    differences(kept, self.identity)
                )
        return (
            f"output {self.display!r} has the unfinished job of another command kept beside "
            f"it ({name}: {what}); run that command again with --resume to finish it, or "
            f"delete {name} and {name}{_JOURNAL}"
        )

    @property
    def resuming(self) -> bool:
        return self.journal is not None

    def places(self) -> list[Any]:
        """Where the kept temporary holds each tensor (ValueError if the journal is malformed)."""
        assert self.journal is not None
        try:
            return places_from_json(self.journal.header.get("places"), self.temp)
        except ValueError as error:
            raise ValueError(
                f"cannot resume the job writing {self.display!r}: "
                f"{os.path.basename(self.journal.path)}: {error}"
            ) from None

    def start(self, places: Sequence[Any], tasks: int) -> None:
        """Begin the journal of a fresh run (after the temporary was laid out)."""
        header = {
            "identity": self.identity,
            "places": places_to_json(places, self.temp),
            "tasks": tasks,
            "pid": os.getpid(),
        }
        self.journal = Journal.create(journal_path(self.final, self.key), header)

    def done_message(self, library: bool) -> str:
        """``12 of 40 tasks done, kept beside the output: ...`` (the way to finish it)."""
        done = 0 if self.journal is None else len(self.journal.done)
        total = 0 if self.journal is None else self.journal.tasks
        how = (
            "call again with resume=True to finish the job"
            if library
            else "rerun the same command with --resume to finish it"
        )
        return f"{done:,} of {total:,} tasks done, kept beside the output: {how}"


def _remove_kept(path: str) -> None:
    """Remove a kept temporary that holds no finished work (a file, or a tree of regular
    files and directories; anything else is left)."""
    from vsgen.formats.atomic import _remove_owned_tree

    _remove_owned_tree(path)


def allocated(path: str) -> int:
    """Bytes the file system holds for the kept temporary ``path`` (``st_blocks`` x 512
    of the file, or of every regular file below the directory; links not followed).

    Its files were sized by ``ftruncate`` and are sparse until written, so the bytes a
    resumed job still needs are the layout's bytes less these. One ``lstat`` per entry,
    polling the caller's cancellation at each (a store holds a file per chunk).
    """
    total = 0
    pending = [path]
    while pending:
        stop_if_cancelled()
        here = pending.pop()
        try:
            info = os.lstat(here)
            if stat.S_ISDIR(info.st_mode):
                with os.scandir(here) as entries:
                    pending.extend(entry.path for entry in entries)
            elif stat.S_ISREG(info.st_mode):
                total += info.st_blocks * 512
        except OSError:
            continue
    return total


def kept_beside(target: str) -> list[str]:
    """Names of the kept temporaries beside ``target`` (for a run without resume to mention)."""
    final = os.path.abspath(target)
    return [
        os.path.basename(kept_path(final, key))
        for key in find_kept(final)
        if os.path.lexists(kept_path(final, key))
    ]
