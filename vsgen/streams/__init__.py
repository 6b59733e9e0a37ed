"""Random streams: deterministic maps from (seed, distribution, multiplier,
dtype, flat index) to numbers. No files, no printing.

Two streams exist (README, "Random streams"):

``keras`` (version 1)
    Bit-exact Keras 3 numpy-backend reproduction; see ``vsgen.streams.keras``.
    Sequential by nature: its purpose is verifiable parity, not speed.

``vsgen`` (version 1, the default)
    Counter-based, parallel and random-access; see ``vsgen.streams.counter`` and
    ``docs/stream-v1.md``. Bytes depend only on (seed, options, index):
    never on thread count, chunking, output format or CPU.
"""

from __future__ import annotations

from vsgen.names import spelling
from vsgen.streams._base import (
    DEFAULT_CHUNK,
    DISTRIBUTIONS,
    JSON_SAFE_SEED_BITS,
    WRITER_CPUS,
    Draw,
    Stream,
    default_threads,
    usable_cpus,
)
from vsgen.streams.counter import VsgenStream
from vsgen.streams.keras import KerasStream

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_STREAM",
    "DISTRIBUTIONS",
    "JSON_SAFE_SEED_BITS",
    "STREAMS",
    "Draw",
    "KerasStream",
    "Stream",
    "VsgenStream",
    "WRITER_CPUS",
    "default_threads",
    "get_stream",
    "usable_cpus",
]

STREAMS: dict[str, Stream] = {"keras": KerasStream(), "vsgen": VsgenStream()}
DEFAULT_STREAM = "vsgen"


def get_stream(name: str) -> Stream:
    """The stream called ``name`` (``"vsgen"`` or ``"keras"``; ``"vsgen/1"`` too)."""
    base, _, version = spelling(str(name)).partition("/")
    stream = STREAMS.get(base)
    if stream is None or (version and version != str(stream.version)):
        raise ValueError(
            f"Argument `stream` must be one of {', '.join(STREAMS)}. Received: stream={name!r}"
        )
    return stream
