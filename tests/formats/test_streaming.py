"""The streaming writer (open_output, write_chunks): every format read back with the
real readers, atomicity, pre-flight checks."""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import namedtuple
from pathlib import Path

import h5py
import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from vsgen.formats import (
    FORMATS,
    Output,
    TensorInfo,
    open_output,
    read_metadata,
    read_tensor_infos,
    write_chunks,
)

REPO = Path(__file__).resolve().parents[2]
BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
SUFFIX = {"npy": ".npy", "h5": ".h5", "safetensors": ".safetensors", "raw": ".raw", "npydir": ""}
# Rank 0 to 4, including empty tensors.
SHAPES = [(), (1,), (13,), (0,), (4, 7), (3, 0), (2, 3, 5), (2, 3, 2, 5), (2, 0, 3, 1)]
# Odd sizes so that chunk edges fall everywhere.
CHUNK_SIZES = (1, 2, 3, 5, 7, 11, 64)


def stores(fmt: str, dtype: np.dtype) -> bool:
    return dtype != BF16 or fmt in ("safetensors", "raw")


def sample(info: TensorInfo, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(info.shape)
    return np.asarray(values).astype(info.dtype)


def odd_chunks(values: np.ndarray):
    flat = values.reshape(-1)
    start = 0
    for size in itertools.cycle(CHUNK_SIZES):
        if start >= flat.size:
            return
        # Copies, as a real producer hands over fresh arrays.
        yield flat[start : start + size].copy()
        start += size


def write_all(path, fmt, tensors, arrays, **options) -> None:
    with open_output(str(path), fmt, tensors, **options) as output:
        for info in tensors:
            for chunk in odd_chunks(arrays[info.name]):
                output.write(chunk)
        output.commit()


def bits(values) -> np.ndarray:
    """Bit patterns, so NaN-free float comparisons are exact and bfloat16 works."""
    values = np.asarray(values)
    return values.view(np.dtype(f"<u{values.dtype.itemsize}"))


def assert_same(actual, expected: np.ndarray) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    assert actual.dtype.name == expected.dtype.name
    np.testing.assert_array_equal(bits(actual), bits(expected))


def load_back(path: Path, fmt: str, tensors: list[TensorInfo]) -> dict[str, np.ndarray]:
    """Every tensor of a file, read by the reference library of its format."""
    if fmt == "npy":
        loaded = np.load(path)
        mapped = np.load(path, mmap_mode="r")
        assert_same(mapped, loaded)
        return {tensors[0].name: loaded}
    if fmt == "npydir":
        return {info.name: np.load(path / f"{info.name}.npy") for info in tensors}
    if fmt == "h5":
        with h5py.File(path, "r") as h5:
            return {info.name: h5[info.name][()] for info in tensors}
    if fmt == "safetensors":
        loaded = safetensors.numpy.load_file(str(path))
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            assert sorted(handle.keys()) == sorted(info.name for info in tensors)
            for key in handle.keys():  # noqa: SIM118 - safe_open is no dict
                assert_same(handle.get_tensor(key), loaded[key])
        return loaded
    assert fmt == "raw"
    data = path.read_bytes()
    result, offset = {}, 0
    for info in tensors:
        little = info.dtype if info.dtype == BF16 else info.dtype.newbyteorder("<")
        count = info.size * info.dtype.itemsize
        result[info.name] = np.frombuffer(data[offset : offset + count], little).reshape(info.shape)
        offset += count
    assert offset == len(data)
    return result


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# --------------------------------------------------------------------------
# Round trips through the real readers


@pytest.mark.parametrize(
    ("fmt", "dtype"),
    [(fmt, dtype) for fmt in FORMATS for dtype in DTYPES if stores(fmt, dtype)],
    ids=lambda value: getattr(value, "name", value),
)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_single_tensor(tmp_path, fmt, dtype, shape):
    info = TensorInfo("weight", shape, dtype)
    expected = sample(info)
    path = tmp_path / f"w{SUFFIX[fmt]}"
    write_all(path, fmt, [info], {"weight": expected})
    assert_same(load_back(path, fmt, [info])["weight"], expected)
    assert listing(tmp_path) == [path.name]
    if fmt != "raw":
        # A .npy file has no tensor name; the reader names it after the file.
        name = "w" if fmt == "npy" else "weight"
        assert read_tensor_infos(str(path)) == [TensorInfo(name, shape, dtype)]


def test_npy_is_standard_version_1(tmp_path):
    info = TensorInfo("w", (4, 5), np.float64)
    path = tmp_path / "w.npy"
    write_all(path, "npy", [info], {"w": sample(info)})
    with open(path, "rb") as file:
        assert np.lib.format.read_magic(file) == (1, 0)
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
        # The data starts 64-byte aligned, as numpy itself writes it.
        assert file.tell() % 64 == 0
    assert (shape, fortran_order, dtype.str) == ((4, 5), False, "<f8")


MIXED = [
    TensorInfo("layers.0.attn.q_proj.weight", (6, 4), np.float16),
    TensorInfo("layers/0/bias", (5,), np.float64),
    TensorInfo("empty", (0, 3), np.float32),
    TensorInfo("scalar", (), np.float32),
    TensorInfo("conv/kernel", (3, 3, 2, 4), np.float32),
]


@pytest.mark.parametrize("fmt", ["safetensors", "h5", "npydir", "raw"])
def test_multi_tensor_file(tmp_path, fmt):
    arrays = {info.name: sample(info, seed) for seed, info in enumerate(MIXED)}
    metadata = {"vsgen.version": "0.1", "config": json.dumps({"scale": 2.0}), "note": "ünïcode"}
    path = tmp_path / f"model{SUFFIX[fmt]}"
    write_all(path, fmt, MIXED, arrays, metadata=metadata)
    loaded = load_back(path, fmt, MIXED)
    for info in MIXED:
        assert_same(loaded[info.name], arrays[info.name])
    if fmt == "raw":
        return
    infos = read_tensor_infos(str(path))
    if fmt == "npydir":
        assert sorted(infos, key=lambda i: i.name) == sorted(MIXED, key=lambda i: i.name)
        assert read_metadata(str(path)) == {}
    else:
        assert infos == MIXED
        assert read_metadata(str(path)) == metadata
    if fmt == "h5":
        with h5py.File(path, "r") as h5:
            assert dict(h5.attrs) == metadata
            # File-level metadata is stored once, not copied onto every dataset.
            assert dict(h5["conv/kernel"].attrs) == {}
            assert isinstance(h5["layers/0"], h5py.Group)
            assert h5["conv/kernel"].chunks is None and h5["conv/kernel"].compression is None


def test_safetensors_layout(tmp_path):
    """Header padded to 8 bytes; data tiles the buffer; each tensor aligned to its dtype."""
    tensors = [*MIXED, TensorInfo("bf", (3,), BF16)]
    arrays = {info.name: sample(info) for info in tensors}
    path = tmp_path / "m.safetensors"
    write_all(path, "safetensors", tensors, arrays, metadata={"a": "b"})
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0
    header = json.loads(data[8 : 8 + length])
    assert header.pop("__metadata__") == {"a": "b"}
    assert list(header) == [info.name for info in tensors]
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - 8 - length
    assert all(end == begin for (_, end), (begin, _) in itertools.pairwise(spans))
    for info in tensors:
        assert header[info.name]["data_offsets"][0] % info.dtype.itemsize == 0
    with safetensors.safe_open(str(path), framework="numpy") as handle:
        assert handle.metadata() == {"a": "b"}


def test_safetensors_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    tensors = [
        TensorInfo("bf16", (3, 5), BF16),
        TensorInfo("f16", (7,), np.float16),
        TensorInfo("f32", (2, 2, 3), np.float32),
        TensorInfo("f64", (), np.float64),
        TensorInfo("none", (0,), BF16),
    ]
    arrays = {info.name: sample(info) for info in tensors}
    path = tmp_path / "m.safetensors"
    write_all(path, "safetensors", tensors, arrays, metadata={"seed": "7"})
    loaded = safetensors.torch.load_file(str(path))
    expected_dtypes = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
    expected_dtypes.update(f64=torch.float64, none=torch.bfloat16)
    for info in tensors:
        tensor = loaded[info.name]
        assert tensor.dtype == expected_dtypes[info.name]
        assert tuple(tensor.shape) == info.shape
        int_type = {2: torch.int16, 4: torch.int32, 8: torch.int64}[info.dtype.itemsize]
        got = tensor.view(int_type).numpy().view(f"<u{info.dtype.itemsize}")
        np.testing.assert_array_equal(got, bits(arrays[info.name]))
    with safetensors.safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"seed": "7"}


@pytest.mark.parametrize("fmt", ["npy", "h5", "npydir"])
def test_bfloat16_refused_where_unsupported(tmp_path, fmt):
    info = TensorInfo("w", (3,), BF16)
    suffix = ".npy" if fmt == "npydir" else SUFFIX[fmt]
    target = str(tmp_path / f"w{SUFFIX[fmt]}")
    with pytest.raises(
        ValueError, match=rf"bfloat16 cannot be stored in \{suffix}; use .safetensors"
    ):
        open_output(target, fmt, [info])
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------
# Standard output


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_stdout_npy_and_raw(dtype):
    info = TensorInfo("w", (5, 3), dtype)
    values = sample(info)
    raw = io.BytesIO()
    with open_output("-", "raw", [info], stdout=raw) as output:
        write_chunks(output, odd_chunks(values))
        output.commit()
    assert raw.getvalue() == bits(values).astype(f"<u{dtype.itemsize}").tobytes()
    if dtype == BF16:
        with pytest.raises(ValueError, match="bfloat16 cannot be stored in .npy"):
            open_output("-", "npy", [info], stdout=io.BytesIO())
        return
    stream = io.BytesIO()
    with open_output("-", "npy", [info], stdout=stream) as output:
        write_chunks(output, odd_chunks(values))
        output.commit()
    stream.seek(0)
    assert_same(np.load(stream), values)


def test_stdout_broken_pipe_propagates():
    class ClosedPipe(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    info = TensorInfo("w", (4,), np.float32)
    with (
        pytest.raises(BrokenPipeError),
        open_output("-", "raw", [info], stdout=ClosedPipe()) as output,
    ):
        output.write(np.zeros(4, np.float32))


def test_stdout_refuses_file_formats():
    info = TensorInfo("w", (4,), np.float32)
    for fmt in ("h5", "npydir", "safetensors"):
        with pytest.raises(ValueError, match="standard output"):
            open_output("-", fmt, [info], stdout=io.BytesIO())


# --------------------------------------------------------------------------
# Misuse of an open output


def test_write_checks_dtype_and_boundaries(tmp_path):
    tensors = [TensorInfo("a", (2, 2), np.float32), TensorInfo("b", (3,), np.float64)]
    with open_output(str(tmp_path / "m.safetensors"), "safetensors", tensors) as output:
        with pytest.raises(ValueError, match="dtype float64 does not match tensor 'a'"):
            output.write(np.zeros(2, np.float64))
        with pytest.raises(ValueError, match="must not cross tensors"):
            output.write(np.zeros(5, np.float32))
        with pytest.raises(ValueError, match="numpy array"):
            output.write([1.0, 2.0])  # type: ignore[arg-type]
        output.write(np.arange(8, dtype=np.float32)[::4])  # strided
        output.write(np.zeros((1, 2), np.float32))  # any shape is raveled
        output.write(np.zeros(0, np.float64))  # empty chunks are fine
        output.write(np.ones(3, np.float64).astype(">f8"))  # byte order is converted
        with pytest.raises(ValueError, match="is complete"):
            output.write(np.zeros(1, np.float64))
        output.commit()
        with pytest.raises(ValueError, match="already committed"):
            output.write(np.zeros(1, np.float64))
    loaded = safetensors.numpy.load_file(str(tmp_path / "m.safetensors"))
    assert_same(loaded["a"], np.array([[0, 4], [0, 0]], np.float32))
    assert_same(loaded["b"], np.ones(3))


@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "raw", "npydir"])
def test_incomplete_commit_is_refused(tmp_path, fmt):
    info = TensorInfo("w", (10,), np.float32)
    output = open_output(str(tmp_path / f"w{SUFFIX[fmt]}"), fmt, [info])
    output.write(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="'w' is incomplete: 4 of 10"):
        output.commit()
    assert output.closed
    assert listing(tmp_path) == []


def test_names_checked_for_format(tmp_path):
    f32 = np.float32
    cases = [
        ("h5", [TensorInfo("a//b", (1,), f32)], "non-empty"),
        ("npydir", [TensorInfo("../up", (1,), f32)], "'..'"),
        ("h5", [TensorInfo("a", (1,), f32), TensorInfo("a/b", (1,), f32)], "dataset and a group"),
        ("safetensors", [TensorInfo("a", (1,), f32), TensorInfo("a", (1,), f32)], "twice"),
        ("safetensors", [TensorInfo("__metadata__", (1,), f32)], "reserved"),
    ]
    for fmt, tensors, message in cases:
        with pytest.raises(ValueError, match=message):
            open_output(str(tmp_path / f"m{SUFFIX[fmt]}"), fmt, tensors)
    for metadata in ({"a": 1}, {"": "empty key"}, {"a": "nul\x00"}):
        with pytest.raises(ValueError, match="`metadata`"):
            open_output(
                str(tmp_path / "m.h5"), "h5", [TensorInfo("w", (1,), f32)], metadata=metadata
            )
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------
# Atomicity


def make_old_target(tmp_path: Path, fmt: str) -> tuple[Path, bytes]:
    path = tmp_path / f"w{SUFFIX[fmt]}"
    if fmt == "npydir":
        path.mkdir()
        old = b"\x93NUMPY old directory"  # --force replaces only NPY files
        (path / "old.npy").write_bytes(old)
        return path, old
    path.write_bytes(b"old contents")
    return path, b"old contents"


def old_contents(path: Path, fmt: str) -> bytes:
    return (path / "old.npy").read_bytes() if fmt == "npydir" else path.read_bytes()


@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "raw", "npydir"])
def test_existing_target_refused_without_force(tmp_path, fmt):
    path, old = make_old_target(tmp_path, fmt)
    info = TensorInfo("w", (3,), np.float32)
    kind = "directory" if fmt == "npydir" else "file"
    with pytest.raises(ValueError, match=rf"output {kind} '.*w.*' exists; use --force"):
        open_output(str(path), fmt, [info])
    assert old_contents(path, fmt) == old
    assert listing(tmp_path) == [path.name]


@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "raw", "npydir"])
def test_force_keeps_old_target_until_commit(tmp_path, fmt):
    path, old = make_old_target(tmp_path, fmt)
    if fmt != "npydir":
        path.chmod(0o640)
    info = TensorInfo("w", (4, 3), np.float32)
    values = sample(info)
    with open_output(str(path), fmt, [info], force=True) as output:
        for chunk in odd_chunks(values):
            output.write(chunk)
        assert old_contents(path, fmt) == old
        assert len(listing(tmp_path)) == 2  # the target and one temporary
        output.commit()
    assert_same(load_back(path, fmt, [info])["w"], values)
    assert listing(tmp_path) == [path.name]
    if fmt != "npydir":
        assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_target_appearing_during_write_is_not_overwritten(tmp_path):
    path = tmp_path / "w.npy"
    info = TensorInfo("w", (2,), np.float32)
    with open_output(str(path), "npy", [info]) as output:
        output.write(np.zeros(2, np.float32))
        path.write_bytes(b"someone else's")
        with pytest.raises(FileExistsError, match="exists; use --force"):
            output.commit()
    assert path.read_bytes() == b"someone else's"
    assert listing(tmp_path) == ["w.npy"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "raw", "npydir"])
def test_error_midway_removes_temporary_and_keeps_target(tmp_path, fmt, error):
    path, old = make_old_target(tmp_path, fmt)
    info = TensorInfo("w", (50,), np.float32)
    with pytest.raises(error), open_output(str(path), fmt, [info], force=True) as output:
        output.write(np.zeros(20, np.float32))
        raise error()
    assert output.closed
    assert old_contents(path, fmt) == old
    assert listing(tmp_path) == [path.name]


@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "npydir"])
def test_leaving_without_commit_aborts(tmp_path, fmt):
    info = TensorInfo("w", (5,), np.float32)
    with open_output(str(tmp_path / f"w{SUFFIX[fmt]}"), fmt, [info]) as output:
        output.write(np.zeros(5, np.float32))
    assert listing(tmp_path) == []
    output.abort()  # idempotent


def test_dropped_output_leaves_no_temporary(tmp_path):
    info = TensorInfo("w", (5,), np.float32)
    output = open_output(str(tmp_path / "w.npy"), "npy", [info])
    output.write(np.zeros(3, np.float32))
    del output
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------
# Pre-flight checks


def test_preflight_missing_directory(tmp_path):
    info = TensorInfo("w", (3,), np.float32)
    with pytest.raises(ValueError, match="does not exist"):
        open_output(str(tmp_path / "nowhere" / "w.npy"), "npy", [info])


def test_preflight_target_is_directory(tmp_path):
    (tmp_path / "w.npy").mkdir()
    info = TensorInfo("w", (3,), np.float32)
    with pytest.raises(ValueError, match="is a directory"):
        open_output(str(tmp_path / "w.npy"), "npy", [info], force=True)


def test_preflight_directory_not_writable(tmp_path, monkeypatch):
    # Tests may run as root, which chmod cannot stop; fake the permission answer.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    info = TensorInfo("w", (3,), np.float32)
    with pytest.raises(PermissionError, match="not writable"):
        open_output(str(tmp_path / "w.npy"), "npy", [info])


@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "raw", "npydir"])
def test_preflight_free_space(tmp_path, monkeypatch, fmt):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    info = TensorInfo("w", (1024, 1024), np.float32)
    with pytest.raises(OSError, match=r"needs 4\.\d\d MiB, 1\.00 MiB free") as caught:
        open_output(str(tmp_path / f"w{SUFFIX[fmt]}"), fmt, [info])
    assert caught.value.errno == errno.ENOSPC
    assert listing(tmp_path) == []
    # A small tensor still fits.
    with open_output(str(tmp_path / f"s{SUFFIX[fmt]}"), fmt, [TensorInfo("w", (4,), np.float32)]):
        pass


FSIZE_SCRIPT = textwrap.dedent(
    """
    import os, resource, signal, sys
    import numpy as np
    from vsgen.formats import TensorInfo, open_output, write_chunks

    fmt, target = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = 1 << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    info = TensorInfo("w", (1 << 20,), np.float32)  # 4 MiB, four times the limit
    chunks = (np.full(1 << 14, i, np.float32) for i in range(64))
    try:
        with open_output(target, fmt, [info], force=True) as output:
            write_chunks(output, chunks)
            output.commit()
    except OSError as err:
        print(err.errno, err)
        sys.exit(3)
    """
)


@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "raw", "npydir"])
def test_file_size_limit_aborts_cleanly(tmp_path, fmt):
    path, old = make_old_target(tmp_path, fmt)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-c", FSIZE_SCRIPT, fmt, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith(f"{errno.EFBIG} "), result.stdout
    assert "file size limit reached while writing" in result.stdout
    assert old_contents(path, fmt) == old
    assert listing(tmp_path) == [path.name]


SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from vsgen.formats import TensorInfo, open_output, write_chunks

    def slow_chunks():
        while True:
            time.sleep(0.01)
            yield np.zeros(1 << 10, np.float32)

    info = TensorInfo("w", (1 << 26,), np.float32)  # never finished: interrupted
    try:
        with open_output(sys.argv[2], sys.argv[1], [info], force=True) as output:
            print("writing", flush=True)
            write_chunks(output, slow_chunks())
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.mark.parametrize("fmt", ["npy", "h5", "npydir"])
def test_real_sigint_removes_temporary(tmp_path, fmt):
    path, old = make_old_target(tmp_path, fmt)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT, fmt, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "writing\n"
    time.sleep(0.2)
    assert len(listing(tmp_path)) == 2  # the target and the temporary
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    assert old_contents(path, fmt) == old
    assert listing(tmp_path) == [path.name]


MEMORY_SCRIPT = textwrap.dedent(
    """
    import os, resource, sys
    import numpy as np
    from vsgen.formats import TensorInfo, open_output, write_chunks

    directory = sys.argv[1]
    rows, cols = 256, 1 << 18  # 256 MiB of float32
    info = TensorInfo("w", (rows, cols), np.float32)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for fmt, name in [("safetensors", "w.safetensors"), ("h5", "w.h5"), ("npy", "w.npy")]:
        chunks = (np.full(cols * 4, i, np.float32) for i in range(rows // 4))  # 4 MiB each
        with open_output(os.path.join(directory, name), fmt, [info]) as output:
            write_chunks(output, chunks, prefetch=2)
            output.commit()
        os.unlink(os.path.join(directory, name))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) // 1024)
    """
)


def test_memory_stays_bounded(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    growth_mib = int(result.stdout)
    # A few 4 MiB chunks in flight plus h5py's import; far below the 256 MiB written.
    assert growth_mib < 64, growth_mib


# --------------------------------------------------------------------------
# Readers


def test_readers_refuse_raw(tmp_path):
    path = tmp_path / "w.raw"
    write_all(path, "raw", [TensorInfo("w", (4,), np.float32)], {"w": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="raw files have no header"):
        read_tensor_infos(str(path))


def test_readers_on_files_of_the_reference_writers(tmp_path):
    np.save(tmp_path / "n.npy", np.zeros((2, 3), np.float16))
    assert read_tensor_infos(str(tmp_path / "n.npy")) == [TensorInfo("n", (2, 3), np.float16)]
    assert read_metadata(str(tmp_path / "n.npy")) == {}
    arrays = {"b": np.zeros((4,), np.float64), "a": np.zeros((1, 2), np.float32)}
    safetensors.numpy.save_file(arrays, str(tmp_path / "s.safetensors"), metadata={"k": "v"})
    infos = read_tensor_infos(str(tmp_path / "s.safetensors"))
    assert sorted(infos, key=lambda i: i.name) == [
        TensorInfo("a", (1, 2), np.float32),
        TensorInfo("b", (4,), np.float64),
    ]
    assert read_metadata(str(tmp_path / "s.safetensors")) == {"k": "v"}
    with h5py.File(tmp_path / "h.h5", "w") as h5:
        h5["g/x"] = np.zeros((3,), np.float32)
        h5.attrs["n"] = 3
    assert read_tensor_infos(str(tmp_path / "h.h5")) == [TensorInfo("g/x", (3,), np.float32)]
    assert read_metadata(str(tmp_path / "h.h5")) == {"n": "3"}
    np.save(tmp_path / "big.npy", np.zeros(3, ">f4"))
    with pytest.raises(ValueError, match="big-endian"):
        read_tensor_infos(str(tmp_path / "big.npy"))


# --------------------------------------------------------------------------
# write_chunks


def producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vsgen-chunk-producer"]


@pytest.mark.parametrize("prefetch", [0, 1, 2, 5])
def test_write_chunks_writes_everything_and_reports_progress(tmp_path, prefetch):
    info = TensorInfo("w", (7, 11), np.float64)
    values = sample(info)
    reported: list[int] = []
    path = tmp_path / "w.npy"
    with open_output(str(path), "npy", [info]) as output:
        write_chunks(output, odd_chunks(values), on_progress=reported.append, prefetch=prefetch)
        assert output.values_written == output.total_values == 77
        output.commit()
    assert sum(reported) == 77 and reported[:3] == [1, 2, 3]
    assert_same(np.load(path), values)
    assert producer_threads() == []


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetched_yields_in_order_and_raises_where_the_iterator_did(depth):
    from vsgen.formats.pipeline import prefetched

    def chunks():
        for index in range(5):
            yield np.full(3, index, np.float32)
        raise OSError("disk gone after five chunks")

    seen = []
    with pytest.raises(OSError, match="after five chunks"):
        for chunk in prefetched(chunks(), depth):
            seen.append(int(chunk[0]))
    assert seen == [0, 1, 2, 3, 4]
    assert producer_threads() == []


def test_closing_prefetched_early_stops_and_joins_the_producer():
    from vsgen.formats.pipeline import prefetched

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield np.zeros(2, np.float32)
        finally:
            closed.set()

    ahead = prefetched(endless(), 2)
    assert next(ahead).size == 2
    assert len(producer_threads()) == 1  # the helper thread runs ahead
    ahead.close()
    assert producer_threads() == []
    assert closed.is_set()  # the source iterator was closed too


def test_write_chunks_keeps_at_most_prefetch_chunks_ahead(tmp_path):
    produced = 0
    lead: list[int] = []
    info = TensorInfo("w", (400,), np.float32)

    def chunks():
        nonlocal produced
        for _ in range(100):
            produced += 1
            yield np.zeros(4, np.float32)

    def on_progress(count):
        lead.append(produced - len(lead) - 1)

    with open_output(str(tmp_path / "w.raw"), "raw", [info]) as output:
        write_chunks(output, chunks(), on_progress=on_progress, prefetch=3)
        output.commit()
    # Queued chunks plus the one the producer holds while blocked on the queue.
    assert max(lead) <= 3 + 1


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_write_chunks_producer_error_propagates(tmp_path, error):
    info = TensorInfo("w", (100,), np.float32)

    def chunks():
        yield np.zeros(10, np.float32)
        yield np.zeros(10, np.float32)
        raise error("producer failed")

    with (
        pytest.raises(error, match="producer failed"),
        open_output(str(tmp_path / "w.npy"), "npy", [info]) as output,
    ):
        write_chunks(output, chunks())
    assert producer_threads() == []
    assert listing(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "progress", "interrupt"])
def test_write_chunks_consumer_error_stops_producer(tmp_path, where):
    info = TensorInfo("w", (10**9,), np.float32)
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield np.zeros(1000, np.float64 if where == "write" else np.float32)
        finally:
            closed.set()

    def on_progress(count):
        if where == "progress":
            raise Boom("progress bar failed")
        raise KeyboardInterrupt

    expected = {"write": ValueError, "progress": Boom, "interrupt": KeyboardInterrupt}[where]
    with (
        pytest.raises(expected),
        open_output(str(tmp_path / "w.raw"), "raw", [info], force=True) as output,
    ):
        write_chunks(output, endless(), on_progress=on_progress)
    assert closed.is_set()
    assert producer_threads() == []
    assert listing(tmp_path) == []


def test_write_chunks_refuses_bad_prefetch(tmp_path):
    with open_output(str(tmp_path / "w.npy"), "npy", [TensorInfo("w", (1,), np.float32)]) as out:
        with pytest.raises(ValueError, match="`prefetch`"):
            write_chunks(out, [], prefetch=-1)
        assert isinstance(out, Output)
