"""Real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 for the tests.

Each process runs in its own session (process group), so that a test can kill a
whole ``dask worker`` (its nanny and the worker process) or the scheduler at once,
as a machine that goes away would; every process still running is killed when the
fixture ends. Addresses come from a scheduler file; nothing listens beyond
127.0.0.1, and nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Seconds a process may take to start (a loaded machine starts Python slowly).
START_SECONDS = 60


class DaskProcesses:
    """Starts schedulers and workers; :meth:`stop` kills every one still running."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen] = []
        self._count = 0

    def _start(self, arguments: list[str]) -> subprocess.Popen:
        self._count += 1
        log = open(self.directory / f"dask-{self._count}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def scheduler(self) -> tuple[str, subprocess.Popen]:
        """A new scheduler on 127.0.0.1 (a free port, no dashboard): its address."""
        scheduler_file = self.directory / f"scheduler-{self._count + 1}.json"
        process = self._start(
            [
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ]
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if scheduler_file.exists():
                try:
                    address = json.loads(scheduler_file.read_text())["address"]
                except (ValueError, KeyError):
                    address = None
                if address:
                    return address, process
            if process.poll() is not None:
                raise RuntimeError(f"dask scheduler exited with {process.returncode}")
            time.sleep(0.05)
        raise RuntimeError("dask scheduler did not start")

    def workers(self, address: str, count: int = 1, nanny: bool = True) -> subprocess.Popen:
        """``dask worker`` with ``count`` worker processes of one thread each."""
        arguments = [
            "distributed.cli.dask_worker",
            address,
            "--nthreads",
            "1",
            "--nworkers",
            str(count),
            "--host",
            "127.0.0.1",
            "--no-dashboard",
        ]
        if not nanny:
            arguments.append("--no-nanny")
        return self._start(arguments)

    def cluster(self, workers: int = 2) -> tuple[str, subprocess.Popen, subprocess.Popen]:
        """A scheduler and one ``dask worker`` of ``workers`` processes, all joined."""
        address, scheduler = self.scheduler()
        worker = self.workers(address, workers)
        wait_for_workers(address, workers)
        return address, scheduler, worker

    @staticmethod
    def kill(process: subprocess.Popen, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` to the process's whole group (a nanny and its worker)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        if signum == signal.SIGKILL:
            process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)
            else:
                # The group may outlive its leader (a worker whose nanny died).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)


def wait_for_workers(address: str, count: int, timeout: float = START_SECONDS) -> None:
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(count, timeout=timeout)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (taken and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener:
    """A TCP listener on 127.0.0.1 that is not a Dask scheduler. ``kind``:

    * ``silent``: accepts and never sends anything;
    * ``echo``: sends back what it receives;
    * ``http``: answers every request with an HTTP 400, as a web server would;
    * ``banner``: sends ``data`` at once (a service that greets, or huge lengths);
    * ``closing``: closes every connection at once.
    """

    def __init__(self, kind: str, data: bytes = b"") -> None:
        self.kind = kind
        self.data = data
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._connections.append(connection)
            threading.Thread(target=self._talk, args=(connection,), daemon=True).start()

    def _talk(self, connection: socket.socket) -> None:
        connection.settimeout(0.1)
        if self.kind == "closing":
            connection.close()
            return
        if self.kind == "banner":
            connection.sendall(self.data)
        while not self._stop.is_set():
            try:
                data = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if self.kind == "echo":
                connection.sendall(data)
            elif self.kind == "http":
                connection.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                connection.close()
                return

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        return len(self._connections)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for connection in self._connections:
            connection.close()
        self.sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()
