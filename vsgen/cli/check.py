"""``vsgen check``: does a tensor file match its initializer?"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import click

from vsgen.cli._errors import (
    BadInput,
    RuntimeFailure,
    emit,
    plus_minus,
    signals_held,
    user_errors,
)
from vsgen.cli._options import (
    ARGUMENT_KEYS,
    SPELLING_NOTE,
    build_initializer,
    initializer_options,
    parse_shape_option,
    pop_initializer_options,
)

#: ``check -`` copies standard input to a temporary file (h5py needs a seekable
#: file) in bounded memory; beyond this size it asks for a file instead.
STDIN_MAX_BYTES = 16 << 30
_COPY_CHUNK = 1 << 20


#: How errors name standard input (never the temporary file that holds it).
STDIN_LABEL = "- (standard input)"


@contextlib.contextmanager
def _stdin_as_file() -> Iterator[str]:
    """Standard input copied, a chunk at a time, into a private temporary file
    (``stdin`` in a private temporary directory, so a ``.npy`` tensor is named
    ``stdin``), removed afterwards (also on Ctrl-C). Errors raised inside name
    ``-`` (standard input), never the temporary file."""
    if sys.stdin is None:
        raise BadInput("check -: standard input is closed; give a FILE")
    if sys.stdin.isatty():
        raise BadInput("check -: standard input is a terminal; pipe a tensor file into it")
    source = sys.stdin.buffer
    directory = None
    try:
        # Made with Ctrl-C held, inside the try: an interrupt right after the
        # directory was made (before `directory` was known) left it behind.
        with signals_held() as received:
            directory = tempfile.mkdtemp(prefix="vsgen-check-")
        if received:
            raise KeyboardInterrupt
        name = os.path.join(directory, "stdin")
        try:
            with open(name, "xb") as handle:
                copied = 0
                while chunk := source.read(_COPY_CHUNK):
                    copied += len(chunk)
                    if copied > STDIN_MAX_BYTES:
                        raise BadInput(
                            f"check -: standard input holds more than {STDIN_MAX_BYTES >> 30} "
                            "GiB; save it to a file and check that"
                        )
                    handle.write(chunk)
        except OSError as error:
            raise RuntimeFailure(f"check -: cannot buffer standard input: {error}") from None
        try:
            yield name
        except RuntimeFailure as error:  # BadInput too
            raise type(error)(_naming_stdin(error.format_message(), name)) from None
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _naming_stdin(message: str, path: str) -> str:
    """``message`` with the temporary file holding standard input called ``-``."""
    return message.replace(repr(path), repr("-")).replace(path, STDIN_LABEL)


def _refuse_special_file(path: str) -> None:
    """Say what a FIFO, device or socket is, without opening it (opening a FIFO
    would wait for a writer), and how to check a stream instead."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the reader reports a missing or unreadable file
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    from vsgen.formats.atomic import describe_file_kind

    raise BadInput(
        f"{path} is {describe_file_kind(mode)}, not a .npy, .h5 or .safetensors file; "
        "to check a stream, pipe it into 'vsgen check -'"
    )


#: Options that say what distribution to expect (the seed and stream do not matter).
_EXPECTATION_KEYS = (
    "scale",
    "mode",
    "distribution",
    "preset",
    "config_source",
    "layout",
    "in_axes",
    "out_axes",
    *ARGUMENT_KEYS,
)


@click.command(epilog=SPELLING_NOTE)
@initializer_options(exclude=("seed", "stream"))
@click.argument("file", type=str, metavar="FILE|-")
@click.option(
    "--name", type=str, default=None, help="Check only this tensor (default: every tensor)."
)
@click.option("--fan-shape", type=str, default=None, help="Compute fans from this (full) shape.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(**kwargs: Any) -> None:
    """Check that the tensors of a .npy/.h5/.safetensors file (or a directory
    of .npy files) match their initializers.

    Reads the file in bounded memory and, per tensor, prints count, mean, std,
    min, max, a histogram and each check: finite values, |mean| and
    |std - stddev| within 6 standard errors (+ dtype rounding), values within
    [-2s, 2s] or [-limit, limit], and a Kolmogorov-Smirnov test at
    alpha = 1e-3 on a subsample of at most 1e6 values. Every tensor is judged
    against its own recorded provenance (one table for a file of several
    tensors; --name picks one), or against the initializer options (required
    for .npy).

    \b
    Exit codes:
      0  consistent (or too few values to judge, below 100)
      1  NOT consistent: some tensor failed a check
      2  could not check: bad options, or a file that is not a readable tensor file
      3  could not check: I/O error, interrupted, or an internal error

    \b
    Examples:
      vsgen sample --shape 512,256 --seed 0 -o w.h5 && vsgen check w.h5
      vsgen sample --shape 99,99 --scale 2 -o w.npy && vsgen check w.npy --scale 2
      vsgen sample --shape 800,8 --shard 1/4 -o p.h5 && vsgen check p.h5
      vsgen sample --shape 3,3,64,96 --dtype float16 -o c.h5 && vsgen check c.h5 --json
      vsgen sample --shape 256,256 --scale 2 --seed 1 -o - | vsgen check - --scale 2

    FILE '-' reads standard input (at most 16 GiB, buffered in a temporary file).
    """
    from vsgen import verify

    options = pop_initializer_options(kwargs)
    path: str = kwargs["file"]
    fan_shape = parse_shape_option(kwargs["fan_shape"], "--fan-shape")
    explicit = any(options[key] is not None for key in _EXPECTATION_KEYS)
    initializer = build_initializer(options) if explicit else None
    if fan_shape is not None and initializer is None:
        raise BadInput("--fan-shape needs the initializer options (--preset or --scale/--mode/...)")
    with contextlib.ExitStack() as stack:
        if path == "-":
            file = stack.enter_context(_stdin_as_file())
        else:
            _refuse_special_file(path)
            file = path
        # Extreme values (a float64 file of 1e308s) overflow the statistics:
        # the checks then fail, and NumPy's warnings would only add noise.
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", RuntimeWarning)
        with user_errors():
            try:
                report: Any = _run(file, kwargs["name"], initializer, fan_shape)
            except verify.NoExpectationError as error:
                raise BadInput(
                    f"{error}; say what to expect with --preset NAME or --scale/--mode/"
                    "--distribution (and --layout if not keras)"
                ) from None
    if path == "-":
        # A .npy file's tensor is named after the file: "stdin" here.
        if isinstance(report, verify.FileReport):
            reports = [dataclasses.replace(item, path="-") for item in report.reports]
            report = dataclasses.replace(report, reports=reports)
        report = dataclasses.replace(report, path="-")
    if kwargs["as_json"]:
        emit(report.to_json())
    elif isinstance(report, verify.FileReport):
        _print_file_report(report)
    else:
        _print_check_report(report)
    if report.exit_code:
        click.get_current_context().exit(report.exit_code)


def _run(path: str, name: str | None, initializer: Any, fan_shape: Any) -> Any:
    """One tensor's report (``--name``, or a file of one tensor), else the whole file's."""
    from vsgen import verify
    from vsgen.formats.readers import open_file

    # The file's headers are read once (a header may be 100 MB).
    tensor_file = open_file(path)
    # The file is judged against its whole record: a recorded tensor it lacks fails it.
    whole = initializer is None and bool(verify.missing_tensors(tensor_file))
    if name is None and (len(tensor_file.tensors) > 1 or whole):
        if fan_shape is not None:
            raise ValueError(
                f"{path} holds {len(tensor_file.tensors)} tensors; --fan-shape applies to "
                "one: choose it with --name"
            )
        return verify.verify_tensors(tensor_file, initializer)
    return verify.verify_file(tensor_file, name, initializer, fan_shape)


def _print_file_report(report: Any) -> None:
    """One row per tensor, then the tensors not judged and the file's verdict."""
    echo = click.echo
    rows = []
    for item in report.reports:
        failed = [check.name for check in item.checks if not check.passed]
        expected = item.expected
        if expected.get("kind") == "constant":
            what = f"constant {expected['value']:g}"
        elif "initializer" in expected:  # fixed parameters: around a mean
            what = (
                f"{expected['distribution']} mean {expected['mean']:.4g} "
                f"stddev {expected['stddev']:.4g}"
            )
        else:
            what = f"{expected['distribution']} stddev {expected['stddev']:.4g}"
        shape = "x".join(str(d) for d in item.shape) or "()"
        rows.append(
            (
                item.name,
                shape,
                item.dtype,
                what,
                item.verdict + (f" ({', '.join(failed)})" if failed else ""),
            )
        )
    header = ("tensor", "shape", "dtype", "expected", "verdict")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(4)]
    echo(f"{report.path}: {len(report.reports)} tensors judged, {report.format}")
    for row in (header, *rows):
        cells = [text.ljust(width) for text, width in zip(row, widths, strict=False)]
        echo("  ".join([*cells, row[4]]))
    for item in report.not_judged:
        echo(f"not judged: {item['name']}: {item['reason']}")
    for missing in report.missing:
        echo(f"missing: {missing}: recorded by the file's vsgen provenance, not in the file")
    echo(f"verdict: {report.verdict}")


def _print_check_report(report: Any) -> None:
    expected, summary = report.expected, report.summary
    echo = click.echo
    echo(
        f"{report.path}: tensor {report.name!r}, shape {report.shape}, {report.dtype}, "
        f"{report.format}"
    )
    where = "recorded provenance" if report.source == "provenance" else "options"
    if expected.get("kind") == "constant":
        echo(f"expected ({where}): every value {expected['value']:g}")
    elif "initializer" in expected:  # fixed parameters: no fans
        line = (
            f"expected ({where}): {expected['initializer']}, {expected['distribution']}, "
            f"mean {expected['mean']:.6g}, stddev {expected['stddev']:.6g}"
        )
        if expected["bound"] is not None:
            line += f", bounds mean {plus_minus()}{expected['bound']:.6g}"
        if expected.get("minval") is not None:
            line += f", range [{expected['minval']:.6g}, {expected['maxval']:.6g})"
        echo(line)
    else:
        fan_shape = tuple(expected["fan_shape"])
        shape_note = f"fans {expected['fan_in']}/{expected['fan_out']} of {fan_shape}"
        line = (
            f"expected ({where}): {expected['distribution']}, scale {expected['scale']:g}, "
            f"{expected['mode']}, {expected['layout']} layout, {shape_note}: "
            f"stddev {expected['stddev']:.6g}"
        )
        if expected["bound"] is not None:
            line += f", bounds {plus_minus()}{expected['bound']:.6g}"
        if expected["limit"] is not None:
            line += f", limit {expected['limit']:.6g}"
        echo(line)
    for label in ("count", "mean", "std", "min", "max"):
        value = getattr(summary, label)
        echo(f"  {label:<6} {value:.6g}" if label != "count" else f"  {label:<6} {value}")
    histogram = report.histogram
    if histogram.counts:
        echo(f"histogram (subsample of {histogram.sample_size} values):")
        peak = max(histogram.counts) or 1
        for index, count in enumerate(histogram.counts):
            low, high = histogram.edges[index], histogram.edges[index + 1]
            bar = "#" * round(40 * count / peak)
            echo(f"  {low:>+11.4g} .. {high:>+11.4g} | {bar:<40} {count}")
    echo("checks:")
    for item in report.checks:
        echo(f"  {'PASS' if item.passed else 'FAIL'}  {item.name:<7} {item.detail}")
    for note in report.notes:
        echo(f"note: {note}")
    echo(f"verdict: {report.verdict}")
    sys.stdout.flush()
