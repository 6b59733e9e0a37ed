"""The documentation runs as written: every ``console`` and ``python`` block of
README.md and docs/*.md, in order, in a fresh folder per document, with the
output it shows.

The convention (docs/testing.md, "Documentation that runs"):

* A ``console`` block with ``$ `` lines is a transcript: each ``$ `` line is a
  command (a line ending in ``\\`` continues it), the lines after it up to the
  next ``$ `` line its output (stdout and stderr together). Where output is
  shown it must match, line by line: ``...`` within a line stands for any
  text, a line of ``...`` alone for any number of lines. A command whose
  output shows an ``Error:`` line must fail; every other command must succeed.
  A ``console`` block without ``$ `` lines is a list of commands, one a line,
  whose output is not shown.
* A ``python`` block runs in a fresh interpreter (``python -``) in the same
  folder, so it must import what it uses; it must exit 0.
* An HTML comment on the line before the fence marks a block:
  ``<!-- docs-test: skip REASON -->`` (not run: it installs packages or needs
  a cluster), ``<!-- docs-test: heavy needs MODULE ... -->`` (it imports Keras,
  JAX, torch or Dask: run with ``CI=true`` or ``VSGEN_HEAVY_DOCS=1``), and
  ``<!-- docs-test: setup`` ... ``-->`` holds shell lines run before the block,
  unseen by readers (kept for files a reader would have: a ResNet checkpoint).

Blocks run with this tree's ``vsgen`` (the shim tests/conftest.py puts first on
``PATH``) and ``examples/`` copied into the folder, and without
``KERAS_BACKEND``: a block that imports Keras chooses its backend itself, as a
reader's shell does not.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_MARK = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
_SETUP_START = re.compile(r"<!--\s*docs-test:\s*setup\s*$")
_FENCE = re.compile(r"^```(\w*)\s*$")
#: Seconds one command or block may take (a heavy block imports Keras and JAX).
TIMEOUT = 600


@dataclass
class Block:
    """One fenced block of a document and what its marks say."""

    document: str
    line: int
    language: str
    text: str
    skip: str | None = None
    heavy: bool = False
    needs: list[str] = field(default_factory=list)
    setup: str = ""

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def parse(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the marks just before them."""
    name = path.name if path.parent == ROOT else f"docs/{path.name}"
    return parse_markdown(path.read_text(encoding="utf-8"), name)


def parse_markdown(text: str, document: str) -> list[Block]:
    """The fenced blocks of Markdown ``text``, with the marks just before them."""
    lines = text.splitlines()
    blocks: list[Block] = []
    marks: dict[str, object] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        if _SETUP_START.match(line.strip()):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "-->")
            marks["setup"] = "\n".join(lines[index + 1 : end])
            index = end + 1
            continue
        found = _MARK.match(line.strip())
        if found:
            words = found.group(1)
            if words.startswith("skip"):
                marks["skip"] = words[len("skip") :].strip() or "marked skip"
            elif words.startswith("heavy"):
                marks["heavy"] = True
                needs = words.partition("needs")[2].split()
                marks["needs"] = needs
            index += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            blocks.append(
                Block(
                    document=document,
                    line=index + 1,
                    language=fence.group(1),
                    text="\n".join(lines[index + 1 : end]) + "\n",
                    **marks,  # type: ignore[arg-type]
                )
            )
            marks = {}
            index = end + 1
            continue
        if line.strip():
            marks = {}  # a mark applies to the fence right after it
        index += 1
    return blocks


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """``(command, shown output lines)`` of a console block, in order."""
    lines = block.text.splitlines()
    transcript = any(line.startswith("$ ") for line in lines)
    result: list[tuple[str, list[str]]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if transcript and not line.startswith("$ "):
            if result:
                result[-1][1].append(line)
            index += 1
            continue
        command = line[2:] if transcript else line
        while command.endswith("\\") and index + 1 < len(lines):
            index += 1
            command = command[:-1] + "\n" + lines[index]
        if command.strip():
            result.append((command, []))
        index += 1
    return result


def matches(shown: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` lines are what ``shown`` shows (``...`` wildcards)."""
    shown = _trimmed(shown)
    actual = _trimmed(actual)
    if not shown:
        return not actual
    head, rest = shown[0], shown[1:]
    if head.strip() == "...":
        return any(matches(rest, actual[start:]) for start in range(len(actual) + 1))
    if not actual:
        return False
    pattern = ".*".join(re.escape(part) for part in head.rstrip().split("..."))
    return bool(re.fullmatch(pattern, actual[0].rstrip())) and matches(rest, actual[1:])


def _trimmed(lines: list[str]) -> list[str]:
    lines = list(lines)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)  # as in a reader's shell: blocks choose it
    env["COLUMNS"] = "100"
    return env


def run_block(block: Block, folder: Path) -> None:
    """Run one block in ``folder``; AssertionError naming the block if it fails."""
    env = _environment()
    if block.setup:
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{block.setup}"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"{block.where}: setup failed:\n{done.stderr}"
    if block.language == "python":
        done = subprocess.run(
            [sys.executable, "-"],
            input=block.text,
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"{block.where}: python block failed:\n{done.stderr}"
        return
    for command, shown in commands(block):
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail\n{command}"],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
        )
        output = done.stdout.splitlines()
        fails = any(line.startswith("Error:") for line in shown)
        what = f"{block.where}: $ {command}"
        assert "Traceback" not in done.stdout, f"{what}\n{done.stdout}"
        if fails:
            assert done.returncode != 0, f"{what}: shows an error but succeeded\n{done.stdout}"
        else:
            assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout}"
        if shown:
            assert matches(shown, output), (
                f"{what}: the output differs from the one shown\n--- shown\n"
                + "\n".join(shown)
                + "\n--- actual\n"
                + done.stdout
            )


def runnable(path: Path) -> list[Block]:
    return [block for block in parse(path) if block.language in ("console", "python")]


def run_document(path: Path, folder: Path, heavy: bool) -> int:
    """Run the document's blocks in order (heavy ones only if ``heavy``); how many ran."""
    shutil.copytree(ROOT / "examples", folder / "examples")
    count = 0
    for block in runnable(path):
        if block.skip or (block.heavy and not heavy):
            continue
        for module in block.needs:
            pytest.importorskip(module)
        run_block(block, folder)
        count += 1
    return count


def _heavy_wanted() -> bool:
    flags = (os.environ.get("CI", ""), os.environ.get("VSGEN_HEAVY_DOCS", ""))
    return any(flag.strip().lower() in ("1", "true", "yes") for flag in flags)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_document_runs_as_written(path, tmp_path):
    """The light blocks, in order (with the heavy ones too where they will run)."""
    heavy = _heavy_wanted()
    ran = run_document(path, tmp_path, heavy)
    waiting = [block for block in runnable(path) if not block.skip and (heavy or not block.heavy)]
    assert ran == len(waiting)


@pytest.mark.parametrize(
    "path",
    [path for path in DOCUMENTS if any(block.heavy for block in runnable(path))],
    ids=lambda path: path.name,
)
def test_heavy_blocks_run_in_ci(path):
    """Heavy blocks import Keras, JAX, torch or Dask: a few seconds each. They run
    in the test above with CI=true or VSGEN_HEAVY_DOCS=1; this says when they do not."""
    if not _heavy_wanted():
        pytest.skip(f"heavy blocks of {path.name}: set VSGEN_HEAVY_DOCS=1 (CI=true runs them)")


def test_marks_are_rare_and_say_why():
    skipped = [block for path in DOCUMENTS for block in parse(path) if block.skip]
    assert all(block.skip != "marked skip" for block in skipped), "say why a block is skipped"
    assert len(skipped) <= 6, [block.where for block in skipped]


def test_the_block_reader():
    """The convention, on a document written here."""
    text = "\n".join(
        [
            "<!-- docs-test: heavy needs numpy -->",
            "```console",
            "$ echo a \\",
            "  b",
            "a b",
            "$ false || echo 'Error: x' && false",
            "Error: ...",
            "```",
            "text",
            "<!-- docs-test: skip needs a cluster -->",
            "```python",
            "import nothing",
            "```",
        ]
    )
    blocks = parse_markdown(text, "example.md")
    assert [block.language for block in blocks] == ["console", "python"]
    assert blocks[0].heavy and blocks[0].needs == ["numpy"] and blocks[0].skip is None
    assert blocks[1].skip == "needs a cluster"
    assert commands(blocks[0]) == [
        ("echo a \n  b", ["a b"]),
        ("false || echo 'Error: x' && false", ["Error: ..."]),
    ]
    assert matches(["a ... c", "..."], ["a b c", "d", "e"])
    assert matches(["x", "...", "z"], ["x", "z"]) and not matches(["x"], ["x", "y"])
    assert not matches(["a ... c"], ["a b d"])


def test_documented_test_selections_select_tests():
    """Every ``pytest ... -k EXPR`` the documents' blocks show selects some test."""
    expressions = set()
    for path in DOCUMENTS:
        for block in parse(path):
            for line in block.text.splitlines():
                found = re.search(r"pytest\b.*?\s-k\s+(\"[^\"]+\"|'[^']+'|\S+)", line)
                if found:
                    expressions.add(shlex.split(found.group(1))[0])
    assert expressions, "no -k selection found in the documents"
    for expression in sorted(expressions):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
            + ["-k", expression],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0 and "no tests collected" not in done.stdout, (
            f'-k "{expression}" selects no test:\n{done.stdout[-2000:]}'
        )
