"""Header-only readers: names, shapes, dtypes and metadata of tensor files."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from typing import Any

import numpy

from vsgen.dtypes import resolve_dtype
from vsgen.formats.headers import SAFETENSORS_MAX_HEADER
from vsgen.formats.tensors import SAFETENSORS_CODES, TensorInfo

_NPY_MAGIC = b"\x93NUMPY"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(path: str) -> str:
    if os.path.isdir(path):
        return "npydir"
    with open(path, "rb") as file:
        head = file.read(9)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_HDF5_MAGIC):
        return "h5"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    raise ValueError(
        f"cannot read tensor headers of {path!r}: not npy, h5 or safetensors "
        "(raw files have no header)"
    )


def read_npy_header(path: str) -> tuple[tuple[int, ...], bool, numpy.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` of a .npy file, from its header."""
    from numpy.lib import format as npy_format

    with open(path, "rb") as file:
        version = npy_format.read_magic(file)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(file)
        else:
            raise ValueError(f"unsupported NPY version {version} in {path!r}")
        return tuple(shape), bool(fortran_order), numpy.dtype(dtype), file.tell()


def _read_npy_info(path: str, name: str) -> TensorInfo:
    shape, fortran_order, dtype, _ = read_npy_header(path)
    if fortran_order and len(shape) > 1:
        raise ValueError(f"{path!r} is in Fortran order; vsgen writes C order only")
    return TensorInfo(name, shape, _little_endian_only(dtype, path))


def _little_endian_only(dtype: numpy.dtype, path: str) -> numpy.dtype:
    # TensorInfo holds native dtypes; vsgen's files are always little-endian.
    if dtype.byteorder == ">":
        raise ValueError(f"{path!r} holds big-endian data; vsgen writes little-endian only")
    return dtype


def _read_safetensors_header(path: str) -> dict[str, object]:
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path!r} is too short for a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > SAFETENSORS_MAX_HEADER:
            raise ValueError(f"{path!r}: safetensors header length {length} is implausible")
        text = file.read(length)
    if len(text) < length:
        raise ValueError(f"{path!r}: safetensors header is truncated")
    header = json.loads(text.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path!r}: safetensors header is not a JSON object")
    return header


def _h5_datasets(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    import h5py

    # Group iteration follows creation order where it is tracked (vsgen's files).
    for key, item in group.items():
        name = f"{prefix}{key}"
        if isinstance(item, h5py.Dataset):
            yield name, item
        elif isinstance(item, h5py.Group):
            yield from _h5_datasets(item, name + "/")


def _directory_format(path: str) -> Any:
    """The reader module of a Zarr store or a sharded safetensors directory, else None."""
    from vsgen.formats import sharded, zarr_format

    if zarr_format.is_zarr(path):
        return zarr_format
    if sharded.is_sharded(path):
        return sharded
    return None


def read_tensor_infos(path: str) -> list[TensorInfo]:
    """Names, shapes and dtypes of the tensors in a file, reading headers only.

    Reads ``.npy`` (the tensor is named after the file's stem), HDF5 (every
    dataset, in creation order where tracked, else by name), safetensors (in
    header order, which is the writer's tensor order for vsgen's files) and
    npydir directories (by relative path). The format is told from the
    file's first bytes, not its suffix.

    Raises:
        ValueError: not one of those formats, or a dtype vsgen does not write.
        OSError: the file cannot be read.
    """
    directory_reader = _directory_format(path)
    if directory_reader is not None:
        return directory_reader.read_tensor_infos(path)
    kind = _sniff(path)
    if kind == "npy":
        stem = os.path.splitext(os.path.basename(path))[0]
        return [_read_npy_info(path, stem)]
    if kind == "npydir":
        infos = []
        for root, directories, files in os.walk(path):
            directories.sort()
            for file_name in sorted(files):
                if file_name.endswith(".npy"):
                    relative = os.path.relpath(os.path.join(root, file_name[:-4]), path)
                    infos.append(
                        _read_npy_info(os.path.join(root, file_name), relative.replace(os.sep, "/"))
                    )
        return infos
    if kind == "h5":
        import h5py

        with h5py.File(path, "r") as h5:
            return [
                TensorInfo(name, dataset.shape, _little_endian_only(dataset.dtype, path))
                for name, dataset in _h5_datasets(h5)
            ]
    header = _read_safetensors_header(path)
    codes = {code: name for name, code in SAFETENSORS_CODES.items()}
    infos = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in codes:
            raise ValueError(f"{path!r}: tensor {name!r} has an unsupported entry {entry!r}")
        infos.append(TensorInfo(name, tuple(entry["shape"]), resolve_dtype(codes[entry["dtype"]])))
    return infos


def read_metadata(path: str) -> dict[str, str]:
    """File-level metadata: HDF5 root attributes or safetensors ``__metadata__``.

    npy files and npydir directories hold none and give ``{}``. Zarr stores give
    their root's ``vsgen`` attribute, sharded safetensors their shards' provenance.
    """
    directory_reader = _directory_format(path)
    if directory_reader is not None:
        return directory_reader.read_metadata(path)
    kind = _sniff(path)
    if kind == "h5":
        import h5py

        with h5py.File(path, "r") as h5:
            result = {}
            for key, value in h5.attrs.items():
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                result[key] = value if isinstance(value, str) else str(value)
            return result
    if kind == "safetensors":
        metadata = _read_safetensors_header(path).get("__metadata__", {})
        if not isinstance(metadata, dict):
            raise ValueError(f"{path!r}: safetensors __metadata__ is not an object")
        return {str(key): str(value) for key, value in metadata.items()}
    return {}
