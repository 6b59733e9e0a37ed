"""Opening outputs safely, the progress bar, and streaming plans into a file."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from vsgen.cli._errors import (
    BadInput,
    say,
    signals_held,
    terminate_as_interrupt,
    user_errors,
)

if TYPE_CHECKING:
    import numpy as np

    from vsgen.formats import Output
    from vsgen.initializer import Plan

#: Show a progress bar only for jobs this large (values), and only on a TTY.
PROGRESS_MIN_VALUES = 1 << 24


def refuse_foreign_directory(output: str, fmt: str, force: bool) -> None:
    """``--force`` replaces a whole npydir directory: only one of .npy files.

    A directory holding anything else (someone's data, a checkout) is never
    swapped for vsgen's output, --force or not.
    """
    if fmt != "npydir" or not force or not os.path.isdir(output):
        return
    for root, _, files in os.walk(output):
        for file_name in files:
            if not file_name.endswith(".npy"):
                other = os.path.join(root, file_name)
                raise BadInput(
                    f"-o {output!r} is a directory that holds other files (e.g. {other}); "
                    "--force only replaces a directory of .npy files: choose another name"
                )


def open_output(*args: Any, **kwargs: Any) -> Output:
    """``formats.open_output`` with Ctrl-C and SIGTERM held until the output exists.

    A signal landing while the temporary file is being created (between
    open(2) and the code that registers it for removal, or during h5py's
    first import) could otherwise leave the file behind; held, it is acted
    on as soon as the Output can remove its temporary itself.
    """
    from vsgen import formats

    with signals_held() as received:
        target = formats.open_output(*args, **kwargs)
    if received:
        target.abort()
        raise KeyboardInterrupt
    return target


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for long jobs, only on a terminal."""
    if quiet or total < PROGRESS_MIN_VALUES or sys.stderr is None or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console(), transient=True) as progress:
        task = progress.add_task(label, total=total, rate="")

        def advance(values: int) -> None:
            speed = progress.tasks[0].speed
            rate = f"{speed / 1e6:,.0f} M values/s" if speed else ""
            progress.update(task, advance=values, rate=rate)

        yield advance


def write_plans(target: Output, plans: Sequence[Plan], threads: int | None, quiet: bool) -> None:
    """Stream every plan's chunks into the opened output, then commit atomically.

    Without --threads, sampling leaves one CPU to the writer: the kernel's copy
    into the page cache needs a core too, and measured on 2 CPUs, 1 sampling
    thread + the writer streamed 1 GiB faster than 2 sampling threads + the
    writer (about 590 vs 450 M values/s). The bytes do not depend on it.
    """
    from vsgen import formats
    from vsgen.streams import usable_cpus

    if threads is None:
        threads = max(1, usable_cpus() - 1)

    def chunks() -> Iterator[np.ndarray]:
        for plan in plans:
            yield from plan.chunks(threads=threads)

    total = sum(plan.size for plan in plans)
    with terminate_as_interrupt(), user_errors(), target:
        with progress(total, "sampling", quiet) as advance:
            formats.write_chunks(target, chunks(), on_progress=advance)
        target.commit()


def write_parallel(
    job: Any,
    output: str,
    fmt: str,
    options: dict[str, Any],
    chunks: tuple[int, ...] | None,
    drawn_seed: int | None,
) -> None:
    """Write ``job`` with the parallel writers (``vsgen.dask.write``), on the cluster
    of ``--scheduler`` or on local threads, with the same progress bar and exit codes.
    A drawn seed is announced once the request is known to be valid."""
    from vsgen import dask as vsgen_dask
    from vsgen.formats import sharded

    scheduler = options["scheduler"]
    if output == "-":
        what = "--scheduler" if scheduler is not None else f"format {fmt!r}"
        raise BadInput(f"{what} cannot write to standard output; give -o FILE or DIR")
    total = sum(plan.size for plan in job.plans)
    # Ctrl-C and SIGTERM are held and acted on between two polls of the job, never
    # inside the cluster client or an output's layout, which do not survive an
    # exception at an arbitrary point.
    with signals_held() as received, user_errors(), _needs_extra(fmt, scheduler):
        for source in vsgen_dask.sources(job):
            source.check_parallel()
        sharded.parse_size(options["max_shard_size"])
        if scheduler is not None:
            vsgen_dask.parse_scheduler(scheduler)
        if drawn_seed is not None:
            say(f"seed: {drawn_seed}")
        with contextlib.ExitStack() as stack:
            client = None
            if scheduler is not None:
                client = stack.enter_context(vsgen_dask.connect(scheduler))
            if received:
                raise KeyboardInterrupt
            with progress(total, "sampling", options["quiet"]) as advance:
                vsgen_dask.write(
                    job,
                    output,
                    fmt,
                    client=client,
                    chunks=chunks,
                    max_shard_size=options["max_shard_size"],
                    force=options["force"],
                    threads=options["threads"],
                    on_progress=advance,
                    cancelled=lambda: bool(received),
                )
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _needs_extra(fmt: str, scheduler: str | None) -> Iterator[None]:
    """A missing optional package is a usage error that says what to install."""
    try:
        yield
    except ImportError as error:
        what = "--scheduler" if scheduler is not None else f"--format {fmt}"
        raise BadInput(
            f"{what} needs the optional packages of vsgen[dask] "
            f"(pip install 'vsgen[dask]'): {error}"
        ) from None
