"""``vsgen config``: print an initializer's JSON config."""

from __future__ import annotations

import json
from typing import Any

import click

from vsgen.cli._errors import BadInput, emit, user_errors
from vsgen.cli._options import (
    SPELLING_NOTE,
    build_initializer,
    initializer_options,
    pop_initializer_options,
)


@click.command(epilog=SPELLING_NOTE)
@initializer_options
@click.option("--keras", "keras_form", is_flag=True, help="Keras serialized form.")
def config(**kwargs: Any) -> None:
    """Print the initializer's JSON config (feed it back with --config FILE|-).

    Without --seed the config's seed is null: each use draws and reports one.
    --keras prints Keras 3's serialized form; it has no stream (Keras always draws
    what --stream keras reproduces), so --keras refuses --stream.

    \b
    Examples:
      vsgen config --preset he_normal --seed 0
      vsgen config --scale 2 --distribution uniform --seed 1 --keras
      vsgen config --preset lecun_normal --seed 5 > lecun.json
    """
    options = pop_initializer_options(kwargs)
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
        document = initializer.keras_config() if kwargs["keras_form"] else initializer.get_config()
    if initializer.seed_was_drawn:
        target = document["config"] if kwargs["keras_form"] else document
        target["seed"] = None
    emit(json.dumps(document, indent=2))
