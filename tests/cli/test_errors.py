"""Every mistake gets one actionable line on stderr and exit code 2.

Each bad input is run through the real command line (click's ``CliRunner``,
which keeps stderr apart from stdout), and a few through ``python -m vsgen``
to see the real process exit code. A bad input must leave no file behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vsgen.cli import cli

SAMPLE = ["sample", "--seed", "0", "-o", "w.npy"]
SMALL = ["--shape", "4,4"]
FORTY_DIMS = ",".join(["1"] * 40)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory holding the files some cases refer to."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep.txt").write_text("not vsgen's\n")
    (tmp_path / "existing.npy").write_bytes(b"precious bytes")
    (tmp_path / "notutf8.json").write_bytes(b"\xff\xfe{\x00")
    (tmp_path / "notes.txt").write_text("plain text, no tensors\n")
    return tmp_path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too) with its bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def invoke(args: list[str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)


def assert_one_line_error(result: Result, exit_code: int, *mentions: str) -> str:
    """Exit code as given, exactly one line on stderr, nothing on stdout."""
    assert result.exit_code == exit_code, (result.exit_code, result.stderr, result.stdout)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("Error: ") and len(line) > len("Error: ") + 10, line
    for mention in mentions:
        assert mention.lower() in line.lower(), (mention, line)
    return line


# (arguments, text on stdin, what the message must mention)
BAD_INPUTS = [
    # shapes
    pytest.param([*SAMPLE, "--shape", ""], None, ["--shape", "''"], id="shape-empty"),
    pytest.param([*SAMPLE, "--shape", ","], None, ["--shape", "','"], id="shape-comma"),
    pytest.param([*SAMPLE, "--shape=-1"], None, ["--shape", "-1"], id="shape-negative"),
    pytest.param([*SAMPLE, "--shape", "0.5"], None, ["--shape", "0.5"], id="shape-float"),
    pytest.param([*SAMPLE, "--shape", "abc"], None, ["--shape", "abc"], id="shape-letters"),
    pytest.param([*SAMPLE, "--shape", "1,,2"], None, ["--shape", "1,,2"], id="shape-empty-dim"),
    pytest.param([*SAMPLE, "--shape", "4,²"], None, ["--shape", "²"], id="shape-superscript"),
    pytest.param([*SAMPLE, "--shape", FORTY_DIMS], None, ["--shape", "40"], id="shape-40-dims"),
    pytest.param(
        [*SAMPLE, "--shape", f"{2**40},{2**40}"], None, ["--shape", "64-bit"], id="shape-overflow"
    ),
    pytest.param(["describe", "--shape", "3x"], None, ["--shape", "3x"], id="describe-shape"),
    pytest.param([*SAMPLE, *SMALL, "--fan-shape", "a,b"], None, ["--fan-shape"], id="fan-shape"),
    # scale
    pytest.param([*SAMPLE, *SMALL, "--scale", "0"], None, ["scale", "0"], id="scale-zero"),
    pytest.param([*SAMPLE, *SMALL, "--scale=-1"], None, ["scale", "-1"], id="scale-negative"),
    pytest.param([*SAMPLE, *SMALL, "--scale", "nan"], None, ["scale", "nan"], id="scale-nan"),
    pytest.param([*SAMPLE, *SMALL, "--scale", "inf"], None, ["scale", "inf"], id="scale-inf"),
    pytest.param([*SAMPLE, *SMALL, "--scale", "abc"], None, ["--scale", "abc"], id="scale-text"),
    pytest.param(
        [*SAMPLE, *SMALL, "--scale", "1e308", "--dtype", "float16"],
        None,
        ["scale", "float16"],
        id="scale-overflows-dtype",
    ),
    # names that must be one of a list
    pytest.param([*SAMPLE, *SMALL, "--mode", "fan_sum"], None, ["mode", "fan_sum"], id="mode"),
    pytest.param(
        [*SAMPLE, *SMALL, "--distribution", "cauchy"], None, ["distribution", "cauchy"], id="dist"
    ),
    pytest.param([*SAMPLE, *SMALL, "--preset", "xavier"], None, ["preset", "xavier"], id="preset"),
    pytest.param([*SAMPLE, *SMALL, "--dtype", "int32"], None, ["dtype", "int32"], id="dtype-int"),
    pytest.param([*SAMPLE, *SMALL, "--dtype", "bool"], None, ["dtype", "bool"], id="dtype-bool"),
    pytest.param([*SAMPLE, *SMALL, "--dtype", "float8"], None, ["dtype", "float8"], id="dtype"),
    pytest.param([*SAMPLE, *SMALL, "--format", "csv"], None, ["format", "csv"], id="format"),
    pytest.param(
        [*SAMPLE, *SMALL, "--stream", "mt19937"], None, ["stream", "mt19937"], id="stream"
    ),
    pytest.param([*SAMPLE, *SMALL, "--layout", "caffe"], None, ["layout", "caffe"], id="layout"),
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "-o", "w.txt"], None, ["w.txt", "--format"], id="suffix"
    ),
    pytest.param(["sample", "--seed", "0", *SMALL, "-o", "w"], None, ["no suffix"], id="no-suffix"),
    # seeds
    pytest.param(
        ["sample", *SMALL, "-o", "w.npy", "--seed=-1"], None, ["seed", "-1"], id="seed-neg"
    ),
    pytest.param(
        ["sample", *SMALL, "-o", "w.npy", "--seed", str(2**64)],
        None,
        ["seed", "2**64"],
        id="seed-2**64",
    ),
    pytest.param(
        ["sample", *SMALL, "-o", "w.npy", "--seed", "1.5"], None, ["--seed", "1.5"], id="seed-float"
    ),
    pytest.param(
        ["sample", *SMALL, "-o", "w.npy", "--seed", str(2**32), "--stream", "keras"],
        None,
        ["seed", "keras"],
        id="seed-keras-2**32",
    ),
    pytest.param(["config", "--seed", "-5"], None, ["seed", "-5"], id="config-seed"),
    # options that contradict each other or are incomplete
    pytest.param(
        [*SAMPLE, *SMALL, "--preset", "he_normal", "--scale", "2"],
        None,
        ["--preset", "--scale"],
        id="preset-and-scale",
    ),
    pytest.param(
        [*SAMPLE, *SMALL, "--preset", "he_normal", "--config", "-"],
        "{}",
        ["--preset", "--config"],
        id="preset-and-config",
    ),
    pytest.param(
        [*SAMPLE, *SMALL, "--rows", "0:2", "--shard", "0/2"],
        None,
        ["--rows", "--shard"],
        id="rows+shard",
    ),
    pytest.param(
        [*SAMPLE, *SMALL, "--in-axes", "0"], None, ["--in-axes", "--out-axes"], id="in-axes"
    ),
    pytest.param(
        [*SAMPLE, *SMALL, "--in-axes", "x", "--out-axes", "1"],
        None,
        ["--in-axes", "x"],
        id="axes-text",
    ),
    pytest.param(
        [*SAMPLE, *SMALL, "--in-axes", "0", "--out-axes", "5"],
        None,
        ["--out-axes", "5"],
        id="axis-range",
    ),
    pytest.param(
        [*SAMPLE, "--config-from", "notes.txt"],
        None,
        ["--config-from", "--seed"],
        id="config-from+seed",
    ),
    pytest.param(["config", "--layout", "torch", "--keras"], None, ["torch"], id="keras-torch"),
    # row selections, threads
    pytest.param([*SAMPLE, *SMALL, "--rows", "0:9"], None, ["rows", "0:9"], id="rows-range"),
    pytest.param([*SAMPLE, *SMALL, "--rows", "3:1"], None, ["rows", "3:1"], id="rows-reversed"),
    pytest.param([*SAMPLE, *SMALL, "--rows", "a:b"], None, ["--rows", "a:b"], id="rows-text"),
    pytest.param(
        [*SAMPLE, *SMALL, "--rows", "²:3"], None, ["--rows", "²:3"], id="rows-superscript"
    ),
    pytest.param([*SAMPLE, *SMALL, "--shard", "4/4"], None, ["shard", "4/4"], id="shard-4/4"),
    pytest.param([*SAMPLE, *SMALL, "--shard", "0/0"], None, ["shard", "0/0"], id="shard-0/0"),
    pytest.param([*SAMPLE, *SMALL, "--shard", "half"], None, ["--shard", "half"], id="shard-text"),
    pytest.param(
        [*SAMPLE, "--shape", "()", "--rows", "0:1"], None, ["rows", "scalar"], id="rows-0d"
    ),
    pytest.param([*SAMPLE, *SMALL, "--threads", "0"], None, ["--threads", "0"], id="threads-0"),
    pytest.param(
        [*SAMPLE, *SMALL, "--threads", "two"], None, ["--threads", "two"], id="threads-text"
    ),
    # outputs
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "-o", "adir"], None, ["adir", "file name"], id="o-dir"
    ),
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "-o", "adir", "--force"], None, ["adir"], id="o-dir-force"
    ),
    pytest.param(["sample", "--seed", "0", *SMALL, "-o", "new/"], None, ["new/"], id="o-slash"),
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "-o", "missing/w.npy"], None, ["missing"], id="o-no-dir"
    ),
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "-o", "existing.npy"],
        None,
        ["existing.npy", "--force"],
        id="o-exists",
    ),
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "-o", "-", "--format", "h5"], None, ["h5"], id="stdout-h5"
    ),
    pytest.param(
        [*SAMPLE, *SMALL, "--dtype", "bfloat16"], None, ["bfloat16", ".npy"], id="bf16-npy"
    ),
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "--dtype", "bfloat16", "-o", "w.h5"],
        None,
        ["bfloat16", ".h5"],
        id="bf16-h5",
    ),
    pytest.param(
        ["sample", "--seed", "0", *SMALL, "--dtype", "bf16", "-o", "-"],
        None,
        ["bfloat16"],
        id="bf16-out",
    ),
    pytest.param([*SAMPLE, *SMALL, "--name", ""], None, ["name"], id="name-empty"),
    # configs from files that are missing or unreadable
    pytest.param(
        [*SAMPLE, *SMALL, "--config", "nope.json"], None, ["--config", "nope.json"], id="cfg-404"
    ),
    pytest.param([*SAMPLE, *SMALL, "--config", "adir"], None, ["--config", "adir"], id="cfg-dir"),
    pytest.param(
        [*SAMPLE, *SMALL, "--config", "notutf8.json"],
        None,
        ["--config", "notutf8.json"],
        id="cfg-binary",
    ),
    pytest.param(
        ["sample", "-o", "w.npy", "--config-from", "nope.h5"],
        None,
        ["--config-from", "nope.h5"],
        id="config-from-404",
    ),
    pytest.param(
        ["sample", "-o", "w.npy", "--config-from", "notes.txt"],
        None,
        ["notes.txt"],
        id="config-from-text",
    ),
    # the command line itself
    pytest.param([*SAMPLE, *SMALL, "--bogus"], None, ["--bogus"], id="unknown-option"),
    pytest.param(["bogus"], None, ["bogus"], id="unknown-command"),
    pytest.param(SAMPLE, None, ["--shape"], id="sample-no-shape"),
    pytest.param(["sample", *SMALL], None, ["--output"], id="sample-no-output"),
    pytest.param(["describe"], None, ["--shape"], id="describe-no-shape"),
    pytest.param([*SAMPLE, *SMALL, "--scale"], None, ["--scale"], id="option-no-value"),
]


@pytest.mark.parametrize(("args", "stdin", "mentions"), BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(
    workdir: Path, args: list[str], stdin: str | None, mentions: list[str]
) -> None:
    before = snapshot(workdir)
    result = invoke(args, stdin)
    assert_one_line_error(result, 2, *mentions)
    assert snapshot(workdir) == before, "a refused command must not touch the file system"


def test_the_table_is_long_enough() -> None:
    assert len(BAD_INPUTS) >= 40


# (config text, what the message must mention)
BAD_CONFIGS = [
    pytest.param("{", ["not valid JSON"], id="malformed"),
    pytest.param('{"scale": 2,}', ["not valid JSON"], id="trailing-comma"),
    pytest.param("", ["empty"], id="empty"),
    pytest.param("  \n", ["empty"], id="blank"),
    pytest.param("[1,2]", ["JSON object", "list"], id="list"),
    pytest.param("3", ["JSON object", "int"], id="number"),
    pytest.param("null", ["JSON object"], id="null"),
    pytest.param('"xavier"', ["preset", "xavier"], id="unknown-name"),
    pytest.param('{"scale": "big"}', ["scale", "big"], id="scale-text"),
    pytest.param('{"scale": -2}', ["scale", "-2"], id="scale-negative"),
    pytest.param('{"scale": NaN}', ["scale", "nan"], id="scale-nan"),
    pytest.param('{"mode": 3}', ["mode", "3"], id="mode-number"),
    pytest.param('{"distribution": null}', ["distribution", "None"], id="distribution-null"),
    pytest.param('{"seed": -1}', ["seed", "-1"], id="seed-negative"),
    pytest.param('{"seed": 1.5}', ["seed", "1.5"], id="seed-float"),
    pytest.param('{"seed": "7"}', ["seed", "'7'"], id="seed-text"),
    pytest.param('{"scale": 1, "colour": "red"}', ["unknown", "colour"], id="unknown-key"),
    pytest.param('{"input_axes": [0]}', ["input_axes", "output_axes"], id="axes-alone"),
    pytest.param('{"class_name": "Orthogonal"}', ["class_name", "Orthogonal"], id="class-name"),
    pytest.param('{"class_name": "HeNormal", "config": [1]}', ["config"], id="inner-list"),
    pytest.param(
        '{"class_name": "HeNormal", "config": {"scale": 3}}',
        ["HeNormal", "scale"],
        id="preset-clash",
    ),
    pytest.param("[" * 100_000 + "]" * 100_000, ["nested too deeply"], id="deep-nesting"),
    pytest.param('{"seed": 1' + "0" * 5000 + "}", ["config"], id="seed-5000-digits"),
]


@pytest.mark.parametrize("source", ["file", "stdin"])
@pytest.mark.parametrize(("text", "mentions"), BAD_CONFIGS)
def test_bad_config_is_one_line_and_exit_2(
    workdir: Path, source: str, text: str, mentions: list[str]
) -> None:
    if source == "file":
        (workdir / "config.json").write_text(text, encoding="utf-8")
        args, stdin = [*SAMPLE, *SMALL, "--config", "config.json"], None
    else:
        args, stdin = [*SAMPLE, *SMALL, "--config", "-"], text
    before = snapshot(workdir)
    assert_one_line_error(invoke(args, stdin), 2, *mentions)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("command", [["config"], ["describe", "--shape", "4,4"]])
def test_bad_config_on_stdin_for_every_command(workdir: Path, command: list[str]) -> None:
    result = invoke([*command, "--config", "-"], '{"mode": 3}')
    assert_one_line_error(result, 2, "mode", "3")


def _record_file(path: Path, record: object) -> None:
    """A safetensors file whose vsgen record is ``record`` (possibly malformed)."""
    import numpy
    from safetensors.numpy import save_file

    document = {"format": 1, "tensors": {"weight": record}}
    save_file({"weight": numpy.zeros(2, numpy.float32)}, str(path), {"vsgen": json.dumps(document)})


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({}, id="empty"),
        pytest.param([], id="list"),
        pytest.param(
            {"config": {"seed": 1}, "full_shape": [4, 4], "rows": ["x", 1]}, id="rows-text"
        ),
        pytest.param({"config": {"seed": 1}, "full_shape": [4, 4], "rows": [0]}, id="rows-short"),
        pytest.param({"config": {"seed": 1}, "full_shape": [4, 4], "fan_shape": 7}, id="fan-shape"),
        pytest.param({"config": {"seed": 1}, "full_shape": 16}, id="full-shape-int"),
        pytest.param({"config": {"seed": 1}, "full_shape": [4, 4], "dtype": "int8"}, id="dtype"),
        pytest.param({"config": {"mode": "x"}, "full_shape": [4, 4]}, id="config"),
    ],
)
def test_malformed_recorded_config_is_exit_2(workdir: Path, record: object) -> None:
    _record_file(workdir / "made.safetensors", record)
    result = invoke(["sample", "--config-from", "made.safetensors", "-o", "w.npy"])
    assert_one_line_error(result, 2)
    assert not (workdir / "w.npy").exists()


def test_config_from_file_without_provenance(workdir: Path) -> None:
    import numpy

    numpy.save(workdir / "plain.npy", numpy.zeros(3, numpy.float32))
    result = invoke(["sample", "--config-from", "plain.npy", "-o", "w.npy"])
    assert_one_line_error(result, 2, "provenance")


def test_valid_inputs_still_work(workdir: Path) -> None:
    """The checks above refuse mistakes, not the documented spellings."""
    import numpy

    result = invoke(["sample", "--shape", "(8,)", "--seed", "1", "-o", "a.npy", "--rows", "2:6"])
    assert result.exit_code == 0, result.stderr
    assert numpy.load(workdir / "a.npy").shape == (4,)
    (workdir / "he.json").write_text('{"class_name": "HeNormal", "config": {"seed": 3}}')
    result = invoke(["sample", "--shape", "3x3x2", "--config", "he.json", "-o", "b.npy"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # the seed came from the config: nothing to report


# --- the real process: exit codes and stderr as a shell sees them ----------------------


def run_vsgen(args: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vsgen", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, "VSGEN_DEBUG": ""},
    )


@pytest.mark.parametrize(
    ("args", "stdin", "mention"),
    [
        pytest.param(["sample", "--shape", "abc", "-o", "w.npy"], b"", "--shape", id="shape"),
        pytest.param(
            ["sample", "--shape", "4", "--seed=-1", "-o", "w.npy"], b"", "seed", id="seed"
        ),
        pytest.param(["sample", "--shape", "4", "-o", "none/w.npy"], b"", "none", id="no-dir"),
        pytest.param(["config", "--config", "-"], b"[1,2]", "JSON object", id="config-stdin"),
        pytest.param(["describe", "--shape", "4", "--wat"], b"", "--wat", id="unknown-option"),
        pytest.param(
            ["config", "--config", "-"], b"[" * 100_000, "nested too deeply", id="deep-json"
        ),
    ],
)
def test_real_process_exit_code_2(
    tmp_path: Path, args: list[str], stdin: bytes, mention: str
) -> None:
    done = run_vsgen(args, tmp_path, stdin)
    assert done.returncode == 2, done.stderr
    assert done.stdout == b""
    text = done.stderr.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert text.startswith("Error: ") and mention in text and "Traceback" not in text
    assert list(tmp_path.iterdir()) == []


def test_real_process_refuses_to_write_over_a_file(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"keep me")
    done = run_vsgen(["sample", "--shape", "4", "-o", "w.safetensors"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "Error: output file 'w.safetensors' exists; use --force to overwrite"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
    assert (tmp_path / "w.safetensors").read_bytes() == b"keep me"


def test_bare_command_shows_the_help(workdir: Path) -> None:
    """No command at all: the help, readable (not squeezed into one line), exit 2."""
    result = invoke([])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Usage: ")
    assert "Commands:" in result.stderr and "sample" in result.stderr
    assert len(result.stderr.splitlines()) > 5


# --- standard streams that are closed or full ------------------------------------------


def _closing(fd: int):
    return lambda: os.close(fd)


def test_closed_stdout_with_dash_output(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", "--shape", "4", "--seed", "0", "-o", "-"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        preexec_fn=_closing(1),
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == b"Error: standard output is closed; use -o FILE\n"


def test_closed_stdin_with_config_dash(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vsgen", "config", "--config", "-"],
        cwd=tmp_path,
        capture_output=True,
        preexec_fn=_closing(0),
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == b"Error: --config -: standard input is closed; give --config FILE\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize(
    "args", [["config", "--seed", "1"], ["describe", "--shape", "4,4"]], ids=["config", "describe"]
)
def test_full_stdout_is_a_runtime_failure(tmp_path: Path, args: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "vsgen", *args],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr == b"Error: cannot write the output: No space left on device\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_stderr_does_not_fail_the_run(tmp_path: Path) -> None:
    """`seed: N` cannot be written: the tensor is still made (the seed is in the file)."""
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "vsgen", "sample", "--shape", "4", "-o", "w.h5"],
            cwd=tmp_path,
            stderr=full,
            timeout=60,
        )
    assert done.returncode == 0
    assert (tmp_path / "w.h5").is_file()


def test_closed_stderr_on_a_job_with_a_progress_bar(tmp_path: Path) -> None:
    """2**24 values is where a progress bar starts; with stderr closed there is none."""
    done = subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", "--shape", "4096,4096", "-o", "w.npy"],
        cwd=tmp_path,
        preexec_fn=_closing(2),
        timeout=120,
    )
    assert done.returncode == 0
    assert (tmp_path / "w.npy").stat().st_size == 4096 * 4096 * 4 + 128


def test_an_interrupt_inside_pythons_threading_code_is_still_an_interrupt(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal can land inside ``threading.Condition.wait`` (under every
    ``Event.wait``) just after it released its lock and before the ``try`` that
    takes it back: the ``with`` around it then raises "RuntimeError: release
    unlocked lock", the interrupt its context. Here the interrupt is raised at that
    very step of CPython's own ``Condition.wait``, once, while a command samples."""
    import threading

    from vsgen.streams import counter

    release_save = threading.Condition._release_save

    def interrupted_after_release(self):
        threading.Condition._release_save = release_save  # once only
        release_save(self)
        raise KeyboardInterrupt  # what the signal handler raises at that bytecode

    def fill_waiting(*args, **kwargs):
        threading.Condition._release_save = interrupted_after_release
        threading.Event().wait(1)

    # The mechanism itself, outside vsgen: CPython's with-statement fails so.
    monkeypatch.setattr(threading.Condition, "_release_save", release_save)
    with pytest.raises(RuntimeError, match="release unlocked lock") as raised:
        fill_waiting()
    assert isinstance(raised.value.__context__, KeyboardInterrupt)

    monkeypatch.setattr(counter.VsgenStream, "fill", fill_waiting)
    before = snapshot(workdir)
    result = CliRunner().invoke(cli, [*SAMPLE, *SMALL, "--force"])
    assert result.exit_code == 1, result.stderr
    assert result.stderr == "Error: interrupted\n"
    assert snapshot(workdir) == before
