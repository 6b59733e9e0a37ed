"""Hostile Zarr stores, shard directories and index documents, ``--force`` on
directories holding foreign things, documents that are FIFOs, and lies in options:
every one answered with one line and the right exit code, in bounded time and
memory, nothing foreign read, changed or deleted.

How each case is run and judged is :mod:`hostile`'s (one forked process per case
under an address-space limit; exit code, one stderr line, the folder's every
entry unchanged, no foreign byte on stdout or stderr, at most 10 s and 300 MiB).
Foreign files hold the marker value 31337; the cases that need root (device nodes,
mounts) are skipped elsewhere, saying so.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")

from click.testing import CliRunner  # noqa: E402
from hostile import (  # noqa: E402
    MARKER,
    Case,
    Unsupported,
    check_outcome,
    marker_bytes,
    remove_tree,
    run_cases,
)

import vsgen  # noqa: E402
from vsgen.cli import cli  # noqa: E402
from vsgen.formats import TensorInfo, parallel  # noqa: E402
from vsgen.formats.sharded import INDEX_NAME  # noqa: E402

# --- building ---------------------------------------------------------------------------


def vsgen_run(folder: Path, *args: str) -> None:
    """Run vsgen in this process (a real output to attack)."""
    result = CliRunner().invoke(cli, [*args, "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def zarr_store(folder: Path, name: str = "m.zarr", shape: str = "16,8") -> Path:
    vsgen_run(folder, "sample", "--shape", shape, "--seed", "1", "-o", str(folder / name))
    return folder / name


TWO_TENSORS = {"data": [8, 8], "other/w": [4, 4]}


def spec_file(folder: Path, tensors: dict = TWO_TENSORS) -> Path:
    path = folder / "spec.json"
    path.write_text(json.dumps({"seed": 1, "tensors": tensors}))
    return path


def group_store(folder: Path, name: str = "m.zarr") -> Path:
    vsgen_run(folder, "sample", "--spec", str(spec_file(folder)), "-o", str(folder / name))
    (folder / "spec.json").unlink()
    return folder / name


def shard_dir(folder: Path, name: str = "ckpt", shard_bytes: str = "300") -> Path:
    """Two tensors in two shards (300 bytes each at most)."""
    vsgen_run(
        folder,
        "sample",
        "--spec",
        str(spec_file(folder)),
        "-o",
        str(folder / name),
        "--format",
        "safetensors-sharded",
        "--max-shard-size",
        shard_bytes,
    )
    (folder / "spec.json").unlink()
    return folder / name


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def foreign_safetensors(path: Path, name: str = "data") -> Path:
    """Someone else's safetensors file holding the marker."""
    header = json.dumps({name: {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, 256]}})
    header += " " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + marker_bytes(64))
    return path


def char_device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # like /dev/zero
    except (PermissionError, OSError) as error:
        raise Unsupported(f"cannot create a device node here: {error}") from None


def unix_socket(path: Path) -> None:
    here = os.getcwd()
    os.chdir(path.parent)  # a socket's path must be short
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind(path.name)
        server.close()
    finally:
        os.chdir(here)


#: Mounts made by the cases, undone when the module's cases are done.
MOUNTS: list[Path] = []


def mount(point: Path, *how: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise Unsupported("mounting needs root")
    done = subprocess.run(["mount", *how, str(point)], capture_output=True, check=False)
    if done.returncode != 0:
        raise Unsupported(f"cannot mount here: {done.stderr.decode().strip()}")
    MOUNTS.append(point)


def bind_mount(folder: Path, point: Path) -> None:
    """A foreign folder (holding the marker) bind-mounted at ``point``: same file system."""
    foreign = folder / "foreign-folder"
    foreign.mkdir()
    (foreign / "precious.bin").write_bytes(marker_bytes())
    mount(point, "--bind", str(foreign))


def tmpfs_mount(folder: Path, point: Path) -> None:
    mount(point, "-t", "tmpfs", "none")
    (point / "precious.bin").write_bytes(marker_bytes())


# --- Zarr stores (check, --like, --config-from) ---------------------------------------------


def zarr_case(
    case_id: str,
    change: Callable[[Path, Path], object],
    words: str,
    *extra: str,
    code: int = 2,
    command: str = "check",
    make: Callable[[Path], Path] = zarr_store,
) -> Case:
    def build(folder: Path) -> list[str]:
        store = make(folder)
        change(folder, store)
        if command == "like":
            # With a seed: no "seed: N" line before a failure found while copying.
            return ["sample", "--like", store.name, "--seed", "1", "-o", "out.safetensors"]
        if command == "config-from":
            return ["sample", "--config-from", store.name, "-o", "out.h5"]
        return ["check", store.name, *extra]

    return Case(case_id, build, words, code)


def node(change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    return lambda folder, store: edit_json(store / "zarr.json", change)


def set_key(key: str, value: object) -> Callable[[dict], None]:
    return lambda document: document.__setitem__(key, value)


def grid(chunk_shape: list[int]) -> dict:
    return {"name": "regular", "configuration": {"chunk_shape": chunk_shape}}


def raw_node(folder: Path, store: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    (store / "zarr.json").write_bytes(data)


def deep_attributes(depth: int) -> Callable[[Path, Path], None]:
    def change(folder: Path, store: Path) -> None:
        text = (store / "zarr.json").read_text()
        text = text.replace(
            '"attributes": {', '"attributes": {"x": ' + "[" * depth + "]" * depth + ",", 1
        )
        (store / "zarr.json").write_text(text)

    return change


def plain_array(shape: list[int], chunks: list[int], dtype: str = "float32") -> dict:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": dtype,
        "chunk_grid": grid(chunks),
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
    }


def empty_dir_store(folder: Path, document: dict, name: str = "m.zarr") -> Path:
    store = folder / name
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps(document))
    return store


def deep_groups(folder: Path) -> Path:
    """Groups nested 2,500 deep (deeper than a path may be long: made by descriptors)."""
    store = folder / "m.zarr"
    store.mkdir()
    group = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()
    here = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(2501):
            node = os.open("zarr.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=here)
            os.write(node, group)
            os.close(node)
            if level == 2500:
                break
            os.mkdir("g", dir_fd=here)
            below = os.open("g", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
            os.close(here)
            here = below
    finally:
        os.close(here)
    return store


def many_arrays(folder: Path) -> Path:
    """A group of 60,000 arrays of 128 uniform values each (no provenance)."""
    store = folder / "m.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    )
    text = json.dumps(plain_array([128], [128]))
    values = vsgen.VarianceScaling(seed=3, distribution="uniform").plan((128,)).array()
    data = values.astype("<f4").tobytes()
    for index in range(60_000):
        array = store / f"a{index}"
        (array / "c").mkdir(parents=True)
        (array / "zarr.json").write_text(text)
        (array / "c" / "0").write_bytes(data)
    return store


def sparse_chunk(folder: Path) -> Path:
    """One float64 array of 2**27 values, its one chunk a 1 GiB file with no data."""
    store = empty_dir_store(folder, plain_array([1 << 27], [1 << 27], "float64"))
    (store / "c").mkdir()
    with open(store / "c" / "0", "wb") as handle:
        handle.truncate(1 << 30)
    return store


def foreign_beside(folder: Path) -> Path:
    path = folder / "foreign.bin"
    path.write_bytes(marker_bytes(16 * 8))
    return path


def link_chunk(target: str) -> Callable[[Path, Path], None]:
    def change(folder: Path, store: Path) -> None:
        foreign_beside(folder)
        chunk = store / "c" / "0" / "0"
        chunk.unlink()
        chunk.symlink_to(target if target != "ABSOLUTE" else folder / "foreign.bin")

    return change


def link_chunk_directory(folder: Path, store: Path) -> None:
    foreign = folder / "foreign-chunks" / "0"
    foreign.mkdir(parents=True)
    (foreign / "0").write_bytes(marker_bytes(16 * 8))
    (store / "c" / "0" / "0").unlink()
    (store / "c" / "0").rmdir()
    (store / "c").rmdir()
    (store / "c").symlink_to(folder / "foreign-chunks")


def replace_chunk(make: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def change(folder: Path, store: Path) -> None:
        chunk = store / "c" / "0" / "0"
        chunk.unlink()
        make(chunk)

    return change


def link_array(folder: Path, store: Path) -> None:
    elsewhere = zarr_store(folder, "foreign.zarr", "8,8")
    (elsewhere / "c" / "0" / "0").write_bytes(marker_bytes(64))
    (store / "data" / "zarr.json").unlink()
    os.rename(store / "data", folder / "old-data")
    (store / "data").symlink_to(elsewhere)


def link_node(folder: Path, store: Path) -> None:
    foreign = folder / "foreign.json"
    foreign.write_text((store / "zarr.json").read_text())
    (store / "zarr.json").unlink()
    (store / "zarr.json").symlink_to(foreign)


def fifo_node(folder: Path, store: Path) -> None:
    (store / "zarr.json").unlink()
    os.mkfifo(store / "zarr.json")


def remove_array(folder: Path, store: Path) -> None:
    for path in sorted((store / "data").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (store / "data").rmdir()


def big_node(folder: Path, store: Path) -> None:
    edit_json(store / "zarr.json", lambda d: d["attributes"].__setitem__("pad", "x" * (17 << 20)))


def group_of(make_array: Callable[[Path, Path], None]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        store = group_store(folder)
        make_array(folder, store)
        return store

    return make


def integer_store(folder: Path) -> Path:
    """A store of a float tensor and an integer one (copied from a checkpoint by --like)."""
    from safetensors.numpy import save_file

    checkpoint = folder / "int.safetensors"
    save_file(
        {"w": np.zeros((8, 8), np.float32), "count": np.arange(64, dtype=np.int64)},
        str(checkpoint),
    )
    vsgen_run(
        folder, "sample", "--like", str(checkpoint), "--seed", "1", "-o", str(folder / "m.zarr")
    )
    checkpoint.unlink()
    return folder / "m.zarr"


NOTHING = lambda folder, store: None  # noqa: E731

ZARR_CASES = [
    zarr_case("zarr-json-nested-5000", deep_attributes(5000), "nested too deeply"),
    zarr_case("zarr-json-nested-200000", deep_attributes(200_000), "nested too deeply"),
    zarr_case("zarr-shape-10**30", node(set_key("shape", [10**30, 8])), "shape must be"),
    zarr_case("zarr-shape-10**400", node(set_key("shape", [10**400, 8])), "shape must be"),
    zarr_case(
        "zarr-shape-2**62",
        node(lambda d: d.update(shape=[2**62], chunk_grid=grid([1 << 27]))),
        "over 1,048,576 chunks",
    ),
    zarr_case(
        "zarr-values-2**63",
        node(lambda d: d.update(shape=[2**62, 4], chunk_grid=grid([2**62, 4]))),
        "2**63 values",
    ),
    zarr_case(
        "zarr-fill-10**19",
        node(set_key("fill_value", 10**19)),
        "truncated_normal",
        code=0,
    ),
    zarr_case(
        "zarr-2**40-values-no-chunks",
        lambda folder, store: (
            edit_json(
                store / "zarr.json", lambda d: d.update(shape=[2**40], chunk_grid=grid([1 << 27]))
            ),
            (store / "c" / "0" / "0").unlink(),
            (store / "c" / "0").rmdir(),
        ),
        "c/0: chunk of array 'weight' is missing",
        "--scale",
        "1",
    ),
    zarr_case(
        "zarr-2**20x2**20-in-1x1-chunks",
        node(lambda d: d.update(shape=[2**20, 2**20], chunk_grid=grid([1, 1]))),
        "over 1,048,576 chunks",
    ),
    zarr_case("zarr-group-2500-deep", NOTHING, "nested over 64 groups deep", make=deep_groups),
    zarr_case(
        "zarr-60000-arrays",
        NOTHING,
        "a59999",
        "--name",
        "a59999",
        "--scale",
        "1",
        "--distribution",
        "uniform",
        code=0,
        make=many_arrays,
    ),
    zarr_case(
        "zarr-sparse-2**27-chunk",
        NOTHING,
        "FAIL  std",
        "--scale",
        "1",
        "--distribution",
        "uniform",
        code=1,
        make=sparse_chunk,
    ),
    zarr_case("zarr-json-symlink", link_node, "zarr.json: is a symbolic link"),
    zarr_case("zarr-json-fifo", fifo_node, "zarr.json: is a FIFO"),
    zarr_case("zarr-chunk-symlink-absolute", link_chunk("ABSOLUTE"), "is a symbolic link"),
    zarr_case("zarr-chunk-symlink-dotdot", link_chunk("../../../foreign.bin"), "symbolic link"),
    zarr_case(
        "zarr-integer-chunk-symlink-like",
        lambda folder, store: (
            foreign_beside(folder),
            (store / "count" / "c" / "0").unlink(),
            (store / "count" / "c" / "0").symlink_to(folder / "foreign.bin"),
        ),
        "count/c/0: chunk of array 'count' is a symbolic link",
        command="like",
        make=integer_store,
    ),
    zarr_case(
        "zarr-chunk-directory-symlink",
        link_chunk_directory,
        "reached through a symbolic link",
    ),
    zarr_case("zarr-chunk-fifo", replace_chunk(os.mkfifo), "is a FIFO"),
    zarr_case("zarr-chunk-socket", replace_chunk(unix_socket), "is a socket"),
    zarr_case("zarr-chunk-device", replace_chunk(char_device), "is a character device"),
    zarr_case(
        "zarr-chunk-directory",
        replace_chunk(lambda path: path.mkdir()),
        "is a directory",
    ),
    zarr_case(
        "zarr-array-symlink",
        NOTHING,
        "data: is a symbolic link",
        make=group_of(link_array),
    ),
    zarr_case(
        "zarr-array-symlink-like",
        NOTHING,
        "data: is a symbolic link",
        command="like",
        make=group_of(link_array),
    ),
    zarr_case("zarr-json-17MiB", big_node, "larger than 16 MiB"),
    zarr_case(
        "zarr-json-duplicate-key",
        lambda folder, store: raw_node(
            folder, store, '{"zarr_format": 3, "zarr_format": 3, "node_type": "array"}'
        ),
        "appears twice",
    ),
    zarr_case(
        "zarr-json-nan",
        lambda folder, store: raw_node(
            folder,
            store,
            (store / "zarr.json").read_text().replace('"fill_value": 0.0', '"fill_value": NaN'),
        ),
        "not a finite number",
    ),
    zarr_case("zarr-json-not-utf8", lambda f, s: raw_node(f, s, b'{"\xff": 1}'), "not UTF-8"),
    zarr_case("zarr-json-not-json", lambda f, s: raw_node(f, s, "{nope"), "invalid JSON"),
    zarr_case("zarr-attributes-list", node(set_key("attributes", [1])), "attributes must be"),
    zarr_case("zarr-zarr-format-2", node(set_key("zarr_format", 2)), "zarr_format must be 3"),
    zarr_case("zarr-chunk-shape-zero", node(set_key("chunk_grid", grid([0, 8]))), "positive"),
    zarr_case("zarr-rank-100", node(set_key("shape", [1] * 100)), "at most 64"),
    zarr_case("zarr-dtype-object", node(set_key("data_type", "|O")), "data type"),
    zarr_case(
        "zarr-compressed",
        node(set_key("codecs", [{"name": "bytes"}, {"name": "zstd", "configuration": {}}])),
        "codecs",
    ),
    zarr_case(
        "zarr-missing-chunk",
        lambda folder, store: (store / "c" / "0" / "0").unlink(),
        "c/0/0: chunk of array 'weight' is missing (vsgen writes every chunk)",
    ),
    zarr_case(
        "zarr-chunk-wrong-size",
        lambda folder, store: (store / "c" / "0" / "0").write_bytes(bytes(7)),
        "has 7 bytes; the chunk holds 512",
    ),
    zarr_case(
        "zarr-array-removed",
        remove_array,
        "missing: data",
        code=1,
        make=group_store,
    ),
]


# --- shard directories and their index --------------------------------------------------------


def shard_case(
    case_id: str,
    change: Callable[[Path, Path], object],
    words: str,
    code: int = 2,
    command: str = "check",
) -> Case:
    def build(folder: Path) -> list[str]:
        directory = shard_dir(folder)
        change(folder, directory)
        if command == "like":
            return ["sample", "--like", directory.name, "--seed", "1", "-o", "out.safetensors"]
        return ["check", directory.name]

    return Case(case_id, build, words, code)


FIRST = "model-00001-of-00002.safetensors"
SECOND = "model-00002-of-00002.safetensors"


def index(change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    return lambda folder, directory: edit_json(directory / INDEX_NAME, change)


def raw_index(text: str | bytes) -> Callable[[Path, Path], None]:
    data = text.encode() if isinstance(text, str) else text
    return lambda folder, directory: (directory / INDEX_NAME).write_bytes(data)


def total_size(value: object) -> Callable[[dict], None]:
    return lambda document: document["metadata"].__setitem__("total_size", value)


def link_shard(relative: bool) -> Callable[[Path, Path], None]:
    def change(folder: Path, directory: Path) -> None:
        foreign = foreign_safetensors(folder / "foreign.safetensors")
        (directory / FIRST).unlink()
        (directory / FIRST).symlink_to("../foreign.safetensors" if relative else foreign)

    return change


def special_shard(make: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def change(folder: Path, directory: Path) -> None:
        (directory / FIRST).unlink()
        make(directory / FIRST)

    return change


def link_index(folder: Path, directory: Path) -> None:
    foreign = folder / "foreign.json"
    foreign.write_text((directory / INDEX_NAME).read_text())
    (directory / INDEX_NAME).unlink()
    (directory / INDEX_NAME).symlink_to(foreign)


def tensor_in_two_shards(folder: Path, directory: Path) -> None:
    """The second shard gets a copy of the first's tensor too (the index names one)."""
    from safetensors.numpy import load_file, save_file

    first = load_file(str(directory / FIRST))
    second = load_file(str(directory / SECOND))
    save_file({**second, **first}, str(directory / SECOND), metadata={"format": "pt"})
    edit_json(
        directory / INDEX_NAME,
        total_size(sum(v.nbytes for v in first.values()) * 2 + second["other/w"].nbytes),
    )


def provenance_lie(folder: Path, directory: Path) -> None:
    """The first shard's provenance records the second shard's tensor."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(directory / FIRST), "np") as handle:
        metadata = handle.metadata()
    document = json.loads(metadata["vsgen"])
    document["tensors"]["other/w"] = document["tensors"]["data"]
    metadata["vsgen"] = json.dumps(document)
    save_file(load_file(str(directory / FIRST)), str(directory / FIRST), metadata=metadata)


def million_entries(folder: Path, directory: Path) -> None:
    entries = ",".join(f'"t{i}":"s"' for i in range(1_200_000))
    (directory / INDEX_NAME).write_text('{"weight_map": {' + entries + "}}")


def index_over_64MiB(folder: Path, directory: Path) -> None:  # noqa: N802
    edit_json(directory / INDEX_NAME, lambda d: d.__setitem__("pad", "x" * (65 << 20)))


SHARD_CASES = [
    shard_case("shard-symlink-absolute", link_shard(False), "is a symbolic link"),
    shard_case("shard-symlink-dotdot", link_shard(True), "is a symbolic link"),
    shard_case("shard-symlink-like", link_shard(False), "is a symbolic link", command="like"),
    shard_case("shard-fifo", special_shard(os.mkfifo), "the shard is a FIFO"),
    shard_case("shard-socket", special_shard(unix_socket), "the shard is a socket"),
    shard_case("shard-device", special_shard(char_device), "the shard is a character device"),
    shard_case("shard-directory", special_shard(lambda p: p.mkdir()), "the shard is a directory"),
    shard_case("shard-missing", special_shard(lambda p: None), "shard missing"),
    shard_case("index-symlink", link_index, "index.json is a symbolic link"),
    shard_case(
        "index-fifo",
        lambda folder, directory: (
            (directory / INDEX_NAME).unlink(),
            os.mkfifo(directory / INDEX_NAME),
        ),
        "index.json is a FIFO",
    ),
    shard_case(
        "index-nested-200000",
        raw_index('{"weight_map": {}, "x": ' + "[" * 200_000 + "]" * 200_000 + "}"),
        "nested too deeply",
    ),
    shard_case("index-1.2-million-entries", million_entries, "values; refusing to parse it"),
    shard_case("index-over-64MiB", index_over_64MiB, "larger than 64 MiB"),
    shard_case("index-total-size-1", index(total_size(1)), "total_size is 1 bytes"),
    shard_case("index-total-size--5", index(total_size(-5)), "non-negative integer"),
    shard_case("index-total-size-x", index(total_size("x")), "non-negative integer"),
    shard_case("index-total-size-1.5", index(total_size(1.5)), "non-negative integer"),
    shard_case("index-total-size-10**30", index(total_size(10**30)), "below 2**63"),
    shard_case("index-total-size-bool", index(total_size(True)), "non-negative integer"),
    shard_case("tensor-in-two-shards", tensor_in_two_shards, "is in two shards"),
    shard_case(
        "index-duplicate-key",
        raw_index(f'{{"weight_map": {{"data": "{FIRST}", "data": "{FIRST}"}}}}'),
        "appears twice",
    ),
    shard_case(
        "index-wrong-shard",
        index(lambda d: d["weight_map"].__setitem__("data", SECOND)),
        "puts 'data' in model-00002-of-00002.safetensors, which lacks it",
    ),
    shard_case(
        "index-path-escape",
        index(lambda d: d["weight_map"].__setitem__("data", "../foreign.safetensors")),
        "not a file in the directory",
    ),
    shard_case(
        "index-absolute-path",
        index(lambda d: d["weight_map"].__setitem__("data", "/etc/passwd")),
        "not a file in the directory",
    ),
    shard_case("index-not-json", raw_index("{nope"), "invalid JSON"),
    shard_case("index-no-weight-map", raw_index('{"metadata": {}}'), "needs a weight_map"),
    shard_case(
        "index-record-malformed",
        index(lambda d: d["metadata"]["vsgen"]["files"].__setitem__(FIRST, {"size": -1})),
        "malformed entry",
    ),
    shard_case("shard-provenance-lie", provenance_lie, "which the shard does not hold"),
    shard_case(
        "index-entry-removed",
        index(lambda d: d["weight_map"].pop("data")),
        "missing: data",
        code=1,
    ),
]


# --- --force on directories that hold something vsgen did not write -------------------------------

FORCE_ZARR = ["sample", "--shape", "16,8", "--seed", "2", "-o", "t.zarr", "--force"]


def force_case(
    case_id: str,
    make: Callable[[Path], object],
    words: str,
    args: list[str] = FORCE_ZARR,
) -> Case:
    def build(folder: Path) -> list[str]:
        make(folder)
        return list(args)

    return Case(case_id, build, words)


def in_zarr(add: Callable[[Path, Path], object]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        store = zarr_store(folder, "t.zarr")
        add(folder, store)

    return make


def write_precious(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(marker_bytes())


def foreign_zarr_store(folder: Path) -> None:
    try:
        import zarr
    except ImportError:
        raise Unsupported("needs the zarr package") from None

    array = zarr.create_array(str(folder / "t.zarr"), shape=(16, 8), chunks=(8, 8), dtype="f4")
    array[...] = MARKER


def sharded_args(name: str = "ckpt") -> list[str]:
    return [
        "sample",
        "--spec",
        "spec.json",
        "-o",
        name,
        "--format",
        "safetensors-sharded",
        "--max-shard-size",
        "300",
        "--force",
    ]


def in_shards(add: Callable[[Path, Path], object]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        directory = shard_dir(folder)
        spec_file(folder)
        add(folder, directory)

    return make


def with_companion(folder: Path) -> None:
    """A shard directory vsgen wrote with a config.json beside the shards, edited since."""
    infos = [TensorInfo("data", (8, 8), np.dtype("float32"))]
    output = parallel.open_parallel_output(
        str(folder / "ckpt"),
        "safetensors-sharded",
        infos,
        companions={"config.json": b'{"hidden_size": 8}\n'},
    )
    with output:
        parallel.write_block(output.places[0], (0, 0), np.zeros((8, 8), np.float32))
        parallel.sync_written(output.temp)
        output.commit()
    (folder / "ckpt" / "config.json").write_bytes(b'{"hidden_size": 9}\n')
    spec_file(folder)


def legacy_foreign_shard(folder: Path) -> None:
    """An index as vsgen 0.2 wrote it (no record) naming a shard vsgen did not write."""
    directory = folder / "ckpt"
    directory.mkdir()
    foreign_safetensors(directory / FIRST)
    index = {"metadata": {"total_size": 256}, "weight_map": {"data": FIRST}}
    (directory / INDEX_NAME).write_text(json.dumps(index))
    spec_file(folder)


def index_only(folder: Path) -> None:
    directory = folder / "ckpt"
    directory.mkdir()
    index = {"metadata": {"total_size": 256}, "weight_map": {"data": FIRST}}
    (directory / INDEX_NAME).write_text(json.dumps(index))
    spec_file(folder)


def npydir_with(add: Callable[[Path, Path], object]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        vsgen_run(
            folder,
            "sample",
            "--spec",
            str(spec_file(folder)),
            "-o",
            str(folder / "nd"),
            "--format",
            "npydir",
        )
        add(folder, folder / "nd")

    return make


NPYDIR_ARGS = ["sample", "--spec", "spec.json", "-o", "nd", "--format", "npydir", "--force"]

FORCE_CASES = [
    force_case(
        "force-zarr-foreign-file",
        in_zarr(lambda f, s: write_precious(s / "c" / "thesis.txt")),
        "t.zarr/c/thesis.txt: not a chunk of the store",
    ),
    force_case(
        "force-zarr-foreign-subtree",
        in_zarr(lambda f, s: write_precious(s / "c" / "notes" / "a.txt")),
        "t.zarr/c/notes: not part of the store",
    ),
    force_case(
        "force-zarr-group-foreign-file",
        lambda folder: (
            write_precious(group_store(folder, "t.zarr") / "data" / "c" / "precious.csv"),
            spec_file(folder),
        ),
        "t.zarr/data/c/precious.csv",
        ["sample", "--spec", "spec.json", "-o", "t.zarr", "--force"],
    ),
    force_case(
        "force-zarr-foreign-file-in-group",
        lambda folder: (
            write_precious(group_store(folder, "t.zarr") / "notes.txt"),
            spec_file(folder),
        ),
        "t.zarr/notes.txt: not part of the store",
        ["sample", "--spec", "spec.json", "-o", "t.zarr", "--force"],
    ),
    force_case("force-zarr-fifo", in_zarr(lambda f, s: os.mkfifo(s / "c" / "pipe")), "a FIFO"),
    force_case("force-zarr-socket", in_zarr(lambda f, s: unix_socket(s / "c" / "s")), "a socket"),
    force_case(
        "force-zarr-device",
        in_zarr(lambda f, s: char_device(s / "c" / "dev")),
        "a character device",
    ),
    force_case(
        "force-zarr-symlink",
        in_zarr(lambda f, s: (s / "c" / "0" / "link").symlink_to(foreign_beside(f))),
        "t.zarr/c/0/link: a symbolic link",
    ),
    force_case(
        "force-zarr-bind-mount",
        in_zarr(lambda f, s: bind_mount(f, s / "c" / "mnt")),
        "t.zarr/c/mnt: a mount point",
    ),
    force_case(
        "force-zarr-other-file-system",
        in_zarr(lambda f, s: tmpfs_mount(f, s / "c" / "mnt")),
        "t.zarr/c/mnt: a mount point",
    ),
    force_case(
        "force-zarr-chunk-resized",
        in_zarr(lambda f, s: (s / "c" / "0" / "0").write_bytes(marker_bytes(4))),
        "16 bytes; vsgen writes 512 per chunk",
    ),
    force_case(
        "force-zarr-chunk-outside-grid",
        in_zarr(lambda f, s: write_precious(s / "c" / "0" / "7")),
        "t.zarr/c/0/7: not a chunk of the store",
    ),
    force_case(
        "force-zarr-chunk-named-00",
        in_zarr(lambda f, s: write_precious(s / "c" / "00")),
        "t.zarr/c/00: not a chunk of the store",
    ),
    force_case(
        "force-zarr-written-by-another-tool",
        foreign_zarr_store,
        "is not a Zarr store vsgen wrote",
    ),
    force_case(
        "force-zarr-no-metadata",
        lambda folder: write_precious(folder / "t.zarr" / "c" / "0" / "0"),
        "zarr.json: missing",
    ),
    force_case(
        "force-zarr-regular-file",
        lambda folder: write_precious(folder / "t.zarr"),
        "exists and is a regular file",
    ),
    force_case(
        "force-zarr-symlink-to-store",
        lambda folder: (folder / "t.zarr").symlink_to(zarr_store(folder, "real.zarr")),
        "exists and is a symbolic link",
    ),
    force_case(
        "force-zarr-mount-point",
        lambda folder: tmpfs_mount(folder, folder / "t.zarr"),
        "is a mount point",
    ),
    force_case(
        "force-shard-index-only",
        index_only,
        "an index without vsgen's record or its shards",
        sharded_args(),
    ),
    force_case(
        "force-shard-foreign-named-like-a-shard",
        in_shards(lambda f, d: foreign_safetensors(d / "model-00009-of-00009.safetensors")),
        "ckpt/model-00009-of-00009.safetensors: not a file vsgen wrote",
        sharded_args(),
    ),
    force_case(
        "force-shard-subdirectory",
        in_shards(lambda f, d: write_precious(d / "notes" / "a.bin")),
        "ckpt/notes: a directory",
        sharded_args(),
    ),
    force_case(
        "force-shard-symlink",
        in_shards(lambda f, d: (d / "extra.safetensors").symlink_to(foreign_beside(f))),
        "a symbolic link",
        sharded_args(),
    ),
    force_case(
        "force-shard-fifo", in_shards(lambda f, d: os.mkfifo(d / "pipe")), "a FIFO", sharded_args()
    ),
    force_case(
        "force-shard-resized",
        in_shards(lambda f, d: (d / FIRST).write_bytes(marker_bytes())),
        "64 bytes; vsgen wrote",
        sharded_args(),
    ),
    force_case(
        "force-shard-companion-changed",
        with_companion,
        "ckpt/config.json: changed since vsgen wrote it",
        sharded_args(),
    ),
    force_case(
        "force-shard-legacy-index-foreign-shard",
        legacy_foreign_shard,
        "a shard without vsgen's provenance",
        sharded_args(),
    ),
    force_case(
        "force-npydir-bind-mount",
        npydir_with(lambda f, d: bind_mount(f, d / "mnt")),
        "nd/mnt: a mount point",
        NPYDIR_ARGS,
    ),
    force_case(
        "force-npydir-symlinked-npy",
        npydir_with(lambda f, d: (d / "x.npy").symlink_to(d / "data.npy")),
        "nd/x.npy: a symbolic link",
        NPYDIR_ARGS,
    ),
]


# --- documents that are FIFOs, and lies in options ------------------------------------------------


def fifo_document(name: str, *args: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        os.mkfifo(folder / name)
        np.save(folder / "w.npy", np.zeros((4, 4), np.float32))
        return list(args)

    return build


def many_tensors(folder: Path) -> list[str]:
    tensors = {f"t{i}": [1] for i in range(70_000)}
    (folder / "spec.json").write_text(json.dumps({"tensors": tensors}))
    return ["sample", "--spec", "spec.json", "-o", "out.safetensors"]


def symlinked_npy(folder: Path) -> list[str]:
    directory = folder / "nd"
    directory.mkdir()
    elsewhere = folder / "foreign.npy"
    np.save(elsewhere, np.full(16, MARKER, np.float32))
    (directory / "w.npy").symlink_to(elsewhere)
    return ["check", "nd", "--scale", "1"]


def command(*args: str) -> Callable[[Path], list[str]]:
    return lambda folder: list(args)


OTHER_CASES = [
    Case(
        "config-fifo-sample",
        fifo_document("c.json", "sample", "--config", "c.json", "--shape", "4,4", "-o", "a.npy"),
        "c.json is a FIFO",
    ),
    Case(
        "config-fifo-check", fifo_document("c.json", "check", "w.npy", "--config", "c.json"), "FIFO"
    ),
    Case(
        "config-fifo-describe",
        fifo_document("c.json", "describe", "--config", "c.json", "--shape", "4,4"),
        "FIFO",
    ),
    Case(
        "spec-fifo-json",
        fifo_document("s.json", "sample", "--spec", "s.json", "-o", "a.h5"),
        "FIFO",
    ),
    Case(
        "spec-fifo-toml",
        fifo_document("s.toml", "sample", "--spec", "s.toml", "-o", "a.h5"),
        "FIFO",
    ),
    Case("spec-70000-tensors", many_tensors, "more than the 65,536"),
    Case(
        "threads-10**30",
        command("sample", "--shape", "4,4", "--threads", "1" + "0" * 30, "-o", "a.npy"),
        "--threads must be at most 4096",
    ),
    Case(
        "threads-10**30-zarr",
        command("sample", "--shape", "4,4", "--threads", "1" + "0" * 30, "-o", "a.zarr"),
        "--threads must be at most 4096",
    ),
    Case(
        "max-shard-size-1e400",
        command(
            "sample",
            "--shape",
            "4,4",
            "--max-shard-size",
            "1e400",
            "-o",
            "d",
            "--format",
            "safetensors-sharded",
        ),
        "--max-shard-size must be a size",
    ),
    Case(
        "max-shard-size-40-digits",
        command(
            "sample",
            "--shape",
            "4,4",
            "--max-shard-size",
            "9" * 40,
            "-o",
            "d",
            "--format",
            "safetensors-sharded",
        ),
        "below 2**63 bytes",
    ),
    Case(
        "name-with-nul-h5",
        command("sample", "--shape", "4,4", "--name", "a\x00b", "-o", "a.h5"),
        "without NUL characters",
    ),
    Case(
        "zarr-4.3e9-chunks",
        command("sample", "--shape", "65536,65536", "--chunks", "1,1", "-o", "a.zarr"),
        "--chunks cuts tensor 'weight' into 4,294,967,296 blocks",
    ),
    Case(
        "zarr-1048577-chunks",
        command("sample", "--shape", "1048577", "--chunks", "1", "-o", "a.zarr"),
        "into 1,048,577 blocks",
    ),
    Case("npydir-symlinked-npy", symlinked_npy, "is a symbolic link"),
]

CASES = ZARR_CASES + SHARD_CASES + FORCE_CASES + OTHER_CASES


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Build every case's folder, run all cases in the worker, collect the results."""
    root = tmp_path_factory.mktemp("hostile-stores")
    try:
        yield run_cases(root, CASES)
    finally:
        for point in reversed(MOUNTS):
            subprocess.run(["umount", "-l", str(point)], check=False)
        MOUNTS.clear()
        # The deepest and the largest folders go now (pytest keeps the last three runs').
        for case_id in ("zarr-group-2500-deep", "zarr-60000-arrays"):
            if (root / case_id).exists():
                remove_tree(root / case_id)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_case(outcomes: dict[str, dict], case: Case) -> None:
    check_outcome(outcomes[case.id], case)


def test_every_case_is_one_of_the_issue_families() -> None:
    """Each family the suite must cover has cases (a guard against losing one)."""
    families = {case.id.split("-")[0] for case in CASES}
    assert {"zarr", "shard", "index", "force", "config", "spec", "threads"} <= families
    assert len({case.id for case in CASES}) == len(CASES)
