"""``vsgen sample``: one tensor, a slice of one, or a whole model into a file."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from vsgen import provenance
from vsgen._limits import MAX_THREADS
from vsgen.cli._errors import (
    BadInput,
    binary_stdout,
    one_line,
    say,
    stdout_is_terminal,
    user_errors,
)
from vsgen.cli._options import (
    SPELLING_NOTE,
    Count,
    Name,
    Real,
    build_initializer,
    dtype_type,
    format_type,
    initializer_options,
    parse_rows,
    parse_shape_option,
    parse_shard,
    pick_record,
    pop_initializer_options,
    recorded_tensors,
)
from vsgen.cli._output import PLAN_MAX_ROWS, open_output, write_parallel, write_plans
from vsgen.dtypes import DTYPE_ALIASES, DTYPE_NAMES
from vsgen.fans import looks_channels_last, shard_rows
from vsgen.initializer import RandomInitializer
from vsgen.names import describe_aliases
from vsgen.streams import WRITER_CPUS, default_threads

if TYPE_CHECKING:
    from vsgen.formats import Output
    from vsgen.job import ModelJob

#: Options that select one tensor; whole-model sampling refuses them.
_SINGLE_TENSOR_OPTIONS = ("shape", "rows", "shard", "fan_shape", "config_from", "name")
#: Options that give whole-model sampling its default initializer.
_DEFAULT_INIT_OPTIONS = ("scale", "mode", "distribution", "preset", "config_source", "in_axes")


def _conventions() -> Any:
    # Imported when completing or checking --convention, not at start-up.
    from vsgen.conventions import CONVENTIONS

    return CONVENTIONS


@click.command(epilog=SPELLING_NOTE)
@initializer_options
@click.option("--shape", type=str, default=None, help="Tensor shape, e.g. 512,256 or 3x3x64x128.")
@click.option(
    "--dtype",
    type=dtype_type(),
    default="float32",
    show_default=True,
    help=f"Output type: {', '.join(DTYPE_NAMES)} (or {describe_aliases(DTYPE_ALIASES)}).",
)
@click.option(
    "-o",
    "--output",
    type=str,
    default=None,
    metavar="FILE|-",
    help="Output file (.npy, .h5, .safetensors, .raw), .zarr store, directory, or '-' (stdout).",
)
@click.option(
    "--format",
    "fmt",
    type=format_type(),
    default=None,
    help="npy, h5 (hdf5), safetensors, raw, npydir, zarr or safetensors-sharded "
    "(default: from the suffix; npy on stdout).",
)
@click.option(
    "--name",
    type=str,
    default="weight",
    show_default=True,
    help="Tensor name in .h5/.safetensors (a .npy or raw file holds one unnamed tensor).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing output: a regular file, or (npydir) a directory of .npy files.",
)
@click.option(
    "--threads",
    type=Count(),
    default=None,
    help=f"Sampling threads [usable CPUs minus {WRITER_CPUS} for the writer, at least 1: "
    f"{default_threads(writing=True)} here]. The bytes never depend on it.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--rows",
    type=str,
    default=None,
    help="Only rows START:STOP of axis 0; either end may be left out (100:, :100).",
)
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
    help="Reproduce the tensor recorded in a vsgen .h5/.safetensors/.zarr file or shard dir.",
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
    help="Names, shapes and dtypes of a .safetensors/.h5/.zarr checkpoint or shard directory "
    "(integer tensors copied); or a Hugging Face config.json (or its directory, without "
    "weights): the model transformers builds from it (needs vsgen[hf]).",
)
@click.option(
    "--scheduler",
    type=str,
    default=None,
    metavar="ADDRESS|local:N",
    help="Compute on a Dask cluster: a scheduler address (tcp://host:8786) or local:N "
    "(N local worker processes). Needs the dask extra.",
)
@click.option(
    "--connect-timeout",
    type=Real(),
    default=None,
    metavar="SECONDS",
    help="With --scheduler: seconds to reach the scheduler and hear its Dask handshake; "
    "also how long a job waits for a scheduler that stopped answering. [10]",
)
@click.option(
    "--cluster-timeout",
    type=Real(),
    default=None,
    metavar="SECONDS",
    help="With --scheduler: seconds a job waits with no live worker (and for the first "
    "one to join) before it fails. [60]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Block-written outputs: if the job fails, keep its work (a journal of finished "
    "tasks beside its temporary); the same command with --resume finishes it.",
)
@click.option("--verbose", "-v", is_flag=True, help="With --scheduler: show Dask's own log lines.")
@click.option(
    "--max-shard-size",
    type=str,
    default="5GB",
    show_default=True,
    help="Largest shard of --format safetensors-sharded (5GB = 5*10**9 bytes; GiB too).",
)
@click.option(
    "--chunks",
    "chunks",
    type=str,
    default=None,
    help="Block (Zarr chunk) shape of the parallel writers for tensors of its rank, "
    "e.g. 4096,1024. [~64 MiB of whole rows]",
)
@click.option(
    "--convention",
    type=Name(lambda: tuple(_conventions()), metavar="CONVENTION"),
    default=None,
    help="With --spec/--like: what tensors no rule covers get. vsgen: the initializer for "
    "weights, zeros for biases, ones/zeros for norms, every other tensor copied; torch: "
    "PyTorch's reset_parameters() defaults (by name); hf: Hugging Face's _init_weights "
    "(normal(0, initializer_range)...). [vsgen; hf for --like config.json]",
)
@click.option(
    "--plan",
    is_flag=True,
    help="With --spec/--like: print every tensor's initializer and write nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="With --plan: the plan as JSON.")
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
      vsgen sample --shape 64,3,7,7 --preset kaiming_normal --seed 6 -o conv.safetensors
      vsgen sample --spec examples/transformer_block.toml --preset he_normal --plan
      vsgen sample --shape 4096,1024 --seed 4 -o w.zarr --chunks 1024,1024
      vsgen sample --spec examples/transformer_block.toml -o ckpt --format safetensors-sharded
      vsgen sample --spec examples/transformer_block.toml --convention torch --plan
      vsgen sample --like examples/llama_config.json --seed 0 -o llama --format safetensors-sharded
    """
    options = pop_initializer_options(kwargs)
    whole_model = kwargs["spec"] is not None or kwargs["like"] is not None
    if whole_model:
        _refuse_single_tensor_options()
    if kwargs["plan"] and not whole_model:
        raise BadInput("--plan shows the plan of --spec/--like; for one tensor use vsgen describe")
    if kwargs["convention"] is not None and not whole_model:
        raise BadInput("--convention applies to whole models (--spec/--like)")
    if kwargs["as_json"] and not kwargs["plan"]:
        raise BadInput("--json goes with --plan")
    if kwargs["output"] is None and not kwargs["plan"]:
        raise BadInput("Missing option '-o' / '--output' (or --plan to only show the plan)")
    threads = kwargs["threads"]
    if threads is not None and threads < 1:
        raise BadInput(f"--threads must be >= 1. Received: --threads={threads}")
    if threads is not None and threads > MAX_THREADS:
        raise BadInput(f"--threads must be at most {MAX_THREADS}. Received: --threads={threads}")
    if whole_model:
        job = _model_job(kwargs, options)
    else:
        job, whole_model = _tensor_job(kwargs, options)
    if not whole_model and kwargs["config_from"] is None and _given("name"):
        _refuse_name_without_names(kwargs["output"], kwargs["fmt"])
    if kwargs["plan"]:
        _say_warnings(job)
        _print_plan(job, kwargs)
        return
    fmt = _check_target(job, kwargs["output"], kwargs["fmt"], whole_model)
    from vsgen import saving

    for option in ("connect_timeout", "cluster_timeout"):
        if kwargs[option] is not None and kwargs["scheduler"] is None:
            raise BadInput(f"--{option.replace('_', '-')} applies to --scheduler")
    if saving.writes_in_blocks(fmt, kwargs["scheduler"]):
        chunks = parse_shape_option(kwargs["chunks"], "--chunks")
        _say_warnings(job)
        write_parallel(job, kwargs["output"], fmt, kwargs, chunks)
        return
    for option in ("chunks", "resume"):
        if kwargs[option]:
            raise BadInput(
                f"--{option} applies to .zarr, safetensors-sharded and --scheduler outputs"
            )
    target = _open_target(job, kwargs["output"], fmt, kwargs["force"])
    # Warnings only once the job is sure to run: a run that fails prints its
    # one error line and nothing else.
    _say_warnings(job)
    if job.seed_was_drawn:
        say(f"seed: {job.seed}")
    if job.rows and not kwargs["quiet"] and sys.stderr is not None and sys.stderr.isatty():
        from vsgen.modelspec import plan_table

        for line in plan_table(job.rows, max_rows=PLAN_MAX_ROWS):
            say(line)
    write_plans(target, job.plans, threads, kwargs["quiet"])


def _say_warnings(job: ModelJob) -> None:
    for warning in job.warnings:
        say(f"warning: {warning}")


def _print_plan(job: ModelJob, kwargs: dict[str, Any]) -> None:
    """``--plan``: the table (or ``--json``) on stdout; the output is only checked."""
    from vsgen import formats
    from vsgen.modelspec import plan_table

    if kwargs["output"] is not None:
        with user_errors():
            formats.resolve_format(kwargs["output"], kwargs["fmt"], len(job.infos))
    if kwargs["as_json"]:
        document = {"seed": job.seed, "tensors": [row.as_dict() for row in job.rows]}
        click.echo(json.dumps(document, indent=1))
    else:
        if job.seed_was_drawn:
            say(f"seed: {job.seed}")
        for line in plan_table(job.rows):
            click.echo(line)


def _given(key: str) -> bool:
    """Did the user give option ``key`` (on the command line or from the environment)?"""
    source = click.get_current_context().get_parameter_source(key)
    return source not in (None, ParameterSource.DEFAULT)


def _refuse_name_without_names(output: str, fmt_option: str | None) -> None:
    """--name names a tensor inside a file; a .npy or raw file has no names."""
    from vsgen.formats import registry

    with user_errors():
        fmt = registry.resolve_format(output, fmt_option)
    if not registry.get(fmt).named:
        where = "standard output" if output == "-" else repr(output)
        raise BadInput(
            f"--name names a tensor inside .h5/.safetensors; {fmt} output ({where}) holds one "
            "unnamed tensor: drop --name or write .h5/.safetensors"
        )


def _channels_last_warnings(initializer: RandomInitializer, shape: tuple[int, ...]) -> list[str]:
    """A one-line hint when a torch-layout shape reads like Keras' (*kernel, in, out)."""
    if initializer.layout != "torch" or initializer.input_axes is not None:
        return []
    if not looks_channels_last(shape):
        return []
    text = ",".join(map(str, shape))
    fan_in, fan_out = initializer.fans(shape)
    return [
        f"shape {text} looks channels-last (*kernel, in, out), but the torch "
        f"layout reads it as (out, in, *kernel): fan_in={fan_in}, fan_out={fan_out}; "
        "check --layout"
    ]


def _refuse_single_tensor_options() -> None:
    conflicts = [f"--{key.replace('_', '-')}" for key in _SINGLE_TENSOR_OPTIONS if _given(key)]
    if conflicts:
        raise BadInput(f"--spec/--like sample whole models; drop {', '.join(conflicts)}")


def _tensor_job(kwargs: dict[str, Any], options: dict[str, Any]) -> tuple[ModelJob, bool]:
    """One tensor (or rows of it) from --shape and the initializer options, or
    reproduced from a file's record with --config-from; and whether the job is a
    whole file instead (--config-from a file of several tensors, without --name)."""
    rows = parse_rows(kwargs["rows"])
    shard = parse_shard(kwargs["shard"])
    if rows is not None and shard is not None:
        raise BadInput("--rows and --shard both select rows; give one")
    fan_shape = parse_shape_option(kwargs["fan_shape"], "--fan-shape")
    name: str = kwargs["name"]
    dtype = kwargs["dtype"]
    warnings: list[str] = []

    if kwargs["config_from"] is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        if kwargs["shape"] is not None:
            given.append("--shape")
        if fan_shape is not None:
            given.append("--fan-shape")
        if given:
            raise BadInput(f"--config-from reproduces a recorded tensor; drop {', '.join(given)}")
        source = click.get_current_context().get_parameter_source
        name_given = source("name") is ParameterSource.COMMANDLINE
        records = recorded_tensors(kwargs["config_from"], "--config-from")
        if not name_given and len(records) > 1:
            return _whole_file_job(kwargs, rows is not None or shard is not None), True
        name, record = pick_record(
            records, kwargs["config_from"], name if name_given else None, "--config-from"
        )
        with _malformed_record(kwargs["config_from"]):
            if record.get("set_rows"):
                return _fixed_rows_job(kwargs, name, rows is not None or shard is not None), False
            replayed = provenance.replay(record)
        initializer = replayed.initializer
        shape = replayed.full_shape
        fan_shape = replayed.fan_shape
        if rows is None and shard is None:
            rows = replayed.rows
        if source("dtype") is not ParameterSource.COMMANDLINE and "dtype" in record:
            dtype = replayed.dtype
    else:
        parsed = parse_shape_option(kwargs["shape"])
        if parsed is None:
            raise BadInput("--shape is required, e.g. --shape 512,256")
        shape = parsed
        initializer = build_initializer(options)
        warnings = _channels_last_warnings(
            initializer, fan_shape if fan_shape is not None else shape
        )

    from vsgen.job import tensor_job

    with user_errors():
        if shard is not None:
            rows = shard_rows(shape, *shard)
        job = tensor_job(initializer, shape, dtype, name, rows=rows, fan_shape=fan_shape)
    job.warnings.extend(warnings)
    return job, False


def _model_job(kwargs: dict[str, Any], options: dict[str, Any]) -> ModelJob:
    """``sample --spec/--like``: every tensor of a model into one output.

    --seed is the global seed, --dtype/--layout/--stream override the spec's
    defaults, and the initializer options give the default for tensors of
    rank >= 2 that no rule covers.
    """
    from vsgen import modelspec

    default_init = None
    if any(options[key] is not None for key in _DEFAULT_INIT_OPTIONS):
        # Seeds are derived per tensor; 0 only avoids drawing one here.
        initializer = build_initializer({**options, "seed": 0}, layout_for_job=True)
        default_init = modelspec.init_from_initializer(initializer)
    config = _hf_config(kwargs["like"])
    if config is not None:
        return _config_job(kwargs, options, config, default_init)
    with user_errors({"convention": "--convention"}):
        spec = modelspec.load_spec(kwargs["spec"]) if kwargs["spec"] is not None else None
        return modelspec.build_job(
            spec,
            kwargs["like"],
            seed=options["seed"],
            dtype=kwargs["dtype"] if _given("dtype") else None,
            layout=options["layout"],
            stream=options["stream"],
            init=default_init,
            convention=kwargs["convention"],
        )


def _hf_config(like: str | None) -> str | None:
    """The Hugging Face config.json ``--like`` names (a file, or a directory holding
    one and no weights), else None."""
    if like is None:
        return None
    from vsgen.hf import config_file

    return config_file(like)


def _config_job(
    kwargs: dict[str, Any], options: dict[str, Any], config: str, default_init: Any
) -> ModelJob:
    """``--like config.json``: the model transformers builds from a Hugging Face config,
    on the meta device, with the hf convention by default and the config's dtype
    unless --dtype says otherwise. Written as safetensors-sharded (the default for a
    directory), config.json and generation_config.json go beside the shards."""
    from vsgen import hf, modelspec
    from vsgen.formats import registry

    output, fmt = kwargs["output"], kwargs["fmt"]
    with user_errors():
        if (
            fmt is None
            and output not in (None, "-")
            and registry.resolve_format(output, None, 2) == "npydir"
        ):
            kwargs["fmt"] = fmt = hf.SHARDED  # a directory from_pretrained loads
    try:
        with user_errors({"convention": "--convention"}):
            spec = modelspec.load_spec(kwargs["spec"]) if kwargs["spec"] is not None else None
            job = hf.plan(
                config,
                default_init,
                seed=options["seed"],
                spec=spec,
                convention=kwargs["convention"],
                dtype=kwargs["dtype"] if _given("dtype") else None,
                layout=options["layout"],
                stream=options["stream"],
                isolate=True,  # this process, the writer, never holds torch
            )
            written = registry.resolve_format(output, fmt, len(job.infos)) if output else None
    except ImportError as error:
        raise BadInput(f"--like {config}: {error}") from None
    if default_init is not None and not any(row.origin == "default" for row in job.rows):
        job.warnings.append(
            "the initializer options serve no tensor: the convention decides every one "
            "(--convention vsgen gives the weights to them, or write rules)"
        )
    if written is not None and written != hf.SHARDED:
        files = " and ".join(sorted(job.companions))
        job.companions.clear()
        job.warnings.append(
            f"{files} are written only beside --format {hf.SHARDED}; {written} holds the "
            "tensors alone"
        )
    return job


def _fixed_rows_job(kwargs: dict[str, Any], name: str, rows_given: bool) -> ModelJob:
    """``--config-from`` one tensor whose record sets rows after drawing (an
    embedding's padding row): replayed whole, as the file holds it."""
    from vsgen import modelspec

    if rows_given or _given("dtype"):
        raise BadInput(
            f"--config-from: tensor {name!r} has rows set after drawing (a padding row); "
            "it is replayed whole, in its own dtype: drop --rows, --shard and --dtype"
        )
    try:
        return modelspec.job_from_file(kwargs["config_from"], [name])
    except ValueError as error:
        raise BadInput(f"--config-from: {error}") from None


def _whole_file_job(kwargs: dict[str, Any], rows_given: bool) -> ModelJob:
    """``--config-from`` a file of several tensors without ``--name``: all of them,
    in the file's order, with the file's dtypes and records."""
    from vsgen import modelspec

    if rows_given or _given("dtype"):
        raise BadInput(
            f"--config-from: {kwargs['config_from']} holds several tensors; --rows, --shard "
            "and --dtype apply to one: choose it with --name"
        )
    try:
        job = modelspec.job_from_file(kwargs["config_from"])
    except ValueError as error:
        raise BadInput(f"--config-from: {error}") from None
    from vsgen import formats

    try:
        formats.resolve_format(kwargs["output"], kwargs["fmt"], len(job.infos))
    except ValueError as error:
        raise BadInput(
            f"--config-from: {kwargs['config_from']} holds {len(job.infos)} tensors: {error}; "
            "or choose one with --name"
        ) from None
    return job


def _check_target(job: ModelJob, output: str, fmt_option: str | None, whole_model: bool) -> str:
    """Resolve the format, refusing what must not be written.

    A single tensor never goes to a directory unless --format npydir says so
    (``vsgen.saving.resolve_target``); binary data never goes to a terminal.
    What --force may replace is checked by ``formats.open_output`` itself (so
    API callers get the same rules).
    """
    from vsgen import saving

    with user_errors():
        fmt = saving.resolve_target(job, output, fmt_option, whole_model=whole_model)
    if output == "-" and stdout_is_terminal():
        raise BadInput(
            "refusing to write binary data to a terminal; redirect stdout or use -o FILE"
        )
    return fmt


def _open_target(job: ModelJob, output: str, fmt: str, force: bool) -> Output:
    """Open the streaming output (``fmt`` checked by :func:`_check_target`)."""
    from vsgen import saving

    with user_errors():
        stdout = binary_stdout() if output == "-" else None
        return open_output(lambda: saving.open_stream(job, output, fmt, force=force, stdout=stdout))


@contextlib.contextmanager
def _malformed_record(path: str) -> Iterator[None]:
    """A vsgen record whose fields have the wrong shape is bad input (exit 2)."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        detail = f"missing {error}" if isinstance(error, KeyError) else one_line(str(error))
        message = f"--config-from: the vsgen record in {path} is malformed: {detail}"
        raise BadInput(message) from None
