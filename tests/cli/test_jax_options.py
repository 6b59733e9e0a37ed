"""The command line with JAX's options: complex dtypes and fan_geo_avg, in the
formats that have them (read back with numpy and h5py)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

COMPLEX = ["complex64", "complex128"]


def _run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("dtype", COMPLEX)
def test_cli_writes_complex_npy_h5_and_raw(tmp_path, dtype, read_back):
    expected = vsgen.VarianceScaling(1.0, "fan_geo_avg", "uniform", seed=8)((32, 24), dtype)
    common = [
        "--shape",
        "32,24",
        "--mode",
        "fan_geo_avg",
        "--distribution",
        "uniform",
        "--seed",
        "8",
        "--dtype",
        dtype,
    ]
    for name in ("w.npy", "w.h5", "w.raw"):
        result = _run("sample", *common, "-o", str(tmp_path / name))
        assert result.exit_code == 0, result.stderr
        stored = read_back(tmp_path / name, shape=(32, 24), dtype=dtype)
        assert stored.dtype.name == dtype
        assert stored.astype(dtype).tobytes() == expected.tobytes()


def test_cli_refuses_complex_safetensors_in_one_line(tmp_path):
    target = tmp_path / "w.safetensors"
    result = _run("sample", "--shape", "4,4", "--dtype", "complex64", "-o", str(target))
    assert result.exit_code == 2
    assert "safetensors" in result.stderr and "complex" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_cli_describe_complex_and_geo_avg():
    result = _run(
        "describe",
        "--shape",
        "64,16",
        "--mode",
        "fan_geo_avg",
        "--dtype",
        "complex128",
        "--distribution",
        "uniform",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["n"] == 32.0 and info["complex"] is True
    assert info["limit"] == math.sqrt(2 * 1.0 / 32)


def test_cli_keras_form_refuses_geo_avg():
    result = _run("config", "--mode", "fan_geo_avg", "--keras")
    assert result.exit_code == 2 and "fan_geo_avg" in result.stderr


def test_model_spec_with_jax_axes_and_complex_dtype(tmp_path, read_back):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'seed = 7\ndtype = "complex64"\n'
        'init = { mode = "fan_geo_avg", distribution = "uniform", scale = 2.0 }\n'
        "[tensors]\n"
        '"a.weight" = { shape = [16, 8] }\n'
        '"b.weight" = { shape = [3, 3, 4, 8], init = { in_axis = [0, 2], out_axis = 3, '
        "batch_axis = 1 } }\n"
    )
    result = _run("sample", "--spec", str(spec), "-o", str(tmp_path / "w.h5"))
    assert result.exit_code == 0, result.stderr
    from vsgen import modelspec

    seed = modelspec.derive_seed(7, "b.weight")
    expected = vsgen.VarianceScaling(seed=seed, in_axis=[0, 2], out_axis=3, batch_axis=1)(
        (3, 3, 4, 8), "complex64"
    )
    assert read_back(tmp_path / "w.h5", "b.weight").tobytes() == expected.tobytes()
    assert expected.dtype == "complex64"
    seed = modelspec.derive_seed(7, "a.weight")
    expected = vsgen.VarianceScaling(2.0, "fan_geo_avg", "uniform", seed=seed)((16, 8), "complex64")
    assert read_back(tmp_path / "w.h5", "a.weight").tobytes() == expected.tobytes()
