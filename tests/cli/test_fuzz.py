"""Random command lines never crash vsgen and never leave stray files.

Hypothesis throws argument lists at every command: a mix of valid and
invalid option names and values, shapes small enough to sample quickly and a
few huge ones that must be refused before any work, every output suffix,
configs on stdin. Whatever happens, the exit code is 0, 1 or 2, there is no
traceback and no internal error, a failure says why in its last stderr line,
and the directory holds no temporary file; only a successful ``sample`` may
add or change anything, and then only its output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections import namedtuple
from pathlib import Path
from unittest import mock

from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from vsgen.cli import cli


@contextlib.contextmanager
def _fresh_directory(parent: Path):
    """Run in a new, empty directory under ``parent`` (each hypothesis example gets one)."""
    where = tempfile.mkdtemp(dir=parent)
    previous = os.getcwd()
    os.chdir(where)
    try:
        yield where
    finally:
        os.chdir(previous)


#: Free space the tests pretend to have: larger outputs must fail pre-flight.
FAKE_FREE = 64 << 20
DiskUsage = namedtuple("DiskUsage", "total used free")

SMALL_SHAPES = st.lists(st.integers(0, 12), max_size=4).map(
    lambda dims: ",".join(map(str, dims)) if dims else "()"
)
HUGE_SHAPES = st.sampled_from(
    [
        f"{2**31},{2**31}",  # 2**62 values: addressable, far beyond any disk
        "1000000,1000,1000",
        f"{2**40},{2**40}",  # beyond a 64-bit index
        "99999999999999999999",
        ",".join(["2"] * 40),
    ]
)
BAD_SHAPES = st.sampled_from(["", ",", "-1", "abc", "1,,2", "3x", "0.5", "²", "[2,3", "1e3"])
SHAPE_TEXT = st.one_of(SMALL_SHAPES, SMALL_SHAPES, BAD_SHAPES, st.text(max_size=6))

JSON_DOCS = [
    '{"scale": 2.0, "mode": "fan_avg", "distribution": "uniform", "seed": 3}',
    '{"class_name": "HeNormal", "config": {"seed": 1}}',
    '"glorot_uniform"',
    "{}",
    "",
    "{",
    "[1, 2]",
    "3",
    '{"scale": "big"}',
    '{"mode": 3}',
    '{"seed": -1}',
    '{"stream": "keras", "seed": 4294967296}',
    '{"input_axes": [0], "output_axes": [9]}',
    "[" * 5000,
]

SPECS = {
    "small.toml": (
        'seed = 1\n[tensors]\n"a.weight" = { shape = [4, 3] }\n"a.bias" = { shape = [3] }\n'
    ),
    "huge.toml": f'seed = 1\n[tensors]\n"w" = {{ shape = [{2**31}, {2**31}] }}\n',
    "broken.toml": "seed = [\n",
}

OUTPUTS = [
    "w.npy",
    "w.h5",
    "w.hdf5",
    "w.safetensors",
    "w.raw",
    "w.bin",
    "w.txt",
    "w",
    "-",
    "sub/w.npy",
    "nowhere/w.npy",
    "sub",
    "sub/",
    "",
    "existing.npy",
    "made.h5",
]
FILES = ["made.h5", "existing.npy", "missing.npy", "sub", "cfg.json", "small.toml"]


def text_of(values: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


# Each option with the values it may get; flags map to None.
OPTIONS: dict[str, st.SearchStrategy[str] | None] = {
    "--shape": SHAPE_TEXT,
    "--fan-shape": SHAPE_TEXT,
    "--scale": st.one_of(
        text_of(["1", "2.0", "0", "-1", "nan", "inf", "abc", "1e308", "1e-300", ""]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    ),
    "--mode": text_of(["fan_in", "fan_out", "fan_avg", "FAN_IN", "fan_sum", ""]),
    "--distribution": text_of(
        ["truncated_normal", "untruncated_normal", "uniform", "normal", "Uniform", "cauchy"]
    ),
    "--seed": st.one_of(
        st.integers(-3, 2**65).map(str), text_of(["1.5", "abc", "", str(2**32), str(2**64)])
    ),
    "--preset": text_of(["he_normal", "GlorotUniform", "lecun-uniform", "xavier", ""]),
    "--config": text_of(["-", "cfg.json", "missing.json", "sub", "existing.npy"]),
    "--stream": text_of(["vsgen", "keras", "vsgen/1", "vsgen/2", "mt19937"]),
    "--layout": text_of(["keras", "torch", "caffe"]),
    "--in-axes": text_of(["0", "1", "-1", "0,1", "x", "", "5"]),
    "--out-axes": text_of(["0", "1", "-1", "0,1", "x", "", "5"]),
    "--dtype": text_of(["float32", "float16", "bfloat16", "float64", "fp16", "int32", "bool", "x"]),
    "-o": text_of(OUTPUTS),
    "--format": text_of(["npy", "h5", "hdf5", "safetensors", "raw", "npydir", "csv"]),
    "--name": text_of(["weight", "", "a/b", "__metadata__", "x.y"]),
    "--threads": st.one_of(st.integers(-2, 4).map(str), text_of(["many", ""])),
    "--rows": text_of(["0:1", "0:2", "1:0", "0:999", "a:b", "²:1", ":", "2:3"]),
    "--shard": text_of(["0/1", "0/2", "1/2", "2/2", "0/0", "x", "1/3"]),
    "--config-from": text_of(["made.h5", "missing.h5", "existing.npy", "sub"]),
    "--spec": text_of(list(SPECS) + ["missing.toml", "existing.npy"]),
    "--like": text_of(["made.h5", "missing.h5", "existing.npy"]),
    "--force": None,
    "--quiet": None,
    "--json": None,
    "--keras": None,
    "--bogus": None,
    "-h": None,
}
COMMANDS = ["sample", "sample", "sample", "describe", "config", "check", "bogus", "--version"]


def made_h5(cache: Path) -> bytes:
    """A small .h5 written by vsgen (with provenance), for --config-from/--like/check."""
    target = cache / "made.h5"
    if not target.exists():
        result = CliRunner().invoke(
            cli, ["sample", "--shape", "6,5", "--seed", "2", "-o", str(target)]
        )
        assert result.exit_code == 0, result.stderr
    return target.read_bytes()


def populate(directory: Path, made: bytes) -> None:
    (directory / "sub").mkdir()
    (directory / "sub" / "keep.txt").write_text("user data\n")
    (directory / "existing.npy").write_bytes(b"an older file\n")
    (directory / "cfg.json").write_text('{"scale": 2.0, "seed": 5}')
    (directory / "made.h5").write_bytes(made)
    for name, text in SPECS.items():
        (directory / name).write_text(text)


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` (None for directories) with its bytes."""
    return {
        str(path.relative_to(directory)): None if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


#: Values that make sense, so that many command lines get far (and succeed).
PLAUSIBLE: dict[str, list[str] | None] = {
    "--scale": ["0.5", "2", "1.0"],
    "--mode": ["fan_in", "fan_out", "fan_avg"],
    "--distribution": ["truncated_normal", "untruncated_normal", "uniform", "normal"],
    "--seed": ["0", "7", str(2**32 - 1), str(2**64 - 1)],
    "--preset": ["he_normal", "GlorotUniform"],
    "--stream": ["vsgen", "keras"],
    "--layout": ["keras", "torch"],
    "--dtype": ["float32", "float16", "float64", "bfloat16"],
    "--format": ["npy", "h5", "safetensors", "raw"],
    "--name": ["weight", "layer/kernel"],
    "--threads": ["1", "2"],
    "--rows": ["0:1", "1:2"],
    "--shard": ["0/2", "1/3"],
    "--force": None,
    "--quiet": None,
    "--json": None,
}
PLAUSIBLE_OUTPUTS = ["w.npy", "w.h5", "w.safetensors", "w.raw", "-", "sub/w.npy", "existing.npy"]


def add_option(draw: st.DrawFn, args: list[str], name: str, plausible: bool) -> None:
    args.append(name)
    choices = PLAUSIBLE.get(name)
    if plausible and choices is not None and draw(st.integers(0, 5)) > 0:
        args.append(draw(st.sampled_from(choices)))
    elif OPTIONS[name] is not None:
        args.append(draw(OPTIONS[name]))


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[list[str], str]:
    """Half plausible command lines with a twist, half anything at all."""
    plausible = draw(st.booleans())
    if plausible:
        command = draw(
            st.sampled_from(["sample", "sample", "sample", "describe", "config", "check"])
        )
        args = [command]
        if command == "check":
            args.append("made.h5")
        if command in ("sample", "describe"):
            args += ["--shape", draw(SMALL_SHAPES)]
        if command == "sample":
            args += ["-o", draw(st.sampled_from(PLAUSIBLE_OUTPUTS))]
        for name in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=3)):
            add_option(draw, args, name, plausible=True)
        if draw(st.booleans()):  # the twist: one option from the wild set
            add_option(draw, args, draw(st.sampled_from(sorted(OPTIONS))), plausible=False)
    else:
        command = draw(st.sampled_from(COMMANDS))
        args = [command]
        if command == "check":
            args.append(draw(st.sampled_from(FILES)))
        for name in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=8)):
            add_option(draw, args, name, plausible=False)
    if draw(st.integers(0, 9)) == 0:  # now and then a huge shape that must be refused
        args += ["--shape", draw(HUGE_SHAPES)]
    stdin = draw(st.sampled_from(JSON_DOCS))
    return args, stdin


def streams_huge_to_stdout(args: list[str]) -> bool:
    """Standard output has no size check: a huge tensor there would just run long."""
    if "-" not in args:
        return False
    return "huge.toml" in args or any(
        arg in args for arg in ("1000000,1000,1000", f"{2**31},{2**31}")
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=command_lines())
def test_random_command_lines(tmp_path: Path, case: tuple[list[str], str]) -> None:
    args, stdin = case
    if streams_huge_to_stdout(args):
        args = [arg if arg != "-" else "w.npy" for arg in args]
    runner = CliRunner()
    fake_disk = mock.patch.object(
        shutil, "disk_usage", lambda path: DiskUsage(FAKE_FREE * 4, FAKE_FREE * 3, FAKE_FREE)
    )
    made = made_h5(tmp_path)
    with fake_disk, _fresh_directory(tmp_path) as where:
        directory = Path(where)
        populate(directory, made)
        before = snapshot(directory)
        result = runner.invoke(cli, args, input=stdin, catch_exceptions=False)
        after = snapshot(directory)

    context = f"args={args!r}\nstderr={result.stderr!r}"
    with contextlib.suppress(InvalidArgument):  # event() only works under @given
        event(f"{args[0].lstrip('-')} exit {result.exit_code}")
        if result.exit_code == 1:
            event(f"exit 1: {result.stderr.splitlines()[-1][:50] if result.stderr else ''}")
    assert result.exit_code in (0, 1, 2), context
    assert "Traceback" not in result.stderr, context
    assert b"Traceback" not in result.stdout_bytes, context
    assert "internal error" not in result.stderr, context
    assert "Warning" not in result.stderr, context
    if result.exit_code == 1 and args[0] == "check" and not result.stderr:
        assert "not consistent" in result.stdout.lower(), context  # a verdict, not an error
    elif result.exit_code != 0:
        lines = result.stderr.splitlines()
        assert lines and lines[-1].startswith("Error: "), context
        assert all(line.startswith("seed: ") for line in lines[:-1]), context
    if result.exit_code == 2:
        assert len(result.stderr.splitlines()) == 1, context

    assert after.get("sub/keep.txt") == b"user data\n", context  # never someone else's data
    stray = [path for path in after if ".vsgen-tmp-" in path or ".vsgen-old-" in path]
    assert not stray, context
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    changed |= set(after) - set(before)
    if result.exit_code != 0 or args[0] != "sample":
        assert not changed, context
    else:
        output = args[len(args) - 1 - args[::-1].index("-o") + 1] if "-o" in args else None
        if output in (None, "-"):
            assert not changed, context
        else:
            target = output.rstrip("/")
            assert all(path == target or path.startswith(target + "/") for path in changed), context
