"""Filling an n-d block of a tensor from a stream that fills flat index ranges."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vsgen.fans import block_runs, block_start, check_block

#: Scratch buffers for the covering span of narrow tiles hold at most this many values
#: (16 MiB of float32).
SPAN_SCRATCH = 1 << 22

#: Cost model for choosing between one fill per contiguous run and one fill of the
#: covering span (runs plus the gaps between them) followed by a strided copy.
#: Measured on a 2-core x86-64 machine with the compiled kernels loaded: a fill of at
#: least 4096 values costs ~12 us plus ~1.6 ns per value; a shorter one takes the
#: NumPy path, ~250 us per call whatever its length. In seconds.
RUN_CALL_LONG = 12e-6
RUN_CALL_SHORT = 250e-6
SHORT_RUN = 4096
VALUE_COST = 1.6e-9


def fill_block(
    fill: Callable[[np.ndarray, int], None],
    out: np.ndarray,
    origin: Sequence[int],
    full_shape: Sequence[int],
) -> None:
    """Fill ``out`` with the block of the full tensor that starts at ``origin``.

    ``fill(array_1d, flat_start)`` fills a 1-D array with flat indices
    ``[flat_start, flat_start + size)``. A block whose trailing axes are whole is
    one run per leading index (one fill for a block of whole rows). Runs that are
    long, or far apart, are filled one by one; narrow tiles (short runs, short
    gaps) fill the covering span of several rows into a scratch buffer of at most
    ``SPAN_SCRATCH`` values and copy the tile out of it, whichever the cost model
    says is cheaper. The values are the same either way.
    """
    if not isinstance(out, np.ndarray) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("Argument `out` must be a writeable C-contiguous numpy array.")
    origin, full_shape = check_block(out.shape, origin, full_shape)
    if out.size == 0:
        return
    flat = out.reshape(-1)
    base = block_start(origin, full_shape)
    run, outer_shape, outer_strides = block_runs(out.shape, full_shape)
    if not outer_shape:
        fill(flat, base)
        return
    # The last outer axis is the "row" axis; its runs are `row_stride` apart.
    row_stride = outer_strides[-1]
    rows = outer_shape[-1]
    run_cost = (RUN_CALL_SHORT if run < SHORT_RUN else RUN_CALL_LONG) + run * VALUE_COST
    use_span = row_stride * VALUE_COST < run_cost and row_stride <= SPAN_SCRATCH
    planes = list(np.ndindex(*outer_shape[:-1]))
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
            fill(scratch[: (count - 1) * row_stride + run], plane_start + first * row_stride)
            padded = scratch[: count * row_stride].reshape(count, row_stride)
            view[plane_index, first : first + count] = padded[:, :run]
