"""The formats vsgen writes and reads, and the choice of a format for a target.

The table below says which names and suffixes select each format and which module
defines it; the module's :class:`~vsgen.formats.base.Format` subclass says the
rest (what it holds, whether it is a directory, keeps metadata, holds bfloat16 or
complex values, can go to standard output or be streamed, its name rules, layout
and reader, what ``--force`` may replace). Nothing outside this module and the
format modules compares format names. A module is imported when its format is
first used, so a plain ``.npy`` job loads the NPY module alone.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import Any

from vsgen.formats.base import Format

#: Every format, in the order messages list them: its name, its class
#: (``module:Class`` under ``vsgen.formats``) and the suffixes that select it.
_TABLE = (
    ("npy", "npy:NpyFormat", (".npy",)),
    ("h5", "h5:H5Format", (".h5", ".hdf5")),
    ("safetensors", "safetensors:SafetensorsFormat", (".safetensors",)),
    ("raw", "raw:RawFormat", (".raw", ".bin")),
    ("npydir", "npydir:NpydirFormat", ()),
    ("zarr", "zarr:ZarrFormat", (".zarr",)),
    ("safetensors-sharded", "sharded:ShardedFormat", ()),
)
_NAMES = tuple(name for name, _, _ in _TABLE)
_SUFFIXES = {suffix: name for name, _, suffixes in _TABLE for suffix in suffixes}
_ALIASES = {"hdf5": "h5"}
_loaded: dict[str, Format] = {}


def _load(name: str) -> Format:
    fmt = _loaded.get(name)
    if fmt is None:
        for entry, where, suffixes in _TABLE:
            if entry == name:
                module, cls = where.split(":")
                formats = importlib.import_module(f"vsgen.formats.{module}")
                fmt = _loaded[name] = getattr(formats, cls)(name, suffixes)
                break
        else:
            raise KeyError(name)
    return fmt


def formats() -> Iterator[Format]:
    """Every format, in the order of the table, each module imported as it is reached."""
    return (_load(name) for name in _NAMES)


def all_formats() -> tuple[Format, ...]:
    """Every format, in the order of the table (imports every format module)."""
    return tuple(formats())


def get(name: str, *, streaming: bool = False) -> Format:
    """The format called ``name``; with ``streaming``, one that ``open_output`` streams.

    Raises:
        ValueError: naming the argument and the choices.
    """
    fmt = _load(name) if name in _NAMES else None
    if fmt is None or (streaming and not fmt.streams):
        choices = _listed("FORMATS") if streaming else _NAMES
        raise ValueError(
            f"Argument `fmt` must be one of {', '.join(choices)}. Received: fmt={name!r}"
        )
    return fmt


def resolve_format(target: str, fmt: str | None, n_tensors: int = 1) -> str:
    """Choose the output format: one of :data:`FORMATS` or :data:`PARALLEL_ONLY_FORMATS`.

    An explicit ``fmt`` (``--format``; ``hdf5`` is accepted for ``h5``) wins.
    Otherwise ``"-"`` (standard output) means ``npy``; a target that is an
    existing directory or ends with a path separator means ``npydir``; else
    the suffix decides: ``.npy``, ``.h5``/``.hdf5``, ``.safetensors``,
    ``.raw``/``.bin``, ``.zarr`` (a Zarr v3 store, even if it exists as a
    directory). ``zarr`` and ``safetensors-sharded`` (:data:`PARALLEL_ONLY_FORMATS`)
    are written by :mod:`vsgen.blockwrite`, not by ``open_output``. A target
    without a suffix means ``npydir`` when there are several tensors.

    Raises:
        ValueError: unknown format or suffix, a format that cannot go to
            standard output, or several tensors for a one-tensor format.
    """
    if fmt is not None:
        chosen = _ALIASES.get(fmt.lower(), fmt.lower())
        if chosen not in _NAMES:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(_NAMES)}")
    elif target == "-":
        chosen = "npy"
    elif _SUFFIXES.get(_suffix(target.rstrip("/" + os.sep))) == "zarr":
        chosen = "zarr"
    elif target.endswith(("/", os.sep)) or os.path.isdir(target):
        chosen = "npydir"
    else:
        suffix = _suffix(target)
        if suffix in _SUFFIXES:
            chosen = _SUFFIXES[suffix]
        elif suffix == "" and n_tensors > 1:
            chosen = "npydir"
        else:
            what = f"suffix {suffix!r}" if suffix else "no suffix"
            raise ValueError(
                f"cannot tell the format of {target!r} ({what}); "
                f"use one of {', '.join(_SUFFIXES)} or pass --format"
            )
    if "://" in target and chosen not in ("zarr", "safetensors-sharded"):
        raise ValueError(
            f"{target}: to an object store vsgen writes .zarr stores and --format "
            f"safetensors-sharded, not {chosen}"
        )
    _load(chosen).check_fits(target, n_tensors)
    return chosen


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


#: The public tuples of names, made on first use (they need every format module).
_LISTS = {
    # Formats ``open_output`` streams (every format is block-written).
    "FORMATS": lambda fmt: fmt.streams,
    # Formats written block by block only (``vsgen.blockwrite``), never streamed.
    "PARALLEL_ONLY_FORMATS": lambda fmt: not fmt.streams,
    # Streamed formats that keep the ``metadata`` given to the writers.
    "METADATA_FORMATS": lambda fmt: fmt.streams and fmt.keeps_metadata,
}


def _listed(name: str) -> tuple[str, ...]:
    return tuple(fmt.name for fmt in all_formats() if _LISTS[name](fmt))


def __getattr__(name: str) -> Any:
    if name in _LISTS:
        globals()[name] = listed = _listed(name)
        return listed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
