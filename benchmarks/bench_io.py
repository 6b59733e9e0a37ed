"""Write throughput and peak memory of vsgen's writers against a plain ``f.write``.

Each format writes one float32 tensor of ``--size`` values (default 2**30,
4 GiB) through ``open_output`` + ``write_chunks`` + ``commit`` (fsync and
rename included) in a fresh subprocess, fed by a cheap producer that yields
one pre-filled chunk again and again, so the numbers measure the writers and
the disk, not the sampler. The baseline writes the same bytes with
``f.write`` and one ``fsync``; ``h5py-hyperslab`` writes the same dataset
through h5py slice assignment (the alternative to vsgen's raw writes at the
dataset's offset) for comparison. Two rates are printed: until every byte
was handed to the kernel (the writers' own cost) and until the output was
durable (fsync and rename: mostly the disk's speed). Peak RSS is that of each
subprocess, from ``os.wait4``; the last line gives
``getrusage(RUSAGE_CHILDREN).ru_maxrss``.

Outputs go to ``--dir`` (default: the system temporary directory) and are
deleted after each run; the size shrinks to fit the free space.

    python benchmarks/bench_io.py                     # 4 GiB per format
    python benchmarks/bench_io.py --size 268435456 --repeat 3   # 1 GiB, median of 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODES = ("baseline", "npy", "h5", "safetensors", "raw", "npydir", "h5py-hyperslab")
SUFFIX = {"npy": ".npy", "h5": ".h5", "safetensors": ".safetensors", "raw": ".raw", "npydir": ""}
COLUMNS = 1024  # the tensor is (size // COLUMNS, COLUMNS)
ITEMSIZE = 4


def run_child(mode: str, size: int, chunk: int, directory: str) -> dict[str, float]:
    """Write once in this process.

    Returns ``written`` (seconds until every byte was handed to the kernel),
    ``seconds`` (until the output was durable: fsync, rename) and ``bytes``.
    """
    rows = size // COLUMNS
    values = np.random.default_rng(0).standard_normal(chunk, dtype=np.float32)
    count = size // chunk
    target = os.path.join(directory, f"vsgen-bench-{os.getpid()}{SUFFIX.get(mode, '.bin')}")
    # Imports stay out of the timing; h5py's is part of the h5 writer's peak RSS.
    import h5py

    sys.path.insert(0, str(REPO))
    from vsgen.formats import TensorInfo, open_output, write_chunks

    start = time.perf_counter()
    if mode == "baseline":
        with open(target, "wb") as file:
            for _ in range(count):
                file.write(values)
            file.flush()
            written = time.perf_counter()
            os.fsync(file.fileno())
    elif mode == "h5py-hyperslab":
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        plist.set_layout(h5py.h5d.CONTIGUOUS)
        block = values.reshape(chunk // COLUMNS, COLUMNS)
        with h5py.File(target, "w") as h5:
            dataset = h5.create_dataset(
                "weight", (rows, COLUMNS), "<f4", dcpl=plist, fill_time="never"
            )
            for index in range(count):
                dataset[index * block.shape[0] : (index + 1) * block.shape[0]] = block
        written = time.perf_counter()
        with open(target, "rb+") as file:
            os.fsync(file.fileno())
    else:
        info = TensorInfo("weight", (rows, COLUMNS), np.float32)
        with open_output(target, mode, [info], metadata={"bench": "1"}) as output:
            # The same array every time: the producer costs nothing and is never modified.
            write_chunks(output, (values for _ in range(count)))
            written = time.perf_counter()
            output.commit()
    seconds = time.perf_counter() - start
    if os.path.isdir(target):
        shutil.rmtree(target)
    else:
        os.unlink(target)
    return {"written": written - start, "seconds": seconds, "bytes": size * ITEMSIZE}


def measure(mode: str, size: int, chunk: int, directory: str) -> tuple[dict[str, float], int]:
    """Run one write in a subprocess; return its result and its peak RSS in bytes."""
    command = [sys.executable, __file__, "--child", mode, "--size", str(size)]
    command += ["--chunk", str(chunk), "--dir", directory]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{mode}: the benchmark subprocess failed ({process.returncode})")
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return json.loads(output), usage.ru_maxrss * scale


def fit_size(size: int, chunk: int, directory: str) -> int:
    """Shrink ``size`` (to a multiple of ``chunk``) so one output fits the free space."""
    free = shutil.disk_usage(directory).free
    room = int(free * 0.8) - (256 << 20)  # leave the file system some air
    fitting = min(size, max(room, 0) // ITEMSIZE)
    fitting -= fitting % chunk
    if fitting < chunk:
        raise SystemExit(f"not enough free space in {directory}: {free >> 20} MiB")
    if fitting < size:
        print(f"shrinking --size from {size} to {fitting} values to fit {free >> 20} MiB free")
    return fitting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 30, help="float32 values per output")
    parser.add_argument("--chunk", type=int, default=1 << 22, help="values per chunk")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where outputs go")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode (median)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.chunk = min(args.chunk, args.size)
    if args.chunk < COLUMNS or args.chunk % COLUMNS:
        parser.error(f"--chunk and --size must be multiples of {COLUMNS}")
    if args.child:
        print(json.dumps(run_child(args.child, args.size, args.chunk, args.dir)))
        return

    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    if "baseline" not in modes:
        modes.insert(0, "baseline")
    size = fit_size(args.size - args.size % args.chunk, args.chunk, args.dir)
    print(
        f"float32 tensor of {size} values ({size * ITEMSIZE / 2**30:.2f} GiB), "
        f"chunks of {args.chunk} values, in {args.dir}"
    )
    # Round robin with the order rotated each round, so that a disk slowing
    # down or speeding up mid-run (shared or burst-limited virtual disks do)
    # and the position in a round affect every mode alike.
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    peaks: dict[str, int] = dict.fromkeys(modes, 0)
    for round_index in range(args.repeat):
        shift = round_index % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            result, peak = measure(mode, size, args.chunk, args.dir)
            results[mode].append(result)
            peaks[mode] = max(peaks[mode], peak)

    def median_rate(mode: str, key: str) -> float:
        return statistics.median(r["bytes"] / r[key] / 1e6 for r in results[mode])

    print(f"median of {args.repeat} run(s) per mode, MB/s (10**6 bytes per second):")
    print(
        f"{'mode':<16}{'to kernel':>10}{'vs f.write':>11}{'durable':>10}{'vs f.write':>11}"
        f"{'peak RSS MiB':>14}"
    )
    base_written = median_rate("baseline", "written")
    base_durable = median_rate("baseline", "seconds")
    for mode in modes:
        written, durable = median_rate(mode, "written"), median_rate(mode, "seconds")
        print(
            f"{mode:<16}{written:>10.0f}{written / base_written:>10.2f}x"
            f"{durable:>10.0f}{durable / base_durable:>10.2f}x{peaks[mode] / 2**20:>14.0f}"
        )
    print("to kernel: until the last byte was written; durable: after fsync (and rename)")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"largest peak RSS of any subprocess (RUSAGE_CHILDREN): {children / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
