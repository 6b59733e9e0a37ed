"""RandomNormal, TruncatedNormal, RandomUniform against the real Keras 3 package.

* ``stream="keras"``: bit for bit what ``keras.initializers.RandomNormal(...)(shape,
  dtype)`` returns on the numpy backend (conftest.py pins it), for every class,
  dtype, several seeds (the 32-bit edges included), shapes and arguments;
* ``vsgen.keras``'s subclasses of Keras's classes, their configs and ``model.save``;
* configs that ``vsgen config --keras`` prints, deserialized and called by real
  Keras on its numpy and JAX backends, and the seed bound Keras 3 has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

pytestmark = pytest.mark.required_in_ci

keras = pytest.importorskip("keras")

import vsgen.keras as vk  # noqa: E402

CLASSES = ("RandomNormal", "TruncatedNormal", "RandomUniform")
ARGUMENTS = {
    "RandomNormal": [{}, {"mean": 1.5, "stddev": 0.3}, {"mean": -2, "stddev": 3}],
    "TruncatedNormal": [{}, {"mean": 0.25, "stddev": 0.02}, {"mean": -40.0, "stddev": 7.5}],
    "RandomUniform": [{}, {"minval": 0.0, "maxval": 1.0}, {"minval": -3, "maxval": 0.125}],
}
SHAPES = [(), (7,), (0, 5), (33, 17), (3, 3, 4, 5)]
DTYPES = ["float16", "float32", "float64", "bfloat16"]
SEEDS = [0, 1234, 2**31 + 5, 2**32 - 1]


def _bits(array) -> bytes:
    return np.ascontiguousarray(np.asarray(array)).tobytes()


def test_keras_runs_on_its_numpy_backend():
    assert keras.backend.backend() == "numpy"


@pytest.mark.parametrize("name", CLASSES)
def test_defaults_are_keras_defaults(name):
    keras_config = getattr(keras.initializers, name)().get_config()
    ours = getattr(vsgen, name)(seed=0).get_config()
    for key, value in keras_config.items():
        if key != "seed":
            assert ours[key] == value


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_keras_stream_is_bit_identical_to_keras(name, dtype, shape):
    for arguments in ARGUMENTS[name]:
        for seed in SEEDS:
            theirs = getattr(keras.initializers, name)(**arguments, seed=seed)(shape, dtype)
            ours = getattr(vsgen, name)(**arguments, seed=seed, stream="keras")(shape, dtype)
            assert ours.dtype == np.asarray(theirs).dtype
            assert ours.shape == tuple(shape)
            assert _bits(ours) == _bits(theirs), (arguments, seed)


@pytest.mark.parametrize("name", CLASSES)
def test_keras_stream_rows_and_chunks_are_slices_of_keras(name):
    arguments = ARGUMENTS[name][1]
    theirs = np.asarray(getattr(keras.initializers, name)(**arguments, seed=5)((500, 40)))
    init = getattr(vsgen, name)(**arguments, seed=5, stream="keras")
    assert _bits(init.sample((500, 40), rows=(123, 377))) == _bits(theirs[123:377])
    plan = init.plan((500, 40))
    assert b"".join(c.tobytes() for c in plan.chunks(chunk_size=777)) == _bits(theirs)


@pytest.mark.parametrize("name", CLASSES)
def test_keras_forms_from_keras_itself_are_read(name):
    keras_init = getattr(keras.initializers, name)(**ARGUMENTS[name][2], seed=99)
    form = keras.initializers.serialize(keras_init)
    ours = vsgen.deserialize(json.loads(json.dumps(form)))
    assert type(ours) is getattr(vsgen, name)
    keras_stream = type(ours).from_config({**ours.get_config(), "stream": "keras"})
    assert _bits(keras_stream((21, 13))) == _bits(keras_init((21, 13)))
    # ... and Keras reads vsgen's form back into its own class.
    restored = keras.initializers.deserialize(ours.keras_config())
    assert type(restored) is getattr(keras.initializers, name)
    assert restored.get_config() == keras_init.get_config()


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_vsgen_keras_classes_are_keras_classes_drawing_from_vsgen(name, stream):
    arguments = ARGUMENTS[name][1]
    init = getattr(vk, name)(**arguments, seed=77, stream=stream)
    assert isinstance(init, getattr(keras.initializers, name))
    assert keras.saving.get_registered_name(type(init)) == f"vsgen>{name}"
    for dtype in DTYPES:
        expected = getattr(vsgen, name)(**arguments, seed=77, stream=stream)((9, 11), dtype)
        assert _bits(init((9, 11), dtype)) == _bits(expected)
    config = init.get_config()
    assert config == {
        **getattr(keras.initializers, name)(**arguments, seed=77).get_config(),
        "stream": stream,
    }
    assert type(init).from_config(config).get_config() == config


def test_vsgen_keras_fixed_classes_in_a_saved_model(tmp_path):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(
        5,
        kernel_initializer=vk.TruncatedNormal(stddev=0.02, seed=1),
        bias_initializer=vk.RandomUniform(-0.1, 0.1, seed=2, stream="keras"),
    )(inputs)
    outputs = keras.layers.Dense(3, kernel_initializer=vk.RandomNormal(1.0, 0.5, seed=3))(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for ours, theirs in zip(model.weights, loaded.weights, strict=True):
        assert _bits(ours.numpy()) == _bits(theirs.numpy())
    assert type(loaded.layers[1].kernel_initializer) is vk.TruncatedNormal
    assert _bits(model.layers[1].kernel.numpy()) == _bits(
        vsgen.TruncatedNormal(0.0, 0.02, seed=1)((6, 5))
    )


def test_vsgen_keras_argument_checks_and_the_seed_bound():
    with pytest.raises(ValueError, match="Argument `stddev` must be a positive"):
        vk.RandomNormal(stddev=-1.0)
    with pytest.raises(ValueError, match="Argument `maxval` must be greater"):
        vk.RandomUniform(minval=1.0, maxval=0.0)
    # Keras's own bound: its numpy backend makes uint32 words of the seed.
    assert vk.KERAS_MAX_SEED == 2**32
    with pytest.raises(ValueError, match=r"Argument `seed` must be in \[0, 2\*\*32\)"):
        vk.RandomNormal(seed=2**32, stream="keras")
    with pytest.raises(OverflowError):
        keras.initializers.RandomNormal(seed=2**32)((2, 2))
    edge = vk.RandomNormal(seed=2**32 - 1, stream="keras")((2, 2))
    assert _bits(edge) == _bits(keras.initializers.RandomNormal(seed=2**32 - 1)((2, 2)))
    # The vsgen stream takes 64-bit seeds; unseeded, Keras draws a valid one.
    assert vk.RandomNormal(seed=2**40)((2, 2)).shape == (2, 2)
    assert 0 <= vk.HeNormal().seed < vk.KERAS_MAX_SEED


# --- configs Keras can run (vsgen config --keras) ----------------------------------

CONFIG_CASES = [
    ["--preset", "he_normal", "--seed", "4294967295"],
    ["--preset", "glorot_uniform"],  # no seed: null, Keras draws one
    ["--scale", "2", "--distribution", "uniform", "--seed", "0"],
    ["--preset", "random_normal", "--mean", "1", "--stddev", "0.5", "--seed", "12"],
    ["--preset", "truncated_normal", "--stddev", "0.02", "--seed", "2147483653"],
    ["--preset", "random_uniform", "--minval", "0", "--maxval", "2", "--seed", "3"],
    ["--preset", "kaiming_uniform", "--layout", "keras", "--seed", "6"],
]


@pytest.mark.parametrize("args", CONFIG_CASES, ids=" ".join)
def test_config_keras_runs_in_keras_numpy_backend(args):
    result = CliRunner().invoke(cli, ["config", "--keras", *args])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    restored = keras.initializers.deserialize(document)
    values = np.asarray(restored((16, 8)))  # Keras runs it
    assert values.shape == (16, 8) and np.isfinite(values).all()
    if document["config"]["seed"] is not None:
        ours = vsgen.deserialize(document)
        keras_stream = type(ours).from_config({**ours.get_config(), "stream": "keras"})
        assert _bits(keras_stream((16, 8))) == _bits(values)


def test_config_keras_runs_in_keras_jax_backend():
    pytest.importorskip("jax")
    documents = []
    for args in CONFIG_CASES:
        result = CliRunner().invoke(cli, ["config", "--keras", *args])
        assert result.exit_code == 0, result.stderr
        documents.append(json.loads(result.stdout))
    script = textwrap.dedent(
        """
        import json, sys, numpy as np, keras
        assert keras.backend.backend() == "jax"
        for document in json.loads(sys.stdin.read()):
            values = keras.ops.convert_to_numpy(
                keras.initializers.deserialize(document)((16, 8))
            )
            assert values.shape == (16, 8) and np.isfinite(values).all()
        print("ok")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("seed", ["1417433315973091", "5000000000", "4294967296"])
def test_config_keras_refuses_seeds_keras_cannot_take(seed):
    # What Keras does with such a seed: OverflowError when the initializer is called.
    with pytest.raises(OverflowError):
        keras.initializers.HeNormal(seed=int(seed))((512, 256))
    result = CliRunner().invoke(cli, ["config", "--preset", "he_normal", "--seed", seed, "--keras"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: --seed must be in [0, 2**32) for Keras 3")
    # Without --keras the vsgen stream takes it.
    plain = CliRunner().invoke(cli, ["config", "--preset", "he_normal", "--seed", seed])
    assert plain.exit_code == 0


def test_config_keras_refuses_a_large_seed_from_a_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"scale": 2.0, "seed": 2**40}))
    result = CliRunner().invoke(cli, ["config", "--config", str(path), "--keras"])
    assert result.exit_code == 2
    assert "2**32" in result.stderr and result.stderr.count("\n") == 1


def test_config_keras_subprocess_exit_code_and_one_line():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsgen",
            "config",
            "--preset",
            "he_normal",
            "--seed",
            "1417433315973091",
            "--keras",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
