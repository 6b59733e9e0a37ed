"""The life cycle of every output: checked, written as a temporary beside the
target, then synced and renamed into place, or removed.

:func:`preflight` runs before anything exists (the directory is there and
writable with room for the output; an existing target needs ``force`` and must
be something ``--force`` may replace). The temporary is a hidden file
(:class:`AtomicFile`) or directory (:class:`TemporaryDirectory`) named
``.<target>.vsgen-tmp-<random>``. :class:`StagedOutput` is what the streaming
writer (:class:`vsgen.formats.output.Output`) and the block writers'
(:class:`vsgen.formats.parallel.ParallelOutput`) outputs share: ``commit`` syncs
the temporary, installs it honouring ``force`` (a file that appeared meanwhile is
never overwritten without it) and syncs the directory; ``abort``, leaving a
``with`` block without a commit, or dropping the object removes the temporary
and leaves an existing target as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import weakref
from collections.abc import Callable, Sequence
from typing import BinaryIO, TypeVar

from vsgen.dtypes import TensorInfo

_TEMP_MARK = ".vsgen-tmp-"
T = TypeVar("T")


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


def _fresh(final: str, display: str, kind: str, create: Callable[[str], T]) -> tuple[str, T]:
    """``create(path)`` at a fresh hidden name beside ``final``: up to 100 names are
    tried (``create`` raises FileExistsError for a taken one); ``kind`` names what
    is made in the error that follows."""
    for _ in range(100):
        path = temp_path(final)
        try:
            return path, create(path)
        except FileExistsError:
            continue
        except BaseException:
            # An interrupt can arrive just after the name was created; the name
            # is random and fresh, so removing it touches nothing of anyone else's.
            remove_quietly(path)
            raise
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary {kind} for {display!r}")


class AtomicFile:
    """A temporary file beside ``final`` that becomes ``final`` on ``install``."""

    def __init__(self, final: str, display: str, force: bool) -> None:
        self.final = final
        self.display = display
        self.force = force
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self.path, fd = _fresh(final, display, "file", lambda path: os.open(path, flags, 0o666))
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


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes from ``offset`` to the disk now,
    without waiting (``posix_fadvise(POSIX_FADV_DONTNEED)``: on Linux it starts the
    writeback of the range's dirty pages, which stay cached). Block writers call it
    after each block, so that the disk works while the next blocks are drawn and the
    ``fsync`` before the commit finds little left to write; durability still comes
    from that ``fsync``. A no-op where the call is missing or refused."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None or length <= 0:
        return
    with contextlib.suppress(OSError):
        advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class TemporaryDirectory:
    """A temporary directory beside ``final`` that becomes ``final`` on :meth:`install`.

    ``check(aside)`` says whether an old ``final`` set aside at the install may be
    replaced (:func:`install_directory`); ``sync`` names the suffixes of the files
    :meth:`install` syncs (the writers sync the files they filled themselves).
    """

    def __init__(
        self,
        final: str,
        display: str,
        force: bool,
        check: Callable[[str], None] | None = None,
        sync: Sequence[str] = (),
    ) -> None:
        self.final = final
        self.display = display
        self.force = force
        self._check = check
        self._sync = tuple(sync)
        self.path, _ = _fresh(final, display, "directory", lambda path: os.mkdir(path, 0o777))
        self._finalizer = weakref.finalize(self, remove_quietly, self.path)

    def install(self) -> None:
        sync_tree(self.path, self._sync)
        install_directory(self.path, self.final, self.display, self.force, self._check)
        self._finalizer.detach()
        fsync_directory(os.path.dirname(self.final) or ".")

    def discard(self) -> None:
        self._finalizer()


def sync_tree(root: str, suffixes: Sequence[str]) -> None:
    """``fsync`` the files under ``root`` whose names end with one of ``suffixes``,
    then every directory."""
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(tuple(suffixes)):
                fd = os.open(os.path.join(directory, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_directory(directory)


# --- before anything exists ------------------------------------------------------------


def format_bytes(count: int) -> str:
    """``"512 B"``, ``"64.00 MiB"``: a byte count for people."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_writable(target: str, directory: str, needed: int) -> None:
    """The directory takes new files and has room for ``needed`` bytes."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"directory {directory!r} is not writable")
    try:
        usage = os.statvfs(directory)
    except (AttributeError, OSError):  # no statvfs: the free-space check still runs
        usage = None
    if usage is not None and usage.f_flag & getattr(os, "ST_RDONLY", 0):
        raise PermissionError(
            errno.EROFS, f"directory {directory!r} is not writable (read-only file system)"
        )
    free = shutil.disk_usage(directory).free
    if needed > free:
        if usage is not None and usage.f_blocks == 0:
            # /proc, /sys and their kind report no storage at all: "0 B free"
            # would send the user looking for disk space.
            raise PermissionError(
                errno.EACCES,
                f"directory {directory!r} is not writable (a virtual file system without storage)",
            )
        raise OSError(
            errno.ENOSPC,
            f"not enough free space for {target!r}: needs "
            f"{format_bytes(needed)}, {format_bytes(free)} free in {directory!r}",
        )


def preflight(
    target: str,
    path: str,
    *,
    directory: bool,
    force: bool,
    needed: int,
    refuse_replacing: Callable[[str, str], None],
) -> None:
    """The checks before an output is created at ``path`` (``target`` as given).

    The parent directory must exist, take new files and have room for ``needed``
    bytes; a file output must not name a directory; an existing target needs
    ``force``, and ``refuse_replacing(path, target)`` raises if ``--force`` may not
    replace it (in the library, not the CLI, so API callers get the same protection).

    Raises:
        ValueError: no such directory, a directory where a file goes, or an existing
            target without ``force`` (or one it may not replace).
        OSError: the directory is not writable or has too little free space.
    """
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise ValueError(
            f"directory {os.path.dirname(target) or '.'!r} of output {target!r} does not exist"
        )
    if not directory and os.path.isdir(path) and not os.path.islink(path):
        raise ValueError(f"output {target!r} is a directory; give a file name")
    if os.path.lexists(path):
        if not force:
            raise ValueError(exists_message(target, directory))
        refuse_replacing(path, target)
    check_writable(target, parent, needed)


def io_error(err: OSError, display: str) -> OSError:
    """A one-line OSError naming the target, keeping the errno (and subclass)."""
    if err.errno == errno.EEXIST:
        return err  # already names the target and says what to do
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        message = f"disk full while writing {display!r}: {reason}"
    elif err.errno == errno.EFBIG:
        message = f"file size limit reached while writing {display!r}: {reason}"
    else:
        message = f"cannot write {display!r}: {reason}"
    return OSError(err.errno, message) if err.errno else OSError(message)


# --- the output's life cycle -------------------------------------------------------------


class StagedOutput:
    """An output being written in its temporary (None: standard output, where no
    atomicity is possible), until :meth:`commit` or :meth:`abort`.

    Used as a context manager, leaving the block by an exception (including
    KeyboardInterrupt and SystemExit) aborts; leaving it normally without
    :meth:`commit` aborts too, so a forgotten commit never publishes a file.
    """

    def __init__(
        self,
        target: str,
        fmt: str,
        tensors: Sequence[TensorInfo],
        temporary: AtomicFile | TemporaryDirectory | None,
    ) -> None:
        self._target = target
        self._format = fmt
        self._tensors = tuple(tensors)
        self._temporary = temporary
        self._state = "open"

    @property
    def target(self) -> str:
        """The target as given (``"-"`` for standard output)."""
        return self._target

    @property
    def format(self) -> str:
        """The format's name (see :func:`vsgen.formats.resolve_format`)."""
        return self._format

    @property
    def tensors(self) -> tuple[TensorInfo, ...]:
        """The tensors, in the order given."""
        return self._tensors

    @property
    def closed(self) -> bool:
        """True once committed or aborted."""
        return self._state != "open"

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if self._state == "open":
            self.abort()

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"output {self._target!r} is already {self._state}")

    def _guarded(self, action: Callable[..., None], *args: object) -> None:
        """Run ``action``; any failure aborts the output before propagating."""
        try:
            action(*args)
        except BrokenPipeError:
            # The CLI ends quietly on a closed pipe; keep the type as is.
            self.abort()
            raise
        except OSError as err:
            self.abort()
            raise io_error(err, self._target) from err
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Sync everything and move the temporary into place (atomically for files).

        Raises:
            ValueError: the output is not complete (it is aborted).
            OSError: syncing or renaming failed, or the target appeared meanwhile
                without ``force`` (the output is aborted).
        """
        self._check_open()
        self._check_complete()
        self._guarded(self._install)
        self._state = "committed"

    def abort(self) -> None:
        """Remove the temporary; a pre-existing target stays untouched. Idempotent."""
        if self._state == "committed":
            return
        self._state = "aborted"
        self._release()
        if self._temporary is not None:
            self._temporary.discard()

    def _check_complete(self) -> None:
        """Raise ValueError (after :meth:`abort`) if values are missing."""

    def _install(self) -> None:
        if self._temporary is not None:
            self._temporary.install()

    def _release(self) -> None:
        """Close what the writer holds open (the output is being removed)."""
