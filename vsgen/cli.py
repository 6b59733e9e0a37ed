"""The ``vsgen`` command line: parse, call the library, print.

The only module that knows about terminals and exit codes: 0 success,
1 runtime failure (I/O, disk full, interrupted), 2 usage error. Every error
is one line on stderr, never a traceback (set ``VSGEN_DEBUG=1`` to see one).
Data goes to stdout; progress, ``seed: N`` and warnings go to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click
from click.exceptions import NoArgsIsHelpError

from vsgen._version import __version__
from vsgen.dtypes import DTYPE_NAMES
from vsgen.fans import LAYOUTS, parse_axes, parse_shape
from vsgen.initializer import (
    DISTRIBUTIONS,
    MODES,
    PRESETS,
    SamplePlan,
    VarianceScaling,
    get_preset,
    loads,
    shard_rows,
)
from vsgen.streams import DEFAULT_STREAM, STREAMS

#: Show a progress bar only for jobs this large (values), and only on a TTY.
PROGRESS_MIN_VALUES = 1 << 24


class RuntimeFailure(click.ClickException):
    """A runtime failure (I/O, disk full, interrupted): exit code 1, one line."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        _say(f"Error: {_one_line(self.format_message())}")


class BadInput(RuntimeFailure):
    """Bad input from the user: exit code 2, one line."""

    exit_code = 2


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's errors into one-line CLI errors at one boundary.

    ValueError/TypeError mean the input was wrong (exit 2); OSError is a
    runtime failure (exit 1).
    """
    try:
        yield
    except (ValueError, TypeError) as error:
        raise BadInput(str(error)) from error
    except BrokenPipeError:
        raise
    except OSError as error:
        raise RuntimeFailure(_describe_os_error(error)) from error


def _describe_os_error(error: OSError) -> str:
    if error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    # OSError(errno, message) prints as "[Errno N] message"; the message is enough.
    return error.strerror or str(error) or type(error).__name__


class VsgenGroup(click.Group):
    """A group whose ``main`` prints every error as one line with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        # SIGTERM unwinds like Ctrl-C for the whole command, so that a signal
        # that arrives while an output is being created still removes its
        # temporary file. Both are reported here, before click's own handler
        # prints an empty line to stderr and turns them into click.Abort.
        try:
            with _terminate_as_interrupt():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            raise RuntimeFailure("interrupted") from None

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> NoReturn:
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except NoArgsIsHelpError as error:  # a bare `vsgen`: the help, readable, as click does
            error.show()
            sys.exit(2)
        except click.UsageError as error:
            hint = ""
            if error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            _say(f"Error: {_one_line(error.format_message())}{hint}")
            sys.exit(2)
        except click.ClickException as error:
            _say(f"Error: {_one_line(error.format_message())}")
            sys.exit(error.exit_code)
        except click.Abort:
            _say("Error: interrupted")
            sys.exit(1)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(1)
        except OSError as error:  # printing failed, e.g. `vsgen config > /dev/full`
            _say(f"Error: cannot write the output: {_describe_os_error(error)}")
            sys.exit(1)
        except Exception as error:  # a bug: still one line, unless debugging
            if os.environ.get("VSGEN_DEBUG"):
                raise
            _say(
                f"Error: internal error: {type(error).__name__}: {_one_line(str(error))} "
                "(set VSGEN_DEBUG=1 for a traceback)"
            )
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _say(line: str) -> None:
    """One line to stderr, best effort: a full or closed stderr never fails a run."""
    with contextlib.suppress(OSError, ValueError):
        click.echo(line, err=True)


def _refuse_foreign_directory(output: str, fmt: str, force: bool) -> None:
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


def _stdout_is_terminal() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def _binary_stdout() -> Any:
    """Standard output as a binary stream whose ``write`` writes all or raises.

    With ``PYTHONUNBUFFERED`` (or ``python -u``) ``sys.stdout.buffer`` is a raw
    ``FileIO``, whose ``write`` may write only part of the data (a reader that
    went away, a non-blocking pipe) and return a count that writers do not
    check; a ``BufferedWriter`` retries until everything is written.
    """
    if sys.stdout is None:
        raise OSError(errno.EBADF, "standard output is closed; use -o FILE")
    stream = sys.stdout.buffer
    if isinstance(stream, io.RawIOBase):
        return io.BufferedWriter(io.FileIO(stream.fileno(), "wb", closefd=False))
    return stream


def _silence_stdout() -> None:
    # The reader went away: point stdout at /dev/null so the interpreter's final
    # flush does not print "Exception ignored ... BrokenPipeError".
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# --- option parsing -----------------------------------------------------------------


def _parse_shape_option(value: str | None, option: str = "--shape") -> tuple[int, ...] | None:
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


def _parse_rows(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    first, sep, last = value.partition(":")
    if not sep or not _is_count(first) or not _is_count(last):
        raise BadInput(f"--rows: invalid range {value!r}: expected START:STOP, e.g. 0:128")
    return int(first), int(last)


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    index, sep, count = value.partition("/")
    if not sep or not _is_count(index) or not _is_count(count):
        raise BadInput(f"--shard: invalid shard {value!r}: expected K/N, e.g. 0/4")
    return int(index), int(count)


def _read_config_text(source: str) -> str:
    if source == "-":
        if sys.stdin is None:
            raise BadInput("--config -: standard input is closed; give --config FILE")
        text = sys.stdin.read()
        where = "stdin"
    else:
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise BadInput(f"--config: file not found: {source}") from None
        except IsADirectoryError:
            raise BadInput(f"--config: is a directory: {source}") from None
        except UnicodeDecodeError:
            raise BadInput(f"--config: {source} is not a UTF-8 text file") from None
        except OSError as error:
            raise RuntimeFailure(f"--config: {_describe_os_error(error)}") from None
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


_INITIALIZER_KEYS = (
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


def _pop_initializer_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: kwargs.pop(key) for key in _INITIALIZER_KEYS}


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
            base = loads(_read_config_text(options["config_source"]))
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
        if (in_axes is None) != (out_axes is None):
            raise BadInput("--in-axes and --out-axes must be given together")
        if in_axes is not None:
            config["input_axes"] = list(parse_axes(in_axes, "--in-axes"))
            config["output_axes"] = list(parse_axes(out_axes, "--out-axes"))
        if preset_cls is VarianceScaling:
            return VarianceScaling.from_config(config)
        return preset_cls.from_config(config)


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _announce_seed(initializer: VarianceScaling) -> None:
    if initializer.seed_was_drawn:
        _say(f"seed: {initializer.seed}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C, so temporary files are removed."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. some test runners)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM: record them instead of raising, for a short step."""
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        received.append(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. `vsgen ... &`
                previous[signum] = signal.signal(signum, hold)
    except ValueError:  # not the main thread (e.g. some test runners)
        yield received
        return
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _open_output(*args: Any, **kwargs: Any) -> Any:
    """``writers.open_output`` with Ctrl-C and SIGTERM held until the output exists.

    A signal landing while the temporary file is being created (between
    open(2) and the code that registers it for removal, or during h5py's
    first import) could otherwise leave the file behind; held, it is acted
    on as soon as the Output can remove its temporary itself.
    """
    from vsgen import writers

    with _signals_held() as received:
        target = writers.open_output(*args, **kwargs)
    if received:
        target.abort()
        raise KeyboardInterrupt
    return target


@contextlib.contextmanager
def _progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
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
    with Progress(*columns, console=_err_console(), transient=True) as progress:
        task = progress.add_task(label, total=total, rate="")

        def advance(values: int) -> None:
            speed = progress.tasks[0].speed
            rate = f"{speed / 1e6:,.0f} M values/s" if speed else ""
            progress.update(task, advance=values, rate=rate)

        yield advance


# --- commands -----------------------------------------------------------------------


@click.group(cls=VsgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vsgen")
def cli() -> None:
    """Generate variance-scaling (Glorot/He/LeCun) weights: fast, reproducible,
    Keras-compatible.

    \b
    Examples:
      vsgen sample --shape 512,256 --seed 0 -o w.npy
      vsgen describe --shape 3,3,64,128 --preset he_normal
      vsgen config --preset glorot_uniform --seed 7 --keras
    """


@cli.command()
@initializer_options
@click.option("--shape", type=str, default=None, help="Tensor shape, e.g. 512,256 or 3x3x64x128.")
@click.option(
    "--dtype",
    type=str,
    default="float32",
    show_default=True,
    help=f"Output type: {', '.join(DTYPE_NAMES)}.",
)
@click.option(
    "-o",
    "--output",
    type=str,
    required=True,
    metavar="FILE|-",
    help="Output file (.npy, .h5, .safetensors, .raw) or '-' for stdout.",
)
@click.option(
    "--format",
    "fmt",
    type=str,
    default=None,
    help="npy, h5, safetensors or raw (default: from the suffix; npy on stdout).",
)
@click.option("--name", type=str, default="weight", show_default=True, help="Tensor name.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--threads", type=int, default=None, help="Sampling threads [usable CPUs].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--rows", type=str, default=None, help="Only rows START:STOP of axis 0.")
@click.option("--shard", type=str, default=None, help="Only shard K/N of axis 0 (0-based K).")
@click.option(
    "--fan-shape",
    type=str,
    default=None,
    help="Compute fans from this (full) shape while sampling --shape.",
)
@click.option(
    "--config-from",
    type=str,
    default=None,
    metavar="FILE",
    help="Reproduce the tensor recorded in a vsgen .h5/.safetensors file.",
)
@click.option(
    "--spec",
    type=str,
    default=None,
    metavar="FILE",
    help="Many named tensors from a .toml/.json model spec (see docs/spec-files.md).",
)
@click.option(
    "--like",
    type=str,
    default=None,
    metavar="FILE",
    help="Names, shapes and dtypes from a .safetensors/.h5 checkpoint's header.",
)
def sample(**kwargs: Any) -> None:
    """Sample a tensor and write it to a file or stdout.

    Output is written to a temporary file and renamed into place when complete;
    an existing file is only replaced with --force.

    \b
    Examples:
      vsgen sample --shape 512,256 --seed 0 -o w.npy
      vsgen sample --shape 3,3,64,128 --preset he_normal --seed 1 -o conv.h5
      vsgen sample --shape 1024,1024 --dtype bfloat16 --seed 2 -o w.safetensors
      vsgen sample --shape 4096,4096 --seed 3 --shard 1/4 -o part1.npy
      vsgen sample --shape 64,64 --seed 0 --stream keras -o - > w.npy
      vsgen config --preset lecun_normal --seed 5 | vsgen sample --config - --shape 128,64 -o w2.npy
    """
    options = _pop_initializer_options(kwargs)
    if kwargs["spec"] is not None or kwargs["like"] is not None:
        _sample_model(kwargs, options)
        return
    output: str = kwargs["output"]
    threads = kwargs["threads"]
    if threads is not None and threads < 1:
        raise BadInput(f"--threads must be >= 1. Received: --threads={threads}")
    rows = _parse_rows(kwargs["rows"])
    shard = _parse_shard(kwargs["shard"])
    if rows is not None and shard is not None:
        raise BadInput("--rows and --shard both select rows; give one")
    fan_shape = _parse_shape_option(kwargs["fan_shape"], "--fan-shape")
    name: str = kwargs["name"]
    dtype = kwargs["dtype"]

    if kwargs["config_from"] is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        if kwargs["shape"] is not None:
            given.append("--shape")
        if fan_shape is not None:
            given.append("--fan-shape")
        if given:
            raise BadInput(f"--config-from reproduces a recorded tensor; drop {', '.join(given)}")
        from click.core import ParameterSource

        source = click.get_current_context().get_parameter_source
        name_given = source("name") is ParameterSource.COMMANDLINE
        with _malformed_record(kwargs["config_from"]):
            initializer, shape, recorded, name = _recorded_tensor(
                kwargs["config_from"], name if name_given else None
            )
            fan_shape = tuple(recorded["fan_shape"]) if recorded.get("fan_shape") else None
            if rows is None and shard is None and recorded.get("rows"):
                first, last = recorded["rows"]
                rows = (int(first), int(last))
            if source("dtype") is not ParameterSource.COMMANDLINE:
                dtype = recorded.get("dtype", dtype)
    else:
        shape = _parse_shape_option(kwargs["shape"])
        if shape is None:
            raise BadInput("--shape is required, e.g. --shape 512,256")
        initializer = build_initializer(options)

    from vsgen import provenance, writers

    with user_errors():
        if shard is not None:
            rows = shard_rows(shape, *shard)
        plan = initializer.plan(shape, dtype, rows=rows, fan_shape=fan_shape)
        fmt = writers.resolve_format(output, kwargs["fmt"])
        if fmt == "npydir" and kwargs["fmt"] is None:
            # Only an explicit --format npydir may write (or, with --force,
            # replace) a whole directory; an existing one may hold other data.
            example = os.path.join(output, f"{name}.npy")
            raise BadInput(f"-o {output!r} names a directory; give a file name, e.g. {example}")
        _refuse_foreign_directory(output, fmt, kwargs["force"])
        if output == "-" and _stdout_is_terminal():
            raise BadInput(
                "refusing to write binary data to a terminal; redirect stdout or use -o FILE"
            )
        record = provenance.tensor_record(initializer, plan, fan_shape)
        info = writers.TensorInfo(name=name, shape=plan.shape, dtype=plan.draw.dtype)
        target = _open_output(
            output,
            fmt,
            [info],
            metadata=provenance.file_metadata({name: record}),
            force=kwargs["force"],
            stdout=_binary_stdout() if output == "-" else None,
        )
    _announce_seed(initializer)
    _write_plans(target, [plan], threads, kwargs["quiet"])


def _write_plans(target: Any, plans: list[SamplePlan], threads: int | None, quiet: bool) -> None:
    """Stream every plan's chunks into the opened output, then commit atomically.

    Without --threads, sampling leaves one CPU to the writer: the kernel's copy
    into the page cache needs a core too, and measured on 2 CPUs, 1 sampling
    thread + the writer streamed 1 GiB faster than 2 sampling threads + the
    writer (about 590 vs 450 M values/s). The bytes do not depend on it.
    """
    from vsgen import writers
    from vsgen.streams import usable_cpus

    if threads is None:
        threads = max(1, usable_cpus() - 1)

    def chunks() -> Iterator[Any]:
        for plan in plans:
            yield from plan.chunks(threads=threads)

    total = sum(plan.size for plan in plans)
    with _terminate_as_interrupt(), user_errors(), target:
        with _progress(total, "sampling", quiet) as advance:
            writers.write_chunks(target, chunks(), on_progress=advance)
        target.commit()


#: Options that select one tensor; whole-model sampling refuses them.
_SINGLE_TENSOR_OPTIONS = ("shape", "rows", "shard", "fan_shape", "config_from", "name")
_DEFAULT_INIT_OPTIONS = ("scale", "mode", "distribution", "preset", "config_source", "in_axes")


def _sample_model(kwargs: dict[str, Any], options: dict[str, Any]) -> None:
    """``sample --spec/--like``: every tensor of a model into one output.

    --seed is the global seed, --dtype/--layout/--stream override the spec's
    defaults, and the initializer options give the default for tensors of
    rank >= 2 that no rule covers.
    """
    from click.core import ParameterSource

    from vsgen import modelspec, writers

    context = click.get_current_context()

    def given(key: str) -> bool:
        return context.get_parameter_source(key) not in (None, ParameterSource.DEFAULT)

    conflicts = [f"--{key.replace('_', '-')}" for key in _SINGLE_TENSOR_OPTIONS if given(key)]
    if conflicts:
        raise BadInput(f"--spec/--like sample whole models; drop {', '.join(conflicts)}")
    threads = kwargs["threads"]
    if threads is not None and threads < 1:
        raise BadInput(f"--threads must be >= 1. Received: --threads={threads}")
    default_init = None
    if any(options[key] is not None for key in _DEFAULT_INIT_OPTIONS):
        # Seeds are derived per tensor; 0 only avoids drawing one here.
        initializer = build_initializer({**options, "seed": 0})
        default_init = modelspec.init_from_initializer(initializer)
    output: str = kwargs["output"]
    with user_errors():
        spec = modelspec.load_spec(kwargs["spec"]) if kwargs["spec"] is not None else None
        like = modelspec.like_tensors(kwargs["like"]) if kwargs["like"] is not None else None
        job = modelspec.build_job(
            spec,
            like,
            seed=options["seed"],
            dtype=kwargs["dtype"] if given("dtype") else None,
            layout=options["layout"],
            stream=options["stream"],
            init=default_init,
        )
        fmt = writers.resolve_format(output, kwargs["fmt"], len(job.infos))
        _refuse_foreign_directory(output, fmt, kwargs["force"])
        if output == "-" and _stdout_is_terminal():
            raise BadInput(
                "refusing to write binary data to a terminal; redirect stdout or use -o FILE"
            )
        target = _open_output(
            output,
            fmt,
            job.infos,
            metadata=job.metadata(),
            force=kwargs["force"],
            stdout=_binary_stdout() if output == "-" else None,
        )
    if job.seed_was_drawn:
        _say(f"seed: {job.seed}")
    _write_plans(target, job.plans, threads, kwargs["quiet"])  # type: ignore[arg-type]


@contextlib.contextmanager
def _malformed_record(path: str) -> Iterator[None]:
    """A vsgen record whose fields have the wrong shape is bad input (exit 2)."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        detail = f"missing {error}" if isinstance(error, KeyError) else _one_line(str(error))
        message = f"--config-from: the vsgen record in {path} is malformed: {detail}"
        raise BadInput(message) from None


def _recorded_tensor(
    path: str, name: str | None = None
) -> tuple[VarianceScaling, tuple[int, ...], dict[str, Any], str]:
    """The initializer, full shape, record and name of tensor ``name`` (or the only one)."""
    from vsgen import provenance, writers

    with user_errors():
        if not os.path.exists(path):
            raise ValueError(f"--config-from: file not found: {path}")
        records = provenance.parse_metadata(writers.read_metadata(path))
        if name is None and len(records) != 1:
            raise ValueError(
                f"--config-from: {path} holds {len(records)} tensors "
                f"({', '.join(records)}); choose one with --name"
            )
        if name is None:
            name = next(iter(records))
        if name not in records:
            raise ValueError(
                f"--config-from: {path} records no tensor named {name!r}; it holds: "
                f"{', '.join(records)}"
            )
        record = records[name]
        initializer = VarianceScaling.from_config(record["config"])
        return initializer, tuple(record["full_shape"]), record, name


@cli.command()
@initializer_options
@click.option("--shape", type=str, required=True, help="Tensor shape, e.g. 3,3,64,128.")
@click.option("--fan-shape", type=str, default=None, help="Compute fans from this shape instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(**kwargs: Any) -> None:
    """Show what a configuration means for a shape: fans, n, variance, stddev,
    the truncated normal's pre-truncation stddev and bounds, or the uniform limit.

    \b
    Examples:
      vsgen describe --shape 3,3,64,128 --preset he_normal
      vsgen describe --shape 512,256 --mode fan_avg --distribution uniform --json
    """
    options = _pop_initializer_options(kwargs)
    shape = _parse_shape_option(kwargs["shape"])
    fan_shape = _parse_shape_option(kwargs["fan_shape"], "--fan-shape")
    initializer = build_initializer(options)
    with user_errors():
        scaling = initializer.scaling(fan_shape if fan_shape is not None else shape)
    info = scaling.as_dict()
    info["shape"] = list(shape or ())
    info["fan_shape"] = list(fan_shape) if fan_shape is not None else None
    info["layout"] = initializer.layout
    info["input_axes"] = list(initializer.input_axes) if initializer.input_axes else None
    info["output_axes"] = list(initializer.output_axes) if initializer.output_axes else None
    info["stream"] = initializer.stream_label
    if kwargs["as_json"]:
        click.echo(json.dumps(info, indent=2))
        return
    _print_description(info)


def _print_description(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"VarianceScaling for shape {tuple(info['shape'])}", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("meaning")

    def fmt(value: float) -> str:
        return f"{value:.9g}"

    rows = [
        ("fan_in", str(info["fan_in"]), "input units" + _fan_note(info)),
        ("fan_out", str(info["fan_out"]), "output units"),
        ("n", fmt(info["n"]), f"max(1, {info['mode']})"),
        ("scale", fmt(info["scale"]), ""),
        ("variance", fmt(info["variance"]), "scale / n"),
        ("stddev", fmt(info["stddev"]), "sqrt(variance): the samples' target std"),
    ]
    if info["distribution"] == "truncated_normal":
        rows.append(
            (
                "pre_truncation_std",
                fmt(info["pre_truncation_std"]),
                "s = stddev / 0.87962566103423978",
            )
        )
        rows.append(("bounds", f"±{fmt(info['bound'])}", "[-2s, 2s]"))
    elif info["distribution"] == "uniform":
        rows.append(("limit", fmt(info["limit"]), "sqrt(3 * variance); U[-limit, limit)"))
    rows.append(("distribution", info["distribution"], ""))
    rows.append(("stream", info["stream"], ""))
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _fan_note(info: dict[str, Any]) -> str:
    if info["input_axes"] is not None:
        return f" (axes {info['input_axes']} / {info['output_axes']})"
    note = f" ({info['layout']} layout"
    if info["fan_shape"] is not None:
        note += f", from fan shape {tuple(info['fan_shape'])}"
    return note + ")"


@cli.command()
@initializer_options
@click.option("--keras", "keras_form", is_flag=True, help="Keras serialized form.")
def config(**kwargs: Any) -> None:
    """Print the initializer's JSON config (feed it back with --config FILE|-).

    Without --seed the config's seed is null: each use draws and reports one.

    \b
    Examples:
      vsgen config --preset he_normal --seed 0
      vsgen config --scale 2 --distribution uniform --seed 1 --keras
      vsgen config --preset lecun_normal --seed 5 > lecun.json
    """
    options = _pop_initializer_options(kwargs)
    initializer = build_initializer(options)
    with user_errors():
        document = initializer.keras_config() if kwargs["keras_form"] else initializer.get_config()
    if initializer.seed_was_drawn:
        target = document["config"] if kwargs["keras_form"] else document
        target["seed"] = None
    click.echo(json.dumps(document, indent=2))


#: Options that say what distribution to expect (the seed and stream do not matter).
_EXPECTATION_KEYS = (
    "scale", "mode", "distribution", "preset", "config_source", "layout", "in_axes", "out_axes"
)


@cli.command()
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

    options = _pop_initializer_options(kwargs)
    path: str = kwargs["file"]
    fan_shape = _parse_shape_option(kwargs["fan_shape"], "--fan-shape")
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


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``vsgen`` console script."""
    cli.main(args=argv, prog_name="vsgen")
