"""Dask: arrays of any tensor or model, and a cluster that writes outputs.

The ``vsgen`` stream is counter-based: any block of any tensor can be made
anywhere, in any order, with the same bytes (:mod:`vsgen.blockwrite`). This
module maps that onto Dask (``pip install "vsgen[dask]"``):

* :func:`sample` and :func:`model` return ``dask.array.Array`` objects with one
  task per block and no data in the graph; every element equals the same element
  of the single-process result, for any chunking.
* :class:`ClusterRunner` runs the block tasks of :func:`vsgen.blockwrite.write` on
  the workers of a ``distributed`` cluster, which must see the output's file
  system; :func:`write` is that call with ``client=``.
* :func:`connect` gives a client of a scheduler address or of a local cluster
  (``local:N``).

Neither ``dask`` nor ``distributed`` is imported until a function here needs it.
The ``keras`` stream is sequential (a block needs everything before it) and is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vsgen import blockwrite
from vsgen.blockwrite import BlockSource, Cancelled, OnProgress, WriteTask, sources
from vsgen.fans import auto_block_shape
from vsgen.formats import parallel, sharded
from vsgen.job import model_job, tensor_job

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dask.array
    import distributed

__all__ = [
    "BlockSource",
    "ClusterError",
    "ClusterRunner",
    "connect",
    "model",
    "parse_scheduler",
    "sample",
    "sources",
    "tensor_job",
    "to_dask",
    "write",
]


class ClusterError(OSError):
    """The cluster could not finish the job (workers lost too often, a task failed)."""


# --- dask arrays -----------------------------------------------------------------------


class _BlockMaker:
    """The function of every block of one tensor (``map_blocks`` with ``block_info``)."""

    def __init__(self, source: BlockSource) -> None:
        self.source = source

    def __call__(self, block_info: Mapping[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        location = block_info[None]["array-location"]
        origin = [first for first, _ in location]
        shape = [last - first for first, last in location]
        return self.source.block(origin, shape)


def to_dask(source: BlockSource, chunks: Any = "auto") -> dask.array.Array:
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
        chunks = auto_block_shape(source.shape, source.dtype.itemsize, target)
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
    return to_dask(BlockSource.from_plan("weight", plan), chunks)


def model(
    spec_or_checkpoint: Any,
    *,
    seed: int | None = None,
    dtype: object = None,
    layout: str | None = None,
    stream: str | None = None,
    init: Any = None,
    rules: Mapping[str, Any] | None = None,
    chunks: Any = "auto",
) -> dict[str, dask.array.Array]:
    """Every tensor of a model as a Dask array, by name.

    ``spec_or_checkpoint`` is a model spec (a ``.toml``/``.json`` path, a parsed
    ``ModelSpec`` or its dict), a checkpoint path (``.safetensors``/``.h5``: the
    ``--like`` rules; its integer tensors are read from it), or a ``ModelJob``.
    The keywords are those of :func:`vsgen.job.model_job` (the command line's
    ``--seed``, ``--dtype``, ...), so each tensor gets the same seed as
    ``vsgen sample --spec/--like`` gives it.
    """
    job = model_job(
        spec_or_checkpoint,
        seed=seed,
        dtype=dtype,
        layout=layout,
        stream=stream,
        init=init,
        rules=rules,
    )
    return {source.name: to_dask(source, chunks) for source in sources(job)}


# --- writing on a cluster ----------------------------------------------------------


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


class ClusterRunner:
    """Runs the tasks of :func:`vsgen.blockwrite.write` on a ``distributed`` cluster.

    One task per block (or per shard of sharded safetensors: each shard written by
    one worker); progress as tasks finish, and within a shard as its blocks do.
    Dask reruns the tasks of a lost worker elsewhere; blocks are deterministic and
    written at fixed offsets, so a rerun writes the same bytes. Every worker must
    run this vsgen version and see the output's file system (checked first).
    """

    one_task_per_file = True

    def __init__(self, client: distributed.Client) -> None:
        self.client = client

    def prepare(self, temp: str) -> None:
        _check_workers(self.client, temp)

    def run(
        self, tasks: Sequence[WriteTask], on_progress: OnProgress, cancelled: Cancelled
    ) -> None:
        _run_on_cluster(self.client, tasks, on_progress, cancelled)

    def sync(self, temp: str) -> None:
        # Every worker syncs the files it wrote, once.
        self.client.run(parallel.sync_written, temp)

    def forget(self, temp: str) -> None:
        parallel.forget_written(temp)
        with contextlib.suppress(Exception):
            self.client.run(parallel.forget_written, temp)


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
    on_progress: OnProgress = None,
    cancelled: Cancelled = None,
) -> None:
    """:func:`vsgen.blockwrite.write` with the blocks made and written by the workers
    of ``client`` (a :class:`ClusterRunner`), or by ``threads`` local threads without one.

    ``cancelled()`` is polled from this thread, so that a caller can hold signals
    and never interrupt the cluster client mid-call. The arguments are those of
    :func:`vsgen.blockwrite.write`.

    Raises:
        ValueError: bad arguments (exit 2 in the CLI), including the keras stream.
        OSError: I/O failure or a cluster that could not finish (:class:`ClusterError`).
    """
    blockwrite.write(
        job,
        target,
        fmt,
        runner=None if client is None else ClusterRunner(client),
        chunks=chunks,
        max_shard_size=max_shard_size,
        force=force,
        threads=threads,
        on_progress=on_progress,
        cancelled=cancelled,
    )


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
    on_progress: OnProgress,
    cancelled: Cancelled,
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
            blockwrite.stop_if_cancelled(cancelled)
            time.sleep(blockwrite.POLL_SECONDS)
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
