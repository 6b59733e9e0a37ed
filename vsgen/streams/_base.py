"""The interface every random stream implements: ``Draw`` in, numbers out."""

from __future__ import annotations

import os
import secrets
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
        """A fresh seed from the operating system's randomness, below 2**seed_bits."""
        return secrets.randbelow(2**self.seed_bits)

    @property
    def label(self) -> str:
        """``name/version``, as recorded in file metadata."""
        return f"{self.name}/{self.version}"
