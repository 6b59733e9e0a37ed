"""Load a vsgen safetensors file into a torch.nn.Linear.

PyTorch stores a Linear weight as (out_features, in_features), so the fans
come from `--layout torch`. Skips (exit 0) when torch is not installed.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import torch
    from safetensors.torch import load_file
except ImportError:
    print("torch not installed: skipping")
    sys.exit(0)

IN_FEATURES, OUT_FEATURES = 512, 256

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "linear.safetensors"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--shape",
            f"{OUT_FEATURES},{IN_FEATURES}",
            "--layout",
            "torch",
            "--preset",
            "he_uniform",
            "--seed",
            "0",
            "--name",
            "weight",
            "-o",
            str(path),
        ],
        check=True,
    )
    layer = torch.nn.Linear(IN_FEATURES, OUT_FEATURES, bias=False)
    layer.load_state_dict(load_file(str(path)), strict=True)
    weight = layer.weight.detach()
    limit = math.sqrt(6.0 / IN_FEATURES)  # He uniform: sqrt(3 * 2 / fan_in)
    assert weight.abs().max().item() <= limit
    target_std = math.sqrt(2.0 / IN_FEATURES)
    assert abs(weight.std().item() - target_std) < 0.02 * target_std
    out = layer(torch.randn(4, IN_FEATURES))
    assert torch.isfinite(out).all()
    print(
        f"Linear({IN_FEATURES}, {OUT_FEATURES}) loaded: std={weight.std().item():.5f}, "
        f"max |w|={weight.abs().max().item():.5f} <= limit {limit:.5f}"
    )
print("torch_linear OK")
