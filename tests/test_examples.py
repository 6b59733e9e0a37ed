"""examples/run_all.sh runs where only vsgen's own dependencies are installed
(after the README's first command, ``pip install -e .``): the examples that
need Keras, JAX, torch or safetensors say so and exit 0, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The packages of the extras, which ``pip install -e .`` does not install.
OPTIONAL = (
    "keras",
    "jax",
    "jaxlib",
    "torch",
    "safetensors",
    "dask",
    "distributed",
    "zarr",
    "scipy",
    "transformers",
    "tensorflow",
)

#: A ``sitecustomize`` that makes the optional packages unimportable.
HIDE = f"""
import importlib.abc, sys

HIDDEN = {OPTIONAL!r}


class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Hidden())
"""


def test_run_all_needs_only_the_install_dependencies(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HIDE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hooks), env.get("PYTHONPATH", "")])
    probe = subprocess.run(
        ["python", "-c", "import keras"], env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 1 and "No module named 'keras'" in probe.stderr
    done = subprocess.run(
        ["bash", str(tmp_path / "examples" / "run_all.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert done.stdout.rstrip().endswith("all examples OK")
    # The four examples that need torch, Keras or JAX say why they skip.
    skips = [line for line in done.stdout.splitlines() if "not installed" in line]
    assert len(skips) == 4, done.stdout
