"""The native float32 -> float16/bfloat16 rounding gives NumPy's and ml_dtypes' bytes.

Narrow outputs of the vsgen stream are its float32 values rounded once to the
nearest 16-bit value (ties to even) and clamped inside the distribution's
bounds (docs/stream-v1.md, section 1). The C kernels do that rounding
themselves; here their bytes are compared, at every instruction-set level
this CPU runs, with the casts of NumPy (float16) and ml_dtypes (bfloat16)
followed by ``numpy.clip`` on the 16-bit values, for every float32 bit
pattern near a rounding decision (every exponent, both signs, the bits just
below, at and above each halfway point), infinities, and a million random
bit patterns. NaN is left out: no stream makes one.
"""

from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import pytest

from vsgen.dtypes import narrow_bounds, round_into
from vsgen.streams import _kernel_path, _native

NARROW = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}

pytestmark = pytest.mark.skipif(
    _kernel_path.library_path() is None, reason="the native kernels were not built"
)


def level_kernels() -> list[_native.Kernels]:
    library = ctypes.CDLL(str(_kernel_path.library_path()))
    best = int(library.vsgen_native_level())
    return [_native.Kernels(library, level) for level in _kernel_path.LEVELS if level <= best]


def edge_bit_patterns() -> np.ndarray:
    """float32 patterns around every rounding decision a 16-bit type can make.

    A float16 (normal) or bfloat16 value keeps the top 10 or 7 mantissa bits;
    a float16 subnormal fewer (down to none). For each count of dropped bits
    s (13..23), mantissas end in 0, 1, half - 1, half, half + 1 or all ones
    of those s bits, above a few kept patterns (even and odd, so that ties go
    both ways); every exponent and both signs.
    """
    rng = np.random.default_rng(2026)
    mantissas = set()
    for s in range(13, 24):
        half = 1 << (s - 1)
        ends = {0, 1, half - 1, half, half + 1, (1 << s) - 1}
        kept_count = 1 << (23 - s)
        kept = {0, 1, 2, 3, kept_count - 1, kept_count - 2}
        kept |= set(rng.integers(0, kept_count, 16).tolist())
        mantissas |= {(k << s) | end for k in kept if 0 <= k < kept_count for end in ends}
    mantissa = np.array(sorted(mantissas), dtype=np.uint32)
    exponent = np.arange(255, dtype=np.uint32) << np.uint32(23)  # 255 (inf/NaN) apart
    body = (exponent[:, None] | mantissa[None, :]).ravel()
    specials = np.array([0x7F800000], dtype=np.uint32)  # infinity
    patterns = np.concatenate([body, specials])
    return np.concatenate([patterns, patterns | np.uint32(0x80000000)])


def reference(values: np.ndarray, dtype: np.dtype, bounds) -> np.ndarray:
    """Round with NumPy/ml_dtypes, then clamp on the 16-bit values."""
    with np.errstate(over="ignore"):
        out = values.astype(dtype)
    if bounds is not None:
        np.clip(out, np.array(bounds[0], dtype), np.array(bounds[1], dtype), out=out)
    return out.view(np.uint16)


@pytest.mark.parametrize("name", sorted(NARROW))
def test_rounding_matches_the_reference_casts_at_every_level(name):
    dtype = NARROW[name]
    patterns = edge_bit_patterns()
    random = np.random.default_rng(7).integers(0, 1 << 32, 1 << 20, dtype=np.uint64)
    patterns = np.concatenate([patterns, random.astype(np.uint32)])
    values = patterns.view(np.float32)
    values = values[~np.isnan(values)]
    expected = reference(values, dtype, None)
    kernels = level_kernels()
    assert kernels, "no level of the library loads on this CPU"
    for kernel in kernels:
        out = np.empty(values.size, dtype)
        kernel.round_16(out, values, None)
        wrong = np.flatnonzero(out.view(np.uint16) != expected)
        assert wrong.size == 0, (
            f"level {kernel.level}: {wrong.size} values differ, e.g. float32 bits "
            f"{patterns[wrong[0]]:#010x} -> {out.view(np.uint16)[wrong[0]]:#06x}, "
            f"expected {expected[wrong[0]]:#06x}"
        )


@pytest.mark.parametrize("name", sorted(NARROW))
@pytest.mark.parametrize(
    ("distribution", "multiplier"), [("uniform", 0.0371), ("truncated_normal", 0.0211)]
)
def test_clamping_matches_round_then_clip(name, distribution, multiplier):
    """Values on, near and past the bounds: clamped exactly as rounding first
    and clipping the 16-bit values after would (the NumPy path does the same)."""
    dtype = NARROW[name]
    bounds = narrow_bounds(dtype, distribution, multiplier)
    assert bounds is not None
    edge = 2 * multiplier if distribution == "truncated_normal" else multiplier
    near = np.concatenate(
        [
            np.linspace(-1.01 * edge, 1.01 * edge, 200_001, dtype=np.float32),
            *(
                np.array(v, np.float32)
                + np.arange(-300, 301, dtype=np.float32) * np.spacing(np.float32(v))
                for v in (edge, -edge, *bounds)
            ),
        ]
    )
    expected = reference(near, dtype, bounds)
    # The test must reach the clamp: some values round past a bound.
    assert np.any(near.astype(dtype).astype(np.float64) > bounds[1])
    for kernel in level_kernels():
        out = np.empty(near.size, dtype)
        kernel.round_16(out, near, bounds)
        assert np.array_equal(out.view(np.uint16), expected), f"level {kernel.level}"
    out = np.empty(near.size, dtype)
    round_into(out, near.copy(), bounds)
    assert np.array_equal(out.view(np.uint16), expected), "NumPy path"


@pytest.mark.parametrize("name", sorted(NARROW))
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_stream_fills_narrow_outputs_in_one_pass_with_float32_bytes_rounded(
    name, distribution, monkeypatch
):
    """A float16/bfloat16 fill by the native kernels (compute and round in one
    pass, in blocks, on several threads) equals the float32 values of the same
    indices rounded by NumPy/ml_dtypes and clamped: odd starts, sizes that are
    not a multiple of any block or piece, one to three threads."""
    from vsgen.streams import Draw, VsgenStream, _dispatch, counter

    monkeypatch.setenv("VSGEN_KERNEL", "auto")
    dtype = NARROW[name]
    multiplier = 0.0173
    bounds = narrow_bounds(dtype, distribution, multiplier)
    size = 3 * _dispatch.MIN_THREAD_PIECE + 8_193
    for start in (0, 1, 98_765):
        wide = np.empty(size, np.float32)
        counter.fill(wide, start, 31, distribution, multiplier)
        expected = reference(wide, dtype, bounds)
        for threads in (1, 2, 3):
            out = np.empty(size, dtype)
            VsgenStream().fill(out, start, Draw(distribution, multiplier, 31, dtype), threads)
            assert np.array_equal(out.view(np.uint16), expected), (start, threads)
    assert _dispatch._narrow_native(out) is not None  # the one-pass path ran
