"""The interface every random stream implements: ``Draw`` in, numbers out."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

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
