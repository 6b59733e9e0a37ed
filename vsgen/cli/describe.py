"""``vsgen describe``: what a configuration means for a shape."""

from __future__ import annotations

import json
from typing import Any

import click

from vsgen.cli._errors import plus_minus, user_errors
from vsgen.cli._options import (
    SPELLING_NOTE,
    build_initializer,
    initializer_options,
    parse_shape_option,
    pop_initializer_options,
)


@click.command(epilog=SPELLING_NOTE)
@initializer_options(exclude=("seed", "stream"))
@click.option("--shape", type=str, required=True, help="Tensor shape, e.g. 3,3,64,128.")
@click.option("--fan-shape", type=str, default=None, help="Compute fans from this shape instead.")
@click.option(
    "--dtype",
    type=str,
    default="float32",
    show_default=True,
    help="Output type; complex64/complex128 have their own parameters.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(**kwargs: Any) -> None:
    """Show what a configuration means for a shape: fans, n, variance, stddev,
    the truncated normal's pre-truncation stddev and bounds, or the uniform limit.

    The fixed-parameter initializers (random_normal, truncated_normal,
    random_uniform) have no fans: their mean, stddev and bounds or range.

    The seed and the random stream do not change any of these, so describe
    takes neither --seed nor --stream.

    \b
    Examples:
      vsgen describe --shape 3,3,64,128 --preset he_normal
      vsgen describe --shape 512,256 --mode fan_avg --distribution uniform --json
      vsgen describe --shape 256,128 --mode fan_geo_avg --dtype complex64
      vsgen describe --shape 768,768 --preset truncated_normal --stddev 0.02
    """
    options = pop_initializer_options(kwargs)
    shape = parse_shape_option(kwargs["shape"])
    fan_shape = parse_shape_option(kwargs["fan_shape"], "--fan-shape")
    initializer = build_initializer(options)
    with user_errors():
        scaling = initializer.scaling(
            fan_shape if fan_shape is not None else shape, kwargs["dtype"]
        )
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
    if kwargs["as_json"]:
        click.echo(json.dumps(info, indent=2))
        return
    # Keras's presets are VarianceScaling with fixed numbers; PyTorch's and the
    # fixed-parameter initializers are named for what they add.
    torch_or_fixed = hasattr(initializer, "torch_arguments") or not initializer.uses_fans
    title = type(initializer).__name__ if torch_or_fixed else "VarianceScaling"
    _print_description(info, f"{title} for shape {tuple(info['shape'])}")


def _print_description(info: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("meaning")

    def fmt(value: float) -> str:
        return f"{value:.9g}"

    if "initializer" in info:
        rows = _fixed_rows(info, fmt)
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
    for row in rows:
        table.add_row(*row)
    Console().print(table)


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
