"""Command-line polish: option names in errors, one integer rule, one spelling
rule, open-ended --rows, options a command ignores, --name, config --keras,
the channels-last hint, --version, completion, unrepresentable scales, and
every command failing loudly when stdout is closed or full."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import vsgen
from vsgen.cli import cli

SMALL = ["--shape", "6,4", "--seed", "3"]


def invoke(args: list[str], input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(cli, args, input=input)


def one_error_line(result: Result, exit_code: int = 2) -> str:
    assert result.exit_code == exit_code, (result.exit_code, result.stderr, result.stdout)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def run_vsgen(*args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "vsgen", *args], timeout=120, **kwargs)


# --- errors name the command-line option --------------------------------------------


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["--rows", "0:9"], ["--rows"]),
        (["--shard", "5/4"], ["--shard"]),
        (["--dtype", "int8"], ["--dtype"]),
        (["--mode", "fan_sum"], ["--mode"]),
        (["--distribution", "cauchy"], ["--distribution"]),
        (["--layout", "caffe"], ["--layout"]),
        (["--stream", "mt19937"], ["--stream"]),
        (["--preset", "xavier"], ["--preset"]),
        (["--in-axes", "0", "--out-axes", "5"], ["--out-axes"]),
        (["--scale", "-1"], ["--scale"]),
        (["--scale", "1e-320"], ["--scale", "--dtype"]),
    ],
)
def test_errors_name_the_option_never_the_python_argument(tmp_path, args, options):
    result = invoke(["sample", *SMALL, *args, "-o", str(tmp_path / "w.npy")])
    line = one_error_line(result)
    for option in options:
        assert option in line, line
    assert "Argument" not in line and "`" not in line, line
    assert os.listdir(tmp_path) == []


def test_keras_seed_range_names_the_option(tmp_path):
    args = ["sample", "--shape", "4", "--stream", "keras", "--seed", str(2**32)]
    line = one_error_line(invoke([*args, "-o", str(tmp_path / "w.npy")]))
    assert line.startswith("Error: --seed must be in [0, 2**32)"), line


# --- numbers that the output dtype cannot represent ---------------------------------


@pytest.mark.parametrize(
    ("shape", "scale", "dtype", "distribution", "word"),
    [
        ("1", "1e308", "float64", "uniform", "too large"),  # limit = sqrt(3e308) = inf
        ("1", "1e78", "float32", "truncated_normal", "too large"),  # 2s beyond float32
        ("4,4", "1e12", "float16", "uniform", "too large"),
        ("4,4", "1e-320", "float32", "truncated_normal", "too small"),  # writes zeros today
        ("4,4", "1e-320", "float64", "truncated_normal", "too small"),  # variance subnormal
        ("4,4", "1e-12", "float16", "untruncated_normal", "too small"),  # subnormal float16
    ],
)
def test_unrepresentable_scales_are_refused_at_planning(
    tmp_path, shape, scale, dtype, distribution, word
):
    args = ["sample", "--shape", shape, "--scale", scale, "--dtype", dtype, "--seed", "0"]
    args += ["--distribution", distribution, "-o", str(tmp_path / "w.npy")]
    line = one_error_line(invoke(args))
    assert word in line and "--scale" in line and f"--dtype {dtype}" in line, line
    assert os.listdir(tmp_path) == []
    # The library refuses the same plan (API callers get the same protection).
    init = vsgen.VarianceScaling(scale=float(scale), distribution=distribution, seed=0)
    with pytest.raises(ValueError, match=word):
        init.plan(vsgen.parse_shape(shape), dtype)


def test_the_smallest_representable_scales_still_work(tmp_path):
    target = tmp_path / "w.npy"
    args = ["sample", "--shape", "64,64", "--scale", "1e-30", "--seed", "0", "-o", str(target)]
    assert invoke(args).exit_code == 0
    values = np.load(target)
    assert np.all(np.isfinite(values)) and np.count_nonzero(values) == values.size


# --- one rule for integers and numbers ----------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--seed", "٣"),  # Arabic-Indic three: int() would take it
        ("--seed", "1_0"),  # int() would read 10
        ("--seed", "²"),
        ("--seed", "+3"),
        ("--threads", "٣"),
        ("--threads", "1_0"),
        ("--shape", "٣,٤"),
        ("--shape", "1_0,4"),
        ("--rows", "٣:"),
        ("--rows", "1_0:"),
        ("--shard", "١/٤"),
        ("--scale", "1_0"),
        ("--scale", "٣"),
        ("--scale", "0x10"),
    ],
)
def test_one_integer_rule_across_options(tmp_path, option, value):
    args = {"--shape": ["--seed", "1"], "--seed": ["--shape", "8,4"]}.get(option, SMALL)
    line = one_error_line(invoke(["sample", *args, option, value, "-o", str(tmp_path / "w.npy")]))
    assert option in line and value in line, line
    assert os.listdir(tmp_path) == []


def test_plain_integers_and_numbers_still_work(tmp_path):
    target = tmp_path / "w.npy"
    args = ["sample", "--shape", " 8 , 4 ", "--seed", "0012", "--threads", "1"]
    args += ["--scale", "2.5e-1", "-o", str(target)]
    assert invoke(args).exit_code == 0
    expected = vsgen.VarianceScaling(scale=0.25, seed=12).sample((8, 4))
    assert np.load(target).tobytes() == expected.tobytes()


# --- --rows with open ends ----------------------------------------------------------


@pytest.mark.parametrize(("rows", "selection"), [("7:", slice(7, None)), (":3", slice(0, 3))])
def test_rows_with_an_open_end(tmp_path, rows, selection):
    full, part = tmp_path / "full.npy", tmp_path / "part.npy"
    assert invoke(["sample", "--shape", "10,4", "--seed", "9", "-o", str(full)]).exit_code == 0
    args = ["sample", "--shape", "10,4", "--seed", "9", "--rows", rows, "-o", str(part)]
    assert invoke(args).exit_code == 0
    assert np.load(part).tobytes() == np.load(full)[selection].tobytes()
    # And from Python, with None for the open end.
    start, stop = selection.start, selection.stop
    python = vsgen.VarianceScaling(seed=9).sample((10, 4), rows=(start, stop))
    assert python.tobytes() == np.load(part).tobytes()


# --- one spelling rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lenient", "canonical"),
    [
        (["--preset", "he-normal"], ["--preset", "he_normal"]),
        (["--preset", "HeNormal"], ["--preset", "he_normal"]),
        (["--preset", "Kaiming-Normal"], ["--preset", "kaiming_normal"]),
        (["--preset", "kaiming_uniform_"], ["--preset", "kaiming_uniform"]),
        (["--mode", "fan-in"], ["--mode", "fan_in"]),
        (["--mode", "FAN_AVG"], ["--mode", "fan_avg"]),
        (["--distribution", "Truncated-Normal"], ["--distribution", "truncated_normal"]),
        (["--distribution", "NORMAL"], ["--distribution", "truncated_normal"]),
        (["--dtype", "fp16"], ["--dtype", "float16"]),
        (["--dtype", "BF16", "--format", "raw"], ["--dtype", "bfloat16", "--format", "raw"]),
        (["--layout", "PyTorch"], ["--layout", "torch"]),
        (["--stream", "Keras"], ["--stream", "keras"]),
    ],
)
def test_one_leniency_rule_for_names(tmp_path, lenient, canonical):
    one, two = tmp_path / "a.npy", tmp_path / "b.npy"
    assert invoke(["sample", *SMALL, *lenient, "-o", str(one)]).exit_code == 0
    assert invoke(["sample", *SMALL, *canonical, "-o", str(two)]).exit_code == 0
    assert one.read_bytes() == two.read_bytes()


def test_help_lists_the_aliases_and_the_rule():
    text = invoke(["sample", "--help"]).stdout
    flat = " ".join(text.split())
    for alias in ("fp16", "bf16", "half", "normal for truncated_normal", "pytorch for torch"):
        assert alias in flat, alias
    for preset in ("kaiming_normal", "xavier_uniform", "kaiming_normal_", "HeNormal"):
        assert preset in flat, preset
    assert "Names ignore case and accept '-' for '_'" in flat


# --- describe and check refuse what they ignore ------------------------------------


@pytest.mark.parametrize("option", [["--seed", "1"], ["--stream", "keras"]])
@pytest.mark.parametrize("command", [["describe", "--shape", "4,4"], ["check", "w.npy"]])
def test_describe_and_check_refuse_options_they_ignore(command, option):
    line = one_error_line(invoke([*command, *option]))
    assert f"does not use {option[0]}" in line, line


def test_describe_no_longer_mentions_a_stream():
    result = invoke(["describe", "--shape", "4,4", "--json"])
    assert result.exit_code == 0
    assert "stream" not in json.loads(result.stdout)


# --- --name --------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["w.npy", "w.raw", "-"])
def test_name_with_an_unnamed_format_is_an_error(tmp_path, output):
    target = output if output == "-" else str(tmp_path / output)
    line = one_error_line(invoke(["sample", *SMALL, "--name", "kernel", "-o", target]))
    assert "--name" in line
    assert os.listdir(tmp_path) == []


def test_name_where_files_have_names(tmp_path):
    from safetensors.numpy import load_file

    target = tmp_path / "w.safetensors"
    assert invoke(["sample", *SMALL, "--name", "kernel", "-o", str(target)]).exit_code == 0
    assert list(load_file(str(target))) == ["kernel"]
    # --name picks the recorded tensor for --config-from: a .npy copy is fine.
    copy = tmp_path / "copy.npy"
    args = ["sample", "--config-from", str(target), "--name", "kernel", "-o", str(copy)]
    assert invoke(args).exit_code == 0
    assert np.array_equal(np.load(copy), load_file(str(target))["kernel"])


# --- config --keras and the stream --------------------------------------------------


def test_config_keras_refuses_a_stream():
    line = one_error_line(invoke(["config", "--keras", "--seed", "1", "--stream", "keras"]))
    assert "--stream" in line and "--keras" in line
    result = invoke(["config", "--keras", "--seed", "1"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["class_name"] == "VarianceScaling"


# --- channels-last shapes under --layout torch --------------------------------------


@pytest.mark.parametrize(
    ("shape", "warned"),
    [("3,3,64,128", True), ("1,1,256,512", True), ("64,3,7,7", False), ("32,1,3,3", False)],
)
def test_channels_last_hint_under_torch_layout(tmp_path, shape, warned):
    args = ["sample", "--shape", shape, "--seed", "1", "--layout", "torch"]
    result = invoke([*args, "-o", str(tmp_path / "w.npy")])
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    if warned:
        assert len(lines) == 1 and lines[0].startswith("warning: shape "), result.stderr
        assert "channels-last" in lines[0]
    else:
        assert lines == []
    # Never under the keras layout, where that shape is normal.
    keras = invoke(["sample", "--shape", shape, "--seed", "1", "-o", str(tmp_path / "k.npy")])
    assert keras.stderr == ""


# --- version, completion ------------------------------------------------------------


def test_version_names_the_default_stream_and_the_kernels(monkeypatch):
    monkeypatch.setenv("VSGEN_KERNEL", "numpy")
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout == (
        f"vsgen {vsgen.__version__} (stream vsgen/1, kernels: numpy (VSGEN_KERNEL=numpy))\n"
    )
    assert vsgen.__version__ == "0.2.0"


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete --no-files")],
)
def test_shell_completion_script_is_produced(shell, marker):
    done = run_vsgen(env={**os.environ, "_VSGEN_COMPLETE": f"{shell}_source"})
    assert done.returncode == 0, done.stderr
    script = done.stdout.decode()
    assert marker in script and "_VSGEN_COMPLETE" in script


def test_completion_completes_options_and_commands():
    env = {**os.environ, "_VSGEN_COMPLETE": "bash_complete", "COMP_CWORD": "2"}
    done = run_vsgen(env={**env, "COMP_WORDS": "vsgen sample --pre"})
    assert "plain,--preset" in done.stdout.decode().split()
    done = run_vsgen(env={**env, "COMP_WORDS": "vsgen de", "COMP_CWORD": "1"})
    assert "plain,describe" in done.stdout.decode().split()


# --- stdout closed or full ----------------------------------------------------------

PRINTING = {
    "config": ["config", "--seed", "1"],
    "describe": ["describe", "--shape", "4,4"],
    "describe-json": ["describe", "--shape", "4,4", "--json"],
    "check": ["check", "w.npy", "--scale", "1"],
    "check-json": ["check", "w.npy", "--scale", "1", "--json"],
    "version": ["--version"],
    "help": ["--help"],
    "sample-help": ["sample", "--help"],
}


def runtime_failure_code(args: list[str]) -> int:
    """1, or 3 for ``check``, whose 1 means "NOT consistent"."""
    return 3 if args[0] == "check" else 1


@pytest.fixture
def small_npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "w.npy", vsgen.VarianceScaling(seed=0).sample((64, 32)))
    return tmp_path


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", PRINTING.values(), ids=PRINTING.keys())
def test_full_stdout_fails_with_one_line(small_npy, args):
    with open("/dev/full", "wb") as full:
        done = run_vsgen(*args, cwd=small_npy, stdout=full, stderr=subprocess.PIPE)
    assert done.returncode == runtime_failure_code(args)
    assert done.stderr == b"Error: cannot write the output: No space left on device\n"


@pytest.mark.parametrize("args", PRINTING.values(), ids=PRINTING.keys())
def test_closed_stdout_fails_with_one_line(small_npy, args):
    code = "import os, sys; os.close(1); os.execv(sys.executable, sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "vsgen", *args],
        cwd=small_npy,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    assert done.returncode == runtime_failure_code(args)
    assert done.stderr == b"Error: cannot write the output: standard output is closed\n"


# --- describe on an ASCII terminal --------------------------------------------------


def test_describe_works_with_an_ascii_stdout():
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = run_vsgen("describe", "--shape", "3,3,64,128", "--preset", "he_normal", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    text = done.stdout.decode("ascii")  # raises if anything is not ASCII
    assert "+/-0.133978731" in text


# --- the output directory -----------------------------------------------------------


@pytest.mark.skipif(
    not os.path.isdir("/proc/self") or os.statvfs("/proc").f_blocks != 0,
    reason="needs a /proc without storage",
)
def test_proc_is_not_writable_rather_than_full():
    line = one_error_line(invoke(["sample", *SMALL, "-o", "/proc/x.npy"]), exit_code=1)
    assert "not writable" in line and "free" not in line


def test_npydir_names_that_collide_are_refused_up_front(tmp_path):
    spec = tmp_path / "model.toml"
    spec.write_text('seed = 1\n[tensors]\n"w" = [4, 3]\n"w.npy/b" = [3]\n')
    args = ["sample", "--spec", str(spec), "--format", "npydir", "-o", str(tmp_path / "out")]
    line = one_error_line(invoke(args))
    assert "'w' and 'w.npy/b' collide" in line
    assert sorted(os.listdir(tmp_path)) == ["model.toml"]
