"""Complex values of the ``vsgen`` stream, built from its real draws.

docs/stream-v1.md, section 11, defines this bit for bit. Complex element p
(working precision P: float32 for complex64, float64 for complex128) reads

* ``x = Z(seed, untruncated_normal, P, 2p)``, ``y = Z(seed, ..., 2p + 1)``:
  the real stream's unit normals (multiplier 1), and for ``uniform`` also
* ``g = Z(seed ^ DISK_TAG, uniform, P, p)`` in [-1, 1),

then computes in float64 (each operation one IEEE 754 rounding; only
``+ - * /``, ``sqrt`` and ``floor``, whose results are exact or correctly
rounded, so the bytes do not depend on the CPU) and rounds each part to P once:

* ``untruncated_normal``: ``a = m * SQRT_HALF``; ``(a x, a y)``;
* ``truncated_normal``: ``e = 0.5 (x x + y y)`` (|w|**2 of the complex
  standard normal ``w = (x + i y) / sqrt 2``); if ``e > 4``,
  ``f = sqrt((e - 4 floor(e * 0.25)) / e)``, else ``f = 1``;
  ``(a (x f), a (y f))``. Since |w|**2 is Exp(1) and independent of w's
  direction, ``e mod 4`` is Exp(1) conditioned on ``< 4``: w conditioned on
  ``|w| <= 2`` (JAX's ``_complex_truncated_normal``), without rejection;
* ``uniform``: ``rho = sqrt((g + 1) * 0.5)`` (sqrt of a uniform in [0, 1):
  the radius of a point uniform in the unit disk), ``d = sqrt(x x + y y)``;
  ``(m (rho (x / d)), m (rho (y / d)))``, or ``(m rho, 0)`` when ``d = 0``.

``m`` is the draw's multiplier (float64): the pre-truncation stddev, the
stddev, or the disk's radius. Element p depends only on real indices 2p, 2p + 1
and p, so slices, chunks and thread counts do not change a bit.
"""

from __future__ import annotations

import math

import numpy as np

from vsgen.dtypes import real_dtype
from vsgen.streams._base import Draw, Stream

#: XOR-ed into the seed for the disk's radii: the bytes of "complex1", big-endian.
DISK_TAG = int.from_bytes(b"complex1", "big")
#: sqrt(1/2) correctly rounded to float64.
SQRT_HALF = math.sqrt(0.5)
#: Complex values per step: bounds the float64 temporaries (~100 bytes per value).
COMPLEX_CHUNK = 1 << 16


def _parts(values: np.ndarray, part_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    pairs = values.view(part_dtype).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _unit_pairs(
    stream: Stream, start: int, count: int, seed: int, part: np.dtype, threads: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """x, y (float64) of complex elements start .. start + count - 1."""
    pairs = np.empty(2 * count, dtype=part)
    stream.fill(pairs, 2 * start, Draw("untruncated_normal", 1.0, seed, part), threads)
    pairs64 = pairs.astype(np.float64).reshape(-1, 2)
    return pairs64[:, 0], pairs64[:, 1]


def fill_complex(
    stream: Stream, out: np.ndarray, start: int, draw: Draw, threads: int | None = None
) -> None:
    """Fill the 1-D complex array ``out`` with elements [start, start + out.size)."""
    if draw.offset != 0.0 or draw.interval is not None:
        raise ValueError("complex values take no offset (a mean or an off-centre range)")
    part = real_dtype(out.dtype)
    multiplier = float(draw.multiplier)
    for offset in range(0, out.size, COMPLEX_CHUNK):
        count = min(COMPLEX_CHUNK, out.size - offset)
        first = start + offset
        x, y = _unit_pairs(stream, first, count, draw.seed, part, threads)
        if draw.distribution == "uniform":
            unit = np.empty(count, dtype=part)
            stream.fill(unit, first, Draw("uniform", 1.0, draw.seed ^ DISK_TAG, part), threads)
            radius = np.sqrt((unit.astype(np.float64) + 1.0) * 0.5)
            norm = np.sqrt(x * x + y * y)
            zero = norm == 0.0
            safe = np.where(zero, 1.0, norm)
            real = np.where(zero, 1.0, x / safe)
            imag = np.where(zero, 0.0, y / safe)
            real = multiplier * (radius * real)
            imag = multiplier * (radius * imag)
        else:
            scale = multiplier * SQRT_HALF
            if draw.distribution == "truncated_normal":
                energy = 0.5 * (x * x + y * y)
                beyond = energy > 4.0
                if beyond.any():
                    e = energy[beyond]
                    factor = np.sqrt((e - 4.0 * np.floor(e * 0.25)) / e)
                    x[beyond] = x[beyond] * factor
                    y[beyond] = y[beyond] * factor
            real = scale * x
            imag = scale * y
        out_real, out_imag = _parts(out[offset : offset + count], part)
        out_real[:] = real
        out_imag[:] = imag
