"""vsgen.formats.registry: which format a target gets, and what each format says of itself."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from vsgen import formats
from vsgen.formats import registry, resolve_format


@pytest.mark.parametrize(
    ("target", "fmt", "count", "expected"),
    [
        ("w.npy", None, 1, "npy"),
        ("W.NPY", None, 1, "npy"),
        ("w.h5", None, 1, "h5"),
        ("w.hdf5", None, 3, "h5"),
        ("w.safetensors", None, 2, "safetensors"),
        ("w.raw", None, 1, "raw"),
        ("w.bin", None, 1, "raw"),
        ("-", None, 1, "npy"),
        ("-", "raw", 1, "raw"),
        ("out/", None, 4, "npydir"),
        ("weights", None, 4, "npydir"),
        ("w.dat", "npy", 1, "npy"),
        ("w.npy", "hdf5", 1, "h5"),
    ],
)
def test_resolve_format(target, fmt, count, expected):
    assert resolve_format(target, fmt, count) == expected


def test_resolve_format_existing_directory(tmp_path):
    assert resolve_format(str(tmp_path), None, 2) == "npydir"


@pytest.mark.parametrize(
    ("target", "fmt", "count", "message"),
    [
        ("w.txt", None, 1, "cannot tell the format of 'w.txt'"),
        ("weights", None, 1, "no suffix"),
        ("w.npy", "zip", 1, "unknown format 'zip'"),
        ("-", "h5", 1, "cannot be written to standard output"),
        ("w.npy", None, 2, "a .npy file holds one tensor"),
    ],
)
def test_resolve_format_refuses(target, fmt, count, message):
    with pytest.raises(ValueError, match=message):
        resolve_format(target, fmt, count)


# --- what each format says of itself --------------------------------------------------------

#: The documented matrix (README "Files", SPEC): directory, keeps the provenance,
#: holds bfloat16, holds complex, goes to stdout, streamed by open_output.
FACTS = {
    "npy": (False, False, False, True, True, True),
    "h5": (False, True, False, True, False, True),
    "safetensors": (False, True, True, False, False, True),
    "raw": (False, False, True, True, True, True),
    "npydir": (True, False, False, True, False, True),
    "zarr": (True, True, True, False, False, False),
    "safetensors-sharded": (True, True, True, False, False, False),
}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_every_format_says_what_it_holds(name):
    fmt = registry.get(name)
    assert fmt.name == name
    facts = (
        fmt.directory,
        fmt.keeps_metadata,
        fmt.holds_bfloat16,
        fmt.holds_complex,
        fmt.to_stdout,
        fmt.streams,
    )
    assert facts == FACTS[name]
    for suffix in fmt.suffixes:
        assert resolve_format(f"w{suffix}", None, 1) == name
    assert registry.get(name) is fmt  # one object per format


def test_the_public_lists_of_names():
    assert formats.FORMATS == ("npy", "h5", "safetensors", "raw", "npydir")
    assert formats.PARALLEL_ONLY_FORMATS == ("zarr", "safetensors-sharded")
    assert formats.METADATA_FORMATS == ("h5", "safetensors")
    assert [fmt.name for fmt in registry.all_formats()] == [
        *formats.FORMATS,
        "zarr",
        "safetensors-sharded",
    ]


def test_unknown_and_unstreamed_formats_are_refused_by_name():
    with pytest.raises(
        ValueError, match=r"Argument `fmt` must be one of npy, h5, .*Received: fmt='tar'"
    ):
        registry.get("tar")
    with pytest.raises(
        ValueError, match=r"one of npy, h5, safetensors, raw, npydir\. Received: fmt='zarr'"
    ):
        registry.get("zarr", streaming=True)
    assert registry.get("zarr").name == "zarr"


def test_a_npy_output_loads_no_other_format_module(tmp_path):
    """The registry imports a format's module on first use: a .npy job (the most
    common, and the one whose start-up is measured) loads the NPY module alone."""
    code = (
        "import sys, numpy\n"
        "from vsgen.formats import TensorInfo, open_output\n"
        "with open_output('w.npy', 'npy', [TensorInfo('w', (4,), numpy.float32)]) as out:\n"
        "    out.write(numpy.zeros(4, numpy.float32))\n"
        "    out.commit()\n"
        "print(sorted(m for m in sys.modules if m.startswith('vsgen.formats.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = {name.rsplit(".", 1)[1] for name in ast.literal_eval(done.stdout.strip())}
    assert loaded == {"atomic", "base", "npy", "output", "pipeline", "registry"}
    assert (tmp_path / "w.npy").stat().st_size == 128 + 16
