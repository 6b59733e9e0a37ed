"""Provenance: every .h5/.safetensors file says how it was made, read with
h5py and ``safetensors.safe_open`` (not vsgen's own reader), and
``vsgen sample --config-from FILE`` reproduces the same bytes."""

from __future__ import annotations

import json
import math
import re

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

CASES = {
    "plain": (["--shape", "40,24"], {}),
    "preset": (
        ["--shape", "3,3,8,16", "--preset", "he_uniform"],
        {"scale": 2.0, "mode": "fan_in", "distribution": "uniform"},
    ),
    "torch": (
        ["--shape", "16,8,3,3", "--layout", "torch", "--mode", "fan_out"],
        {"layout": "torch", "mode": "fan_out"},
    ),
    "axes": (
        ["--shape", "4,6,32", "--in-axes", "0,1", "--out-axes", "2"],
        {"input_axes": [0, 1], "output_axes": [2]},
    ),
    "keras": (
        ["--shape", "40,24", "--stream", "keras", "--distribution", "untruncated_normal"],
        {"distribution": "untruncated_normal"},
    ),
    "float16": (["--shape", "40,24", "--dtype", "float16", "--scale", "0.5"], {"scale": 0.5}),
    "shard": (["--shape", "40,24", "--shard", "1/3"], {}),
    "fan_shape": (["--shape", "10,24", "--fan-shape", "40,24"], {}),
}

#: (fan_in, fan_out, stddev) of each case, derived by hand from SPEC section 1:
#: stddev = sqrt(scale / n), n = fan_in (default mode) or fan_out.
EXPECTED = {
    "plain": (40, 24, math.sqrt(1.0 / 40)),
    "preset": (3 * 3 * 8, 3 * 3 * 16, math.sqrt(2.0 / 72)),  # he_uniform: scale 2, fan_in
    "torch": (8 * 9, 16 * 9, math.sqrt(1.0 / 144)),  # (out, in, kh, kw), fan_out
    "axes": (4 * 6, 32, math.sqrt(1.0 / 24)),
    "keras": (40, 24, math.sqrt(1.0 / 40)),
    "float16": (40, 24, math.sqrt(0.5 / 40)),
    "shard": (40, 24, math.sqrt(1.0 / 40)),  # fans of the full shape
    "fan_shape": (40, 24, math.sqrt(1.0 / 40)),
}


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def metadata_of(path) -> dict:
    """The "vsgen" metadata document, read with the formats' own libraries."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as handle:
            text = handle.attrs["vsgen"]
            dataset_text = handle["weight"].attrs["vsgen"]
        assert json.loads(dataset_text) == json.loads(text)
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            text = handle.metadata()["vsgen"]
    return json.loads(text)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("suffix", [".h5", ".safetensors"])
def test_files_record_how_they_were_made(tmp_path, case, suffix, read_back):
    args, config_expected = CASES[case]
    path = tmp_path / f"w{suffix}"
    result = run("sample", *args, "--seed", "123", "-o", str(path))
    assert result.exit_code == 0, result.stderr
    document = metadata_of(path)
    assert document["vsgen_version"] == vsgen.__version__
    assert document["format"] == 1
    record = document["tensors"]["weight"]
    config = record["config"]
    assert config["seed"] == 123
    for key, value in config_expected.items():
        assert config[key] == value, key
    stream = "keras" if case == "keras" else "vsgen"
    assert config.get("stream", "vsgen") == stream
    assert record["stream"] == f"{stream}/1"
    assert record["layout"] == ("torch" if case == "torch" else "keras")
    values = read_back(path)
    assert record["shape"] == list(values.shape)
    assert record["dtype"] == values.dtype.name
    # The recorded fans and stddev are the hand-derived ones.
    fan_in, fan_out, stddev = EXPECTED[case]
    assert (record["fan_in"], record["fan_out"]) == (fan_in, fan_out)
    assert record["stddev"] == stddev
    if case == "shard":
        assert record["rows"] == [14, 27] and record["full_shape"] == [40, 24]
    if case == "fan_shape":
        assert record["fan_shape"] == [40, 24] and record["fan_in"] == 40


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bfloat16_dtype_is_recorded(tmp_path, dtype):
    path = tmp_path / "w.safetensors"
    assert run("sample", "--shape", "8,8", "--dtype", dtype, "-o", str(path)).exit_code == 0
    assert metadata_of(path)["tensors"]["weight"]["dtype"] == dtype


@pytest.mark.parametrize("stream", ["vsgen", "keras"])
@pytest.mark.parametrize("source", [".h5", ".safetensors"])
def test_drawn_seed_is_reported_recorded_and_reproducible(tmp_path, stream, source, read_back):
    path = tmp_path / f"w{source}"
    result = run(
        "sample",
        "--shape",
        "3,3,8,16",
        "--preset",
        "glorot_normal",
        "--stream",
        stream,
        "--dtype",
        "float16",
        "-o",
        str(path),
    )
    assert result.exit_code == 0, result.stderr
    match = re.fullmatch(r"seed: (\d+)\n", result.stderr)
    assert match, result.stderr
    seed = int(match.group(1))
    assert metadata_of(path)["tensors"]["weight"]["config"]["seed"] == seed
    original = read_back(path)
    assert (
        original.tobytes()
        == vsgen.GlorotNormal(seed=seed, stream=stream)((3, 3, 8, 16), "float16").tobytes()
    )
    for target in (".npy", ".h5", ".safetensors"):
        copy = tmp_path / f"copy{target}"
        again = run("sample", "--config-from", str(path), "-o", str(copy))
        assert again.exit_code == 0, again.stderr
        assert again.stderr == ""  # the seed is recorded, not drawn again
        reproduced = read_back(copy)
        assert reproduced.dtype == np.float16
        assert reproduced.tobytes() == original.tobytes()
        if target != ".npy":
            first = metadata_of(path)["tensors"]["weight"]
            second = metadata_of(copy)["tensors"]["weight"]
            assert second == first


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_from_reproduces_every_case(tmp_path, case, read_back):
    args, _ = CASES[case]
    source = tmp_path / "w.safetensors"
    assert run("sample", *args, "-o", str(source)).exit_code == 0
    copy = tmp_path / "copy.h5"
    result = run("sample", "--config-from", str(source), "-o", str(copy))
    assert result.exit_code == 0, result.stderr
    assert read_back(copy).tobytes() == read_back(source).tobytes()
    assert metadata_of(copy)["tensors"]["weight"] == metadata_of(source)["tensors"]["weight"]


def test_config_from_keeps_the_tensor_name(tmp_path):
    source = tmp_path / "w.h5"
    assert run("sample", "--shape", "8,8", "--name", "enc/w", "-o", str(source)).exit_code == 0
    copy = tmp_path / "copy.safetensors"
    assert run("sample", "--config-from", str(source), "-o", str(copy)).exit_code == 0
    from safetensors.numpy import load_file

    with h5py.File(source, "r") as handle:
        original = handle["enc/w"][()]
    assert load_file(str(copy))["enc/w"].tobytes() == original.tobytes()
    renamed = tmp_path / "renamed.safetensors"
    wrong = run("sample", "--config-from", str(source), "--name", "other", "-o", str(renamed))
    assert wrong.exit_code == 2 and "enc/w" in wrong.stderr


def test_config_from_picks_a_tensor_of_a_model_file(tmp_path):
    two = tmp_path / "two.safetensors"
    from vsgen import formats, provenance

    records, infos, plans = {}, [], []
    for name, seed in (("a", 1), ("b", 2)):
        init = vsgen.VarianceScaling(seed=seed, distribution="uniform")
        plan = init.plan((6, 4))
        plans.append(plan)
        records[name] = provenance.tensor_record(init, plan)
        infos.append(formats.TensorInfo(name, plan.shape, plan.draw.dtype))
    with formats.open_output(
        str(two), "safetensors", infos, metadata=provenance.file_metadata(records)
    ) as output:
        for plan in plans:
            output.write(plan.array().ravel())
        output.commit()
    ambiguous = run("sample", "--config-from", str(two), "-o", str(tmp_path / "x.npy"))
    assert ambiguous.exit_code == 2 and "--name" in ambiguous.stderr
    copy = tmp_path / "b.npy"
    assert run("sample", "--config-from", str(two), "--name", "b", "-o", str(copy)).exit_code == 0
    assert np.load(copy).tobytes() == plans[1].array().tobytes()


def test_config_from_with_an_explicit_dtype(tmp_path):
    source = tmp_path / "w.h5"
    assert (
        run(
            "sample", "--shape", "8,8", "--seed", "3", "--dtype", "float16", "-o", str(source)
        ).exit_code
        == 0
    )
    same = tmp_path / "same.npy"
    wide = tmp_path / "wide.npy"
    assert run("sample", "--config-from", str(source), "-o", str(same)).exit_code == 0
    assert (
        run("sample", "--config-from", str(source), "--dtype", "float32", "-o", str(wide)).exit_code
        == 0
    )
    assert np.load(same).dtype == np.float16
    assert np.load(wide).dtype == np.float32
    assert np.load(wide).tobytes() == vsgen.VarianceScaling(seed=3)((8, 8)).tobytes()


def test_config_from_a_file_without_provenance(tmp_path):
    path = tmp_path / "w.npy"
    assert run("sample", "--shape", "4,4", "-o", str(path)).exit_code == 0
    result = run("sample", "--config-from", str(path), "-o", str(tmp_path / "x.npy"))
    assert result.exit_code == 2 and "provenance" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_from_refuses_conflicting_options(tmp_path):
    path = tmp_path / "w.h5"
    assert run("sample", "--shape", "4,4", "--seed", "1", "-o", str(path)).exit_code == 0
    result = run("sample", "--config-from", str(path), "--seed", "2", "-o", str(tmp_path / "x.h5"))
    assert result.exit_code == 2 and "--seed" in result.stderr


def test_check_uses_the_record(tmp_path):
    """What the file records is what ``vsgen check`` expects."""
    path = tmp_path / "w.h5"
    assert (
        run(
            "sample",
            "--shape",
            "128,64",
            "--preset",
            "lecun_uniform",
            "--seed",
            "4",
            "-o",
            str(path),
        ).exit_code
        == 0
    )
    result = run("check", str(path), "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["source"] == "provenance"
    assert report["expected"]["limit"] == math.sqrt(3.0 * (1.0 / 128))  # lecun: scale 1, fan_in


def test_replay_reads_back_every_argument(tmp_path, read_back):
    """provenance.replay turns a file's record (read with h5py, not vsgen's
    reader) back into a plan with the file's very bytes."""
    from vsgen import provenance

    path = tmp_path / "w.h5"
    args = ["--shape", "10,24", "--fan-shape", "40,24", "--rows", "2:7", "--dtype", "float16"]
    assert run("sample", *args, "--seed", "11", "-o", str(path)).exit_code == 0
    with h5py.File(path, "r") as handle:
        records = provenance.parse_metadata({"vsgen": handle.attrs["vsgen"]})
    replayed = provenance.replay(records["weight"])
    assert (replayed.full_shape, replayed.fan_shape) == ((10, 24), (40, 24))
    assert (replayed.rows, replayed.dtype) == ((2, 7), "float16")
    assert replayed.initializer.seed == 11
    plan = replayed.initializer.plan(
        replayed.full_shape, replayed.dtype, rows=replayed.rows, fan_shape=replayed.fan_shape
    )
    assert plan.array().tobytes() == read_back(path).tobytes()
