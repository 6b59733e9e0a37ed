"""vsgen.blockwrite: a job's tensors cut into blocks, made and written in place by a
runner that is passed in; the bytes equal the streaming writer's.

Local threads only here (the Dask runner is tested in test_dask.py); a local
block write must not even import Dask.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import vsgen
from vsgen import blockwrite
from vsgen.formats import open_output, write_chunks
from vsgen.job import ModelJob, tensor_job
from vsgen.modelspec import build_job, parse_spec

SPEC = {
    "seed": 5,
    "rules": {"*.bias": "zeros"},
    "tensors": {
        "a.kernel": [40, 24],
        "a.bias": [24],
        "b.kernel": [3, 5, 4, 6],
        "scale": {"shape": [], "init": "ones"},
    },
}


def model() -> ModelJob:
    return build_job(parse_spec(SPEC))


def streamed(job: ModelJob, path: Path, fmt: str) -> None:
    """The same job through the streaming writer (what ``vsgen sample`` does)."""
    chunks = (chunk for plan in job.plans for chunk in plan.chunks(100))
    with open_output(
        str(path),
        fmt,
        job.infos,
        metadata=job.metadata(),
        tensor_metadata=job.tensor_metadata(),
    ) as output:
        write_chunks(output, chunks)
        output.commit()


@pytest.fixture(autouse=True)
def _directories(tmp_path):
    """``blocks/`` for the block writers, ``stream/`` for the streaming writer."""
    (tmp_path / "blocks").mkdir()
    (tmp_path / "stream").mkdir()


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("fmt", "name", "chunks"),
    [
        ("npy", "w.npy", (7, 5)),
        ("raw", "w.raw", None),
        ("safetensors", "m.safetensors", (8, 24)),
        ("safetensors", "m.safetensors", {"a.kernel": ((1, 39), (24,))}),
        ("npydir", "m", (1, 1)),
    ],
)
def test_blocks_give_the_streamed_bytes(tmp_path, fmt, name, chunks):
    job = tensor_job(vsgen.HeNormal(seed=2), (40, 24)) if fmt in ("npy", "raw") else model()
    blocks, stream = tmp_path / "blocks" / name, tmp_path / "stream" / name
    blockwrite.write(job, str(blocks), fmt, chunks=chunks, threads=3)
    streamed(job, stream, fmt)
    if fmt == "npydir":
        assert tree(blocks) == tree(stream) and len(tree(blocks)) == 4
    else:
        assert blocks.read_bytes() == stream.read_bytes()


def test_h5_blocks_hold_the_streamed_values(tmp_path):
    h5py = pytest.importorskip("h5py")
    job = model()
    blockwrite.write(job, str(tmp_path / "blocks" / "m.h5"), chunks=(4, 4))
    arrays = job.arrays()
    with h5py.File(tmp_path / "blocks" / "m.h5", "r") as h5:
        for name, values in arrays.items():
            assert h5[name][()].tobytes() == values.tobytes(), name
        assert h5.attrs["vsgen"] == job.metadata()["vsgen"]


class Recording:
    """A runner that runs the tasks in this thread and says what it was asked;
    ``fail_after``: raise a full disk after that many tasks."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.calls: list[tuple[str, str]] = []
        self.tasks: list[blockwrite.WriteTask] = []

    def prepare(self, temp: str) -> None:
        self.calls.append(("prepare", temp))

    def run(self, tasks, on_progress, cancelled, on_done=None) -> None:
        self.calls.append(("run", ""))
        self.tasks = list(tasks)
        for index, task in enumerate(tasks):
            if self.fail_after is not None and index >= self.fail_after:
                raise OSError(28, "No space left on device")
            result = task()
            if on_done is not None:
                on_done(index, result)
            if on_progress is not None:
                on_progress(result.values)

    def sync(self, temp: str) -> None:
        self.calls.append(("sync", temp))
        blockwrite.LocalRunner().sync(temp)

    def forget(self, temp: str) -> None:
        self.calls.append(("forget", temp))


def test_the_runner_is_passed_in_and_shards_are_cut_into_tasks(tmp_path):
    job = model()
    target = tmp_path / "blocks" / "ckpt"
    local = tmp_path / "blocks" / "local"
    runner = Recording()
    progress: list[int] = []
    blockwrite.write(
        job,
        str(target),
        "safetensors-sharded",
        runner=runner,
        chunks=(8, 8),
        max_shard_size=4000,
        on_progress=progress.append,
    )
    temp = runner.calls[0][1]
    assert [call for call, _ in runner.calls] == ["prepare", "run", "sync"]
    assert runner.calls[2][1] == temp and os.path.dirname(temp) == str(target.parent)
    assert ".ckpt.vsgen-tmp-" in os.path.basename(temp) and not os.path.exists(temp)
    shards = sorted(name for name in os.listdir(target) if name.startswith("model-"))
    assert len(shards) == 2  # 40*24*4 bytes alone, the rest together
    # Not one task per shard: a.kernel's 5 x 3 blocks of 8 x 8 are a task each, and the
    # small tensors given no chunks of their rank share one.
    assert len(runner.tasks) == 15 + 1
    assert [len(task.blocks) for task in runner.tasks] == [1] * 15 + [3]
    assert {task.blocks[0][0].name for task in runner.tasks[:15]} == {"a.kernel"}
    assert [block[0].name for block in runner.tasks[15].blocks] == ["a.bias", "b.kernel", "scale"]
    assert sum(progress) == job.total_values
    # The same bytes as threads that take any block.
    blockwrite.write(job, str(local), "safetensors-sharded", chunks=(8, 8), max_shard_size=4000)
    assert tree(local) == tree(target)
    loaded = {}
    for shard in shards:
        loaded.update(safetensors.numpy.load_file(str(target / shard)))
    assert {name: values.tobytes() for name, values in loaded.items()} == {
        name: values.tobytes() for name, values in job.arrays().items()
    }


def test_zarr_blocks_are_its_chunks_whatever_the_runner(tmp_path):
    job = tensor_job(vsgen.GlorotUniform(seed=4), (10, 7))
    runner = Recording()
    blockwrite.write(job, str(tmp_path / "blocks" / "w.zarr"), runner=runner, chunks=(4, 3))
    # One task per chunk: a chunk is its own file.
    assert len(runner.tasks) == 3 * 3
    assert {task.blocks[0][3] for task in runner.tasks} == {(4, 3), (4, 1), (2, 3), (2, 1)}


def test_a_failing_runner_leaves_the_old_target_and_nothing_else(tmp_path):
    target = tmp_path / "blocks" / "m.safetensors"
    target.write_bytes(b"old")
    runner = Recording(fail_after=0)
    with pytest.raises(OSError, match="No space left"):
        blockwrite.write(model(), str(target), runner=runner, force=True)
    assert [call for call, _ in runner.calls] == ["prepare", "run", "forget"]
    assert runner.calls[2][1] == runner.calls[0][1]
    assert runner.tasks  # it was asked to run tasks, and failed at the first
    assert os.listdir(target.parent) == ["m.safetensors"] and target.read_bytes() == b"old"


def test_cancelled_stops_the_job_as_an_interrupt(tmp_path):
    target = tmp_path / "blocks" / "w.npy"
    with pytest.raises(KeyboardInterrupt):
        blockwrite.write(
            tensor_job(vsgen.HeNormal(seed=0), (4096, 64)),
            str(target),
            chunks=(1, 64),
            threads=1,
            cancelled=lambda: True,
        )
    assert os.listdir(target.parent) == []


def test_the_sequential_keras_stream_is_refused_by_name():
    job = tensor_job(vsgen.HeNormal(seed=0, stream="keras"), (4, 4), name="dense")
    with pytest.raises(
        ValueError, match="tensor 'dense' uses the keras/.* stream, which is sequential"
    ):
        blockwrite.check(job)


def test_copied_tensors_are_read_from_their_checkpoint(tmp_path):
    """``--like`` keeps a checkpoint's integer tensors: block writers copy them
    block by block from the checkpoint, as the streaming writer does."""
    checkpoint = tmp_path / "blocks" / "c.safetensors"
    ids = np.arange(6 * 5, dtype=np.int64).reshape(6, 5)
    safetensors.numpy.save_file(
        {"fc.weight": np.zeros((8, 4), np.float32), "ids": ids, "steps": np.array(7, np.int64)},
        str(checkpoint),
    )
    job = build_job(None, str(checkpoint), seed=1)
    kinds = {row.name: row.kind for row in job.rows}
    assert kinds == {"fc.weight": "variance_scaling", "ids": "copy", "steps": "copy"}
    blockwrite.write(job, str(tmp_path / "blocks" / "m.safetensors"), chunks=(2, 2), threads=2)
    streamed(job, tmp_path / "stream" / "m.safetensors", "safetensors")
    written = tmp_path / "blocks" / "m.safetensors"
    assert written.read_bytes() == (tmp_path / "stream" / "m.safetensors").read_bytes()
    loaded = safetensors.numpy.load_file(str(written))
    assert loaded["ids"].tobytes() == ids.tobytes() and int(loaded["steps"]) == 7


#: Runs the command line in this process and reports which Dask modules it loaded.
PROBE = """
import json, sys
from vsgen.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
loaded = [m for m in sys.modules if m == "vsgen.dask" or m.split(".")[0] in ("dask", "distributed")]
print(json.dumps({"code": code, "loaded": sorted(loaded)}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "output", [["-o", "w.zarr"], ["-o", "ckpt", "--format", "safetensors-sharded"]]
)
def test_a_local_block_write_never_imports_dask(tmp_path, output):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "sample", "--shape", "64,32", "--seed", "0", *output],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": []}
    assert os.path.isdir(tmp_path / output[1])
