"""``vsgen config``: print an initializer's JSON config."""

from __future__ import annotations

import json
from typing import Any

import click

from vsgen.cli._errors import user_errors
from vsgen.cli._options import build_initializer, initializer_options, pop_initializer_options


@click.command()
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
    options = pop_initializer_options(kwargs)
    initializer = build_initializer(options)
    with user_errors():
        document = initializer.keras_config() if kwargs["keras_form"] else initializer.get_config()
    if initializer.seed_was_drawn:
        target = document["config"] if kwargs["keras_form"] else document
        target["seed"] = None
    click.echo(json.dumps(document, indent=2))
