"""Initialising a whole PyTorch model: ``vsgen.torch.init_`` against PyTorch's own.

Builds a GPT-like decoder of about 1.1 B parameters (float32, ~4.4 GiB by
default: token and position embeddings, 18 pre-norm
``nn.TransformerEncoderLayer`` blocks of width 2048 with 16 heads and an
8192-wide MLP, a final LayerNorm and an untied output head) on the meta
device, then materialises it with ``to_empty(device="cpu")``, so no time or
memory goes to an initialisation that is thrown away.

Then, in one process and on the same module (so the same memory):

* **PyTorch's default initialisation**: what constructing the module runs,
  ``reset_parameters()`` of every submodule that has one (Linear: Kaiming
  uniform with a = sqrt(5); Embedding: N(0, 1); LayerNorm: ones and zeros)
  and ``MultiheadAttention._reset_parameters()`` (Xavier uniform);
* **vsgen.torch.init_** with vsgen's default (truncated normal, stddev
  sqrt(1 / fan_in)) and with ``he_uniform`` (the uniform family PyTorch's
  default belongs to).

A first untimed PyTorch pass touches every page. vsgen's first call in the
process is reported on its own (it loads the compiled kernels), then each
method runs ``--repeats`` times, interleaved. Medians of the wall time (what
a user waits for) and of the process's CPU time (all threads: the work done,
which other processes on a shared machine do not inflate) are compared.

    python benchmarks/bench_torch_init.py [--layers 18] [--width 2048] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model(layers: int, width: int, heads: int, mlp: int, vocab: int, context: int):
    import torch
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok_emb = nn.Embedding(vocab, width)
            self.pos_emb = nn.Embedding(context, width)
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    width, heads, mlp, dropout=0.0, batch_first=True, norm_first=True
                )
                for _ in range(layers)
            )
            self.ln_f = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab, bias=False)

    with torch.device("meta"):
        model = Decoder()
    return model.to_empty(device="cpu")


def torch_default_init(model) -> None:
    """What constructing the module does to its parameters."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        elif hasattr(module, "_reset_parameters"):  # nn.MultiheadAttention
            module._reset_parameters()


def timed(action) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of the process) of ``action()``."""
    start, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--mlp", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    import vsgen.torch
    from vsgen.streams import usable_cpus

    threads = args.threads or usable_cpus()
    torch.set_num_threads(threads)
    model = build_model(args.layers, args.width, args.heads, args.mlp, args.vocab, args.context)
    parameters = sum(p.numel() for p in model.parameters())
    gib = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**30
    print(
        f"model: {parameters / 1e9:.2f} B parameters, {gib:.2f} GiB float32, "
        f"{len(model.state_dict())} tensors; {threads} threads (torch {torch.__version__})"
    )

    torch_default_init(model)  # touches every page once, untimed
    first, _ = timed(lambda: vsgen.torch.init_(model, seed=0, threads=threads))
    print(f"vsgen first call in the process (loads kernels): {first:.2f} s")

    methods = {
        "torch default (reset_parameters)": lambda: torch_default_init(model),
        "vsgen default (truncated normal)": lambda: vsgen.torch.init_(
            model, seed=0, threads=threads
        ),
        "vsgen he_uniform": lambda: vsgen.torch.init_(model, "he_uniform", seed=0, threads=threads),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, action in methods.items():
            times[name].append(timed(action))

    def medians(name: str) -> tuple[float, float]:
        samples = times[name]
        return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))

    # On a shared machine other processes steal cores: the CPU time (all threads)
    # shows the work done, the wall time what a user waits for.
    base_wall, base_cpu = medians("torch default (reset_parameters)")
    print(
        f"{'method':34} {'wall s':>7} {'M values/s':>11} {'speed-up':>9} {'CPU s':>7} "
        f"{'CPU ratio':>9}"
    )
    for name in methods:
        wall, cpu = medians(name)
        rate = parameters / wall / 1e6
        print(
            f"{name:34} {wall:7.2f} {rate:11.0f} {base_wall / wall:8.1f}x {cpu:7.2f} "
            f"{base_cpu / cpu:8.1f}x"
        )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    # Sanity: the last vsgen run (he_uniform) gave the first MLP matrix its stddev.
    weight = model.blocks[0].linear1.weight
    expected = (2.0 / weight.shape[1]) ** 0.5
    print(f"check: blocks.0.linear1.weight std {weight.std().item():.5f}, expected {expected:.5f}")


if __name__ == "__main__":
    main()
