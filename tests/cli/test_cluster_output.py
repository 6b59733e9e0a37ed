"""Block-written runs (Zarr, sharded safetensors, --scheduler) say on a terminal what
single-file runs say: a model's plan table, the progress bar, the closing summary
line, and for a cluster its dashboard's link; off a terminal, nothing."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")

SPEC = {"seed": 3, "tensors": {f"layer{i}.kernel": [2048, 1024] for i in range(9)}}
VALUES = 9 * 2048 * 1024


def on_a_terminal(args: list[str], cwd) -> tuple[int, str]:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "vsgen", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
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
    return process.wait(timeout=300), captured.decode(errors="replace").replace("\r\n", "\n")


def last_line(text: str) -> str:
    return text.rstrip("\n").split("\n")[-1].split("\x1b[2K")[-1]


@pytest.mark.parametrize(
    ("target", "options"),
    [("m.zarr", []), ("ckpt", ["--format", "safetensors-sharded", "--max-shard-size", "20MB"])],
)
def test_a_store_gets_the_plan_the_bar_and_the_summary(tmp_path, target, options):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    code, text = on_a_terminal(["sample", "--spec", "spec.json", "-o", target, *options], tmp_path)
    assert code == 0, text
    assert "layer0.kernel" in text and "layer8.kernel" in text  # the plan table
    assert "sampling" in text and "%" in text  # the bar
    assert re.fullmatch(
        rf"wrote {VALUES:,} values \(72\.00 MiB\) to {target} in [0-9.]+ s, [0-9,]+ M values/s",
        last_line(text),
    ), repr(last_line(text))


def test_off_a_terminal_nothing_is_said(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    done = subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", "--spec", "spec.json", "-o", "m.zarr"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stderr == "" and done.stdout == ""


def test_quiet_says_nothing_on_a_terminal(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    code, text = on_a_terminal(["sample", "--spec", "spec.json", "-o", "m.zarr", "-q"], tmp_path)
    assert code == 0 and text.strip() == ""


@pytest.mark.slow
@pytest.mark.required_in_ci
def test_a_cluster_run_shows_the_dashboard_link(tmp_path):
    pytest.importorskip("distributed")
    args = [
        "sample",
        "--shape",
        "2048,1024",
        "--seed",
        "1",
        "-o",
        "w.npy",
        "--scheduler",
        "local:1",
    ]
    code, text = on_a_terminal(args, tmp_path)
    assert code == 0, text
    lines = [line.split("\x1b[2K")[-1] for line in text.rstrip("\n").split("\n")]
    assert re.fullmatch(r"dashboard: http://127\.0\.0\.1:[0-9]+/status", lines[0]), lines
    assert re.fullmatch(
        r"wrote 2,097,152 values \(8\.00 MiB\) to w\.npy in [0-9.]+ s, [0-9,]+ M values/s",
        last_line(text),
    )
