"""Hostile input files: every one answered with one line, exit 2, bounded work.

How each case is run and judged (its own process, limits, one stderr line,
nothing changed, no foreign byte, time and memory) is :mod:`hostile`'s.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from hostile import MARKER, Case, check_outcome, marker_bytes, run_cases  # noqa: E402

import vsgen  # noqa: E402
from vsgen._limits import MAX_CONFIG_BYTES, MAX_TOML_BYTES  # noqa: E402

# --- building hostile files ------------------------------------------------------------


def foreign_h5(folder: Path) -> Path:
    """Another user's HDF5 file, holding the marker."""
    path = folder / "foreign.h5"
    with h5py.File(path, "w") as h5:
        h5["data"] = np.full(16, MARKER, dtype="<f4")
    return path


def safetensors(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file: 8-byte length, header (JSON, or raw bytes/str as given), data."""
    if isinstance(header, (dict, list)):
        text = json.dumps(header).encode()
    elif isinstance(header, str):
        text = header.encode()
    else:
        text = bytes(header)
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def tensor(dtype: str = "F32", shape: object = (4,), offsets: object = (0, 16)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def vsgen_file(folder: Path, name: str, shape: tuple[int, ...] = (16, 8)) -> Path:
    """A genuine vsgen file (h5 or safetensors by suffix) with provenance."""
    from click.testing import CliRunner

    from vsgen.cli import cli

    path = folder / name
    result = CliRunner().invoke(
        cli, ["sample", "--shape", ",".join(map(str, shape)), "--seed", "1", "-o", str(path), "-q"]
    )
    assert result.exit_code == 0, result.stderr
    return path


def with_provenance(document: str) -> bytes:
    """A one-tensor safetensors file whose ``vsgen`` metadata is ``document``."""
    values = np.linspace(-0.1, 0.1, 64, dtype="<f4").tobytes()
    header = {"__metadata__": {"vsgen": document}, "weight": tensor("F32", (8, 8), (0, 256))}
    return safetensors(header, values)


def record_document(**changes: object) -> str:
    record = {
        "kind": "variance_scaling",
        "config": {"scale": 1.0, "mode": "fan_in", "distribution": "uniform", "seed": 1},
        "dtype": "float32",
        "shape": [8, 8],
        "full_shape": [8, 8],
        "rows": None,
        "fan_shape": None,
    }
    for key, value in changes.items():
        if key.startswith("config_"):
            record["config"][key[len("config_") :]] = value  # type: ignore[index]
        elif value is KeyError:
            del record[key]
        else:
            record[key] = value
    return json.dumps({"format": 1, "vsgen_version": "0.1.0", "tensors": {"weight": record}})


def file_case(
    case_id: str, name: str, content: bytes, words: str, *extra: str, command: str = "check"
) -> Case:
    def build(folder: Path) -> list[str]:
        (folder / name).write_bytes(content)
        if command == "like":
            return ["sample", "--like", name, "-o", "out.safetensors", *extra]
        if command == "config-from":
            return ["sample", "--config-from", name, "-o", "out.h5", *extra]
        return ["check", name, *extra]

    return Case(case_id, build, words)


def h5_case(
    case_id: str,
    make: Callable[[Path, object], None],
    words: str,
    *extra: str,
    code: int = 2,
    command: str = "check",
) -> Case:
    def build(folder: Path) -> list[str]:
        foreign = foreign_h5(folder)
        with h5py.File(folder / "model.h5", "w", track_order=True) as h5:
            make(folder, h5)
            del foreign
        if command == "like":
            return ["sample", "--like", "model.h5", "-o", "out.safetensors"]
        return ["check", "model.h5", *extra]

    return Case(case_id, build, words, code)


def uniform_values(shape: tuple[int, ...]) -> np.ndarray:
    return vsgen.VarianceScaling(seed=3, distribution="uniform").plan(shape).array()


UNIFORM = ("--scale", "1", "--distribution", "uniform")


def _external_link(folder: Path, h5: object) -> None:
    h5["weight"] = uniform_values((16, 8))  # type: ignore[index]
    h5["elsewhere"] = h5py.ExternalLink(str(folder / "foreign.h5"), "/data")  # type: ignore[index]


def _external_storage(folder: Path, h5: object) -> None:
    raw = folder / "foreign.bin"
    raw.write_bytes(marker_bytes())
    h5.create_dataset("weight", shape=(16,), dtype="<f4", external=[(str(raw), 0, 64)])  # type: ignore[attr-defined]


def _virtual(folder: Path, h5: object) -> None:
    layout = h5py.VirtualLayout(shape=(16,), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(folder / "foreign.h5"), "data", shape=(16,))
    h5.create_virtual_dataset("weight", layout)  # type: ignore[attr-defined]


def _soft_into_external(folder: Path, h5: object) -> None:
    group = h5.create_group("g")  # type: ignore[attr-defined]
    group["out"] = h5py.ExternalLink(str(folder / "foreign.h5"), "/")
    h5["alias"] = h5py.SoftLink("/g/out/data")  # type: ignore[index]


def _cycle(folder: Path, h5: object) -> None:
    group = h5.create_group("g")  # type: ignore[attr-defined]
    group["weight"] = uniform_values((16, 8))
    group["self"] = group  # a hard link to itself
    h5["again"] = group  # type: ignore[index]
    group["parent"] = h5  # type: ignore[index]
    h5["alias"] = h5py.SoftLink("/g/weight")  # type: ignore[index]
    h5["dangling"] = h5py.SoftLink("/nowhere")  # type: ignore[index]


def _diamonds(folder: Path, h5: object) -> None:
    # 40 levels, two hard links from each to the next: 2**40 paths, 41 groups.
    groups = [h5.create_group(f"level{index}") for index in range(41)]  # type: ignore[attr-defined]
    for upper, lower in zip(groups, groups[1:], strict=False):
        upper["a"] = lower
        upper["b"] = lower
    groups[-1]["weight"] = uniform_values((16, 8))


def _unallocated_chunked(folder: Path, h5: object) -> None:
    h5.create_dataset("weight", shape=(1 << 20, 1 << 20), dtype="<f4", chunks=(256, 256))  # type: ignore[attr-defined]


def _unallocated_contiguous(folder: Path, h5: object) -> None:
    h5.create_dataset("weight", shape=(1 << 36,), dtype="<f4")  # type: ignore[attr-defined]


def _huge_chunk(folder: Path, h5: object) -> None:
    dataset = h5.create_dataset(  # type: ignore[attr-defined]
        "weight", shape=(1 << 28,), dtype="<f4", chunks=(1 << 28,), compression="gzip"
    )
    dataset.id.write_direct_chunk((0,), zlib.compress(b"\x00" * 4096))


def _inflating(folder: Path, h5: object) -> None:
    # 1024 chunks of 16 MiB of zeros, each stored as ~16 KiB of deflate: 16 GiB from 16 MB.
    chunk = 1 << 22
    dataset = h5.create_dataset(  # type: ignore[attr-defined]
        "weight", shape=(chunk * 1024,), dtype="<f4", chunks=(chunk,), compression="gzip"
    )
    packed = zlib.compress(bytes(4 * chunk), 9)
    for index in range(1024):
        dataset.id.write_direct_chunk((index * chunk,), packed)


def _plugin_filter(folder: Path, h5: object) -> None:
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk((16,))
    plist.set_filter(32001, h5py.h5z.FLAG_OPTIONAL, ())  # blosc: a plugin HDF5 would search for
    space = h5py.h5s.create_simple((16,))
    h5py.h5d.create(h5.id, b"weight", h5py.h5t.IEEE_F32LE, space, dcpl=plist)  # type: ignore[attr-defined]


def _compound(folder: Path, h5: object) -> None:
    h5["weight"] = np.zeros(4, dtype=[("a", "<f4"), ("b", "<i4")])  # type: ignore[index]


def _truncated_vsgen_h5(folder: Path) -> list[str]:
    path = vsgen_file(folder, "model.h5", (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return ["check", "model.h5"]


def _fifo(folder: Path) -> list[str]:
    os.mkfifo(folder / "pipe.safetensors")
    return ["check", "pipe.safetensors"]


def _deep_toml(folder: Path) -> list[str]:
    (folder / "spec.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    return ["sample", "--spec", "spec.toml", "-o", "out.safetensors"]


def _big_toml(folder: Path) -> list[str]:
    (folder / "spec.toml").write_text("# padding\n" * (MAX_TOML_BYTES // 10 + 10))
    return ["sample", "--spec", "spec.toml", "-o", "out.safetensors"]


def _deep_json_spec(folder: Path) -> list[str]:
    (folder / "spec.json").write_text('{"tensors": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return ["sample", "--spec", "spec.json", "-o", "out.safetensors"]


def _json_spec(tensors: dict, **top: object) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        (folder / "spec.json").write_text(json.dumps({"tensors": tensors, **top}))
        return ["sample", "--spec", "spec.json", "-o", "out.safetensors"]

    return build


def _command(*args: str) -> Callable[[Path], list[str]]:
    return lambda folder: list(args)


HUGE_STRING = b'{"__metadata__":{"a":"' + b"x" * (100_000_000 - 30) + b'"}}'
HUGE_STRING += b" " * (100_000_000 - len(HUGE_STRING))
#: A real tensor whose provenance record carries 99 MB of padding (as JSON in a string).
HUGE_PROVENANCE = with_provenance(record_document(config=KeyError, pad="x" * 99_000_000))

CASES = [
    # --- safetensors headers ---
    file_case(
        "st-length-over-format-limit",
        "m.safetensors",
        safetensors(b"{}", length=100_000_001),
        "limit of 100000000",
    ),
    file_case(
        "st-length-2**63", "m.safetensors", safetensors(b"{}", length=1 << 63), "limit of 100000000"
    ),
    file_case(
        "st-length-past-eof", "m.safetensors", safetensors(b"{}", length=4096), "exceeds the file"
    ),
    file_case("st-too-short", "m.safetensors", b"\x05\x00\x00", "not a .npy"),
    file_case("st-array-header", "m.safetensors", safetensors(b"[1, 2]"), "not a .npy"),
    file_case("st-extra-data", "m.safetensors", safetensors(b"{} []"), "invalid JSON"),
    file_case("st-invalid-json", "m.safetensors", safetensors(b"{]"), "invalid JSON"),
    file_case("st-not-utf8", "m.safetensors", safetensors(b'{"\xff": 1}'), "not UTF-8"),
    file_case(
        "st-deep-nesting",
        "m.safetensors",
        safetensors(b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
        "nested too deeply",
    ),
    file_case(
        "st-deep-nesting-unclosed",
        "m.safetensors",
        safetensors(b'{"a":' + b"[" * 5_000_000),
        "nested too deeply",
    ),
    file_case(
        "st-two-million-values",
        "m.safetensors",
        safetensors(b'{"a":[' + b"0," * 2_000_000 + b"0]}"),
        "values",
    ),
    file_case(
        "st-two-million-empty-lists",
        "m.safetensors",
        safetensors(b'{"a":[' + b"[]," * 2_000_000 + b"[]]}"),
        "values",
    ),
    file_case(
        "st-70000-empty-tensors",
        "m.safetensors",
        safetensors({f"t{i}": tensor(shape=(0,), offsets=(0, 0)) for i in range(70_000)}),
        "over 65536 tensors",
    ),
    file_case("st-100MB-string", "m.safetensors", safetensors(HUGE_STRING), "holds no tensors"),
    file_case("st-100MB-provenance", "m.safetensors", HUGE_PROVENANCE, "field 'config'"),
    file_case(
        "st-astral-string",
        "m.safetensors",
        safetensors(b'{"__metadata__":{"a":"' + "\U0001f600".encode() * 7_000_000 + b'"}}'),
        "bytes per character",
    ),
    file_case(
        "st-missing-shape",
        "m.safetensors",
        safetensors({"w": {"dtype": "F32", "data_offsets": [0, 16]}}, bytes(16)),
        "no field 'shape'",
    ),
    file_case(
        "st-missing-offsets",
        "m.safetensors",
        safetensors({"w": {"dtype": "F32", "shape": [4]}}, bytes(16)),
        "no field 'data_offsets'",
    ),
    file_case(
        "st-negative-offsets",
        "m.safetensors",
        safetensors({"w": tensor(offsets=(-8, 8))}, bytes(16)),
        "0 <= begin <= end",
    ),
    file_case(
        "st-infinity-offsets",
        "m.safetensors",
        safetensors(
            '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, Infinity]}}', bytes(16)
        ),
        "not a finite number",
    ),
    file_case(
        "st-1e400-offsets",
        "m.safetensors",
        safetensors('{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1e400]}}', bytes(16)),
        "data_offsets",
    ),
    file_case(
        "st-float-offsets",
        "m.safetensors",
        safetensors({"w": tensor(offsets=(0.0, 16.0))}, bytes(16)),
        "two integers",
    ),
    file_case(
        "st-10**30-offsets",
        "m.safetensors",
        safetensors({"w": tensor(offsets=(0, 10**30))}, bytes(16)),
        "past the 16 bytes",
    ),
    file_case(
        "st-overlap",
        "m.safetensors",
        safetensors({"a": tensor(), "b": tensor(offsets=(8, 24))}, bytes(24)),
        "overlaps",
    ),
    file_case(
        "st-gap",
        "m.safetensors",
        safetensors({"a": tensor(), "b": tensor(offsets=(20, 36))}, bytes(36)),
        "gap",
    ),
    file_case(
        "st-trailing-bytes", "m.safetensors", safetensors({"a": tensor()}, bytes(32)), "cover 16"
    ),
    file_case(
        "st-unknown-dtype",
        "m.safetensors",
        safetensors({"w": tensor("F128")}, bytes(16)),
        "'dtype'",
    ),
    file_case(
        "st-dtype-not-string",
        "m.safetensors",
        safetensors({"w": tensor(["F32"])}, bytes(16)),
        "'dtype'",
    ),
    file_case(
        "st-shape-mismatch",
        "m.safetensors",
        safetensors({"w": tensor(shape=(5,))}, bytes(16)),
        "needs 20",
    ),
    file_case(
        "st-negative-dim",
        "m.safetensors",
        safetensors({"w": tensor(shape=(-4,))}, bytes(16)),
        "'shape'",
    ),
    file_case(
        "st-2**62-values",
        "m.safetensors",
        safetensors({"w": tensor(shape=(1 << 31, 1 << 31))}, bytes(16)),
        "needs",
    ),
    file_case(
        "st-rank-100",
        "m.safetensors",
        safetensors({"w": tensor(shape=[1] * 100, offsets=(0, 4))}, bytes(4)),
        "dimensions",
    ),
    file_case(
        "st-entry-not-object", "m.safetensors", safetensors({"w": [1, 2, 3]}), "not an object"
    ),
    file_case(
        "st-duplicate-key",
        "m.safetensors",
        safetensors(
            '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
            '"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}',
            bytes(32),
        ),
        "appears twice",
    ),
    file_case(
        "st-metadata-not-strings",
        "m.safetensors",
        safetensors({"__metadata__": {"vsgen": {"deep": 1}}, "w": tensor()}, bytes(16)),
        "not a string",
    ),
    file_case(
        "st-truncated-data",
        "m.safetensors",
        safetensors({"w": tensor(shape=(1024,), offsets=(0, 4096))}, bytes(100)),
        "past",
    ),
    # --- provenance carried by a file ---
    file_case(
        "prov-deep",
        "m.safetensors",
        with_provenance("[" * 100_000 + "]" * 100_000),
        "nested too deeply",
    ),
    file_case("prov-not-json", "m.safetensors", with_provenance("{nope"), "malformed"),
    file_case(
        "prov-scale-10**400",
        "m.safetensors",
        with_provenance(record_document(config_scale=10**400)),
        "scale",
    ),
    file_case(
        "prov-scale-1e400",
        "m.safetensors",
        with_provenance(record_document().replace('"scale": 1.0', '"scale": 1e400')),
        "scale",
    ),
    file_case(
        "prov-scale-nan",
        "m.safetensors",
        with_provenance(record_document().replace('"scale": 1.0', '"scale": NaN')),
        "scale",
    ),
    file_case(
        "prov-no-config",
        "m.safetensors",
        with_provenance(record_document(config=KeyError)),
        "config",
    ),
    file_case(
        "prov-shape-text", "m.safetensors", with_provenance(record_document(shape="8x8")), "shape"
    ),
    file_case(
        "prov-fan-shape-nested",
        "m.safetensors",
        with_provenance(record_document(fan_shape=[[8], [8]])),
        "fan_shape",
    ),
    file_case(
        "prov-record-list",
        "m.safetensors",
        with_provenance(json.dumps({"tensors": {"weight": [1]}})),
        "not an object",
    ),
    file_case(
        "prov-rows-huge",
        "m.safetensors",
        with_provenance(record_document(rows=[0, 10**400])),
        "rows",
        command="config-from",
    ),
    file_case(
        "prov-config-from-no-shape",
        "m.safetensors",
        with_provenance(record_document(full_shape=KeyError)),
        "full_shape",
        command="config-from",
    ),
    file_case(
        "like-negative-offsets",
        "m.safetensors",
        safetensors({"w": tensor(offsets=(-8, 8))}, bytes(16)),
        "0 <= begin",
        command="like",
    ),
    file_case(
        "like-deep",
        "m.safetensors",
        safetensors(b'{"a":' + b"{" * 100_000),
        "nested too deeply",
        command="like",
    ),
    # --- npy headers ---
    file_case("npy-magic-only", "m.npy", b"\x93NUMPY", "truncated NPY header", *UNIFORM),
    file_case("npy-no-length", "m.npy", b"\x93NUMPY\x01\x00\x10", "truncated NPY header", *UNIFORM),
    file_case(
        "npy-short-header",
        "m.npy",
        b"\x93NUMPY\x01\x00\xff\xff{'descr'",
        "truncated NPY header",
        *UNIFORM,
    ),
    file_case(
        "npy-4GB-header",
        "m.npy",
        b"\x93NUMPY\x02\x00\xff\xff\xff\xff" + bytes(64),
        "over the",
        *UNIFORM,
    ),
    file_case("npy-version-9", "m.npy", b"\x93NUMPY\x09\x00" + bytes(64), "version", *UNIFORM),
    file_case(
        "npy-object-dtype",
        "m.npy",
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", 118)
        + b"{'descr': '|O', 'fortran_order': False, 'shape': (2,), }".ljust(117)
        + b"\n"
        + bytes(16),
        "not a numeric dtype",
        *UNIFORM,
    ),
    file_case(
        "npy-garbage-header",
        "m.npy",
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", 54)
        + b"__import__('os').system('x')".ljust(53)
        + b"\n",
        "malformed NPY header",
        *UNIFORM,
    ),
    file_case(
        "npy-deep-header",
        "m.npy",
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 60_000) + (b"(" * 59_999) + b"\n",
        "malformed NPY header",
        *UNIFORM,
    ),
    file_case(
        "npy-truncated-data",
        "m.npy",
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", 118)
        + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1024,), }".ljust(117)
        + b"\n"
        + bytes(16),
        "truncated",
        *UNIFORM,
    ),
    # --- HDF5 ---
    h5_case("h5-external-link", _external_link, "another file", *UNIFORM),
    h5_case("h5-external-link-like", _external_link, "another file", command="like"),
    h5_case("h5-external-storage", _external_storage, "external files", *UNIFORM),
    h5_case("h5-external-storage-like", _external_storage, "external files", command="like"),
    h5_case("h5-virtual-dataset", _virtual, "virtual dataset", *UNIFORM),
    h5_case("h5-soft-link-into-external", _soft_into_external, "another file", *UNIFORM),
    h5_case("h5-unallocated-chunked-2**40", _unallocated_chunked, "storage for 0", *UNIFORM),
    h5_case("h5-unallocated-contiguous-2**36", _unallocated_contiguous, "no storage", *UNIFORM),
    h5_case("h5-1GiB-chunk", _huge_chunk, "chunks of", *UNIFORM),
    h5_case("h5-16GiB-from-16MB", _inflating, "inflate", *UNIFORM),
    h5_case("h5-plugin-filter", _plugin_filter, "filter 32001", *UNIFORM),
    h5_case("h5-compound", _compound, "only numeric tensors", *UNIFORM),
    file_case(
        "h5-garbage", "model.h5", b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 64, "HDF5", *UNIFORM
    ),
    Case("h5-truncated", _truncated_vsgen_h5, "HDF5"),
    # --- hard-link cycles and diamonds: walked once, judged normally ---
    h5_case("h5-cycle-and-aliases", _cycle, "", *UNIFORM, code=0),
    h5_case("h5-2**40-paths", _diamonds, "", *UNIFORM, code=0),
    # --- not files ---
    Case("fifo", _fifo, "FIFO"),
    Case("char-device", _command("check", "/dev/zero"), "character device"),
    Case("directory-without-npy", _command("check", "."), "holds no tensors"),
    # --- configs and specs ---
    Case(
        "config-dev-zero",
        _command("sample", "--config", "/dev/zero", "--shape", "4", "-o", "out.npy"),
        "larger than",
    ),
    Case(
        "config-stdin-endless",
        _command("sample", "--config", "-", "--shape", "4", "-o", "out.npy"),
        "larger than",
        stdin=b" " * (MAX_CONFIG_BYTES + 10),
    ),
    Case(
        "config-deep",
        _command("sample", "--config", "-", "--shape", "4", "-o", "out.npy"),
        "nested too deeply",
        stdin=b"[" * 200_000 + b"]" * 200_000,
    ),
    Case(
        "config-scale-10**400",
        _command("sample", "--config", "-", "--shape", "4", "-o", "out.npy"),
        "scale",
        stdin=b'{"scale": 1' + b"0" * 400 + b"}",
    ),
    Case(
        "config-scale-1e400",
        _command("sample", "--config", "-", "--shape", "4", "-o", "out.npy"),
        "scale",
        stdin=b'{"scale": 1e400}',
    ),
    Case(
        "config-digits",
        _command("sample", "--config", "-", "--shape", "4", "-o", "out.npy"),
        "4300 digits",
        stdin=b'{"seed": 1' + b"0" * 5000 + b"}",
    ),
    Case("spec-deep-toml", _deep_toml, "nested too deeply"),
    Case("spec-big-toml", _big_toml, "larger than"),
    Case("spec-deep-json", _deep_json_spec, "nested too deeply"),
    Case(
        "spec-constant-10**400",
        _json_spec({"a": {"shape": [4], "init": {"constant": 10**400}}}),
        "must be a finite float",
    ),
    Case(
        "spec-constant-overflows-float16",
        _json_spec({"a": {"shape": [4], "init": {"constant": 1e300}}}, dtype="float16"),
        "overflows float16",
    ),
    Case("spec-shape-1e400", _json_spec({"a": {"shape": [1e400]}}), "not a finite number"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Build every case's folder, run all cases in the worker, collect the results."""
    return run_cases(tmp_path_factory.mktemp("hostile"), CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_case(outcomes: dict[str, dict], case: Case) -> None:
    check_outcome(outcomes[case.id], case)
    if case.code == 0:
        # Each object once, aliases not listed.
        assert outcomes[case.id]["stdout"].count(b"weight") == 1


def test_foreign_files_are_untouched(outcomes: dict[str, dict]) -> None:
    """The files hostile links point at are never modified (and were never read: see above)."""
    for case in CASES:
        folder = outcomes[case.id]["folder"]
        foreign = folder / "foreign.h5"
        if foreign.exists():
            with h5py.File(foreign, "r") as h5:
                assert (h5["data"][()] == MARKER).all()
