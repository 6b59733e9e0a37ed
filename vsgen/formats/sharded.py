"""Sharded safetensors in the Hugging Face layout: a directory of shards and an index.

::

    DIR/model-00001-of-00003.safetensors
    DIR/model-00002-of-00003.safetensors
    DIR/model-00003-of-00003.safetensors
    DIR/model.safetensors.index.json   {"metadata": {"total_size": N}, "weight_map": {name: file}}

Tensors go to shards in order: a shard is closed when the next tensor would take it
past ``max_shard_size`` bytes, and a tensor larger than that gets a shard of its own
(the rule of ``huggingface_hub``'s splitter, so transformers, accelerate and vLLM
load the result). ``total_size`` is the bytes of all tensors. Every shard is an
ordinary safetensors file whose ``__metadata__`` holds ``format: pt`` (transformers
refuses shards without it) and the provenance of its own tensors. The index is
written even for a single shard, so the layout never changes with the size.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vsgen._limits import read_capped
from vsgen.dtypes import TensorInfo

INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = 5_000_000_000
_SHARD_PATTERN = re.compile(r"^model-(\d{5,})-of-(\d{5,})\.safetensors$")
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
#: The index of a hostile directory is read only up to this size.
_MAX_INDEX_BYTES = 64 << 20


def parse_size(text: str | int) -> int:
    """Bytes from ``5GB`` (10**9), ``500MiB`` (2**20), ``1_000_000`` or an int.

    Raises:
        ValueError: not a positive size with one of the units B, KB, MB, GB, TB,
            KiB, MiB, GiB, TiB (any case).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        found = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        unit = found.group(2).upper() if found else None
        if found is None or unit not in _UNITS:
            raise ValueError(
                "Argument `max_shard_size` must be a size such as 5GB, 500MB or 2GiB. "
                f"Received: max_shard_size={text!r}"
            )
        value = float(found.group(1).replace("_", "")) * _UNITS[unit]
    if value < 1:
        raise ValueError(
            f"Argument `max_shard_size` must be at least 1 byte. Received: max_shard_size={text!r}"
        )
    return int(value)


def split_shards(tensors: Sequence[TensorInfo], max_shard_size: int) -> list[list[int]]:
    """Indices of the tensors of each shard, in order (see the module docstring)."""
    shards: list[list[int]] = []
    current: list[int] = []
    current_size = 0
    for index, info in enumerate(tensors):
        if info.nbytes > max_shard_size:
            shards.append([index])
            continue
        if current and current_size + info.nbytes > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(index)
        current_size += info.nbytes
    if current:
        shards.append(current)
    return shards


def shard_name(number: int, count: int) -> str:
    """``model-0000K-of-0000N.safetensors`` for shard K (1-based) of N."""
    return f"model-{number:05d}-of-{count:05d}.safetensors"


def index_document(
    tensors: Sequence[TensorInfo], shards: Sequence[Sequence[int]]
) -> dict[str, Any]:
    weight_map = {}
    for number, members in enumerate(shards, start=1):
        for index in members:
            weight_map[tensors[index].name] = shard_name(number, len(shards))
    return {
        "metadata": {"total_size": sum(info.nbytes for info in tensors)},
        "weight_map": weight_map,
    }


def shard_metadata(document: Mapping[str, Any] | None, names: Sequence[str]) -> dict[str, str]:
    """``__metadata__`` of one shard: ``format: pt`` plus its tensors' provenance."""
    metadata = {"format": "pt"}
    if document:
        own = dict(document)
        tensors = document.get("tensors", {})
        own["tensors"] = {name: tensors[name] for name in names if name in tensors}
        metadata["vsgen"] = json.dumps(own, sort_keys=True, separators=(",", ":"))
    return metadata


def is_replaceable(path: str) -> bool:
    """True for a directory holding only an index and shards: what ``--force`` replaces."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    entries = os.listdir(path)
    if INDEX_NAME not in entries:
        return False
    for entry in entries:
        full = os.path.join(path, entry)
        if os.path.islink(full) or not os.path.isfile(full):
            return False
        if entry != INDEX_NAME and not _SHARD_PATTERN.match(entry):
            return False
    return True


# --- reading (untrusted) ---------------------------------------------------------------


def is_sharded(path: str) -> bool:
    """A directory with a ``model.safetensors.index.json``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, INDEX_NAME))


def read_weight_map(directory: str) -> dict[str, str]:
    """``weight_map`` of the index: tensor name -> shard file (a plain name in DIR)."""
    path = os.path.join(directory, INDEX_NAME)
    with open(path, "rb") as handle:
        text = read_capped(handle, _MAX_INDEX_BYTES, f"{path}: the index")
    try:
        document = json.loads(text.decode("utf-8"))
        weight_map = document["weight_map"]
        assert isinstance(weight_map, dict)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AssertionError):
        raise ValueError(f"{path}: not a safetensors index (needs a weight_map object)") from None
    for name, file_name in weight_map.items():
        if (
            not isinstance(file_name, str)
            or os.path.basename(file_name) != file_name
            or file_name in ("", ".", "..")
        ):
            raise ValueError(
                f"{path}: tensor {name!r} maps to {file_name!r}, not a file in {directory}"
            )
    return weight_map


def read_metadata(directory: str) -> dict[str, str]:
    """The provenance of every shard merged into one ``vsgen`` document (``{}`` if none)."""
    from vsgen.formats.readers import read_metadata as read_file_metadata

    merged: dict[str, Any] | None = None
    for file_name in dict.fromkeys(read_weight_map(directory).values()):
        text = read_file_metadata(os.path.join(directory, file_name)).get("vsgen")
        if text is None:
            continue
        try:
            document = json.loads(text)
            tensors = document["tensors"]
            assert isinstance(tensors, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise ValueError(f"{directory}/{file_name}: malformed vsgen provenance") from None
        if merged is None:
            merged = {**document, "tensors": {}}
        merged["tensors"].update(tensors)
    if merged is None:
        return {}
    return {"vsgen": json.dumps(merged, sort_keys=True, separators=(",", ":"))}
