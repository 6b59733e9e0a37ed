"""vsgen.formats.readers: the one hardened reader.

Valid files are checked against the formats' own libraries (numpy, h5py,
safetensors); hostile ones must end in a ``ValueError`` whose message names
the file, never in another exception. Hypothesis mutates valid files (flipped
bytes, truncation, a resized header) and feeds them to the readers; HDF5
mutations are read in a forked child, so a crash of the C library would be
seen as a failure instead of ending the test run.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsgen import formats, provenance, verify
from vsgen.formats import h5 as h5_format
from vsgen.formats import readers

h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="uses fork, /dev/zero and FIFOs (Linux)"
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


# --- valid files, read back like their own libraries do ------------------------------------


def write_safetensors(path: Path, arrays: dict[str, np.ndarray], metadata=None) -> None:
    from safetensors.numpy import save_file

    save_file(arrays, str(path), metadata=metadata)


def test_safetensors_any_dtype_any_order(tmp_path):
    arrays = {
        "z": np.arange(6, dtype=np.float64).reshape(2, 3),
        "a": np.array([True, False, True]),
        "m": np.arange(5, dtype=np.int64),
        "h": np.linspace(-1, 1, 7).astype(np.float16),
        "e": np.zeros((0, 4), np.float32),
    }
    path = tmp_path / "m.safetensors"
    write_safetensors(path, arrays, {"k": "v"})
    opened = readers.open_file(str(path))
    assert opened.format == "safetensors" and opened.metadata == {"k": "v"}
    assert sorted(opened.names) == sorted(arrays)
    for tensor in opened.tensors:
        values = list(readers.read_values(tensor, 2))
        flat = np.concatenate(values) if values else np.empty(0, tensor.numpy_dtype())
        assert flat.dtype == arrays[tensor.name].dtype
        assert flat.tobytes() == arrays[tensor.name].tobytes()


def test_npy_big_endian_and_fortran(tmp_path):
    values = np.arange(12, dtype=">f4").reshape(3, 4)
    np.save(tmp_path / "b.npy", values)
    np.save(tmp_path / "f.npy", np.asfortranarray(values.astype("<f8")))
    big = readers.open_file(str(tmp_path / "b.npy")).tensors[0]
    assert big.byteorder == ">" and big.name == "b"
    assert np.concatenate(list(big.chunks(5))).tolist() == values.ravel().tolist()
    fortran = readers.open_file(str(tmp_path / "f.npy")).tensors[0]
    assert fortran.fortran_order
    with pytest.raises(ValueError, match="Fortran order"):
        readers.read_tensor_infos(str(tmp_path / "f.npy"))


def test_npy_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a numeric dtype"):
        readers.open_file(str(path))


def test_h5_walk_order_and_values(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w", track_order=True) as h5:
        h5["z"] = np.arange(4, dtype=np.float32)
        group = h5.create_group("g", track_order=True)
        group["b"] = np.ones((2, 3), np.float64)
        group["a"] = np.arange(6, dtype=np.int16).reshape(3, 2)
        h5["c"] = np.float32(5)
        h5.create_dataset(
            "gz",
            data=np.arange(1000, dtype=np.float32),
            chunks=(100,),
            compression="gzip",
            shuffle=True,
        )
    opened = readers.open_file(str(path))
    assert opened.names == ["z", "g/b", "g/a", "c", "gz"]  # creation order
    with h5py.File(path, "r") as h5:
        for tensor in opened.tensors:
            flat = np.concatenate(list(tensor.chunks(7)))
            assert flat.tobytes() == np.asarray(h5[tensor.name][()]).ravel().tobytes()


def test_h5_without_creation_order_is_walked_by_name(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5["b"] = np.zeros(2, np.float32)
        h5["a"] = np.zeros(2, np.float32)
    assert readers.open_file(str(path)).names == ["a", "b"]


def test_h5_link_and_object_caps(tmp_path, monkeypatch):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        for index in range(12):
            h5[f"t{index}"] = np.zeros(1, np.float32)
    monkeypatch.setattr(h5_format, "H5_MAX_LINKS", 10)
    with pytest.raises(ValueError, match="over 10 links"):
        readers.open_file(str(path))
    monkeypatch.setattr(h5_format, "H5_MAX_LINKS", 100)
    monkeypatch.setattr(h5_format, "H5_MAX_OBJECTS", 5)
    with pytest.raises(ValueError, match="over 5 objects"):
        readers.open_file(str(path))


def test_h5_chunk_row_cache_cap(tmp_path, monkeypatch):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("w", data=np.zeros((64, 64), np.float32), chunks=(64, 1))
    tensor = readers.open_file(str(path)).tensors[0]
    monkeypatch.setattr(h5_format, "H5_MAX_CACHE_BYTES", 1000)
    with pytest.raises(ValueError, match="chunk cache"):
        list(tensor.chunks())
    monkeypatch.undo()
    assert np.concatenate(list(tensor.chunks(100))).sum() == 0


def test_fifo_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a FIFO"):
        readers.open_file(str(fifo))
    with pytest.raises(ValueError, match="character device"):
        readers.open_file("/dev/null")
    with pytest.raises(ValueError, match="file not found"):
        readers.open_file(str(tmp_path / "missing.h5"))


# --- output size and old files ------------------------------------------------------------


def h5_of_tiny_tensors(path: Path, count: int, shape: tuple[int, ...] = (2, 2)) -> None:
    from vsgen import modelspec

    tensors = {f"t{i}": {"shape": list(shape)} for i in range(count)}
    spec = modelspec.parse_spec({"tensors": tensors})
    job = modelspec.build_job(spec, seed=0)
    with formats.open_output(
        str(path),
        "h5",
        job.infos,
        metadata=job.metadata(),
        tensor_metadata=job.tensor_metadata(),
    ) as output:
        formats.write_chunks(output, (chunk for plan in job.plans for chunk in plan.chunks()))
        output.commit()


def test_h5_size_is_linear_in_tensors(tmp_path):
    small, large = tmp_path / "a.h5", tmp_path / "b.h5"
    h5_of_tiny_tensors(small, 100)
    h5_of_tiny_tensors(large, 400)
    per_tensor_small = small.stat().st_size / 100
    per_tensor_large = large.stat().st_size / 400
    # Quadratic storage (the whole record on every dataset) would make this ~4.
    assert per_tensor_large / per_tensor_small < 1.3
    with h5py.File(large, "r") as h5:
        own = json.loads(h5["t7"].attrs["vsgen"])["tensors"]
        assert list(own) == ["t7"]
        assert json.loads(h5.attrs["vsgen"])["tensors"]["t7"] == own["t7"]


def test_files_of_vsgen_0_1_are_read(tmp_path):
    """vsgen 0.1 put the whole document on every dataset too; check still uses the file's."""
    from click.testing import CliRunner

    from vsgen.cli import cli

    path = tmp_path / "old.h5"
    h5_of_tiny_tensors(path, 3, (16, 16))
    with h5py.File(path, "r+") as h5:
        document = h5.attrs["vsgen"]
        for name in ("t0", "t1", "t2"):
            h5[name].attrs["vsgen"] = document
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("  consistent\n") == 3  # three rows
    assert result.stdout.endswith("verdict: consistent\n")
    copy = tmp_path / "copy.h5"
    result = CliRunner().invoke(cli, ["sample", "--config-from", str(path), "-o", str(copy)])
    assert result.exit_code == 0, result.stderr
    with h5py.File(path, "r") as old, h5py.File(copy, "r") as new:
        for name in ("t0", "t1", "t2"):
            assert old[name][()].tobytes() == new[name][()].tobytes()


# --- fuzzing: mutated valid files ---------------------------------------------------------


def read_everything(path: str) -> None:
    """Everything check/--like/--config-from read from a file."""
    opened = readers.open_file(path)
    for tensor in opened.tensors:
        for _ in readers.read_values(tensor, 64):
            pass
    if opened.format != "npy" and provenance.METADATA_KEY in opened.metadata:
        provenance.parse_metadata(opened.metadata, path)
    float_tensors = [t for t in opened.tensors if t.dtype in ("float16", "float32", "float64")]
    if float_tensors:
        from vsgen import HeNormal

        verify.verify_tensors(opened, HeNormal())


def valid_safetensors(tmp_path: Path) -> bytes:
    from click.testing import CliRunner

    from vsgen.cli import cli

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tensors": {"w": {"shape": [6, 5]}, "b": {"shape": [5]}}}))
    out = tmp_path / "valid.safetensors"
    result = CliRunner().invoke(
        cli, ["sample", "--spec", str(spec), "--seed", "1", "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.stderr
    return out.read_bytes()


MUTATION = st.one_of(
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    ),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("length"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("length-delta"), st.integers(-64, 64)),
)


def mutate(data: bytes, mutation: tuple, length_at: int = 0, length_size: int = 8) -> bytes:
    kind, argument = mutation
    buffer = bytearray(data)
    if kind == "flip":
        for position, mask in argument:
            buffer[position % len(buffer)] ^= mask
    elif kind == "truncate":
        del buffer[argument % (len(buffer) + 1) :]
    else:
        fmt = "<Q" if length_size == 8 else "<H"
        (old,) = struct.unpack_from(fmt, buffer, length_at)
        new = argument if kind == "length" else old + argument
        struct.pack_into(fmt, buffer, length_at, new % (1 << (8 * length_size)))
    return bytes(buffer)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    npy = folder / "w.npy"
    np.save(npy, np.linspace(-0.1, 0.1, 40, dtype=np.float32).reshape(8, 5))
    return {"safetensors": valid_safetensors(folder), "npy": npy.read_bytes()}


def assert_clean_refusal_or_success(path: Path) -> None:
    try:
        read_everything(str(path))
    except ValueError as error:  # UnreadableFile and NoExpectationError are ValueErrors
        message = str(error)
        assert "\n" not in message and message, message
    except OSError:  # reading the file itself failed: a runtime failure, also clean
        pass


@FUZZ
@given(mutation=MUTATION)
def test_fuzzed_safetensors(tmp_path, valid_files, mutation):
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(mutate(valid_files["safetensors"], mutation))
    assert_clean_refusal_or_success(path)


@FUZZ
@given(mutation=MUTATION)
def test_fuzzed_npy(tmp_path, valid_files, mutation):
    path = tmp_path / "fuzzed.npy"
    path.write_bytes(mutate(valid_files["npy"], mutation, length_at=8, length_size=2))
    assert_clean_refusal_or_success(path)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=MUTATION.filter(lambda m: m[0] in ("flip", "truncate")))
def test_fuzzed_h5_in_a_child_process(tmp_path, mutation):
    """HDF5 parses in C: each mutated file is read in a forked child, with a time limit."""
    source = tmp_path / "source.h5"
    if not source.exists():
        with h5py.File(source, "w", track_order=True) as h5:
            h5["w"] = np.linspace(-0.1, 0.1, 64, dtype=np.float32).reshape(8, 8)
            h5.create_group("g")["b"] = np.zeros(4, np.float32)
            h5.attrs["vsgen"] = "{}"
    path = tmp_path / "fuzzed.h5"
    path.write_bytes(mutate(source.read_bytes(), mutation))
    outcome = run_in_child(lambda: assert_clean_refusal_or_success(path))
    assert outcome == "ok", outcome


def run_in_child(action, seconds: float = 20.0) -> str:
    """Run ``action`` in a forked child: ``"ok"``, the exception's repr, or how it died."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(reader)
        try:
            action()
            result = "ok"
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            result = f"{type(error).__name__}: {error}"
        try:
            os.write(writer, pickle.dumps(result)[:60000])
        finally:
            os._exit(0)
    os.close(writer)
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(reader)
            return f"hung for {seconds} s"
        time.sleep(0.002)
    data = os.read(reader, 65536)
    os.close(reader)
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return pickle.loads(data) if data else "no result"


# --- ranges of a tensor (what --like copies block by block) -------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".h5", ".safetensors", ".zarr"])
def test_read_tensor_range_is_the_slice_of_the_flat_tensor(tmp_path, suffix):
    values = np.arange(-30, 30, dtype=np.int32).reshape(6, 10)
    path = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        np.save(path, values)
        name = "m"
    elif suffix == ".h5":
        with h5py.File(path, "w") as h5:
            h5.create_dataset("w", data=values, chunks=(2, 10))
        name = "w"
    elif suffix == ".safetensors":
        write_safetensors(path, {"w": values})
        name = "w"
    else:
        from vsgen.formats import parallel

        output = parallel.open_parallel_output(
            str(path),
            "zarr",
            [formats.TensorInfo("w", (6, 10), values.dtype)],
            chunk_shapes=[(4, 10)],
        )
        with output:
            place = output.places[0]
            for row in (0, 4):
                parallel.write_block(place, (row, 0), values[row : row + 4])
            parallel.sync_written(output.temp)
            output.commit()
        name = "m"  # a root array without provenance is named after the store
    flat = values.reshape(-1)
    for start, stop in [(0, 60), (0, 1), (7, 33), (39, 41), (59, 60), (25, 25), (0, 0), (60, 60)]:
        got = readers.read_tensor_range(str(path), name, start, stop)
        assert got.dtype == np.int32 and got.tobytes() == flat[start:stop].tobytes(), (start, stop)
        if stop > start:
            got[0] = 99  # a copy, never a view of a cached piece
            assert readers.read_tensor_range(str(path), name, start, stop)[0] == flat[start]
    for start, stop in [(-1, 3), (5, 4), (0, 61)]:
        with pytest.raises(
            readers.UnreadableFile,
            match=rf"range \[{start}, {stop}\) is outside tensor '{name}' of 60 values",
        ):
            readers.read_tensor_range(str(path), name, start, stop)
    with pytest.raises(readers.UnreadableFile, match=f"{path} has no readable tensor 'nope'"):
        readers.read_tensor_range(str(path), "nope", 0, 1)


def test_read_tensor_range_refuses_what_it_would_misread(tmp_path):
    np.save(tmp_path / "big.npy", np.arange(6, dtype=">i4").reshape(2, 3))
    np.save(tmp_path / "bytes.npy", np.arange(6, dtype=">i1").reshape(2, 3))  # one byte: no order
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.arange(6, dtype="<i4").reshape(2, 3)))
    np.save(tmp_path / "column.npy", np.asfortranarray(np.arange(6, dtype="<i4")))  # 1-D: no order
    with pytest.raises(
        readers.UnreadableFile, match=r"big.npy: tensor 'big' holds big-endian data"
    ):
        readers.read_tensor_range(str(tmp_path / "big.npy"), "big", 0, 6)
    with pytest.raises(
        readers.UnreadableFile, match=r"fortran.npy: tensor 'fortran' is in Fortran order"
    ):
        readers.read_tensor_range(str(tmp_path / "fortran.npy"), "fortran", 0, 6)
    got = readers.read_tensor_range(str(tmp_path / "bytes.npy"), "bytes", 1, 5)
    assert got.tolist() == [1, 2, 3, 4]
    assert readers.read_tensor_range(str(tmp_path / "column.npy"), "column", 2, 6).tolist() == [
        2,
        3,
        4,
        5,
    ]


def test_read_tensor_infos_refuses_fortran_and_big_endian_by_name(tmp_path):
    np.save(tmp_path / "big.npy", np.arange(6, dtype=">f4").reshape(2, 3))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
    np.save(tmp_path / "bytes.npy", np.arange(6, dtype=">i1"))
    with pytest.raises(readers.UnreadableFile, match=r"^'.*big.npy' holds big-endian data; vsgen"):
        readers.read_tensor_infos(str(tmp_path / "big.npy"))
    with pytest.raises(
        readers.UnreadableFile, match=r"^'.*fortran.npy' is in Fortran order; vsgen"
    ):
        readers.read_tensor_infos(str(tmp_path / "fortran.npy"))
    [info] = readers.read_tensor_infos(str(tmp_path / "bytes.npy"))
    assert info == formats.TensorInfo("bytes", (6,), np.dtype("int8"))


def test_a_file_read_by_ranges_is_opened_once_while_it_is_unchanged(tmp_path, monkeypatch):
    """Its headers are read once for all the blocks copied from it, and again once it
    (or a store's root document) changed."""
    opened = []
    real = readers.open_file
    monkeypatch.setattr(readers, "open_file", lambda path: opened.append(path) or real(path))
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"w": np.arange(10, dtype=np.int64)})
    for start in range(5):
        assert readers.read_tensor_range(str(path), "w", start, start + 1).tolist() == [start]
    assert opened == [str(path)]
    other = tmp_path / "n.safetensors"
    write_safetensors(other, {"w": np.arange(10, dtype=np.int64)})
    readers.read_tensor_range(str(other), "w", 0, 1)
    readers.read_tensor_range(str(path), "w", 0, 1)
    assert opened == [str(path), str(other), str(path)]  # one file is kept, the last
    time.sleep(0.01)
    write_safetensors(path, {"w": np.arange(10, 20, dtype=np.int64)})
    assert readers.read_tensor_range(str(path), "w", 0, 1).tolist() == [10]
    assert len(opened) == 4
    # A store: its root document's change is seen even when the directory's is not.
    import vsgen
    from vsgen import blockwrite
    from vsgen.job import tensor_job

    store = tmp_path / "s.zarr"
    blockwrite.write(tensor_job(vsgen.VarianceScaling(seed=1), (4, 4)), str(store))
    readers.read_tensor_range(str(store), "weight", 0, 1)
    readers.read_tensor_range(str(store), "weight", 0, 1)
    assert opened.count(str(store)) == 1
    node = store / "zarr.json"
    node.write_text(node.read_text().replace('"weight"', '"other"') + " ")
    with pytest.raises(readers.UnreadableFile, match="no readable tensor 'weight'"):
        readers.read_tensor_range(str(store), "weight", 0, 1)
    assert opened.count(str(store)) == 2


def test_ranges_of_a_zarr_array_start_at_the_chunk_that_holds_them(tmp_path, monkeypatch):
    """Work proportional to what is copied: the chunks before the range are not opened."""
    from vsgen.formats import parallel
    from vsgen.formats import zarr as zarr_format

    values = np.arange(60, dtype=np.int64).reshape(10, 6)
    path = tmp_path / "w.zarr"
    output = parallel.open_parallel_output(
        str(path), "zarr", [formats.TensorInfo("w", (10, 6), values.dtype)], chunk_shapes=[(2, 6)]
    )
    with output:
        for row in range(0, 10, 2):
            parallel.write_block(output.places[0], (row, 0), values[row : row + 2])
        parallel.sync_written(output.temp)
        output.commit()
    opened = []
    real = zarr_format.ZarrArray._open_chunk
    monkeypatch.setattr(
        zarr_format.ZarrArray,
        "_open_chunk",
        lambda self, index: opened.append(index) or real(self, index),
    )
    got = readers.read_tensor_range(str(path), "w", 40, 47)
    assert got.tolist() == list(range(40, 47))
    assert opened == [(3, 0)]  # values 36-47: no chunk before it is opened, none after


def test_big_endian_refusals_start_at_two_bytes(tmp_path):
    np.save(tmp_path / "half.npy", np.arange(4, dtype=">i2"))
    with pytest.raises(
        readers.UnreadableFile, match="half.npy: tensor 'half' holds big-endian data"
    ):
        readers.read_tensor_range(str(tmp_path / "half.npy"), "half", 0, 4)
    np.save(tmp_path / "f2.npy", np.arange(4, dtype=">f2"))
    with pytest.raises(readers.UnreadableFile, match="f2.npy' holds big-endian data"):
        readers.read_tensor_infos(str(tmp_path / "f2.npy"))


def test_an_unsupported_dtype_names_the_tensor_cut_to_200_characters(tmp_path):
    name = "n" * 300
    header = json.dumps({name: {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [0, 4]}})
    header += " " * (-len(header) % 8)
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(4))
    with pytest.raises(readers.UnreadableFile) as caught:
        readers.read_tensor_infos(str(path))
    assert str(caught.value) == f"{path}: tensor {'n' * 200!r} has an unsupported dtype float8_e5m2"


def test_sniff_names_each_format(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(2))
    write_safetensors(tmp_path / "w.safetensors", {"w": np.zeros(2)})
    (tmp_path / "d").mkdir()
    assert readers.sniff(str(tmp_path / "w.npy")) == "npy"
    assert readers.sniff(str(tmp_path / "w.safetensors")) == "safetensors"
    assert readers.sniff(str(tmp_path / "d")) == "npydir"


def test_the_cache_sees_a_changed_file_behind_a_link_and_a_changed_index(tmp_path):
    target = tmp_path / "real.safetensors"
    write_safetensors(target, {"w": np.arange(4, dtype=np.int64)})
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    assert readers.read_tensor_range(str(link), "w", 0, 1).tolist() == [0]
    time.sleep(0.01)
    write_safetensors(target, {"w": np.arange(10, 14, dtype=np.int64)})
    assert readers.read_tensor_range(str(link), "w", 0, 1).tolist() == [10]
    # A shard directory: its index changes in place (the directory itself does not).
    from vsgen.formats import parallel

    directory = tmp_path / "ckpt"
    output = parallel.open_parallel_output(
        str(directory), "safetensors-sharded", [formats.TensorInfo("w", (4,), np.dtype(np.int64))]
    )
    with output:
        parallel.write_block(output.places[0], (0,), np.arange(4, dtype=np.int64))
        parallel.sync_written(output.temp)
        output.commit()
    assert readers.read_tensor_range(str(directory), "w", 1, 2).tolist() == [1]
    index = directory / "model.safetensors.index.json"
    document = json.loads(index.read_text())
    document["weight_map"]["v"] = document["weight_map"].pop("w")
    time.sleep(0.01)
    index.write_text(json.dumps(document))
    with pytest.raises(readers.UnreadableFile):
        readers.read_tensor_range(str(directory), "w", 1, 2)


# --- what every format shares (vsgen.formats.base) ----------------------------------------------


def test_sized_file_creates_a_new_file_only(tmp_path):
    from vsgen.formats.base import sized_file

    umask = os.umask(0)
    try:
        sized_file(str(tmp_path / "a"), b"head", 10)
        sized_file(str(tmp_path / "b"), b"head", 0, 0o600)
    finally:
        os.umask(umask)
    assert (tmp_path / "a").read_bytes() == b"head" + bytes(6)
    assert os.stat(tmp_path / "a").st_mode & 0o777 == 0o666
    assert (tmp_path / "b").read_bytes() == b"head" and os.stat(
        tmp_path / "b"
    ).st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        sized_file(str(tmp_path / "a"), b"x", 0)
    assert (tmp_path / "a").read_bytes() == b"head" + bytes(6)


def test_the_base_format_and_stored_tensors(tmp_path):
    from vsgen.formats.base import Format, StoredTensor, TensorFile, UnreadableFile

    fmt = Format("x", (".a", ".b"))
    assert (fmt.name, fmt.suffixes, repr(fmt)) == ("x", (".a", ".b"), "<format x>")
    with pytest.raises(UnreadableFile) as caught:
        fmt.open("p")
    assert str(caught.value) == "p: x files are not read"
    np.save(tmp_path / "w.npy", np.arange(10, dtype=np.float32))
    [tensor] = readers.open_file(str(tmp_path / "w.npy")).tensors
    pieces = list(tensor.chunks(3))
    assert [p.size for p in pieces] == [3, 3, 3, 1]
    assert [p.size for p in tensor.chunks()] == [10]
    names = [f"t{i}" for i in range(25)]
    listing = TensorFile(
        "f", "x", tuple(StoredTensor("f", "x", n, (1,), "float32", 4) for n in names), {}
    )
    with pytest.raises(UnreadableFile) as caught:
        listing.tensor("nope")
    shown = ", ".join(names[:20])
    assert str(caught.value) == f"f has no tensor named 'nope'; it holds: {shown}, ... (25 in all)"
    few = TensorFile("f", "x", listing.tensors[:20], {})
    with pytest.raises(UnreadableFile) as caught:
        few.tensor("nope")
    assert str(caught.value) == f"f has no tensor named 'nope'; it holds: {shown}"
    with pytest.raises(UnreadableFile) as caught:
        TensorFile("f", "x", (), {}).tensor("nope")
    assert str(caught.value) == "f has no tensor named 'nope'; it holds: nothing"


def test_refusing_to_replace_names_the_target_as_given(tmp_path):
    from vsgen.formats import atomic
    from vsgen.formats.registry import get

    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "model.safetensors.index.json").write_text("{nope")
    with pytest.raises(atomic.NotOwned) as caught:
        get("safetensors-sharded").refuse_replacing(str(directory), "shown")
    assert "(shown/model.safetensors.index.json: invalid JSON" in str(caught.value)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(atomic.NotOwned) as caught:
        get("zarr").survey_aside(str(tmp_path / "file"), "shown")
    assert (caught.value.entry, caught.value.reason) == ("", "not a regular file")
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{nope")
    with pytest.raises(atomic.NotOwned) as caught:
        get("zarr").survey_aside(str(store), "shown")
    assert caught.value.reason.startswith("invalid JSON")


# --- object stores' URLs (an in-process fsspec file system) -------------------------------------


def test_a_store_at_a_url_is_read_through_the_remote_reader(request):
    """``memory://`` is fsspec's own in-process file system: the path every URL takes
    (``s3://`` in tests/test_objectstore.py, against a local S3 server)."""
    pytest.importorskip("fsspec")
    pytest.importorskip("zarr")
    import uuid

    import fsspec

    import vsgen
    from vsgen import blockwrite
    from vsgen.job import tensor_job

    job = tensor_job(vsgen.HeNormal(seed=3), (16, 8))
    root = f"vsgen-readers-{uuid.uuid4().hex}"  # memory:// is shared by the whole process
    url = f"memory://{root}/w.zarr"
    blockwrite.write(job, url, "zarr")
    request.addfinalizer(lambda: fsspec.filesystem("memory").rm(f"/{root}", recursive=True))
    opened = readers.open_file(url)
    assert (opened.format, [t.name for t in opened.tensors]) == ("zarr", ["weight"])
    assert readers.read_tensor_infos(url) == [formats.TensorInfo("weight", (16, 8), "float32")]
    assert readers.read_metadata(url) == opened.metadata
    assert "vsgen" in opened.metadata
    expected = job.plans[0].array().reshape(-1)
    assert readers.read_tensor_range(url, "weight", 5, 77).tobytes() == expected[5:77].tobytes()
    with pytest.raises(readers.UnreadableFile) as caught:
        readers.open_file(f"memory://{root}/absent.zarr")
    assert "absent.zarr" in str(caught.value)


def test_a_local_name_with_a_colon_and_slashes_is_a_path_not_a_url(tmp_path):
    path = tmp_path / "a b" / "x" / "1://w.npy"
    with pytest.raises(readers.UnreadableFile) as caught:
        readers.open_file(str(path))
    assert str(caught.value) == f"file not found: {path}"


def test_a_file_of_no_known_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x00\x01 not a tensor file")
    with pytest.raises(readers.UnreadableFile) as caught:
        readers.open_file(str(path))
    assert str(caught.value) == (
        f"{path}: not a .npy, .h5 or .safetensors file (unrecognised first bytes; "
        "raw files have no header)"
    )
