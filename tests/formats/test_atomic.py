"""``vsgen.formats.atomic``: temporaries beside the target, renamed into place.

Unit tests of each promise the command-line tests (cli/test_output.py) rely
on: the temporary's name (hidden, beside the target, within the file-name
limit whatever the target's name), exclusive creation, its mode, the
hard-link install that never overwrites a file that appeared meanwhile, its
fallback on file systems without hard links, the directory swap that puts the
old directory back if the second rename fails, and clean-up on every error
path. Failures of the operating system are simulated with monkeypatch.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from vsgen.formats import atomic

#: ``.<target>.vsgen-tmp-<owner>-<pid>-<random>``: owner and pid name the run.
TEMP_NAME = re.compile(
    r"^\.(?P<base>.*)\.vsgen-tmp-(?P<owner>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{12}$", re.DOTALL
)


# --- names ---------------------------------------------------------------------------


def test_the_temporary_is_hidden_beside_the_target(tmp_path: Path) -> None:
    final = str(tmp_path / "sub" / "w.npy")
    temp = atomic.temp_path(final)
    assert os.path.dirname(temp) == str(tmp_path / "sub")
    match = TEMP_NAME.match(os.path.basename(temp))
    assert match and match["base"] == "w.npy"
    assert match["owner"] == atomic.owner_tag() and match["pid"] == str(os.getpid())
    assert atomic.temp_path(final) != temp  # random
    # A bare name stays a bare name (the current folder).
    assert os.path.dirname(atomic.temp_path("w.npy")) == ""
    aside = os.path.basename(atomic.temp_path(final, ".vsgen-old-"))
    assert re.fullmatch(
        rf"\.w\.npy\.vsgen-old-{atomic.owner_tag()}-{os.getpid()}-[0-9a-f]{{12}}", aside
    )


@pytest.mark.parametrize("length", [200, 232, 233, 255])
def test_long_names_are_shortened_to_the_limit(tmp_path: Path, length: int) -> None:
    name = "w" * (length - 4) + ".npy"
    temp = os.path.basename(atomic.temp_path(str(tmp_path / name)))
    suffix = len(f".vsgen-tmp-{atomic.owner_tag()}-{os.getpid()}-") + 12
    assert len(temp.encode()) == min(1 + length + suffix, 255)
    assert name.startswith(TEMP_NAME.match(temp)["base"])
    (tmp_path / temp).write_bytes(b"")  # the file system accepts it


def test_a_name_cut_inside_a_character_stays_valid(tmp_path: Path) -> None:
    name = "é" * 120 + ".npy"  # 244 bytes: the cut falls inside an "é"
    temp = os.path.basename(atomic.temp_path(str(tmp_path / name)))
    assert len(temp.encode()) <= 255
    assert name.startswith(TEMP_NAME.match(temp)["base"])
    (tmp_path / temp).write_bytes(b"")


def test_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"w\xff\xfe.npy")  # undecodable bytes, as os.listdir gives them
    temp = atomic.temp_path(os.path.join(str(tmp_path), name))
    assert TEMP_NAME.match(os.path.basename(temp))
    Path(temp).write_bytes(b"")


# --- removal ---------------------------------------------------------------------------


def test_remove_quietly(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"x")
    atomic.remove_quietly(str(file))
    tree = tmp_path / "d" / "e"
    tree.mkdir(parents=True)
    (tree / "g").write_bytes(b"y")
    atomic.remove_quietly(str(tmp_path / "d"))
    atomic.remove_quietly(str(tmp_path / "never-existed"))  # no error
    # A link to a directory: the link goes, what it points to stays.
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_bytes(b"z")
    (tmp_path / "link").symlink_to(target)
    atomic.remove_quietly(str(tmp_path / "link"))
    assert sorted(os.listdir(tmp_path)) == ["target"]
    assert (target / "keep").read_bytes() == b"z"


# --- syncing the directory ---------------------------------------------------------------


def record_closes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    closed: list[int] = []
    real = os.close

    def close(fd: int) -> None:
        closed.append(fd)
        real(fd)

    monkeypatch.setattr(os, "close", close)
    return closed


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.EBADF])
def test_directories_that_cannot_be_synced_are_tolerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    closed = record_closes(monkeypatch)

    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    atomic.fsync_directory(str(tmp_path))
    assert len(closed) == 1


def test_a_failing_directory_sync_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = record_closes(monkeypatch)

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as caught:
        atomic.fsync_directory(str(tmp_path))
    assert caught.value.errno == errno.EIO
    assert len(closed) == 1  # the descriptor is closed on the error path too


def test_fsync_directory_opens_a_directory_only(tmp_path: Path) -> None:
    atomic.fsync_directory(str(tmp_path))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        atomic.fsync_directory(str(tmp_path / "file"))


# --- installing a file ------------------------------------------------------------------


def make_temp(directory: Path, content: bytes = b"new") -> str:
    temp = atomic.temp_path(str(directory / "w.npy"))
    Path(temp).write_bytes(content)
    return temp


def test_install_without_force_into_a_free_name(tmp_path: Path) -> None:
    temp = make_temp(tmp_path)
    final = tmp_path / "w.npy"
    atomic.install_file(temp, str(final), "w.npy", force=False)
    assert final.read_bytes() == b"new" and final.stat().st_nlink == 1
    assert os.listdir(tmp_path) == ["w.npy"]


def test_install_without_force_never_overwrites(tmp_path: Path) -> None:
    temp = make_temp(tmp_path)
    final = tmp_path / "w.npy"
    final.write_bytes(b"theirs")
    with pytest.raises(FileExistsError) as caught:
        atomic.install_file(temp, str(final), "shown.npy", force=False)
    assert caught.value.errno == errno.EEXIST
    assert caught.value.strerror == "output file 'shown.npy' exists; use --force to overwrite"
    assert final.read_bytes() == b"theirs" and Path(temp).read_bytes() == b"new"


def test_install_with_force_replaces(tmp_path: Path) -> None:
    temp = make_temp(tmp_path)
    final = tmp_path / "w.npy"
    final.write_bytes(b"old")
    atomic.install_file(temp, str(final), "w.npy", force=True)
    assert final.read_bytes() == b"new" and os.listdir(tmp_path) == ["w.npy"]


NO_HARD_LINKS = [errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS]


def links_fail(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def link(source, destination, *args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", link)


@pytest.mark.parametrize("code", NO_HARD_LINKS)
def test_without_hard_links_a_free_name_is_renamed_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    links_fail(monkeypatch, code)
    temp = make_temp(tmp_path)
    final = tmp_path / "w.npy"
    atomic.install_file(temp, str(final), "w.npy", force=False)
    assert final.read_bytes() == b"new" and os.listdir(tmp_path) == ["w.npy"]


@pytest.mark.parametrize("code", NO_HARD_LINKS)
def test_without_hard_links_an_existing_file_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    links_fail(monkeypatch, code)
    temp = make_temp(tmp_path)
    final = tmp_path / "w.npy"
    final.write_bytes(b"theirs")
    with pytest.raises(FileExistsError) as caught:
        atomic.install_file(temp, str(final), "shown.npy", force=False)
    assert caught.value.errno == errno.EEXIST
    assert caught.value.strerror == "output file 'shown.npy' exists; use --force to overwrite"
    assert final.read_bytes() == b"theirs"


def test_other_link_errors_propagate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links_fail(monkeypatch, errno.EIO)
    temp = make_temp(tmp_path)
    with pytest.raises(OSError) as caught:
        atomic.install_file(temp, str(tmp_path / "w.npy"), "w.npy", force=False)
    assert caught.value.errno == errno.EIO
    assert not (tmp_path / "w.npy").exists()


# --- installing a directory ----------------------------------------------------------------


def make_directory(path: Path, name: str) -> Path:
    """A directory holding one real NPY file (what --force may replace)."""
    path.mkdir()
    with open(path / name, "wb") as handle:
        np.save(handle, np.arange(3, dtype=np.float32))
    return path


def test_a_directory_into_a_free_name(tmp_path: Path) -> None:
    temp = make_directory(tmp_path / ".tmpdir", "a.npy")
    atomic.install_directory(str(temp), str(tmp_path / "out"), "out", force=False)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["a.npy"]


def test_an_existing_directory_needs_force(tmp_path: Path) -> None:
    temp = make_directory(tmp_path / ".tmpdir", "a.npy")
    make_directory(tmp_path / "out", "old.npy")
    with pytest.raises(FileExistsError) as caught:
        atomic.install_directory(str(temp), str(tmp_path / "out"), "shown", force=False)
    assert caught.value.errno == errno.EEXIST
    assert caught.value.strerror == "output directory 'shown' exists; use --force to replace it"
    assert os.listdir(tmp_path / "out") == ["old.npy"] and temp.exists()


def record_renames(monkeypatch: pytest.MonkeyPatch, fail_from: str | None = None) -> list:
    """Record os.rename calls; fail the one whose source is ``fail_from``."""
    calls: list[tuple[str, str]] = []
    real = os.rename

    def rename(source, destination, *args, **kwargs):
        calls.append((os.fspath(source), os.fspath(destination)))
        if fail_from is not None and os.fspath(source) == fail_from:
            raise OSError(errno.EIO, "rename failed")
        return real(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    return calls


def test_force_swaps_directories_through_an_aside_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = make_directory(tmp_path / ".tmpdir", "a.npy")
    make_directory(tmp_path / "out", "old.npy")
    calls = record_renames(monkeypatch)
    atomic.install_directory(str(temp), str(tmp_path / "out"), "out", force=True)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["a.npy"]
    (old, aside), (new, final) = calls
    assert old == final == str(tmp_path / "out") and new == str(temp)
    assert os.path.dirname(aside) == str(tmp_path)
    assert re.fullmatch(
        r"\.out\.vsgen-old-[0-9a-f]{8}-[0-9]+-[0-9a-f]{12}", os.path.basename(aside)
    )


def test_a_failed_swap_puts_the_old_directory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = make_directory(tmp_path / ".tmpdir", "a.npy")
    make_directory(tmp_path / "out", "old.npy")
    calls = record_renames(monkeypatch, fail_from=str(temp))
    with pytest.raises(OSError, match="rename failed"):
        atomic.install_directory(str(temp), str(tmp_path / "out"), "out", force=True)
    assert os.listdir(tmp_path / "out") == ["old.npy"]
    assert sorted(os.listdir(tmp_path)) == [".tmpdir", "out"]  # nothing left aside
    assert calls[-1] == (calls[0][1], str(tmp_path / "out"))


# --- AtomicFile ----------------------------------------------------------------------------


@pytest.fixture
def umask_zero():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_atomic_file_lifecycle(tmp_path: Path, umask_zero: None) -> None:
    final = tmp_path / "w.npy"
    output = atomic.AtomicFile(str(final), "w.npy", force=False)
    assert os.path.dirname(output.path) == str(tmp_path)
    assert TEMP_NAME.match(os.path.basename(output.path))
    assert stat.S_IMODE(os.stat(output.path).st_mode) == 0o666  # a plain file, umask applies
    output.file.write(b"values")
    output.install()
    assert final.read_bytes() == b"values" and os.listdir(tmp_path) == ["w.npy"]
    assert output.file.closed


def test_force_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    final = tmp_path / "w.npy"
    final.write_bytes(b"old")
    final.chmod(0o600)
    output = atomic.AtomicFile(str(final), "w.npy", force=True)
    assert stat.S_IMODE(os.stat(output.path).st_mode) == 0o600
    output.file.write(b"new")
    output.install()
    assert stat.S_IMODE(final.stat().st_mode) == 0o600 and final.read_bytes() == b"new"


def test_install_refuses_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    final = tmp_path / "w.npy"
    output = atomic.AtomicFile(str(final), "shown.npy", force=False)
    final.write_bytes(b"theirs")
    with pytest.raises(FileExistsError, match="'shown.npy' exists"):
        output.install()
    output.discard()
    assert os.listdir(tmp_path) == ["w.npy"] and final.read_bytes() == b"theirs"


def test_install_syncs_the_target_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    monkeypatch.setattr(atomic, "fsync_directory", synced.append)
    output = atomic.AtomicFile(str(tmp_path / "w.npy"), "w.npy", force=False)
    output.install()
    relative = atomic.AtomicFile("v.npy", "v.npy", force=False)  # the test runs in tmp_path
    relative.install()
    assert synced == [str(tmp_path), "."]
    assert sorted(os.listdir(tmp_path)) == ["v.npy", "w.npy"]


def test_install_of_a_bare_name_really_syncs_the_current_folder(tmp_path: Path) -> None:
    output = atomic.AtomicFile("w.npy", "w.npy", force=False)
    output.install()
    assert os.listdir(tmp_path) == ["w.npy"]


def test_discard_closes_and_removes(tmp_path: Path) -> None:
    output = atomic.AtomicFile(str(tmp_path / "w.npy"), "w.npy", force=False)
    output.file.write(b"partial")
    output.discard()
    assert output.file.closed and os.listdir(tmp_path) == []
    output.discard()  # twice is harmless


def test_discard_survives_a_failing_close(tmp_path: Path) -> None:
    output = atomic.AtomicFile(str(tmp_path / "w.npy"), "w.npy", force=False)
    real = output.file

    class FailingClose:
        closed = False

        def close(self) -> None:
            real.close()
            raise OSError(errno.EIO, "flush failed")

    output.file = FailingClose()  # type: ignore[assignment]
    output.discard()
    assert os.listdir(tmp_path) == []


def test_a_dropped_atomic_file_removes_its_temporary(tmp_path: Path) -> None:
    output = atomic.AtomicFile(str(tmp_path / "w.npy"), "w.npy", force=False)
    output.file.close()
    del output
    gc.collect()
    assert os.listdir(tmp_path) == []


def test_an_existing_temporary_name_is_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = tmp_path / ".w.npy.vsgen-tmp-000000000000"
    taken.write_bytes(b"someone else's")
    names = iter([str(taken), str(tmp_path / ".w.npy.vsgen-tmp-111111111111")])
    monkeypatch.setattr(atomic, "temp_path", lambda final, mark=None: next(names))
    output = atomic.AtomicFile(str(tmp_path / "w.npy"), "w.npy", force=False)
    assert output.path.endswith("111111111111")
    output.discard()
    assert taken.read_bytes() == b"someone else's"


def test_a_hundred_taken_names_give_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = tmp_path / ".taken"
    taken.write_bytes(b"")
    tries: list[int] = []

    def always_taken(final: str, mark: str | None = None) -> str:
        tries.append(1)
        return str(taken)

    monkeypatch.setattr(atomic, "temp_path", always_taken)
    with pytest.raises(FileExistsError) as caught:
        atomic.AtomicFile(str(tmp_path / "w.npy"), "shown.npy", force=False)
    assert caught.value.errno == errno.EEXIST
    assert caught.value.strerror == "cannot create a temporary file for 'shown.npy'"
    assert len(tries) == 100


def record_opens(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    fds: list[int] = []
    real = os.open

    def open_(*args, **kwargs):
        fd = real(*args, **kwargs)
        fds.append(fd)
        return fd

    monkeypatch.setattr(os, "open", open_)
    return fds


def assert_closed(fd: int) -> None:
    with pytest.raises(OSError) as caught:
        os.fstat(fd)
    assert caught.value.errno == errno.EBADF


def test_an_interrupt_right_after_creation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.open

    def open_then_interrupted(*args, **kwargs):
        os.close(real(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "open", open_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.AtomicFile(str(tmp_path / "w.npy"), "w.npy", force=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("step", ["finalizer", "fdopen"])
def test_a_failure_while_setting_up_closes_and_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    fds = record_opens(monkeypatch)

    def fail(*args, **kwargs):
        raise OSError(errno.ENOMEM, f"{step} failed")

    if step == "finalizer":
        monkeypatch.setattr(atomic.weakref, "finalize", fail)
    else:
        monkeypatch.setattr(os, "fdopen", fail)
    with pytest.raises(OSError, match=f"{step} failed"):
        atomic.AtomicFile(str(tmp_path / "w.npy"), "w.npy", force=False)
    assert os.listdir(tmp_path) == []
    [fd] = fds
    assert_closed(fd)


# --- TemporaryDirectory ------------------------------------------------------------------


def test_temporary_directory_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    temporary = atomic.TemporaryDirectory(str(tmp_path / "out"), "out", False, sync=(".npy",))
    assert os.path.dirname(temporary.path) == str(tmp_path)
    assert TEMP_NAME.match(os.path.basename(temporary.path))
    os.mkdir(os.path.join(temporary.path, "sub"))
    for name in ("sub/a.npy", "b.npy", "c.json"):
        with open(os.path.join(temporary.path, name), "wb") as handle:
            handle.write(b"x")
    monkeypatch.setattr(os, "fsync", fsync)
    temporary.install()
    assert os.listdir(tmp_path) == ["out"]
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["b.npy", "c.json", "sub"]
    # The files named by `sync` and every directory (the temporary's, then the parent).
    assert {p.replace(temporary.path, str(out)) for p in synced} == {
        str(out / "sub" / "a.npy"),
        str(out / "b.npy"),
        str(out),
        str(out / "sub"),
        str(tmp_path),
    }


def test_temporary_directory_keeps_an_existing_target_without_force(tmp_path: Path) -> None:
    make_directory(tmp_path / "out", "old.npy")
    temporary = atomic.TemporaryDirectory(str(tmp_path / "out"), "shown", False)
    with pytest.raises(FileExistsError, match="'shown' exists; use --force"):
        temporary.install()
    temporary.discard()
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["old.npy"]


def test_temporary_directory_asks_its_check_before_replacing(tmp_path: Path) -> None:
    make_directory(tmp_path / "out", "old.npy")
    asked: list[str] = []

    def refuse(aside: str) -> None:
        asked.append(aside)
        raise ValueError("not ours")

    temporary = atomic.TemporaryDirectory(str(tmp_path / "out"), "out", True, check=refuse)
    with pytest.raises(ValueError, match="not ours"):
        temporary.install()
    temporary.discard()
    assert len(asked) == 1 and ".vsgen-old-" in os.path.basename(asked[0])
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["old.npy"]


def test_a_temporary_directory_takes_a_fresh_name_and_goes_when_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / ".out.vsgen-tmp-000000000000"
    theirs.mkdir()
    names = iter([str(theirs), str(tmp_path / ".out.vsgen-tmp-111111111111")])
    monkeypatch.setattr(atomic, "temp_path", lambda final, mark=None: next(names))
    temporary = atomic.TemporaryDirectory(str(tmp_path / "out"), "out", False)
    assert temporary.path.endswith("111111111111")
    (Path(temporary.path) / "partial.npy").write_bytes(b"x")
    del temporary
    gc.collect()
    assert os.listdir(tmp_path) == [theirs.name]
    # With every name taken it gives up after 100, naming the target.
    monkeypatch.setattr(atomic, "temp_path", lambda final, mark=None: str(theirs))
    with pytest.raises(FileExistsError) as caught:
        atomic.TemporaryDirectory(str(tmp_path / "out"), "shown", False)
    assert caught.value.strerror == "cannot create a temporary directory for 'shown'"


# --- preflight -----------------------------------------------------------------------------


def test_preflight_refuses_a_directory_where_a_file_goes(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    never = []
    with pytest.raises(ValueError, match="'out' is a directory; give a file name"):
        atomic.preflight(
            "out",
            str(tmp_path / "out"),
            directory=False,
            force=True,
            needed=0,
            refuse_replacing=lambda path, display: never.append(path),
        )
    # A directory output asks the format what --force may replace.
    asked: list[tuple[str, str]] = []
    atomic.preflight(
        "out",
        str(tmp_path / "out"),
        directory=True,
        force=True,
        needed=0,
        refuse_replacing=lambda path, display: asked.append((path, display)),
    )
    assert never == [] and asked == [(str(tmp_path / "out"), "out")]
    with pytest.raises(ValueError, match="output directory 'out' exists; use --force"):
        atomic.preflight(
            "out",
            str(tmp_path / "out"),
            directory=True,
            force=False,
            needed=0,
            refuse_replacing=lambda path, display: None,
        )


# --- StagedOutput ------------------------------------------------------------------------


def test_a_staged_output_installs_once(tmp_path: Path) -> None:
    temporary = atomic.AtomicFile(str(tmp_path / "w.raw"), "w.raw", False)
    temporary.file.write(b"values")
    staged = atomic.StagedOutput("w.raw", "raw", [], temporary)
    assert not staged.closed
    staged.commit()
    assert staged.closed and (tmp_path / "w.raw").read_bytes() == b"values"
    with pytest.raises(ValueError, match="'w.raw' is already committed"):
        staged.commit()
    staged.abort()  # after a commit: nothing to remove
    assert os.listdir(tmp_path) == ["w.raw"]


def test_a_staged_output_left_without_commit_is_removed(tmp_path: Path) -> None:
    with atomic.StagedOutput(
        "out", "npydir", [], atomic.TemporaryDirectory(str(tmp_path / "out"), "out", False)
    ) as staged:
        assert len(os.listdir(tmp_path)) == 1
    assert staged.closed and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="'out' is already aborted"):
        staged.commit()


def test_a_failed_install_aborts_and_names_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = atomic.AtomicFile(str(tmp_path / "w.raw"), "w.raw", False)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    staged = atomic.StagedOutput("w.raw", "raw", [], temporary)
    with pytest.raises(OSError) as caught:
        staged.commit()
    assert caught.value.errno == errno.ENOSPC
    assert (
        str(caught.value) == "[Errno 28] disk full while writing 'w.raw': No space left on device"
    )
    assert staged.closed and os.listdir(tmp_path) == []


def test_a_kept_temporary_is_reopened_for_writing_and_never_through_a_link(tmp_path):
    kept = tmp_path / ".w.npy.vsgen-resume-0"
    kept.write_bytes(b"abc")
    fd = atomic._reopen_file(str(kept))
    try:
        assert os.get_blocking(fd)
        os.pwrite(fd, b"X", 1)  # read-write, in place
        assert os.pread(fd, 3, 0) == b"aXc"
    finally:
        os.close(fd)
    link = tmp_path / "link"
    link.symlink_to(kept)
    with pytest.raises(OSError) as raised:
        atomic._reopen_file(str(link))
    assert raised.value.errno == errno.ELOOP
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileNotFoundError, match="is not a regular file"):
        atomic._reopen_file(str(fifo))


def test_keeping_a_temporary_closes_it_and_leaves_it_in_place(tmp_path):
    final = tmp_path / "w.npy"
    made = atomic.AtomicFile(str(final), "w.npy", force=False)
    made.file.write(b"kept")
    made.keep()
    assert made.file.closed
    del made
    gc.collect()  # the finalizer that removes a dropped temporary is detached
    [kept] = [p for p in tmp_path.iterdir()]
    assert kept.read_bytes() == b"kept" and not final.exists()
