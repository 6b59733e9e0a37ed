"""Options shared by the commands, and the parsers behind them."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, overload

import click

from vsgen.cli._errors import (
    BadInput,
    RuntimeFailure,
    describe_os_error,
    in_cli_terms,
    user_errors,
)
from vsgen.fans import LAYOUTS, check_axes_pair, parse_axes, parse_integer, parse_shape
from vsgen.initializer import (
    DISTRIBUTIONS,
    FIXED,
    INITIALIZERS,
    KERAS_PRESETS,
    MODES,
    NO_TORCH_GAIN,
    NONLINEARITIES,
    PRESET_ALIASES,
    TORCH_PRESETS,
    RandomInitializer,
    VarianceScaling,
    from_config,
    get_preset,
    loads,
)
from vsgen.names import canonical, closest, describe_aliases, spelling
from vsgen.streams import DEFAULT_STREAM, STREAMS

#: Other names the command line accepts (compared as ``vsgen.names.spelling``:
#: any case, ``-`` for ``_``).
DISTRIBUTION_ALIASES = {"normal": "truncated_normal"}
LAYOUT_ALIASES = {"pytorch": "torch", "channels_last": "keras"}
#: One sentence for every --help: how names may be spelled.
SPELLING_NOTE = "Names ignore case and accept '-' for '_' (he-normal, FAN_AVG, fp16)."


class Count(click.ParamType):
    """A non-negative integer in ASCII digits (``vsgen.fans.parse_integer``)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        option = param.opts[0] if param is not None and param.opts else "value"
        try:
            return parse_integer(str(value), option)
        except ValueError:
            self.fail(f"{value!r} is not a non-negative integer (digits 0-9 only)", param, ctx)


class Name(click.ParamType):
    """One name among ``choices``, spelled as every name on the command line
    (:mod:`vsgen.names`: any case, ``-`` for ``_``, ``aliases``), converted to
    its canonical spelling.

    Declaring an option's choices this way is all it takes for the shell to
    complete its values and aliases (click's ``_VSGEN_COMPLETE``) and for a typo
    to get one line with the likeliest name (``did you mean he_normal?``), or,
    when none is close, the short list of names. ``choices`` and ``aliases``
    may be callables, so that a list that costs imports is made only when used.
    """

    def __init__(
        self,
        choices: Sequence[str] | Callable[[], Sequence[str]],
        aliases: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        metavar: str = "NAME",
        refused: Mapping[str, str] | None = None,
    ) -> None:
        self._choices = choices
        self._aliases = aliases
        # Real names that are not choices, with why: no "did you mean" for them.
        self._refused = {spelling(name): why for name, why in (refused or {}).items()}
        self.name = metavar.lower()
        self._metavar = metavar

    @property
    def choices(self) -> tuple[str, ...]:
        choices = self._choices() if callable(self._choices) else self._choices
        return tuple(choices)

    @property
    def aliases(self) -> dict[str, str]:
        aliases = self._aliases() if callable(self._aliases) else self._aliases
        return dict(aliases or {})

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self._metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> str:
        choices, aliases = self.choices, self.aliases
        try:
            return canonical(value, choices, aliases)
        except ValueError:
            pass
        option = param.opts[0] if param is not None and param.opts else "value"
        why = self._refused.get(spelling(str(value)))
        if why is not None:
            raise BadInput(f"{option}: {why}; use one of {', '.join(choices)}")
        guess = closest(str(value), [*choices, *aliases])
        if guess is not None:
            raise BadInput(f"{option}: unknown name {value!r}; did you mean {guess}?")
        command = f"{ctx.command_path} --help" if ctx is not None else "--help"
        raise BadInput(
            f"{option}: unknown name {value!r}; use one of {', '.join(choices)} "
            f"('{command}' lists the other spellings)"
            if aliases
            else f"{option}: unknown name {value!r}; use one of {', '.join(choices)}"
        )

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[Any]:
        """The names and aliases that ``incomplete`` begins (by spelling); an
        alias's help says what it names (zsh and fish show it)."""
        from click.shell_completion import CompletionItem

        start = spelling(incomplete)
        items = [CompletionItem(name) for name in self.choices if spelling(name).startswith(start)]
        items += [
            CompletionItem(alias, help=f"= {target}")
            for alias, target in self.aliases.items()
            if spelling(alias).startswith(start)
        ]
        return items


#: A real number as C or JSON writes it (compiled when first used: start-up).
_REAL = r"(?i:[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan))"


class Real(click.ParamType):
    """A real number written as in C or JSON: ASCII digits, no ``_`` separators."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        if not re.fullmatch(_REAL, text):
            self.fail(f"{value!r} is not a number (e.g. 2, 0.5 or 1e-3)", param, ctx)
        return float(text)


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
        message = in_cli_terms(str(error), {"shape": option})
        if not message.startswith(option):
            message = f"{option}: {message}"
        raise BadInput(message) from None


def parse_rows(value: str | None) -> tuple[int | None, int | None] | None:
    """``START:STOP``, either end may be left open (``100:``, ``:100``)."""
    if value is None:
        return None
    first, sep, last = value.partition(":")
    try:
        if not sep:
            raise ValueError
        start = parse_integer(first, "rows") if first.strip() else None
        stop = parse_integer(last, "rows") if last.strip() else None
    except ValueError:
        raise BadInput(
            f"--rows: invalid range {value!r}: expected START:STOP with digits 0-9, "
            "either end may be left out (e.g. 0:128, 100:, :100)"
        ) from None
    return start, stop


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    index, sep, count = value.partition("/")
    try:
        if not sep:
            raise ValueError
        return parse_integer(index, "shard"), parse_integer(count, "shard")
    except ValueError:
        raise BadInput(
            f"--shard: invalid shard {value!r}: expected K/N with digits 0-9, e.g. 0/4"
        ) from None


def read_config_text(source: str) -> str:
    from vsgen._limits import MAX_CONFIG_BYTES, open_document, read_text

    if source == "-":
        if sys.stdin is None:
            raise BadInput("--config -: standard input is closed; give --config FILE")
        with user_errors():
            text = read_text(sys.stdin.buffer, MAX_CONFIG_BYTES, "--config -: stdin")
        where = "stdin"
    else:
        try:
            # Binary and capped: `--config /dev/zero` must not read forever; a FIFO
            # is refused without waiting for a writer.
            with open_document(source, f"--config: {source}") as handle:
                text = read_text(handle, MAX_CONFIG_BYTES, f"--config: {source}")
        except FileNotFoundError:
            raise BadInput(f"--config: file not found: {source}") from None
        except IsADirectoryError:
            refuse_tensor_file(source)
            raise BadInput(f"--config: is a directory: {source}") from None
        except ValueError as error:
            refuse_tensor_file(source)
            raise BadInput(str(error)) from None
        except OSError as error:
            raise RuntimeFailure(f"--config: {describe_os_error(error)}") from None
        where = source
    if not text.strip():
        raise BadInput(f"--config: {where} is empty; expected a JSON object")
    return text


def recorded_tensors(path: str, command: str) -> dict[str, dict[str, Any]]:
    """The provenance records, by tensor name in the file's order, of the vsgen file
    ``path`` (read through the hardened reader, ``vsgen.formats.readers``);
    ``command`` (``--config-from``, ``describe``) starts the errors."""
    import os

    from vsgen import provenance
    from vsgen.formats.readers import open_file

    if "://" not in path and not os.path.exists(path):  # a URL: the reader says
        raise BadInput(f"{command}: file not found: {path}")
    try:
        tensor_file = open_file(path)
        records = provenance.parse_metadata(tensor_file.metadata, path)
        order = [name for name in tensor_file.names if name in records]
        return {name: records[name] for name in [*order, *records]}
    except ValueError as error:
        raise BadInput(f"{command}: {error}") from None
    except OSError as error:
        raise RuntimeFailure(f"{command}: {describe_os_error(error)}") from None


#: At most this many tensor names in a message.
_NAMES_SHOWN = 12


def listed_names(names: Collection[str]) -> str:
    """``a, b, c`` or ``a, b, ... and 188 more``."""
    shown = list(names)[:_NAMES_SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def pick_record(
    records: dict[str, dict[str, Any]], path: str, name: str | None, command: str
) -> tuple[str, dict[str, Any]]:
    """``(name, record)`` of tensor ``name`` (``--name``), or of the file's only tensor."""
    if name is None and len(records) != 1:
        raise BadInput(
            f"{command}: {path} holds {len(records)} tensors ({listed_names(records)}); "
            "choose one with --name"
        )
    if name is None:
        name = next(iter(records))
    if name not in records:
        raise BadInput(
            f"{command}: {path} records no tensor named {name!r}; it holds: {listed_names(records)}"
        )
    return name, records[name]


def refuse_with_file(path: str, given: Collection[str], what: str) -> None:
    """One line when options that describe an initializer come with a FILE,
    whose record says it all (``describe FILE``, ``config FILE``)."""
    if given:
        options = ", ".join(f"--{key.replace('_', '-')}" for key in given)
        raise BadInput(f"{path}: FILE {what}; drop {options}")


def refuse_tensor_file(source: str) -> None:
    """A tensor file given as ``--config`` (its bytes are not a JSON config): say
    what it is and how to use what it records. Returns if it is no tensor file."""
    if source == "-":
        return
    from vsgen.formats.readers import sniff

    try:
        fmt = sniff(source)
    except (ValueError, OSError):
        return
    if fmt == "npydir":  # any directory; only a store or a shard directory says more
        return
    raise BadInput(
        f"--config: {source} is a tensor file ({fmt}), not a JSON config; to use the "
        f"initializer it records: vsgen config {source} > config.json (vsgen describe "
        f"{source} shows it), or vsgen sample --config-from {source} to make it again"
    )


def dtype_type() -> Name:
    """``--dtype``: the output types and their aliases (``fp16``, ``bf16``, ...)."""
    from vsgen.dtypes import DTYPE_ALIASES, DTYPE_NAMES

    return Name(DTYPE_NAMES, DTYPE_ALIASES, metavar="DTYPE")


def format_type() -> Name:
    """``--format``: every format vsgen writes, and ``hdf5`` for h5."""

    def names() -> tuple[str, ...]:
        from vsgen.formats import registry

        return registry._NAMES

    def aliases() -> dict[str, str]:
        from vsgen.formats import registry

        return registry._ALIASES

    return Name(names, aliases, metavar="FORMAT")


def _preset_help() -> str:
    return (
        f"Keras presets (truncated normal or uniform, channels-last fans): "
        f"{', '.join(KERAS_PRESETS)}; PyTorch presets (torch.nn.init: untruncated "
        f"normal or uniform, (out, in, *kernel) fans; --mode, --a, --nonlinearity, --gain "
        f"give its arguments): {', '.join(TORCH_PRESETS)}; fixed parameters (Keras's "
        f"RandomNormal, TruncatedNormal, RandomUniform; --mean, --stddev, --minval, "
        f"--maxval): {', '.join(FIXED)}. Class names (HeNormal, KaimingNormal, "
        "RandomNormal) and PyTorch's function names (kaiming_normal_) work too."
    )


def _refuse_ignored(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        option = param.opts[0]
        raise BadInput(
            f"vsgen {ctx.info_name} does not use {option}: it changes none of the numbers "
            f"{ctx.info_name} works with (fans, stddev, bounds); drop {option}"
        )


def initializer_options(
    command: Callable[..., Any] | None = None, *, exclude: Collection[str] = ()
) -> Any:
    """The options every command shares to say which initializer is meant.

    ``exclude`` leaves out options a command would ignore (``describe`` and
    ``check`` have no ``seed`` or ``stream``): click then refuses them.
    """
    options = {
        "scale": click.option(
            "--scale", type=Real(), default=None, help="Scale factor, finite and > 0. [1.0]"
        ),
        "mode": click.option(
            "--mode",
            type=Name(MODES, metavar="MODE"),
            default=None,
            help=f"One of {', '.join(MODES)}. [fan_in]",
        ),
        "distribution": click.option(
            "--distribution",
            type=Name(DISTRIBUTIONS, DISTRIBUTION_ALIASES, metavar="DISTRIBUTION"),
            default=None,
            help=f"One of {', '.join(DISTRIBUTIONS)} (or "
            f"{describe_aliases(DISTRIBUTION_ALIASES)}). [truncated_normal]",
        ),
        "seed": click.option(
            "--seed",
            type=Count(),
            default=None,
            help="Non-negative integer seed; drawn (and reported) if omitted. One seed is one "
            "stream of numbers: use different seeds for different tensors.",
        ),
        "preset": click.option(
            "--preset",
            type=Name(tuple(INITIALIZERS), PRESET_ALIASES),
            default=None,
            help=_preset_help(),
        ),
        "config_source": click.option(
            "--config",
            "config_source",
            type=str,
            default=None,
            metavar="FILE|-",
            help="JSON config (plain or Keras serialized form); '-' reads stdin.",
        ),
        "stream": click.option(
            "--stream",
            type=Name(tuple(STREAMS), metavar="STREAM"),
            default=None,
            help=f"Random stream: {', '.join(STREAMS)} (keras = bit-identical to Keras 3 with "
            f"its numpy backend). [{DEFAULT_STREAM}]",
        ),
        "layout": click.option(
            "--layout",
            type=Name(LAYOUTS, LAYOUT_ALIASES, metavar="LAYOUT"),
            default=None,
            help="Fan convention: keras ((*kernel, in, out), channels-last) or torch "
            f"((out, in, *kernel)); or {describe_aliases(LAYOUT_ALIASES)}. [keras]",
        ),
        "in_axes": click.option(
            "--in-axes", type=str, default=None, help="Explicit fan-in axes, e.g. 0,1."
        ),
        "out_axes": click.option(
            "--out-axes", type=str, default=None, help="Explicit fan-out axes, e.g. 2."
        ),
        "mean": click.option(
            "--mean",
            type=Real(),
            default=None,
            help="random_normal, truncated_normal: the values' mean. [0.0]",
        ),
        "stddev": click.option(
            "--stddev",
            type=Real(),
            default=None,
            help="random_normal, truncated_normal: the normal's stddev, > 0 (before "
            "truncation, as Keras). [0.05]",
        ),
        "minval": click.option(
            "--minval",
            type=Real(),
            default=None,
            help="random_uniform: lower bound, inclusive. [-0.05]",
        ),
        "maxval": click.option(
            "--maxval",
            type=Real(),
            default=None,
            help="random_uniform: upper bound, exclusive. [0.05]",
        ),
        "a": click.option(
            "--a",
            "--negative-slope",
            "a",
            type=Real(),
            default=None,
            help="kaiming_*: torch's `a`, the negative slope of leaky_relu (sqrt(5) is "
            "nn.Linear's default). [0]",
        ),
        "nonlinearity": click.option(
            "--nonlinearity",
            type=Name(
                NONLINEARITIES,
                metavar="NONLINEARITY",
                refused={
                    name: f"torch.nn.init.calculate_gain has no gain for {name!r}"
                    for name in NO_TORCH_GAIN
                },
            ),
            default=None,
            help=f"kaiming_*: one of {', '.join(NONLINEARITIES)} (torch's calculate_gain). "
            "[leaky_relu]",
        ),
        "gain": click.option(
            "--gain",
            type=Real(),
            default=None,
            help="xavier_*: torch's gain, > 0. [1.0]",
        ),
    }

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for key, option in reversed(list(options.items())):
            if key in exclude:
                # Hidden, and refused with a reason rather than "no such option".
                option = click.option(
                    f"--{key.replace('_', '-')}",
                    key,
                    hidden=True,
                    expose_value=False,
                    callback=_refuse_ignored,
                )
            function = option(function)
        return function

    return decorate(command) if command is not None else decorate


#: Options that give an initializer's own arguments: Keras's fixed-parameter
#: initializers and PyTorch's init functions.
ARGUMENT_KEYS = ("mean", "stddev", "minval", "maxval", "a", "nonlinearity", "gain")
#: Each argument's option, for messages.
ARGUMENT_OPTIONS = {
    "mean": "--mean",
    "stddev": "--stddev",
    "minval": "--minval",
    "maxval": "--maxval",
    "a": "--a",
    "nonlinearity": "--nonlinearity",
    "gain": "--gain",
}

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
    *ARGUMENT_KEYS,
)


def pop_initializer_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The initializer options out of a command's arguments (None where not offered)."""
    return {key: kwargs.pop(key, None) for key in INITIALIZER_KEYS}


def _option(key: str) -> str:
    return ARGUMENT_OPTIONS.get(key, f"--{key.replace('_', '-')}")


def _takes(cls: type[RandomInitializer]) -> tuple[str, ...]:
    """The options (besides --seed, --stream) that ``cls`` takes."""
    if not cls.uses_fans:
        return tuple(getattr(cls, "_KERAS_DEFAULTS", ()))
    fans = ("layout", "in_axes", "out_axes")
    if cls is VarianceScaling:
        return ("scale", "mode", "distribution", *fans)
    torch_arguments = tuple(getattr(cls, "_TORCH_DEFAULTS", ()))
    return (*fans, *torch_arguments)


def _refuse_inapplicable(cls: type[RandomInitializer], given: list[str], what: str) -> None:
    """One line naming the options ``cls`` does not take, and those it does."""
    takes = _takes(cls)
    refused = [key for key in given if key not in takes]
    if not refused:
        return
    names = ", ".join(_option(key) for key in refused)
    verb = "does" if len(refused) == 1 else "do"
    arguments = [key for key in takes if key in ARGUMENT_KEYS or key == "mode"]
    if cls is VarianceScaling:
        hint = (
            "they are the arguments of --preset random_normal, truncated_normal (--mean, "
            "--stddev), random_uniform (--minval, --maxval) and of PyTorch's presets "
            "(kaiming_*: --mode, --a, --nonlinearity; xavier_*: --gain)"
        )
    elif not cls.uses_fans:
        hint = (
            f"it takes {', '.join(_option(key) for key in arguments)} and has no fans "
            "(no --scale, --mode, --distribution, --layout or axes)"
        )
    elif arguments:
        fixed = [key for key in ("scale", "mode", "distribution") if key not in takes]
        hint = (
            f"its {', '.join(fixed[:-1])} and {fixed[-1]} are torch's; it takes "
            f"{', '.join(_option(key) for key in arguments)}"
        )
    else:
        hint = "it has no arguments of its own"
    raise BadInput(f"{names} {verb} not apply to {what}; {hint}")


def build_initializer(
    options: dict[str, Any], *, layout_for_job: bool = False
) -> RandomInitializer:
    """Combine --preset / --config / explicit options into one initializer.

    Explicit options override a --config file; --preset fixes what its class
    fixes (a Keras preset: scale, mode and distribution; a PyTorch preset:
    scale and distribution, its arguments given by --mode, --a, --nonlinearity,
    --gain; a fixed-parameter initializer takes --mean/--stddev or
    --minval/--maxval and nothing about fans), so combining it with options it
    does not take, or with --config, is an error. ``layout_for_job``: --layout
    is the whole model's (``sample --spec/--like``), so an initializer without
    fans leaves it to the other tensors instead of refusing it.
    """
    own_keys = ("scale", "mode", "distribution", "layout", "in_axes", *ARGUMENT_KEYS)
    given = [key for key in own_keys if options.get(key) is not None]
    if layout_for_job and options.get("layout") is not None:
        preset = options.get("preset")
        try:
            fanless = preset is not None and not get_preset(preset).uses_fans
        except ValueError:
            fanless = False  # reported below
        if fanless:
            given.remove("layout")
            options = {**options, "layout": None}
    preset_cls: type[RandomInitializer] | None = None
    if options["preset"] is not None:
        try:
            preset_cls = get_preset(options["preset"])
        except ValueError:
            preset_cls = None  # reported below, after the combinations
        fixed_by_preset = [key for key in ("scale", "mode", "distribution") if key in given]
        keras_preset = preset_cls is None or (
            preset_cls.uses_fans and not getattr(preset_cls, "_TORCH_DEFAULTS", None)
        )
        if fixed_by_preset and keras_preset:
            names = ", ".join(f"--{key}" for key in fixed_by_preset)
            raise BadInput(
                f"--preset fixes scale, mode and distribution; do not combine it with {names}"
            )
        if options["config_source"] is not None:
            raise BadInput("--preset and --config both say which initializer to use; give one")
    config: dict[str, Any] = {}
    cls: type[RandomInitializer] = VarianceScaling
    what = "VarianceScaling (no --preset)"
    if options["config_source"] is not None:
        source = options["config_source"]
        try:
            base = loads(read_config_text(source))
        except (ValueError, TypeError) as error:
            # About the file's fields, not the options: no option names here.
            refuse_tensor_file(source)
            where = "stdin" if source == "-" else source
            raise BadInput(f"--config {where}: {error}") from None
        config = base.get_config()
        if getattr(base, "seed_was_drawn", False):
            config["seed"] = None
        if "preset" in config:  # PyTorch presets and fixed parameters say what they are
            cls = type(base)
            what = f"the {cls.__name__} of --config"
    elif options["preset"] is not None:
        with user_errors():
            cls = get_preset(options["preset"])
        what = f"--preset {options['preset']}"
    _refuse_inapplicable(cls, given, what)
    with user_errors(ARGUMENT_OPTIONS):
        config.update({key: options[key] for key in given if key not in ("layout", "in_axes")})
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
        if "preset" in config:
            return from_config(config)
        return cls.from_config(config)
