"""How soon the progress bar appears, on the user's path.

A large ``vsgen sample`` runs with stderr on a pseudo-terminal; the time from
spawning the process to the first bytes of the bar ("preparing") is compared
with the time a bare ``vsgen --version`` takes to start and exit (Python,
NumPy and click start-up, which no bar can precede). The difference is what
the user waits, after start-up, before seeing that work began (target: below
0.2 s, while the compiled kernels alone take about 0.5 s to load).

Usage: ``python benchmarks/bench_progress.py [--repeat 5] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import time

VSGEN = [sys.executable, "-m", "vsgen"]


def version_seconds(work: str) -> float:
    start = time.perf_counter()
    subprocess.run([*VSGEN, "--version"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def first_bar_seconds(work: str) -> tuple[float, float]:
    """(seconds to the first 'preparing' render, seconds to exit) of a 64 Mi-value run."""
    leader, follower = pty.openpty()
    start = time.perf_counter()
    process = subprocess.Popen(
        [*VSGEN, "sample", "--shape", "8192,8192", "--seed", "1", "-o", "w.npy", "--force"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(follower)
    seen = None
    captured = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        captured += data
        if seen is None and b"preparing" in captured:
            seen = time.perf_counter() - start
    os.close(leader)
    process.wait()
    total = time.perf_counter() - start
    if seen is None:
        raise SystemExit("no progress bar was seen")
    return seen, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        versions = [version_seconds(work) for _ in range(args.repeat)]
        runs = [first_bar_seconds(work) for _ in range(args.repeat)]
    baseline = statistics.median(versions)
    bar = statistics.median(seen for seen, _ in runs)
    total = statistics.median(total for _, total in runs)
    print(f"vsgen --version (start-up and exit)      {baseline * 1000:7.0f} ms")
    print(f"first progress-bar render ('preparing')  {bar * 1000:7.0f} ms")
    after = (bar - baseline) * 1000
    print(f"  after start-up                         {after:7.0f} ms  (target < 200)")
    print(f"whole run (64 Mi float32 values to .npy)  {total * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
