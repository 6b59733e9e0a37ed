"""A whole transformer block's weights from a spec file, loaded into PyTorch.

Runs ``vsgen sample --spec transformer_block.toml -o <tmpdir>/block.safetensors``,
defines the matching ``torch.nn.Module``, loads the file with
``load_state_dict(strict=True)`` (every name, shape and dtype must match) and
checks that a forward pass is finite. Prints OK; without PyTorch it says so
and exits 0.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

SPEC = Path(__file__).resolve().with_name("transformer_block.toml")
VOCAB, D_MODEL, N_HEADS, D_FF = 1000, 64, 4, 256


def main() -> int:
    """Generate, load and run the block; return the exit code."""
    try:
        import torch
        from safetensors.torch import load_file
        from torch import nn
    except ImportError:
        print("torch not installed, skipping")
        return 0

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = nn.Linear(D_MODEL, D_MODEL)
            self.k_proj = nn.Linear(D_MODEL, D_MODEL)
            self.v_proj = nn.Linear(D_MODEL, D_MODEL)
            self.o_proj = nn.Linear(D_MODEL, D_MODEL)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, length, _ = x.shape

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch, length, N_HEADS, D_MODEL // N_HEADS).transpose(1, 2)

            q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
            scores = q @ k.transpose(-2, -1) / math.sqrt(D_MODEL // N_HEADS)
            causal = torch.ones(length, length, dtype=torch.bool).triu(1)
            attended = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
            return self.o_proj(attended.transpose(1, 2).reshape(batch, length, D_MODEL))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.Linear(D_MODEL, D_FF)
            self.down = nn.Linear(D_FF, D_MODEL)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(nn.functional.gelu(self.up(x)))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, D_MODEL)
            self.ln_1 = nn.LayerNorm(D_MODEL)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(D_MODEL)
            self.mlp = MLP()

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.embed(tokens)
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "block.safetensors"
        command = [sys.executable, "-m", "vsgen", "sample", "--spec", str(SPEC), "-o", str(path)]
        subprocess.run(command, check=True)
        state = load_file(str(path))

    block = Block()
    block.load_state_dict(state, strict=True)
    assert torch.equal(block.ln_1.weight, torch.ones(D_MODEL)), "LayerNorm weights are ones"
    assert torch.equal(block.attn.q_proj.bias, torch.zeros(D_MODEL)), "biases are zeros"
    # He normal on (out, in) = (256, 64): stddev sqrt(2 / 64) = 0.177 within sampling error.
    std = block.mlp.up.weight.std().item()
    assert abs(std - math.sqrt(2 / D_MODEL)) < 0.01, std

    tokens = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = block(tokens)
    assert output.shape == (2, 16, D_MODEL), output.shape
    assert torch.isfinite(output).all(), "forward pass produced non-finite values"
    print(f"OK: {len(state)} tensors loaded strictly, forward pass finite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
