"""``vsgen check``: does a tensor file match its initializer?"""

from __future__ import annotations

from typing import Any

import click

from vsgen.cli._errors import BadInput, user_errors
from vsgen.cli._options import (
    build_initializer,
    initializer_options,
    parse_shape_option,
    pop_initializer_options,
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
)


@click.command()
@initializer_options
@click.argument("file", type=str)
@click.option("--name", type=str, default=None, help="Tensor to check (if the file holds several).")
@click.option("--fan-shape", type=str, default=None, help="Compute fans from this (full) shape.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(**kwargs: Any) -> None:
    """Check that a .npy/.h5/.safetensors tensor matches its initializer.

    Reads the file in bounded memory and prints count, mean, std, min, max, a
    histogram and each check: finite values, |mean| and |std - stddev| within
    6 standard errors (+ dtype rounding), values within [-2s, 2s] or
    [-limit, limit], and a Kolmogorov-Smirnov test at alpha = 1e-3 on a
    subsample of at most 1e6 values. The expectation comes from the file's
    vsgen provenance, or from the initializer options (required for .npy).
    Exit 0: consistent (or too few values to judge, below 100); 1: NOT consistent.

    \b
    Examples:
      vsgen sample --shape 512,256 --seed 0 -o w.h5 && vsgen check w.h5
      vsgen sample --shape 99,99 --scale 2 -o w.npy && vsgen check w.npy --scale 2
      vsgen sample --shape 800,8 --shard 1/4 -o p.h5 && vsgen check p.h5
      vsgen sample --shape 3,3,64,96 --dtype float16 -o c.h5 && vsgen check c.h5 --json
    """
    from vsgen import verify

    options = pop_initializer_options(kwargs)
    path: str = kwargs["file"]
    fan_shape = parse_shape_option(kwargs["fan_shape"], "--fan-shape")
    explicit = any(options[key] is not None for key in _EXPECTATION_KEYS)
    initializer = build_initializer(options) if explicit else None
    if fan_shape is not None and initializer is None:
        raise BadInput("--fan-shape needs the initializer options (--preset or --scale/--mode/...)")
    with user_errors():
        try:
            report = verify.verify_file(path, kwargs["name"], initializer, fan_shape)
        except verify.NoExpectationError as error:
            raise BadInput(
                f"{error}; say what to expect with --preset NAME or --scale/--mode/"
                "--distribution (and --layout if not keras)"
            ) from None
    if kwargs["as_json"]:
        click.echo(report.to_json())
    else:
        _print_check_report(report)
    if report.exit_code:
        click.get_current_context().exit(report.exit_code)


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
    else:
        fan_shape = tuple(expected["fan_shape"])
        shape_note = f"fans {expected['fan_in']}/{expected['fan_out']} of {fan_shape}"
        line = (
            f"expected ({where}): {expected['distribution']}, scale {expected['scale']:g}, "
            f"{expected['mode']}, {expected['layout']} layout, {shape_note}: "
            f"stddev {expected['stddev']:.6g}"
        )
        if expected["bound"] is not None:
            line += f", bounds ±{expected['bound']:.6g}"
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
