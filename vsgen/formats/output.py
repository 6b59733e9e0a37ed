"""The streaming writer: :func:`open_output` checks and lays out an output,
:class:`Output` takes each tensor's values in order, then commits.

The output's life cycle (pre-flight checks, the temporary beside the target,
commit and abort) is :mod:`vsgen.formats.atomic`'s; the layout is the format's
(:mod:`vsgen.formats.registry`). Block writers (:mod:`vsgen.formats.parallel`)
share both.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import numpy

from vsgen.dtypes import TensorInfo
from vsgen.formats import registry
from vsgen.formats.atomic import AtomicFile, StagedOutput, TemporaryDirectory
from vsgen.formats.base import (
    FileLayout,
    FilePlace,
    Place,
    check_output,
    lay_out,
    little_endian_bytes,
)


class _Sequential:
    """Each tensor's bytes, in order, at its place: in one file (the temporary, or
    standard output, whose places follow each other) or one file per tensor
    (npydir, whose files the layout made)."""

    def __init__(
        self, places: Sequence[Place], own: BinaryIO | None = None, own_path: str | None = None
    ) -> None:
        self._places = places
        self._own = own
        self._own_path = own_path
        self._file: BinaryIO | None = None
        self._path: str | None = None
        self._position: int | None = None

    @classmethod
    def to_stream(cls, stream: BinaryIO, layout: FileLayout) -> _Sequential:
        """Standard output: the header now, then the tensors back to back."""
        places = [
            FilePlace("-", offset, info.shape, info.dtype)
            for offset, info in zip(layout.offsets, layout.tensors, strict=True)
        ]
        writer = cls(places, stream, "-")
        if layout.prefix:
            stream.write(layout.prefix)
        writer._file, writer._path, writer._position = stream, "-", len(layout.prefix)
        return writer

    def begin(self, index: int) -> None:
        """Get ready for the bytes of tensor ``index`` (called in order)."""
        place = self._places[index]
        assert isinstance(place, FilePlace)
        if place.path != self._path:
            self.close()
            own = self._own is not None and place.path == self._own_path
            self._file = self._own if own else open(place.path, "r+b")  # noqa: SIM115
            self._path, self._position = place.path, None
        if self._position != place.offset:
            assert self._file is not None
            self._file.seek(place.offset)
            self._position = place.offset

    def write(self, data: memoryview) -> None:
        assert self._file is not None and self._position is not None
        self._file.write(data)
        self._position += len(data)

    def close(self) -> None:
        """Close the current file if it is not the output's own (flushing it)."""
        if self._file is not None and self._file is not self._own:
            file, self._file, self._path = self._file, None, None
            file.close()

    def finish(self) -> None:
        self.close()
        if self._own is not None:
            self._own.flush()

    def drop(self) -> None:
        """Close without caring about the data (the output is being removed)."""
        # A failed flush only loses data that is being thrown away.
        with contextlib.suppress(OSError):
            self.close()
        self._file = self._path = None


class Output(StagedOutput):
    """An output being written: feed values with :meth:`write`, then :meth:`commit`.

    Tensors are filled in the order given to :func:`open_output`, each with
    its flat C-order values. Used as a context manager, leaving the block by
    an exception (including KeyboardInterrupt and SystemExit) aborts;
    leaving it normally without :meth:`commit` aborts too, so a forgotten
    commit never publishes a file.
    """

    def __init__(
        self,
        writer: _Sequential,
        target: str,
        fmt: str,
        tensors: Sequence[TensorInfo],
        temporary: AtomicFile | TemporaryDirectory | None,
    ) -> None:
        super().__init__(target, fmt, tensors, temporary)
        self._writer = writer
        self._index = 0
        self._filled = 0
        self._written = 0
        self._guarded(self._writer.begin, 0)

    @property
    def total_values(self) -> int:
        """Number of values of all tensors together."""
        return sum(info.size for info in self._tensors)

    @property
    def values_written(self) -> int:
        """Number of values written so far, all tensors together."""
        return self._written

    def _skip_full_tensors(self) -> None:
        while self._index < len(self._tensors) and self._filled == self._tensors[self._index].size:
            self._index += 1
            self._filled = 0
            if self._index < len(self._tensors):
                self._guarded(self._writer.begin, self._index)

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
        self._guarded(self._writer.write, little_endian_bytes(values))
        self._filled += values.size
        self._written += values.size

    def _check_complete(self) -> None:
        self._skip_full_tensors()
        if self._index < len(self._tensors):
            info = self._tensors[self._index]
            self.abort()
            raise ValueError(
                f"tensor {info.name!r} is incomplete: {self._filled} of {info.size} values written"
            )

    def _install(self) -> None:
        self._writer.finish()
        super()._install()

    def _release(self) -> None:
        self._writer.drop()


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
    :data:`~vsgen.formats.FORMATS` (see :func:`~vsgen.formats.resolve_format`).
    ``metadata`` is kept by h5 and safetensors
    (:data:`~vsgen.formats.METADATA_FORMATS`) and ignored by the others;
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
    spec = registry.get(fmt, streaming=True)
    request = check_output(target, spec, tensors, metadata, tensor_metadata)
    layout = spec.plan(request)
    if target == "-":
        # The formats that go to standard output are one file of consecutive tensors.
        assert isinstance(layout, FileLayout)
        stream = stdout if stdout is not None else sys.stdout.buffer
        writer = _Sequential.to_stream(stream, layout)
        return Output(writer, target, spec.name, request.tensors, None)
    temporary, places = lay_out(target, spec, layout, force, presize=False)
    if isinstance(temporary, AtomicFile):
        writer = _Sequential(places, temporary.file, temporary.path)
    else:
        writer = _Sequential(places)
    return Output(writer, target, spec.name, request.tensors, temporary)
