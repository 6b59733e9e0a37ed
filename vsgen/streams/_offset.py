"""Values of the ``vsgen`` stream with an offset: a mean, an off-centre range.

docs/stream-v1.md, section 12, defines this bit for bit. With working
precision P (float32 for outputs of 32 bits or fewer, float64 for float64),
``o = round_P(offset)`` and ``t`` the zero-offset value of section 1
(``round_P(m * z)``):

    v = clamp(round_P(o + t), lo, hi)      then rounded once to the output type

``lo``/``hi`` are the output type's values closest to the ends of the draw's
range and inside it (``Draw.value_range``: ``[offset - 2s, offset + 2s]`` for
the truncated normal, ``[low, high)`` for the uniform; no clamp for the
untruncated normal). Clamping in P before rounding gives the bytes of
rounding first, as ``vsgen.dtypes.round_into`` explains. Only ``+``,
comparisons and the rounding cast are added to the zero-offset values, so
the bytes stay independent of the CPU, the thread count and the chunking.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vsgen.dtypes import interval_bounds, round_into, working_dtype
from vsgen.streams._base import Draw, Stream

#: Values per step: the zero-offset values of a narrow output are made in a
#: scratch buffer of this size (4 MiB of float32), large enough for the
#: stream's threads to share.
OFFSET_PIECE = 1 << 20


def offset_bounds(draw: Draw, dtype: np.dtype) -> tuple[float, float] | None:
    """``(lo, hi)``: the values of ``dtype`` closest to the ends of the draw's range
    and inside it; None for the untruncated normal (no bound).

    Raises:
        ValueError: the range holds no value of ``dtype``.
    """
    value_range = draw.value_range()
    if value_range is None:
        return None
    low, high = value_range
    lo, hi = interval_bounds(dtype, low, high, open_high=draw.distribution == "uniform")
    if lo > hi:
        raise ValueError(
            f"no {np.dtype(dtype).name} value lies in the range [{low!r}, {high!r}"
            f"{')' if draw.distribution == 'uniform' else ']'}"
        )
    return lo, hi


def fill_offset(
    stream: Stream,
    out: np.ndarray,
    start: int,
    draw: Draw,
    threads: int | None,
    job_size: int | None,
) -> None:
    """Fill the 1-D real array ``out`` with indices [start, start + out.size) of a
    draw whose offset is not 0 (see the module docstring)."""
    if out.dtype.kind == "c":
        raise ValueError("complex values take no offset (a mean or an off-centre range)")
    work = working_dtype(out.dtype)
    centred = dataclasses.replace(draw, offset=0.0, interval=None, dtype=work)
    offset = work.type(draw.offset)
    bounds = offset_bounds(draw, out.dtype)
    if out.dtype == work:
        stream.fill(out, start, centred, threads, job_size=job_size)
        for lo in range(0, out.size, OFFSET_PIECE):
            piece = out[lo : lo + OFFSET_PIECE]
            np.add(piece, offset, out=piece)
            if bounds is not None:
                np.clip(piece, bounds[0], bounds[1], out=piece)
        return
    scratch = np.empty(min(OFFSET_PIECE, out.size), dtype=work)
    for lo in range(0, out.size, OFFSET_PIECE):
        piece = scratch[: min(OFFSET_PIECE, out.size - lo)]
        stream.fill(piece, start + lo, centred, threads, job_size=job_size)
        np.add(piece, offset, out=piece)
        round_into(out[lo : lo + piece.size], piece, bounds)
