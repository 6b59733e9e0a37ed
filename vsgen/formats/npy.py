"""NPY: one tensor, the standard header (version 1.0, or 2.0 when the header needs
more than 64 KiB), then the raw values, little-endian, C order.

``numpy.load`` reads it, with ``mmap_mode`` too. No metadata. A file vsgen reads
is hostile: its header length is capped, a truncated header is a clean error, and
only numeric dtypes are accepted (never objects, so nothing is unpickled).
"""

from __future__ import annotations

import math
import os
import struct

import numpy

from vsgen.dtypes import TensorInfo
from vsgen.formats.base import (
    FileLayout,
    Format,
    StoredTensor,
    TensorFile,
    UnreadableFile,
    WriteRequest,
    little_endian,
    open_binary,
)

MAGIC = b"\x93NUMPY"
#: Largest NPY header accepted (numpy's own reader refuses more than 10,000
#: bytes by default; vsgen writes a few hundred).
NPY_MAX_HEADER = 100_000
_NUMERIC_KINDS = "biuf"


# --- writing ---------------------------------------------------------------------------


def npy_header(info: TensorInfo) -> bytes:
    """The NPY magic and header for ``info``: version 1.0 if it fits, else 2.0."""
    import io

    from numpy.lib import format as npy_format

    header = {
        "descr": npy_format.dtype_to_descr(little_endian(info.dtype)),
        "fortran_order": False,
        "shape": info.shape,
    }
    buffer = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(buffer, header)
    except ValueError:
        buffer = io.BytesIO()
        npy_format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


# --- reading (untrusted) -----------------------------------------------------------------


def read_npy_header(
    path: str, follow: bool = True
) -> tuple[tuple[int, ...], bool, numpy.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` of a .npy file, from its header
    (``follow=False``: a symbolic link is refused, as in an npy directory).

    The dtype is the stored one (its byte order included). Only numeric and
    bool dtypes are accepted: an object array would need unpickling.

    Raises:
        UnreadableFile: a malformed, truncated or oversized header, or a
            dtype that is not numeric.
    """
    with open_binary(path, follow) as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8 or not prefix.startswith(MAGIC):
            raise UnreadableFile(f"{path}: truncated NPY header (magic)")
        major, minor = prefix[6], prefix[7]
        if (major, minor) == (1, 0):
            length_format = "<H"
        elif major in (2, 3) and minor == 0:
            length_format = "<I"
        else:
            raise UnreadableFile(f"{path}: unsupported NPY version {major}.{minor}")
        length_bytes = handle.read(struct.calcsize(length_format))
        if len(length_bytes) < struct.calcsize(length_format):
            raise UnreadableFile(f"{path}: truncated NPY header (header length)")
        (length,) = struct.unpack(length_format, length_bytes)
        if length > NPY_MAX_HEADER:
            raise UnreadableFile(
                f"{path}: NPY header length {length} is over the {NPY_MAX_HEADER}-byte limit"
            )
        text = handle.read(length)
        if len(text) < length:
            raise UnreadableFile(
                f"{path}: truncated NPY header (expected {length} bytes, found {len(text)})"
            )
        offset = handle.tell()
    shape, fortran_order, dtype = _parse_npy_header(path, prefix + length_bytes + text, major)
    if offset + math.prod(shape) * dtype.itemsize > size:
        raise UnreadableFile(
            f"{path}: file is truncated (the header promises {math.prod(shape) * dtype.itemsize} "
            f"bytes of values, {size - offset} follow)"
        )
    return shape, fortran_order, dtype, offset


def _parse_npy_header(
    path: str, header: bytes, major: int
) -> tuple[tuple[int, ...], bool, numpy.dtype]:
    import io

    from numpy.lib import format as npy_format

    # The caps are loaded by readers only: writing a .npy file needs none.
    from vsgen._limits import MAX_RANK

    handle = io.BytesIO(header)
    npy_format.read_magic(handle)
    read = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read(handle, max_header_size=NPY_MAX_HEADER)
    except Exception:  # noqa: BLE001 - numpy's parser raises many types on garbage
        # (ValueError, SyntaxError, tokenize.TokenError, RecursionError...); the
        # input is at most NPY_MAX_HEADER bytes, so any failure just means "malformed".
        raise UnreadableFile(f"{path}: malformed NPY header") from None
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnreadableFile(f"{path}: NPY field 'descr' is {dtype.str!r}, not a numeric dtype")
    if len(shape) > MAX_RANK:
        raise UnreadableFile(f"{path}: NPY field 'shape' has {len(shape)} dimensions")
    return tuple(int(d) for d in shape), bool(fortran_order), dtype


def npy_tensor(path: str, name: str, follow: bool = True) -> StoredTensor:
    """The tensor of the .npy file ``path``, called ``name``."""
    shape, fortran_order, dtype, offset = read_npy_header(path, follow)
    return StoredTensor(
        path,
        "npy",
        name,
        shape,
        dtype.name,
        dtype.itemsize,
        offset,
        ">" if dtype.byteorder == ">" else "<",
        fortran_order and len(shape) > 1,
    )


# --- the format ------------------------------------------------------------------------


class NpyFormat(Format):
    """NPY: the header of :func:`npy_header`, then the one tensor's values."""

    label = ".npy"
    to_stdout = True
    one_tensor = True
    named = False

    def plan(self, request: WriteRequest) -> FileLayout:
        prefix = npy_header(request.tensors[0])
        return FileLayout(request.tensors, prefix, (len(prefix),))

    def sniff(self, head: bytes) -> bool:
        return head.startswith(MAGIC)

    def open(self, path: str) -> TensorFile:
        """The one tensor, named after the file's stem."""
        stem = os.path.splitext(os.path.basename(path))[0]
        return TensorFile(path, "npy", (npy_tensor(path, stem),), {})

    def read_metadata(self, path: str) -> dict[str, str]:
        return {}
