"""``vsgen.formats.atomic``'s survey of directory outputs, unit by unit: reading entries
without following links or blocking, the mount table, what ``survey`` finds and
returns, the replaceability check's messages, deleting only what was surveyed,
narrowing permissions, a dead run's litter, and the small helpers.

Mount points come from a mount table written by the test (the module reads
``/proc/self/mountinfo`` through ``read_entry``); real mounts are in the
hostile-case suite.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsgen.formats import atomic

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux file semantics")


class Everything:
    """A judge that calls everything vsgen's."""

    def directory(self, parts):
        return None

    def file(self, parts, size, path):
        return None


def fake_mounts(monkeypatch, *points: str, lines: list[str] | None = None) -> None:
    """Make ``/proc/self/mountinfo`` say that ``points`` are mount points."""
    table = lines or [
        f"{36 + i} 25 0:{32 + i} / {point} rw,relatime shared:{i} - tmpfs none rw"
        for i, point in enumerate(points)
    ]
    real = atomic.read_entry

    def read(path: str, limit: int):
        if path == "/proc/self/mountinfo":
            assert limit == 64 << 20
            return "\n".join(table).encode("utf-8", "surrogateescape") + b"\n"
        return real(path, limit)

    monkeypatch.setattr(atomic, "read_entry", read)


# --- reading an entry -----------------------------------------------------------------------------


def test_read_entry_reads_a_regular_file_up_to_the_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    assert atomic.read_entry(str(path), 4) == b"0123"
    assert atomic.read_entry(str(path), 100) == b"0123456789"
    assert atomic.read_entry(str(tmp_path / "missing"), 4) is None


@pytest.mark.parametrize("kind", ["fifo", "link", "directory", "socket"])
def test_read_entry_opens_nothing_else_and_never_blocks(tmp_path, kind):
    path = tmp_path / "entry"
    if kind == "fifo":
        os.mkfifo(path)  # opened for reading without a writer: it would block
    elif kind == "link":
        (tmp_path / "target").write_bytes(b"secret")
        path.symlink_to(tmp_path / "target")
    elif kind == "directory":
        path.mkdir()
    else:
        import socket

        os.chdir(tmp_path)
        server = socket.socket(socket.AF_UNIX)
        server.bind("entry")
        server.close()
    opened = []
    real_close = os.close
    assert atomic.read_entry(str(path), 100) is None
    del opened, real_close


def test_open_entry_closes_what_it_will_not_return(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe")
    closed = []
    real = os.close
    monkeypatch.setattr(os, "close", lambda fd: closed.append(fd) or real(fd))
    assert atomic.open_entry(str(tmp_path / "pipe")) is None
    assert len(closed) == 1
    (tmp_path / "file").write_bytes(b"x")
    descriptor = atomic.open_entry(str(tmp_path / "file"))
    assert descriptor is not None and len(closed) == 1
    assert os.get_blocking(descriptor) and not os.get_inheritable(descriptor)
    real(descriptor)


# --- the mount table ------------------------------------------------------------------------------


def test_mounts_within_reads_the_mount_table(tmp_path, monkeypatch):
    root = tmp_path / "out"
    root.mkdir()
    fake_mounts(
        monkeypatch,
        lines=[
            "short line",
            f"36 25 0:32 / {root} rw - tmpfs none rw",
            f"37 25 0:33 / {root}/c/mnt rw - tmpfs none rw",
            f"38 25 0:34 / {root}/with\\040space rw - tmpfs none rw",
            f"39 25 0:35 / {root}x rw - tmpfs none rw",  # a sibling, not below
            f"40 25 0:36 / {tmp_path} rw - tmpfs none rw",  # above
            "41 25 0:37 / / rw - ext4 /dev/vda rw",
        ],
    )
    assert atomic._mounts_within(str(root)) == [
        str(root),
        f"{root}/c/mnt",
        f"{root}/with space",
    ]
    assert atomic._mounts_within(str(root / "c")) == [f"{root}/c/mnt"]
    assert atomic._mounts_within(str(root / "c" / "mnt" / "deeper")) == []


def test_mounts_within_follows_the_root_to_its_real_path(tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "mnt").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    fake_mounts(monkeypatch, f"{real}/mnt")
    assert atomic._mounts_within(str(tmp_path / "link")) == [f"{real}/mnt"]


def test_without_a_mount_table_there_are_no_mounts(tmp_path, monkeypatch):
    real = atomic.read_entry
    monkeypatch.setattr(
        atomic, "read_entry", lambda path, limit: None if "mountinfo" in path else real(path, limit)
    )
    assert atomic._mounts_within(str(tmp_path)) == []


def test_the_real_mount_table_is_read(tmp_path):
    """/ is always mounted, so the table lists it above everything."""
    assert atomic._mounts_within("/") and "/" in atomic._mounts_within("/")


# --- the survey -----------------------------------------------------------------------------------


def tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"a")
    (root / "sub" / "b.bin").write_bytes(b"bb")
    (root / "sub" / "deeper" / "c.bin").write_bytes(b"ccc")


def test_survey_of_an_owned_tree_returns_its_inodes_and_modes(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    tree(root)
    os.chmod(root / "sub", 0o750)
    os.chmod(root / "a.bin", 0o640)
    os.chmod(root / "sub" / "b.bin", 0o604)
    os.chmod(root, 0o755)
    found = atomic.survey(str(root), Everything())
    assert found.foreign is None and found.reason == ""
    inodes = {p.stat().st_ino for p in root.rglob("*") if p.is_file()}
    assert found.inodes == frozenset(inodes) and len(inodes) == 3
    mode_of_deeper = stat.S_IMODE((root / "sub" / "deeper").stat().st_mode)
    assert found.directory_mode == 0o755 & 0o750 & mode_of_deeper
    mode_of_c = stat.S_IMODE((root / "sub" / "deeper" / "c.bin").stat().st_mode)
    assert found.file_mode == 0o640 & 0o604 & mode_of_c & 0o666


def test_survey_of_an_empty_directory(tmp_path):
    os.chmod(tmp_path, 0o711)
    found = atomic.survey(str(tmp_path), Everything())
    assert found == atomic.Survey(None, "", frozenset(), 0o711, 0o666)


def test_survey_keeps_setgid_and_sticky_out_of_the_modes(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    os.chmod(root, 0o3777)
    (root / "f").write_bytes(b"")
    os.chmod(root / "f", 0o4777)
    found = atomic.survey(str(root), Everything())
    assert (found.directory_mode, found.file_mode) == (0o777, 0o666)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: os.mkfifo(p), "a FIFO (named pipe)"),
        (lambda p: p.symlink_to("/etc/hostname"), "a symbolic link"),
        (lambda p: p.symlink_to(p.parent), "a symbolic link"),  # to a directory
    ],
)
def test_survey_stops_at_the_first_special_entry(tmp_path, make, reason):
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    make(root / "sub" / "x")
    found = atomic.survey(str(root), Everything())
    assert (found.foreign, found.reason, found.inodes) == ("sub/x", reason, frozenset())


def test_survey_reports_what_the_judge_refuses_with_its_reason(tmp_path):
    root = tmp_path / "out"
    tree(root)

    class Picky(Everything):
        def file(self, parts, size, path):
            return f"{size} bytes at {'/'.join(parts)}" if parts[-1] == "c.bin" else None

        def directory(self, parts):
            return None

    found = atomic.survey(str(root), Picky())
    assert (found.foreign, found.reason) == ("sub/deeper/c.bin", "3 bytes at sub/deeper/c.bin")

    class NoDirectories(Everything):
        def directory(self, parts):
            return f"no {parts}"

    found = atomic.survey(str(root), NoDirectories())
    assert (found.foreign, found.reason) == ("sub", "no ('sub',)")


def test_survey_refuses_a_mount_below_and_names_it(tmp_path, monkeypatch):
    root = tmp_path / "out"
    tree(root)
    fake_mounts(monkeypatch, f"{root}/sub/deeper", f"{root}/sub")
    found = atomic.survey(str(root), Everything())
    assert (found.foreign, found.reason, found.inodes) == ("sub", "a mount point", frozenset())
    assert found.directory_mode == stat.S_IMODE(root.stat().st_mode)


def test_survey_refuses_another_file_system(tmp_path, monkeypatch):
    root = tmp_path / "out"
    tree(root)
    real = os.DirEntry.stat if hasattr(os, "DirEntry") else None
    del real

    class Elsewhere:
        def __init__(self, info):
            self.info = info

    top = os.lstat(root)
    real_scandir = os.scandir

    class Entries:
        def __init__(self, path):
            self.inner = real_scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *args):
            self.inner.close()

        def __iter__(self):
            for entry in self.inner:
                yield Moved(entry) if entry.name == "b.bin" else entry

    class Moved:
        def __init__(self, entry):
            self.entry = entry
            self.name = entry.name
            self.path = entry.path

        def stat(self, follow_symlinks=True):
            info = self.entry.stat(follow_symlinks=follow_symlinks)
            fields = list(info)
            fields[stat.ST_DEV] = top.st_dev + 1
            return os.stat_result(fields)

    monkeypatch.setattr(atomic.os, "scandir", Entries)
    found = atomic.survey(str(root), Everything())
    assert (found.foreign, found.reason) == ("sub/b.bin", "on another file system")


# --- replaceable? ---------------------------------------------------------------------------------


def npy_directory(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    np.save(root / "a.npy", np.zeros(2, np.float32))
    np.save(root / "sub" / "b.npy", np.zeros(2, np.float32))
    return root


def refused(path: Path, display: str = "out", is_dir: bool = True, **options) -> atomic.NotOwned:
    with pytest.raises(atomic.NotOwned) as caught:
        atomic.check_replaceable(str(path), display, is_dir, **options)
    return caught.value


def test_check_replaceable_messages(tmp_path, monkeypatch):
    file = tmp_path / "f"
    file.write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe")
    assert str(refused(tmp_path / "pipe", "pipe", False)) == (
        "output 'pipe' exists and is a FIFO (named pipe), not a regular file; "
        "--force only replaces regular files"
    )
    assert atomic.check_replaceable(str(file), "f", False) is None
    assert atomic.check_replaceable(str(tmp_path / "missing"), "m", True) is None
    assert str(refused(file, "f")) == (
        "output 'f' exists and is a regular file; the format writes a directory and "
        "--force only replaces a directory of .npy files"
    )
    assert str(refused(tmp_path / "pipe", "p", words="a Zarr store vsgen wrote")) == (
        "output 'p' exists and is a FIFO (named pipe); the format writes a directory and "
        "--force only replaces a Zarr store vsgen wrote"
    )
    out = npy_directory(tmp_path / "out")
    found = atomic.check_replaceable(str(out), "out", True)
    assert found is not None and found.foreign is None and len(found.inodes) == 2
    (out / "sub" / "notes.txt").write_text("mine")
    error = refused(out, "shown")
    assert str(error) == (
        "output 'shown' is a directory that holds other files (e.g. shown/sub/notes.txt: "
        "not an NPY file); --force only replaces a directory of .npy files: choose another name"
    )
    assert (error.entry, error.reason) == ("sub/notes.txt", "not an NPY file")


def test_check_replaceable_names_what_the_format_could_not_read(tmp_path):
    out = npy_directory(tmp_path / "out")

    def judge(path: str):
        raise atomic.NotOwned("inner message", "zarr.json", "is broken")

    error = refused(out, "shown", judge=judge, words="a Zarr store vsgen wrote")
    assert str(error) == (
        "output 'shown' is not a Zarr store vsgen wrote (shown/zarr.json: is broken); "
        "--force only replaces a Zarr store vsgen wrote: choose another name"
    )
    assert (error.entry, error.reason) == ("zarr.json", "is broken")

    def whole(path: str):
        raise atomic.NotOwned("inner", "", "the index says so")

    assert str(refused(out, "shown", judge=whole, words="W")) == (
        "output 'shown' is not W (the index says so); --force only replaces W: choose another name"
    )


def test_check_replaceable_refuses_a_mount_point(tmp_path, monkeypatch):
    out = npy_directory(tmp_path / "out")
    fake_mounts(monkeypatch, str(out))
    assert str(refused(out, "shown")) == (
        "output 'shown' is a mount point; --force never replaces one"
    )


def test_a_directory_of_a_bare_name_is_checked_against_the_current_folder(tmp_path, monkeypatch):
    npy_directory(tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    found = atomic.check_replaceable("out", "out", True)
    assert found is not None and found.foreign is None


def test_the_npydir_check_at_the_swap(tmp_path):
    out = npy_directory(tmp_path / "out")
    judge, found = atomic._npydir_check(str(out))
    assert isinstance(judge, atomic.NpyJudge) and found.foreign is None
    (out / "x.txt").write_text("x")
    with pytest.raises(atomic.NotOwned) as caught:
        atomic._npydir_check(str(out))
    assert (str(caught.value), caught.value.entry, caught.value.reason) == (
        "",
        "x.txt",
        "not an NPY file",
    )


def test_not_owned_keeps_its_parts_and_crosses_processes():
    import pickle

    error = atomic.NotOwned("message", "entry", "reason")
    assert (str(error), error.entry, error.reason) == ("message", "entry", "reason")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == "message"
    plain = atomic.NotOwned("only")
    assert (plain.entry, plain.reason) == ("", "")


# --- deleting what was surveyed, narrowing modes --------------------------------------------------


def test_remove_surveyed_deletes_the_surveyed_files_and_empty_directories(tmp_path):
    root = tmp_path / "out"
    tree(root)
    found = atomic.survey(str(root), Everything())
    assert atomic.remove_surveyed(str(root), Everything(), found) is True
    assert not root.exists()


def test_remove_surveyed_keeps_a_new_file_and_a_file_the_judge_now_refuses(tmp_path):
    root = tmp_path / "out"
    tree(root)
    found = atomic.survey(str(root), Everything())
    (root / "sub" / "new.txt").write_text("new")  # another inode

    class NotC(Everything):
        def file(self, parts, size, path):
            return "changed" if parts == ("a.bin",) else None

    assert atomic.remove_surveyed(str(root), NotC(), found) is False
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["a.bin", "sub", "sub/new.txt"]


def test_restrict_tree_takes_away_bits_and_never_adds(tmp_path):
    root = tmp_path / "out"
    tree(root)
    os.chmod(root / "a.bin", 0o600)
    os.chmod(root / "sub", 0o755)
    atomic.restrict_tree(str(root), 0o750, 0o640)
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
        for p in [root, *root.rglob("*")]
    }
    assert modes["out/a.bin"] == 0o600  # narrower already: kept
    assert modes["out/sub"] == 0o750
    assert modes["out/sub/b.bin"] == 0o644 & 0o640
    assert modes["out"] == stat.S_IMODE(os.stat(tmp_path).st_mode) & 0o750 or modes["out"] <= 0o750
    assert list(atomic._tree(str(root)))[0] == (str(root), False)
    kinds = dict(atomic._tree(str(root)))
    assert kinds[str(root / "sub")] is False and kinds[str(root / "sub" / "b.bin")] is True
    assert len(kinds) == 6


def test_install_directory_narrows_the_new_output_only_when_the_old_was_narrower(
    tmp_path, monkeypatch
):
    old = npy_directory(tmp_path / "out")
    os.chmod(old / "a.npy", 0o600)
    new = npy_directory(tmp_path / ".new")
    asked = []
    real = atomic.restrict_tree
    monkeypatch.setattr(atomic, "restrict_tree", lambda *a: asked.append(a) or real(*a))
    atomic.install_directory(str(new), str(old), "out", True)
    assert len(asked) == 1 and asked[0][2] == 0o600 & stat.S_IMODE(
        (old / "sub" / "b.npy").stat().st_mode
    )
    assert stat.S_IMODE((old / "a.npy").stat().st_mode) == 0o600
    again = npy_directory(tmp_path / ".again")
    atomic.install_directory(str(again), str(old), "out", True, modes=(0o700, 0o600))
    assert len(asked) == 1  # no wider than the old: nothing to narrow


def test_a_directory_that_appears_at_a_free_name_stops_the_rename(tmp_path):
    new = npy_directory(tmp_path / ".new")
    final = tmp_path / "out"
    npy_directory(final)  # someone made it meanwhile
    os.unlink(final / "a.npy")
    with pytest.raises(FileExistsError, match="'out' exists; use --force"):
        atomic.install_directory(str(new), str(final), "out", False)
    final_file = tmp_path / "file"
    final_file.write_bytes(b"x")
    with pytest.raises(atomic.TargetChanged) as caught:
        atomic.install_directory(str(new), str(final_file), "file", False, None) if False else (
            _rename_over(new, final_file)
        )
    assert caught.value.errno == errno.EEXIST


def _rename_over(new: Path, final: Path) -> None:
    """install_directory's first branch, with the target appearing between its check
    and its rename."""
    real = os.path.lexists
    calls = []

    def lexists(path):
        calls.append(path)
        return False if len(calls) == 1 else real(path)

    import unittest.mock

    with unittest.mock.patch.object(atomic.os.path, "lexists", lexists):
        atomic.install_directory(str(new), str(final), "file", False)


def test_a_failed_rename_at_a_free_name_keeps_its_error(tmp_path, monkeypatch):
    new = npy_directory(tmp_path / ".new")

    def rename(source, destination):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(PermissionError):
        atomic.install_directory(str(new), str(tmp_path / "out"), "out", False)


def test_putting_the_old_output_back_when_its_place_was_taken(tmp_path, monkeypatch):
    aside = npy_directory(tmp_path / ".aside")
    final = tmp_path / "out"
    final.mkdir()
    (final / "theirs.txt").write_text("theirs")
    with pytest.raises(atomic.TargetChanged) as caught:
        atomic._moved_aside(str(aside), str(final), "out")
    assert str(caught.value) == (
        "[Errno 17] output 'out' was re-created during the run; the earlier output is kept "
        "as .aside beside it"
    )
    assert aside.exists() and (final / "theirs.txt").exists()
    atomic._moved_aside(str(aside), str(tmp_path / "free"), "free")
    assert (tmp_path / "free" / "a.npy").exists() and not aside.exists()


# --- a dead run's litter --------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_process_gone():
    assert atomic._process_gone(dead_pid()) is True
    assert atomic._process_gone(os.getpid()) is False
    assert atomic._process_gone(0) is False
    assert atomic._process_gone(-1) is False
    assert atomic._process_gone(1) is False  # init: alive (someone else's, maybe)


def test_process_gone_treats_a_denied_signal_as_alive(monkeypatch):
    def kill(pid, signum):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "kill", kill)
    assert atomic._process_gone(12345) is False

    def other(pid, signum):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(atomic.os, "kill", other)
    assert atomic._process_gone(12345) is False


def test_remove_owned_tree(tmp_path):
    file = tmp_path / "f"
    file.write_bytes(b"x")
    assert atomic._remove_owned_tree(str(file)) is True and not file.exists()
    assert atomic._remove_owned_tree(str(tmp_path / "missing")) is True
    owned = tmp_path / "owned"
    tree(owned)
    assert atomic._remove_owned_tree(str(owned)) is True and not owned.exists()
    linked = tmp_path / "linked"
    tree(linked)
    (linked / "sub" / "link").symlink_to(tmp_path)
    assert atomic._remove_owned_tree(str(linked)) is False
    assert (linked / "a.bin").exists() and (linked / "sub" / "deeper" / "c.bin").exists()
    piped = tmp_path / "piped"
    piped.mkdir()
    os.mkfifo(piped / "p")
    assert atomic._remove_owned_tree(str(piped)) is False and (piped / "p").exists()
    os.mkfifo(tmp_path / "fifo")
    assert atomic._remove_owned_tree(str(tmp_path / "fifo")) is False
    assert (tmp_path / "fifo").exists()


def test_remove_owned_tree_keeps_a_tree_with_a_mount(tmp_path, monkeypatch):
    owned = tmp_path / "owned"
    tree(owned)
    fake_mounts(monkeypatch, f"{owned}/sub")
    assert atomic._remove_owned_tree(str(owned)) is False and (owned / "a.bin").exists()


def test_remove_owned_tree_keeps_a_tree_it_cannot_look_into(tmp_path, monkeypatch):
    owned = tmp_path / "owned"
    tree(owned)
    real = os.lstat

    def lstat(path, *args, **kwargs):
        if os.fspath(path).endswith("b.bin"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "lstat", lstat)
    assert atomic._remove_owned_tree(str(owned)) is False
    monkeypatch.setattr(atomic.os, "lstat", real)
    assert (owned / "sub" / "b.bin").exists()

    def top(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.os, "lstat", top)
    assert atomic._remove_owned_tree(str(owned)) is False


def test_remove_owned_tree_reports_a_file_it_could_not_remove(tmp_path, monkeypatch):
    owned = tmp_path / "owned"
    tree(owned)
    real = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path).endswith("a.bin"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "unlink", unlink)
    assert atomic._remove_owned_tree(str(owned)) is False
    assert sorted(p.name for p in owned.iterdir()) == ["a.bin"]


def test_remove_quietly(tmp_path, monkeypatch):
    owned = tmp_path / "owned"
    tree(owned)
    os.chmod(owned / "sub", 0o500)  # its entries cannot be removed (but by root)
    try:
        atomic.remove_quietly(str(owned))  # never raises
    finally:
        if (owned / "sub").exists():
            os.chmod(owned / "sub", 0o700)
    atomic.remove_quietly(str(tmp_path / "missing"))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    atomic.remove_quietly(str(link))
    assert not link.exists() and tmp_path.exists()


def test_litter_lists_only_this_owner_s_dead_runs_of_this_target(tmp_path):
    final = tmp_path / "t.zarr"
    gone, owner = dead_pid(), atomic.owner_tag()
    names = {
        "dead": f".t.zarr.vsgen-tmp-{owner}-{gone}-0123456789ab",
        "old": f".t.zarr.vsgen-old-{owner}-{gone}-0123456789ab",
        "alive": f".t.zarr.vsgen-tmp-{owner}-{os.getpid()}-0123456789ab",
        "other owner": f".t.zarr.vsgen-tmp-00000000-{gone}-0123456789ab",
        "other target": f".u.zarr.vsgen-tmp-{owner}-{gone}-0123456789ab",
        "not hidden": f"t.zarr.vsgen-tmp-{owner}-{gone}-0123456789ab",
        "bad suffix": f".t.zarr.vsgen-tmp-{owner}-{gone}-0123456789",
        "prefix of the name": f".t.zar.vsgen-tmp-{owner}-{gone}-0123456789ab",
        "mark only": ".vsgen-tmp-",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    found = sorted(atomic.litter(str(final)))
    assert found == sorted(
        [
            (str(tmp_path / names["dead"]), ".vsgen-tmp-"),
            (str(tmp_path / names["old"]), ".vsgen-old-"),
        ]
    )
    assert atomic.litter(str(tmp_path / "missing-dir" / "t.zarr")) == []


def test_litter_of_a_bare_name_is_looked_for_in_the_current_folder(tmp_path, monkeypatch):
    gone = dead_pid()
    name = f".w.npy.vsgen-tmp-{atomic.owner_tag()}-{gone}-0123456789ab"
    (tmp_path / name).write_bytes(b"partial")
    monkeypatch.chdir(tmp_path)
    assert atomic.litter("w.npy") == [(name, ".vsgen-tmp-")]
    atomic.clean_litter("w.npy", "w.npy")
    assert os.listdir(tmp_path) == []


def test_the_owner_tag_is_stable_and_hex(monkeypatch):
    tag = atomic.owner_tag()
    assert len(tag) == 8 and int(tag, 16) >= 0 and atomic.owner_tag() == tag
    monkeypatch.setattr(atomic, "_OWNER", None)
    assert atomic.owner_tag() == tag  # computed again: the same namespace, the same tag
    import zlib

    with open("/proc/sys/kernel/random/boot_id", "rb") as handle:
        boot = handle.read(64)
    namespace = os.readlink("/proc/self/ns/pid").encode()
    assert tag == f"{zlib.crc32(boot + b'|' + namespace):08x}"


def test_the_owner_tag_falls_back_to_the_host_name(monkeypatch):
    import socket
    import zlib

    monkeypatch.setattr(atomic, "_OWNER", None)
    real = os.readlink
    monkeypatch.setattr(
        atomic.os,
        "readlink",
        lambda path, *a, **k: (
            (_ for _ in ()).throw(OSError()) if "ns/pid" in str(path) else real(path, *a, **k)
        ),
    )
    expected = f"{zlib.crc32(socket.gethostname().encode()):08x}"
    assert atomic.owner_tag() == expected
    monkeypatch.setattr(atomic, "_OWNER", None)


# --- small helpers --------------------------------------------------------------------------------


def test_describe_file_kind_names_every_kind(tmp_path):
    assert atomic.describe_file_kind(stat.S_IFLNK) == "a symbolic link"
    assert atomic.describe_file_kind(stat.S_IFDIR) == "a directory"
    assert atomic.describe_file_kind(stat.S_IFIFO) == "a FIFO (named pipe)"
    assert atomic.describe_file_kind(stat.S_IFCHR) == "a character device"
    assert atomic.describe_file_kind(stat.S_IFBLK) == "a block device"
    assert atomic.describe_file_kind(stat.S_IFSOCK) == "a socket"
    assert atomic.describe_file_kind(stat.S_IFREG) == "not a regular file"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (1024**2 - 1, "1024.00 KiB"),
        (1024**2, "1.00 MiB"),
        (5 * 1024**3, "5.00 GiB"),
        (1024**4, "1.00 TiB"),
        (3 * 1024**5, "3072.00 TiB"),
    ],
)
def test_format_bytes(count, text):
    assert atomic.format_bytes(count) == text


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device"),
            "[Errno 28] disk full while writing 't': No space left on device",
        ),
        (
            OSError(errno.EFBIG, "File too large"),
            "[Errno 27] file size limit reached while writing 't': File too large",
        ),
        (
            OSError(errno.EACCES, "Permission denied"),
            "[Errno 13] cannot write 't': Permission denied",
        ),
        (OSError("no errno"), "cannot write 't': no errno"),
    ],
)
def test_io_error_names_the_target_and_keeps_the_errno(error, text):
    converted = atomic.io_error(error, "t")
    assert str(converted) == text and converted.errno == error.errno
    assert type(converted) is (PermissionError if error.errno == errno.EACCES else OSError)


def test_io_error_leaves_an_existing_target_s_message():
    error = FileExistsError(errno.EEXIST, "output file 't' exists; use --force to overwrite")
    assert atomic.io_error(error, "t") is error
