"""Provenance: what a file records about how its tensors were made.

Every ``.h5`` and ``.safetensors`` file vsgen writes carries one metadata
entry, key ``"vsgen"``, whose value is a JSON document::

    {"format": 1, "vsgen_version": "0.1.0",
     "tensors": {"weight": {"config": {...incl. seed...}, "stream": "vsgen/1",
                            "layout": "keras", "fan_in": 512, "fan_out": 256,
                            "n": 512.0, "stddev": 0.0625, "dtype": "float32",
                            "shape": [512, 256], "full_shape": [512, 256],
                            "rows": null, "fan_shape": null, "kind": "variance_scaling"}}}

A tensor made by a fixed-parameter initializer has ``kind`` ``"random_normal"``,
``"truncated_normal"`` or ``"random_uniform"``, a config naming it
(``{"preset": "random_normal", "mean": 0.0, "stddev": 0.02, "seed": ...}``),
no fans (``fan_in``, ``fan_out`` and ``n`` are null) and its ``mean`` beside
its ``stddev``. A constant tensor (``kind: "constant"``, whole models only)
records its ``value`` instead of a config. A tensor record is enough to regenerate the same
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
from vsgen.initializer import RandomInitializer, SamplePlan, from_config

METADATA_KEY = "vsgen"
METADATA_FORMAT = 1


#: The ``kind`` of records of sampled tensors (``RandomInitializer.kind``).
SAMPLED_KINDS = ("variance_scaling", "random_normal", "truncated_normal", "random_uniform")


def is_sampled(record: Mapping[str, Any]) -> bool:
    """True for the record of a sampled tensor (a record without ``kind`` is one:
    vsgen 0.1 wrote none)."""
    return record.get("kind", "variance_scaling") in SAMPLED_KINDS


def tensor_record(
    initializer: RandomInitializer,
    plan: SamplePlan,
    fan_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The provenance record of one sampled tensor (plain JSON types)."""
    config = initializer.get_config()
    config["seed"] = plan.draw.seed
    config["stream"] = initializer.stream
    record: dict[str, Any] = {
        "kind": initializer.kind,
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
    if not initializer.uses_fans:
        record["mean"] = plan.scaling.mean
    return record


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
    """The str -> str metadata to store once per file holding ``records`` by tensor name."""
    document = {
        "format": METADATA_FORMAT,
        "vsgen_version": __version__,
        "tensors": {name: dict(record) for name, record in records.items()},
    }
    return {METADATA_KEY: json.dumps(document, sort_keys=True, separators=(",", ":"))}


def tensor_metadata(records: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Per tensor, the metadata of a document recording that tensor alone.

    Formats that keep attributes per tensor (HDF5 datasets) store this, so
    a file's size grows linearly with its tensors: the whole document is
    stored once, at file level, and each dataset carries only its own record
    (in the same document form, so a dataset copied to another file still
    says how it was made).
    """
    return {name: file_metadata({name: record}) for name, record in records.items()}


def parse_metadata(
    metadata: Mapping[str, str], source: str = "the file"
) -> dict[str, dict[str, Any]]:
    """Tensor records by name from a file's metadata; ValueError if it has none.

    The document is parsed under :mod:`vsgen._limits`' caps (it comes
    from a file that may be hostile); ``source`` names the file in errors.
    Accepts the file-level document of every vsgen version (vsgen 0.1 also
    copied it onto every HDF5 dataset; that copy is not read).
    """
    from vsgen._limits import MAX_METADATA_BYTES, loads_json

    text = metadata.get(METADATA_KEY)
    if text is None:
        raise ValueError(f"{source} carries no vsgen provenance (it was not written by vsgen)")
    if not isinstance(text, str) or len(text) > MAX_METADATA_BYTES:
        raise ValueError(f"{source}: the vsgen provenance is not a string of plausible size")
    try:
        document = loads_json(text, "document")
    except ValueError as error:
        raise ValueError(f"{source}: the vsgen provenance is malformed: {error}") from None
    tensors = document.get("tensors") if isinstance(document, dict) else None
    if not isinstance(tensors, dict):
        raise ValueError(f"{source}: the vsgen provenance is malformed: field 'tensors' is missing")
    for name, record in tensors.items():
        if not isinstance(record, dict):
            raise ValueError(
                f"{source}: the vsgen provenance is malformed: the record of tensor "
                f"{name[:200]!r} is not an object"
            )
    return tensors


def recorded_initializer(record: Mapping[str, Any]) -> RandomInitializer:
    """The initializer a sampled tensor's record describes, its seed included.

    Raises:
        KeyError: the record has no ``config``.
        ValueError, TypeError: the config is not a valid initializer config.
    """
    config = record["config"]
    if not isinstance(config, Mapping):
        raise ValueError("field 'config' is not an object")
    return from_config(config)


def recorded_fan_shape(record: Mapping[str, Any]) -> Shape:
    """The shape the record's fans were computed from: ``fan_shape`` if one was
    given, else the full tensor's shape."""
    key = next((k for k in ("fan_shape", "full_shape", "shape") if record.get(k)), "shape")
    return record_shape(record, key)


@dataclass(frozen=True)
class Replay:
    """What a sampled tensor's record says to sample the same bytes again:
    ``initializer.plan(full_shape, dtype, rows=rows, fan_shape=fan_shape)``."""

    initializer: RandomInitializer
    full_shape: Shape
    fan_shape: Shape | None
    rows: tuple[int, int] | None
    dtype: str | None


def record_shape(record: Mapping[str, Any], key: str) -> Shape:
    """Field ``key`` of a record as a shape.

    Raises:
        KeyError: the field is missing.
        ValueError: it is not a list of non-negative integers.
    """
    value = record[key]
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise ValueError(f"field {key!r} is not a list of non-negative integers")
    return normalize_shape(tuple(value))


def replay(record: Mapping[str, Any]) -> Replay:
    """Read a sampled tensor's record back into the arguments that made it.

    Every field is checked for its type (records come from files that may
    be hostile), so a malformed one raises naming the field.

    Raises:
        KeyError, TypeError, ValueError: a malformed record.
    """
    config = record["config"]
    if not isinstance(config, Mapping):
        raise ValueError("field 'config' is not an object")
    initializer = recorded_initializer(record)
    full_shape = record_shape(record, "full_shape")
    fan_shape = record_shape(record, "fan_shape") if record.get("fan_shape") else None
    rows = None
    if record.get("rows"):
        bounds = record["rows"]
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bounds)
        ):
            raise ValueError("field 'rows' is not [start, stop]")
        rows = (bounds[0], bounds[1])
    dtype = record.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise ValueError("field 'dtype' is not a string")
    return Replay(initializer, full_shape, fan_shape, rows, dtype)
