"""bfloat16 in Zarr v3 stores: the zarr-extensions ``bfloat16`` data type, written by
vsgen, read by vsgen's reader and by zarr-python through vsgen's data type (its
``zarr.data_type`` entry point)."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

import vsgen  # noqa: E402
from vsgen import blockwrite  # noqa: E402
from vsgen.formats import readers  # noqa: E402
from vsgen.job import tensor_job  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values).view(np.uint16)


@pytest.mark.parametrize("chunks", [(8, 24), (6, 5)])
def test_vsgen_writes_bfloat16_arrays_that_zarr_python_reads(tmp_path, chunks):
    from vsgen.formats.zarr_bfloat16 import register

    register()
    job = tensor_job(vsgen.HeNormal(seed=1), (40, 24), "bfloat16")
    store = tmp_path / "b.zarr"
    blockwrite.write(job, str(store), chunks=chunks)
    expected = job.arrays()["weight"]
    node = json.loads((store / "zarr.json").read_text())
    assert node["data_type"] == "bfloat16"
    assert node["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    array = zarr.open_array(str(store), mode="r")
    assert array.dtype == BF16
    assert (bits(array[...]) == bits(expected)).all()
    # The chunk files hold the little-endian 2-byte words, padded with zeros.
    first = (store / "c" / "0" / "0").read_bytes()
    assert first[:2] == expected[0, 0].view(np.uint16).astype("<u2").tobytes()
    # vsgen's own reader, and check, read it as written.
    tensor = readers.open_file(str(store)).tensors[0]
    assert tensor.dtype == "bfloat16"
    if chunks[1] == 24:
        values = np.concatenate(list(tensor.chunks()))
        assert (bits(values) == bits(expected.reshape(-1))).all()


def test_zarr_python_writes_what_vsgen_reads(tmp_path):
    from vsgen.formats.zarr_bfloat16 import BFloat16, register

    register()
    values = np.linspace(-2, 2, 12, dtype=np.float32).reshape(4, 3).astype(BF16)
    array = zarr.create_array(
        str(tmp_path / "z.zarr"), shape=(4, 3), chunks=(4, 3), dtype=BFloat16(), compressors=None
    )
    array[...] = values
    tensor = readers.open_file(str(tmp_path / "z.zarr")).tensors[0]
    assert (bits(np.concatenate(list(tensor.chunks()))) == bits(values.reshape(-1))).all()


def test_zarr_python_reads_it_once_the_data_type_is_registered(tmp_path):
    """In a fresh process: importing vsgen.formats.zarr_bfloat16 and calling register()
    is all zarr-python needs (zarr 3.1.6 collects the ``zarr.data_type`` entry point
    vsgen declares, but never loads it)."""
    job = tensor_job(vsgen.HeNormal(seed=2), (8, 4), "bfloat16")
    blockwrite.write(job, str(tmp_path / "b.zarr"))
    code = (
        "import sys, zarr\n"
        "from vsgen.formats.zarr_bfloat16 import register\n"
        "register()\n"
        f"a = zarr.open_array({str(tmp_path / 'b.zarr')!r}, mode='r')\n"
        "print(a.dtype, a[...].view('uint16').tobytes().hex())\n"
        "print('vsgen.dask' in sys.modules, 'vsgen.blockwrite' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    dtype, hexed = done.stdout.splitlines()[0].split()
    assert dtype == "bfloat16"
    assert bytes.fromhex(hexed) == bits(job.arrays()["weight"]).tobytes()
    assert done.stdout.splitlines()[1] == "False False"  # it imports nothing else of vsgen


def test_the_entry_point_is_declared():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["zarr.data_type"]
    assert declared == {"bfloat16": "vsgen.formats.zarr_bfloat16:BFloat16"}
