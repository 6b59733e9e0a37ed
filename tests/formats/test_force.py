"""``force=True`` replaces only what vsgen would write there (library level).

The rules live in ``vsgen.formats.open_output``'s pre-flight, so API callers
get the same protection as the command line: a regular file for the file
formats, a directory holding nothing but NPY files for npydir; never a link,
FIFO, device node, socket, a regular file where a directory goes, or a
directory holding anything else. A replaced file keeps no special bits.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from vsgen.formats import TensorInfo, open_output

F32 = np.float32
SUFFIX = {"npy": ".npy", "h5": ".h5", "safetensors": ".safetensors", "raw": ".raw"}


def write_all(target: Path, fmt: str, tensors: list[TensorInfo]) -> None:
    with open_output(str(target), fmt, tensors, force=True) as output:
        for info in tensors:
            output.write(np.zeros(info.shape, info.dtype))
        output.commit()


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under ``root`` (not following links): its type bits and content."""
    found: dict[str, tuple[int, bytes | str]] = {}
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                content: bytes | str = os.readlink(path)
            elif stat.S_ISREG(mode):
                content = path.read_bytes()
            else:
                content = b""
            found[str(path.relative_to(root))] = (stat.S_IFMT(mode), content)
    return found


def npy_bytes(values: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "__model.npy"
    np.save(path, values)
    data = path.read_bytes()
    path.unlink()
    return data


# --- npydir -------------------------------------------------------------------------


def test_npydir_never_replaces_a_regular_file(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(ValueError, match="notes.txt' exists and is a regular file"):
        open_output(str(notes), "npydir", [TensorInfo("w", (2,), F32)], force=True)
    assert notes.read_text() == "my notes\n"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_npydir_never_replaces_a_link_to_a_directory_of_npy_files(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    np.save(real / "w.npy", np.ones(2, F32))
    link = tmp_path / "link"
    link.symlink_to(real)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="is a symbolic link"):
        open_output(str(link), "npydir", [TensorInfo("w", (2,), F32)], force=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "make_foreign",
    [
        pytest.param(lambda d: (d / "thesis.tex").write_text("x"), id="other-file"),
        pytest.param(
            lambda d: (d / "sub").mkdir() or (d / "sub" / "a.txt").write_text("x"),
            id="nested-other-file",
        ),
        pytest.param(lambda d: (d / "fake.npy").write_text("not an npy file"), id="fake-npy"),
        pytest.param(lambda d: (d / "link.npy").symlink_to("/etc/hostname"), id="link-npy"),
        pytest.param(lambda d: os.mkfifo(d / "pipe.npy"), id="fifo-npy"),
    ],
)
def test_npydir_never_replaces_a_foreign_directory(tmp_path: Path, make_foreign) -> None:
    target = tmp_path / "out"
    target.mkdir()
    np.save(target / "w.npy", np.ones(2, F32))
    make_foreign(target)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="holds other files"):
        open_output(str(target), "npydir", [TensorInfo("w", (2,), F32)], force=True)
    assert snapshot(tmp_path) == before


def test_npydir_replaces_a_directory_vsgen_wrote(tmp_path: Path) -> None:
    target = tmp_path / "out"
    tensors = [TensorInfo("a", (2,), F32), TensorInfo("block/b", (3,), F32)]
    write_all(target, "npydir", tensors)
    assert sorted(snapshot(target)) == ["a.npy", "block", "block/b.npy"]
    replaced = [TensorInfo("c", (4,), F32)]
    write_all(target, "npydir", replaced)
    assert sorted(snapshot(target)) == ["c.npy"]
    assert np.load(target / "c.npy").shape == (4,)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_foreign_file_added_during_the_run_is_never_deleted(tmp_path: Path) -> None:
    target = tmp_path / "out"
    write_all(target, "npydir", [TensorInfo("w", (2,), F32)])
    info = TensorInfo("w", (2,), F32)
    with open_output(str(target), "npydir", [info], force=True) as output:
        output.write(np.ones(2, F32))
        (target / "added-meanwhile.txt").write_text("keep me")
        with pytest.raises(FileExistsError, match="out/added-meanwhile.txt: not an NPY file"):
            output.commit()
    assert (target / "added-meanwhile.txt").read_text() == "keep me"
    assert np.load(target / "w.npy").tolist() == [0.0, 0.0]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_npydir_names_that_collide_after_the_suffix(tmp_path: Path) -> None:
    tensors = [TensorInfo("w", (2,), F32), TensorInfo("w.npy/b", (2,), F32)]
    with pytest.raises(ValueError, match=r"'w' and 'w.npy/b' collide"):
        open_output(str(tmp_path / "out"), "npydir", tensors)
    assert os.listdir(tmp_path) == []


def test_npydir_names_longer_than_the_file_system_allows(tmp_path: Path) -> None:
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    fits = "a" * (name_max - len(".npy"))
    write_all(tmp_path / "ok", "npydir", [TensorInfo(fits, (1,), F32)])
    assert os.listdir(tmp_path / "ok") == [fits + ".npy"]
    too_long = fits + "b"
    with pytest.raises(ValueError, match=rf"longer than the {name_max} bytes"):
        open_output(str(tmp_path / "out"), "npydir", [TensorInfo(too_long, (1,), F32)])
    with pytest.raises(ValueError, match="longer than the"):
        directory_part = "d" * (name_max + 1)
        open_output(str(tmp_path / "out"), "npydir", [TensorInfo(directory_part + "/w", (1,), F32)])
    assert sorted(os.listdir(tmp_path)) == ["ok"]


# --- file formats -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_files_never_replace_a_fifo(tmp_path: Path, fmt: str) -> None:
    fifo = tmp_path / f"w{SUFFIX[fmt]}"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"is a FIFO \(named pipe\), not a regular file"):
        open_output(str(fifo), fmt, [TensorInfo("w", (2,), F32)], force=True)
    assert fifo.is_fifo() and sorted(os.listdir(tmp_path)) == [fifo.name]


def test_files_never_replace_a_device_node(tmp_path: Path) -> None:
    node = tmp_path / "w.npy"
    try:
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    except (PermissionError, OSError) as error:
        pytest.skip(f"cannot create a device node here: {error}")
    with pytest.raises(ValueError, match="is a character device"):
        open_output(str(node), "npy", [TensorInfo("w", (2,), F32)], force=True)
    assert stat.S_ISCHR(node.lstat().st_mode)


def test_files_never_replace_a_link_that_appears_during_the_run(tmp_path: Path) -> None:
    target = tmp_path / "w.npy"
    target.write_bytes(b"old")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"someone else's")
    with open_output(str(target), "npy", [TensorInfo("w", (2,), F32)], force=True) as output:
        output.write(np.ones(2, F32))
        target.unlink()
        target.symlink_to(elsewhere)
        with pytest.raises(ValueError, match="is a symbolic link"):
            output.commit()
    assert target.is_symlink() and elsewhere.read_bytes() == b"someone else's"
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "w.npy"]


@pytest.mark.parametrize("old_mode", [0o4755, 0o2775, 0o1666, 0o6777])
@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_a_replaced_file_keeps_no_special_bits(tmp_path: Path, fmt: str, old_mode: int) -> None:
    target = tmp_path / f"w{SUFFIX[fmt]}"
    target.write_bytes(b"old")
    target.chmod(old_mode)
    assert stat.S_IMODE(target.stat().st_mode) == old_mode  # the setup holds
    umask = os.umask(0o022)
    try:
        write_all(target, fmt, [TensorInfo("w", (2,), F32)])
    finally:
        os.umask(umask)
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0
    assert mode & 0o111 == 0  # a weights file is never executable
    assert mode == old_mode & 0o644  # the old restrictions, within the umask


def test_a_replaced_private_file_stays_private(tmp_path: Path) -> None:
    target = tmp_path / "w.npy"
    target.write_bytes(b"old")
    target.chmod(0o600)
    write_all(target, "npy", [TensorInfo("w", (2,), F32)])
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.skipif(
    not os.path.isdir("/proc/self") or os.statvfs("/proc").f_blocks != 0,
    reason="needs a /proc without storage",
)
def test_a_virtual_file_system_is_not_writable_rather_than_full() -> None:
    with pytest.raises(PermissionError, match="'/proc' is not writable") as caught:
        open_output("/proc/x.npy", "npy", [TensorInfo("w", (4,), F32)])
    assert "free" not in str(caught.value)
