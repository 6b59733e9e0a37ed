"""A Dask cluster that goes wrong: real ``dask scheduler`` / ``dask worker`` processes
on 127.0.0.1, killed while ``vsgen sample --scheduler`` runs (a subprocess, for its
exit code and stderr), and addresses where no scheduler, or no Dask, answers.

Every failure is one ``Error:`` line on stderr, exit code 1, within its bound, and no
temporary is left, unless ``--resume`` keeps one: then the same command, run again
with ``--resume`` on a fresh cluster, finishes the job, and its bytes equal those of
an uninterrupted single-process run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from dask_processes import DaskProcesses, Listener, free_port  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.required_in_ci]

#: A job of 64 tasks of 1 MiB (--chunks), slowed on the workers (SlowWrites) so that
#: it is still running when the test breaks the cluster.
JOB = ["--shape", "4096,1024", "--seed", "8", "--chunks", "64,1024"]
TASKS = 64


class SlowWrites(distributed.WorkerPlugin):
    """Every vsgen write task sleeps ``seconds`` first (on the workers it is given to)."""

    name = "vsgen-test-slow-writes"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def setup(self, worker) -> None:
        import time as clock

        from vsgen import dask as vsgen_dask

        original = getattr(vsgen_dask, "_unslowed_run_task", vsgen_dask._run_task)
        seconds = self.seconds

        def slow(*args, **kwargs):
            clock.sleep(seconds)
            return original(*args, **kwargs)

        vsgen_dask._unslowed_run_task = original
        vsgen_dask._run_task = slow


@pytest.fixture
def processes(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    started = DaskProcesses(logs)
    yield started
    started.stop()


def _slow(address: str, seconds: float = 0.25) -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with distributed.Client(address, timeout="30s") as client:
        client.register_plugin(SlowWrites(seconds))


def _vsgen(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vsgen", "sample", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _wait_for(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_for_temporary(job: subprocess.Popen, directory, timeout: float = 60) -> None:
    """Until the job has laid its output out; fails with its stderr if it ended first."""
    _wait_for(lambda: _temporaries(directory) or job.poll() is not None, timeout, "the temporary")
    if job.poll() is not None:
        raise AssertionError(f"the job ended early ({job.returncode}): {job.stderr.read()}")


def _temporaries(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".vsgen-" in name)


def _outputs(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name not in ("logs",))


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    return lines[0]


def _reference(tmp_path) -> bytes:
    reference = tmp_path / "reference.npy"
    done = _run([*JOB[:4], "-o", str(reference), "--quiet"])  # streamed: no --chunks
    assert done.returncode == 0, done.stderr
    data = reference.read_bytes()
    reference.unlink()
    return data


def test_all_workers_lost_fails_within_the_cluster_timeout(processes, tmp_path):
    address, _, workers = processes.cluster(2)
    _slow(address)
    target = tmp_path / "w.npy"
    job = _vsgen([*JOB, "-o", str(target), "--scheduler", address, "--cluster-timeout", "3"])
    _wait_for_temporary(job, tmp_path)
    time.sleep(1.0)
    processes.kill(workers)  # both nannies and both workers, at once
    killed = time.monotonic()
    _, stderr = job.communicate(timeout=60)
    elapsed = time.monotonic() - killed
    print(f"failed {elapsed:.2f} s after the workers were killed")
    assert job.returncode == 1
    line = _one_error_line(stderr)
    assert "no live worker for 3 s" in line, line
    assert elapsed < 3 + 5
    assert _outputs(tmp_path) == []


def test_a_lost_scheduler_is_one_line_and_resume_finishes_on_a_fresh_cluster(processes, tmp_path):
    expected = _reference(tmp_path)
    address, scheduler, _ = processes.cluster(2)
    _slow(address)
    target = tmp_path / "w.npy"
    job = _vsgen([*JOB, "-o", str(target), "--scheduler", address, "--resume"])
    _wait_for_temporary(job, tmp_path)
    time.sleep(2.0)
    processes.kill(scheduler)
    killed = time.monotonic()
    _, stderr = job.communicate(timeout=60)
    elapsed = time.monotonic() - killed
    print(f"failed {elapsed:.2f} s after the scheduler was killed")
    assert job.returncode == 1
    line = _one_error_line(stderr)
    assert "lost the Dask scheduler" in line and "--resume" in line, line
    done = int(line.split(" of ")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 0 < done < TASKS and f"of {TASKS} tasks done" in line, line
    assert elapsed < 15
    kept = _temporaries(tmp_path)
    assert len(kept) == 2 and kept[1] == kept[0] + ".journal", kept
    assert ".w.npy.vsgen-resume-" in kept[0]
    assert not target.exists()

    fresh, _, _ = processes.cluster(2)
    finished = _run([*JOB, "-o", str(target), "--scheduler", fresh, "--resume", "--quiet"])
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == ""
    assert target.read_bytes() == expected
    assert _outputs(tmp_path) == ["w.npy"]


def test_without_resume_a_lost_scheduler_removes_the_temporary(processes, tmp_path):
    address, scheduler, _ = processes.cluster(1)
    _slow(address)
    target = tmp_path / "w.zarr"
    job = _vsgen([*JOB, "-o", str(target), "--scheduler", address, "--seed", "2"])
    _wait_for_temporary(job, tmp_path)
    time.sleep(1.0)
    processes.kill(scheduler)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 1
    line = _one_error_line(stderr)
    assert "lost the Dask scheduler" in line and "--resume" not in line, line
    assert _outputs(tmp_path) == []


def test_a_refused_address_is_one_line_within_5_s(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = _run(["--shape", "8,8", "-o", str(tmp_path / "w.npy"), "--scheduler", address])
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert line == f"Error: cannot reach the Dask scheduler {address}: connection refused"
    assert elapsed < 5
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize(
    ("kind", "data", "answer"),
    [
        ("silent", b"", "sent no Dask handshake within 2 s"),
        ("echo", b"", "sent no Dask handshake within 2 s"),
        ("http", b"", "sent no Dask handshake within 2 s"),
        ("banner", b"HTTP/1.1 400 Bad Request\r\n\r\n", "answered 'HTTP/1.1 400 Bad Request'"),
        ("banner", b"\xff" * 8, "answered b'\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff'"),
        ("banner", (40).to_bytes(8, "little") + b"\x01" * 40, "answered b'(\\x00"),
        ("closing", b"", "closed the connection without a Dask handshake"),
    ],
)
def test_a_listener_that_is_not_dask_is_one_line_within_the_connect_timeout(
    tmp_path, kind, data, answer
):
    with Listener(kind, data) as listener:
        started = time.monotonic()
        done = _run(
            [
                "--shape",
                "8,8",
                "-o",
                str(tmp_path / "w.npy"),
                "--scheduler",
                listener.address,
                "--connect-timeout",
                "2",
            ]
        )
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert line.startswith(f"Error: {listener.address} is not a Dask scheduler: "), line
    assert answer in line, line
    assert elapsed < 2 + 5
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_connecting_is_answered_at_once(tmp_path, signum):
    with Listener("silent") as listener:
        job = _vsgen(
            [
                "--shape",
                "8,8",
                "-o",
                str(tmp_path / "w.npy"),
                "--scheduler",
                listener.address,
                "--connect-timeout",
                "60",
            ]
        )
        # Signalled once it is connected (not after a fixed sleep: a busy
        # machine may still be importing Dask then, before vsgen's handlers).
        _wait_for(lambda: listener.accepted or job.poll() is not None, what="the connection")
        time.sleep(0.5)
        assert job.poll() is None, job.communicate()
        job.send_signal(signum)
        signalled = time.monotonic()
        _, stderr = job.communicate(timeout=60)
        elapsed = time.monotonic() - signalled
    assert job.returncode == 1
    assert _one_error_line(stderr) == "Error: interrupted"
    assert elapsed < 1.0
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--scheduler", "local:100000000000000000000", "from 1 to 256"),
        ("--scheduler", "local:0", "from 1 to 256"),
        ("--scheduler", "tcp://127.0.0.1:99999999999999999999", "not a scheduler address"),
        ("--connect-timeout", "1e400", "--connect-timeout"),
        ("--cluster-timeout", "0", "--cluster-timeout"),
        ("--cluster-timeout", "1e300", "--cluster-timeout"),
    ],
)
def test_numeric_options_are_bounded_before_anything_is_made(tmp_path, option, value, says):
    args = ["--shape", "8,8", "-o", str(tmp_path / "w.npy"), option, value]
    if option != "--scheduler":
        args += ["--scheduler", "tcp://127.0.0.1:1"]
    started = time.monotonic()
    done = _run(args, timeout=60)
    assert done.returncode == 2, done.stderr
    assert says in _one_error_line(done.stderr)
    assert time.monotonic() - started < 10
    assert _outputs(tmp_path) == []


def test_ctrl_c_to_the_process_group_of_a_local_cluster_is_one_line(tmp_path):
    target = tmp_path / "w.npy"
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--shape",
            "16384,8192",
            "--seed",
            "1",
            "--chunks",
            "16,8192",  # 1,024 tasks on one worker: seconds on any machine
            "-o",
            str(target),
            "--scheduler",
            "local:1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_temporary(job, tmp_path, timeout=120)
        time.sleep(0.5)
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 1, stderr
    assert _one_error_line(stderr) == "Error: interrupted"
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_while_a_store_is_laid_out_for_the_cluster(processes, tmp_path, signum):
    """As without a cluster (tests/cli/test_interrupt.py): the layout of a million chunk
    files polls for the signal at every file, and the run ends within a second."""
    address, _, _ = processes.cluster(1)
    target = tmp_path / "w.zarr"
    args = ["--shape", "1024,1024", "--seed", "1", "--chunks", "1,1", "-o", str(target)]
    job = _vsgen([*args, "--scheduler", address])
    _wait_for_temporary(job, tmp_path)
    [temporary] = _temporaries(tmp_path)
    _wait_for(lambda: (tmp_path / temporary / "c" / "3").exists(), what="thousands of files")
    job.send_signal(signum)
    signalled = time.monotonic()
    _, stderr = job.communicate(timeout=120)
    elapsed = time.monotonic() - signalled
    print(f"exited {elapsed:.2f} s after the signal")
    assert job.returncode == 1
    assert _one_error_line(stderr) == "Error: interrupted"
    assert _outputs(tmp_path) == []
    assert elapsed < 1.0


def test_one_shard_is_written_by_both_workers_with_identical_bytes(processes, tmp_path):
    expected = tmp_path / "reference"
    args = ["--shape", "4096,1024", "--seed", "3", "--format", "safetensors-sharded"]
    done = _run([*args, "-o", str(expected), "--quiet"])
    assert done.returncode == 0, done.stderr
    address, _, _ = processes.cluster(2)
    _slow(address, 0.05)
    target = tmp_path / "cluster"
    with distributed.Client(address, timeout="30s") as client:
        with distributed.get_task_stream(client) as stream:
            done = _run([*args, "-o", str(target), "--chunks", "128,1024", "--scheduler", address])
        assert done.returncode == 0, done.stderr
        workers = {
            record["worker"] for record in stream.data if "vsgen-write" in str(record["key"])
        }
    assert len(workers) == 2, workers
    shards = sorted(os.listdir(target))
    assert shards == ["model-00001-of-00001.safetensors", "model.safetensors.index.json"]
    for name in shards:
        assert (target / name).read_bytes() == (expected / name).read_bytes()
    values = np.frombuffer((target / shards[0]).read_bytes()[-4096 * 1024 * 4 :], np.float32)
    assert values.size == 4096 * 1024 and np.isfinite(values).all()
