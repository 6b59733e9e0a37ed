"""``vsgen.torch.init_``: a module initialised in place holds exactly the bytes
``vsgen sample --like`` writes for its state dict, through the tensors' own
memory, for every float dtype, layout, contiguity and tied weights."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
import vsgen.torch  # noqa: E402  (after the skip: the adapter needs torch)

nn = torch.nn
ROOT = Path(__file__).resolve().parent.parent


def independent_seed(global_seed: int, name: str, bits: int = 53) -> int:
    digest = hashlib.sha256(global_seed.to_bytes(8, "little") + name.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << bits) - 1)


def small_model(dtype=None) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Embedding(40, 16),
        nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
        nn.LayerNorm(16),
        nn.Linear(16, 24),
    )
    model.add_module("conv", nn.Conv2d(3, 8, 3))
    model.add_module("bn", nn.BatchNorm2d(8))
    model.register_buffer("position_ids", torch.arange(10)[None])
    model.bn.num_batches_tracked.fill_(7)
    return model if dtype is None else model.to(dtype)


def file_state(model: nn.Module, tmp_path: Path, *options: str) -> dict:
    """What ``vsgen sample --like`` writes for ``model``'s state dict."""
    source = tmp_path / "source.safetensors"
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    safetensors_torch.save_file(state, str(source))
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(
        cli, ["sample", "--like", str(source), "-o", str(out), "--force", *options]
    )
    assert result.exit_code == 0, result.stderr
    return safetensors_torch.load_file(str(out))


def same_bytes(a, b) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    ("preset", "options"),
    [
        (None, []),
        ("he_normal", ["--preset", "he_normal"]),
        ("glorot_uniform", ["--preset", "glorot_uniform"]),
        (
            {"scale": 0.5, "mode": "fan_avg", "distribution": "untruncated_normal"},
            ["--scale", "0.5", "--mode", "fan_avg", "--distribution", "untruncated_normal"],
        ),
    ],
)
def test_init_equals_the_file_sample_like_writes(tmp_path, dtype, preset, options):
    model = small_model(dtype)
    expected = file_state(model, tmp_path, "--layout", "torch", "--seed", "21", *options)
    job = vsgen.torch.init_(model, preset, seed=21)
    assert job.seed == 21 and not job.seed_was_drawn
    state = model.state_dict()
    assert set(state) == set(expected)
    for name, tensor in state.items():
        assert same_bytes(tensor, expected[name]), name
    assert model.bn.num_batches_tracked.item() == 7  # integer buffers are kept
    assert torch.equal(model.position_ids, torch.arange(10)[None])


def test_rules_spec_layout_and_keras_stream(tmp_path):
    model = small_model()
    spec = tmp_path / "rules.toml"
    spec.write_text(
        'layout = "keras"\n[rules]\n"0.weight" = "lecun_uniform"\n"*.bias" = { constant = 0.25 }\n',
        encoding="utf-8",
    )
    expected = file_state(model, tmp_path, "--spec", str(spec), "--seed", "3", "--stream", "keras")
    vsgen.torch.init_(model, spec=spec, seed=3, stream="keras")
    for name, tensor in model.state_dict().items():
        assert same_bytes(tensor, expected[name]), name
    assert (model[3].bias == 0.25).all()

    # rules= come before the spec's rules
    vsgen.torch.init_(model, spec=spec, seed=3, rules={"3.bias": "ones"})
    assert (model[3].bias == 1).all() and (model[1].linear1.bias == 0.25).all()


def test_values_are_written_through_the_tensors_own_memory():
    model = small_model()
    pointers = {name: tensor.data_ptr() for name, tensor in model.state_dict().items()}
    job = vsgen.torch.init_(model, "he_uniform", seed=0)
    assert [row.name for row in job.rows] == list(pointers)  # state_dict order
    for name, tensor in model.state_dict().items():
        assert tensor.data_ptr() == pointers[name], name
    seed = independent_seed(0, "3.weight")
    expected = vsgen.HeUniform(seed=seed, layout="torch")((24, 16))
    np.testing.assert_array_equal(model[3].weight.detach().numpy(), expected)
    # Parameters stay leaves that require grad; no autograd history is recorded.
    assert all(p.grad_fn is None and p.requires_grad for p in model.parameters())


def test_threads_do_not_change_the_bytes():
    one, two = small_model(), small_model()
    vsgen.torch.init_(one, seed=9, threads=1)
    vsgen.torch.init_(two, seed=9, threads=2)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert same_bytes(a, b), name


def test_non_contiguous_tensors_are_filled_through_a_buffer(tmp_path):
    model = nn.Module()
    model.w = nn.Linear(6, 4)
    model.w.weight = nn.Parameter(torch.zeros(6, 4).t())  # (4, 6), strides (1, 4)
    model.v = nn.Linear(7, 5)
    assert not model.w.weight.is_contiguous()
    expected = file_state(model, tmp_path, "--layout", "torch", "--seed", "2")
    pointer = model.w.weight.data_ptr()
    vsgen.torch.init_(model, seed=2)
    assert model.w.weight.data_ptr() == pointer and not model.w.weight.is_contiguous()
    assert model.w.weight.std() > 0
    assert same_bytes(model.w.weight.detach(), expected["w.weight"])
    assert same_bytes(model.v.weight.detach(), expected["v.weight"])


def test_tied_weights_are_initialised_once_under_the_first_name():
    model = nn.Module()
    model.embed = nn.Embedding(30, 8)
    model.head = nn.Linear(8, 30, bias=False)
    model.head.weight = model.embed.weight
    job = vsgen.torch.init_(model, seed=4)
    assert [info.name for info in job.infos] == ["embed.weight"]
    assert model.head.weight is model.embed.weight
    expected = vsgen.VarianceScaling(seed=independent_seed(4, "embed.weight"), layout="torch")
    np.testing.assert_array_equal(model.embed.weight.detach().numpy(), expected((30, 8)))


def test_drawn_seed_reproduces():
    first, second = small_model(), small_model()
    job = vsgen.torch.init_(first)
    assert job.seed_was_drawn and 0 <= job.seed < 2**53
    vsgen.torch.init_(second, seed=job.seed)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert same_bytes(a, b), name


def test_plan_changes_nothing():
    model = small_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    job = vsgen.torch.plan(model, "he_normal", seed=1)
    assert {row.name for row in job.rows} == set(before)
    rows = {row.name: row for row in job.rows}
    assert rows["bn.weight"].init == "ones" and rows["bn.num_batches_tracked"].kind == "copy"
    assert rows["3.weight"].fan_in == 16 and rows["3.weight"].init == "he_normal"
    for name, tensor in model.state_dict().items():
        assert same_bytes(tensor, before[name]), name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nn.Linear(4, 4, device="meta"), "meta device"),
        (lambda: nn.LazyLinear(4), "not materialised"),
        (lambda: nn.Linear(4, 4, dtype=torch.complex64), "dtype complex64"),
    ],
)
def test_modules_that_cannot_be_initialised_are_refused(make, message):
    module = make()
    with pytest.raises(ValueError, match=message):
        vsgen.torch.init_(module, seed=0)


def test_nothing_is_written_when_a_rule_is_bad():
    model = small_model()
    before = model[3].weight.detach().clone()
    with pytest.raises(ValueError, match=r"tensor 'position_ids' \(rule position_ids\)"):
        vsgen.torch.init_(model, seed=0, rules={"position_ids": "he_normal"})
    with pytest.raises(ValueError, match="unknown initializer 'kaiming'"):
        vsgen.torch.init_(model, "kaiming", seed=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        vsgen.torch.init_({"w": torch.zeros(2)}, seed=0)
    with pytest.raises(ValueError, match="`threads`"):
        vsgen.torch.init_(model, seed=0, threads=0)
    assert torch.equal(model[3].weight.detach(), before)


def test_importing_the_adapter_does_not_import_torch():
    code = "import sys, vsgen, vsgen.torch; print('torch' in sys.modules)"
    process = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "False"


def test_a_vsgen_initializer_object_as_preset(tmp_path):
    model = small_model()
    expected = file_state(
        model, tmp_path, "--layout", "torch", "--seed", "8", "--preset", "lecun_uniform"
    )
    vsgen.torch.init_(model, vsgen.LecunUniform(seed=123), seed=8)
    for name, tensor in model.state_dict().items():
        assert same_bytes(tensor, expected[name]), name
