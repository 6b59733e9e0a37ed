"""Zarr v3 stores and sharded safetensors written without a cluster; hostile stores."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from click.testing import CliRunner

import vsgen
from vsgen import dask as vsgen_dask
from vsgen.cli import cli
from vsgen.formats import TensorInfo, sharded

GB = 10**9


def _sample(*args: str):
    return CliRunner().invoke(cli, ["sample", *args, "--quiet"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("2GiB", 2 * 2**30),
        ("500mb", 500 * 10**6),
        ("1_000", 1000),
        ("1.5KB", 1500),
        (7, 7),
    ],
)
def test_parse_size(text, expected):
    assert sharded.parse_size(text) == expected


@pytest.mark.parametrize("text", ["5XB", "", "GB", "-1GB", "0"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError, match="max_shard_size"):
        sharded.parse_size(text)


def test_split_follows_the_hugging_face_rule():
    # The example of huggingface_hub's documentation: limit 10 GB, tensors of
    # 6, 6, 2, 6, 2, 2 GB go to shards [6], [6 + 2], [6 + 2 + 2].
    sizes_gb = [6, 6, 2, 6, 2, 2]
    infos = [TensorInfo(f"t{i}", (size * GB // 4,), "float32") for i, size in enumerate(sizes_gb)]
    assert sharded.split_shards(infos, 10 * GB) == [[0], [1, 2], [3, 4, 5]]
    # A tensor larger than the limit gets a shard of its own, closed at once, while
    # the open shard goes on filling (so it comes first, as huggingface_hub does).
    big = [
        TensorInfo("a", (10,), "float32"),
        TensorInfo("b", (1000,), "float32"),
        TensorInfo("c", (10,), "float32"),
    ]
    assert sharded.split_shards(big, 100) == [[1], [0, 2]]


def test_sharded_directory_without_cluster(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "seed": 1,
                "tensors": {
                    "a.weight": [40, 30],
                    "a.bias": [30],
                    "b.weight": {"shape": [30, 20], "dtype": "bfloat16"},
                },
            }
        )
    )
    reference = tmp_path / "one.safetensors"
    assert _sample("--spec", str(spec), "-o", str(reference)).exit_code == 0
    directory = tmp_path / "model"
    result = _sample(
        "--spec",
        str(spec),
        "-o",
        str(directory),
        "--format",
        "safetensors-sharded",
        "--max-shard-size",
        "4KB",
    )
    assert result.exit_code == 0, result.output
    index = json.loads((directory / sharded.INDEX_NAME).read_text())
    expected = safetensors.numpy.load_file(str(reference))
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in expected.values())
    assert index["weight_map"] == {
        "a.weight": "model-00001-of-00002.safetensors",
        "a.bias": "model-00002-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors",
    }
    for name, file_name in index["weight_map"].items():
        with open(directory / file_name, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        assert header["__metadata__"]["format"] == "pt"
        values = safetensors.numpy.load_file(str(directory / file_name))[name]
        assert values.tobytes() == expected[name].tobytes()
    # The directory is read back as a whole: check, --like, --config-from.
    assert CliRunner().invoke(cli, ["check", str(directory), "--name", "a.weight"]).exit_code == 0
    again = tmp_path / "again.npy"
    result = _sample("--config-from", str(directory), "--name", "a.weight", "-o", str(again))
    assert result.exit_code == 0, result.output
    assert np.load(again).tobytes() == expected["a.weight"].tobytes()
    like = tmp_path / "like.safetensors"
    assert _sample("--like", str(directory), "--seed", "1", "-o", str(like)).exit_code == 0
    assert list(safetensors.numpy.load_file(str(like))) == ["a.weight", "a.bias", "b.weight"]


def test_existing_outputs_and_force(tmp_path):
    directory = tmp_path / "model"
    args = [
        "--shape",
        "8,8",
        "--seed",
        "1",
        "-o",
        str(directory),
        "--format",
        "safetensors-sharded",
    ]
    assert _sample(*args).exit_code == 0
    result = _sample(*args)
    assert result.exit_code == 2 and "exists" in result.output
    assert _sample(*args, "--force").exit_code == 0
    (directory / "config.json").write_text("{}")
    result = _sample(*args, "--force")
    assert result.exit_code == 2 and "only replaces" in result.output
    assert (directory / "config.json").exists()


def test_zarr_without_cluster_and_in_bfloat16(tmp_path):
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "w.zarr"
    result = _sample("--shape", "50,40", "--seed", "3", "-o", str(store), "--chunks", "16,16")
    assert result.exit_code == 0, result.output
    array = zarr.open_array(str(store), mode="r")
    assert array.chunks == (16, 16)
    assert array[...].tobytes() == vsgen.VarianceScaling(seed=3)((50, 40)).tobytes()
    # bfloat16: the zarr-extensions data type, which zarr-python reads through the
    # data type vsgen registers (tests/formats/test_zarr_bfloat16.py).
    result = _sample("--shape", "4,4", "--dtype", "bfloat16", "-o", str(tmp_path / "b.zarr"))
    assert result.exit_code == 0, result.output
    node = json.loads((tmp_path / "b.zarr" / "zarr.json").read_text())
    assert node["data_type"] == "bfloat16" and node["fill_value"] == 0.0
    assert sorted(os.listdir(tmp_path)) == ["b.zarr", "w.zarr"]


def test_chunks_only_for_parallel_outputs(tmp_path):
    result = _sample("--shape", "4,4", "-o", str(tmp_path / "w.npy"), "--chunks", "2,2")
    assert result.exit_code == 2


def test_local_writes_need_no_dask(tmp_path):
    code = (
        "import sys, vsgen\n"
        "from vsgen import dask as vd\n"
        f"vd.write(vd.tensor_job(vsgen.VarianceScaling(seed=1), (64, 8)), {str(tmp_path)!r} + "
        "'/w.zarr')\n"
        "print(sorted(m for m in ('dask', 'distributed', 'zarr') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- hostile stores --------------------------------------------------------------------


def _store(tmp_path, node_changes=None, chunk_bytes=None):
    store = tmp_path / "h.zarr"
    job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=1), (4, 4))
    vsgen_dask.write(job, str(store), chunks=(2, 2))
    if node_changes:
        node = json.loads((store / "zarr.json").read_text())
        node.update(node_changes)
        (store / "zarr.json").write_text(json.dumps(node))
    if chunk_bytes is not None:
        (store / "c" / "0" / "0").write_bytes(chunk_bytes)
    return store


@pytest.mark.parametrize(
    ("changes", "chunk_bytes", "message"),
    [
        (
            {
                "codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "gzip", "configuration": {"level": 1}},
                ]
            },
            None,
            "codecs",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2**20, 2**20]}}},
            None,
            "over 2**27 values",
        ),
        ({"data_type": "complex64"}, None, "data type"),
        ({"shape": [4, -4]}, None, "shape"),
        (None, b"\x00" * 3, "the chunk holds 16"),
    ],
)
def test_hostile_stores_give_one_line_errors(tmp_path, changes, chunk_bytes, message):
    store = _store(tmp_path, changes, chunk_bytes)
    result = CliRunner().invoke(cli, ["check", str(store)])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_chunk_links_out_of_the_store_are_refused(tmp_path):
    store = _store(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x01" * 16)
    os.unlink(store / "c" / "0" / "0")
    os.symlink(secret, store / "c" / "0" / "0")
    result = CliRunner().invoke(cli, ["check", str(store)])
    assert (
        result.exit_code == 2
        and "c/0/0: chunk of array 'weight' is a symbolic link" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1


def test_oversized_metadata_is_refused(tmp_path):
    store = _store(tmp_path)
    node = json.loads((store / "zarr.json").read_text())
    node["attributes"]["padding"] = "x" * (17 << 20)
    (store / "zarr.json").write_text(json.dumps(node))
    result = CliRunner().invoke(cli, ["check", str(store)])
    assert result.exit_code == 2 and "larger than" in result.output


def test_zarr_group_with_nested_names_and_a_tensor_called_c(tmp_path):
    zarr = pytest.importorskip("zarr")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"seed": 2, "tensors": {"c": [6, 4], "enc/c": [4, 4], "enc/layer/w": [3, 5]}})
    )
    store = tmp_path / "m.zarr"
    result = _sample("--spec", str(spec), "-o", str(store), "--chunks", "2,2")
    assert result.exit_code == 0, result.output
    reference = tmp_path / "m.safetensors"
    assert _sample("--spec", str(spec), "-o", str(reference)).exit_code == 0
    expected = safetensors.numpy.load_file(str(reference))
    group = zarr.open_group(str(store), mode="r")
    for name, values in expected.items():
        assert group[name][...].tobytes() == values.tobytes()
    from vsgen.formats import read_tensor_infos

    assert [info.name for info in read_tensor_infos(str(store))] == list(expected)


def test_keras_stream_is_refused_by_the_parallel_writers(tmp_path):
    result = _sample(
        "--shape", "8,8", "--stream", "keras", "--seed", "1", "-o", str(tmp_path / "w.zarr")
    )
    assert result.exit_code == 2
    assert "sequential" in result.output and len(result.output.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://10.0.0.5:8786", ("tcp://10.0.0.5:8786", None)),
        ("local:3", ("local", 3)),
        (" LOCAL:2 ", ("local", 2)),
    ],
)
def test_parse_scheduler(text, expected):
    assert vsgen_dask.parse_scheduler(text) == expected


@pytest.mark.parametrize("text", ["local:0", "local:x", "local:-1", ""])
def test_parse_scheduler_refuses_bad_counts(text):
    with pytest.raises(ValueError, match="scheduler"):
        vsgen_dask.parse_scheduler(text)


def test_oversized_index_and_zarr_metadata_are_refused_unread(tmp_path, monkeypatch):
    """Both JSON documents are capped before they are parsed: refused with the file named."""
    from vsgen.formats import zarr as zarr_format

    monkeypatch.setattr(sharded, "MAX_INDEX_BYTES", 1 << 20)
    (tmp_path / sharded.INDEX_NAME).write_text(
        '{"weight_map": {}, "pad": "' + "x" * (2 << 20) + '"}'
    )
    with pytest.raises(ValueError, match="index.json is larger than 1 MiB"):
        sharded.read_index(str(tmp_path), "shown")
    monkeypatch.setattr(zarr_format, "MAX_NODE_BYTES", 1 << 20)
    (tmp_path / "zarr.json").write_text('{"pad": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(ValueError, match="shown/zarr.json: is larger than 1 MiB"):
        zarr_format.read_store(str(tmp_path), "shown")


# --- what the mutation run found untested ------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="names descriptors by /proc")
@pytest.mark.parametrize(
    ("target", "fmt"),
    [("w.zarr", None), ("ckpt", "safetensors-sharded"), ("w.npy", None), ("d", "npydir")],
)
def test_every_file_written_is_synced_before_the_rename(tmp_path, monkeypatch, target, fmt):
    """Each chunk file, shard or file the writers filled is fsync'ed (by the writer)
    before the output is renamed into place; dropping the sync would lose data in a
    power cut that the rename made look complete."""
    synced: set[str] = set()
    renamed: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def rename(source, destination, *args, **kwargs):
        if ".vsgen-tmp-" in os.path.basename(os.fspath(source)):
            renamed.append(os.fspath(source))
        return real_rename(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", rename)
    job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=1), (32, 8))
    from vsgen import blockwrite

    blockwrite.write(job, str(tmp_path / target), fmt, chunks=(4, 8), threads=2)
    final = tmp_path / target
    if final.is_dir():
        data = [p for p in final.rglob("*") if p.is_file() and p.suffix != ".json"]
        temp = [r for r in renamed if ".vsgen-tmp-" in r]
        assert temp, renamed
        expected = {str(p).replace(str(final), temp[-1]) for p in data}
        assert len(data) >= 1 and expected <= synced, sorted(expected - synced)[:3]
    else:
        assert any(".vsgen-tmp-" in path for path in synced)


@pytest.mark.parametrize("target", ["w.zarr", "ckpt"])
def test_a_layout_that_fails_leaves_no_temporary(tmp_path, monkeypatch, target):
    """Laying out fails part way (the disk fills after some files): the temporary and
    every file made so far are removed, and the error names the target."""
    from vsgen.formats import base

    made = []
    real = base.sized_file if target == "ckpt" else zarr_module()._Maker.file

    def fail_on_second(*args, **kwargs):
        made.append(args)
        if len(made) == 2:
            raise OSError(errno.ENOSPC, "full")
        return real(*args, **kwargs)

    if target == "ckpt":
        monkeypatch.setattr(sharded, "sized_file", fail_on_second)
    else:
        monkeypatch.setattr(zarr_module()._Maker, "file", fail_on_second)
    job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=1), (32, 8))
    from vsgen import blockwrite

    fmt = "safetensors-sharded" if target == "ckpt" else None
    try:
        blockwrite.write(job, str(tmp_path / target), fmt, chunks=(4, 8))
    except OSError as error:
        assert str(error) == f"[Errno 28] disk full while writing '{tmp_path / target}': full"
        # Removed at once, not when the exception (and the temporary's finalizer) goes.
        left = os.listdir(tmp_path)
    assert len(made) == 2 and left == []


def zarr_module():
    from vsgen.formats import zarr

    return zarr


@pytest.mark.parametrize("selection", [("--rows", "3:11"), ("--shard", "2/5")])
def test_rows_of_a_rank_3_tensor_on_the_block_writers(tmp_path, selection):
    """A row of a (20, 6, 5) tensor is 30 values: the offset of the first row is
    counted in whole rows of all trailing axes (a (100, 10) tensor hides a
    mistake that counts only the second axis). The streamed .npy is the reference."""
    from vsgen import blockwrite
    from vsgen.fans import shard_rows
    from vsgen.formats import readers
    from vsgen.job import tensor_job

    args = ["--shape", "20,6,5", "--seed", "9", *selection]
    assert _sample(*args, "-o", str(tmp_path / "rows.npy")).exit_code == 0
    expected = np.load(tmp_path / "rows.npy")
    result = _sample(*args, "-o", str(tmp_path / "w.zarr"), "--chunks", "2,6,5")
    assert result.exit_code == 0, result.output
    [tensor] = readers.open_file(str(tmp_path / "w.zarr")).tensors
    got = np.concatenate(list(readers.read_values(tensor))).reshape(tensor.shape)
    assert got.tobytes() == expected.tobytes()
    rows = (3, 11) if selection[0] == "--rows" else shard_rows((20, 6, 5), 2, 5)
    job = tensor_job(vsgen.VarianceScaling(seed=9), (20, 6, 5), rows=rows)
    blockwrite.write(job, str(tmp_path / "blocks.safetensors"), chunks=(1, 6, 5))
    blocks = safetensors.numpy.load_file(str(tmp_path / "blocks.safetensors"))["weight"]
    assert blocks.shape == expected.shape and blocks.tobytes() == expected.tobytes()
