"""Ctrl-C at any moment ends vsgen with ``Error: interrupted``, exit 1, no traceback.

Real ``python -m vsgen`` processes receive SIGINT at chosen moments. To hit
a moment exactly (instead of sleeping and hoping), a ``sitecustomize``
module placed on the test's PYTHONPATH blocks the import of one module,
writes a marker file when it gets there, and waits; the test sends the
signal once the marker exists. Other moments are observed from outside:
a temporary file appearing, or the process blocked reading stdin.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

REPO = Path(__file__).resolve().parents[2]

BLOCKER = """
import importlib.abc, os, sys, time

_TARGET = os.environ.get("BLOCK_IMPORT_OF")
_MARK = os.environ.get("BLOCK_MARK")


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == _TARGET:
            sys.meta_path.remove(self)
            with open(_MARK, "w") as handle:
                handle.write(name)
            release = _MARK + ".release"
            deadline = time.monotonic() + 30
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.01)
        return None


if _TARGET:
    sys.meta_path.insert(0, _Block())
"""


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the awaited moment never came")
        time.sleep(0.005)


def start(tmp_path: Path, args: list[str], block: str | None = None, **kwargs):
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(BLOCKER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hooks), str(REPO)]),
        "BLOCK_MARK": str(tmp_path / "blocked"),
        "TMPDIR": str(tmp_path),
    }
    if block:
        env["BLOCK_IMPORT_OF"] = block
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(
        [sys.executable, "-m", "vsgen", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode()


def assert_interrupted(code: int, stderr: str, expected_code: int = 1) -> None:
    """``check`` exits 3 when interrupted (its 1 means "NOT consistent")."""
    assert "Traceback" not in stderr, stderr
    assert stderr == "Error: interrupted\n", stderr
    assert code == expected_code


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("hooks", "blocked"))


@pytest.mark.parametrize("module", ["numpy", "click", "vsgen.cli", "vsgen.initializer"])
def test_interrupt_during_start_up_imports(tmp_path, module):
    process = start(tmp_path, ["sample", "--shape", "8,8", "-o", "w.npy"], block=module)
    wait_for((tmp_path / "blocked").exists)
    process.send_signal(signal.SIGINT)
    assert_interrupted(*finish(process))
    assert leftovers(tmp_path) == []


#: A ``sitecustomize`` that raises KeyboardInterrupt from code compiled from a
#: string (as a named tuple or a dataclass is made) when the command imports
#: ``vsgen.job``, as a Ctrl-C landing there would.
INTERRUPT_IN_COMPILED_CODE = """
import importlib.abc, sys


class _Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "vsgen.job":
            sys.meta_path.remove(self)
            exec("raise KeyboardInterrupt")
        return None


sys.meta_path.insert(0, _Interrupt())
"""


def test_an_interrupt_in_compiled_code_still_exits_with_one_line(tmp_path):
    """CPython marks a KeyboardInterrupt that leaves exec'd code as unhandled and
    would end the process by SIGINT (status -2) after vsgen reported it."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(INTERRUPT_IN_COMPILED_CODE)
    done = subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", "--shape", "8,8", "-o", "w.npy"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(REPO)])},
        capture_output=True,
        timeout=60,
    )
    assert_interrupted(done.returncode, done.stderr.decode())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hooks"]


def test_sigterm_during_start_up_imports(tmp_path):
    process = start(tmp_path, ["describe", "--shape", "8,8"], block="numpy")
    wait_for((tmp_path / "blocked").exists)
    process.send_signal(signal.SIGTERM)
    assert_interrupted(*finish(process))


def test_interrupt_while_the_output_is_being_created(tmp_path):
    """h5py is imported while the .h5 output is created, with signals held:
    the signal is acted on as soon as the temporary file can be removed."""
    process = start(tmp_path, ["sample", "--shape", "8,8", "-o", "w.h5"], block="h5py")
    wait_for((tmp_path / "blocked").exists)
    process.send_signal(signal.SIGINT)
    (tmp_path / "blocked.release").touch()
    assert_interrupted(*finish(process))
    assert leftovers(tmp_path) == ["blocked.release"]


def _reading_stdin(pid: int) -> bool:
    # /proc/PID/syscall: "0 0x0 ..." is read(2) on file descriptor 0.
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return fields[:2] == ["0", "0x0"]


needs_proc_syscall = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/syscall").exists(), reason="needs /proc/PID/syscall"
)


@needs_proc_syscall
def test_interrupt_while_reading_a_config_from_stdin(tmp_path):
    process = start(
        tmp_path,
        ["sample", "--config", "-", "--shape", "8,8", "-o", "w.npy"],
        stdin=subprocess.PIPE,
    )
    wait_for(lambda: _reading_stdin(process.pid))
    process.send_signal(signal.SIGINT)
    assert_interrupted(*finish(process))
    assert leftovers(tmp_path) == []


def test_interrupt_while_check_buffers_stdin_removes_its_temporary(tmp_path):
    process = start(tmp_path, ["check", "-", "--scale", "1"], stdin=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(b"\x93NUMPY" + b"\0" * 4096)
    process.stdin.flush()
    wait_for(lambda: any(p.name.startswith("vsgen-check-") for p in tmp_path.iterdir()))
    process.send_signal(signal.SIGINT)
    assert_interrupted(*finish(process), expected_code=3)
    assert leftovers(tmp_path) == []


def test_interrupt_while_sampling_keeps_the_old_file(tmp_path):
    target = tmp_path / "w.npy"
    np.save(target, np.arange(3.0))
    old = target.read_bytes()
    process = start(
        tmp_path, ["sample", "--shape", "16384,16384", "--seed", "0", "-o", "w.npy", "--force"]
    )
    wait_for(lambda: any(".vsgen-tmp-" in p.name for p in tmp_path.iterdir()))
    process.send_signal(signal.SIGINT)
    assert_interrupted(*finish(process))
    assert target.read_bytes() == old and leftovers(tmp_path) == ["w.npy"]


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6])
def test_interrupt_at_any_moment_never_prints_a_traceback(tmp_path, delay):
    """From vsgen's first line on (held at the import of vsgen.cli, then let go
    and interrupted ``delay`` seconds later: during imports, parsing, the
    output's creation, sampling, the commit or the exit), the run either
    finishes cleanly or ends with the one line and leaves no temporary, and the
    exit status tells the truth: 0 if and only if the output is in place."""
    process = start(
        tmp_path, ["sample", "--shape", "256,256", "--seed", "1", "-o", "w.h5"], block="vsgen.cli"
    )
    wait_for((tmp_path / "blocked").exists)
    (tmp_path / "blocked.release").touch()
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    code, stderr = finish(process)
    if code == 0:
        assert stderr == ""
        assert leftovers(tmp_path) == ["blocked.release", "w.h5"]
    else:
        assert_interrupted(code, stderr)
        assert leftovers(tmp_path) == ["blocked.release"]


def test_signals_are_ignored_once_the_command_has_ended(tmp_path):
    """Python's finalization resets its signal handlers to the system's default, so
    a Ctrl-C in a finished run's last moments ended it by SIGINT (status -2, no
    line) after the file was written. The entry point ignores both signals once
    the command has ended: what an exit handler sees is what finalization keeps."""
    code = (
        "import atexit, signal, sys\n"
        "import vsgen.__main__ as entry\n"
        "ignored = lambda: [signal.getsignal(s) is signal.SIG_IGN"
        " for s in (signal.SIGINT, signal.SIGTERM)]\n"
        "atexit.register(lambda: print(ignored(), file=sys.stderr))\n"
        "entry.main(['sample', '--shape', '8,8', '--seed', '0', '-o', 'w.npy'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "[True, True]\n"
    assert (tmp_path / "w.npy").exists()


# --- laying out a store, and what a dead run leaves ------------------------------------------

#: A million chunk files (the most a store may have): minutes to lay out.
MILLION_CHUNKS = [
    "sample",
    "--shape",
    "1024,1024",
    "--chunks",
    "1,1",
    "--seed",
    "1",
    "-o",
    "big.zarr",
]


@contextlib.contextmanager
def running(process: subprocess.Popen):
    """The process, killed if it is still running when the block ends (a failed test
    must not leave it making a million files)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)


def temporaries(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if ".vsgen-tmp-" in p.name]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_laying_out_a_million_chunk_files_stops_at_once(tmp_path, signum):
    """The layout polls for the signal at every file: the run ends within a second of
    it (measured here, on a machine shared with other work, with room to spare), one
    line, and the partly made store is gone."""
    with running(start(tmp_path, MILLION_CHUNKS)) as process:
        wait_for(lambda: bool(temporaries(tmp_path)))
        [temporary] = temporaries(tmp_path)
        wait_for(lambda: (temporary / "c" / "3").exists())  # thousands of files made
        sent = time.monotonic()
        process.send_signal(signum)
        code, stderr = finish(process)
        answered = time.monotonic() - sent
    assert_interrupted(code, stderr)
    assert leftovers(tmp_path) == []
    assert answered < 1.0, f"{answered:.2f} s"


def test_the_litter_of_a_killed_run_is_cleaned_by_the_next_run(tmp_path):
    with running(start(tmp_path, MILLION_CHUNKS)) as process:
        wait_for(lambda: bool(temporaries(tmp_path)))
        [temporary] = temporaries(tmp_path)
        wait_for(lambda: (temporary / "c" / "1").exists())
        process.kill()  # SIGKILL: nothing can be cleaned up now
        process.communicate(timeout=60)
    assert temporary.exists()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--shape",
            "4,4",
            "--seed",
            "1",
            "-o",
            "big.zarr",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == b""
    assert leftovers(tmp_path) == ["big.zarr"]


def _paused_store_write(tmp_path: Path, moment: str, signum: int) -> tuple[int, bytes]:
    """``--force`` over a store, paused at ``moment`` (test_output's pausing child),
    signalled, then let go."""
    from test_output import signal_and_collect, start_paused, wait_for_marker

    store = tmp_path / "out" / "t.zarr"
    store.parent.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--shape",
            "64,32",
            "--seed",
            "1",
            "-o",
            str(store),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    process, marker = start_paused(
        tmp_path, moment, "sample", "--shape", "64,32", "--seed", "2", "-o", str(store), "--force"
    )
    wait_for_marker(marker, process)
    _, stderr = signal_and_collect(process, signum, marker.with_name(marker.name + ".release"))
    return process.returncode, stderr


def _store_values(store: Path) -> bytes:
    return (store / "c" / "0" / "0").read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_last_moment_of_a_store_swap_is_success(tmp_path, signum):
    """Held from the commit's last look on: the new store goes into place and the
    exit status says so (0, nothing on stderr), never "interrupted"."""
    import numpy as np

    code, stderr = _paused_store_write(tmp_path, "rename", signum)
    store = tmp_path / "out" / "t.zarr"
    assert code == 0 and stderr == b""
    assert os.listdir(tmp_path / "out") == ["t.zarr"]
    expected = __import__("vsgen").VarianceScaling(seed=2).plan((64, 32)).array()
    assert _store_values(store) == np.ascontiguousarray(expected, "<f4").tobytes()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_a_store_is_synced_keeps_the_old_one(tmp_path, signum):
    import numpy as np

    code, stderr = _paused_store_write(tmp_path, "sync", signum)
    store = tmp_path / "out" / "t.zarr"
    assert code == 1 and stderr == b"Error: interrupted\n"
    assert os.listdir(tmp_path / "out") == ["t.zarr"]
    expected = __import__("vsgen").VarianceScaling(seed=1).plan((64, 32)).array()
    assert _store_values(store) == np.ascontiguousarray(expected, "<f4").tobytes()


def test_an_interrupt_python_cannot_raise_is_delivered_again(capfd):
    """A KeyboardInterrupt raised inside a weakref callback or a __del__ (the import
    system's module locks have one) is printed by Python as "Exception ignored" and
    lost; the command's handler delivers the signal again, to be raised where it can."""
    from vsgen import _interrupt
    from vsgen.cli._errors import terminate_as_interrupt

    # As at the start of every command (VsgenGroup.invoke): an earlier command run
    # in this process may have left its output in place, after which signals are
    # meant to change nothing.
    _interrupt.output_pending()

    class Dropped:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    deadline = time.monotonic() + 10
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        Dropped()
        while time.monotonic() < deadline:  # the interrupt lands in this loop
            pass
    assert time.monotonic() < deadline
    assert "Exception ignored" not in capfd.readouterr().err


def test_once_the_output_is_in_place_a_signal_changes_nothing(tmp_path):
    """In a process vsgen owns, a signal after the rename (even while Python shuts
    down, when it restores the default actions) ends nothing: exit 0."""
    code = (
        "import os, signal, time\n"
        "from vsgen import _interrupt\n"
        "_interrupt.end_at_once_on_interrupt()\n"
        "_interrupt.own_process()\n"
        "_interrupt.output_in_place()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.1)\n"
        "print('finished')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == b"finished\n" and done.stderr == b""
