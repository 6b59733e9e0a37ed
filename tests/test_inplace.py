"""Filling existing buffers: ``initializer(shape, out=...)`` and ``vsgen.fill_``.

The promise is that an in-place fill writes exactly the bytes the allocating
call returns (the stream's contract, whose values the golden checksums and
the Keras/statistics tests pin down), into the caller's memory, without a
copy: the buffer's address must not change and nothing else may be written.
bfloat16 results are compared with torch's own float32 -> bfloat16 rounding.
"""

from __future__ import annotations

import array
import subprocess
import sys

import numpy as np
import pytest

import vsgen

SHAPES = [(64, 48), (3, 3, 8, 16), (7,), ()]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_out_matches_allocating_call(shape, dtype, distribution):
    init = vsgen.VarianceScaling(2.0, "fan_avg", distribution, seed=11)
    expected = init(shape, dtype)
    out = np.full(shape, 7, dtype=expected.dtype)
    address = out.ctypes.data
    result = init(shape, out=out)
    assert result is out and out.ctypes.data == address
    assert out.tobytes() == expected.tobytes()


def test_out_for_rows_and_keras_stream():
    init = vsgen.VarianceScaling(1.0, "fan_in", "uniform", seed=5, stream="keras")
    full = init((40, 10))
    out = np.empty((10, 10), np.float32)
    init.sample((40, 10), rows=(20, 30), out=out)
    assert out.tobytes() == full[20:30].tobytes()


def test_out_with_threads_gives_the_same_bytes():
    init = vsgen.HeNormal(seed=2)
    shape = (1024, 600)
    one = init.sample(shape, threads=1, out=np.empty(shape, np.float32))
    two = init.sample(shape, threads=2, out=np.empty(shape, np.float32))
    assert one.tobytes() == two.tobytes() == init(shape).tobytes()


@pytest.mark.parametrize(
    "out, message",
    [
        (np.empty((4, 5), np.float32), "shape"),
        (np.empty((5, 4), np.float64), "dtype"),
        (np.empty((5, 8), np.float32)[:, ::2], "C-contiguous"),
        ([0.0] * 20, "numpy array"),
    ],
)
def test_out_refuses_mismatches(out, message):
    init = vsgen.HeNormal(seed=0)
    with pytest.raises((ValueError, TypeError), match=message):
        init.sample((5, 4), "float32", out=out)


def test_out_refuses_read_only():
    out = np.empty((5, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        vsgen.HeNormal(seed=0)((5, 4), out=out)


def test_fill_numpy_and_buffer_protocol():
    init = vsgen.GlorotUniform(seed=9)
    target = np.zeros((32, 16), np.float64)
    assert vsgen.fill_(target, init) is target
    assert target.tobytes() == init((32, 16), "float64").tobytes()
    buffer = array.array("f", bytes(4 * 12))  # buffer protocol, 1-D float32
    vsgen.fill_(buffer, init)
    assert buffer.tobytes() == init((12,)).tobytes()


def test_fill_refuses_what_it_cannot_write():
    init = vsgen.GlorotUniform(seed=9)
    with pytest.raises(ValueError, match="read-only"):
        vsgen.fill_(b"\0" * 16, init)
    with pytest.raises(TypeError, match="numpy array, a CPU torch tensor"):
        vsgen.fill_(object(), init)
    with pytest.raises(TypeError, match="initializer"):
        vsgen.fill_(np.zeros(3, np.float32), "he_normal")
    with pytest.raises(ValueError, match="floating or complex type"):
        vsgen.fill_(np.zeros(3, np.int32), init)


def test_fill_fan_shape():
    init = vsgen.HeNormal(seed=4)
    part = np.empty((8, 16), np.float32)
    vsgen.fill_(part, init, fan_shape=(32, 16))
    assert part.tobytes() == init.sample((8, 16), fan_shape=(32, 16)).tobytes()


def test_fill_does_not_import_torch():
    code = (
        "import sys, numpy as np, vsgen\n"
        "vsgen.fill_(np.empty((4, 4), np.float32), vsgen.HeNormal(seed=0))\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


# --- torch ----------------------------------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16"])
def test_fill_torch_tensor_in_place(torch, dtype_name):
    init = vsgen.VarianceScaling(2.0, "fan_in", "truncated_normal", seed=21, layout="torch")
    tensor = torch.zeros(48, 24, 3, 3, dtype=getattr(torch, dtype_name))
    address = tensor.data_ptr()
    assert vsgen.fill_(tensor, init) is tensor
    assert tensor.data_ptr() == address
    expected = init((48, 24, 3, 3), dtype_name)
    assert tensor.numpy().tobytes() == expected.tobytes()


def test_fill_torch_bfloat16_matches_torch_rounding(torch):
    init = vsgen.HeUniform(seed=8)
    tensor = torch.zeros(40, 30, dtype=torch.bfloat16)
    address = tensor.data_ptr()
    vsgen.fill_(tensor, init)
    assert tensor.data_ptr() == address
    # torch's own float32 -> bfloat16 rounding of the float32 values is the reference.
    reference = torch.from_numpy(init((40, 30), "float32")).to(torch.bfloat16)
    assert torch.equal(tensor.view(torch.int16), reference.view(torch.int16))


def test_fill_parameter_with_grad(torch):
    layer = torch.nn.Linear(20, 10)
    init = vsgen.GlorotNormal(seed=1)
    vsgen.fill_(layer.weight, init)
    assert layer.weight.requires_grad
    assert layer.weight.detach().numpy().tobytes() == init((10, 20)).tobytes()


def test_fill_is_seen_by_autograd_like_torch_in_place_ops(torch):
    # A graph that saved the weight must notice it was overwritten, as it
    # would after torch.nn.init: backward then refuses to run.
    weight = torch.ones(4, 4, requires_grad=True)
    loss = (weight * weight).sum()
    vsgen.fill_(weight, vsgen.HeNormal(seed=0))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_fill_torch_refusals(torch):
    init = vsgen.GlorotNormal(seed=1)
    with pytest.raises(ValueError, match="contiguous"):
        vsgen.fill_(torch.zeros(8, 6).t(), init)
    with pytest.raises(TypeError, match="floating"):
        vsgen.fill_(torch.zeros(4, 4, dtype=torch.int32), init)
