"""Temporaries beside the target, flushed to disk and renamed into place."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import weakref
from collections.abc import Callable
from typing import BinaryIO

_TEMP_MARK = ".vsgen-tmp-"


#: Longest file name most file systems accept (ext4, xfs, btrfs, tmpfs).
_NAME_MAX = 255


def temp_path(final_path: str, mark: str = _TEMP_MARK) -> str:
    """A fresh hidden name beside ``final_path``; the target's name is shortened
    if needed so that the temporary's name still fits ``_NAME_MAX`` bytes."""
    directory, base = os.path.split(final_path)
    # os.urandom, as secrets.token_hex uses, without importing secrets (start-up).
    suffix = f"{mark}{os.urandom(6).hex()}"
    room = _NAME_MAX - 1 - len(suffix.encode())
    encoded = base.encode("utf-8", "surrogateescape")[:room]
    base = encoded.decode("utf-8", "ignore")
    return os.path.join(directory, f".{base}{suffix}")


def remove_quietly(path: str) -> None:
    """Remove a temporary file or directory; used by abort paths and finalizers."""
    # Cleanup must never mask the error that caused it.
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        # Some file systems cannot sync a directory; the data is synced already.
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


#: First bytes of every NPY file (the format's magic string).
_NPY_MAGIC = b"\x93NUMPY"


def describe_file_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO (named pipe)"), for error messages."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _is_npy_file(path: str) -> bool:
    # Only called on regular files (lstat first), so open() cannot block.
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_NPY_MAGIC)) == _NPY_MAGIC
    except OSError:
        return False


def _foreign_entry(directory: str) -> str | None:
    """The first entry under ``directory`` (relative to it) that vsgen would not
    have written there: anything but real subdirectories and regular NPY files
    named ``*.npy``. None if there is none. Symbolic links are never followed."""
    pending = [directory]
    while pending:
        current = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    pending.append(entry.path)
                elif not (
                    stat.S_ISREG(mode) and entry.name.endswith(".npy") and _is_npy_file(entry.path)
                ):
                    return os.path.relpath(entry.path, directory)
    return None


def check_replaceable(path: str, display: str, is_dir: bool) -> None:
    """Refuse to replace anything at ``path`` that vsgen would not write there.

    ``--force`` replaces a regular file (file formats) or a directory that
    holds nothing but ``.npy`` files and subdirectories of them (npydir) —
    never a symbolic link, FIFO, device node, socket, mount point, a regular
    file where a directory goes, or a directory holding anything else.
    Raises ValueError (a usage error: the same command fails the same way).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not is_dir:
        if not stat.S_ISREG(mode):
            raise ValueError(
                f"output {display!r} exists and is {describe_file_kind(mode)}, not a regular file; "
                "--force only replaces regular files"
            )
        return
    if not stat.S_ISDIR(mode):
        what = "a regular file" if stat.S_ISREG(mode) else describe_file_kind(mode)
        raise ValueError(
            f"output {display!r} exists and is {what}; --format npydir writes a directory "
            "and --force only replaces a directory of .npy files"
        )
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.lstat(path).st_dev != os.stat(parent).st_dev:
        raise ValueError(f"output {display!r} is a mount point; --force never replaces one")
    foreign = _foreign_entry(path)
    if foreign is not None:
        raise ValueError(
            f"output {display!r} is a directory that holds other files "
            f"(e.g. {os.path.join(display, foreign)}); "
            "--force only replaces a directory of .npy files: choose another name"
        )


def new_file_mode(fresh_mode: int, old_mode: int) -> int:
    """Permission bits for a file that replaces one with ``old_mode``.

    ``fresh_mode`` is what the umask gave the new file. The result is never
    wider than either: an old file's read/write restrictions are kept, and
    execute, setuid, setgid and sticky bits are never carried over.
    """
    return stat.S_IMODE(fresh_mode) & stat.S_IMODE(old_mode) & 0o666


def exists_message(display: str, is_dir: bool) -> str:
    if is_dir:
        return f"output directory {display!r} exists; use --force to replace it"
    return f"output file {display!r} exists; use --force to overwrite"


def install_file(temp: str, final: str, display: str, force: bool) -> None:
    """Move a finished temporary file into place (atomically)."""
    if force:
        # The pre-flight check ran long ago; a link or FIFO that took the
        # target's place meanwhile is not replaced either.
        check_replaceable(final, display, False)
        os.replace(temp, final)
        return
    # A hard link fails if the target appeared meanwhile, so a file created by
    # someone else during a long run is never overwritten without --force.
    try:
        os.link(temp, final)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, exists_message(display, False)) from None
    except OSError as err:
        if err.errno not in (
            errno.EPERM,
            errno.ENOTSUP,
            errno.EOPNOTSUPP,
            errno.EMLINK,
            errno.ENOSYS,
        ):
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, exists_message(display, False)) from None
        os.replace(temp, final)
    else:
        os.unlink(temp)


def install_directory(
    temp: str,
    final: str,
    display: str,
    force: bool,
    check: Callable[[str], None] | None = None,
) -> None:
    """Move a finished temporary directory into place.

    A directory cannot replace a non-empty one atomically; the old one is
    renamed aside first and restored if the second rename fails. ``check``
    raises if the directory set aside is not one ``force`` may replace
    (default: a directory of .npy files, :func:`check_replaceable`).
    """
    if not os.path.lexists(final):
        os.rename(temp, final)
        return
    if not force:
        raise FileExistsError(errno.EEXIST, exists_message(display, True))
    aside = temp_path(final, ".vsgen-old-")
    os.rename(final, aside)
    try:
        # Checked again now that it is out of everyone's way: whatever was
        # added since the pre-flight check is never deleted.
        if check is None:
            check_replaceable(aside, display, True)
        else:
            check(aside)
    except BaseException:
        os.rename(aside, final)
        raise
    try:
        os.rename(temp, final)
    except BaseException:
        os.rename(aside, final)
        raise
    remove_quietly(aside)


class AtomicFile:
    """A temporary file beside ``final`` that becomes ``final`` on ``install``."""

    def __init__(self, final: str, display: str, force: bool) -> None:
        self.final = final
        self.display = display
        self.force = force
        for _ in range(100):
            self.path = temp_path(final)
            try:
                fd = os.open(
                    self.path,
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                    0o666,
                )
            except FileExistsError:
                continue
            except BaseException:
                # An interrupt can arrive just after the file was created; the name
                # is random and fresh, so removing it touches nothing of anyone else's.
                remove_quietly(self.path)
                raise
            break
        else:
            raise FileExistsError(errno.EEXIST, f"cannot create a temporary file for {display!r}")
        try:
            # Removes the temporary even if the Output is dropped without abort().
            self._finalizer = weakref.finalize(self, remove_quietly, self.path)
        except BaseException:
            os.close(fd)
            remove_quietly(self.path)
            raise
        try:
            old = os.lstat(final) if force and os.path.lexists(final) else None
            if old is not None and stat.S_ISREG(old.st_mode):
                os.fchmod(fd, new_file_mode(os.fstat(fd).st_mode, old.st_mode))
            self.file: BinaryIO = os.fdopen(fd, "r+b")
        except BaseException:
            os.close(fd)
            self.discard()
            raise

    def install(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        install_file(self.path, self.final, self.display, self.force)
        self._finalizer.detach()
        fsync_directory(os.path.dirname(self.final) or ".")

    def discard(self) -> None:
        file = getattr(self, "file", None)
        if file is not None and not file.closed:
            # A failed flush only loses data that is being thrown away.
            with contextlib.suppress(OSError):
                file.close()
        self._finalizer()


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte of ``data`` is at ``offset`` (writes may be short)."""
    while data:
        written = os.pwrite(fd, data, offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        data = data[written:]
        offset += written
