"""``vsgen describe FILE`` and ``vsgen config FILE``: what a file's tensors were
made with, read from its record; ``--config`` given a tensor file says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "examples" / "transformer_block.toml")


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def ok(*args: str, input: str | bytes | None = None) -> str:
    result = run(*args, input=input)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def refused(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ")
    return result.stderr


#: (what sample was given, the describe options that mean the same, the dtype)
CASES = [
    (["--shape", "3,3,16,32", "--preset", "he_normal"], ["--preset", "he_normal"], "float32"),
    (
        ["--shape", "64,32", "--scale", "2", "--mode", "fan_avg", "--distribution", "uniform"],
        ["--scale", "2", "--mode", "fan_avg", "--distribution", "uniform"],
        "float64",
    ),
    (
        ["--shape", "32,16,3,3", "--preset", "kaiming_uniform", "--a", "2.2360679774997898"],
        ["--preset", "kaiming_uniform", "--a", "2.2360679774997898"],
        "float32",
    ),
    (
        ["--shape", "50,40", "--preset", "random_uniform", "--minval", "0", "--maxval", "0.5"],
        ["--preset", "random_uniform", "--minval", "0", "--maxval", "0.5"],
        "float16",
    ),
    (
        ["--shape", "10,20", "--fan-shape", "1000,20", "--preset", "lecun_normal"],
        ["--preset", "lecun_normal", "--fan-shape", "1000,20"],
        "float32",
    ),
]


@pytest.mark.parametrize("suffix", [".h5", ".safetensors"])
@pytest.mark.parametrize(("made", "meant", "dtype"), CASES)
def test_describe_file_prints_the_numbers_of_describe_shape(suffix, made, meant, dtype):
    target = f"w{suffix}"
    ok("sample", *made, "--dtype", dtype, "--seed", "17", "-o", target, "-q")
    described = json.loads(ok("describe", target, "--json"))
    assert len(described) == 1
    entry = described[0]
    shape = made[made.index("--shape") + 1]
    expected = json.loads(ok("describe", "--shape", shape, *meant, "--dtype", dtype, "--json"))
    assert {key: entry[key] for key in expected} == expected
    assert entry["name"] == "weight" and entry["seed"] == 17 and entry["stream"] == "vsgen"
    assert entry["dtype"] == dtype and entry["rows"] is None
    # The table shows the same numbers, and the seed.
    table = ok("describe", target)
    assert "weight:" in table and "17" in table
    if expected.get("stddev") is not None:
        assert f"{expected['stddev']:.9g}" in table


def test_describe_file_of_a_slice_gives_its_full_shape_and_rows():
    ok("sample", "--shape", "100,10", "--rows", "10:20", "--seed", "2", "-o", "r.h5", "-q")
    (entry,) = json.loads(ok("describe", "r.h5", "--json"))
    assert entry["shape"] == [100, 10] and entry["rows"] == [10, 20]
    assert entry["fan_in"] == 100 and entry["stddev"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("target", "extra"),
    [("m.safetensors", []), ("m.zarr", []), ("ckpt", ["--format", "safetensors-sharded"])],
)
def test_describe_a_model_file_one_line_per_tensor_in_file_order(target, extra):
    if target == "m.zarr":
        pytest.importorskip("zarr")
    ok("sample", "--spec", SPEC, "--seed", "3", "-o", target, *extra, "-q")
    job = vsgen.modelspec.build_job(vsgen.modelspec.load_spec(SPEC), seed=3)
    summary = ok("describe", target).splitlines()
    assert summary[0].startswith(f"{target}: {len(job.infos)} tensors")
    listed = [line.split()[0] for line in summary[2:]]
    if target == "m.safetensors":  # a store lists by name, shards shard by shard
        assert listed == [info.name for info in job.infos]
    assert sorted(listed) == sorted(info.name for info in job.infos)
    rows = {row.name: row for row in job.rows}
    lines = {line.split()[0]: line for line in summary[2:]}
    assert "constant 0" in lines["ln_1.bias"] and "constant 1" in lines["ln_1.weight"]
    assert f"{rows['mlp.up.weight'].stddev:.6g}" in lines["mlp.up.weight"]
    assert str(rows["mlp.up.weight"].seed) in lines["mlp.up.weight"]
    described = json.loads(ok("describe", target, "--json"))
    assert {entry["name"] for entry in described} == set(rows)
    one = json.loads(ok("describe", target, "--name", "mlp.up.weight", "--json"))
    assert one["seed"] == rows["mlp.up.weight"].seed
    assert one["stddev"] == pytest.approx(rows["mlp.up.weight"].stddev, rel=1e-15)


def test_config_file_prints_the_config_that_makes_the_same_bytes():
    made = ["--shape", "48,24", "--preset", "kaiming_normal", "--mode", "fan_out"]
    ok("sample", *made, "--seed", "5", "-o", "w.safetensors", "-q")
    document = ok("config", "w.safetensors")
    assert json.loads(document)["seed"] == 5
    ok("sample", "--config", "-", "--shape", "48,24", "-o", "again.npy", input=document)
    from safetensors.numpy import load_file

    stored = load_file("w.safetensors")["weight"]
    assert np.load("again.npy").tobytes() == stored.tobytes()


def test_config_file_keras_is_what_keras_deserializes():
    keras = pytest.importorskip("keras")
    ok("sample", "--shape", "32,16", "--preset", "glorot_uniform", "--seed", "9", "-o", "w.h5")
    document = json.loads(ok("config", "w.h5", "--keras"))
    initializer = keras.initializers.deserialize(document)
    # Glorot uniform is VarianceScaling(1, fan_avg, uniform): the record keeps its numbers.
    assert isinstance(initializer, keras.initializers.VarianceScaling) and initializer.seed == 9
    assert (initializer.scale, initializer.mode, initializer.distribution) == (
        1.0,
        "fan_avg",
        "uniform",
    )
    values = keras.ops.convert_to_numpy(initializer((32, 16)))
    assert np.abs(values).max() <= (6 / 48) ** 0.5


def test_config_file_of_a_model_needs_a_name_and_refuses_constants():
    ok("sample", "--spec", SPEC, "--seed", "3", "-o", "m.h5", "-q")
    assert "choose one with --name" in refused("config", "m.h5")
    assert "is the constant 0.0, not made by an initializer" in refused(
        "config", "m.h5", "--name", "ln_1.bias"
    )
    assert "records no tensor named 'nope'" in refused("config", "m.h5", "--name", "nope")
    config = json.loads(ok("config", "m.h5", "--name", "mlp.up.weight"))
    job = vsgen.modelspec.build_job(vsgen.modelspec.load_spec(SPEC), seed=3)
    assert config["seed"] == next(row.seed for row in job.rows if row.name == "mlp.up.weight")


def test_file_commands_refuse_what_the_record_says_and_files_without_one():
    ok("sample", "--shape", "8,8", "--seed", "1", "-o", "w.h5", "-q")
    ok("sample", "--shape", "8,8", "--seed", "1", "-o", "w.npy", "-q")
    assert "drop --preset, --shape" in refused(
        "describe", "w.h5", "--preset", "he_normal", "--shape", "8,8"
    )
    assert "drop --scale" in refused("config", "w.h5", "--scale", "2")
    assert "no vsgen provenance" in refused("describe", "w.npy")
    assert "file not found" in refused("config", "missing.h5")
    assert "--name picks a tensor of FILE" in refused("describe", "--shape", "4,4", "--name", "x")
    assert "Missing option '--shape'" in refused("describe", "--preset", "he_normal")


@pytest.mark.parametrize("target", ["w.safetensors", "w.h5", "w.npy", "w.zarr"])
def test_config_option_given_a_tensor_file_points_to_vsgen_config(target):
    if target.endswith(".zarr"):
        pytest.importorskip("zarr")
    ok("sample", "--shape", "8,8", "--seed", "1", "-o", target, "-q")
    message = refused("sample", "--config", target, "--shape", "4,4", "-o", "x.npy")
    assert f"{target} is a tensor file" in message
    assert f"vsgen config {target}" in message and "UTF-8" not in message
    assert not Path("x.npy").exists()
