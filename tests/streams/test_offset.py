"""Offsets in the ``vsgen`` stream (docs/stream-v1.md, section 12).

The expected bytes are built here from the zero-offset stream (whose own
bytes the golden checksums freeze) with NumPy's IEEE additions, and the
clamp ends are found by enumerating the output type's values, not with the
helper the stream uses.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsgen.dtypes import resolve_dtype, working_dtype
from vsgen.streams import Draw, _offset, get_stream

DTYPES = ("float32", "float64", "float16", "bfloat16")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


def _all_finite_16(dtype: np.dtype) -> np.ndarray:
    values = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
    with np.errstate(invalid="ignore"):  # NaN patterns
        wide = values.astype(np.float64)
    return np.unique(wide[np.isfinite(wide)])


def _near(value: float, dtype: np.dtype) -> np.ndarray:
    """The ``dtype`` values within a few steps of ``value`` (float32, float64)."""
    centre = np.array(value, dtype=np.float64).astype(dtype)
    values = [centre]
    up, down = centre, centre
    for _ in range(4):
        up = np.nextafter(up, np.array(np.inf, dtype))
        down = np.nextafter(down, np.array(-np.inf, dtype))
        values += [up, down]
    return np.array(values, dtype=np.float64)


def _clamp_ends(dtype: np.dtype, low: float, high: float, open_high: bool) -> tuple[float, float]:
    candidates = (
        _all_finite_16(dtype)
        if dtype.itemsize == 2
        else np.concatenate([_near(low, dtype), _near(high, dtype)])
    )
    lo = candidates[candidates >= low].min()
    inside = candidates < high if open_high else candidates <= high
    return float(lo), float(candidates[inside].max())


def _expected(draw: Draw, start: int, size: int) -> np.ndarray:
    """v = clamp(round_P(o + t), lo, hi), rounded once to the output type."""
    work = working_dtype(draw.dtype)
    centred = Draw(draw.distribution, draw.multiplier, draw.seed, work)
    t = np.empty(size, work)
    get_stream("vsgen").fill(t, start, centred, threads=1)
    v = t + work.type(draw.offset)  # one IEEE addition in P
    if draw.distribution != "untruncated_normal":
        if draw.distribution == "uniform":
            low, high = draw.interval or (
                draw.offset - draw.multiplier,
                draw.offset + draw.multiplier,
            )
        else:
            low, high = draw.offset - 2 * draw.multiplier, draw.offset + 2 * draw.multiplier
        lo, hi = _clamp_ends(draw.dtype, low, high, draw.distribution == "uniform")
        v = np.clip(v, lo, hi)
    return v.astype(draw.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("offset", [1.0, -0.3, 250.0])
def test_offset_values_follow_the_definition(dtype, distribution, offset):
    draw = Draw(distribution, 0.125, 2024, resolve_dtype(dtype), offset=offset)
    out = np.empty(70_001, draw.dtype)
    get_stream("vsgen").fill(out, 13, draw, threads=2)
    assert out.tobytes() == _expected(draw, 13, 70_001).tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_interval_is_kept_exactly(dtype):
    # A range whose ends are not offset -/+ half-width in doubles.
    low, high = 0.1, 0.7
    draw = Draw("uniform", (high - low) / 2, 5, resolve_dtype(dtype), (low + high) / 2, (low, high))
    out = np.empty(200_000, draw.dtype)
    get_stream("vsgen").fill(out, 0, draw, threads=2)
    assert out.tobytes() == _expected(draw, 0, out.size).tobytes()
    wide = out.astype(np.float64)
    assert wide.min() >= low and wide.max() < high


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_stay_inside_the_range_where_rounding_would_leave_it(dtype):
    # Far from 0 the output type's spacing is coarse: without the clamp,
    # rounding o + t carries values onto the open end or past the closed ones.
    resolved = resolve_dtype(dtype)
    stream = get_stream("vsgen")
    uniform = Draw("uniform", 0.5, 1, resolved, 1000.5, (1000.0, 1001.0))
    out = np.empty(100_000, resolved)
    stream.fill(out, 0, uniform, threads=1)
    wide = out.astype(np.float64)
    assert wide.min() >= 1000.0 and wide.max() < 1001.0
    truncated = Draw("truncated_normal", 0.01, 1, resolved, offset=100.0)
    stream.fill(out, 0, truncated, threads=1)
    wide = out.astype(np.float64)
    assert wide.min() >= 100.0 - 0.02 and wide.max() <= 100.0 + 0.02


def test_an_empty_range_is_refused():
    # No float16 value lies in [1.00001, 1.00002).
    draw = Draw("uniform", 5e-6, 1, resolve_dtype("float16"), 1.000015, (1.00001, 1.00002))
    with pytest.raises(ValueError, match="no float16 value lies in the range"):
        get_stream("vsgen").fill(np.empty(10, np.float16), 0, draw, threads=1)


def test_complex_outputs_take_no_offset():
    draw = Draw("untruncated_normal", 1.0, 1, resolve_dtype("complex64"), offset=1.0)
    with pytest.raises(ValueError, match="complex values take no offset"):
        get_stream("vsgen").fill(np.empty(4, np.complex64), 0, draw, threads=1)


def test_offset_zero_is_the_centred_stream():
    # Default fields and an explicit 0 give the same Draw, hence the golden bytes.
    resolved = resolve_dtype("float32")
    assert Draw("uniform", 0.5, 3, resolved) == Draw("uniform", 0.5, 3, resolved, 0.0, None)


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    distribution=st.sampled_from(DISTRIBUTIONS),
    seed=st.integers(0, 2**64 - 1),
    start=st.integers(0, 3_000),
    size=st.integers(0, 3_000),
    cut=st.integers(0, 3_000),
    threads=st.integers(1, 3),
)
def test_any_split_and_thread_count_gives_the_same_bytes(
    dtype, distribution, seed, start, size, cut, threads
):
    draw = Draw(distribution, 0.75, seed, resolve_dtype(dtype), offset=-2.5)
    stream = get_stream("vsgen")
    whole = np.empty(size, draw.dtype)
    stream.fill(whole, start, draw, threads=1)
    cut = min(cut, size)
    first, second = np.empty(cut, draw.dtype), np.empty(size - cut, draw.dtype)
    stream.fill(first, start, draw, threads=threads)
    stream.fill(second, start + cut, draw, threads=threads)
    assert first.tobytes() + second.tobytes() == whole.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_and_pieces_give_the_same_bytes(dtype, monkeypatch):
    monkeypatch.setattr(_offset, "OFFSET_PIECE", 777)  # many scratch pieces
    draw = Draw("truncated_normal", 0.3, 99, resolve_dtype(dtype), offset=0.5)
    stream = get_stream("vsgen")
    whole = np.empty((37, 53), draw.dtype)
    stream.fill(whole.reshape(-1), 0, draw, threads=1)
    block = np.empty((11, 20), draw.dtype)
    stream.fill_block(block, (5, 17), (37, 53), draw, threads=2)
    assert block.tobytes() == whole[5:16, 17:37].tobytes()
    assert whole.tobytes() == _expected(draw, 0, whole.size).tobytes()


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_keras_stream_draws_around_the_offset_as_numpy_does(distribution):
    # Keras 3's numpy backend: rng.normal(loc=mean, scale=stddev), rng.uniform(low, high).
    draw = Draw(distribution, 0.2, 17, resolve_dtype("float64"), 3.0, None)
    out = np.empty(1_000, np.float64)
    get_stream("keras").fill(out, 0, draw)
    rng = np.random.default_rng(np.array([17, 0], dtype=np.uint32))
    if distribution == "uniform":
        expected = rng.uniform(low=3.0 - 0.2, high=3.0 + 0.2, size=1_000)
    elif distribution == "untruncated_normal":
        expected = rng.normal(loc=3.0, scale=0.2, size=1_000)
    else:
        batch = rng.normal(loc=3.0, scale=0.2, size=2_000)
        expected = batch[(batch >= 3.0 - 0.4) & (batch <= 3.0 + 0.4)][:1_000]
    assert out.tobytes() == expected.tobytes()
