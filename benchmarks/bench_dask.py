"""vsgen on a Dask cluster against single-process vsgen, on this machine.

Measures, in one run, for one model job (``--tensors`` float32 tensors of 4096
rows, 2**size_log2 values in all: 1 GiB by default):

1. ``Stream.fill_block`` on a block of whole rows and on column tiles, with the
   cost model's choice against one fill per run and against covering spans;
2. whole ``vsgen sample --spec`` CLI processes (wall time) into one
   ``.safetensors`` file, a Zarr store, sharded safetensors (two tensors per shard)
   and one big shard (the whole job in one shard, written by tasks of about 64 MiB):
   single process (streaming writer, or the parallel writers on local threads), and
   with ``--scheduler`` against running LocalClusters of 1 and of 2 worker processes
   (one thread each, 127.0.0.1 only, warmed up as long-lived ``dask worker``
   processes are). The configurations run interleaved, ``--repeat`` rounds, with
   ``sync`` before each run, so drifting load on a shared machine hits all alike;
3. rates (M values/s), ratios to single process, and marginal rates: minus the
   time of a 64 x 64 run of the same command (start-up, connection, shutdown);
4. the compute-only rate of one worker (float32, bfloat16), the per-task overhead
   of the cluster (an empty task, a one-row vsgen write task), and
   ``--scheduler local:2`` once (its own cluster: scheduler and worker processes);
5. a resume after a lost cluster: the job runs with ``--resume`` on a real
   ``dask scheduler`` with two ``dask worker`` processes, the scheduler is killed
   when about half the tasks are done, and the same command runs again on a fresh
   cluster; its time is compared with the whole job run from scratch on that
   cluster, and the bytes with a single-process run.

Usage: ``python benchmarks/bench_dask.py [--size-log2 28] [--tensors 8]
[--repeat 3] [--dir DIR] [--blocks-only] [--no-resume]``. Everything is deleted
afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# The disk's ceiling is measured as bench_cli measures it (this folder is on
# sys.path when a benchmark runs as a script).
from bench_cli import plain_write_rate

VSGEN = [sys.executable, "-m", "vsgen"]


def write_spec(path: str, size_log2: int, tensors: int) -> int:
    columns = (1 << size_log2) // 4096 // tensors
    spec = {
        "seed": 1,
        "tensors": {f"layer{i}.weight": [4096, columns] for i in range(tensors)},
    }
    with open(path, "w") as handle:
        json.dump(spec, handle)
    return 4096 * columns * tensors


def wall(command: list[str], cwd: str) -> float:
    # Start every run with no dirty pages left by the previous one.
    os.sync()
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_wall(command: list[str], cwd: str, repeat: int, target: str) -> float:
    times = []
    for _ in range(repeat):
        clear(os.path.join(cwd, target))
        times.append(wall(command, cwd))
    clear(os.path.join(cwd, target))
    return statistics.median(times)


def clear(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


def outputs(shard_size: str) -> dict[str, list[str]]:
    return {
        "safetensors (one file)": ["-o", "one.safetensors"],
        "zarr": ["-o", "w.zarr"],
        "safetensors-sharded": [
            "-o",
            "shards",
            "--format",
            "safetensors-sharded",
            "--max-shard-size",
            shard_size,
        ],
        "one big shard": [
            "-o",
            "big",
            "--format",
            "safetensors-sharded",
            "--max-shard-size",
            "1TB",
        ],
    }


def per_task_overhead(client, tasks: int = 200) -> tuple[float, float]:
    """Seconds per task: an empty task, and a vsgen write task of one 64-value row."""
    import vsgen
    from vsgen import dask as vsgen_dask

    def empty(value: int) -> int:
        return value

    client.gather(client.map(empty, range(10)))
    start = time.perf_counter()
    client.gather(client.map(empty, range(tasks), pure=False))
    empty_seconds = (time.perf_counter() - start) / tasks
    work = tempfile.mkdtemp(prefix="vsgen-bench-tasks-")
    try:
        job = vsgen_dask.tensor_job(vsgen.VarianceScaling(seed=1), (tasks, 64))
        start = time.perf_counter()
        vsgen_dask.write(job, os.path.join(work, "w.npy"), client=client, chunks=(1, 64))
        write_seconds = (time.perf_counter() - start) / tasks
    finally:
        shutil.rmtree(work)
    return empty_seconds, write_seconds


def worker_compute_rate(client, values: int, dtype: str = "float32") -> float:
    """M values/s one worker makes in memory (nothing written)."""
    import numpy as np

    import vsgen
    from vsgen import dask as vsgen_dask

    array = vsgen_dask.sample(
        vsgen.VarianceScaling(seed=2), (4096, values // 4096), dtype, chunks=(512, values // 4096)
    )

    # Each block is reduced to one value on its worker: only generation is timed.
    corners = array.map_blocks(
        lambda block: block[:1, :1].astype(np.float32),
        chunks=((1,) * array.numblocks[0], (1,) * array.numblocks[1]),
        dtype=np.float32,
    )
    client.compute(corners[:1].sum()).result()  # warm
    start = time.perf_counter()
    client.compute(corners.sum()).result()
    return values / (time.perf_counter() - start) / 1e6


class Processes:
    """``dask scheduler`` / ``dask worker`` processes on 127.0.0.1, each in its own
    session (so that a whole one can be killed, as a machine that goes away)."""

    def __init__(self, work: str) -> None:
        self.work = work
        self.started: list[subprocess.Popen] = []

    def start(self, module: str, *arguments: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def cluster(self, workers: int = 2) -> tuple[str, subprocess.Popen]:
        scheduler_file = os.path.join(self.work, f"scheduler-{len(self.started)}.json")
        scheduler = self.start(
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            scheduler_file,
        )
        self.start(
            "distributed.cli.dask_worker",
            "--scheduler-file",
            scheduler_file,
            "--nworkers",
            str(workers),
            "--nthreads",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
        )
        while not os.path.exists(scheduler_file):
            time.sleep(0.05)
        time.sleep(0.2)
        with open(scheduler_file) as handle:
            address = json.load(handle)["address"]
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)
        return address, scheduler

    def stop(self) -> None:
        for process in self.started:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def resume_after_a_lost_cluster(work: str, spec: str, values: int) -> None:
    """Kill the scheduler at about half the job, finish with --resume on a fresh
    cluster: its time against the whole job from scratch on that cluster."""
    processes = Processes(work)
    target = os.path.join(work, "resumed.safetensors")
    reference = os.path.join(work, "reference.safetensors")
    base = [*VSGEN, "sample", "--spec", spec, "--quiet"]
    try:
        subprocess.run([*base, "-o", reference], check=True)
        address, scheduler = processes.cluster(2)
        job = subprocess.Popen(
            [*base, "-o", target, "--scheduler", address, "--resume"],
            stderr=subprocess.PIPE,
            text=True,
        )
        directory = os.path.dirname(target)
        tasks = 0
        started = time.perf_counter()
        while job.poll() is None:
            journals = [n for n in os.listdir(directory) if n.endswith(".journal")]
            if journals:
                with open(os.path.join(directory, journals[0]), "rb") as handle:
                    lines = handle.read().split(b"\n")
                header = json.loads(lines[1]) if len(lines) > 2 else None
                done = len([line for line in lines[2:] if line])
                if header and done * 2 >= header["tasks"]:
                    tasks = header["tasks"]
                    break
            time.sleep(0.05)
        finished = job.poll() is not None
        os.killpg(scheduler.pid, signal.SIGKILL)
        _, stderr = job.communicate()
        lost = time.perf_counter() - started
        print(f"\nresume after a lost cluster ({values:,} values, {tasks} tasks)")
        if finished:
            print(
                f"  the job finished in {lost:.2f} s, before half its tasks were seen done: "
                "nothing to resume (give a larger --size-log2)"
            )
            return
        print(f"  killed the scheduler {lost:.2f} s in; the job said: {stderr.strip()}")
        fresh, _ = processes.cluster(2)
        start = time.perf_counter()
        subprocess.run([*base, "-o", target, "--scheduler", fresh, "--resume"], check=True)
        finish = time.perf_counter() - start
        scratch_target = os.path.join(work, "scratch.safetensors")
        start = time.perf_counter()
        subprocess.run([*base, "-o", scratch_target, "--scheduler", fresh], check=True)
        scratch = time.perf_counter() - start
        with open(target, "rb") as a, open(reference, "rb") as b:
            same = a.read() == b.read()
        print(
            f"  finishing with --resume on a fresh cluster: {finish:.2f} s; the whole job "
            f"from scratch there: {scratch:.2f} s ({finish / scratch:.2f}x); "
            f"bytes {'equal' if same else 'DIFFERENT'} to a single-process run"
        )
    finally:
        processes.stop()


def block_fill_rates(repeat: int) -> None:
    """M values/s of Stream.fill_block on an 8192 x 8192 float32 tensor: a block of
    whole rows, and full-height column tiles of several widths (the cost model's
    choice, one fill per row run, and covering spans copied out of a scratch)."""
    import numpy as np

    from vsgen.streams import Draw, _blocks, get_stream

    stream = get_stream("vsgen")
    draw = Draw("truncated_normal", 0.05, 1, np.dtype("float32"))
    full = (8192, 8192)
    stream.fill_block(np.empty((512, 8192), np.float32), (0, 0), full, draw, threads=1)

    def rate(shape: tuple[int, int], origin: tuple[int, int]) -> float:
        out = np.empty(shape, np.float32)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            stream.fill_block(out, origin, full, draw, threads=1)
            times.append(time.perf_counter() - start)
        return out.size / statistics.median(times) / 1e6

    print("\nStream.fill_block on an 8192 x 8192 float32 tensor, 1 thread")
    print(f"  whole rows (512 x 8192)                 {rate((512, 8192), (0, 0)):8,.0f} M values/s")
    saved = (_blocks.SPAN_SCRATCH, _blocks.VALUE_COST)
    for width in (64, 512, 2048):
        shape = (8192, width)
        chosen = rate(shape, (0, 128))
        _blocks.SPAN_SCRATCH = 0  # runs only
        runs = rate(shape, (0, 128))
        _blocks.SPAN_SCRATCH, _blocks.VALUE_COST = saved[0], 0.0  # spans only
        spans = rate(shape, (0, 128))
        _blocks.SPAN_SCRATCH, _blocks.VALUE_COST = saved
        print(
            f"  tiles {shape[0]:>6} x {width:<5} chosen {chosen:6,.0f}   "
            f"per-run fills {runs:6,.0f}   covering spans {spans:6,.0f} M values/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-log2", type=int, default=28, help="values in the job (log2)")
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--blocks-only", action="store_true", help="only the fill_block rates")
    parser.add_argument("--no-resume", action="store_true", help="skip the resume measurement")
    parser.add_argument(
        "--resume-size-log2",
        type=int,
        default=None,
        help="values of the resumed job (log2; default --size-log2 + 2, so that it runs "
        "long enough to be cut at half)",
    )
    args = parser.parse_args()
    block_fill_rates(args.repeat)
    if args.blocks_only:
        return

    from distributed import Client

    from vsgen.dask import local_cluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    work = tempfile.mkdtemp(prefix="vsgen-bench-dask-", dir=args.dir)
    clusters = []
    try:
        spec = os.path.join(work, "spec.json")
        values = write_spec(spec, args.size_log2, args.tensors)
        gib = values * 4 / 2**30
        shard_size = f"{(values * 4 // args.tensors) * 2 + 1}B"  # two tensors per shard
        print(
            f"\njob: {args.tensors} float32 tensors, {values:,} values ({gib:.2f} GiB), "
            f"median of {args.repeat}, directory {work}"
        )
        disk = plain_write_rate(work, values)
        print(f"disk ceiling (f.write + fsync of the same bytes): {disk:,.0f} M values/s")
        base = [*VSGEN, "sample", "--spec", spec, "--quiet", "--force"]
        tiny = [*VSGEN, "sample", "--shape", "64,64", "--seed", "0", "--quiet", "--force"]
        # Both clusters stay up (idle workers cost nothing measurable) so that every
        # configuration runs interleaved with the others, under the same load.
        schedulers = {"single process": []}
        for workers in (1, 2):
            cluster = local_cluster(workers)
            clusters.append(cluster)
            address = cluster.scheduler_address
            schedulers[f"{workers} worker(s)"] = ["--scheduler", address]
            # Long-lived workers have loaded the compiled kernels: warm them up.
            median_wall([*base, "-o", "warm.zarr", "--scheduler", address], work, 1, "warm.zarr")
        times: dict[tuple[str, str], list[float]] = {}
        fixed: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for label, output in outputs(shard_size).items():
                for name, option in schedulers.items():
                    key = (name, label)
                    clear(os.path.join(work, output[1]))
                    times.setdefault(key, []).append(wall([*base, *output, *option], work))
                    clear(os.path.join(work, output[1]))
                    fixed.setdefault(key, []).append(wall([*tiny, *output, *option], work))
                    clear(os.path.join(work, output[1]))
        print(
            "\nwhole CLI process (median), and the marginal rate: minus the median time of a "
            "64 x 64 run of the same command (start-up, connection, shutdown)"
        )
        for label in outputs(shard_size):
            print(f"  {label}")
            reference = None
            for name in schedulers:
                seconds = statistics.median(times[(name, label)])
                start_up = statistics.median(fixed[(name, label)])
                rate = values / seconds / 1e6
                marginal = values / max(seconds - start_up, 1e-9) / 1e6
                if reference is None:
                    reference = (rate, marginal)
                    versus = ""
                else:
                    versus = (
                        f"   {rate / reference[0]:4.2f}x single process "
                        f"(marginal {marginal / reference[1]:4.2f}x)"
                    )
                print(
                    f"    {name:<15} {seconds:6.2f} s {rate:6,.0f} M values/s   start-up "
                    f"{start_up:5.2f} s  marginal {marginal:6,.0f} M values/s{versus}"
                )
        with Client(clusters[0]) as client:
            for dtype in ("float32", "bfloat16"):
                compute = worker_compute_rate(client, values // 4, dtype)
                print(f"\none worker, compute only, {dtype}: {compute:,.0f} M values/s", end="")
        with Client(clusters[1]) as client:
            empty, write = per_task_overhead(client)
            print(
                f"\nper task on 2 workers: empty {empty * 1e3:.1f} ms, one-row vsgen write "
                f"{write * 1e3:.1f} ms (amortised)"
            )
        for cluster in clusters:
            cluster.close()
        clusters = []
        print("\n--scheduler local:2 (starts and stops its own processes; cold workers), once")
        for label, output in outputs(shard_size).items():
            command = [*base, *output, "--scheduler", "local:2"]
            seconds = median_wall(command, work, 1, output[1])
            start_up = median_wall([*tiny, *output, "--scheduler", "local:2"], work, 1, output[1])
            print(
                f"  {label:<24} {seconds:6.2f} s {values / seconds / 1e6:6,.0f} M values/s   "
                f"start-up {start_up:5.2f} s"
            )
        if not args.no_resume:
            resume_spec = os.path.join(work, "resume.json")
            size = args.resume_size_log2 or args.size_log2 + 2
            resume_values = write_spec(resume_spec, size, args.tensors)
            resume_after_a_lost_cluster(work, resume_spec, resume_values)
    finally:
        for cluster in clusters:
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
