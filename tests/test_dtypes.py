"""Every float dtype in every format, read back with the real libraries.

bfloat16 lives where the format has it (safetensors, raw); asking for it in
.npy or .h5 is a one-line usage error (exit 2) that leaves no file behind.
"""

from __future__ import annotations

import subprocess

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli
from vsgen.dtypes import TensorInfo

STREAMS = ["vsgen", "keras"]
SHAPE = (33, 17, 3)
SHAPE_TEXT = "33,17,3"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def sample(path, dtype: str, stream: str, *args: str) -> None:
    result = run(
        "sample",
        "--shape",
        SHAPE_TEXT,
        "--seed",
        "7",
        "--dtype",
        dtype,
        "--stream",
        stream,
        "-o",
        str(path),
        *args,
    )
    assert result.exit_code == 0, result.stderr


def bits(array: np.ndarray) -> np.ndarray:
    """The raw bit patterns (so that -0.0, NaN payloads etc. compare exactly)."""
    width = {2: np.uint16, 4: np.uint32, 8: np.uint64}[array.dtype.itemsize]
    return np.ascontiguousarray(array).view(width)


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_bfloat16_safetensors_loads_in_torch_bit_identical(tmp_path, stream, distribution):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    path = tmp_path / "w.safetensors"
    sample(path, "bfloat16", stream, "--distribution", distribution)
    tensor = load_file(str(path))["weight"]
    assert tensor.dtype == torch.bfloat16 and tuple(tensor.shape) == SHAPE
    init = vsgen.VarianceScaling(distribution=distribution, seed=7, stream=stream)
    ours = init.sample(SHAPE, "bfloat16")
    assert ours.dtype == np.dtype(ml_dtypes.bfloat16)
    theirs = tensor.view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(theirs, bits(ours))
    # torch's own float32 view of those bits equals ml_dtypes' upcast.
    assert np.array_equal(tensor.float().numpy(), ours.astype(np.float32))


def test_bfloat16_safetensors_numpy_and_raw(tmp_path):
    from safetensors.numpy import load_file

    st_path, raw_path = tmp_path / "w.safetensors", tmp_path / "w.raw"
    sample(st_path, "bfloat16", "vsgen")
    sample(raw_path, "bfloat16", "vsgen")
    ours = vsgen.VarianceScaling(seed=7).sample(SHAPE, "bfloat16")
    loaded = load_file(str(st_path))["weight"]
    assert np.array_equal(bits(loaded), bits(ours))
    assert raw_path.read_bytes() == bits(ours).astype("<u2").tobytes()


def test_vsgen_stream_narrow_types_are_rounded_float32():
    """The vsgen stream computes <= 32-bit outputs in float32 and rounds once;
    only a value that rounding carried onto or past the bound is moved to the
    nearest representable value inside (see tests/test_dtype_bounds.py)."""
    init = vsgen.VarianceScaling(seed=7, distribution="uniform")
    limit = init.scaling(SHAPE).limit
    wide = init.sample(SHAPE, "float32")
    for name in ("float16", "bfloat16"):
        narrow = init.sample(SHAPE, name)
        rounded = wide.astype(narrow.dtype)
        inside = np.abs(rounded.astype(np.float64)) < limit
        assert np.array_equal(bits(narrow)[inside], bits(rounded)[inside])
        assert (np.abs(narrow.astype(np.float64)) < limit).all()


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("fmt", ["npy", "h5", "safetensors", "raw"])
def test_ieee_types_in_every_format(tmp_path, stream, dtype, fmt, read_back):
    path = tmp_path / f"w.{fmt}"
    sample(path, dtype, stream)
    ours = vsgen.VarianceScaling(seed=7, stream=stream).sample(SHAPE, dtype)
    assert ours.dtype == np.dtype(dtype)
    if fmt == "raw":
        assert path.read_bytes() == ours.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
        return
    theirs = read_back(path)
    assert theirs.dtype == np.dtype(dtype) and theirs.shape == SHAPE
    assert np.array_equal(bits(theirs), bits(ours))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_safetensors_dtype_codes(tmp_path, dtype):
    from safetensors import safe_open

    path = tmp_path / "w.safetensors"
    sample(path, dtype, "vsgen")
    torch = pytest.importorskip("torch")
    with safe_open(str(path), framework="pt") as handle:
        tensor = handle.get_tensor("weight")
    assert tensor.dtype == getattr(torch, dtype)


@pytest.mark.parametrize("suffix", [".npy", ".h5", ".hdf5"])
def test_bfloat16_where_the_format_lacks_it_is_a_usage_error(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    result = run("sample", "--shape", "4,4", "--seed", "1", "--dtype", "bfloat16", "-o", str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "bfloat16" in lines[0]
    assert ".safetensors" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary


def test_bfloat16_npy_error_in_a_real_process(tmp_path):
    result = subprocess.run(
        ["vsgen", "sample", "--shape", "4,4", "--dtype", "bf16", "-o", "w.npy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "w.npy").exists()


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex32", "float8", "uint16"])
def test_non_float_dtypes_are_refused(tmp_path, dtype):
    result = run("sample", "--shape", "4,4", "--dtype", dtype, "-o", str(tmp_path / "w.npy"))
    assert result.exit_code == 2 and "dtype" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- TensorInfo: what a file holds --------------------------------------------------------


def test_tensor_info_normalises():
    info = TensorInfo("w", [2, np.int64(3)], "<f4")
    assert info.shape == (2, 3) and isinstance(info.shape[1], int)
    assert info.dtype == np.float32
    assert (info.size, info.nbytes) == (6, 24)
    assert TensorInfo("s", (), ml_dtypes.bfloat16).dtype == np.dtype(ml_dtypes.bfloat16)
    assert TensorInfo("s", (), np.float16).size == 1


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "argument"),
    [
        ("", (2,), np.float32, "name"),
        ("a\x00b", (2,), np.float32, "name"),
        ("w", (-1,), np.float32, "shape"),
        ("w", (True,), np.float32, "shape"),
        ("w", 5, np.float32, "shape"),
        ("w", (2,), "float8_e4m3fn", "dtype"),
        ("w", (2,), "nonsense", "dtype"),
    ],
)
def test_tensor_info_refuses(name, shape, dtype, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        TensorInfo(name, shape, dtype)
