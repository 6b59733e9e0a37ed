"""vsgen._limits: the caps on what vsgen reads and the bounded JSON/TOML parsers.

The JSON pre-scan is checked against a plain character loop (a separate
implementation); every refusal is one line that names the document and, where
there is one, the field.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsgen import _limits as limits

# --- the JSON pre-scan --------------------------------------------------------------------


def reference_structure(data: bytes) -> tuple[int, int]:
    """Items and depth by a plain character loop (a separate implementation)."""
    items = depth = deepest = 0
    inside = escaped = False
    for code in data:
        character = chr(code)
        if inside:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                inside = False
        elif character == '"':
            inside = True
        elif character in "[{":
            items += 1
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
        elif character == ",":
            items += 1
    return items, deepest


TRICKY = st.text(alphabet='[]{},"\\:ax\n\u00e9\U0001f600', max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.integers(-5, 10**6) | TRICKY,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TRICKY, children, max_size=4),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(value=JSON_VALUES, ascii_only=st.booleans(), piece=st.integers(1, 9))
def test_json_structure_matches_a_character_loop(value, ascii_only, piece):
    text = json.dumps(value, ensure_ascii=ascii_only)
    data = text.encode()
    expected = reference_structure(data)
    # Tiny pieces put quotes, escapes and brackets on every piece boundary.
    assert limits.json_structure(data, piece_size=piece) == expected
    assert limits.json_structure(data) == expected
    if ascii_only:  # str pieces count characters; equal to bytes for ASCII
        assert limits.json_structure(text, piece_size=piece) == expected


def test_json_structure_stops_early():
    data = b"[" + b"0," * 1_000_000 + b"0]"
    items, _ = limits.json_structure(data, stop_items=10, piece_size=1000)
    assert 10 < items <= 1000


def test_loads_json_counts_values_before_building_them():
    with pytest.raises(ValueError, match="over 10 values"):
        limits.loads_json("[" + "[]," * 20 + "[]]", "doc", max_items=10)
    assert limits.loads_json("[1, 2, 3]", "doc", max_items=10) == [1, 2, 3]


def test_loads_toml_bounds_nesting():
    with pytest.raises(ValueError, match="nested too deeply"):
        limits.loads_toml("a = " + "[" * 1000 + "]" * 1000, "spec.toml")
    with pytest.raises(ValueError, match="nested too deeply"):
        # Dotted keys nest without brackets; the parsed document is checked too.
        limits.loads_toml(".".join(f"k{i}" for i in range(100)) + " = 1", "spec.toml")
    assert limits.loads_toml("a = [[1], [2]]", "spec.toml") == {"a": [[1], [2]]}


def test_read_capped_reads_one_byte_past_the_cap():
    import io

    handle = io.BytesIO(bytes(1 << 20))
    with pytest.raises(ValueError, match="larger than 1 KiB"):
        limits.read_capped(handle, 1024, "zeros")
    assert handle.tell() == 1025
    with open("/dev/zero", "rb") as endless, pytest.raises(ValueError, match="larger than"):
        limits.read_capped(endless, 1024, "/dev/zero")
    assert limits.read_capped(io.BytesIO(b"abc"), 3, "abc") == b"abc"


# --- escapes the pre-scan must see through -----------------------------------------------

# Runs of backslashes longer than the pre-scan's 8-step walk back from a quote, and
# quotes and brackets right after them, on every piece boundary.
RUNS = st.lists(
    st.sampled_from(["\\" * n for n in (1, 2, 3, 7, 8, 9, 16, 17)] + ['"', "[", "{", ",", "a"]),
    max_size=6,
).map("".join)
RUN_VALUES = st.recursive(
    RUNS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(RUNS, children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(value=RUN_VALUES, piece=st.integers(1, 40))
def test_json_structure_sees_through_long_escape_runs(value, piece):
    data = json.dumps(value).encode()
    assert limits.json_structure(data, piece_size=piece) == reference_structure(data)


def reference_runs(chunk: bytes, carried: int) -> list[int]:
    """Backslashes right before each quote, the run carried in from before the
    chunk added where a run reaches the chunk's start (a plain loop)."""
    runs = []
    for position, code in enumerate(chunk):
        if code != ord('"'):
            continue
        run = 0
        while position - run - 1 >= 0 and chunk[position - run - 1] == ord("\\"):
            run += 1
        runs.append(run + (carried if run == position else 0))
    return runs


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    # Runs of 8 and 9 reach past the step-by-step walk back into its one-pass fallback.
    chunk=st.lists(
        st.sampled_from([b"\\", b"\\" * 8, b"\\" * 9, b'"', b"a"]), min_size=1, max_size=12
    ).map(b"".join),
    carried=st.integers(0, 20),
)
def test_escape_runs_match_a_character_loop(chunk, carried):
    import numpy

    codes = numpy.frombuffer(chunk, numpy.uint8)
    quotes = numpy.flatnonzero(codes == 34)
    runs = limits._escape_runs(codes, quotes, carried)
    assert runs.dtype.kind == "i" and runs.tolist() == reference_runs(chunk, carried)


def test_a_backslash_run_carried_across_pieces_escapes_the_next_quote():
    # '"a\\"]"': the quote after the backslash is escaped; with pieces of 3 the
    # backslash ends one piece and the escaped quote starts the next.
    data = b'["a\\"]", 1]'
    assert reference_structure(data) == (2, 1)
    for piece in range(1, len(data) + 1):
        assert limits.json_structure(data, piece_size=piece) == (2, 1), piece
    # A text that opens with a string: nothing is carried into the first piece.
    assert limits.json_structure(b'"[{,"', piece_size=2) == (0, 0)


def test_json_structure_counts_str_text_with_lone_surrogates():
    # Python's json accepts lone surrogates in str text; the scan must not choke on them.
    text = '["\ud800", {"\udfff": [1]}]'
    assert limits.json_structure(text) == reference_structure(text.encode("utf-8", "surrogatepass"))
    assert limits.loads_json(text, "doc") == ["\ud800", {"\udfff": [1]}]


def test_json_structure_stops_at_the_first_piece_past_a_limit():
    data = b"[" * 1000
    assert limits.json_structure(data, stop_depth=10, piece_size=100) == (100, 100)
    assert limits.json_structure(data, stop_depth=100, piece_size=100) == (200, 200)
    assert limits.json_structure(data, stop_items=99, piece_size=100) == (100, 100)
    assert limits.json_structure(data, stop_items=100, piece_size=100) == (200, 200)


# --- loads_json's refusals, whole ------------------------------------------------------------


def refusal(function, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        function(*args, **kwargs)
    return str(caught.value)


@pytest.mark.parametrize(
    "text", ["[[[]]]", b"[[[]]]", '[{"a": []}]', '{"a": {"b": [1]}}', b'{"a": {"b": {}}}']
)
def test_short_documents_are_held_to_the_depth_cap(text):
    assert refusal(limits.loads_json, text, "doc", max_depth=2) == (
        "doc: nested too deeply (3 levels; at most 2 are allowed)"
    )


def test_a_document_at_the_caps_is_parsed():
    assert limits.loads_json("[[1]]", "doc", max_depth=2) == [[1]]
    assert limits.loads_json(b"[[1]]", "doc", max_depth=2) == [[1]]
    # [1, 2, 3] is 3 values: one opener and two commas.
    assert limits.loads_json("[1, 2, 3]", "doc", max_items=3) == [1, 2, 3]
    assert refusal(limits.loads_json, "[1, 2, 3, 4]", "doc", max_items=3) == (
        "doc: holds over 3 values; refusing to parse it"
    )


def test_the_parsers_own_depth_limit_is_one_line():
    deep = "[" * 100_000 + "]" * 100_000
    assert refusal(limits.loads_json, deep, "doc", max_depth=10**6) == "doc: nested too deeply"
    assert refusal(limits.loads_toml, "a = " + deep, "s.toml", max_depth=10**6) == (
        "s.toml: nested too deeply"
    )


def test_a_long_document_at_the_depth_cap_is_parsed():
    # Long enough to be pre-scanned; exactly max_depth levels deep.
    text = "[[" + "1," * 40_000 + "1]]"
    assert limits.loads_json(text, "doc", max_depth=2) == [[1] * 40_001]


def test_values_are_counted_past_the_first_piece():
    # 101 values in the first 1 MiB piece, 300,000 more after it.
    text = "[" + "0," * 100 + " " * (1 << 20) + "0," * 300_000 + "0]"
    assert refusal(limits.loads_json, text, "doc", max_items=200_000) == (
        "doc: holds over 200,000 values; refusing to parse it"
    )


def test_a_non_finite_value_the_hook_dropped_is_still_refused():
    # An object_pairs_hook may rebuild objects; the NaN it saw is reported even
    # when it is no longer in the document to point at.
    assert refusal(limits.loads_json, '{"a": NaN}', "doc", object_pairs_hook=lambda pairs: {}) == (
        "doc: a value is NaN, not a finite number"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 65 + "]" * 65, "doc: nested too deeply (65 levels; at most 64 are allowed)"),
        ('{"scale": NaN}', "doc: field 'scale' is NaN, not a finite number"),
        ('{"a": {"b": [1, -Infinity]}}', "doc: field 'a'.'b'[1] is -Infinity, not a finite number"),
        ('{"scale": 1e400}', "doc: field 'scale' is 1e400, not a finite number"),
        ("NaN", "doc: the document is NaN, not a finite number"),
        ("-Infinity", "doc: the document is -Infinity, not a finite number"),
        ('[1, [2, {"k": Infinity}]]', "doc: field [1][1].'k' is Infinity, not a finite number"),
        (
            '{"' + "k" * 100 + '": NaN}',
            "doc: field '" + "k" * 80 + "' is NaN, not a finite number",
        ),
        (
            '{"a": 1.' + "0" * 60 + "e400}",
            "doc: field 'a' is 1." + "0" * 38 + ", not a finite number",
        ),
        ('{"seed": 1' + "0" * 5000 + "}", "doc: an integer has more than 4300 digits"),
        (
            '{"' + "k" * 100 + '": 1, "' + "k" * 100 + '": 2}',
            "doc: key '" + "k" * 80 + "' appears twice",
        ),
        ('{"a": 1, "a": 2}', "doc: key 'a' appears twice"),
        (b"\xff", "doc: not UTF-8 text (byte 0)"),
        (b"[1, \xff]", "doc: not UTF-8 text (byte 4)"),
    ],
)
def test_loads_json_refusals_whole(text, message):
    assert refusal(limits.loads_json, text, "doc") == message


@pytest.mark.parametrize(
    ("text", "place"), [("{]", "line 1 column 2"), ('{"a": 1,\n ]', "line 2 column 2")]
)
def test_invalid_json_names_the_place(text, place):
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(text)
    # The parser's own words, then the place.
    assert (
        refusal(limits.loads_json, text, "doc")
        == f"doc: invalid JSON: {parsed.value.msg} at {place}"
    )


def test_no_duplicates_keeps_order_and_values():
    assert limits.no_duplicates([("b", 1), ("a", [2])]) == {"b": 1, "a": [2]}
    assert list(limits.no_duplicates([("b", 1), ("a", 2)])) == ["b", "a"]
    assert refusal(limits.no_duplicates, [("b", 1), ("a", 2), ("a", 3)]) == "key 'a' appears twice"


# --- TOML and parsed documents -------------------------------------------------------------


def reference_bracket_depth(text: str) -> int:
    """Deepest nesting by a plain loop; a closer with nothing open is ignored."""
    depth = deepest = 0
    for character in text:
        if character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth = max(0, depth - 1)
    return deepest


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet="[]{}a\u00e9", max_size=40))
def test_bracket_depth_matches_a_character_loop(text):
    assert limits._bracket_depth(text) == reference_bracket_depth(text)


def test_bracket_depth_across_pieces():
    # Pieces are 4 MiB: stray closers first, then one run of openers crossing a boundary.
    text = "]" * 10 + "a" * ((4 << 20) - 100) + "[" * 1000 + "]" * 5
    assert limits._bracket_depth(text) == 1000
    assert limits._bracket_depth("a" * (5 << 20)) == 0
    # A piece with no bracket at all is passed over, not the end of the count.
    assert limits._bracket_depth("a" * (4 << 20) + "[[") == 2
    assert limits._bracket_depth("[\ud800]") == 1  # lone surrogates, as in a str from JSON


def test_toml_brackets_are_counted_in_strings_too():
    # An upper bound: 8 brackets inside a string pass 4 x 2 levels, 9 do not.
    assert limits.loads_toml('a = "' + "[" * 8 + '"', "s.toml", max_depth=2) == {"a": "[" * 8}
    assert refusal(limits.loads_toml, 'a = "' + "[" * 9 + '"', "s.toml", max_depth=2) == (
        "s.toml: nested too deeply (over 2 levels)"
    )


def test_toml_refusals_whole():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with pytest.raises(tomllib.TOMLDecodeError) as parsed:
        tomllib.loads("a = = 1")
    # The parser's own words, after the document's name.
    assert (
        refusal(limits.loads_toml, "a = = 1", "s.toml") == f"s.toml: invalid TOML: {parsed.value}"
    )
    assert refusal(limits.loads_toml, "a = nan", "s.toml") == (
        "s.toml: holds the non-finite number nan"
    )
    assert refusal(limits.loads_toml, "a = [1.0, -inf]", "s.toml") == (
        "s.toml: holds the non-finite number -inf"
    )


def test_toml_documents_get_the_callers_depth_cap():
    # Dotted keys nest without a bracket: the parsed document is held to max_depth.
    assert refusal(limits.loads_toml, "a.b.c = 1", "s.toml", max_depth=2) == (
        "s.toml: nested too deeply (over 2 levels)"
    )
    assert limits.loads_toml("a.b = 1", "s.toml", max_depth=2) == {"a": {"b": 1}}


def test_check_depth_counts_containers_not_leaves():
    limits.check_depth({"a": {"b": 1}}, "d", max_depth=2)
    limits.check_depth([[1, [2.5]]], "d", max_depth=3)
    assert refusal(limits.check_depth, {"a": {"b": {}}}, "d", max_depth=2) == (
        "d: nested too deeply (over 2 levels)"
    )
    assert refusal(limits.check_depth, [[[1]]], "d", max_depth=2) == (
        "d: nested too deeply (over 2 levels)"
    )
    # Every branch is looked at: a leaf first does not end the walk.
    # (the walk takes the last item first).
    assert refusal(limits.check_depth, [{"b": [float("nan")]}, "x", 1], "d") == (
        "d: holds the non-finite number nan"
    )


# --- reading documents ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "words"),
    [
        (1024, "1 KiB"),
        (16 << 20, "16 MiB"),
        (1 << 30, "1 GiB"),
        (3 << 30, "3 GiB"),
        ((1 << 20) + 1024, "1025 KiB"),
        (1000, "1,000 bytes"),
        (1536, "1,536 bytes"),
        (1023, "1,023 bytes"),
        (0, "0 bytes"),
    ],
)
def test_sizes_are_named_in_the_largest_exact_unit(count, words):
    assert limits._size(count) == words


def test_read_text_refuses_non_utf8_and_oversized_text():
    import io

    assert limits.read_text(io.BytesIO("é".encode()), 2, "x") == "é"
    assert refusal(limits.read_text, io.BytesIO(b"ab\xffc"), 10, "x") == (
        "x is not UTF-8 text (byte 2)"
    )
    assert refusal(limits.read_text, io.BytesIO(b"abc"), 2, "x") == (
        "x is larger than 2 bytes; refusing to read it"
    )


def open_descriptors() -> set[str]:
    import os

    return set(os.listdir("/proc/self/fd"))


def test_open_document_gives_a_blocking_binary_file(tmp_path):
    import os

    path = tmp_path / "spec.json"
    path.write_bytes(b"{}")
    with limits.open_document(str(path), "spec") as handle:
        assert handle.read() == b"{}" and handle.mode == "rb"
        assert os.get_blocking(handle.fileno())
    with limits.open_document("/dev/zero", "zeros") as handle:
        assert os.get_blocking(handle.fileno()) and handle.read(4) == bytes(4)


def test_open_document_refuses_fifos_and_sockets_and_closes_them(tmp_path):
    import os
    import socket

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = open_descriptors()
    assert refusal(limits.open_document, str(fifo), "--spec fifo") == (
        "--spec fifo is a FIFO (named pipe), not a file; vsgen does not wait on it "
        "(pipe it into standard input with '-' instead)"
    )
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock"))
        with pytest.raises(OSError):  # Linux cannot open() a socket at all
            limits.open_document(str(tmp_path / "sock"), "--spec sock")
    finally:
        server.close()
    assert open_descriptors() == before


def test_open_document_on_a_directory_is_the_usual_error(tmp_path):
    import errno
    import os

    before = open_descriptors()
    with pytest.raises(IsADirectoryError) as caught:
        limits.open_document(str(tmp_path), "spec")
    error = caught.value
    assert (error.errno, error.strerror, error.filename) == (
        errno.EISDIR,
        os.strerror(errno.EISDIR),
        str(tmp_path),
    )
    assert open_descriptors() == before
    with pytest.raises(FileNotFoundError):
        limits.open_document(str(tmp_path / "missing.json"), "spec")
