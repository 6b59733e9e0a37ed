"""The suite's own guards (tests/conftest.py) work: a test that writes into
the working tree fails the run, skips of required tests fail under CI=true,
and the environment is pinned whatever the user's shell says.

Each case runs a small inner pytest in a fresh process (``pytester``) with a
copy of the real conftest, so what is checked is the file CI uses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


class Inner:
    """A project with the real conftest under ``tests/`` and its own pyproject,
    in a subfolder: pytester keeps its own files (basetemp, captured output)
    beside it, outside the tree the conftest watches."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.mkdir("project")
        (self.path / "pyproject.toml").write_text(
            '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'
        )
        (self.path / "tests").mkdir()
        (self.path / "tests" / "conftest.py").write_text(CONFTEST.read_text())

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess("project", "-rA", *args, timeout=120)


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Inner:
    monkeypatch.delenv("CI", raising=False)
    return Inner(pytester)


def run(inner: Inner, *args: str) -> pytest.RunResult:
    return inner.run("-p", "no:cacheprovider", *args)


def test_each_test_runs_in_its_own_empty_folder(inner: Inner) -> None:
    (inner.path / "tests" / "test_cwd.py").write_text(
        "import os\n"
        "def test_cwd(tmp_path):\n"
        "    assert os.getcwd() == str(tmp_path) and os.listdir() == []\n"
        "    open('w.npy', 'wb').close()  # a relative output name stays in tmp_path\n"
        "def test_again(tmp_path):\n"
        "    assert os.listdir() == []\n"
    )
    result = run(inner)
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=2)
    assert not (inner.path / "w.npy").exists()


LEAKS = {
    "added": ("(ROOT / 'leftover.npy').write_bytes(b'x')", "added    leftover.npy"),
    "changed": ("(ROOT / 'keep.txt').write_text('other')", "changed  keep.txt"),
    "removed": ("(ROOT / 'gone.txt').unlink()", "removed  gone.txt"),
    "tool_folder": ("(ROOT / '.hypothesis').mkdir()", "added    .hypothesis/"),
}


def test_a_test_that_touches_the_tree_fails_the_run(inner: Inner) -> None:
    (inner.path / "keep.txt").write_text("the user's file\n")
    (inner.path / "gone.txt").write_text("another one\n")
    (inner.path / "tests" / "test_leak.py").write_text(
        "from pathlib import Path\nROOT = Path(__file__).resolve().parent.parent\n"
        + "".join(f"def test_{name}():\n    {body}\n" for name, (body, _) in LEAKS.items())
    )
    result = run(inner)
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(passed=len(LEAKS))  # each test passed; the run did not
    assert "working tree changed" in output
    for _, change in LEAKS.values():
        assert change in output


def test_an_untouched_tree_passes(inner: Inner) -> None:
    (inner.path / "keep.txt").write_text("the user's file\n")
    (inner.path / "tests" / "test_reads.py").write_text(
        "from pathlib import Path\nROOT = Path(__file__).resolve().parent.parent\n"
        "def test_reads():\n    assert (ROOT / 'keep.txt').read_text()\n"
    )
    result = run(inner)
    assert result.ret == 0, result.stdout.str()


def test_bytecode_and_pytest_cache_are_legitimate(inner: Inner) -> None:
    (inner.path / "helper.py").write_text("VALUE = 3\n")
    (inner.path / "tests" / "test_import.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "sys.path.insert(0, str(Path(__file__).resolve().parent.parent))\n"
        "def test_import():\n    import helper\n    assert helper.VALUE == 3\n"
    )
    result = inner.run()  # with the cache provider
    assert result.ret == 0, result.stdout.str()


SKIPS = (
    "import pytest\n"
    "def test_needs_torch():\n    pytest.importorskip('no_such_torch_build')\n"
    "def test_platform():\n    pytest.skip('needs a pseudo-terminal')\n"
    "@pytest.mark.required_in_ci\n"
    "def test_marked():\n    pytest.skip('no reason that names a package')\n"
)


def test_skips_are_skips_outside_ci(inner: Inner) -> None:
    (inner.path / "tests" / "test_skips.py").write_text(SKIPS)
    result = run(inner)
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(skipped=3)


def test_required_skips_fail_in_ci(inner: Inner, monkeypatch: pytest.MonkeyPatch) -> None:
    (inner.path / "tests" / "test_skips.py").write_text(SKIPS)
    monkeypatch.setenv("CI", "true")
    result = run(inner)
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(failed=2, skipped=1)
    assert "test_needs_torch skipped with CI=true" in output
    assert "test_marked skipped with CI=true" in output


def test_a_module_level_skip_fails_in_ci(inner: Inner, monkeypatch: pytest.MonkeyPatch) -> None:
    (inner.path / "tests" / "test_parity_like.py").write_text(
        "import pytest\nkeras = pytest.importorskip('no_such_keras_build')\n"
        "def test_parity():\n    pass\n"
    )
    monkeypatch.setenv("CI", "true")
    result = run(inner)
    assert result.ret != 0, result.stdout.str()
    result.assert_outcomes(errors=1)
    assert "skipped with CI=true" in result.stdout.str()


def test_environment_is_pinned_whatever_the_shell_says(
    inner: Inner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    (inner.path / "tests" / "test_env.py").write_text(
        "import os, shutil, subprocess, sys\n"
        "from pathlib import Path\n"
        "from hypothesis import settings\n"
        "ROOT = Path(__file__).resolve().parent.parent\n"
        "def test_env(tmp_path):\n"
        "    assert os.environ['KERAS_BACKEND'] == 'numpy'\n"
        "    assert settings.default.database is None\n"
        "    from hypothesis.configuration import storage_directory\n"
        "    assert ROOT not in Path(storage_directory('unicode_data').path).resolve().parents\n"
        "    assert os.environ['PYTHONPATH'].split(os.pathsep)[0] == str(ROOT)\n"
        "    shim = shutil.which('vsgen')\n"
        "    assert shim and Path(shim).read_text().count(sys.executable) == 1\n"
    )
    result = run(inner)
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1)


def test_a_large_parameter_still_lets_its_test_start_processes(inner: Inner) -> None:
    """A 16 MiB hostile document as a parameter: its test ID (which pytest puts in
    every subprocess's environment) stays short, so the test can run the CLI."""
    (inner.path / "tests" / "test_big.py").write_text(
        "import os, subprocess, sys\n"
        "import pytest\n"
        "@pytest.mark.parametrize('data', [b' ' * (16 << 20), 'x' * (1 << 20), b'short'])\n"
        "def test_big(data):\n"
        "    assert len(os.environ['PYTEST_CURRENT_TEST']) < 200\n"
        "    subprocess.run([sys.executable, '-c', 'pass'], check=True, timeout=60)\n"
    )
    result = run(inner, "--collect-only", "-q")
    ids = [line for line in result.stdout.lines if "::test_big[" in line]
    assert ids == [
        "tests/test_big.py::test_big[                    ...(16777216 bytes)]",
        "tests/test_big.py::test_big[xxxxxxxxxxxxxxxxxxxx...(1048576 chars)]",
        "tests/test_big.py::test_big[short]",
    ], result.stdout.str()
    result = run(inner)
    assert result.ret == 0, result.stdout.str()[-2000:]
    result.assert_outcomes(passed=3)


def test_this_run_uses_this_tree() -> None:
    """``python -m vsgen`` in a subprocess, from any folder, imports this tree."""
    import subprocess

    import vsgen

    root = Path(__file__).resolve().parent.parent
    assert Path(vsgen.__file__).resolve().parent == root / "vsgen"
    done = subprocess.run(
        [sys.executable, "-c", "import vsgen; print(vsgen.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(done.stdout.strip()).resolve().parent == root / "vsgen"
    assert os.environ["KERAS_BACKEND"] == "numpy"
