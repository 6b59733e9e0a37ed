"""Options shared by the commands, and the parsers behind them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, overload

import click

from vsgen.cli._errors import BadInput, RuntimeFailure, describe_os_error, user_errors
from vsgen.fans import LAYOUTS, check_axes_pair, parse_axes, parse_shape
from vsgen.initializer import (
    DISTRIBUTIONS,
    MODES,
    PRESETS,
    VarianceScaling,
    get_preset,
    loads,
)
from vsgen.streams import DEFAULT_STREAM, STREAMS


@overload
def parse_shape_option(value: str, option: str = ...) -> tuple[int, ...]: ...
@overload
def parse_shape_option(value: None, option: str = ...) -> None: ...
@overload
def parse_shape_option(value: str | None, option: str = ...) -> tuple[int, ...] | None: ...
def parse_shape_option(value: str | None, option: str = "--shape") -> tuple[int, ...] | None:
    """``--shape``-like option text as a shape; None stays None."""
    if value is None:
        return None
    try:
        return parse_shape(value)
    except ValueError as error:
        raise BadInput(f"{option}: {error}") from None


def _is_count(text: str) -> bool:
    # ASCII only: str.isdigit() also accepts '²', which int() then refuses.
    text = text.strip()
    return text.isascii() and text.isdigit()


def parse_rows(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    first, sep, last = value.partition(":")
    if not sep or not _is_count(first) or not _is_count(last):
        raise BadInput(f"--rows: invalid range {value!r}: expected START:STOP, e.g. 0:128")
    return int(first), int(last)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    index, sep, count = value.partition("/")
    if not sep or not _is_count(index) or not _is_count(count):
        raise BadInput(f"--shard: invalid shard {value!r}: expected K/N, e.g. 0/4")
    return int(index), int(count)


def read_config_text(source: str) -> str:
    from vsgen.formats.limits import MAX_CONFIG_BYTES, read_text

    if source == "-":
        if sys.stdin is None:
            raise BadInput("--config -: standard input is closed; give --config FILE")
        with user_errors():
            text = read_text(sys.stdin.buffer, MAX_CONFIG_BYTES, "--config -: stdin")
        where = "stdin"
    else:
        try:
            # Binary and capped: `--config /dev/zero` must not read forever.
            with open(source, "rb") as handle:
                text = read_text(handle, MAX_CONFIG_BYTES, f"--config: {source}")
        except FileNotFoundError:
            raise BadInput(f"--config: file not found: {source}") from None
        except IsADirectoryError:
            raise BadInput(f"--config: is a directory: {source}") from None
        except ValueError as error:
            raise BadInput(str(error)) from None
        except OSError as error:
            raise RuntimeFailure(f"--config: {describe_os_error(error)}") from None
        where = source
    if not text.strip():
        raise BadInput(f"--config: {where} is empty; expected a JSON object")
    return text


def initializer_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command shares to say which initializer is meant."""
    options = [
        click.option("--scale", type=float, default=None, help="Scale factor (> 0). [1.0]"),
        click.option("--mode", type=str, default=None, help=f"One of {', '.join(MODES)}. [fan_in]"),
        click.option(
            "--distribution",
            type=str,
            default=None,
            help=f"One of {', '.join(DISTRIBUTIONS)} ('normal' = truncated_normal). "
            "[truncated_normal]",
        ),
        click.option(
            "--seed",
            type=int,
            default=None,
            help="Non-negative integer seed; drawn (and reported) if omitted.",
        ),
        click.option(
            "--preset",
            type=str,
            default=None,
            help=f"Keras preset: {', '.join(PRESETS)}.",
        ),
        click.option(
            "--config",
            "config_source",
            type=str,
            default=None,
            metavar="FILE|-",
            help="JSON config (plain or Keras serialized form); '-' reads stdin.",
        ),
        click.option(
            "--stream",
            type=str,
            default=None,
            help=f"Random stream: {', '.join(STREAMS)}. [{DEFAULT_STREAM}]",
        ),
        click.option(
            "--layout",
            type=str,
            default=None,
            help=f"Fan convention: {', '.join(LAYOUTS)} (torch = (out, in, *kernel)). [keras]",
        ),
        click.option("--in-axes", type=str, default=None, help="Explicit fan-in axes, e.g. 0,1."),
        click.option("--out-axes", type=str, default=None, help="Explicit fan-out axes, e.g. 2."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


INITIALIZER_KEYS = (
    "scale",
    "mode",
    "distribution",
    "seed",
    "preset",
    "config_source",
    "stream",
    "layout",
    "in_axes",
    "out_axes",
)


def pop_initializer_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: kwargs.pop(key) for key in INITIALIZER_KEYS}


def build_initializer(options: dict[str, Any]) -> VarianceScaling:
    """Combine --preset / --config / explicit options into one initializer.

    Explicit options override a --config file; --preset fixes scale, mode and
    distribution, so combining it with those (or with --config) is an error.
    """
    explicit = {
        key: options[key] for key in ("scale", "mode", "distribution") if options[key] is not None
    }
    if options["preset"] is not None and explicit:
        names = ", ".join(f"--{key}" for key in explicit)
        raise BadInput(
            f"--preset fixes scale, mode and distribution; do not combine it with {names}"
        )
    if options["preset"] is not None and options["config_source"] is not None:
        raise BadInput("--preset and --config both say which initializer to use; give one")
    with user_errors():
        if options["config_source"] is not None:
            base = loads(read_config_text(options["config_source"]))
            config = base.get_config()
            if getattr(base, "seed_was_drawn", False):
                config["seed"] = None
            preset_cls: type[VarianceScaling] = VarianceScaling
        elif options["preset"] is not None:
            preset_cls = get_preset(options["preset"])
            config = {}
        else:
            preset_cls = VarianceScaling
            config = {}
        config.update(explicit)
        for key in ("seed", "stream", "layout"):
            if options[key] is not None:
                config[key] = options[key]
        in_axes, out_axes = options["in_axes"], options["out_axes"]
        try:
            check_axes_pair(in_axes, out_axes)
        except ValueError:
            raise BadInput("--in-axes and --out-axes must be given together") from None
        if in_axes is not None:
            config["input_axes"] = list(parse_axes(in_axes, "--in-axes"))
            config["output_axes"] = list(parse_axes(out_axes, "--out-axes"))
        if preset_cls is VarianceScaling:
            return VarianceScaling.from_config(config)
        return preset_cls.from_config(config)
