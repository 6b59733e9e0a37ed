"""What a package index and a license scanner read: LICENSE and pyproject."""

from __future__ import annotations

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
