"""The progress bar appears on stderr only when stderr is a terminal, never
with --quiet, and never on stdout."""

from __future__ import annotations

import os
import pty
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
