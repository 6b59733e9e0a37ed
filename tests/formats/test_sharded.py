"""vsgen.formats.sharded, unit by unit: the split, the shard metadata and the index
as written (their canonical JSON), the companions, the index reader's every refusal
and its exact message, the shards' provenance merged, and the judge of ``--force``.

Messages are compared whole: they are what a user reads, and each names the file as
the user named the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from vsgen.dtypes import TensorInfo
from vsgen.formats import atomic, parallel, readers, sharded
from vsgen.formats.base import UnreadableFile
from vsgen.formats.sharded import INDEX_NAME

F32 = np.dtype("float32")
FIRST = "model-00001-of-00002.safetensors"
SECOND = "model-00002-of-00002.safetensors"


def info(name: str, count: int, dtype: np.dtype = F32) -> TensorInfo:
    return TensorInfo(name, (count,), dtype)


def write(directory: Path, tensors: list[TensorInfo], max_shard_size: int = 10**9, **options):
    """A shard directory written by vsgen (values: each tensor's index + 1)."""
    output = parallel.open_parallel_output(
        str(directory), "safetensors-sharded", tensors, max_shard_size=max_shard_size, **options
    )
    with output:
        for number, (place, tensor) in enumerate(zip(output.places, tensors, strict=True)):
            values = np.full(tensor.shape, number + 1, tensor.dtype)
            parallel.write_block(place, (0,) * len(tensor.shape), values)
        parallel.sync_written(output.temp)
        output.commit()
    return directory


def two_shards(tmp_path: Path, **options) -> Path:
    return write(tmp_path / "ckpt", [info("a", 64), info("b", 16)], max_shard_size=256, **options)


def edit_index(directory: Path, change) -> None:
    index = json.loads((directory / INDEX_NAME).read_text())
    change(index)
    (directory / INDEX_NAME).write_text(json.dumps(index))


# --- the split ------------------------------------------------------------------------------


def test_split_closes_a_shard_only_when_the_next_tensor_would_overflow_it():
    """huggingface_hub's rule: a tensor larger than the size gets a shard of its own at
    once (the open shard stays open); a tensor that would take the open shard past the
    size closes it first; one exactly at the size fits."""
    tensors = [info("a", 25), info("b", 25), info("c", 50), info("d", 1)]  # 100, 100, 200, 4 B
    assert sharded.split_shards(tensors, 200) == [[0, 1], [2], [3]]
    assert sharded.split_shards(tensors, 204) == [[0, 1], [2, 3]]
    assert sharded.split_shards(tensors, 199) == [[0], [2], [1, 3]]
    assert sharded.split_shards(tensors, 100) == [[0], [2], [1], [3]]
    assert sharded.split_shards(tensors, 104) == [[0], [2], [1, 3]]
    assert sharded.split_shards([info("a", 0), info("b", 0)], 1) == [[0, 1]]
    assert sharded.split_shards([info("a", 1), info("b", 0)], 4) == [[0, 1]]


# --- what vsgen writes ----------------------------------------------------------------------


def test_shard_metadata_is_format_pt_and_the_canonical_record_of_its_own_tensors():
    document = {"format": 1, "seed": 5, "tensors": {"a": {"x": 1}, "b": {"y": 2}}}
    metadata = sharded.shard_metadata(document, ["b", "c"])
    assert metadata["format"] == "pt"
    text = metadata["vsgen"]
    assert text == '{"format":1,"seed":5,"tensors":{"b":{"y":2}}}'
    assert sharded.shard_metadata(None, ["a"]) == {"format": "pt"}
    assert sharded.shard_metadata({"format": 1}, ["a"])["vsgen"] == '{"format":1,"tensors":{}}'


def test_the_index_is_indented_json_recording_every_file(tmp_path):
    config = b'{"n": 1}\n'
    directory = two_shards(tmp_path, companions={"config.json": config})
    text = (directory / INDEX_NAME).read_text()
    index = json.loads(text)
    assert text == json.dumps(index, indent=2) + "\n"
    assert list(index) == ["metadata", "weight_map"]
    assert index["weight_map"] == {"a": FIRST, "b": SECOND}
    assert index["metadata"] == {
        "total_size": 320,
        "vsgen": {
            "format": 1,
            "files": {
                FIRST: {"size": os.path.getsize(directory / FIRST)},
                SECOND: {"size": os.path.getsize(directory / SECOND)},
                "config.json": {"size": 9, "sha256": hashlib.sha256(config).hexdigest()},
            },
        },
    }
    # Each shard holds its header and tensors, nothing more; the companion its bytes.
    for name, values in ((FIRST, [1.0] * 64), (SECOND, [2.0] * 16)):
        tensors, metadata = readers.open_file(str(directory)).tensors, None
        del metadata
        header = (directory / name).read_bytes()
        length = int.from_bytes(header[:8], "little")
        assert len(header) == 8 + length + 4 * len(values)
    assert (directory / "config.json").read_bytes() == config
    assert [t.name for t in tensors] == ["a", "b"]


def test_a_layout_not_presized_holds_the_headers_alone(tmp_path):
    from vsgen.formats.base import check_output
    from vsgen.formats.registry import get

    fmt = get("safetensors-sharded")
    request = check_output(
        str(tmp_path / "d"), fmt, [info("a", 4)], None, None, companions={"c.json": b"{}"}
    )
    temporary = atomic.TemporaryDirectory(str(tmp_path / "d"), "d", False)
    fmt.plan(request).create(temporary, presize=False)
    prefix = (Path(temporary.path) / "model-00001-of-00001.safetensors").read_bytes()
    assert len(prefix) == 8 + int.from_bytes(prefix[:8], "little")  # no data yet
    assert (Path(temporary.path) / "c.json").read_bytes() == b"{}"
    temporary.discard()


def test_a_private_temporary_makes_private_files(tmp_path):
    old = atomic.Survey(None, "", frozenset(), 0o700, 0o600)
    umask = os.umask(0)
    try:
        from vsgen.formats.base import check_output
        from vsgen.formats.registry import get

        fmt = get("safetensors-sharded")
        request = check_output(str(tmp_path / "d"), fmt, [info("a", 4)], None, None)
        temporary = atomic.TemporaryDirectory(str(tmp_path / "d"), "d", False, old=old)
        fmt.plan(request).create(temporary, presize=True)
        modes = {p.name: p.stat().st_mode & 0o777 for p in Path(temporary.path).iterdir()}
        assert modes == {"model-00001-of-00001.safetensors": 0o600, INDEX_NAME: 0o600}
        assert Path(temporary.path).stat().st_mode & 0o777 == 0o700
        temporary.discard()
    finally:
        os.umask(umask)


@pytest.mark.parametrize(
    "name",
    [INDEX_NAME, "a.safetensors", "a/b.json", "..", ".", "", "a\x00b"],
)
def test_companions_must_be_plain_names_other_than_the_shards(tmp_path, name):
    with pytest.raises(ValueError) as caught:
        sharded.check_companions({name: b"{}"})
    assert str(caught.value) == (
        "Argument `companions` must map plain file names (not the index or a .safetensors "
        f"name) to at most {sharded.MAX_COMPANION_BYTES} bytes. Received: {name[:80]!r}"
    )


def test_companions_are_bytes_of_at_most_a_mebibyte():
    limit = sharded.MAX_COMPANION_BYTES
    assert sharded.check_companions({"c.json": b"x" * limit}) == {"c.json": b"x" * limit}
    assert sharded.check_companions(None) == {}
    for data in (b"x" * (limit + 1), "text"):
        with pytest.raises(ValueError, match="companions"):
            sharded.check_companions({"c.json": data})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"Received: 'x{80}'$"):
        sharded.check_companions({"x" * 100 + "/": b""})


# --- the index, read ------------------------------------------------------------------------


def refusal(directory: Path, display: str | None = None) -> str:
    with pytest.raises(UnreadableFile) as caught:
        sharded.read_index(str(directory), display)
    return str(caught.value)


def test_read_index_gives_the_map_the_size_and_the_record(tmp_path):
    directory = two_shards(tmp_path)
    index = sharded.read_index(str(directory))
    assert index.weight_map == {"a": FIRST, "b": SECOND}
    assert index.total_size == 320
    assert index.files == {
        FIRST: (os.path.getsize(directory / FIRST), None),
        SECOND: (os.path.getsize(directory / SECOND), None),
    }
    edit_index(directory, lambda d: d.pop("metadata"))
    assert sharded.read_index(str(directory)) == ({"a": FIRST, "b": SECOND}, None, None)


def test_read_index_refuses_an_index_that_is_not_a_file(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    assert refusal(directory, "shown") == f"shown/{INDEX_NAME}: missing"
    assert refusal(directory) == f"{directory}/{INDEX_NAME}: missing"
    os.mkfifo(directory / INDEX_NAME)
    assert refusal(directory, "shown") == (
        f"shown/{INDEX_NAME} is a FIFO (named pipe); vsgen reads the index only as a file"
    )
    os.unlink(directory / INDEX_NAME)
    (directory / INDEX_NAME).symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text('{"weight_map": {}}')
    assert refusal(directory, "shown") == (
        f"shown/{INDEX_NAME} is a symbolic link; vsgen reads the index only as a file"
    )


def test_read_index_reads_at_most_the_cap(tmp_path, monkeypatch):
    directory = tmp_path / "d"
    directory.mkdir()
    monkeypatch.setattr(sharded, "MAX_INDEX_BYTES", 1 << 20)
    text = '{"weight_map": {}, "pad": "'
    (directory / INDEX_NAME).write_text(text + "x" * ((1 << 20) - len(text) - 2) + '"}')
    assert sharded.read_index(str(directory)).weight_map == {}  # exactly the cap
    (directory / INDEX_NAME).write_text(text + "x" * ((1 << 20) - len(text) - 1) + '"}')
    assert refusal(directory, "shown") == (f"shown/{INDEX_NAME} is larger than 1 MiB; refusing it")
    read = []
    real = sharded.read_entry
    monkeypatch.setattr(
        sharded, "read_entry", lambda path, limit: read.append(limit) or real(path, limit)
    )
    refusal(directory)
    assert read == [(1 << 20) + 1]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "{nope",
            "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        ('{"weight_map": {"a": "x", "a": "x"}}', "key 'a' appears twice"),
        (
            '{"weight_map": [' + "[" * 70 + "]" * 70 + "]}",
            "nested too deeply (72 levels; at most 64 are allowed)",
        ),
        (
            '{"metadata": {"total_size": NaN}, "weight_map": {}}',
            "field 'metadata'.'total_size' is NaN, not a finite number",
        ),
    ],
)
def test_read_index_parses_with_the_bounded_parser(tmp_path, text, problem):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / INDEX_NAME).write_text(text)
    assert refusal(directory, "shown") == f"shown/{INDEX_NAME}: {problem}"


def test_read_index_counts_values_before_parsing(tmp_path, monkeypatch):
    directory = tmp_path / "d"
    directory.mkdir()
    monkeypatch.setattr(sharded, "MAX_TENSORS", 4)
    entries = ",".join(f'"t{i}": "s"' for i in range(33))
    (directory / INDEX_NAME).write_text('{"weight_map": {' + entries + "}}")
    assert refusal(directory, "shown") == (
        f"shown/{INDEX_NAME}: holds over 32 values; refusing to parse it"
    )


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "not a safetensors index (needs a weight_map object)"),
        ({"weight_map": ["a"]}, "not a safetensors index (needs a weight_map object)"),
        ({"weight_map": {"a": 1}}, "tensor 'a' maps to '1', not a file in the directory"),
        ({"weight_map": {"a": "../x"}}, "tensor 'a' maps to '../x', not a file in the directory"),
        ({"weight_map": {"a": "/x"}}, "tensor 'a' maps to '/x', not a file in the directory"),
        ({"weight_map": {"a": ".."}}, "tensor 'a' maps to '..', not a file in the directory"),
        ({"weight_map": {"a": "."}}, "tensor 'a' maps to '.', not a file in the directory"),
        ({"weight_map": {"a": ""}}, "tensor 'a' maps to '', not a file in the directory"),
        (
            {"weight_map": {"a": "x\x00y"}},
            "tensor 'a' maps to 'x\\x00y', not a file in the directory",
        ),
        (
            {"weight_map": {"n" * 300: "/"}},
            f"tensor {'n' * 200!r} maps to '/', not a file in the directory",
        ),
        ({"weight_map": {"a": "p" * 300}}, None),
        ({"metadata": [], "weight_map": {}}, "metadata must be an object"),
        (
            {"metadata": {"total_size": -5}, "weight_map": {}},
            "metadata.total_size must be a non-negative integer below 2**63, not -5",
        ),
        (
            {"metadata": {"total_size": 1.5}, "weight_map": {}},
            "metadata.total_size must be a non-negative integer below 2**63, not 1.5",
        ),
        (
            {"metadata": {"total_size": "x"}, "weight_map": {}},
            "metadata.total_size must be a non-negative integer below 2**63, not x",
        ),
        (
            {"metadata": {"total_size": True}, "weight_map": {}},
            "metadata.total_size must be a non-negative integer below 2**63, not True",
        ),
        (
            {"metadata": {"total_size": 2**63}, "weight_map": {}},
            "metadata.total_size must be a non-negative integer below 2**63, "
            "not 9223372036854775808",
        ),
        (
            {"metadata": {"total_size": 10**50}, "weight_map": {}},
            "metadata.total_size must be a non-negative integer below 2**63, "
            f"not {str(10**50)[:40]}",
        ),
    ],
)
def test_read_index_refuses_a_malformed_index(tmp_path, document, problem):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / INDEX_NAME).write_text(json.dumps(document))
    if problem is None:  # a long plain name is a name
        assert sharded.read_index(str(directory)).weight_map == document["weight_map"]
        return
    assert refusal(directory, "shown") == f"shown/{INDEX_NAME}: {problem}"


def test_read_index_takes_total_sizes_from_zero_to_the_largest(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    for size in (0, 1, 2**63 - 1):
        (directory / INDEX_NAME).write_text(
            json.dumps({"metadata": {"total_size": size}, "weight_map": {}})
        )
        assert sharded.read_index(str(directory)).total_size == size


def test_read_index_caps_the_tensors(tmp_path, monkeypatch):
    directory = tmp_path / "d"
    directory.mkdir()
    monkeypatch.setattr(sharded, "MAX_TENSORS", 3)
    for count, refused in ((3, False), (4, True)):
        entries = {f"t{i}": "s" for i in range(count)}
        (directory / INDEX_NAME).write_text(json.dumps({"weight_map": entries}))
        if refused:
            assert refusal(directory, "shown") == (
                f"shown/{INDEX_NAME}: the index lists more than 3 tensors"
            )
        else:
            assert len(sharded.read_index(str(directory)).weight_map) == 3


GOOD = "0" * 64


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ([], "metadata.vsgen is not a record of files vsgen wrote"),
        ({"files": []}, "metadata.vsgen is not a record of files vsgen wrote"),
        ({}, "metadata.vsgen is not a record of files vsgen wrote"),
        ({"files": {"a": []}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a": {"size": -1}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a": {"size": 2**63}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a": {"size": 1.0}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a": {}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a/b": {"size": 1}}}, "metadata.vsgen: malformed entry 'a/b'"),
        ({"files": {INDEX_NAME: {"size": 1}}}, f"metadata.vsgen: malformed entry {INDEX_NAME!r}"),
        ({"files": {"a": {"size": 1, "sha256": 5}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a": {"size": 1, "sha256": "A" * 64}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a": {"size": 1, "sha256": "0" * 63}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"a": {"size": 1, "sha256": "g" * 64}}}, "metadata.vsgen: malformed entry 'a'"),
        ({"files": {"e" * 300: {"size": -1}}}, f"metadata.vsgen: malformed entry {'e' * 200!r}"),
    ],
)
def test_a_malformed_record_is_refused(tmp_path, record, problem):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / INDEX_NAME).write_text(
        json.dumps({"metadata": {"vsgen": record}, "weight_map": {}})
    )
    assert refusal(directory, "shown") == f"shown/{INDEX_NAME}: {problem}"


def test_a_record_with_sizes_and_digests(tmp_path, monkeypatch):
    directory = tmp_path / "d"
    directory.mkdir()
    files = {
        "a": {"size": 0},
        "b": {"size": 2**63 - 1, "sha256": GOOD},
        "c": {"size": 5, "sha256": "0123456789abcdef" * 4},
    }
    (directory / INDEX_NAME).write_text(
        json.dumps({"metadata": {"vsgen": {"files": files}}, "weight_map": {}})
    )
    assert sharded.read_index(str(directory)).files == {
        "a": (0, None),
        "b": (2**63 - 1, GOOD),
        "c": (5, "0123456789abcdef" * 4),
    }
    monkeypatch.setattr(sharded, "MAX_TENSORS", 1000)
    many = {f"f{i}": {"size": 1} for i in range(1000 + 1024)}
    (directory / INDEX_NAME).write_text(
        json.dumps({"metadata": {"vsgen": {"files": many}}, "weight_map": {}})
    )
    assert len(sharded.read_index(str(directory)).files or {}) == 2024
    many["one-more"] = {"size": 1}
    (directory / INDEX_NAME).write_text(
        json.dumps({"metadata": {"vsgen": {"files": many}}, "weight_map": {}})
    )
    assert refusal(directory, "shown") == (
        f"shown/{INDEX_NAME}: metadata.vsgen is not a record of files vsgen wrote"
    )


# --- the directory, opened --------------------------------------------------------------------


def open_refusal(directory: Path) -> str:
    with pytest.raises(UnreadableFile) as caught:
        sharded.ShardedFormat("safetensors-sharded").open(str(directory))
    return str(caught.value)


def test_open_reads_the_tensors_in_the_index_order_and_merges_the_records(tmp_path):
    from vsgen import modelspec

    spec = modelspec.parse_spec({"seed": 2, "tensors": {"z": [8, 8], "a": [4, 4], "m": [2]}})
    job = modelspec.build_job(spec)
    directory = tmp_path / "ckpt"
    output = parallel.open_parallel_output(
        str(directory),
        "safetensors-sharded",
        list(job.infos),
        metadata=job.metadata(),
        max_shard_size=64,
    )
    arrays = job.arrays()
    with output:
        for place, tensor in zip(output.places, job.infos, strict=True):
            parallel.write_block(place, (0,) * len(tensor.shape), arrays[tensor.name])
        parallel.sync_written(output.temp)
        output.commit()
    opened = sharded.ShardedFormat("safetensors-sharded").open(str(directory))
    assert opened.path == str(directory) and opened.format == "safetensors-sharded"
    assert opened.names == ["z", "a", "m"]
    text = opened.metadata["vsgen"]
    merged = json.loads(text)
    expected = json.loads(job.metadata()["vsgen"])
    assert merged == expected
    assert text == json.dumps(merged, sort_keys=True, separators=(",", ":"))


def test_open_refuses_a_tensor_in_two_shards(tmp_path):
    from safetensors.numpy import load_file, save_file

    directory = two_shards(tmp_path)
    both = {**load_file(str(directory / SECOND)), **load_file(str(directory / FIRST))}
    save_file(both, str(directory / SECOND), metadata={"format": "pt"})
    edit_index(directory, lambda d: d["metadata"].update(total_size=576))
    assert (
        open_refusal(directory) == f"{directory}: tensor 'a' is in two shards, {FIRST} and {SECOND}"
    )


def test_open_refuses_a_total_size_that_is_not_the_tensors_bytes(tmp_path):
    directory = two_shards(tmp_path)
    for size in (319, 321, 0):
        edit_index(directory, lambda d, s=size: d["metadata"].update(total_size=s))
        assert open_refusal(directory) == (
            f"{directory}/{INDEX_NAME}: metadata.total_size is {size:,} bytes, but the "
            "shards' tensors take 320"
        )
    edit_index(directory, lambda d: d["metadata"].pop("total_size"))
    assert sharded.ShardedFormat("safetensors-sharded").open(str(directory)).names == ["a", "b"]


def test_open_refuses_a_map_that_puts_a_tensor_where_it_is_not(tmp_path):
    directory = two_shards(tmp_path)
    edit_index(directory, lambda d: d["weight_map"].update(b=FIRST))
    assert open_refusal(directory) == f"{directory}: the index puts 'b' in {FIRST}, which lacks it"
    long_name = "n" * 300
    edit_index(directory, lambda d: d["weight_map"].update({long_name: FIRST}))
    edit_index(directory, lambda d: d["weight_map"].update(b=SECOND))
    assert open_refusal(directory) == (
        f"{directory}: the index puts {'n' * 200!r} in {FIRST}, which lacks it"
    )


def test_open_caps_the_tensors_of_all_shards(tmp_path, monkeypatch):
    """Counted in the shards, not in the index (a shard may hold tensors it does not list)."""
    directory = write(tmp_path / "ckpt", [info("a", 4), info("b", 4), info("c", 4)])
    edit_index(directory, lambda d: d["weight_map"].pop("c"))
    monkeypatch.setattr(sharded, "MAX_TENSORS", 3)
    assert sharded.ShardedFormat("safetensors-sharded").open(str(directory)).names == ["a", "b"]
    monkeypatch.setattr(sharded, "MAX_TENSORS", 2)
    assert open_refusal(directory) == f"{directory}: the shards hold more than 2 tensors"


def test_open_reads_a_recorded_shard_only_if_it_is_there(tmp_path):
    directory = two_shards(tmp_path)
    edit_index(directory, lambda d: d["weight_map"].pop("b"))
    assert sharded.ShardedFormat("safetensors-sharded").open(str(directory)).names == ["a"]
    os.unlink(directory / SECOND)
    edit_index(directory, lambda d: d["metadata"].update(total_size=256))
    assert sharded.ShardedFormat("safetensors-sharded").open(str(directory)).names == ["a"]


@pytest.mark.parametrize("kind", ["missing", "fifo", "link", "directory"])
def test_a_shard_is_read_only_as_a_regular_file_of_the_directory(tmp_path, kind):
    directory = two_shards(tmp_path)
    shard = directory / FIRST
    shard.unlink()
    if kind == "fifo":
        os.mkfifo(shard)
    elif kind == "link":
        (tmp_path / "elsewhere.safetensors").write_bytes(b"")
        shard.symlink_to(tmp_path / "elsewhere.safetensors")
    elif kind == "directory":
        shard.mkdir()
    expected = {
        "missing": f"{directory}/{FIRST}: shard missing",
        "fifo": f"{directory}/{FIRST}: the shard is a FIFO (named pipe); vsgen reads shards "
        "only as regular files in the directory",
        "link": f"{directory}/{FIRST}: the shard is a symbolic link; vsgen reads shards only "
        "as regular files in the directory",
        "directory": f"{directory}/{FIRST}: the shard is a directory; vsgen reads shards only "
        "as regular files in the directory",
    }[kind]
    assert open_refusal(directory) == expected


def test_a_link_swapped_in_after_the_check_is_not_followed(tmp_path, monkeypatch):
    """The shard is opened without following links, not only checked before."""
    directory = two_shards(tmp_path)
    real = os.lstat
    swapped = []

    def swap(path, *args, **kwargs):
        info = real(path, *args, **kwargs)
        if os.fspath(path).endswith(FIRST) and not swapped:
            swapped.append(path)
            os.rename(path, tmp_path / "moved")
            os.symlink(tmp_path / "moved", path)
        return info

    monkeypatch.setattr(sharded.os, "lstat", swap)
    assert "is a symbolic link" in open_refusal(directory)


@pytest.mark.parametrize(
    ("provenance", "problem"),
    [
        ("{nope", "vsgen provenance: invalid JSON"),
        ("[]", "malformed vsgen provenance (no tensors object)"),
        ('{"tensors": []}', "malformed vsgen provenance (no tensors object)"),
        (
            '{"tensors": {"b": {}}}',
            "its provenance records tensor 'b', which the shard does not hold",
        ),
        (
            '{"tensors": {"' + "q" * 300 + '": {}}}',
            f"its provenance records tensor {'q' * 200!r}, which the shard does not hold",
        ),
    ],
)
def test_the_shards_provenance_is_bounded_and_honest(tmp_path, provenance, problem):
    from safetensors.numpy import load_file, save_file

    directory = two_shards(tmp_path)
    save_file(
        load_file(str(directory / FIRST)), str(directory / FIRST), metadata={"vsgen": provenance}
    )
    edit_index(directory, lambda d: d["metadata"].pop("vsgen"))
    message = open_refusal(directory)
    assert message.startswith(f"{directory}/{FIRST}: {problem}"), message


def test_shards_without_provenance_merge_to_nothing_and_the_rest_merge(tmp_path):
    directory = two_shards(tmp_path)
    assert sharded.ShardedFormat("safetensors-sharded").open(str(directory)).metadata == {}
    from safetensors.numpy import load_file, save_file

    record = {"format": 1, "seed": 3, "tensors": {"b": {"kind": "constant"}}}
    save_file(
        load_file(str(directory / SECOND)),
        str(directory / SECOND),
        metadata={"vsgen": json.dumps(record)},
    )
    edit_index(directory, lambda d: d["metadata"].pop("vsgen"))
    merged = sharded.ShardedFormat("safetensors-sharded").open(str(directory)).metadata
    assert merged == {"vsgen": '{"format":1,"seed":3,"tensors":{"b":{"kind":"constant"}}}'}


# --- what --force may replace ------------------------------------------------------------------


def judge_of(directory: Path, display: str = "shown"):
    return sharded.ShardedFormat("safetensors-sharded").judge(str(directory), display)


def test_the_judge_knows_the_recorded_files_by_size_and_digest(tmp_path):
    config = b'{"n": 1}\n'
    directory = two_shards(tmp_path, companions={"config.json": config})
    judge = judge_of(directory)
    size = os.path.getsize(directory / FIRST)
    assert judge.file((INDEX_NAME,), 12345, "") is None
    assert judge.file((FIRST,), size, str(directory / FIRST)) is None
    assert judge.file((FIRST,), size + 1, "") == f"{size + 1:,} bytes; vsgen wrote {size:,}"
    assert judge.file(("other.bin",), 1, "") == (
        "not a file vsgen wrote (the index does not record it)"
    )
    assert judge.file(("sub", FIRST), size, "") == (
        "not a file vsgen wrote (the index does not record it)"
    )
    assert judge.directory(("sub",)) == "a directory; vsgen writes none in a shard directory"
    assert judge.file(("config.json",), 9, str(directory / "config.json")) is None
    (directory / "config.json").write_bytes(b'{"n": 2}\n')
    assert judge.file(("config.json",), 9, str(directory / "config.json")) == (
        "changed since vsgen wrote it"
    )
    os.unlink(directory / "config.json")
    os.mkfifo(directory / "config.json")
    assert judge.file(("config.json",), 9, str(directory / "config.json")) == (
        "changed since vsgen wrote it"
    )


def test_the_judge_reads_a_companion_whole_and_no_more(tmp_path, monkeypatch):
    directory = two_shards(tmp_path, companions={"config.json": b"{}"})
    read = []
    real = sharded.read_entry
    monkeypatch.setattr(
        sharded, "read_entry", lambda path, limit: read.append(limit) or real(path, limit)
    )
    assert judge_of(directory).file(("config.json",), 2, str(directory / "config.json")) is None
    assert read[-1] == sharded.MAX_COMPANION_BYTES + 1


def not_owned(directory: Path) -> atomic.NotOwned:
    with pytest.raises(atomic.NotOwned) as caught:
        judge_of(directory)
    return caught.value


def test_the_judge_refuses_an_index_that_names_an_unrecorded_shard(tmp_path):
    directory = two_shards(tmp_path)
    edit_index(directory, lambda d: d["metadata"]["vsgen"]["files"].pop(SECOND))
    refused = not_owned(directory)
    assert (refused.entry, refused.reason) == (
        SECOND,
        "a shard the index names but vsgen did not record",
    )
    assert str(refused) == ""


def test_the_judge_of_a_legacy_index_reads_its_shards(tmp_path):
    """vsgen 0.2 wrote no record: its shards, with vsgen's provenance, say it."""
    from vsgen import modelspec

    job = modelspec.build_job(modelspec.parse_spec({"seed": 1, "tensors": {"a": [8, 8], "b": [4]}}))
    directory = tmp_path / "ckpt"
    output = parallel.open_parallel_output(
        str(directory),
        "safetensors-sharded",
        list(job.infos),
        metadata=job.metadata(),
        max_shard_size=256,
    )
    with output:
        for place, tensor in zip(output.places, job.infos, strict=True):
            parallel.write_block(place, (0,) * len(tensor.shape), job.arrays()[tensor.name])
        parallel.sync_written(output.temp)
        output.commit()
    edit_index(directory, lambda d: d["metadata"].pop("vsgen"))
    judge = judge_of(directory)
    assert judge.file((FIRST,), os.path.getsize(directory / FIRST), "") is None
    assert judge.file((SECOND,), os.path.getsize(directory / SECOND), "") is None
    assert judge.file(("config.json",), 2, "") is not None
    # A shard without vsgen's provenance makes it someone else's.
    from safetensors.numpy import load_file, save_file

    save_file(
        load_file(str(directory / SECOND)), str(directory / SECOND), metadata={"format": "pt"}
    )
    refused = not_owned(directory)
    assert (refused.entry, refused.reason, str(refused)) == (
        SECOND,
        "a shard without vsgen's provenance",
        "",
    )
    # A shard that is gone: an index alone cannot be told from someone else's.
    os.unlink(directory / SECOND)
    refused = not_owned(directory)
    assert (refused.entry, refused.reason, str(refused)) == (
        INDEX_NAME,
        "an index without vsgen's record or its shards",
        "",
    )
    (directory / INDEX_NAME).write_text(json.dumps({"weight_map": {}}))
    refused = not_owned(directory)
    assert (refused.entry, refused.reason, str(refused)) == (
        INDEX_NAME,
        "an index without vsgen's record or its shards",
        "",
    )


def test_the_judge_names_what_the_reader_refused(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / INDEX_NAME).write_text("{nope")
    refused = not_owned(directory)
    message = (
        f"shown/{INDEX_NAME}: invalid JSON: Expecting property name enclosed in double "
        "quotes at line 1 column 2"
    )
    assert (refused.entry, refused.reason, str(refused)) == ("", message, message)
    legacy = two_shards(tmp_path)
    edit_index(legacy, lambda d: d["metadata"].pop("vsgen"))
    os.unlink(legacy / FIRST)
    os.mkfifo(legacy / FIRST)
    refused = not_owned(legacy)
    assert refused.reason == (
        f"shown/{FIRST}: the shard is a FIFO (named pipe); vsgen reads shards only as "
        "regular files in the directory"
    )


def test_check_name_is_safetensors_rule():
    fmt = sharded.ShardedFormat("safetensors-sharded")
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        fmt.check_name("__metadata__")
    fmt.check_name("__metadata")
