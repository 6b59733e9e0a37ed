"""Tensor descriptions (name, shape, dtype) and the choice of output format."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from vsgen.dtypes import TensorInfo

FORMATS = ("npy", "h5", "safetensors", "raw", "npydir")
#: Formats written block by block by many writers (``vsgen.dask.write``), not streamed.
PARALLEL_ONLY_FORMATS = ("zarr", "safetensors-sharded")
#: Formats that keep the ``metadata`` given to :func:`open_output`.
METADATA_FORMATS = ("h5", "safetensors")

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
_BFLOAT16_FORMATS = ("safetensors", "raw")
_SUFFIXES = {
    ".npy": "npy",
    ".h5": "h5",
    ".hdf5": "h5",
    ".safetensors": "safetensors",
    ".raw": "raw",
    ".bin": "raw",
    ".zarr": "zarr",
}
_FORMAT_ALIASES = {"hdf5": "h5"}
_STDOUT_FORMATS = ("npy", "raw")


def resolve_format(target: str, fmt: str | None, n_tensors: int = 1) -> str:
    """Choose the output format, one of :data:`FORMATS`.

    An explicit ``fmt`` (``--format``; ``hdf5`` is accepted for ``h5``) wins.
    Otherwise ``"-"`` (standard output) means ``npy``; a target that is an
    existing directory or ends with a path separator means ``npydir``; else
    the suffix decides: ``.npy``, ``.h5``/``.hdf5``, ``.safetensors``,
    ``.raw``/``.bin``, ``.zarr`` (a Zarr v3 store, even if it exists as a
    directory). ``zarr`` and ``safetensors-sharded`` (:data:`PARALLEL_ONLY_FORMATS`)
    are written by ``vsgen.dask.write``, not by ``open_output``. A target
    without a suffix means ``npydir`` when there are several tensors.

    Raises:
        ValueError: unknown format or suffix, a format that cannot go to
            standard output, or several tensors for a one-tensor format.
    """
    if fmt is not None:
        resolved = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if resolved not in FORMATS + PARALLEL_ONLY_FORMATS:
            known = ", ".join(FORMATS + PARALLEL_ONLY_FORMATS)
            raise ValueError(f"unknown format {fmt!r}; choose one of {known}")
    elif target == "-":
        resolved = "npy"
    elif os.path.splitext(target.rstrip("/" + os.sep))[1].lower() == ".zarr":
        resolved = "zarr"
    elif target.endswith(("/", os.sep)) or os.path.isdir(target):
        resolved = "npydir"
    else:
        suffix = os.path.splitext(target)[1].lower()
        if suffix in _SUFFIXES:
            resolved = _SUFFIXES[suffix]
        elif suffix == "" and n_tensors > 1:
            resolved = "npydir"
        else:
            known = ", ".join(_SUFFIXES)
            what = f"suffix {suffix!r}" if suffix else "no suffix"
            raise ValueError(
                f"cannot tell the format of {target!r} ({what}); "
                f"use one of {known} or pass --format"
            )
    check_format_fits(target, resolved, n_tensors)
    return resolved


def check_format_fits(target: str, fmt: str, n_tensors: int) -> None:
    if target == "-" and fmt not in _STDOUT_FORMATS:
        raise ValueError(
            f"format {fmt!r} cannot be written to standard output; use npy or raw with -o -"
        )
    if fmt == "npy" and n_tensors > 1:
        raise ValueError(
            f"a .npy file holds one tensor, got {n_tensors}; "
            "use .safetensors, .h5 or a directory (--format npydir)"
        )


def check_names(tensors: Sequence[TensorInfo], fmt: str) -> None:
    seen: set[str] = set()
    for info in tensors:
        if info.name in seen:
            raise ValueError(f"tensor name {info.name!r} appears twice")
        seen.add(info.name)
        if fmt in ("h5", "npydir"):
            parts = info.name.split("/")
            if any(part in ("", ".", "..") for part in parts):
                raise ValueError(
                    f"tensor name {info.name!r} cannot be stored in {fmt}: "
                    "'/'-separated parts must be non-empty and not '.' or '..'"
                )
        if fmt == "safetensors" and info.name == "__metadata__":
            raise ValueError("tensor name '__metadata__' is reserved in safetensors")
    if fmt == "h5":
        # A dataset cannot also be the group holding another dataset.
        groups = {
            "/".join(info.name.split("/")[:depth])
            for info in tensors
            for depth in range(1, info.name.count("/") + 1)
        }
        clash = sorted(groups & seen)
        if clash:
            raise ValueError(f"tensor name {clash[0]!r} is both a dataset and a group in h5")


def check_npydir_names(tensors: Sequence[TensorInfo], name_max: int = 255) -> None:
    """Every tensor of an npydir output gets its own ``<name>.npy`` file.

    Refuses two names whose files collide (``"w"`` writes the file ``w.npy``,
    ``"w.npy/b"`` needs a directory ``w.npy``) and names with a part longer
    than the file system takes (``name_max`` bytes, ``.npy`` included).
    """
    files: dict[str, str] = {}
    directories: dict[str, str] = {}
    for info in tensors:
        parts = info.name.split("/")
        for depth in range(1, len(parts)):
            directories.setdefault("/".join(parts[:depth]), info.name)
        files[info.name + ".npy"] = info.name
        for part in [*parts[:-1], parts[-1] + ".npy"]:
            length = len(part.encode("utf-8", "surrogateescape"))
            if length > name_max:
                raise ValueError(
                    f"tensor name {info.name!r} cannot be stored in npydir: its part "
                    f"{part[:40]!r}... is {length} bytes, longer than the {name_max} "
                    "bytes the file system allows for a file name"
                )
    for path, name in files.items():
        if path in directories:
            raise ValueError(
                f"tensor names {name!r} and {directories[path]!r} collide in npydir: "
                f"the first is written to the file {path!r}, the second needs a "
                f"directory of that name"
            )


def check_dtypes(tensors: Sequence[TensorInfo], fmt: str) -> None:
    for info in tensors:
        if info.dtype.kind == "c" and fmt == "safetensors":
            raise ValueError(
                f"dtype {info.dtype.name} cannot be stored in .safetensors (the format has no "
                "complex type); use .npy, .h5 or --format raw"
            )
        if info.dtype.name == "bfloat16" and fmt not in _BFLOAT16_FORMATS:
            suffix = {"npydir": ".npy"}.get(fmt, "." + fmt)
            raise ValueError(
                f"dtype bfloat16 cannot be stored in {suffix}; use .safetensors or --format raw"
            )


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    for key, value in metadata.items():
        # HDF5 refuses empty attribute names and NUL characters in strings.
        if (
            not isinstance(key, str)
            or not isinstance(value, str)
            or not key
            or "\x00" in key + value
        ):
            raise ValueError(
                "Argument `metadata` must map non-empty strings to strings, without NUL "
                f"characters. Received: {key!r}: {value!r}"
            )
    return dict(metadata)
