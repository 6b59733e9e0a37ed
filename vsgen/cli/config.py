"""``vsgen config``: print an initializer's JSON config, or the one a file records."""

from __future__ import annotations

import json
from typing import Any

import click

from vsgen.cli._errors import BadInput, emit, user_errors
from vsgen.cli._options import (
    SPELLING_NOTE,
    build_initializer,
    initializer_options,
    pick_record,
    pop_initializer_options,
    recorded_tensors,
    refuse_with_file,
)
from vsgen.initializer import RandomInitializer


@click.command(epilog=SPELLING_NOTE)
@initializer_options
@click.argument("file", required=False, metavar="[FILE]")
@click.option("--name", type=str, default=None, help="With FILE: the tensor whose config to print.")
@click.option("--keras", "keras_form", is_flag=True, help="Keras serialized form.")
def config(**kwargs: Any) -> None:
    """Print the initializer's JSON config (feed it back with --config FILE|-).

    Without --seed the config's seed is null: each use draws and reports one.
    --keras prints Keras 3's serialized form; it has no stream (Keras always draws
    what --stream keras reproduces), so --keras refuses --stream.

    With FILE (a .h5, .safetensors, .zarr or sharded safetensors file vsgen
    wrote): the config a tensor of it was made with, its seed included (--name
    picks the tensor of a file of several).

    \b
    Examples:
      vsgen config --preset he_normal --seed 0
      vsgen config --scale 2 --distribution uniform --seed 1 --keras
      vsgen config --preset lecun_normal --seed 5 > lecun.json
      vsgen sample --shape 64,32 --preset he_uniform --seed 1 -o w.h5 && vsgen config w.h5
    """
    options = pop_initializer_options(kwargs)
    if kwargs["file"] is not None:
        initializer = _recorded_initializer(kwargs["file"], kwargs["name"], options)
        with user_errors():
            document = _document(initializer, kwargs["keras_form"], recorded=True)
        emit(json.dumps(document, indent=2))
        return
    if kwargs["name"] is not None:
        raise BadInput("--name picks a tensor of FILE; give the vsgen file whose config to print")
    if kwargs["keras_form"] and options["stream"] is not None:
        # Keras' form has no place for a stream: Keras always draws with its own
        # generator (what --stream keras reproduces). Dropping it silently would
        # hand back a config that draws other values than the one asked for.
        raise BadInput(
            "--keras prints Keras' serialized form, which has no stream: Keras always draws "
            "its own values (the ones vsgen's --stream keras reproduces); drop --stream here "
            "and pass it when sampling: vsgen sample --config FILE --stream keras"
        )
    initializer = build_initializer(options)
    with user_errors():
        document = _document(initializer, kwargs["keras_form"], recorded=False)
    emit(json.dumps(document, indent=2))


def _document(initializer: RandomInitializer, keras_form: bool, recorded: bool) -> Any:
    """The config (or Keras's form) to print; a seed the initializer drew itself is
    null, so that every use draws one (a recorded seed is kept: it made the file)."""
    document = initializer.keras_config() if keras_form else initializer.get_config()
    if initializer.seed_was_drawn and not recorded:
        target = document["config"] if keras_form else document
        target["seed"] = None
    return document


def _recorded_initializer(path: str, name: str | None, options: dict[str, Any]) -> Any:
    """The initializer the record of tensor ``name`` (or of the only one) in ``path``
    describes, its seed and stream included."""
    from vsgen import provenance

    refuse_with_file(
        path, [key for key, value in options.items() if value is not None], "prints its record"
    )
    name, record = pick_record(recorded_tensors(path, "config"), path, name, "config")
    if not provenance.is_sampled(record):
        kind = record.get("kind")
        what = f"the constant {record.get('value')}" if kind == "constant" else f"a {kind}"
        raise BadInput(
            f"config: tensor {name!r} of {path} is {what}, not made by an initializer: "
            "it has no config"
        )
    try:
        return provenance.recorded_initializer(record)
    except (KeyError, TypeError, ValueError) as error:
        detail = f"field {error} is missing" if isinstance(error, KeyError) else str(error)
        raise BadInput(
            f"config: the vsgen record of tensor {name!r} in {path} is malformed: {detail}"
        ) from None
