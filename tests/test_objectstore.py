"""Outputs in object stores, read back with no shared file system: Zarr stores and
sharded safetensors written to S3 (a moto server the tests start on 127.0.0.1, and
stop; nothing leaves the machine) and to ``memory://``; ``check``, ``--like``,
``--config-from`` and ``describe`` reading them; ``--force``, failures and hostile
objects. Bytes are compared with the same job written to local files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
zarr = pytest.importorskip("zarr")

import vsgen  # noqa: E402
from vsgen import blockwrite, objectstore  # noqa: E402
from vsgen.formats import readers  # noqa: E402
from vsgen.job import tensor_job  # noqa: E402
from vsgen.modelspec import build_job, parse_spec  # noqa: E402

pytestmark = [pytest.mark.required_in_ci]

SPEC = {
    "seed": 5,
    "layout": "torch",
    "rules": {"*.bias": "zeros", "ln.weight": "ones"},
    "tensors": {
        "embed.weight": [50, 24],
        "mlp.up.weight": [48, 24],
        "mlp.up.bias": [48],
        "ln.weight": [24],
        "mlp.down.weight": {"shape": [24, 48], "dtype": "bfloat16"},
    },
}
#: A fake key: moto accepts anything, and no real store is ever reached.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "vsgen-test-key",
    "AWS_SECRET_ACCESS_KEY": "vsgen-test-secret-do-not-print",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 (a free port), the environment pointing every
    client at it (subprocesses and Dask workers inherit it); stopped at the end."""
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {key: os.environ.get(key) for key in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    try:
        yield fs
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3, request):
    """A fresh bucket per test (named after it), removed afterwards."""
    name = "vsgen-" + str(abs(hash(request.node.nodeid)))[:12]
    s3.mkdir(name)
    s3.invalidate_cache()
    yield name
    s3.invalidate_cache()
    for key in s3.find(name):
        s3.rm_file(key)
    s3.rmdir(name)


def model():
    return build_job(parse_spec(SPEC))


def local_tree(path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def remote_tree(fs, path: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {key[len(path) + 1 :]: fs.cat_file(key) for key in sorted(fs.find(path))}


def uploads(fs, bucket: str) -> list:
    return fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])


def vsgen_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vsgen", *args], capture_output=True, text=True, timeout=timeout
    )


# --- writing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name", "options"),
    [
        ("zarr", "m.zarr", {"chunks": (8, 24)}),
        ("zarr", "m.zarr", {}),
        ("safetensors-sharded", "ckpt", {"max_shard_size": 4000}),
        ("safetensors-sharded", "ckpt", {}),
    ],
)
def test_the_bytes_in_s3_equal_a_local_write(s3, bucket, tmp_path, fmt, name, options):
    job = model()
    blockwrite.write(job, str(tmp_path / name), fmt, **options)
    url = f"s3://{bucket}/{name}"
    blockwrite.write(job, url, fmt, **options)
    assert remote_tree(s3, f"{bucket}/{name}") == local_tree(tmp_path / name)
    assert uploads(s3, bucket) == []


def test_a_shard_is_uploaded_in_parts_written_by_tasks(s3, bucket, tmp_path, monkeypatch):
    """A 12 MiB shard in parts of 5 MiB (S3's smallest): three parts, each a task,
    completed at the commit; the object is the local shard, byte for byte."""
    monkeypatch.setattr(objectstore, "PART_BYTES", 5 << 20)
    job = tensor_job(vsgen.HeNormal(seed=1), (3072, 1024), name="w")
    chunks = (256, 1024)  # 1 MiB blocks
    blockwrite.write(job, str(tmp_path / "ckpt"), "safetensors-sharded", chunks=chunks)
    seen: list[int] = []

    class Counting(blockwrite.LocalRunner):
        def run(self, tasks, on_progress, cancelled, on_done=None):
            seen.extend(task.number for task in tasks)
            assert [len(task.blocks) for task in tasks] == [5, 5, 2]
            # Contiguous parts from the header on, every one but the last >= 5 MiB.
            assert tasks[0].start == 0 and tasks[0].prefix
            assert all(a.end == b.start for a, b in zip(tasks[:-1], tasks[1:], strict=True))
            assert tasks[-1].end == len(tasks[0].prefix) + 3072 * 1024 * 4
            assert all(task.end - task.start >= 5 << 20 for task in tasks[:-1])
            return super().run(tasks, on_progress, cancelled, on_done)

    url = f"s3://{bucket}/ckpt"
    blockwrite.write(job, url, "safetensors-sharded", chunks=chunks, runner=Counting(2))
    assert seen == [1, 2, 3]
    assert remote_tree(s3, f"{bucket}/ckpt") == local_tree(tmp_path / "ckpt")


def test_the_command_line_round_trip_in_s3(s3, bucket, tmp_path):
    """sample -o s3://..., then check, describe, --config-from and --like, each reading
    S3 only (a different process, no shared path)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    local = tmp_path / "local.zarr"
    done = vsgen_cli(["sample", "--spec", str(spec), "-o", str(local), "--quiet"])
    assert done.returncode == 0, done.stderr
    for url, fmt in (
        (f"s3://{bucket}/m.zarr", []),
        (f"s3://{bucket}/ckpt", ["--format", "safetensors-sharded"]),
    ):
        done = vsgen_cli(["sample", "--spec", str(spec), "-o", url, *fmt])
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        done = vsgen_cli(["check", url, "--name", "mlp.up.weight"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert "verdict: consistent" in done.stdout
        done = vsgen_cli(["check", url])
        assert done.returncode == 0, done.stdout + done.stderr
        again = tmp_path / f"again-{len(fmt)}.npy"
        done = vsgen_cli(
            ["sample", "--config-from", url, "--name", "embed.weight", "-o", str(again)]
        )
        assert done.returncode == 0, done.stderr
        group = zarr.open_group(str(local), mode="r")
        assert np.load(again).tobytes() == group["embed.weight"][...].tobytes()
        liked = tmp_path / f"liked-{len(fmt)}.safetensors"
        done = vsgen_cli(["sample", "--like", url, "--seed", "3", "-o", str(liked)])
        assert done.returncode == 0, done.stderr
        import ml_dtypes  # noqa: F401  (NumPy learns the name 'bfloat16' from it)
        import safetensors.numpy

        assert sorted(safetensors.numpy.load_file(str(liked))) == sorted(SPEC["tensors"])
        done = vsgen_cli(["describe", url, "--json"])
        assert done.returncode == 0, done.stderr
        assert {row["name"] for row in json.loads(done.stdout)} == set(SPEC["tensors"])


def test_zarr_python_reads_the_store_from_s3(s3, bucket):
    from vsgen.formats.zarr_bfloat16 import register

    register()
    job = model()
    blockwrite.write(job, f"s3://{bucket}/m.zarr", chunks=(7, 24))
    group = zarr.open_group(f"s3://{bucket}/m.zarr", mode="r")
    for name, values in job.arrays().items():
        assert group[name][...].tobytes() == values.tobytes(), name
    assert group["embed.weight"].chunks == (7, 24)
    assert set(group.attrs["vsgen"]["tensors"]) == set(SPEC["tensors"])


def test_a_zarr_store_object_from_python(tmp_path):
    from zarr.storage import MemoryStore

    store = MemoryStore()
    job = tensor_job(vsgen.HeNormal(seed=4), (30, 8))
    blockwrite.write(job, store, chunks=(8, 8))
    array = zarr.open_array(store, mode="r")
    assert array[...].tobytes() == job.arrays()["weight"].tobytes()
    with pytest.raises(ValueError, match="is not empty"):
        blockwrite.write(job, store, chunks=(8, 8))
    with pytest.raises(ValueError, match="holds a Zarr store, not npy"):
        blockwrite.write(job, MemoryStore(), "npy")


def test_memory_urls_with_local_threads():
    job = model()
    blockwrite.write(job, "memory://vsgen-test/m.zarr", chunks=(8, 24))
    found = readers.open_file("memory://vsgen-test/m.zarr")
    assert {t.name for t in found.tensors} == set(SPEC["tensors"])
    import fsspec

    fsspec.filesystem("memory").rm("/vsgen-test", recursive=True)


# --- existing targets and --force ------------------------------------------------------------


def test_an_existing_output_needs_force_and_is_replaced_whole(s3, bucket):
    url = f"s3://{bucket}/m.zarr"
    first = model()
    blockwrite.write(first, url, chunks=(8, 24))
    with pytest.raises(ValueError, match="exists; pass force=True"):
        blockwrite.write(first, url, chunks=(8, 24))
    second = tensor_job(vsgen.HeNormal(seed=9), (16, 4))
    blockwrite.write(second, url, force=True)
    assert sorted(remote_tree(s3, f"{bucket}/m.zarr")) == ["c/0/0", "zarr.json"]
    assert zarr.open_array(url, mode="r")[...].tobytes() == second.arrays()["weight"].tobytes()


def test_force_replaces_old_shards_and_keeps_no_stale_one(s3, bucket):
    url = f"s3://{bucket}/ckpt"
    blockwrite.write(model(), url, "safetensors-sharded", max_shard_size=2000)
    before = sorted(remote_tree(s3, f"{bucket}/ckpt"))
    assert len(before) > 3
    one = tensor_job(vsgen.HeNormal(seed=2), (8, 4), name="w")
    blockwrite.write(one, url, "safetensors-sharded", force=True)
    assert sorted(remote_tree(s3, f"{bucket}/ckpt")) == [
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
    ]


@pytest.mark.parametrize("fmt", ["zarr", "safetensors-sharded"])
def test_force_never_replaces_what_vsgen_did_not_write(s3, bucket, fmt):
    url = f"s3://{bucket}/out"
    blockwrite.write(model(), url, fmt)
    s3.pipe_file(f"{bucket}/out/notes.txt", b"mine")
    with pytest.raises(ValueError, match=r"out/notes.txt: not .* only replaces"):
        blockwrite.write(model(), url, fmt, force=True)
    assert s3.cat_file(f"{bucket}/out/notes.txt") == b"mine"
    foreign = f"s3://{bucket}/data"
    s3.pipe_file(f"{bucket}/data/table.csv", b"a,b")
    with pytest.raises(ValueError):
        blockwrite.write(model(), foreign, fmt, force=True)
    assert s3.cat_file(f"{bucket}/data/table.csv") == b"a,b"


# --- failures ------------------------------------------------------------------------------


class FailingAfter(blockwrite.LocalRunner):
    def __init__(self, count: int) -> None:
        super().__init__(1)
        self.count = count

    def run(self, tasks, on_progress, cancelled, on_done=None):
        def failing(index, result):
            if index + 1 >= self.count:
                raise OSError(5, "the network went away")
            if on_done is not None:
                on_done(index, result)

        super().run(tasks, on_progress, cancelled, failing)


@pytest.mark.parametrize("fmt", ["zarr", "safetensors-sharded"])
def test_a_failed_job_leaves_nothing_in_the_store(s3, bucket, fmt, monkeypatch):
    monkeypatch.setattr(objectstore, "PART_BYTES", 1)  # every block its own part
    url = f"s3://{bucket}/out"
    job = tensor_job(vsgen.HeNormal(seed=1), (2048, 1024))
    with pytest.raises(OSError, match="the network went away"):
        blockwrite.write(job, url, fmt, chunks=(512, 1024), runner=FailingAfter(2))
    s3.invalidate_cache()
    assert s3.find(bucket) == []
    assert uploads(s3, bucket) == []


def test_an_interrupt_leaves_nothing_in_the_store(s3, bucket):
    url = f"s3://{bucket}/out.zarr"
    job = tensor_job(vsgen.HeNormal(seed=1), (256, 16))
    with pytest.raises(KeyboardInterrupt):
        blockwrite.write(job, url, chunks=(1, 16), threads=1, cancelled=lambda: True)
    s3.invalidate_cache()
    assert s3.find(bucket) == []


def test_resume_is_refused_for_object_stores(s3, bucket):
    with pytest.raises(ValueError, match="jobs that write to an object store start afresh"):
        blockwrite.write(model(), f"s3://{bucket}/m.zarr", resume=True)


@pytest.mark.parametrize(
    ("args", "says", "code"),
    [
        (["-o", "s3://no-such-vsgen-bucket/w.zarr"], "bucket 'no-such-vsgen-bucket' of output", 2),
        (["-o", "s3://{bucket}/w.npy"], "to an object store vsgen writes .zarr stores", 2),
        (["-o", "s3://{bucket}", "--format", "zarr"], "names a whole bucket", 2),
        (["-o", "s3://key:secret@{bucket}/w.zarr"], "with credentials in it is refused", 2),
        (
            ["-o", "s3://{bucket}/ckpt", "--format", "safetensors-sharded", "--resume"],
            "start afresh",
            2,
        ),
        (
            ["-o", "memory://x/w.zarr", "--scheduler", "local:1"],
            "memory:// is each process's own",
            1,
        ),
    ],
)
def test_command_line_errors_are_one_line(s3, bucket, args, says, code):
    args = [arg.replace("{bucket}", bucket) for arg in args]
    done = vsgen_cli(["sample", "--shape", "8,8", "--seed", "1", *args], timeout=180)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert says in lines[0]
    assert "secret" not in done.stderr and CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in done.stderr
    s3.invalidate_cache()
    assert s3.find(bucket) == []


# --- hostile stores ---------------------------------------------------------------------------


def _written(s3, bucket: str, fmt: str) -> str:
    url = f"s3://{bucket}/out"
    blockwrite.write(tensor_job(vsgen.HeNormal(seed=1), (16, 8)), url, fmt, chunks=(8, 8))
    return url


@pytest.mark.parametrize(
    ("fmt", "key", "data", "says"),
    [
        ("zarr", "zarr.json", b"[" * 10_000, "nest"),
        ("zarr", "zarr.json", b" " * (16 << 20) + b"{}", "larger than 16 MiB"),
        ("zarr", "c/1/0", b"short", "has 5 bytes; the chunk holds 256"),
        ("zarr", "c/0/0", None, "is missing (vsgen writes every chunk)"),
        ("safetensors-sharded", "model.safetensors.index.json", b'{"weight_map": 1}', "weight_map"),
        ("safetensors-sharded", "model.safetensors.index.json", None, "not a Zarr store, sharded"),
        ("safetensors-sharded", "model-00001-of-00001.safetensors", b"\xff" * 16, "header length"),
    ],
)
def test_hostile_objects_are_refused_in_one_line(s3, bucket, fmt, key, data, says):
    url = _written(s3, bucket, fmt)
    if data is None:
        s3.rm_file(f"{bucket}/out/{key}")
    else:
        s3.pipe_file(f"{bucket}/out/{key}", data)
    s3.invalidate_cache()
    started = time.monotonic()
    done = vsgen_cli(["check", url])
    assert done.returncode in (2, 3), done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert says in lines[0] and url in lines[0]
    assert time.monotonic() - started < 30


# --- on a Dask cluster, with no shared path -----------------------------------------------------


@pytest.mark.slow
def test_a_dask_cluster_writes_to_s3(s3, bucket, tmp_path):
    from dask_processes import DaskProcesses

    processes = DaskProcesses(tmp_path)
    try:
        address, _, _ = processes.cluster(2)
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps(SPEC))
        for name, fmt in (("m.zarr", []), ("ckpt", ["--format", "safetensors-sharded"])):
            local = tmp_path / name
            done = vsgen_cli(["sample", "--spec", str(spec), "-o", str(local), *fmt])
            assert done.returncode == 0, done.stderr
            url = f"s3://{bucket}/{name}"
            done = vsgen_cli(
                ["sample", "--spec", str(spec), "-o", url, *fmt, "--scheduler", address]
            )
            assert done.returncode == 0, done.stderr
            assert remote_tree(s3, f"{bucket}/{name}") == local_tree(local)
    finally:
        processes.stop()
