"""Shared set-up: every test is hermetic, and nothing that matters skips in CI.

Before any test module is imported (so before keras or hypothesis read
their settings):

* Keras runs on its numpy backend (``KERAS_BACKEND=numpy``, whatever the
  user's shell says), so the parity tests always run; its config directory
  (``KERAS_HOME``) goes to a temporary folder of the session, removed at the end.
* Hypothesis keeps no example database (profile ``vsgen``: ``database=None``)
  and its home directory (Unicode tables) is the session's temporary folder.
* Subprocesses run this tree: its root leads ``PYTHONPATH``, and a ``vsgen``
  shim that runs ``sys.executable -m vsgen`` leads ``PATH`` (for the README
  and ``--help`` examples that bash runs as written).

During the run:

* every test starts in its own empty ``tmp_path`` (autouse fixture ``in_tmp_path``);
* the working tree is listed before and after the session: anything a test
  added, changed or removed fails the run (``pytest_sessionfinish``);
* with ``CI=true``, a skip of a test that needs an optional package (torch,
  Keras, scipy, ...), of a parity test, or of a test marked
  ``required_in_ci`` is reported as a failure, so a CI run proves they ran.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
#: mutmut runs the tests in its copy of the project, ``mutants/``, where the
#: package is rewritten with trampolines that need mutmut's own configuration
#: (read from the current folder): subprocesses there run the original tree,
#: so only in-process tests judge mutants, and the tree check stands aside
#: (mutmut writes its results into ``mutants/`` while tests run).
UNDER_MUTATION = ROOT.name == "mutants" and (ROOT.parent / "pyproject.toml").exists()
SUBPROCESS_ROOT = ROOT.parent if UNDER_MUTATION else ROOT

_SESSION_TEMP = Path(tempfile.mkdtemp(prefix="vsgen-tests-"))
_SHIM_DIR = _SESSION_TEMP / "bin"
os.environ["KERAS_BACKEND"] = "numpy"
os.environ["KERAS_HOME"] = str(_SESSION_TEMP / "keras")
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(SUBPROCESS_ROOT), os.environ.get("PYTHONPATH", "")])
)
os.environ["PATH"] = os.pathsep.join([str(_SHIM_DIR), os.environ.get("PATH", "")])
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# A suite started in the background (`pytest &` from a script, nohup) inherits
# SIGINT (and maybe SIGTERM) ignored, and so would every vsgen it starts: vsgen
# keeps an ignored signal ignored, as a background job should, so the interrupt
# tests would wait for an exit that never comes. Their processes start with the
# default actions instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _prepare_session_temp() -> None:
    """(Re)create the session's folders and the ``vsgen`` shim; idempotent, so
    that a run forked from an earlier one (mutation testing) finds them too."""
    _SHIM_DIR.mkdir(parents=True, exist_ok=True)
    shim = _SHIM_DIR / "vsgen"
    if not shim.exists():
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vsgen "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _remove_session_temp(owner: int = os.getpid()) -> None:
    if os.getpid() == owner:  # not in forked children, which share the folder
        shutil.rmtree(_SESSION_TEMP, ignore_errors=True)


_prepare_session_temp()
atexit.register(_remove_session_temp)

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
else:
    from hypothesis import HealthCheck
    from hypothesis.configuration import set_hypothesis_home_dir

    # No per-example deadline and no "too slow" health check: these properties
    # are about values, and both turn a busy machine's slow example into a failure.
    _hypothesis_settings.register_profile(
        "vsgen",
        database=None,
        print_blob=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    _hypothesis_settings.load_profile("vsgen")
    # Even without a database, hypothesis caches Unicode tables (for text
    # strategies) in its home directory, ./.hypothesis by default.
    set_hypothesis_home_dir(str(_SESSION_TEMP / "hypothesis"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


# --- each test in its own folder ------------------------------------------------------


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with ``tmp_path`` as the current directory: a relative
    output name (``-o w.npy``) can never meet the user's files."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the working tree is left as it was --------------------------------------------------

#: Created legitimately while tests run: bytecode, pytest's own cache, coverage
#: data, tool caches, and mutmut's working copy (``mutants/``, gitignored).
_LEGITIMATE_DIRS = {
    "__pycache__",
    ".pytest_cache",
    ".git",
    ".ruff_cache",
    ".mypy_cache",
    "mutants",
}
_LEGITIMATE_FILE = re.compile(r"\.pyc$|^\.coverage(\..*)?$")


def _tree_listing(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``root`` (hidden ones too) with (size, mtime_ns, inode);
    virtual environments, bytecode and tool caches are skipped."""
    listing: dict[str, tuple[int, int, int]] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [
            name
            for name in subdirs
            if name not in _LEGITIMATE_DIRS and not (Path(directory, name) / "pyvenv.cfg").exists()
        ]
        for name in files:
            if _LEGITIMATE_FILE.search(name):
                continue
            path = Path(directory, name)
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            listing[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns, info.st_ino)
        for name in subdirs:
            listing.setdefault(str(Path(directory, name).relative_to(root)) + "/", (0, 0, 0))
    return listing


_TREE_BEFORE = pytest.StashKey[dict]()


def pytest_sessionstart(session: pytest.Session) -> None:
    _prepare_session_temp()
    if not UNDER_MUTATION:
        session.config.stash[_TREE_BEFORE] = _tree_listing(session.config.rootpath)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_TREE_BEFORE, None)
    if before is None:
        return
    after = _tree_listing(session.config.rootpath)
    changes = sorted(
        [f"added    {path}" for path in after.keys() - before.keys()]
        + [f"removed  {path}" for path in before.keys() - after.keys()]
        + [
            f"changed  {path}"
            for path in before.keys() & after.keys()
            if before[path] != after[path] and not path.endswith("/")
        ]
    )
    if not changes:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (
        f"the tests changed the working tree {session.config.rootpath} "
        "(tests must work under tmp_path only):\n  " + "\n  ".join(changes)
    )
    if reporter is not None:
        reporter.write_sep("=", "working tree changed", red=True)
        reporter.write_line(message)
    else:  # pragma: no cover - the terminal reporter is always there with -q
        sys.stderr.write(message + "\n")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- test IDs stay short -----------------------------------------------------------------

#: Longest parameter value spelled out in a test ID.  pytest puts the ID into the
#: environment (PYTEST_CURRENT_TEST) of every subprocess a test starts, and Linux
#: refuses to start a process with one variable over 128 KiB (E2BIG); some pytest
#: releases spell out bytes values in full, so a 16 MiB hostile document made its
#: test unable to run the CLI at all.
_ID_CHARS = 40


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    if not isinstance(val, (str, bytes)) or len(val) <= _ID_CHARS:
        return None
    text = val.decode("latin-1") if isinstance(val, bytes) else val
    head = text[: _ID_CHARS // 2].encode("unicode_escape").decode("ascii")
    unit = "bytes" if isinstance(val, bytes) else "chars"
    return f"{head}...({len(val)} {unit})"


# --- in CI, skips of what must run are failures ------------------------------------------

#: A skip whose reason matches this means a test dependency is missing
#: (pytest.importorskip says "could not import 'X'"; skipif reasons here say
#: "X is not installed") or a parity test could not run.
_REQUIRED_REASON = re.compile(
    r"could not import|not installed|not importable|KERAS_BACKEND|parity", re.IGNORECASE
)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _must_not_skip(report, item_or_collector) -> bool:
    if not _in_ci() or not report.skipped or hasattr(report, "wasxfail"):
        return False
    marked = item_or_collector.get_closest_marker("required_in_ci") is not None
    return marked or bool(_REQUIRED_REASON.search(_skip_reason(report)))


def _fail(report, what: str) -> None:
    reason = _skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (
        f"{what} skipped with CI=true: {reason}\n"
        "CI must run the torch, Keras and parity tests: install the test extra and the "
        "CPU torch wheel (see docs/testing.md)."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if _must_not_skip(report, item):
        _fail(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if _must_not_skip(report, collector):
        _fail(report, collector.nodeid)


# --- reading files back with their formats' own libraries ------------------------------


def _read_back(
    path: Path | str,
    name: str = "weight",
    *,
    shape: Sequence[int] | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Tensor ``name`` of a file, read by its format's own library (never vsgen's
    reader), by suffix: .npy, .h5, .safetensors; .raw needs ``shape`` (and ``dtype``)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as handle:
            return handle[name][()]
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))[name]
    if path.suffix == ".raw" and shape is not None:
        return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(tuple(shape))
    raise AssertionError(f"cannot read back {path} (a .raw file needs its shape)")


@pytest.fixture
def read_back() -> Callable[..., np.ndarray]:
    """The read-back helper: ``read_back(path, name="weight", shape=..., dtype=...)``."""
    return _read_back
