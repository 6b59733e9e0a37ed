"""A folder named ``vsgen`` that is not the package, in the current directory (the
clone's own folder, seen from its parent): ``python -m vsgen`` says so.

The situation needs an install whose package is not on ``sys.path`` itself, as
pip's editable installs are (a finder appended to ``sys.meta_path``): Python's
path finder then prefers the namespace package of the current directory. The
tests build such a finder for this tree, in a ``sitecustomize`` of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: An editable install of this tree: found after the path finder, as pip's is.
FINDER = f"""
import importlib.abc, importlib.util, pathlib, sys

ROOT = pathlib.Path({str(ROOT)!r})


class EditableVsgen(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "vsgen" and not name.startswith("vsgen."):
            return None
        base = ROOT.joinpath(*name.split("."))
        if (base / "__init__.py").exists():
            return importlib.util.spec_from_file_location(
                name, base / "__init__.py", submodule_search_locations=[str(base)]
            )
        if base.with_suffix(".py").exists():
            return importlib.util.spec_from_file_location(name, base.with_suffix(".py"))
        return None


sys.meta_path.append(EditableVsgen())
"""


#: Finds a regular ``vsgen`` package on ``sys.path`` itself (a non-editable
#: install in site-packages), which the path finder prefers to a namespace folder.
REGULAR_ON_PATH = (
    "import importlib.machinery, sys\n"
    "spec = importlib.machinery.PathFinder.find_spec('vsgen', [p for p in sys.path if p])\n"
    "print(bool(spec and spec.origin))\n"
)


@pytest.fixture
def parent_of_a_clone(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder holding a ``vsgen`` folder that is not the package, and the
    environment of an editable install (this tree not on PYTHONPATH)."""
    neutral = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    found = python(tmp_path, neutral, "-c", REGULAR_ON_PATH).stdout.strip()
    if found == "True":
        pytest.skip("vsgen is installed as a regular package on sys.path: no folder shadows it")
    (tmp_path / "vsgen").mkdir()
    (tmp_path / "vsgen" / "README.md").write_text("a clone of the repository\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FINDER)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    return tmp_path, env


def python(where: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=where, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_situation_is_real(parent_of_a_clone):
    """``import vsgen`` there gives the namespace package (what users meet); from
    elsewhere, the same install gives the package."""
    where, env = parent_of_a_clone
    there = python(where, env, "-c", "import vsgen; vsgen.VarianceScaling")
    assert there.returncode == 1 and "AttributeError" in there.stderr
    elsewhere = python(where / "site", env, "-c", "import vsgen; print(vsgen.VarianceScaling)")
    assert elsewhere.returncode == 0, elsewhere.stderr


def test_python_m_vsgen_names_the_folder_and_still_runs(parent_of_a_clone):
    where, env = parent_of_a_clone
    done = python(where, env, "-m", "vsgen", "describe", "--shape", "4,4", "--json")
    assert done.returncode == 0, done.stderr
    assert '"fan_in": 4' in done.stdout
    (warning,) = done.stderr.splitlines()
    assert warning.startswith("warning: 'import vsgen' here finds the folder ")
    assert str(where / "vsgen") in warning and "not the vsgen package" in warning
    assert "run Python from another directory" in warning


def test_no_warning_where_vsgen_is_the_package(parent_of_a_clone):
    where, env = parent_of_a_clone
    done = python(where / "site", env, "-m", "vsgen", "--version")
    assert done.returncode == 0 and done.stderr == ""
