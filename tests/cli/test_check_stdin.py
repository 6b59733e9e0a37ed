"""``vsgen check`` reading stdin, refusing special files without blocking, and
printing only true statements (no NumPy warnings, no false inequalities)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import vsgen
from vsgen.cli import cli
from vsgen.verify import _compared


def run_vsgen(*args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "vsgen", *args], timeout=120, **kwargs)


def test_check_reads_a_pipe(tmp_path):
    made = run_vsgen("sample", "--shape", "256,128", "--scale", "2", "--seed", "1", "-o", "-")
    assert made.returncode == 0
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = run_vsgen("check", "-", "--scale", "2", "--json", input=made.stdout, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == "-" and report["name"] == "stdin"
    assert report["consistent"] and report["summary"]["count"] == 256 * 128
    assert os.listdir(tmp_path) == []  # the buffer is gone


def test_check_stdin_with_a_named_file_format(tmp_path):
    source = tmp_path / "w.safetensors"
    args = ["sample", "--shape", "64,64", "--seed", "2", "--name", "kernel", "-o", str(source)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, ["check", "-", "--json"], input=source.read_bytes())
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "kernel" and report["source"] == "provenance"


def test_check_stdin_that_is_not_a_tensor_file():
    result = CliRunner().invoke(cli, ["check", "-", "--scale", "1"], input=b"hello")
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_check_names_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "w.npy"
    os.mkfifo(fifo)
    done = run_vsgen("check", str(fifo), "--scale", "1")  # no writer: opening would block
    assert done.returncode == 2
    assert done.stderr.decode().startswith(f"Error: {fifo} is a FIFO (named pipe), not a ")
    assert "not found" not in done.stderr.decode()


@pytest.mark.parametrize(("path", "kind"), [("/dev/null", "a character device")])
def test_check_names_a_device(path, kind):
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    result = CliRunner().invoke(cli, ["check", path, "--scale", "1"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {path} is {kind}, not a .npy, .h5 or .safetensors file; "
        "to check a stream, pipe it into 'vsgen check -'\n"
    )


def test_check_missing_file_is_still_not_found(tmp_path):
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "none.npy"), "--scale", "1"])
    assert result.exit_code == 2 and "file not found" in result.stderr


def test_check_prints_no_numpy_warnings(tmp_path):
    """Values near the float64 limit overflow the moments: the checks fail, quietly."""
    np.save(tmp_path / "huge.npy", np.full((100, 100), 1e308))
    done = run_vsgen("check", "huge.npy", "--scale", "1", cwd=tmp_path)
    assert done.returncode == 1  # NOT consistent
    assert done.stderr == b""
    assert b"verdict: NOT consistent" in done.stdout


@given(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
def test_printed_comparisons_are_true_as_printed(value, threshold):
    text = _compared(value, threshold, 4)
    left, sign, right = text.split()
    assert sign == ("<=" if value <= threshold else ">")
    assert (float(left) <= float(right)) == (sign == "<=")


@pytest.mark.parametrize("distribution", ["uniform", "truncated_normal"])
def test_check_bounds_line_holds_for_narrow_types(tmp_path, distribution):
    target = tmp_path / "w.h5"
    args = ["sample", "--shape", "1000,100", "--seed", "7", "--dtype", "float16"]
    args += ["--distribution", distribution, "-o", str(target)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, ["check", str(target)])
    assert result.exit_code == 0, result.stdout
    line = next(x for x in result.stdout.splitlines() if "bounds" in x and "max |x|" in x)
    value, sign, allowed = line.split("max |x| = ")[1].split(" (")[0].split()
    assert sign == "<=" and float(value) <= float(allowed)
    scaling = vsgen.VarianceScaling(seed=7, distribution=distribution).scaling((1000, 100))
    bound = scaling.limit if distribution == "uniform" else scaling.bound
    assert float(value) < bound if distribution == "uniform" else float(value) <= bound


def test_check_help_documents_stdin():
    text = " ".join(CliRunner().invoke(cli, ["check", "--help"]).stdout.split())
    assert "FILE|-" in text and "'-' reads standard input" in text.replace("FILE '-'", "'-'")


@pytest.mark.parametrize(
    ("data", "args"),
    [
        (b"hello", ["--scale", "1"]),  # not a tensor file
        (None, []),  # a .npy records nothing to expect
        ("truncated", ["--scale", "1"]),  # a header cut short
    ],
)
def test_check_stdin_errors_name_standard_input_not_the_buffer(tmp_path, data, args):
    made = run_vsgen("sample", "--shape", "64,64", "--seed", "0", "-o", "-").stdout
    if data is None:
        data = made
    elif data == "truncated":
        data = made[:100]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = run_vsgen("check", "-", *args, input=data, env=env)
    assert done.returncode == 2
    message = done.stderr.decode()
    assert message.startswith("Error: - (standard input)"), message
    assert len(message.splitlines()) == 1
    assert str(tmp_path) not in message and "vsgen-check" not in message
    assert os.listdir(tmp_path) == []


def test_check_stdin_whole_file_report_names_standard_input(tmp_path):
    source = tmp_path / "m.safetensors"
    vsgen.save_model(source, {"seed": 1, "tensors": {"a.weight": [64, 32], "a.bias": [32]}})
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = run_vsgen("check", "-", "--json", input=source.read_bytes(), env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == "-"
    assert {item["path"] for item in report["tensors"]} == {"-"}
    assert str(tmp_path) not in done.stdout.decode()
    missing = run_vsgen("check", "-", "--name", "nope", input=source.read_bytes(), env=env)
    assert missing.returncode == 2
    assert missing.stderr.decode().startswith("Error: - (standard input) has no tensor named")
    assert os.listdir(tmp_path) == ["m.safetensors"]
