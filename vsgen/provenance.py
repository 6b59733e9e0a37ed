"""Provenance: what a file records about how its tensors were made.

Every ``.h5`` and ``.safetensors`` file vsgen writes carries one metadata
entry, key ``"vsgen"``, whose value is a JSON document::

    {"format": 1, "vsgen_version": "0.1.0",
     "tensors": {"weight": {"config": {...incl. seed...}, "stream": "vsgen/1",
                            "layout": "keras", "fan_in": 512, "fan_out": 256,
                            "n": 512.0, "stddev": 0.0625, "dtype": "float32",
                            "shape": [512, 256], "full_shape": [512, 256],
                            "rows": null, "fan_shape": null, "kind": "variance_scaling"}}}

A tensor record is enough to regenerate the same bytes (``vsgen sample
--config-from FILE``). Pure functions: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vsgen._version import __version__
from vsgen.dtypes import dtype_name
from vsgen.initializer import SamplePlan, VarianceScaling

METADATA_KEY = "vsgen"
METADATA_FORMAT = 1


def tensor_record(
    initializer: VarianceScaling,
    plan: SamplePlan,
    fan_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The provenance record of one sampled tensor (plain JSON types)."""
    config = initializer.get_config()
    config["seed"] = plan.draw.seed
    config["stream"] = initializer.stream
    return {
        "kind": "variance_scaling",
        "config": config,
        "stream": initializer.stream_label,
        "layout": initializer.layout,
        "fan_in": plan.scaling.fan_in,
        "fan_out": plan.scaling.fan_out,
        "n": plan.scaling.n,
        "stddev": plan.scaling.stddev,
        "dtype": dtype_name(plan.draw.dtype),
        "shape": list(plan.shape),
        "full_shape": list(plan.full_shape),
        "rows": list(plan.rows) if plan.rows is not None else None,
        "fan_shape": list(fan_shape) if fan_shape is not None else None,
    }


def file_metadata(records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The str -> str metadata to store in a file holding ``records`` by tensor name."""
    document = {
        "format": METADATA_FORMAT,
        "vsgen_version": __version__,
        "tensors": {name: dict(record) for name, record in records.items()},
    }
    return {METADATA_KEY: json.dumps(document, sort_keys=True, separators=(",", ":"))}


def parse_metadata(metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Tensor records by name from a file's metadata; ValueError if it has none."""
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise ValueError("the file carries no vsgen provenance (it was not written by vsgen)")
    try:
        document = json.loads(text)
        tensors = document["tensors"]
        if not isinstance(tensors, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError("the file's vsgen provenance is malformed") from None
    return tensors
