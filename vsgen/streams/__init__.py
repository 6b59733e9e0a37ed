"""Random streams: deterministic maps from (seed, distribution, multiplier,
dtype, flat index) to numbers. No files, no printing.

Two streams exist (SPEC section 2):

``keras`` (version 1)
    Bit-exact Keras 3 numpy-backend reproduction. For an integer seed in
    [0, 2**32): ``rng = numpy.random.default_rng(numpy.array([seed, 0],
    dtype=uint32))``; values are drawn in float64 over the flat tensor and
    cast to the output dtype once (a direct float64 -> float16 rounding, not
    through float32):

    * uniform: ``rng.uniform(low=-limit, high=limit)``
    * untruncated_normal: ``rng.normal(loc=0, scale=stddev)``
    * truncated_normal: the first N values of the endless sequence
      ``rng.normal(loc=0, scale=s)`` that satisfy ``-2s <= x <= 2s``.

    Sequential by nature: a slice is made by drawing (and dropping) everything
    before it. Its purpose is verifiable parity, not speed.

``vsgen`` (version 1, the default)
    Counter-based, parallel and random-access; see ``vsgen._v1`` and
    ``docs/stream-v1.md``. Bytes depend only on (seed, options, index):
    never on thread count, chunking, output format or CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vsgen.dtypes import working_dtype

#: Values per chunk handed to writers: 4 Mi values (16 MiB of float32) keeps
#: memory bounded while amortising per-call overhead.
DEFAULT_CHUNK = 1 << 22


@dataclass(frozen=True)
class Draw:
    """What a stream needs to know to produce numbers.

    ``multiplier`` is the pre-truncation stddev ``s`` for ``truncated_normal``
    (values lie in [-2s, 2s]), the stddev for ``untruncated_normal`` and the
    half-width ``limit`` for ``uniform`` (values lie in [-limit, limit)).
    """

    distribution: str
    multiplier: float
    seed: int
    dtype: np.dtype


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Stream:
    """Base class: a named, versioned, deterministic source of numbers."""

    name: str = ""
    version: int = 0
    #: Seeds must lie in [0, max_seed).
    max_seed: int = 0
    #: True if any flat range can be generated without generating what precedes it.
    random_access: bool = False

    def chunks(
        self,
        draw: Draw,
        start: int,
        stop: int,
        chunk_size: int = DEFAULT_CHUNK,
        threads: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield 1-D arrays of ``draw.dtype`` that together hold flat indices
        [start, stop), in order, each at most ``chunk_size`` long."""
        raise NotImplementedError

    def fill(self, out: np.ndarray, start: int, draw: Draw, threads: int | None = None) -> None:
        """Fill the 1-D array ``out`` with flat indices [start, start + out.size)."""
        position = 0
        for chunk in self.chunks(draw, start, start + out.size, threads=threads):
            out[position : position + chunk.size] = chunk
            position += chunk.size

    @property
    def label(self) -> str:
        """``name/version``, as recorded in file metadata."""
        return f"{self.name}/{self.version}"


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


class VsgenStream(Stream):
    """The counter-based ``vsgen`` stream; the sampler lives in ``vsgen._v1``."""

    name = "vsgen"
    version = 1
    max_seed = 2**64
    random_access = True

    def fill(
        self,
        out: np.ndarray,
        start: int,
        draw: Draw,
        threads: int | None = None,
        job_size: int | None = None,
    ) -> None:
        """Fill ``out`` (see ``Stream.fill``); ``job_size`` is the size of the whole
        job ``out`` belongs to, so that a big job picks the compiled kernels from
        its first chunk on (the bytes do not depend on it)."""
        from vsgen import _v1

        threads = usable_cpus() if threads is None else threads
        job_size = out.size if job_size is None else job_size
        work = working_dtype(draw.dtype)
        if out.dtype == work:
            _v1.fill(out, start, draw.seed, draw.distribution, draw.multiplier, threads,
                     job_size=job_size)
            return
        # Narrow outputs are computed in float32 and rounded once, a chunk at a time.
        buffer = np.empty(min(out.size, DEFAULT_CHUNK), dtype=work)
        for offset in range(0, out.size, buffer.size):
            piece = buffer[: min(buffer.size, out.size - offset)]
            _v1.fill(piece, start + offset, draw.seed, draw.distribution, draw.multiplier,
                     threads, job_size=job_size)
            out[offset : offset + piece.size] = piece.astype(out.dtype)

    def chunks(
        self,
        draw: Draw,
        start: int,
        stop: int,
        chunk_size: int = DEFAULT_CHUNK,
        threads: int | None = None,
    ) -> Iterator[np.ndarray]:
        for offset in range(start, stop, chunk_size):
            chunk = np.empty(min(chunk_size, stop - offset), dtype=draw.dtype)
            self.fill(chunk, offset, draw, threads, job_size=stop - start)
            yield chunk


STREAMS: dict[str, Stream] = {"keras": KerasStream(), "vsgen": VsgenStream()}
DEFAULT_STREAM = "vsgen"


def get_stream(name: str) -> Stream:
    """The stream called ``name`` (``"vsgen"`` or ``"keras"``; ``"vsgen/1"`` too)."""
    key = str(name).strip().lower()
    base, _, version = key.partition("/")
    stream = STREAMS.get(base)
    if stream is None or (version and version != str(stream.version)):
        raise ValueError(
            f"Argument `stream` must be one of {', '.join(STREAMS)}. Received: stream={name!r}"
        )
    return stream
