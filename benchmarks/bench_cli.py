"""End-to-end benchmark of the ``vsgen`` command.

Measures, in one run:

1. start-up, the two ratios the project holds itself to (median wall times of
   interleaved runs): ``vsgen --help`` against ``python -c "import numpy"``
   (target <= 1.15) and the small job ``vsgen sample --shape 512,256 -o w.npy``
   against a NumPy script that makes and saves a float32 array of that shape
   (target <= 1.3);
2. throughput: the marginal rate of ``vsgen sample`` writing float32 .npy
   (the difference of two sizes, so start-up cancels) against the in-memory
   rate of the Python API on the same size and distribution (target: >= 80 %),
   and against a plain ``f.write`` + ``fsync`` of the same bytes, which bounds
   any writer on the disk at hand;
3. memory: peak RSS of the CLI process writing a big float32 tensor (default
   2**30 values = 4 GiB) to each format (target: <= 300 MiB).

Usage: ``python benchmarks/bench_cli.py [--size-log2 28] [--big-log2 30]
[--dir DIR] [--repeat 3] [--skip-big] [--startup-only]``. Outputs are deleted afterwards.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)
VSGEN = [sys.executable, "-m", "vsgen"]


def wall(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def peak_rss_mib(command: list[str], cwd: str) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of ``command`` run as a child of a fresh wrapper."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, *command],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    return seconds, int(result.stdout.split()[-1]) / 1024


#: The peer of the small job: NumPy making and saving a float32 array of its shape.
NUMPY_SAVE = (
    "import numpy as np; np.save('n.npy', "
    "np.random.default_rng(0).standard_normal((512, 256), dtype=np.float32))"
)
#: (label, command, peer label, peer command, target) of the start-up ratios.
STARTUP_RATIOS = (
    (
        "vsgen --help",
        [*VSGEN, "--help"],
        "python -c 'import numpy'",
        [sys.executable, "-c", "import numpy"],
        1.15,
    ),
    (
        "vsgen sample --shape 512,256 -o w.npy",
        [*VSGEN, "sample", "--shape", "512,256", "--seed", "0", "-o", "w.npy", "--force"],
        "NumPy script saving the same array",
        [sys.executable, "-c", NUMPY_SAVE],
        1.30,
    ),
)


def startup(work: str, repeat: int) -> list[tuple[str, float, float]]:
    """The start-up ratios (ours / peer's median wall time, runs interleaved so that
    both see the same machine), printed with their targets; returned as
    ``(label, ratio, target)``."""
    commands = {}
    for label, command, peer_label, peer, _ in STARTUP_RATIOS:
        commands[label], commands[peer_label] = command, peer
    for command in commands.values():
        wall(command, work)  # warm the file cache and the compiled kernels' loading
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, command in commands.items():
            times[label].append(wall(command, work))
    median = {label: statistics.median(values) for label, values in times.items()}
    print(f"start-up (median wall time of {repeat} interleaved runs)")
    results = []
    for label, _, peer_label, _, target in STARTUP_RATIOS:
        ratio = median[label] / median[peer_label]
        verdict = "PASS" if ratio <= target else "FAIL"
        print(
            f"  {label:40s} {median[label] * 1e3:6.0f} ms  /  {peer_label:36s} "
            f"{median[peer_label] * 1e3:6.0f} ms  = {ratio:.2f}x  (target <= {target}: {verdict})"
        )
        results.append((label, ratio, target))
    return results


def plain_write_rate(work: str, values: int) -> float:
    """M float32 values/s of writing the same bytes with f.write + fsync: the disk's ceiling."""
    import numpy as np

    block = np.ones(1 << 22, dtype=np.float32)
    path = os.path.join(work, "plain.bin")
    start = time.perf_counter()
    with open(path, "wb") as handle:
        for _ in range(max(1, values // block.size)):
            handle.write(block.data)
        handle.flush()
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - start
    os.remove(path)
    return values / seconds / 1e6


def throughput(work: str, size_log2: int, repeat: int) -> None:
    """Marginal rate of the CLI: (N2 - N1) / (t2 - t1) for N2 = 4 N1 values, which
    cancels start-up, imports and kernel loading, against the in-memory API rate."""
    import vsgen

    small, big = 1 << (size_log2 - 2), 1 << size_log2
    cols = 4096
    print(
        f"\nend-to-end vs in-memory, float32, marginal rate between {small:,} and "
        f"{big:,} values (start-up cancels out)"
    )
    ceiling = statistics.median(plain_write_rate(work, big) for _ in range(repeat))
    print(
        f"  plain f.write + fsync of the same bytes here: {ceiling:,.0f} M values/s "
        f"({ceiling * 4:,.0f} MB/s)"
    )
    print(
        f"  {'distribution':20s} {'in-memory':>12s} {'CLI to .npy':>12s} {'ratio':>7s} "
        f"{'of plain write':>15s}"
    )
    for distribution in ("truncated_normal", "untruncated_normal", "uniform"):
        init = vsgen.VarianceScaling(2.0, "fan_in", distribution, seed=0)
        init((big // cols, cols))  # compile / load kernels once
        memory = []
        for _ in range(repeat):
            start = time.perf_counter()
            values = init((big // cols, cols))
            memory.append(time.perf_counter() - start)
            del values

        def command(values: int, distribution: str = distribution) -> list[str]:
            return [
                *VSGEN,
                "sample",
                "--shape",
                f"{values // cols},{cols}",
                "--seed",
                "0",
                "--scale",
                "2",
                "--distribution",
                distribution,
                "-o",
                "t.npy",
                "--force",
                "--quiet",
            ]

        t_small = statistics.median(wall(command(small), work) for _ in range(repeat))
        t_big = statistics.median(wall(command(big), work) for _ in range(repeat))
        os.remove(os.path.join(work, "t.npy"))
        rate_memory = big / statistics.median(memory) / 1e6
        rate_cli = (big - small) / max(t_big - t_small, 1e-9) / 1e6
        print(
            f"  {distribution:20s} {rate_memory:9.0f} M/s {rate_cli:9.0f} M/s "
            f"{rate_cli / rate_memory:6.0%} {rate_cli / ceiling:14.0%}"
        )


def memory(work: str, big_log2: int) -> None:
    rows = 1 << (big_log2 // 2)
    cols = 1 << (big_log2 - big_log2 // 2)
    need = rows * cols * 4
    free = shutil.disk_usage(work).free
    if free < 2.2 * need:
        print(
            f"\nskipping the peak-RSS run: needs {need / 2**30:.1f} GiB twice, "
            f"{free / 2**30:.1f} GiB free"
        )
        return
    print(f"\npeak RSS of the CLI writing float32 {rows}x{cols} ({need / 2**30:.1f} GiB)")
    for suffix in (".npy", ".h5", ".safetensors"):
        target = f"big{suffix}"
        seconds, rss = peak_rss_mib(
            [
                *VSGEN,
                "sample",
                "--shape",
                f"{rows},{cols}",
                "--seed",
                "1",
                "-o",
                target,
                "--force",
                "--quiet",
            ],
            work,
        )
        os.remove(os.path.join(work, target))
        verdict = "PASS" if rss <= 300 else "FAIL"
        print(
            f"  {suffix:13s} {seconds:6.1f} s  {rows * cols / seconds / 1e6:6.0f} M/s  "
            f"peak RSS {rss:6.0f} MiB  (target <= 300 MiB: {verdict})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-log2", type=int, default=28)
    parser.add_argument("--big-log2", type=int, default=30)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument(
        "--startup-only", action="store_true", help="only the start-up ratios (a few seconds)"
    )
    args = parser.parse_args()
    import vsgen

    # The bytecode an installation has (without it, every run compiles vsgen).
    compileall.compile_dir(os.path.dirname(vsgen.__file__), quiet=1)
    work = tempfile.mkdtemp(prefix="vsgen-bench-", dir=args.dir)
    try:
        startup(work, max(args.repeat, 11))
        if args.startup_only:
            return
        throughput(work, args.size_log2, args.repeat)
        if not args.skip_big:
            memory(work, args.big_log2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
