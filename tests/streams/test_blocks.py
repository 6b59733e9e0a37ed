"""Stream.fill_block: any n-d block equals the same slice of the whole tensor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsgen.dtypes import resolve_dtype
from vsgen.streams import Draw, _blocks, get_stream


def _whole(stream_name: str, draw: Draw, shape: tuple[int, ...]) -> np.ndarray:
    """The whole tensor from one flat fill (the stream's own, golden-checked path)."""
    full = np.empty(shape, dtype=draw.dtype)
    get_stream(stream_name).fill(full.reshape(-1), 0, draw, threads=1)
    return full


@st.composite
def _blocks_of(draw_fn):
    rank = draw_fn(st.integers(0, 4))
    shape = tuple(draw_fn(st.lists(st.integers(0, 9), min_size=rank, max_size=rank)))
    origin, extent = [], []
    for size in shape:
        first = draw_fn(st.integers(0, size))
        origin.append(first)
        extent.append(draw_fn(st.integers(0, size - first)))
    return shape, tuple(origin), tuple(extent)


@pytest.mark.parametrize("strategy", ["cost model", "runs", "span"])
# monkeypatch is set the same way for every example of one strategy.
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    block=_blocks_of(),
    dtype=st.sampled_from(["float32", "float16", "bfloat16", "float64"]),
    distribution=st.sampled_from(["truncated_normal", "untruncated_normal", "uniform"]),
    seed=st.integers(0, 2**64 - 1),
)
def test_block_equals_slice_of_whole(strategy, block, dtype, distribution, seed, monkeypatch):
    if strategy == "runs":
        monkeypatch.setattr(_blocks, "SPAN_SCRATCH", 0)
    elif strategy == "span":
        monkeypatch.setattr(_blocks, "VALUE_COST", 0.0)
        monkeypatch.setattr(_blocks, "SPAN_SCRATCH", 7)  # several pieces per block
    shape, origin, extent = block
    draw = Draw(distribution, 0.5, seed, resolve_dtype(dtype))
    whole = _whole("vsgen", draw, shape)
    out = np.empty(extent, dtype=draw.dtype)
    get_stream("vsgen").fill_block(out, origin, shape, draw, threads=1)
    region = tuple(slice(o, o + e) for o, e in zip(origin, extent, strict=True))
    assert out.tobytes() == whole[region].tobytes()


def test_narrow_tiles_of_a_wide_tensor():
    draw = Draw("truncated_normal", 0.1, 7, np.dtype("float32"))
    shape = (300, 5000)
    whole = _whole("vsgen", draw, shape)
    for origin, extent in [((0, 0), (300, 1)), ((17, 4990), (200, 10)), ((5, 100), (1, 4900))]:
        out = np.empty(extent, np.float32)
        get_stream("vsgen").fill_block(out, origin, shape, draw, threads=2)
        region = tuple(slice(o, o + e) for o, e in zip(origin, extent, strict=True))
        assert out.tobytes() == whole[region].tobytes()


def test_keras_stream_blocks_are_correct_too():
    draw = Draw("uniform", 1.0, 3, np.dtype("float32"))
    whole = _whole("keras", draw, (6, 7))
    out = np.empty((3, 2), np.float32)
    get_stream("keras").fill_block(out, (2, 4), (6, 7), draw)
    assert out.tobytes() == whole[2:5, 4:6].tobytes()


@pytest.mark.parametrize(
    ("origin", "extent", "full"),
    [((0, 5), (2, 2), (4, 6)), ((-1, 0), (1, 1), (4, 6)), ((0,), (1, 1), (4, 6))],
)
def test_blocks_outside_the_tensor_are_refused(origin, extent, full):
    draw = Draw("uniform", 1.0, 3, np.dtype("float32"))
    with pytest.raises(ValueError, match="origin"):
        get_stream("vsgen").fill_block(np.empty(extent, np.float32), origin, full, draw)
