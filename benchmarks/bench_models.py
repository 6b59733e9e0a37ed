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

Hugging Face part (``--part hf``): a Llama-style ``config.json`` (``--size 1b``:
TinyLlama-1.1B's shape, 1.10 B parameters; ``--size 7b``: Llama-2-7B's, 6.74 B;
bfloat16, untied) into a directory of Hugging Face sharded safetensors with its
index and config, by:

* **vsgen**: ``vsgen sample --like config.json -o DIR --format safetensors-sharded``,
  in one process (its threads) and with ``--scheduler local:2`` (two Dask worker
  processes), timed as the whole command; and ``vsgen.hf.save_pretrained`` in a
  process whose imports are timed apart, which gives the time of the work itself;
* **transformers**: ``AutoModelForCausalLM.from_config(config)`` (transformers'
  own ``_init_weights``, on the CPU) then ``save_pretrained(DIR)``;
* **torch**: the model built on the meta device, ``to_empty(device="cpu")``, every
  submodule's ``reset_parameters()``, then ``safetensors.torch.save_file``;
* **write floor**: vsgen's number of bytes written from one buffer and ``fsync``ed;
* **load**: ``from_pretrained(DIR, output_loading_info=True)`` of vsgen's output
  (its missing, unexpected and mismatched keys are printed; they must be none).

Every child process has its address space capped (``resource.setrlimit(
RLIMIT_AS)``, ``--memory-cap-gib``, default 12 GiB) so that a path that needs the
whole model in memory fails with its own memory error instead of taking the
machine; the table says so. Time is the child's wall time; peak RSS is the
largest resident set of the child or of any process it waited for (the Dask
workers of ``local:2`` and the process that builds the model from its config
included, each counted alone); "own peak" is the command's own process alone
(its ``VmHWM``, read every 10 ms while it runs): for ``vsgen sample --like
config.json`` the process that writes, which never imports torch.

    python benchmarks/bench_models.py --part hf --size 1b|7b [--dir DIR]
        [--memory-cap-gib 12] [--skip transformers,torch,load]
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
#: A child that fails is reported with ``error``, the last line of its stderr.
WRAPPER = (
    "import json, resource, subprocess, sys, threading, time\n"
    "def hwm(pid):\n"
    "    try:\n"
    "        with open(f'/proc/{pid}/status') as status:\n"
    "            return max(int(l.split()[1]) for l in status if l.startswith('VmHWM:'))\n"
    "    except (OSError, ValueError):\n"
    "        return 0\n"
    "started = time.perf_counter()\n"
    "process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE,"
    " text=True)\n"
    "own = [0]\n"
    "def watch():\n"
    "    while process.poll() is None:\n"
    "        own[0] = max(own[0], hwm(process.pid))\n"
    "        time.sleep(0.01)\n"
    "watcher = threading.Thread(target=watch, daemon=True)\n"
    "watcher.start()\n"
    "stdout, stderr = process.communicate()\n"
    "seconds = time.perf_counter() - started\n"
    "watcher.join()\n"
    "lines = stdout.strip().splitlines()\n"
    "report = json.loads(lines[-1]) if lines and lines[-1].startswith('{') else {}\n"
    "if process.returncode:\n"
    "    errors = [line for line in stderr.splitlines() if line.strip()]\n"
    "    report = {'error': errors[-1] if errors else f'exit {process.returncode}'}\n"
    "report['wall'] = seconds\n"
    "report['peak_kib'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "report['own_peak_kib'] = own[0]\n"
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
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if "error" in report:
        raise SystemExit(f"{method} failed: {report['error']}")
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


# --- the Hugging Face part --------------------------------------------------------------------

#: Llama-style configs: TinyLlama-1.1B's and Llama-2-7B's shapes, in bfloat16.
HF_SIZES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
           "num_attention_heads": 32, "num_key_value_heads": 4},
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 32},
}  # fmt: skip


def hf_config(size: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        **HF_SIZES[size],
    }


def cap_memory(gib: float) -> None:
    """Cap this process's address space (RLIMIT_AS): an allocation beyond it fails."""
    limit = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def hf_child(args: argparse.Namespace) -> None:
    """One measured run of the hf part; prints a JSON report as its last line."""
    cap_memory(args.memory_cap_gib)
    out = os.path.join(args.dir, "out")
    config_path = os.path.join(args.dir, "config.json")
    report: dict = {}
    started = time.perf_counter()
    if args.child == "floor":
        block = bytearray(64 << 20)
        with open(os.path.join(args.dir, "floor.bin"), "wb") as handle:
            for _ in range(args.nbytes // len(block)):
                handle.write(block)
            handle.write(block[: args.nbytes % len(block)])
            handle.flush()
            os.fsync(handle.fileno())
        report["seconds"] = time.perf_counter() - started
        os.unlink(os.path.join(args.dir, "floor.bin"))
        print(json.dumps(report))
        return
    import torch
    import transformers

    if args.child == "hf-vsgen":
        import vsgen.hf

        # transformers' model classes load on first use (~150 MiB, ~2 s, the same for
        # every path): loaded here, so that the work timed and the RSS above
        # ``loaded_kib`` are vsgen's own.
        vsgen.hf.build_meta_model(config_path)
    report["import"] = time.perf_counter() - started
    report["loaded_kib"] = rss_kib()
    started = time.perf_counter()
    if args.child == "hf-vsgen":
        vsgen.hf.save_pretrained(config_path, out, seed=0, force=True)
    elif args.child == "hf-transformers":
        config = transformers.AutoConfig.from_pretrained(config_path)
        model = transformers.AutoModelForCausalLM.from_config(config)
        model.save_pretrained(out)
    elif args.child == "hf-torch":
        import safetensors.torch

        config = transformers.AutoConfig.from_pretrained(config_path)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
        model.to_empty(device="cpu")
        with torch.no_grad():
            for module in reversed(list(model.modules())):
                reset = getattr(module, "reset_parameters", None)
                if reset is not None:
                    reset()
        os.makedirs(out, exist_ok=True)
        safetensors.torch.save_file(
            model.state_dict(), os.path.join(out, "model.safetensors"), metadata={"format": "pt"}
        )
    elif args.child == "hf-load":
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            out, output_loading_info=True
        )
        report["loading_info"] = {key: sorted(map(str, value)) for key, value in info.items()}
        report["dtype"] = str(model.dtype)
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))


def hf_measure(command: list[str]) -> dict:
    """Run ``command`` under the wrapper; its report, or the error it died of."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=False
    )
    report: dict = json.loads(done.stdout.strip().splitlines()[-1])
    if "can't allocate memory" in report.get("error", ""):
        report["error"] = "out of memory (DefaultCPUAllocator: can't allocate memory)"
    return report


def _hf_child_command(method: str, args: argparse.Namespace, nbytes: int = 0) -> list[str]:
    return [
        sys.executable, __file__, "--part", "hf", "--child", method, "--dir", args.dir,
        "--memory-cap-gib", str(args.memory_cap_gib), "--nbytes", str(nbytes),
    ]  # fmt: skip


def _vsgen_cli(args: argparse.Namespace, *extra: str) -> list[str]:
    """The command line run under the memory cap, in the same interpreter."""
    code = (
        "import resource, sys; limit = int(float(sys.argv[1]) * 2**30); "
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
        "from vsgen.__main__ import main; sys.argv = ['vsgen', *sys.argv[2:]]; main()"
    )
    return [
        sys.executable, "-c", code, str(args.memory_cap_gib), "sample",
        "--like", os.path.join(args.dir, "config.json"), "-o", os.path.join(args.dir, "out"),
        "--format", "safetensors-sharded", "--seed", "0", "--force", "-q", *extra,
    ]  # fmt: skip


def _output_bytes(directory: str) -> int:
    return sum(entry.stat().st_size for entry in Path(directory).iterdir())


def _remove_output(directory: str) -> None:
    path = Path(directory)
    if path.is_dir():
        for entry in path.iterdir():
            entry.unlink()
        path.rmdir()


def hf_part(args: argparse.Namespace) -> None:
    import torch
    import transformers

    config = hf_config(args.size)
    Path(args.dir, "config.json").write_text(json.dumps(config, indent=1))
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.from_pretrained(os.path.join(args.dir, "config.json"))
        )
    parameters = sum(p.numel() for p in model.parameters())
    disk = os.statvfs(args.dir)
    print(
        f"model: Llama-style {args.size}, {parameters / 1e9:.2f} B parameters, bfloat16, "
        f"{parameters * 2 / 2**30:.2f} GiB; torch {torch.__version__}, transformers "
        f"{transformers.__version__}; {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.1f}; {disk.f_bavail * disk.f_frsize / 2**30:.0f} GiB free; "
        f"address space capped at {args.memory_cap_gib:g} GiB per process (RLIMIT_AS)"
    )
    out = os.path.join(args.dir, "out")
    skip = set(filter(None, args.skip.split(",")))
    rows: dict[str, dict] = {}
    rows["vsgen (API; work after imports)"] = hf_measure(_hf_child_command("hf-vsgen", args))
    nbytes = _output_bytes(out)
    if "load" not in skip:
        rows["from_pretrained of vsgen's output"] = hf_measure(_hf_child_command("hf-load", args))
    _remove_output(out)
    rows["vsgen sample --like config.json"] = hf_measure(_vsgen_cli(args))
    _remove_output(out)
    rows["vsgen ... --scheduler local:2"] = hf_measure(_vsgen_cli(args, "--scheduler", "local:2"))
    _remove_output(out)
    rows["write + fsync floor"] = hf_measure(_hf_child_command("floor", args, nbytes))
    if "transformers" not in skip:
        rows["transformers from_config + save_pretrained"] = hf_measure(
            _hf_child_command("hf-transformers", args)
        )
        _remove_output(out)
    if "torch" not in skip:
        rows["torch meta + to_empty + reset_parameters + save_file"] = hf_measure(
            _hf_child_command("hf-torch", args)
        )
        _remove_output(out)
    floor = rows["write + fsync floor"].get("seconds")
    print(f"vsgen's output: {nbytes / 2**30:.2f} GiB")
    print(
        "| path | wall s | work s | work / floor | peak RSS MiB (any process) "
        "| own peak MiB | above loaded MiB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, report in rows.items():
        if "error" in report:
            peak = report["peak_kib"] / 1024
            own = report.get("own_peak_kib", 0) / 1024
            print(
                f"| {name} | {report['wall']:.1f}: {report['error'][:120]} | | | {peak:,.0f} "
                f"| {own:,.0f} | |"
            )
            continue
        # work: the child's own timing, after its imports (none for a whole command)
        work = report.get("seconds")
        work_text = "" if work is None else f"{work:.1f}"
        ratio = "" if work is None or not floor else f"{work / floor:.2f}"
        peak = report["peak_kib"] / 1024
        above = "" if "loaded_kib" not in report else f"{peak - report['loaded_kib'] / 1024:,.0f}"
        own = report.get("own_peak_kib", 0) / 1024
        print(
            f"| {name} | {report['wall']:.1f} | {work_text} | {ratio} | {peak:,.0f} "
            f"| {own:,.0f} | {above} |"
        )
        if "loading_info" in report:
            print(f"  loading info: {report['loading_info']}, dtype {report['dtype']}")
    api = rows["vsgen (API; work after imports)"]
    tf = rows.get("transformers from_config + save_pretrained", {})
    if "seconds" in api and "seconds" in tf:
        print(
            f"transformers / vsgen: {tf['wall'] / api['wall']:.1f}x the wall time, "
            f"{tf['seconds'] / api['seconds']:.1f}x the work"
        )
    cli = rows["vsgen sample --like config.json"]
    floor_row = rows["write + fsync floor"]
    if "error" not in cli and "error" not in floor_row:
        line = f"vsgen sample --like: {cli['wall'] / floor_row['wall']:.2f}x the floor's wall time"
        if "wall" in tf and "error" not in tf:
            line += f", transformers {tf['wall'] / cli['wall']:.1f}x its wall time"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["torch", "hf"], default="torch")
    parser.add_argument("--size", choices=sorted(HF_SIZES), default="1b")
    parser.add_argument("--memory-cap-gib", type=float, default=12.0)
    parser.add_argument("--skip", default="", help="hf: comma-separated transformers,torch,load")
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
        (hf_child if args.part == "hf" else child)(args)
        return
    part = hf_part if args.part == "hf" else torch_part
    if args.dir is None:
        with tempfile.TemporaryDirectory() as directory:
            args.dir = directory
            part(args)
    else:
        part(args)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
