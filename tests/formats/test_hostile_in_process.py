"""The hostile store, shard-directory, ``--force`` and option cases of
test_hostile_stores.py, run in this process through ``CliRunner``: the same
inputs, the same exit codes and words, nothing changed.

The suite proper runs each case in its own process under memory and time limits;
this one exists for mutation testing, whose mutants only in-process tests see
(``[tool.mutmut]`` in pyproject.toml). The cases that take seconds to build or
run (60,000 arrays, a 1 GiB sparse chunk, 2,500 nested groups, 64 MiB indexes)
and those that mount file systems are left to the suite proper.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("h5py")

from click.testing import CliRunner  # noqa: E402
from hostile import Case, Unsupported, snapshot  # noqa: E402
from test_hostile_stores import CASES  # noqa: E402

from vsgen.cli import cli  # noqa: E402

#: Cases for the suite proper only (slow to build or run, or mounting).
SLOW = {
    "zarr-60000-arrays",
    "zarr-sparse-2**27-chunk",
    "zarr-group-2500-deep",
    "zarr-json-nested-200000",
    "zarr-json-17MiB",
    "index-1.2-million-entries",
    "index-over-64MiB",
    "index-nested-200000",
    "spec-70000-tensors",
    "force-zarr-bind-mount",
    "force-zarr-other-file-system",
    "force-zarr-mount-point",
    "force-npydir-bind-mount",
}
QUICK = [case for case in CASES if case.id not in SLOW]


@pytest.mark.parametrize("case", QUICK, ids=[case.id for case in QUICK])
def test_hostile_case_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    try:
        args = case.build(tmp_path)
    except Unsupported as reason:
        pytest.skip(str(reason))
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args, input=case.stdin)
    assert result.exit_code == case.code, (result.output, result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output
    if case.code == 2:
        [line] = result.stderr.splitlines()
        assert line.startswith("Error: ") and case.words in line, line
        assert result.stdout == ""
    else:
        assert result.stderr == ""
        assert case.words in result.stdout
    assert snapshot(tmp_path) == before
