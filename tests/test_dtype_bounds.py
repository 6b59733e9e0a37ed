"""vsgen.dtypes: the representable bounds that 16-bit outputs are clamped to.

Expected values are derived by hand from the formats' spacing: float16 keeps
10 fraction bits, so in [2**e, 2**(e+1)) its values are k * 2**(e-10);
bfloat16 keeps 7, so there they are k * 2**(e-7).
"""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest

from vsgen import dtypes

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)

# In [0.25, 0.5): float16 steps of 2**-12, bfloat16 steps of 2**-9.
BELOW_HALF = {F16: 0.5 - 2**-12, BF16: 0.5 - 2**-9}
# In [0.0625, 0.125): float16 steps of 2**-14; 0.1 / 2**-14 = 1638.4.
F16_BELOW_TENTH = 1638 * 2**-14
F16_ABOVE_TENTH = 1639 * 2**-14


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_uniform_excludes_a_representable_limit(dtype):
    # [-limit, limit): the low end is the limit itself, the high end one step below it.
    assert dtypes.narrow_bounds(dtype, "uniform", 0.5) == (-0.5, BELOW_HALF[dtype])


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_truncated_normal_keeps_a_representable_two_sigma(dtype):
    # [-2s, 2s] is closed: 2 * 0.25 = 0.5 is representable and kept at both ends.
    assert dtypes.narrow_bounds(dtype, "truncated_normal", 0.25) == (-0.5, 0.5)


def test_a_limit_between_values_gets_the_value_just_inside():
    assert dtypes.narrow_bounds(F16, "uniform", 0.1) == (-F16_BELOW_TENTH, F16_BELOW_TENTH)
    assert dtypes.narrow_bounds(F16, "truncated_normal", 0.05) == (
        -F16_BELOW_TENTH,
        F16_BELOW_TENTH,
    )


@pytest.mark.parametrize(
    ("dtype", "distribution"),
    [
        (np.float32, "uniform"),
        (np.float64, "truncated_normal"),
        (F16, "untruncated_normal"),
        (BF16, "normal"),
    ],
)
def test_no_bounds_where_rounding_is_left_alone(dtype, distribution):
    assert dtypes.narrow_bounds(dtype, distribution, 0.5) is None


def test_largest_at_most_keeps_a_representable_value_unless_strictly():
    assert dtypes.largest_at_most(0.5, F16) == 0.5
    assert dtypes.largest_at_most(0.5, F16, strictly=True) == BELOW_HALF[F16]
    assert dtypes.largest_at_most(0.5, BF16, strictly=True) == BELOW_HALF[BF16]
    assert dtypes.largest_at_most(0.1, F16) == F16_BELOW_TENTH
    # Negative values step away from zero.
    assert dtypes.largest_at_most(-0.1, F16) == -F16_ABOVE_TENTH
    assert dtypes.largest_at_most(-0.5, F16, strictly=True) == -(0.5 + 2**-11)


def test_largest_at_most_past_the_range_is_the_largest_finite_value_silently():
    # float16's largest finite value: (2 - 2**-10) * 2**15 = 65504.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflowing cast must not warn
        assert dtypes.largest_at_most(1e6, F16) == 65504.0
        assert dtypes.largest_at_most(65504.0, F16, strictly=True) == 65472.0
    assert dtypes.largest_at_most(1e300, np.float32) == float(np.finfo(np.float32).max)


@pytest.mark.parametrize("value", [-1e6, -math.inf, math.nan])
def test_largest_at_most_refuses_what_has_no_finite_answer(value):
    with pytest.raises(ValueError) as caught:
        dtypes.largest_at_most(value, F16)
    assert str(caught.value) == f"no finite float16 value is at most {value!r}"


def test_interval_bounds_are_inside_both_ends():
    assert dtypes.interval_bounds(F16, -0.1, 0.5, open_high=True) == (
        -F16_BELOW_TENTH,
        BELOW_HALF[F16],
    )
    assert dtypes.interval_bounds(F16, -0.1, 0.5, open_high=False) == (-F16_BELOW_TENTH, 0.5)
    # An interval between two neighbours holds no value: the ends cross.
    low, high = dtypes.interval_bounds(F16, 0.10001, 0.10002, open_high=False)
    assert (low, high) == (F16_ABOVE_TENTH, F16_BELOW_TENTH)


def test_round_into_clamps_before_rounding():
    bounds = (-0.5, BELOW_HALF[F16])
    values = np.array([0.49999, 0.5, 0.7, -0.50001, -0.2], dtype=np.float32)
    out = np.empty(5, dtype=F16)
    dtypes.round_into(out, values, bounds)
    # 0.49999 rounds to 0.5, outside [-0.5, 0.5): clamped first, it lands on the bound.
    # -0.2: float16 steps by 2**-13 in [0.125, 0.25), and 0.2 / 2**-13 = 1638.4.
    assert out.tolist() == [BELOW_HALF[F16], BELOW_HALF[F16], BELOW_HALF[F16], -0.5, -1638 * 2**-13]
    out = np.empty(2, dtype=F16)
    dtypes.round_into(out, np.array([0.49999, 0.7], dtype=np.float32), None)
    assert out.tolist() == [0.5, 0.7001953125]
