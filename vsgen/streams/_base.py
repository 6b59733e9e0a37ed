"""The interface every random stream implements: ``Draw`` in, numbers out."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

#: What every stream draws (``Draw.distribution``).
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

#: Seeds that vsgen draws or derives stay below 2**53 (and below the stream's
#: ``max_seed``), so that every JSON reader, even one that parses numbers as
#: doubles, keeps the seeds recorded in configs and files exact.
JSON_SAFE_SEED_BITS = 53

#: Values per chunk handed to writers: 4 Mi values (16 MiB of float32) keeps
#: memory bounded while amortising per-call overhead.
DEFAULT_CHUNK = 1 << 22


@dataclass(frozen=True)
class Draw:
    """What a stream needs to know to produce numbers.

    ``multiplier`` is the pre-truncation stddev ``s`` for ``truncated_normal``
    (values lie in [offset - 2s, offset + 2s]), the stddev for
    ``untruncated_normal`` and the half-width ``limit`` for ``uniform``
    (values lie in [offset - limit, offset + limit)).

    ``offset`` is added to every value: a normal's mean, a uniform range's
    centre. ``interval``, for ``uniform`` only, is the exact ``(low, high)``
    an initializer states (Keras's ``minval``/``maxval``), when
    ``offset -/+ multiplier`` would not reproduce those doubles. An offset of
    0 and no interval leave the zero-centred values exactly as they were.
    """

    distribution: str
    multiplier: float
    seed: int
    dtype: np.dtype
    offset: float = 0.0
    interval: tuple[float, float] | None = None

    def value_range(self) -> tuple[float, float] | None:
        """The interval the values lie in, as doubles: ``(offset - 2s, offset + 2s)``
        (closed) for truncated_normal, ``interval`` or ``(offset - limit, offset +
        limit)`` (half-open) for uniform, None for untruncated_normal. Each end is
        one double operation, in the order Keras computes its bounds."""
        if self.distribution == "truncated_normal":
            return self.offset - 2 * self.multiplier, self.offset + 2 * self.multiplier
        if self.distribution == "uniform":
            if self.interval is not None:
                return self.interval
            return self.offset - self.multiplier, self.offset + self.multiplier
        return None


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: CPUs left to the writer when sampling into a file or pipe: the kernel's copy
#: into the page cache needs a core too. Measured on 2 CPUs, 1 sampling thread
#: plus the writer streamed 1 GiB faster than 2 sampling threads plus the
#: writer (about 590 vs 450 M values/s). The bytes never depend on it.
WRITER_CPUS = 1


def default_threads(writing: bool = False) -> int:
    """Sampling threads when none are given: every usable CPU for arrays in
    memory; ``WRITER_CPUS`` fewer (at least 1) when the values go to a file."""
    cpus = usable_cpus()
    return max(1, cpus - WRITER_CPUS) if writing else cpus


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

    def recycled_chunks(
        self,
        draw: Draw,
        start: int,
        stop: int,
        chunk_size: int = DEFAULT_CHUNK,
        threads: int | None = None,
        buffers: int = 4,
    ) -> Iterator[np.ndarray]:
        """Like ``chunks``, but the chunks are views of ``buffers`` arrays used in
        turn: chunk k is overwritten when chunk k + ``buffers`` is made.

        For consumers that hold fewer than ``buffers`` chunks at once (e.g.
        ``formats.write_chunks`` with ``prefetch = buffers - 2``): a long job
        then touches fresh memory only for its first ``buffers`` chunks instead
        of page-faulting every chunk in. Streams without random access fall
        back to ``chunks``.
        """
        if not self.random_access or buffers < 1:
            yield from self.chunks(draw, start, stop, chunk_size, threads)
            return
        ring: list[np.ndarray] = []
        for index, offset in enumerate(range(start, stop, chunk_size)):
            if len(ring) < buffers:
                ring.append(np.empty(min(chunk_size, stop - start), dtype=draw.dtype))
            view = ring[index % buffers][: min(chunk_size, stop - offset)]
            self.fill(view, offset, draw, threads, job_size=stop - start)
            yield view

    def fill(
        self,
        out: np.ndarray,
        start: int,
        draw: Draw,
        threads: int | None = None,
        job_size: int | None = None,
    ) -> None:
        """Fill the 1-D array ``out`` with flat indices [start, start + out.size).

        ``job_size`` is the size of the whole job ``out`` belongs to, a hint
        (the ``vsgen`` stream warns once when a large job runs without its C
        kernels); the bytes never depend on it.
        """
        position = 0
        for chunk in self.chunks(draw, start, start + out.size, threads=threads):
            out[position : position + chunk.size] = chunk
            position += chunk.size

    def fill_block(
        self,
        out: np.ndarray,
        origin: Sequence[int],
        full_shape: Sequence[int],
        draw: Draw,
        threads: int | None = None,
    ) -> None:
        """Fill the n-d array ``out`` with the block of a ``full_shape`` tensor whose
        first element is at ``origin``: ``out == full[origin[0]:origin[0] +
        out.shape[0], ...]`` element for element, for any block (rows, columns,
        tiles). A sequential stream redraws everything before each run it fills."""
        from vsgen.streams._blocks import fill_block

        fill_block(
            lambda flat, start: self.fill(flat, start, draw, threads), out, origin, full_shape
        )

    @property
    def seed_bits(self) -> int:
        """Seeds vsgen draws or derives for this stream lie in [0, 2**seed_bits):
        below ``max_seed`` and below 2**:data:`JSON_SAFE_SEED_BITS`."""
        return min(self.max_seed.bit_length() - 1, JSON_SAFE_SEED_BITS)

    def draw_seed(self) -> int:
        """A fresh seed from the operating system's randomness, below 2**seed_bits.

        ``os.urandom``, as ``secrets.randbelow`` uses; a power-of-two bound makes
        the modulo exact, and not importing ``secrets`` saves start-up.
        """
        return int.from_bytes(os.urandom(8), "little") % (1 << self.seed_bits)

    @property
    def label(self) -> str:
        """``name/version``, as recorded in file metadata."""
        return f"{self.name}/{self.version}"
