"""Shell completion of every choice option's values, and one-line suggestions
for a misspelt value or command."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from vsgen.cli import COMMANDS, cli
from vsgen.cli._options import Name

#: Every option that takes one of a list of names, by command, with names the
#: completion must offer (canonical names and aliases, written out here).
CHOICE_OPTIONS = {
    "--preset": ["he_normal", "glorot_uniform", "kaiming_uniform", "random_normal", "HeNormal"],
    "--mode": ["fan_in", "fan_out", "fan_avg", "fan_geo_avg"],
    "--distribution": ["truncated_normal", "untruncated_normal", "uniform", "normal"],
    "--layout": ["keras", "torch", "pytorch", "channels_last"],
    "--stream": ["vsgen", "keras"],
    "--nonlinearity": ["relu", "leaky_relu", "tanh", "selu", "conv2d"],
    "--dtype": ["float32", "bfloat16", "float16", "float64", "complex64", "fp16", "bf16"],
    "--format": ["npy", "h5", "safetensors", "raw", "npydir", "zarr", "safetensors-sharded"],
    "--convention": ["vsgen", "torch"],
}


def command(name: str) -> click.Command:
    found = cli.get_command(click.Context(cli), name)
    assert found is not None
    return found


def complete(words: str) -> list[str]:
    """What bash gets from ``_VSGEN_COMPLETE=bash_complete`` for the last word of ``words``."""
    env = {
        **os.environ,
        "_VSGEN_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    result = subprocess.run(
        [sys.executable, "-m", "vsgen"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_every_choice_option_declares_its_names():
    """The options that take names are typed by their names (so they complete and
    suggest), in every command that has them; no other option takes names as text."""
    found: dict[str, set[str]] = {}
    for name in COMMANDS:
        for param in command(name).params:
            if isinstance(param, click.Option) and isinstance(param.type, Name):
                found.setdefault(param.opts[0], set()).add(name)
    assert set(found) == set(CHOICE_OPTIONS)
    assert found["--preset"] == {"sample", "describe", "config", "check"}
    assert found["--dtype"] == {"sample", "describe"}
    assert found["--format"] == {"sample"}
    assert found["--convention"] == {"sample"}


@pytest.mark.parametrize("option", sorted(CHOICE_OPTIONS))
def test_an_empty_word_completes_every_name_and_alias(option):
    where = "sample" if option != "--nonlinearity" else "describe"
    offered = complete(f"vsgen {where} {option} ")
    assert set(CHOICE_OPTIONS[option]) <= set(offered)
    assert len(offered) == len(set(offered))


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("vsgen sample --preset he", {"he_normal", "he_uniform", "HeNormal", "HeUniform"}),
        ("vsgen sample --preset HE-U", {"he_uniform"}),
        ("vsgen describe --mode fan_a", {"fan_avg"}),
        ("vsgen check w.npy --layout p", {"pytorch"}),
        ("vsgen sample --dtype bf", {"bfloat16", "bf16"}),
        ("vsgen sample --format safe", {"safetensors", "safetensors-sharded"}),
        ("vsgen config --stream k", {"keras"}),
        ("vsgen sa", {"sample"}),
    ],
)
def test_a_prefix_completes_the_names_it_begins(words, expected):
    assert set(complete(words)) == expected


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_readme_completion_lines_give_scripts(shell):
    result = subprocess.run(
        [sys.executable, "-m", "vsgen"],
        env={**os.environ, "_VSGEN_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "_VSGEN_COMPLETE" in result.stdout


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["sample", "--shape", "4", "--preset", "he_nromal", "-o", "w.npy"], "he_normal"),
        (["sample", "--shape", "4", "--preset", "HeNromal", "-o", "w.npy"], "HeNormal"),
        (["sample", "--shape", "4", "--mode", "fan_inn", "-o", "w.npy"], "fan_in"),
        (["describe", "--shape", "4", "--distribution", "unifrom"], "uniform"),
        (["sample", "--shape", "4", "--dtype", "flaot16", "-o", "w.npy"], "float16"),
        (["config", "--layout", "torhc"], "torch"),
        (["config", "--stream", "kears"], "keras"),
        (["config", "--preset", "kaiming_normal", "--nonlinearity", "rleu"], "relu"),
        (["sample", "--shape", "4", "--format", "npz", "-o", "w.npy"], "npy"),
    ],
)
def test_a_misspelt_name_gets_one_short_line_with_a_suggestion(args, suggestion):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    option = next(arg for arg in reversed(args) if arg.startswith("--"))
    assert result.stderr.startswith(f"Error: {option}: unknown name ")
    assert result.stderr.endswith(f"did you mean {suggestion}?\n")
    assert len(result.stderr.splitlines()) == 1 and len(result.stderr) < 100
    assert not os.listdir(".")


def test_a_name_far_from_every_choice_gets_the_short_list():
    result = CliRunner().invoke(cli, ["describe", "--shape", "4", "--preset", "zzz"])
    assert result.exit_code == 2
    message = result.stderr
    assert "did you mean" not in message and "he_normal, he_uniform" in message
    # The canonical names only: the aliases are in --help, not in the error.
    assert "HeNormal" not in message and "kaiming_normal_" not in message
    assert len(message) < 300


@pytest.mark.parametrize(("typo", "meant"), [("smaple", "sample"), ("chek", "check")])
def test_a_misspelt_command_gets_a_suggestion(typo, meant):
    result = CliRunner().invoke(cli, [typo])
    assert result.exit_code == 2
    assert f"No such command {typo!r}; did you mean {meant}?" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_command_far_from_every_command_is_only_unknown():
    result = CliRunner().invoke(cli, ["zzzz"])
    assert result.exit_code == 2 and "did you mean" not in result.stderr
    assert "No such command 'zzzz'" in result.stderr


def test_names_still_accept_every_spelling():
    result = CliRunner().invoke(
        cli,
        [
            "describe",
            "--shape",
            "4,4",
            "--preset",
            "KAIMING-NORMAL_",
            "--mode",
            "FAN-OUT",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert '"mode": "fan_out"' in result.stdout
