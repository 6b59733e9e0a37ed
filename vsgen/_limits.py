"""Caps on what vsgen reads, and the bounded JSON/TOML parsers that enforce them.

A ground-floor utility: the core (``initializer.loads``, ``provenance``,
``modelspec``), the command line and the file readers of :mod:`vsgen.formats`
all parse documents through it, and it imports nothing of vsgen.

Every document vsgen reads (a ``--config``, a ``--spec``, a safetensors
header, the provenance a file carries) may come from a stranger. The caps
below bound the time and memory spent on any of them, and the parsers turn
every way a document can be wrong (too large, nested too deeply, numbers
Python cannot represent, ``NaN``/``Infinity``, duplicate keys) into a
one-line ``ValueError`` that names the document, instead of a
``RecursionError``, ``OverflowError`` or an unbounded read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

#: Deepest nesting of arrays/objects (tables) accepted in any document. vsgen's
#: own documents nest at most 5 levels; Python's parsers recurse per level.
MAX_NESTING = 64
#: Largest ``--config`` document (an initializer config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
#: Largest ``--spec`` file in JSON (a tensor entry is some 40 bytes).
MAX_SPEC_BYTES = 16 << 20
#: Largest ``--spec`` file in TOML: Python's TOML parser needs about 1 s and
#: 70 MB per MiB of tables, so TOML specs are kept smaller than JSON ones.
MAX_TOML_BYTES = 1 << 20
#: Largest safetensors header: the format's own limit (the reference reader
#: refuses larger headers).
SAFETENSORS_MAX_HEADER = 100_000_000
#: Most values (array elements, object members) in one JSON document. Each
#: parsed value costs Python 50-150 bytes, so this bounds a document's parsed
#: form to about 150 MB whatever its text; a safetensors header needs about
#: 5 per tensor, so this admits some 200,000 tensors.
MAX_JSON_ITEMS = 1 << 20
#: Largest metadata text (an HDF5 attribute or the provenance document) read.
MAX_METADATA_BYTES = SAFETENSORS_MAX_HEADER
#: Most dimensions of a stored tensor.
MAX_RANK = 64
#: Most tensors in one file (or npy directory, Zarr store, shard directory, model
#: spec). Real single-file checkpoints hold a few thousand; ``check`` spends about
#: a millisecond per tiny tensor, so this also bounds the work a file of many
#: empty tensors can ask for.
MAX_TENSORS = 1 << 16
#: Most chunk files of one Zarr store, and blocks of one block-written output:
#: vsgen makes one file (or task) per chunk, so a grid of 1x1 chunks of a
#: 65536x65536 tensor (4.3e9 files) is refused before anything is made.
MAX_CHUNKS = 1 << 20
#: Most nodes (groups and arrays) a Zarr store may hold, and deepest nesting of
#: its groups (a name of ``/``-separated parts).
MAX_NODES = MAX_TENSORS + 1024
MAX_NODE_DEPTH = MAX_NESTING
#: Largest ``zarr.json`` (vsgen's hold the provenance of one tensor, or of the
#: model at the root) and largest shard index (about 60 bytes per tensor).
MAX_NODE_BYTES = 16 << 20
MAX_INDEX_BYTES = 64 << 20
#: Most threads a caller may ask for (``--threads``): more than any machine has.
MAX_THREADS = 1 << 12


def open_document(path: str, what: str) -> IO[bytes]:
    """``path`` opened for reading as a document (a ``--config``, a ``--spec``).

    Opened without blocking and judged on the descriptor (``fstat``): a FIFO or a
    socket is refused (ValueError starting with ``what``) instead of waiting for a
    writer forever; a regular file or a device (``/dev/zero``, read up to the
    caller's cap) is returned, blocking again, as a binary file object.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: as ``open`` does.
        ValueError: a FIFO or a socket.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket"
            raise ValueError(
                f"{what} is {kind}, not a file; vsgen does not wait on it (pipe it into "
                "standard input with '-' instead)"
            )
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_text(handle: IO[bytes], limit: int, what: str) -> str:
    """UTF-8 text of at most ``limit`` bytes from ``handle`` (see :func:`read_capped`)."""
    data = read_capped(handle, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} is not UTF-8 text (byte {error.start})") from None


def read_capped(handle: IO[bytes], limit: int, what: str) -> bytes:
    """At most ``limit`` bytes from ``handle``; ValueError if there are more.

    Reads ``limit + 1`` bytes at most, so an endless source (``/dev/zero``,
    a pipe that never ends) costs ``limit`` bytes of memory, not all of it.
    """
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} is larger than {_size(limit)}; refusing to read it")
    return data


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count:,} bytes"


def _pieces(data: bytes | str, size: int = 1 << 20) -> Iterator[bytes]:
    """``data`` as UTF-8 bytes, ``size`` bytes (or characters) at a time."""
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        yield piece.encode("utf-8", "surrogatepass") if isinstance(piece, str) else piece


def json_structure(
    data: bytes | str,
    stop_items: int | None = None,
    stop_depth: int | None = None,
    piece_size: int = 1 << 20,
) -> tuple[int, int]:
    """``(items, depth)`` of a JSON text without parsing it.

    ``items`` counts the structural ``,``, ``[`` and ``{`` (an upper bound on
    the number of values the parser would build, less one) and ``depth`` the
    deepest nesting, ignoring everything inside strings. Runs over the text
    in pieces of ``piece_size`` (``bytes.count`` where a piece has no quote, NumPy
    where it has), so it costs a few MiB of memory whatever the text, and
    stops early once ``stop_items`` or ``stop_depth`` is exceeded. For text
    that is not valid JSON the counts are approximate; they agree with the
    parser on every valid prefix, which is all the parser builds before it
    fails.
    """
    import numpy

    items = depth = max_depth = 0
    inside = False
    backslashes = 0  # length of the backslash run ending the previous piece
    for piece in _pieces(data, piece_size):
        if b'"' not in piece:
            if not inside:
                opened = piece.count(b"[") + piece.count(b"{")
                items += piece.count(b",") + opened
                if opened or piece.count(b"]") or piece.count(b"}"):
                    chunk = numpy.frombuffer(piece, numpy.uint8)
                    max_depth, depth = _levels(
                        chunk, numpy.ones(chunk.size, dtype=bool), depth, max_depth
                    )
        else:
            chunk = numpy.frombuffer(piece, numpy.uint8)
            quotes = numpy.flatnonzero(chunk == 34)
            if backslashes or b"\\" in piece:
                quotes = quotes[_escape_runs(chunk, quotes, backslashes) % 2 == 0]
            toggles = numpy.zeros(chunk.size, dtype=numpy.uint8)
            toggles[quotes] = 1
            # Parity of the real quotes up to and including each position.
            outside = numpy.bitwise_xor.accumulate(toggles) == int(inside)
            del toggles
            items += int(
                numpy.count_nonzero(((chunk == 44) | (chunk == 91) | (chunk == 123)) & outside)
            )
            max_depth, depth = _levels(chunk, outside, depth, max_depth)
            inside = not bool(outside[-1])
        trailing = len(piece) - len(piece.rstrip(b"\\"))
        backslashes = trailing + (backslashes if trailing == len(piece) else 0)
        if (stop_items is not None and items > stop_items) or (
            stop_depth is not None and max_depth > stop_depth
        ):
            break
    return items, max_depth


def _levels(chunk: Any, outside: Any, depth: int, max_depth: int) -> tuple[int, int]:
    """Deepest level reached in ``chunk`` and the level after it."""
    import numpy

    positions = numpy.flatnonzero(
        ((chunk == 91) | (chunk == 123) | (chunk == 93) | (chunk == 125)) & outside
    )
    if positions.size == 0:
        return max_depth, depth
    codes = chunk[positions]
    steps = numpy.where((codes == 91) | (codes == 123), 1, -1)
    levels = numpy.cumsum(steps) + depth
    return max(max_depth, int(levels.max())), int(levels[-1])


def _escape_runs(chunk: Any, quotes: Any, carried: int) -> Any:
    """Length of the backslash run right before each quote (an odd run escapes it).

    Runs are short in real text (``\\"`` inside a string is one backslash), so
    they are measured by stepping back from the quotes a few positions at a
    time; a piece with a longer run falls back to one pass over the piece.
    """
    import numpy

    runs = numpy.zeros(quotes.size, dtype=numpy.int64)
    active = numpy.arange(quotes.size)
    for step in range(1, 9):
        positions = quotes[active] - step
        before_start = positions < 0
        # A run reaching back past the piece's start continues the previous piece's.
        runs[active[before_start]] += carried
        inside = ~before_start
        backslash = numpy.zeros(active.size, dtype=bool)
        backslash[inside] = chunk[positions[inside]] == 92
        active = active[backslash]
        runs[active] += 1
        if active.size == 0:
            return runs
    index = numpy.arange(chunk.size, dtype=numpy.int64)
    # Index of the last non-backslash at or before each position (-1: none).
    last_plain = numpy.maximum.accumulate(numpy.where(chunk == 92, -1, index))
    before = numpy.maximum(quotes - 1, 0)
    run = numpy.where(quotes > 0, quotes - 1 - last_plain[before], 0)
    reaches_start = (quotes == 0) | (last_plain[before] < 0)
    return run + numpy.where(reaches_start, carried, 0)


def _non_finite_path(document: Any) -> str | None:
    """Where the first NaN or infinity sits in a parsed document, e.g. ``'config'.'scale'``
    (``""``: the document itself; None: nowhere)."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where
        if isinstance(value, dict):
            stack.extend(
                (child, f"{where}.{key[:80]!r}".lstrip(".")) for key, child in value.items()
            )
        elif isinstance(value, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(value))
    return None


def loads_json(
    text: str | bytes,
    what: str,
    *,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    max_items: int = MAX_JSON_ITEMS,
    max_depth: int = MAX_NESTING,
) -> Any:
    """Parse a JSON document under vsgen's caps; ``what`` names it in errors.

    Refuses (ValueError, one line starting with ``what``): more than
    ``max_items`` values or ``max_depth`` levels (checked before parsing, so
    nothing large is built), invalid JSON, ``NaN``/``Infinity``, floats that
    overflow (``1e400``), integers of more than 4300 digits, duplicate keys
    (unless ``object_pairs_hook`` decides otherwise).
    """
    # A short text with few brackets can neither hold many values nor nest deeply:
    # it needs no pre-scan (whose fixed cost would dominate the thousands of small
    # documents of a store).
    if isinstance(text, bytes):
        opened = text.count(b"[") + text.count(b"{")
    else:
        opened = text.count("[") + text.count("{")
    if len(text) > min(_SMALL_DOCUMENT, max_items) or opened > max_depth:
        items, depth = json_structure(text, max_items, max_depth)
        if depth > max_depth:
            raise ValueError(
                f"{what}: nested too deeply ({depth} levels; at most {max_depth} are allowed)"
            )
        if items > max_items:
            raise ValueError(f"{what}: holds over {max_items:,} values; refusing to parse it")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{what}: not UTF-8 text (byte {error.start})") from None
    non_finite: list[str] = []

    def constant(name: str) -> float:
        non_finite.append(name)
        return float(name)  # Python's float() reads NaN, Infinity and -Infinity

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            non_finite.append(text[:40])
        return value

    try:
        document = json.loads(
            text,
            object_pairs_hook=object_pairs_hook or no_duplicates,
            parse_constant=constant,
            parse_float=number,
        )
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{what}: invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:  # the pre-scan bounds depth; kept for the parser's own limit
        raise ValueError(f"{what}: nested too deeply") from None
    except ValueError as error:  # duplicate keys, 10**5000
        message = " ".join(str(error).split())
        if "integer string conversion" in message:
            message = "an integer has more than 4300 digits"
        raise ValueError(f"{what}: {message}") from None
    if non_finite:
        # NaN, Infinity (not JSON) and 1e400 (beyond float64): name the field.
        where = _non_finite_path(document)
        subject = "a value" if where is None else f"field {where}" if where else "the document"
        raise ValueError(f"{what}: {subject} is {non_finite[0]}, not a finite number")
    return document


#: Texts up to this length with few brackets are parsed without the pre-scan.
_SMALL_DOCUMENT = 1 << 16


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` refusing a key that appears twice (which one would count?)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key[:80]!r} appears twice")
            seen.add(key)
    return result


def loads_toml(text: str, what: str, *, max_depth: int = MAX_NESTING) -> Any:
    """Parse a TOML document; nesting beyond ``max_depth`` and floats that are
    not finite are refused with a ValueError that starts with ``what``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    # TOML nests with brackets and braces; counting them in strings too
    # over-estimates, which only matters for texts that are refused anyway.
    if _bracket_depth(text) > 4 * max_depth:
        raise ValueError(f"{what}: nested too deeply (over {max_depth} levels)")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{what}: invalid TOML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise ValueError(f"{what}: nested too deeply") from None
    check_depth(document, what, max_depth)
    return document


def _bracket_depth(text: str) -> int:
    """Deepest nesting of ``[{`` / ``]}`` in ``text``, strings included (an upper bound)."""
    import numpy

    data = text.encode("utf-8", "surrogatepass")
    level = floor = deepest = 0
    piece = 1 << 22
    for start in range(0, len(data), piece):
        codes = numpy.frombuffer(
            data, dtype=numpy.uint8, count=min(piece, len(data) - start), offset=start
        )
        steps = (codes == 91).astype(numpy.int64) + (codes == 123) - (codes == 93) - (codes == 125)
        if not steps.any():
            continue
        levels = numpy.cumsum(steps) + level
        # A closer without an opener does not go below zero: measure from the lowest level so far.
        floors = numpy.minimum(numpy.minimum.accumulate(levels), floor)
        deepest = max(deepest, int((levels - floors).max()))
        level, floor = int(levels[-1]), int(floors[-1])
    return deepest


def check_depth(document: Any, what: str, max_depth: int = MAX_NESTING) -> None:
    """ValueError if ``document`` (parsed JSON/TOML) nests deeper than ``max_depth``
    or holds a float that is not finite. Iterative: never recurses."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{what}: holds the non-finite number {value}")
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if level >= max_depth:
            raise ValueError(f"{what}: nested too deeply (over {max_depth} levels)")
        stack.extend((child, level + 1) for child in children)
