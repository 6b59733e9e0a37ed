"""RandomNormal, TruncatedNormal, RandomUniform: arguments, configs, the vsgen
stream's statistics and random access, provenance, files and ``check``.

Distributions are judged against scipy's exact CDFs (Kolmogorov-Smirnov with
fixed seeds, p > 1e-3) and moments within 6 standard errors; bit parity with
Keras 3 is in ``tests/test_keras_fixed.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

import vsgen
from vsgen import provenance
from vsgen.initializer import deserialize, get_preset, loads

TRUNCATED_FACTOR = 0.87962566103423978
DTYPES = ("float32", "float64", "float16", "bfloat16")


def _reference(name: str, first: float, second: float):
    """scipy's distribution for the initializer, with its kurtosis."""
    if name == "RandomNormal":
        return stats.norm(loc=first, scale=second), 3.0
    if name == "TruncatedNormal":
        return stats.truncnorm(-2, 2, loc=first, scale=second), 2.3655
    return stats.uniform(loc=first, scale=second - first), 1.8


CASES = [
    ("RandomNormal", 0.0, 0.05),
    ("RandomNormal", 1.0, 0.02),
    ("RandomNormal", -3.5, 2.0),
    ("TruncatedNormal", 0.0, 0.02),
    ("TruncatedNormal", 0.5, 0.1),
    ("RandomUniform", -0.05, 0.05),
    ("RandomUniform", 0.0, 1.0),
    ("RandomUniform", 2.0, 2.5),
]


@pytest.mark.parametrize(("name", "first", "second"), CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vsgen_stream_follows_the_distribution(name, first, second, dtype):
    values = getattr(vsgen, name)(first, second, seed=11)((400, 500), dtype)
    flat = values.astype(np.float64).ravel()
    reference, kurtosis = _reference(name, first, second)
    assert stats.kstest(flat, reference.cdf).pvalue > 1e-3
    sigma = reference.std()
    n = flat.size
    assert abs(flat.mean() - reference.mean()) < 6 * sigma / math.sqrt(n)
    assert abs(flat.std() - sigma) < 6 * sigma * math.sqrt((kurtosis - 1) / (4 * n))
    low, high = reference.support()
    if math.isfinite(low):
        assert flat.min() >= low and flat.max() <= high
    if name == "RandomUniform":
        assert flat.max() < high  # half-open


@pytest.mark.parametrize(("name", "first", "second"), CASES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_narrow_dtypes_are_the_float32_values_rounded_once(name, first, second, dtype):
    # docs/stream-v1.md, section 12: the float32 values rounded (and clamped
    # into the range, which the float32 values already respect) once.
    init = getattr(vsgen, name)(first, second, seed=3)
    narrow = init((300, 200), dtype)
    wide = init((300, 200), "float32")
    rounded = wide.astype(narrow.dtype).astype(np.float64)
    values = narrow.astype(np.float64)
    reference, _ = _reference(name, first, second)
    low, high = reference.support()
    inside = (rounded >= low) & (rounded <= high)
    if name == "RandomUniform":
        inside &= rounded < high
    # Where rounding stays inside the range it is the value; elsewhere the
    # value is the nearest representable one inside (one step away).
    assert np.array_equal(values[inside], rounded[inside])
    assert np.all(np.abs(values[~inside] - rounded[~inside]) <= np.abs(rounded[~inside]) * 2**-6)
    assert values.min() >= low and values.max() <= high


def test_truncated_normal_stddev_is_the_one_before_truncation():
    init = vsgen.TruncatedNormal(mean=0.25, stddev=0.1, seed=0)
    scaling = init.scaling((10, 10))
    assert scaling.pre_truncation_std == 0.1
    assert scaling.bound == 0.2
    assert scaling.stddev == 0.1 * TRUNCATED_FACTOR
    assert scaling.value_range() == (0.25 - 0.2, 0.25 + 0.2)
    assert (scaling.fan_in, scaling.n, scaling.scale, scaling.mode) == (None, None, None, None)


def test_random_uniform_range_and_centre():
    scaling = vsgen.RandomUniform(0.1, 0.7, seed=0).scaling((3,))
    assert scaling.value_range() == (0.1, 0.7)
    assert scaling.mean == 0.1 / 2 + 0.7 / 2
    assert scaling.limit == 0.7 / 2 - 0.1 / 2
    assert math.isclose(scaling.stddev, 0.6 / math.sqrt(12), rel_tol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_symmetric_uniform_is_the_variance_scaling_uniform_of_that_limit(dtype):
    # Offset 0: section 1's bytes, whatever produced the limit. A (768, 4)
    # tensor has fan_in 768, so scale 1 gives limit sqrt(3 / 768) = 0.0625.
    scaled = vsgen.VarianceScaling(1.0, "fan_in", "uniform", seed=9)
    assert scaled.scaling((768, 4)).limit == 0.0625
    fixed = vsgen.RandomUniform(-0.0625, 0.0625, seed=9)
    plan = fixed.plan((768, 4), dtype)
    assert plan.draw.offset == 0.0 and plan.draw.interval is None
    assert plan.array().tobytes() == scaled((768, 4), dtype).tobytes()


@pytest.mark.parametrize("name", ["RandomNormal", "TruncatedNormal", "RandomUniform"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_blocks_threads_and_chunks_give_the_same_bytes(name, dtype):
    init = getattr(vsgen, name)(0.5, 1.5, seed=2**40 + 5)
    whole = init.sample((700, 300), dtype, threads=1)
    assert init.sample((700, 300), dtype, threads=3).tobytes() == whole.tobytes()
    rows = init.sample((700, 300), dtype, rows=(123, 456), threads=2)
    assert rows.tobytes() == whole[123:456].tobytes()
    plan = init.plan((700, 300), dtype)
    chunks = b"".join(c.tobytes() for c in plan.chunks(chunk_size=9_999, threads=2))
    assert chunks == whole.tobytes()
    block = np.empty((50, 70), whole.dtype)
    plan.stream.fill_block(block, (600, 200), (700, 300), plan.draw, threads=2)
    assert block.tobytes() == whole[600:650, 200:270].tobytes()


def test_mean_shifts_the_same_draws():
    # One seed, one stream: the mean moves the values, in float64 exactly.
    centred = vsgen.RandomNormal(0.0, 0.25, seed=4)((1000,), "float64")
    shifted = vsgen.RandomNormal(3.0, 0.25, seed=4)((1000,), "float64")
    assert np.array_equal(shifted, centred + 3.0)


@pytest.mark.parametrize(
    ("call", "kind", "message"),
    [
        (lambda: vsgen.RandomNormal(stddev=0), ValueError, "Argument `stddev` must be a positive"),
        (lambda: vsgen.RandomNormal(stddev=-1.0), ValueError, "stddev=-1.0"),
        (lambda: vsgen.RandomNormal(mean=math.nan), ValueError, "Argument `mean` must be a finite"),
        (lambda: vsgen.RandomNormal(mean="1"), TypeError, "Argument `mean`"),
        (lambda: vsgen.TruncatedNormal(stddev=True), TypeError, "Argument `stddev`"),
        (lambda: vsgen.TruncatedNormal(stddev=math.inf), ValueError, "Argument `stddev`"),
        (
            lambda: vsgen.RandomUniform(1.0, 1.0),
            ValueError,
            "Argument `maxval` must be greater than `minval`. Received: minval=1.0, maxval=1.0",
        ),
        (lambda: vsgen.RandomUniform(0.5, -0.5), ValueError, "greater than `minval`"),
        (lambda: vsgen.RandomUniform(minval=None), TypeError, "Argument `minval`"),
        (lambda: vsgen.RandomNormal(seed=-1), ValueError, "Argument `seed`"),
        (lambda: vsgen.RandomNormal(seed=2**32, stream="keras"), ValueError, "2\\*\\*32"),
        (lambda: vsgen.RandomNormal(stream="numpy"), ValueError, "Argument `stream`"),
    ],
)
def test_argument_checks(call, kind, message):
    with pytest.raises(kind, match=message):
        call()


def test_keras_defaults():
    assert vsgen.RandomNormal(seed=0).get_config() == {
        "preset": "random_normal",
        "mean": 0.0,
        "stddev": 0.05,
        "seed": 0,
    }
    assert (vsgen.TruncatedNormal(seed=0).mean, vsgen.TruncatedNormal(seed=0).stddev) == (0.0, 0.05)
    assert (vsgen.RandomUniform(seed=0).minval, vsgen.RandomUniform(seed=0).maxval) == (-0.05, 0.05)


@pytest.mark.parametrize(
    "init",
    [
        vsgen.RandomNormal(1.0, 0.5, seed=3),
        vsgen.TruncatedNormal(-1.0, 0.02, seed=2**60, stream="vsgen"),
        vsgen.RandomUniform(0.0, 4.0, seed=7, stream="keras"),
    ],
    ids=["normal", "truncated", "uniform-keras"],
)
def test_configs_round_trip(init):
    config = init.get_config()
    assert json.loads(json.dumps(config)) == config
    for rebuilt in (
        type(init).from_config(config),
        vsgen.VarianceScaling.from_config(config),  # a config names its class
        deserialize(config),
        loads(json.dumps(config)),
        provenance.recorded_initializer({"config": config}),
    ):
        assert rebuilt == init
        assert rebuilt((9, 4)).tobytes() == init((9, 4)).tobytes()


def test_keras_forms_and_names():
    keras_form = {
        "module": "keras.initializers",
        "class_name": "TruncatedNormal",
        "config": {"seed": 5, "mean": 0.0, "stddev": 0.02},
        "registered_name": None,
    }
    assert deserialize(keras_form) == vsgen.TruncatedNormal(0.0, 0.02, seed=5)
    assert vsgen.TruncatedNormal(0.0, 0.02, seed=5).keras_config() == keras_form
    assert vsgen.RandomUniform(-1, 1, seed=2).keras_config()["config"] == {
        "seed": 2,
        "minval": -1.0,
        "maxval": 1.0,
    }
    for name, cls in [
        ("random_normal", vsgen.RandomNormal),
        ("RandomNormal", vsgen.RandomNormal),
        ("normal", vsgen.RandomNormal),  # Keras's alias
        ("truncated_normal", vsgen.TruncatedNormal),
        ("TruncatedNormal", vsgen.TruncatedNormal),
        ("random_uniform", vsgen.RandomUniform),
        ("uniform", vsgen.RandomUniform),
    ]:
        assert type(deserialize(name)) is cls
        assert type(deserialize({"class_name": name, "config": {"seed": 1}})) is cls
    assert get_preset("Truncated-Normal") is vsgen.TruncatedNormal
    with pytest.raises(ValueError, match="unknown key"):
        deserialize({"class_name": "RandomNormal", "config": {"scale": 2.0}})
    with pytest.raises(ValueError, match="names another initializer"):
        vsgen.RandomNormal.from_config({"preset": "truncated_normal"})


def test_keras_config_refuses_seeds_keras_cannot_take():
    with pytest.raises(ValueError, match=r"must be in \[0, 2\*\*32\) for Keras 3"):
        vsgen.HeNormal(seed=1417433315973091).keras_config()
    with pytest.raises(ValueError, match="2\\*\\*32"):
        vsgen.RandomNormal(seed=5_000_000_000).keras_config()
    assert vsgen.HeNormal(seed=2**32 - 1).keras_config()["config"]["seed"] == 2**32 - 1
    drawn = vsgen.RandomNormal()
    assert drawn.seed_was_drawn
    assert drawn.keras_config()["config"]["seed"] == drawn.seed % 2**32


def test_complex_values():
    init = vsgen.RandomNormal(0.0, 0.3, seed=1)
    values = init((300, 300), "complex64").astype(np.complex128).ravel()
    n = values.size
    # jax.nn.initializers.normal's meaning: E|z|**2 = stddev**2, split evenly.
    assert abs(np.mean(np.abs(values) ** 2) - 0.09) < 6 * 0.09 / math.sqrt(n)
    assert abs(values.real.std() - 0.3 / math.sqrt(2)) < 0.003
    with pytest.raises(ValueError, match="only with mean 0"):
        vsgen.RandomNormal(1.0, 0.3, seed=1)((4,), "complex64")
    for cls in (vsgen.TruncatedNormal, vsgen.RandomUniform):
        with pytest.raises(ValueError, match="real tensors only"):
            cls(seed=1)((4,), "complex128")


def test_numbers_the_dtype_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="`stddev` is too large for `dtype` float16"):
        vsgen.RandomNormal(0.0, 10_000.0, seed=0)((4,), "float16")
    with pytest.raises(ValueError, match="`stddev` is too large for `dtype` float16"):
        vsgen.RandomNormal(65_500.0, 1.0, seed=0)((4,), "float16")
    with pytest.raises(ValueError, match="`stddev` is too small for `dtype` float16"):
        vsgen.TruncatedNormal(0.0, 1e-6, seed=0)((4,), "float16")
    with pytest.raises(ValueError, match="no float16 value lies in the range"):
        vsgen.RandomUniform(1.00001, 1.00002, seed=0)((4,), "float16")
    assert vsgen.RandomUniform(1.00001, 1.00002, seed=0)((4,), "float32").dtype == np.float32


def test_fill_and_seed_sequences():
    init = vsgen.TruncatedNormal(1.0, 0.1, seed=8)
    buffer = np.empty((64, 32), np.float32)
    vsgen.fill_(buffer, init)
    assert buffer.tobytes() == init((64, 32)).tobytes()
    fresh = vsgen.RandomUniform(0, 1, seed=np.random.SeedSequence(1))
    assert not np.array_equal(fresh((16,)), fresh((16,)))


def test_records_say_what_made_the_tensor():
    init = vsgen.RandomUniform(0.0, 2.0, seed=3)
    plan = init.plan((5, 6), "bfloat16")
    record = provenance.tensor_record(init, plan)
    assert record["kind"] == "random_uniform"
    assert record["config"] == {
        "preset": "random_uniform",
        "minval": 0.0,
        "maxval": 2.0,
        "seed": 3,
        "stream": "vsgen",
    }
    assert (record["fan_in"], record["fan_out"], record["n"]) == (None, None, None)
    assert record["mean"] == 1.0 and math.isclose(record["stddev"], 2 / math.sqrt(12))
    replayed = provenance.replay(json.loads(json.dumps(record)))
    again = replayed.initializer.plan(replayed.full_shape, replayed.dtype)
    assert again.array().tobytes() == plan.array().tobytes()


def test_fixed_scaling_as_dict_keys_and_values():
    # RandomNormal's defaults: mean 0, stddev 0.05; no truncation, no limit.
    info = vsgen.RandomNormal(seed=1).scaling((2, 3)).as_dict()
    assert info == {
        "shape": [2, 3],
        "distribution": "untruncated_normal",
        "mean": 0.0,
        "stddev": 0.05,
        "variance": 0.05**2,
        "pre_truncation_std": None,
        "bound": None,
        "limit": None,
    }
    # RandomUniform's defaults: [-0.05, 0.05), so limit 0.05 and the range itself.
    info = vsgen.RandomUniform(seed=1).scaling((2, 3)).as_dict()
    assert info["limit"] == 0.05
    assert (info["minval"], info["maxval"]) == (-0.05, 0.05)
    assert info["variance"] == pytest.approx(0.1**2 / 12, rel=1e-12)


def test_complex_random_normal_needs_mean_zero():
    with pytest.raises(ValueError) as caught:
        vsgen.RandomNormal(seed=1, mean=1.0).plan((2, 2), "complex64")
    assert str(caught.value) == (
        "RandomNormal makes complex values only with mean 0 (as jax.nn.initializers.normal). "
        "Received: mean=1.0"
    )
