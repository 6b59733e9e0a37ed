"""``vsgen describe``: what a configuration means for a shape, or what a file's
tensors were made with."""

from __future__ import annotations

import json
from typing import Any

import click
from click.core import ParameterSource

from vsgen.cli._errors import BadInput, plus_minus, user_errors
from vsgen.cli._options import (
    SPELLING_NOTE,
    build_initializer,
    dtype_type,
    initializer_options,
    parse_shape_option,
    pick_record,
    pop_initializer_options,
    recorded_tensors,
    refuse_with_file,
)
from vsgen.initializer import RandomInitializer

#: Above this many tensors a file is summarised, one line per tensor.
_FULL_TABLES_UP_TO = 1


@click.command(epilog=SPELLING_NOTE)
@initializer_options(exclude=("seed", "stream"))
@click.argument("file", required=False, metavar="[FILE]")
@click.option("--shape", type=str, default=None, help="Tensor shape, e.g. 3,3,64,128.")
@click.option("--fan-shape", type=str, default=None, help="Compute fans from this shape instead.")
@click.option(
    "--dtype",
    type=dtype_type(),
    default="float32",
    show_default=True,
    help="Output type; complex64/complex128 have their own parameters.",
)
@click.option(
    "--name", type=str, default=None, help="With FILE: only this tensor (default: every tensor)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(**kwargs: Any) -> None:
    """Show what a configuration means for a shape: fans, n, variance, stddev,
    the truncated normal's pre-truncation stddev and bounds, or the uniform limit.

    The fixed-parameter initializers (random_normal, truncated_normal,
    random_uniform) have no fans: their mean, stddev and bounds or range.

    The seed and the random stream do not change any of these, so describe
    takes neither --seed nor --stream.

    With FILE (a .h5, .safetensors, .zarr or sharded safetensors file vsgen
    wrote): what each of its tensors was made with, read from the file's
    record: the same numbers, plus the tensor's seed and stream (one line per
    tensor for a file of several; --name picks one).

    \b
    Examples:
      vsgen describe --shape 3,3,64,128 --preset he_normal
      vsgen describe --shape 512,256 --mode fan_avg --distribution uniform --json
      vsgen describe --shape 256,128 --mode fan_geo_avg --dtype complex64
      vsgen describe --shape 768,768 --preset truncated_normal --stddev 0.02
      vsgen sample --shape 64,32 --preset he_uniform --seed 1 -o w.h5 && vsgen describe w.h5
    """
    options = pop_initializer_options(kwargs)
    if kwargs["file"] is not None:
        _describe_file(kwargs, options)
        return
    if kwargs["name"] is not None:
        raise BadInput("--name picks a tensor of FILE; give the vsgen file to describe")
    if kwargs["shape"] is None:
        raise BadInput(
            "Missing option '--shape' (or give a vsgen FILE to describe what it records)"
        )
    shape = parse_shape_option(kwargs["shape"])
    fan_shape = parse_shape_option(kwargs["fan_shape"], "--fan-shape")
    initializer = build_initializer(options)
    with user_errors():
        info = _description(initializer, shape, fan_shape, kwargs["dtype"])
    if kwargs["as_json"]:
        click.echo(json.dumps(info, indent=2))
        return
    _print_description(info, _title(initializer, info))


def _description(
    initializer: RandomInitializer,
    shape: tuple[int, ...],
    fan_shape: tuple[int, ...] | None,
    dtype: object,
) -> dict[str, Any]:
    """What ``describe --json`` prints for ``initializer`` on ``shape``."""
    scaling = initializer.scaling(fan_shape if fan_shape is not None else shape, dtype)
    info = scaling.as_dict()
    info["shape"] = list(shape or ())
    if initializer.uses_fans:
        info["fan_shape"] = list(fan_shape) if fan_shape is not None else None
        info["layout"] = initializer.layout
        info["input_axes"] = list(initializer.input_axes) if initializer.input_axes else None
        info["output_axes"] = list(initializer.output_axes) if initializer.output_axes else None
        info.update(getattr(initializer, "torch_arguments", {}))
    else:
        info["initializer"] = type(initializer).__name__
    return info


def _title(initializer: RandomInitializer, info: dict[str, Any]) -> str:
    # Keras's presets are VarianceScaling with fixed numbers; PyTorch's and the
    # fixed-parameter initializers are named for what they add.
    torch_or_fixed = hasattr(initializer, "torch_arguments") or not initializer.uses_fans
    title = type(initializer).__name__ if torch_or_fixed else "VarianceScaling"
    return f"{title} for shape {tuple(info['shape'])}"


# --- describe FILE ----------------------------------------------------------------------


def _describe_file(kwargs: dict[str, Any], options: dict[str, Any]) -> None:
    """``describe FILE``: every recorded tensor (or ``--name``), from its record."""
    from vsgen import provenance

    path: str = kwargs["file"]
    source = click.get_current_context().get_parameter_source
    given = [key for key, value in options.items() if value is not None]
    given += [key for key in ("shape", "fan_shape") if kwargs[key] is not None]
    if source("dtype") is ParameterSource.COMMANDLINE:
        given.append("dtype")
    refuse_with_file(path, given, "describes what the file records")
    records = recorded_tensors(path, "describe")
    if kwargs["name"] is not None:
        records = dict([pick_record(records, path, kwargs["name"], "describe")])
    with user_errors():
        described = [
            _recorded_description(path, name, record, provenance)
            for name, record in records.items()
        ]
    if kwargs["as_json"]:
        infos = [info for info, _ in described]
        click.echo(json.dumps(infos if kwargs["name"] is None else infos[0], indent=2))
    elif len(described) > _FULL_TABLES_UP_TO:
        _print_summary(path, [info for info, _ in described])
    else:
        info, title = described[0]
        if title is None:
            click.echo(f"{path}: tensor {info['name']!r}: {_kept(info)}")
        else:
            _print_description(info, title)


def _recorded_description(
    path: str, name: str, record: dict[str, Any], provenance: Any
) -> tuple[dict[str, Any], str | None]:
    """One tensor's description from its record, and its table's title.

    A sampled tensor gets ``describe --shape``'s numbers for the shape, dtype and
    options it was made with (the full shape and fan shape of a slice), with its
    ``name``, ``kind``, ``dtype``, ``rows``, ``seed`` and ``stream``; a constant or
    a copy its ``kind``, ``value``, ``shape`` and ``dtype`` (and no title).
    """
    kind = record.get("kind", "variance_scaling")
    if not provenance.is_sampled(record):
        kept = {"name": name, "kind": kind, "value": record.get("value")}
        kept.update({key: record.get(key) for key in ("shape", "dtype")})
        return kept, None
    try:
        replayed = provenance.replay(record)
    except (KeyError, TypeError, ValueError) as error:
        detail = f"field {error} is missing" if isinstance(error, KeyError) else str(error)
        raise ValueError(
            f"{path}: the vsgen record of tensor {name[:200]!r} is malformed: {detail}"
        ) from None
    initializer = replayed.initializer
    dtype = replayed.dtype or "float32"
    info = _description(initializer, replayed.full_shape, replayed.fan_shape, dtype)
    extra = {
        "name": name,
        "kind": kind,
        "dtype": dtype,
        "rows": list(replayed.rows) if replayed.rows is not None else None,
        "seed": initializer.seed,
        "stream": initializer.stream,
    }
    return {**extra, **info}, f"{name}: {_title(initializer, info)}"


def _kept(info: dict[str, Any]) -> str:
    """What a tensor that was not sampled holds: ``constant 0`` or ``copied``."""
    if info["kind"] == "constant" and info["value"] is not None:
        return f"constant {info['value']:g}"
    return "copied from a checkpoint" if info["kind"] == "copy" else str(info["kind"])


def _print_summary(path: str, described: list[dict[str, Any]]) -> None:
    """One line per tensor: its initializer, fans and numbers."""
    header = ("tensor", "shape", "dtype", "made with", "fans", "stddev", "bound", "seed")
    rows = []
    for entry in described:
        shape = "x".join(str(d) for d in entry.get("shape") or ()) or "()"
        if "seed" not in entry:
            rows.append((entry["name"], shape, str(entry["dtype"]), _kept(entry), *[""] * 4))
            continue
        fans = f"{entry['fan_in']}/{entry['fan_out']}" if "fan_in" in entry else ""
        bound = entry["limit"] if entry["limit"] is not None else entry["bound"]
        made = entry.get("initializer") or _made_with(entry)
        rows.append(
            (
                entry["name"],
                shape,
                entry["dtype"],
                made,
                fans,
                f"{entry['stddev']:.6g}",
                "" if bound is None else f"{bound:.6g}",
                str(entry["seed"]),
            )
        )
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(8)]
    click.echo(f"{path}: {len(rows)} tensors (--name NAME for one tensor's full table)")
    for row in (header, *rows):
        cells = (text.ljust(width) for text, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def _made_with(entry: dict[str, Any]) -> str:
    """``truncated_normal scale 2 fan_in``: a variance-scaling tensor's options."""
    return f"{entry['distribution']} scale {entry['scale']:g} {entry['mode']}"


def _print_description(info: dict[str, Any], title: str) -> None:
    """The table of ``describe``; a file's tensor adds its seed and stream."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("meaning")

    def fmt(value: float) -> str:
        return f"{value:.9g}"

    if "initializer" in info:
        rows = _fixed_rows(info, fmt) + _recorded_rows(info)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    rows = _torch_rows(info, fmt)
    rows += [
        ("fan_in", str(info["fan_in"]), "input units" + _fan_note(info)),
        ("fan_out", str(info["fan_out"]), "output units"),
        ("n", fmt(info["n"]), f"max(1, {info['mode']})"),
        ("scale", fmt(info["scale"]), ""),
        ("variance", fmt(info["variance"]), "scale / n"),
        ("stddev", fmt(info["stddev"]), "sqrt(variance): the samples' target std"),
    ]
    if info.get("complex"):
        rows += _complex_rows(info, fmt)
    elif info["distribution"] == "truncated_normal":
        rows.append(
            (
                "pre_truncation_std",
                fmt(info["pre_truncation_std"]),
                "s = stddev / 0.87962566103423978",
            )
        )
        rows.append(("bounds", f"{plus_minus()}{fmt(info['bound'])}", "[-2s, 2s]"))
    elif info["distribution"] == "uniform":
        rows.append(("limit", fmt(info["limit"]), "sqrt(3 * variance); U[-limit, limit)"))
    rows.append(("distribution", info["distribution"], ""))
    rows += _recorded_rows(info)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _recorded_rows(info: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A recorded tensor's seed, stream, dtype and rows (``describe FILE``)."""
    if "seed" not in info:
        return []
    rows = [
        ("dtype", str(info["dtype"]), ""),
        ("seed", str(info["seed"]), "recorded"),
        ("stream", str(info["stream"]), ""),
    ]
    if info.get("rows") is not None:
        start, stop = info["rows"]
        rows.append(("rows", f"{start}:{stop}", "of axis 0 of the full shape"))
    return rows


def _torch_rows(info: dict[str, Any], fmt: Any) -> list[tuple[str, str, str]]:
    """PyTorch's arguments, when the preset has them."""
    rows = []
    if "nonlinearity" in info:
        rows.append(("nonlinearity", info["nonlinearity"], "torch's calculate_gain"))
        rows.append(("a", fmt(info["a"]), "negative slope (leaky_relu only)"))
    if "gain" in info:
        rows.append(("gain", fmt(info["gain"]), "stddev = gain * sqrt(2 / (fan_in + fan_out))"))
    return rows


def _fixed_rows(info: dict[str, Any], fmt: Any) -> list[tuple[str, str, str]]:
    """A fixed-parameter initializer: no fans; the values' mean, stddev and range."""
    distribution = info["distribution"]
    rows = []
    if distribution == "uniform":
        rows += [
            ("minval", fmt(info["minval"]), "lower bound, inclusive"),
            ("maxval", fmt(info["maxval"]), "upper bound, exclusive"),
            ("mean", fmt(info["mean"]), "(minval + maxval) / 2"),
            ("stddev", fmt(info["stddev"]), "(maxval - minval) / sqrt(12)"),
        ]
    elif distribution == "truncated_normal":
        rows += [
            ("mean", fmt(info["mean"]), ""),
            ("pre_truncation_std", fmt(info["pre_truncation_std"]), "s: the argument stddev"),
            ("bounds", f"mean {plus_minus()}{fmt(info['bound'])}", "[mean - 2s, mean + 2s]"),
            ("stddev", fmt(info["stddev"]), "0.87962566103423978 * s: the samples' std"),
        ]
    else:
        rows += [
            ("mean", fmt(info["mean"]), ""),
            ("stddev", fmt(info["stddev"]), "the samples' std"),
        ]
    rows.append(("distribution", distribution, "no fans: the shape does not change these"))
    return rows


def _complex_rows(info: dict[str, Any], fmt: Any) -> list[tuple[str, str, str]]:
    """JAX's complex variance scaling: variance split between the two parts."""
    if info["distribution"] == "truncated_normal":
        return [
            (
                "pre_truncation_std",
                fmt(info["pre_truncation_std"]),
                "s = stddev / 0.95311164380491208 (JAX)",
            ),
            ("bound", fmt(info["bound"]), "|z| <= 2s"),
        ]
    if info["distribution"] == "uniform":
        return [("radius", fmt(info["limit"]), "sqrt(2 * variance); uniform in the disk")]
    return [("part stddev", fmt(info["stddev"] / 2**0.5), "stddev / sqrt(2) per part")]


def _fan_note(info: dict[str, Any]) -> str:
    if info["input_axes"] is not None:
        return f" (axes {info['input_axes']} / {info['output_axes']})"
    note = f" ({info['layout']} layout"
    if info["fan_shape"] is not None:
        note += f", from fan shape {tuple(info['fan_shape'])}"
    return note + ")"
