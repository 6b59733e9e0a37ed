"""The command line: success paths, formats read back with real readers, and
the examples in every command's --help (the documents': tests/test_docs.py)."""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


@pytest.mark.parametrize("suffix", [".npy", ".h5", ".safetensors"])
@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_sample_writes_what_the_api_returns(tmp_path, suffix, stream, read_back):
    out = tmp_path / f"w{suffix}"
    result = run(
        "sample",
        "--shape",
        "33,17",
        "--preset",
        "glorot_uniform",
        "--seed",
        "5",
        "--stream",
        stream,
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    expected = vsgen.GlorotUniform(seed=5, stream=stream)((33, 17))
    got = read_back(out)
    assert got.dtype == np.float32 and got.shape == (33, 17)
    assert got.tobytes() == expected.tobytes()


def test_formats_hold_identical_bytes(tmp_path, read_back):
    arrays = []
    for suffix in (".npy", ".h5", ".safetensors"):
        out = tmp_path / f"w{suffix}"
        assert (
            run(
                "sample", "--shape", "3,3,8,16", "--seed", "1", "-o", str(out), "--dtype", "float16"
            ).exit_code
            == 0
        )
        arrays.append(read_back(out))
    raw = tmp_path / "w.raw"
    assert (
        run(
            "sample", "--shape", "3,3,8,16", "--seed", "1", "-o", str(raw), "--dtype", "float16"
        ).exit_code
        == 0
    )
    arrays.append(np.fromfile(raw, dtype="<f2").reshape(3, 3, 8, 16))
    assert all(a.tobytes() == arrays[0].tobytes() for a in arrays)


def test_h5_name_and_shape_alias(tmp_path):
    out = tmp_path / "k.h5"
    assert (
        run(
            "sample", "--shape", "4x5", "--seed", "2", "--name", "dense/kernel", "-o", str(out)
        ).exit_code
        == 0
    )
    with h5py.File(out, "r") as handle:
        assert handle["dense/kernel"].shape == (4, 5)


def test_seed_is_drawn_reported_and_reproducible(tmp_path):
    out = tmp_path / "w.npy"
    result = run("sample", "--shape", "16,16", "-o", str(out))
    assert result.exit_code == 0
    match = re.fullmatch(r"seed: (\d+)\n", result.stderr)
    assert match, result.stderr
    again = tmp_path / "again.npy"
    result = run("sample", "--shape", "16,16", "--seed", match.group(1), "-o", str(again))
    assert result.exit_code == 0
    assert np.load(out).tobytes() == np.load(again).tobytes()


def test_describe_json_for_a_conv_kernel():
    result = run("describe", "--shape", "3,3,64,128", "--preset", "he_normal", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    # Hand-derived: receptive field 3*3 = 9.
    assert (info["fan_in"], info["fan_out"], info["n"]) == (576, 1152, 576.0)
    assert math.isclose(info["stddev"], math.sqrt(2 / 576))
    assert math.isclose(info["pre_truncation_std"], math.sqrt(2 / 576) / 0.87962566103423978)
    assert math.isclose(info["bound"], 2 * info["pre_truncation_std"])
    assert info["limit"] is None


def test_describe_uniform_fan_avg_table():
    result = run("describe", "--shape", "512,256", "--mode", "fan_avg", "--distribution", "uniform")
    assert result.exit_code == 0
    limit = math.sqrt(3 * 1 / 384)
    assert f"{limit:.9g}" in result.stdout
    assert "384" in result.stdout


def test_describe_torch_layout():
    info = json.loads(
        run("describe", "--shape", "128,64,3,3", "--layout", "torch", "--json").stdout
    )
    assert (info["fan_in"], info["fan_out"]) == (64 * 9, 128 * 9)


def test_config_round_trip_via_stdin(tmp_path):
    config = run("config", "--preset", "lecun_uniform", "--seed", "9").stdout
    assert json.loads(config) == {
        "scale": 1.0,
        "mode": "fan_in",
        "distribution": "uniform",
        "seed": 9,
    }
    out = tmp_path / "w.npy"
    result = run("sample", "--config", "-", "--shape", "10,20", "-o", str(out), input=config)
    assert result.exit_code == 0, result.stderr
    assert np.load(out).tobytes() == vsgen.LecunUniform(seed=9)((10, 20)).tobytes()


def test_config_without_seed_has_null_seed():
    assert json.loads(run("config", "--preset", "he_normal").stdout)["seed"] is None
    keras_form = json.loads(run("config", "--preset", "he_normal", "--keras").stdout)
    assert keras_form["class_name"] == "HeNormal" and keras_form["config"]["seed"] is None


def test_config_file_with_explicit_override(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"scale": 3.0, "mode": "fan_out", "distribution": "uniform", "seed": 1})
    )
    info = json.loads(
        run("describe", "--config", str(path), "--scale", "6", "--shape", "4,8", "--json").stdout
    )
    assert info["scale"] == 6.0 and info["mode"] == "fan_out"


@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_rows_and_shard_are_slices(tmp_path, stream):
    full, part, shard = tmp_path / "f.npy", tmp_path / "p.npy", tmp_path / "s.npy"
    common = ["--shape", "50,6", "--seed", "3", "--stream", stream]
    assert run("sample", *common, "-o", str(full)).exit_code == 0
    assert run("sample", *common, "--rows", "7:19", "-o", str(part)).exit_code == 0
    assert run("sample", *common, "--shard", "2/4", "-o", str(shard)).exit_code == 0
    whole = np.load(full)
    assert np.load(part).tobytes() == whole[7:19].tobytes()
    # 50 rows in 4 shards: 13, 13, 12, 12 -> shard 2 is rows 26..37
    assert np.load(shard).tobytes() == whole[26:38].tobytes()


def test_stdout_through_a_real_pipe(tmp_path):
    script = (
        f"{shlex.quote(sys.executable)} -m vsgen sample --shape 64,32 --seed 5 -o - | "
        f"{shlex.quote(sys.executable)} -c "
        '"import io, sys, numpy; a = numpy.load(io.BytesIO(sys.stdin.buffer.read())); '
        'print(a.shape, a.dtype)"'
    )
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {script}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(64, 32) float32"


def test_python_m_vsgen_and_version():
    result = subprocess.run(
        [sys.executable, "-m", "vsgen", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert vsgen.__version__ in result.stdout


def test_small_sample_imports_nothing_heavy(tmp_path):
    """Start-up: a small sample must not import numba, rich, safetensors or keras."""
    code = (
        "import sys\n"
        "from vsgen.cli import main\n"
        "try:\n"
        "    main(['sample', '--shape', '512,256', '--seed', '0', '-o', 'w.npy'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('numba', 'rich', 'safetensors', 'h5py', 'keras', 'scipy',"
        " 'ml_dtypes', 'torch', 'jax') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# --- documentation examples -------------------------------------------------------


def _help_examples() -> list[str]:
    commands = []
    for name in ("sample", "describe", "config"):
        text = run(name, "--help").stdout
        examples = text.split("Examples:", 1)[1] if "Examples:" in text else ""
        commands += [
            line.strip() for line in examples.splitlines() if line.strip().startswith("vsgen ")
        ]
    return commands


def test_there_are_documented_examples():
    assert len(_help_examples()) >= 8


# README.md and docs/*.md run as written in tests/test_docs.py.
@pytest.mark.parametrize("command", _help_examples())
def test_documented_example_runs(command, tmp_path):
    if "--like examples/llama_config.json" in command:  # a Hugging Face config: vsgen[hf]
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
    # Examples refer to files under examples/, as when run from the repository root.
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{command}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert "Traceback" not in result.stderr
