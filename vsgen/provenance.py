"""Provenance: what a file records about how its tensors were made.

Every ``.h5`` and ``.safetensors`` file vsgen writes carries one metadata
entry, key ``"vsgen"``, whose value is a JSON document::

    {"format": 1, "vsgen_version": "0.1.0",
     "tensors": {"weight": {"config": {...incl. seed...}, "stream": "vsgen/1",
                            "layout": "keras", "fan_in": 512, "fan_out": 256,
                            "n": 512.0, "stddev": 0.0625, "dtype": "float32",
                            "shape": [512, 256], "full_shape": [512, 256],
                            "rows": null, "fan_shape": null, "kind": "variance_scaling"}}}

A constant tensor (``kind: "constant"``, whole models only) records its
``value`` instead of a config. A tensor record is enough to regenerate the same
bytes (``vsgen sample --config-from FILE``, :func:`replay`).

This module is the one place that builds records (:func:`tensor_record`,
:func:`constant_record`, :func:`file_metadata`) and reads them back
(:func:`parse_metadata`, :func:`recorded_initializer`,
:func:`recorded_fan_shape`, :func:`replay`). Pure functions: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vsgen._version import __version__
from vsgen.dtypes import dtype_name
from vsgen.fans import Shape, normalize_shape
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


def constant_record(value: float, dtype: np.dtype, shape: Sequence[int]) -> dict[str, Any]:
    """The provenance record of a constant tensor (every value ``value``)."""
    return {
        "kind": "constant",
        "value": value,
        "dtype": dtype_name(dtype),
        "shape": list(shape),
        "full_shape": list(shape),
        "rows": None,
        "fan_shape": None,
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


def recorded_initializer(record: Mapping[str, Any]) -> VarianceScaling:
    """The initializer a variance-scaling record describes, its seed included.

    Raises:
        KeyError: the record has no ``config``.
        ValueError, TypeError: the config is not a valid initializer config.
    """
    return VarianceScaling.from_config(record["config"])


def recorded_fan_shape(record: Mapping[str, Any]) -> Shape:
    """The shape the record's fans were computed from: ``fan_shape`` if one was
    given, else the full tensor's shape."""
    fan_shape: Any = record.get("fan_shape") or record.get("full_shape") or record.get("shape")
    return normalize_shape(tuple(fan_shape))


@dataclass(frozen=True)
class Replay:
    """What a variance-scaling record says to sample the same bytes again:
    ``initializer.plan(full_shape, dtype, rows=rows, fan_shape=fan_shape)``."""

    initializer: VarianceScaling
    full_shape: Shape
    fan_shape: Shape | None
    rows: tuple[int, int] | None
    dtype: str | None


def replay(record: Mapping[str, Any]) -> Replay:
    """Read a variance-scaling record back into the arguments that made it.

    Raises:
        KeyError, IndexError, TypeError, ValueError: a malformed record.
    """
    initializer = recorded_initializer(record)
    full_shape = tuple(record["full_shape"])
    fan_shape = tuple(record["fan_shape"]) if record.get("fan_shape") else None
    rows = None
    if record.get("rows"):
        first, last = record["rows"]
        rows = (int(first), int(last))
    return Replay(initializer, full_shape, fan_shape, rows, record.get("dtype"))
