"""Tests of the vsgen v1 stream (``vsgen.streams.counter`` and the NumPy reference and
dispatcher under it): statistics, invariance, golden bytes.

Statistical thresholds.  Each KS test compares n >= 2 * 10**5 values with the
exact CDF and asserts D < t / sqrt(n) with t = 2.2252, the asymptotic
Kolmogorov critical value for alpha = 1e-4 (P(sqrt(n) D > t) ~ 2 exp(-2 t**2)
= 1.0e-4).  Moments and tail counts use 5-sigma bands.  Seeds are fixed, so a
test cannot flake; a correct stream fails any one check with probability
about 1e-4 for a random seed, a wrong one (a misplaced table entry, a biased
wedge) fails by a wide margin at these sizes.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vsgen
from vsgen.streams import _dispatch, _kernel_path, _native, _reference, counter
from vsgen.streams import _tables as tables

KS_T = 2.2252  # sqrt(ln(2 / 1e-4) / 2)
TRUNCATED_STD = 0.87962566103423978
DTYPES = (np.float32, np.float64)

# The native kernels are built at install (setup.py); VSGEN_REQUIRE_NATIVE=1
# turns their absence into a failure instead of a skip (CI sets it).
HAVE_NATIVE = _kernel_path.library_path() is not None
if not HAVE_NATIVE and os.environ.get("VSGEN_REQUIRE_NATIVE") == "1":  # pragma: no cover
    raise RuntimeError("VSGEN_REQUIRE_NATIVE=1 but the native kernels are not built")
needs_native = pytest.mark.skipif(
    not HAVE_NATIVE,
    reason="native kernels not built (pip install -e . or python setup.py build_ext --inplace)",
)
#: Every code path, each native instruction-set build separately.
PATHS = [
    "numpy",
    *(pytest.param(f"native{level}", marks=needs_native) for level in _kernel_path.LEVELS),
]


def draw(size, seed, distribution, dtype, start=0, multiplier=1.0, threads=1):
    out = np.empty(size, dtype=dtype)
    counter.fill(out, start, seed, distribution, multiplier, threads=threads)
    return out


@pytest.fixture
def kernel(monkeypatch):
    """Force a code path: ``kernel("numpy")``, ``kernel("auto")`` or
    ``kernel("native4")`` (the native build for x86-64 level 4, 3 or 0; a
    CPU without that level runs the best one it has)."""

    def select(name):
        if name.startswith("native"):
            monkeypatch.setenv("VSGEN_KERNEL", "native")
            monkeypatch.setenv("VSGEN_NATIVE_LEVEL", name.removeprefix("native"))
            monkeypatch.setattr(_native, "_loaded", None)  # reload at that level
            monkeypatch.setattr(_native, "_failed", None)
        else:
            monkeypatch.setenv("VSGEN_KERNEL", name)

    return select


# --- exact reference distributions ------------------------------------------


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import ndtr
    except ImportError:  # pragma: no cover - scipy is a test extra
        return np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z])
    return ndtr(z)


def _cdf(distribution: str, z: np.ndarray) -> np.ndarray:
    if distribution == "uniform":
        return np.clip((z + 1.0) / 2.0, 0.0, 1.0)
    if distribution == "untruncated_normal":
        return _normal_cdf(z)
    low = _normal_cdf(np.array([-2.0]))[0]
    return np.clip((_normal_cdf(z) - low) / (1.0 - 2.0 * low), 0.0, 1.0)


def _moments(distribution: str) -> tuple[float, float]:
    """(variance, fourth moment) of the standard distribution."""
    if distribution == "uniform":
        return 1.0 / 3.0, 1.0 / 5.0
    if distribution == "untruncated_normal":
        return 1.0, 3.0
    # E z**k = (k - 1) E z**(k-2) - 2 a**(k-1) phi(a) / Z for N(0,1) on [-a, a]
    a = 2.0
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    second = 1.0 - 2 * a * phi / mass
    return second, 3 * second - 2 * a**3 * phi / mass


def ks_statistic(sample: np.ndarray, distribution: str) -> float:
    z = np.sort(sample.astype(np.float64))
    cdf = _cdf(distribution, z)
    n = z.size
    above = np.arange(1, n + 1) / n - cdf
    below = cdf - np.arange(n) / n
    return float(max(above.max(), below.max()))


# --- statistics ------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("distribution", counter.DISTRIBUTIONS)
def test_matches_exact_distribution(distribution, dtype, kernel):
    kernel("numpy")
    n = 200_000
    z = draw(n, 20260101, distribution, dtype, start=977)
    d = ks_statistic(z, distribution)
    assert d < KS_T / math.sqrt(n), d

    variance, fourth = _moments(distribution)
    mean_bound = 5 * math.sqrt(variance / n)
    assert abs(float(z.mean(dtype=np.float64))) < mean_bound
    # Var(sample variance) ~ (mu4 - sigma**4) / n
    variance_bound = 5 * math.sqrt((fourth - variance**2) / n)
    assert abs(float(z.var(dtype=np.float64)) - variance) < variance_bound
    if distribution == "truncated_normal":
        assert math.isclose(math.sqrt(variance), TRUNCATED_STD, rel_tol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal"])
def test_binned_chi_square(distribution, dtype, kernel):
    # Fine bins where the ziggurats have seams: the truncated one's last strip
    # (its wedge straddles f(2) for 1.9966 < |z| < 2), and the normal's base
    # layer edge r = 3.654 where the tail takes over.  The threshold is the
    # 5-sigma upper band of chi-square with k degrees of freedom, k + 5 sqrt(2k).
    kernel("auto")  # the C kernels where built: fast
    n = 1 << 21
    z = draw(n, 4242, distribution, dtype).astype(np.float64)
    limit = 2.0 if distribution == "truncated_normal" else 4.5
    seams = [1.99, 1.995, 1.9966, 1.998, 3.6, 3.65, 3.6542, 3.66, 3.7]
    edges = np.unique(
        np.round(np.concatenate([np.linspace(-limit, limit, 161), seams, np.negative(seams)]), 6)
    )
    edges = edges[np.abs(edges) <= limit]
    counts = np.histogram(z, np.concatenate([[-np.inf], edges, [np.inf]]))[0]
    cdf = _cdf(distribution, np.concatenate([[-np.inf], edges, [np.inf]]))
    expected = np.diff(cdf) * n
    keep = expected > 0  # the truncated normal has no mass outside [-2, 2]
    assert counts[~keep].sum() == 0
    chi2 = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bounds_are_never_exceeded(dtype, kernel):
    kernel("numpy")
    multiplier = 0.3712
    m = dtype(multiplier)
    truncated = draw(300_001, 5, "truncated_normal", dtype, start=1, multiplier=multiplier)
    assert truncated.max() <= 2 * m and truncated.min() >= -2 * m
    # Values at the bounds are reachable but need not occur; values near them must.
    assert truncated.max() > 1.99 * m and truncated.min() < -1.99 * m
    uniform = draw(300_001, 5, "uniform", dtype, start=1, multiplier=multiplier)
    assert uniform.min() >= -m and uniform.max() < m


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_tail_counts(dtype, kernel):
    # 2**21 values reach the ziggurat's tail (|z| > r = 3.654) about 540 times.
    kernel("auto")  # the C kernels where built: fast
    n = 1 << 21
    z = np.abs(draw(n, 99, "untruncated_normal", dtype).astype(np.float64))
    for threshold in (3.0, tables_r(), 4.0, 4.5):
        expected = n * math.erfc(threshold / math.sqrt(2))
        observed = int(np.count_nonzero(z > threshold))
        assert abs(observed - expected) < 5 * math.sqrt(expected) + 1, (threshold, observed)
    assert z.max() > tables_r()


def tables_r() -> float:
    return float.fromhex(tables.R_HEX)


def test_own_exp_and_log_are_accurate():
    # The rare paths' exp/log are made of + - * /; check them against libm
    # (here libm is only the judge, never part of the stream): a few ulps.
    t = np.linspace(0.0, 7.0, 10_001)
    exact = np.array([math.exp(-v) for v in t])
    assert np.max(np.abs(_reference.exp_neg(t) / exact - 1)) < 1e-15
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**64, size=20_000, dtype=np.uint64, endpoint=False)
    words = np.concatenate([words, np.array([0, 2**11 - 1, 2**64 - 1, 2**63], dtype=np.uint64)])
    u = ((words >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53
    exact = np.array([-math.log(v) for v in u])
    mine = _reference._neg_log_unit(words)
    assert np.all(np.abs(mine - exact) <= 1e-15 * exact)
    assert mine[-2] == 0.0  # U = 1 exactly


# --- invariance --------------------------------------------------------------

CASES = [(d, t) for d in counter.DISTRIBUTIONS for t in DTYPES]


@pytest.mark.parametrize(("distribution", "dtype"), CASES)
def test_any_split_gives_the_same_bytes(distribution, dtype, kernel):
    kernel("numpy")
    whole = draw(10_001, 77, distribution, dtype, start=12_345)

    @settings(
        max_examples=25,
        deadline=None,
        database=None,  # leave no example database behind
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(st.integers(0, 10_001), max_size=6))
    def check(cuts):
        edges = sorted({0, 10_001, *cuts})
        parts = [
            draw(b - a, 77, distribution, dtype, start=12_345 + a)
            for a, b in zip(edges, edges[1:], strict=False)
        ]
        assert np.concatenate(parts).tobytes() == whole.tobytes()

    check()


@pytest.mark.parametrize("path", PATHS[1:])
@pytest.mark.parametrize(("distribution", "dtype"), CASES)
@pytest.mark.parametrize("start", [0, 1, 2**40 + 3])
def test_compiled_paths_agree_with_numpy(distribution, dtype, start, path, kernel):
    kernel("numpy")
    expected = draw(100_003, 11, distribution, dtype, start=start, multiplier=0.71)
    kernel(path)
    got = draw(100_003, 11, distribution, dtype, start=start, multiplier=0.71)
    assert got.tobytes() == expected.tobytes()
    for lo, hi in ((1, 2), (3, 4), (5, 8), (99_999, 100_003)):
        part = draw(hi - lo, 11, distribution, dtype, start=start + lo, multiplier=0.71)
        assert part.tobytes() == expected[lo:hi].tobytes()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("distribution", "dtype"), CASES)
def test_thread_count_does_not_change_bytes(distribution, dtype, path, kernel, monkeypatch):
    kernel(path)
    # Small, odd pieces so that threads really split the range and float32
    # pairs straddle piece boundaries.
    monkeypatch.setattr(_dispatch, "THREAD_PIECE", 4_099)
    monkeypatch.setattr(_dispatch, "MIN_THREAD_PIECE", 4_099)
    single = draw(50_001, 3, distribution, dtype, start=7, threads=1)
    for threads in (2, 3):
        assert draw(50_001, 3, distribution, dtype, start=7, threads=threads).tobytes() == (
            single.tobytes()
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_path_memory_is_bounded(dtype, kernel):
    # Temporaries are per chunk (2**17 values), never a copy of the output.
    import tracemalloc

    kernel("numpy")
    out = np.empty(1 << 22, dtype=dtype)
    tracemalloc.start()
    try:
        counter.fill(out, 0, 1, "untruncated_normal", 1.0, threads=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 * _reference.NUMPY_CHUNK * 2  # two threads' chunks
    assert peak < out.nbytes / 2


def test_distinct_seeds_and_indices_differ(kernel):
    kernel("numpy")
    a = draw(1000, 0, "uniform", np.float32)
    b = draw(1000, 1, "uniform", np.float32)
    assert np.count_nonzero(a == b) < 5
    assert np.unique(a).size > 990


def test_uniform_is_exact_grid():
    out = draw(4096, 8, "uniform", np.float32)
    k = (out.astype(np.float64) + 1.0) * 2.0**23
    assert np.array_equal(k, np.round(k)) and k.min() >= 0 and k.max() < 2**24
    out = draw(4096, 8, "uniform", np.float64)
    k = (out + 1.0) * 2.0**52
    assert np.array_equal(k, np.round(k))


# --- arguments and environment ------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.5, "3", None])
def test_bad_seed_names_the_argument(seed):
    with pytest.raises(ValueError, match="seed"):
        counter.fill(np.empty(4, np.float32), 0, seed, "uniform", 1.0)


def test_bad_arguments_name_the_argument():
    out = np.empty(4, np.float32)
    with pytest.raises(ValueError, match="distribution"):
        counter.fill(out, 0, 1, "normal", 1.0)
    with pytest.raises(TypeError, match="out"):
        counter.fill(np.empty(4, np.int32), 0, 1, "uniform", 1.0)
    with pytest.raises(ValueError, match="out"):
        counter.fill(np.empty((2, 2), np.float32), 0, 1, "uniform", 1.0)
    with pytest.raises(ValueError, match="start"):
        counter.fill(out, -1, 1, "uniform", 1.0)
    with pytest.raises(ValueError, match="multiplier"):
        counter.fill(out, 0, 1, "uniform", float("nan"))
    with pytest.raises(ValueError, match="threads"):
        counter.fill(out, 0, 1, "uniform", 1.0, threads=0)


def test_largest_seed_and_empty_output():
    assert draw(0, 2**64 - 1, "uniform", np.float32).size == 0
    assert np.isfinite(draw(7, 2**64 - 1, "truncated_normal", np.float64)).all()


def test_unknown_kernel_choice_is_an_error(kernel):
    kernel("fortran")
    with pytest.raises(ValueError, match="VSGEN_KERNEL"):
        draw(8, 1, "uniform", np.float32)


@needs_native
def test_auto_takes_the_native_kernels_at_the_best_level(kernel, monkeypatch):
    monkeypatch.delenv("VSGEN_KERNEL", raising=False)
    monkeypatch.delenv("VSGEN_NATIVE_LEVEL", raising=False)
    monkeypatch.setattr(_native, "_loaded", None)
    monkeypatch.setattr(_native, "_failed", None)
    chosen = _dispatch.choose("uniform", 10)
    assert chosen == _native.load().fill
    best = _native.load().level
    for level in _kernel_path.LEVELS:
        kernel(f"native{level}")
        assert _native.load().level == min(level, best)


def test_bad_native_level_is_an_error(kernel, monkeypatch):
    kernel("native4")
    monkeypatch.setenv("VSGEN_NATIVE_LEVEL", "7")
    if HAVE_NATIVE:
        with pytest.raises(ValueError, match="VSGEN_NATIVE_LEVEL"):
            draw(8, 1, "uniform", np.float32)


def test_numba_is_refused_in_one_line_naming_the_choices(kernel):
    # numba was retired: an old VSGEN_KERNEL=numba fails at once, saying so.
    kernel("numba")
    with pytest.raises(ValueError) as caught:
        draw(5_001, 4, "untruncated_normal", np.float32, start=3)
    assert str(caught.value) == (
        "Environment variable `VSGEN_KERNEL` must be one of auto, native, numpy "
        "(numba was retired: the C kernels replace it). Received: VSGEN_KERNEL='numba'"
    )
    assert "\n" not in str(caught.value)


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter of this tree (PYTHONPATH, set by
    tests/conftest.py: the unmutated tree under mutation testing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSGEN_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _package_root() -> str:
    import pathlib

    return str(pathlib.Path(counter.__file__).resolve().parents[2])


# --- constants ------------------------------------------------------------------


def test_ziggurat_table_invariants():
    x = np.array([float.fromhex(h) for h in tables.X_HEX])
    f = np.array([float.fromhex(h) for h in tables.F_HEX])
    area = float.fromhex(tables.AREA_HEX)
    r = tables_r()
    assert x[1] == r and x[-1] == 0.0 and np.all(np.diff(x) < 0)
    assert np.allclose(f, np.exp(-x * x / 2), rtol=1e-15, atol=0)
    # Every layer has the same area v: x_i (f(x_{i+1}) - f(x_i)) = v, and the
    # base layer's rectangle plus tail equals v = x_0 f(r).
    layers = x[1:-1] * (f[2:] - f[1:-1])
    assert np.allclose(layers, area, rtol=1e-11)
    tail = math.sqrt(math.pi / 2) * math.erfc(r / math.sqrt(2))
    assert math.isclose(r * f[1] + tail, area, rel_tol=1e-14)
    assert math.isclose(x[0] * f[1], area, rel_tol=1e-15)
    k32, k64 = np.array(tables.K32), np.array(tables.K64, dtype=object)
    ratios = x[1:] / x[:-1]
    assert np.all(np.abs(k32 - ratios * 2**23) <= 1)
    pairs = zip(k64, ratios, strict=True)
    assert all(abs(int(k) - q * 2**53) <= 2**53 * 1e-15 + 1 for k, q in pairs)
    assert tables.K32[-1] == 0 and tables.K64[-1] == 0  # the top layer is all wedge


def test_truncated_ziggurat_invariants():
    strips = tables.TRUNC_STRIPS
    width = np.array([float.fromhex(h) for h in tables.TX_HEX])
    low = np.array([float.fromhex(h) for h in tables.TLOW_HEX])
    high = np.array([float.fromhex(h) for h in tables.THIGH_HEX])
    area = float.fromhex(tables.TRUNC_AREA_HEX)
    assert np.all(width[:strips] == 2.0) and np.all(np.diff(width[strips - 1 :]) < 0)
    assert np.allclose(width * (high - low), area, rtol=1e-12)  # equal areas
    assert low[0] == 0.0 and high[-1] == 1.0 and np.all(low[1:] == high[:-1])  # stacked
    # The last strip straddles f(2); above it every layer's top is f(inner edge).
    assert low[strips - 1] < math.exp(-2.0) < high[strips - 1]
    assert np.allclose(high[strips - 1 : -1], np.exp(-(width[strips:] ** 2) / 2), rtol=1e-15)
    # Layers stack up to exactly the mass of f on [0, 2] plus the wedges' excess.
    mass = math.sqrt(math.pi / 2) * math.erf(math.sqrt(2))
    assert 0.99 < mass / (256 * area) < 1
    inner = np.concatenate([np.full(strips - 1, 2.0), width[strips:], [0.0]])
    assert np.all(np.abs(np.array(tables.TK32) - inner / width * 2**23) <= 1)
    assert tables.TK32[0] == 2**23 and tables.TK64[0] == 2**53  # full strips: no misses


def test_tables_match_their_generator():
    mpmath = pytest.importorskip("mpmath")
    del mpmath
    import pathlib
    import runpy

    script = pathlib.Path(_package_root()) / "scripts" / "make_ziggurat_tables.py"
    if not script.exists():
        pytest.skip("the generator script is not shipped with this installation")
    generator = runpy.run_path(str(script))
    assert generator["render"]() == pathlib.Path(tables.__file__).read_text()


# --- golden bytes ------------------------------------------------------------------
# SHA-256 of out.astype("<f4"/"<f8").tobytes() for fill(out, start, seed,
# distribution, multiplier).  Derived once from the implementation after the
# statistical tests above passed; checked with numpy 2.4.6 on the NumPy path,
# the C kernels (and, until it was retired, numba 0.68.1) on x86-64 (AVX-512,
# AVX2-only and SSE2-only builds, see test_portability.py).  A change here is
# a new stream version.

GOLDEN_CASES = [
    # (seed, distribution, dtype, size, start, multiplier)
    (0, "truncated_normal", "float32", 1000, 0, 1.0),
    (1, "untruncated_normal", "float32", 4097, 3, 1.0),
    (2**64 - 1, "uniform", "float32", 777, 0, 1.0),
    (42, "truncated_normal", "float64", 1001, 5, 1.0),
    (12345, "untruncated_normal", "float64", 4096, 0, 1.0),
    (7, "uniform", "float64", 333, 1, 1.0),
    (2026, "untruncated_normal", "float32", 2**18 + 1, 2**40 + 1, 0.0625),
    (2027, "truncated_normal", "float32", 2**17 - 1, 99, 0.05),
    (2028, "untruncated_normal", "float64", 2**17 + 3, 17, 1.0),
    (2029, "truncated_normal", "float64", 2**16, 2**33, 0.3),
    (31337, "uniform", "float32", 65_537, 1, 0.4330127),
]

GOLDEN_DIGESTS = [
    "62759e9067608baf87e161c8cac03c911640accdd568939c44208e4b5295d87f",
    "14979eaeffa95be2f7a837cd38f50861a70fc0e50b31883441a3b67eb1979648",
    "a30e63aeafa20caac4daaff8375f55c7141eff49ee1643dd23d7881741f2773e",
    "9c8f31e795c8b71d9d63c56a50c713ded14c298bdb7490eab553d8d2b63efe3e",
    "a901ff5f60ce663789deccef779c04d11019498ac428dceb812e35385f9a9d1b",
    "978393f17e2973cf188e662284636d638bab6cfaf5c402885263677c3d020ec5",
    "5b169ab04d84c4762855cab5a31edf2bf57612c7b283265c65fda657bc5eeff6",
    "bc21905535314d37c281a57e313e8b8b2f430426832e294d827c859fa3ba8bcd",
    "b1fa94681b5ed784a7ddc0028655a562cadd22f5c27e0af171db61e72b428f30",
    "0fc11d2675b0a346f26f1d6830c94042202393b5b4ca04b479bf0843945d7881",
    "0d39ef42a9399b18dd782cd771a4d7e626897776e8c3dfa222639e92130ec12c",
]
GOLDEN = dict(zip(GOLDEN_CASES, GOLDEN_DIGESTS, strict=True))


def golden_digest(seed, distribution, dtype, size, start, multiplier) -> str:
    out = np.empty(size, dtype=dtype)
    counter.fill(out, start, seed, distribution, multiplier)
    little = out.astype("<f4" if dtype == "float32" else "<f8", copy=False)
    return hashlib.sha256(little.tobytes()).hexdigest()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: f"{c[1]}-{c[2]}-{c[3]}")
def test_golden_checksums(case, path, kernel):
    kernel(path)
    assert golden_digest(*case) == GOLDEN[case]


# --- recycled chunks and narrow outputs ---------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_recycled_chunks_give_the_same_bytes_and_reuse_memory(dtype):
    from vsgen.dtypes import resolve_dtype
    from vsgen.streams import Draw, VsgenStream

    stream = VsgenStream()
    draw = Draw("untruncated_normal", 0.5, 77, resolve_dtype(dtype))
    expected = b"".join(c.tobytes() for c in stream.chunks(draw, 5, 100_005, 9_999, threads=2))
    seen, parts = set(), []
    for chunk in stream.recycled_chunks(draw, 5, 100_005, 9_999, threads=2, buffers=3):
        parts.append(chunk.tobytes())  # copied before the next chunk reuses memory
        seen.add(chunk.__array_interface__["data"][0])
    assert b"".join(parts) == expected
    assert len(seen) == 3


def test_recycled_chunks_through_a_slow_writer():
    # write_chunks holds at most prefetch + 2 chunks; a ring of that many
    # buffers must never overwrite a chunk before the writer has used it.
    import time

    from vsgen.dtypes import resolve_dtype
    from vsgen.formats import write_chunks
    from vsgen.streams import Draw, VsgenStream

    class SlowOutput:
        def __init__(self):
            self.parts = []

        def write(self, chunk):
            time.sleep(0.002)
            self.parts.append(chunk.tobytes())

    stream = VsgenStream()
    draw = Draw("uniform", 1.0, 3, resolve_dtype("float32"))
    expected = np.empty(60_000, np.float32)
    counter.fill(expected, 0, 3, "uniform", 1.0)
    output = SlowOutput()
    chunks = stream.recycled_chunks(draw, 0, 60_000, 1_000, threads=1, buffers=4)
    write_chunks(output, chunks, prefetch=2)
    assert b"".join(output.parts) == expected.tobytes()


@pytest.mark.parametrize("path", ["numpy", "auto"])  # scratch pieces, or the C kernels' one pass
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_narrow_outputs_round_float32_once_whatever_the_threads(dtype, path, kernel, monkeypatch):
    from vsgen.dtypes import resolve_dtype
    from vsgen.streams import Draw, VsgenStream

    kernel(path)
    monkeypatch.setattr(_dispatch, "NARROW_PIECE", 1_001)  # many pieces, odd boundaries
    resolved = resolve_dtype(dtype)
    reference = draw(50_003, 9, "truncated_normal", np.float32, start=3, multiplier=0.2)
    expected = reference.astype(resolved)  # numpy/ml_dtypes' own rounding
    # Values that rounding carried past the bound 2s = 0.4 are clamped to the
    # next representable magnitude below: one less in the 16-bit pattern.
    past = np.abs(expected.astype(np.float64)) > 0.4
    assert past.sum() < 50
    clamped = expected.copy()
    clamped.view(np.uint16)[past] -= np.uint16(1)
    assert np.all(np.abs(clamped.astype(np.float64)) <= 0.4)
    for threads in (1, 2, 3):
        out = np.empty(50_003, resolved)
        VsgenStream().fill(out, 3, Draw("truncated_normal", 0.2, 9, resolved), threads)
        assert out.tobytes() == clamped.tobytes()


def test_a_narrow_output_must_be_one_dimensional():
    from vsgen.streams import Draw, VsgenStream

    draw = Draw("uniform", 1.0, 1, np.dtype(np.float16))
    with pytest.raises(ValueError) as caught:
        VsgenStream().fill(np.empty((2, 3), np.float16), 0, draw)
    assert str(caught.value) == "Argument `out` must be a 1-D numpy array."


def test_an_error_in_a_helper_thread_reaches_the_caller(kernel, monkeypatch):
    kernel("numpy")
    real = _reference.fill

    def failing(out, start, *args):
        if start >= 40_000:
            raise MemoryError("piece failed")
        real(out, start, *args)

    monkeypatch.setattr(_reference, "fill", failing)
    monkeypatch.setattr(_dispatch, "THREAD_PIECE", 4_096)
    monkeypatch.setattr(_dispatch, "MIN_THREAD_PIECE", 4_096)
    with pytest.raises(MemoryError, match="piece failed"):
        draw(100_000, 1, "uniform", np.float32, threads=2)
    # The helpers survive the error and serve the next fill.
    monkeypatch.setattr(_reference, "fill", real)
    assert draw(100_000, 1, "uniform", np.float32, threads=2).tobytes() == (
        draw(100_000, 1, "uniform", np.float32, threads=1).tobytes()
    )


def test_without_the_native_library_auto_falls_back(kernel, monkeypatch):
    kernel("numpy")
    expected = draw(9_001, 12, "truncated_normal", np.float32, start=5)
    monkeypatch.delenv("VSGEN_KERNEL", raising=False)
    monkeypatch.setattr(_native, "_loaded", None)
    monkeypatch.setattr(_native, "_failed", None)
    monkeypatch.setattr(_kernel_path, "library_path", lambda: None)  # as if never built
    assert _native.load() is None
    assert _native.unavailable() == "native kernels not built"
    assert _dispatch.choose("truncated_normal", 9_001) is _reference.fill
    assert draw(9_001, 12, "truncated_normal", np.float32, start=5).tobytes() == (
        expected.tobytes()
    )


def test_threads_work_in_a_forked_child(tmp_path):
    # The helper threads do not survive fork(); a child starts its own.
    code = """
        import os, sys
        import numpy as np
        from vsgen.streams import counter
        expected = np.empty(300_000, np.float32)
        counter.fill(expected, 0, 4, "truncated_normal", 1.0, threads=2)
        pid = os.fork()
        if pid == 0:
            got = np.empty(300_000, np.float32)
            counter.fill(got, 0, 4, "truncated_normal", 1.0, threads=2)
            os._exit(0 if got.tobytes() == expected.tobytes() else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


# --- argument errors, word for word ------------------------------------------------


def _fill_errors():
    f32 = np.empty(4, np.float32)
    dists = "truncated_normal, untruncated_normal, uniform"
    return [
        ((np.empty(4, np.int32), 0, 1, "uniform", 1.0), {}, TypeError,
         "Argument `out` must be a float32 or float64 numpy array. "
         "Received: out=ndarray of dtype int32"),
        (([0.0] * 4, 0, 1, "uniform", 1.0), {}, TypeError,
         "Argument `out` must be a float32 or float64 numpy array. "
         "Received: out=list of dtype None"),
        ((np.empty((2, 2), np.float32), 0, 1, "uniform", 1.0), {}, ValueError,
         "Argument `out` must be a writeable 1-D C-contiguous array. "
         "Received: out with shape (2, 2)"),
        ((np.empty(8, np.float32)[::2], 0, 1, "uniform", 1.0), {}, ValueError,
         "Argument `out` must be a writeable 1-D C-contiguous array. "
         "Received: out with shape (4,)"),
        ((f32, 0, True, "uniform", 1.0), {}, ValueError,
         "Argument `seed` must be an integer in [0, 2**64). Received: seed=True"),
        ((f32, 0, 2**64, "uniform", 1.0), {}, ValueError,
         f"Argument `seed` must be an integer in [0, 2**64). Received: seed={2**64}"),
        ((f32, 0, "3", "uniform", 1.0), {}, ValueError,
         "Argument `seed` must be an integer in [0, 2**64). Received: seed='3'"),
        ((f32, 2**62 - 3, 1, "uniform", 1.0), {}, ValueError,
         "Argument `start` must be an integer in [0, 2**62 - out.size). "
         f"Received: start={2**62 - 3}"),
        ((f32, 0, 1, "uniform", 1.0), {"threads": 0}, ValueError,
         "Argument `threads` must be an integer >= 1. Received: threads=0"),
        ((f32, 0, 1, "uniform", 1.0), {"job_size": -1}, ValueError,
         "Argument `job_size` must be None or an integer >= 0. Received: job_size=-1"),
        ((f32, 0, 1, "normal", 1.0), {}, ValueError,
         f"Argument `distribution` must be one of {dists}. Received: distribution='normal'"),
        ((f32, 0, 1, "uniform", True), {}, ValueError,
         "Argument `multiplier` must be a finite real number. Received: multiplier=True"),
        ((f32, 0, 1, "uniform", "1"), {}, ValueError,
         "Argument `multiplier` must be a finite real number. Received: multiplier='1'"),
        ((f32, 0, 1, "uniform", float("inf")), {}, ValueError,
         "Argument `multiplier` must be a finite real number. Received: multiplier=inf"),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(len(_fill_errors())))
def test_fill_error_messages(index):
    args, kwargs, kind, message = _fill_errors()[index]
    with pytest.raises(kind) as caught:
        counter.fill(*args, **kwargs)
    assert str(caught.value) == message


def test_the_largest_start_and_seed_are_accepted():
    out = np.empty(4, np.float32)
    counter.fill(out, 2**62 - 5, 2**64 - 1, "uniform", 1.0)  # start + size < 2**62
    counter.fill(out, 0, 0, "uniform", np.float32(1.0), threads=1, job_size=0)
    assert np.all((out >= -1) & (out < 1))


def test_an_unknown_kernel_choice_names_the_variable(kernel):
    kernel(" Fortran ")
    with pytest.raises(ValueError) as caught:
        draw(8, 1, "uniform", np.float32)
    assert str(caught.value) == (
        "Environment variable `VSGEN_KERNEL` must be one of auto, native, numpy. "
        "Received: VSGEN_KERNEL='fortran'"
    )


# --- the Stream interface ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_vsgen_stream_chunks_tile_the_range(dtype):
    init = vsgen.VarianceScaling(distribution="untruncated_normal", seed=5)
    plan = init.plan((10, 1001), dtype, rows=(3, 10))  # flat range [3003, 10010)
    whole = plan.array(threads=1).ravel()
    for chunk_size in (1000, 7007, 4096):
        pieces = list(plan.chunks(chunk_size=chunk_size, threads=1))
        assert [piece.size for piece in pieces[:-1]] == [chunk_size] * (len(pieces) - 1)
        assert 0 < pieces[-1].size <= chunk_size
        assert all(piece.dtype == np.dtype(dtype) for piece in pieces)
        assert np.concatenate(pieces).tobytes() == whole.tobytes()


def test_a_fresh_process_builds_its_thread_pool(monkeypatch, kernel):
    kernel("numpy")
    size = 4 * _dispatch.MIN_THREAD_PIECE + 3
    expected = draw(size, 9, "uniform", np.float32, threads=1)
    monkeypatch.setattr(_dispatch, "_helpers", [])  # as in a new process
    assert draw(size, 9, "uniform", np.float32, threads=2).tobytes() == expected.tobytes()
    assert len(_dispatch._helpers) == 1 and _dispatch._helpers[0].is_alive()


def _fill_with_two_threads() -> None:
    out = np.empty(4 * _dispatch.MIN_THREAD_PIECE + 3, np.float32)
    counter.fill(out, 0, 9, "uniform", 1.0, threads=2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_can_use_threads(kernel):
    """A child forked after the pool was made inherits the pool but not its
    threads; the child must still be able to fill with threads (not hang)."""
    import multiprocessing

    kernel("numpy")
    _fill_with_two_threads()  # the parent now has a 2-thread pool
    child = multiprocessing.get_context("fork").Process(target=_fill_with_two_threads)
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the forked child hung filling with 2 threads")
    assert child.exitcode == 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_narrow_outputs_round_the_float32_values_in_pieces(monkeypatch, kernel, dtype):
    """float16/bfloat16 are the float32 stream rounded once (docs/stream-v1.md,
    section 1), also when the output is longer than the working buffer."""
    import vsgen

    kernel("numpy")
    monkeypatch.setattr(counter, "DEFAULT_CHUNK", 1000)  # the buffer's size
    init = vsgen.VarianceScaling(seed=12, distribution="untruncated_normal")
    narrow = init.sample((5, 701), dtype, rows=(1, 5)).ravel()  # 2804 values from 701
    wide = np.empty(4 * 701, np.float32)
    stddev = math.sqrt(1.0 / 5)  # untruncated normal, scale 1, fan_in 5 (the full shape's)
    counter.fill(wide, 701, 12, "untruncated_normal", stddev)
    assert narrow.view(np.uint16).tobytes() == wide.astype(narrow.dtype).view(np.uint16).tobytes()


def test_an_empty_kernel_choice_means_auto(kernel):
    kernel("numpy")
    expected = draw(8, 1, "uniform", np.float32)
    kernel("  ")
    assert draw(8, 1, "uniform", np.float32).tobytes() == expected.tobytes()
