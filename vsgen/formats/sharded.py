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

Written block by block (:mod:`vsgen.blockwrite`; on a cluster one task per shard),
never streamed. Read back through the index: each shard's header is parsed once
(:mod:`vsgen.formats.safetensors`), the tensors listed in the index's order and the
shards' provenance merged.

Files of the caller's may go beside the shards (``WriteRequest.extra_files``: a
Hugging Face model's ``config.json`` and ``generation_config.json``), written into
the temporary directory with the shards and committed with them. The index records
each one's size and SHA-256 in its metadata (``{"vsgen": {"files": {name: {"size",
"sha256"}}}}``). ``--force`` replaces only a directory holding an index, its shards
and such files unchanged (:func:`extra_files_are_vsgens`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from vsgen._limits import MAX_TENSORS, read_capped
from vsgen.dtypes import TensorInfo
from vsgen.formats.atomic import TemporaryDirectory
from vsgen.formats.base import (
    FilePlace,
    Place,
    StoredTensor,
    StoreFormat,
    StoreLayout,
    TensorFile,
    UnreadableFile,
    WriteRequest,
    sized_file,
)
from vsgen.formats.safetensors import (
    SafetensorsFormat,
    check_name,
    read_safetensors,
    safetensors_header,
    safetensors_layout,
)

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
    tensors: Sequence[TensorInfo],
    shards: Sequence[Sequence[int]],
    extra_files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """The index: ``total_size``, the record of the extra files, and the weight map."""
    weight_map = {}
    for number, members in enumerate(shards, start=1):
        for index in members:
            weight_map[tensors[index].name] = shard_name(number, len(shards))
    metadata: dict[str, Any] = {"total_size": sum(info.nbytes for info in tensors)}
    if extra_files:
        metadata["vsgen"] = {
            "files": {name: _file_record(data) for name, data in extra_files.items()}
        }
    return {"metadata": metadata, "weight_map": weight_map}


def _file_record(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


#: The largest extra file :func:`extra_files_are_vsgens` reads to hash it.
_MAX_EXTRA_FILE_BYTES = 16 << 20


def check_extra_file_names(extra_files: Mapping[str, bytes]) -> None:
    """Extra files are plain names in the directory, other than the index and the
    shards' names, holding bytes (ValueError otherwise)."""
    for name, data in extra_files.items():
        if (
            not isinstance(name, str)
            or os.path.basename(name) != name
            or name in ("", ".", "..", INDEX_NAME)
            or name.startswith(".")
            or _SHARD_PATTERN.match(name)
        ):
            raise ValueError(
                "Argument `extra_files` must name plain files beside the shards, not the "
                f"index or a shard. Received: {name!r}"
            )
        if not isinstance(data, bytes) or len(data) > _MAX_EXTRA_FILE_BYTES:
            raise ValueError(
                f"Argument `extra_files`: {name!r} must be bytes of at most "
                f"{_MAX_EXTRA_FILE_BYTES >> 20} MiB"
            )


def extra_files_are_vsgens(directory: str, names: Collection[str]) -> bool:
    """Whether every file of ``names`` (beside the index and the shards in
    ``directory``) is one vsgen wrote there: the index's ``metadata.vsgen.files``
    records it, and its size and SHA-256 are still the recorded ones. A file
    changed or added since is not vsgen's, and ``--force`` keeps the directory."""
    if not names:
        return True
    try:
        with open(os.path.join(directory, INDEX_NAME), "rb") as handle:
            document = json.loads(read_capped(handle, _MAX_INDEX_BYTES, INDEX_NAME))
        recorded = document["metadata"]["vsgen"]["files"]
        assert isinstance(recorded, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return False
    for name in names:
        record = recorded.get(name)
        if not isinstance(record, dict) or not isinstance(record.get("size"), int):
            return False
        path = os.path.join(directory, name)
        if record["size"] > _MAX_EXTRA_FILE_BYTES or os.path.getsize(path) != record["size"]:
            return False
        with open(path, "rb") as handle:
            data = handle.read(_MAX_EXTRA_FILE_BYTES + 1)
        if _file_record(data) != record:
            return False
    return True


def shard_metadata(document: Mapping[str, Any] | None, names: Sequence[str]) -> dict[str, str]:
    """``__metadata__`` of one shard: ``format: pt`` plus its tensors' provenance."""
    metadata = {"format": "pt"}
    if document:
        own = dict(document)
        tensors = document.get("tensors", {})
        own["tensors"] = {name: tensors[name] for name in names if name in tensors}
        metadata["vsgen"] = json.dumps(own, sort_keys=True, separators=(",", ":"))
    return metadata


class ShardedLayout(StoreLayout):
    """The tensors in shards (the indices of each shard's tensors), and the index."""

    def __init__(self, request: WriteRequest) -> None:
        super().__init__(request)
        size = request.max_shard_size
        members = split_shards(request.tensors, DEFAULT_MAX_SHARD_SIZE if size is None else size)
        self.shards = tuple(tuple(indices) for indices in members)
        self.extra_files = dict(request.extra_files or {})

    @property
    def needed(self) -> int:
        return super().needed + sum(map(len, self.extra_files.values()))

    def create(self, temporary: TemporaryDirectory, presize: bool) -> list[Place]:
        """Every shard with its header (sized to its tensors), the extra files, and the
        index that records them."""
        document = self.document()
        places: list[Place | None] = [None] * len(self.tensors)
        for number, members in enumerate(self.shards, start=1):
            infos = [self.tensors[i] for i in members]
            relative = safetensors_layout(infos)
            own = shard_metadata(document, [info.name for info in infos])
            prefix = safetensors_header(infos, relative, own)
            file_path = os.path.join(temporary.path, shard_name(number, len(self.shards)))
            size = len(prefix) + sum(info.nbytes for info in infos)
            sized_file(file_path, prefix, size if presize else 0)
            for index, offset in zip(members, relative, strict=True):
                info = self.tensors[index]
                places[index] = FilePlace(file_path, len(prefix) + offset, info.shape, info.dtype)
        for name, data in self.extra_files.items():
            sized_file(os.path.join(temporary.path, name), data, 0)
        index_path = os.path.join(temporary.path, INDEX_NAME)
        document = index_document(self.tensors, self.shards, self.extra_files)
        text = json.dumps(document, indent=2) + "\n"
        sized_file(index_path, text.encode("utf-8"), 0)
        return [place for place in places if place is not None]


# --- reading (untrusted) ---------------------------------------------------------------


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


def _merged(directory: str, shards: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The provenance of every shard (by file name, in the index's order) merged into
    one ``vsgen`` document (``{}`` if none has any)."""
    merged: dict[str, Any] | None = None
    for file_name, metadata in shards.items():
        text = metadata.get("vsgen")
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


# --- the format ------------------------------------------------------------------------


class ShardedFormat(StoreFormat):
    """Sharded safetensors: the safetensors rules for names and dtypes, in shards."""

    label = SafetensorsFormat.label
    keeps_metadata = True
    holds_bfloat16 = SafetensorsFormat.holds_bfloat16
    holds_complex = SafetensorsFormat.holds_complex
    task_per_file = True
    commit_syncs = (".safetensors", ".json")
    holds_extra_files = True
    store_words = "sharded safetensors, their index and the files it records"

    def check_name(self, name: str) -> None:
        check_name(name)

    def check_extra_files(self, extra_files: Mapping[str, bytes]) -> None:
        check_extra_file_names(extra_files)

    def plan(self, request: WriteRequest) -> ShardedLayout:
        return ShardedLayout(request)

    def is_replaceable(self, path: str) -> bool:
        """True for a directory holding only an index, shards and the extra files the
        index records unchanged (:func:`extra_files_are_vsgens`): what ``--force``
        replaces."""
        if os.path.islink(path) or not os.path.isdir(path):
            return False
        entries = os.listdir(path)
        if INDEX_NAME not in entries:
            return False
        extra = []
        for entry in entries:
            full = os.path.join(path, entry)
            if os.path.islink(full) or not os.path.isfile(full):
                return False
            if entry != INDEX_NAME and not _SHARD_PATTERN.match(entry):
                extra.append(entry)
        return extra_files_are_vsgens(path, extra)

    def holds(self, directory: str) -> bool:
        """A directory with a ``model.safetensors.index.json``."""
        return os.path.isdir(directory) and os.path.isfile(os.path.join(directory, INDEX_NAME))

    def open(self, path: str) -> TensorFile:
        """The tensors in the index's order, each shard's header parsed once, the shards'
        provenance merged into one ``vsgen`` document."""
        try:
            weight_map = read_weight_map(path)
        except (ValueError, OSError) as error:
            raise UnreadableFile(str(error)) from None
        if len(weight_map) > MAX_TENSORS:
            raise UnreadableFile(f"{path}: the index lists more than {MAX_TENSORS} tensors")
        shards: dict[str, dict[str, StoredTensor]] = {}
        metadata: dict[str, dict[str, str]] = {}
        tensors = []
        for name, file_name in weight_map.items():
            if file_name not in shards:
                found, metadata[file_name] = read_safetensors(os.path.join(path, file_name))
                shards[file_name] = {tensor.name: tensor for tensor in found}
            if name not in shards[file_name]:
                raise UnreadableFile(
                    f"{path}: the index puts {name!r} in {file_name}, which lacks it"
                )
            tensors.append(shards[file_name][name])
        return TensorFile(path, self.name, tuple(tensors), _merged(path, metadata))
