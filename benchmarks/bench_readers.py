"""What the hardened reader costs, against the formats' own libraries.

Prints, measured in one run on this machine:

1. Header reading of a legitimate many-tensor safetensors file (20,000
   tensors, vsgen provenance): ``vsgen.formats.readers.open_file`` (which
   validates every entry, the tiling and the JSON's size and depth) against
   ``safetensors.safe_open`` + every tensor's shape, median of 5; the ratio.
2. The same for an HDF5 file of 2,000 datasets: ``open_file`` (the walk, once
   per object, with layout checks) against h5py's ``visititems`` + shapes.
3. The whole ``vsgen check`` process on the worst hostile header the format
   allows (100,000,000 bytes): wall and CPU seconds and peak RSS
   (``wait4``), as a user would run it.

Run: ``python benchmarks/bench_readers.py [--repeat 5]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from vsgen.formats.readers import open_file


def median_seconds(action, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def many_tensor_safetensors(folder: Path, count: int) -> Path:
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"tensors": {f"t{i}": {"shape": [4, 4]} for i in range(count)}}))
    path = folder / "many.safetensors"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--spec",
            str(spec),
            "--seed",
            "0",
            "-o",
            str(path),
            "-q",
        ],
        check=True,
    )
    return path


def many_dataset_h5(folder: Path, count: int) -> Path:
    path = folder / "many.h5"
    with h5py.File(path, "w", track_order=True) as h5:
        for index in range(count):
            h5.create_group(f"layer{index}")[f"kernel{index}"] = np.zeros((4, 4), np.float32)
    return path


def safetensors_own(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        handle.metadata()
        for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            handle.get_slice(key).get_shape()


def h5py_own(path: Path) -> None:
    shapes = []
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, item: shapes.append(getattr(item, "shape", None)))


def whole_process(args: list[str], cwd: Path) -> tuple[float, float, int, int]:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "vsgen", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return (
        time.monotonic() - started,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss // 1024,
        process.returncode,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per header reading (median)")
    repeat = parser.parse_args().repeat
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        st_path = many_tensor_safetensors(folder, 20_000)
        ours = median_seconds(lambda: open_file(str(st_path)), repeat)
        theirs = median_seconds(lambda: safetensors_own(st_path), repeat)
        print(
            f"safetensors header, 20,000 tensors ({st_path.stat().st_size / 1e6:.1f} MB file): "
            f"vsgen {ours * 1e3:.0f} ms, safetensors {theirs * 1e3:.0f} ms, "
            f"ratio {ours / theirs:.2f}"
        )
        h5_path = many_dataset_h5(folder, 2_000)
        ours = median_seconds(lambda: open_file(str(h5_path)), repeat)
        theirs = median_seconds(lambda: h5py_own(h5_path), repeat)
        print(
            f"HDF5 walk, 2,000 datasets in 2,000 groups: vsgen {ours * 1e3:.0f} ms, "
            f"h5py visititems {theirs * 1e3:.0f} ms, ratio {ours / theirs:.2f}"
        )
        text = b'{"__metadata__":{"a":"' + b"x" * (100_000_000 - 30) + b'"}}'
        text += b" " * (100_000_000 - len(text))
        (folder / "huge.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)
        del text
        wall, cpu, rss, code = whole_process(["check", "huge.safetensors"], folder)
        print(
            f"vsgen check on a 100,000,000-byte header: exit {code}, {wall:.2f} s wall, "
            f"{cpu:.2f} s CPU, peak RSS {rss} MiB"
        )


if __name__ == "__main__":
    main()
