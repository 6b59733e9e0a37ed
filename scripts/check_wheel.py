"""Smoke test of an installed vsgen (a wheel in a fresh environment).

Checks, with the ``vsgen`` command of the environment that runs this script:

* the package is the installed one, not a source tree on the path;
* ``vsgen --version`` names the C kernels (``kernels: native ...``);
* ``vsgen sample --shape 512,256 --seed 0`` gives the same bytes with the
  kernels and with ``VSGEN_KERNEL=numpy`` (the NumPy reference), and, with
  ``--expect FILE``, the bytes of FILE (e.g. the README's ``w.npy``).

Used by cibuildwheel's test command and by CI's wheel step::

    python scripts/check_wheel.py [--expect w.npy]

Prints one line and exits 0, or says what failed and exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

SOURCE_TREE = pathlib.Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    print(f"check_wheel: FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def run(command: list[str], **env: str) -> str:
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    if done.returncode != 0 or done.stderr:
        fail(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", type=pathlib.Path, help="a file the sample must equal")
    args = parser.parse_args()
    for name in ("VSGEN_KERNEL", "VSGEN_NATIVE_LEVEL", "PYTHONPATH"):
        os.environ.pop(name, None)

    command = pathlib.Path(sys.executable).parent / "vsgen"
    if not command.is_file():
        fail(f"no vsgen command beside {sys.executable}")
    where = run([sys.executable, "-c", "import vsgen; print(vsgen.__file__)"]).strip()
    if pathlib.Path(where).resolve().is_relative_to(SOURCE_TREE):
        fail(f"vsgen was imported from the source tree ({where}), not the installation")

    version = run([str(command), "--version"]).strip()
    if "kernels: native" not in version:
        fail(f"the C kernels are not in use: {version}")

    with tempfile.TemporaryDirectory() as folder:
        native, reference = pathlib.Path(folder, "w.npy"), pathlib.Path(folder, "w-numpy.npy")
        sample = [str(command), "sample", "--shape", "512,256", "--seed", "0", "-o"]
        run([*sample, str(native)])
        run([*sample, str(reference)], VSGEN_KERNEL="numpy")
        data = native.read_bytes()
        if data != reference.read_bytes():
            fail("the C kernels and the NumPy reference gave different bytes")
        if args.expect is not None and data != args.expect.read_bytes():
            fail(f"the sample differs from {args.expect}")
    digest = hashlib.sha256(data).hexdigest()[:16]
    print(f"check_wheel: OK: {version}; 512x256 sample {digest}... (= NumPy reference)")


if __name__ == "__main__":
    main()
