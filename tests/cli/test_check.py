"""``vsgen check`` on whole files, its exit codes, and ``--config-from`` on whole files.

Exit codes of ``check``: 0 consistent, 1 NOT consistent, 2 could not check
(bad input), 3 could not check (I/O, interrupted, internal error). A crash
must never read as a verdict, and a NOT-consistent verdict comes with a
clean stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

SPEC = {
    "tensors": {
        "embed.weight": {"shape": [40, 16]},
        "layer.kernel": {"shape": [16, 24], "init": "he_uniform"},
        "layer.bias": {"shape": [24]},
        "norm.scale": {"shape": [24], "init": {"constant": 1.0}},
    }
}
NAMES = list(SPEC["tensors"])


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def model(tmp_path: Path, suffix: str, seed: int = 5) -> Path:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / f"model{suffix}"
    result = run("sample", "--spec", str(spec), "--seed", str(seed), "-o", str(out), "-q")
    assert result.exit_code == 0, result.stderr
    return out


def spoil(path: Path, name: str) -> None:
    """Double one tensor's values in place (its record still says the old scale)."""
    if path.suffix == ".h5":
        with h5py.File(path, "r+") as h5:
            h5[name][...] = h5[name][()] * 2
        return
    from safetensors.numpy import save_file

    arrays, metadata = load_with_metadata(path)
    arrays[name] = arrays[name] * 2
    save_file(arrays, str(path), metadata=metadata)


def load_with_metadata(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
    return load_file(str(path)), metadata


@pytest.mark.parametrize("suffix", [".safetensors", ".h5"])
def test_every_tensor_is_judged_against_its_own_record(tmp_path, suffix):
    path = model(tmp_path, suffix)
    result = run("check", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{path}: 4 tensors judged")
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert sorted(rows) == sorted(NAMES)
    assert "uniform stddev" in rows["layer.kernel"] and "constant 1" in rows["norm.scale"]
    assert "constant 0" in rows["layer.bias"]
    assert all(line.endswith("consistent") for line in rows.values())
    assert lines[-1] == "verdict: consistent"

    code = run("check", str(path), "--json")
    document = json.loads(code.stdout)
    assert code.exit_code == 0 and document["consistent"] is True
    assert [t["name"] for t in document["tensors"]] and document["not_judged"] == []
    assert {t["name"] for t in document["tensors"]} == set(NAMES)
    kernel = next(t for t in document["tensors"] if t["name"] == "layer.kernel")
    # He uniform over fan_in 16: limit sqrt(3 * 2 / 16), worked out by hand.
    assert kernel["expected"]["limit"] == pytest.approx((6 / 16) ** 0.5)


@pytest.mark.parametrize("suffix", [".safetensors", ".h5"])
def test_one_spoiled_tensor_fails_the_file_with_a_clean_stderr(tmp_path, suffix):
    path = model(tmp_path, suffix)
    spoil(path, "layer.kernel")
    result = run("check", str(path))
    assert result.exit_code == 1
    assert result.stderr == ""
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:6]}
    assert "NOT consistent (bounds, std" in rows["layer.kernel"]
    assert rows["embed.weight"].endswith("  consistent")
    assert result.stdout.endswith("verdict: NOT consistent\n")
    document = json.loads(run("check", str(path), "--json").stdout)
    assert document["verdict"] == "NOT consistent" and document["consistent"] is False

    one = run("check", str(path), "--name", "embed.weight")
    assert one.exit_code == 0 and "tensor 'embed.weight'" in one.stdout
    bad = run("check", str(path), "--name", "layer.kernel", "--json")
    assert bad.exit_code == 1 and json.loads(bad.stdout)["name"] == "layer.kernel"


def test_npy_directory_with_options(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    for name, seed in (("a", 1), ("sub/b", 2)):
        (folder / name).parent.mkdir(exist_ok=True)
        values = vsgen.VarianceScaling(seed=seed, distribution="uniform").plan((32, 32)).array()
        np.save(folder / f"{name}.npy", values)
    result = run("check", str(folder), "--distribution", "uniform")
    assert result.exit_code == 0, result.stderr
    assert "2 tensors judged, npydir" in result.stdout
    no_options = run("check", str(folder))
    assert no_options.exit_code == 2 and "provenance" in no_options.stderr


def test_tensors_without_a_distribution_are_listed_not_judged(tmp_path):
    from safetensors.numpy import save_file

    path = model(tmp_path, ".safetensors")
    arrays, metadata = load_with_metadata(path)
    arrays["position_ids"] = np.arange(10, dtype=np.int64)
    save_file(arrays, str(path), metadata=metadata)
    result = run("check", str(path))
    assert result.exit_code == 0, result.stderr
    assert "not judged: position_ids:" in result.stdout and "int64" in result.stdout


def test_fan_shape_on_a_file_of_several_tensors_needs_a_name(tmp_path):
    path = model(tmp_path, ".h5")
    result = run("check", str(path), "--scale", "1", "--fan-shape", "16,24")
    assert result.exit_code == 2 and "--name" in result.stderr


def test_check_help_documents_the_exit_codes():
    text = run("check", "--help").stdout
    for line in ("0  consistent", "1  NOT consistent", "2  could not check", "3  could not check"):
        assert line in text


# --- failures never look like verdicts --------------------------------------------------


@pytest.mark.parametrize(
    "failure, words",
    [
        (OSError(5, "Input/output error"), "Input/output error"),
        (KeyboardInterrupt(), "interrupted"),
        (RuntimeError("a bug"), "internal error"),
    ],
)
def test_runtime_failures_exit_3(tmp_path, monkeypatch, failure, words):
    path = model(tmp_path, ".safetensors")
    from vsgen.formats import readers

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(readers, "read_values", fail)
    monkeypatch.setattr("vsgen.verify.read_values", fail)
    result = run("check", str(path))
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    assert len(result.stderr.splitlines()) == 1 and words in result.stderr


def test_a_crash_after_the_verdict_is_not_a_verdict(tmp_path, monkeypatch):
    path = model(tmp_path, ".safetensors")
    spoil(path, "layer.kernel")
    check_module = sys.modules["vsgen.cli.check"]  # vsgen.cli.check is also the command

    printed = check_module._print_file_report

    def print_then_crash(report):
        printed(report)
        raise RuntimeError("formatting bug")

    monkeypatch.setattr(check_module, "_print_file_report", print_then_crash)
    result = run("check", str(path))
    assert "verdict: NOT consistent" in result.stdout
    assert result.exit_code == 3 and "internal error" in result.stderr


def test_real_process_exit_codes(tmp_path):
    good = model(tmp_path, ".safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes())
    spoil(bad, "embed.weight")

    def vsgen_check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vsgen", "check", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert vsgen_check(str(good)).returncode == 0
    not_consistent = vsgen_check(str(bad))
    assert not_consistent.returncode == 1 and not_consistent.stderr == ""
    missing = vsgen_check(str(tmp_path / "missing.h5"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    with open("/dev/full", "w") as full:
        failed = subprocess.run(
            [sys.executable, "-m", "vsgen", "check", str(good)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    assert failed.returncode == 3 and failed.stderr.startswith("Error: ")


# --- --config-from a whole file --------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".h5"])
def test_config_from_regenerates_a_whole_file(tmp_path, suffix):
    source = model(tmp_path, suffix, seed=11)
    copy = tmp_path / f"copy{suffix}"
    result = run("sample", "--config-from", str(source), "-o", str(copy))
    assert result.exit_code == 0, result.stderr
    if suffix == ".safetensors":
        assert copy.read_bytes() == source.read_bytes()
    else:
        with h5py.File(source, "r") as old, h5py.File(copy, "r") as new:
            assert list(old) == list(new)
            assert dict(old.attrs) == dict(new.attrs)
            for name in NAMES:
                assert old[name][()].tobytes() == new[name][()].tobytes()
                assert dict(old[name].attrs) == dict(new[name].attrs)
    assert run("check", str(copy)).exit_code == 0


def test_config_from_a_whole_file_into_a_single_tensor_format(tmp_path):
    source = model(tmp_path, ".safetensors")
    result = run("sample", "--config-from", str(source), "-o", str(tmp_path / "x.npy"))
    assert result.exit_code == 2 and "--name" in result.stderr
    assert not (tmp_path / "x.npy").exists()
    dtype = run(
        "sample",
        "--config-from",
        str(source),
        "--dtype",
        "float16",
        "-o",
        str(tmp_path / "y.safetensors"),
    )
    assert dtype.exit_code == 2 and "--name" in dtype.stderr
    one = run(
        "sample",
        "--config-from",
        str(source),
        "--name",
        "layer.kernel",
        "-o",
        str(tmp_path / "k.npy"),
    )
    assert one.exit_code == 0, one.stderr
    from safetensors.numpy import load_file

    assert np.load(tmp_path / "k.npy").tobytes() == load_file(str(source))["layer.kernel"].tobytes()
