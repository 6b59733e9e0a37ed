"""The progress bar appears on stderr only when stderr is a terminal, never
with --quiet, and never on stdout; it shows "preparing" from the start, is
erased before an error line, and a one-line summary ends a run on a terminal."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from vsgen.cli import PROGRESS_MIN_VALUES

SHAPE = f"{PROGRESS_MIN_VALUES // 1024},1024"


def _run_with_tty_stderr(args: list[str], cwd) -> tuple[int, str]:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "vsgen", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(follower)
    captured = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the follower side closed
            break
        if not data:
            break
        captured += data
    os.close(leader)
    return process.wait(timeout=300), captured.decode(errors="replace")


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal(tmp_path):
    code, stderr = _run_with_tty_stderr(
        ["sample", "--shape", SHAPE, "--seed", "1", "--threads", "1", "-o", "w.npy"], tmp_path
    )
    assert code == 0, stderr
    assert "sampling" in stderr and "%" in stderr
    assert np.load(tmp_path / "w.npy").shape == (PROGRESS_MIN_VALUES // 1024, 1024)


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")
def test_quiet_silences_the_bar(tmp_path):
    code, stderr = _run_with_tty_stderr(
        ["sample", "--shape", SHAPE, "--seed", "1", "--quiet", "-o", "w.npy"], tmp_path
    )
    assert code == 0, stderr
    assert stderr.strip() == ""


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", "--shape", SHAPE, "--seed", "1", "-o", "w.npy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def _run_on_tty(args: list[str], cwd, preexec_fn=None) -> tuple[int, bytes]:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "vsgen", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        preexec_fn=preexec_fn,
    )
    os.close(follower)
    captured = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        captured += data
    os.close(leader)
    return process.wait(timeout=300), captured


BIG = f"{2 * PROGRESS_MIN_VALUES // 1024},1024"


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")
def test_bar_starts_as_preparing_and_ends_with_one_summary_line(tmp_path):
    code, raw = _run_on_tty(["sample", "--shape", BIG, "--seed", "1", "-o", "w.npy"], tmp_path)
    assert code == 0, raw
    text = raw.decode(errors="replace")
    assert "preparing" in text and "sampling" in text
    assert text.index("preparing") < text.index("sampling")
    values = 2 * PROGRESS_MIN_VALUES
    last = text.replace("\r\n", "\n").rstrip("\n").split("\n")[-1]
    last = last.split("\x1b[2K")[-1]  # after the bar was erased
    assert re.fullmatch(
        rf"wrote {values:,} values \(128\.00 MiB\) to w\.npy in [0-9.]+ s, [0-9,]+ M values/s",
        last,
    ), repr(last)


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")
def test_small_jobs_get_the_summary_without_a_bar(tmp_path):
    code, raw = _run_on_tty(["sample", "--shape", "64,64", "--seed", "1", "-o", "-"], tmp_path)
    assert code == 0
    text = raw.decode().strip()
    assert re.fullmatch(
        r"wrote 4,096 values \(16\.00 KiB\) to standard output in [0-9.]+ s.*", text
    )


def _small_file_limit() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")
def test_bar_is_cleared_before_the_error_line(tmp_path):
    code, raw = _run_on_tty(
        ["sample", "--shape", BIG, "--seed", "1", "-o", "w.npy"], tmp_path, _small_file_limit
    )
    assert code == 1
    text = raw.decode(errors="replace")
    assert "%" in text  # the bar was shown
    error_at = text.index("Error: ")
    assert "\x1b[2K" in text[text.rindex("%") : error_at]  # and erased before the error
    assert text[error_at:].strip().startswith("Error: file size limit reached")
    assert len(text[error_at:].strip().splitlines()) == 1
    assert "wrote" not in text
    assert os.listdir(tmp_path) == []
