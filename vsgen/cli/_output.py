"""Opening outputs safely, the progress bar, and streaming plans into a file."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from vsgen.cli._errors import (
    BadInput,
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


#: Sampling threads when writing without --threads: the usable CPUs minus
#: this many (at least 1), leaving a core to the writer, whose copy into the
#: page cache needs one too. Chosen by benchmarks/bench_user_path.py (README,
#: "Speed"); the bytes never depend on it.
WRITER_SPARE_CPUS = 1
#: Chunks computed ahead of the writer. The chunks are views of PREFETCH + 2
#: recycled buffers (write_chunks holds at most that many at once), so a long
#: job page-faults in only its first few chunks.
PREFETCH = 2
#: Values per chunk: 2**22 (16 MiB of float32), bounding memory at
#: (PREFETCH + 2) chunks while each write(2) stays large.
WRITE_CHUNK = 1 << 22


def default_threads() -> int:
    """Sampling threads of a file-writing command run without --threads."""
    from vsgen.streams import usable_cpus

    return max(1, usable_cpus() - WRITER_SPARE_CPUS)


def write_plans(target: Output, plans: Sequence[Plan], threads: int | None, quiet: bool) -> None:
    """Stream every plan's chunks into the opened output, then commit atomically.

    Chunks are computed by ``threads`` sampling threads (default:
    ``default_threads()``) ahead of the writer, in recycled buffers. The
    bytes do not depend on either.
    """
    from vsgen import formats
    from vsgen.initializer import SamplePlan

    if threads is None:
        threads = default_threads()

    def chunks() -> Iterator[np.ndarray]:
        for plan in plans:
            if isinstance(plan, SamplePlan):
                yield from plan.chunks(WRITE_CHUNK, threads=threads, recycle=PREFETCH + 2)
            else:  # e.g. a whole model's constant tensors
                yield from plan.chunks(WRITE_CHUNK, threads=threads)

    total = sum(plan.size for plan in plans)
    with terminate_as_interrupt(), user_errors(), target:
        with progress(total, "sampling", quiet) as advance:
            formats.write_chunks(target, chunks(), on_progress=advance, prefetch=PREFETCH)
        target.commit()
