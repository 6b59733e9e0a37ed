"""VarianceScaling: validation, formulas, configs, presets, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import vsgen
from vsgen.fans import shard_rows
from vsgen.initializer import deserialize, get_preset, loads

TRUNCATED_FACTOR = 0.87962566103423978


def test_truncated_factor_is_the_std_of_the_truncated_standard_normal():
    # Independent derivation: Var = 1 - 2*2*phi(2) / (2*Phi(2) - 1).
    phi = math.exp(-2.0) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(2 / math.sqrt(2)))
    assert math.isclose(math.sqrt(1 - 4 * phi / (2 * big_phi - 1)), TRUNCATED_FACTOR, rel_tol=1e-15)


@pytest.mark.parametrize(
    ("mode", "n"),
    [("fan_in", 3 * 3 * 64), ("fan_out", 3 * 3 * 128), ("fan_avg", 3 * 3 * (64 + 128) / 2)],
)
def test_scaling_formulas_for_conv_kernel(mode, n):
    init = vsgen.VarianceScaling(2.0, mode, "truncated_normal", seed=0)
    scaling = init.scaling((3, 3, 64, 128))
    assert scaling.n == n
    assert math.isclose(scaling.variance, 2.0 / n)
    assert math.isclose(scaling.stddev, math.sqrt(2.0 / n))
    assert math.isclose(scaling.pre_truncation_std, math.sqrt(2.0 / n) / TRUNCATED_FACTOR)
    assert math.isclose(scaling.bound, 2 * scaling.pre_truncation_std)
    assert scaling.limit is None


def test_uniform_limit_and_floor_of_n():
    init = vsgen.VarianceScaling(3.0, "fan_in", "uniform", seed=0)
    scaling = init.scaling((0, 4))  # fan_in 0 is floored to n = 1
    assert scaling.n == 1.0
    assert scaling.limit == math.sqrt(3.0 * 3.0)


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf"), True, "2", None])
def test_bad_scale(scale):
    with pytest.raises((ValueError, TypeError), match="scale"):
        vsgen.VarianceScaling(scale)


@pytest.mark.parametrize("mode", ["FAN_IN", "fanin", "", None])
def test_bad_mode(mode):
    with pytest.raises(ValueError, match="mode"):
        vsgen.VarianceScaling(mode=mode)


def test_distribution_is_case_insensitive_with_normal_alias():
    assert vsgen.VarianceScaling(distribution="Normal", seed=1).distribution == "truncated_normal"
    assert vsgen.VarianceScaling(distribution="UNIFORM", seed=1).distribution == "uniform"
    with pytest.raises(ValueError, match="distribution"):
        vsgen.VarianceScaling(distribution="gaussian")


@pytest.mark.parametrize(
    ("seed", "stream"),
    [
        (-1, "vsgen"),
        (2**64, "vsgen"),
        (2**32, "keras"),
        (1.5, "vsgen"),
        (True, "vsgen"),
        ("3", "vsgen"),
    ],
)
def test_bad_seed(seed, stream):
    with pytest.raises((ValueError, TypeError), match="seed"):
        vsgen.VarianceScaling(seed=seed, stream=stream)


@pytest.mark.parametrize("dtype", ["int32", "bool", "float8", np.int64, "complex64"])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match="dtype"):
        vsgen.VarianceScaling(seed=0, stream="keras")((2, 2), dtype)


@pytest.mark.parametrize("stream", ["keras", "vsgen"])
def test_repeated_calls_are_identical_and_none_draws_once(stream):
    init = vsgen.VarianceScaling(seed=None, stream=stream)
    assert init.seed_was_drawn and isinstance(init.seed, int)
    first, second = init((16, 8)), init((16, 8))
    assert np.array_equal(first, second)
    again = vsgen.VarianceScaling.from_config(init.get_config())
    assert np.array_equal(again((16, 8)), first)


def test_seed_sequence_gives_fresh_values_per_call():
    init = vsgen.VarianceScaling(seed=np.random.SeedSequence(5), stream="keras")
    first, second = init((32,)), init((32,))
    assert not np.array_equal(first, second)
    # ... and is itself reproducible.
    init2 = vsgen.VarianceScaling(seed=np.random.SeedSequence(5), stream="keras")
    assert np.array_equal(init2((32,)), first)


def test_get_config_round_trip_and_json():
    init = vsgen.VarianceScaling(0.5, "fan_avg", "uniform", seed=9, layout="torch", stream="keras")
    config = init.get_config()
    assert json.loads(json.dumps(config)) == config
    assert config == {
        "scale": 0.5,
        "mode": "fan_avg",
        "distribution": "uniform",
        "seed": 9,
        "layout": "torch",
        "stream": "keras",
    }
    assert vsgen.VarianceScaling.from_config(config) == init
    with pytest.raises(ValueError, match="unknown key"):
        vsgen.VarianceScaling.from_config({**config, "gain": 2})


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("glorot_normal", (1.0, "fan_avg", "truncated_normal")),
        ("GlorotUniform", (1.0, "fan_avg", "uniform")),
        ("he_normal", (2.0, "fan_in", "truncated_normal")),
        ("he-uniform", (2.0, "fan_in", "uniform")),
        ("LecunNormal", (1.0, "fan_in", "truncated_normal")),
        ("lecun_uniform", (1.0, "fan_in", "uniform")),
    ],
)
def test_presets(name, params):
    init = get_preset(name)(seed=1)
    assert (init.scale, init.mode, init.distribution) == params


def test_deserialize_forms():
    plain = deserialize({"scale": 2.0, "mode": "fan_in", "distribution": "normal", "seed": 4})
    keras_form = deserialize(
        {
            "module": "keras.initializers",
            "class_name": "HeNormal",
            "config": {"seed": 4, "input_axes": None, "output_axes": None},
            "registered_name": None,
        }
    )
    assert plain.get_config() == keras_form.get_config()
    assert isinstance(keras_form, vsgen.HeNormal)
    assert isinstance(deserialize("glorot_uniform"), vsgen.GlorotUniform)
    with pytest.raises(ValueError, match="HeNormal has scale"):
        deserialize({"class_name": "HeNormal", "config": {"seed": 1, "scale": 1.0}})
    with pytest.raises(ValueError, match="class_name"):
        deserialize({"class_name": "Orthogonal", "config": {}})
    with pytest.raises(ValueError, match="not valid JSON"):
        loads("{scale: 1}")
    with pytest.raises(TypeError, match="JSON object"):
        loads("[1, 2]")


def test_keras_config_refuses_torch_layout():
    with pytest.raises(ValueError, match="no Keras equivalent"):
        vsgen.VarianceScaling(seed=0, layout="torch").keras_config()


@pytest.mark.parametrize(("rows", "count"), [(10, 4), (3, 5), (8, 8), (0, 2)])
def test_shards_partition_rows(rows, count):
    parts = [shard_rows((rows, 2), k, count) for k in range(count)]
    assert parts[0][0] == 0 and parts[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1
    assert [len(p) for p in np.array_split(np.arange(rows), count)] == sizes


def test_rows_and_fan_shape():
    init = vsgen.VarianceScaling(seed=3, stream="keras")
    full = init((10, 4))
    assert np.array_equal(init.sample((10, 4), rows=(2, 5)), full[2:5])
    with pytest.raises(ValueError, match="rows"):
        init.sample((10, 4), rows=(5, 11))
    plan = init.plan((4, 4), fan_shape=(400, 4))
    assert plan.scaling.fan_in == 400


@pytest.mark.parametrize(("stream", "bits"), [("vsgen", 53), ("keras", 32)])
def test_drawn_seeds_stay_json_exact_and_use_their_range(stream, bits):
    seeds = [vsgen.VarianceScaling(stream=stream).seed for _ in range(200)]
    assert all(0 <= seed < 2**bits for seed in seeds)
    # 200 uniform draws all in the lower half has probability 2**-200.
    assert max(seeds) >= 2 ** (bits - 1)
    assert all(float(seed) == seed for seed in seeds)  # exact as a double


def test_one_seed_is_one_stream():
    """What the README's "One seed, one stream" says, so that it stays true."""
    one = vsgen.VarianceScaling(seed=5, distribution="uniform").sample((1000, 100))
    two = vsgen.VarianceScaling(2.0, seed=5, distribution="uniform").sample((1000, 100))
    assert np.allclose(two, one * np.sqrt(2.0), rtol=1e-6)
    wide = vsgen.VarianceScaling(seed=5, distribution="uniform").sample((100, 1000))
    assert np.corrcoef(one.ravel(), wide.ravel())[0, 1] > 0.999999
    normal = vsgen.VarianceScaling(seed=5, distribution="untruncated_normal").sample((1000, 100))
    truncated = vsgen.VarianceScaling(seed=5).sample((1000, 100))
    assert np.corrcoef(normal.ravel(), truncated.ravel())[0, 1] > 0.95


# fan_avg with an odd fan_in + fan_out: n is a half-integer, derived by hand.
@pytest.mark.parametrize(
    ("shape", "fan_in", "fan_out", "n"),
    [
        ((3, 4), 3, 4, 3.5),
        ((1, 2), 1, 2, 1.5),
        ((3, 3, 5, 2), 45, 18, 31.5),  # receptive field 9
        ((7, 2, 3), 14, 21, 17.5),  # receptive field 7
    ],
)
@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_fan_avg_with_an_odd_sum(shape, fan_in, fan_out, n, stream):
    init = vsgen.VarianceScaling(2.0, "fan_avg", "uniform", seed=0, stream=stream)
    scaling = init.scaling(shape)
    assert (scaling.fan_in, scaling.fan_out) == (fan_in, fan_out)
    assert scaling.n == n
    assert scaling.variance == 2.0 / n
    assert scaling.limit == math.sqrt(3.0 * (2.0 / n))
    # The values see the same n: 2**16 uniform values with the fans of `shape`
    # come within 0.1 % of the hand-derived limit and never reach it.
    limit = math.sqrt(6.0 / n)
    values = init.sample((2**16,), "float64", fan_shape=shape)
    assert 0.999 * limit < np.abs(values).max() < limit
    truncated = vsgen.VarianceScaling(2.0, "fan_avg", seed=0, stream=stream).scaling(shape)
    assert truncated.stddev == math.sqrt(2.0 / n)
    assert truncated.bound == 2 * math.sqrt(2.0 / n) / TRUNCATED_FACTOR


# --- error messages: Keras style, naming the argument and the received value --------


def _message_cases():
    vs = vsgen.VarianceScaling
    modes = "fan_in, fan_out, fan_avg, fan_geo_avg"
    dists = "truncated_normal, untruncated_normal, uniform"
    return [
        (
            lambda: vs(-1),
            ValueError,
            "Argument `scale` must be a positive finite float. Received: scale=-1",
        ),
        (
            lambda: vs("2"),
            TypeError,
            "Argument `scale` must be a positive finite float. Received: scale='2'",
        ),
        (
            lambda: vs(mode="FAN_IN"),
            ValueError,
            f"Argument `mode` must be one of {modes}. Received: mode='FAN_IN'",
        ),
        (
            lambda: vs(distribution=3),
            TypeError,
            f"Argument `distribution` must be one of {dists}. Received: distribution=3",
        ),
        (
            lambda: vs(distribution="gauss"),
            ValueError,
            f"Argument `distribution` must be one of {dists} (or 'normal', an alias of "
            "truncated_normal). Received: distribution='gauss'",
        ),
        (
            lambda: vs(seed=1.5),
            TypeError,
            "Argument `seed` must be None or a non-negative integer. Received: seed=1.5",
        ),
        (
            lambda: vs(seed=-1),
            ValueError,
            "Argument `seed` must be in [0, 2**64) for the 'vsgen' stream. Received: seed=-1",
        ),
        (
            lambda: vs(seed=2**32, stream="keras"),
            ValueError,
            "Argument `seed` must be in [0, 2**32) for the 'keras' stream. "
            "Received: seed=4294967296",
        ),
        (
            lambda: vs(input_axes="01", output_axes=[1]),
            TypeError,
            "Argument `input_axes` must be None or a list of integers. Received: input_axes='01'",
        ),
        (
            lambda: vs(input_axes=[0], output_axes=[1.0]),
            TypeError,
            "Argument `output_axes` must be None or a list of integers. "
            "Received: output_axes=[1.0]",
        ),
        (
            lambda: vs(input_axes=[0]),
            ValueError,
            "Arguments `input_axes` and `output_axes` must be given together. "
            "Received: input_axes=[0], output_axes=None",
        ),
        (
            lambda: vs(layout="caffe"),
            ValueError,
            "Argument `layout` must be one of keras, torch. Received: layout='caffe'",
        ),
        (
            lambda: vs.from_config([1]),
            TypeError,
            "Argument `config` must be a JSON object (a dict). Received: config=[1]",
        ),
        (
            lambda: vs.from_config({"gain": 1, "alpha": 2}),
            ValueError,
            "Argument `config` has unknown key(s) 'alpha', 'gain'; allowed: scale, mode, "
            "distribution, seed, input_axes, output_axes, in_axis, out_axis, batch_axis, "
            "layout, stream, preset",
        ),
        (
            lambda: vs(seed=0, layout="torch").keras_config(),
            ValueError,
            "Argument `layout` 'torch' has no Keras equivalent; give explicit `input_axes` "
            "and `output_axes` instead. Received: layout='torch'",
        ),
        (
            lambda: vs(seed=0).sample((10, 4), rows=(5, 11)),
            ValueError,
            "Argument `rows` must satisfy 0 <= start <= stop <= 10 (the first dimension). "
            "Received: rows=5:11",
        ),
        (
            lambda: vs(seed=0).sample((), rows=(0, 0)),
            ValueError,
            "Argument `rows` needs a shape of rank >= 1; a scalar has no rows.",
        ),
        (
            lambda: shard_rows((4, 2), 2, 2),
            ValueError,
            "Argument `shard` must be K/N with 0 <= K < N. Received: shard=2/2",
        ),
        (
            lambda: shard_rows((), 0, 1),
            ValueError,
            "Argument `shard` needs a shape of rank >= 1; a scalar has no rows.",
        ),
        (  # truncated normal, fan_in 1: bound 2 s = 2 * 1e5 / 0.8796... = 2.274e5
            lambda: vs(1e10, seed=0)((1,), "float16"),
            ValueError,
            "Argument `scale` is too large for `dtype` float16: values would reach 2.274e+05, "
            "beyond its largest finite value 6.55e+04. Received: scale=10000000000.0, "
            "dtype=float16",
        ),
        (
            lambda: get_preset("he"),
            ValueError,
            "Argument `preset` must be one of glorot_normal, glorot_uniform, he_normal, "
            "he_uniform, lecun_normal, lecun_uniform, kaiming_normal, kaiming_uniform, "
            "xavier_normal, xavier_uniform, random_normal, truncated_normal, random_uniform "
            "(or GlorotNormal for glorot_normal; GlorotUniform "
            "for glorot_uniform; HeNormal for he_normal; HeUniform for he_uniform; LecunNormal "
            "for lecun_normal; LecunUniform for lecun_uniform; KaimingNormal, kaiming_normal_ "
            "for kaiming_normal; KaimingUniform, kaiming_uniform_ for kaiming_uniform; "
            "XavierNormal, xavier_normal_ for xavier_normal; XavierUniform, xavier_uniform_ "
            "for xavier_uniform; RandomNormal for random_normal; TruncatedNormal for "
            "truncated_normal; RandomUniform for random_uniform). Received: preset='he'",
        ),
        (
            lambda: deserialize(3),
            TypeError,
            'config must be a JSON object such as {"scale": 2.0, "mode": "fan_in"} or a Keras '
            "serialized initializer. Received: int",
        ),
        (
            lambda: deserialize({"class_name": "Orthogonal"}),
            ValueError,
            "config class_name must be one of VarianceScaling, GlorotNormal, GlorotUniform, "
            "HeNormal, HeUniform, LecunNormal, LecunUniform, KaimingNormal, KaimingUniform, "
            "XavierNormal, XavierUniform, RandomNormal, TruncatedNormal, RandomUniform. "
            "Received: class_name='Orthogonal'",
        ),
        (
            lambda: deserialize({"class_name": "HeNormal", "module": "torch.nn"}),
            ValueError,
            "config module 'torch.nn' is not keras.initializers",
        ),
        (
            lambda: deserialize({"class_name": "HeNormal", "config": [1]}),
            TypeError,
            "config['config'] must be a JSON object. Received: [1]",
        ),
        (
            lambda: deserialize({"class_name": "HeNormal", "config": {"scale": 1.0}}),
            ValueError,
            "HeNormal has scale=2.0; the config says 1.0",
        ),
        (
            lambda: loads('{"scale": }'),
            ValueError,
            "config is not valid JSON: Expecting value at line 1 column 11",
        ),
        (
            lambda: loads("[" * 100_000),
            ValueError,
            "config: nested too deeply (100000 levels; at most 64 are allowed)",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_message_cases())))
def test_error_messages(index):
    call, kind, message = _message_cases()[index]
    with pytest.raises(kind) as caught:
        call()
    assert str(caught.value) == message


# --- configs, presets, equality: exact forms -------------------------------------------


def test_keras_config_exact_forms():
    plain = vsgen.VarianceScaling(0.5, "fan_avg", "uniform", seed=9)
    assert plain.keras_config() == {
        "module": "keras.initializers",
        "class_name": "VarianceScaling",
        "config": {"scale": 0.5, "mode": "fan_avg", "distribution": "uniform", "seed": 9},
        "registered_name": None,
    }
    axes = vsgen.VarianceScaling(2.0, "fan_out", seed=5, input_axes=[0], output_axes=[1, 2])
    assert axes.keras_config()["config"] == {
        "scale": 2.0,
        "mode": "fan_out",
        "distribution": "truncated_normal",
        "seed": 5,
        "input_axes": [0],
        "output_axes": [1, 2],
    }
    assert vsgen.HeNormal(seed=3).keras_config() == {
        "module": "keras.initializers",
        "class_name": "HeNormal",
        "config": {"seed": 3},
        "registered_name": None,
    }
    preset_axes = vsgen.GlorotUniform(seed=4, input_axes=[0, 1], output_axes=[2])
    assert preset_axes.keras_config()["config"] == {
        "seed": 4,
        "input_axes": [0, 1],
        "output_axes": [2],
    }


def test_presets_forward_every_option():
    init = vsgen.LecunUniform(
        seed=7, input_axes=[1], output_axes=[0], layout="torch", stream="keras"
    )
    assert (init.scale, init.mode, init.distribution) == (1.0, "fan_in", "uniform")
    assert (init.seed, init.input_axes, init.output_axes) == (7, (1,), (0,))
    assert (init.layout, init.stream) == ("torch", "keras")


def test_preset_from_config():
    he = vsgen.HeNormal.from_config({"seed": 1, "stream": "keras", "layout": "torch"})
    assert isinstance(he, vsgen.HeNormal)
    assert (he.seed, he.stream, he.layout) == (1, "keras", "torch")
    # A full config that agrees with the preset is accepted, the alias included.
    full = {"seed": 2, "scale": 2.0, "mode": "fan_in", "distribution": "Normal"}
    assert vsgen.HeNormal.from_config(full) == vsgen.HeNormal(seed=2)
    cases = [
        ({"seed": 1, "distribution": "uniform"},
         "HeNormal has distribution='truncated_normal'; the config says 'uniform'"),
        ({"seed": 1, "mode": "fan_out"}, "HeNormal has mode='fan_in'; the config says 'fan_out'"),
        ({"seed": 1, "gain": 2, "bias": 0}, "Argument `config` has unknown key(s) 'bias', 'gain'"),
    ]  # fmt: skip
    for config, message in cases:
        with pytest.raises(ValueError) as caught:
            vsgen.HeNormal.from_config(config)
        assert str(caught.value) == message
    with pytest.raises(TypeError) as caught:
        vsgen.HeNormal.from_config("he_normal")
    assert str(caught.value) == (
        "Argument `config` must be a JSON object (a dict). Received: config='he_normal'"
    )


def test_equality_hash_and_repr():
    a, b = vsgen.VarianceScaling(seed=1), vsgen.VarianceScaling(seed=1)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != vsgen.VarianceScaling(seed=2)
    assert hash(a) != hash(vsgen.VarianceScaling(seed=2))  # the hash follows the config
    # The same numbers under another class are another initializer.
    he = vsgen.HeNormal(seed=1)
    same_numbers = vsgen.VarianceScaling(2.0, "fan_in", "truncated_normal", seed=1)
    assert he.get_config() == same_numbers.get_config() and he != same_numbers
    assert a != 3 and a.__eq__(3) is NotImplemented
    assert repr(vsgen.VarianceScaling(0.5, "fan_avg", "uniform", seed=9)) == (
        "VarianceScaling(scale=0.5, mode='fan_avg', distribution='uniform', seed=9)"
    )
    assert repr(vsgen.HeNormal(seed=3, stream="keras")) == (
        "HeNormal(scale=2.0, mode='fan_in', distribution='truncated_normal', seed=3, "
        "stream='keras')"
    )


def test_scaling_as_dict_by_hand():
    # shape (3, 4), scale 2, fan_in: n = 3, v = 2/3, limit = sqrt(3 v) = sqrt(2).
    document = vsgen.VarianceScaling(2.0, "fan_in", "uniform", seed=0).scaling((3, 4)).as_dict()
    assert document == {
        "shape": [3, 4],
        "fan_in": 3,
        "fan_out": 4,
        "n": 3.0,
        "scale": 2.0,
        "mode": "fan_in",
        "distribution": "uniform",
        "variance": 2.0 / 3.0,
        "stddev": math.sqrt(2.0 / 3.0),
        "pre_truncation_std": None,
        "bound": None,
        "limit": math.sqrt(3.0 * (2.0 / 3.0)),
    }
    assert json.loads(json.dumps(document)) == document


def test_deserialize_details():
    # Keras writes unset axes as null; set ones are kept.
    with_axes = deserialize(
        {
            "class_name": "VarianceScaling",
            "config": {"seed": 1, "input_axes": [0], "output_axes": [1, 2]},
        }
    )
    assert (with_axes.input_axes, with_axes.output_axes) == ((0,), (1, 2))
    unset = deserialize({"class_name": "VarianceScaling", "config": {"seed": 1,
                         "input_axes": None, "output_axes": None}})  # fmt: skip
    assert unset.input_axes is None and unset.output_axes is None
    # No "config" at all: the preset with a drawn seed.
    drawn = deserialize({"class_name": "HeUniform"})
    assert isinstance(drawn, vsgen.HeUniform) and drawn.seed_was_drawn
    for module in ("keras.initializers", "keras.src.initializers", "vsgen", None):
        assert deserialize({"class_name": "HeNormal", "module": module, "config": {"seed": 1}})
    with pytest.raises(ValueError) as caught:
        deserialize({"class_name": ["HeNormal"]})
    assert "Received: class_name=['HeNormal']" in str(caught.value)
    with pytest.raises(ValueError) as caught:
        loads("1" * 5000)  # more digits than Python converts
    assert str(caught.value).startswith("config: ")
    assert "digits" in str(caught.value)


def test_get_config_with_axes_layout_and_stream():
    init = vsgen.VarianceScaling(
        3.0, "fan_out", "uniform", seed=4, input_axes=[0, 1], output_axes=[2],
        layout="torch", stream="keras",
    )  # fmt: skip
    assert init.get_config() == {
        "scale": 3.0,
        "mode": "fan_out",
        "distribution": "uniform",
        "seed": 4,
        "input_axes": [0, 1],
        "output_axes": [2],
        "layout": "torch",
        "stream": "keras",
    }
    assert vsgen.VarianceScaling.from_config(init.get_config()) == init


def test_a_seed_sequence_reports_the_seed_it_used():
    """Each call spawns one child of the sequence and uses its first two 32-bit
    words (low, high) as the integer seed, which ``last_seed`` reports."""
    init = vsgen.VarianceScaling(seed=np.random.SeedSequence(5))
    values = init((4, 4))
    reference = np.random.SeedSequence(5)
    low, high = (int(w) for w in reference.spawn(1)[0].generate_state(2, np.uint32))
    assert init.last_seed == low | (high << 32)
    assert isinstance(init.last_seed, int)
    assert vsgen.VarianceScaling(seed=init.last_seed)((4, 4)).tobytes() == values.tobytes()
    init((4, 4))
    low, high = (int(w) for w in reference.spawn(1)[0].generate_state(2, np.uint32))
    assert init.last_seed == low | (high << 32)


def test_untruncated_normals_must_fit_ten_stddevs():
    # scale 1e8, fan_in 1: stddev 1e4, ten of them 1e5 > 65504 (float16's largest).
    with pytest.raises(ValueError) as caught:
        vsgen.VarianceScaling(1e8, distribution="untruncated_normal", seed=0)((1,), "float16")
    assert str(caught.value) == (
        "Argument `scale` is too large for `dtype` float16: values would reach 1e+05, "
        "beyond its largest finite value 6.55e+04. Received: scale=100000000.0, dtype=float16"
    )
    # 6e3 * 10 = 6e4 fits.
    assert (
        vsgen.VarianceScaling(3.6e7, distribution="untruncated_normal", seed=0)(
            (1,), "float16"
        ).dtype
        == np.float16
    )


def test_defaults_plan_rows_and_a_single_axis():
    init = vsgen.VarianceScaling(seed=3)
    assert (init.scale, init.mode, init.distribution) == (1.0, "fan_in", "truncated_normal")
    assert init.seed_was_drawn is False and init.last_seed == 3
    assert init.plan((10, 4), rows=(2, 5)).rows == (2, 5)
    assert init.plan((10, 4)).rows is None
    single = vsgen.VarianceScaling(seed=0, input_axes=0, output_axes=1)
    assert (single.input_axes, single.output_axes) == ((0,), (1,))


#: Every key a plain config may have, in the order the refusal lists them.
CONFIG_KEYS = (
    "scale, mode, distribution, seed, input_axes, output_axes, in_axis, out_axis, "
    "batch_axis, layout, stream, preset"
)


@pytest.mark.parametrize("key", ["preset", "bogus"])
def test_from_config_refuses_a_null_preset_and_unknown_keys(key):
    # A "preset": null names no class, so VarianceScaling itself cannot take it.
    with pytest.raises(ValueError) as caught:
        vsgen.VarianceScaling.from_config({"scale": 1.0, key: None})
    assert str(caught.value) == (
        f"Argument `config` has unknown key(s) '{key}'; allowed: {CONFIG_KEYS}"
    )


def test_keras_config_refuses_jax_axes_with_the_way_out():
    with pytest.raises(ValueError) as caught:
        vsgen.VarianceScaling(seed=1, in_axis=0, out_axis=1).keras_config()
    assert str(caught.value) == (
        "in_axis/out_axis/batch_axis (JAX's fan axes) have no Keras equivalent; "
        "use input_axes/output_axes instead"
    )


def test_plan_fill_refuses_a_strided_buffer_naming_its_strides():
    plan = vsgen.VarianceScaling(seed=1).plan((4, 4))
    strided = np.zeros((4, 8), dtype=np.float32)[:, ::2]
    with pytest.raises(ValueError) as caught:
        plan.fill(strided)
    assert str(caught.value) == (
        "Argument `out` must be a writeable C-contiguous array. "
        "Received: out with strides (32, 8), writeable=True"
    )
    assert not strided.any()  # nothing written


def test_sample_passes_its_thread_count_on():
    init = vsgen.VarianceScaling(seed=1)
    with pytest.raises(ValueError) as caught:
        init.sample((4, 4), threads=0)
    assert str(caught.value) == "Argument `threads` must be an integer >= 1. Received: threads=0"
    # Any valid count gives the same bytes (SPEC: portable bytes).
    assert init.sample((64, 33), threads=2).tobytes() == init.sample((64, 33), threads=1).tobytes()


def test_deserialize_takes_the_snake_case_class_name():
    # Keras' own alias for the class, as in keras.initializers.get("variance_scaling").
    config = {"scale": 2.0, "mode": "fan_out", "seed": 1}
    made = deserialize({"class_name": "variance_scaling", "config": config})
    assert made == vsgen.VarianceScaling(**config)
