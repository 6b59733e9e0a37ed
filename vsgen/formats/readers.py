"""Header-only readers: names, shapes, dtypes and metadata of tensor files."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from typing import Any

import numpy

from vsgen.formats.headers import SAFETENSORS_MAX_HEADER
from vsgen.formats.tensors import SAFETENSORS_CODES, TensorInfo, normalize_dtype

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
        infos.append(
            TensorInfo(name, tuple(entry["shape"]), normalize_dtype(codes[entry["dtype"]]))
        )
    return infos


def read_metadata(path: str) -> dict[str, str]:
    """File-level metadata: HDF5 root attributes or safetensors ``__metadata__``.

    npy files and npydir directories hold none and give ``{}``.
    """
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


def read_tensor_range(path: str, name: str, start: int, stop: int) -> numpy.ndarray:
    """Flat C-order values ``[start, stop)`` of tensor ``name``, in the file's dtype.

    Reads only those values (bounded memory: ``stop - start`` values), from
    the same formats as :func:`read_tensor_infos` and under the same names.
    npy and safetensors tensors are read at their byte offset; HDF5 datasets
    through h5py, as the few boxes that cover the flat range.
    The returned array is native-endian and owns its memory.

    Raises:
        ValueError: unknown tensor, a range outside it, a tensor whose stored
            bytes do not fit its header or lie outside the file, or HDF5
            storage outside the file (external raw data, virtual datasets).
        OSError: the file cannot be read.
    """
    kind = _sniff(path)
    if kind == "h5":
        return _read_h5_range(path, name, start, stop)
    if kind == "safetensors":
        header = _read_safetensors_header(path)
        entry = header.get(name) if name != "__metadata__" else None
        codes = {code: key for key, code in SAFETENSORS_CODES.items()}
        if not isinstance(entry, dict) or entry.get("dtype") not in codes:
            raise ValueError(f"{path!r} has no readable tensor {name!r}")
        info = TensorInfo(name, tuple(entry["shape"]), normalize_dtype(codes[entry["dtype"]]))
        offsets = entry.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(v) is int for v in offsets)
            or not 0 <= offsets[0] <= offsets[1]
            or offsets[1] - offsets[0] != info.nbytes
        ):
            raise ValueError(
                f"{path!r}: tensor {name!r} has data_offsets that do not fit its shape"
            )
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
        data_offset = 8 + length + offsets[0]
    else:
        file_path = path
        if kind == "npydir":
            file_path = os.path.join(path, *name.split("/")) + ".npy"
            root = os.path.realpath(path)
            if (
                any(part in ("", ".", "..") for part in name.split("/"))
                or os.path.commonpath([root, os.path.realpath(file_path)]) != root
                or not os.path.isfile(file_path)
            ):
                raise ValueError(f"{path!r} has no tensor {name!r}")
        elif name != os.path.splitext(os.path.basename(path))[0]:
            raise ValueError(f"{path!r} has no tensor {name!r}")
        shape, fortran_order, dtype, data_offset = read_npy_header(file_path)
        if fortran_order and len(shape) > 1:
            raise ValueError(f"{file_path!r} is in Fortran order; vsgen reads C order only")
        info = TensorInfo(name, shape, _little_endian_only(dtype, file_path))
        path = file_path
    _check_range(info, start, stop, path)
    if data_offset + info.nbytes > os.path.getsize(path):
        raise ValueError(f"{path!r} is truncated: tensor {name!r} runs past its end")
    itemsize = info.dtype.itemsize
    with open(path, "rb") as file:
        file.seek(data_offset + start * itemsize)
        data = file.read((stop - start) * itemsize)
    if len(data) != (stop - start) * itemsize:
        raise ValueError(f"{path!r} is truncated: tensor {name!r} runs past its end")
    stored = numpy.dtype("<u2") if info.dtype.name == "bfloat16" else info.dtype.newbyteorder("<")
    values = numpy.frombuffer(data, dtype=stored).astype(stored.newbyteorder("="))
    return values.view(info.dtype)


def _check_range(info: TensorInfo, start: int, stop: int, path: str) -> None:
    if not 0 <= start <= stop <= info.size:
        raise ValueError(
            f"{path!r}: range [{start}, {stop}) is outside tensor {info.name!r} "
            f"of {info.size} values"
        )


def _flat_boxes(shape: tuple[int, ...], start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    """Index tuples of the few boxes that cover flat C-order range [start, stop), in order."""
    if start >= stop:
        return
    if len(shape) <= 1:
        yield (slice(start, stop),)
        return
    inner = math.prod(shape[1:])
    first, first_offset = divmod(start, inner)
    last, last_offset = divmod(stop, inner)
    if first == last:
        for box in _flat_boxes(shape[1:], first_offset, last_offset):
            yield (slice(first, first + 1), *box)
        return
    if first_offset:
        for box in _flat_boxes(shape[1:], first_offset, inner):
            yield (slice(first, first + 1), *box)
        first += 1
    if last > first:
        yield (slice(first, last), *(slice(None),) * (len(shape) - 1))
    if last_offset:
        for box in _flat_boxes(shape[1:], 0, last_offset):
            yield (slice(last, last + 1), *box)


def _read_h5_range(path: str, name: str, start: int, stop: int) -> numpy.ndarray:
    import h5py

    with h5py.File(path, "r") as h5:
        item = h5.get(name, getlink=True)
        if not isinstance(item, h5py.HardLink):
            raise ValueError(f"{path!r}: {name!r} is not a dataset stored in this file")
        dataset = h5[name]
        if not isinstance(dataset, h5py.Dataset):
            raise ValueError(f"{path!r}: {name!r} is not a dataset")
        if dataset.external or dataset.is_virtual:
            raise ValueError(
                f"{path!r}: dataset {name!r} keeps its values outside the file "
                "(external or virtual storage); vsgen reads only inside a file"
            )
        info = TensorInfo(name, dataset.shape, _little_endian_only(dataset.dtype, path))
        _check_range(info, start, stop, path)
        if stop == start:
            return numpy.empty(0, info.dtype)
        if not info.shape:
            return numpy.asarray(dataset[()], dtype=info.dtype).reshape(1)
        pieces = [
            numpy.asarray(dataset[box]).reshape(-1) for box in _flat_boxes(info.shape, start, stop)
        ]
    values = numpy.concatenate(pieces).astype(info.dtype, copy=False)
    if values.size != stop - start:
        raise ValueError(f"{path!r}: dataset {name!r} did not give the values its shape promises")
    return values
