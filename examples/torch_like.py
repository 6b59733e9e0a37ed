"""A real PyTorch checkpoint, re-initialised: from the shell and in place.

Builds a small ResNet-style model (BatchNorm2d, a downsample nn.Sequential,
an integer `num_batches_tracked` per norm), saves its state dict, then

1. `vsgen sample --like ... --plan` shows what each tensor will get;
2. `vsgen sample --like ...` writes fresh weights, which load with
   `load_state_dict(strict=True)`: norm scales 1, running statistics 0 and 1,
   integer buffers as they were;
3. `vsgen.torch.init_` does the same in place, byte for byte.

Skips (exit 0) when torch is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import torch
    from safetensors.torch import load_file, save_file
    from torch import nn
except ImportError:
    print("torch not installed: skipping")
    sys.exit(0)

import vsgen.torch


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
    )
    model.add_module("downsample", nn.Sequential(nn.Conv2d(16, 32, 1, 2), nn.BatchNorm2d(32)))
    model.train()
    model[:2](torch.randn(4, 3, 8, 8))  # num_batches_tracked of the first norm becomes 1
    return model


with tempfile.TemporaryDirectory() as tmp:
    source, fresh = Path(tmp) / "model.safetensors", Path(tmp) / "fresh.safetensors"
    save_file(make_model().state_dict(), str(source))
    options = ["--like", str(source), "--layout", "torch", "--preset", "he_normal", "--seed", "0"]
    vsgen_cli = [sys.executable, "-m", "vsgen", "sample", *options]
    subprocess.run([*vsgen_cli, "--plan"], check=True)
    subprocess.run([*vsgen_cli, "-o", str(fresh)], check=True)

    model = make_model()
    model.load_state_dict(load_file(str(fresh)), strict=True)
    assert torch.equal(model[1].weight, torch.ones(16))  # "1.weight": a norm scale
    assert torch.equal(model.downsample[1].running_var, torch.ones(32))
    assert model[1].num_batches_tracked.item() == 1  # copied, not invented

    in_place = make_model()
    vsgen.torch.init_(in_place, "he_normal", seed=0)
    for name, tensor in in_place.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
print("torch_like OK: the file and the in-place initialisation agree")
