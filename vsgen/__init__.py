"""vsgen: variance-scaling (Glorot/He/LeCun) and other random weights, fast and bit-reproducible.

Public API only; see the submodules for the implementation. The names are
imported on first use (PEP 562), so that ``import vsgen`` is instant and the
command line can install its Ctrl-C handling before NumPy is imported.
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
        KaimingNormal,
        KaimingUniform,
        LecunNormal,
        LecunUniform,
        RandomInitializer,
        RandomNormal,
        RandomUniform,
        SamplePlan,
        Scaling,
        TruncatedNormal,
        VarianceScaling,
        XavierNormal,
        XavierUniform,
        calculate_gain,
        deserialize,
        get_preset,
    )
    from vsgen.inplace import fill_
    from vsgen.saving import save, save_model

#: Public name -> the module that defines it.
_HOMES = {
    "compute_fans": "vsgen.fans",
    "parse_shape": "vsgen.fans",
    **{
        name: "vsgen.initializer"
        for name in (
            "GlorotNormal",
            "GlorotUniform",
            "HeNormal",
            "HeUniform",
            "KaimingNormal",
            "KaimingUniform",
            "LecunNormal",
            "LecunUniform",
            "RandomInitializer",
            "RandomNormal",
            "RandomUniform",
            "SamplePlan",
            "Scaling",
            "TruncatedNormal",
            "VarianceScaling",
            "XavierNormal",
            "XavierUniform",
            "calculate_gain",
            "deserialize",
            "get_preset",
        )
    },
    "fill_": "vsgen.inplace",
    "save": "vsgen.saving",
    "save_model": "vsgen.saving",
}

__all__ = sorted([*_HOMES, "__version__"])


#: Submodules reachable as attributes (``vsgen.formats.open_output``), imported on use.
_SUBMODULES = (
    "blockwrite",
    "conventions",
    "dtypes",
    "fans",
    "formats",
    "initializer",
    "inplace",
    "job",
    "modelspec",
    "names",
    "provenance",
    "saving",
    "streams",
    "verify",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"vsgen.{name}")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vsgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
