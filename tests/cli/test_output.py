"""Never lose data: atomic outputs, overwrite safety and pre-flight checks,
seen from the command line.

A run that fails, is interrupted (SIGINT, SIGTERM) or runs out of space
leaves the directory exactly as it was: no partial output, no temporary
file, and a file that was already at the target byte-identical. Signals,
file-size limits and broken pipes are exercised on real processes.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from vsgen.cli import cli
from vsgen.initializer import SamplePlan

FORMATS = ["npy", "h5", "safetensors", "raw"]
OLD_BYTES = b"an older file that must survive\n"


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def listing(directory: Path) -> dict[str, bytes]:
    """Every entry of ``directory`` (hidden ones too) with its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def one_error_line(result: Result) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# --- existing outputs ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_output_is_refused_without_force(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"w.{fmt}"
    target.write_bytes(OLD_BYTES)
    result = invoke(["sample", "--shape", "16,8", "--seed", "0", "-o", str(target)])
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"w.{fmt}" in line and "--force" in line
    assert listing(tmp_path) == {target.name: OLD_BYTES}


@pytest.mark.parametrize("fmt", FORMATS)
def test_force_replaces_an_existing_output(tmp_path: Path, fmt: str, read_back) -> None:
    target = tmp_path / f"w.{fmt}"
    target.write_bytes(OLD_BYTES)
    result = invoke(["sample", "--shape", "16,8", "--seed", "0", "-o", str(target), "--force"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert sorted(listing(tmp_path)) == [target.name], "no temporary file may remain"
    reference = invoke(["sample", "--shape", "16,8", "--seed", "0", "-o", str(tmp_path / "r.npy")])
    assert reference.exit_code == 0
    expected = np.load(tmp_path / "r.npy")
    assert read_back(target, shape=(16, 8)).tobytes() == expected.tobytes()


def test_force_does_not_replace_a_directory(tmp_path: Path) -> None:
    """``-o DIR --force`` must not swap a user's directory for vsgen's output."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "keep.bin").write_bytes(OLD_BYTES)
    result = invoke(
        ["sample", "--shape", "4", "--seed", "0", "-o", str(tmp_path / "models"), "--force"]
    )
    assert result.exit_code == 2
    assert "names a directory" in one_error_line(result)
    assert (tmp_path / "models" / "keep.bin").read_bytes() == OLD_BYTES


SPEC = 'seed = 1\n[tensors]\n"a.weight" = { shape = [4, 3] }\n"a.bias" = { shape = [3] }\n'


@pytest.mark.parametrize(
    "args",
    [["--spec", "model.toml"], ["--shape", "4", "--seed", "0", "--format", "npydir"]],
    ids=["spec", "format-npydir"],
)
def test_force_replaces_only_a_directory_of_npy_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.toml").write_text(SPEC)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_bytes(OLD_BYTES)
    result = invoke(["sample", *args, "-o", "user", "--force"])
    assert result.exit_code == 2
    assert "thesis.tex" in one_error_line(result)
    assert listing(tmp_path / "user") == {"thesis.tex": OLD_BYTES}
    # A directory vsgen wrote before (only .npy files) is replaced as asked.
    assert invoke(["sample", *args, "-o", "tensors", "--format", "npydir"]).exit_code == 0
    assert invoke(["sample", *args, "-o", "tensors", "--force"]).exit_code == 0
    assert all(name.endswith(".npy") for name in listing(tmp_path / "tensors"))
    assert not [path for path in tmp_path.iterdir() if ".vsgen-" in path.name]


def test_target_created_by_someone_else_meanwhile_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "w.npy"
    original = SamplePlan.chunks

    def chunks_then_competitor(self: SamplePlan, *args: object, **kwargs: object):
        yield from original(self, *args, **kwargs)
        target.write_bytes(OLD_BYTES)  # another process finished first

    monkeypatch.setattr(SamplePlan, "chunks", chunks_then_competitor)
    result = invoke(["sample", "--shape", "16,8", "--seed", "0", "-o", str(target)])
    assert result.exit_code == 1
    assert "--force" in one_error_line(result)
    assert listing(tmp_path) == {"w.npy": OLD_BYTES}


# --- failures in the middle of a run -----------------------------------------------


def failing_chunks(error: BaseException):
    """A SamplePlan.chunks replacement: one real chunk, then ``error``."""

    def chunks(self: SamplePlan, *args: object, **kwargs: object):
        yield np.zeros(min(self.size, 64), dtype=self.draw.dtype)
        raise error

    return chunks


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("error", "exit_code", "message"),
    [
        pytest.param(OSError(errno.EIO, "device went away"), 1, "device went away", id="io"),
        pytest.param(KeyboardInterrupt(), 1, "interrupted", id="ctrl-c"),
    ],
)
def test_failure_midway_keeps_the_old_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    error: BaseException,
    exit_code: int,
    message: str,
) -> None:
    target = tmp_path / f"w.{fmt}"
    target.write_bytes(OLD_BYTES)
    monkeypatch.setattr(SamplePlan, "chunks", failing_chunks(error))
    result = invoke(["sample", "--shape", "64,64", "--seed", "0", "-o", str(target), "--force"])
    assert result.exit_code == exit_code
    assert message in one_error_line(result)
    assert listing(tmp_path) == {target.name: OLD_BYTES}


# --- pre-flight checks: refused before any value is computed -----------------------


@pytest.fixture
def no_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command starts computing values."""

    def chunks(self: SamplePlan, *args: object, **kwargs: object):
        raise AssertionError("sampling started before the pre-flight checks refused the job")

    monkeypatch.setattr(SamplePlan, "chunks", chunks)


DiskUsage = namedtuple("DiskUsage", "total used free")


@pytest.mark.parametrize("fmt", FORMATS)
def test_not_enough_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sampling: None, fmt: str
) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10**6, 10**6 - 4096, 4096))
    target = tmp_path / f"w.{fmt}"
    target.write_bytes(OLD_BYTES)
    result = invoke(["sample", "--shape", "64,64", "--seed", "0", "-o", str(target), "--force"])
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "not enough free space" in line and "needs " in line and "4.00 KiB free" in line
    assert listing(tmp_path) == {target.name: OLD_BYTES}


def test_a_huge_but_addressable_tensor_fails_pre_flight(tmp_path: Path, no_sampling: None) -> None:
    """2**62 values fit a 64-bit index but no disk: refused at once, nothing written."""
    result = invoke(["sample", "--shape", f"{2**31},{2**31}", "--seed", "0", "-o", "w.npy"])
    assert result.exit_code == 1
    assert "not enough free space" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "shape", [f"{2**40},{2**40}", f"{2**32},{2**32},2", ",".join(["1"] * 33)], ids=str
)
def test_shapes_beyond_an_index_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sampling: None, shape: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(["sample", "--shape", shape, "--seed", "0", "-o", "w.npy"])
    assert result.exit_code == 2
    assert "--shape" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_directory_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sampling: None
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    real_access = os.access
    # Root may write anywhere; pretend otherwise for this one directory.
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, **kw: (
            False if str(path) == str(locked) else real_access(path, mode, **kw)
        ),
    )
    try:
        result = invoke(["sample", "--shape", "8", "--seed", "0", "-o", str(locked / "w.npy")])
        assert result.exit_code == 1
        assert "not writable" in one_error_line(result)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_missing_directory(tmp_path: Path, no_sampling: None) -> None:
    result = invoke(["sample", "--shape", "8", "--seed", "0", "-o", str(tmp_path / "no" / "w.h5")])
    assert result.exit_code == 2
    assert "does not exist" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["npy", "h5"])
def test_bfloat16_where_the_format_has_none(tmp_path: Path, no_sampling: None, fmt: str) -> None:
    result = invoke(
        [
            "sample",
            "--shape",
            "8",
            "--dtype",
            "bfloat16",
            "--seed",
            "0",
            "-o",
            str(tmp_path / f"w.{fmt}"),
        ]
    )
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "bfloat16" in line and ".safetensors" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["safetensors", "raw"])
def test_bfloat16_where_the_format_has_it(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"w.{fmt}"
    result = invoke(
        ["sample", "--shape", "8", "--dtype", "bfloat16", "--seed", "0", "-o", str(target)]
    )
    assert result.exit_code == 0, result.stderr
    assert target.stat().st_size == 16 if fmt == "raw" else target.stat().st_size > 16
    assert sorted(listing(tmp_path)) == [target.name]


# --- renamed into place, never rewritten -----------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_force_renames_a_new_file_over_the_old_one(tmp_path: Path, fmt: str, read_back) -> None:
    """A hard link keeps the old inode visible: ``--force`` must leave it holding
    the old bytes (nothing was written through the old file) and put a new inode
    at the target (a rename of the finished temporary, not a copy into place)."""
    target = tmp_path / f"w.{fmt}"
    target.write_bytes(OLD_BYTES)
    keep = tmp_path / "old-inode"
    os.link(target, keep)
    old_inode = target.stat().st_ino
    result = invoke(["sample", "--shape", "16,8", "--seed", "0", "-o", str(target), "--force"])
    assert result.exit_code == 0, result.stderr
    assert keep.read_bytes() == OLD_BYTES
    assert keep.stat().st_nlink == 1  # the target no longer names the old inode
    new = target.stat()
    assert new.st_ino != old_inode and new.st_nlink == 1  # no temporary name left on it
    assert read_back(target, shape=(16, 8)).shape == (16, 8)
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, keep.name])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_new_output_has_one_name(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"w.{fmt}"
    assert invoke(["sample", "--shape", "16,8", "--seed", "0", "-o", str(target)]).exit_code == 0
    assert target.stat().st_nlink == 1 and os.listdir(tmp_path) == [target.name]


def interrupt_at_install(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ctrl-C when a finished temporary is about to be moved into place
    (``os.replace``, ``os.link`` or ``os.rename`` of a ``.vsgen-`` name)."""
    attempts: list[str] = []

    def interrupted(real):
        def call(source, destination, *args, **kwargs):
            if ".vsgen-" in os.path.basename(os.fspath(source)):
                attempts.append(os.path.basename(os.fspath(destination)))
                raise KeyboardInterrupt
            return real(source, destination, *args, **kwargs)

        return call

    for name in ("replace", "link", "rename"):
        monkeypatch.setattr(os, name, interrupted(getattr(os, name)))
    return attempts


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("old_file", [False, True], ids=["new", "existing"])
def test_interrupt_between_write_and_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, old_file: bool
) -> None:
    target = tmp_path / f"w.{fmt}"
    if old_file:
        target.write_bytes(OLD_BYTES)
    before = listing(tmp_path)
    attempts = interrupt_at_install(monkeypatch)
    args = ["sample", "--shape", "64,64", "--seed", "0", "-o", str(target), "--force"]
    result = invoke(args)
    assert attempts == [target.name], "the interrupt did not land at the rename"
    assert result.exit_code == 1
    assert "interrupted" in one_error_line(result)
    assert listing(tmp_path) == before


# --- real processes: signals, file-size limits, broken pipes -----------------------


def vsgen_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vsgen", *args]


#: Runs ``python -m vsgen ARGS`` in a child that pauses at a chosen moment and
#: says so by creating MARKER: "write" (after the first chunk was written to the
#: temporary), "sync" (while the commit syncs the temporary) or "rename" (every
#: byte written and synced, the temporary about to be moved into place). The
#: pause is a sleep the test's signal interrupts, or that ends when the test
#: creates MARKER.release (a signal the commit holds), so each signal test writes a
#: few MiB and never races the run.
PAUSING_CHILD = r"""
import os, runpy, sys, time

marker, moment = sys.argv[1], sys.argv[2]
sys.argv = ["vsgen", *sys.argv[3:]]


def pause():
    # Until the signal raises here, or the test lets go (the file marker.release).
    with open(marker, "w"):
        pass
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(marker + ".release"):
            return
        time.sleep(0.01)
    raise SystemExit("the test's signal never came")


if moment == "write":
    from vsgen.formats import output

    write = output.Output.write
    written = []

    def write_then_pause(self, chunk):
        write(self, chunk)
        if not written:
            written.append(chunk.size)
            pause()

    output.Output.write = write_then_pause
elif moment == "sync":
    real_fsync = os.fsync

    def fsync_then_pause(fd):
        real_fsync(fd)
        if ".vsgen-" in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            pause()

    os.fsync = fsync_then_pause
else:
    def pause_before(real):
        def call(source, destination, *args, **kwargs):
            if ".vsgen-" in os.path.basename(os.fspath(source)):
                pause()
            return real(source, destination, *args, **kwargs)
        return call

    os.replace, os.link, os.rename = (pause_before(f) for f in (os.replace, os.link, os.rename))
runpy.run_module("vsgen", run_name="__main__", alter_sys=True)
"""


def start_paused(tmp_path: Path, moment: str, *args: str) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / f"paused-at-{moment}"
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSING_CHILD, str(marker), moment, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "VSGEN_KERNEL": "numpy"},  # no compiler start-up in the child
    )
    return process, marker


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``path`` exists (an event the child makes), or fail if the child ends."""
    wait_for_marker(path, process, timeout)


def wait_for_marker(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``path`` exists (an event the child makes), or fail if the child ends."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the child ended before {path.name}: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.005)


def signal_and_collect(
    process: subprocess.Popen, signum: int, release: Path | None = None
) -> tuple[bytes, bytes]:
    """Send ``signum``; then, if given, create ``release`` (the child goes on if the
    signal was held); the child's output."""
    try:
        process.send_signal(signum)
        if release is not None:
            time.sleep(0.05)
            release.touch()
        return process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def temporaries(directory: Path) -> list[os.DirEntry]:
    return [entry for entry in os.scandir(directory) if ".vsgen-" in entry.name]


#: Two chunks of values (4 Mi each): the first is on disk when the child pauses.
TWO_CHUNKS = "2048,4096"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_no_trace_and_keeps_the_old_file(
    tmp_path: Path, signum: signal.Signals, fmt: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"big.{fmt}"
    target.write_bytes(OLD_BYTES)
    before = listing(out)
    process, marker = start_paused(
        tmp_path,
        "write",
        "sample",
        "--shape",
        TWO_CHUNKS,
        "--threads",
        "1",
        "--seed",
        "0",
        "-o",
        str(target),
        "--force",
    )
    wait_for(marker, process)
    # Values are being written: a hidden temporary beside the target holds some.
    [temporary] = temporaries(out)
    assert temporary.name.startswith(".") and temporary.stat().st_size >= 1 << 20
    stdout, stderr = signal_and_collect(process, signum)
    assert process.returncode == 1, stderr
    assert stderr == b"Error: interrupted\n"
    assert stdout == b""
    assert listing(out) == before


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("old_file", [False, True], ids=["new", "existing"])
def test_signal_between_write_and_rename(
    tmp_path: Path, signum: signal.Signals, fmt: str, old_file: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"w.{fmt}"
    if old_file:
        target.write_bytes(OLD_BYTES)
    process, marker = start_paused(
        tmp_path,
        "rename",
        "sample",
        "--shape",
        "256,128",
        "--seed",
        "0",
        "-o",
        str(target),
        "--force",
    )
    wait_for(marker, process)
    [temporary] = temporaries(out)  # complete, synced, not yet in place
    assert temporary.stat().st_size >= 256 * 128 * 4
    # The commit holds the signal from its last look on: the output goes into place,
    # and the exit status says so.
    _, stderr = signal_and_collect(process, signum, marker.with_name(marker.name + ".release"))
    assert process.returncode == 0 and stderr == b""
    assert [entry.name for entry in os.scandir(out)] == [target.name]
    assert target.read_bytes() != OLD_BYTES and target.stat().st_size >= 256 * 128 * 4


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="names descriptors by /proc")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_the_commit_syncs_stops_it(
    tmp_path: Path, signum: signal.Signals, fmt: str
) -> None:
    """A signal while the commit flushes the temporary to disk stops it before the
    rename: the old file stays, exit 1 and one line."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"w.{fmt}"
    target.write_bytes(OLD_BYTES)
    before = listing(out)
    process, marker = start_paused(
        tmp_path,
        "sync",
        "sample",
        "--shape",
        "256,128",
        "--seed",
        "0",
        "-o",
        str(target),
        "--force",
    )
    wait_for(marker, process)
    _, stderr = signal_and_collect(process, signum, marker.with_name(marker.name + ".release"))
    assert process.returncode == 1 and stderr == b"Error: interrupted\n"
    assert listing(out) == before


@pytest.mark.parametrize("fmt", ["npy", "h5"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_the_output_is_being_created(
    tmp_path: Path, signum: signal.Signals, fmt: str
) -> None:
    """The signal lands the moment the temporary file appears: while it is
    being registered for removal, or (h5) while h5py is first imported."""
    target = tmp_path / f"big.{fmt}"
    target.write_bytes(OLD_BYTES)
    before = listing(tmp_path)
    # 2**24 values on NumPy's path, one thread: a few tenths of a second of work
    # after the temporary appears, and the signal follows within milliseconds.
    process = subprocess.Popen(
        vsgen_command(
            "sample",
            "--shape",
            "4096,4096",
            "--threads",
            "1",
            "--seed",
            "0",
            "-o",
            str(target),
            "--force",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "VSGEN_KERNEL": "numpy"},
    )
    deadline = time.monotonic() + 60
    while not temporaries(tmp_path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no temporary output appeared within 60 s"
        time.sleep(0.001)
    stdout, stderr = signal_and_collect(process, signum)
    assert process.returncode == 1, stderr
    assert stderr == b"Error: interrupted\n" and stdout == b""
    assert listing(tmp_path) == before


def test_interrupt_without_an_old_file_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    process, marker = start_paused(
        tmp_path,
        "write",
        "sample",
        "--shape",
        TWO_CHUNKS,
        "--threads",
        "1",
        "-o",
        str(out / "w.npy"),
    )
    wait_for(marker, process)
    assert len(temporaries(out)) == 1
    _, stderr = signal_and_collect(process, signal.SIGINT)
    assert process.returncode == 1
    # The drawn seed is reported before sampling starts; then the interruption.
    lines = stderr.decode().splitlines()
    assert lines[-1] == "Error: interrupted" and all(
        line.startswith("seed: ") for line in lines[:-1]
    )
    assert list(out.iterdir()) == []


def _limit_file_size() -> None:
    # Runs in the child: writes beyond 1 MiB fail with EFBIG instead of killing it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("old_file", [False, True], ids=["new", "existing"])
def test_disk_full_while_writing(tmp_path: Path, fmt: str, old_file: bool) -> None:
    target = tmp_path / f"w.{fmt}"
    if old_file:
        target.write_bytes(OLD_BYTES)
    before = listing(tmp_path)
    done = subprocess.run(
        vsgen_command(
            "sample", "--shape", "1024,1024", "--seed", "0", "-o", str(target), "--force"
        ),
        capture_output=True,
        preexec_fn=_limit_file_size,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == b""
    text = done.stderr.decode()
    assert text.count("\n") == 1 and text.startswith("Error: "), text
    assert "file size limit" in text and f"w.{fmt}" in text and "[Errno" not in text
    assert listing(tmp_path) == before


@pytest.mark.parametrize("fmt", ["npy", "raw"])
@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "PYTHONUNBUFFERED"])
def test_broken_pipe_exits_quietly(tmp_path: Path, fmt: str, unbuffered: str) -> None:
    """The reader stops after 10 bytes: exit 1 (documented), nothing on stderr.

    With PYTHONUNBUFFERED (common in containers and CI) standard output is
    unbuffered and a write to a closed pipe may first succeed partly; that
    must not be mistaken for success.
    """
    script = (
        f"{' '.join(vsgen_command())} sample --shape 2048,2048 --seed 0 --format {fmt} -o - "
        "2> err.txt | head -c 10 > head.bin; echo ${PIPESTATUS[@]}"
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
    )
    assert done.stdout.decode().split() == ["1", "0"]
    assert (tmp_path / "err.txt").read_bytes() == b""
    head = (tmp_path / "head.bin").read_bytes()
    assert len(head) == 10
    if fmt == "npy":
        assert head.startswith(b"\x93NUMPY")


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "PYTHONUNBUFFERED"])
def test_stdout_holds_every_byte(tmp_path: Path, unbuffered: str) -> None:
    """``-o -`` gives the same bytes as the file, whatever the buffering."""
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    args = ("sample", "--shape", "1024,1100", "--seed", "4")
    piped = subprocess.run(
        vsgen_command(*args, "-o", "-"), capture_output=True, env=env, timeout=60
    )
    assert piped.returncode == 0 and piped.stderr == b""
    written = subprocess.run(vsgen_command(*args, "-o", "w.npy"), cwd=tmp_path, timeout=60)
    assert written.returncode == 0
    assert piped.stdout == (tmp_path / "w.npy").read_bytes()


# --- names near the file-name limit, and targets that are not regular files -----------


@pytest.mark.parametrize("length", [200, 240, 251])
def test_long_target_names_still_get_a_temporary(tmp_path, length):
    name = "w" * (length - len(".npy")) + ".npy"
    result = invoke(["sample", "--shape", "8,8", "--seed", "0", "-o", str(tmp_path / name)])
    assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / name).shape == (8, 8)
    assert sorted(os.listdir(tmp_path)) == [name]


def test_force_refuses_to_replace_a_symlink(tmp_path):
    real = tmp_path / "real.npy"
    np.save(real, np.arange(3.0))
    before = real.read_bytes()
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    result = invoke(["sample", "--shape", "8,8", "--seed", "0", "-o", str(link), "--force"])
    assert result.exit_code == 2
    assert "not a regular file" in result.stderr
    assert link.is_symlink() and real.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["link.npy", "real.npy"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_force_refuses_to_replace_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    result = invoke(["sample", "--shape", "8,8", "--seed", "0", "-o", str(fifo), "--force"])
    assert result.exit_code == 2
    assert "not a regular file" in result.stderr
    assert fifo.is_fifo()
