"""Whole-model sampling: wall time, values/s and peak memory of a multi-GiB spec.

Writes a spec of many float32 tensors (about 4 GiB by default: 16 matrices of
8192 x 8192 plus their biases) to one .safetensors file with
``vsgen sample --spec`` in a subprocess, and prints the wall time, the values
per second and the child's peak RSS (``resource.getrusage(RUSAGE_CHILDREN)``).
For comparison it then writes one tensor of the same size with ``--shape``
(peak RSS of that child from ``os.wait4``). Tensors are streamed chunk by
chunk, so the spec's peak RSS should match the single tensor's and stay
under 300 MiB however large the model.

Checks the free disk space first and removes everything it wrote.

    python benchmarks/bench_spec.py [--gib 4] [--dir DIR] [--threads N] [--no-reference]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

RSS_LIMIT_MIB = 300


def write_spec(path: str, gib: float) -> int:
    """Write a spec of float32 matrices (and biases) totalling about ``gib`` GiB."""
    side = 8192
    count = max(1, round(gib * 2**30 / (4 * side * side)))
    lines = [
        "seed = 0",
        'dtype = "float32"',
        'layout = "torch"',
        'init = "he_normal"',
        "",
        "[rules]",
        '"*.bias" = "zeros"',
        '"*.3.weight" = "glorot_uniform"',
        "",
        "[tensors]",
    ]
    values = 0
    for index in range(count):
        lines.append(f'"layers.{index}.weight" = {{ shape = [{side}, {side}] }}')
        lines.append(f'"layers.{index}.bias" = {{ shape = [{side}] }}')
        values += side * side + side
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return values


def run_measured(command: list[str]) -> tuple[float, int]:
    """Run ``command``; return (wall seconds, peak RSS in bytes) of that child."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"command failed with exit code {process.returncode}: {command}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> int:
    """Run the measurement; exit 1 if the peak RSS exceeds the bound."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="model size in GiB [4]")
    parser.add_argument("--dir", default=None, help="where to write [system temp dir]")
    parser.add_argument("--threads", type=int, default=None, help="sampling threads [all]")
    parser.add_argument("--no-reference", action="store_true", help="skip the single tensor")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="vsgen-bench-spec-", dir=args.dir)
    try:
        spec = os.path.join(work, "model.toml")
        values = write_spec(spec, args.gib)
        needed = values * 4 + (64 << 20)
        free = shutil.disk_usage(work).free
        if free < needed:
            print(f"skipped: needs {needed / 2**30:.2f} GiB free in {work}, has {free / 2**30:.2f}")
            return 0
        threads = [] if args.threads is None else ["--threads", str(args.threads)]
        output = os.path.join(work, "model.safetensors")
        base = [sys.executable, "-m", "vsgen", "sample", "--quiet", *threads]

        start = time.perf_counter()
        subprocess.run([*base, "--spec", spec, "-o", output], check=True)
        elapsed = time.perf_counter() - start
        # The first and only child so far: its peak RSS (Linux: KiB).
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        size = os.path.getsize(output)
        os.unlink(output)
        print(f"spec:   {values:,} values ({size / 2**30:.2f} GiB safetensors) in {elapsed:.2f} s")
        print(f"        {values / elapsed / 1e6:,.0f} M values/s, peak RSS {peak / 2**20:.0f} MiB")

        if not args.no_reference:
            single = os.path.join(work, "single.safetensors")
            shape = f"{values // 8192},8192"
            ref_elapsed, ref_peak = run_measured(
                [*base, "--shape", shape, "--seed", "0", "-o", single]
            )
            os.unlink(single)
            print(f"single: {values // 8192 * 8192:,} values as one tensor in {ref_elapsed:.2f} s")
            print(
                f"        {values / ref_elapsed / 1e6:,.0f} M values/s, "
                f"peak RSS {ref_peak / 2**20:.0f} MiB"
            )
        ok = peak <= RSS_LIMIT_MIB * 2**20
        print(f"peak RSS bound {RSS_LIMIT_MIB} MiB: {'OK' if ok else 'EXCEEDED'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
