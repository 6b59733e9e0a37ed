"""``vsgen.save`` and ``vsgen.save_model``: one call from Python writes what
``vsgen sample`` writes, through the same writers, read back with real readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.blockwrite import LocalRunner
from vsgen.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "examples" / "transformer_block.toml")


def sample(*args: str) -> None:
    """The command line, in process; it must succeed."""
    result = CliRunner().invoke(cli, ["sample", *args, "-q"])
    assert result.exit_code == 0, result.stderr


def safetensors_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and ``__metadata__`` of a safetensors file, by the safetensors package."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
    return safetensors_numpy.load_file(str(path)), metadata


# --- one tensor ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".raw"])
def test_save_writes_the_bytes_of_the_command_line(suffix):
    vsgen.save(f"api{suffix}", vsgen.HeNormal(seed=7), (300, 200))
    sample("--shape", "300,200", "--preset", "he_normal", "--seed", "7", "-o", f"cli{suffix}")
    assert Path(f"api{suffix}").read_bytes() == Path(f"cli{suffix}").read_bytes()


def test_save_values_and_provenance_read_back_with_h5py():
    init = vsgen.VarianceScaling(2.0, "fan_avg", "uniform", seed=3)
    job = vsgen.save("w.h5", init, (64, 32), "float64", name="dense/kernel")
    with h5py.File("w.h5", "r") as handle:
        values = handle["dense/kernel"][()]
        document = json.loads(handle.attrs["vsgen"])
    assert values.dtype == np.float64
    assert values.tobytes() == init((64, 32), "float64").tobytes()
    record = document["tensors"]["dense/kernel"]
    assert record["config"]["seed"] == 3 == job.seed
    assert record["fan_in"] == 64 and record["fan_out"] == 32
    # The record alone makes the same bytes again.
    again = vsgen.provenance.replay(record)
    assert again.initializer(again.full_shape, "float64").tobytes() == values.tobytes()


def test_save_accepts_a_preset_name_or_a_config_and_reports_a_drawn_seed():
    drawn = vsgen.save("a.safetensors", "glorot_uniform", (40, 30), "bfloat16")
    tensors, metadata = safetensors_file("a.safetensors")
    record = json.loads(metadata["vsgen"])["tensors"]["weight"]
    assert record["config"]["seed"] == drawn.seed and drawn.seed_was_drawn
    expected = vsgen.GlorotUniform(seed=drawn.seed)((40, 30), "bfloat16")
    assert tensors["weight"].view(np.uint16).tobytes() == expected.view(np.uint16).tobytes()

    keras_form = {"class_name": "HeUniform", "config": {"seed": 5}}
    vsgen.save("b.npy", keras_form, (8, 8))
    assert np.load("b.npy").tobytes() == vsgen.HeUniform(seed=5)((8, 8)).tobytes()


def test_save_rows_and_fan_shape_are_those_of_the_full_tensor():
    init = vsgen.HeNormal(seed=11)
    vsgen.save("rows.npy", init, (100, 20), rows=(10, 37))
    assert np.load("rows.npy").tobytes() == init((100, 20))[10:37].tobytes()
    vsgen.save("fans.npy", init, (10, 20), fan_shape=(1000, 20))
    wider = vsgen.HeNormal(seed=11).scaling((1000, 20)).stddev
    assert abs(np.load("fans.npy").std() - wider) < 0.25 * wider


def test_save_to_zarr_and_by_a_runner_gives_the_streamed_bytes():
    zarr = pytest.importorskip("zarr")
    init = vsgen.LecunUniform(seed=2)
    vsgen.save("w.zarr", init, (96, 50), chunks=(32, 50))
    stored = zarr.open("w.zarr", mode="r")
    assert stored.chunks == (32, 50)
    assert np.asarray(stored[...]).tobytes() == init((96, 50)).tobytes()
    vsgen.save("blocks.npy", init, (96, 50), scheduler=LocalRunner(2))
    assert np.load("blocks.npy").tobytes() == init((96, 50)).tobytes()


def test_save_replaces_only_with_force_and_says_so_in_python_words():
    vsgen.save("w.npy", vsgen.HeNormal(seed=0), (16, 16))
    before = Path("w.npy").read_bytes()
    with pytest.raises(ValueError, match=r"pass force=True to overwrite") as caught:
        vsgen.save("w.npy", vsgen.HeNormal(seed=1), (16, 16))
    assert "--" not in str(caught.value)
    assert Path("w.npy").read_bytes() == before
    vsgen.save("w.npy", vsgen.HeNormal(seed=1), (16, 16), force=True)
    assert np.load("w.npy").tobytes() == vsgen.HeNormal(seed=1)((16, 16)).tobytes()


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: vsgen.save("w.npy", "he_normal", (4, 4), "bfloat16"), 'format="raw"'),
        (lambda: vsgen.save("w.foo", "he_normal", (4, 4)), "`format`"),
        (lambda: vsgen.save("out/", "he_normal", (4, 4)), "format='npydir'"),
        (lambda: vsgen.save("-", "he_normal", (4, 4)), "`path`"),
        (lambda: vsgen.save("w.npy", "he_normal", (4, 4), name="x"), "`name`"),
        (lambda: vsgen.save("w.npy", "he_normal", (4, -4)), "`shape`"),
        (lambda: vsgen.save("w.npy", "he_normal", (4, 4), "int8"), "`dtype`"),
        (lambda: vsgen.save("w.npy", "he_normal", (4, 4), threads=0), "`threads`"),
        (lambda: vsgen.save("w.npy", "he_normal", (4, 4), chunks=(2, 2)), "`chunks`"),
        (lambda: vsgen.save("w.npy", 3, (4, 4)), "`initializer`"),
        (lambda: vsgen.save_model("m.h5", SPEC, stream="keras", format="zarr"), "scheduler"),
        (lambda: vsgen.save_model("m.npy", {"tensors": {"a": [2], "b": [3]}}), "npy"),
        (lambda: vsgen.save_model("m.h5", object()), "`source`"),
        (lambda: vsgen.save_model("m.h5", "missing.safetensors"), "checkpoint"),
    ],
)
def test_library_errors_name_arguments_not_options(call, words):
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    message = str(caught.value)
    assert words in message
    assert "--" not in message, message
    assert not any(Path().iterdir()), "a refused call left something behind"


def test_a_failed_save_removes_its_temporary_and_keeps_the_old_file():
    vsgen.save("w.safetensors", "he_normal", (64, 64))
    before = Path("w.safetensors").read_bytes()

    def fail(values: int) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        vsgen.save("w.safetensors", "he_normal", (64, 64), force=True, on_progress=fail)
    assert os.listdir(".") == ["w.safetensors"]
    assert Path("w.safetensors").read_bytes() == before


def test_importing_vsgen_save_imports_nothing_heavy():
    code = (
        "import sys, vsgen\n"
        "vsgen.save, vsgen.save_model\n"
        "print(sorted(m for m in ('numpy', 'click', 'h5py') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# --- whole models -------------------------------------------------------------------------


def test_save_model_of_a_spec_equals_the_command_line():
    job = vsgen.save_model("api.safetensors", SPEC, seed=4)
    sample("--spec", SPEC, "--seed", "4", "-o", "cli.safetensors")
    assert Path("api.safetensors").read_bytes() == Path("cli.safetensors").read_bytes()
    tensors, _ = safetensors_file("api.safetensors")
    assert set(tensors) == {info.name for info in job.infos}
    assert job.seed == 4 and not job.seed_was_drawn


def test_save_model_like_a_checkpoint_with_rules_and_a_default_init():
    vsgen.save_model("base.safetensors", SPEC, seed=1)
    # PyTorch-style names and no layout given: the torch layout, as --like does
    vsgen.save_model("plain.safetensors", "base.safetensors", seed=2)
    vsgen.save_model("keras.safetensors", "base.safetensors", seed=2, layout="keras")
    vsgen.save_model("torch.safetensors", "base.safetensors", seed=2, layout="torch")
    plain, _ = safetensors_file("plain.safetensors")
    as_keras, _ = safetensors_file("keras.safetensors")
    as_torch, _ = safetensors_file("torch.safetensors")
    weights = [name for name, values in plain.items() if values.ndim >= 2]
    assert weights
    assert all(np.array_equal(plain[name], as_torch[name]) for name in plain)
    assert any(not np.array_equal(plain[name], as_keras[name]) for name in weights)
    job = vsgen.save_model(
        "like.safetensors",
        "base.safetensors",
        seed=2,
        layout="torch",
        init="he_uniform",
        rules={"*.bias": {"constant": 0.5}},
    )
    sample(
        "--like",
        "base.safetensors",
        "--seed",
        "2",
        "--layout",
        "torch",
        "--preset",
        "he_uniform",
        "-o",
        "cli.safetensors",
    )
    tensors, _ = safetensors_file("like.safetensors")
    reference, _ = safetensors_file("cli.safetensors")
    assert set(tensors) == set(reference)
    for name, values in tensors.items():
        if name.endswith(".bias"):
            assert (values == np.float32(0.5)).all()  # the rule beats the built-in zeros
        else:
            assert values.tobytes() == reference[name].tobytes(), name
    origins = {row.name: row.origin for row in job.rows}
    assert origins["mlp.up.bias"] == "rule *.bias"


def test_save_model_writes_sharded_safetensors_and_zarr_groups():
    zarr = pytest.importorskip("zarr")
    job = vsgen.save_model(
        "ckpt", SPEC, seed=5, format="safetensors-sharded", max_shard_size="200KB"
    )
    index = json.loads(Path("ckpt/model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    arrays = job.arrays()
    for shard in shards:
        tensors, _ = safetensors_file(Path("ckpt") / shard)
        for name, values in tensors.items():
            assert values.tobytes() == arrays[name].tobytes(), name
    vsgen.save_model("m.zarr", job)
    group = zarr.open_group("m.zarr", mode="r")
    for name, values in arrays.items():
        assert np.asarray(group[name][...]).tobytes() == values.tobytes(), name


def test_save_model_of_a_finished_job_takes_no_other_keywords():
    job = vsgen.modelspec.build_job(vsgen.modelspec.load_spec(SPEC), seed=9)
    with pytest.raises(ValueError, match=r"`source` is a finished ModelJob.*seed"):
        vsgen.save_model("m.safetensors", job, seed=1)
    assert vsgen.save_model("m.safetensors", job) is job


def test_dask_write_says_force_true():
    vsgen_dask = pytest.importorskip("vsgen.dask")
    job = vsgen.job.tensor_job(vsgen.HeNormal(seed=0), (32, 32))
    vsgen_dask.write(job, "w.zarr")
    with pytest.raises(ValueError) as caught:
        vsgen_dask.write(job, "w.zarr")
    assert "force=True" in str(caught.value) and "--force" not in str(caught.value)
