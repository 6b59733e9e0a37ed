"""Write throughput and peak memory of vsgen's writers against a plain ``f.write``.

Each format writes one float32 tensor of ``--size`` values (default 2**30,
4 GiB) through ``open_output`` + ``write_chunks`` + ``commit`` (fsync and
rename included) in a fresh subprocess, fed by a cheap producer that yields
one pre-filled chunk again and again, so the numbers measure the writers and
the disk, not the sampler. The baseline writes the same bytes with
``f.write`` and one ``fsync``; ``h5py-hyperslab`` writes the same dataset
through h5py slice assignment (the alternative to vsgen's raw writes at the
dataset's offset) for comparison. Peak RSS is that of each subprocess, from
``os.wait4``; the last line gives ``getrusage(RUSAGE_CHILDREN).ru_maxrss``.

Outputs go to ``--dir`` (default: the system temporary directory) and are
deleted after each run; the size shrinks to fit the free space.

    python benchmarks/bench_io.py                     # 4 GiB per format
    python benchmarks/bench_io.py --size 268435456    # 1 GiB per format
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
    """Write once in this process; return seconds and bytes."""
    rows = size // COLUMNS
    values = np.random.default_rng(0).standard_normal(chunk, dtype=np.float32)
    count = size // chunk
    target = os.path.join(directory, f"vsgen-bench-{os.getpid()}{SUFFIX.get(mode, '.bin')}")
    start = time.perf_counter()
    if mode == "baseline":
        with open(target, "wb") as file:
            for _ in range(count):
                file.write(values)
            file.flush()
            os.fsync(file.fileno())
    elif mode == "h5py-hyperslab":
        import h5py

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
        with open(target, "rb+") as file:
            os.fsync(file.fileno())
    else:
        sys.path.insert(0, str(REPO))
        from vsgen.writers import TensorInfo, open_output, write_chunks

        info = TensorInfo("weight", (rows, COLUMNS), np.float32)
        with open_output(target, mode, [info], metadata={"bench": "1"}) as output:
            # The same array every time: the producer costs nothing and is never modified.
            write_chunks(output, (values for _ in range(count)))
            output.commit()
    seconds = time.perf_counter() - start
    written = size * ITEMSIZE
    if os.path.isdir(target):
        shutil.rmtree(target)
    else:
        os.unlink(target)
    return {"seconds": seconds, "bytes": written}


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
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunk % COLUMNS:
        parser.error(f"--chunk must be a multiple of {COLUMNS}")
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
    print(f"{'mode':<16}{'seconds':>9}{'MB/s':>9}{'vs f.write':>12}{'peak RSS MiB':>14}")
    baseline = None
    for mode in modes:
        result, peak = measure(mode, size, args.chunk, args.dir)
        rate = result["bytes"] / result["seconds"] / 1e6
        baseline = baseline or rate
        print(
            f"{mode:<16}{result['seconds']:>9.2f}{rate:>9.0f}{rate / baseline:>11.2f}x"
            f"{peak / 2**20:>14.0f}"
        )
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"largest peak RSS of any subprocess (RUSAGE_CHILDREN): {children / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
