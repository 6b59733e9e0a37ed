"""Sharded safetensors in the Hugging Face layout: a directory of shards and an index.

::

    DIR/model-00001-of-00003.safetensors
    DIR/model-00002-of-00003.safetensors
    DIR/model-00003-of-00003.safetensors
    DIR/model.safetensors.index.json   {"metadata": {"total_size": N, "vsgen": RECORD},
                                        "weight_map": {name: file}}

Tensors go to shards in order: a shard is closed when the next tensor would take it
past ``max_shard_size`` bytes, and a tensor larger than that gets a shard of its own
(the rule of ``huggingface_hub``'s splitter, so transformers, accelerate and vLLM
load the result). ``total_size`` is the bytes of all tensors. Every shard is an
ordinary safetensors file whose ``__metadata__`` holds ``format: pt`` (transformers
refuses shards without it) and the provenance of its own tensors. The index is
written even for a single shard, so the layout never changes with the size.

``RECORD`` says what vsgen wrote in the directory, so that ``--force`` replaces
nothing else: ``{"format": 1, "files": {name: {"size": bytes, "sha256": hex}}}``,
every file but the index itself: the shards (size only) and any small companion
file written with them (``config.json``, ``generation_config.json``: size and
SHA-256 of the bytes). Loaders read only ``total_size`` of the metadata.

Written block by block (:mod:`vsgen.blockwrite`: tasks of about 64 MiB, so a large
shard is written by many workers), never streamed. Read back through the index
(every directory is untrusted): the index through the bounded JSON parser, no lies
(``total_size`` a non-negative integer equal to the bytes of the shards' tensors, a
tensor in one shard only and in the shard the index names, shard names plain file
names), every shard a regular file in the directory (never a symbolic link, FIFO or
device), each shard's header parsed once (:mod:`vsgen.formats.safetensors`), the
tensors listed in the index's order and the shards' provenance merged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from vsgen._limits import MAX_INDEX_BYTES, MAX_TENSORS, loads_json
from vsgen.dtypes import TensorInfo
from vsgen.formats.atomic import (
    NotOwned,
    TemporaryDirectory,
    describe_file_kind,
    read_entry,
    stop_if_cancelled,
)
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
#: Largest shard size accepted (bytes): a file offset must fit 63 bits.
MAX_SHARD_SIZE = 2**63 - 1
#: Companion files (``config.json``...) are small: each is hashed, and read whole
#: when ``--force`` checks it.
MAX_COMPANION_BYTES = 1 << 20
#: A size: digits (``_`` allowed), an optional fraction, a unit; bounded lengths,
#: so no text makes a huge number.
_SIZE = re.compile(r"\s*([0-9][0-9_]{0,40})(?:\.([0-9]{1,40}))?\s*([A-Za-z]*)\s*")
#: Version of the record vsgen keeps in the index's metadata.
RECORD_FORMAT = 1


def parse_size(text: str | int) -> int:
    """Bytes from ``5GB`` (10**9), ``500MiB`` (2**20), ``1_000_000`` or an int.

    Raises:
        ValueError: not a positive size below 2**63 bytes with one of the units B,
            KB, MB, GB, TB, KiB, MiB, GiB, TiB (any case).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        found = _SIZE.fullmatch(str(text))
        unit = found.group(3).upper() if found else None
        if found is None or unit not in _UNITS:
            raise ValueError(
                "Argument `max_shard_size` must be a size such as 5GB, 500MB or 2GiB. "
                f"Received: max_shard_size={str(text)[:80]!r}"
            )
        # Exact arithmetic: 0.5GB is 500,000,000 bytes, and no float overflows.
        whole, fraction = found.group(1).replace("_", ""), found.group(2) or ""
        value = int(whole + fraction) * _UNITS[unit] // 10 ** len(fraction)
    if not 1 <= value <= MAX_SHARD_SIZE:
        raise ValueError(
            "Argument `max_shard_size` must be at least 1 byte and below 2**63 bytes. "
            f"Received: max_shard_size={str(text)[:80]!r}"
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


def file_record(data: bytes | None = None, size: int | None = None) -> dict[str, Any]:
    """What the index records of a file vsgen wrote: its size, and the SHA-256 of a
    companion's bytes (``data``)."""
    if data is None:
        return {"size": size}
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def index_document(
    tensors: Sequence[TensorInfo],
    shards: Sequence[Sequence[int]],
    files: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The index: ``total_size``, the record of ``files`` (name -> :func:`file_record`;
    None: none) and the ``weight_map``."""
    weight_map = {}
    for number, members in enumerate(shards, start=1):
        for index in members:
            weight_map[tensors[index].name] = shard_name(number, len(shards))
    metadata: dict[str, Any] = {"total_size": sum(info.nbytes for info in tensors)}
    if files is not None:
        metadata["vsgen"] = {"format": RECORD_FORMAT, "files": dict(files)}
    return {"metadata": metadata, "weight_map": weight_map}


def shard_metadata(document: Mapping[str, Any] | None, names: Sequence[str]) -> dict[str, str]:
    """``__metadata__`` of one shard: ``format: pt`` plus its tensors' provenance."""
    metadata = {"format": "pt"}
    if document:
        own = dict(document)
        tensors = document.get("tensors", {})
        own["tensors"] = {name: tensors[name] for name in names if name in tensors}
        metadata["vsgen"] = json.dumps(own, sort_keys=True, separators=(",", ":"))
    return metadata


def check_companions(companions: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """Companion files to write beside the shards (``config.json``...): plain names,
    neither the index nor a ``.safetensors`` name, at most ``MAX_COMPANION_BYTES`` each.

    Raises:
        ValueError: naming the argument and the offending file.
    """
    checked: dict[str, bytes] = {}
    for name, data in (companions or {}).items():
        if (
            not isinstance(name, str)
            or not _plain_name(name)
            or name == INDEX_NAME
            or name.endswith(".safetensors")
            or not isinstance(data, bytes)
            or len(data) > MAX_COMPANION_BYTES
        ):
            raise ValueError(
                "Argument `companions` must map plain file names (not the index or a "
                f".safetensors name) to at most {MAX_COMPANION_BYTES} bytes. Received: "
                f"{str(name)[:80]!r}"
            )
        checked[name] = data
    return checked


class ShardedLayout(StoreLayout):
    """The tensors in shards (the indices of each shard's tensors), the companion
    files, and the index recording them all."""

    def __init__(self, request: WriteRequest) -> None:
        super().__init__(request)
        size = request.max_shard_size
        members = split_shards(request.tensors, DEFAULT_MAX_SHARD_SIZE if size is None else size)
        self.shards = tuple(tuple(indices) for indices in members)
        self.companions = check_companions(request.companions)

    @property
    def needed(self) -> int:
        return super().needed + sum(map(len, self.companions.values()))

    def files(self) -> list[ShardFile]:
        """Every shard: its name, header (with its tensors' provenance), size, and where
        each of its tensors starts in it (tensor index, byte offset)."""
        document = self.document()
        shard_files = []
        for number, members in enumerate(self.shards, start=1):
            infos = [self.tensors[i] for i in members]
            relative = safetensors_layout(infos)
            own = shard_metadata(document, [info.name for info in infos])
            prefix = safetensors_header(infos, relative, own)
            size = len(prefix) + sum(info.nbytes for info in infos)
            starts = tuple(
                (index, len(prefix) + offset)
                for index, offset in zip(members, relative, strict=True)
            )
            shard_files.append(
                ShardFile(shard_name(number, len(self.shards)), prefix, size, starts)
            )
        return shard_files

    def index_text(self) -> str:
        """The index (with the record of every shard and companion), as written."""
        files: dict[str, dict[str, Any]] = {
            shard.name: file_record(size=shard.size) for shard in self.files()
        }
        for name, data in self.companions.items():
            files[name] = file_record(data)
        return json.dumps(index_document(self.tensors, self.shards, files), indent=2) + "\n"

    def create(self, temporary: TemporaryDirectory, presize: bool) -> list[Place]:
        """Every shard with its header (sized to its tensors), the companions, and the index."""
        places: list[Place | None] = [None] * len(self.tensors)
        for shard in self.files():
            stop_if_cancelled()
            file_path = os.path.join(temporary.path, shard.name)
            sized_file(file_path, shard.prefix, shard.size if presize else 0, temporary.file_mode)
            for index, offset in shard.starts:
                info = self.tensors[index]
                places[index] = FilePlace(file_path, offset, info.shape, info.dtype)
        for name, data in self.companions.items():
            sized_file(os.path.join(temporary.path, name), data, 0, temporary.file_mode)
        index_path = os.path.join(temporary.path, INDEX_NAME)
        sized_file(index_path, self.index_text().encode("utf-8"), 0, temporary.file_mode)
        return [place for place in places if place is not None]


class ShardFile(NamedTuple):
    """One shard as :meth:`ShardedLayout.files` plans it."""

    name: str
    prefix: bytes
    size: int
    #: ``(tensor index, byte offset)`` of each tensor in the shard.
    starts: tuple[tuple[int, int], ...]


# --- reading (untrusted) ---------------------------------------------------------------


def _plain_name(name: str) -> bool:
    """A file name of the directory itself: no separator, NUL, ``.`` or ``..``."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and os.sep not in name
        and "\x00" not in name
    )


def _is_size(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_SHARD_SIZE


class ShardIndex(NamedTuple):
    """The index as :func:`read_index` checked it."""

    weight_map: dict[str, str]
    #: ``metadata.total_size`` (None: the index gives none).
    total_size: int | None
    #: vsgen's record: file name -> (size, SHA-256 or None); None: no record.
    files: dict[str, tuple[int, str | None]] | None


def read_index(directory: str, display: str | None = None) -> ShardIndex:
    """The index of the shard directory ``directory`` (``display`` names it in messages).

    A regular file (never a link, FIFO or device) of at most ``MAX_INDEX_BYTES``,
    parsed by the bounded JSON parser (duplicate keys refused); a ``weight_map`` of at
    most ``MAX_TENSORS`` names, each mapped to a plain file name; ``total_size``, if
    given, a non-negative integer; vsgen's record, if there is one, well formed.

    Raises:
        UnreadableFile: naming the index and what is wrong with it.
    """
    where = os.path.join(directory if display is None else display, INDEX_NAME)
    path = os.path.join(directory, INDEX_NAME)
    try:
        kind = os.lstat(path).st_mode
    except FileNotFoundError:
        raise UnreadableFile(f"{where}: missing") from None
    if not stat.S_ISREG(kind):
        raise UnreadableFile(
            f"{where} is {describe_file_kind(kind)}; vsgen reads the index only as a file"
        )
    data = read_entry(path, MAX_INDEX_BYTES + 1)
    if data is None:
        raise UnreadableFile(f"{where}: cannot be read as a regular file")
    return parse_index(data, where)


def parse_index(data: bytes, where: str) -> ShardIndex:
    """The index ``where`` read as at most ``MAX_INDEX_BYTES + 1`` bytes, checked as
    :func:`read_index` says (UnreadableFile naming it and what is wrong)."""
    if len(data) > MAX_INDEX_BYTES:
        raise UnreadableFile(f"{where} is larger than {MAX_INDEX_BYTES >> 20} MiB; refusing it")
    try:
        document = loads_json(data, where, max_items=8 * MAX_TENSORS)
    except ValueError as error:
        raise UnreadableFile(str(error)) from None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict):
        raise UnreadableFile(f"{where}: not a safetensors index (needs a weight_map object)")
    if len(weight_map) > MAX_TENSORS:
        raise UnreadableFile(f"{where}: the index lists more than {MAX_TENSORS:,} tensors")
    for name, file_name in weight_map.items():
        if not isinstance(file_name, str) or not _plain_name(file_name):
            raise UnreadableFile(
                f"{where}: tensor {name[:200]!r} maps to {str(file_name)[:200]!r}, not a file "
                "in the directory"
            )
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise UnreadableFile(f"{where}: metadata must be an object")
    total_size = metadata.get("total_size")
    if total_size is not None and not _is_size(total_size):
        raise UnreadableFile(
            f"{where}: metadata.total_size must be a non-negative integer below 2**63, "
            f"not {str(total_size)[:40]}"
        )
    files = None
    if "vsgen" in metadata:
        files = _record(where, metadata["vsgen"])
    return ShardIndex(weight_map, total_size, files)


def _record(where: str, record: object) -> dict[str, tuple[int, str | None]]:
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or len(files) > MAX_TENSORS + 1024:
        raise UnreadableFile(f"{where}: metadata.vsgen is not a record of files vsgen wrote")
    checked: dict[str, tuple[int, str | None]] = {}
    for name, entry in files.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if (
            not _plain_name(name)
            or name == INDEX_NAME
            or not _is_size(size)
            or not (digest is None or (isinstance(digest, str) and _is_sha256(digest)))
        ):
            raise UnreadableFile(f"{where}: metadata.vsgen: malformed entry {name[:200]!r}")
        checked[name] = (int(size), digest)  # type: ignore[arg-type]
    return checked


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _read_shard(directory: str, file_name: str, display: str) -> tuple[Any, dict[str, str]]:
    """One shard's tensors and metadata: a regular file in ``directory``, never a link."""
    path = os.path.join(directory, file_name)
    try:
        kind = os.lstat(path).st_mode
    except FileNotFoundError:
        raise UnreadableFile(f"{os.path.join(display, file_name)}: shard missing") from None
    if not stat.S_ISREG(kind):
        raise UnreadableFile(
            f"{os.path.join(display, file_name)}: the shard is {describe_file_kind(kind)}; "
            "vsgen reads shards only as regular files in the directory"
        )
    return read_safetensors(path, follow=False)


def _merged(
    directory: str,
    shards: Mapping[str, Mapping[str, str]],
    holds: Mapping[str, str],
) -> dict[str, str]:
    """The provenance of every shard (by file name, in the index's order) merged into
    one ``vsgen`` document (``{}`` if none has any). A shard records only its own
    tensors (``holds``: tensor -> shard)."""
    merged: dict[str, Any] | None = None
    for file_name, metadata in shards.items():
        text = metadata.get("vsgen")
        if text is None:
            continue
        where = os.path.join(directory, file_name)
        try:
            document = loads_json(text, f"{where}: vsgen provenance")
        except ValueError as error:
            raise UnreadableFile(str(error)) from None
        tensors = document.get("tensors") if isinstance(document, dict) else None
        if not isinstance(tensors, dict):
            raise UnreadableFile(f"{where}: malformed vsgen provenance (no tensors object)")
        for name in tensors:
            if holds.get(name) != file_name:
                raise UnreadableFile(
                    f"{where}: its provenance records tensor {name[:200]!r}, which the shard "
                    "does not hold"
                )
        if merged is None:
            merged = {**document, "tensors": {}}
        merged["tensors"].update(tensors)
    if merged is None:
        return {}
    return {"vsgen": json.dumps(merged, sort_keys=True, separators=(",", ":"))}


# --- what --force may replace --------------------------------------------------------------


class ShardJudge:
    """What vsgen wrote in a shard directory: the index, and the files it records
    (each of its recorded size; a companion with its recorded SHA-256). No directories."""

    def __init__(self, files: Mapping[str, tuple[int, str | None]]) -> None:
        self._files = dict(files)

    def directory(self, parts: tuple[str, ...]) -> str | None:
        return "a directory; vsgen writes none in a shard directory"

    def file(self, parts: tuple[str, ...], size: int, path: str) -> str | None:
        if parts == (INDEX_NAME,):
            return None
        expected = self._files.get(parts[-1]) if len(parts) == 1 else None
        if expected is None:
            return "not a file vsgen wrote (the index does not record it)"
        if size != expected[0]:
            return f"{size:,} bytes; vsgen wrote {expected[0]:,}"
        if expected[1] is not None:
            data = read_entry(path, MAX_COMPANION_BYTES + 1)
            if data is None or hashlib.sha256(data).hexdigest() != expected[1]:
                return "changed since vsgen wrote it"
        return None


def _judge(path: str, display: str) -> ShardJudge:
    index = read_index(path, display)
    if index.files is not None:
        for file_name in index.weight_map.values():
            if file_name not in index.files:
                raise NotOwned("", file_name, "a shard the index names but vsgen did not record")
        return ShardJudge(index.files)
    # An index of vsgen 0.2 records no files: each shard it names must be there,
    # carry vsgen's provenance, and be exactly its header and tensors.
    files: dict[str, tuple[int, str | None]] = {}
    for file_name in dict.fromkeys(index.weight_map.values()):
        if not os.path.lexists(os.path.join(path, file_name)):
            raise NotOwned("", INDEX_NAME, "an index without vsgen's record or its shards")
        _, metadata = _read_shard(path, file_name, display)
        if "vsgen" not in metadata:
            raise NotOwned("", file_name, "a shard without vsgen's provenance")
        files[file_name] = (os.lstat(os.path.join(path, file_name)).st_size, None)
    if not files:
        raise NotOwned("", INDEX_NAME, "an index without vsgen's record or its shards")
    return ShardJudge(files)


# --- the format ------------------------------------------------------------------------


class ShardedFormat(StoreFormat):
    """Sharded safetensors: the safetensors rules for names and dtypes, in shards."""

    label = SafetensorsFormat.label
    keeps_metadata = True
    holds_bfloat16 = SafetensorsFormat.holds_bfloat16
    holds_complex = SafetensorsFormat.holds_complex
    commit_syncs = (".safetensors", ".json")
    replace_words = "sharded safetensors vsgen wrote"
    holds_companions = True

    def check_name(self, name: str) -> None:
        check_name(name)

    def check_companions_held(self, companions: Mapping[str, bytes]) -> None:
        check_companions(companions)

    def plan(self, request: WriteRequest) -> ShardedLayout:
        return ShardedLayout(request)

    def judge(self, path: str, display: str) -> ShardJudge:
        """The index's record (or, for vsgen 0.2's, its shards) says what vsgen wrote."""
        try:
            return _judge(path, display)
        except UnreadableFile as error:
            # The reader's message names the file (as the user named the directory).
            raise NotOwned(str(error), "", str(error)) from None

    def holds(self, directory: str) -> bool:
        """A directory with a ``model.safetensors.index.json`` (not through a link)."""
        return os.path.isdir(directory) and os.path.lexists(os.path.join(directory, INDEX_NAME))

    def open(self, path: str) -> TensorFile:
        """The tensors in the index's order, each shard's header parsed once, the shards'
        provenance merged into one ``vsgen`` document; every lie of the index refused.
        Shards the record lists but the index does not name are read too (their
        provenance records tensors the index has lost, which ``check`` reports)."""
        index = read_index(path)

        def exists(file_name: str) -> bool:
            return os.path.lexists(os.path.join(path, file_name))

        return assemble(path, index, exists, lambda name: _read_shard(path, name, path))


def assemble(
    path: str,
    index: ShardIndex,
    exists: Callable[[str], bool],
    read_shard: Callable[[str], tuple[Any, dict[str, str]]],
) -> TensorFile:
    """The tensors of a shard directory ``path`` from its checked ``index`` and its
    shards (``read_shard(name)``: tensors and metadata; ``exists(name)``), every lie of
    the index refused; shards the record lists but the index does not name are read
    too (their provenance records tensors the index has lost, which ``check`` reports)."""
    names = list(dict.fromkeys(index.weight_map.values()))
    for file_name in index.files or {}:
        recorded_shard = file_name.endswith(".safetensors") and file_name not in names
        if recorded_shard and exists(file_name):
            names.append(file_name)
    holds: dict[str, str] = {}
    found: dict[str, StoredTensor] = {}
    metadata: dict[str, dict[str, str]] = {}
    total = 0
    for file_name in names:
        stop_if_cancelled()
        tensors, metadata[file_name] = read_shard(file_name)
        for tensor in tensors:
            if tensor.name in holds:
                raise UnreadableFile(
                    f"{path}: tensor {tensor.name[:200]!r} is in two shards, "
                    f"{holds[tensor.name]} and {file_name}"
                )
            holds[tensor.name] = file_name
            found[tensor.name] = tensor
            total += tensor.nbytes
        if len(holds) > MAX_TENSORS:
            raise UnreadableFile(f"{path}: the shards hold more than {MAX_TENSORS:,} tensors")
    if index.total_size is not None and index.total_size != total:
        raise UnreadableFile(
            f"{path.rstrip('/')}/{INDEX_NAME}: metadata.total_size is "
            f"{index.total_size:,} bytes, but the shards' tensors take {total:,}"
        )
    for name, file_name in index.weight_map.items():
        if holds.get(name) != file_name:
            raise UnreadableFile(
                f"{path}: the index puts {name[:200]!r} in {file_name}, which lacks it"
            )
    ordered = tuple(found[name] for name in index.weight_map)
    return TensorFile(path, "safetensors-sharded", ordered, _merged(path, metadata, holds))
