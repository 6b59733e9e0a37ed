"""Partitions: ``--rows A:B`` and ``--shard K/N`` are bit-identical slices of
the full tensor, in every format and for both streams; ``--fan-shape``
changes only the scaling."""

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
from vsgen.fans import shard_rows

ROOT = Path(__file__).resolve().parent.parent
STREAMS = ["vsgen", "keras"]
FORMATS = [".npy", ".h5", ".safetensors", ".raw"]
SHAPE = (50, 6, 4)


def _stream_available(stream: str) -> bool:
    if stream != "vsgen":
        return True
    try:
        import vsgen.streams.counter  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=STREAMS)
def stream(request):
    if not _stream_available(request.param):
        pytest.skip("the vsgen stream is not importable yet")
    return request.param


def run(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr


def sample(path: Path, stream: str, *args: str, distribution: str = "truncated_normal") -> None:
    run(
        "sample",
        "--shape",
        ",".join(map(str, SHAPE)),
        "--seed",
        "21",
        "--stream",
        stream,
        "--distribution",
        distribution,
        "-o",
        str(path),
        "-q",
        *args,
    )


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("distribution", ["truncated_normal", "uniform"])
def test_rows_are_slices(tmp_path, stream, suffix, distribution, read_back):
    full_path = tmp_path / f"full{suffix}"
    sample(full_path, stream, distribution=distribution)
    full = read_back(full_path, shape=SHAPE)
    for first, last in [(0, 50), (0, 1), (17, 33), (49, 50), (10, 10)]:
        part_path = tmp_path / f"rows{first}_{last}{suffix}"
        sample(part_path, stream, "--rows", f"{first}:{last}", distribution=distribution)
        part = read_back(part_path, shape=(last - first, *SHAPE[1:]))
        assert part.shape == (last - first, *SHAPE[1:])
        assert part.tobytes() == full[first:last].tobytes(), (first, last)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("count", [4, 7])
def test_shards_concatenate_to_the_full_tensor(tmp_path, stream, suffix, count, read_back):
    full_path = tmp_path / f"full{suffix}"
    sample(full_path, stream, "--dtype", "float16")
    full = read_back(full_path, shape=SHAPE, dtype="float16")
    parts = []
    for index in range(count):
        part_path = tmp_path / f"part{index}{suffix}"
        sample(part_path, stream, "--dtype", "float16", "--shard", f"{index}/{count}")
        first, last = shard_rows(SHAPE, index, count)
        part = read_back(part_path, shape=(last - first, *SHAPE[1:]), dtype="float16")
        assert part.tobytes() == full[first:last].tobytes()
        parts.append(part)
    assert np.concatenate(parts).tobytes() == full.tobytes()


@pytest.mark.parametrize("suffix", FORMATS)
def test_more_shards_than_rows(tmp_path, stream, suffix, read_back):
    """64 shards of 50 rows: shards 0..49 hold one row each, 50..63 are empty."""
    full = vsgen.VarianceScaling(seed=21, stream=stream).sample(SHAPE)
    for index in (0, 37, 49, 50, 63):
        part_path = tmp_path / f"part{index}{suffix}"
        sample(part_path, stream, "--shard", f"{index}/64")
        expected = full[index : index + 1]
        part = read_back(part_path, shape=expected.shape)
        assert part.shape == expected.shape and part.tobytes() == expected.tobytes()


def test_shard_rows_split_like_array_split():
    for rows in (0, 1, 5, 50, 4096):
        for count in (1, 3, 4, 64):
            pieces = np.array_split(np.arange(rows), count)
            for index, piece in enumerate(pieces):
                first, last = shard_rows((rows, 2), index, count)
                assert last - first == piece.size
                if piece.size:
                    assert (first, last - 1) == (piece[0], piece[-1])


def test_shard_record_reproduces_and_checks(tmp_path, stream, read_back):
    shard = tmp_path / "p.safetensors"
    sample(shard, stream, "--shard", "2/4")
    again = tmp_path / "again.npy"
    run("sample", "--config-from", str(shard), "-o", str(again))
    first, last = shard_rows(SHAPE, 2, 4)
    assert np.load(again).tobytes() == read_back(shard, shape=(last - first, *SHAPE[1:])).tobytes()
    # The shard's fans come from the recorded full shape: fan_in = 6 * 50.
    result = CliRunner().invoke(cli, ["check", str(shard), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["checks"]
    assert report["expected"]["fan_shape"] == list(SHAPE)
    assert report["expected"]["fan_in"] == 300


@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_fan_shape_changes_only_the_scaling(tmp_path, stream, distribution):
    """Fans from a 4x larger fan_in divide the variance by 4: the same bytes as
    scale / 4 without --fan-shape (powers of two keep every step exact)."""
    shape, fan_shape = "64,32", "256,32"
    with_fans = tmp_path / "f.npy"
    run(
        "sample",
        "--shape",
        shape,
        "--fan-shape",
        fan_shape,
        "--seed",
        "3",
        "--stream",
        stream,
        "--distribution",
        distribution,
        "-o",
        str(with_fans),
    )
    scaled = tmp_path / "s.npy"
    run(
        "sample",
        "--shape",
        shape,
        "--scale",
        "0.25",
        "--seed",
        "3",
        "--stream",
        stream,
        "--distribution",
        distribution,
        "-o",
        str(scaled),
    )
    plain = tmp_path / "p.npy"
    run(
        "sample",
        "--shape",
        shape,
        "--seed",
        "3",
        "--stream",
        stream,
        "--distribution",
        distribution,
        "-o",
        str(plain),
    )
    a, b, c = np.load(with_fans), np.load(scaled), np.load(plain)
    assert a.shape == c.shape == (64, 32)
    assert a.tobytes() == b.tobytes()
    np.testing.assert_allclose(a * 2, c, rtol=1e-6, atol=0)
    init = vsgen.VarianceScaling(distribution=distribution, seed=3, stream=stream)
    assert init.sample((64, 32), fan_shape=(256, 32)).tobytes() == a.tobytes()


def test_fan_shape_is_recorded(tmp_path):
    path = tmp_path / "f.h5"
    run("sample", "--shape", "64,32", "--fan-shape", "256,32", "--seed", "3", "-o", str(path))
    with h5py.File(path, "r") as handle:
        record = json.loads(handle.attrs["vsgen"])["tensors"]["weight"]
    assert record["fan_shape"] == [256, 32] and record["fan_in"] == 256
    assert record["shape"] == [64, 32]


def test_python_api_rows_equal_cli(tmp_path, stream):
    path = tmp_path / "r.npy"
    sample(path, stream, "--rows", "5:9")
    init = vsgen.VarianceScaling(seed=21, stream=stream)
    assert init.sample(SHAPE, rows=(5, 9)).tobytes() == np.load(path).tobytes()


def test_shards_example_script():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "shards.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "OK"
