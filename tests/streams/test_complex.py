"""complex64/complex128 outputs: JAX's complex variance scaling on the vsgen stream.

Expected distributions are derived here from first principles (closed forms,
scipy), not from vsgen: for a complex standard normal w (E|w|**2 = 1) |w|**2 is
Exp(1) and arg(w) uniform; the truncated one conditions on |w| <= 2 (so
E|w|**2 = (1 - 5 e**-4) / (1 - e**-4)); the uniform disk of radius R has
|z|**2 / R**2 ~ U(0, 1). Seeds are fixed, so every check is deterministic;
KS thresholds p > 1e-3 and moment tolerances of 6 standard errors are sound
for a correct sampler.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import vsgen
from vsgen.streams import Draw, get_stream

DISTRIBUTIONS = ["truncated_normal", "untruncated_normal", "uniform"]
COMPLEX = ["complex64", "complex128"]
SHAPE = (64, 1 << 14)  # 2**20 values; fan_in = 64
V = 2.0 / 64  # scale 2, fan_in
E4 = math.exp(-4.0)
#: E|w|**2 of the complex standard normal conditioned on |w| <= 2.
TRUNCATED_SECOND_MOMENT = (1 - 5 * E4) / (1 - E4)
JAX_COMPLEX_FACTOR = 0.95311164380491208


def _sample(distribution, dtype, seed=2024, shape=SHAPE):
    return vsgen.VarianceScaling(2.0, "fan_in", distribution, seed=seed)(shape, dtype)


def _expected_second_moment(distribution):
    """E|z|**2 / v: 1, except JAX's truncated constant, which gives 1.0187."""
    if distribution == "truncated_normal":
        return TRUNCATED_SECOND_MOMENT / JAX_COMPLEX_FACTOR**2
    return 1.0


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_moments_split_evenly(distribution, dtype):
    z = _sample(distribution, dtype).ravel()
    assert z.dtype == np.dtype(dtype)
    re, im = z.real.astype(np.float64), z.imag.astype(np.float64)
    n = z.size
    target = V / 2 * _expected_second_moment(distribution)
    # SE of a variance estimate, relative: sqrt((kurtosis - 1) / n), kurtosis <= 3.
    tolerance = 6 * math.sqrt(2.0 / n)
    for part in (re, im):
        assert abs(part.mean()) < 6 * math.sqrt(target / n)
        assert abs(part.var() / target - 1) < tolerance
    # Real and imaginary parts uncorrelated.
    assert abs(np.mean(re * im)) / target < 6 / math.sqrt(n)


def test_truncated_factor_matches_jax_documentation():
    # JAX: "constant is stddev of complex standard normal truncated to 2"; the
    # second moment computed here shows what that constant makes the variance.
    assert math.sqrt(TRUNCATED_SECOND_MOMENT) == pytest.approx(0.9619618, abs=1e-7)
    assert _expected_second_moment("truncated_normal") == pytest.approx(1.018657, abs=1e-6)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_untruncated_parts_are_normal(dtype):
    z = _sample("untruncated_normal", dtype).ravel()[: 1 << 18]
    dist = stats.norm(scale=math.sqrt(V / 2))
    assert stats.kstest(z.real, dist.cdf).pvalue > 1e-3
    assert stats.kstest(z.imag, dist.cdf).pvalue > 1e-3
    assert stats.kstest(np.abs(z.astype(np.complex128)) ** 2 / V, stats.expon.cdf).pvalue > 1e-3


@pytest.mark.parametrize("dtype", COMPLEX)
def test_truncated_modulus_and_bound(dtype):
    z = _sample("truncated_normal", dtype).ravel().astype(np.complex128)
    s = math.sqrt(V) / JAX_COMPLEX_FACTOR
    energy = np.abs(z) ** 2 / s**2  # |w|**2, Exp(1) conditioned on < 4
    eps = 1e-6 if dtype == "complex64" else 1e-12
    assert energy.max() <= 4 * (1 + eps)
    truncated_exp = stats.truncexpon(b=4.0)
    assert stats.kstest(energy[: 1 << 18], truncated_exp.cdf).pvalue > 1e-3
    # Values beyond the untruncated cut were folded, not clipped: no pile-up at 4.
    assert np.mean(energy > 3.9) == pytest.approx((math.exp(-3.9) - E4) / (1 - E4), rel=0.1)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_uniform_fills_the_disk(dtype):
    z = _sample("uniform", dtype).ravel().astype(np.complex128)
    radius = math.sqrt(2 * V)
    eps = 1e-6 if dtype == "complex64" else 1e-12
    assert np.abs(z).max() <= radius * (1 + eps)
    assert stats.kstest((np.abs(z) / radius) ** 2, stats.uniform.cdf).pvalue > 1e-3


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_phase_is_uniform_and_independent_of_modulus(distribution):
    z = _sample(distribution, "complex128").ravel()[: 1 << 18]
    phase = np.angle(z)
    assert stats.kstest(phase, stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue > 1e-3
    modulus = np.abs(z)
    small = modulus < np.median(modulus)
    assert stats.ks_2samp(phase[small], phase[~small]).pvalue > 1e-3


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_slices_chunks_and_threads_give_the_same_bytes(distribution, dtype):
    init = vsgen.VarianceScaling(1.0, "fan_avg", distribution, seed=99)
    shape = (301, 257)
    whole = init.sample(shape, dtype, threads=1)
    assert init.sample(shape, dtype, threads=2).tobytes() == whole.tobytes()
    assert init.sample(shape, dtype, rows=(17, 150)).tobytes() == whole[17:150].tobytes()
    plan = init.plan(shape, dtype)
    chunks = np.concatenate(list(plan.chunks(chunk_size=997)))
    assert chunks.tobytes() == whole.ravel().tobytes()


def _reference_element(distribution, multiplier, seed, p, part):
    """docs/stream-v1.md section 11 for one element, in plain Python floats,
    from the real stream's documented unit values."""
    stream = get_stream("vsgen")
    pair = np.empty(2, dtype=part)
    stream.fill(pair, 2 * p, Draw("untruncated_normal", 1.0, seed, part), threads=1)
    x, y = float(pair[0]), float(pair[1])
    if distribution == "uniform":
        unit = np.empty(1, dtype=part)
        disk_seed = seed ^ int.from_bytes(b"complex1", "big")
        stream.fill(unit, p, Draw("uniform", 1.0, disk_seed, part), threads=1)
        rho = math.sqrt((float(unit[0]) + 1.0) * 0.5)
        d = math.sqrt(x * x + y * y)
        if d == 0.0:
            return multiplier * rho, 0.0
        return multiplier * (rho * (x / d)), multiplier * (rho * (y / d))
    a = multiplier * math.sqrt(0.5)
    if distribution == "truncated_normal":
        e = 0.5 * (x * x + y * y)
        if e > 4.0:
            f = math.sqrt((e - 4.0 * math.floor(e * 0.25)) / e)
            x, y = x * f, y * f
    return a * x, a * y


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_bytes_follow_the_documented_construction(distribution, dtype):
    init = vsgen.VarianceScaling(3.0, "fan_in", distribution, seed=2**63 + 11)
    shape = (40, 500)
    values = init(shape, dtype).ravel()
    plan = init.plan(shape, dtype)
    part = np.dtype("float32" if dtype == "complex64" else "float64")
    # Include elements whose truncated modulus was folded (energy > 4).
    folded = []
    if distribution == "truncated_normal":
        raw = np.empty(2 * values.size, dtype=part)
        get_stream("vsgen").fill(raw, 0, Draw("untruncated_normal", 1.0, plan.draw.seed, part))
        energy = 0.5 * (raw[0::2].astype(np.float64) ** 2 + raw[1::2].astype(np.float64) ** 2)
        folded = list(np.flatnonzero(energy > 4.0)[:20])
        assert folded
    for p in [0, 1, 2, 3, 4999, 12345, 19999, *folded]:
        re, im = _reference_element(distribution, plan.draw.multiplier, plan.draw.seed, p, part)
        assert values[p].real == part.type(re) and values[p].imag == part.type(im)


#: SHA-256 of (shape (33, 65), scale 1.5, fan_avg, seed 424242): they freeze
#: the complex bytes (checked with NumPy 2.4; the construction uses only
#: + - * /, sqrt and floor, which do not depend on the CPU).
GOLDEN = {
    (
        "truncated_normal",
        "complex64",
    ): "34c5ba4c858948cc48cc2e888e62c98a5270f7a37cee122f23f3e43e6eeacab2",
    (
        "truncated_normal",
        "complex128",
    ): "4902b17ac4759c97b76eaae5136e000bb15e58334e64f07d5485ad0425b9d3f1",
    (
        "untruncated_normal",
        "complex64",
    ): "2fe59632d728c0c22a333e9dea4140edff832cb25daceb6c09c5df5dbb296977",
    (
        "untruncated_normal",
        "complex128",
    ): "addf779d69211d26112abe46886243346520e8ca8346f6e6f11f911d3ef35512",
    ("uniform", "complex64"): "8b6a63d164dba4bbebb2e24becccf35de58114f938c44f048bd6708fbfa22b30",
    ("uniform", "complex128"): "fb464b17bed467d072c01194afa86e5a88ed527019d5ec80b7c3f8efbf2abf75",
}


@pytest.mark.parametrize(("distribution", "dtype"), sorted(GOLDEN))
def test_golden_checksums(distribution, dtype):
    values = vsgen.VarianceScaling(1.5, "fan_avg", distribution, seed=424242)((33, 65), dtype)
    assert hashlib.sha256(values.tobytes()).hexdigest() == GOLDEN[(distribution, dtype)]


def test_real_streams_are_unchanged_by_complex_draws():
    # A complex draw consumes no state: the real values before and after are equal.
    init = vsgen.HeNormal(seed=5)
    before = init((64, 64))
    init((64, 64), "complex64")
    assert init((64, 64)).tobytes() == before.tobytes()


def test_keras_stream_refuses_complex():
    with pytest.raises(ValueError, match="complex64 needs the vsgen stream"):
        vsgen.HeNormal(seed=1, stream="keras")((2, 2), "complex64")


def test_describe_parameters_for_complex():
    scaling = vsgen.VarianceScaling(2.0, "fan_in", "uniform").scaling((64, 32), "complex64")
    assert scaling.complex_valued and scaling.limit == math.sqrt(2 * 2.0 / 64)
    truncated = vsgen.HeNormal().scaling((64, 32), "complex128")
    assert truncated.pre_truncation_std == math.sqrt(2.0 / 64) / JAX_COMPLEX_FACTOR
    assert truncated.as_dict()["complex"] is True
    assert "complex" not in vsgen.HeNormal().scaling((64, 32)).as_dict()


_GOLDEN_WORKER = """
import hashlib, json, sys
import vsgen
digests = {}
for distribution, dtype in json.loads(sys.argv[1]):
    values = vsgen.VarianceScaling(1.5, "fan_avg", distribution, seed=424242)((33, 65), dtype)
    digests[distribution + "/" + dtype] = hashlib.sha256(values.tobytes()).hexdigest()
print(json.dumps(digests))
"""


def _dispatch_targets():
    from numpy._core import _multiarray_umath

    return list(getattr(_multiarray_umath, "__cpu_dispatch__", []))


@pytest.mark.parametrize("limit", ["top", "all"])
def test_golden_checksums_without_simd_kernels(limit):
    """The complex construction (sqrt, floor, + - * /) gives the golden bytes with
    NumPy's top or all SIMD dispatch targets disabled and libm without AVX/FMA."""
    targets = _dispatch_targets()
    if not targets:
        pytest.skip("this NumPy build has no SIMD dispatch targets")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPY_", "VSGEN_"))}
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(targets if limit == "all" else targets[-1:])
    env["GLIBC_TUNABLES"] = "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F,-AVX"
    env["VSGEN_KERNEL"] = "numpy"
    # PYTHONPATH (tests/conftest.py) leads with this tree (under mutation
    # testing, the unmutated one).
    result = subprocess.run(
        [sys.executable, "-c", _GOLDEN_WORKER, json.dumps(sorted(GOLDEN))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    digests = json.loads(result.stdout)
    for (distribution, dtype), expected in GOLDEN.items():
        assert digests[f"{distribution}/{dtype}"] == expected
