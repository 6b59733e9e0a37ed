"""The streaming writer (Output) and open_output with its pre-flight checks."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import shutil
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

import numpy

from vsgen.formats.atomic import (
    AtomicFile,
    check_replaceable,
    exists_message,
    fsync_directory,
    install_directory,
    remove_quietly,
    temp_path,
)
from vsgen.formats.headers import create_h5, npy_header, safetensors_header, safetensors_layout
from vsgen.formats.tensors import (
    FORMATS,
    TensorInfo,
    check_dtypes,
    check_format_fits,
    check_metadata,
    check_names,
    check_npydir_names,
)

# Room for HDF5's superblock, object headers and attributes, which are only
# known once the file exists; the free-space check adds it to the data size.
_H5_OVERHEAD = 16 * 1024
_H5_OVERHEAD_PER_TENSOR = 4 * 1024


class _Sink:
    def begin_tensor(self, index: int) -> None:
        """Prepare to receive the bytes of tensor ``index`` (called in order)."""

    def write(self, data: memoryview) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Make the output durable and visible."""

    def discard(self) -> None:
        """Remove everything written; must be idempotent."""


class _FileSink(_Sink):
    """npy, raw, safetensors and (after HDF5 made its structure) h5.

    ``offsets`` are the absolute file offsets of each tensor's data; the
    file is written sequentially unless the layout differs from tensor order.
    """

    def __init__(self, atomic: AtomicFile, prefix: bytes, offsets: Sequence[int]) -> None:
        self._atomic = atomic
        self._offsets = list(offsets)
        try:
            if prefix:
                atomic.file.write(prefix)
        except BaseException:
            atomic.discard()
            raise

    def begin_tensor(self, index: int) -> None:
        file = self._atomic.file
        if file.tell() != self._offsets[index]:
            file.seek(self._offsets[index])

    def write(self, data: memoryview) -> None:
        self._atomic.file.write(data)

    def finish(self) -> None:
        self._atomic.install()

    def discard(self) -> None:
        self._atomic.discard()


class _StreamSink(_Sink):
    """Standard output: bytes go straight through; nothing to roll back."""

    def __init__(self, stream: BinaryIO, prefix: bytes) -> None:
        self._stream = stream
        if prefix:
            stream.write(prefix)

    def write(self, data: memoryview) -> None:
        self._stream.write(data)

    def finish(self) -> None:
        self._stream.flush()


class _DirectorySink(_Sink):
    """npydir: a temporary directory of ``<name>.npy`` files renamed into place."""

    def __init__(
        self, final: str, display: str, force: bool, tensors: Sequence[TensorInfo]
    ) -> None:
        self._final = final
        self._display = display
        self._force = force
        self._tensors = tensors
        for _ in range(100):
            self._path = temp_path(final)
            try:
                os.mkdir(self._path, 0o777)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(
                errno.EEXIST, f"cannot create a temporary directory for {display!r}"
            )
        self._finalizer = weakref.finalize(self, remove_quietly, self._path)
        self._directories = [self._path]
        self._file: BinaryIO | None = None

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def begin_tensor(self, index: int) -> None:
        self._close_current()
        info = self._tensors[index]
        path = os.path.join(self._path, *info.name.split("/")) + ".npy"
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent)
            relative = os.path.relpath(parent, self._path).split(os.sep)
            for depth in range(1, len(relative) + 1):
                self._directories.append(os.path.join(self._path, *relative[:depth]))
        self._file = open(path, "xb")  # noqa: SIM115 - closed in _close_current
        self._file.write(npy_header(info))

    def write(self, data: memoryview) -> None:
        assert self._file is not None
        self._file.write(data)

    def finish(self) -> None:
        self._close_current()
        for directory in reversed(self._directories):
            fsync_directory(directory)
        install_directory(self._path, self._final, self._display, self._force)
        self._finalizer.detach()
        fsync_directory(os.path.dirname(self._final) or ".")

    def discard(self) -> None:
        if self._file is not None:
            # A failed flush only loses data that is being thrown away.
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._finalizer()


def _create_h5_or_discard(
    atomic: AtomicFile,
    tensors: Sequence[TensorInfo],
    metadata: Mapping[str, str],
    tensor_metadata: Mapping[str, Mapping[str, str]],
) -> list[int]:
    try:
        return create_h5(atomic.path, tensors, metadata, tensor_metadata)
    except BaseException as err:
        atomic.discard()
        if isinstance(err, OSError) and err.errno:
            raise
        if isinstance(err, (OSError, RuntimeError)):
            # h5py reports system errors without an errno, inside its message.
            found = re.search(r"errno = (\d+)", str(err))
            if found:
                code = int(found.group(1))
                raise OSError(code, os.strerror(code)) from err
            raise OSError(errno.EIO, f"HDF5 could not create the file: {err}") from err
        raise


def _io_error(err: OSError, display: str) -> OSError:
    """A one-line OSError naming the target, keeping the errno (and subclass)."""
    if err.errno == errno.EEXIST:
        return err  # already names the target and says what to do
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        message = f"disk full while writing {display!r}: {reason}"
    elif err.errno == errno.EFBIG:
        message = f"file size limit reached while writing {display!r}: {reason}"
    else:
        message = f"cannot write {display!r}: {reason}"
    return OSError(err.errno, message) if err.errno else OSError(message)


def _little_endian_bytes(values: numpy.ndarray) -> memoryview:
    if sys.byteorder == "big" or values.dtype.byteorder == ">":
        if values.dtype.name == "bfloat16":
            values = values.view(numpy.uint16).astype("<u2")
        else:
            values = values.astype(values.dtype.newbyteorder("<"))
    # uint8 view: the buffer protocol cannot export ml_dtypes' bfloat16.
    return values.view(numpy.uint8).data


class Output:
    """An output being written: feed values with :meth:`write`, then :meth:`commit`.

    Tensors are filled in the order given to :func:`open_output`, each with
    its flat C-order values. Used as a context manager, leaving the block by
    an exception (including KeyboardInterrupt and SystemExit) aborts;
    leaving it normally without :meth:`commit` aborts too, so a forgotten
    commit never publishes a file.
    """

    def __init__(self, target: str, fmt: str, tensors: Sequence[TensorInfo], sink: _Sink) -> None:
        self._target = target
        self._format = fmt
        self._tensors = tuple(tensors)
        self._sink = sink
        self._index = 0
        self._filled = 0
        self._written = 0
        self._state = "open"
        self._guarded(self._sink.begin_tensor, 0)

    @property
    def target(self) -> str:
        """The target as given (``"-"`` for standard output)."""
        return self._target

    @property
    def format(self) -> str:
        """The format, one of :data:`FORMATS`."""
        return self._format

    @property
    def tensors(self) -> tuple[TensorInfo, ...]:
        """The tensors, in the order their values are expected."""
        return self._tensors

    @property
    def total_values(self) -> int:
        """Number of values of all tensors together."""
        return sum(info.size for info in self._tensors)

    @property
    def values_written(self) -> int:
        """Number of values written so far, all tensors together."""
        return self._written

    @property
    def closed(self) -> bool:
        """True once committed or aborted."""
        return self._state != "open"

    def __enter__(self) -> Output:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if self._state == "open":
            self.abort()

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"output {self._target!r} is already {self._state}")

    def _guarded(self, action: Callable[..., None], *args: object) -> None:
        """Run a sink action; any failure aborts the output before propagating."""
        try:
            action(*args)
        except BrokenPipeError:
            # The CLI ends quietly on a closed pipe; keep the type as is.
            self.abort()
            raise
        except OSError as err:
            self.abort()
            raise _io_error(err, self._target) from err
        except BaseException:
            self.abort()
            raise

    def _skip_full_tensors(self) -> None:
        while self._index < len(self._tensors) and self._filled == self._tensors[self._index].size:
            self._index += 1
            self._filled = 0
            if self._index < len(self._tensors):
                self._guarded(self._sink.begin_tensor, self._index)

    def write(self, chunk: numpy.ndarray) -> None:
        """Append the next values of the current tensor.

        ``chunk`` holds flat C-order values (any shape; it is raveled) of the
        current tensor's dtype, in any byte order. A chunk belongs to one
        tensor: it may not hold more values than the tensor has left. The
        next tensor starts when the current one is full; empty tensors are
        skipped.

        Raises:
            ValueError: wrong dtype, too many values, or a closed output.
            OSError: the bytes could not be written (the output is aborted).
        """
        self._check_open()
        if not isinstance(chunk, numpy.ndarray):
            raise ValueError(
                f"Argument `chunk` must be a numpy array. Received: {type(chunk).__name__}"
            )
        # Strided chunks are copied: the file needs the values back to back.
        values = numpy.ascontiguousarray(chunk.reshape(-1))
        if values.size == 0:
            return
        self._skip_full_tensors()
        if self._index >= len(self._tensors):
            raise ValueError(
                f"output {self._target!r} is complete ({self.total_values} values); "
                f"got {values.size} more"
            )
        info = self._tensors[self._index]
        if values.dtype.name != info.dtype.name:
            raise ValueError(
                f"chunk dtype {values.dtype.name} does not match tensor {info.name!r} "
                f"dtype {info.dtype.name}"
            )
        remaining = info.size - self._filled
        if values.size > remaining:
            raise ValueError(
                f"chunk of {values.size} values overruns tensor {info.name!r} "
                f"({remaining} of {info.size} values left); a chunk must not cross tensors"
            )
        self._guarded(self._sink.write, _little_endian_bytes(values))
        self._filled += values.size
        self._written += values.size

    def commit(self) -> None:
        """Check that every tensor is complete, sync to disk and move into place.

        Raises:
            ValueError: a tensor is incomplete (the output is aborted).
            OSError: syncing or renaming failed, or the target appeared
                meanwhile without ``force`` (the output is aborted).
        """
        self._check_open()
        self._skip_full_tensors()
        if self._index < len(self._tensors):
            info = self._tensors[self._index]
            self.abort()
            raise ValueError(
                f"tensor {info.name!r} is incomplete: {self._filled} of {info.size} values written"
            )
        self._guarded(self._sink.finish)
        self._state = "committed"

    def abort(self) -> None:
        """Remove temporaries; a pre-existing target stays untouched. Idempotent."""
        if self._state == "committed":
            return
        self._state = "aborted"
        self._sink.discard()


def format_bytes(count: int) -> str:
    """``"512 B"``, ``"64.00 MiB"``: a byte count for people."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _name_max(directory: str) -> int:
    """Longest file name (bytes) the file system of ``directory`` takes."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def _check_writable(target: str, directory: str, needed: int) -> None:
    """The directory takes new files and has room for ``needed`` bytes."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"directory {directory!r} is not writable")
    try:
        usage = os.statvfs(directory)
    except (AttributeError, OSError):  # no statvfs: the free-space check still runs
        usage = None
    if usage is not None and usage.f_flag & getattr(os, "ST_RDONLY", 0):
        raise PermissionError(
            errno.EROFS, f"directory {directory!r} is not writable (read-only file system)"
        )
    free = shutil.disk_usage(directory).free
    if needed > free:
        if usage is not None and usage.f_blocks == 0:
            # /proc, /sys and their kind report no storage at all: "0 B free"
            # would send the user looking for disk space.
            raise PermissionError(
                errno.EACCES,
                f"directory {directory!r} is not writable (a virtual file system without storage)",
            )
        raise OSError(
            errno.ENOSPC,
            f"not enough free space for {target!r}: needs "
            f"{format_bytes(needed)}, {format_bytes(free)} free in {directory!r}",
        )


def _preflight(target: str, path: str, fmt: str, force: bool, needed: int) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ValueError(
            f"directory {os.path.dirname(target) or '.'!r} of output {target!r} does not exist"
        )
    if os.path.isdir(path) and not os.path.islink(path) and fmt != "npydir":
        raise ValueError(f"output {target!r} is a directory; give a file name")
    if os.path.lexists(path):
        if not force:
            raise ValueError(exists_message(target, fmt == "npydir"))
        # In the library, not the CLI, so that API callers get the same protection.
        check_replaceable(path, target, fmt == "npydir")
    _check_writable(target, directory, needed)


def open_output(
    target: str,
    fmt: str,
    tensors: Sequence[TensorInfo],
    *,
    metadata: Mapping[str, str] | None = None,
    tensor_metadata: Mapping[str, Mapping[str, str]] | None = None,
    force: bool = False,
    stdout: BinaryIO | None = None,
) -> Output:
    """Check the target, then create the temporary output and write its headers.

    ``target`` is a path or ``"-"`` for standard output (``stdout``, by
    default ``sys.stdout.buffer``; npy or raw only). ``fmt`` is one of
    :data:`FORMATS` (see :func:`resolve_format`). ``metadata`` is kept by
    h5 and safetensors (:data:`METADATA_FORMATS`) and ignored by the others;
    ``tensor_metadata`` (by tensor name) becomes attributes of each HDF5
    dataset and is ignored by the other formats (file-level metadata is
    stored once, so a file grows linearly with its tensors).
    Nothing heavy happens before the checks: the target's directory must
    exist and be writable, the target must not exist (unless ``force``; it
    then stays intact until :meth:`Output.commit`) nor be a directory (except
    for npydir), every dtype must fit the format, and the free space of the
    file system must hold the whole output.

    Raises:
        ValueError: bad arguments or an existing target without ``force``.
        OSError: the directory is not writable (PermissionError), there is
            not enough free space (errno ENOSPC), or creating the file failed.
    """
    if fmt not in FORMATS:
        raise ValueError(
            f"Argument `fmt` must be one of {', '.join(FORMATS)}. Received: fmt={fmt!r}"
        )
    tensors = tuple(tensors)
    if not tensors:
        raise ValueError(
            "Argument `tensors` must hold at least one TensorInfo. Received: tensors=()"
        )
    for info in tensors:
        if not isinstance(info, TensorInfo):
            raise ValueError(f"Argument `tensors` must hold TensorInfo objects. Received: {info!r}")
    check_format_fits(target, fmt, len(tensors))
    check_names(tensors, fmt)
    if fmt == "npydir" and target != "-":
        check_npydir_names(tensors, _name_max(os.path.dirname(os.path.abspath(target))))
    check_dtypes(tensors, fmt)
    metadata = check_metadata(metadata)
    per_tensor = {name: check_metadata(items) for name, items in (tensor_metadata or {}).items()}

    if fmt == "safetensors":
        offsets = safetensors_layout(tensors)
        prefix = safetensors_header(tensors, offsets, metadata)
        offsets = [len(prefix) + offset for offset in offsets]
    elif fmt == "npy":
        prefix = npy_header(tensors[0])
        offsets = [len(prefix)]
    else:
        prefix = b""
        offsets = list(itertools.accumulate((info.nbytes for info in tensors[:-1]), initial=0))

    if target == "-":
        stream = stdout if stdout is not None else sys.stdout.buffer
        return Output(target, fmt, tensors, _StreamSink(stream, prefix))

    path = os.path.abspath(target)
    needed = len(prefix) + sum(info.nbytes for info in tensors)
    if fmt == "h5":
        needed += _H5_OVERHEAD + len(tensors) * _H5_OVERHEAD_PER_TENSOR
        needed += 2 * sum(
            len(key.encode()) + len(value.encode())
            for items in (metadata, *per_tensor.values())
            for key, value in items.items()
        )
    elif fmt == "npydir":
        needed += sum(len(npy_header(info)) for info in tensors)
    _preflight(target, path, fmt, force, needed)

    try:
        if fmt == "npydir":
            sink: _Sink = _DirectorySink(path, target, force, tensors)
        else:
            atomic = AtomicFile(path, target, force)
            if fmt == "h5":
                offsets = _create_h5_or_discard(atomic, tensors, metadata, per_tensor)
            sink = _FileSink(atomic, prefix, offsets)
    except OSError as err:
        raise _io_error(err, target) from err
    return Output(target, fmt, tensors, sink)
