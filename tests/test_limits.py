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


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" * 65 + "]" * 65, "nested too deeply (65 levels"),
        ('{"scale": NaN}', "field 'scale' is NaN"),
        ('{"a": {"b": [1, -Infinity]}}', "field 'a'.'b'[1] is -Infinity"),
        ('{"scale": 1e400}', "field 'scale' is 1e400"),
        ('{"seed": 1' + "0" * 5000 + "}", "more than 4300 digits"),
        ('{"a": 1, "a": 2}', "'a' appears twice"),
        ("{]", "invalid JSON"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_loads_json_refusals_name_the_document_and_field(text, words):
    with pytest.raises(ValueError) as caught:
        limits.loads_json(text, "doc.json")
    message = str(caught.value)
    assert message.startswith("doc.json: ") and words in message and "\n" not in message


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
