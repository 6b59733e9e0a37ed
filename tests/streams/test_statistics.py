"""Distributions through the public API, for both streams, against exact CDFs.

Thresholds: each check uses a fixed seed, so it is deterministic; the KS
p-value threshold 1e-4 means a correct sampler would fail for fewer than 1 in
10,000 seeds, while with 2 * 10**5 values the test detects any CDF error
larger than about 0.01. The std tolerance is 6 standard errors of the sample
std, SE = std * sqrt((kurtosis - 1) / (4 n)), with the kurtosis of each
distribution (3 normal, 1.8 uniform, 2.37 truncated at +-2), plus the output
dtype's rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import vsgen

stats = pytest.importorskip("scipy.stats")

N = 200_000
SHAPE = (400, 500)  # fan_in 400, fan_out 500
SCALE = 2.0
#: n by mode for SHAPE, by hand: fan_in, or (400 + 500) / 2.
N_OF_MODE = {"fan_in": 400.0, "fan_avg": 450.0}
KURTOSIS = {"untruncated_normal": 3.0, "uniform": 1.8, "truncated_normal": 2.37}


def _reference(distribution: str, stddev: float):
    """The exact distribution with target ``stddev``, built from scipy alone:
    the truncated normal's pre-truncation scale is stddev / (scipy's std of
    N(0, 1) truncated to [-2, 2]); the uniform's half-width is sqrt(3) stddev."""
    if distribution == "truncated_normal":
        s = stddev / stats.truncnorm(-2.0, 2.0).std()
        return stats.truncnorm(-2.0, 2.0, loc=0.0, scale=s), 2 * s
    if distribution == "uniform":
        limit = math.sqrt(3.0) * stddev
        return stats.uniform(loc=-limit, scale=2 * limit), limit
    return stats.norm(loc=0.0, scale=stddev), None


@pytest.mark.parametrize("stream", ["vsgen", "keras"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_avg"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_distribution_matches_exact_cdf(stream, distribution, mode, dtype):
    init = vsgen.VarianceScaling(SCALE, mode, distribution, seed=20240601, stream=stream)
    values = init(SHAPE, dtype).astype(np.float64).ravel()
    assert values.size == N
    target = math.sqrt(SCALE / N_OF_MODE[mode])
    reference, bound = _reference(distribution, target)

    # Shape of the distribution: Kolmogorov-Smirnov against the exact CDF.
    # float16 rounding moves values by up to 2**-11 relative; skip KS there
    # (ties distort it) and rely on moments and bounds.
    if dtype != "float16":
        result = stats.kstest(values, reference.cdf)
        assert result.pvalue > 1e-4, result

    # Moments.
    se = target * math.sqrt((KURTOSIS[distribution] - 1) / (4 * N))
    rounding = target * (2**-10 if dtype == "float16" else 2**-20)
    assert abs(values.std() - target) < 6 * se + rounding
    assert abs(values.mean()) < 6 * target / math.sqrt(N)

    # Bounds are never exceeded (up to the output dtype's rounding of the bound,
    # 1e-12 relative of slack for the independent float64 derivation).
    if bound is not None:
        rounded = float(np.asarray(bound * (1 + 1e-12), dtype=dtype))
        assert np.abs(values).max() <= rounded
        # ...and reached closely: the values do use the whole range.
        assert np.abs(values).max() > 0.99 * bound


@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_normal_tails(stream):
    """Tail mass beyond 3 and 4 sigma is consistent with the normal (binomial 6-sigma)."""
    n = 2_000_000
    init = vsgen.VarianceScaling(1.0, "fan_in", "untruncated_normal", seed=7, stream=stream)
    z = init((n, 1), "float64").ravel()  # fan_in = n -> stddev 1/sqrt(n)
    z *= math.sqrt(n)
    for k in (3.0, 4.0):
        p = 2 * stats.norm.sf(k)
        count = int((np.abs(z) > k).sum())
        assert abs(count - n * p) < 6 * math.sqrt(n * p * (1 - p)) + 1, (k, count, n * p)


@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_different_seeds_are_independent(stream):
    a = vsgen.VarianceScaling(seed=1, stream=stream, distribution="uniform")((50_000,))
    b = vsgen.VarianceScaling(seed=2, stream=stream, distribution="uniform")((50_000,))
    r = np.corrcoef(a, b)[0, 1]
    assert abs(r) < 6 / math.sqrt(a.size)
