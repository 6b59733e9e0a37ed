"""Opening outputs safely, the progress bar, and streaming plans into a file."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from vsgen._interrupt import is_output_in_place, output_in_place
from vsgen.cli._errors import (
    BadInput,
    RuntimeFailure,
    say,
    signals_held,
    terminate_as_interrupt,
    user_errors,
)

if TYPE_CHECKING:
    from vsgen.formats import Output
    from vsgen.initializer import Plan
    from vsgen.job import ModelJob

#: Show a progress bar only for jobs this large (values), and only on a TTY.
PROGRESS_MIN_VALUES = 1 << 24


def open_output(opener: Callable[[], Output]) -> Output:
    """``opener()`` (:func:`vsgen.saving.open_stream`) with Ctrl-C and SIGTERM held
    until the output exists.

    A signal landing while the temporary file is being created (between
    open(2) and the code that registers it for removal, or during h5py's
    first import) could otherwise leave the file behind; held, it is acted
    on as soon as the Output can remove its temporary itself.
    """
    from vsgen.formats.atomic import cancellation

    # Laying out an npy directory, or removing what a dead run left, stops at the
    # next file once a signal came.
    with signals_held() as received, cancellation(lambda: bool(received)):
        target = opener()
    if received:
        target.abort()
        raise KeyboardInterrupt
    return target


def commit(target: Output) -> None:
    """Commit ``target`` with Ctrl-C and SIGTERM held: one that comes before the rename
    stops the commit (KeyboardInterrupt: the temporary is removed, the old target
    untouched); from the rename on the output is in place, and the command ends with
    exit code 0 whatever signal comes (:func:`vsgen._interrupt.output_in_place`)."""
    from vsgen.formats.atomic import cancellation

    with signals_held() as received, cancellation(lambda: bool(received)):
        target.commit()
        output_in_place()


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _stderr_is_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


@contextlib.contextmanager
def progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for long jobs, only on a terminal.

    It appears at once, as "preparing" until the first values arrive (rich
    itself takes about 0.1 s to import), and is cleared
    when the job ends, so that an error or the summary line stands alone.
    """
    if quiet or total < PROGRESS_MIN_VALUES or not _stderr_is_terminal():
        yield None
        return
    # Shown before rich is imported (about 0.1 s); the bar's first frame,
    # drawn from column 0, covers it.
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{'preparing':<9}\r")
        sys.stderr.flush()
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console(), transient=True) as bar:
        task = bar.add_task("preparing", total=total, rate="")
        bar.refresh()

        def advance(values: int) -> None:
            speed = bar.tasks[0].speed
            rate = f"{speed / 1e6:,.0f} M values/s" if speed else ""
            bar.update(task, description=label, advance=values, rate=rate)

        yield advance


def summary_line(values: int, nbytes: int, seconds: float, target: str) -> str:
    """``wrote 16,777,216 values (64.00 MiB) to w.npy in 0.42 s, 40 M values/s``."""
    from vsgen.formats.atomic import format_bytes

    where = "standard output" if target == "-" else target
    rate = f", {values / seconds / 1e6:,.0f} M values/s" if seconds > 0 and values else ""
    return f"wrote {values:,} values ({format_bytes(nbytes)}) to {where} in {seconds:.2f} s{rate}"


def write_plans(target: Output, plans: Sequence[Plan], threads: int | None, quiet: bool) -> None:
    """Stream every plan's chunks into the opened output, then commit atomically
    (:func:`vsgen.saving.stream_job`, with a progress bar on a terminal).

    Without --threads, sampling leaves ``WRITER_CPUS`` to the writer
    (``vsgen.streams.default_threads``). The bytes depend on neither. On a
    terminal (and without --quiet) one summary line follows on stderr.
    """
    from vsgen import saving

    started = time.monotonic()
    total = sum(plan.size for plan in plans)
    with terminate_as_interrupt(), user_errors(), progress(total, "sampling", quiet) as advance:
        saving.stream_job(target, plans, threads=threads, on_progress=advance, commit=commit)
    if not quiet and _stderr_is_terminal():
        nbytes = sum(info.nbytes for info in target.tensors)
        say(summary_line(total, nbytes, time.monotonic() - started, target.target))


def write_parallel(
    job: ModelJob,
    output: str,
    fmt: str,
    options: dict[str, Any],
    chunks: tuple[int, ...] | None,
) -> None:
    """Write ``job`` block by block (:func:`vsgen.blockwrite.write`): by local threads,
    or with --scheduler by the workers of a Dask cluster, with the same plan table,
    progress bar, summary line and exit codes as the streaming writer. A drawn seed
    is announced once the request is known to be valid. With --resume a failed job
    keeps its work and its one error line says how far it got."""
    from vsgen import blockwrite, saving
    from vsgen._wording import COMMAND_LINE_MESSAGE
    from vsgen.cli._cluster import cluster_logs, say_dashboard

    scheduler = options["scheduler"]
    quiet = options["quiet"]
    if output == "-":
        what = "--scheduler" if scheduler is not None else f"format {fmt!r}"
        raise BadInput(f"{what} cannot write to standard output; give -o FILE or DIR")
    started = time.monotonic()
    # Ctrl-C and SIGTERM are held and acted on at the next poll of the job (connecting,
    # laying out a store's files, the writers, the commit's syncing), never inside the
    # cluster client or an output's layout, which do not survive an exception at an
    # arbitrary point, and never after the rename.
    with (
        signals_held() as received,
        user_errors(),
        _needs_extra(fmt, scheduler),
        cluster_logs(options.get("verbose", False)) if scheduler else contextlib.nullcontext(),
    ):
        blockwrite.check(
            job,
            output,
            fmt,
            chunks=chunks,
            max_shard_size=options["max_shard_size"],
            threads=options["threads"],
            force=options["force"],
        )
        runners = saving.runner_for(
            scheduler,
            connect_timeout=options.get("connect_timeout"),
            cluster_timeout=options.get("cluster_timeout"),
            cancelled=lambda: bool(received),
        )
        show = not quiet and _stderr_is_terminal()
        try:
            with runners as runner:
                if received:
                    raise KeyboardInterrupt
                # Once the cluster answers: a run that cannot start prints its one
                # error line and nothing else.
                if job.seed_was_drawn:
                    say(f"seed: {job.seed}")
                say_dashboard(runner, show)
                _say_plan(job, show)
                with progress(job.total_values, "sampling", quiet) as advance:
                    blockwrite.write(
                        job,
                        output,
                        fmt,
                        runner=runner,
                        chunks=chunks,
                        max_shard_size=options["max_shard_size"],
                        force=options["force"],
                        threads=options["threads"],
                        on_progress=advance,
                        cancelled=lambda: bool(received),
                        resume=options.get("resume", False),
                    )
                    # Renamed into place: a signal that came since changes nothing.
                    output_in_place()
        except blockwrite.KeptInterrupt as kept:
            raise RuntimeFailure(getattr(kept, COMMAND_LINE_MESSAGE, str(kept))) from None
    if received and not is_output_in_place():
        raise KeyboardInterrupt
    if show:
        nbytes = sum(info.nbytes for info in job.infos)
        say(summary_line(job.total_values, nbytes, time.monotonic() - started, output))


#: Above this many tensors the plan shown on a terminal is summarised.
PLAN_MAX_ROWS = 40


def _say_plan(job: ModelJob, show: bool) -> None:
    """A model's plan table on stderr before it is written, on a terminal."""
    if not show or not job.rows:
        return
    from vsgen.modelspec import plan_table

    for line in plan_table(job.rows, max_rows=PLAN_MAX_ROWS):
        say(line)


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
