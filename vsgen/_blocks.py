"""Filling n-d blocks of a tensor from a flat-index stream (moves into vsgen.streams)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Scratch buffers for the covering span of narrow tiles hold at most this many values
#: (16 MiB of float32).
SPAN_SCRATCH = 1 << 22

#: Cost model for choosing, per block, between one fill per contiguous run and one fill
#: of the covering span (runs plus the gaps between them) followed by a strided copy.
#: Measured on a 2-core x86-64 machine with the compiled kernels loaded: a fill of at
#: least 4096 values costs ~12 us plus ~1.6 ns per value; a shorter one takes the NumPy
#: path (~250 us per call whatever its length). Values are in seconds.
RUN_CALL_LONG = 12e-6
RUN_CALL_SHORT = 250e-6
SHORT_RUN = 4096
VALUE_COST = 1.6e-9


def _c_strides(shape: Sequence[int]) -> list[int]:
    strides = [1] * len(shape)
    for axis in range(len(shape) - 2, -1, -1):
        strides[axis] = strides[axis + 1] * shape[axis + 1]
    return strides


def check_block(
    out: np.ndarray, origin: Sequence[int], full_shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate a block request; return ``(origin, full_shape)`` as int tuples."""
    if not isinstance(out, np.ndarray) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("Argument `out` must be a writeable C-contiguous numpy array.")
    origin = tuple(int(o) for o in origin)
    full_shape = tuple(int(d) for d in full_shape)
    if len(origin) != out.ndim or len(full_shape) != out.ndim:
        raise ValueError(
            "Arguments `origin` and `full_shape` must have one entry per axis of `out`. "
            f"Received: origin={origin}, full_shape={full_shape}, out.shape={out.shape}"
        )
    for axis, (first, extent, full) in enumerate(zip(origin, out.shape, full_shape, strict=True)):
        if first < 0 or first + extent > full:
            raise ValueError(
                f"Block does not fit the tensor on axis {axis}: origin {first} + extent "
                f"{extent} > {full}. Received: origin={origin}, full_shape={full_shape}"
            )
    return origin, full_shape


def block_runs(
    shape: Sequence[int], origin: Sequence[int], full_shape: Sequence[int]
) -> tuple[int, int, list[int], list[int]]:
    """Describe a block as rows of equal contiguous runs of the full tensor's flat index.

    Returns ``(run_length, split_axis, outer_shape, outer_strides)``: axes after
    ``split_axis`` are whole, so each run covers ``shape[split_axis:]`` and is
    contiguous both in the block and in the tensor. The runs are indexed by the
    block's ``outer_shape = shape[:split_axis]``; ``outer_strides`` are the
    tensor's flat strides of those axes.
    """
    rank = len(shape)
    split = rank - 1
    while split > 0 and shape[split] == full_shape[split]:
        split -= 1
    if rank == 0:
        return 1, 0, [], []
    strides = _c_strides(full_shape)
    return math.prod(shape[split:]), split, list(shape[:split]), strides[:split]


def block_start(origin: Sequence[int], full_shape: Sequence[int]) -> int:
    """Flat index in the full tensor of the block's first element."""
    return sum(o * s for o, s in zip(origin, _c_strides(full_shape), strict=True))


def fill_block(
    fill,
    out: np.ndarray,
    origin: Sequence[int],
    full_shape: Sequence[int],
) -> None:
    """Fill ``out`` with the block of the full tensor that starts at ``origin``.

    ``fill(array_1d, flat_start)`` fills a 1-D array with flat indices
    ``[flat_start, flat_start + size)``. Runs of the block that are contiguous in
    the tensor are filled directly when they are long or far apart; narrow tiles
    (short runs, short gaps) fill the covering span of several rows into a
    scratch buffer of at most ``SPAN_SCRATCH`` values and copy the tile out of it,
    whichever the cost model says is cheaper.
    """
    origin, full_shape = check_block(out, origin, full_shape)
    if out.size == 0:
        return
    flat = out.reshape(-1)
    base = block_start(origin, full_shape)
    run, split, outer_shape, outer_strides = block_runs(out.shape, origin, full_shape)
    if not outer_shape:
        fill(flat, base)
        return
    # The last outer axis is the "row" axis; runs along it are `row_stride` apart.
    row_stride = outer_strides[-1]
    rows = outer_shape[-1]
    run_cost = (RUN_CALL_SHORT if run < SHORT_RUN else RUN_CALL_LONG) + run * VALUE_COST
    span_cost = row_stride * VALUE_COST
    use_span = run < row_stride and span_cost < run_cost and row_stride <= SPAN_SCRATCH
    planes = list(np.ndindex(*outer_shape[:-1])) if len(outer_shape) > 1 else [()]
    view = flat.reshape(-1, rows, run)
    if not use_span:
        for plane_index, plane in enumerate(planes):
            plane_start = base + sum(i * s for i, s in zip(plane, outer_strides, strict=False))
            for row in range(rows):
                fill(view[plane_index, row], plane_start + row * row_stride)
        return
    rows_per_piece = max(1, SPAN_SCRATCH // row_stride)
    scratch = np.empty(min(rows, rows_per_piece) * row_stride, dtype=out.dtype)
    for plane_index, plane in enumerate(planes):
        plane_start = base + sum(i * s for i, s in zip(plane, outer_strides, strict=False))
        for first in range(0, rows, rows_per_piece):
            count = min(rows_per_piece, rows - first)
            # The last row needs only its run, not the gap after it.
            span = scratch[: (count - 1) * row_stride + run]
            fill(span, plane_start + first * row_stride)
            padded = scratch[: count * row_stride].reshape(count, row_stride)
            view[plane_index, first : first + count] = padded[:, :run]
