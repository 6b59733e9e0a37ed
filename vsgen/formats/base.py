"""What every format module is built from.

:class:`Format` is what the registry (:mod:`vsgen.formats.registry`) knows of a
format: what it holds, its name rules, how it plans an output (:class:`Layout`)
and what ``--force`` may replace, how its files are read. Each format module
subclasses it. :class:`WriteRequest` is an output's checked contents,
:class:`FilePlace` where a tensor's bytes go in a file, :class:`FileLayout` the
layout of a one-file format (a header, then the tensors at fixed offsets);
:func:`lay_out` makes an output's temporary and lays it out.

What files store, as the reader (:mod:`vsgen.formats.readers`, where every file
is hostile) sees it: :class:`StoredTensor`, :class:`TensorFile`, one refusal
(:class:`UnreadableFile`) and one way to open a file (:func:`open_regular`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, NamedTuple, Protocol

import numpy

from vsgen.dtypes import TensorInfo
from vsgen.fans import block_runs, block_start, check_block
from vsgen.formats.atomic import (
    AtomicFile,
    Judge,
    NotOwned,
    NpyJudge,
    Survey,
    TemporaryDirectory,
    check_replaceable,
    describe_file_kind,
    io_error,
    preflight,
    pwrite_all,
    start_writeback,
    survey,
)

Temporary = AtomicFile | TemporaryDirectory


# --- bytes ---------------------------------------------------------------------------


def little_endian(dtype: numpy.dtype) -> numpy.dtype:
    """``dtype`` in little-endian byte order (bfloat16 has none to choose)."""
    return dtype if dtype.name == "bfloat16" else dtype.newbyteorder("<")


def little_endian_bytes(values: numpy.ndarray) -> memoryview:
    """The bytes of contiguous ``values``, little-endian, as files store them."""
    if sys.byteorder == "big" or values.dtype.byteorder == ">":
        if values.dtype.name == "bfloat16":
            values = values.view(numpy.uint16).astype("<u2")
        else:
            values = values.astype(values.dtype.newbyteorder("<"))
    # uint8 view: the buffer protocol cannot export ml_dtypes' bfloat16.
    return values.view(numpy.uint8).data


# --- where values go -------------------------------------------------------------------


class Place(Protocol):
    """Where one tensor's values go in a laid-out output (picklable, small)."""

    @property
    def path(self) -> str:
        """The file (or Zarr array directory) the tensor is written to."""

    @property
    def block_shape(self) -> tuple[int, ...] | None:
        """The only block shape :meth:`write` takes (Zarr chunks), or None: any block."""

    def write(self, origin: Sequence[int], values: numpy.ndarray) -> str | None:
        """Write the block ``values`` of the tensor at ``origin``; return the file written."""


class FilePlace(NamedTuple):
    """A tensor stored C-order, little-endian, from byte ``offset`` of the file ``path``."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: numpy.dtype

    @property
    def block_shape(self) -> tuple[int, ...] | None:
        return None

    def write(self, origin: Sequence[int], values: numpy.ndarray) -> str | None:
        """Write the block's contiguous runs at their offsets (one write when the block
        spans whole trailing axes), into the existing file (never creating it).

        Raises:
            FileNotFoundError: the file is gone (the job was abandoned).
            ValueError: the block does not fit the tensor.
        """
        values = numpy.asarray(values, order="C")  # a scalar stays 0-d
        origin, _ = check_block(values.shape, origin, self.shape)
        if values.size == 0:
            return None
        itemsize = self.dtype.itemsize
        data = little_endian_bytes(values.reshape(-1))
        fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            run, outer_shape, outer_strides = block_runs(values.shape, self.shape)
            base = self.offset + block_start(origin, self.shape) * itemsize
            run_bytes = run * itemsize
            end = base
            for position, outer in enumerate(numpy.ndindex(*outer_shape)):
                offset = (
                    base + sum(i * s for i, s in zip(outer, outer_strides, strict=True)) * itemsize
                )
                pwrite_all(fd, data[position * run_bytes : (position + 1) * run_bytes], offset)
                end = max(end, offset + run_bytes)
            start_writeback(fd, base, end - base)
        finally:
            os.close(fd)
        return self.path


def sized_file(path: str, prefix: bytes, size: int, mode: int = 0o666) -> None:
    """Create the new file ``path`` (permission bits ``mode``, less the umask):
    ``prefix``, then zeros up to ``size`` bytes (a hole on file systems that have
    them; ``size`` 0: just the prefix), for writers to fill in place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        pwrite_all(fd, memoryview(prefix), 0)
        if size:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


class Layout(Protocol):
    """An output planned before anything exists: the bytes it needs (for the
    free-space check) and :meth:`create`, which lays it out in its temporary."""

    @property
    def needed(self) -> int:
        """Bytes the output takes on disk (an estimate for HDF5 and directories)."""

    def create(self, temporary: Any, presize: bool) -> list[Place]:
        """Lay the output out in ``temporary``; where each tensor's values go.

        ``presize``: size every file to its final length, for block writers that
        fill it in any order (on a shared file system no writer then extends a
        file another one writes); a streaming writer appends instead, so that a
        file-size limit or a full disk stops it where it is.
        """


class FileLayout(NamedTuple):
    """One file: ``prefix`` (a header), then tensor ``i`` at byte ``offsets[i]``. The
    formats that go to standard output have this layout (with consecutive offsets)."""

    tensors: tuple[TensorInfo, ...]
    prefix: bytes
    offsets: tuple[int, ...]

    @property
    def needed(self) -> int:
        return len(self.prefix) + sum(info.nbytes for info in self.tensors)

    def create(self, temporary: AtomicFile, presize: bool) -> list[Place]:
        """Write the header (and size the file, ``ftruncate``)."""
        temporary.file.write(self.prefix)
        temporary.file.flush()
        if presize:
            os.ftruncate(temporary.file.fileno(), self.needed)
        return [
            FilePlace(temporary.path, offset, info.shape, info.dtype)
            for offset, info in zip(self.offsets, self.tensors, strict=True)
        ]


class StoreLayout:
    """A store (a directory of block-written files) of the tensors of a
    :class:`WriteRequest`, carrying its provenance; a subclass says how
    :meth:`create` lays it out."""

    def __init__(self, request: WriteRequest) -> None:
        self.tensors = request.tensors
        self.metadata = request.metadata

    @property
    def needed(self) -> int:
        # The data, plus a few KiB of metadata per tensor and the provenance twice.
        overhead = 4096 * (len(self.tensors) + 1) + 2 * sum(map(len, self.metadata.values()))
        return sum(info.nbytes for info in self.tensors) + overhead

    def document(self) -> dict[str, Any]:
        """The provenance document (``provenance.file_metadata`` parsed; ``{}`` if none)."""
        text = self.metadata.get("vsgen")
        return {} if text is None else dict(json.loads(text))


# --- what a format is --------------------------------------------------------------------


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` as a dict of strings, or ValueError (HDF5's rules, the strictest)."""
    if metadata is None:
        return {}
    for key, value in metadata.items():
        # HDF5 refuses empty attribute names and NUL characters in strings.
        if (
            not isinstance(key, str)
            or not isinstance(value, str)
            or not key
            or "\x00" in key + value
        ):
            raise ValueError(
                "Argument `metadata` must map non-empty strings to strings, without NUL "
                f"characters. Received: {key!r}: {value!r}"
            )
    return dict(metadata)


def check_path_name(name: str, fmt: str) -> None:
    """A name that becomes a path (HDF5 groups, directories): '/'-separated parts,
    none empty, ``.`` or ``..``."""
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(
            f"tensor name {name!r} cannot be stored in {fmt}: "
            "'/'-separated parts must be non-empty and not '.' or '..'"
        )


def check_no_group_clash(tensors: Sequence[TensorInfo], what: str) -> None:
    """No tensor name may also be the group of another (``a`` beside ``a/b``)."""
    names = {info.name for info in tensors}
    groups = {
        "/".join(info.name.split("/")[:depth])
        for info in tensors
        for depth in range(1, info.name.count("/") + 1)
    }
    clash = sorted(groups & names)
    if clash:
        raise ValueError(f"tensor name {clash[0]!r} is both {what}")


class Format:
    """One output format: what it holds, how an output is laid out and written, how
    its files are read. The registry makes one instance per format, from the
    format module's subclass; writers and readers ask it instead of branching on
    the format's name. The facts are class attributes, overridden by subclasses."""

    #: How messages about dtypes call it (``.npy``).
    label = ""
    #: Written as a directory (of files or of a store), not as one file.
    directory = False
    #: Keeps the file-level ``metadata`` (the provenance).
    keeps_metadata = False
    holds_bfloat16 = False
    holds_complex = True
    #: Can go to standard output (its header never needs seeking back to).
    to_stdout = False
    #: ``open_output`` streams it; if False, only block writers fill it.
    streams = True
    #: Holds one tensor (named after the file when read).
    one_tensor = False
    #: Stores the tensors' names (a .npy or raw file holds values only).
    named = True
    #: Directory formats: suffixes of the files the commit syncs (writers sync the rest).
    commit_syncs: tuple[str, ...] = ()
    #: Holds files of the caller's beside the tensors (a Hugging Face ``config.json``).
    holds_companions = False

    def __init__(self, name: str, suffixes: tuple[str, ...] = ()) -> None:
        #: The name ``--format`` takes.
        self.name = name
        #: The suffixes that select it (lower case; the registry's routing).
        self.suffixes = suffixes

    def __repr__(self) -> str:
        return f"<format {self.name}>"

    # --- what it holds

    def check(self, target: str, tensors: Sequence[TensorInfo]) -> None:
        """Refuse tensors this format cannot hold at ``target`` (ValueError)."""
        self.check_fits(target, len(tensors))
        self.check_names(tensors, target)
        self.check_dtypes(tensors)

    def check_fits(self, target: str, count: int) -> None:
        if target == "-" and not self.to_stdout:
            raise ValueError(
                f"format {self.name!r} cannot be written to standard output; "
                "use npy or raw with -o -"
            )
        if self.one_tensor and count > 1:
            raise ValueError(
                f"a {self.label} file holds one tensor, got {count}; "
                "use .safetensors, .h5 or a directory (--format npydir)"
            )

    def check_companions_held(self, companions: Mapping[str, bytes]) -> None:
        """Refuse files beside the tensors this format does not hold (ValueError)."""
        if companions and not self.holds_companions:
            raise ValueError(
                f"format {self.name!r} holds tensors only; {', '.join(sorted(companions))} "
                "can be written beside them with safetensors-sharded"
            )

    def check_names(self, tensors: Sequence[TensorInfo], target: str = "-") -> None:
        seen: set[str] = set()
        for info in tensors:
            if info.name in seen:
                raise ValueError(f"tensor name {info.name!r} appears twice")
            seen.add(info.name)
            self.check_name(info.name)

    def check_name(self, name: str) -> None:
        """Refuse a name this format cannot store (ValueError)."""

    def check_dtypes(self, tensors: Sequence[TensorInfo]) -> None:
        for info in tensors:
            if info.dtype.kind == "c" and not self.holds_complex:
                raise ValueError(
                    f"dtype {info.dtype.name} cannot be stored in {self.label} (the format has "
                    "no complex type); use .npy, .h5 or --format raw"
                )
            if info.dtype.name == "bfloat16" and not self.holds_bfloat16:
                raise ValueError(
                    f"dtype bfloat16 cannot be stored in {self.label}; "
                    "use .safetensors or --format raw"
                )

    # --- writing

    def plan(self, request: WriteRequest) -> Layout:
        """The output's layout, decided before anything exists (ValueError if it cannot be)."""
        raise NotImplementedError

    def temporary(
        self,
        path: str,
        display: str,
        force: bool,
        old: Survey | None = None,
        at: str | None = None,
        reopen: bool = False,
    ) -> Temporary:
        """A new temporary beside ``path`` (a file, or a directory for directory formats,
        made no more permissive than ``old``, the survey of the output it replaces);
        ``at`` names it (a resumable job's, known in advance; ``reopen``: it exists)."""
        if self.directory:

            def check(aside: str) -> tuple[Judge, Survey]:
                return self.survey_aside(aside, display)

            return TemporaryDirectory(
                path,
                display,
                force,
                check=check,
                sync=self.commit_syncs,
                old=old,
                at=at,
                reopen=reopen,
            )
        return AtomicFile(path, display, force, at=at, reopen=reopen)

    #: What ``--force`` replaces of a directory format, in messages.
    replace_words = "a directory of .npy files"

    def judge(self, path: str, display: str) -> Judge:
        """What vsgen wrote in the output directory ``path`` (for ``--force``), from the
        output's own metadata; NotOwned if that is not vsgen's. ``display`` names it."""
        return NpyJudge()

    def refuse_replacing(self, path: str, display: str) -> Survey | None:
        """NotOwned (a ValueError) unless ``--force`` may replace what is at ``path``: a
        regular file, or for a directory format a directory holding nothing but what
        vsgen wrote there (:meth:`judge`). Returns the survey of such a directory."""
        return check_replaceable(
            path,
            display,
            self.directory,
            lambda root: self.judge(root, display),
            self.replace_words,
        )

    def survey_aside(self, aside: str, display: str) -> tuple[Judge, Survey]:
        """The same check on an old output just set aside, at the commit: NotOwned
        naming the first entry vsgen did not write (relative to the output)."""
        info = os.lstat(aside)
        if not stat.S_ISDIR(info.st_mode):
            raise NotOwned("", "", describe_file_kind(info.st_mode))
        judge = self.judge(aside, display)
        found = survey(aside, judge)
        if found.foreign is not None:
            raise NotOwned("", found.foreign, found.reason)
        return judge, found

    # --- reading

    def sniff(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` (its first 9 bytes) is of this format."""
        return False

    def holds(self, directory: str) -> bool:
        """Whether the directory ``directory`` is an output of this format."""
        return False

    def open(self, path: str) -> TensorFile:
        """The headers of the file (no values); UnreadableFile if they are refused."""
        raise UnreadableFile(f"{path}: {self.name} files are not read")

    def read_metadata(self, path: str) -> dict[str, str]:
        """The file-level metadata (``{}`` for formats that keep none)."""
        return self.open(path).metadata

    def values(
        self, tensor: StoredTensor, chunk_size: int, any_order: bool
    ) -> Iterator[numpy.ndarray]:
        """The values of ``tensor`` in pieces, for formats that read their own (HDF5,
        Zarr: their tensors name the format as ``reader``); see :func:`read_values`."""
        raise NotImplementedError


class StoreFormat(Format):
    """A directory format whose outputs are stores (Zarr, sharded safetensors),
    written by block writers only: ``--force`` replaces only what vsgen wrote there,
    as the store's own metadata says (:meth:`Format.judge`)."""

    directory = True
    streams = False


# --- opening an output ----------------------------------------------------------------


class WriteRequest(NamedTuple):
    """What an output is to hold, checked (:func:`check_output`): the tensors in
    order, the file's metadata and each tensor's, and options of block writers
    (``chunk_shapes``: each tensor's Zarr chunk shape, None for automatic;
    ``max_shard_size``: the largest shard of sharded safetensors, in bytes;
    ``companions``: files written beside the shards)."""

    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]
    tensor_metadata: dict[str, dict[str, str]]
    chunk_shapes: Sequence[Sequence[Any] | None] | None = None
    max_shard_size: int | None = None
    #: Small files written beside the shards of sharded safetensors (name -> bytes,
    #: e.g. ``config.json``), recorded in the index as vsgen's.
    companions: Mapping[str, bytes] | None = None


def check_output(
    target: str,
    fmt: Format,
    tensors: Sequence[TensorInfo],
    metadata: Mapping[str, str] | None,
    tensor_metadata: Mapping[str, Mapping[str, str]] | None,
    **options: Any,
) -> WriteRequest:
    """The arguments of an output, checked: the tensors (what ``fmt`` holds at
    ``target``), the file's metadata and each tensor's (ValueError if wrong);
    ``options`` as :class:`WriteRequest` takes them."""
    tensors = tuple(tensors)
    if not tensors:
        raise ValueError(
            "Argument `tensors` must hold at least one TensorInfo. Received: tensors=()"
        )
    for info in tensors:
        if not isinstance(info, TensorInfo):
            raise ValueError(f"Argument `tensors` must hold TensorInfo objects. Received: {info!r}")
    fmt.check(target, tensors)
    fmt.check_companions_held(options.get("companions") or {})
    checked = check_metadata(metadata)
    per_tensor = {name: check_metadata(items) for name, items in (tensor_metadata or {}).items()}
    return WriteRequest(tensors, checked, per_tensor, **options)


def lay_out(
    target: str,
    fmt: Format,
    layout: Layout,
    force: bool,
    presize: bool,
    at: str | None = None,
) -> tuple[Temporary, list[Place]]:
    """The output's temporary beside ``target``, laid out.

    :func:`~vsgen.formats.atomic.preflight` first (``layout.needed`` bytes, what
    ``fmt`` lets ``force`` replace), then a new temporary (named ``at`` if given:
    a resumable job's) and ``layout.create`` (``presize`` as there); if laying out
    fails the temporary is removed. OSErrors name the target.
    """
    path = os.path.abspath(target)
    old = preflight(
        target,
        path,
        directory=fmt.directory,
        force=force,
        needed=layout.needed,
        refuse_replacing=fmt.refuse_replacing,
    )
    try:
        temporary = fmt.temporary(path, target, force, old, at=at)
    except OSError as error:
        raise io_error(error, target) from error
    try:
        places = layout.create(temporary, presize)
    except BaseException as error:
        temporary.discard()
        if isinstance(error, OSError):
            raise io_error(error, target) from error
        raise
    return temporary, places


# --- what files store, for the reader -------------------------------------------------


class UnreadableFile(ValueError):
    """A file vsgen refuses to read: malformed, hostile, or not a tensor file."""


class StoredTensor(NamedTuple):
    """One tensor as a file stores it (headers only; values via :func:`read_values`).

    ``dtype`` is a NumPy/ml_dtypes name (``float32``, ``bfloat16``, ``int64``,
    ``bool``...). ``offset`` is the absolute byte offset of the values for
    npy and safetensors; ``byteorder`` is ``"<"`` or ``">"``; ``fortran_order``
    only for npy. ``reader`` is the format that reads the values itself (HDF5
    through h5py, Zarr chunk by chunk; ``offset`` is then None), None when they
    lie at ``offset``.
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
    reader: Format | Any = None
    #: What ``reader`` needs to read the values (a Zarr array's layout), found
    #: when the file was opened: a store is read once, not once per tensor.
    source: Any = None

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


class TensorFile(NamedTuple):
    """A tensor file's tensors, in file order, and its file-level metadata."""

    path: str
    format: str
    tensors: tuple[StoredTensor, ...]
    metadata: dict[str, str]

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


def open_regular(path: str, follow: bool = True) -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    Opened without blocking and checked with ``fstat`` on the descriptor
    itself, so a FIFO or device (even one swapped in after a check) is
    refused instead of hanging the reader. ``follow=False``: a symbolic link is
    refused too (files inside a store or shard directory).

    Raises:
        UnreadableFile: missing, a directory, a link (``follow=False``), or not a
            regular file.
        OSError: the file exists but cannot be opened (e.g. permissions).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise UnreadableFile(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UnreadableFile(f"{path} is a directory, not a tensor file") from None
    except OSError as error:
        if not follow and error.errno == errno.ELOOP:
            raise UnreadableFile(
                f"{path} is a symbolic link; vsgen does not follow links inside a store "
                "or shard directory"
            ) from None
        raise
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


def open_binary(path: str, follow: bool = True) -> BinaryIO:
    """:func:`open_regular` as a binary file object."""
    return os.fdopen(open_regular(path, follow), "rb")


#: Values per piece of :func:`read_values`.
READ_CHUNK = 1 << 20


def read_values(
    tensor: StoredTensor, chunk_size: int | None = None, any_order: bool = False
) -> Iterator[numpy.ndarray]:
    """The values of ``tensor`` as consecutive flat pieces of at most ``chunk_size``.

    Pieces are in C order (npy files in Fortran order are read in storage
    order; Zarr arrays chunked in tiles are refused unless ``any_order``, then
    read chunk by chunk), in the native-order dtype (:meth:`StoredTensor.numpy_dtype`).
    npy and safetensors are read sequentially at the data offset (not a memory
    map, so the resident set stays one piece); HDF5 through h5py in slices
    along the leading axes, after the checks of :mod:`vsgen.formats.h5`.

    Raises:
        UnreadableFile: the file changed or is truncated, or an HDF5 dataset
            cannot be read in bounded work.
    """
    chunk_size = max(1, READ_CHUNK if chunk_size is None else int(chunk_size))
    if tensor.size == 0:
        return
    if tensor.reader is not None:
        yield from tensor.reader.values(tensor, chunk_size, any_order)
        return
    assert tensor.offset is not None
    with open_binary(tensor.path) as handle:
        handle.seek(tensor.offset)
        yield from decoded_values(tensor, chunk_size, lambda start, size: handle.read(size))


def decoded_values(
    tensor: StoredTensor, chunk_size: int, read: Callable[[int, int], bytes]
) -> Iterator[numpy.ndarray]:
    """The values of a tensor stored at ``tensor.offset``, in pieces of at most
    ``chunk_size``: ``read(offset, size)`` gives the next ``size`` bytes, from byte
    ``offset`` of the file (UnreadableFile if fewer come)."""
    native = tensor.numpy_dtype()
    # ml_dtypes types (bfloat16, float8) have no byte-order variant: read
    # their bits as unsigned words and reinterpret.
    bits = native.kind == "V" or native.type.__module__.startswith("ml_dtypes")
    stored = numpy.dtype(f"u{tensor.itemsize}") if bits else native
    if stored.itemsize > 1:
        stored = stored.newbyteorder(">" if tensor.byteorder == ">" else "<")
    assert tensor.offset is not None
    for start in range(0, tensor.size, chunk_size):
        count = min(chunk_size, tensor.size - start)
        data = read(tensor.offset + start * tensor.itemsize, count * tensor.itemsize)
        if len(data) != count * tensor.itemsize:
            raise UnreadableFile(f"{tensor.path}: file is truncated (tensor {tensor.name!r})")
        piece = numpy.frombuffer(data, dtype=stored)
        if bits:
            yield piece.astype(stored.newbyteorder("=")).view(native)
        else:
            yield piece.astype(native)
