"""The ``keras`` stream (version 1): bit-exact Keras 3 numpy-backend reproduction.

For an integer seed in [0, 2**32): ``rng = numpy.random.default_rng(numpy.array([seed,
0], dtype=uint32))``; values are drawn in float64 over the flat tensor and cast to
the output dtype once (a direct float64 -> float16 rounding, not through float32):

* uniform: ``rng.uniform(low=low, high=high)``, ``(low, high)`` the draw's
  range (``(-limit, limit)`` for variance scaling, ``(minval, maxval)`` for
  ``RandomUniform``);
* untruncated_normal: ``rng.normal(loc=mean, scale=stddev)``;
* truncated_normal: the first N values of the endless sequence
  ``rng.normal(loc=mean, scale=s)`` that satisfy ``mean - 2s <= x <= mean + 2s``.

``mean`` is the draw's offset (0 for variance scaling), passed to NumPy as
Keras passes it, so NumPy computes ``loc + scale * z`` in float64 as Keras's
own call does.

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
        value_range = draw.value_range()
        if draw.distribution == "uniform":
            assert value_range is not None
            return rng.uniform(low=value_range[0], high=value_range[1], size=wanted)
        if draw.distribution == "untruncated_normal":
            return rng.normal(loc=draw.offset, scale=draw.multiplier, size=wanted)
        # Keras computes its bounds as mean -/+ 2 * stddev (Draw.value_range).
        assert value_range is not None
        lower, upper = value_range
        batch = rng.normal(loc=draw.offset, scale=draw.multiplier, size=wanted + wanted // 16 + 16)
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
