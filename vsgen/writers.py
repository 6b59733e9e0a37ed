"""Tensor files: streaming, atomic, bounded-memory writers and header readers.

Every format stores values little-endian in C (row-major) order:

- ``npy``: one tensor; the standard NPY header (version 1.0, or 2.0 when the
  header needs more than 64 KiB) then the raw values. ``numpy.load`` reads it,
  with ``mmap_mode`` too. No metadata.
- ``h5`` (``.h5`` / ``.hdf5``): one contiguous, unfiltered dataset per tensor,
  named after it (``/`` in a name makes groups). ``metadata`` becomes string
  attributes of the file and of every dataset.
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

bfloat16 (``ml_dtypes.bfloat16``) is stored by ``safetensors`` and ``raw``
only; float16, float32 and float64 by every format.

Files are written to a hidden temporary beside the target
(``.<target>.vsgen-tmp-<random>``), flushed to disk and renamed into place by
``Output.commit``; an error or interrupt removes the temporary and leaves any
existing target untouched. ``target == "-"`` streams NPY (or raw) bytes to
standard output, where no atomicity is possible.
"""

from __future__ import annotations

import errno
import json
import math
import os
import queue
import secrets
import shutil
import stat
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import ml_dtypes
import numpy

__all__ = [
    "FORMATS",
    "METADATA_FORMATS",
    "Output",
    "TensorInfo",
    "open_output",
    "read_metadata",
    "read_tensor_infos",
    "resolve_format",
    "write_chunks",
]

FORMATS = ("npy", "h5", "safetensors", "raw", "npydir")
#: Formats that keep the ``metadata`` given to :func:`open_output`.
METADATA_FORMATS = ("h5", "safetensors")

_BFLOAT16 = numpy.dtype(ml_dtypes.bfloat16)
_DTYPES = {
    "float16": numpy.dtype(numpy.float16),
    "bfloat16": _BFLOAT16,
    "float32": numpy.dtype(numpy.float32),
    "float64": numpy.dtype(numpy.float64),
}
_SAFETENSORS_CODES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_BFLOAT16_FORMATS = ("safetensors", "raw")
_SUFFIXES = {
    ".npy": "npy",
    ".h5": "h5",
    ".hdf5": "h5",
    ".safetensors": "safetensors",
    ".raw": "raw",
    ".bin": "raw",
}
_FORMAT_ALIASES = {"hdf5": "h5"}
_STDOUT_FORMATS = ("npy", "raw")
_TEMP_MARK = ".vsgen-tmp-"
_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# The safetensors reference reader refuses larger headers.
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
# Room for HDF5's superblock, object headers and attributes, which are only
# known once the file exists; the free-space check adds it to the data size.
_H5_OVERHEAD = 64 * 1024
_H5_OVERHEAD_PER_TENSOR = 4 * 1024


# --------------------------------------------------------------------------
# Tensor descriptions and format choice


def _normalize_dtype(dtype: object) -> numpy.dtype:
    try:
        resolved = numpy.dtype(dtype)  # type: ignore[call-overload]
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in _DTYPES:
        raise ValueError(
            "Argument `dtype` must be one of float16, bfloat16, float32, float64. "
            f"Received: dtype={dtype!r}"
        )
    # One canonical (native-order) dtype per name; files get little-endian bytes.
    return _DTYPES[resolved.name]


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one tensor of an output file.

    ``dtype`` is normalised to one of numpy float16, float32, float64 or
    ``ml_dtypes.bfloat16``; ``shape`` to a tuple of non-negative ints
    (``()`` is a scalar, a 0 anywhere makes an empty tensor).
    """

    name: str
    shape: tuple[int, ...]
    dtype: numpy.dtype

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "\x00" in self.name:
            raise ValueError(
                "Argument `name` must be a non-empty string without NUL characters. "
                f"Received: name={self.name!r}"
            )
        try:
            dims = tuple(self.shape)
        except TypeError:
            dims = None
        if dims is None or not all(
            isinstance(d, (int, numpy.integer)) and not isinstance(d, bool) and d >= 0
            for d in dims
        ):
            raise ValueError(
                "Argument `shape` must be a sequence of non-negative integers. "
                f"Received: shape={self.shape!r}"
            )
        object.__setattr__(self, "shape", tuple(int(d) for d in dims))
        object.__setattr__(self, "dtype", _normalize_dtype(self.dtype))

    @property
    def size(self) -> int:
        """Number of values (product of the shape; 1 for a scalar)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the values in bytes."""
        return self.size * self.dtype.itemsize


def resolve_format(target: str, fmt: str | None, n_tensors: int = 1) -> str:
    """Choose the output format, one of :data:`FORMATS`.

    An explicit ``fmt`` (``--format``; ``hdf5`` is accepted for ``h5``) wins.
    Otherwise ``"-"`` (standard output) means ``npy``; a target that is an
    existing directory or ends with a path separator means ``npydir``; else
    the suffix decides: ``.npy``, ``.h5``/``.hdf5``, ``.safetensors``,
    ``.raw``/``.bin``. A target without a suffix means ``npydir`` when there
    are several tensors.

    Raises:
        ValueError: unknown format or suffix, a format that cannot go to
            standard output, or several tensors for a one-tensor format.
    """
    if fmt is not None:
        resolved = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if resolved not in FORMATS:
            raise ValueError(
                f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}"
            )
    elif target == "-":
        resolved = "npy"
    elif target.endswith(("/", os.sep)) or os.path.isdir(target):
        resolved = "npydir"
    else:
        suffix = os.path.splitext(target)[1].lower()
        if suffix in _SUFFIXES:
            resolved = _SUFFIXES[suffix]
        elif suffix == "" and n_tensors > 1:
            resolved = "npydir"
        else:
            known = ", ".join(_SUFFIXES)
            what = f"suffix {suffix!r}" if suffix else "no suffix"
            raise ValueError(
                f"cannot tell the format of {target!r} ({what}); "
                f"use one of {known} or pass --format"
            )
    _check_format_fits(target, resolved, n_tensors)
    return resolved


def _check_format_fits(target: str, fmt: str, n_tensors: int) -> None:
    if target == "-" and fmt not in _STDOUT_FORMATS:
        raise ValueError(
            f"format {fmt!r} cannot be written to standard output; use npy or raw with -o -"
        )
    if fmt == "npy" and n_tensors > 1:
        raise ValueError(
            f"a .npy file holds one tensor, got {n_tensors}; "
            "use .safetensors, .h5 or a directory (--format npydir)"
        )


def _check_names(tensors: Sequence[TensorInfo], fmt: str) -> None:
    seen: set[str] = set()
    for info in tensors:
        if info.name in seen:
            raise ValueError(f"tensor name {info.name!r} appears twice")
        seen.add(info.name)
        if fmt in ("h5", "npydir"):
            parts = info.name.split("/")
            if any(part in ("", ".", "..") for part in parts):
                raise ValueError(
                    f"tensor name {info.name!r} cannot be stored in {fmt}: "
                    "'/'-separated parts must be non-empty and not '.' or '..'"
                )
        if fmt == "safetensors" and info.name == "__metadata__":
            raise ValueError("tensor name '__metadata__' is reserved in safetensors")
    if fmt == "h5":
        # A dataset cannot also be the group holding another dataset.
        groups = {
            "/".join(info.name.split("/")[:depth])
            for info in tensors
            for depth in range(1, info.name.count("/") + 1)
        }
        clash = sorted(groups & seen)
        if clash:
            raise ValueError(
                f"tensor name {clash[0]!r} is both a dataset and a group in h5"
            )


def _check_dtypes(tensors: Sequence[TensorInfo], fmt: str) -> None:
    for info in tensors:
        if info.dtype == _BFLOAT16 and fmt not in _BFLOAT16_FORMATS:
            suffix = {"npydir": ".npy"}.get(fmt, "." + fmt)
            raise ValueError(
                f"dtype bfloat16 cannot be stored in {suffix}; "
                "use .safetensors or --format raw"
            )


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(
                "Argument `metadata` must map strings to strings. "
                f"Received: {key!r}: {value!r}"
            )
    return dict(metadata)


# --------------------------------------------------------------------------
# Headers


def _little_endian(dtype: numpy.dtype) -> numpy.dtype:
    return dtype if dtype == _BFLOAT16 else dtype.newbyteorder("<")


def _npy_header(info: TensorInfo) -> bytes:
    """The NPY magic and header for ``info``: version 1.0 if it fits, else 2.0."""
    import io

    from numpy.lib import format as npy_format

    header = {
        "descr": npy_format.dtype_to_descr(_little_endian(info.dtype)),
        "fortran_order": False,
        "shape": info.shape,
    }
    buffer = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(buffer, header)
    except ValueError:
        buffer = io.BytesIO()
        npy_format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def _safetensors_layout(tensors: Sequence[TensorInfo]) -> list[int]:
    """Data offset of each tensor: by element size, largest first, then in order."""
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i].dtype.itemsize)
    offsets = [0] * len(tensors)
    position = 0
    for index in order:
        offsets[index] = position
        position += tensors[index].nbytes
    return offsets


def _safetensors_header(
    tensors: Sequence[TensorInfo], offsets: Sequence[int], metadata: Mapping[str, str]
) -> bytes:
    """Length prefix plus the JSON header, space-padded to a multiple of 8 bytes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    for index in sorted(range(len(tensors)), key=lambda i: offsets[i]):
        info = tensors[index]
        header[info.name] = {
            "dtype": _SAFETENSORS_CODES[info.dtype.name],
            "shape": list(info.shape),
            "data_offsets": [offsets[index], offsets[index] + info.nbytes],
        }
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > _SAFETENSORS_MAX_HEADER:
        raise ValueError(
            f"safetensors header would be {len(text)} bytes, over the "
            f"{_SAFETENSORS_MAX_HEADER}-byte limit of readers; use fewer tensors or less metadata"
        )
    return struct.pack("<Q", len(text)) + text


# --------------------------------------------------------------------------
# Temporaries and atomic installation


def _format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _temp_path(final_path: str, mark: str = _TEMP_MARK) -> str:
    directory, base = os.path.split(final_path)
    return os.path.join(directory, f".{base}{mark}{secrets.token_hex(6)}")


def _remove_quietly(path: str) -> None:
    """Remove a temporary file or directory; used by abort paths and finalizers."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        # Cleanup must never mask the error that caused it.
        pass


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        # Some file systems cannot sync a directory; the data is synced already.
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _exists_message(display: str, is_dir: bool) -> str:
    if is_dir:
        return f"output directory {display!r} exists; use --force to replace it"
    return f"output file {display!r} exists; use --force to overwrite"


def _install_file(temp: str, final: str, display: str, force: bool) -> None:
    """Move a finished temporary file into place (atomically)."""
    if force:
        os.replace(temp, final)
        return
    # A hard link fails if the target appeared meanwhile, so a file created by
    # someone else during a long run is never overwritten without --force.
    try:
        os.link(temp, final)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, _exists_message(display, False)) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, _exists_message(display, False)) from None
        os.replace(temp, final)
    else:
        os.unlink(temp)


def _install_directory(temp: str, final: str, display: str, force: bool) -> None:
    """Move a finished temporary directory into place.

    A directory cannot replace a non-empty one atomically; the old one is
    renamed aside first and restored if the second rename fails.
    """
    if not os.path.lexists(final):
        os.rename(temp, final)
        return
    if not force:
        raise FileExistsError(errno.EEXIST, _exists_message(display, True))
    aside = _temp_path(final, ".vsgen-old-")
    os.rename(final, aside)
    try:
        os.rename(temp, final)
    except BaseException:
        os.rename(aside, final)
        raise
    _remove_quietly(aside)


class _AtomicFile:
    """A temporary file beside ``final`` that becomes ``final`` on ``install``."""

    def __init__(self, final: str, display: str, force: bool) -> None:
        self.final = final
        self.display = display
        self.force = force
        for _ in range(100):
            self.path = _temp_path(final)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(errno.EEXIST, f"cannot create a temporary file for {display!r}")
        # Removes the temporary even if the Output is dropped without abort().
        self._finalizer = weakref.finalize(self, _remove_quietly, self.path)
        try:
            if force and os.path.isfile(final):
                os.fchmod(fd, stat.S_IMODE(os.stat(final).st_mode))
            self.file: BinaryIO = os.fdopen(fd, "r+b")
        except BaseException:
            os.close(fd)
            self.discard()
            raise

    def install(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        _install_file(self.path, self.final, self.display, self.force)
        self._finalizer.detach()
        _fsync_directory(os.path.dirname(self.final) or ".")

    def discard(self) -> None:
        file = getattr(self, "file", None)
        if file is not None and not file.closed:
            try:
                file.close()
            except OSError:
                pass  # a failed flush of data that is being thrown away
        self._finalizer()


# --------------------------------------------------------------------------
# Sinks: where the bytes of each format go. They know byte layouts, not values.


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

    def __init__(self, atomic: _AtomicFile, prefix: bytes, offsets: Sequence[int]) -> None:
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

    def __init__(self, final: str, display: str, force: bool, tensors: Sequence[TensorInfo]) -> None:
        self._final = final
        self._display = display
        self._force = force
        self._tensors = tensors
        for _ in range(100):
            self._path = _temp_path(final)
            try:
                os.mkdir(self._path, 0o777)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(errno.EEXIST, f"cannot create a temporary directory for {display!r}")
        self._finalizer = weakref.finalize(self, _remove_quietly, self._path)
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
        self._file.write(_npy_header(info))

    def write(self, data: memoryview) -> None:
        assert self._file is not None
        self._file.write(data)

    def finish(self) -> None:
        self._close_current()
        for directory in reversed(self._directories):
            _fsync_directory(directory)
        _install_directory(self._path, self._final, self._display, self._force)
        self._finalizer.detach()
        _fsync_directory(os.path.dirname(self._final) or ".")

    def discard(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a failed flush of data that is being thrown away
            self._file = None
        self._finalizer()


def _create_h5_or_discard(
    atomic: _AtomicFile, tensors: Sequence[TensorInfo], metadata: Mapping[str, str]
) -> list[int]:
    try:
        return _create_h5(atomic, tensors, metadata)
    except BaseException as err:
        atomic.discard()
        if isinstance(err, OSError) and err.errno:
            raise
        if isinstance(err, (OSError, RuntimeError)):
            # h5py reports file errors without an errno.
            raise OSError(errno.EIO, f"HDF5 could not create the file: {err}") from err
        raise


def _create_h5(
    atomic: _AtomicFile, tensors: Sequence[TensorInfo], metadata: Mapping[str, str]
) -> list[int]:
    """Lay out an HDF5 file with one allocated, unfilled dataset per tensor.

    Returns each dataset's absolute data offset. The datasets are contiguous
    and allocated at creation without fill, so HDF5 has nothing left to do:
    the file is closed and the values are written at those offsets as plain
    bytes, which is several times faster than hyperslab writes through h5py
    and keeps memory bounded by the chunk size.
    """
    import h5py

    offsets: list[int] = []
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    with h5py.File(atomic.path, "w", track_order=True) as h5:
        for key, value in metadata.items():
            h5.attrs[key] = value
        for info in tensors:
            *parents, leaf = info.name.split("/")
            group = h5
            for part in parents:
                group = group[part] if part in group else group.create_group(part, track_order=True)
            dataset = group.create_dataset(
                leaf,
                shape=info.shape,
                dtype=_little_endian(info.dtype),
                dcpl=plist.copy(),
                fill_time="never",
            )
            for key, value in metadata.items():
                dataset.attrs[key] = value
            offset = dataset.id.get_offset()
            # HDF5 allocates no storage for an empty dataset.
            offsets.append(0 if offset is None else int(offset))
    return offsets


# --------------------------------------------------------------------------
# The public writer


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
    return memoryview(values.view(numpy.uint8))


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
            raise ValueError(f"Argument `chunk` must be a numpy array. Received: {type(chunk).__name__}")
        values = chunk.reshape(-1)
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


def _preflight(target: str, path: str, fmt: str, force: bool, needed: int) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ValueError(f"directory {os.path.dirname(target) or '.'!r} of output {target!r} does not exist")
    if os.path.isdir(path) and fmt != "npydir":
        raise ValueError(f"output {target!r} is a directory; give a file name")
    if os.path.lexists(path) and not force:
        raise ValueError(_exists_message(target, fmt == "npydir"))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"directory {directory!r} is not writable")
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"not enough free space for {target!r}: needs {_format_bytes(needed)}, "
            f"{_format_bytes(free)} free in {directory!r}",
        )


def open_output(
    target: str,
    fmt: str,
    tensors: Sequence[TensorInfo],
    *,
    metadata: Mapping[str, str] | None = None,
    force: bool = False,
    stdout: BinaryIO | None = None,
) -> Output:
    """Check the target, then create the temporary output and write its headers.

    ``target`` is a path or ``"-"`` for standard output (``stdout``, by
    default ``sys.stdout.buffer``; npy or raw only). ``fmt`` is one of
    :data:`FORMATS` (see :func:`resolve_format`). ``metadata`` is kept by
    h5 and safetensors (:data:`METADATA_FORMATS`) and ignored by the others.
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
        raise ValueError(f"Argument `fmt` must be one of {', '.join(FORMATS)}. Received: fmt={fmt!r}")
    tensors = tuple(tensors)
    if not tensors:
        raise ValueError("Argument `tensors` must hold at least one TensorInfo. Received: tensors=()")
    for info in tensors:
        if not isinstance(info, TensorInfo):
            raise ValueError(f"Argument `tensors` must hold TensorInfo objects. Received: {info!r}")
    _check_format_fits(target, fmt, len(tensors))
    _check_names(tensors, fmt)
    _check_dtypes(tensors, fmt)
    metadata = _check_metadata(metadata)

    if fmt == "safetensors":
        offsets = _safetensors_layout(tensors)
        prefix = _safetensors_header(tensors, offsets, metadata)
        offsets = [len(prefix) + offset for offset in offsets]
    elif fmt == "npy":
        prefix = _npy_header(tensors[0])
        offsets = [len(prefix)]
    else:
        prefix = b""
        offsets = list(numpy.cumsum([0] + [info.nbytes for info in tensors[:-1]], dtype=numpy.int64).tolist())

    if target == "-":
        stream = stdout if stdout is not None else sys.stdout.buffer
        return Output(target, fmt, tensors, _StreamSink(stream, prefix))

    path = os.path.abspath(target)
    needed = len(prefix) + sum(info.nbytes for info in tensors)
    if fmt == "h5":
        needed += _H5_OVERHEAD + len(tensors) * _H5_OVERHEAD_PER_TENSOR
        needed += 2 * sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items()) * len(tensors)
    elif fmt == "npydir":
        needed += sum(len(_npy_header(info)) for info in tensors)
    _preflight(target, path, fmt, force, needed)

    try:
        if fmt == "npydir":
            sink: _Sink = _DirectorySink(path, target, force, tensors)
        else:
            atomic = _AtomicFile(path, target, force)
            if fmt == "h5":
                offsets = _create_h5_or_discard(atomic, tensors, metadata)
            sink = _FileSink(atomic, prefix, offsets)
    except OSError as err:
        raise _io_error(err, target) from err
    return Output(target, fmt, tensors, sink)


# --------------------------------------------------------------------------
# Overlapping production and writing


_DONE = object()


class _ProducerFailed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def write_chunks(
    output: Output,
    chunks: Iterable[numpy.ndarray],
    on_progress: Callable[[int], None] | None = None,
    prefetch: int = 2,
) -> None:
    """Write every chunk of ``chunks`` to ``output``, producing ahead in a thread.

    A background thread pulls chunks from ``chunks`` into a queue of at most
    ``prefetch`` chunks while the calling thread writes them, so computing
    values (NumPy releases the GIL) overlaps the I/O. ``prefetch=0`` writes
    in the calling thread without a helper thread. At most ``prefetch + 2``
    chunks are alive at once; the iterator must yield a new array each time
    (or not modify an array already yielded). ``on_progress`` is called after
    each chunk with the number of values that chunk held (an increment, as
    a progress bar's ``advance`` takes; ``output.values_written`` is the total).

    The first exception from either side (the iterator, ``output.write`` or
    ``on_progress``; KeyboardInterrupt included) propagates to the caller;
    the helper thread is stopped and joined before that. ``output`` is not
    committed or aborted here.
    """
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
        raise ValueError(f"Argument `prefetch` must be a non-negative integer. Received: prefetch={prefetch!r}")
    if prefetch == 0:
        for chunk in chunks:
            output.write(chunk)
            if on_progress is not None:
                on_progress(chunk.size)
        return

    pending: queue.Queue[object] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def offer(item: object) -> bool:
        # A bounded put that gives up when the consumer has stopped listening.
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        iterator: Iterator[numpy.ndarray] | None = None
        try:
            iterator = iter(chunks)
            for chunk in iterator:
                if not offer(chunk):
                    return
            offer(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            offer(_ProducerFailed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the first error is the one reported
                    pass

    producer = threading.Thread(target=produce, name="vsgen-chunk-producer", daemon=True)
    producer.start()
    try:
        while True:
            item = pending.get()
            if item is _DONE:
                break
            if isinstance(item, _ProducerFailed):
                raise item.error
            output.write(item)  # type: ignore[arg-type]
            count = item.size  # type: ignore[attr-defined]
            del item  # drop the reference so memory stays bounded by the queue
            if on_progress is not None:
                on_progress(count)
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue and drop queued chunks.
        while True:
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        producer.join()


# --------------------------------------------------------------------------
# Readers (headers only)


def _sniff(path: str) -> str:
    if os.path.isdir(path):
        return "npydir"
    with open(path, "rb") as file:
        head = file.read(9)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_HDF5_MAGIC):
        return "h5"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    raise ValueError(
        f"cannot read tensor headers of {path!r}: not npy, h5 or safetensors "
        "(raw files have no header)"
    )


def _read_npy_info(path: str, name: str) -> TensorInfo:
    from numpy.lib import format as npy_format

    with open(path, "rb") as file:
        version = npy_format.read_magic(file)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(file)
        else:
            raise ValueError(f"unsupported NPY version {version} in {path!r}")
    if fortran_order and len(shape) > 1:
        raise ValueError(f"{path!r} is in Fortran order; vsgen writes C order only")
    return TensorInfo(name, tuple(shape), dtype)


def _read_safetensors_header(path: str) -> dict[str, object]:
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path!r} is too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > _SAFETENSORS_MAX_HEADER:
            raise ValueError(f"{path!r}: safetensors header length {length} is implausible")
        text = file.read(length)
    if len(text) < length:
        raise ValueError(f"{path!r}: safetensors header is truncated")
    header = json.loads(text.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path!r}: safetensors header is not a JSON object")
    return header


def _h5_datasets(group: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    import h5py

    # Group iteration follows creation order where it is tracked (vsgen's files).
    for key, item in group.items():  # type: ignore[attr-defined]
        name = f"{prefix}{key}"
        if isinstance(item, h5py.Dataset):
            yield name, item
        elif isinstance(item, h5py.Group):
            yield from _h5_datasets(item, name + "/")


def read_tensor_infos(path: str) -> list[TensorInfo]:
    """Names, shapes and dtypes of the tensors in a file, reading headers only.

    Reads ``.npy`` (the tensor is named after the file's stem), HDF5 (every
    dataset, in creation order where tracked, else by name), safetensors (in
    data order) and npydir directories (by relative path). The format is
    told from the file's first bytes, not its suffix.

    Raises:
        ValueError: not one of those formats, or a dtype vsgen does not write.
        OSError: the file cannot be read.
    """
    kind = _sniff(path)
    if kind == "npy":
        stem = os.path.splitext(os.path.basename(path))[0]
        return [_read_npy_info(path, stem)]
    if kind == "npydir":
        infos = []
        for root, directories, files in os.walk(path):
            directories.sort()
            for file_name in sorted(files):
                if file_name.endswith(".npy"):
                    relative = os.path.relpath(os.path.join(root, file_name[:-4]), path)
                    infos.append(_read_npy_info(os.path.join(root, file_name), relative.replace(os.sep, "/")))
        return infos
    if kind == "h5":
        import h5py

        with h5py.File(path, "r") as h5:
            return [TensorInfo(name, dataset.shape, dataset.dtype) for name, dataset in _h5_datasets(h5)]  # type: ignore[attr-defined]
    header = _read_safetensors_header(path)
    codes = {code: name for name, code in _SAFETENSORS_CODES.items()}
    entries = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in codes:
            raise ValueError(f"{path!r}: tensor {name!r} has an unsupported entry {entry!r}")
        info = TensorInfo(name, tuple(entry["shape"]), _DTYPES[codes[entry["dtype"]]])
        entries.append((entry["data_offsets"][0], info))
    entries.sort(key=lambda pair: pair[0])
    return [info for _, info in entries]


def read_metadata(path: str) -> dict[str, str]:
    """File-level metadata: HDF5 root attributes or safetensors ``__metadata__``.

    npy files and npydir directories hold none and give ``{}``.
    """
    kind = _sniff(path)
    if kind == "h5":
        import h5py

        with h5py.File(path, "r") as h5:
            result = {}
            for key, value in h5.attrs.items():
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                result[key] = value if isinstance(value, str) else str(value)
            return result
    if kind == "safetensors":
        metadata = _read_safetensors_header(path).get("__metadata__", {})
        if not isinstance(metadata, dict):
            raise ValueError(f"{path!r}: safetensors __metadata__ is not an object")
        return {str(key): str(value) for key, value in metadata.items()}
    return {}
