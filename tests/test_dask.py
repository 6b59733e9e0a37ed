"""vsgen.dask on a real LocalCluster of two worker processes (127.0.0.1 only).

Every result is compared with the single-process result of the same arguments,
read back with the real readers (numpy, safetensors, h5py, zarr).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import h5py  # noqa: E402
import safetensors.numpy  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import vsgen  # noqa: E402
from vsgen import dask as vsgen_dask  # noqa: E402
from vsgen import modelspec  # noqa: E402
from vsgen.cli import cli  # noqa: E402

SPEC = {
    "seed": 11,
    "layout": "torch",
    "rules": {"*.bias": "zeros", "ln.weight": "ones"},
    "tensors": {
        "embed.weight": {"shape": [50, 24], "init": {"distribution": "untruncated_normal"}},
        "mlp.up.weight": [48, 24],
        "mlp.up.bias": [48],
        "mlp.down.weight": {"shape": [24, 48], "dtype": "float16"},
        "ln.weight": [24],
        "conv.weight": [6, 4, 3, 3],
    },
}


@pytest.fixture(scope="module")
def client():
    cluster = vsgen_dask.local_cluster(2)
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


def _single_process(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["sample", *args, "--quiet"])
    assert result.exit_code == 0, result.output


def _tree(directory) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in directory.rglob("*")
        if path.is_file()
    }


def _only_entries(directory, *names: str) -> None:
    assert sorted(os.listdir(directory)) == sorted(names)


# --- dask arrays ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((1000,), (64,)),  # 1-D
        ((1000,), ((1, 998, 1),)),  # irregular 1-D
        ((37, 53), (37, 5)),  # column strips
        ((37, 53), (8, 8)),  # 2-D tiles
        ((37, 53), ((3, 30, 4), (1, 50, 2))),  # irregular tiles
        ((4, 5, 6, 7), (3, 2, 4, 5)),  # n-d tiles
        ((), ()),  # scalar
    ],
)
def test_sample_equals_single_process_for_any_chunking(client, shape, chunks):
    initializer = vsgen.VarianceScaling(scale=2.0, seed=5)
    array = vsgen_dask.sample(initializer, shape, chunks=chunks)
    assert array.shape == shape
    got = client.compute(array).result()
    assert got.dtype == np.float32
    assert got.tobytes() == initializer(shape).tobytes()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("distribution", ["untruncated_normal", "uniform"])
def test_sample_dtypes_and_distributions(client, dtype, distribution):
    initializer = vsgen.VarianceScaling(distribution=distribution, seed=9)
    array = vsgen_dask.sample(initializer, (21, 34), dtype, chunks=(5, 7))
    expected = initializer((21, 34), dtype)
    assert client.compute(array).result().tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fixed_parameter_initializers_on_the_cluster(client, dtype):
    # Two tensors that differ only in their mean or range are different arrays:
    # the block names include the draw's offset and interval.
    for first, second in [
        (vsgen.RandomNormal(0.0, 0.5, seed=3), vsgen.RandomNormal(2.0, 0.5, seed=3)),
        (vsgen.RandomUniform(0.1, 0.7, seed=3), vsgen.RandomUniform(0.2, 0.7, seed=3)),
        (vsgen.TruncatedNormal(-1.0, 0.1, seed=3), vsgen.TruncatedNormal(1.0, 0.1, seed=3)),
    ]:
        arrays = [
            vsgen_dask.sample(init, (21, 34), dtype, chunks=(5, 7)) for init in (first, second)
        ]
        assert arrays[0].name != arrays[1].name
        together = [future.result() for future in client.compute(arrays)]
        for values, init in zip(together, (first, second), strict=True):
            assert values.tobytes() == init((21, 34), dtype).tobytes()


def test_sample_graph_has_one_small_task_per_block():
    import pickle

    initializer = vsgen.VarianceScaling(seed=1)
    array = vsgen_dask.sample(initializer, (4096, 4096), chunks=(1024, 512))
    graph = dict(array.__dask_graph__())
    assert len(graph) == array.npartitions == 32
    # No data travels in the graph: the whole graph pickles to a few kilobytes,
    # while one block alone is 2 MiB.
    assert len(pickle.dumps(graph)) < 64 * 1024


def test_auto_chunks_are_blocks_of_whole_rows():
    array = vsgen_dask.sample(vsgen.VarianceScaling(seed=1), (65536, 8192), "bfloat16")
    assert array.chunksize[1] == 8192 and array.numblocks[1] == 1
    assert array.numblocks[0] > 1  # and about dask's array.chunk-size each


def test_sample_refuses_the_sequential_keras_stream():
    initializer = vsgen.VarianceScaling(seed=1, stream="keras")
    with pytest.raises(ValueError, match="sequential"):
        vsgen_dask.sample(initializer, (8, 8), chunks=(4, 4))


def test_model_matches_spec_seeds(client, tmp_path):
    arrays = vsgen_dask.model(SPEC, chunks=5)
    expected = modelspec.build_job(modelspec.parse_spec(SPEC)).arrays()
    assert list(arrays) == list(expected)
    computed = client.compute(arrays).result()
    for name, values in expected.items():
        assert computed[name].dtype == values.dtype
        assert computed[name].tobytes() == values.tobytes(), name


def test_model_from_a_checkpoint_follows_like(client, tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    checkpoint = tmp_path / "ckpt.safetensors"
    _single_process(["--spec", str(spec_path), "-o", str(checkpoint)])
    arrays = vsgen_dask.model(str(checkpoint), seed=3, chunks=7)
    like_job = modelspec.build_job(None, modelspec.like_tensors(str(checkpoint)), seed=3)
    expected = like_job.arrays()
    computed = client.compute(arrays).result()
    assert {name: a.tobytes() for name, a in computed.items()} == {
        name: a.tobytes() for name, a in expected.items()
    }


# --- outputs written by the cluster ------------------------------------------------------


IRREGULAR_TILES = ((3, 30, 4), (1, 50, 2))


@pytest.mark.parametrize(
    ("fmt", "chunks"),
    [
        ("npy", None),
        ("npy", (5, 53)),
        ("npy", IRREGULAR_TILES),
        ("safetensors", (8, 8)),
        ("safetensors", IRREGULAR_TILES),
        ("raw", (8, 8)),
        ("h5", None),
        ("h5", IRREGULAR_TILES),
    ],
)
def test_single_files_equal_single_process_files(client, tmp_path, fmt, chunks):
    suffix = {"raw": ".raw", "npy": ".npy", "safetensors": ".safetensors", "h5": ".h5"}[fmt]
    reference = tmp_path / f"reference{suffix}"
    _single_process(["--shape", "37,53", "--seed", "4", "-o", str(reference)])
    initializer = vsgen.VarianceScaling(seed=4)
    target = tmp_path / f"cluster{suffix}"
    job = vsgen_dask.tensor_job(initializer, (37, 53))
    vsgen_dask.write(job, str(target), client=client, chunks=chunks)
    if fmt == "h5":
        with h5py.File(reference) as a, h5py.File(target) as b:
            assert b["weight"][...].tobytes() == a["weight"][...].tobytes()
            assert dict(b.attrs) == dict(a.attrs)
    # Whole files are identical: same header, same metadata, same values.
    assert target.read_bytes() == reference.read_bytes()
    _only_entries(tmp_path, reference.name, target.name)


def test_rows_of_a_tensor_on_the_cluster(client, tmp_path):
    reference = tmp_path / "reference.safetensors"
    _single_process(["--shape", "100,10", "--rows", "20:50", "--seed", "5", "-o", str(reference)])
    target = tmp_path / "cluster.safetensors"
    job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=5), (100, 10), rows=(20, 50))
    vsgen_dask.write(job, str(target), client=client, chunks=(7, 3))
    assert target.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("chunks", [None, (5, 53), (8, 8)])
def test_zarr_equals_single_process(client, tmp_path, chunks):
    reference = tmp_path / "reference.npy"
    _single_process(["--shape", "37,53", "--seed", "4", "-o", str(reference)])
    local = tmp_path / "local.zarr"
    cluster = tmp_path / "cluster.zarr"
    initializer = vsgen.VarianceScaling(seed=4)
    vsgen_dask.write(vsgen_dask.tensor_job(initializer, (37, 53)), str(local), chunks=chunks)
    vsgen_dask.write(
        vsgen_dask.tensor_job(initializer, (37, 53)), str(cluster), client=client, chunks=chunks
    )
    expected = np.load(reference)
    for store in (local, cluster):
        array = zarr.open_array(str(store), mode="r")
        assert array.chunks == (chunks or (37, 53))
        assert array[...].tobytes() == expected.tobytes()
        record = array.attrs["vsgen"]["tensors"]["weight"]
        assert record["config"]["seed"] == 4
    # The chunk files themselves do not depend on who wrote them.
    for root, _, files in os.walk(local):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), local)
            assert (cluster / relative).read_bytes() == (local / relative).read_bytes()


def test_model_into_zarr_group_and_sharded_safetensors(client, tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    reference = tmp_path / "reference.safetensors"
    _single_process(["--spec", str(spec_path), "-o", str(reference)])
    expected = safetensors.numpy.load_file(str(reference))
    job = modelspec.build_job(modelspec.load_spec(str(spec_path)))

    store = tmp_path / "model.zarr"
    vsgen_dask.write(job, str(store), client=client, chunks={"embed.weight": (7, 24)})
    group = zarr.open_group(str(store), mode="r")
    assert set(group.attrs["vsgen"]["tensors"]) == set(expected)
    assert group["embed.weight"].chunks == (7, 24)
    for name, values in expected.items():
        assert group[name][...].dtype == values.dtype
        assert group[name][...].tobytes() == values.tobytes(), name

    local_dir = tmp_path / "local_shards"
    cluster_dir = tmp_path / "cluster_shards"
    vsgen_dask.write(job, str(local_dir), "safetensors-sharded", max_shard_size="6KB")
    progress: list[int] = []
    vsgen_dask.write(
        job,
        str(cluster_dir),
        "safetensors-sharded",
        client=client,
        max_shard_size="6KB",
        chunks=(8, 24),
        on_progress=progress.append,
    )
    # Shards report block by block; the bar ends exactly at the job's size.
    assert sum(progress) == sum(v.size for v in expected.values())
    index = json.loads((cluster_dir / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in expected.values())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1
    assert (
        files
        == [f"model-{k:05d}-of-{len(files):05d}.safetensors" for k in range(1, 7)][: len(files)]
    )
    _only_entries(cluster_dir, "model.safetensors.index.json", *files)
    for file_name in files:
        # Every shard loads on its own and equals the locally written shard, byte for byte.
        shard = safetensors.numpy.load_file(str(cluster_dir / file_name))
        assert all(index["weight_map"][name] == file_name for name in shard)
        for name, values in shard.items():
            assert values.tobytes() == expected[name].tobytes()
        assert (cluster_dir / file_name).read_bytes() == (local_dir / file_name).read_bytes()


def test_sharded_safetensors_load_into_torch(client, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    job = vsgen_dask.tensor_job(vsgen.HeNormal(seed=2, layout="torch"), (64, 32), name="fc.weight")
    directory = tmp_path / "ckpt"
    vsgen_dask.write(job, str(directory), "safetensors-sharded", client=client)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    state = {}
    for file_name in sorted(set(index["weight_map"].values())):
        state.update(load_file(str(directory / file_name)))
    module = torch.nn.Linear(32, 64, bias=False)
    module.load_state_dict({"weight": state["fc.weight"]}, strict=True)
    expected = vsgen.HeNormal(seed=2, layout="torch")((64, 32))
    assert module.weight.detach().numpy().tobytes() == expected.tobytes()


# --- faults -------------------------------------------------------------------------------


class _KillWorkerOnce(distributed.WorkerPlugin):
    """Kills the worker process that starts the first vsgen write task (once per marker)."""

    name = "vsgen-test-kill-once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or "vsgen-write" not in str(key):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


def test_worker_killed_mid_job_gives_identical_bytes(client, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    reference = tmp_path / "reference.npy"
    _single_process(["--shape", "120,50", "--seed", "8", "-o", str(reference)])
    target = tmp_path / "cluster.npy"
    client.register_plugin(_KillWorkerOnce(str(marker)))
    try:
        job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=8), (120, 50))
        vsgen_dask.write(job, str(target), client=client, chunks=(4, 50))
    finally:
        client.unregister_worker_plugin(_KillWorkerOnce.name)
        client.wait_for_workers(2, timeout=60)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert target.read_bytes() == reference.read_bytes()
    _only_entries(tmp_path, "killed", reference.name, target.name)


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_interrupted_job_leaves_target_as_it_was(client, tmp_path, suffix):
    target = tmp_path / f"w{suffix}"
    first = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=1), (64, 16))
    vsgen_dask.write(first, str(target), client=client)
    before = _tree(tmp_path)

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    second = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=2), (64, 16))
    with pytest.raises(KeyboardInterrupt):
        vsgen_dask.write(
            second, str(target), client=client, chunks=(1, 16), force=True, on_progress=interrupt
        )
    # Tasks still running on the workers find their files gone and create nothing.
    time.sleep(0.5)
    after = _tree(tmp_path)
    assert after == before
    _only_entries(tmp_path, target.name)


class _RemoveChunkFilesOnce(distributed.WorkerPlugin):
    """Before the first vsgen write task runs, removes every chunk file under ``root``."""

    name = "vsgen-test-remove-chunks"

    def __init__(self, root: str) -> None:
        self.root = root

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or "vsgen-write" not in str(key):
            return
        marker = os.path.join(self.root, "broken")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        for directory, _, files in os.walk(self.root):
            if os.sep + "c" in directory:
                for name in files:
                    os.unlink(os.path.join(directory, name))


def test_failed_job_reports_the_error_and_leaves_nothing(client, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    target = tmp_path / "w.zarr"
    job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=2), (64, 16))
    client.register_plugin(_RemoveChunkFilesOnce(str(tmp_path)))
    try:
        with pytest.raises(OSError, match="No such file"):
            vsgen_dask.write(job, str(target), client=client, chunks=(2, 16))
    finally:
        client.unregister_worker_plugin(_RemoveChunkFilesOnce.name)
    time.sleep(0.5)
    _only_entries(tmp_path, "broken")


def test_workers_that_cannot_see_the_output_are_reported(client, tmp_path):
    missing = str(tmp_path / "elsewhere" / ".w.zarr.vsgen-tmp-0")
    with pytest.raises(vsgen_dask.ClusterError, match="cannot see .*shares"):
        vsgen_dask._check_workers(client, missing)
    vsgen_dask._check_workers(client, str(tmp_path))  # all workers see this one


def test_existing_target_needs_force_and_foreign_directories_are_kept(client, tmp_path):
    job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=1), (8, 8))
    store = tmp_path / "w.zarr"
    vsgen_dask.write(job, str(store), client=client)
    with pytest.raises(ValueError, match="exists"):
        vsgen_dask.write(job, str(store), client=client)
    vsgen_dask.write(job, str(store), client=client, force=True)
    foreign = tmp_path / "data.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text("{}")
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="only replaces"):
        vsgen_dask.write(job, str(foreign), client=client, force=True)
    assert (foreign / "notes.txt").read_text() == "mine"
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="only replaces"):
        vsgen_dask.write(job, str(shards), "safetensors-sharded", client=client, force=True)
    assert (shards / "config.json").exists()


# --- the command line ---------------------------------------------------------------------


def test_cli_scheduler_address_single_tensor_and_spec(client, tmp_path):
    address = client.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    reference = tmp_path / "reference.safetensors"
    _single_process(
        ["--shape", "40,30", "--preset", "he_normal", "--seed", "3", "-o", str(reference)]
    )
    target = tmp_path / "cluster.safetensors"
    result = CliRunner().invoke(
        cli,
        [
            "sample",
            "--shape",
            "40,30",
            "--preset",
            "he_normal",
            "--seed",
            "3",
            "-o",
            str(target),
            "--scheduler",
            address,
            "--chunks",
            "7,30",
        ],
    )
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == reference.read_bytes()

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    spec_reference = tmp_path / "model.safetensors"
    _single_process(["--spec", str(spec_path), "-o", str(spec_reference)])
    store = tmp_path / "model.zarr"
    result = CliRunner().invoke(
        cli, ["sample", "--spec", str(spec_path), "-o", str(store), "--scheduler", address]
    )
    assert result.exit_code == 0, result.output
    expected = safetensors.numpy.load_file(str(spec_reference))
    group = zarr.open_group(str(store), mode="r")
    for name, values in expected.items():
        assert group[name][...].tobytes() == values.tobytes()
    # check and --config-from read the store's provenance.
    result = CliRunner().invoke(cli, ["check", str(store), "--name", "mlp.up.weight"])
    assert result.exit_code == 0, result.output
    assert "verdict: consistent" in result.output
    again = tmp_path / "again.npy"
    result = CliRunner().invoke(
        cli, ["sample", "--config-from", str(store), "--name", "mlp.up.weight", "-o", str(again)]
    )
    assert result.exit_code == 0, result.output
    assert np.load(again).tobytes() == expected["mlp.up.weight"].tobytes()


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vsgen", *args], capture_output=True, text=True, timeout=timeout
    )


def test_cli_refuses_keras_stream_with_scheduler(tmp_path):
    result = _run(
        [
            "sample",
            "--shape",
            "8,8",
            "--stream",
            "keras",
            "--seed",
            "1",
            "-o",
            str(tmp_path / "w.npy"),
            "--scheduler",
            "local:2",
        ]
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sequential" in lines[0]
    _only_entries(tmp_path)


def test_cli_local_cluster_writes_sharded_model(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    reference = tmp_path / "model.safetensors"
    _single_process(["--spec", str(spec_path), "-o", str(reference)])
    directory = tmp_path / "shards"
    result = _run(
        [
            "sample",
            "--spec",
            str(spec_path),
            "-o",
            str(directory),
            "--format",
            "safetensors-sharded",
            "--max-shard-size",
            "5KB",
            "--scheduler",
            "local:2",
        ]
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    expected = safetensors.numpy.load_file(str(reference))
    for name, file_name in index["weight_map"].items():
        values = safetensors.numpy.load_file(str(directory / file_name))[name]
        assert values.tobytes() == expected[name].tobytes()


def test_cli_interrupt_leaves_target_and_no_temporaries(client, tmp_path):
    target = tmp_path / "w.zarr"
    _single_process(["--shape", "16,8", "--seed", "1", "-o", str(target)])
    before = sorted(os.listdir(target))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--shape",
            "4000,16",  # 4,000 tasks: seconds on any machine, so still running when signalled
            "--seed",
            "2",
            "--chunks",
            "1,16",
            "-o",
            str(target),
            "--force",
            "--scheduler",
            client.scheduler.address,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(os.listdir(tmp_path)) < 2:
        time.sleep(0.01)
    assert len(os.listdir(tmp_path)) == 2, "the job never created its temporary"
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    print(f"exited {time.monotonic() - signalled:.2f} s after SIGINT")
    assert process.returncode == 1, stderr
    assert stderr.strip().splitlines()[-1] == "Error: interrupted"
    time.sleep(0.5)
    _only_entries(tmp_path, "w.zarr")
    assert sorted(os.listdir(target)) == before
    assert zarr.open_array(str(target), mode="r").shape == (16, 8)


def test_small_sample_imports_neither_dask_nor_zarr(tmp_path):
    code = (
        "import sys\n"
        "from vsgen.cli import main\n"
        "try:\n"
        f"    main(['sample', '--shape', '64,32', '--seed', '0', '-o', {str(tmp_path / 'w.npy')!r}"
        "])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print(sorted(m for m in ('dask', 'distributed', 'zarr') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
