"""How the hostile-input suites run their cases (test_hostile_files.py, test_hostile_stores.py).

Each case builds its input inside the test (raw bytes, h5py, vsgen itself; no
binary fixtures) and runs a real ``vsgen`` command on it in its own process, under
an address-space limit (``RLIMIT_AS``) and a CPU-time limit, with a wall-clock
guard that kills a hung case. For every case the suite checks the exit code,
exactly one line on stderr (no ``internal error``, no traceback), nothing written,
changed or removed in the case's folder (every entry: its kind, size, mode, and a
regular file's bytes; FIFOs, sockets, devices, links and mounts included), no byte
of a foreign file reaching stdout or stderr (foreign files hold the marker value
31337), the wall time of the case (at most ``TIME_LIMIT`` seconds) and the peak
resident memory of the process (``wait4``'s ``ru_maxrss``) below 300 MiB.

The cases run in one worker process that imports vsgen once and forks a child
per case, so a case costs milliseconds instead of an interpreter start; a forked
child's peak RSS includes everything the worker imported, so it over-states a
fresh ``vsgen`` process, never under-states it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import vsgen

#: Peak resident memory allowed for any hostile case.
RSS_LIMIT_MIB = 300
#: Wall time allowed for any hostile case (the process, from fork to exit).
TIME_LIMIT = 10.0
#: Address space of a case: the worker maps about 130 MB after its imports
#: (measured with VmSize); 1 GiB leaves room for the allowed work and makes an
#: unbounded allocation fail instead of swapping.
ADDRESS_SPACE = 1 << 30
#: A hung case is killed after this many seconds (a guard, not a timing test).
WALL_LIMIT = 30
#: A float32 value planted in every foreign file: it must never be reported.
MARKER = 31337.0
MARKER_TEXT = "31337"

WORKER = textwrap.dedent(
    """
    import json, os, resource, sys, time, traceback
    import numpy, h5py, ml_dtypes  # what check, --like and --config-from import
    from vsgen.cli import main

    cases = json.load(open(sys.argv[1]))
    address_space, wall_limit = int(sys.argv[2]), float(sys.argv[3])
    results = {}
    for case in cases:
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                os.chdir(case["cwd"])
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
                resource.setrlimit(resource.RLIMIT_CPU, (int(wall_limit), int(wall_limit)))
                for fd, name, flags in ((1, "out", os.O_WRONLY), (2, "err", os.O_WRONLY)):
                    target = os.open(case[name], flags | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(target, fd)
                stdin = os.open(case["stdin"] or os.devnull, os.O_RDONLY)
                os.dup2(stdin, 0)
                try:
                    main(case["args"])
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        timed_out = False
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - started > wall_limit:
                os.kill(pid, 9)
                done, status, usage = os.wait4(pid, 0)
                timed_out = True
                break
            time.sleep(0.002)
        results[case["id"]] = {
            "code": os.waitstatus_to_exitcode(status),
            "rss_kib": usage.ru_maxrss,
            "seconds": time.monotonic() - started,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "timed_out": timed_out,
        }
    print(json.dumps(results))
    """
)


class Unsupported(Exception):
    """A case this machine cannot build (e.g. mounting needs root): it is skipped, saying why."""


@dataclass(frozen=True)
class Case:
    """A hostile input: how to build it, the command, what must come out.

    ``words`` must appear in the one stderr line (code 2), or on stdout (code 0:
    the verdict, code 1: ``NOT consistent`` and what failed).
    """

    id: str
    build: Callable[[Path], list[str]]
    words: str
    code: int = 2
    stdin: bytes | None = None


def marker_bytes(count: int = 16) -> bytes:
    return np.full(count, MARKER, dtype="<f4").tobytes()


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def walk(
    folder: Path,
    visit: Callable[[int, tuple[str, ...], str, os.stat_result], None],
    leave: Callable[[int, str], None] | None = None,
) -> None:
    """Call ``visit(dir_fd, parts, name, lstat)`` for every entry under ``folder``, each
    directory before its entries' subdirectories, and ``leave(dir_fd, name)`` once a
    subdirectory is done. Iterative, one descriptor open at a time (a parent is
    reopened as ``..``), so a tree of any depth is walked whole."""
    here = os.open(folder, _DIRECTORY)
    parts: list[str] = []
    pending: list[list[str]] = []

    def enter() -> None:
        subdirectories = []
        for name in sorted(os.listdir(here)):
            info = os.stat(name, dir_fd=here, follow_symlinks=False)
            visit(here, tuple(parts), name, info)
            if stat.S_ISDIR(info.st_mode):
                subdirectories.append(name)
        pending.append(subdirectories[::-1])

    try:
        enter()
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                below = os.open(name, _DIRECTORY, dir_fd=here)
                os.close(here)
                here = below
                parts.append(name)
                enter()
            else:
                pending.pop()
                if pending:
                    above = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
                    os.close(here)
                    here = above
                    done = parts.pop()
                    if leave is not None:
                        leave(here, done)
    finally:
        os.close(here)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``, not following links: its kind, size, permission
    bits, mtime, and a regular file's SHA-256 (files up to 64 MiB; larger ones, the
    sparse chunks, by size and mtime), a link's target, a device's number."""
    found: dict[str, tuple] = {}

    def visit(where: int, parts: tuple[str, ...], name: str, info: os.stat_result) -> None:
        kind = stat.S_IFMT(info.st_mode)
        detail: object = None
        if stat.S_ISREG(info.st_mode) and info.st_size <= 64 << 20:
            descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=where)
            with os.fdopen(descriptor, "rb") as handle:
                detail = hashlib.sha256(handle.read()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            detail = os.readlink(name, dir_fd=where)
        elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            detail = info.st_rdev
        directory = kind == stat.S_IFDIR
        found["/".join((*parts, name))] = (
            kind,
            None if directory else info.st_size,
            stat.S_IMODE(info.st_mode),
            None if directory else info.st_mtime_ns,
            detail,
        )

    walk(folder, visit)
    return found


def remove_tree(path: Path) -> None:
    """Remove ``path`` however deep it nests (pytest's own clean-up recurses per level)."""

    def visit(where: int, parts: tuple[str, ...], name: str, info: os.stat_result) -> None:
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=where)

    walk(path, visit, lambda where, name: os.rmdir(name, dir_fd=where))
    os.rmdir(path)


def run_cases(root: Path, cases: list[Case]) -> dict[str, dict]:
    """Build every case's folder under ``root``, run all cases in the worker, collect."""
    captures = root / "captures"
    captures.mkdir()
    runnable, before, skipped = [], {}, {}
    for case in cases:
        folder = root / case.id
        folder.mkdir()
        try:
            args = case.build(folder)
        except Unsupported as reason:
            skipped[case.id] = str(reason)
            continue
        stdin = None
        if case.stdin is not None:
            stdin = captures / f"{case.id}.in"
            stdin.write_bytes(case.stdin)
        before[case.id] = snapshot(folder)
        runnable.append(
            {
                "id": case.id,
                "cwd": str(folder),
                "args": args,
                "out": str(captures / f"{case.id}.out"),
                "err": str(captures / f"{case.id}.err"),
                "stdin": None if stdin is None else str(stdin),
            }
        )
    (root / "cases.json").write_text(json.dumps(runnable))
    package_root = str(Path(vsgen.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": package_root,
        "OPENBLAS_NUM_THREADS": "1",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER,
            str(root / "cases.json"),
            str(ADDRESS_SPACE),
            str(WALL_LIMIT),
        ],
        capture_output=True,
        env=env,
        timeout=WALL_LIMIT * len(runnable) + 60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    results = json.loads(done.stdout)
    for case in cases:
        if case.id in skipped:
            results[case.id] = {"skipped": skipped[case.id]}
            continue
        result = results[case.id]
        result["stdout"] = Path(captures / f"{case.id}.out").read_bytes()
        result["stderr"] = Path(captures / f"{case.id}.err").read_text(errors="replace")
        result["before"] = before[case.id]
        result["after"] = snapshot(root / case.id)
        result["folder"] = root / case.id
    ran = [key for key in results if "skipped" not in results[key]]
    slowest = sorted(ran, key=lambda key: -results[key]["seconds"])[:3]
    largest = sorted(ran, key=lambda key: -results[key]["rss_kib"])[:3]
    print(
        f"\n{len(ran)} hostile cases ({len(skipped)} skipped); longest wall time (CPU time):",
        end="",
    )
    print(
        ", ".join(
            f" {key} {results[key]['seconds']:.2f} s ({results[key]['cpu_seconds']:.2f} s)"
            for key in slowest
        ),
        end="",
    )
    print("; largest peak RSS:", end="")
    print(", ".join(f" {key} {results[key]['rss_kib'] / 1024:.0f} MiB" for key in largest))
    return results


def check_outcome(result: dict, case: Case) -> None:
    """Assert what every hostile case must satisfy (see the module docstring)."""
    import pytest

    if "skipped" in result:
        pytest.skip(result["skipped"])
    stderr, stdout = result["stderr"], result["stdout"]
    assert not result["timed_out"], f"killed after {WALL_LIMIT} s"
    assert result["code"] == case.code, (result["code"], stderr, stdout[-500:])
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if case.code == 2:
        assert len(stderr.splitlines()) == 1 and stderr.startswith("Error: "), stderr
        assert case.words in stderr, stderr
        assert stdout == b""
        # Nothing written, nothing changed, no temporary left behind.
        assert result["after"] == result["before"]
    else:
        assert stderr == "", stderr
        verdict = b"verdict: consistent" if case.code == 0 else b"verdict: NOT consistent"
        assert verdict in stdout, stdout[-2000:]
        assert case.words.encode() in stdout, stdout[-2000:]
        assert result["after"] == result["before"]
    assert MARKER_TEXT not in stderr and MARKER_TEXT.encode() not in stdout
    assert result["rss_kib"] < RSS_LIMIT_MIB * 1024, f"peak RSS {result['rss_kib'] // 1024} MiB"
    assert result["seconds"] <= TIME_LIMIT, f"{result['seconds']:.1f} s"
