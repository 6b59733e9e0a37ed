"""``--force`` on directory outputs: a Zarr store, a shard directory or an npy
directory is replaced only when everything in it is what vsgen wrote; a change
noticed at the swap fails the run (exit 1) with the old output put back; nothing
added during the run is ever deleted; the new output is no more permissive than
the old; the litter of a dead run is cleaned by the next.

The refusals before any work (foreign files, FIFOs, sockets, devices, links, mounts)
run as real commands in the hostile-case suite (test_hostile_stores.py).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen import blockwrite
from vsgen.cli import cli
from vsgen.formats import atomic, parallel, readers
from vsgen.formats.sharded import INDEX_NAME
from vsgen.job import tensor_job

SPEC = {"seed": 1, "tensors": {"data": [8, 8], "other/w": [4, 4]}}


def sample(*args: str) -> object:
    return CliRunner().invoke(cli, ["sample", *args, "-q"])


def write_spec(tmp_path: Path) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return str(path)


OUTPUTS = {
    "zarr": lambda tmp_path: ["--shape", "16,8", "-o", str(tmp_path / "t.zarr")],
    "zarr-group": lambda tmp_path: ["--spec", write_spec(tmp_path), "-o", str(tmp_path / "t.zarr")],
    "sharded": lambda tmp_path: [
        "--spec",
        write_spec(tmp_path),
        "-o",
        str(tmp_path / "t"),
        "--format",
        "safetensors-sharded",
        "--max-shard-size",
        "300",
    ],
    "npydir": lambda tmp_path: [
        "--spec",
        write_spec(tmp_path),
        "-o",
        str(tmp_path / "t"),
        "--format",
        "npydir",
    ],
}


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry below ``root``: its type bits and (files) bytes."""
    found = {}
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            found[str(path.relative_to(root))] = (
                stat.S_IFMT(mode),
                path.read_bytes() if stat.S_ISREG(mode) else b"",
            )
    return found


def target_of(args: list[str]) -> Path:
    return Path(args[args.index("-o") + 1])


@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_force_replaces_what_vsgen_wrote(tmp_path, kind):
    args = OUTPUTS[kind](tmp_path)
    assert sample(*args, "--seed", "1").exit_code == 0
    first = tree(target_of(args))
    result = sample(*args, "--seed", "2", "--force")
    assert result.exit_code == 0, result.output
    second = tree(target_of(args))
    assert sorted(first) == sorted(second) and first != second
    assert sorted(os.listdir(tmp_path)) == sorted(
        {target_of(args).name, "spec.json"} & {*os.listdir(tmp_path)}
    )
    assert not [name for name in os.listdir(tmp_path) if ".vsgen-" in name]


def test_force_replaces_a_store_of_another_shape_and_removes_its_chunks(tmp_path):
    store = tmp_path / "t.zarr"
    assert sample("--shape", "64,8", "--chunks", "4,8", "-o", str(store)).exit_code == 0
    assert len(os.listdir(store / "c")) == 16
    assert sample("--shape", "8", "-o", str(store), "--force").exit_code == 0
    assert sorted(os.listdir(store)) == ["c", "zarr.json"] and os.listdir(store / "c") == ["0"]
    assert os.listdir(tmp_path) == ["t.zarr"]


@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_a_private_output_stays_private(tmp_path, kind):
    args = OUTPUTS[kind](tmp_path)
    target = target_of(args)
    assert sample(*args, "--seed", "1").exit_code == 0
    for directory, _, files in os.walk(target):
        for name in files:
            os.chmod(os.path.join(directory, name), 0o600)
        os.chmod(directory, 0o700)
    umask = os.umask(0o022)
    try:
        assert sample(*args, "--seed", "2", "--force").exit_code == 0
    finally:
        os.umask(umask)
    modes = {
        str(path.relative_to(target)): stat.S_IMODE(path.lstat().st_mode)
        for path in [target, *target.rglob("*")]
    }
    for name, mode in modes.items():
        expected = 0o700 if (target / name).is_dir() else 0o600
        assert mode == expected, (name, oct(mode))


def test_the_new_output_is_never_wider_than_the_old_or_the_umask(tmp_path):
    store = tmp_path / "t.zarr"
    assert sample("--shape", "16,8", "-o", str(store)).exit_code == 0
    os.chmod(store, 0o750)
    umask = os.umask(0o027)  # new files 0640, directories 0750
    try:
        assert sample("--shape", "16,8", "-o", str(store), "--force").exit_code == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(store.stat().st_mode) == 0o750
    assert stat.S_IMODE((store / "zarr.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((store / "c" / "0").stat().st_mode) == 0o750


class Meddling:
    """A runner that runs the tasks here, then ``meddle()``s before the commit."""

    def __init__(self, meddle) -> None:
        self.meddle = meddle

    def prepare(self, temp: str) -> None:
        pass

    def run(self, tasks, on_progress, cancelled) -> None:
        for task in tasks:
            task(1)
        self.meddle()

    def sync(self, temp: str) -> None:
        parallel.sync_written(temp)

    def forget(self, temp: str) -> None:
        parallel.forget_written(temp)


@pytest.mark.parametrize("kind", ["zarr", "sharded"])
def test_a_file_added_during_the_run_stops_the_swap_and_is_kept(tmp_path, kind):
    target = tmp_path / ("t.zarr" if kind == "zarr" else "t")
    fmt = "zarr" if kind == "zarr" else "safetensors-sharded"
    job = tensor_job(vsgen.VarianceScaling(seed=1), (16, 8))
    blockwrite.write(job, str(target), fmt)
    before = tree(target)
    added = target / ("c" if kind == "zarr" else "") / "added-meanwhile.txt"

    def meddle() -> None:
        added.write_text("keep me")

    with pytest.raises(atomic.TargetChanged) as caught:
        blockwrite.write(job, str(target), fmt, runner=Meddling(meddle), force=True)
    message = str(caught.value)
    assert f"output {str(target)!r} changed during the run" in message
    assert str(added) in message and ".vsgen-" not in message
    assert added.read_text() == "keep me"
    assert tree(target) == {**before, **tree(target)} and len(tree(target)) == len(before) + 1
    assert sorted(os.listdir(tmp_path)) == [target.name]


def test_the_command_line_says_a_change_at_the_swap_is_a_runtime_failure(tmp_path, monkeypatch):
    """Exit 1 (the docs' "a file that appeared at the target while vsgen was
    writing"), one line naming the user's path, never the hidden temporary."""
    store = tmp_path / "t.zarr"
    assert sample("--shape", "16,8", "-o", str(store)).exit_code == 0
    real = parallel.write_block

    def write_and_meddle(place, origin, values):
        real(place, origin, values)
        (store / "c" / "new.txt").write_text("someone's")

    monkeypatch.setattr(parallel, "write_block", write_and_meddle)
    result = sample("--shape", "16,8", "-o", str(store), "--force", "--seed", "3")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: output") and "t.zarr/c/new.txt" in line and ".vsgen-" not in line
    assert (store / "c" / "new.txt").read_text() == "someone's"
    assert sorted(os.listdir(tmp_path)) == ["t.zarr"]


def test_a_file_that_appears_after_the_last_survey_is_never_deleted(tmp_path, monkeypatch):
    """The old output's files are deleted one by one, each the one surveyed: a file
    added between the survey and the deletion stays, with its folder."""
    store = tmp_path / "t.zarr"
    assert sample("--shape", "16,8", "-o", str(store)).exit_code == 0
    real = atomic.remove_surveyed

    def remove_after_someone_adds(root, judge, surveyed):
        Path(root, "c", "late.txt").write_text("late")
        return real(root, judge, surveyed)

    monkeypatch.setattr(atomic, "remove_surveyed", remove_after_someone_adds)
    assert sample("--shape", "16,8", "-o", str(store), "--force", "--seed", "4").exit_code == 0
    [aside] = [name for name in os.listdir(tmp_path) if ".vsgen-old-" in name]
    assert tree(tmp_path / aside) == {
        "c": (stat.S_IFDIR, b""),
        "c/late.txt": (stat.S_IFREG, b"late"),
    }
    # The next run on the same target keeps it, and says so once its run is gone.
    monkeypatch.setattr(atomic, "_process_gone", lambda pid: True)
    result = sample("--shape", "16,8", "-o", str(store), "--force", "--seed", "5")
    assert result.exit_code == 0
    [line] = result.stderr.splitlines()
    assert line.startswith(f"warning: {aside} beside") and "set aside" in line
    assert (tmp_path / aside / "c" / "late.txt").read_text() == "late"


def test_a_change_of_kind_at_the_swap_is_refused_too(tmp_path):
    """The target became a link to a vsgen store elsewhere: not replaced."""
    store = tmp_path / "t.zarr"
    job = tensor_job(vsgen.VarianceScaling(seed=1), (16, 8))
    blockwrite.write(job, str(store))
    elsewhere = tmp_path / "elsewhere.zarr"

    def meddle() -> None:
        os.rename(store, elsewhere)
        store.symlink_to(elsewhere)

    with pytest.raises(atomic.TargetChanged, match=r"\(a symbolic link\)"):
        blockwrite.write(job, str(store), runner=Meddling(meddle), force=True)
    assert store.is_symlink() and (elsewhere / "zarr.json").exists()


def test_an_index_of_vsgen_0_2_is_replaced_when_its_shards_are_vsgen_s(tmp_path):
    directory = tmp_path / "t"
    args = OUTPUTS["sharded"](tmp_path)
    assert sample(*args).exit_code == 0
    index = json.loads((directory / INDEX_NAME).read_text())
    del index["metadata"]["vsgen"]  # as 0.2 wrote it
    (directory / INDEX_NAME).write_text(json.dumps(index))
    assert sample(*args, "--force").exit_code == 0
    assert "vsgen" in json.loads((directory / INDEX_NAME).read_text())["metadata"]


# --- the litter of runs that died -------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def litter_name(final: Path, mark: str, pid: int, owner: str | None = None) -> Path:
    owner = owner or atomic.owner_tag()
    return final.parent / f".{final.name}{mark}{owner}-{pid}-{os.urandom(6).hex()}"


def test_the_litter_of_a_dead_run_is_cleaned_by_the_next_and_nothing_else(tmp_path):
    final = tmp_path / "t.zarr"
    gone = dead_pid()
    dead_temporary = litter_name(final, ".vsgen-tmp-", gone)
    (dead_temporary / "c" / "0").mkdir(parents=True)
    (dead_temporary / "c" / "0" / "0").write_bytes(b"\0" * 512)
    dead_file = litter_name(tmp_path / "w.npy", ".vsgen-tmp-", gone)
    dead_file.write_bytes(b"partial")
    alive = litter_name(final, ".vsgen-tmp-", os.getpid())
    alive.mkdir()
    elsewhere = litter_name(final, ".vsgen-tmp-", gone, owner="00000000")
    elsewhere.mkdir()
    other_target = litter_name(tmp_path / "other.zarr", ".vsgen-tmp-", gone)
    other_target.mkdir()
    assert sample("--shape", "16,8", "-o", str(final)).exit_code == 0
    left = set(os.listdir(tmp_path))
    assert dead_temporary.name not in left  # the dead run's, for this target: cleaned
    assert {alive.name, elsewhere.name, other_target.name, dead_file.name} <= left
    assert sample("--shape", "16,8", "-o", str(tmp_path / "w.npy")).exit_code == 0
    assert dead_file.name not in os.listdir(tmp_path)


def test_dead_litter_holding_more_than_vsgen_writes_is_kept_with_a_warning(tmp_path):
    final = tmp_path / "t.zarr"
    suspicious = litter_name(final, ".vsgen-tmp-", dead_pid())
    suspicious.mkdir()
    (suspicious / "link").symlink_to(tmp_path)
    old = litter_name(final, ".vsgen-old-", dead_pid())
    old.mkdir()
    (old / "zarr.json").write_text("{}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atomic.clean_litter(str(final), "t.zarr")
    messages = sorted(str(w.message) for w in caught if w.category is atomic.LeftoverWarning)
    assert len(messages) == 2
    assert all("beside 't.zarr'" in m and "left it in place" in m for m in messages)
    assert suspicious.exists() and old.exists() and (old / "zarr.json").exists()
    # On the command line it is one warning line, and the run goes on.
    result = sample("--shape", "16,8", "-o", str(final))
    assert result.exit_code == 0
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def test_litter_names_follow_the_temporary_names(tmp_path):
    """What :func:`atomic.litter` recognises is what :func:`atomic.temp_path` makes,
    also for a target whose name had to be shortened."""
    for name in ("t.zarr", "é" * 120 + ".zarr", "x" * 250):
        final = str(tmp_path / name)
        made = atomic.temp_path(final)
        assert atomic.litter(final) == []  # not made yet
        os.mkdir(made)
        assert atomic.litter(final) == []  # this process is alive
        os.rmdir(made)
        # What a run with another (now dead) process id made: its name fits too.
        suffix = f".vsgen-tmp-{atomic.owner_tag()}-{dead_pid()}-{os.urandom(6).hex()}"
        os.mkdir(tmp_path / f".{atomic._short_base(name, suffix)}{suffix}")
        found = atomic.litter(final)
        assert len(found) == 1 and found[0][1] == ".vsgen-tmp-"
        os.rmdir(found[0][0])
    assert atomic.litter(str(tmp_path / "t.zarr")) == []


def test_a_survey_stops_at_once_when_cancelled(tmp_path):
    store = tmp_path / "t.zarr"
    assert sample("--shape", "64,8", "--chunks", "1,8", "-o", str(store)).exit_code == 0
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) > 3

    class Everything:
        def directory(self, parts):
            return None

        def file(self, parts, size, path):
            return None

    with atomic.cancellation(cancelled), pytest.raises(KeyboardInterrupt):
        atomic.survey(str(store), Everything())
    assert len(asked) == 4
    assert atomic.survey(str(store), Everything()).foreign is None  # not cancelled outside


def test_readers_refuse_a_store_they_would_have_to_follow_a_link_into(tmp_path):
    store = tmp_path / "t.zarr"
    assert sample("--spec", write_spec(tmp_path), "-o", str(store)).exit_code == 0
    os.rename(store / "other", tmp_path / "other")
    (store / "other").symlink_to(tmp_path / "other")
    with pytest.raises(readers.UnreadableFile, match="other: is a symbolic link"):
        readers.open_file(str(store))


def test_values_written_to_a_replaced_store_are_the_new_ones(tmp_path):
    store = tmp_path / "t.zarr"
    assert sample("--shape", "16,8", "--seed", "1", "-o", str(store)).exit_code == 0
    assert sample("--shape", "16,8", "--seed", "2", "-o", str(store), "--force").exit_code == 0
    values = np.concatenate(list(readers.read_values(readers.open_file(str(store)).tensors[0])))
    expected = vsgen.VarianceScaling(seed=2).plan((16, 8)).array().reshape(-1)
    assert values.tobytes() == expected.tobytes()
