"""Whole models: many named tensors, each with its own initializer and seed.

A *model spec* (a TOML or JSON file, or the equivalent dict) lists tensors by
name with a shape, an optional dtype and an optional initializer; glob
*rules* give initializers to many names at once; top-level keys give the
defaults. ``docs/spec-files.md`` documents the schema. :func:`build_job`
turns a spec (or the tensor list of an existing checkpoint, ``like``) into one
plan per tensor: a :class:`~vsgen.job.ModelJob` (the one job type, defined in
:mod:`vsgen.job` and re-exported here with ``PlanRow`` and ``tensor_job``),
ready to be streamed into a single output file or written block by block;
:func:`model_job` makes the job of any model source (a spec, a checkpoint, a
job) with the command line's keywords. The initializers a spec names
(:class:`Init`, :func:`parse_init`) and the built-in choices
(:func:`builtin_init`, :class:`Choice`, :data:`KEEP`, :class:`TensorEntry`) are
defined in ``vsgen._inits``, which :mod:`vsgen.conventions` builds on too, and
are imported from here.

How a tensor's initializer is chosen, first match wins:

1. its own ``init`` (spec tensors only);
2. the first rule, in the order written, whose pattern matches the name
   (``fnmatch.fnmatchcase``: ``*``, ``?``, ``[seq]``; case-sensitive);
3. for tensors of rank >= 2: the default initializer (the spec's top-level
   ``init``, else vsgen's default ``VarianceScaling``);
4. for tensors of rank 0 or 1: :func:`builtin_constant` (ones for norm
   scales and variances, zeros for everything else).

Seeds: every variance-scaling tensor draws from its own seed, derived from the
global seed and its name by :func:`derive_seed`, so adding, removing or
reordering tensors never changes the others. Pure: no printing; the only I/O
is reading the spec file and, for ``like``, a checkpoint's header.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import numbers
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vsgen import provenance
from vsgen._inits import (
    CONSTANTS,
    COPY,
    KEEP,
    Choice,
    Init,
    TensorEntry,
    _name_parts,
    _type_name,
    builtin_constant,
    builtin_init,
    init_from_initializer,
    parse_init,
)
from vsgen._limits import MAX_TENSORS
from vsgen.dtypes import TensorInfo, resolve_dtype
from vsgen.fans import LAYOUTS, check_layout, normalize_shape, parse_shape
from vsgen.initializer import Plan, RandomInitializer, SamplePlan
from vsgen.job import ModelJob, PlanRow, tensor_job
from vsgen.streams import DEFAULT_CHUNK, DEFAULT_STREAM, JSON_SAFE_SEED_BITS, get_stream

__all__ = [
    "CONSTANTS",
    "COPY",
    "KEEP",
    "ArrayPlan",
    "Choice",
    "ConstantPlan",
    "CopyPlan",
    "FixedRowsPlan",
    "Init",
    "ModelJob",
    "ModelSpec",
    "PlanRow",
    "TensorEntry",
    "build_job",
    "builtin_constant",
    "builtin_init",
    "derive_seed",
    "init_from_initializer",
    "like_tensors",
    "load_spec",
    "model_job",
    "parse_init",
    "parse_spec",
    "job_from_file",
    "plan_table",
    "seed_bound",
    "tensor_job",
]

#: Global seeds are hashed as 8 little-endian bytes.
MAX_GLOBAL_SEED = 2**64

#: Recorded in provenance next to each derived seed.
SEED_RULE = "sha256(global_seed as u64le + utf8(name))[:8] as u64le mod 2**bits"

_TOP_KEYS = ("seed", "dtype", "layout", "stream", "init", "rules", "tensors")
_TENSOR_KEYS = ("shape", "dtype", "init", "seed")


# --------------------------------------------------------------------------
# Seeds


def seed_bound(stream: str) -> int:
    """Exclusive upper bound of derived and drawn seeds for ``stream``: 2**32 for
    the keras stream, 2**53 for the vsgen stream (``Stream.seed_bits``)."""
    return 2 ** get_stream(stream).seed_bits


def derive_seed(global_seed: int, name: str, stream: str = DEFAULT_STREAM) -> int:
    """The seed of tensor ``name`` under ``global_seed``.

    ``h = SHA-256(global_seed.to_bytes(8, "little") + name.encode("utf-8"))``;
    the seed is ``int.from_bytes(h[:8], "little") % 2**bits`` with bits = 32
    for the keras stream and 53 for the vsgen stream (:func:`seed_bound`).
    A tensor's seed depends on nothing but these three inputs.
    """
    if isinstance(global_seed, bool) or not isinstance(global_seed, numbers.Integral):
        raise TypeError(
            f"Argument `seed` must be a non-negative integer. Received: seed={global_seed!r}"
        )
    if not 0 <= int(global_seed) < MAX_GLOBAL_SEED:
        raise ValueError(f"Argument `seed` must be in [0, 2**64). Received: seed={global_seed!r}")
    digest = hashlib.sha256(int(global_seed).to_bytes(8, "little") + name.encode("utf-8"))
    return int.from_bytes(digest.digest()[:8], "little") % seed_bound(stream)


# --------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: top-level defaults, ordered rules and tensors."""

    seed: int | None = None
    dtype: np.dtype | None = None
    layout: str | None = None
    stream: str | None = None
    init: Init | None = None
    rules: tuple[tuple[str, Init], ...] = ()
    tensors: tuple[TensorEntry, ...] = ()
    source: str = "spec"


def load_spec(path: str) -> ModelSpec:
    """Read a spec file: ``.toml`` (tomllib) or ``.json``, by suffix.

    Raises:
        ValueError: unknown suffix, a syntax error or a schema error; one
            line, starting with the path.
        OSError: the file cannot be read.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(
            f"spec {path}: cannot tell the format from suffix {suffix or '(none)'!r}; "
            "name it .toml or .json"
        )
    if not os.path.exists(path):
        raise ValueError(f"spec {path}: file not found")
    if os.path.isdir(path):
        raise ValueError(f"spec {path}: is a directory")
    from vsgen._limits import MAX_SPEC_BYTES, MAX_TOML_BYTES, open_document, read_text

    limit = MAX_TOML_BYTES if suffix == ".toml" else MAX_SPEC_BYTES
    with open_document(path, f"spec {path}") as handle:
        text = read_text(handle, limit, f"spec {path}")
    document = _parse_toml(text, path) if suffix == ".toml" else _parse_json(text, path)
    return parse_spec(document, source=f"spec {path}")


def _parse_toml(text: str, path: str) -> Any:
    from vsgen._limits import loads_toml

    return loads_toml(text, f"spec {path}")


def _parse_json(text: str, path: str) -> Any:
    from vsgen._limits import loads_json

    return loads_json(text, f"spec {path}")


def _parse_seed(value: object, where: str, bound: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bound:
        raise ValueError(
            f"{where}: must be an integer in [0, 2**{bound.bit_length() - 1}), not {value!r}"
        )
    return value


def _parse_dtype(value: object, where: str) -> np.dtype:
    if not isinstance(value, str):
        raise ValueError(f'{where}: must be a string such as "float32", not {value!r}')
    try:
        return resolve_dtype(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"{where}: must be one of float16, bfloat16, float32, float64, not {value!r}"
        ) from None


def _parse_shape(value: object, where: str) -> tuple[int, ...]:
    try:
        if isinstance(value, str):
            return parse_shape(value)
        if isinstance(value, list):
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
                raise ValueError("must contain integers only")
            return normalize_shape(value)
    except (ValueError, TypeError) as error:
        detail = str(error).split(". Received")[0]
        raise ValueError(f"{where}: {detail}: {value!r}") from None
    raise ValueError(
        f"{where}: must be a list of non-negative integers such as [512, 256], not {value!r}"
    )


def _parse_layout(value: object, where: str) -> str:
    try:
        return check_layout(value)
    except ValueError:
        raise ValueError(f"{where}: must be one of {', '.join(LAYOUTS)}, not {value!r}") from None


def _parse_stream(value: object, where: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return get_stream(value).name
    except ValueError:
        raise ValueError(f"{where}: must be one of vsgen, keras, not {value!r}") from None


def _key_path(name: str) -> str:
    """A TOML-style key for messages: bare if possible, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def parse_spec(document: object, source: str = "spec") -> ModelSpec:
    """Validate a spec document (the dict a TOML or JSON file parses to).

    Top-level keys: ``seed``, ``dtype``, ``layout``, ``stream``, ``init``,
    ``rules`` (pattern -> init, in order) and ``tensors`` (name -> table
    with ``shape`` and optional ``dtype``, ``init``, ``seed``; or just a
    shape). See ``docs/spec-files.md``.

    Raises:
        ValueError: one line naming ``source`` and the offending key or tensor.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"{source}: must be a table (a JSON object), not {_type_name(document)}")
    unknown = sorted(set(document) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(
            f"{source}: unknown top-level key {unknown[0]!r}; allowed: {', '.join(_TOP_KEYS)}"
        )
    seed = dtype = layout = stream = init = None
    if "seed" in document:
        seed = _parse_seed(document["seed"], f"{source}: seed", MAX_GLOBAL_SEED)
    if "dtype" in document:
        dtype = _parse_dtype(document["dtype"], f"{source}: dtype")
    if "layout" in document:
        layout = _parse_layout(document["layout"], f"{source}: layout")
    if "stream" in document:
        stream = _parse_stream(document["stream"], f"{source}: stream")
    if "init" in document:
        init = parse_init(document["init"], f"{source}: init")

    rules_doc = document.get("rules", {})
    if not isinstance(rules_doc, Mapping):
        raise ValueError(
            f"{source}: rules: must be a table of pattern = initializer, "
            f"not {_type_name(rules_doc)}"
        )
    rules = tuple(
        (str(pattern), parse_init(value, f"{source}: rules.{_key_path(str(pattern))}"))
        for pattern, value in rules_doc.items()
    )

    tensors_doc = document.get("tensors", {})
    if not isinstance(tensors_doc, Mapping):
        raise ValueError(
            f"{source}: tensors: must be a table of name = {{ shape = [...] }}, "
            f"not {_type_name(tensors_doc)}"
        )
    if len(tensors_doc) > MAX_TENSORS:
        raise ValueError(
            f"{source}: tensors: {len(tensors_doc):,} tensors, more than the {MAX_TENSORS:,} "
            "one output may hold; split the model"
        )
    tensors = tuple(
        _parse_tensor(str(name), value, f"{source}: tensors.{_key_path(str(name))}")
        for name, value in tensors_doc.items()
    )
    return ModelSpec(
        seed=seed,
        dtype=dtype,
        layout=layout,
        stream=stream,
        init=init,
        rules=rules,
        tensors=tensors,
        source=source,
    )


def _parse_tensor(name: str, value: object, where: str) -> TensorEntry:
    if not name:
        raise ValueError(f"{where}: a tensor name must not be empty")
    if isinstance(value, (list, str)):
        value = {"shape": value}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{where}: must be a table such as {{ shape = [512, 256] }} or a shape, "
            f"not {_type_name(value)}"
        )
    unknown = sorted(set(value) - set(_TENSOR_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(_TENSOR_KEYS)}")
    if "shape" not in value:
        raise ValueError(f"{where}: missing key 'shape', e.g. shape = [512, 256]")
    return TensorEntry(
        name=name,
        shape=_parse_shape(value["shape"], f"{where}.shape"),
        dtype=_parse_dtype(value["dtype"], f"{where}.dtype") if "dtype" in value else None,
        init=parse_init(value["init"], f"{where}.init") if "init" in value else None,
        seed=_parse_seed(value["seed"], f"{where}.seed", MAX_GLOBAL_SEED)
        if "seed" in value
        else None,
    )


# --------------------------------------------------------------------------
# Constants and copies as plans


@dataclass(frozen=True)
class ConstantPlan:
    """A constant tensor, streamed like a :class:`vsgen.SamplePlan` (a
    :class:`vsgen.initializer.Plan`)."""

    value: float
    dtype: np.dtype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", normalize_shape(self.shape))

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return math.prod(self.shape)

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """The values as consecutive flat chunks of at most ``chunk_size``.

        The chunks are read-only views of one shared block, so memory stays
        at one chunk however large the tensor. ``threads`` is ignored.
        """
        size = self.size
        if size == 0:
            return
        block = np.full(min(chunk_size, size), self.value, dtype=self.dtype)
        block.flags.writeable = False
        for offset in range(0, size, block.size):
            yield block[: min(block.size, size - offset)]

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        return np.full(self.shape, self.value, dtype=self.dtype)


@dataclass(frozen=True)
class CopyPlan:
    """A tensor copied byte for byte from the ``--like`` checkpoint.

    ``source`` is the checkpoint's path, read in chunks through
    ``vsgen.formats.readers.read_values`` (memory stays at one chunk);
    ``None`` when the values stay where they are (``vsgen.torch.init_``
    leaves such tensors untouched), in which case reading them is an error.
    """

    source: str | None
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return math.prod(self.shape)

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """The source's values as consecutive flat chunks of at most ``chunk_size``.

        Raises:
            ValueError: no source, or the source no longer holds this tensor
                with this dtype and size.
        """
        from vsgen.formats.readers import open_file, read_values

        if self.source is None:
            raise ValueError(
                f"tensor {self.name!r} is copied, but there is no checkpoint to copy from"
            )
        stored = open_file(self.source).tensor(self.name)
        if stored.numpy_dtype() != self.dtype or stored.size != self.size:
            raise ValueError(
                f"--like {self.source}: tensor {self.name!r} changed while it was copied"
            )
        copied = 0
        for values in read_values(stored, chunk_size):
            copied += values.size
            yield values
        if copied != self.size:
            raise ValueError(
                f"--like {self.source}: tensor {self.name!r} changed while it was copied"
            )

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        out = np.empty(self.shape, dtype=self.dtype)
        flat = out.reshape(-1)
        position = 0
        for chunk in self.chunks():
            flat[position : position + chunk.size] = chunk
            position += chunk.size
        return out


@dataclass(frozen=True)
class FixedRowsPlan:
    """A drawn tensor some of whose rows are then set to constants: an
    ``nn.Embedding``'s padding row, zero after the normal draw.

    ``set_rows`` are ``(row, value)`` pairs, rows of axis 0. The other values are
    ``base``'s, byte for byte; memory stays at ``base``'s chunks.
    """

    base: Plan
    set_rows: tuple[tuple[int, float], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the values produced."""
        return self.base.shape

    @property
    def dtype(self) -> np.dtype:
        """Output dtype of the values produced."""
        return self.base.dtype

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return self.base.size

    def _row_size(self) -> int:
        return math.prod(self.shape[1:])

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """``base``'s flat chunks, with the fixed rows' values replaced."""
        row_size = self._row_size()
        position = 0
        for chunk in self.base.chunks(chunk_size, threads):
            end = position + chunk.size
            for row, value in self.set_rows:
                low, high = max(position, row * row_size), min(end, (row + 1) * row_size)
                if low < high:
                    if not chunk.flags.writeable:
                        chunk = chunk.copy()
                    chunk[low - position : high - position] = value
            position = end
            yield chunk

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        out = self.base.array(threads)
        for row, value in self.set_rows:
            out[row] = value
        return out


@dataclass(frozen=True, eq=False)
class ArrayPlan:
    """A tensor whose values are already in memory, written as they are: a
    module's kept tensor (``vsgen.torch.save``). ``values`` is C-contiguous; it is
    read, never copied, until it is written."""

    values: np.ndarray
    name: str

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the values produced."""
        return tuple(self.values.shape)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the values produced."""
        return self.values.dtype

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return int(self.values.size)

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """The values as consecutive flat read-only views of at most ``chunk_size``."""
        flat = self.values.reshape(-1)
        for offset in range(0, flat.size, chunk_size):
            view = flat[offset : offset + chunk_size]
            view.flags.writeable = False
            yield view

    def array(self, threads: int | None = None) -> np.ndarray:
        """A copy of the values."""
        return self.values.copy()


# --------------------------------------------------------------------------
# The plan as a table


def _count(number: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if number >= size:
            return f"{number / size:.3g} {unit}"
    return f"{number:g}"


def _columns(lines: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def _shown_name(row: PlanRow) -> str:
    """The tensor's name, with the other names of a tied tensor."""
    if not row.aliases:
        return row.name
    return f"{row.name} (= {', '.join(row.aliases)})"


def _name_lines(names: Sequence[str], width: int = 96) -> list[str]:
    """Names, comma-separated, wrapped at ``width`` columns, indented."""
    lines: list[str] = []
    current = ""
    for name in names:
        piece = name if not current else f", {name}"
        if current and len(current) + len(piece) > width:
            lines.append(f"    {current},")
            piece = name
            current = ""
        current += piece
    if current:
        lines.append(f"    {current}")
    return lines


def plan_table(rows: Sequence[PlanRow], max_rows: int | None = None) -> list[str]:
    """The plan as text lines: one per tensor, or summarised.

    With more than ``max_rows`` rows (None: never), tensors are grouped by
    dtype, initializer and origin, with their count, number of values and
    the range of stddevs; the tensors that keep or copy their values are
    listed by name under their group (never folded away: a mask among them
    must show). A last line gives the totals. Pure: returns lines.
    """
    total = sum(row.size for row in rows)
    footer = f"{len(rows)} tensors, {_count(total)} values"
    if max_rows is None or len(rows) <= max_rows:
        lines = [["name", "shape", "dtype", "init", "values", "from"]]
        for row in rows:
            shape = "x".join(map(str, row.shape)) or "()"
            lines.append(
                [_shown_name(row), shape, row.dtype, row.init, row.values_text(), row.origin_text()]
            )
        return [*_columns(lines), footer]
    groups: dict[tuple[str, str, str], list[PlanRow]] = {}
    for row in rows:
        groups.setdefault((row.dtype, row.init, row.origin_text()), []).append(row)
    lines = [["tensors", "values", "dtype", "init", "stddev", "from"]]
    listed: dict[int, list[str]] = {}
    for (dtype, init, origin), members in groups.items():
        stddevs = [row.stddev for row in members if row.stddev is not None]
        if stddevs:
            low, high = min(stddevs), max(stddevs)
            spread = f"{low:.3g}" if low == high else f"{low:.3g}..{high:.3g}"
        else:
            spread = (
                members[0].values_text()
                if len(members) == 1
                or all(row.values_text() == members[0].values_text() for row in members)
                else "various"
            )
        if members[0].kind == "copy":
            listed[len(lines)] = [_shown_name(row) for row in members]
        lines.append(
            [
                str(len(members)),
                _count(sum(row.size for row in members)),
                dtype,
                init,
                spread,
                origin,
            ]
        )
    table = _columns(lines)
    out: list[str] = []
    for index, line in enumerate(table):
        out.append(line)
        if index in listed:
            out.extend(_name_lines(listed[index]))
    return [*out, footer]


# --------------------------------------------------------------------------
# Jobs


def _choose(
    entry: TensorEntry,
    rules: Sequence[tuple[str, Init]],
    default: Init | None,
    choice: Choice | None,
) -> tuple[Init, str, str | None, tuple[tuple[int, float], ...]]:
    """The init for a tensor, where it came from (recorded in provenance), why,
    and the rows its convention sets after drawing (none if a rule decides)."""
    if entry.init is not None:
        return entry.init, "tensor", None, ()
    for pattern, init in rules:
        if fnmatch.fnmatchcase(entry.name, pattern):
            return init, f"rule {pattern}", None, ()
    if choice is not None:
        if choice.init is None:
            origin = "default" if choice.origin == "builtin" else choice.origin
            return (default or Init()), origin, choice.reason, choice.rows
        return choice.init, choice.origin, choice.reason, choice.rows
    builtin = builtin_init(entry.name, entry.shape, entry.dtype or resolve_dtype(None))
    if builtin is not None:
        return builtin[0], "builtin", builtin[1], ()
    return (default or Init()), "default", None, ()


def _is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind not in "biu"


def build_job(
    spec: ModelSpec | None = None,
    like: str | os.PathLike[str] | Sequence[TensorInfo] | None = None,
    *,
    seed: int | None = None,
    dtype: object = None,
    layout: str | None = None,
    stream: str | None = None,
    init: Init | None = None,
    convention: str | None = None,
    choices: Mapping[str, Choice] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> ModelJob:
    """Plan every tensor of a model.

    Tensors come from ``spec.tensors`` or, with ``like``, from an existing
    checkpoint: its path (headers are read with :func:`like_tensors`; tensors
    that are copied are read from it when written) or its tensor list (then
    copied tensors have no source: :class:`CopyPlan` with ``source=None``, shown
    as ``kept``: a module's own values). With ``like`` the spec only gives rules
    and defaults and must list no tensors. Keyword arguments override the spec's
    top-level values (they are the command line's ``--seed``, ``--dtype``,
    ``--layout``, ``--stream`` and initializer options); ``dtype`` also replaces
    the dtypes of floating ``like`` tensors, which otherwise keep their own;
    integer and bool tensors, and every copied tensor, keep theirs. Without any
    seed a global seed is drawn below 2**53 (``seed_was_drawn`` is then True).

    What a tensor gets that no tensor ``init`` and no rule covers is the
    ``convention``'s choice (:mod:`vsgen.conventions`: ``"vsgen"``, the default,
    or ``"torch"``), decided from the names, shapes and dtypes; ``choices`` (by
    name) replace it where the caller knows better (``vsgen.torch`` knows each
    tensor's module). Without ``layout`` a ``like`` checkpoint whose names look
    like PyTorch's (rank >= 2 ``*.weight`` tensors, no ``kernel``) or a
    convention of PyTorch's uses the ``torch`` layout. ``aliases`` (name ->
    other names of the same tensor, tied weights) are recorded with the tensor
    and shown in the plan.

    Raises:
        ValueError: no tensors, tensors in both spec and ``like``, an unknown
            convention, or a tensor its initializer cannot serve (message names
            the tensor).
    """
    from vsgen import conventions

    chosen_convention = conventions.get_convention(convention)
    prefix = "" if spec is None else f"{spec.source}: "
    spec = spec or ModelSpec()
    source = spec.source
    like_path: str | None = None
    if isinstance(like, (str, os.PathLike)):
        like_path = os.fspath(like)
        like = like_tensors(like_path)
    if like is not None and spec.tensors:
        raise ValueError(
            f"{source}: lists tensors, but with --like the tensors come from the checkpoint; "
            "give initializers as [rules] instead (an exact name is a pattern too)"
        )
    override_dtype = None if dtype is None else resolve_dtype(dtype)
    default_dtype = _first_dtype(override_dtype, spec.dtype, resolve_dtype(None))
    layout_given = layout is not None or spec.layout is not None
    # None: each initializer's own default (keras; torch for PyTorch's presets).
    layout = layout if layout is not None else spec.layout
    if layout is not None:
        check_layout(layout)
    stream = get_stream(stream).name if stream is not None else spec.stream or DEFAULT_STREAM
    default_init = init if init is not None else spec.init

    entries: list[TensorEntry]
    if like is not None:
        # The checkpoint's own dtype goes into the entry; --dtype applies below.
        entries = [TensorEntry(info.name, info.shape, info.dtype) for info in like]
    else:
        entries = [
            TensorEntry(e.name, e.shape, _first_dtype(e.dtype, default_dtype), e.init, e.seed)
            for e in spec.tensors
        ]
    if not entries:
        what = "the checkpoint holds" if like is not None else f"{source}: lists"
        raise ValueError(f"{what} no tensors")

    seed_was_drawn = False
    global_seed = seed if seed is not None else spec.seed
    if global_seed is None:
        global_seed = secrets.randbelow(2**JSON_SAFE_SEED_BITS)
        seed_was_drawn = True
    else:
        global_seed = _parse_seed(global_seed, "Argument `seed`", MAX_GLOBAL_SEED)

    if like is not None and not layout_given:
        if chosen_convention.layout is not None:
            layout = chosen_convention.layout
        elif _looks_like_torch(entries):
            layout = "torch"
    by_name = dict(chosen_convention.classify(entries, like is not None))
    if choices is not None:
        by_name.update(choices)
    job = ModelJob(seed=global_seed, seed_was_drawn=seed_was_drawn)
    for entry in entries:
        if entry.name in job.records:
            raise ValueError(f"tensor {entry.name!r} appears twice")
        chosen, origin, reason, rows = _choose(
            entry, spec.rules, default_init, by_name.get(entry.name)
        )
        dtype_ = _first_dtype(entry.dtype, default_dtype)
        if (
            like is not None
            and override_dtype is not None
            and _is_float(dtype_)
            and not chosen.copy
        ):
            dtype_ = override_dtype
        try:
            if chosen.copy and like is None:
                raise ValueError("'copy' needs a checkpoint to copy from (--like)")
            plan, record = _plan_tensor(
                entry, chosen, dtype_, global_seed, layout, stream, like_path
            )
            if rows:
                plan = FixedRowsPlan(plan, _checked_rows(rows, entry.shape, dtype_))
                record["set_rows"] = [[row, value] for row, value in plan.set_rows]
        except (ValueError, TypeError) as error:
            raise ValueError(f"{prefix}tensor {entry.name!r} ({origin}): {error}") from None
        record["init"] = chosen.as_json()
        record["init_from"] = origin
        tied = tuple(aliases.get(entry.name, ())) if aliases is not None else ()
        if tied:
            record["aliases"] = list(tied)
            job.aliases.update({alias: entry.name for alias in tied})
        job.infos.append(TensorInfo(entry.name, entry.shape, dtype_))
        job.plans.append(plan)
        job.records[entry.name] = record
        label = "kept" if chosen.copy and like is not None and like_path is None else None
        job.rows.append(
            _row(entry, dtype_, chosen, origin, reason, plan, record, label=label, aliases=tied)
        )
    return job


def _checked_rows(
    rows: Sequence[tuple[int, float]], shape: Sequence[int], dtype: np.dtype
) -> tuple[tuple[int, float], ...]:
    """Rows set to constants: indices of axis 0 of ``shape``, values the dtype can hold."""
    checked = []
    for row, value in rows:
        if not shape or not 0 <= row < shape[0]:
            raise ValueError(f"row {row} to set is outside the tensor's shape {tuple(shape)}")
        checked.append((int(row), _constant_for(float(value), np.dtype(dtype))))
    return tuple(checked)


def _looks_like_torch(entries: Sequence[TensorEntry]) -> bool:
    """PyTorch names weights ``*.weight``, Keras ``*/kernel``: the names decide the
    default layout of a ``like`` checkpoint."""
    leaves = [_name_parts(e.name)[-1] for e in entries if len(e.shape) >= 2]
    return "weight" in leaves and "kernel" not in leaves and "embeddings" not in leaves


def _row(
    entry: TensorEntry,
    dtype: np.dtype,
    chosen: Init,
    origin: str,
    reason: str | None,
    plan: Plan,
    record: Mapping[str, Any],
    *,
    label: str | None = None,
    aliases: tuple[str, ...] = (),
) -> PlanRow:
    common = {
        "name": entry.name,
        "shape": tuple(entry.shape),
        "dtype": np.dtype(dtype).name,
        "kind": record["kind"],
        "init": label or chosen.label(),
        "origin": origin,
        "reason": reason,
        "aliases": aliases,
        "set_rows": tuple(getattr(plan, "set_rows", ())),
    }
    if isinstance(plan, FixedRowsPlan):
        plan = plan.base
    if isinstance(plan, SamplePlan):
        scaling = plan.scaling
        return PlanRow(
            **common,
            distribution=scaling.distribution,
            stddev=scaling.stddev,
            bound=scaling.bound if scaling.distribution != "uniform" else scaling.multiplier,
            fan_in=scaling.fan_in,
            fan_out=scaling.fan_out,
            seed=plan.draw.seed,
            mean=None if scaling.n is not None else scaling.mean,
        )
    if isinstance(plan, ConstantPlan):
        return PlanRow(**common, value=plan.value)
    return PlanRow(**common)


def _first_dtype(*candidates: np.dtype | None) -> np.dtype:
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return resolve_dtype(None)


def _constant_for(value: float, dtype: np.dtype) -> float:
    """``value`` checked against an integer or bool ``dtype`` (floats take any value)."""
    if _is_float(dtype):
        return value
    if not float(value).is_integer():
        raise ValueError(f"a {dtype.name} tensor cannot hold the constant {value:g}")
    if dtype.kind == "b":
        if value not in (0.0, 1.0):
            raise ValueError(f"a bool tensor holds 0 or 1, not {value:g}")
    else:
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise ValueError(f"the constant {value:g} does not fit {dtype.name}")
    return value


def _plan_tensor(
    entry: TensorEntry,
    chosen: Init,
    dtype: np.dtype,
    global_seed: int,
    layout: str | None,
    stream: str,
    like_path: str | None = None,
) -> tuple[Plan, dict[str, Any]]:
    shape = normalize_shape(entry.shape)
    if chosen.copy:
        return CopyPlan(like_path, entry.name, np.dtype(dtype), shape), {
            "kind": "copy",
            "dtype": np.dtype(dtype).name,
            "shape": list(shape),
        }
    if chosen.constant is not None:
        value = _constant_for(chosen.constant, np.dtype(dtype))
        constant_plan = ConstantPlan(value, np.dtype(dtype), shape)
        with np.errstate(over="ignore"):
            stored = np.asarray(value, dtype=constant_plan.dtype)
        if not np.isfinite(stored.astype(np.float64)):
            raise ValueError(
                f"constant {value:g} overflows {constant_plan.dtype.name} "
                "(it would be stored as infinity)"
            )
        record = provenance.constant_record(value, constant_plan.dtype, shape)
        return constant_plan, record
    if not _is_float(dtype):
        raise ValueError(
            f"a {np.dtype(dtype).name} tensor cannot be drawn at random; "
            'give it "copy" or a constant'
        )
    stream_name = chosen.stream_name(stream)
    if entry.seed is not None:
        tensor_seed, how = entry.seed, "explicit"
    else:
        tensor_seed, how = derive_seed(global_seed, entry.name, stream_name), "derived"
    initializer = chosen.initializer(tensor_seed, layout, stream)
    plan = initializer.plan(entry.shape, dtype)
    record = provenance.tensor_record(initializer, plan)
    record["seed_from"] = how
    if how == "derived":
        record["global_seed"] = global_seed
        record["seed_rule"] = SEED_RULE.replace("bits", str(get_stream(stream_name).seed_bits))
    return plan, record


def model_job(
    source: Any,
    *,
    seed: int | None = None,
    dtype: object = None,
    layout: str | None = None,
    stream: str | None = None,
    init: Any = None,
    rules: Mapping[str, Any] | None = None,
) -> ModelJob:
    """The job of a model, as ``vsgen sample --spec/--like`` makes it.

    ``source`` is a spec (a ``.toml``/``.json`` path, its dict, or a
    :class:`~vsgen.modelspec.ModelSpec`), any other path (a checkpoint whose
    names, shapes and dtypes are kept: ``--like``; its integer tensors are
    copied from it), or a :class:`ModelJob`, returned as it is. The keywords are
    the command line's: ``seed`` (``--seed``, the global seed), ``dtype``,
    ``layout``, ``stream``, ``init`` (the default initializer of tensors of rank
    >= 2 no rule covers: a preset name, a spec's initializer table, a
    :class:`~vsgen.modelspec.Init` or an initializer object) and ``rules`` (glob
    pattern -> initializer, before the spec's own rules; the first match wins).

    Raises:
        ValueError: a malformed spec, rule or initializer, an unreadable
            checkpoint, or keywords given with a finished job.
        TypeError: ``source`` or ``rules`` of the wrong type.
    """
    if isinstance(source, ModelJob):
        given = {
            "seed": seed,
            "dtype": dtype,
            "layout": layout,
            "stream": stream,
            "init": init,
            "rules": rules,
        }
        extra = [key for key, value in given.items() if value is not None]
        if extra:
            raise ValueError(
                f"Argument `source` is a finished ModelJob, which {', '.join(extra)} cannot "
                "change: build the job with them (vsgen.modelspec.build_job) or pass its spec. "
                f"Received: {', '.join(f'{key}={given[key]!r}' for key in extra)}"
            )
        return source
    spec: ModelSpec | None = None
    like: str | None = None
    if isinstance(source, ModelSpec):
        spec = source
    elif isinstance(source, Mapping):
        spec = parse_spec(source, source="Argument `source`")
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.lower().endswith((".toml", ".json")):
            spec = load_spec(path)
        else:
            like = path
    else:
        raise TypeError(
            "Argument `source` must be a spec (a .toml/.json path, a dict or a ModelSpec), "
            f"a checkpoint path or a ModelJob. Received: {type(source).__name__}"
        )
    if rules is not None:
        spec = _with_rules(spec or ModelSpec(source="Argument `rules`"), rules)
    return build_job(
        spec,
        like,
        seed=seed,
        dtype=dtype,
        layout=layout,
        stream=stream,
        init=_default_init(init),
    )


def _default_init(init: Any) -> Init | None:
    """A default initializer given as a name, a table, an Init or an initializer."""
    if init is None or isinstance(init, Init):
        return init
    if isinstance(init, RandomInitializer):
        return init_from_initializer(init)
    return parse_init(init, "Argument `init`")


def _with_rules(spec: ModelSpec, rules: Mapping[str, Any]) -> ModelSpec:
    """``spec`` with ``rules`` before its own (the first match wins)."""
    if not isinstance(rules, Mapping):
        raise TypeError(
            f"Argument `rules` must map glob patterns to initializers. Received: rules={rules!r}"
        )
    extra = parse_spec({"rules": dict(rules)}, source="Argument `rules`").rules
    return replace(spec, rules=extra + spec.rules)


def like_tensors(path: str) -> list[TensorInfo]:
    """Names, shapes and dtypes of an existing checkpoint (headers only).

    Floating tensors are recreated; integer and bool tensors are copied
    (see :func:`builtin_init`).

    Raises:
        ValueError: the file is missing, unreadable as a checkpoint, or holds
            a dtype vsgen can neither write nor copy (complex, float8...).
    """
    from vsgen.formats import read_tensor_infos

    if "://" not in path and not os.path.exists(path):  # a URL: the reader says
        raise ValueError(f"--like: file not found: {path}")
    try:
        return read_tensor_infos(path)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--like: {error}") from None
    except KeyError as error:
        raise ValueError(f"--like: {path} has an unreadable header ({error})") from None


def job_from_file(path: str, names: Sequence[str] | None = None) -> ModelJob:
    """Re-plan the tensors a vsgen file records, to regenerate it byte for byte.

    Every tensor of the file (or those in ``names``), in the file's order,
    with the file's dtypes, from its own record: an initializer's config,
    seed, stream, layout, rows and fan shape, or a constant. The records are
    kept as read, so the new file carries the same provenance.

    Raises:
        ValueError: the file is unreadable, records no provenance, or a
            record is malformed or describes a tensor that cannot be
            regenerated (the message names the file, the tensor and the field).
    """
    from vsgen.formats.readers import open_file

    tensor_file = open_file(path)
    records = provenance.parse_metadata(tensor_file.metadata, path)
    wanted = list(names) if names is not None else tensor_file.names
    job = ModelJob(seed=0, seed_was_drawn=False)
    for name in wanted:
        stored = tensor_file.tensor(name)
        record = records.get(name)
        if record is None:
            raise ValueError(f"{path}: tensor {name[:200]!r} has no vsgen record")
        try:
            plan = _plan_from_record(record)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError) as error:
            detail = f"field {error} is missing" if isinstance(error, KeyError) else str(error)
            raise ValueError(
                f"{path}: the vsgen record of tensor {name[:200]!r} is malformed: "
                f"{' '.join(detail.split())[:300]}"
            ) from None
        info = TensorInfo(name, plan.shape, plan.dtype)
        if info.shape != stored.shape or info.dtype.name != stored.dtype:
            raise ValueError(
                f"{path}: tensor {name[:200]!r} is {stored.shape} {stored.dtype} in the file but "
                f"its record says {info.shape} {info.dtype.name}"
            )
        job.infos.append(info)
        job.plans.append(plan)
        job.records[name] = record
    if not job.plans:
        raise ValueError(f"{path} holds no tensors")
    return job


def _plan_from_record(record: Mapping[str, Any]) -> Plan:
    """The plan a provenance record describes (``KeyError`` names a missing field)."""
    kind = record.get("kind", "variance_scaling")
    if kind == "constant":
        value = record["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"field 'value' is {str(value)[:40]}, not a number")
        shape = provenance.record_shape(record, "shape")
        return ConstantPlan(float(value), resolve_dtype(record["dtype"]), shape)
    if not provenance.is_sampled(record):
        raise ValueError(
            f"field 'kind' is {str(kind)[:40]!r}; only sampled and constant tensors "
            "can be regenerated"
        )
    replayed = provenance.replay(record)
    plan: Plan = replayed.initializer.plan(
        replayed.full_shape,
        record["dtype"],
        rows=replayed.rows,
        fan_shape=replayed.fan_shape,
    )
    if record.get("set_rows"):
        plan = FixedRowsPlan(plan, _recorded_rows(record["set_rows"], plan))
    return plan


def _recorded_rows(value: object, plan: Plan) -> tuple[tuple[int, float], ...]:
    """A record's ``set_rows``: ``[[row, value], ...]`` within the tensor."""
    if not isinstance(value, list) or not all(
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], int)
        and not isinstance(item[0], bool)
        and isinstance(item[1], (int, float))
        and not isinstance(item[1], bool)
        for item in value
    ):
        raise ValueError("field 'set_rows' is not a list of [row, value] pairs")
    return _checked_rows([(row, float(v)) for row, v in value], plan.shape, plan.dtype)
