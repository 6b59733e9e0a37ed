"""Dask: arrays of any tensor or model, and a cluster that writes outputs.

The ``vsgen`` stream is counter-based: any block of any tensor can be made
anywhere, in any order, with the same bytes (:mod:`vsgen.blockwrite`). This
module maps that onto Dask (``pip install "vsgen[dask]"``):

* :func:`sample` and :func:`model` return ``dask.array.Array`` objects with one
  task per block and no data in the graph; every element equals the same element
  of the single-process result, for any chunking. Like every Dask collection they
  compute on the current ``distributed`` client when there is one.
* :class:`ClusterRunner` runs the block tasks of :func:`vsgen.blockwrite.write` on
  the workers of a ``distributed`` cluster, which must see the output's file
  system (or write to an object store); :func:`write` is that call with
  ``client=`` (default: the current client, as Dask does).
* :func:`connect` gives a client of a scheduler address or of a local cluster
  (``local:N``), checking first that what answers is a Dask scheduler.

Failures are bounded: a scheduler that refuses, says nothing or is not Dask is
reported within the connect timeout; a job with no live worker for the cluster
timeout, or whose scheduler is lost, stops with a :class:`ClusterError` (with
``resume``, its finished tasks are kept: :mod:`vsgen.resume`). Every wait polls
``cancelled()`` (or the caller's :func:`vsgen.formats.atomic.cancellation`), so
an interrupt is answered within a fraction of a second, also while connecting.

Neither ``dask`` nor ``distributed`` is imported until a function here needs it.
The ``keras`` stream is sequential (a block needs everything before it) and is refused.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vsgen import blockwrite
from vsgen.blockwrite import (
    BlockSource,
    Cancelled,
    OnDone,
    OnProgress,
    TaskResult,
    WriteTask,
    sources,
)
from vsgen.fans import auto_block_shape
from vsgen.formats import atomic, parallel, sharded
from vsgen.job import tensor_job

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dask.array
    import distributed

__all__ = [
    "CLUSTER_TIMEOUT",
    "CONNECT_TIMEOUT",
    "BlockSource",
    "ClusterError",
    "ClusterRunner",
    "check_timeout",
    "connect",
    "LocalProcesses",
    "local_cluster",
    "model",
    "parse_scheduler",
    "probe",
    "sample",
    "sources",
    "tensor_job",
    "to_dask",
    "write",
]

#: Seconds to reach a scheduler and hear its Dask handshake (``--connect-timeout``);
#: also how long a running job waits for a scheduler that stopped answering.
CONNECT_TIMEOUT = 10.0
#: Seconds a job waits with no live worker before it fails (``--cluster-timeout``),
#: and for the first worker to join when it starts.
CLUSTER_TIMEOUT = 60.0
#: Longest timeout accepted: a day.
MAX_TIMEOUT = 86400.0
#: Most worker processes of ``local:N``.
MAX_LOCAL_WORKERS = 256
#: Largest first message accepted from a scheduler: its handshake is about 60 bytes.
MAX_HANDSHAKE = 1 << 16
#: Seconds between two questions to the scheduler about its workers during a job.
HEALTH_SECONDS = 0.5
#: Seconds given to closing a client or a local cluster before giving up on it.
CLOSE_SECONDS = 10.0
#: Seconds between two polls of ``cancelled`` while waiting.
POLL_SECONDS = blockwrite.POLL_SECONDS


class ClusterError(OSError):
    """The cluster could not finish the job: the scheduler cannot be reached, is not a
    Dask scheduler or was lost; no worker lived for the cluster timeout; a task failed."""


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
    The keywords are those of :func:`vsgen.modelspec.model_job` (the command line's
    ``--seed``, ``--dtype``, ...), so each tensor gets the same seed as
    ``vsgen sample --spec/--like`` gives it.
    """
    from vsgen.modelspec import model_job

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


# --- waiting without holding a signal -----------------------------------------------------


def _stop_if_cancelled(cancelled: Cancelled) -> None:
    blockwrite.stop_if_cancelled(cancelled)
    atomic.stop_if_cancelled()


def _polled(
    call: Callable[[], Any],
    timeout: float | None,
    cancelled: Cancelled = None,
    on_late: Callable[[Any], None] | None = None,
    interruptible: bool = True,
) -> Any:
    """``call()`` in a helper thread, waited for at most ``timeout`` seconds (None: no
    limit) while ``cancelled`` and the caller's cancellation are polled.

    A call that blocks (a client connecting, a cluster starting, a request to a
    scheduler that went silent) thus never holds an interrupt. If the wait ends first
    (TimeoutError, KeyboardInterrupt), the call is left to finish in its thread, and
    ``on_late(result)`` disposes of what it returns then (a client made too late).
    Cleaning up after an interrupt is not ``interruptible``: it has its timeout only.
    """
    box: dict[str, Any] = {}
    done = threading.Event()
    lock = threading.Lock()

    def run() -> None:
        try:
            value = call()
        except BaseException as error:  # handed to the waiting thread
            box["error"] = error
            done.set()
            return
        with lock:
            abandoned = box.get("abandoned", False)
            box["value"] = value
        done.set()
        if abandoned and on_late is not None:
            with contextlib.suppress(Exception):
                on_late(value)

    thread = threading.Thread(target=run, name="vsgen-dask-wait", daemon=True)
    thread.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not done.wait(POLL_SECONDS):
            if interruptible:
                _stop_if_cancelled(cancelled)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no answer within {timeout:g} s")
    except BaseException:
        with lock:
            box["abandoned"] = True
            late = "value" in box
        if late and on_late is not None:
            with contextlib.suppress(Exception):
                on_late(box["value"])
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- is it a Dask scheduler? ----------------------------------------------------------------


def _tcp_address(address: str) -> tuple[str, int] | None:
    """Host and port of a ``tcp://`` address (or a bare ``host:port``); None for other
    transports (``tls://``, ``ucx://``...), which the probe leaves to Dask.

    Raises:
        ValueError: not an address (naming it).
    """
    text = address
    scheme = "tcp"
    if "://" in text:
        scheme, text = text.split("://", 1)
    if scheme.lower() != "tcp":
        return None
    host, colon, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"--scheduler: not a scheduler address: {address[:200]!r} "
            "(expected tcp://HOST:PORT or local:N)"
        )
    return host, int(port)


def probe(address: str, timeout: float = CONNECT_TIMEOUT, cancelled: Cancelled = None) -> None:
    """Check that a Dask scheduler answers at ``address`` before a client connects to it.

    A Dask scheduler sends its handshake as soon as it accepts a connection: an
    8-byte length, a frame count and frame lengths, then a msgpack map naming the
    pickle protocol. The probe connects (without sending anything), reads at most
    :data:`MAX_HANDSHAKE` bytes and checks that shape, so that a listener that is not
    Dask (an HTTP server, an echo service, a silent socket) is reported in one line
    within ``timeout`` seconds, instead of Dask's client allocating what such a peer
    announces or waiting for it. Non-TCP addresses are not probed.

    Raises:
        ValueError: a malformed address.
        ClusterError: refused, unreachable, silent, closed, or not a Dask scheduler.
    """
    found = _tcp_address(address)
    if found is None:
        return
    host, port = found
    deadline = time.monotonic() + timeout
    try:
        infos = _polled(
            lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout, cancelled
        )
    except TimeoutError:
        why = f"no answer within {timeout:g} s (the connect timeout)"
        raise _unreachable(address, why) from None
    except OSError as error:
        raise _unreachable(address, f"cannot resolve {host!r}: {error.strerror or error}") from None
    sock = _connected(address, infos, deadline, timeout, cancelled)
    try:
        data = _handshake(address, sock, deadline, timeout, cancelled)
    finally:
        sock.close()
    _check_handshake(address, data)


def _unreachable(address: str, why: str) -> ClusterError:
    return ClusterError(errno.ECONNREFUSED, f"cannot reach the Dask scheduler {address}: {why}")


def _not_dask(address: str, why: str) -> ClusterError:
    return ClusterError(errno.EPROTO, f"{address} is not a Dask scheduler: {why}")


def _connected(
    address: str, infos: list[Any], deadline: float, timeout: float, cancelled: Cancelled
) -> socket.socket:
    """A connected socket to the first of ``infos`` that accepts before ``deadline``."""
    why = "no address to connect to"
    for family, kind, protocol, _, where in infos:
        sock = socket.socket(family, kind, protocol)
        sock.setblocking(False)
        try:
            code = sock.connect_ex(where)
            while code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                _stop_if_cancelled(cancelled)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _unreachable(
                        address, f"no answer within {timeout:g} s (the connect timeout)"
                    )
                _, writable, _ = select.select([], [sock], [], min(POLL_SECONDS, left))
                if writable:
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                return sock
            why = os.strerror(code).lower()
        except BaseException:
            sock.close()
            raise
        sock.close()
    raise _unreachable(address, why)


def _handshake(
    address: str, sock: socket.socket, deadline: float, timeout: float, cancelled: Cancelled
) -> bytes:
    """The first message the peer sends: its 8-byte length and that many bytes."""
    data = b""
    wanted = 8
    while len(data) < wanted:
        _stop_if_cancelled(cancelled)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _not_dask(
                address,
                f"it accepted the connection but sent no Dask handshake within {timeout:g} s "
                "(the connect timeout)",
            )
        readable, _, _ = select.select([sock], [], [], min(POLL_SECONDS, left))
        if not readable:
            continue
        try:
            piece = sock.recv(wanted - len(data))
        except OSError as error:
            raise _not_dask(address, f"the connection failed: {error.strerror or error}") from None
        if not piece:
            raise _not_dask(address, "it closed the connection without a Dask handshake")
        data += piece
        if wanted == 8 and len(data) == 8:
            (length,) = struct.unpack("<Q", data)
            if not 16 <= length <= MAX_HANDSHAKE:
                with contextlib.suppress(OSError):
                    data += sock.recv(24, socket.MSG_DONTWAIT)
                raise _not_dask(address, f"it answered {_shown(data)}")
            wanted = 8 + length
    return data


def _shown(data: bytes) -> str:
    """The first bytes a peer sent, as they read: ``'HTTP/1.1 400 Bad Request'``
    (text), or ``b'\\xff\\xff...'`` (bytes)."""
    head = data[:32]
    line = head.split(b"\r\n")[0]
    if line and line.isascii() and line.decode("ascii").isprintable():
        return repr(line.decode("ascii"))
    return repr(head)


def _check_handshake(address: str, data: bytes) -> None:
    """``data`` (length, frame count, frame lengths, frames) must be Dask's handshake."""
    body = data[8:]
    (frames,) = struct.unpack_from("<Q", body, 0)
    lengths_end = 8 + 8 * frames
    if not 1 <= frames <= 16 or lengths_end > len(body):
        raise _not_dask(address, f"it answered {_shown(data)}")
    lengths = struct.unpack_from(f"<{frames}Q", body, 8)
    if lengths_end + sum(lengths) != len(body):
        raise _not_dask(address, f"it answered {_shown(data)}")
    first = body[lengths_end : lengths_end + lengths[0]]
    try:
        import msgpack

        message = msgpack.unpackb(first, raw=False)
    except Exception:  # any decoding failure means: not Dask's map
        message = None
    if not isinstance(message, dict) or "pickle-protocol" not in message:
        raise _not_dask(address, f"it answered {_shown(data)}")


# --- writing on a cluster ----------------------------------------------------------


def _run_task(task: WriteTask, topic: str | None = None, index: int = 0) -> TaskResult:
    """Run a task on a worker; a task of several blocks reports each block to the
    client as a ``topic`` event, so the progress bar moves within it."""
    if topic is None or len(task.blocks) < 2:
        return task()
    from distributed import get_worker

    worker = get_worker()
    return task(1, lambda count: worker.log_event(topic, [index, count]))


class _Progress:
    """Values done per task, from block events and completions; never over a task's size."""

    def __init__(self, tasks: Sequence[Any]) -> None:
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

    One task per block or group of blocks (tasks of about 64 MiB: a large shard or
    tensor keeps every worker busy, and a lost worker loses a task); progress as
    tasks finish, and within a task as its blocks do. Dask reruns the tasks of a lost
    worker elsewhere; blocks are deterministic and written at fixed offsets, so a
    rerun writes the same bytes. Every worker must run this vsgen version and see
    the output's file system (checked first). The job fails (:class:`ClusterError`)
    when no worker is alive for ``cluster_timeout`` seconds or the scheduler is lost
    (it stopped answering for ``connect_timeout`` seconds, or its connection closed).
    """

    def __init__(
        self,
        client: distributed.Client,
        cluster_timeout: float = CLUSTER_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        check_timeout("cluster_timeout", cluster_timeout)
        check_timeout("connect_timeout", connect_timeout)
        self.client = client
        self.cluster_timeout = float(cluster_timeout)
        self.connect_timeout = float(connect_timeout)

    def _health(self) -> _Health:
        return _Health(self.client, self.cluster_timeout, self.connect_timeout)

    def prepare(self, temp: str) -> None:
        _check_workers(self.client, temp, self._health())
        # Writers of an object store create what they write: a job that stops must
        # wait for its running tasks before its output is removed.
        self._drain = "://" in temp

    def run(
        self,
        tasks: Sequence[Any],
        on_progress: OnProgress,
        cancelled: Cancelled,
        on_done: OnDone = None,
    ) -> None:
        _run_on_cluster(
            self.client,
            tasks,
            on_progress,
            cancelled,
            on_done,
            self._health(),
            drain=getattr(self, "_drain", False),
        )

    def sync(self, temp: str) -> None:
        # Every worker syncs the files it wrote, once.
        _on_workers(self.client, self._health(), parallel.sync_written, temp)

    def forget(self, temp: str) -> None:
        parallel.forget_written(temp)
        if self.client.status == "running":
            with contextlib.suppress(Exception, KeyboardInterrupt):
                _polled(
                    lambda: self.client.run(parallel.forget_written, temp),
                    CLOSE_SECONDS,
                    interruptible=False,
                )


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
    resume: bool = False,
    cluster_timeout: float = CLUSTER_TIMEOUT,
) -> None:
    """:func:`vsgen.blockwrite.write` with the blocks made and written by the workers
    of ``client`` (a :class:`ClusterRunner`): by default the current client
    (``distributed.default_client()``, the ``Client`` made last), as Dask computes;
    with none, by ``threads`` local threads.

    ``cancelled()`` is polled from this thread, so that a caller can hold signals
    and never interrupt the cluster client mid-call. ``cluster_timeout``: seconds
    the job waits with no live worker before it fails. The other arguments are
    those of :func:`vsgen.blockwrite.write` (``resume`` keeps a failed job's work).

    Raises:
        ValueError: bad arguments (exit 2 in the CLI), including the keras stream.
        OSError: I/O failure or a cluster that could not finish (:class:`ClusterError`).
    """
    if client is None:
        client = _default_client()
    blockwrite.write(
        job,
        target,
        fmt,
        runner=None if client is None else ClusterRunner(client, cluster_timeout),
        chunks=chunks,
        max_shard_size=max_shard_size,
        force=force,
        threads=threads,
        on_progress=on_progress,
        cancelled=cancelled,
        resume=resume,
    )


def _default_client() -> distributed.Client | None:
    """The current ``distributed`` client, or None. ``distributed`` is not imported for
    this: without it imported, no client can exist."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:  # "No clients found"
        return None


class _Health:
    """Is the cluster still there? Asked about every :data:`HEALTH_SECONDS` without
    blocking: the scheduler's connection must be up and answer within
    ``answer_timeout`` seconds, and some worker must be alive at least once every
    ``cluster_timeout`` seconds."""

    def __init__(
        self,
        client: distributed.Client,
        cluster_timeout: float,
        answer_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.cluster_timeout = cluster_timeout
        self.answer_timeout = answer_timeout
        self.clock = clock
        self._question: Any = None
        self._asked = -math.inf
        self._without_workers: float | None = None

    @property
    def address(self) -> str:
        return str(getattr(self.client.scheduler, "address", None) or "")

    def lost(self, why: str) -> ClusterError:
        return ClusterError(errno.ECONNRESET, f"lost the Dask scheduler {self.address}: {why}")

    def check(self) -> None:
        """Raise :class:`ClusterError` if the scheduler is lost or no worker lived for
        ``cluster_timeout`` seconds; otherwise return at once."""
        if self.client.status != "running":
            raise self.lost("its connection closed")
        now = self.clock()
        question = self._question
        if question is not None and question.done():
            self._question = None
            try:
                workers = int(question.result()["n_workers"])
            except Exception:  # the answer will come again; the status says if it is lost
                workers = -1
            if workers == 0:
                if self._without_workers is None:
                    self._without_workers = self._asked
            elif workers > 0:
                self._without_workers = None
        elif question is not None and now - self._asked >= self.answer_timeout:
            raise self.lost(f"it has not answered for {self.answer_timeout:g} s")
        if self._without_workers is not None and now - self._without_workers >= (
            self.cluster_timeout
        ):
            raise ClusterError(
                errno.ETIMEDOUT,
                f"the Dask cluster {self.address} has had no live worker for "
                f"{self.cluster_timeout:g} s (the cluster timeout)",
            )
        if self._question is None and now - self._asked >= HEALTH_SECONDS:
            self._asked = now
            self._question = self._ask()

    def _ask(self) -> Any:
        import asyncio

        scheduler: Any = self.client.scheduler
        loop: Any = self.client.loop
        return asyncio.run_coroutine_threadsafe(scheduler.identity(n_workers=0), loop.asyncio_loop)


def _on_workers(
    client: distributed.Client, health: _Health, function: Callable[..., Any], *args: Any
) -> dict[str, Any]:
    """``client.run(function, *args)`` (on every worker) waited for while the cluster's
    health is watched and interrupts are answered."""
    box: dict[str, Any] = {}

    def call() -> dict[str, Any]:
        return dict(client.run(function, *args))

    thread_done = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # handed to the waiting thread
            box["error"] = error
        finally:
            thread_done.set()

    threading.Thread(target=run, name="vsgen-dask-run", daemon=True).start()
    while not thread_done.wait(POLL_SECONDS):
        _stop_if_cancelled(None)
        health.check()
    if "error" in box:
        error = box["error"]
        if client.status != "running":
            raise health.lost("its connection closed") from None
        raise error
    return box["value"]


def _worker_view(temp: str, client_pid: int = 0) -> tuple[str, bool]:
    """Run on a worker: its vsgen version, and whether it sees the temporary output."""
    from vsgen._version import __version__

    if "://" in temp:
        # An object store: this worker must have its package (and credentials); a
        # process's memory:// is its own, seen only by workers of the client's process.
        from vsgen.formats import remote

        try:
            remote.filesystem(temp)
        except (ImportError, ValueError):
            return __version__, False
        return __version__, not temp.startswith("memory://") or os.getpid() == client_pid
    return __version__, os.path.exists(temp)


def _check_workers(client: distributed.Client, temp: str, health: _Health | None = None) -> None:
    """Every worker must run this vsgen version and see the output's file system.

    Raises:
        ClusterError: no workers, another vsgen version, or a worker that cannot see
            the temporary output (the output must be on a file system all workers share).
    """
    from vsgen._version import __version__

    health = health or _Health(client, CLUSTER_TIMEOUT, CONNECT_TIMEOUT)
    try:
        views = _on_workers(client, health, _worker_view, temp, os.getpid())
    except (ClusterError, KeyboardInterrupt):
        raise
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
        if not sees and "://" in temp:
            raise ClusterError(
                errno.ENOENT,
                f"worker {address} cannot reach {temp}: every worker needs fsspec and the "
                "store's package (s3fs for s3://), and memory:// is each process's own",
            )
        if not sees:
            raise ClusterError(
                errno.ENOENT,
                f"worker {address} cannot see {os.path.dirname(temp)}: the output must be on "
                "a file system that every worker shares (NFS, Lustre, a shared volume), "
                "or in an object store (s3://...)",
            )


def _run_on_cluster(
    client: distributed.Client,
    tasks: Sequence[Any],
    on_progress: OnProgress,
    cancelled: Cancelled,
    on_done: OnDone,
    health: _Health,
    drain: bool = False,
) -> None:
    """Submit every task; progress as they finish; cancel on failure.

    Dask reruns the tasks of a lost worker elsewhere; blocks are deterministic and
    written at fixed offsets, so a rerun writes the same bytes. With ``drain``, a job
    that stops waits (at most :data:`CLOSE_SECONDS`) for the tasks its workers are
    running, which cancelling does not stop, so that none writes after the output is
    removed.
    """
    from dask.base import tokenize
    from distributed import as_completed

    health.check()
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
                index = index_of[future.key]
                result = _result(future, health)
                progress.finish(index)
                if on_done is not None:
                    on_done(index, result)
            done = progress.take()
            if done and on_progress is not None:
                on_progress(done)
            blockwrite.stop_if_cancelled(cancelled)
            health.check()
            time.sleep(POLL_SECONDS)
    except BaseException:
        if client.status == "running":
            with contextlib.suppress(Exception, KeyboardInterrupt):
                _polled(
                    lambda: client.cancel(futures, force=True),
                    CLOSE_SECONDS,
                    interruptible=False,
                )
            if drain:
                prefix = f"vsgen-write-{token}"
                with contextlib.suppress(Exception, KeyboardInterrupt):
                    _polled(
                        lambda: client.run(_until_idle, prefix, CLOSE_SECONDS),
                        CLOSE_SECONDS + 1,
                        interruptible=False,
                    )
        raise
    finally:
        if client.status == "running":
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)


async def _until_idle(prefix: str, timeout: float, dask_worker: Any = None) -> int:
    """Run on a worker (``client.run`` passes it as ``dask_worker``): wait (at most
    ``timeout`` seconds) until it executes no task whose key starts with ``prefix``;
    how many still run then."""
    import asyncio

    worker = dask_worker
    deadline = time.monotonic() + timeout
    while True:
        running = sum(str(task.key).startswith(prefix) for task in worker.state.executing)
        if not running or time.monotonic() >= deadline:
            return running
        await asyncio.sleep(POLL_SECONDS)


def _result(future: Any, health: _Health) -> TaskResult:
    """A finished task's result; a worker's I/O or argument error as it was raised
    there, and anything else (a lost scheduler, tasks that killed their workers) as a
    :class:`ClusterError`."""
    if future.status == "cancelled":
        health.check()
        raise ClusterError(errno.EIO, "the cluster cancelled a task of the job")
    try:
        return future.result()
    except (OSError, ValueError):
        raise
    except Exception as error:  # KilledWorker, CommClosedError, a lost scheduler
        health.check()
        raise ClusterError(
            errno.EIO, f"the cluster could not finish the job: {type(error).__name__}: {error}"
        ) from error


# --- schedulers ---------------------------------------------------------------------------


def check_timeout(name: str, value: object) -> float:
    """``value`` as seconds: a finite number above 0 and at most :data:`MAX_TIMEOUT`.

    Raises:
        ValueError: naming the argument (Keras style).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value <= MAX_TIMEOUT
    ):
        raise ValueError(
            f"Argument `{name}` must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT:g}. Received: {name}={str(value)[:40]}"
        )
    return float(value)


def parse_scheduler(scheduler: str) -> tuple[str, int | None]:
    """``(address, None)`` for a scheduler address, ``("local", N)`` for ``local:N``
    (``local`` alone: one worker per usable CPU; at most :data:`MAX_LOCAL_WORKERS`).

    Raises:
        ValueError: ``local:N`` without a positive integer N (checked by its digits,
            before any number is made), or an empty or malformed address.
    """
    from vsgen.streams import usable_cpus

    text = str(scheduler).strip()
    if not text:
        raise ValueError("--scheduler needs an address (tcp://host:8786) or local:N")
    if text.lower() != "local" and not text.lower().startswith("local:"):
        _tcp_address(text)
        return text, None
    count = text.partition(":")[2].strip() or str(usable_cpus())
    if (
        not count.isascii()
        or not count.isdigit()
        or len(count.lstrip("0")) > 4
        or not 1 <= int(count) <= MAX_LOCAL_WORKERS
    ):
        raise ValueError(
            f"--scheduler local:N needs a worker count N from 1 to {MAX_LOCAL_WORKERS}. "
            f"Received: {str(scheduler)[:60]!r}"
        )
    return "local", int(count)


def local_cluster(workers: int, quiet: bool = True) -> distributed.LocalCluster:
    """A ``LocalCluster`` of ``workers`` processes with one thread each, everything
    listening on 127.0.0.1 only (the scheduler's HTTP endpoint on a free port
    rather than 8787), its workers' logs silenced (``quiet``; else at Dask's own
    levels). The caller closes it. (``local:N`` in :func:`connect` starts
    :class:`LocalProcesses` instead.)"""
    import logging

    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.CRITICAL if quiet else False,
    )


#: Runs a Dask command line (``distributed.cli.dask_scheduler``...) in a process of
#: its own that ends itself (and its process group) when its parent goes away.
_LAUNCHER = """
import os, signal, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(0, signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
import runpy
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


class LocalProcesses:
    """``local:N``: a ``dask scheduler`` and a ``dask worker`` of N processes (one
    thread each) on 127.0.0.1, started as processes of their own session.

    A Ctrl-C at the terminal signals the terminal's process group: it reaches vsgen
    alone, which stops the job and then this cluster, instead of every worker
    printing a traceback. Their output goes nowhere unless ``quiet`` is False. They
    end themselves if vsgen dies without stopping them (their parent is gone).
    The scheduler's dashboard listens on a free port of 127.0.0.1.
    """

    def __init__(self, workers: int, quiet: bool = True) -> None:
        import subprocess
        import tempfile

        self.workers = workers
        self._directory = tempfile.mkdtemp(prefix="vsgen-cluster-")
        self.scheduler_file = os.path.join(self._directory, "scheduler.json")
        output = subprocess.DEVNULL if quiet else None
        common = ["--scheduler-file", self.scheduler_file]
        self._processes: list[subprocess.Popen[bytes]] = []
        try:
            for module, arguments in (
                (
                    "distributed.cli.dask_scheduler",
                    ["--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"],
                ),
                (
                    "distributed.cli.dask_worker",
                    ["--nworkers", str(workers), "--nthreads", "1", "--host", "127.0.0.1"]
                    + ["--no-dashboard"],
                ),
            ):
                # Not mutated (see docs/testing.md): a process left in the caller's
                # session ends that session's whole process group when it ends itself.
                parent = str(os.getpid())  # pragma: no mutate
                self._processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _LAUNCHER, parent, module] + arguments + common,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=output,
                        start_new_session=True,  # pragma: no mutate
                    )
                )
        except BaseException:
            self.close()
            raise

    def address(self, timeout: float, cancelled: Cancelled = None) -> str:
        """The scheduler's address, once it has written it (ClusterError after
        ``timeout`` seconds, or if the scheduler ended)."""
        import json

        deadline = time.monotonic() + timeout
        while True:
            _stop_if_cancelled(cancelled)
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                with open(self.scheduler_file, "rb") as handle:
                    address = json.loads(handle.read(1 << 20))["address"]
                if isinstance(address, str) and address:
                    return address
            ended = [p.returncode for p in self._processes if p.poll() is not None]
            if ended or time.monotonic() >= deadline:
                why = f"it exited with {ended[0]}" if ended else f"not within {timeout:g} s"
                raise ClusterError(errno.EIO, f"the local Dask cluster did not start: {why}")
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after a few seconds)."""
        import shutil
        import signal

        for process in self._processes:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + CLOSE_SECONDS / 2
        for process in self._processes:
            with contextlib.suppress(Exception):
                process.wait(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.wait(CLOSE_SECONDS)
        shutil.rmtree(self._directory, ignore_errors=True)


def _close_quietly(closeable: Any) -> None:
    with contextlib.suppress(Exception, KeyboardInterrupt):
        _polled(closeable.close, CLOSE_SECONDS, interruptible=False)


@contextlib.contextmanager
def connect(
    scheduler: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    cluster_timeout: float = CLUSTER_TIMEOUT,
    cancelled: Cancelled = None,
    quiet_logs: bool = True,
) -> Iterator[distributed.Client]:
    """A client of ``scheduler``: an address (``tcp://host:8786``) or ``local:N``.

    An address is first probed (:func:`probe`: refused, silent or not Dask is one
    error within ``connect_timeout`` seconds); then at least one worker must join
    within ``cluster_timeout`` seconds. ``local:N`` starts a :func:`local_cluster` of
    N workers and stops it on exit. Every wait polls ``cancelled`` (and the caller's
    :func:`vsgen.formats.atomic.cancellation`): an interrupt stops it at once.

    Raises:
        ValueError: a malformed ``local:N``, address or timeout.
        ClusterError: the scheduler cannot be reached, is not Dask, or no worker
            joined in time.
    """
    import distributed  # noqa: F401 - without the dask extra: ImportError, before anything starts

    check_timeout("connect_timeout", connect_timeout)
    check_timeout("cluster_timeout", cluster_timeout)
    text, workers = parse_scheduler(scheduler)
    if workers is not None:
        cluster = LocalProcesses(workers, quiet_logs)
        try:
            address = cluster.address(cluster_timeout, cancelled)
            with _client(address, connect_timeout, cancelled) as client:
                _wait_for_workers(
                    client, address, cluster_timeout, connect_timeout, cancelled, workers
                )
                yield client
        finally:
            cluster.close()
        return
    probe(text, connect_timeout, cancelled)
    with _client(text, connect_timeout, cancelled) as client:
        _wait_for_workers(client, text, cluster_timeout, connect_timeout, cancelled)
        yield client


@contextlib.contextmanager
def _client(address: str, timeout: float, cancelled: Cancelled) -> Iterator[distributed.Client]:
    """A client of the scheduler at ``address``, closed on leaving (ClusterError if it
    cannot connect within ``timeout`` seconds)."""
    from distributed import Client

    try:
        client = _polled(
            lambda: Client(address, timeout=timeout),
            timeout + CLOSE_SECONDS,
            cancelled,
            on_late=_close_quietly,
        )
    except TimeoutError:
        why = f"no answer within {timeout:g} s (the connect timeout)"
        raise _unreachable(address, why) from None
    except Exception as error:  # Dask's own errors, whatever their kind: one line
        why = " ".join(str(error).split()) or type(error).__name__
        raise _unreachable(address, why) from None
    try:
        yield client
    finally:
        _close_quietly(client)


def _wait_for_workers(
    client: distributed.Client,
    address: str,
    cluster_timeout: float,
    connect_timeout: float,
    cancelled: Cancelled,
    count: int = 1,
) -> None:
    """Return once the scheduler has ``count`` workers; ClusterError after
    ``cluster_timeout`` seconds (or if the scheduler is lost)."""
    import asyncio

    health = _Health(client, cluster_timeout, connect_timeout)
    deadline = time.monotonic() + cluster_timeout
    question: Any = None
    while True:
        _stop_if_cancelled(cancelled)
        if time.monotonic() >= deadline:
            joined = "no worker" if count == 1 else f"not {count} workers"
            raise ClusterError(
                errno.ETIMEDOUT,
                f"{joined} joined the Dask scheduler {address} within {cluster_timeout:g} s "
                "(the cluster timeout)",
            )
        health.check()
        if question is None:
            scheduler: Any = client.scheduler
            loop: Any = client.loop
            question = asyncio.run_coroutine_threadsafe(
                scheduler.identity(n_workers=0), loop.asyncio_loop
            )
        elif question.done():
            with contextlib.suppress(Exception):
                if int(question.result()["n_workers"]) >= count:
                    return
            question = None
        time.sleep(POLL_SECONDS)
