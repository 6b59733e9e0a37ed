"""vsgen: variance-scaling (Glorot/He/LeCun) weights, fast and bit-reproducible.

Public API only; see the submodules for the implementation. The names are
imported on first use (PEP 562), so that ``vsgen --help`` and ``--version``
start without importing NumPy; ``from vsgen import HeNormal`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vsgen._version import __version__

if TYPE_CHECKING:
    from vsgen.fans import compute_fans, parse_shape
    from vsgen.initializer import (
        GlorotNormal,
        GlorotUniform,
        HeNormal,
        HeUniform,
        LecunNormal,
        LecunUniform,
        SamplePlan,
        Scaling,
        VarianceScaling,
        deserialize,
        get_preset,
    )
    from vsgen.inplace import fill_

#: Public name -> the module that defines it.
_EXPORTS = {
    "compute_fans": "vsgen.fans",
    "parse_shape": "vsgen.fans",
    "GlorotNormal": "vsgen.initializer",
    "GlorotUniform": "vsgen.initializer",
    "HeNormal": "vsgen.initializer",
    "HeUniform": "vsgen.initializer",
    "LecunNormal": "vsgen.initializer",
    "LecunUniform": "vsgen.initializer",
    "SamplePlan": "vsgen.initializer",
    "Scaling": "vsgen.initializer",
    "VarianceScaling": "vsgen.initializer",
    "deserialize": "vsgen.initializer",
    "get_preset": "vsgen.initializer",
    "fill_": "vsgen.inplace",
}

__all__ = [
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "SamplePlan",
    "Scaling",
    "VarianceScaling",
    "__version__",
    "compute_fans",
    "deserialize",
    "fill_",
    "get_preset",
    "parse_shape",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vsgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
