"""The streams by name: ``STREAMS``, ``DEFAULT_STREAM`` and ``get_stream``."""

from __future__ import annotations

from vsgen.names import spelling
from vsgen.streams._base import Stream
from vsgen.streams.counter import VsgenStream
from vsgen.streams.keras import KerasStream

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
