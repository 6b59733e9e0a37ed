"""Whole models into checkpoints: time and peak memory, measured in one run.

PyTorch part (``--part torch``): a GPT-like decoder built on the meta device
(token and position embeddings, ``--layers`` pre-norm
``nn.TransformerEncoderLayer`` blocks, a final LayerNorm, an output head tied to
the token embedding; float32 by default, about 3.4 GiB at the default sizes),
written to one ``.safetensors`` file (or ``--format safetensors-sharded``) by:

* **vsgen**: ``vsgen.torch.save(model, path, convention=...)`` straight from the
  meta module, block by block: the model is never allocated;
* **PyTorch**: what a user does without vsgen, ``model.to_empty(device="cpu")``,
  every submodule's ``reset_parameters()`` (children first, as construction),
  then ``safetensors.torch.save_model`` (which also drops the tied name);
* **write floor**: the same number of bytes written with ``f.write`` from one
  64 MiB buffer, then ``fsync``: what any writer of this file must pay.

Each runs in its own child process (so that its peak RSS is its own, read with
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a fresh wrapper) and writes into
``--dir`` (default: a new temporary directory; the file is removed after each
run). Printed: wall time, peak RSS, the peak above
the process's RSS once torch and the meta model are loaded (what writing
costs), and the ratios to the floor and to PyTorch. The claim checked is that
vsgen's peak stays at its bounded buffers (a few hundred MiB) whatever the
model's size, where PyTorch's path holds the whole model.

    python benchmarks/bench_models.py --part torch [--layers 20] [--width 2048]
        [--format safetensors] [--convention vsgen|torch] [--dtype float32|bfloat16]
        [--dir DIR] [--skip-torch]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Runs a child and prints its wall time, its own JSON report and its peak RSS.
WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "started = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "seconds = time.perf_counter() - started\n"
    "if done.returncode:\n"
    "    sys.stderr.write(done.stderr)\n"
    "    sys.exit(done.returncode)\n"
    "report = json.loads(done.stdout.strip().splitlines()[-1])\n"
    "report['wall'] = seconds\n"
    "report['peak_kib'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps(report))\n"
)


def build_model(layers: int, width: int, vocab: int, context: int, dtype: str):
    import torch
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok_emb = nn.Embedding(vocab, width)
            self.pos_emb = nn.Embedding(context, width)
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    width, width // 128, 4 * width, dropout=0.0, batch_first=True, norm_first=True
                )
                for _ in range(layers)
            )
            self.ln_f = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab, bias=False)
            self.head.weight = self.tok_emb.weight

    with torch.device("meta"):
        model = Decoder().to(getattr(torch, dtype))
    return model


def rss_kib() -> int:
    """This process's current resident set (``VmRSS``), in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> None:
    """One measured run; prints a JSON report as its last line."""
    import torch

    import vsgen.torch

    model = build_model(args.layers, args.width, args.vocab, args.context, args.dtype)
    loaded_kib = rss_kib()  # torch, vsgen and the meta model: the same for every method
    path = os.path.join(args.dir, "model.safetensors")
    started = time.perf_counter()
    if args.child == "vsgen":
        job = vsgen.torch.save(
            model, path, seed=0, convention=args.convention, format=args.format, force=True
        )
        values = job.total_values
    elif args.child == "torch":
        import safetensors.torch

        model.to_empty(device="cpu")
        with torch.no_grad():
            for module in reversed(list(model.modules())):
                reset = getattr(module, "reset_parameters", None) or getattr(
                    module, "_reset_parameters", None
                )
                if reset is not None:
                    reset()
        safetensors.torch.save_model(model, path)
        values = sum(t.numel() for t in model.state_dict().values())
    else:  # the floor: the same bytes, written and synced
        nbytes = args.nbytes
        block = bytearray(64 << 20)
        with open(path, "wb") as handle:
            for _ in range(nbytes // len(block)):
                handle.write(block)
            handle.write(block[: nbytes % len(block)])
            handle.flush()
            os.fsync(handle.fileno())
        values = nbytes
    seconds = time.perf_counter() - started
    if os.path.isdir(path):
        size = sum(entry.stat().st_size for entry in Path(path).iterdir())
    else:
        size = os.path.getsize(path)
    report = {"seconds": seconds, "loaded_kib": loaded_kib, "bytes": size, "values": values}
    print(json.dumps(report))


def measure(method: str, args: argparse.Namespace, nbytes: int = 0) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--layers",
        str(args.layers),
        "--width",
        str(args.width),
        "--vocab",
        str(args.vocab),
        "--context",
        str(args.context),
        "--dtype",
        args.dtype,
        "--format",
        args.format,
        "--convention",
        args.convention,
        "--dir",
        args.dir,
        "--nbytes",
        str(nbytes),
    ]
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    target = Path(args.dir) / "model.safetensors"
    if target.is_dir():
        for entry in target.iterdir():
            entry.unlink()
        target.rmdir()
    elif target.exists():
        target.unlink()
    return report


def torch_part(args: argparse.Namespace) -> None:
    import torch

    model = build_model(args.layers, args.width, args.vocab, args.context, args.dtype)
    state = model.state_dict(keep_vars=True)  # the tensors themselves: ties show
    unique = {id(t): t for t in state.values()}
    nbytes = sum(t.numel() * t.element_size() for t in unique.values())
    print(
        f"model: {args.layers} layers of width {args.width}, vocab {args.vocab}, "
        f"{sum(t.numel() for t in unique.values()) / 1e9:.2f} B parameters, {args.dtype}, "
        f"{nbytes / 2**30:.2f} GiB; torch {torch.__version__}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    reports = {"vsgen": measure("vsgen", args)}
    reports["floor"] = measure("floor", args, reports["vsgen"]["bytes"])
    if not args.skip_torch:
        reports["torch"] = measure("torch", args)
    floor = reports["floor"]["seconds"]
    header = ("method", "write s", "x floor", "peak RSS MiB", "above load MiB")
    print(f"{header[0]:<8} {header[1]:>8} {header[2]:>8} {header[3]:>13} {header[4]:>15}")
    for method, report in reports.items():
        peak = report["peak_kib"] / 1024
        above = (report["peak_kib"] - report["loaded_kib"]) / 1024
        print(
            f"{method:<8} {report['seconds']:8.2f} {report['seconds'] / floor:8.2f} "
            f"{peak:13.0f} {above:15.0f}"
        )
    vsgen_report = reports["vsgen"]
    above = (vsgen_report["peak_kib"] - vsgen_report["loaded_kib"]) / 1024
    print(
        f"vsgen wrote {vsgen_report['bytes'] / 2**30:.2f} GiB holding at most {above:.0f} MiB "
        f"above the loaded process ({above * 2**20 / vsgen_report['bytes']:.1%} of the model)"
    )
    if "torch" in reports:
        ratio = reports["torch"]["peak_kib"] / vsgen_report["peak_kib"]
        speed = reports["torch"]["seconds"] / vsgen_report["seconds"]
        print(f"PyTorch's path: {ratio:.1f}x vsgen's peak RSS, {speed:.2f}x its time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["torch"], default="torch")
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--format", default="safetensors")
    parser.add_argument("--convention", default="vsgen")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--nbytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    if args.dir is None:
        with tempfile.TemporaryDirectory() as directory:
            args.dir = directory
            torch_part(args)
    else:
        torch_part(args)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
