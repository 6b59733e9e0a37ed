"""Writing from Python in one call: :func:`save` (one tensor), :func:`save_model` (a model).

Both make a :class:`~vsgen.job.ModelJob` (:func:`vsgen.job.tensor_job`,
:func:`vsgen.modelspec.model_job`) and hand it to :func:`write_job`, the writer
``vsgen sample`` uses too: the format from the suffix or ``format``, the same
atomic output (a temporary beside the target, renamed into place when complete,
removed on any failure or Ctrl-C), the same provenance records, and the same
rules for what ``force=True`` may replace. Files of the formats that stream
(``npy``, ``raw``, ``safetensors``, ``h5``, ``npydir``) are written in order by
:func:`open_stream` and :func:`stream_job`; Zarr stores, sharded safetensors and
jobs given a ``scheduler`` block by block by :func:`vsgen.blockwrite.write`. The
bytes are the same either way, and the same as the command line's.

Errors are ValueError/TypeError (bad arguments, an existing target, a dtype the
format cannot hold) and OSError (I/O, a full disk), with messages in the
arguments' words (``force=True``, not ``--force``: :mod:`vsgen._wording`).
Nothing here prints. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vsgen._wording import COMMAND_LINE_MESSAGE, library_errors

if TYPE_CHECKING:
    import numpy as np

    from vsgen.blockwrite import Runner
    from vsgen.formats import Output
    from vsgen.initializer import Plan, RandomInitializer
    from vsgen.job import ModelJob

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "open_stream",
    "resolve_target",
    "runner_for",
    "save",
    "save_model",
    "stream_job",
    "write_job",
    "writes_in_blocks",
]

#: ``max_shard_size`` of sharded safetensors: 5 * 10**9 bytes, as transformers.
DEFAULT_MAX_SHARD_SIZE = "5GB"
#: Values per chunk of the streaming writer: 2**22 (16 MiB of float32).
WRITE_CHUNK = 1 << 22
#: Chunks computed ahead of the streaming writer; the chunks are views of
#: PREFETCH + 2 recycled buffers, so a long job touches fresh memory only for
#: its first few chunks.
PREFETCH = 2

#: ``on_progress(values)``: called in the caller's thread as values are written.
OnProgress = Callable[[int], None] | None


def save(
    path: str | os.PathLike[str],
    initializer: RandomInitializer | str | Mapping[str, Any],
    shape: Sequence[int],
    dtype: object = "float32",
    name: str | None = None,
    format: str | None = None,  # noqa: A002 - numpy.save's and the CLI's word
    *,
    force: bool = False,
    rows: tuple[int | None, int | None] | None = None,
    fan_shape: Sequence[int] | None = None,
    threads: int | None = None,
    chunks: Any = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    scheduler: Any = None,
    on_progress: OnProgress = None,
) -> ModelJob:
    """Sample one tensor and write it to ``path``, atomically, with its provenance.

    What ``vsgen sample --shape`` does: ``initializer``'s values for ``shape`` and
    ``dtype`` (``float32``, ``float16``, ``bfloat16``, ``float64``, complex) as
    tensor ``name`` (default ``"weight"``; only ``.h5``, ``.safetensors``, Zarr
    and sharded safetensors hold names). ``initializer`` is an initializer
    object, a preset name (``"he_normal"``) or a config (plain or Keras's
    serialized form); without a seed one is drawn, and recorded in the file
    (the returned job's ``seed``). ``format`` is one of ``npy``, ``h5``,
    ``safetensors``, ``raw``, ``npydir``, ``zarr``, ``safetensors-sharded``
    (default: from the suffix of ``path``). ``rows=(a, b)`` writes rows a..b-1 of
    the full tensor and ``fan_shape`` computes the fans from another shape, as
    ``VarianceScaling.plan`` does. ``threads`` samples in that many threads
    (default: the usable CPUs but one, left to the writer); the bytes never
    depend on it, nor on ``chunks``, ``scheduler`` or the format.

    An existing ``path`` is replaced only with ``force=True``, and only if it is
    what vsgen would write there (a regular file; for directory formats an
    earlier output of that format). ``chunks``, ``max_shard_size`` and
    ``scheduler`` are as for :func:`write_job`.

    Returns:
        The job written: ``seed`` (the tensor's), ``records``, ``infos``.

    Raises:
        ValueError: a bad shape, dtype, name, row range or target; an existing
            target without ``force=True``; a dtype the format cannot hold.
        TypeError: an argument of the wrong type.
        OSError: the output cannot be written (a full disk, permissions).
    """
    from vsgen.job import tensor_job

    with library_errors():
        _check_path(path)
        init = _initializer(initializer)
        job = tensor_job(
            init,
            shape,
            dtype,
            "weight" if name is None else name,
            rows=rows,
            fan_shape=fan_shape,
        )
        fmt = resolve_target(job, path, format, whole_model=False)
        if name is not None:
            _refuse_name_without_names(fmt, name)
        write_job(
            job,
            path,
            fmt,
            force=force,
            threads=threads,
            chunks=chunks,
            max_shard_size=max_shard_size,
            scheduler=scheduler,
            on_progress=on_progress,
        )
    return job


def save_model(
    path: str | os.PathLike[str],
    source: Any,
    *,
    seed: int | None = None,
    dtype: object = None,
    layout: str | None = None,
    stream: str | None = None,
    init: Any = None,
    rules: Mapping[str, Any] | None = None,
    format: str | None = None,  # noqa: A002 - the CLI's word
    force: bool = False,
    threads: int | None = None,
    chunks: Any = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    scheduler: Any = None,
    on_progress: OnProgress = None,
) -> ModelJob:
    """Write every tensor of a model to ``path``, atomically, with its provenance.

    What ``vsgen sample --spec/--like`` does. ``source`` is a spec (a
    ``.toml``/``.json`` path, its dict or a ``ModelSpec``), a checkpoint path
    (any other path: its names, shapes and dtypes, integer tensors copied from it,
    as ``--like``) or a finished :class:`~vsgen.job.ModelJob`. ``seed`` (the
    global seed: each tensor's is derived from it and its name), ``dtype``,
    ``layout``, ``stream``, ``init`` (the default initializer of tensors of rank
    >= 2 that no rule covers) and ``rules`` (glob pattern -> initializer, before
    the spec's) are :func:`vsgen.modelspec.model_job`'s. ``path`` is a ``.safetensors``,
    ``.h5`` or ``.zarr`` target or a directory (``format="npydir"`` or
    ``"safetensors-sharded"``); the other arguments are :func:`save`'s.

    Returns:
        The job written: ``seed`` (the global seed, drawn if none was given),
        ``rows`` (the plan, :func:`vsgen.modelspec.plan_table`), ``records``.

    Raises:
        ValueError, TypeError, OSError: as :func:`save`, and a malformed spec.
    """
    import warnings

    from vsgen._wording import in_library_terms
    from vsgen.modelspec import model_job

    with library_errors():
        _check_path(path)
        job = model_job(
            source, seed=seed, dtype=dtype, layout=layout, stream=stream, init=init, rules=rules
        )
        fmt = resolve_target(job, path, format, whole_model=True)
        for warning in job.warnings:
            warnings.warn(in_library_terms(warning), UserWarning, stacklevel=2)
        write_job(
            job,
            path,
            fmt,
            force=force,
            threads=threads,
            chunks=chunks,
            max_shard_size=max_shard_size,
            scheduler=scheduler,
            on_progress=on_progress,
        )
    return job


def write_job(
    job: ModelJob,
    path: str | os.PathLike[str],
    format: str | None = None,  # noqa: A002 - the CLI's word
    *,
    force: bool = False,
    threads: int | None = None,
    chunks: Any = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    scheduler: Any = None,
    on_progress: OnProgress = None,
) -> str:
    """Write ``job`` to ``path``; return the format written.

    Streamed (:func:`open_stream`, :func:`stream_job`) for the formats that
    stream; block by block (:func:`vsgen.blockwrite.write`) for Zarr stores,
    sharded safetensors and any job given a ``scheduler``: a
    ``vsgen.blockwrite`` runner, a ``distributed.Client``, a scheduler address
    (``"tcp://host:8786"``) or ``"local:N"`` (a local cluster of N worker
    processes, started and stopped here); the last three need ``vsgen[dask]``.
    ``chunks`` is the block (Zarr chunk) shape of the block writers (a shape for
    the tensors of its rank, or a dict by name); ``max_shard_size`` (bytes or
    ``"5GB"``) bounds the shards of sharded safetensors. ``on_progress(n)`` is
    called as values are written.

    Raises:
        ValueError: see :func:`save`; ``chunks`` for a streamed format.
        OSError: I/O failure, or a cluster that could not finish.
    """
    from vsgen import blockwrite

    with library_errors():
        _check_path(path)
        _check_threads(threads)
        target = os.fspath(path)
        from vsgen.formats import registry

        fmt = registry.resolve_format(target, format, len(job.infos))
        if not writes_in_blocks(fmt, scheduler):
            if chunks is not None:
                raise ValueError(
                    f"Argument `chunks` applies to the block writers (zarr, safetensors-sharded, "
                    f"or a scheduler); {fmt} is streamed. Received: chunks={chunks!r}"
                )
            output = open_stream(job, target, fmt, force=force)
            stream_job(output, job.plans, threads=threads, on_progress=on_progress)
            return fmt
        blockwrite.check(job)
        with runner_for(scheduler) as runner:
            blockwrite.write(
                job,
                target,
                fmt,
                runner=runner,
                chunks=chunks,
                max_shard_size=max_shard_size,
                force=force,
                threads=threads,
                on_progress=on_progress,
            )
    return fmt


def writes_in_blocks(fmt: str, scheduler: Any = None) -> bool:
    """Whether ``fmt`` (a resolved format) is written block by block rather than
    streamed: Zarr stores, sharded safetensors, and every format with a scheduler."""
    from vsgen.formats import registry

    return scheduler is not None or not registry.get(fmt).streams


def resolve_target(
    job: ModelJob,
    path: str | os.PathLike[str],
    format: str | None,  # noqa: A002 - the CLI's word
    *,
    whole_model: bool,
) -> str:
    """The format of ``path`` for ``job`` (:func:`vsgen.formats.resolve_format`),
    refusing a directory for one tensor unless ``format="npydir"`` asks for it (a
    directory that exists may hold other data)."""
    from vsgen.formats import resolve_format

    target = os.fspath(path)
    fmt = resolve_format(target, format, len(job.infos))
    if fmt == "npydir" and format is None and not whole_model:
        example = os.path.join(target, f"{job.infos[0].name}.npy")
        error = ValueError(
            f"Argument `path` names a directory and the job holds one tensor: give a file "
            f"name, e.g. {example}, or format='npydir'. Received: path={target!r}"
        )
        setattr(
            error,
            COMMAND_LINE_MESSAGE,
            f"-o {target!r} names a directory; give a file name, e.g. {example}",
        )
        raise error
    return fmt


def open_stream(
    job: ModelJob,
    path: str,
    fmt: str,
    *,
    force: bool = False,
    stdout: Any = None,
) -> Output:
    """The streaming output of ``job`` at ``path`` (checked, laid out, its
    temporary created: :func:`vsgen.formats.open_output`), with the job's
    provenance. ``stdout`` is the binary stream of ``path == "-"`` (the command
    line's; the Python functions refuse ``"-"``)."""
    from vsgen import formats

    return formats.open_output(
        path,
        fmt,
        job.infos,
        metadata=job.metadata(),
        tensor_metadata=job.tensor_metadata(),
        force=force,
        stdout=stdout,
    )


def stream_job(
    output: Output,
    plans: Sequence[Plan],
    *,
    threads: int | None = None,
    on_progress: OnProgress = None,
    commit: Callable[[Output], None] | None = None,
) -> None:
    """Write every plan's values into ``output`` in order, then commit it
    (``commit(output)`` when given: the command line's holds signals around it).

    Chunks of :data:`WRITE_CHUNK` values are computed :data:`PREFETCH` ahead of
    the writer in recycled buffers (``threads`` sampling threads; default: the
    usable CPUs but the writer's). Any failure or interrupt aborts the output:
    its temporary is removed and an existing target is left as it was.
    """
    from vsgen import formats
    from vsgen.initializer import SamplePlan
    from vsgen.streams import default_threads

    workers = default_threads(writing=True) if threads is None else threads

    def chunks() -> Iterator[np.ndarray]:
        for plan in plans:
            if isinstance(plan, SamplePlan):
                yield from plan.chunks(WRITE_CHUNK, threads=workers, recycle=PREFETCH + 2)
            else:  # a model's constant or copied tensors
                yield from plan.chunks(WRITE_CHUNK, threads=workers)

    with output:
        formats.write_chunks(output, chunks(), on_progress=on_progress, prefetch=PREFETCH)
        if commit is None:
            output.commit()
        else:
            commit(output)


def runner_for(
    scheduler: Any,
    *,
    connect_timeout: float | None = None,
    cluster_timeout: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> contextlib.AbstractContextManager[Runner | None]:
    """The runner of :func:`vsgen.blockwrite.write` for ``scheduler``: None (local
    threads) for None; a runner as it is; a ``vsgen.dask.ClusterRunner`` of a
    ``distributed.Client``; or of a client connected to an address (or a
    ``local:N`` cluster) on entering the context, closed on leaving it. An
    address is checked at once (ValueError). ``connect_timeout`` and
    ``cluster_timeout`` (seconds; default ``vsgen.dask``'s) bound the connection and
    the time without a live worker; ``cancelled()`` is polled while connecting."""
    if scheduler is None:
        return contextlib.nullcontext(None)
    if all(hasattr(scheduler, name) for name in ("prepare", "run", "sync", "forget")):
        return contextlib.nullcontext(scheduler)
    from vsgen import dask as vsgen_dask

    timeouts = {
        "connect_timeout": vsgen_dask.CONNECT_TIMEOUT
        if connect_timeout is None
        else connect_timeout,
        "cluster_timeout": vsgen_dask.CLUSTER_TIMEOUT
        if cluster_timeout is None
        else cluster_timeout,
    }
    for name, value in timeouts.items():
        vsgen_dask.check_timeout(name, value)
    if not isinstance(scheduler, str):
        return contextlib.nullcontext(vsgen_dask.ClusterRunner(scheduler, **timeouts))
    vsgen_dask.parse_scheduler(scheduler)

    @contextlib.contextmanager
    def connected() -> Iterator[Runner]:
        with vsgen_dask.connect(
            scheduler,
            connect_timeout=timeouts["connect_timeout"],
            cluster_timeout=timeouts["cluster_timeout"],
            cancelled=cancelled,
        ) as client:
            yield vsgen_dask.ClusterRunner(client, **timeouts)

    return connected()


# --- argument checks ------------------------------------------------------------------


def _check_path(path: object) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Argument `path` must be a file or directory name. Received: {type(path).__name__}"
        )
    if os.fspath(path) in ("-", ""):
        raise ValueError(
            "Argument `path` must name a file or directory ('-', standard output, is the "
            f"command line's). Received: path={os.fspath(path)!r}"
        )


def _check_threads(threads: object) -> None:
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"Argument `threads` must be a positive integer or None. Received: threads={threads!r}"
        )


def _initializer(initializer: object) -> RandomInitializer:
    """An initializer object, or one made from a preset name or a config."""
    from vsgen.initializer import RandomInitializer, deserialize

    if isinstance(initializer, RandomInitializer):
        return initializer
    if isinstance(initializer, (str, Mapping)):
        return deserialize(initializer)
    raise TypeError(
        "Argument `initializer` must be an initializer, a preset name or a config. "
        f"Received: {type(initializer).__name__}"
    )


def _refuse_name_without_names(fmt: str, name: str) -> None:
    from vsgen.formats import registry

    if not registry.get(fmt).named:
        raise ValueError(
            f"Argument `name` names a tensor inside a file of several (h5, safetensors, zarr, "
            f"safetensors-sharded); {fmt} holds one unnamed tensor. Received: name={name!r}"
        )
