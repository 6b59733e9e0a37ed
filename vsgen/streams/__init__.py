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

The names are imported on first use (PEP 562), as in ``vsgen`` itself, so
that ``vsgen --version`` can ask ``_kernel_path`` which kernels run without
importing NumPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from vsgen.streams._dispatch import MissingKernelsWarning
    from vsgen.streams._registry import DEFAULT_STREAM, STREAMS, get_stream
    from vsgen.streams.counter import VsgenStream
    from vsgen.streams.keras import KerasStream

#: Public name -> the module that defines it.
_HOMES = {
    **{
        name: "vsgen.streams._base"
        for name in (
            "DEFAULT_CHUNK",
            "DISTRIBUTIONS",
            "JSON_SAFE_SEED_BITS",
            "WRITER_CPUS",
            "Draw",
            "Stream",
            "default_threads",
            "usable_cpus",
        )
    },
    "DEFAULT_STREAM": "vsgen.streams._registry",
    "STREAMS": "vsgen.streams._registry",
    "get_stream": "vsgen.streams._registry",
    "VsgenStream": "vsgen.streams.counter",
    "MissingKernelsWarning": "vsgen.streams._dispatch",
    "KerasStream": "vsgen.streams.keras",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vsgen.streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
