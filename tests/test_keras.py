"""``vsgen.keras`` inside real Keras layers and models (Keras's numpy backend).

References are the real keras package: the fans and stddev Keras's own
initializers compute inside the same layers, Keras's own values for the
``keras`` stream, ``model.save``/``keras.saving.load_model`` for the round trip,
and scipy's truncated normal for the distribution.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import stats

os.environ["KERAS_BACKEND"] = "numpy"
keras = pytest.importorskip("keras")

from keras.src.initializers.random_initializers import compute_fans as keras_compute_fans  # noqa: E402

import vsgen  # noqa: E402
import vsgen.keras as vk  # noqa: E402

PRESETS = ("GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal", "LecunUniform")
TRUNCATED_STD_FACTOR = 0.87962566103423978


def test_backend_is_numpy():
    # conftest pins it; a different backend here would make the parity checks meaningless.
    assert keras.backend.backend() == "numpy"


def _keras_stddev(initializer, shape):
    """The stddev Keras's VarianceScaling.__call__ computes, from Keras's own fans."""
    fan_in, fan_out = keras_compute_fans(
        shape, input_axes=initializer.input_axes, output_axes=initializer.output_axes
    )
    scale = initializer.scale
    if initializer.mode == "fan_in":
        scale /= max(1.0, fan_in)
    elif initializer.mode == "fan_out":
        scale /= max(1.0, fan_out)
    else:
        scale /= max(1.0, (fan_in + fan_out) / 2.0)
    return math.sqrt(scale)


def _recording(base):
    """A subclass of ``base`` that records (shape, stddev) of every call; layers
    clone initializers with ``from_config``, which keeps the subclass."""
    calls = []

    class Recording(base):
        def __call__(self, shape, dtype=None):
            calls.append((tuple(shape), _keras_stddev(self, shape), self))
            return super().__call__(shape, dtype)

    Recording.__name__ = base.__name__
    return Recording, calls


def _check_distribution(values, initializer_name, stddev):
    """KS test against the exact distribution plus the sample stddev.

    Seeds are fixed, so each check is deterministic; p > 1e-3 is a sound
    threshold for a correct sampler, and the sample std of n values is within
    6 standard errors (SE ~ sqrt((kurtosis - 1) / (4 n)) relative).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if initializer_name.endswith("Uniform"):
        limit = math.sqrt(3.0) * stddev
        dist = stats.uniform(loc=-limit, scale=2 * limit)
        kurtosis = 1.8
    else:
        s = stddev / TRUNCATED_STD_FACTOR
        dist = stats.truncnorm(-2, 2, scale=s)
        kurtosis = 2.3631
    assert stats.kstest(flat, dist.cdf).pvalue > 1e-3
    relative_se = math.sqrt((kurtosis - 1) / (4 * flat.size))
    assert abs(flat.std() / stddev - 1) < 6 * relative_se


@pytest.mark.parametrize("name", PRESETS)
def test_multi_head_attention_gets_keras_fans(name):
    """Every MHA kernel gets the axes, fans and stddev Keras's own preset gets."""
    ours_cls, ours_calls = _recording(getattr(vk, name))
    keras_cls, keras_calls = _recording(getattr(keras.initializers, name))
    shapes = {}
    for cls, label in ((ours_cls, "vsgen"), (keras_cls, "keras")):
        layer = keras.layers.MultiHeadAttention(
            num_heads=8, key_dim=64, kernel_initializer=cls(seed=11)
        )
        layer.build((None, 10, 256), (None, 10, 256))
        shapes[label] = [w.shape for w in layer.weights]
        if label == "vsgen":
            ours_layer = layer
    assert shapes["vsgen"] == shapes["keras"]
    assert len(ours_calls) == len(keras_calls) == 4  # query, key, value, output kernels
    for (shape, stddev, ours), (k_shape, k_stddev, theirs) in zip(
        ours_calls, keras_calls, strict=True
    ):
        assert shape == k_shape
        assert (ours.input_axes, ours.output_axes) == (theirs.input_axes, theirs.output_axes)
        assert ours.input_axes is not None  # EinsumDense gave the axes
        # vsgen's own computation of the stddev equals Keras's, exactly.
        assert ours.scaling(shape).stddev == stddev == k_stddev
        assert vsgen.compute_fans(
            shape, input_axes=ours.input_axes, output_axes=ours.output_axes
        ) == keras_compute_fans(shape, input_axes=theirs.input_axes, output_axes=theirs.output_axes)
    query = np.asarray(ours_layer.query_dense.kernel.numpy())
    assert query.shape == (256, 8, 64)
    _check_distribution(query, name, ours_calls[0][1])
    # The example: LecunNormal on a query kernel has std 1/sqrt(256), not
    # 1/sqrt(256 * 8 * 64 / 64 ...) from rank-3 conv fans.
    if name == "LecunNormal":
        assert ours_calls[0][1] == math.sqrt(1.0 / 256)


def test_multi_head_attention_kernels_differ_per_projection_when_unseeded():
    """Keras clones an unseeded initializer per projection with a fresh seed."""
    layer = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=8, kernel_initializer=vk.GlorotUniform()
    )
    layer.build((None, 4, 16), (None, 4, 16))
    query = layer.query_dense.kernel.numpy()
    key = layer.key_dense.kernel.numpy()
    assert not np.array_equal(query, key)


@pytest.mark.parametrize("name", PRESETS)
def test_conv2d_gets_keras_stddev(name):
    ours_cls, ours_calls = _recording(getattr(vk, name))
    keras_cls, keras_calls = _recording(getattr(keras.initializers, name))
    layers = {}
    for cls, label in ((ours_cls, "vsgen"), (keras_cls, "keras")):
        layer = keras.layers.Conv2D(64, (5, 5), kernel_initializer=cls(seed=5))
        layer.build((None, 32, 32, 48))
        layers[label] = layer
    ((shape, stddev, ours),) = ours_calls
    ((k_shape, k_stddev, _),) = keras_calls
    assert shape == k_shape == (5, 5, 48, 64)
    assert ours.scaling(shape).stddev == stddev == k_stddev
    kernel = layers["vsgen"].kernel.numpy()
    _check_distribution(kernel, name, stddev)
    # Same distribution as Keras's own values (two-sample KS, fixed seeds).
    assert stats.ks_2samp(kernel.ravel(), layers["keras"].kernel.numpy().ravel()).pvalue > 1e-3


@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_default_stream_bytes_equal_vsgen(distribution, mode):
    shape = (3, 3, 8, 16)
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        ours = vk.VarianceScaling(1.5, mode, distribution, seed=2**40 + 3)(shape, dtype)
        expected = vsgen.VarianceScaling(1.5, mode, distribution, seed=2**40 + 3)(shape, dtype)
        assert ours.dtype == expected.dtype
        assert ours.tobytes() == expected.tobytes()


@pytest.mark.parametrize("name", PRESETS)
def test_keras_stream_equals_keras(name):
    shapes_and_dtypes = (
        ((31, 17), "float32"),
        ((3, 3, 4, 5), "float16"),
        ((5, 7), "bfloat16"),
        ((6,), None),
    )
    for shape, dtype in shapes_and_dtypes:
        ours = getattr(vk, name)(seed=1234, stream="keras")(shape, dtype)
        theirs = getattr(keras.initializers, name)(seed=1234)(shape, dtype)
        assert ours.dtype == theirs.dtype
        assert ours.tobytes() == np.asarray(theirs).tobytes()


def test_keras_stream_with_axes_equals_keras():
    ours = vk.VarianceScaling(
        2.0, "fan_avg", "uniform", seed=7, input_axes=[0], output_axes=[1, 2], stream="keras"
    )((32, 4, 16))
    theirs = keras.initializers.VarianceScaling(
        2.0, "fan_avg", "uniform", seed=7, input_axes=[0], output_axes=[1, 2]
    )((32, 4, 16))
    assert ours.tobytes() == np.asarray(theirs).tobytes()


def test_seed_generator_gives_fresh_values_and_maps_words_to_the_seed():
    generator = keras.random.SeedGenerator(5)
    init = vk.HeUniform(seed=generator)
    first, second = init((4, 4)), init((4, 4))
    assert not np.array_equal(first, second)
    # SeedGenerator(5) starts at words (5, 0), then (5, 1).
    assert first.tobytes() == vsgen.HeUniform(seed=5)((4, 4)).tobytes()
    assert second.tobytes() == vsgen.HeUniform(seed=5 + 2**32)((4, 4)).tobytes()


def test_int_seed_gives_the_same_values_every_call():
    init = vk.GlorotNormal(seed=3)
    assert np.array_equal(init((5, 6)), init((5, 6)))


def test_classes_are_keras_classes_and_registered():
    for name in PRESETS:
        init = getattr(vk, name)(seed=1)
        assert isinstance(init, getattr(keras.initializers, name))
        assert isinstance(init, keras.initializers.VarianceScaling)
        assert isinstance(init, vk.VarianceScaling)
        assert keras.saving.get_registered_name(type(init)) == f"vsgen>{name}"
    form = keras.saving.serialize_keras_object(vk.VarianceScaling(2.0, seed=3))
    assert form["registered_name"] == "vsgen>VarianceScaling"
    assert form["config"]["stream"] == "vsgen"


def test_errors():
    with pytest.raises(ValueError, match="Argument `scale` must be positive float"):
        vk.VarianceScaling(scale=-1.0)
    with pytest.raises(ValueError, match="positive finite"):
        vk.VarianceScaling(scale=float("nan"))
    with pytest.raises(ValueError, match="Invalid `mode` argument"):
        vk.VarianceScaling(mode="fan_geo")
    with pytest.raises(ValueError, match="stream"):
        vk.HeNormal(stream="torch")
    with pytest.raises(ValueError, match="seed"):
        vk.HeNormal(seed=2**32, stream="keras")
    with pytest.raises(ValueError, match="SeedGenerator"):
        vk.HeNormal(seed=keras.random.SeedGenerator(1), stream="keras")
    with pytest.raises(ValueError, match="dtype"):
        vk.HeNormal(seed=1)((2, 2), "int32")


def _model(stream):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, kernel_initializer=vk.HeNormal(seed=1, stream=stream))(inputs)
    x = keras.layers.Reshape((16, 8))(x)
    x = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=4, kernel_initializer=vk.GlorotUniform(seed=2, stream=stream)
    )(x, x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(
        5,
        kernel_initializer=vk.VarianceScaling(
            0.5, "fan_avg", "untruncated_normal", seed=3, stream=stream
        ),
    )(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_model_save_and_load_round_trip(tmp_path, stream):
    model = _model(stream)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True
    )
    assert len(loaded.weights) == len(model.weights)
    for ours, theirs in zip(model.weights, loaded.weights, strict=True):
        assert np.asarray(ours.numpy()).tobytes() == np.asarray(theirs.numpy()).tobytes()
    dense = loaded.layers[-1]
    assert type(dense.kernel_initializer) is vk.VarianceScaling
    assert dense.kernel_initializer.stream == stream
    # The rebuilt model initialises exactly as the original did.
    rebuilt = keras.Model.from_config(model.get_config())
    for ours, theirs in zip(model.weights, rebuilt.weights, strict=True):
        assert np.asarray(ours.numpy()).tobytes() == np.asarray(theirs.numpy()).tobytes()


def test_load_model_in_a_fresh_process(tmp_path):
    model = _model("vsgen")
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "kernel.npy", model.layers[-1].kernel.numpy())
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, vsgen.keras
        model = keras.saving.load_model({str(path)!r})
        kernel = model.layers[-1].kernel.numpy()
        assert kernel.tobytes() == np.load({str(tmp_path / "kernel.npy")!r}).tobytes()
        print(type(model.layers[-1].kernel_initializer).__module__)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "vsgen.keras"


@pytest.mark.parametrize(
    ("backend", "tensor_type"), [("jax", "jax.Array"), ("torch", "torch.Tensor")]
)
def test_other_backends_return_their_tensors_with_the_same_bytes(backend, tensor_type):
    pytest.importorskip(backend)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, {backend}, vsgen, vsgen.keras as vk
        assert keras.backend.backend() == "{backend}"
        values = vk.HeNormal(seed=9)((7, 5), "float32")
        assert isinstance(values, {tensor_type}), type(values)
        expected = vsgen.HeNormal(seed=9)((7, 5))
        assert keras.ops.convert_to_numpy(values).tobytes() == expected.tobytes()
        layer = keras.layers.Dense(3, kernel_initializer=vk.LecunUniform(seed=1))
        layer.build((None, 4))
        expected = vsgen.LecunUniform(seed=1)((4, 3))
        assert keras.ops.convert_to_numpy(layer.kernel).tobytes() == expected.tobytes()
        print("ok")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_vsgen_does_not_import_keras():
    script = "import sys, vsgen; vsgen.HeNormal(seed=1)((4, 4)); print('keras' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
