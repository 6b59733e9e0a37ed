"""Start-up: what ``vsgen --help``, ``--version`` and a small job import.

Speed itself is measured by benchmarks/bench_user_path.py; here only the
behaviour that makes it possible: the group's help and version need no
NumPy, commands load on demand, and a small job imports no heavy library.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import click
import pytest

from vsgen.cli import COMMANDS, cli

ROOT = pathlib.Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from vsgen.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = ("numpy", "numba", "torch", "h5py", "safetensors", "rich", "keras", "jax", "dask",
         "zarr", "ml_dtypes", "ctypes")
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}),
      file=sys.stderr)
"""


def probe(tmp_path, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["-h"]])
def test_help_and_version_import_no_numpy(tmp_path, args):
    report = probe(tmp_path, *args)
    # --version asks the C library (when built) its instruction-set level: ctypes only.
    allowed = [["ctypes"], []] if args == ["--version"] else [[]]
    assert report["code"] == 0 and report["loaded"] in allowed


def test_small_job_imports_only_numpy(tmp_path):
    report = probe(tmp_path, "sample", "--shape", "512,256", "--seed", "0", "-o", "s.npy")
    assert report["code"] == 0
    assert (tmp_path / "s.npy").is_file()
    # ctypes only for the native kernels (when built); never numba and the rest.
    assert set(report["loaded"]) <= {"numpy", "ctypes"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_lazy_summaries_match_the_commands(name):
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name
    assert COMMANDS[name][1] == command.get_short_help_str(10_000)


def test_group_help_lists_every_command():
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


def test_public_names_resolve():
    import vsgen

    assert set(vsgen.__all__) <= set(dir(vsgen))
    for name in vsgen.__all__:
        value = getattr(vsgen, name)
        if name != "__version__":
            assert value.__module__.startswith("vsgen.") and value.__name__ == name
    with pytest.raises(AttributeError):
        vsgen.no_such_name  # noqa: B018


GC_PROBE = """
import atexit, gc, json, sys
from {module} import main

def report():
    print(json.dumps({{"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}),
          file=sys.stderr)

atexit.register(report)
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("module", "frozen"), [("vsgen.__main__", True), ("vsgen.cli", False)])
def test_collector_is_settled_only_by_the_process_entry_point(tmp_path, module, frozen):
    """``vsgen.__main__`` owns its process: it freezes the objects its imports
    made and runs the command with the collector on; ``vsgen.cli.main``, which
    tests and scripts call in their own process, never touches the collector."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            GC_PROBE.format(module=module),
            "sample",
            "--shape",
            "4,4",
            "--seed",
            "0",
            "-o",
            "s.npy",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stderr.strip().splitlines()[-1])
    assert state["enabled"] is True
    # Tens of thousands of objects exist after importing NumPy and click.
    assert (state["frozen"] > 10_000) is frozen
    assert frozen or state["frozen"] == 0
