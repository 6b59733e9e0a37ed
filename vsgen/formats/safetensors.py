"""safetensors: an 8-byte little-endian header length N, N bytes of JSON header
padded with spaces to a multiple of 8, then the data.

The header holds ``__metadata__`` (str -> str) and, per tensor, ``dtype`` (F16,
BF16, F32, F64; integer and bool codes for copied tensors), ``shape`` and
``data_offsets`` ``[begin, end)`` relative to the data start. Readers require the
data regions to tile the buffer without gaps or overlaps, in any header order.
Tensors are laid out by element size, largest first, and otherwise in the
caller's order, so that every tensor starts at an offset aligned to its element
size (zero-copy loaders such as ``safetensors.torch`` rely on that).

Reading a file vsgen did not write is one parser: the 8-byte length is capped at
the format's own 100,000,000 bytes and must fit the file; the JSON is pre-scanned
for size and depth before it is parsed (:mod:`vsgen._limits`); every entry needs a
known ``dtype``, a ``shape`` of non-negative integers and ``data_offsets`` of two
integers ``0 <= begin <= end`` whose length matches the shape; the regions must
tile the data buffer exactly (no gap, no overlap, nothing after the last).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy

# The header caps are the reader's (and the safetensors reference reader's):
# a file vsgen writes is a file it can read.
from vsgen._limits import MAX_RANK, MAX_TENSORS, SAFETENSORS_MAX_HEADER, loads_json
from vsgen.dtypes import TensorInfo
from vsgen.formats.base import (
    FileLayout,
    Format,
    StoredTensor,
    TensorFile,
    UnreadableFile,
    WriteRequest,
    open_binary,
)

#: What the header calls each dtype vsgen writes.
SAFETENSORS_CODES = {
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    # Integer and bool tensors are never generated, only copied through
    # (``--like`` keeps a checkpoint's ``num_batches_tracked``, ``position_ids``...).
    "bool": "BOOL",
    "int8": "I8",
    "uint8": "U8",
    "int16": "I16",
    "uint16": "U16",
    "int32": "I32",
    "uint32": "U32",
    "int64": "I64",
    "uint64": "U64",
}

#: safetensors dtype codes: (vsgen/numpy dtype name, bytes per value).
SAFETENSORS_DTYPES = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "U16": ("uint16", 2),
    "I16": ("int16", 2),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "U32": ("uint32", 4),
    "I32": ("int32", 4),
    "F32": ("float32", 4),
    "U64": ("uint64", 8),
    "I64": ("int64", 8),
    "F64": ("float64", 8),
}


# --- writing ---------------------------------------------------------------------------


def check_name(name: str) -> None:
    """The header's own key ``__metadata__`` cannot name a tensor."""
    if name == "__metadata__":
        raise ValueError("tensor name '__metadata__' is reserved in safetensors")


def safetensors_layout(tensors: Sequence[TensorInfo]) -> list[int]:
    """Data offset of each tensor: by element size, largest first, then in order."""
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i].dtype.itemsize)
    offsets = [0] * len(tensors)
    position = 0
    for index in order:
        offsets[index] = position
        position += tensors[index].nbytes
    return offsets


def safetensors_header(
    tensors: Sequence[TensorInfo], offsets: Sequence[int], metadata: Mapping[str, str]
) -> bytes:
    """Length prefix plus the JSON header, space-padded to a multiple of 8 bytes."""
    if len(tensors) > MAX_TENSORS:
        raise ValueError(
            f"a safetensors file of {len(tensors)} tensors is over the {MAX_TENSORS}-tensor "
            "limit of vsgen's reader; split the model"
        )
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    # Readers go by data_offsets, so the JSON keeps the caller's order, which
    # read_tensor_infos then gives back.
    for index, info in enumerate(tensors):
        header[info.name] = {
            "dtype": SAFETENSORS_CODES[info.dtype.name],
            "shape": list(info.shape),
            "data_offsets": [offsets[index], offsets[index] + info.nbytes],
        }
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > SAFETENSORS_MAX_HEADER:
        raise ValueError(
            f"safetensors header would be {len(text)} bytes, over the "
            f"{SAFETENSORS_MAX_HEADER}-byte limit of readers; use fewer tensors or less metadata"
        )
    return struct.pack("<Q", len(text)) + text


# --- reading (untrusted) -----------------------------------------------------------------


def read_safetensors(
    path: str, follow: bool = True
) -> tuple[tuple[StoredTensor, ...], dict[str, str]]:
    """The tensors and ``__metadata__`` of the safetensors file ``path`` (the module
    docstring says what is checked); ``follow=False`` refuses a symbolic link."""
    with open_binary(path, follow) as handle:
        return parse_safetensors(path, handle, os.fstat(handle.fileno()).st_size)


def parse_safetensors(
    path: str, handle: Any, size: int
) -> tuple[tuple[StoredTensor, ...], dict[str, str]]:
    """The tensors and ``__metadata__`` of the safetensors file ``path`` of ``size``
    bytes, read from ``handle`` at its start (a file, or an object store's object)."""
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise UnreadableFile(f"{path} is too short for a safetensors file")
    (length,) = struct.unpack("<Q", prefix)
    if length > SAFETENSORS_MAX_HEADER:
        raise UnreadableFile(
            f"{path}: safetensors header length {length} is over the format's "
            f"limit of {SAFETENSORS_MAX_HEADER} bytes"
        )
    if length > size - 8:
        raise UnreadableFile(
            f"{path}: safetensors header length {length} exceeds the file ({size} bytes)"
        )
    text = handle.read(length)
    if len(text) < length:
        raise UnreadableFile(f"{path}: safetensors header is truncated")
    _check_text_memory(path, text)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(
            f"{path}: safetensors header is not UTF-8 text (byte {error.start})"
        ) from None
    # Only the text is kept while parsing: header bytes, text and parsed
    # strings together would be three times the header.
    del text
    header = loads_json(decoded, f"{path}: safetensors header")
    del decoded
    if not isinstance(header, dict):
        raise UnreadableFile(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + length
    data_size = size - data_start
    metadata = _safetensors_metadata(path, header.pop("__metadata__", None))
    if len(header) > MAX_TENSORS:
        raise UnreadableFile(f"{path}: safetensors file holds over {MAX_TENSORS} tensors")
    tensors = []
    for name, entry in header.items():
        tensors.append(_safetensors_entry(path, name, entry, data_start, data_size))
    _check_tiling(path, tensors, data_start, data_size)
    return tuple(tensors), metadata


def _check_text_memory(path: str, text: bytes) -> None:
    """Refuse text whose decoded form would need over 4 bytes per byte of budget.

    Python stores a string with 1, 2 or 4 bytes per character, by its widest
    character; a large header full of 4-byte characters would cost four
    times its size, so the budget is the format's limit in decoded bytes.
    """
    if len(text) <= SAFETENSORS_MAX_HEADER // 4:
        return
    widest = int(numpy.frombuffer(text, dtype=numpy.uint8).max())
    width = 4 if widest >= 0xF0 else 2 if widest >= 0xC4 else 1
    if len(text) * width > SAFETENSORS_MAX_HEADER:
        raise UnreadableFile(
            f"{path}: safetensors header of {len(text)} bytes would take {width} bytes per "
            f"character once decoded, over the {SAFETENSORS_MAX_HEADER}-byte limit"
        )


def _safetensors_metadata(path: str, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UnreadableFile(f"{path}: safetensors field '__metadata__' is not a JSON object")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise UnreadableFile(
                f"{path}: safetensors field '__metadata__'[{key[:80]!r}] is a "
                f"{_json_type(value)}, not a string"
            )
    return metadata


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _safetensors_entry(
    path: str, name: str, entry: object, data_start: int, data_size: int
) -> StoredTensor:
    if type(entry) is not dict:
        raise UnreadableFile(f"{_where(path, name)} is a {_json_type(entry)}, not an object")
    try:
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    except KeyError as missing:
        raise UnreadableFile(f"{_where(path, name)} has no field {missing}") from None
    if type(code) is not str or code not in SAFETENSORS_DTYPES:
        shown = code[:40] if isinstance(code, str) else _json_type(code)
        raise UnreadableFile(
            f"{_where(path, name)}: field 'dtype' is {shown!r}; known: "
            f"{', '.join(SAFETENSORS_DTYPES)}"
        )
    dtype, itemsize = SAFETENSORS_DTYPES[code]
    # type() is int, not isinstance: JSON's true/false must not pass as 1/0.
    if type(shape) is not list or set(map(type, shape)) - {int} or (shape and min(shape) < 0):
        raise UnreadableFile(
            f"{_where(path, name)}: field 'shape' must be a list of non-negative integers"
        )
    if len(shape) > MAX_RANK:
        raise UnreadableFile(f"{_where(path, name)}: field 'shape' has {len(shape)} dimensions")
    if not (
        type(offsets) is list
        and len(offsets) == 2
        and type(offsets[0]) is int
        and type(offsets[1]) is int
    ):
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' must be a list of two integers"
        )
    begin, end = offsets
    if not 0 <= begin <= end:
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' [{begin}, {end}] must satisfy "
            "0 <= begin <= end"
        )
    if end > data_size:
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' ends at {end}, past the {data_size} "
            "bytes of data (file truncated?)"
        )
    nbytes = math.prod(shape) * itemsize
    if end - begin != nbytes:
        raise UnreadableFile(
            f"{_where(path, name)}: field 'data_offsets' spans {end - begin} bytes; shape "
            f"{tuple(shape)} of {code} needs {nbytes}"
        )
    return StoredTensor(
        path, "safetensors", name, tuple(shape), dtype, itemsize, data_start + begin
    )


def _where(path: str, name: str) -> str:
    return f"{path}: safetensors tensor {name[:200]!r}"


def _check_tiling(path: str, tensors: list[StoredTensor], data_start: int, data_size: int) -> None:
    """The tensors' byte ranges must cover the data exactly once, as the format requires."""
    position = 0
    for tensor in sorted(tensors, key=lambda t: (t.offset or 0, t.nbytes)):
        begin = (tensor.offset or 0) - data_start
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap"
            raise UnreadableFile(
                f"{path}: safetensors tensor {tensor.name[:200]!r}: field 'data_offsets' "
                f"starts at {begin}, which {problem} (expected {position})"
            )
        position = begin + tensor.nbytes
    if position != data_size:
        raise UnreadableFile(
            f"{path}: safetensors data is {data_size} bytes but the tensors cover {position}"
        )


# --- the format ------------------------------------------------------------------------


class SafetensorsFormat(Format):
    """safetensors: the header of :func:`safetensors_header`, then the data."""

    label = ".safetensors"
    keeps_metadata = True
    holds_bfloat16 = True
    holds_complex = False

    def check_name(self, name: str) -> None:
        check_name(name)

    def plan(self, request: WriteRequest) -> FileLayout:
        relative = safetensors_layout(request.tensors)
        prefix = safetensors_header(request.tensors, relative, request.metadata)
        offsets = tuple(len(prefix) + offset for offset in relative)
        return FileLayout(request.tensors, prefix, offsets)

    def sniff(self, head: bytes) -> bool:
        # A little-endian length, then the header's opening brace.
        return len(head) == 9 and head[8:9] == b"{"

    def open(self, path: str) -> TensorFile:
        tensors, metadata = read_safetensors(path)
        return TensorFile(path, "safetensors", tensors, metadata)
