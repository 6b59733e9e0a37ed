"""What a package index and a license scanner read: LICENSE and pyproject."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import vsgen

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_file_is_the_declared_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("Copyright 2026 The vsgen authors.")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer
    assert project()["license"] == "Apache-2.0"
    assert "LICENSE" in project()["license-files"]


def test_metadata_people_look_for():
    meta = project()
    assert meta["authors"] and meta["keywords"]
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(meta["urls"])
    assert any(c.startswith("Programming Language :: Python :: 3") for c in meta["classifiers"])
    # Classifiers must not contradict the SPDX license expression (PEP 639).
    assert not any(c.startswith("License ::") for c in meta["classifiers"])


def test_version_and_entry_point():
    assert vsgen.__version__ == "0.2.0"
    assert project()["scripts"]["vsgen"] == "vsgen.__main__:main"
    from vsgen.__main__ import main

    assert callable(main)


def test_import_vsgen_is_light():
    """The command line installs its Ctrl-C handling before NumPy is imported."""
    import subprocess

    code = "import sys, vsgen.__main__; print('numpy' in sys.modules, 'click' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_submodules_are_reachable_from_the_package():
    import subprocess

    code = (
        "import vsgen; "
        "print(vsgen.names.canonical('FAN-AVG', ('fan_in', 'fan_avg')), "
        "vsgen.formats.open_output.__name__, vsgen.KaimingNormal.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["fan_avg", "open_output", "KaimingNormal"], done.stderr


def test_the_version_line_names_the_default_streams_label():
    from vsgen._version import DEFAULT_STREAM_LABEL
    from vsgen.streams import DEFAULT_STREAM, get_stream

    assert get_stream(DEFAULT_STREAM).label == DEFAULT_STREAM_LABEL


# --- what the package ships and needs --------------------------------------------------


def test_the_package_is_typed():
    """PEP 561: py.typed ships (package data; the wheel's list is checked below)."""
    assert (ROOT / "vsgen" / "py.typed").is_file()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in setuptools["package-data"]["vsgen"]


def _third_party_imports() -> set[str]:
    """Top-level names of the modules that vsgen/ imports, the standard library's
    and vsgen's own left out."""
    import ast

    names: set[str] = set()
    for path in (ROOT / "vsgen").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "vsgen"}


def test_runtime_dependencies_are_what_vsgen_imports():
    import re

    declared = {re.split(r"[<>=;\[ ]", spec)[0] for spec in project()["dependencies"]}
    imported = _third_party_imports()
    # Every runtime dependency is imported by vsgen/ (its import name is its name).
    assert declared == {"click", "numpy", "h5py", "rich", "ml_dtypes", "tomli"}
    assert declared <= imported
    # vsgen never imports numba (retired) or safetensors (its own reader and
    # writer); the tests read files back with the real safetensors package.
    assert not imported & {"numba", "safetensors"}
    assert any(
        spec.startswith("safetensors") for spec in project()["optional-dependencies"]["test"]
    )
    # The rest are optional: adapters and extras, each imported where it is used
    # (msgpack comes with distributed, fsspec with dask and the s3 extra's s3fs).
    optional = {
        "torch",
        "keras",
        "jax",
        "dask",
        "distributed",
        "zarr",
        "transformers",
        "msgpack",
        "fsspec",
    }
    assert imported - declared <= optional
    assert project()["optional-dependencies"]["hf"] == ["transformers>=5"]


def _copy_of_the_source(tmp_path: Path) -> Path:
    """What an sdist is built from: the tracked project files, without built
    libraries or bytecode (a build writes into its source folder)."""
    import shutil

    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.pyc")
    for name in ("vsgen", "tests"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    return source


def _setup_py(source: Path, *args: str, **env: str):
    import subprocess

    environment = {k: v for k, v in os.environ.items() if not k.startswith("VSGEN_")}
    return subprocess.run(
        [sys.executable, "setup.py", *args],
        cwd=source,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _setuptools_can_build() -> bool:
    try:
        import setuptools
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77  # pyproject's build requirement


needs_setuptools = pytest.mark.skipif(
    not _setuptools_can_build(), reason="setuptools >= 77 (the build backend) is absent"
)


@needs_setuptools
def test_a_build_without_a_c_compiler_says_so_in_one_line(tmp_path):
    source = _copy_of_the_source(tmp_path)
    done = _setup_py(source, "-q", "build_ext", "--inplace", CC="false")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("vsgen:")]
    assert len(said) == 1, done.stderr
    assert said[0].startswith(
        "vsgen: no C kernels built (no working C compiler?); vsgen will run on NumPy, "
        "5-15x slower: install a C compiler and reinstall ["
    )
    assert not list((source / "vsgen" / "streams").glob("_native_kernels*.so"))
    # Where the kernels are required (CI, wheels), the same build fails.
    required = _setup_py(
        source, "-q", "build_ext", "--inplace", CC="false", VSGEN_REQUIRE_NATIVE="1"
    )
    assert required.returncode != 0
    assert "vsgen: the C kernels did not build" in required.stderr


@needs_setuptools
def test_the_sdist_holds_the_c_sources_and_the_wheel_the_library(tmp_path):
    import tarfile
    import zipfile

    source = _copy_of_the_source(tmp_path)
    dist = tmp_path / "dist"
    for command in ("sdist", "bdist_wheel"):
        done = _setup_py(source, "-q", command, "-d", str(dist), VSGEN_REQUIRE_NATIVE="1")
        assert done.returncode == 0, done.stderr
    (sdist,) = dist.glob("vsgen-*.tar.gz")
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {
        "setup.py",
        "MANIFEST.in",
        "vsgen/py.typed",
        "vsgen/streams/_native_kernels.c",
        "vsgen/streams/_native_kernels_body.h",
        "tests/conftest.py",
        "tests/streams/test_counter.py",
    } <= in_sdist
    assert not [name for name in in_sdist if name.endswith((".so", ".pyc"))]
    (wheel,) = dist.glob("vsgen-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert "vsgen/py.typed" in in_wheel
    kernels = [name for name in in_wheel if name.startswith("vsgen/streams/_native_kernels")]
    assert len(kernels) == 1 and kernels[0].endswith(".so")  # the library, no C source
    assert not [name for name in in_wheel if name.startswith("tests/")]
