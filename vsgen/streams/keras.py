"""The ``keras`` stream (version 1): bit-exact Keras 3 numpy-backend reproduction.

For an integer seed in [0, 2**32): ``rng = numpy.random.default_rng(numpy.array([seed,
0], dtype=uint32))``; values are drawn in float64 over the flat tensor and cast to
the output dtype once (a direct float64 -> float16 rounding, not through float32):

* uniform: ``rng.uniform(low=-limit, high=limit)``
* untruncated_normal: ``rng.normal(loc=0, scale=stddev)``
* truncated_normal: the first N values of the endless sequence
  ``rng.normal(loc=0, scale=s)`` that satisfy ``-2s <= x <= 2s``.

Sequential by nature: a slice is made by drawing (and dropping) everything
before it. Its purpose is verifiable parity, not speed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vsgen.streams._base import DEFAULT_CHUNK, Draw, Stream


class KerasStream(Stream):
    """Keras 3 numpy-backend reproduction (see the module docstring)."""

    name = "keras"
    version = 1
    max_seed = 2**32
    random_access = False

    def _generator(self, seed: int) -> np.random.Generator:
        return np.random.default_rng(np.array([seed, 0], dtype=np.uint32))

    def _batch(self, rng: np.random.Generator, draw: Draw, wanted: int) -> np.ndarray:
        """The next float64 values of the sequence Keras draws from.

        NumPy's Generator draws value by value, so the sequence does not depend
        on batch sizes; only ``wanted`` (>= 1) values are needed now, and for the
        truncated normal about 4.6 % of draws are rejected, hence the margin.
        """
        if draw.distribution == "uniform":
            return rng.uniform(low=-draw.multiplier, high=draw.multiplier, size=wanted)
        if draw.distribution == "untruncated_normal":
            return rng.normal(loc=0.0, scale=draw.multiplier, size=wanted)
        # Keras computes its bounds as mean -/+ 2 * stddev with mean 0.0.
        lower = 0.0 - 2 * draw.multiplier
        upper = 0.0 + 2 * draw.multiplier
        batch = rng.normal(loc=0.0, scale=draw.multiplier, size=wanted + wanted // 16 + 16)
        return batch[(batch >= lower) & (batch <= upper)]

    def chunks(
        self,
        draw: Draw,
        start: int,
        stop: int,
        chunk_size: int = DEFAULT_CHUNK,
        threads: int | None = None,
    ) -> Iterator[np.ndarray]:
        if start >= stop:
            return
        rng = self._generator(draw.seed)
        position = 0  # flat index of pending[0]
        pending = np.empty(0)
        while position < stop:
            if pending.size == 0:
                pending = self._batch(rng, draw, min(chunk_size, stop - position))
                continue
            if position + pending.size <= start:
                position += pending.size
                pending = np.empty(0)
                continue
            skip = max(0, start - position)
            take = min(pending.size - skip, stop - position - skip, chunk_size)
            piece = pending[skip : skip + take]
            pending = pending[skip + take :]
            position += skip + take
            yield piece.astype(draw.dtype)
