"""vsgen.formats.zarr, unit by unit: the grid, the store as laid out (its canonical
JSON, fill values, modes, groups, per-array records), the reader's every refusal
with its exact message (each names the entry inside the store as the user named
the store), its caps at and just past each limit, the chunk files, and the judge
of ``--force``.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

from vsgen.dtypes import TensorInfo
from vsgen.formats import atomic, parallel
from vsgen.formats import zarr as zarr_format
from vsgen.formats.base import UnreadableFile

F32 = np.dtype("float32")


def node_of(shape_, chunks_, dtype="float32", **changes) -> dict:
    node = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape_),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks_)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
        "storage_transformers": [],
    }
    node.update(changes)
    return node


def store_with(tmp_path: Path, node: dict, name: str = "s.zarr") -> Path:
    store = tmp_path / name
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps(node))
    return store


def refusal(store: Path, display: str = "shown") -> str:
    with pytest.raises(UnreadableFile) as caught:
        zarr_format.read_store(str(store), display)
    return str(caught.value)


def write(path: Path, tensors: list[TensorInfo], chunks=None, metadata=None) -> Path:
    output = parallel.open_parallel_output(
        str(path), "zarr", tensors, chunk_shapes=chunks, metadata=metadata
    )
    with output:
        for number, (place, tensor) in enumerate(zip(output.places, tensors, strict=True)):
            values = (np.arange(np.prod(tensor.shape)) + 100 * number).astype(tensor.dtype)
            values = values.reshape(tensor.shape)
            for index in zarr_format.chunk_indices(tensor.shape, place.chunk_shape):
                origin, extent = zarr_format.chunk_region(tensor.shape, place.chunk_shape, index)
                block = values[tuple(slice(o, o + e) for o, e in zip(origin, extent, strict=True))]
                parallel.write_block(place, origin, block)
        parallel.sync_written(output.temp)
        output.commit()
    return path


# --- the grid -------------------------------------------------------------------------------------


def test_grid_counts_regions_and_keys():
    assert zarr_format.grid_counts((10, 7), (4, 3)) == (3, 3)
    assert zarr_format.chunk_count((10, 7), (4, 3)) == 9
    assert zarr_format.chunk_count((), ()) == 1 and zarr_format.chunk_count((0, 5), (1, 5)) == 0
    assert zarr_format.chunk_region((10, 7), (4, 3), (2, 1)) == ((8, 3), (2, 3))
    assert zarr_format.chunk_region((10, 7), (4, 3), (0, 2)) == ((0, 6), (4, 1))
    assert zarr_format.chunk_region((), (), ()) == ((), ())
    assert list(zarr_format.chunk_indices((3, 2), (2, 2))) == [(0, 0), (1, 0)]
    assert zarr_format.chunk_key((3, 12)) == ("c", "3", "12") and zarr_format.chunk_key(()) == (
        "c",
    )
    assert zarr_format.chunk_path("/s/a", (1, 0)) == "/s/a/c/1/0"
    assert zarr_format.array_dir("/s", None) == "/s"
    assert zarr_format.array_dir("/s", "a/b/c") == "/s/a/b/c"
    assert zarr_format._unravel(7, (3, 4)) == (1, 3) and zarr_format._unravel(0, ()) == ()
    with pytest.raises(ValueError):
        zarr_format.chunk_region((10,), (4, 3), (1,))


def test_check_chunk_shape():
    assert zarr_format.check_chunk_shape((10, 7), (4.0, 3)) == (4, 3)
    assert zarr_format.check_chunk_shape((1 << 27,), (1 << 27,)) == (1 << 27,)
    for chunks in ((4,), (0, 3), (4, -1)):
        with pytest.raises(ValueError) as caught:
            zarr_format.check_chunk_shape((10, 7), chunks)
        assert str(caught.value) == (
            "Argument `chunks` must give one positive extent per axis for a Zarr array. "
            f"Received: chunks={tuple(chunks)} for shape (10, 7)"
        )
    with pytest.raises(ValueError) as caught:
        zarr_format.check_chunk_shape((1 << 28,), ((1 << 27) + 1,))
    assert str(caught.value) == (
        f"Zarr chunks of {((1 << 27) + 1,)} are too large (more than 2**27 values); "
        "give smaller --chunks"
    )


# --- what vsgen lays out --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "fill"),
    [("float32", 0.0), ("float16", 0.0), ("int64", 0), ("uint8", 0), ("bool", False)],
)
def test_each_array_node_is_canonical_json_with_its_type_s_zero(tmp_path, dtype, fill):
    store = write(tmp_path / "s.zarr", [TensorInfo("w", (5, 3), np.dtype(dtype))], [(2, 3)])
    text = (store / "zarr.json").read_text()
    node = json.loads(text)
    assert text == json.dumps(node, indent=2, sort_keys=True) + "\n"
    assert node == node_of((5, 3), (2, 3), dtype, fill_value=fill)
    assert type(node["fill_value"]) is type(fill)


def test_a_group_store_has_group_nodes_and_each_array_its_own_record(tmp_path):
    document = {
        "format": 1,
        "seed": 3,
        "tensors": {"a/b/w": {"kind": "x"}, "a/v": {"kind": "y"}, "top": {"kind": "z"}},
    }
    metadata = {"vsgen": json.dumps(document)}
    tensors = [
        TensorInfo("a/b/w", (2,), F32),
        TensorInfo("a/v", (2,), F32),
        TensorInfo("top", (), F32),
    ]
    store = write(tmp_path / "s.zarr", tensors, metadata=metadata)
    nodes = sorted(str(p.relative_to(store)) for p in store.rglob("zarr.json"))
    assert nodes == [
        "a/b/w/zarr.json",
        "a/b/zarr.json",
        "a/v/zarr.json",
        "a/zarr.json",
        "top/zarr.json",
        "zarr.json",
    ]
    root = json.loads((store / "zarr.json").read_text())
    assert root == {"zarr_format": 3, "node_type": "group", "attributes": {"vsgen": document}}
    group = json.loads((store / "a" / "b" / "zarr.json").read_text())
    assert group == {"zarr_format": 3, "node_type": "group", "attributes": {}}
    own = json.loads((store / "a" / "v" / "zarr.json").read_text())["attributes"]["vsgen"]
    assert own == {"format": 1, "seed": 3, "tensors": {"a/v": {"kind": "y"}}}
    assert (store / "top" / "c").is_file() and (store / "a" / "b" / "w" / "c" / "0").is_file()
    found = zarr_format.read_store(str(store))
    assert [a.name for a in found.arrays] == ["a/b/w", "a/v", "top"]
    assert sorted(found.groups) == [(), ("a",), ("a", "b")]


def test_a_store_without_provenance_has_no_attributes(tmp_path):
    store = write(tmp_path / "s.zarr", [TensorInfo("a", (2,), F32), TensorInfo("b", (2,), F32)])
    assert json.loads((store / "zarr.json").read_text())["attributes"] == {}
    assert json.loads((store / "a" / "zarr.json").read_text())["attributes"] == {}
    one = write(tmp_path / "one.zarr", [TensorInfo("a", (2,), F32)])
    assert json.loads((one / "zarr.json").read_text())["attributes"] == {}


def test_layout_files_and_directories_take_the_temporary_s_modes(tmp_path):
    umask = os.umask(0)
    try:
        made = zarr_format._Maker(str(tmp_path), 0o710, 0o640)
        made.node(str(tmp_path / "g" / "a"), {"x": 1})
        made.chunk_files(str(tmp_path / "g" / "a"), (3, 2), (2, 2))
    finally:
        os.umask(umask)
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")
    }
    assert modes == {
        "g": 0o710,
        "g/a": 0o710,
        "g/a/zarr.json": 0o640,
        "g/a/c": 0o710,
        "g/a/c/0": 0o710,
        "g/a/c/1": 0o710,
        "g/a/c/0/0": 0o640,
        "g/a/c/1/0": 0o640,
    }
    assert (tmp_path / "g" / "a" / "zarr.json").read_bytes() == b'{\n  "x": 1\n}\n'
    assert (tmp_path / "g" / "a" / "c" / "0" / "0").read_bytes() == b""
    with pytest.raises(FileExistsError):
        made.file(str(tmp_path / "g" / "a" / "zarr.json"))  # never over a file


def test_default_modes_are_the_umask_s():
    made = zarr_format._Maker("/nowhere")
    assert (made.root, made.directory_mode, made.file_mode) == ("/nowhere", 0o777, 0o666)


def test_laying_out_stops_at_the_next_file_once_cancelled(tmp_path):
    made = zarr_format._Maker(str(tmp_path))
    asked = []
    with (
        atomic.cancellation(lambda: asked.append(1) or len(asked) > 5),
        pytest.raises(KeyboardInterrupt),
    ):
        made.chunk_files(str(tmp_path / "a"), (100,), (1,))
    assert len(list((tmp_path / "a" / "c").iterdir())) == 5


def test_write_chunk_pads_edges_and_writes_little_endian(tmp_path):
    directory = tmp_path / "a"
    made = zarr_format._Maker(str(tmp_path))
    made.chunk_files(str(directory), (3, 3), (2, 2))
    zarr_format.write_chunk(str(directory), (1, 1), (2, 2), np.array([[7]], dtype=">i4"))
    assert (directory / "c" / "1" / "1").read_bytes() == np.array([7, 0, 0, 0], "<i4").tobytes()
    zarr_format.write_chunk(str(directory), (0, 0), (2, 2), np.arange(4, dtype="<f4").reshape(2, 2))
    assert (directory / "c" / "0" / "0").read_bytes() == np.arange(4, dtype="<f4").tobytes()
    with pytest.raises(FileNotFoundError):
        zarr_format.write_chunk(str(directory), (5, 5), (2, 2), np.zeros((2, 2), "<f4"))


def test_a_place_takes_whole_chunks_only(tmp_path):
    directory = tmp_path / "a"
    zarr_format._Maker(str(tmp_path)).chunk_files(str(directory), (5, 4), (2, 4))
    place = zarr_format.ZarrPlace(str(directory), (5, 4), (2, 4), F32)
    assert place.block_shape == (2, 4)
    assert place.write((4, 0), np.ones((1, 4), F32)) == str(directory / "c" / "2" / "0")
    with pytest.raises(ValueError) as caught:
        place.write((1, 0), np.ones((2, 4), F32))
    assert str(caught.value) == (
        "a Zarr block must be one whole chunk: got origin (1, 0) and shape (2, 4), "
        "chunk (0, 0) is at (0, 0) with shape (2, 4)"
    )
    with pytest.raises(ValueError, match="got origin \\(2, 0\\) and shape \\(1, 4\\)"):
        place.write((2, 0), np.ones((1, 4), F32))


def test_chunk_shapes_given_or_automatic_and_capped(monkeypatch):
    tensors = [TensorInfo("a", (10, 4), F32), TensorInfo("b", (3,), F32)]
    assert zarr_format._chunk_shapes(tensors, [(100, 2), None]) == [(10, 2), (3,)]
    assert zarr_format._chunk_shapes(tensors, None) == [(10, 4), (3,)]
    with pytest.raises(ValueError) as caught:
        zarr_format._chunk_shapes(tensors, [((5, 5), (4,)), None])
    assert str(caught.value).startswith("Zarr arrays have regular chunks; give one block shape")
    assert zarr_format._chunk_shapes([TensorInfo("z", (0, 4), F32)], [(1, 4)]) == [(1, 4)]
    monkeypatch.setattr(zarr_format, "MAX_CHUNKS", 7)
    assert zarr_format._chunk_shapes(tensors, [(2, 4), (3,)]) == [(2, 4), (3,)]  # 5 + 1
    assert zarr_format._chunk_shapes(tensors, [(10, 1), (1,)]) == [(10, 1), (1,)]  # 4 + 3
    with pytest.raises(ValueError) as caught:
        zarr_format._chunk_shapes(tensors, [(1, 4), (3,)])  # 10 + 1
    assert str(caught.value) == (
        "a Zarr store of tensor 'a' in chunks of 1,4 needs over 7 chunk files (one per "
        "chunk; 10 for this tensor); give larger --chunks"
    )
    with pytest.raises(ValueError, match="tensor 'b' in chunks of 1 needs over 7 chunk files"):
        zarr_format._chunk_shapes(tensors, [(2, 4), (1,)])  # 5 + 3


# --- the reader: nodes ----------------------------------------------------------------------------


def test_load_node_refusals(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    store.mkdir()
    assert refusal(store) == "shown/zarr.json: missing (every Zarr node has one)"
    os.mkfifo(store / "zarr.json")
    assert refusal(store) == "shown/zarr.json: is a FIFO (named pipe), not a file"
    os.unlink(store / "zarr.json")
    (store / "zarr.json").mkdir()
    assert refusal(store) == "shown/zarr.json: is a directory, not a file"
    (store / "zarr.json").rmdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps(node_of((2,), (2,))))
    (store / "zarr.json").symlink_to(tmp_path / "elsewhere.json")
    assert refusal(store) == "shown/zarr.json: is a symbolic link; refusing to follow it"
    os.unlink(store / "zarr.json")
    (store / "zarr.json").write_text("{}")
    real = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith("zarr.json"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(zarr_format.os, "open", denied)
    assert refusal(store) == "shown/zarr.json: cannot be read: Permission denied"


def test_load_node_opens_without_blocking_and_reads_blocking(tmp_path, monkeypatch):
    store = store_with(tmp_path, node_of((2,), (2,)))
    flags = []
    real = os.open
    monkeypatch.setattr(
        zarr_format.os, "open", lambda path, f, *a, **k: flags.append(f) or real(path, f, *a, **k)
    )
    zarr_format._load_node(str(store), (), "s")
    assert flags[0] & os.O_NONBLOCK and flags[0] & os.O_NOFOLLOW


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "{nope",
            "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        ('{"a": 1, "a": 2}', "key 'a' appears twice"),
        ('{"x": NaN}', "field 'x' is NaN, not a finite number"),
        (b'{"\xff": 1}', "not UTF-8 text (byte 2)"),
        ("[" * 70 + "]" * 70, "nested too deeply (70 levels; at most 64 are allowed)"),
        ("[]", "not a Zarr v3 node (zarr_format must be 3)"),
        ('{"zarr_format": 2}', "not a Zarr v3 node (zarr_format must be 3)"),
        ('{"zarr_format": 3}', "node_type must be 'array' or 'group'"),
        ('{"zarr_format": 3, "node_type": "other"}', "node_type must be 'array' or 'group'"),
        (
            '{"zarr_format": 3, "node_type": "group", "attributes": []}',
            "attributes must be an object",
        ),
    ],
)
def test_load_node_parses_a_bounded_zarr_v3_node(tmp_path, text, problem):
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_bytes(text.encode() if isinstance(text, str) else text)
    assert refusal(store) == f"shown/zarr.json: {problem}"


def test_load_node_reads_at_most_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(zarr_format, "MAX_NODE_BYTES", 1 << 20)
    node = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"p": ""}})
    pad = (1 << 20) - len(node)
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(node.replace('"p": ""', '"p": "' + "x" * pad + '"'))
    assert zarr_format.read_store(str(store)).arrays == ()  # exactly the cap
    (store / "zarr.json").write_text(node.replace('"p": ""', '"p": "' + "x" * (pad + 1) + '"'))
    assert refusal(store) == "shown/zarr.json: is larger than 1 MiB; refusing it"


def test_store_errors_cross_processes_as_plain_refusals():
    error = zarr_format.StoreError("s.zarr", ("a", "zarr.json"), "is broken")
    assert (str(error), error.entry, error.problem) == (
        "s.zarr/a/zarr.json: is broken",
        "a/zarr.json",
        "is broken",
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is UnreadableFile and str(again) == "s.zarr/a/zarr.json: is broken"
    root = zarr_format.StoreError("s.zarr", (), "empty")
    assert (str(root), root.entry) == ("s.zarr: empty", "")


# --- the reader: arrays ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"data_type": "complex64"}, "data type 'complex64' is not one vsgen writes"),
        ({"data_type": "x" * 60}, f"data type {'x' * 40!r} is not one vsgen writes"),
        ({"data_type": 5}, "data type 'int' is not one vsgen writes"),
        ({"data_type": None}, "data type 'NoneType' is not one vsgen writes"),
        ({"shape": "4"}, "shape must be at most 64 non-negative integers below 2**63"),
        ({"shape": [4, -1]}, "shape must be at most 64 non-negative integers below 2**63"),
        ({"shape": [4, 1.0]}, "shape must be at most 64 non-negative integers below 2**63"),
        ({"shape": [True, 4]}, "shape must be at most 64 non-negative integers below 2**63"),
        ({"shape": [2**63, 4]}, "shape must be at most 64 non-negative integers below 2**63"),
        (
            {
                "shape": [1] * 65,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1] * 65}},
            },
            "shape must be at most 64 non-negative integers below 2**63",
        ),
        (
            {
                "shape": [2**62, 2],
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2**62, 2]}},
            },
            "shape holds 2**63 values or more",
        ),
        ({"chunk_grid": []}, "only regular chunk grids of one positive extent per axis are read"),
        (
            {"chunk_grid": {"name": "rectilinear", "configuration": {"chunk_shape": [2, 2]}}},
            "only regular chunk grids of one positive extent per axis are read",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": []}},
            "only regular chunk grids of one positive extent per axis are read",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": 2}}},
            "only regular chunk grids of one positive extent per axis are read",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}}},
            "only regular chunk grids of one positive extent per axis are read",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 0]}}},
            "only regular chunk grids of one positive extent per axis are read",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, True]}}},
            "only regular chunk grids of one positive extent per axis are read",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2**63]}}},
            "only regular chunk grids of one positive extent per axis are read",
        ),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2**14, 2**14]}}},
            "chunks of (16384, 16384) hold over 2**27 values",
        ),
        ({"codecs": []}, "codecs other than uncompressed little-endian bytes are not read"),
        (
            {"codecs": [{"name": "bytes"}]},
            "codecs other than uncompressed little-endian bytes are not read",
        ),
        (
            {"codecs": [{"name": "bytes", "configuration": {"endian": "big"}}]},
            "codecs other than uncompressed little-endian bytes are not read",
        ),
        ({"chunk_key_encoding": {"name": "v2"}}, "only the default '/' chunk key encoding is read"),
        (
            {"chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}}},
            "only the default '/' chunk key encoding is read",
        ),
        ({"storage_transformers": [{"name": "x"}]}, "storage transformers are not read"),
        ({"fill_value": "NaN"}, "fill_value must be a number"),
        ({"fill_value": None}, "fill_value must be a number"),
    ],
)
def test_array_refusals(tmp_path, changes, problem):
    store = store_with(tmp_path, node_of((4, 4), (2, 2), **changes))
    assert refusal(store) == f"shown/zarr.json: array 's': {problem}"


def test_an_array_name_is_cut_in_messages(tmp_path):
    long = "n" * 250
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    (store / long).mkdir()
    (store / long / "zarr.json").write_text(json.dumps(node_of((4,), (2,), data_type="complex64")))
    assert (
        refusal(store)
        == f"shown/{long}/zarr.json: array {'n' * 200!r}: data type 'complex64' is not one "
        "vsgen writes"
    )


@pytest.mark.parametrize(
    ("shape", "chunks", "dtype", "codecs"),
    [
        ((), (), "float32", [{"name": "bytes"}]),  # a scalar may omit the endian
        ((4,), (2,), "uint8", [{"name": "bytes"}]),  # so may a one-byte type
        ((4,), (2,), "bool", [{"name": "bytes"}]),
        ((4,), (2,), "float32", [{"name": "bytes", "configuration": {"endian": "little"}}]),
    ],
)
def test_array_codecs_accepted(tmp_path, shape, chunks, dtype, codecs):
    store = store_with(tmp_path, node_of(shape, chunks, dtype, codecs=codecs))
    [array] = zarr_format.read_store(str(store)).arrays
    assert array.dtype == np.dtype(dtype) and array.shape == shape


def test_array_limits_at_and_past(tmp_path, monkeypatch):
    store = store_with(tmp_path, node_of([1] * 64, [1] * 64), "rank.zarr")
    assert zarr_format.read_store(str(store)).arrays[0].shape == (1,) * 64
    store = store_with(tmp_path, node_of([2**62, 1], [2**62, 1]), "values.zarr")
    monkeypatch.setattr(zarr_format, "_MAX_CHUNK_VALUES", 2**63)
    assert zarr_format.read_store(str(store)).arrays[0].shape == (2**62, 1)
    monkeypatch.setattr(zarr_format, "_MAX_CHUNK_VALUES", 1 << 27)
    store = store_with(tmp_path, node_of([1 << 27], [1 << 27]), "chunk.zarr")
    assert zarr_format.read_store(str(store)).arrays[0].chunk_bytes == 4 << 27
    monkeypatch.setattr(zarr_format, "MAX_CHUNKS", 6)
    store = store_with(tmp_path, node_of([3, 4], [1, 2]), "six.zarr")
    assert zarr_format.read_store(str(store)).arrays[0].chunk_count == 6
    store = store_with(tmp_path, node_of([7, 4], [1, 4]), "seven.zarr")
    assert refusal(store) == (
        "shown/zarr.json: array 'seven': (7, 4) in chunks of (1, 4) is over 6 chunks "
        "(vsgen writes at most that many chunk files)"
    )
    store = store_with(tmp_path, node_of([7, 0], [1, 4]), "none.zarr")
    assert refusal(store).endswith("is over 6 chunks (vsgen writes at most that many chunk files)")
    store = store_with(tmp_path, node_of([0, 7], [1, 4]), "empty.zarr")
    assert zarr_format.read_store(str(store)).arrays[0].chunk_count == 0


def test_array_properties(tmp_path):
    store = store_with(
        tmp_path, node_of((5, 4), (2, 4), "int16", fill_value=7, attributes={"a": 1})
    )
    [array] = zarr_format.read_store(str(store), "shown").arrays
    assert array.info == TensorInfo("s", (5, 4), np.dtype("int16"))
    assert (array.size, array.chunk_bytes, array.chunk_count, array.in_rows) == (20, 16, 3, True)
    assert (array.store, array.display, array.parts, array.directory) == (
        str(store),
        "shown",
        (),
        str(store),
    )
    assert array.attributes == {"a": 1}
    tiles = store_with(tmp_path, node_of((5, 4), (2, 2)), "t.zarr")
    assert zarr_format.read_store(str(tiles)).arrays[0].in_rows is False
    scalar = store_with(tmp_path, node_of((), ()), "scalar.zarr")
    assert zarr_format.read_store(str(scalar)).arrays[0].chunk_count == 1


# --- the reader: the walk -------------------------------------------------------------------------


def group(path: Path, attributes: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes or {}})
    )
    return path


def array(path: Path, shape=(2,), chunks=(2,)) -> Path:
    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps(node_of(shape, chunks)))
    return path


def test_read_store_walks_groups_and_ignores_what_is_not_a_node(tmp_path):
    store = group(tmp_path / "s.zarr", {"vsgen": {"tensors": {"z": {}, "g/b": {}}}})
    array(store / "a")
    array(store / "z")
    array(store / "g" / "b")
    group(store / "g")
    (store / "notes.txt").write_text("mine")
    (store / "not-a-node").mkdir()
    array(store / "not-a-node" / "hidden")  # below a directory that is no node: not read
    os.mkfifo(store / "pipe")
    found = zarr_format.read_store(str(store))
    assert [a.name for a in found.arrays] == ["z", "g/b", "a"]  # recorded first, then by name
    assert sorted(found.groups) == [(), ("g",)]
    assert found.attributes == {"vsgen": {"tensors": {"z": {}, "g/b": {}}}}
    assert found.path == str(store)


def test_read_store_refuses_links_and_special_node_documents(tmp_path):
    store = group(tmp_path / "s.zarr")
    array(tmp_path / "elsewhere")
    (store / "a").symlink_to(tmp_path / "elsewhere")
    assert refusal(store) == "shown/a: is a symbolic link; refusing to follow it"
    os.unlink(store / "a")
    (store / "f").symlink_to(tmp_path / "elsewhere" / "zarr.json")
    assert refusal(store) == "shown/f: is a symbolic link; refusing to follow it"
    os.unlink(store / "f")
    (store / "b").mkdir()
    os.mkfifo(store / "b" / "zarr.json")
    assert refusal(store) == "shown/b/zarr.json: is a FIFO (named pipe), not a file"
    os.unlink(store / "b" / "zarr.json")
    (store / "b" / "zarr.json").symlink_to(tmp_path / "elsewhere" / "zarr.json")
    assert refusal(store) == "shown/b/zarr.json: is a symbolic link, not a file"


def test_read_store_caps_nodes_depth_and_arrays(tmp_path, monkeypatch):
    store = group(tmp_path / "s.zarr")
    for index in range(3):
        array(store / f"a{index}")
    group(store / "g")
    monkeypatch.setattr(zarr_format, "MAX_NODES", 5)
    assert len(zarr_format.read_store(str(store)).arrays) == 3  # 5 nodes with the root
    monkeypatch.setattr(zarr_format, "MAX_NODES", 4)
    assert refusal(store) == "shown/g: the store holds over 4 nodes; refusing to read further"
    monkeypatch.setattr(zarr_format, "MAX_NODES", 100)
    monkeypatch.setattr(zarr_format, "MAX_TENSORS", 3)
    assert len(zarr_format.read_store(str(store)).arrays) == 3
    array(store / "a3")
    monkeypatch.setattr(zarr_format, "MAX_TENSORS", 3)
    assert refusal(store) == "shown: holds over 3 arrays"
    deep = group(tmp_path / "d.zarr")
    here = deep
    for _ in range(3):
        here = group(here / "g")
    monkeypatch.setattr(zarr_format, "MAX_NODE_DEPTH", 3)
    assert zarr_format.read_store(str(deep)).groups[-1] == ("g", "g", "g")
    group(here / "g")
    assert refusal(deep) == "shown/g/g/g/g: nested over 3 groups deep; refusing to read further"


def test_a_root_array_is_named_by_its_record_or_its_store(tmp_path):
    named = store_with(
        tmp_path, node_of((2,), (2,), attributes={"vsgen": {"tensors": {"w.x": {}}}}), "a.zarr"
    )
    assert zarr_format.read_store(str(named)).arrays[0].name == "w.x"
    two = store_with(
        tmp_path,
        node_of((2,), (2,), attributes={"vsgen": {"tensors": {"a": {}, "b": {}}}}),
        "b.zarr",
    )
    assert zarr_format.read_store(str(two)).arrays[0].name == "b"
    empty = store_with(
        tmp_path, node_of((2,), (2,), attributes={"vsgen": {"tensors": {"": {}}}}), "c.zarr"
    )
    assert zarr_format.read_store(str(empty)).arrays[0].name == "c"
    odd = store_with(tmp_path, node_of((2,), (2,), attributes={"vsgen": []}), "d.zarr")
    assert zarr_format.read_store(str(odd) + "/").arrays[0].name == "d"
    assert zarr_format._root_array_name("/", {}) == "weight"
    assert zarr_format._recorded_order(
        {"attributes": {"vsgen": {"tensors": {"a": 1, "b": 2}}}}
    ) == ["a", "b"]
    assert zarr_format._recorded_order({"attributes": {"vsgen": {"tensors": []}}}) == []
    assert zarr_format._recorded_order({"attributes": {}}) == []


def test_metadata_of_a_store(tmp_path):
    document = {"tensors": {"w": {"b": 2, "a": 1}}, "format": 1}
    store = store_with(tmp_path, node_of((2,), (2,), attributes={"vsgen": document}))
    expected = {"vsgen": '{"format":1,"tensors":{"w":{"a":1,"b":2}}}'}
    assert zarr_format.read_metadata(str(store)) == expected
    assert zarr_format._metadata(zarr_format.read_store(str(store))) == expected
    fmt = zarr_format.ZarrFormat("zarr")
    assert fmt.read_metadata(str(store)) == expected
    assert fmt.open(str(store)).metadata == expected
    bare = store_with(tmp_path, node_of((2,), (2,)), "bare.zarr")
    assert zarr_format.read_metadata(str(bare)) == {}
    assert fmt.open(str(bare)).metadata == {}
    with pytest.raises(UnreadableFile, match="zarr.json: missing"):
        zarr_format.read_metadata(str(tmp_path))


# --- the reader: chunk files ----------------------------------------------------------------------


def one_chunk_store(tmp_path: Path) -> Path:
    return write(tmp_path / "s.zarr", [TensorInfo("w", (4, 3), F32)], [(2, 3)])


def chunk_refusal(store: Path) -> str:
    [array_] = zarr_format.read_store(str(store), "shown").arrays
    with pytest.raises(UnreadableFile) as caught:
        list(array_.chunk_values(100))
    return str(caught.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda chunk, tmp: chunk.unlink(),
            "c/1/0: chunk of array 's' is missing (vsgen writes every chunk)",
        ),
        (
            lambda chunk, tmp: (chunk.unlink(), os.mkfifo(chunk)),
            "c/1/0: chunk of array 's' is a FIFO (named pipe), not a file",
        ),
        (
            lambda chunk, tmp: (chunk.unlink(), chunk.mkdir()),
            "c/1/0: chunk of array 's' is a directory, not a file",
        ),
        (
            lambda chunk, tmp: (chunk.unlink(), chunk.symlink_to(tmp / "x")),
            "c/1/0: chunk of array 's' is a symbolic link, not a file",
        ),
        (
            lambda chunk, tmp: chunk.write_bytes(b"x" * 23),
            "c/1/0: chunk of array 's' has 23 bytes; the chunk holds 24",
        ),
        (
            lambda chunk, tmp: chunk.write_bytes(b"x" * 25),
            "c/1/0: chunk of array 's' has 25 bytes; the chunk holds 24",
        ),
    ],
)
def test_chunk_file_refusals(tmp_path, change, problem):
    store = one_chunk_store(tmp_path)
    (tmp_path / "x").write_bytes(b"\0" * 24)
    change(store / "c" / "1" / "0", tmp_path)
    assert chunk_refusal(store) == f"shown/{problem}"


def test_a_chunk_reached_through_a_linked_or_file_directory_is_refused(tmp_path):
    store = one_chunk_store(tmp_path)
    os.rename(store / "c" / "1", tmp_path / "moved")
    (store / "c" / "1").symlink_to(tmp_path / "moved")
    problem = (
        "chunk of array 's' is reached through a symbolic link or a file; refusing to follow it"
    )
    assert chunk_refusal(store) == f"shown/c/1/0: {problem}"
    os.unlink(store / "c" / "1")
    (store / "c" / "1").write_bytes(b"")
    assert chunk_refusal(store) == f"shown/c/1/0: {problem}"


def test_chunk_values_opens_every_chunk_once_and_closes_it(tmp_path, monkeypatch):
    store = write(tmp_path / "s.zarr", [TensorInfo("w", (5, 3), F32)], [(2, 3)])
    [array_] = zarr_format.read_store(str(store)).arrays
    closed = []
    real = os.close
    monkeypatch.setattr(zarr_format.os, "close", lambda fd: closed.append(fd) or real(fd))
    pieces = list(array_.chunk_values(4))
    assert [number for number, _ in pieces] == [0, 0, 1, 1, 2]
    assert np.concatenate([p for _, p in pieces]).tolist() == list(range(15))
    opened_files = len(closed)
    assert opened_files >= 3
    assert list(array_.chunk_values(100, first_chunk=2))[0][1].tolist() == [12, 13, 14]


def test_a_truncated_read_is_refused(tmp_path, monkeypatch):
    store = one_chunk_store(tmp_path)
    [array_] = zarr_format.read_store(str(store), "shown").arrays
    monkeypatch.setattr(zarr_format.os, "pread", lambda fd, count, offset: b"\0" * (count - 1))
    with pytest.raises(UnreadableFile) as caught:
        list(array_.chunk_values(100))
    assert str(caught.value) == "shown/c/0/0: chunk of array 's' is truncated"


def test_pieces_split_wide_rows_and_cut_padding():
    assert list(zarr_format._pieces((4, 3), (4, 3), 100)) == [(0, 12, None)]
    assert list(zarr_format._pieces((4, 3), (4, 3), 6)) == [(0, 6, None), (6, 6, None)]
    assert list(zarr_format._pieces((4, 3), (4, 3), 7)) == [(0, 6, None), (6, 6, None)]
    assert list(zarr_format._pieces((4, 3), (3, 3), 5)) == [
        (0, 3, None),
        (3, 3, None),
        (6, 3, None),
    ]
    [(offset, count, cut)] = list(zarr_format._pieces((4, 3), (2, 2), 100))
    assert (offset, count) == (0, 6) and cut[0] == (2, 3)
    assert cut[1] == (slice(None), slice(0, 2))
    assert list(zarr_format._pieces((2, 8), (2, 5), 4)) == [
        (0, 4, None),
        (4, 1, None),
        (8, 4, None),
        (12, 1, None),
    ]
    assert list(zarr_format._pieces((), (), 3)) == [(0, 1, None)]
    assert list(zarr_format._pieces((4,), (0,), 3)) == []


def test_values_in_order_need_chunks_of_whole_rows(tmp_path):
    store = write(tmp_path / "s.zarr", [TensorInfo("w", (4, 4), F32)], [(2, 2)])
    fmt = zarr_format.ZarrFormat("zarr")
    [tensor] = fmt.open(str(store)).tensors
    with pytest.raises(UnreadableFile) as caught:
        list(fmt.values(tensor, 100, False))
    assert str(caught.value) == (
        f"{store}: array 's' is chunked in tiles (2, 2); only arrays chunked in whole rows "
        "are read in order"
    )
    values = np.concatenate(list(fmt.values(tensor, 100, True)))
    assert sorted(values.tolist()) == list(range(16))


def test_values_from_starts_inside_a_chunk(tmp_path):
    store = write(tmp_path / "s.zarr", [TensorInfo("w", (6, 2), F32)], [(2, 2)])
    fmt = zarr_format.ZarrFormat("zarr")
    [tensor] = fmt.open(str(store)).tensors
    for start in (0, 1, 3, 4, 11):
        assert np.concatenate(list(fmt.values_from(tensor, start))).tolist() == list(
            range(start, 12)
        )
    assert list(fmt.values_from(tensor, 12)) == []
    scalar = write(tmp_path / "c.zarr", [TensorInfo("w", (), F32)])
    [tensor] = fmt.open(str(scalar)).tensors
    assert np.concatenate(list(fmt.values_from(tensor, 0))).tolist() == [0.0]


def test_open_gives_each_tensor_its_array(tmp_path):
    store = write(
        tmp_path / "s.zarr",
        [TensorInfo("a", (2, 3), np.dtype("int32")), TensorInfo("b", (4,), F32)],
    )
    fmt = zarr_format.ZarrFormat("zarr")
    opened = fmt.open(str(store))
    assert (opened.path, opened.format) == (str(store), "zarr")
    a, b = opened.tensors
    assert (a.path, a.format, a.name, a.shape, a.dtype, a.itemsize) == (
        str(store),
        "zarr",
        "a",
        (2, 3),
        "int32",
        4,
    )
    assert a.reader is fmt and a.source.name == "a" and b.source.name == "b"


# --- the format -----------------------------------------------------------------------------------


def test_the_format_s_names_and_types():
    fmt = zarr_format.ZarrFormat("zarr")
    fmt.check_names([TensorInfo("a/b", (1,), F32), TensorInfo("c", (1,), F32)])
    with pytest.raises(ValueError, match="'a' is both an array and a group in zarr"):
        fmt.check_names([TensorInfo("a", (1,), F32), TensorInfo("a/b", (1,), F32)])
    with pytest.raises(ValueError, match="cannot be stored in zarr"):
        fmt.check_name("a//b")
    for dtype in ("int8", "uint64", "bool", "float16"):
        fmt.check_dtypes([TensorInfo("a", (1,), np.dtype(dtype))])
    with pytest.raises(ValueError) as caught:
        fmt.check_dtypes([TensorInfo("a", (1,), np.dtype("complex64"))])
    assert str(caught.value).startswith(
        "dtype complex64 cannot be stored in .zarr (the format has no complex type)"
    )
    import ml_dtypes

    # bfloat16 is stored (the zarr-extensions data type).
    fmt.check_dtypes([TensorInfo("a", (1,), np.dtype(ml_dtypes.bfloat16))])
    from types import SimpleNamespace

    with pytest.raises(ValueError) as caught:  # no TensorInfo holds it (yet)
        fmt.check_dtypes([SimpleNamespace(name="a", dtype=np.dtype("datetime64[s]"))])
    assert str(caught.value) == (
        "dtype datetime64[s] cannot be stored in .zarr (Zarr v3 has no such type); use --format "
        "safetensors-sharded, .safetensors or --format raw"
    )


def test_holds_knows_a_store_by_its_root_document(tmp_path):
    fmt = zarr_format.ZarrFormat("zarr")
    assert not fmt.holds(str(tmp_path))
    (tmp_path / "zarr.json").symlink_to(tmp_path / "nowhere")
    assert fmt.holds(str(tmp_path))  # a dangling link too: refused when opened
    assert not fmt.holds(str(tmp_path / "zarr.json"))


# --- the judge of --force -------------------------------------------------------------------------


def test_the_judge_knows_nodes_chunk_directories_and_chunk_files(tmp_path):
    store = write(
        tmp_path / "s.zarr",
        [TensorInfo("g/a", (5, 4), F32), TensorInfo("b", (), F32), TensorInfo("c", (3,), F32)],
        [(2, 4), None, (1,)],
    )
    judge = zarr_format.ZarrFormat("zarr").judge(str(store), "shown")
    assert judge.directory(("g",)) is None and judge.directory(("g", "a")) is None
    assert (
        judge.directory(("g", "a", "c")) is None and judge.directory(("g", "a", "c", "2")) is None
    )
    assert judge.directory(("g", "a", "c", "3")) == "not part of the store"  # outside the grid
    assert judge.directory(("g", "a", "c", "02")) == "not part of the store"
    assert judge.directory(("g", "a", "c", "1", "0")) == "not part of the store"  # a file's place
    assert judge.directory(("g", "a", "d")) == "not part of the store"
    assert judge.directory(("b", "c")) == "not part of the store"  # a scalar's c is a file
    assert judge.directory(("x",)) == "not part of the store"
    assert judge.file(("zarr.json",), 5, "") is None
    assert (
        judge.file(("g", "zarr.json"), 5, "") is None
        and judge.file(("g", "a", "zarr.json"), 5, "") is None
    )
    assert judge.file(("x", "zarr.json"), 5, "") == "not part of the store"
    assert judge.file(("g", "a", "c", "2", "0"), 32, "") is None
    assert judge.file(("g", "a", "c", "2", "0"), 31, "") == "31 bytes; vsgen writes 32 per chunk"
    assert judge.file(("g", "a", "c", "2", "1"), 32, "") == "not a chunk of the store"
    assert judge.file(("g", "a", "c", "2"), 32, "") == "not a chunk of the store"
    assert judge.file(("g", "a", "c", "-1", "0"), 32, "") == "not a chunk of the store"
    assert judge.file(("g", "a", "c", "٢", "0"), 32, "") == "not a chunk of the store"
    assert judge.file(("g", "a", "notes.txt"), 1, "") == "not part of the store"
    assert judge.file(("g", "notes.txt"), 1, "") == "not part of the store"
    assert (
        judge.file(("b", "c"), 4, "") is None
        and judge.file(("b", "c"), 8, "") == "8 bytes; vsgen writes 4 per chunk"
    )
    assert (
        judge.file(("c", "c", "2"), 4, "") is None
        and judge.file(("c", "c", "3"), 4, "") == "not a chunk of the store"
    )
    assert atomic.survey(str(store), judge).foreign is None


def test_the_judge_refuses_a_store_it_cannot_read(tmp_path, monkeypatch):
    store = store_with(tmp_path, node_of((2,), (2,), data_type="complex64"))
    fmt = zarr_format.ZarrFormat("zarr")
    with pytest.raises(atomic.NotOwned) as caught:
        fmt.judge(str(store), "shown")
    assert (caught.value.entry, caught.value.reason) == (
        "zarr.json",
        "array 's': data type 'complex64' is not one vsgen writes",
    )
    assert (
        str(caught.value)
        == "shown/zarr.json: array 's': data type 'complex64' is not one vsgen writes"
    )

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(zarr_format.os, "scandir", denied)
    group(tmp_path / "g.zarr")
    with pytest.raises(atomic.NotOwned) as caught:
        fmt.judge(str(tmp_path / "g.zarr"), "shown")
    assert (caught.value.entry, caught.value.reason) == ("", "Permission denied")
