"""Generate a 4096x1024 tensor as 4 shards in 4 parallel processes, then prove
that their concatenation is bit-identical to the tensor generated at once.

Each process runs ``vsgen sample --shard K/4``; any machine could run any
shard, since the default ``vsgen`` stream's bytes depend only on the seed,
the options and each value's position. Prints OK and exits 0 on success.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SHAPE = "4096,1024"
COUNT = 4
COMMON = ["--shape", SHAPE, "--preset", "he_normal", "--seed", "2024", "-q"]


def vsgen(*args: str) -> list[str]:
    """The command line running vsgen with this interpreter."""
    return [sys.executable, "-m", "vsgen", *args]


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        shards = [folder / f"part{index}.npy" for index in range(COUNT)]
        workers = [
            subprocess.Popen(
                vsgen(
                    "sample",
                    *COMMON,
                    "--shard",
                    f"{index}/{COUNT}",
                    "--threads",
                    "1",
                    "-o",
                    str(path),
                )
            )
            for index, path in enumerate(shards)
        ]
        failed = [worker.args for worker in workers if worker.wait() != 0]
        if failed:
            print(f"shard generation failed: {failed}", file=sys.stderr)
            return 1
        full_path = folder / "full.npy"
        subprocess.run(vsgen("sample", *COMMON, "-o", str(full_path)), check=True)

        full = np.load(full_path, mmap_mode="r")
        parts = [np.load(path, mmap_mode="r") for path in shards]
        print("shard rows:", [part.shape[0] for part in parts])
        joined = np.concatenate(parts)
        if joined.shape != full.shape or joined.tobytes() != full.tobytes():
            print("shards differ from the full tensor", file=sys.stderr)
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
