"""vsgen.dask's parts, in this process: addresses and timeouts, the probe of what
answers at an address, waiting without holding a signal, the cluster's health, task
results and progress, the default client, connecting.

Fast (no worker processes but an in-process cluster for the few tests that need
one), so that the mutation run of vsgen/dask.py can use them (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import errno
import struct
import threading
import time

import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
msgpack = pytest.importorskip("msgpack")

from dask_processes import Listener, free_port  # noqa: E402

import vsgen  # noqa: E402
from vsgen import dask as vsgen_dask  # noqa: E402
from vsgen.blockwrite import TaskResult  # noqa: E402
from vsgen.dask import ClusterError  # noqa: E402


def handshake(message: object = None, frames: list[bytes] | None = None) -> bytes:
    """Bytes shaped as a Dask scheduler's first message (what the probe reads)."""
    if frames is None:
        payload = {"compression": None, "python": [3, 11, 7], "pickle-protocol": 5}
        frames = [msgpack.packb(payload if message is None else message)]
    body = struct.pack("<Q", len(frames)) + b"".join(struct.pack("<Q", len(f)) for f in frames)
    body += b"".join(frames)
    return struct.pack("<Q", len(body)) + body


# --- addresses and numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local:3", ("local", 3)),
        ("LOCAL:2", ("local", 2)),
        (" local:0001 ", ("local", 1)),
        ("local:256", ("local", 256)),
        ("tcp://127.0.0.1:8786", ("tcp://127.0.0.1:8786", None)),
        ("127.0.0.1:8786", ("127.0.0.1:8786", None)),
        ("tls://scheduler:8786", ("tls://scheduler:8786", None)),
        ("tcp://[::1]:8786", ("tcp://[::1]:8786", None)),
    ],
)
def test_scheduler_addresses(text, expected):
    assert vsgen_dask.parse_scheduler(text) == expected


def test_local_alone_is_one_worker_per_usable_cpu():
    from vsgen.streams import usable_cpus

    assert vsgen_dask.parse_scheduler("local") == ("local", usable_cpus())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "needs an address"),
        ("   ", "needs an address"),
        ("local:0", "from 1 to 256"),
        ("local:257", "from 1 to 256"),
        ("local:100000000000000000000", "from 1 to 256"),
        ("local:٣", "from 1 to 256"),
        ("local:-1", "from 1 to 256"),
        ("local:1.5", "from 1 to 256"),
        ("tcp://host", "not a scheduler address"),
        ("tcp://host:", "not a scheduler address"),
        ("tcp://:8786", "not a scheduler address"),
        ("tcp://host:65536", "not a scheduler address"),
        ("tcp://host:99999999999999999999", "not a scheduler address"),
        ("tcp://host:８７８６", "not a scheduler address"),
        ("host", "not a scheduler address"),
    ],
)
def test_malformed_schedulers_are_refused_before_anything_is_made(text, says):
    with pytest.raises(ValueError, match=says) as raised:
        vsgen_dask.parse_scheduler(text)
    assert len(str(raised.value)) < 200


def test_tcp_addresses_give_host_and_port():
    assert vsgen_dask._tcp_address("tcp://example.org:8786") == ("example.org", 8786)
    assert vsgen_dask._tcp_address("TCP://example.org:1") == ("example.org", 1)
    assert vsgen_dask._tcp_address("example.org:65535") == ("example.org", 65535)
    assert vsgen_dask._tcp_address("tcp://[::1]:0") == ("::1", 0)
    assert vsgen_dask._tcp_address("ucx://example.org:8786") is None


@pytest.mark.parametrize("value", [0.001, 1, 2.5, 86400])
def test_timeouts_within_range(value):
    assert vsgen_dask.check_timeout("connect_timeout", value) == float(value)
    assert isinstance(vsgen_dask.check_timeout("connect_timeout", value), float)


@pytest.mark.parametrize("value", [0, -1, 86400.5, float("inf"), float("nan"), True, "3", None])
def test_timeouts_out_of_range_name_the_argument(value):
    with pytest.raises(ValueError, match=r"^Argument `cluster_timeout` must be a number") as raised:
        vsgen_dask.check_timeout("cluster_timeout", value)
    assert f"Received: cluster_timeout={str(value)[:40]}" in str(raised.value)


def test_the_defaults_are_documented_in_the_help():
    from click.testing import CliRunner

    from vsgen.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["sample", "--help"]).output.split())
    assert vsgen_dask.CONNECT_TIMEOUT == 10 and "handshake; also how long" in text
    assert "stopped answering. [10]" in text
    assert vsgen_dask.CLUSTER_TIMEOUT == 60 and "before it fails. [60]" in text


# --- the probe ---------------------------------------------------------------------------


def test_the_probe_accepts_what_a_dask_scheduler_sends(client):
    vsgen_dask.probe(client.scheduler.address, 5)


def test_the_probe_leaves_other_transports_to_dask():
    vsgen_dask.probe("inproc://nowhere", 0.1)


def test_a_refused_connection():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError) as raised:
        vsgen_dask.probe(address, 5)
    assert raised.value.errno == errno.ECONNREFUSED
    assert str(raised.value) == (
        f"[Errno {errno.ECONNREFUSED}] cannot reach the Dask scheduler {address}: "
        "connection refused"
    )


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (handshake(), None),
        (handshake(frames=[msgpack.packb({"pickle-protocol": 5}), b"more"]), None),
        (b"HTTP/1.1 400 Bad Request\r\nServer: x\r\n\r\n", "answered 'HTTP/1.1 400 Bad Request'"),
        (b"\xff" * 8, "answered b'\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff'"),
        (struct.pack("<Q", 15) + b"x" * 15, "answered b'\\x0f"),
        (struct.pack("<Q", 16) + b"\x00" * 16, "answered b'\\x10"),
        (struct.pack("<Q", 70000) + b"x" * 8, "answered b'p\\x11\\x01"),
        (handshake(frames=[]), "answered"),
        (handshake(frames=[b"x"] * 17), "answered"),
        (handshake(message=["not", "a", "map"]), "answered"),
        (handshake(message={"python": [3]}), "answered"),
        (handshake(frames=[b"\xc1"]), "answered"),
        (handshake(message={"pickle_protocol": 5}), "answered"),
    ],
)
def test_the_probe_reads_only_a_dask_handshake(data, says):
    with Listener("banner", data) as listener:
        if says is None:
            vsgen_dask.probe(listener.address, 5)
            return
        with pytest.raises(ClusterError) as raised:
            vsgen_dask.probe(listener.address, 5)
    assert says in str(raised.value)
    assert raised.value.errno == errno.EPROTO
    assert str(raised.value).startswith(
        f"[Errno {errno.EPROTO}] {listener.address} is not a Dask scheduler: "
    )


def test_frame_lengths_must_add_up():
    good = handshake()
    body = bytearray(good[8:])
    struct.pack_into("<Q", body, 8, struct.unpack_from("<Q", body, 8)[0] + 1)
    with pytest.raises(ClusterError, match="is not a Dask scheduler"):
        vsgen_dask._check_handshake("tcp://x:1", good[:8] + bytes(body))
    vsgen_dask._check_handshake("tcp://x:1", good)


def test_a_handshake_that_announces_more_frames_than_it_holds():
    body = struct.pack("<QQ", 3, 5)
    with pytest.raises(ClusterError):
        vsgen_dask._check_handshake("tcp://x:1", struct.pack("<Q", len(body)) + body)


@pytest.mark.parametrize("kind", ["silent", "echo", "http"])
def test_a_silent_peer_is_reported_within_the_timeout(kind):
    with Listener(kind) as listener:
        started = time.monotonic()
        with pytest.raises(ClusterError, match="sent no Dask handshake within 0.3 s") as raised:
            vsgen_dask.probe(listener.address, 0.3)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3
    assert raised.value.errno == errno.EPROTO
    assert str(raised.value) == (
        f"[Errno {errno.EPROTO}] {listener.address} is not a Dask scheduler: it accepted the "
        "connection but sent no Dask handshake within 0.3 s (the connect timeout)"
    )


def test_a_peer_that_closes_at_once():
    with (
        Listener("closing") as listener,
        pytest.raises(ClusterError, match="closed the connection"),
    ):
        vsgen_dask.probe(listener.address, 5)


def test_a_handshake_sent_in_pieces_is_read_whole():
    data = handshake()

    class Trickle(Listener):
        def _talk(self, connection):
            for byte in data:
                connection.sendall(bytes([byte]))
                time.sleep(0.001)
            time.sleep(1)

    with Trickle("banner") as listener:
        vsgen_dask.probe(listener.address, 5)


def test_the_probe_answers_a_cancellation_at_once():
    with Listener("silent") as listener:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            vsgen_dask.probe(
                listener.address, 60, cancelled=lambda: time.monotonic() > started + 0.2
            )
        assert time.monotonic() - started < 1


def test_an_unresolvable_name():
    address = "tcp://no-such-host.invalid:8786"
    with pytest.raises(ClusterError) as raised:
        vsgen_dask.probe(address, 5)
    assert str(raised.value).startswith(
        f"[Errno {errno.ECONNREFUSED}] cannot reach the Dask scheduler {address}: "
        "cannot resolve 'no-such-host.invalid': "
    )


def test_a_name_that_resolves_too_slowly(monkeypatch):
    import socket

    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: release.wait(10))
    address = "tcp://slow-resolver.invalid:8786"
    try:
        with pytest.raises(ClusterError) as raised:
            vsgen_dask.probe(address, 0.2)
    finally:
        release.set()
    assert str(raised.value) == (
        f"[Errno {errno.ECONNREFUSED}] cannot reach the Dask scheduler {address}: "
        "no answer within 0.2 s (the connect timeout)"
    )


def test_a_peer_that_resets_the_connection():
    import socket

    class Resetting(Listener):
        def _talk(self, connection):
            # Once the probe waits for the handshake (a reset at once can reach it
            # while it is still connecting: "cannot reach"), close with a zero
            # linger time, which sends a reset rather than an orderly close.
            time.sleep(1.0)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    with Resetting("banner") as listener, pytest.raises(ClusterError) as raised:
        vsgen_dask.probe(listener.address, 5)
    assert str(raised.value) == (
        f"[Errno {errno.EPROTO}] {listener.address} is not a Dask scheduler: "
        "the connection failed: Connection reset by peer"
    )


def test_shown_bytes():
    assert vsgen_dask._shown(b"SSH-2.0-OpenSSH\r\nrest") == "'SSH-2.0-OpenSSH'"
    assert vsgen_dask._shown(b"\x00abc") == "b'\\x00abc'"
    assert vsgen_dask._shown(b"") == "b''"
    assert vsgen_dask._shown(b"x" * 40) == repr("x" * 32)
    assert vsgen_dask._shown(b"caf\xc3\xa9 au lait") == "b'caf\\xc3\\xa9 au lait'"


# --- waiting -----------------------------------------------------------------------------


def test_polled_returns_what_the_call_returns_and_raises_what_it_raises():
    assert vsgen_dask._polled(lambda: 42, 5) == 42
    with pytest.raises(ZeroDivisionError):
        vsgen_dask._polled(lambda: 1 / 0, 5)


def test_polled_gives_up_after_the_timeout_and_disposes_of_a_late_result():
    late: list[str] = []
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "made"

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer within 0.2 s"):
        vsgen_dask._polled(slow, 0.2, on_late=late.append)
    assert 0.2 <= time.monotonic() - started < 2
    release.set()
    deadline = time.monotonic() + 5
    while not late and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late == ["made"]


def test_polled_stops_when_cancelled():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        vsgen_dask._polled(lambda: release.wait(10), None, cancelled=lambda: True)
    assert time.monotonic() - started < 1
    release.set()


def test_polled_answers_the_callers_cancellation_block():
    from vsgen.formats.atomic import cancellation

    release = threading.Event()
    with cancellation(lambda: True), pytest.raises(KeyboardInterrupt):
        vsgen_dask._polled(lambda: release.wait(10), None)
    release.set()


def test_a_result_that_comes_just_as_the_wait_gives_up_is_disposed_of():
    late: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        vsgen_dask._polled(lambda: time.sleep(0.1) or 7, None, lambda: True, late.append)
    time.sleep(0.3)
    assert late == [7]


# --- the cluster's health ------------------------------------------------------------------


class FakeScheduler:
    def __init__(self, answers: list, address: str = "tcp://10.0.0.1:8786") -> None:
        self.answers = answers
        self.address = address
        self.asked = 0

    async def identity(self, n_workers: int = -1) -> dict:
        self.asked += 1
        answer = self.answers.pop(0) if self.answers else None
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, Exception):
            raise answer
        return {"n_workers": answer}


class FakeLoop:
    def __init__(self) -> None:
        self.asyncio_loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.asyncio_loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.asyncio_loop.call_soon_threadsafe(self.asyncio_loop.stop)
        self.thread.join(5)


class FakeClient:
    def __init__(self, answers: list) -> None:
        self.status = "running"
        self.scheduler = FakeScheduler(answers)
        self.loop = FakeLoop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settle(health) -> None:
    """Wait until the question in flight is answered."""
    deadline = time.monotonic() + 5
    while health._question is not None and not health._question.done():
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.fixture
def fake():
    made: list[FakeClient] = []

    def make(answers):
        client = FakeClient(answers)
        made.append(client)
        return client

    yield make
    for client in made:
        client.loop.stop()


def test_health_fails_after_the_cluster_timeout_without_workers(fake):
    client, clock = fake([2, 0, 0, 0, 0]), Clock()
    health = vsgen_dask._Health(client, 3, 10, clock)
    health.check()  # asks
    settle(health)
    clock.now += 0.5
    health.check()  # 2 workers; asks again
    settle(health)
    clock.now += 0.5
    health.check()  # 0 workers since the question of 1000.5
    assert health._without_workers == 1000.5
    for _ in range(2):
        settle(health)
        clock.now += 0.5
        health.check()
    settle(health)
    clock.now = 1000.5 + 2.99
    health.check()
    clock.now = 1000.5 + 3
    with pytest.raises(ClusterError) as raised:
        health.check()
    assert raised.value.errno == errno.ETIMEDOUT
    assert str(raised.value).endswith(
        "the Dask cluster tcp://10.0.0.1:8786 has had no live worker for 3 s (the cluster timeout)"
    )


def test_health_forgives_a_cluster_whose_workers_come_back(fake):
    client, clock = fake([0, 0, 1, 0]), Clock()
    health = vsgen_dask._Health(client, 3, 10, clock)
    for _ in range(4):
        health.check()
        settle(health)
        clock.now += 1
    health.check()
    assert health._without_workers == 1003  # since the last zero, not the first
    clock.now = 1005.9
    health.check()
    clock.now = 1006.0
    with pytest.raises(ClusterError):
        health.check()


def test_health_asks_at_most_every_half_second(fake):
    client, clock = fake([1, 1, 1, 1]), Clock()
    health = vsgen_dask._Health(client, 60, 10, clock)
    health.check()
    settle(health)
    for _ in range(5):
        clock.now += 0.1
        health.check()
        settle(health)
    assert client.scheduler.asked == 2


def test_a_scheduler_whose_connection_closed_is_lost(fake):
    client = fake([1])
    health = vsgen_dask._Health(client, 60, 10, Clock())
    client.status = "connecting"
    with pytest.raises(ClusterError) as raised:
        health.check()
    assert raised.value.errno == errno.ECONNRESET
    assert str(raised.value).endswith(
        "lost the Dask scheduler tcp://10.0.0.1:8786: its connection closed"
    )


def test_a_scheduler_that_stops_answering_is_lost(fake):
    client, clock = fake(["hang"]), Clock()
    health = vsgen_dask._Health(client, 60, 10, clock)
    health.check()
    clock.now += 9.9
    health.check()
    clock.now += 0.1
    with pytest.raises(ClusterError, match="it has not answered for 10 s"):
        health.check()


def test_a_failed_question_is_asked_again(fake):
    client, clock = fake([OSError("busy"), 0]), Clock()
    health = vsgen_dask._Health(client, 60, 10, clock)
    health.check()
    settle(health)
    clock.now += 0.5
    health.check()
    assert health._without_workers is None
    settle(health)
    clock.now += 0.5
    health.check()
    assert health._without_workers == 1000.5


# --- results and progress ---------------------------------------------------------------


class FakeFuture:
    def __init__(self, status: str, outcome: object) -> None:
        self.status = status
        self.outcome = outcome

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class Healthy:
    def __init__(self, lost: bool = False) -> None:
        self.checked = 0
        self.is_lost = lost

    def check(self) -> None:
        self.checked += 1
        if self.is_lost:
            raise ClusterError(errno.ECONNRESET, "lost")


def test_a_finished_tasks_result():
    result = TaskResult(5, 7)
    assert vsgen_dask._result(FakeFuture("finished", result), Healthy()) is result


@pytest.mark.parametrize(
    "error", [OSError(28, "full"), FileNotFoundError(2, "gone"), ValueError("v")]
)
def test_a_workers_io_and_argument_errors_come_as_they_are(error):
    with pytest.raises(type(error)) as raised:
        vsgen_dask._result(FakeFuture("error", error), Healthy())
    assert raised.value is error


def test_other_task_errors_are_cluster_errors():
    health = Healthy()
    with pytest.raises(ClusterError) as raised:
        vsgen_dask._result(FakeFuture("error", RuntimeError("worker died")), health)
    assert str(raised.value) == (
        "[Errno 5] the cluster could not finish the job: RuntimeError: worker died"
    )
    assert health.checked == 1
    with pytest.raises(ClusterError, match="lost$"):
        vsgen_dask._result(FakeFuture("error", RuntimeError("x")), Healthy(lost=True))


def test_a_cancelled_task():
    health = Healthy()
    with pytest.raises(ClusterError, match="the cluster cancelled a task of the job"):
        vsgen_dask._result(FakeFuture("cancelled", None), health)
    assert health.checked == 1
    with pytest.raises(ClusterError, match="lost$"):
        vsgen_dask._result(FakeFuture("cancelled", None), Healthy(lost=True))


class Sized:
    def __init__(self, values: int) -> None:
        self.values = values


def test_progress_within_tasks_never_passes_a_tasks_size():
    progress = vsgen_dask._Progress([Sized(10), Sized(5)])
    progress.event((0.0, [0, 4]))
    progress.event((0.0, [0, 4]))
    progress.event((0.0, [0, 4]))  # 12 > 10: only 2 more
    assert progress.take() == 10
    assert progress.take() == 0
    progress.finish(0)
    progress.add(1, 3)
    progress.finish(1)
    assert progress.take() == 5
    for bad in ((0.0, [7, 1]), (0.0, "x"), (0.0, [0]), None, (0.0, [0, "a"])):
        progress.event(bad)
    assert progress.take() == 0


# --- on a cluster --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    """An in-process cluster (threads): fast to start, enough for these tests."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


def test_the_runner_reports_every_task_and_its_progress(client, tmp_path):
    job = vsgen_dask.tensor_job(vsgen.HeNormal(seed=1), (24, 6))
    progress: list[int] = []
    vsgen.blockwrite.write(
        job,
        str(tmp_path / "w.npy"),
        runner=vsgen_dask.ClusterRunner(client),
        chunks=(4, 6),
        on_progress=progress.append,
        resume=True,
    )
    assert sum(progress) == 24 * 6
    expected = job.arrays()["weight"]
    import numpy as np

    assert np.load(tmp_path / "w.npy").tobytes() == expected.tobytes()


def test_the_runner_hands_on_task_results(client):
    from vsgen.blockwrite import WriteTask

    class Constant:
        name = "c"

        def block(self, origin, shape, threads=1):
            import numpy as np

            return np.zeros(shape, np.float32)

    class Nowhere:
        block_shape = None
        path = "/nowhere"

        def write(self, origin, values):
            return None

    tasks = [WriteTask(((Constant(), Nowhere(), (i,), (3,)),), checksum=True) for i in range(4)]
    done: list = []
    vsgen_dask.ClusterRunner(client).run(tasks, None, None, lambda i, r: done.append((i, r)))
    assert sorted(i for i, _ in done) == [0, 1, 2, 3]
    import zlib

    assert {r for _, r in done} == {TaskResult(3, zlib.crc32(bytes(12)))}


def test_write_uses_the_current_client(client, tmp_path):
    job = vsgen_dask.tensor_job(vsgen.HeNormal(seed=2), (16, 4))
    with distributed.get_task_stream(client) as stream:
        vsgen_dask.write(job, str(tmp_path / "w.npy"), chunks=(4, 4))
    keys = [str(record["key"]) for record in stream.data]
    assert sum("vsgen-write" in key for key in keys) == 4


def test_without_a_client_write_runs_on_threads(monkeypatch, tmp_path):
    import distributed as module

    def no_client():
        raise ValueError("No clients found")

    monkeypatch.setattr(module, "default_client", no_client)
    assert vsgen_dask._default_client() is None
    job = vsgen_dask.tensor_job(vsgen.HeNormal(seed=2), (16, 4))
    vsgen_dask.write(job, str(tmp_path / "w.npy"))
    assert (tmp_path / "w.npy").exists()


def test_the_default_client_is_the_one_made_last(client):
    assert vsgen_dask._default_client() is client


def test_the_workers_check_what_they_see(client, tmp_path):
    health = vsgen_dask._Health(client, 60, 10)
    assert vsgen_dask._on_workers(client, health, sorted, [3, 1, 2]) == {
        address: [1, 2, 3] for address in client.scheduler_info()["workers"]
    }
    vsgen_dask._check_workers(client, str(tmp_path))
    vsgen_dask._check_workers(client, "s3://bucket/never/made")
    with pytest.raises(ClusterError, match="cannot see .* or in an object store"):
        vsgen_dask._check_workers(client, str(tmp_path / "missing" / "t"))


def test_a_worker_of_another_version_is_refused(client, monkeypatch, tmp_path):
    monkeypatch.setattr(vsgen_dask, "_worker_view", lambda temp, pid=0: ("0.0.1", True))
    with pytest.raises(ClusterError, match=r"runs vsgen 0\.0\.1, this client .*same version"):
        vsgen_dask._check_workers(client, str(tmp_path))


def test_connect_to_an_address(client):
    with vsgen_dask.connect(client.scheduler.address, connect_timeout=5) as connected:
        assert connected.scheduler_info()["workers"]
        assert connected.status == "running"
    assert connected.status == "closed"


def test_connect_refuses_bad_timeouts_before_connecting():
    with (
        pytest.raises(ValueError, match="connect_timeout"),
        vsgen_dask.connect("tcp://127.0.0.1:1", connect_timeout=0),
    ):
        pass
    with (
        pytest.raises(ValueError, match="cluster_timeout"),
        vsgen_dask.connect("tcp://127.0.0.1:1", cluster_timeout=-1),
    ):
        pass


def test_connect_to_a_scheduler_without_workers_fails_in_the_cluster_timeout():
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        started = time.monotonic()
        with (
            pytest.raises(ClusterError, match="no worker joined the Dask scheduler .* 0.5 s"),
            vsgen_dask.connect(empty.scheduler_address, cluster_timeout=0.5),
        ):
            pass
        assert time.monotonic() - started < 5


def test_worker_view_of_an_object_store():
    import os

    assert vsgen_dask._worker_view("s3://bucket/x") == (vsgen.__version__, True)
    assert vsgen_dask._worker_view("/no/such/path") == (vsgen.__version__, False)
    # memory:// is a process's own: seen by workers in the client's process only.
    assert vsgen_dask._worker_view("memory://x/y", os.getpid()) == (vsgen.__version__, True)
    assert vsgen_dask._worker_view("memory://x/y", os.getpid() + 1) == (vsgen.__version__, False)
    assert vsgen_dask._worker_view("nosuchscheme://x/y")[1] is False


# --- dask arrays, computed in this process ----------------------------------------------


def _computed(array):
    return array.compute(scheduler="sync")


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((10, 7), (3, 7)), ((10, 7), (4, 2)), ((9,), ((2, 7),)), ((), ()), ((5, 0), (2, 1))],
)
def test_sample_is_the_single_process_tensor_for_any_chunks(shape, chunks):
    import numpy as np

    initializer = vsgen.VarianceScaling(scale=2.0, seed=5)
    array = vsgen_dask.sample(initializer, shape, chunks=chunks)
    assert array.shape == shape and array.dtype == np.float32
    assert array.name.startswith("vsgen-")
    assert _computed(array).tobytes() == initializer(shape).tobytes()


def test_sample_takes_rows_fan_shape_and_dtype():
    initializer = vsgen.HeNormal(seed=3)
    array = vsgen_dask.sample(
        initializer, (8, 5), "float16", chunks=(3, 5), rows=(2, 6), fan_shape=(16, 5)
    )
    expected = initializer.sample((8, 5), "float16", rows=(2, 6), fan_shape=(16, 5))
    assert array.shape == (4, 5) and array.dtype == expected.dtype
    assert _computed(array).tobytes() == expected.tobytes()


def test_blocks_of_different_tensors_have_different_names():
    first = vsgen_dask.sample(vsgen.HeNormal(seed=1), (6, 4), chunks=(3, 4))
    again = vsgen_dask.sample(vsgen.HeNormal(seed=1), (6, 4), chunks=(3, 4))
    assert first.name == again.name
    for other in (
        vsgen_dask.sample(vsgen.HeNormal(seed=2), (6, 4), chunks=(3, 4)),
        vsgen_dask.sample(vsgen.HeNormal(seed=1), (6, 4), chunks=(2, 4)),
        vsgen_dask.sample(vsgen.HeNormal(seed=1), (6, 4), "float64", chunks=(3, 4)),
        vsgen_dask.sample(vsgen.HeNormal(seed=1), (6, 4), chunks=(3, 4), fan_shape=(12, 4)),
        vsgen_dask.sample(vsgen.HeUniform(seed=1), (6, 4), chunks=(3, 4)),
        vsgen_dask.sample(vsgen.RandomNormal(0.5, seed=1), (6, 4), chunks=(3, 4)),
    ):
        assert other.name != first.name


def test_auto_chunks_are_whole_rows_of_the_dask_chunk_size():
    import dask
    import dask.array
    import numpy as np

    with dask.config.set({"array.chunk-size": "1KiB"}):
        array = vsgen_dask.sample(vsgen.HeNormal(seed=1), (100, 64), "float32")
        default = vsgen_dask.sample(vsgen.HeNormal(seed=1), (100, 64))
        # Dask's own "auto" would cut square-ish tiles here.
        dasks_own = dask.array.core.normalize_chunks("auto", (100, 64), dtype=np.float32)
    assert array.chunks[1] == (64,)  # whole rows of 256 bytes
    assert set(array.chunks[0][:-1]) == {4}  # 4 rows = 1 KiB
    assert default.chunks == array.chunks
    assert dasks_own[1] != (64,)
    assert _computed(array).tobytes() == vsgen.HeNormal(seed=1)((100, 64)).tobytes()


def test_chunks_that_dask_completes_itself():
    import dask

    with dask.config.set({"array.chunk-size": "1KiB"}):
        array = vsgen_dask.sample(vsgen.HeNormal(seed=1), (8, 512), chunks=(-1, "auto"))
    assert array.chunks[0] == (8,) and sum(array.chunks[1]) == 512
    assert _computed(array).tobytes() == vsgen.HeNormal(seed=1)((8, 512)).tobytes()


def test_arrays_of_different_values_have_different_names():
    from vsgen import modelspec

    spec = {
        "seed": 1,
        "rules": {"a.bias": "zeros", "b.bias": "ones"},
        "tensors": {"a.bias": [6], "b.bias": [6]},
    }
    arrays = vsgen_dask.model(spec, chunks=3)
    assert arrays["a.bias"].name != arrays["b.bias"].name
    expected = modelspec.build_job(modelspec.parse_spec(spec)).arrays()
    computed = dask_compute(arrays)
    assert computed["b.bias"].tobytes() == expected["b.bias"].tobytes()
    top = vsgen_dask.sample(vsgen.HeNormal(seed=1), (6, 4), chunks=(3, 4), rows=(0, 3))
    bottom = vsgen_dask.sample(vsgen.HeNormal(seed=1), (6, 4), chunks=(3, 4), rows=(3, 6))
    assert top.name != bottom.name
    assert _computed(bottom).tobytes() == vsgen.HeNormal(seed=1)((6, 4))[3:].tobytes()


def dask_compute(arrays):
    import dask

    return dict(zip(arrays, dask.compute(*arrays.values(), scheduler="sync"), strict=True))


def test_model_arrays_by_name_with_the_spec_seeds():
    from vsgen import modelspec

    spec = {
        "seed": 11,
        "layout": "torch",
        "rules": {"*.bias": "zeros"},
        "tensors": {
            "fc.weight": [12, 5],
            "fc.bias": [12],
            "emb": {"shape": [4, 3], "dtype": "float16"},
        },
    }
    arrays = vsgen_dask.model(spec, chunks=4)
    expected = modelspec.build_job(modelspec.parse_spec(spec)).arrays()
    assert list(arrays) == list(expected)
    for name, values in expected.items():
        assert _computed(arrays[name]).tobytes() == values.tobytes(), name
    seeded = vsgen_dask.model(spec, seed=12, chunks=4)
    assert _computed(seeded["fc.weight"]).tobytes() != expected["fc.weight"].tobytes()
    doubled = vsgen_dask.model(spec, dtype="float64", chunks=4)
    assert doubled["fc.weight"].dtype.name == "float64"
    # Every keyword is model_job's, as --spec's options are.
    plain = {"seed": 11, "tensors": {"dense.kernel": [12, 5]}}
    reference = modelspec.build_job(modelspec.parse_spec(plain)).arrays()["dense.kernel"]
    for keywords in (
        {"layout": "torch"},
        {"init": {"preset": "he_uniform"}},
        {"rules": {"dense.kernel": "ones"}},
    ):
        weight = _computed(vsgen_dask.model(plain, chunks=4, **keywords)["dense.kernel"])
        assert weight.tobytes() != reference.tobytes(), keywords
    ones = _computed(vsgen_dask.model(plain, rules={"dense.kernel": "ones"})["dense.kernel"])
    assert (ones == 1).all()
    with pytest.raises(ValueError, match="sequential"):
        vsgen_dask.model(spec, stream="keras", chunks=4)
    whole = vsgen_dask.model(spec)  # "auto" chunks: whole rows
    assert whole["fc.weight"].chunks == ((12,), (5,))


def test_a_sequential_stream_is_refused_for_arrays():
    with pytest.raises(ValueError, match="sequential"):
        vsgen_dask.sample(vsgen.HeNormal(seed=1, stream="keras"), (4, 4), chunks=(2, 2))


# --- local clusters ----------------------------------------------------------------------


def test_local_processes_start_answer_and_stop(tmp_path):
    import os

    cluster = vsgen_dask.LocalProcesses(1)
    try:
        directory = os.path.dirname(cluster.scheduler_file)
        address = cluster.address(60)
        assert address.startswith("tcp://127.0.0.1:")
        vsgen_dask.probe(address, 10)
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            info = client.scheduler_info()
            assert len(info["workers"]) == 1
            (worker,) = info["workers"].values()
            assert worker["nthreads"] == 1 and worker["host"] == "127.0.0.1"
            pids = [os.getpgid(p.pid) for p in cluster._processes]
            assert all(pid != os.getpgrp() for pid in pids)  # sessions of their own
    finally:
        cluster.close()
    assert all(p.poll() is not None for p in cluster._processes)
    assert not os.path.exists(directory)


def test_local_processes_that_end_early_are_reported():
    import signal

    cluster = vsgen_dask.LocalProcesses(1)
    try:
        for process in cluster._processes:
            process.send_signal(signal.SIGKILL)
            process.wait(30)
        with pytest.raises(ClusterError, match="the local Dask cluster did not start: it exited"):
            cluster.address(60)
    finally:
        cluster.close()


def test_local_processes_that_take_too_long_are_reported():
    cluster = vsgen_dask.LocalProcesses(1)
    try:
        with pytest.raises(ClusterError, match="did not start: not within 0.01 s"):
            cluster.address(0.01)
    finally:
        cluster.close()


def test_connect_to_a_local_cluster():
    with vsgen_dask.connect("local:1", connect_timeout=30) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.run(lambda: 6 * 7) == {a: 42 for a in client.scheduler_info()["workers"]}


def test_local_cluster_listens_on_127_0_0_1_only():
    import logging

    # No workers started here (a worker process would import this tree anew): the
    # specification of those it would start says what they are.
    with vsgen_dask.local_cluster(0) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        assert cluster.dashboard_link != "http://127.0.0.1:8787/status"
        options = cluster.new_spec["options"]
        assert cluster.new_spec["cls"] is distributed.Nanny
        assert options["nthreads"] == 1 and options["host"] == "127.0.0.1"
        assert options["silence_logs"] == logging.CRITICAL
    with vsgen_dask.local_cluster(0, quiet=False) as cluster:
        assert cluster.new_spec["options"]["silence_logs"] is False


def test_forget_tells_the_workers_only_while_the_scheduler_answers(monkeypatch):
    from vsgen.formats import parallel

    calls: list[str] = []

    class Client:
        status = "running"

        def run(self, function, temp):
            calls.append((function.__name__, temp))
            return {}

    client = Client()
    runner = vsgen_dask.ClusterRunner(client)
    parallel._unsynced.add("/t/x")
    runner.forget("/t")
    assert calls == [("forget_written", "/t")] and "/t/x" not in parallel._unsynced
    client.status = "connecting"
    runner.forget("/t")
    assert len(calls) == 1


def test_forget_never_fails_and_never_hangs(monkeypatch):
    release = threading.Event()

    class Broken:
        status = "running"

        def run(self, function, temp):
            raise OSError("the scheduler went away")

    class Hanging:
        status = "running"

        def run(self, function, temp):
            release.wait(30)

    vsgen_dask.ClusterRunner(Broken()).forget("/t")
    monkeypatch.setattr(vsgen_dask, "CLOSE_SECONDS", 0.2)
    started = time.monotonic()
    vsgen_dask.ClusterRunner(Hanging()).forget("/t")
    assert time.monotonic() - started < 2
    release.set()


def test_the_runner_checks_its_timeouts():
    with pytest.raises(ValueError, match="cluster_timeout"):
        vsgen_dask.ClusterRunner(object(), cluster_timeout=0)
    with pytest.raises(ValueError, match="connect_timeout"):
        vsgen_dask.ClusterRunner(object(), connect_timeout=-1)
    runner = vsgen_dask.ClusterRunner(object(), 5, 7)
    assert (runner.cluster_timeout, runner.connect_timeout) == (5.0, 7.0)


def test_an_interrupted_job_in_an_object_store_leaves_no_object(client, monkeypatch):
    """Cancelling does not stop a task a worker runs; the job waits for them before it
    removes what it wrote, so no chunk comes after the removal."""
    import fsspec

    from vsgen.blockwrite import WriteTask

    original = WriteTask.__call__

    def slow(self, threads=1, report=None):
        time.sleep(0.3)
        return original(self, threads, report)

    monkeypatch.setattr(WriteTask, "__call__", slow)
    job = vsgen_dask.tensor_job(vsgen.HeNormal(seed=1), (64, 8))
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        vsgen_dask.write(
            job,
            "memory://vsgen-drain/w.zarr",
            client=client,
            chunks=(4, 8),
            on_progress=seen.append,
            cancelled=lambda: bool(seen),
        )
    time.sleep(1.0)
    memory = fsspec.filesystem("memory")
    assert not memory.exists("/vsgen-drain/w.zarr") or memory.find("/vsgen-drain/w.zarr") == []


def test_until_idle_waits_for_the_jobs_running_tasks_only():
    from types import SimpleNamespace

    class Task:
        def __init__(self, key: str) -> None:
            self.key = key

    mine = Task("vsgen-write-abc-3")
    other = Task("vsgen-write-xyz-1")
    worker = SimpleNamespace(state=SimpleNamespace(executing={mine, other}))

    def finish_later():
        time.sleep(0.3)
        worker.state.executing.discard(mine)

    started = time.monotonic()
    threading.Thread(target=finish_later).start()
    left = asyncio.run(vsgen_dask._until_idle("vsgen-write-abc", 5, dask_worker=worker))
    assert left == 0 and 0.25 < time.monotonic() - started < 3
    worker.state.executing.add(mine)
    started = time.monotonic()
    assert asyncio.run(vsgen_dask._until_idle("vsgen-write-abc", 0.2, dask_worker=worker)) == 1
    assert time.monotonic() - started < 2
    assert asyncio.run(vsgen_dask._until_idle("vsgen-write-q", 5, dask_worker=worker)) == 0


def test_forget_finishes_telling_the_workers_even_when_interrupted():
    # Cleaning up after an interrupt is not interruptible: with the caller's
    # cancellation already set, forget still waits for the workers' answer.
    from vsgen.formats.atomic import cancellation

    calls: list[str] = []

    class Slow:
        status = "running"

        def run(self, function, temp):
            time.sleep(0.3)
            calls.append(temp)
            return {}

    with cancellation(lambda: True):
        vsgen_dask.ClusterRunner(Slow()).forget("/t")
    assert calls == ["/t"]


@pytest.mark.parametrize("failure", [RuntimeError("closed twice"), KeyboardInterrupt()])
def test_close_quietly_swallows_any_failure_of_close(failure):
    closed: list[bool] = []

    class Closeable:
        def close(self):
            closed.append(True)
            raise failure

    vsgen_dask._close_quietly(Closeable())
    assert closed == [True]


def test_to_dask_names_tensors_apart():
    # Two tensors of one plan under different names are different keys of a graph.
    from vsgen.blockwrite import BlockSource

    plan = vsgen.HeNormal(seed=1).plan((8, 4))
    first = vsgen_dask.to_dask(BlockSource.from_plan("a", plan), (4, 4))
    again = vsgen_dask.to_dask(BlockSource.from_plan("a", plan), (4, 4))
    other = vsgen_dask.to_dask(BlockSource.from_plan("b", plan), (4, 4))
    assert first.name == again.name and first.name != other.name
    assert (first.compute() == other.compute()).all()


def unstarted_local_processes(tmp_path, processes=()) -> vsgen_dask.LocalProcesses:
    """A LocalProcesses whose scheduler file and processes the test provides."""
    cluster = object.__new__(vsgen_dask.LocalProcesses)
    cluster.workers = 1
    cluster._directory = str(tmp_path / "cluster")
    cluster.scheduler_file = str(tmp_path / "scheduler.json")
    cluster._processes = list(processes)
    return cluster


@pytest.mark.parametrize(
    "content",
    [b"", b'{"addr', b"{}", b"[]", b'{"address": 5}', b'{"address": ""}', b"\xff\xfe"],
    ids=["empty", "half-written", "no address", "a list", "a number", "empty address", "binary"],
)
def test_a_scheduler_file_not_yet_written_is_waited_for(tmp_path, content):
    (tmp_path / "scheduler.json").write_bytes(content)
    cluster = unstarted_local_processes(tmp_path)
    started = time.monotonic()
    with pytest.raises(ClusterError) as raised:
        cluster.address(0.2)
    assert str(raised.value).endswith("the local Dask cluster did not start: not within 0.2 s")
    assert time.monotonic() - started >= 0.2
    (tmp_path / "scheduler.json").write_bytes(b'{"address": "tcp://127.0.0.1:4"}')
    assert cluster.address(0.2) == "tcp://127.0.0.1:4"


def test_a_local_scheduler_that_exited_is_named_by_its_status(tmp_path):
    import subprocess
    import sys

    ended = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    ended.wait(60)
    cluster = unstarted_local_processes(tmp_path, [ended])
    with pytest.raises(ClusterError) as raised:
        cluster.address(60)
    assert str(raised.value).endswith("the local Dask cluster did not start: it exited with 3")


def test_closing_local_processes_lets_them_end_on_sigterm_first(tmp_path):
    import subprocess
    import sys

    # A process that takes its time over SIGTERM (as a worker shutting down does)
    # ends by itself, with its own status, rather than by SIGKILL.
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), sys.exit(7)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout.readline() == b"ready\n"
    (tmp_path / "cluster").mkdir()
    cluster = unstarted_local_processes(tmp_path, [process])
    cluster.close()
    process.stdout.close()
    assert process.returncode == 7
    assert not (tmp_path / "cluster").exists()
