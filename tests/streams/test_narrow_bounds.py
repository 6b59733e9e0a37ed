"""float16 and bfloat16 values stay inside the documented bounds after rounding.

The vsgen stream computes narrow outputs in float32 and rounds once; rounding
can carry a value onto ``+limit`` (uniform, documented as ``[-limit, limit)``)
or past ``2s`` (truncated normal, ``[-2s, 2s]``). Those values are clamped to
the nearest representable value inside; float32/float64 bytes never change.
The expected ends are computed here with ``numpy.nextafter`` on the 16-bit
types themselves (ml_dtypes provides it for bfloat16).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import vsgen

NARROW = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def largest_inside(bound: float, dtype: np.dtype, strictly: bool) -> float:
    value = np.array(bound).astype(dtype)
    zero = np.zeros((), dtype)
    while float(value) > bound or (strictly and float(value) == bound):
        value = np.nextafter(value, zero)
    return float(value)


def old_rounding(init: vsgen.VarianceScaling, shape, dtype: np.dtype) -> np.ndarray:
    """What the stream gave before: float32 values rounded, with no clamp."""
    return init.sample(shape, "float32").astype(dtype).astype(np.float64)


# Seeds/shapes where plain rounding does reach or pass the bound (found by
# search; each case asserts that it still exercises the clamp).
CASES = [
    ("uniform", "float16", (1000, 100)),
    ("uniform", "bfloat16", (256, 256)),
    ("truncated_normal", "bfloat16", (256, 256)),
]


@pytest.mark.parametrize(("distribution", "name", "shape"), CASES)
def test_rounding_never_reaches_the_bound(distribution, name, shape):
    dtype = NARROW[name]
    init = vsgen.VarianceScaling(seed=7, distribution=distribution)
    scaling = init.scaling(shape)
    bound = scaling.limit if distribution == "uniform" else scaling.bound
    before = np.abs(old_rounding(init, shape, dtype))
    crossed = before >= bound if distribution == "uniform" else before > bound
    assert crossed.any(), "the case no longer exercises the clamp"

    values = init.sample(shape, name).astype(np.float64)
    high = largest_inside(bound, dtype, strictly=distribution == "uniform")
    low = -largest_inside(bound, dtype, strictly=False)
    assert values.max() <= high and values.min() >= low
    if distribution == "uniform":
        assert values.max() < bound and values.min() >= -bound
    else:
        assert np.abs(values).max() <= bound
    # Clamped values sit exactly on the representable end; nothing else moved.
    moved = values != old_rounding(init, shape, dtype)
    assert moved.sum() == crossed.sum()
    assert set(np.abs(values[moved]).tolist()) <= {high, -low}


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
@pytest.mark.parametrize("distribution", ["uniform", "truncated_normal"])
@pytest.mark.parametrize("seed", range(6))
def test_bounds_hold_for_many_seeds(name, distribution, seed):
    init = vsgen.VarianceScaling(seed=seed, distribution=distribution, scale=3.0)
    scaling = init.scaling((128, 96))
    values = init.sample((128, 96), name).astype(np.float64)
    if distribution == "uniform":
        assert values.max() < scaling.limit and values.min() >= -scaling.limit
    else:
        assert np.abs(values).max() <= scaling.bound
