"""Bit-for-bit parity of the ``keras`` stream with the real Keras 3 package.

Keras runs with its numpy backend: conftest.py sets ``KERAS_BACKEND=numpy``
before anything imports keras, whatever the user's shell says, and this
module fails (rather than skips) if keras came up with another backend. The
tests skip only when keras is not importable, and with ``CI=true`` that skip
is a failure (conftest.py), so CI proves they ran.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

pytestmark = pytest.mark.required_in_ci

keras = pytest.importorskip("keras")


def test_keras_runs_on_its_numpy_backend():
    # The JAX/TensorFlow backends draw from other generators; parity is with numpy's.
    assert os.environ["KERAS_BACKEND"] == "numpy"
    assert keras.backend.backend() == "numpy"


DISTRIBUTIONS = ["truncated_normal", "untruncated_normal", "uniform"]
MODES = ["fan_in", "fan_out", "fan_avg"]
SHAPES = [(), (7,), (0, 5), (33, 17), (3, 3, 4, 5), (2, 3, 1, 6)]
DTYPES = ["float16", "float32", "float64"]
SEEDS = [0, 1234, 2**31 + 5, 2**32 - 1]


def _bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def _keras_values(scale, mode, distribution, seed, shape, dtype):
    init = keras.initializers.VarianceScaling(
        scale=scale, mode=mode, distribution=distribution, seed=seed
    )
    return np.asarray(init(shape, dtype=dtype))


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_to_keras(distribution, mode, shape, dtype):
    for seed in SEEDS:
        expected = _keras_values(1.7, mode, distribution, seed, shape, dtype)
        ours = vsgen.VarianceScaling(1.7, mode, distribution, seed=seed, stream="keras")(
            shape, dtype
        )
        assert ours.dtype == expected.dtype
        assert ours.shape == expected.shape
        assert _bits(ours) == _bits(expected), (seed, shape, dtype)


@pytest.mark.parametrize(
    "preset",
    ["GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal", "LecunUniform"],
)
def test_presets_match_keras(preset):
    shape = (3, 3, 16, 8)
    expected = np.asarray(getattr(keras.initializers, preset)(seed=42)(shape))
    ours = getattr(vsgen, preset)(seed=42, stream="keras")(shape)
    assert _bits(ours) == _bits(expected)


def test_default_dtype_is_float32_like_keras():
    expected = _keras_values(1.0, "fan_in", "uniform", 9, (4, 4), None)
    ours = vsgen.VarianceScaling(1.0, "fan_in", "uniform", seed=9, stream="keras")((4, 4))
    assert ours.dtype == expected.dtype == np.float32
    assert _bits(ours) == _bits(expected)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("chunk", [1, 7, 1000, 4096])
def test_chunked_keras_stream_is_identical(distribution, chunk):
    shape = (64, 129)
    expected = _keras_values(2.0, "fan_in", distribution, 77, shape, "float32")
    plan = vsgen.VarianceScaling(2.0, "fan_in", distribution, seed=77, stream="keras").plan(
        shape, "float32"
    )
    pieces = list(plan.chunks(chunk_size=chunk))
    assert all(piece.size <= chunk for piece in pieces)
    assert _bits(np.concatenate(pieces)) == _bits(expected)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("chunk", [1, 7, 10, 129, 1000])
@pytest.mark.parametrize("rows", [(0, 1), (3, 40), (63, 64), (5, 5)], ids=str)
def test_chunked_rows_of_the_keras_stream(distribution, chunk, rows):
    """Rows that start mid-batch, after whole skipped batches, and an empty range:
    the pieces are Keras' own values for those rows, in order."""
    shape = (64, 129)
    expected = _keras_values(2.0, "fan_in", distribution, 77, shape, "float32")[rows[0] : rows[1]]
    init = vsgen.VarianceScaling(2.0, "fan_in", distribution, seed=77, stream="keras")
    plan = init.plan(shape, "float32", rows=rows)
    pieces = list(plan.chunks(chunk_size=chunk))
    assert all(0 < piece.size <= chunk for piece in pieces)
    if rows[0] == rows[1]:
        assert pieces == []
    else:
        assert _bits(np.concatenate(pieces)) == _bits(expected)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_keras_stream_rows_are_slices(distribution):
    shape = (40, 30)
    full = _keras_values(1.0, "fan_avg", distribution, 3, shape, "float64")
    init = vsgen.VarianceScaling(1.0, "fan_avg", distribution, seed=3, stream="keras")
    assert _bits(init.sample(shape, "float64", rows=(11, 29))) == _bits(full[11:29])


def test_keras_explicit_axes_match():
    shape = (5, 4, 3)
    init = keras.initializers.VarianceScaling(
        2.0, "fan_out", "untruncated_normal", seed=5, input_axes=[0], output_axes=[1, 2]
    )
    ours = vsgen.VarianceScaling(
        2.0,
        "fan_out",
        "untruncated_normal",
        seed=5,
        input_axes=[0],
        output_axes=[1, 2],
        stream="keras",
    )
    assert _bits(ours(shape)) == _bits(np.asarray(init(shape)))


# --- configs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--preset", "he_normal", "--seed", "3"],
        ["--preset", "glorot_uniform", "--seed", "0"],
        [
            "--scale",
            "0.5",
            "--mode",
            "fan_avg",
            "--distribution",
            "untruncated_normal",
            "--seed",
            "11",
        ],
        ["--scale", "2", "--distribution", "uniform", "--seed", "4294967295"],
        ["--scale", "1", "--in-axes", "0", "--out-axes", "1", "--seed", "8"],
    ],
)
def test_config_keras_round_trips_through_real_keras(args):
    result = CliRunner().invoke(cli, ["config", "--keras", *args])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    restored = keras.initializers.deserialize(document)
    # Keras re-serializes to the same object (modulo keys Keras adds as null).
    again = keras.initializers.serialize(restored)
    assert again["class_name"] == document["class_name"]
    for key, value in document["config"].items():
        assert again["config"][key] == value
    # The numbers agree too: vsgen's keras stream from the same JSON equals Keras.
    shape = (6, 10)
    ours = vsgen.deserialize(document)
    ours_keras = type(ours).from_config({**ours.get_config(), "stream": "keras"})
    assert _bits(ours_keras(shape)) == _bits(np.asarray(restored(shape)))


@pytest.mark.parametrize(
    "initializer",
    [
        lambda: keras.initializers.HeUniform(seed=12),
        lambda: keras.initializers.VarianceScaling(3.0, "fan_out", "normal", seed=1),
        lambda: keras.initializers.LecunNormal(seed=99),
    ],
)
def test_keras_serialized_config_drives_cli(initializer, tmp_path):
    keras_init = initializer()
    text = json.dumps(keras.initializers.serialize(keras_init))
    out = tmp_path / "w.npy"
    result = CliRunner().invoke(
        cli,
        ["sample", "--config", "-", "--stream", "keras", "--shape", "20,30", "-o", str(out)],
        input=text,
    )
    assert result.exit_code == 0, result.stderr
    assert _bits(np.load(out)) == _bits(np.asarray(keras_init((20, 30))))


def test_keras_plain_get_config_is_accepted():
    keras_init = keras.initializers.VarianceScaling(0.3, "fan_avg", "uniform", seed=2)
    ours = vsgen.VarianceScaling.from_config({**keras_init.get_config(), "stream": "keras"})
    assert _bits(ours((8, 9))) == _bits(np.asarray(keras_init((8, 9))))
