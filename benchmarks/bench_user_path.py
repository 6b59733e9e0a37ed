"""The speed users see, measured against peers in one run, with the targets.

Every row times what a user runs, not the kernel:

1. **first call**: a fresh interpreter imports vsgen and calls an initializer
   on a 4096 x 4096 float32 tensor (2**24 values) once, then again several
   times (warm; each call allocates its output, as the API does); its peer
   is a fresh interpreter calling ``torch.nn.init`` (``trunc_normal_``,
   ``kaiming_normal_``, ``kaiming_uniform_``) on a ``torch.empty`` tensor of
   the same size.  Targets: first call >= 70 % of the warm rate, and faster
   than torch's first call, for every distribution.  NumPy's own first call
   against its warm calls (``np.full`` of the same 64 MiB, and
   ``np.multiply`` into a touched buffer) is printed as the machine's floor:
   writing memory the first time costs extra whoever writes it.
2. **fill in place** (one warm process): ``initializer(shape, out=array)``,
   ``vsgen.fill_(array, initializer)`` and ``vsgen.fill_(torch_tensor,
   initializer)`` (float32 and bfloat16) into buffers that exist already,
   against the internal fill on the same buffer and thread count.  Target:
   within 10 % (ratio >= 0.90).  float16 and bfloat16 ``out=`` fills are
   timed against the float32 one (no target; they compute in float32).
3. **CLI at the disk's speed**: the whole process ``vsgen sample --shape
   8192,8192 -o w.npy`` (256 MiB of float32) on local disk and on tmpfs,
   against a fresh Python process that allocates the same number of bytes
   (``numpy.ones``), writes and fsyncs them.  Target: ratio of wall times
   (peer / vsgen) >= 0.70.  ``--threads 1`` and ``2`` are timed too,
   which is how the CLI's default was chosen.
4. **start-up**: ``vsgen sample --shape 512,256 -o s.npy`` against a numpy
   one-liner that saves an array of that shape (target <= 1.3x), and
   ``vsgen --help`` / ``vsgen --version`` against ``python -c "import
   numpy"`` (target <= 1.15x).
5. the internal fill (2 threads, buffer reused, warm) only as a reference
   line, next to the numbers above.

Every comparison interleaves ours and the peer's runs, so both see the same
neighbours on a shared machine; medians of ``--repeat`` runs.  Processes run
with ``sys.executable``, ``PYTHONPATH`` set to the measured checkout (this one,
or ``--root DIR``, e.g. an older release unpacked elsewhere, for a before/after
table); its bytecode is compiled first, as an installation does (NumPy's is).

Usage::

    python benchmarks/bench_user_path.py [--repeat 9] [--quick]
        [--disk DIR] [--tmpfs DIR] [--only first,fill,cli,startup,reference]
        [--root DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from statistics import median

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
PYTHON = sys.executable
VSGEN = [PYTHON, "-m", "vsgen"]
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")
SHAPE = (4096, 4096)
SIZE = SHAPE[0] * SHAPE[1]

#: Results: (section, label, value, unit, needed, passed or None).
ROWS: list[tuple[str, str, float, str, str, bool | None]] = []


def row(
    section: str, label: str, value: float, unit: str, needed: str = "", passed: bool | None = None
) -> None:
    ROWS.append((section, label, value, unit, needed, passed))
    verdict = "" if passed is None else ("PASS" if passed else "FAIL")
    text = f"{value:,.0f}" if unit == "M/s" else f"{value:.3f}" if unit == "x" else f"{value:,.1f}"
    print(f"  {label:58s} {text:>10s} {unit:4s} {needed:>8s} {verdict}", flush=True)


def run_json(code: str, *args: str) -> dict:
    result = subprocess.run(
        [PYTHON, "-c", textwrap.dedent(code), *args],
        cwd=tempfile.gettempdir(),  # not a checkout: `-c` puts the cwd first on sys.path
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def wall(command: list[str], cwd: str | None = None) -> float:
    # Never a checkout as the cwd: `-m`/`-c` put the cwd first on sys.path.
    cwd = cwd or tempfile.gettempdir()
    begin = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - begin


# --- 1. first call ------------------------------------------------------------------

VSGEN_FIRST = """
    import json, resource, sys, time
    distribution, shape, warm_runs = sys.argv[1], (4096, 4096), int(sys.argv[2])
    begin = time.perf_counter()
    import vsgen
    init = vsgen.VarianceScaling(2.0, "fan_in", distribution, seed=1)
    imported = time.perf_counter() - begin
    into = len(sys.argv) > 3  # into an existing, touched buffer: no fresh memory
    if into:
        import numpy as np
        buffer = np.ones(shape, np.float32)
        call = lambda: init(shape, out=buffer)  # noqa: E731
    else:
        call = lambda: init(shape)  # noqa: E731
    begin, system = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
    values = call()
    first = time.perf_counter() - begin
    first_system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system
    del values
    warm, warm_system = [], []
    for _ in range(warm_runs):
        begin, system = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
        values = call()
        warm.append(time.perf_counter() - begin)
        warm_system.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - system)
        del values
    print(json.dumps({"import": imported, "first": first, "warm": warm,
                      "first_system": first_system, "warm_system": warm_system}))
"""

TORCH_FIRST = """
    import json, sys, time
    import torch
    distribution, warm_runs = sys.argv[1], int(sys.argv[2])
    weight = torch.empty(4096, 4096)
    std = (2.0 / 4096) ** 0.5 / 0.87962566103423978
    init = {
        "truncated_normal": lambda w: torch.nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std),
        "untruncated_normal": lambda w: torch.nn.init.kaiming_normal_(w),
        "uniform": lambda w: torch.nn.init.kaiming_uniform_(w),
    }[distribution]
    begin = time.perf_counter()
    init(weight)
    first = time.perf_counter() - begin
    warm = []
    for _ in range(warm_runs):
        weight = torch.empty(4096, 4096)
        begin = time.perf_counter()
        init(weight)
        warm.append(time.perf_counter() - begin)
    print(json.dumps({"first": first, "warm": warm}))
"""


# The machine's own first-call cost: NumPy writing the same 64 MiB in a fresh
# process (allocating: np.full; into a touched buffer: np.multiply(out=)),
# first call against warm calls, exactly as the vsgen rows are timed.
NUMPY_FIRST = """
    import json, sys, time
    import numpy as np
    shape, warm_runs, into = (4096, 4096), int(sys.argv[1]), len(sys.argv) > 2
    if into:
        buffer = np.ones(shape, np.float32)
        call = lambda: np.multiply(buffer, np.float32(0.5), out=buffer)  # noqa: E731
    else:
        call = lambda: np.full(shape, 0.5, np.float32)  # noqa: E731
    begin = time.perf_counter()
    values = call()
    first = time.perf_counter() - begin
    del values
    warm = []
    for _ in range(warm_runs):
        begin = time.perf_counter()
        values = call()
        warm.append(time.perf_counter() - begin)
        del values
    print(json.dumps({"first": first, "warm": warm}))
"""


# Why a first call is slower here whoever makes it: rewriting a 64 MiB buffer
# that was left alone for 0.1 s, against rewriting it at once (one process).
PAUSE = """
    import json, time
    import numpy as np
    buffer = np.ones((4096, 4096), np.float32)
    def rewrite():
        begin = time.perf_counter()
        np.multiply(buffer, np.float32(0.5), out=buffer)
        return time.perf_counter() - begin
    at_once, after_pause = [], []
    for _ in range(7):
        rewrite()
        at_once.append(rewrite())
        time.sleep(0.1)
        after_pause.append(rewrite())
    print(json.dumps({"at_once": at_once, "after_pause": after_pause}))
"""


def have(module: str) -> bool:
    return (
        subprocess.run([PYTHON, "-c", f"import {module}"], env=ENV, capture_output=True).returncode
        == 0
    )


def bench_first_call(repeat: int) -> None:
    print("\n1. First public-API call in a fresh process, 4096x4096 float32 (2**24 values)")
    torch_ok = have("torch")
    # One untimed process builds any cache (a first run after install).
    for distribution in DISTRIBUTIONS:
        run_json(VSGEN_FIRST, distribution, "1")
    pause = run_json(PAUSE)
    row("first", "NumPy rewriting 64 MiB at once", 1e3 * median(pause["at_once"]), "ms")
    paused = 1e3 * median(pause["after_pause"])
    row("first", "NumPy rewriting 64 MiB left alone 0.1 s", paused, "ms")
    for distribution in DISTRIBUTIONS:
        ours_first, ours_warm, imports, peer_first = [], [], [], []
        into_first, into_warm, system_first, system_warm = [], [], [], []
        # The floor any program meets here, timed between our runs so that it
        # sees the same state of the machine: NumPy's own first call against
        # its warm calls (memory the process never touched, or memory left
        # untouched for a while, is slower to write the first time, whoever
        # writes it; on a virtual machine the host may have to back it first).
        floor_first, floor_warm, floor_into_first, floor_into_warm = [], [], [], []
        for _ in range(repeat):
            control = run_json(NUMPY_FIRST, "5")
            floor_first.append(control["first"])
            floor_warm.append(median(control["warm"]))
            control = run_json(NUMPY_FIRST, "5", "into")
            floor_into_first.append(control["first"])
            floor_into_warm.append(median(control["warm"]))
            ours = run_json(VSGEN_FIRST, distribution, "5")
            ours_first.append(ours["first"])
            ours_warm.append(statistics.median(ours["warm"]))
            imports.append(ours["import"])
            system_first.append(ours["first_system"])
            system_warm.append(statistics.median(ours["warm_system"]))
            try:
                into = run_json(VSGEN_FIRST, distribution, "5", "into")
            except subprocess.CalledProcessError:  # a vsgen without out=
                into = None
            if into is not None:
                into_first.append(into["first"])
                into_warm.append(statistics.median(into["warm"]))
            if torch_ok:
                peer_first.append(run_json(TORCH_FIRST, distribution, "0")["first"])
        first = SIZE / statistics.median(ours_first) / 1e6
        warm = SIZE / statistics.median(ours_warm) / 1e6
        row("first", f"{distribution}: vsgen first call", first, "M/s")
        row("first", f"{distribution}: vsgen warm call (allocating)", warm, "M/s")
        # Where the first call's extra time goes: the kernel's time (page
        # faults of memory the process never touched) against a warm call's.
        row("first", f"{distribution}: system time, first call", 1e3 * median(system_first), "ms")
        row("first", f"{distribution}: system time, warm call", 1e3 * median(system_warm), "ms")
        floor = median(floor_warm) / median(floor_first)
        row("first", f"{distribution}: NumPy's own first / warm (np.full, same size)", floor, "x")
        if into_first:
            ratio = median(into_warm) / median(into_first)
            row("first", f"{distribution}: first / warm into a touched buffer (out=)", ratio, "x")
            ratio = median(floor_into_warm) / median(floor_into_first)
            row("first", f"{distribution}: NumPy's own, into a touched buffer", ratio, "x")
        row(
            "first",
            f"{distribution}: import vsgen + construct the initializer",
            1e3 * statistics.median(imports),
            "ms",
        )
        row(
            "first",
            f"{distribution}: first / warm",
            first / warm,
            "x",
            ">= 0.70",
            first / warm >= 0.70,
        )
        row(
            "first",
            f"{distribution}: first / warm, against NumPy's own (>= 1: no worse)",
            (first / warm) / floor,
            "x",
        )
        if torch_ok:
            peer = SIZE / statistics.median(peer_first) / 1e6
            row("first", f"{distribution}: torch first call", peer, "M/s")
            row(
                "first",
                f"{distribution}: vsgen first / torch first",
                first / peer,
                "x",
                "> 1",
                first / peer > 1.0,
            )
        else:
            print("  note: torch is not installed; its first call is not measured")


# --- 2. fill in place -----------------------------------------------------------------

FILL = """
    import json, random, statistics, sys, time
    import numpy as np
    import vsgen
    try:
        from vsgen.streams import counter as internal
    except ImportError:
        from vsgen import _v1 as internal
    from vsgen import dtypes as vsgen_dtypes
    from vsgen.streams import usable_cpus
    try:
        from vsgen.streams import Draw, VsgenStream
    except ImportError:
        VsgenStream = None

    repeat = int(sys.argv[1])
    threads = usable_cpus()
    shape = (4096, 4096)
    result = {}
    try:
        import torch
    except ImportError:
        torch = None
    buffer = np.ones(shape, np.float32)
    flat = buffer.reshape(-1)
    for distribution in ("truncated_normal", "untruncated_normal", "uniform"):
        init = vsgen.VarianceScaling(2.0, "fan_in", distribution, seed=1)
        multiplier = np.float32(init.scaling(shape).multiplier)
        runs = {
            "internal fill": lambda: internal.fill(
                flat, 0, 1, distribution, multiplier, threads, job_size=flat.size
            )
        }
        if hasattr(vsgen, "fill_"):
            runs["init(shape, out=array)"] = lambda: init(shape, out=buffer)
            runs["vsgen.fill_(array, init)"] = lambda: vsgen.fill_(buffer, init)
            if torch is not None:
                tensor = torch.ones(shape)
                half = torch.ones(shape, dtype=torch.bfloat16)
                # torch's allocator gives other pages than NumPy's (no huge
                # pages: writing them is slower), so each torch row has its own
                # reference: the internal fill into that same tensor's memory.
                tensor_flat = tensor.numpy().reshape(-1)
                runs["internal fill (torch float32 memory)"] = lambda: internal.fill(
                    tensor_flat, 0, 1, distribution, multiplier, threads, job_size=flat.size
                )
                runs["vsgen.fill_(torch float32, init)"] = lambda: vsgen.fill_(tensor, init)
                runs["vsgen.fill_(torch bfloat16, init)"] = lambda: vsgen.fill_(half, init)
                if VsgenStream is not None:
                    halves = half.view(torch.int16).numpy().reshape(-1)
                    halves = halves.view(vsgen_dtypes.bfloat16())
                    draw = Draw(distribution, float(multiplier), 1, halves.dtype)
                    runs["internal fill bfloat16 (torch memory)"] = lambda: VsgenStream().fill(
                        halves, 0, draw, threads
                    )
        for narrow in ("float16", "bfloat16"):
            if hasattr(vsgen, "fill_"):
                small = np.ones(shape, vsgen_dtypes.resolve_dtype(narrow))
                runs[f"init(shape, {narrow}, out=array)"] = (
                    lambda small=small, narrow=narrow: init(shape, narrow, out=small)
                )
        runs["init(shape) (allocating)"] = lambda: init(shape)
        times = {label: [] for label in runs}
        for run in runs.values():
            run()  # warm-up
        # Every round runs each variant once, in a shuffled order: which
        # variant ran just before (and left its memory in the caches and TLB)
        # changes from round to round instead of favouring one of a pair.
        order = list(runs)
        shuffle = random.Random(13).shuffle
        for _ in range(repeat):
            shuffle(order)
            for label in order:
                begin = time.perf_counter()
                runs[label]()
                times[label].append(time.perf_counter() - begin)
        result[distribution] = times
    print(json.dumps(result))
"""


def bench_fill(repeat: int) -> None:
    print("\n2. Fill in place (warm, buffers exist), 4096x4096, all usable CPUs")
    result = run_json(FILL, str(max(repeat, 9)))
    for distribution, times in result.items():
        internal = times["internal fill"]
        for label, seconds in times.items():
            row("fill", f"{distribution}: {label}", SIZE / median(seconds) / 1e6, "M/s")
            if "float16, out=" in label:
                # Narrow outputs: their time against the float32 one's.
                base = times["init(shape, out=array)"]
                ratio = median([b / a for a, b in zip(base, seconds, strict=True)])
                row("fill", f"{distribution}: {label} time / float32's", ratio, "x")
                continue
            if "fill_" in label or "out=" in label:
                # Median of per-round ratios: both ran back to back each round,
                # into the same memory.
                reference = internal
                if "torch float32" in label:
                    reference = times["internal fill (torch float32 memory)"]
                elif "bfloat16" in label:
                    reference = times.get("internal fill bfloat16 (torch memory)", internal)
                ratio = median([a / b for a, b in zip(reference, seconds, strict=True)])
                passed = ratio >= 0.90
                row("fill", f"{distribution}: {label} / internal", ratio, "x", ">= 0.90", passed)
        if not any("fill_" in label for label in times):
            print("  note: this vsgen has no fill_ / out=; only the allocating call is timed")


# --- 3. the CLI at the disk's speed ------------------------------------------------

PLAIN_WRITE = """
import os, sys
import numpy as np
values = np.ones(8192 * 8192, dtype=np.float32)
with open(sys.argv[1], "wb") as handle:
    handle.write(values.data)
    handle.flush()
    os.fsync(handle.fileno())
"""


def bench_cli(repeat: int, places: list[tuple[str, str]]) -> None:
    print("\n3. Whole-process CLI: vsgen sample --shape 8192,8192 float32 -> .npy (256 MiB)")
    for place, directory in places:
        work = tempfile.mkdtemp(prefix="vsgen-bench-", dir=directory)
        try:
            target = os.path.join(work, "w.npy")
            plain_target = os.path.join(work, "plain.bin")

            def ours(*extra: str, target: str = target) -> list[str]:
                return [
                    *VSGEN,
                    "sample",
                    "--shape",
                    "8192,8192",
                    "--seed",
                    "0",
                    "-o",
                    target,
                    "--quiet",
                    *extra,
                ]

            variants = {
                "default": [],
                "--threads 1": ["--threads", "1"],
                "--threads 2": ["--threads", "2"],
            }
            times: dict[str, list[float]] = {name: [] for name in variants}
            plain: list[float] = []
            wall(ours())  # caches, page cache warm-up
            os.remove(target)
            # Every run writes a new file; removing it (freeing its pages) is
            # done between runs, outside the timed process, for both sides.
            for _ in range(repeat):
                plain.append(wall([PYTHON, "-c", PLAIN_WRITE, plain_target]))
                os.remove(plain_target)
                for name, extra in variants.items():
                    times[name].append(wall(ours(*extra)))
                    os.remove(target)
            peer = statistics.median(plain)
            row("cli", f"{place}: plain allocate+write+fsync script", 1e3 * peer, "ms")
            for name in variants:
                seconds = statistics.median(times[name])
                row("cli", f"{place}: vsgen sample ({name})", 1e3 * seconds, "ms")
                if name == "default":
                    row(
                        "cli",
                        f"{place}: plain script / vsgen (default)",
                        peer / seconds,
                        "x",
                        ">= 0.70",
                        peer / seconds >= 0.70,
                    )
                else:
                    row("cli", f"{place}: plain script / vsgen ({name})", peer / seconds, "x")
        finally:
            shutil.rmtree(work, ignore_errors=True)


# --- 4. start-up ----------------------------------------------------------------------

from bench_cli import NUMPY_SAVE as NUMPY_ONE_LINER  # noqa: E402 - one peer for both


def bench_startup(repeat: int) -> None:
    print("\n4. Start-up (whole processes, median wall time)")
    work = tempfile.mkdtemp(prefix="vsgen-bench-")
    try:
        commands = {
            "python -c 'import numpy'": [PYTHON, "-c", "import numpy"],
            "numpy one-liner saving 512x256": [PYTHON, "-c", NUMPY_ONE_LINER],
            "vsgen sample --shape 512,256 -o s.npy": [
                *VSGEN,
                "sample",
                "--shape",
                "512,256",
                "--seed",
                "0",
                "-o",
                "s.npy",
                "--force",
            ],
            "vsgen --help": [*VSGEN, "--help"],
            "vsgen --version": [*VSGEN, "--version"],
        }
        for command in commands.values():
            wall(command, work)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name, command in commands.items():
                times[name].append(wall(command, work))
        median = {name: statistics.median(values) for name, values in times.items()}
        for name, seconds in median.items():
            row("startup", name, 1e3 * seconds, "ms")
        small = median["vsgen sample --shape 512,256 -o s.npy"]
        one_liner = median["numpy one-liner saving 512x256"]
        bare = median["python -c 'import numpy'"]
        row(
            "startup",
            "small job / numpy one-liner",
            small / one_liner,
            "x",
            "<= 1.30",
            small / one_liner <= 1.30,
        )
        for name in ("vsgen --help", "vsgen --version"):
            ratio = median[name] / bare
            row("startup", f"{name} / import numpy", ratio, "x", "<= 1.15", ratio <= 1.15)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- 5. reference -----------------------------------------------------------------

INTERNAL = """
    import json, statistics, sys, time
    import numpy as np
    try:
        from vsgen.streams import counter as internal
    except ImportError:
        from vsgen import _v1 as internal
    repeat = int(sys.argv[1])
    out = np.ones(1 << 24, np.float32)
    result = {}
    for distribution in ("truncated_normal", "untruncated_normal", "uniform"):
        for threads in (1, 2):
            run = lambda: internal.fill(out, 0, 1, distribution, 0.05, threads, job_size=out.size)
            run()
            times = []
            for _ in range(repeat):
                begin = time.perf_counter()
                run()
                times.append(time.perf_counter() - begin)
            result[f"{distribution} {threads}T"] = statistics.median(times)
    print(json.dumps(result))
"""


def bench_reference(repeat: int) -> None:
    print("\n5. Reference: internal fill, 2**24 float32 values, buffer reused, warm")
    for label, seconds in run_json(INTERNAL, str(repeat)).items():
        row("reference", f"internal fill {label}", (1 << 24) / seconds / 1e6, "M/s")


# --- machine and output -------------------------------------------------------------


def machine() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.machine()}, {os.cpu_count()} CPUs"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE2"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {model}, {simd}"


def markdown() -> None:
    print("\n| section | measurement | value | target |\n| --- | --- | ---: | --- |")
    for section, label, value, unit, needed, passed in ROWS:
        text = f"{value:,.0f} {unit}" if unit != "x" else f"{value:.2f}x"
        verdict = "" if passed is None else (" PASS" if passed else " FAIL")
        print(f"| {section} | {label} | {text} | {needed}{verdict} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="3 runs per row")
    parser.add_argument("--disk", default=None, help="directory on local disk [a temp dir]")
    parser.add_argument("--tmpfs", default="/dev/shm", help="directory on tmpfs [/dev/shm]")
    parser.add_argument("--only", default="first,fill,cli,startup,reference")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--root", default=None, help="checkout to measure [this one]")
    args = parser.parse_args(argv)
    if args.root:
        global ROOT
        ROOT = pathlib.Path(args.root).resolve()
        ENV["PYTHONPATH"] = str(ROOT)
    compileall.compile_dir(str(ROOT / "vsgen"), quiet=1)
    print(f"measuring the checkout at {ROOT}")
    repeat = 3 if args.quick else args.repeat
    sections = set(args.only.split(","))
    print(f"machine: {machine()}; Python {platform.python_version()}; median of {repeat}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    begin = time.time()
    if "first" in sections:
        bench_first_call(repeat)
    if "fill" in sections:
        bench_fill(repeat)
    if "cli" in sections:
        places = [("local disk", args.disk or tempfile.gettempdir())]
        if args.tmpfs and os.path.isdir(args.tmpfs):
            places.append(("tmpfs", args.tmpfs))
        bench_cli(repeat, places)
    if "startup" in sections:
        bench_startup(max(repeat, 9))
    if "reference" in sections:
        bench_reference(repeat)
    print("\nload average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"wall time of this run: {time.time() - begin:.0f} s")
    if args.markdown:
        markdown()
    return 1 if any(passed is False for *_, passed in ROWS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
