"""npydir: a directory holding one ``<name>.npy`` per tensor (``/`` in a name makes
subdirectories). No metadata. ``--force`` replaces only a directory that holds
nothing but NPY files named ``*.npy`` (:class:`vsgen.formats.atomic.NpyJudge`).

Written only when asked for (``--format npydir``, a target ending in ``/`` or
naming a directory, or a model to a target without a suffix); read back by
walking the directory without following symbolic links.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from vsgen._limits import MAX_TENSORS
from vsgen.dtypes import TensorInfo
from vsgen.formats.atomic import TemporaryDirectory, stop_if_cancelled
from vsgen.formats.base import (
    FilePlace,
    Format,
    Place,
    TensorFile,
    UnreadableFile,
    WriteRequest,
    check_path_name,
    sized_file,
)
from vsgen.formats.npy import npy_header, npy_tensor


def _name_max(directory: str) -> int:
    """Longest file name (bytes) the file system of ``directory`` takes."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def check_npydir_names(tensors: Sequence[TensorInfo], name_max: int = 255) -> None:
    """Every tensor of an npydir output gets its own ``<name>.npy`` file.

    Refuses two names whose files collide (``"w"`` writes the file ``w.npy``,
    ``"w.npy/b"`` needs a directory ``w.npy``) and names with a part longer
    than the file system takes (``name_max`` bytes, ``.npy`` included).
    """
    files: dict[str, str] = {}
    directories: dict[str, str] = {}
    for info in tensors:
        parts = info.name.split("/")
        for depth in range(1, len(parts)):
            directories.setdefault("/".join(parts[:depth]), info.name)
        files[info.name + ".npy"] = info.name
        for part in [*parts[:-1], parts[-1] + ".npy"]:
            length = len(part.encode("utf-8", "surrogateescape"))
            if length > name_max:
                raise ValueError(
                    f"tensor name {info.name!r} cannot be stored in npydir: its part "
                    f"{part[:40]!r}... is {length} bytes, longer than the {name_max} "
                    "bytes the file system allows for a file name"
                )
    for path, name in files.items():
        if path in directories:
            raise ValueError(
                f"tensor names {name!r} and {directories[path]!r} collide in npydir: "
                f"the first is written to the file {path!r}, the second needs a "
                f"directory of that name"
            )


class NpydirLayout(NamedTuple):
    """One ``.npy`` file per tensor, made with its header and sized to its values."""

    tensors: tuple[TensorInfo, ...]

    @property
    def needed(self) -> int:
        return sum(len(npy_header(info)) + info.nbytes for info in self.tensors)

    def create(self, temporary: TemporaryDirectory, presize: bool) -> list[Place]:
        places: list[Place] = []
        for info in self.tensors:
            stop_if_cancelled()
            file_path = os.path.join(temporary.path, *info.name.split("/")) + ".npy"
            _directories(temporary.path, os.path.dirname(file_path), temporary.directory_mode)
            header = npy_header(info)
            size = len(header) + info.nbytes if presize else 0
            sized_file(file_path, header, size, temporary.file_mode)
            places.append(FilePlace(file_path, len(header), info.shape, info.dtype))
        return places


def _directories(root: str, path: str, mode: int) -> None:
    """``path`` and its parents below ``root``, made with ``mode`` (less the umask)."""
    if path == root or os.path.isdir(path):
        return
    _directories(root, os.path.dirname(path), mode)
    os.mkdir(path, mode)


def _open_npydir(path: str) -> TensorFile:
    tensors = []
    # A walk that follows no symlink: a link out of the directory is not read.
    for root, directories, files in os.walk(path, followlinks=False):
        directories.sort()
        for file_name in sorted(files):
            if not file_name.endswith(".npy"):
                continue
            full = os.path.join(root, file_name)
            if os.path.islink(full):
                raise UnreadableFile(f"{full} is a symbolic link; npy directories hold files only")
            relative = os.path.relpath(os.path.join(root, file_name[:-4]), path)
            # Opened without following a link too: one swapped in after the check.
            tensors.append(npy_tensor(full, relative.replace(os.sep, "/"), follow=False))
            if len(tensors) > MAX_TENSORS:
                raise UnreadableFile(f"{path} holds over {MAX_TENSORS} .npy files")
    return TensorFile(path, "npydir", tuple(tensors), {})


class NpydirFormat(Format):
    """A directory of ``<name>.npy`` files; names are paths (subdirectories)."""

    label = ".npy"
    directory = True
    commit_syncs = (".npy",)

    def check_names(self, tensors: Sequence[TensorInfo], target: str = "-") -> None:
        super().check_names(tensors, target)
        if target != "-":
            check_npydir_names(tensors, _name_max(os.path.dirname(os.path.abspath(target))))

    def check_name(self, name: str) -> None:
        check_path_name(name, self.name)

    def plan(self, request: WriteRequest) -> NpydirLayout:
        return NpydirLayout(request.tensors)

    def open(self, path: str) -> TensorFile:
        return _open_npydir(path)
