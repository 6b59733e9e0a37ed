"""Resumable block writes (vsgen/resume.py): a job that fails keeps its temporary and a
journal of finished tasks; the same job run again with resume finishes it, with the
bytes of an uninterrupted run, making only the blocks it lacks.

Local threads here; tests/test_dask_faults.py resumes a job whose Dask scheduler was
killed, on a fresh cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import vsgen
from vsgen import blockwrite, resume
from vsgen.blockwrite import BlockSource
from vsgen.formats.atomic import LeftoverWarning
from vsgen.job import tensor_job
from vsgen.modelspec import build_job, parse_spec

SPEC = {
    "seed": 5,
    "rules": {"*.bias": "zeros"},
    "tensors": {
        "a.kernel": [40, 24],
        "a.bias": [24],
        "b.kernel": [3, 5, 4, 6],
        "c.kernel": {"shape": [30, 16], "dtype": "float16"},
    },
}
TARGETS = {
    "npy": ("w.npy", "tensor", (4, 24)),
    "safetensors": ("m.safetensors", "model", (4, 24)),
    "zarr": ("m.zarr", "model", (4, 24)),
    "safetensors-sharded": ("ckpt", "model", (4, 24)),
    "npydir": ("npys", "model", (4, 24)),
    "h5": ("m.h5", "model", (4, 24)),
}


def job_of(kind: str, seed: int = 5):
    if kind == "tensor":
        return tensor_job(vsgen.HeNormal(seed=seed), (40, 24))
    return build_job(parse_spec({**SPEC, "seed": seed}))


class FailingAfter:
    """Runs tasks in this thread (and keeps them in ``tasks``); after ``count`` of them,
    fails as ``error`` says (None: never)."""

    def __init__(self, count: int = 0, error: BaseException | None = None) -> None:
        self.count = count
        self.error = error
        self.tasks: list = []

    def prepare(self, temp: str) -> None:
        pass

    def run(self, tasks, on_progress, cancelled, on_done=None) -> None:
        self.tasks = list(tasks)
        for index, task in enumerate(tasks):
            if self.error is not None and index >= self.count:
                raise self.error
            result = task()
            if on_done is not None:
                on_done(index, result)

    def sync(self, temp: str) -> None:
        blockwrite.LocalRunner().sync(temp)

    def forget(self, temp: str) -> None:
        blockwrite.LocalRunner().forget(temp)


def tree(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture
def counting(monkeypatch):
    """Counts the blocks made (``BlockSource.block`` calls)."""
    made: list[tuple[str, tuple[int, ...]]] = []
    original = BlockSource.block

    def block(self, origin, shape, threads=1):
        made.append((self.name, tuple(origin)))
        return original(self, origin, shape, threads)

    monkeypatch.setattr(BlockSource, "block", block)
    return made


def kept(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if resume.MARK in name)


@pytest.mark.parametrize("fmt", sorted(TARGETS))
def test_a_failed_job_is_kept_and_finished_with_the_bytes_of_an_uninterrupted_run(
    tmp_path, fmt, counting
):
    name, kind, chunks = TARGETS[fmt]
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    job = job_of(kind)
    whole = FailingAfter()
    blockwrite.write(job, str(tmp_path / "whole" / name), fmt, runner=whole, chunks=chunks)
    expected = tree(tmp_path / "whole" / name)
    tasks = len(whole.tasks)
    assert tasks > 4
    target = tmp_path / "parts" / name
    failing = FailingAfter(3, OSError(28, "No space left on device"))
    with pytest.raises(
        OSError, match=rf"No space left on device; 3 of {tasks} tasks done"
    ) as raised:
        blockwrite.write(job, str(target), fmt, runner=failing, chunks=chunks, resume=True)
    assert raised.value.errno == 28
    assert str(raised.value).endswith(
        "kept beside the output: call again with resume=True to finish the job"
    )
    assert raised.value.command_line_message.endswith(
        "rerun the same command with --resume to finish it"
    )
    assert not target.exists()
    names = kept(tmp_path / "parts")
    assert len(names) == 2 and names[1] == names[0] + ".journal"
    assert names[0].startswith(f".{name}{resume.MARK}")
    journal = (tmp_path / "parts" / names[1]).read_bytes().splitlines()
    assert journal[0] == b"vsgen-resume 1" and len(journal) == 2 + 3

    counting.clear()
    blockwrite.write(job, str(target), fmt, chunks=chunks, resume=True)
    assert tree(target) == expected
    assert kept(tmp_path / "parts") == []
    # Only the unfinished tasks' blocks were made: the finished ones were read back.
    made = sorted(counting)
    unfinished = sorted((b[0].name, tuple(b[2])) for t in whole.tasks[3:] for b in t.blocks)
    assert made == unfinished


def test_a_changed_block_of_a_finished_task_is_written_again(tmp_path, counting):
    job = job_of("tensor")
    blockwrite.write(job, str(tmp_path / "whole.npy"), chunks=(4, 24))
    target = tmp_path / "w.npy"
    with pytest.raises(OSError):
        blockwrite.write(
            job, str(target), runner=FailingAfter(5, OSError(5, "I/O")), chunks=(4, 24), resume=True
        )
    temporary = tmp_path / kept(tmp_path)[0]
    data = bytearray(temporary.read_bytes())
    data[len(data) - 40 * 24 * 4 + 8 * 24 * 4 + 5] ^= 0xFF  # a byte of task 2 (rows 8-11)
    temporary.write_bytes(bytes(data))
    counting.clear()
    blockwrite.write(job, str(target), chunks=(4, 24), resume=True)
    assert target.read_bytes() == (tmp_path / "whole.npy").read_bytes()
    # Tasks 5..9 and the damaged task 2: one block each.
    assert sorted(origin[0] for _, origin in counting) == [8, 20, 24, 28, 32, 36]


def test_an_interrupt_keeps_the_job_and_says_how_far_it_got(tmp_path):
    job = job_of("tensor")
    target = tmp_path / "w.npy"
    with pytest.raises(blockwrite.KeptInterrupt) as raised:
        blockwrite.write(
            job,
            str(target),
            runner=FailingAfter(2, KeyboardInterrupt()),
            chunks=(4, 24),
            resume=True,
        )
    assert str(raised.value).startswith("interrupted; 2 of 10 tasks done, kept beside the output")
    assert raised.value.command_line_message == (
        "interrupted; 2 of 10 tasks done, kept beside the output: rerun the same command "
        "with --resume to finish it"
    )
    assert len(kept(tmp_path)) == 2
    blockwrite.write(job, str(target), chunks=(4, 24), resume=True)
    assert np.load(target).tobytes() == job.arrays()["weight"].tobytes()
    assert os.listdir(tmp_path) == ["w.npy"]


def test_without_resume_a_failure_removes_everything(tmp_path):
    target = tmp_path / "w.zarr"
    with pytest.raises(OSError, match=r"No space left on device$"):
        blockwrite.write(
            job_of("tensor"),
            str(target),
            runner=FailingAfter(2, OSError(28, "No space left on device")),
            chunks=(4, 24),
        )
    assert os.listdir(tmp_path) == []


def test_another_job_is_refused_while_one_is_kept(tmp_path):
    target = tmp_path / "w.npy"
    failing = FailingAfter(1, OSError(5, "I/O"))
    with pytest.raises(OSError):
        blockwrite.write(
            job_of("tensor", 1), str(target), runner=failing, chunks=(4, 24), resume=True
        )
    before = {name: (tmp_path / name).read_bytes() for name in kept(tmp_path)}
    other = job_of("tensor", 2)
    with pytest.raises(
        ValueError, match="unfinished job of another command kept beside it"
    ) as raised:
        blockwrite.write(other, str(target), chunks=(4, 24), resume=True)
    message = str(raised.value)
    assert "1 of 10 tasks done; it differs in metadata, tensors" in message
    assert "run that command again with resume" not in message  # library words
    assert "--resume" in raised.value.command_line_message
    other_chunks = job_of("tensor", 1)
    with pytest.raises(ValueError, match="it differs in chunks"):
        blockwrite.write(other_chunks, str(target), chunks=(8, 24), resume=True)
    assert {name: (tmp_path / name).read_bytes() for name in kept(tmp_path)} == before


def test_a_run_without_resume_leaves_a_kept_job_alone_and_says_so(tmp_path):
    target = tmp_path / "w.npy"
    with pytest.raises(OSError):
        blockwrite.write(
            job_of("tensor"),
            str(target),
            runner=FailingAfter(1, OSError(5, "I/O")),
            chunks=(4, 24),
            resume=True,
        )
    before = {name: (tmp_path / name).read_bytes() for name in kept(tmp_path)}
    with pytest.warns(LeftoverWarning, match="holds an unfinished job kept to be resumed"):
        blockwrite.write(job_of("tensor"), str(target), chunks=(4, 24))
    assert {name: (tmp_path / name).read_bytes() for name in kept(tmp_path)} == before
    assert target.exists()


def test_a_kept_temporary_is_not_the_litter_of_a_dead_run(tmp_path):
    from vsgen.formats.atomic import litter

    target = tmp_path / "w.npy"
    with pytest.raises(OSError):
        blockwrite.write(
            job_of("tensor"),
            str(target),
            runner=FailingAfter(1, OSError(5, "I/O")),
            chunks=(4, 24),
            resume=True,
        )
    assert litter(str(target)) == []


def test_force_and_resume_replace_the_target_at_the_commit(tmp_path):
    target = tmp_path / "w.npy"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="exists"):
        blockwrite.write(job_of("tensor"), str(target), chunks=(4, 24), resume=True)
    with pytest.raises(OSError):
        blockwrite.write(
            job_of("tensor"),
            str(target),
            runner=FailingAfter(4, OSError(5, "I/O")),
            chunks=(4, 24),
            force=True,
            resume=True,
        )
    assert target.read_bytes() == b"old"
    with pytest.raises(ValueError, match="exists"):
        blockwrite.write(job_of("tensor"), str(target), chunks=(4, 24), resume=True)
    assert len(kept(tmp_path)) == 2  # a refused rerun keeps the work
    blockwrite.write(job_of("tensor"), str(target), chunks=(4, 24), force=True, resume=True)
    assert np.load(target).tobytes() == job_of("tensor").arrays()["weight"].tobytes()
    assert os.listdir(tmp_path) == ["w.npy"]


def _kept_job(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "w.npy"
    with pytest.raises(OSError):
        blockwrite.write(
            job_of("tensor"),
            str(target),
            runner=FailingAfter(3, OSError(5, "I/O")),
            chunks=(4, 24),
            resume=True,
        )
    temporary, journal = (tmp_path / name for name in kept(tmp_path))
    return temporary, journal


def test_a_torn_last_line_of_the_journal_is_ignored(tmp_path, counting):
    temporary, journal = _kept_job(tmp_path)
    with open(journal, "ab") as handle:
        handle.write(b"7 0123")  # a run that died while writing this line
    counting.clear()
    blockwrite.write(job_of("tensor"), str(tmp_path / "w.npy"), chunks=(4, 24), resume=True)
    assert len(counting) == 10 - 3


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"garbage\n", "is not a vsgen resume journal"),
        (b"vsgen-resume 1\n{not json\n", "header"),
        (b"vsgen-resume 1\n" + b"[" * 100 + b"\n", "nest"),
        (b'vsgen-resume 1\n{"tasks": 10}', "header is incomplete"),
        (b'vsgen-resume 1\n{"tasks": 99999999999}\n', "how many tasks"),
    ],
)
def test_a_malformed_journal_is_one_line_and_the_work_stays(tmp_path, content, says):
    temporary, journal = _kept_job(tmp_path)
    journal.write_bytes(content)
    with pytest.raises(ValueError, match=says) as raised:
        blockwrite.write(job_of("tensor"), str(tmp_path / "w.npy"), chunks=(4, 24), resume=True)
    assert "\n" not in str(raised.value)
    assert temporary.exists() and journal.read_bytes() == content


def test_a_journal_of_another_identity_under_the_same_name_is_refused(tmp_path):
    temporary, journal = _kept_job(tmp_path)
    lines = journal.read_bytes().split(b"\n")
    header = json.loads(lines[1])
    header["identity"]["max_shard_size"] = 1
    lines[1] = json.dumps(header).encode()
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match="records another job"):
        blockwrite.write(job_of("tensor"), str(tmp_path / "w.npy"), chunks=(4, 24), resume=True)


@pytest.mark.parametrize("path", ["../elsewhere", "/etc/passwd", "a/../../b"])
def test_places_outside_the_temporary_are_refused(tmp_path, path):
    documents = [{"kind": "file", "path": path, "offset": 0, "shape": [2], "dtype": "float32"}]
    with pytest.raises(ValueError, match="outside the temporary"):
        resume.places_from_json(documents, str(tmp_path / "temp"))


def test_places_round_trip(tmp_path):
    from vsgen.formats.base import FilePlace
    from vsgen.formats.zarr import ZarrPlace

    temp = str(tmp_path / "t")
    places = [
        FilePlace(temp, 128, (4, 5), np.dtype("float32")),
        ZarrPlace(os.path.join(temp, "a", "b"), (4, 5), (2, 5), np.dtype("float16")),
    ]
    assert resume.places_from_json(resume.places_to_json(places, temp), temp) == places


def test_a_journal_held_by_another_run_is_refused(tmp_path):
    temporary, journal = _kept_job(tmp_path)
    held = resume.Journal.open(str(journal))
    try:
        with pytest.raises(ValueError, match="another run is finishing this job"):
            blockwrite.write(job_of("tensor"), str(tmp_path / "w.npy"), chunks=(4, 24), resume=True)
    finally:
        held.close()


def test_what_a_run_left_half_made_is_cleared(tmp_path):
    target = tmp_path / "w.npy"
    key = resume.key_of({"x": 1})
    (tmp_path / f".w.npy{resume.MARK}{key}").write_bytes(b"laid out, no journal")
    (tmp_path / f".w.npy{resume.MARK}{key}.journal").unlink(missing_ok=True)
    session = resume.Session.begin(str(target), {"x": 1})
    assert not session.resuming and kept(tmp_path) == []
    (tmp_path / f".w.npy{resume.MARK}{key}.journal").write_bytes(b"committed, then died")
    session = resume.Session.begin(str(target), {"x": 1})
    assert not session.resuming and kept(tmp_path) == []


def test_checksum_is_the_crc32_of_the_little_endian_bytes():
    values = np.arange(6, dtype=">f4").reshape(2, 3)
    assert resume.checksum(values) == zlib.crc32(values.astype("<f4").tobytes())
    assert resume.checksum(values[:, 1:]) == zlib.crc32(values[:, 1:].astype("<f4").tobytes())


def test_the_command_line_keeps_a_failed_job_and_finishes_it(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from vsgen.cli import cli

    args = ["sample", "--shape", "64,8", "--seed", "3", "--chunks", "8,8", "--threads", "1"]
    assert CliRunner().invoke(cli, [*args, "-o", "reference.zarr"]).exit_code == 0
    original = blockwrite.WriteTask.__call__
    calls: list[int] = []

    def failing(self, threads=1, report=None):
        if len(calls) >= 3:
            raise OSError(28, "No space left on device")
        calls.append(1)
        return original(self, threads, report)

    monkeypatch.setattr(blockwrite.WriteTask, "__call__", failing)
    failed = CliRunner().invoke(cli, [*args, "-o", "w.zarr", "--resume"])
    assert failed.exit_code == 1
    assert failed.stderr == (
        "Error: No space left on device; 3 of 8 tasks done, kept beside the output: "
        "rerun the same command with --resume to finish it\n"
    )
    monkeypatch.setattr(blockwrite.WriteTask, "__call__", original)
    done = CliRunner().invoke(cli, [*args, "-o", "w.zarr", "--resume"])
    assert done.exit_code == 0, done.output
    assert tree(tmp_path / "w.zarr") == tree(tmp_path / "reference.zarr")
    assert sorted(os.listdir(tmp_path)) == ["reference.zarr", "w.zarr"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["-o", "w.npy", "--resume"], "--resume applies to .zarr"),
        (["-o", "w.npy", "--connect-timeout", "3"], "--connect-timeout applies to --scheduler"),
        (["-o", "w.zarr", "--cluster-timeout", "3"], "--cluster-timeout applies to --scheduler"),
    ],
)
def test_options_that_would_do_nothing_are_refused(tmp_path, extra, says):
    done = _vsgen(["sample", "--shape", "8,8", *extra])
    assert done.returncode == 2
    assert done.stderr == f"Error: {says}" + done.stderr.split(says, 1)[1]
    assert len(done.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def _vsgen(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vsgen", *args], capture_output=True, text=True, timeout=120
    )


def test_identity_names_what_the_bytes_depend_on(tmp_path):
    job = job_of("model")
    sources = blockwrite.sources(job)
    base = resume.identity("t.zarr", "zarr", sources, job.metadata(), None, 10)
    assert base["target"] == str(tmp_path / "t.zarr")
    assert base["vsgen"] == vsgen.__version__
    assert [t["name"] for t in base["tensors"]] == list(SPEC["tensors"])
    assert resume.key_of(base) == resume.key_of(json.loads(json.dumps(base)))
    for changed in (
        resume.identity("u.zarr", "zarr", sources, job.metadata(), None, 10),
        resume.identity("t.zarr", "npydir", sources, job.metadata(), None, 10),
        resume.identity("t.zarr", "zarr", sources, job.metadata(), [(2, 2), None, None, None], 10),
        resume.identity("t.zarr", "zarr", sources, job.metadata(), None, 11),
        resume.identity("t.zarr", "zarr", sources[:3], job.metadata(), None, 10),
    ):
        assert resume.key_of(changed) != resume.key_of(base)
    assert resume.differences(base, {**base, "max_shard_size": 1}) == "max shard size"
    assert resume.differences(base, {**base, "vsgen": "0"}) == "vsgen version"


@pytest.mark.parametrize("fmt", ["zarr", "safetensors-sharded"])
def test_resuming_over_an_earlier_store_refuses_without_force_and_replaces_it_with(tmp_path, fmt):
    """A directory output that appeared while the job was kept: the rerun names it as
    the user did and keeps the work; with force it replaces it whole at the commit."""
    name, kind, chunks = TARGETS[fmt]
    target = tmp_path / name
    with pytest.raises(OSError):
        blockwrite.write(
            job_of(kind),
            str(target),
            fmt,
            runner=FailingAfter(2, OSError(5, "I/O")),
            chunks=chunks,
            resume=True,
        )
    with pytest.warns(LeftoverWarning, match="holds an unfinished job kept to be resumed"):
        blockwrite.write(job_of(kind, seed=9), str(target), fmt, chunks=chunks)  # another run
    earlier = sorted(p.name for p in target.iterdir())
    with pytest.raises(ValueError) as caught:
        blockwrite.write(job_of(kind), str(target), fmt, chunks=chunks, resume=True)
    assert str(caught.value) == (
        f"output directory {str(target)!r} exists; pass force=True to replace it"
    )
    assert sorted(p.name for p in target.iterdir()) == earlier
    assert len(kept(tmp_path)) == 2  # the work is still kept
    blockwrite.write(job_of(kind), str(target), fmt, chunks=chunks, force=True, resume=True)
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary, journal or old store left
    from vsgen.formats import readers

    expected = job_of(kind).arrays()
    for tensor_name, values in expected.items():
        got = readers.read_tensor_range(str(target), tensor_name, 0, values.size)
        assert got.tobytes() == values.reshape(-1).tobytes(), tensor_name


def test_resuming_needs_room_only_for_the_bytes_still_to_come(tmp_path, monkeypatch):
    import collections
    import errno
    import shutil

    mib = 1 << 20
    job = tensor_job(vsgen.HeNormal(seed=2), (4096, 256))  # 4 MiB of float32
    target = tmp_path / "w.npy"
    failing = FailingAfter(3, OSError(errno.EIO, "I/O"))  # 3 of 16 tasks of 256 KiB
    with pytest.raises(OSError):
        blockwrite.write(job, str(target), runner=failing, chunks=(256, 256), resume=True)
    before = {name: (tmp_path / name).read_bytes() for name in kept(tmp_path)}

    usage = collections.namedtuple("usage", "total used free")
    free = {"bytes": 3 * mib}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(64 * mib, 0, free["bytes"]))
    # About 3.25 MiB are still to come: 3 MiB free is too little, and the kept work stays.
    with pytest.raises(OSError) as raised:
        blockwrite.write(job, str(target), chunks=(256, 256), resume=True)
    assert raised.value.errno == errno.ENOSPC
    assert re.search(r"needs 3\.2\d MiB, 3\.00 MiB free", str(raised.value)), raised.value
    assert {name: (tmp_path / name).read_bytes() for name in kept(tmp_path)} == before
    # A fresh run of the job needs all 4 MiB, so 3.5 MiB free refuses it ...
    free["bytes"] = int(3.5 * mib)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(OSError, match="not enough free space"):
        blockwrite.write(job, str(other / "w.npy"), chunks=(256, 256))
    # ... and lets the resumed one finish.
    blockwrite.write(job, str(target), chunks=(256, 256), resume=True)
    assert kept(tmp_path) == [] and "other" in os.listdir(tmp_path)
    assert np.load(target).tobytes() == vsgen.HeNormal(seed=2)((4096, 256)).tobytes()
