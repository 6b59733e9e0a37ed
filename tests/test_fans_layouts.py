"""Fan layouts against the real libraries: PyTorch's ``torch.nn.init`` and
Keras 3's ``compute_fans`` with explicit axes.

Mapping to vsgen with ``layout="torch"`` (torch weights are ``(out, in,
*kernel)``), only where the semantics genuinely match; torch's numbers come
from torch's own ``_calculate_fan_in_and_fan_out`` and ``calculate_gain``:

* ``kaiming_normal_(w, a, mode, nonlinearity)``: ``scale=gain**2``, ``mode``,
  ``untruncated_normal``;
* ``kaiming_uniform_(w, a, mode, nonlinearity)``: ``scale=gain**2``, ``mode``,
  ``uniform``;
* ``xavier_normal_(w, gain)``: ``scale=gain**2``, ``fan_avg``, ``untruncated_normal``;
* ``xavier_uniform_(w, gain)``: ``scale=gain**2``, ``fan_avg``, ``uniform``;
* ``trunc_normal_(w, std=s, a=-2s, b=2s)``: ``truncated_normal`` whose
  pre-truncation stddev is ``s``;
* ``nn.Linear`` / ``nn.ConvNd`` default weights, ``kaiming_uniform_(a=sqrt(5))``:
  ``scale=1/3``, ``fan_in``, ``uniform``.

``gain**2`` is 2 for relu and for leaky_relu with a = 0 (He), 2 / (1 + a**2)
in general, 1 for linear (Glorot). Not equivalent: torch refuses rank < 2
(vsgen uses fan = shape[0]); torch has no fan_avg for kaiming and no
fan_in/fan_out for xavier; torch's ``trunc_normal_`` bounds are absolute,
not in units of its std; Keras' GlorotNormal/HeNormal truncate, torch's
xavier/kaiming normals do not (the stddev is still equal).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vsgen
from vsgen import verify

SHAPES = [(64, 32), (16, 8, 5), (32, 16, 3, 3), (8, 4, 3, 3, 2)]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _torch_fans(torch, shape):
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


# --- PyTorch ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_normal_std(torch, shape, mode):
    fan_in, fan_out = _torch_fans(torch, shape)
    gain = torch.nn.init.calculate_gain("leaky_relu", 0)  # kaiming_normal_'s defaults
    torch_std = gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    init = vsgen.VarianceScaling(2.0, mode, "untruncated_normal", seed=0, layout="torch")
    scaling = init.scaling(shape)
    assert (scaling.fan_in, scaling.fan_out) == (fan_in, fan_out)
    assert scaling.stddev == pytest.approx(torch_std, rel=1e-15)
    relu = torch.nn.init.calculate_gain("relu")
    assert scaling.stddev == pytest.approx(relu / math.sqrt(scaling.n), rel=1e-15)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_normal_sample_matches(torch, mode):
    """A large kaiming_normal_ tensor has vsgen's stddev, and passes ``vsgen check``."""
    shape = (128, 64, 3, 3)
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.init.kaiming_normal_(torch.empty(shape), mode=mode, generator=generator)
    init = vsgen.VarianceScaling(2.0, mode, "untruncated_normal", layout="torch")
    expected = init.scaling(shape).stddev
    values = weight.numpy()
    standard_error = expected / math.sqrt(2 * values.size)
    assert abs(values.std() - expected) < 6 * standard_error
    report = verify.verify_array(values, init)
    assert report.verdict == verify.CONSISTENT, report.checks
    # The same tensor judged with the keras layout's fans is not consistent.
    keras_layout = vsgen.VarianceScaling(2.0, mode, "untruncated_normal")
    assert verify.verify_array(values, keras_layout).verdict == verify.NOT_CONSISTENT


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_xavier_normal_std(torch, shape, gain):
    fan_in, fan_out = _torch_fans(torch, shape)
    torch_std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    for distribution in ("untruncated_normal", "truncated_normal"):
        init = vsgen.VarianceScaling(gain**2, "fan_avg", distribution, layout="torch")
        assert init.scaling(shape).stddev == pytest.approx(torch_std, rel=1e-15)
    if gain == 1.0:
        glorot = vsgen.GlorotNormal(layout="torch")
        assert glorot.scaling(shape).stddev == pytest.approx(torch_std, rel=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
def test_xavier_uniform_bound(torch, shape):
    fan_in, fan_out = _torch_fans(torch, shape)
    torch_bound = math.sqrt(3.0) * math.sqrt(2.0 / float(fan_in + fan_out))
    limit = vsgen.GlorotUniform(layout="torch").scaling(shape).limit
    assert limit == pytest.approx(torch_bound, rel=1e-15)
    generator = torch.Generator().manual_seed(1)
    weight = torch.nn.init.xavier_uniform_(torch.empty(shape), generator=generator).numpy()
    assert np.abs(weight).max() <= torch_bound
    report = verify.verify_array(weight, vsgen.GlorotUniform(layout="torch"))
    assert report.consistent, report.checks


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "a, nonlinearity",
    [(0.0, "relu"), (0.0, "leaky_relu"), (0.2, "leaky_relu"), (math.sqrt(5), "leaky_relu")],
)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_uniform_bound(torch, shape, a, nonlinearity, mode):
    fan_in, fan_out = _torch_fans(torch, shape)
    gain = torch.nn.init.calculate_gain(nonlinearity, a)
    torch_bound = math.sqrt(3.0) * gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    init = vsgen.VarianceScaling(gain**2, mode, "uniform", layout="torch")
    assert init.scaling(shape).limit == pytest.approx(torch_bound, rel=1e-14)


def test_default_linear_and_conv_weights(torch):
    """nn.Linear/nn.Conv2d initialise with kaiming_uniform_(a=sqrt(5)): bound 1/sqrt(fan_in)."""
    torch.manual_seed(0)
    init = vsgen.VarianceScaling(1 / 3, "fan_in", "uniform", layout="torch")
    for module in (torch.nn.Linear(512, 256), torch.nn.Conv2d(64, 128, 3)):
        weight = module.weight.detach().numpy()
        fan_in = math.prod(weight.shape[1:])
        assert init.scaling(weight.shape).limit == pytest.approx(1 / math.sqrt(fan_in), rel=1e-15)
        report = verify.verify_array(weight, init)
        assert report.verdict == verify.CONSISTENT, report.checks


def test_trunc_normal_in_units_of_std(torch):
    """torch's trunc_normal_(std=s, a=-2s, b=2s) is vsgen's truncated_normal."""
    shape = (256, 128)
    init = vsgen.HeNormal(layout="torch")
    scaling = init.scaling(shape)
    s = scaling.pre_truncation_std
    generator = torch.Generator().manual_seed(2)
    weight = torch.nn.init.trunc_normal_(
        torch.empty(shape, dtype=torch.float64), std=s, a=-2 * s, b=2 * s, generator=generator
    )
    report = verify.verify_array(weight.numpy(), init)
    assert report.verdict == verify.CONSISTENT, report.checks


def test_torch_refuses_rank_one_vsgen_does_not(torch):
    with pytest.raises(ValueError):
        _torch_fans(torch, (10,))
    assert vsgen.compute_fans((10,), "torch") == (10, 10)


@pytest.mark.parametrize("shape", [(), (5,), *SHAPES])
def test_torch_layout_is_explicit_axes(shape):
    """layout="torch" == input_axes (1, 2, ...), output_axes (0, 2, ...) for rank >= 2."""
    if len(shape) < 2:
        assert vsgen.compute_fans(shape, "torch") == vsgen.compute_fans(shape, "keras")
        return
    kernel = list(range(2, len(shape)))
    assert vsgen.compute_fans(shape, "torch") == vsgen.compute_fans(
        shape, input_axes=[1, *kernel], output_axes=[0, *kernel]
    )
    # ...and the keras layout is the torch layout of the transposed kernel.
    moved = (*shape[2:], shape[1], shape[0])
    assert vsgen.compute_fans(moved, "keras") == vsgen.compute_fans(shape, "torch")


# --- Keras 3 explicit axes -------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_compute_fans():
    if os.environ.get("KERAS_BACKEND", "numpy") != "numpy":
        pytest.skip("needs KERAS_BACKEND=numpy before keras is imported")
    pytest.importorskip("keras")
    module = pytest.importorskip("keras.src.initializers.random_initializers")
    return module.compute_fans


@st.composite
def shapes_and_axes(draw):
    rank = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=rank, max_size=rank)))
    order = draw(st.permutations(range(rank)))
    split = draw(st.integers(0, rank))
    rest = order[split:]
    output_count = draw(st.integers(0, len(rest)))
    negate = draw(st.booleans())
    input_axes = [a - rank if negate else a for a in order[:split]]
    return shape, input_axes, list(rest[:output_count])


@settings(max_examples=200, deadline=None)
@given(shapes_and_axes())
def test_explicit_axes_equal_keras(keras_compute_fans, case):
    shape, input_axes, output_axes = case
    expected = keras_compute_fans(shape, input_axes, output_axes)
    assert vsgen.compute_fans(shape, input_axes=input_axes, output_axes=output_axes) == expected


@pytest.mark.parametrize("shape", [(), (7,), (5, 3), (3, 5, 7), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
def test_default_layout_equals_keras(keras_compute_fans, shape):
    assert vsgen.compute_fans(shape) == keras_compute_fans(shape)


@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_axes_sample_bit_identical_to_keras(keras_compute_fans, distribution):
    import keras

    shape, input_axes, output_axes = (4, 6, 32), [0, 1], [2]
    theirs = keras.initializers.VarianceScaling(
        scale=2.0,
        mode="fan_avg",
        distribution=distribution,
        seed=17,
        input_axes=input_axes,
        output_axes=output_axes,
    )(shape, dtype="float32")
    ours = vsgen.VarianceScaling(
        2.0,
        "fan_avg",
        distribution,
        seed=17,
        input_axes=input_axes,
        output_axes=output_axes,
        stream="keras",
    )(shape)
    assert np.asarray(theirs).tobytes() == ours.tobytes()
