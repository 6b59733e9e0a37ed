"""Generation beyond one machine: Dask arrays and outputs written by a cluster.

The ``vsgen`` stream is counter-based: the value at flat index p of a tensor
depends only on (seed, options, p). Any block of any tensor can therefore be
made anywhere, in any order, as many times as needed, with the same bytes. This
module maps that onto Dask (``pip install "vsgen[dask]"``):

* :func:`sample` and :func:`model` return ``dask.array.Array`` objects with one
  task per block and no data in the graph; every element equals the same element
  of the single-process result, for any chunking.
* :func:`write` writes a job (one tensor or a whole model) into any vsgen format,
  Zarr v3 stores and sharded safetensors included, with the work spread over a
  ``distributed`` cluster (or over local threads without one). The client lays the
  output out as a temporary beside the target; tasks make their blocks and write
  them in place; the client syncs and renames. See :mod:`vsgen.formats.parallel`.

Neither ``dask`` nor ``zarr`` is imported until a function here needs it. The
``keras`` stream is sequential (a block needs everything before it) and is refused.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vsgen.formats import parallel, sharded, zarr_format
from vsgen.formats.tensors import TensorInfo
from vsgen.streams import Draw, get_stream

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dask.array
    import distributed

__all__ = [
    "ClusterError",
    "TensorSource",
    "connect",
    "model",
    "parse_scheduler",
    "sample",
    "sources",
    "tensor_job",
    "to_dask",
    "write",
]

#: Default block size of writes: about 64 MiB of whole trailing axes per task.
WRITE_BLOCK_BYTES = zarr_format.DEFAULT_CHUNK_BYTES


class ClusterError(OSError):
    """The cluster could not finish the job (workers lost too often, a task failed)."""


# --- what a tensor is, block by block ------------------------------------------------


@dataclass(frozen=True)
class TensorSource:
    """One tensor's values, computable block by block in any process.

    Small and picklable: a stream label and its :class:`~vsgen.streams.Draw`, or a
    constant. ``full_shape`` is the shape of the tensor the stream indexes;
    ``row_offset`` is where this tensor's first row lies in it (``--rows``/``--shard``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    full_shape: tuple[int, ...]
    row_offset: int = 0
    stream: str | None = None
    draw: Draw | None = None
    constant: float | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def from_plan(cls, name: str, plan: Any) -> TensorSource:
        """From a ``SamplePlan`` (initializer) or a ``ConstantPlan`` (model spec)."""
        draw = getattr(plan, "draw", None)
        if draw is None:
            return cls(
                name,
                tuple(plan.shape),
                np.dtype(plan.dtype),
                tuple(plan.shape),
                constant=float(plan.value),
            )
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
        )

    def check_parallel(self) -> None:
        """Refuse sources whose blocks cannot be made independently."""
        if self.stream is not None and not get_stream(self.stream).random_access:
            raise ValueError(
                f"tensor {self.name!r} uses the {self.stream} stream, which is sequential "
                "(every value depends on all before it) and cannot be split into blocks; use "
                "the default vsgen stream, or a .npy/.h5/.safetensors file without --scheduler"
            )

    def block(self, origin: Sequence[int], shape: Sequence[int], threads: int = 1) -> np.ndarray:
        """The block of this tensor at ``origin`` with extent ``shape``."""
        shape = tuple(int(d) for d in shape)
        if self.draw is None:
            return np.full(shape, self.constant, dtype=self.dtype)
        out = np.empty(shape, dtype=self.dtype)
        origin = tuple(int(o) for o in origin)
        if self.full_shape:
            origin = (origin[0] + self.row_offset, *origin[1:])
        get_stream(self.stream or "vsgen").fill_block(
            out, origin, self.full_shape, self.draw, threads
        )
        return out


def sources(job: Any) -> list[TensorSource]:
    """One :class:`TensorSource` per tensor of a ``ModelJob`` (``infos`` + ``plans``)."""
    return [
        TensorSource.from_plan(info.name, plan)
        for info, plan in zip(job.infos, job.plans, strict=True)
    ]


def tensor_job(
    initializer: Any,
    shape: Sequence[int],
    dtype: object = "float32",
    name: str = "weight",
    *,
    rows: tuple[int, int] | None = None,
    fan_shape: Sequence[int] | None = None,
) -> Any:
    """A one-tensor ``ModelJob`` (what ``vsgen sample --shape`` writes), for :func:`write`."""
    from vsgen import provenance
    from vsgen.modelspec import ModelJob

    plan = initializer.plan(shape, dtype, rows=rows, fan_shape=fan_shape)
    fans = None if fan_shape is None else tuple(int(d) for d in fan_shape)
    job = ModelJob(seed=plan.draw.seed, seed_was_drawn=bool(initializer.seed_was_drawn))
    job.infos.append(TensorInfo(name, plan.shape, plan.draw.dtype))
    job.plans.append(plan)
    job.records[name] = provenance.tensor_record(initializer, plan, fans)
    return job


# --- dask arrays -----------------------------------------------------------------------


class _BlockMaker:
    """The function of every block of one tensor (``map_blocks`` with ``block_info``)."""

    def __init__(self, source: TensorSource) -> None:
        self.source = source

    def __call__(self, block_info: Mapping[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        location = block_info[None]["array-location"]
        origin = [first for first, _ in location]
        shape = [last - first for first, last in location]
        return self.source.block(origin, shape)


def to_dask(source: TensorSource, chunks: Any = "auto") -> dask.array.Array:
    """A Dask array of ``source`` with ``chunks`` (anything ``dask.array`` accepts).

    ``"auto"`` means blocks of whole trailing axes (whole rows of a matrix) of about
    dask's ``array.chunk-size`` (128 MiB by default): those cost one contiguous fill
    each, while a narrow column tile costs about as much as the rows it crosses.
    """
    import dask.array as da
    from dask.base import tokenize

    source.check_parallel()
    if isinstance(chunks, str) and chunks == "auto":
        # Whole trailing axes first: a block of whole rows is one contiguous range of
        # the stream (one fill), where dask's square-ish tiles would make each block
        # fill the rows it crosses and copy its columns out.
        import dask
        from dask.utils import parse_bytes

        target = parse_bytes(dask.config.get("array.chunk-size"))
        chunks = zarr_format.auto_chunk_shape(source.shape, source.dtype.itemsize, target)
    normalized = da.core.normalize_chunks(chunks, source.shape, dtype=source.dtype)
    token = tokenize(
        source.name,
        source.shape,
        source.dtype.str,
        source.full_shape,
        source.row_offset,
        source.stream,
        None
        if source.draw is None
        else (
            source.draw.distribution,
            source.draw.multiplier,
            source.draw.seed,
            source.draw.offset,
            source.draw.interval,
        ),
        source.constant,
        normalized,
    )
    return da.map_blocks(
        _BlockMaker(source),
        chunks=normalized,
        dtype=source.dtype,
        meta=np.empty((0,) * len(source.shape), dtype=source.dtype),
        name=f"vsgen-{token}",
    )


def sample(
    initializer: Any,
    shape: Sequence[int],
    dtype: object = "float32",
    chunks: Any = "auto",
    *,
    rows: tuple[int, int] | None = None,
    fan_shape: Sequence[int] | None = None,
) -> dask.array.Array:
    """``initializer(shape, dtype)`` as a Dask array with ``chunks``.

    Every element equals the same element of the single-process result whatever
    the chunking (rows, columns, n-d tiles, irregular chunks as tuples of tuples):
    one task per block, each computing its block from the seed; the graph holds
    no data. ``"auto"`` chunks are blocks of whole rows (see :func:`to_dask`).
    ``rows``/``fan_shape`` are as for ``VarianceScaling.plan``.

    Raises:
        ValueError: the initializer uses the sequential ``keras`` stream, or bad
            shape, dtype or chunks.
    """
    plan = initializer.plan(shape, dtype, rows=rows, fan_shape=fan_shape)
    return to_dask(TensorSource.from_plan("weight", plan), chunks)


def _model_job(
    spec_or_checkpoint: Any,
    *,
    seed: int | None,
    dtype: object,
    layout: str | None,
    stream: str | None,
    init: Any,
) -> Any:
    from vsgen import modelspec

    if hasattr(spec_or_checkpoint, "infos") and hasattr(spec_or_checkpoint, "plans"):
        return spec_or_checkpoint
    spec = like = None
    if isinstance(spec_or_checkpoint, modelspec.ModelSpec):
        spec = spec_or_checkpoint
    elif isinstance(spec_or_checkpoint, Mapping):
        spec = modelspec.parse_spec(spec_or_checkpoint)
    else:
        path = os.fspath(spec_or_checkpoint)
        if path.lower().endswith((".toml", ".json")):
            spec = modelspec.load_spec(path)
        else:
            like = modelspec.like_tensors(path)
    return modelspec.build_job(
        spec, like, seed=seed, dtype=dtype, layout=layout, stream=stream, init=init
    )


def model(
    spec_or_checkpoint: Any,
    *,
    seed: int | None = None,
    dtype: object = None,
    layout: str | None = None,
    stream: str | None = None,
    init: Any = None,
    chunks: Any = "auto",
) -> dict[str, dask.array.Array]:
    """Every tensor of a model as a Dask array, by name.

    ``spec_or_checkpoint`` is a model spec (a ``.toml``/``.json`` path, a parsed
    ``ModelSpec`` or its dict), a checkpoint path (``.safetensors``/``.h5``: the
    ``--like`` rules), or a ``ModelJob`` from ``vsgen.modelspec.build_job``. The
    keywords are those of ``build_job`` (``--seed``, ``--dtype``, ...), so each
    tensor gets the same seed as ``vsgen sample --spec/--like`` gives it.
    """
    job = _model_job(
        spec_or_checkpoint, seed=seed, dtype=dtype, layout=layout, stream=stream, init=init
    )
    return {source.name: to_dask(source, chunks) for source in sources(job)}


# --- writing ---------------------------------------------------------------------------


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
    and small: it carries only its own tensors' sources and places, never data."""

    blocks: tuple[tuple[TensorSource, parallel.Place, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def values(self) -> int:
        return sum(math.prod(extent) for _, _, _, extent in self.blocks)

    def __call__(self, threads: int = 1, report: Callable[[int], None] | None = None) -> int:
        """Make and write every block; return the number of values written.
        ``report(n)`` is called after each block but the last (progress within a task)."""
        for position, (source, place, origin, extent) in enumerate(self.blocks):
            parallel.write_block(place, origin, source.block(origin, extent, threads))
            if report is not None and position + 1 < len(self.blocks):
                report(math.prod(extent))
        return self.values


def _run_task(task: WriteTask, topic: str | None = None, index: int = 0) -> int:
    """Run a task on a worker; a task of several blocks (a shard) reports each block
    to the client as a ``topic`` event, so the progress bar moves within it."""
    if topic is None or len(task.blocks) < 2:
        return task()
    from distributed import get_worker

    worker = get_worker()
    return task(1, lambda count: worker.log_event(topic, [index, count]))


class _Progress:
    """Values done per task, from block events and completions; never over a task's size."""

    def __init__(self, tasks: Sequence[WriteTask]) -> None:
        self._sizes = [task.values for task in tasks]
        self._seen = [0] * len(tasks)
        self._pending = 0
        self._lock = threading.Lock()

    def event(self, event: Any) -> None:
        # Runs in the client's event-loop thread.
        with contextlib.suppress(TypeError, ValueError, IndexError):
            index, count = event[1]
            self.add(int(index), int(count))

    def add(self, index: int, count: int) -> None:
        with self._lock:
            grown = min(self._sizes[index], self._seen[index] + count) - self._seen[index]
            self._seen[index] += grown
            self._pending += grown

    def finish(self, index: int) -> None:
        self.add(index, self._sizes[index])

    def take(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, 0
            return pending


def _given_chunks(source: TensorSource, chunks: Any) -> Any:
    """The chunks the caller gave for this tensor, or None: a dict gives them by
    name; a block shape (or per-axis lists) applies to tensors of its rank only."""
    given = chunks.get(source.name) if isinstance(chunks, Mapping) else chunks
    if given is None or len(given) != len(source.shape):
        return None
    return given


def _chunks_for(source: TensorSource, place: parallel.Place, chunks: Any) -> Any:
    if isinstance(place, parallel.ZarrPlace):
        return place.chunk_shape
    given = _given_chunks(source, chunks)
    if given is None:
        return zarr_format.auto_chunk_shape(source.shape, source.dtype.itemsize, WRITE_BLOCK_BYTES)
    return given


def plan_tasks(
    output: parallel.ParallelOutput,
    tensor_sources: Sequence[TensorSource],
    chunks: Any = None,
    one_task_per_file: bool = False,
) -> list[WriteTask]:
    """The tasks that fill ``output``: one per block, or one per file (shards)."""
    per_tensor = [
        [
            (source, place, origin, extent)
            for origin, extent in _grid(source.shape, _chunks_for(source, place, chunks))
        ]
        for source, place in zip(tensor_sources, output.places, strict=True)
    ]
    if one_task_per_file:
        return [
            WriteTask(tuple(block for index in group for block in per_tensor[index]))
            for group in parallel.shard_groups(output)
        ]
    return [WriteTask((block,)) for blocks in per_tensor for block in blocks]


def _zarr_chunk_shapes(
    tensor_sources: Sequence[TensorSource], chunks: Any
) -> list[tuple[int, ...] | None] | None:
    """Zarr chunk shapes: the caller's (cut to the array's extent), else None (auto)."""
    if chunks is None:
        return None
    shapes: list[tuple[int, ...] | None] = []
    for source in tensor_sources:
        given = _given_chunks(source, chunks)
        if given is not None and any(isinstance(c, (tuple, list)) for c in given):
            raise ValueError(
                "Zarr arrays have regular chunks; give one block shape (e.g. (1024, 512)), "
                f"not per-axis block lists. Received: chunks={given!r}"
            )
        if given is None:
            shapes.append(None)
        else:
            shapes.append(
                tuple(min(int(c), max(1, d)) for c, d in zip(given, source.shape, strict=True))
            )
    return shapes


def write(
    job: Any,
    target: str,
    fmt: str | None = None,
    *,
    client: distributed.Client | None = None,
    chunks: Any = None,
    max_shard_size: int | str = sharded.DEFAULT_MAX_SHARD_SIZE,
    force: bool = False,
    threads: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Write every tensor of ``job`` to ``target``, in parallel, atomically.

    ``job`` is a ``vsgen.modelspec.ModelJob`` (``build_job``; one tensor or many).
    ``fmt`` is one of ``npy``, ``raw``, ``safetensors``, ``h5``, ``npydir``, ``zarr``,
    ``safetensors-sharded`` (default: from the target, ``.zarr`` meaning zarr).
    With a ``distributed.Client`` the blocks are made and written by its workers
    (which must see ``target``'s file system); without, by ``threads`` local
    threads. ``chunks``: a block shape (the Zarr chunk shape) for the tensors of its
    rank, per-axis block lists (not for Zarr), or a dict of those by name; other
    tensors get about 64 MiB of whole trailing axes per block. Sharded safetensors
    are written one task per shard. ``on_progress(n)`` is called in this thread as blocks complete;
    ``cancelled()`` is polled about 20 times a second, and True stops the job
    (KeyboardInterrupt) as an interrupt would, from this thread, so that a
    caller can hold signals and never interrupt the cluster client mid-call.

    The bytes do not depend on the cluster, the chunks, the threads or retried
    tasks. On any failure or interrupt the temporary is removed and an existing
    target left as it was; it is replaced only with ``force``.

    Raises:
        ValueError: bad arguments (exit 2 in the CLI), including the keras stream.
        OSError: I/O failure or a cluster that could not finish (:class:`ClusterError`).
    """
    from vsgen.formats.tensors import resolve_format

    tensor_sources = sources(job)
    for source in tensor_sources:
        source.check_parallel()
    fmt = resolve_format(target, fmt, len(tensor_sources))
    shard_bytes = sharded.parse_size(max_shard_size)
    zarr_chunks = _zarr_chunk_shapes(tensor_sources, chunks) if fmt == "zarr" else None
    infos = [TensorInfo(s.name, s.shape, s.dtype) for s in tensor_sources]
    output = parallel.open_parallel_output(
        target,
        fmt,
        infos,
        metadata=job.metadata() if callable(job.metadata) else job.metadata,
        tensor_metadata=_tensor_metadata(job),
        force=force,
        chunk_shapes=zarr_chunks,
        max_shard_size=shard_bytes,
    )
    with output:
        one_per_file = fmt == "safetensors-sharded" and client is not None
        tasks = plan_tasks(output, tensor_sources, chunks, one_task_per_file=one_per_file)
        try:
            if client is None:
                _run_locally(tasks, threads, on_progress, cancelled)
                parallel.sync_written(output.temp)
            else:
                _check_workers(client, output.temp)
                _run_on_cluster(client, tasks, on_progress, cancelled)
                # Every worker syncs the files it wrote, once, before the rename.
                client.run(parallel.sync_written, output.temp)
        except BaseException:
            parallel.forget_written(output.temp)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.run(parallel.forget_written, output.temp)
            raise
        output.commit()


#: Seconds between two polls of ``cancelled``.
_POLL = 0.05


def _check_cancelled(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise KeyboardInterrupt


def _run_locally(
    tasks: Sequence[WriteTask],
    threads: int | None,
    on_progress: Callable[[int], None] | None,
    cancelled: Callable[[], bool] | None,
) -> None:
    """Run tasks on a few local threads; at most two per thread in flight (memory)."""
    from vsgen.streams import usable_cpus

    workers = usable_cpus() if threads is None else max(1, int(threads))
    pending = list(reversed(tasks))
    running: set[Any] = set()
    with ThreadPoolExecutor(workers, thread_name_prefix="vsgen-write") as pool:
        try:
            while pending or running:
                while pending and len(running) < 2 * workers:
                    running.add(pool.submit(pending.pop(), 1))
                done, running = wait(running, timeout=_POLL, return_when=FIRST_COMPLETED)
                _report(done, on_progress)
                _check_cancelled(cancelled)
        except BaseException:
            for future in running:
                future.cancel()
            raise


def _report(done: set[Any], on_progress: Callable[[int], None] | None) -> None:
    for future in done:
        count = future.result()
        if on_progress is not None:
            on_progress(count)


def _worker_view(temp: str) -> tuple[str, bool]:
    """Run on a worker: its vsgen version, and whether it sees the temporary output."""
    from vsgen._version import __version__

    return __version__, os.path.exists(temp)


def _check_workers(client: distributed.Client, temp: str) -> None:
    """Every worker must run this vsgen version and see the output's file system.

    Raises:
        ClusterError: no workers, another vsgen version, or a worker that cannot see
            the temporary output (the output must be on a file system all workers share).
    """
    from vsgen._version import __version__

    try:
        views = client.run(_worker_view, temp)
    except Exception as error:  # a worker without vsgen cannot even unpickle the check
        raise ClusterError(
            errno.EIO, f"the workers cannot run vsgen: {type(error).__name__}: {error}"
        ) from error
    if not views:
        raise ClusterError(errno.EIO, "the Dask cluster has no workers")
    for address, (version, sees) in views.items():
        if version != __version__:
            raise ClusterError(
                errno.EIO,
                f"worker {address} runs vsgen {version}, this client {__version__}; "
                "install the same version everywhere",
            )
        if not sees:
            raise ClusterError(
                errno.ENOENT,
                f"worker {address} cannot see {os.path.dirname(temp)}: the output must be on "
                "a file system that every worker shares (NFS, Lustre, a shared volume)",
            )


def _run_on_cluster(
    client: distributed.Client,
    tasks: Sequence[WriteTask],
    on_progress: Callable[[int], None] | None,
    cancelled: Callable[[], bool] | None,
) -> None:
    """Submit one task per block (or shard); progress as they finish; cancel on failure.

    Dask reruns the tasks of a lost worker elsewhere; blocks are deterministic and
    written at fixed offsets, so a rerun writes the same bytes.
    """
    from dask.base import tokenize
    from distributed import as_completed

    token = tokenize(os.getpid(), id(tasks), len(tasks), os.urandom(8))
    keys = [f"vsgen-write-{token}-{index}" for index in range(len(tasks))]
    progress = _Progress(tasks)
    topic = f"vsgen-progress-{token}"
    client.subscribe_topic(topic, progress.event)
    futures = client.map(
        _run_task, list(tasks), [topic] * len(tasks), range(len(tasks)), key=keys, pure=False
    )
    index_of = {key: index for index, key in enumerate(keys)}
    try:
        finished = as_completed(futures)
        while not finished.is_empty():
            for future in finished.next_batch(block=False):
                try:
                    future.result()
                except (OSError, ValueError):
                    raise
                except Exception as error:  # KilledWorker, CommClosedError, a lost scheduler
                    raise ClusterError(
                        errno.EIO,
                        f"the cluster could not finish the job: {type(error).__name__}: {error}",
                    ) from error
                progress.finish(index_of[future.key])
            done = progress.take()
            if done and on_progress is not None:
                on_progress(done)
            _check_cancelled(cancelled)
            time.sleep(_POLL)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(futures, force=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)


def parse_scheduler(scheduler: str) -> tuple[str, int | None]:
    """``(address, None)`` for a scheduler address, ``("local", N)`` for ``local:N``
    (``local`` alone: one worker per usable CPU).

    Raises:
        ValueError: ``local:N`` without a positive integer N, or an empty address.
    """
    from vsgen.streams import usable_cpus

    text = str(scheduler).strip()
    if not text:
        raise ValueError("--scheduler needs an address (tcp://host:8786) or local:N")
    if text.lower() != "local" and not text.lower().startswith("local:"):
        return text, None
    count = text.partition(":")[2].strip() or str(usable_cpus())
    if not count.isascii() or not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"--scheduler local:N needs a positive worker count N. Received: {scheduler!r}"
        )
    return "local", int(count)


def local_cluster(workers: int) -> distributed.LocalCluster:
    """A ``LocalCluster`` of ``workers`` processes with one thread each, everything
    listening on 127.0.0.1 only (the scheduler's HTTP endpoint on a free port
    rather than 8787), its logs at ERROR. The caller closes it."""
    import logging

    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )


@contextlib.contextmanager
def connect(scheduler: str, *, quiet_logs: bool = True) -> Iterator[distributed.Client]:
    """A client of ``scheduler``: an address (``tcp://host:8786``) or ``local:N``.

    ``local:N`` starts a :func:`local_cluster` of N workers and stops it on exit.

    Raises:
        ValueError: a malformed ``local:N``.
        OSError: the scheduler cannot be reached (within 10 s), or no worker has
            joined it within 30 s.
    """
    import logging

    from distributed import Client

    if quiet_logs:
        for name in (
            "distributed",
            "distributed.worker",
            "distributed.nanny",
            "distributed.scheduler",
        ):
            logging.getLogger(name).setLevel(logging.ERROR)
    text, workers = parse_scheduler(scheduler)
    if workers is not None:
        cluster = local_cluster(workers)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(text, timeout="10s")
    except (OSError, TimeoutError) as error:
        raise OSError(
            errno.ECONNREFUSED, f"cannot reach the Dask scheduler {text!r}: {error}"
        ) from None
    except ValueError as error:
        raise ValueError(f"--scheduler: not a scheduler address: {text!r} ({error})") from None
    try:
        client.wait_for_workers(1, timeout=30)
    except (OSError, TimeoutError):
        client.close()
        raise OSError(
            errno.ETIMEDOUT, f"no worker joined the Dask scheduler {text!r} within 30 s"
        ) from None
    except BaseException:
        client.close()
        raise
    try:
        yield client
    finally:
        client.close()


def _tensor_metadata(job: Any) -> dict[str, dict[str, str]] | None:
    """Each tensor's own record (HDF5 dataset attributes), if the job carries them."""
    records = getattr(job, "tensor_metadata", None)
    return records() if callable(records) else records
