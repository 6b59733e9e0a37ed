"""vsgen: variance-scaling (Glorot/He/LeCun) weights, fast and bit-reproducible.

Public API only; see the submodules for the implementation.
"""

from vsgen._version import __version__
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
