"""Writing a job block by block: plan the blocks, make them anywhere, write them in place.

The ``vsgen`` stream is counter-based: the value at flat index p of a tensor
depends only on (seed, options, p). Any block of any tensor can therefore be made
anywhere, in any order, as many times as needed, with the same bytes.
:func:`write` builds on that:

1. every tensor of a :class:`~vsgen.job.ModelJob` becomes a
   :class:`BlockSource` (a seed and a stream, or a constant: small, picklable);
2. the output is laid out as a temporary beside the target
   (:func:`vsgen.formats.parallel.open_parallel_output`: headers written, files
   sized, Zarr chunk files made), which says where each tensor's bytes go;
3. :func:`plan_tasks` cuts every tensor into blocks (Zarr chunks, or about
   64 MiB of whole trailing axes) and groups them into :class:`WriteTask` objects;
4. a *runner* makes and writes the tasks' blocks and syncs what it wrote, then
   the output is committed (renamed into place), or removed on any failure.

The runner is passed in: :class:`LocalRunner` (threads of this process, the
default) here, ``vsgen.dask.ClusterRunner`` (the workers of a ``distributed``
cluster) in :mod:`vsgen.dask`. Nothing here imports Dask. Every output format can
be written this way; Zarr stores and sharded safetensors only this way. The
``keras`` stream is sequential (a block needs every value before it) and is
refused (:func:`check`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vsgen._limits import MAX_CHUNKS, MAX_THREADS
from vsgen._wording import COMMAND_LINE_MESSAGE, library_errors
from vsgen.dtypes import TensorInfo
from vsgen.fans import DEFAULT_BLOCK_BYTES, auto_block_shape
from vsgen.formats import atomic, parallel, registry
from vsgen.formats.atomic import cancellation, io_error, preflight
from vsgen.formats.base import check_output
from vsgen.formats.parallel import TaskResult
from vsgen.formats.sharded import DEFAULT_MAX_SHARD_SIZE, parse_size
from vsgen.streams import Draw, get_stream, usable_cpus

__all__ = [
    "TASK_BYTES",
    "BlockSource",
    "Job",
    "KeptInterrupt",
    "LocalRunner",
    "Runner",
    "TaskResult",
    "WriteTask",
    "check",
    "plan_tasks",
    "sources",
    "task_groups",
    "write",
]

#: Seconds between two polls of ``cancelled`` (and of the runner's progress).
POLL_SECONDS = 0.05
#: ``on_progress(values)``: called in the caller's thread as blocks complete.
OnProgress = Callable[[int], None] | None
#: ``cancelled()``: polled about 20 times a second; True stops the job.
Cancelled = Callable[[], bool] | None


# --- what a tensor is, block by block ------------------------------------------------


class Job(Protocol):
    """What :func:`write` needs of a job: a :class:`vsgen.job.ModelJob`
    (the tensors, each one's plan, the file's and each tensor's metadata)."""

    @property
    def infos(self) -> Sequence[TensorInfo]: ...

    @property
    def plans(self) -> Sequence[Any]: ...

    def metadata(self) -> dict[str, str]: ...

    def tensor_metadata(self) -> dict[str, dict[str, str]]: ...

    # Optional: ``companions`` (file name -> bytes) go beside the tensors.


@dataclass(frozen=True)
class BlockSource:
    """One tensor's values, computable block by block in any process.

    Small and picklable: a stream label and its :class:`~vsgen.streams.Draw`, a
    constant, or a tensor copied from a checkpoint (``copy_of``: its path and the
    tensor's name there; ``--like`` keeps integer tensors so). ``full_shape`` is the
    shape of the tensor the stream indexes; ``row_offset`` is where this tensor's
    first row lies in it (``--rows``/``--shard``); ``random_access`` is False for a
    sequential stream (``keras``), whose blocks cannot be made apart. ``set_rows``
    are ``(row, value)`` pairs written over the drawn values (an embedding's
    padding row). ``values`` holds a tensor already in memory (a module's kept
    tensor), from ``values_origin`` on: :func:`plan_tasks` gives each block's
    task only its own part, so that a task sent to a worker carries that part.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    full_shape: tuple[int, ...]
    row_offset: int = 0
    stream: str | None = None
    draw: Draw | None = None
    constant: float | None = None
    random_access: bool = True
    copy_of: tuple[str | None, str] | None = None
    set_rows: tuple[tuple[int, float], ...] = ()
    values: np.ndarray | None = field(default=None, compare=False, repr=False)
    values_origin: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def from_plan(cls, name: str, plan: Any) -> BlockSource:
        """From a ``SamplePlan`` (initializer), or a ``ConstantPlan``, ``CopyPlan``,
        ``FixedRowsPlan`` or ``ArrayPlan`` (model jobs)."""
        set_rows = getattr(plan, "set_rows", None)
        if set_rows is not None:
            return dataclasses.replace(cls.from_plan(name, plan.base), set_rows=tuple(set_rows))
        values = getattr(plan, "values", None)
        if isinstance(values, np.ndarray):
            shape = tuple(values.shape)
            origin = (0,) * len(shape)
            return cls(name, shape, values.dtype, shape, values=values, values_origin=origin)
        draw = getattr(plan, "draw", None)
        if draw is None:
            shape = tuple(plan.shape)
            if hasattr(plan, "value"):
                return cls(name, shape, np.dtype(plan.dtype), shape, constant=float(plan.value))
            return cls(name, shape, np.dtype(plan.dtype), shape, copy_of=(plan.source, plan.name))
        stream = plan.stream
        full_shape = tuple(plan.full_shape)
        row_size = math.prod(full_shape[1:]) if full_shape else 1
        row_offset = plan.start // row_size if full_shape and row_size else 0
        return cls(
            name,
            tuple(plan.shape),
            np.dtype(draw.dtype),
            full_shape,
            row_offset,
            stream.label,
            draw,
            random_access=stream.random_access,
        )

    def check_parallel(self) -> None:
        """Refuse sources whose blocks cannot be made independently (or at all)."""
        if self.copy_of is not None and self.copy_of[0] is None:
            raise ValueError(
                f"tensor {self.name!r} is copied, but there is no checkpoint to copy from"
            )
        if not self.random_access:
            raise ValueError(
                f"tensor {self.name!r} uses the {self.stream} stream, which is sequential "
                "(every value depends on all before it) and cannot be split into blocks; use "
                "the default vsgen stream, or a .npy/.h5/.safetensors file without --scheduler"
            )

    def block(self, origin: Sequence[int], shape: Sequence[int], threads: int = 1) -> np.ndarray:
        """The block of this tensor at ``origin`` with extent ``shape``."""
        shape = tuple(int(d) for d in shape)
        origin = tuple(int(o) for o in origin)
        if self.values is not None:
            index = tuple(
                slice(o - first, o - first + e)
                for o, first, e in zip(origin, self.values_origin, shape, strict=True)
            )
            # np.array, not ascontiguousarray: a scalar tensor stays 0-d.
            return np.array(self.values[index], dtype=self.dtype, order="C")
        if self.copy_of is not None:
            return self._copied(origin, shape)
        if self.draw is None:
            return np.full(shape, self.constant, dtype=self.dtype)
        out = np.empty(shape, dtype=self.dtype)
        stream_origin = origin
        if self.full_shape:
            stream_origin = (origin[0] + self.row_offset, *origin[1:])
        get_stream(self.stream or "vsgen").fill_block(
            out, stream_origin, self.full_shape, self.draw, threads
        )
        for row, value in self.set_rows:
            if shape and origin[0] <= row < origin[0] + shape[0]:
                out[row - origin[0]] = value
        return out

    def part(self, origin: Sequence[int], shape: Sequence[int]) -> BlockSource:
        """This source for one block only: a tensor in memory keeps just the block's
        values (a view), every other source is itself."""
        if self.values is None:
            return self
        index = tuple(
            slice(o - first, o - first + e)
            for o, first, e in zip(origin, self.values_origin, shape, strict=True)
        )
        return dataclasses.replace(
            self, values=self.values[index], values_origin=tuple(int(o) for o in origin)
        )

    def _copied(self, origin: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
        """A block of a copied tensor: the rows it spans, read as one flat range of
        the checkpoint (through the hardened reader), cut to its other axes."""
        from vsgen.formats.readers import read_tensor_range

        assert self.copy_of is not None
        path, name = self.copy_of
        if path is None:
            self.check_parallel()
        assert path is not None
        rows = (origin[0], origin[0] + shape[0]) if self.shape else (0, 1)
        row_size = math.prod(self.shape[1:])
        flat = read_tensor_range(path, name, rows[0] * row_size, rows[1] * row_size)
        if flat.dtype != self.dtype:
            raise ValueError(f"--like {path}: tensor {name!r} changed while it was copied")
        if not self.shape:
            return flat.reshape(())
        slab = flat.reshape(rows[1] - rows[0], *self.shape[1:])
        inner = tuple(slice(o, o + e) for o, e in zip(origin[1:], shape[1:], strict=True))
        return np.ascontiguousarray(slab[(slice(None),) + inner])


def sources(job: Job) -> list[BlockSource]:
    """One :class:`BlockSource` per tensor of ``job``, in its order."""
    return [
        BlockSource.from_plan(info.name, plan)
        for info, plan in zip(job.infos, job.plans, strict=True)
    ]


def check(
    job: Job,
    target: str | None = None,
    fmt: str | None = None,
    *,
    chunks: Any = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    threads: int | None = None,
    force: bool = False,
) -> None:
    """Refuse a job that :func:`write` would refuse before making anything (nothing
    is written): a tensor that cannot be made block by block, a bad
    ``max_shard_size`` or ``threads``, ``chunks`` cutting the tensors into more than
    ``MAX_CHUNKS`` blocks, and, given a ``target``, an output its format cannot hold
    or lay out (a Zarr store of too many chunk files), an existing target without
    ``force`` or one ``force`` may not replace, a directory without room. The
    arguments are :func:`write`'s.

    Raises:
        ValueError: the message names the tensor, the argument or the target.
        OSError: the target's directory is not writable or too small.
    """
    _, spec, _, _, layout = _planned(job, target, fmt, chunks, max_shard_size, threads)
    if target is not None and _remote(target):
        if not isinstance(target, str):
            return
        from vsgen import objectstore

        objectstore.preflight(target, spec.name, force)
    elif target is not None:
        preflight(
            target,
            os.path.abspath(target),
            directory=spec.directory,
            force=force,
            needed=layout.needed,
            refuse_replacing=spec.refuse_replacing,
            clean=False,
        )


def _planned(
    job: Job,
    target: str | None,
    fmt: str | None,
    chunks: Any,
    max_shard_size: int | str,
    threads: int | None,
) -> tuple[list[BlockSource], Any, list[Any] | None, int, Any]:
    """:func:`check`'s checks but the target's; the sources, the format, each
    tensor's given chunks, the shard size in bytes and the layout (None without a
    ``target``)."""
    tensor_sources = sources(job)
    for source in tensor_sources:
        source.check_parallel()
    shard_bytes = parse_size(max_shard_size)
    check_threads(threads)
    given = None if chunks is None else [_given_chunks(s, chunks) for s in tensor_sources]
    if given is not None:
        check_block_count(tensor_sources, given)
    spec = layout = None
    if target is not None:
        shown = _shown(target)
        if shown != target and fmt not in (None, "zarr"):
            raise ValueError(f"a zarr Store object holds a Zarr store, not {fmt}")
        chosen = "zarr" if shown != target else fmt
        spec = registry.get(registry.resolve_format(shown, chosen, len(tensor_sources)))
        infos = [TensorInfo(s.name, s.shape, s.dtype) for s in tensor_sources]
        request = check_output(
            shown,
            spec,
            infos,
            job.metadata(),
            job.tensor_metadata(),
            chunk_shapes=given,
            max_shard_size=shard_bytes,
            companions=getattr(job, "companions", None),
        )
        layout = spec.plan(request)
    return tensor_sources, spec, given, shard_bytes, layout


# --- the tasks ---------------------------------------------------------------------------


def _grid(shape: tuple[int, ...], chunks: Any) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(origin, extent)`` of every block of ``shape`` cut by ``chunks``.

    ``chunks`` is a block shape (a regular grid) or, per axis, a tuple of block
    extents (an irregular grid, as ``dask.array`` writes chunks).
    """
    if not shape:
        yield (), ()
        return
    if math.prod(shape) == 0:
        return
    per_axis: list[list[int]] = []
    for axis, (length, spec) in enumerate(zip(shape, chunks, strict=True)):
        if isinstance(spec, (tuple, list)):
            sizes = [int(s) for s in spec]
            if sum(sizes) != length or any(s < 0 for s in sizes):
                raise ValueError(
                    f"Argument `chunks` must add up to the shape on axis {axis}: "
                    f"{tuple(sizes)} vs {length}"
                )
        else:
            step = int(spec)
            if step < 1:
                raise ValueError(f"Argument `chunks` must be positive. Received: {chunks!r}")
            sizes = [min(step, length - first) for first in range(0, length, step)]
        per_axis.append([s for s in sizes if s])
    starts = [np.cumsum([0, *sizes[:-1]]).tolist() for sizes in per_axis]
    for index in np.ndindex(*(len(sizes) for sizes in per_axis)):
        origin = tuple(int(starts[axis][i]) for axis, i in enumerate(index))
        extent = tuple(int(per_axis[axis][i]) for axis, i in enumerate(index))
        yield origin, extent


@dataclass(frozen=True)
class WriteTask:
    """Blocks to make and write: ``(source, place, origin, extent)`` each. Picklable,
    and small: it carries only its own tensors' sources and places, never data.

    ``checksum``: report the CRC-32 of the bytes written (a resumable job). ``expected``:
    the CRC-32 an earlier run journaled for this task; its blocks are read back and
    compared first, and written again only if they differ.
    """

    blocks: tuple[tuple[BlockSource, parallel.Place, tuple[int, ...], tuple[int, ...]], ...]
    checksum: bool = False
    expected: int | None = None

    @property
    def values(self) -> int:
        return sum(math.prod(extent) for _, _, _, extent in self.blocks)

    def __call__(self, threads: int = 1, report: Callable[[int], None] | None = None) -> TaskResult:
        """Make and write every block (or find them written already); the result.
        ``report(n)`` is called after each block but the last (progress within a task)."""
        if self.expected is not None:
            from vsgen import resume

            if resume.verify(self.blocks) == self.expected:
                return TaskResult(self.values, self.expected)
        crc = 0
        for position, (source, place, origin, extent) in enumerate(self.blocks):
            values = source.block(origin, extent, threads)
            parallel.write_block(place, origin, values)
            if self.checksum or self.expected is not None:
                from vsgen import resume

                crc = resume.checksum(values, crc)
            if report is not None and position + 1 < len(self.blocks):
                report(math.prod(extent))
        return TaskResult(self.values, crc if self.checksum or self.expected is not None else None)


#: About this many bytes per task: blocks of tensors given no chunks are about this
#: large, and consecutive smaller ones (small tensors) share a task.
TASK_BYTES = DEFAULT_BLOCK_BYTES

Block = tuple[BlockSource, Any, tuple[int, ...], tuple[int, ...]]


def _given_chunks(source: BlockSource, chunks: Any) -> Any:
    """The chunks the caller gave for this tensor, or None: a dict gives them by
    name; a block shape (or per-axis lists) applies to tensors of its rank only."""
    given = chunks.get(source.name) if isinstance(chunks, Mapping) else chunks
    if given is None or len(given) != len(source.shape):
        return None
    return given


def _chunks_for(source: BlockSource, place: parallel.Place, chunks: Any) -> Any:
    """The place's own block shape (Zarr chunks), else the caller's, else about
    64 MiB of whole trailing axes."""
    if place.block_shape is not None:
        return place.block_shape
    given = _given_chunks(source, chunks)
    if given is None:
        return auto_block_shape(source.shape, source.dtype.itemsize)
    return given


def task_groups(
    output: parallel.ParallelOutput | Any,
    tensor_sources: Sequence[BlockSource],
    chunks: Any = None,
    task_bytes: int = TASK_BYTES,
) -> list[list[Block]]:
    """The blocks of every tensor, grouped into tasks in order.

    A tensor given chunks (the caller's block shape, or its Zarr chunks) has one task
    per block: tasks of about ``--chunks``. The blocks of the other tensors are about
    ``task_bytes`` each (whole trailing axes), and consecutive smaller ones share a
    task up to ``task_bytes``, so a model of many small tensors is a few tasks, and a
    single large tensor, a shard or a store keeps every worker busy.
    """
    groups: list[list[Block]] = []
    current: list[Block] = []
    size = 0
    for source, place in zip(tensor_sources, output.places, strict=True):
        given = _given_chunks(source, chunks) is not None
        for origin, extent in _grid(source.shape, _chunks_for(source, place, chunks)):
            block = (source.part(origin, extent), place, origin, extent)
            nbytes = math.prod(extent) * source.dtype.itemsize
            if given or (current and size + nbytes > task_bytes):
                if current:
                    groups.append(current)
                current, size = [], 0
            if given:
                groups.append([block])
                continue
            current.append(block)
            size += nbytes
    if current:
        groups.append(current)
    return groups


def plan_tasks(
    output: parallel.ParallelOutput | Any,
    tensor_sources: Sequence[BlockSource],
    chunks: Any = None,
    task_bytes: int = TASK_BYTES,
) -> list[Any]:
    """The tasks that fill ``output`` (:func:`task_groups`): :class:`WriteTask` objects,
    or the output's own kind of task (an object store's upload parts)."""
    groups = task_groups(output, tensor_sources, chunks, task_bytes)
    make = getattr(output, "make_tasks", None)
    if make is not None:
        return list(make(groups))
    return [WriteTask(tuple(group)) for group in groups]


# --- who runs the tasks --------------------------------------------------------------

#: ``on_done(index, result)``: called in the caller's thread as each task finishes.
OnDone = Callable[[int, TaskResult], None] | None


class Runner(Protocol):
    """Who makes and writes the blocks of :func:`write`, and makes them durable."""

    def prepare(self, temp: str) -> None:
        """Check that the blocks can be written under ``temp`` (the laid-out temporary)."""

    def run(
        self,
        tasks: Sequence[Any],
        on_progress: OnProgress,
        cancelled: Cancelled,
        on_done: OnDone = None,
    ) -> None:
        """Run every task; ``on_progress(values)`` as values are written and
        ``on_done(index, result)`` as each task finishes, both in the calling thread;
        stop (KeyboardInterrupt) as soon as ``cancelled()`` is true."""

    def sync(self, temp: str) -> None:
        """Make every block written under ``temp`` durable (before the commit)."""

    def forget(self, temp: str) -> None:
        """Drop what :meth:`sync` would sync under ``temp`` (the job failed)."""


def stop_if_cancelled(cancelled: Cancelled) -> None:
    """Raise KeyboardInterrupt if ``cancelled()`` says so (a runner's poll)."""
    if cancelled is not None and cancelled():
        raise KeyboardInterrupt


@dataclass(frozen=True)
class LocalRunner:
    """Tasks run by ``threads`` threads of this process (default: the usable CPUs),
    at most two per thread in flight, so memory stays at a few blocks per thread."""

    threads: int | None = None

    def prepare(self, temp: str) -> None:
        """Nothing to check: this process laid the temporary out."""

    def run(
        self,
        tasks: Sequence[Any],
        on_progress: OnProgress,
        cancelled: Cancelled,
        on_done: OnDone = None,
    ) -> None:
        check_threads(self.threads)
        workers = usable_cpus() if self.threads is None else self.threads
        pending = list(reversed(range(len(tasks))))
        running: dict[Future[TaskResult], int] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="vsgen-write") as pool:
            try:
                while pending or running:
                    while pending and len(running) < 2 * workers:
                        index = pending.pop()
                        running[pool.submit(tasks[index], 1)] = index
                    done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                    failed = None
                    # The tasks that finished are reported before a failure among them is
                    # raised, so that a resumable job keeps all of them.
                    for future in sorted(done, key=running.__getitem__):
                        index = running.pop(future)
                        if future.exception() is not None:
                            failed = failed or future
                            continue
                        result = future.result()
                        if on_done is not None:
                            on_done(index, result)
                        if on_progress is not None:
                            on_progress(result.values)
                    if failed is not None:
                        failed.result()
                    stop_if_cancelled(cancelled)
            except BaseException:
                for future in running:
                    future.cancel()
                raise

    def sync(self, temp: str) -> None:
        parallel.sync_written(temp, atomic.stop_if_cancelled)

    def forget(self, temp: str) -> None:
        parallel.forget_written(temp)


# --- writing ---------------------------------------------------------------------------


class KeptInterrupt(KeyboardInterrupt):
    """An interrupt that kept a resumable job's temporary; ``str()`` says how far the
    job got and how to finish it (in the words of ``command_line_message`` for the
    command line)."""


def write(
    job: Job,
    target: str,
    fmt: str | None = None,
    *,
    runner: Runner | None = None,
    chunks: Any = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    force: bool = False,
    threads: int | None = None,
    on_progress: OnProgress = None,
    cancelled: Cancelled = None,
    resume: bool = False,
) -> None:
    """Write every tensor of ``job`` to ``target``, block by block, atomically.

    ``job`` is a :class:`~vsgen.job.ModelJob` (one tensor,
    :func:`~vsgen.job.tensor_job`, or a model, :func:`~vsgen.modelspec.build_job`).
    ``fmt`` is one of ``npy``, ``raw``, ``safetensors``, ``h5``, ``npydir``, ``zarr``,
    ``safetensors-sharded`` (default: from the target, ``.zarr`` meaning zarr).
    ``runner`` makes and writes the blocks: a :class:`LocalRunner` of ``threads``
    threads by default, or ``vsgen.dask.ClusterRunner(client)``. ``chunks``: a
    block shape (the Zarr chunk shape) for the tensors of its rank, per-axis block
    lists (not for Zarr), or a dict of those by name; each such block is a task.
    Other tensors get blocks of about 64 MiB of whole trailing axes, and small ones
    share tasks of about that size (:func:`task_groups`). ``max_shard_size`` (bytes,
    or ``"5GB"``) bounds the shards of ``safetensors-sharded``; a job's
    ``companions`` (a Hugging Face ``config.json``) are written beside them.
    ``on_progress(n)`` is called in this thread as blocks complete; ``cancelled()``
    is polled about 20 times a second, and True stops the job (KeyboardInterrupt) as
    an interrupt would.

    The bytes do not depend on the runner, the chunks, the threads or retried
    tasks. On any failure or interrupt the temporary is removed and an existing
    target left as it was; it is replaced only with ``force``. With ``resume``, the
    temporary and a journal of the finished tasks are kept instead, beside the
    target, and the same job written again with ``resume`` finishes them
    (:mod:`vsgen.resume`); the error says how many tasks are done. Messages name the
    arguments (``force=True``, ``format="npydir"``), not the command line's options.

    Raises:
        ValueError: bad arguments (exit 2 in the CLI), including the keras stream,
            or, with ``resume``, the kept temporary of another job beside the target.
        OSError: I/O failure, or a runner that could not finish.
    """
    with library_errors():
        tensor_sources, spec, given, shard_bytes, layout = _planned(
            job, target, fmt, chunks, max_shard_size, threads
        )
        if resume and not isinstance(resume, bool):
            raise ValueError(f"Argument `resume` must be True or False. Received: {resume!r}")
        if resume and _remote(target):
            raise ValueError(
                "Argument `resume` keeps a job's work beside its target on a file system; "
                f"jobs that write to an object store start afresh. Received: {_shown(target)}"
            )
    runner = runner if runner is not None else LocalRunner(threads)
    infos = [TensorInfo(s.name, s.shape, s.dtype) for s in tensor_sources]
    session = None
    # Laying out (a store's every chunk file), the writers and the commit's syncing
    # all stop at the next file once cancelled() is true; never after the rename.
    with library_errors(), cancellation(cancelled), _naming(target):
        if _remote(target):
            from vsgen import objectstore

            remote = objectstore.open_output(target, spec.name, layout, force=force)
            _run(remote, runner, tensor_sources, chunks, on_progress, cancelled)
            return
        if resume:
            from vsgen import resume as resuming

            wanted = resuming.identity(
                target, spec.name, tensor_sources, job.metadata(), given, shard_bytes
            )
            session = resuming.Session.begin(target, wanted)
        else:
            _mention_kept(target)
        try:
            output = _open(
                job, target, spec.name, infos, given, shard_bytes, force, session, layout.needed
            )
        except BaseException:
            if session is not None and session.journal is not None:
                session.journal.close()
            raise
        with output:
            try:
                tasks = plan_tasks(output, tensor_sources, chunks)
                on_done = None
                if session is not None:
                    tasks, on_done = _journaled(session, output, tasks)
                runner.prepare(output.temp)
                if on_done is None:  # runners written before on_done take three arguments
                    runner.run(tasks, on_progress, cancelled)
                else:
                    runner.run(tasks, on_progress, cancelled, on_done=on_done)
                # Each writer syncs the files it wrote, once, before the rename.
                runner.sync(output.temp)
            except BaseException as error:
                runner.forget(output.temp)
                if session is None:
                    raise
                _keep(session, output, error)
            try:
                output.commit()
            finally:
                if session is not None and session.journal is not None:
                    session.journal.remove()


def _open(
    job: Job,
    target: str,
    fmt: str,
    infos: list[TensorInfo],
    given: list[Any] | None,
    shard_bytes: int,
    force: bool,
    session: Any,
    needed: int,
) -> Any:
    """The output's laid-out temporary: a fresh one (named by ``session`` if the job is
    resumable), or the one an earlier run of the job kept. ``needed``: the layout's
    bytes; a kept temporary already holds some of them, and the directory must have
    room for the rest."""
    if session is not None and session.resuming:
        from vsgen import resume as resuming

        still = max(0, needed - resuming.allocated(session.temp))
        return parallel.reopen_parallel_output(
            target, fmt, infos, session.places(), session.temp, force=force, needed=still
        )
    return parallel.open_parallel_output(
        target,
        fmt,
        infos,
        metadata=job.metadata(),
        tensor_metadata=job.tensor_metadata(),
        force=force,
        chunk_shapes=given,
        max_shard_size=shard_bytes,
        companions=getattr(job, "companions", None),
        at=None if session is None else session.temp,
    )


def _run(
    output: Any,
    runner: Runner,
    tensor_sources: Sequence[BlockSource],
    chunks: Any,
    on_progress: OnProgress,
    cancelled: Cancelled,
) -> None:
    """Fill an object store's ``output`` with the tasks it plans, and commit it; on any
    failure or interrupt it is aborted (what was written is removed)."""
    with output:
        tasks = plan_tasks(output, tensor_sources, chunks)
        runner.prepare(output.temp)
        runner.run(tasks, on_progress, cancelled, on_done=output.receive_task)
        output.commit()


def _remote(target: object) -> bool:
    """An object store's URL, or a zarr ``Store`` (``vsgen.objectstore``)."""
    if isinstance(target, str) and "://" not in target:
        return False
    from vsgen.formats.remote import is_remote

    return is_remote(target)


def _shown(target: Any) -> str:
    """The target as messages name it (a zarr ``Store``: its repr)."""
    return target if isinstance(target, str) else repr(target)


def _mention_kept(target: str) -> None:
    """A run without resume leaves a kept temporary alone, and says so."""
    if target == "-" or _remote(target):
        return
    from vsgen.resume import kept_beside

    kept = kept_beside(target)
    if kept:
        import warnings

        warnings.warn(
            f"{kept[0]} beside {target!r} holds an unfinished job kept to be resumed "
            "(--resume, resume=True): run that job again that way to finish it, or delete it",
            atomic.LeftoverWarning,
            stacklevel=3,
        )


def _journaled(session: Any, output: Any, tasks: list[Any]) -> tuple[list[Any], OnDone]:
    """The tasks of a resumable job (checksummed; those an earlier run finished
    checked instead of made), and the callback that journals each finished one."""
    journal = session.journal
    if journal is None:
        session.start(output.places, len(tasks))
        journal = session.journal
    elif journal.tasks != len(tasks):
        raise ValueError(
            f"cannot resume the job writing {output.target!r}: its journal lists "
            f"{journal.tasks:,} tasks, this job has {len(tasks):,}"
        )
    tasks = [
        dataclasses.replace(task, checksum=True, expected=journal.done.get(index))
        for index, task in enumerate(tasks)
    ]

    def on_done(index: int, result: TaskResult) -> None:
        if result.checksum is not None:
            journal.add(index, result.checksum)
        journal.sync()

    return tasks, on_done


def _keep(session: Any, output: Any, error: BaseException) -> None:
    """A resumable job failed: keep its temporary and journal, and raise ``error`` with
    how far it got and how to finish it."""
    output.keep()
    if session.journal is not None:
        session.journal.close()
    library = session.done_message(library=True)
    command_line = session.done_message(library=False)
    if isinstance(error, KeyboardInterrupt):
        raised: BaseException = KeptInterrupt(f"interrupted; {library}")
        setattr(raised, COMMAND_LINE_MESSAGE, f"interrupted; {command_line}")
    elif isinstance(error, OSError):
        reason = error.strerror or str(error)
        raised = OSError(error.errno or errno.EIO, f"{reason}; {library}")
        if isinstance(error, _cluster_error_types()):
            raised = type(error)(error.errno or errno.EIO, f"{reason}; {library}")
        setattr(raised, COMMAND_LINE_MESSAGE, f"{reason}; {command_line}")
    else:
        raise error
    raise raised from error


def _cluster_error_types() -> tuple[type, ...]:
    import sys

    dask_module = sys.modules.get("vsgen.dask")
    return () if dask_module is None else (dask_module.ClusterError,)


@contextlib.contextmanager
def _naming(target: str) -> Iterator[None]:
    """An OSError of a writer (it names a file in the hidden temporary) as one that
    names the target, keeping its errno."""
    try:
        yield
    except OSError as error:
        if isinstance(error, FileExistsError) or not error.filename:
            raise
        raise io_error(error, target) from error


def check_threads(threads: int | None) -> None:
    """``threads``: None, or a positive count of at most ``MAX_THREADS``.

    Raises:
        ValueError: naming the argument.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(
            f"Argument `threads` must be an integer from 1 to {MAX_THREADS}. "
            f"Received: threads={str(threads)[:40]}"
        )


def check_block_count(tensor_sources: Sequence[BlockSource], given: Sequence[Any]) -> None:
    """The blocks the caller's chunks cut the tensors into: at most ``MAX_CHUNKS`` in all
    (each is a task, and for Zarr a file), counted before anything is made.

    Raises:
        ValueError: naming the tensor and the count.
    """
    total = 0
    for source, chunks in zip(tensor_sources, given, strict=True):
        if chunks is None or not source.shape:
            continue
        count = 1
        for length, spec in zip(source.shape, chunks, strict=True):
            count *= (
                len(spec) if isinstance(spec, (tuple, list)) else -(-length // max(1, int(spec)))
            )
        total += count
        if total > MAX_CHUNKS:
            shown = ",".join(str(c) for c in chunks)
            raise ValueError(
                f"Argument `chunks` cuts tensor {source.name!r} into {count:,} blocks; at most "
                f"{MAX_CHUNKS:,} blocks (and Zarr chunk files) are written in all: give larger "
                f"chunks. Received: chunks={shown}"
            )
