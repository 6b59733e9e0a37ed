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
import contextvars
import errno
import os
import re
import shutil
import stat
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, NamedTuple, Protocol, TypeVar

from vsgen.dtypes import TensorInfo

_TEMP_MARK = ".vsgen-tmp-"
_OLD_MARK = ".vsgen-old-"
T = TypeVar("T")


#: Longest file name most file systems accept (ext4, xfs, btrfs, tmpfs).
_NAME_MAX = 255
#: ``<mark><owner>-<pid>-<random>``: who made a temporary, so that the next run on
#: the same target can tell the litter of a run that died (SIGKILL, power loss).
_LITTER = re.compile(r"(?P<owner>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]{12}")


# --- cancellation --------------------------------------------------------------------------

_cancelled: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "vsgen_cancelled", default=None
)


@contextlib.contextmanager
def cancellation(cancelled: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, the long loops of this module and of the layouts
    (making chunk files, surveying a store, removing litter, syncing) call
    ``cancelled()`` as they go and raise KeyboardInterrupt once it is true, so
    that a caller holding signals is answered at once. Until the rename that
    installs an output, never after it."""
    token = _cancelled.set(cancelled)
    try:
        yield
    finally:
        _cancelled.reset(token)


def stop_if_cancelled() -> None:
    """Raise KeyboardInterrupt if the block's ``cancelled()`` (see :func:`cancellation`) is true."""
    cancelled = _cancelled.get()
    if cancelled is not None and cancelled():
        raise KeyboardInterrupt


# --- names -----------------------------------------------------------------------------


def owner_tag() -> str:
    """8 hex digits naming this process's PID namespace on this boot of this machine
    (a hash of the kernel's boot id and the namespace; the host name where there is
    no ``/proc``), so that a process id found in a temporary's name is only ever
    judged where it means the same process."""
    global _OWNER
    if _OWNER is None:
        parts = []
        with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id", "rb") as boot:
            parts.append(boot.read(64))
        with contextlib.suppress(OSError):
            parts.append(os.readlink("/proc/self/ns/pid").encode())
        if len(parts) < 2:
            import socket

            parts = [socket.gethostname().encode("utf-8", "surrogateescape")]
        _OWNER = f"{zlib.crc32(b'|'.join(parts)):08x}"
    return _OWNER


_OWNER: str | None = None


def _short_base(base: str, suffix: str) -> str:
    room = _NAME_MAX - 1 - len(suffix.encode())
    encoded = base.encode("utf-8", "surrogateescape")[:room]
    return encoded.decode("utf-8", "ignore")


def temp_path(final_path: str, mark: str = _TEMP_MARK) -> str:
    """A fresh hidden name beside ``final_path``, ``.<name><mark><owner>-<pid>-<random>``;
    the target's name is shortened if needed so that it fits ``_NAME_MAX`` bytes."""
    directory, base = os.path.split(final_path)
    # os.urandom, as secrets.token_hex uses, without importing secrets (start-up).
    suffix = f"{mark}{owner_tag()}-{os.getpid()}-{os.urandom(6).hex()}"
    return os.path.join(directory, f".{_short_base(base, suffix)}{suffix}")


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


# --- the litter of runs that died ----------------------------------------------------------


class LeftoverWarning(UserWarning):
    """An earlier run on the same target died and left something vsgen keeps (an old
    output it had set aside, or a temporary holding more than vsgen writes)."""


def _process_gone(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, someone else's
        return False
    return False


def litter(final: str) -> list[tuple[str, str]]:
    """``(path, mark)`` of the temporaries (``.vsgen-tmp-``) and set-aside outputs
    (``.vsgen-old-``) of ``final`` left by runs of this machine whose process is gone."""
    directory, base = os.path.split(final)
    found = []
    try:
        entries = os.scandir(directory or ".")
    except OSError:
        return []
    with entries:
        for entry in entries:
            stop_if_cancelled()
            name = entry.name
            for mark in (_TEMP_MARK, _OLD_MARK):
                at = name.rfind(mark)
                if at < 1 or not name.startswith("."):
                    continue
                suffix = name[at:]
                parsed = _LITTER.fullmatch(suffix[len(mark) :])
                if (
                    parsed is None
                    or parsed["owner"] != owner_tag()
                    or name[1:at] != _short_base(base, suffix)
                ):
                    continue
                if _process_gone(int(parsed["pid"])):
                    found.append((os.path.join(directory, name), mark))
    return found


def clean_litter(final: str, display: str) -> None:
    """Remove the temporaries that dead runs left beside ``final`` (regular files, or
    directories of regular files and directories, all on this file system); warn
    (:class:`LeftoverWarning`) about anything else they left: an old output set aside
    (perhaps the only copy, if the run died between its two renames) or a temporary
    holding a link, a special file or a mount."""
    import warnings

    for path, mark in litter(final):
        name = os.path.basename(path)
        if mark == _TEMP_MARK and _remove_owned_tree(path):
            continue
        what = (
            "an earlier output that a run which stopped had set aside"
            if mark == _OLD_MARK
            else "a temporary of a run that stopped, holding more than vsgen writes"
        )
        warnings.warn(
            f"{name} beside {display!r} is {what}; vsgen left it in place",
            LeftoverWarning,
            stacklevel=2,
        )


def _remove_owned_tree(path: str) -> bool:
    """Remove ``path`` if it is a regular file, or a directory holding only regular files
    and directories on its own file system; True if it is gone."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if stat.S_ISREG(top.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    if not stat.S_ISDIR(top.st_mode) or _mounts_within(path):
        return False
    # Check everything first: a tree holding anything else is left whole.
    for directory, subdirectories, files in os.walk(path):
        for name in subdirectories + files:
            stop_if_cancelled()
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                return False
            kind = stat.S_IFMT(info.st_mode)
            if info.st_dev != top.st_dev or kind not in (stat.S_IFREG, stat.S_IFDIR):
                return False
    for directory, subdirectories, files in os.walk(path, topdown=False):
        for name in files:
            stop_if_cancelled()
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        for name in subdirectories:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)
    return not os.path.lexists(path)


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


def open_entry(path: str) -> int | None:
    """A read-only descriptor of the regular file ``path``, never through a symbolic
    link and never blocking (a FIFO or device is not opened for reading); None if
    ``path`` is anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        return None
    os.set_blocking(descriptor, True)
    return descriptor


def read_entry(path: str, limit: int) -> bytes | None:
    """The first ``limit`` bytes of the regular file ``path`` (see :func:`open_entry`)."""
    descriptor = open_entry(path)
    if descriptor is None:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read(limit)


# --- what vsgen wrote ------------------------------------------------------------------------


class Judge(Protocol):
    """Says, entry by entry, whether a directory holds what vsgen wrote there: each
    method returns None for an entry vsgen wrote, else why not (a few words)."""

    def directory(self, parts: tuple[str, ...]) -> str | None:
        """A directory at ``parts`` (path components below the output's root)."""

    def file(self, parts: tuple[str, ...], size: int, path: str) -> str | None:
        """A regular file at ``parts`` of ``size`` bytes (``path`` to read it, never
        following a link: :func:`read_entry`)."""


class NpyJudge:
    """An npy directory: subdirectories and NPY files named ``*.npy``."""

    def directory(self, parts: tuple[str, ...]) -> str | None:
        return None

    def file(self, parts: tuple[str, ...], size: int, path: str) -> str | None:
        if parts[-1].endswith(".npy") and read_entry(path, len(_NPY_MAGIC)) == _NPY_MAGIC:
            return None
        return "not an NPY file"


class Survey(NamedTuple):
    """What :func:`survey` found under an output's root."""

    #: The first entry vsgen did not write (relative path, ``None`` if there is
    #: none) and why.
    foreign: str | None
    reason: str
    #: Inode numbers of the files vsgen wrote (all on the root's file system).
    inodes: frozenset[int]
    #: The permission bits every directory (root included) and every file has.
    directory_mode: int
    file_mode: int


def _mounts_within(root: str) -> list[str]:
    """Mount points at or below ``root`` (bind mounts of the same file system too),
    from ``/proc/self/mountinfo``; empty where there is none to read."""
    real = os.path.realpath(root)
    text = read_entry("/proc/self/mountinfo", 64 << 20)
    if text is None:
        return []
    found = []
    for line in text.decode("utf-8", "surrogateescape").splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        if point == real or point.startswith(real.rstrip("/") + "/"):
            found.append(point)
    return found


def survey(root: str, judge: Judge) -> Survey:
    """Walk the directory ``root`` without following links and judge every entry.

    Foreign: a symbolic link, FIFO, socket or device, anything on another file system
    (a mount point, bind mounts included), and whatever ``judge`` says vsgen did not
    write. Stops at the first foreign entry; the work is one ``lstat`` per entry.
    """
    top = os.lstat(root)
    inodes: set[int] = set()
    modes = [stat.S_IMODE(top.st_mode) & 0o777, 0o666]
    mounts = sorted(_mounts_within(root))
    if mounts:
        real = os.path.realpath(root)
        relative = os.path.relpath(mounts[0], real)
        return Survey(relative, "a mount point", frozenset(), *modes)
    pending: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while pending:
        directory, parts = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                stop_if_cancelled()
                here = (*parts, entry.name)
                relative = os.path.join(*here)
                info = entry.stat(follow_symlinks=False)
                if info.st_dev != top.st_dev:
                    return Survey(relative, "on another file system", frozenset(), *modes)
                if stat.S_ISDIR(info.st_mode):
                    reason = judge.directory(here)
                    modes[0] &= stat.S_IMODE(info.st_mode)
                    pending.append((entry.path, here))
                elif stat.S_ISREG(info.st_mode):
                    reason = judge.file(here, info.st_size, entry.path)
                    modes[1] &= stat.S_IMODE(info.st_mode)
                    inodes.add(info.st_ino)
                else:
                    reason = describe_file_kind(info.st_mode)
                if reason is not None:
                    return Survey(relative, reason, frozenset(), *modes)
    return Survey(None, "", frozenset(inodes), modes[0] & 0o777, modes[1] & 0o666)


def remove_surveyed(root: str, judge: Judge, surveyed: Survey) -> bool:
    """Delete what :func:`survey` found vsgen wrote under ``root``: each file still the
    same inode and still judged vsgen's, then the directories that are empty. Anything
    that appeared since stays, with the directories holding it; True if ``root`` is gone."""
    for directory, subdirectories, files in os.walk(root, topdown=False):
        relative = os.path.relpath(directory, root)
        parts = () if relative == "." else tuple(relative.split(os.sep))
        for name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if (
                    stat.S_ISREG(info.st_mode)
                    and info.st_ino in surveyed.inodes
                    and judge.file((*parts, name), info.st_size, path) is None
                ):
                    os.unlink(path)
        for name in subdirectories:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(root)
    return not os.path.lexists(root)


class NotOwned(ValueError):
    """An output vsgen may not replace; ``entry`` is the offending path (as the user
    gave the target) and ``reason`` says what it is."""

    def __init__(self, message: str, entry: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.entry = entry
        self.reason = reason


def _is_mount_point(path: str, info: os.stat_result) -> bool:
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if info.st_dev != os.stat(parent).st_dev:
        return True
    return os.path.realpath(path) in _mounts_within(path)


def check_replaceable(
    path: str,
    display: str,
    is_dir: bool,
    judge: Callable[[str], Judge] | None = None,
    words: str = "a directory of .npy files",
) -> Survey | None:
    """Refuse to replace anything at ``path`` that vsgen would not write there.

    ``--force`` replaces a regular file (file formats) or a directory that holds
    nothing but what vsgen wrote there (directory formats: ``judge(path)`` says
    what that is, by default NPY files and subdirectories of them; ``words`` says
    it in messages) — never a symbolic link, FIFO, device node, socket, mount
    point, a regular file where a directory goes, or a directory holding anything
    else (:func:`survey`). Returns the survey of a directory (None otherwise).

    Raises:
        NotOwned: a ValueError (a usage error: the same command fails the same way)
            naming the first foreign entry.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = info.st_mode
    if not is_dir:
        if not stat.S_ISREG(mode):
            raise NotOwned(
                f"output {display!r} exists and is {describe_file_kind(mode)}, not a regular file; "
                "--force only replaces regular files"
            )
        return None
    if not stat.S_ISDIR(mode):
        what = "a regular file" if stat.S_ISREG(mode) else describe_file_kind(mode)
        raise NotOwned(
            f"output {display!r} exists and is {what}; the format writes a directory "
            f"and --force only replaces {words}"
        )
    if _is_mount_point(path, info):
        raise NotOwned(f"output {display!r} is a mount point; --force never replaces one")
    try:
        found = survey(path, (judge or (lambda _: NpyJudge()))(path))
    except NotOwned as refused:
        what = refused.reason
        if refused.entry:
            what = f"{os.path.join(display, refused.entry)}: {what}"
        raise NotOwned(
            f"output {display!r} is not {words} ({what}); --force only "
            f"replaces {words}: choose another name",
            refused.entry,
            refused.reason,
        ) from None
    if found.foreign is not None:
        raise NotOwned(
            f"output {display!r} is a directory that holds other files "
            f"(e.g. {os.path.join(display, found.foreign)}: {found.reason}); "
            f"--force only replaces {words}: choose another name",
            found.foreign,
            found.reason,
        )
    return found


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


class TargetChanged(FileExistsError):
    """The target changed during the run so that it may not be replaced: something
    appeared at a free name, or an old output holds what vsgen did not write. A
    runtime failure (exit code 1): the old target is left as it was."""


def _moved_aside(aside: str, final: str, display: str) -> None:
    """Put the old output back at ``final``; if something took its place meanwhile, say
    where the old output is (the only time a message names a hidden name)."""
    try:
        os.rename(aside, final)
    except OSError:
        raise TargetChanged(
            errno.EEXIST,
            f"output {display!r} was re-created during the run; the earlier output is "
            f"kept as {os.path.basename(aside)} beside it",
        ) from None


def install_directory(
    temp: str,
    final: str,
    display: str,
    force: bool,
    check: Callable[[str], tuple[Judge, Survey]] | None = None,
    modes: tuple[int, int] = (0o777, 0o666),
) -> None:
    """Move a finished temporary directory into place.

    A directory cannot replace a non-empty one atomically: the old one is renamed
    aside (one atomic step, out of everyone's way), surveyed again by ``check(aside)``
    (default: a directory of .npy files), and put back if it now holds anything
    vsgen did not write (:class:`TargetChanged`) or if the second rename fails. The
    new directory is given no wider permissions than the old one had. Once the new
    one is in place, the old one's files are deleted one by one (each the one
    surveyed), never a file added since: such a file stays, in the old directory.
    ``modes``: the permission bits the temporary's directories and files were made
    with (:class:`TemporaryDirectory`); they are narrowed only if the old output's are.
    """
    if not os.path.lexists(final):
        try:
            os.rename(temp, final)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise TargetChanged(errno.EEXIST, exists_message(display, True)) from None
            raise
        return
    if not force:
        raise FileExistsError(errno.EEXIST, exists_message(display, True))
    aside = temp_path(final, _OLD_MARK)
    os.rename(final, aside)
    try:
        try:
            judge, surveyed = (check or _npydir_check)(aside)
        except NotOwned as refused:
            what = refused.reason
            if refused.entry:
                what = f"{os.path.join(display, refused.entry)}: {what}"
            raise TargetChanged(
                errno.EEXIST,
                f"output {display!r} changed during the run and holds what vsgen did not write "
                f"({what}); it was left as it was",
            ) from None
        if modes[0] & ~surveyed.directory_mode or modes[1] & ~surveyed.file_mode:
            restrict_tree(temp, surveyed.directory_mode, surveyed.file_mode)
        os.rename(temp, final)
    except BaseException:
        _moved_aside(aside, final, display)
        raise
    remove_surveyed(aside, judge, surveyed)


def _npydir_check(aside: str) -> tuple[Judge, Survey]:
    judge = NpyJudge()
    surveyed = survey(aside, judge)
    if surveyed.foreign is not None:
        raise NotOwned("", surveyed.foreign, surveyed.reason)
    return judge, surveyed


def restrict_tree(root: str, directory_mode: int, file_mode: int) -> None:
    """Take from every directory and file under ``root`` (``root`` included) the
    permission bits that ``directory_mode`` / ``file_mode`` lack."""
    for path, is_file in _tree(root):
        stop_if_cancelled()
        mask = file_mode if is_file else directory_mode
        current = stat.S_IMODE(os.lstat(path).st_mode)
        if current & ~mask:
            os.chmod(path, current & mask)


def _tree(root: str) -> Iterator[tuple[str, bool]]:
    """Every path under ``root`` (itself first), and whether it is a file."""
    yield root, False
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            yield os.path.join(directory, name), False
        for name in files:
            yield os.path.join(directory, name), True


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


def _made_at(path: str, create: Callable[[str], T]) -> T:
    """``create(path)`` at the given name (a kept temporary's, known in advance);
    an interrupt just after it was made removes it again."""
    try:
        return create(path)
    except FileExistsError:
        raise
    except BaseException:
        if os.path.lexists(path):
            remove_quietly(path)
        raise


def _reopen_file(path: str) -> int:
    """A read-write descriptor of the kept temporary file ``path`` (a regular file,
    never through a link)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


class AtomicFile:
    """A temporary file beside ``final`` that becomes ``final`` on ``install``."""

    def __init__(
        self, final: str, display: str, force: bool, at: str | None = None, reopen: bool = False
    ) -> None:
        self.final = final
        self.display = display
        self.force = force
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        if at is None:
            self.path, fd = _fresh(final, display, "file", lambda path: os.open(path, flags, 0o666))
        elif reopen:
            self.path, fd = at, _reopen_file(at)
        else:
            self.path, fd = at, _made_at(at, lambda path: os.open(path, flags, 0o666))
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
        stop_if_cancelled()
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

    def keep(self) -> None:
        """Close the temporary and leave it in place (a job to be resumed)."""
        self._finalizer.detach()
        file = getattr(self, "file", None)
        if file is not None and not file.closed:
            with contextlib.suppress(OSError):
                file.close()


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

    ``check(aside)`` surveys an old ``final`` set aside at the install and raises
    :class:`NotOwned` if it may not be replaced (:func:`install_directory`); ``sync``
    names the suffixes of the files :meth:`install` syncs (the writers sync the files
    they filled themselves). ``old``: the survey of the output to be replaced; the
    layout makes directories with :attr:`directory_mode` and files with
    :attr:`file_mode` (the umask applies too), so a private output stays private.
    """

    def __init__(
        self,
        final: str,
        display: str,
        force: bool,
        check: Callable[[str], tuple[Judge, Survey]] | None = None,
        sync: Sequence[str] = (),
        old: Survey | None = None,
        at: str | None = None,
        reopen: bool = False,
    ) -> None:
        self.final = final
        self.display = display
        self.force = force
        self._check = check
        self._sync = tuple(sync)
        #: Permission bits for what the layout makes (``mkdir``/``open`` modes).
        self.directory_mode = 0o777 if old is None else old.directory_mode & 0o777
        self.file_mode = 0o666 if old is None else old.file_mode & 0o666
        if at is None:
            self.path, _ = _fresh(
                final, display, "directory", lambda path: os.mkdir(path, self.directory_mode)
            )
        elif reopen:
            if not stat.S_ISDIR(os.lstat(at).st_mode):
                raise FileNotFoundError(errno.ENOENT, f"{at} is not a directory")
            self.path = at
        else:
            self.path = at
            _made_at(at, lambda path: os.mkdir(path, self.directory_mode))
        try:
            self._finalizer = weakref.finalize(self, remove_quietly, self.path)
        except BaseException:
            remove_quietly(self.path)
            raise

    def install(self) -> None:
        sync_tree(self.path, self._sync)
        stop_if_cancelled()
        install_directory(
            self.path,
            self.final,
            self.display,
            self.force,
            self._check,
            (self.directory_mode, self.file_mode),
        )
        self._finalizer.detach()
        fsync_directory(os.path.dirname(self.final) or ".")

    def discard(self) -> None:
        self._finalizer()

    def keep(self) -> None:
        """Leave the temporary in place (a job to be resumed)."""
        self._finalizer.detach()


def sync_tree(root: str, suffixes: Sequence[str]) -> None:
    """``fsync`` the files under ``root`` whose names end with one of ``suffixes``,
    then every directory."""
    for directory, _, files in os.walk(root):
        for name in files:
            stop_if_cancelled()
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
    refuse_replacing: Callable[[str, str], Survey | None],
    clean: bool = True,
) -> Survey | None:
    """The checks before an output is created at ``path`` (``target`` as given).

    The parent directory must exist, take new files and have room for ``needed``
    bytes; a file output must not name a directory; an existing target needs
    ``force``, and ``refuse_replacing(path, target)`` raises if ``--force`` may not
    replace it (in the library, not the CLI, so API callers get the same protection);
    what it returns (the survey of an old directory output) is returned. With
    ``clean``, the temporaries that runs which died left for the same target are
    removed first (:func:`clean_litter`); without, nothing is changed.

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
    old = None
    if os.path.lexists(path):
        if not force:
            raise ValueError(exists_message(target, directory))
        old = refuse_replacing(path, target)
    if clean:
        clean_litter(path, target)
    check_writable(target, parent, needed)
    return old


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
        if self._state in ("committed", "kept"):
            return
        self._state = "aborted"
        self._release()
        if self._temporary is not None:
            self._temporary.discard()

    def keep(self) -> None:
        """Leave the unfinished temporary in place, for a later run to finish (a
        resumable job); a pre-existing target stays untouched."""
        if self._state != "open":
            return
        self._state = "kept"
        self._release()
        if self._temporary is not None:
            self._temporary.keep()

    def _check_complete(self) -> None:
        """Raise ValueError (after :meth:`abort`) if values are missing."""

    def _install(self) -> None:
        if self._temporary is not None:
            self._temporary.install()

    def _release(self) -> None:
        """Close what the writer holds open (the output is being removed)."""
