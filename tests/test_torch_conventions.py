"""``vsgen.torch`` conventions on real torch modules.

* ``"vsgen"`` (default): decided by the owning module's type; every tensor that
  is not a weight, bias or norm keeps the module's value, exactly.
* ``"torch"``: what each module's own ``reset_parameters()`` draws, with torch's
  own reset as the oracle: two-sample Kolmogorov-Smirnov tests between torch's
  samples (``torch.manual_seed``) and vsgen's (fixed seeds, values pooled over
  seeds so that every tensor has thousands of values; alpha = 1e-3), the
  bounds of uniform draws, and exact equality for constants and kept values.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy import stats

import vsgen

torch = pytest.importorskip("torch")
import vsgen.torch  # noqa: E402  (after the skip: the adapter needs torch)
from vsgen.modelspec import plan_table  # noqa: E402

nn = torch.nn
pytestmark = pytest.mark.required_in_ci


def independent_seed(global_seed: int, name: str) -> int:
    digest = hashlib.sha256(global_seed.to_bytes(8, "little") + name.encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**53


def values(tensor) -> np.ndarray:
    return tensor.detach().double().numpy().reshape(-1)


# --- the vsgen convention: by module type ---------------------------------------------------


class CausalSelfAttention(nn.Module):
    """GPT-2's attention: a float causal mask ``bias`` (1x1xTxT) and ``masked_bias``."""

    def __init__(self, width: int, context: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        mask = torch.tril(torch.ones(context, context)).view(1, 1, context, context)
        self.register_buffer("bias", mask)
        self.register_buffer("masked_bias", torch.tensor(-1e4))


class LayerScaleBlock(nn.Module):
    """ConvNeXt's block: a depthwise conv, a norm, a PReLU and a layer scale gamma = 1e-6."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.act = nn.PReLU()
        self.gamma = nn.Parameter(1e-6 * torch.ones(channels))


class Zoo(nn.Module):
    """Every kind of tensor a real model has, with the values the issue saw changed."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(64, 16, padding_idx=1)
        self.attn = CausalSelfAttention(16, 8)
        self.ln_f = nn.LayerNorm(16)
        self.block = LayerScaleBlock(8)
        self.bn = nn.BatchNorm2d(8)
        self.rnn = nn.GRU(16, 12)
        self.mha = nn.MultiheadAttention(16, 2)
        self.bilinear = nn.Bilinear(4, 6, 5)
        self.deconv = nn.ConvTranspose2d(8, 4, 2)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))  # CLIP
        self.register_buffer("window", torch.hann_window(32))
        mel = torch.linspace(0, 1, 10 * 17).reshape(10, 17)  # a mel filterbank
        self.register_buffer("mel_filters", mel)
        self.register_buffer("pad_mask", torch.rand(6, 6) > 0.5)
        self.register_buffer("position_ids", torch.arange(12).unsqueeze(0))


KEPT = {
    "attn.bias",
    "attn.masked_bias",
    "block.gamma",
    "block.act.weight",
    "logit_scale",
    "window",
    "mel_filters",
    "pad_mask",
    "position_ids",
    "bn.num_batches_tracked",
}
DRAWN = {
    "wte.weight": "Embedding",
    "attn.c_attn.weight": "Linear",
    "attn.c_proj.weight": "Linear",
    "block.dwconv.weight": "Conv2d",
    "rnn.weight_ih_l0": "GRU",
    "rnn.weight_hh_l0": "GRU",
    "mha.in_proj_weight": "MultiheadAttention",
    "mha.out_proj.weight": "NonDynamicallyQuantizableLinear",
    "bilinear.weight": "Bilinear",
    "deconv.weight": "ConvTranspose2d",
}


def trained_zoo() -> Zoo:
    torch.manual_seed(0)
    model = Zoo()
    model.train()
    for _ in range(4):  # running statistics move; num_batches_tracked becomes 4
        model.bn(torch.randn(3, 8, 5, 5))
    return model


def test_vsgen_keeps_every_tensor_that_is_not_a_weight_bias_or_norm():
    model = trained_zoo()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    job = vsgen.torch.init_(model, "he_normal", seed=5)
    rows = {row.name: row for row in job.rows}
    after = model.state_dict()
    assert {name for name, row in rows.items() if row.kind == "copy"} == KEPT
    for name in KEPT:
        assert rows[name].init == "kept" and rows[name].values_text() == "module's values"
        assert torch.equal(after[name], before[name]), name  # exactly, dtype included
    # the values the issue saw changed
    assert after["logit_scale"].item() == pytest.approx(math.log(1 / 0.07))
    assert torch.equal(after["block.gamma"], torch.full((8,), 1e-6))
    assert after["block.act.weight"].item() == 0.25
    assert after["bn.num_batches_tracked"].item() == 4
    assert after["attn.bias"].dtype == torch.float32 and after["attn.bias"].shape == (1, 1, 8, 8)

    for name, module_type in DRAWN.items():
        row = rows[name]
        assert (row.init, row.origin) == ("he_normal", "default"), name
        assert row.reason.startswith(module_type), (name, row.reason)
        shape = tuple(after[name].shape)
        fan_in = shape[1] * math.prod(shape[2:])  # PyTorch's layout, from the shape itself
        assert row.fan_in == fan_in and row.stddev == pytest.approx(math.sqrt(2 / fan_in))
        expected = vsgen.HeNormal(seed=independent_seed(5, name), layout="torch")(shape)
        if name == "wte.weight":
            expected[1] = 0.0  # the padding row
        np.testing.assert_array_equal(after[name].numpy(), expected, err_msg=name)

    # norms and biases
    for name in ("ln_f.weight", "block.norm.weight", "bn.weight", "bn.running_var"):
        assert torch.equal(after[name], torch.ones_like(after[name])), name
    for name in ("ln_f.bias", "bn.bias", "bn.running_mean", "attn.c_attn.bias", "rnn.bias_ih_l0"):
        assert not after[name].any(), name
    for name in ("mha.in_proj_bias", "bilinear.bias", "deconv.bias", "block.dwconv.bias"):
        assert not after[name].any(), name


def test_the_plan_lists_kept_tensors_by_name_even_when_summarised():
    job = vsgen.torch.plan(trained_zoo(), seed=0)
    lines = plan_table(job.rows, max_rows=5)
    text = "\n".join(lines)
    assert lines[0].split()[:2] == ["tensors", "values"]
    for name in KEPT:
        assert name in text, name
    # the GPT-2 mask is not folded into the weights' group
    default_group = next(line for line in lines if "default" in line and "Linear" in line)
    assert "attn.bias" not in default_group


def test_a_rule_overrides_the_convention():
    model = trained_zoo()
    job = vsgen.torch.init_(
        model, seed=2, rules={"logit_scale": {"constant": 2.5}, "attn.bias": "zeros"}
    )
    rows = {row.name: row for row in job.rows}
    assert model.logit_scale.item() == 2.5 and not model.attn.bias.any()
    assert rows["logit_scale"].origin == "rule logit_scale"
    # a rule on an embedding replaces everything, the padding row included
    vsgen.torch.init_(model, seed=2, rules={"wte.weight": {"random_normal": 1.0}})
    assert model.wte.weight[1].abs().sum() > 0


def test_rnn_cells_lstm_projections_and_separate_attention_projections():
    model = nn.Module()
    model.cell = nn.LSTMCell(6, 10)
    model.lstm = nn.LSTM(6, 10, num_layers=2, bidirectional=True, proj_size=4)
    model.mha = nn.MultiheadAttention(16, 2, kdim=8, vdim=12, add_bias_kv=True)
    rows = {row.name: row for row in vsgen.torch.plan(model, seed=0).rows}
    drawn = [name for name, row in rows.items() if row.origin == "default"]
    assert set(drawn) == {
        "cell.weight_ih",
        "cell.weight_hh",
        *(
            f"lstm.weight_{kind}_l{layer}{suffix}"
            for kind in ("ih", "hh", "hr")
            for layer in (0, 1)
            for suffix in ("", "_reverse")
        ),
        "mha.q_proj_weight",
        "mha.k_proj_weight",
        "mha.v_proj_weight",
        "mha.bias_k",
        "mha.bias_v",
        "mha.out_proj.weight",
    }
    biases = [
        row for name, row in rows.items() if name.split(".")[-1].startswith(("bias_i", "bias_h"))
    ]
    biases += [rows["mha.in_proj_bias"], rows["mha.out_proj.bias"]]
    assert len(biases) == 2 + 8 + 2 and all(row.init == "zeros" for row in biases)
    assert not [row for row in rows.values() if row.kind == "copy"]


# --- the torch convention: torch's own reset_parameters as the oracle ---------------------


def batch_norm_after_training() -> nn.Module:
    module = nn.BatchNorm2d(12)
    module.train()
    for _ in range(5):
        module(torch.randn(4, 12, 3, 3) * 3 + 1)
    assert module.num_batches_tracked.item() == 5
    return module


class CustomReset(nn.Module):
    """A module with its own reset_parameters, rank-0/rank-1 parameters no reset
    touches, and float, bool and int buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(40, 30))
        self.offset = nn.Parameter(torch.empty(30))
        self.scale = nn.Parameter(torch.empty(()))
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # rank 0, never reset
        self.layer_scale = nn.Parameter(torch.full((30,), 1e-6))  # rank 1, never reset
        self.register_buffer("window", torch.hann_window(16))
        self.register_buffer("mask", torch.ones(5, 5, dtype=torch.bool).triu())
        self.register_buffer("steps", torch.tensor([3, 1, 4], dtype=torch.int32))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.5, std=0.02)
        self.offset.data.uniform_(-0.1, 0.3)
        with torch.no_grad():
            self.scale.fill_(1e-6)
            self.weight[3] = -1.0  # one row set through an index


ZOO = {
    "linear": lambda: nn.Linear(300, 200),
    "conv1d": lambda: nn.Conv1d(16, 32, 5),
    "conv2d": lambda: nn.Conv2d(8, 32, 3),
    "conv3d": lambda: nn.Conv3d(4, 16, 3),
    "conv2d_channels_last": lambda: nn.Conv2d(8, 32, 3).to(memory_format=torch.channels_last),
    "conv_transpose2d": lambda: nn.ConvTranspose2d(16, 8, 4),
    "embedding": lambda: nn.Embedding(500, 64, padding_idx=3),
    "layer_norm": lambda: nn.LayerNorm(64),
    "group_norm": lambda: nn.GroupNorm(4, 32),
    "batch_norm_trained": batch_norm_after_training,
    "multihead_attention": lambda: nn.MultiheadAttention(64, 4),
    "multihead_attention_kv": lambda: nn.MultiheadAttention(
        32, 4, kdim=24, vdim=40, add_bias_kv=True
    ),
    "lstm": lambda: nn.LSTM(24, 32, num_layers=2, bidirectional=True, proj_size=16),
    "gru": lambda: nn.GRU(24, 32),
    "rnn_cell": lambda: nn.RNNCell(10, 20),
    "prelu": lambda: nn.PReLU(8, init=0.3),
    "bilinear": lambda: nn.Bilinear(20, 30, 40),
    "rms_norm": lambda: nn.RMSNorm(48),
    "custom": CustomReset,
}
#: Values per tensor the pooled samples reach at least.
POOLED = 6000
ALPHA = 1e-3


def torch_reset(make, seed: int) -> dict:
    """torch's own values: reset_parameters (or _reset_parameters) of a fresh module."""
    module = make()
    torch.manual_seed(seed)
    for sub in reversed(list(module.modules())):  # children first
        reset = getattr(sub, "reset_parameters", None) or getattr(sub, "_reset_parameters", None)
        if reset is not None:
            reset()
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def vsgen_reset(make, seed: int) -> tuple[dict, list]:
    module = make()
    job = vsgen.torch.init_(module, seed=seed, convention="torch")
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}, job.rows


@pytest.mark.parametrize("kind", sorted(ZOO))
def test_the_torch_convention_draws_what_reset_parameters_draws(kind):
    make = ZOO[kind]
    reference = torch_reset(make, 0)
    ours, rows = vsgen_reset(make, 0)
    assert set(ours) == set(reference)
    rows_by_name = {row.name: row for row in rows}
    smallest = min((t.numel() for t in reference.values() if t.is_floating_point()), default=1)
    seeds = max(1, math.ceil(POOLED / max(smallest, 1)))
    torch_pool = {name: [values(t)] for name, t in reference.items()}
    our_pool = {name: [values(t)] for name, t in ours.items()}
    for seed in range(1, min(seeds, 60)):
        for name, tensor in torch_reset(make, seed).items():
            torch_pool[name].append(values(tensor))
        for name, tensor in vsgen_reset(make, seed)[0].items():
            our_pool[name].append(values(tensor))
    for name, expected in reference.items():
        got = ours[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        theirs = np.concatenate(torch_pool[name])
        mine = np.concatenate(our_pool[name])
        if np.all(theirs == theirs[0]) or not expected.is_floating_point():
            # constants and kept values: exactly torch's
            assert torch.equal(got, expected), (kind, name)
            continue
        row = rows_by_name[name]
        assert row.origin == "convention torch", (name, row.origin)
        p_value = stats.ks_2samp(theirs, mine).pvalue
        assert p_value > ALPHA, (kind, name, p_value, row.init)
        if row.distribution == "uniform":
            # the range is the one torch computes: no value of torch's outside it
            centre = row.mean or 0.0
            low, high = centre - row.bound, centre + row.bound
            slack = 1e-7 * row.bound
            assert low - slack <= theirs.min() and theirs.max() <= high + slack, (name, low, high)
            assert low <= mine.min() and mine.max() < high, (name, low, high)
            assert mine.max() - mine.min() > 0.98 * (high - low)


def test_torch_convention_constants_and_padding_rows_exactly():
    embedding, rows = vsgen_reset(ZOO["embedding"], 3)
    assert not embedding["weight"][3].any() and embedding["weight"][4].abs().sum() > 0
    assert {row.name: row for row in rows}["weight"].set_rows == ((3, 0.0),)
    norm, _ = vsgen_reset(batch_norm_after_training, 3)
    assert torch.equal(norm["running_mean"], torch.zeros(12))
    assert torch.equal(norm["running_var"], torch.ones(12))
    assert (
        norm["num_batches_tracked"].item() == 0 and norm["num_batches_tracked"].dtype == torch.int64
    )
    prelu, rows = vsgen_reset(ZOO["prelu"], 3)
    assert torch.equal(prelu["weight"], torch.full((8,), 0.3))
    assert rows[0].origin_text() == "convention torch: PReLU.reset_parameters"
    attention, _ = vsgen_reset(ZOO["multihead_attention_kv"], 3)
    assert not attention["in_proj_bias"].any() and not attention["out_proj.bias"].any()
    custom, rows = vsgen_reset(CustomReset, 3)
    reasons = {row.name: row.origin_text() for row in rows}
    assert reasons["logit_scale"] == "convention torch: no reset sets it"
    assert custom["scale"].item() == pytest.approx(1e-6, rel=1e-7)
    assert torch.equal(custom["weight"][3], torch.full((30,), -1.0))
    reference = CustomReset()
    for name in ("logit_scale", "layer_scale", "window", "mask", "steps"):
        assert torch.equal(custom[name], reference.state_dict()[name]), name


def test_transformer_resets_its_children_with_xavier_uniform():
    """nn.Transformer's _reset_parameters runs after its children's resets and
    redraws every matrix with xavier_uniform_: the parent's wins, as in torch."""
    model = nn.Transformer(16, 2, 1, 1, 32, batch_first=True)
    rows = {row.name: row for row in vsgen.torch.plan(model, seed=0, convention="torch").rows}
    linear = rows["encoder.layers.0.linear1.weight"]
    assert linear.reason == "Transformer._reset_parameters"
    assert linear.bound == pytest.approx(math.sqrt(6 / (16 + 32)), rel=1e-12)
    bias = rows["encoder.layers.0.linear1.bias"]  # rank 1: left to Linear's reset
    assert bias.reason == "Linear.reset_parameters" and bias.bound == pytest.approx(0.25)


class Unreproducible(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, 10, 8))
        self.rotation = nn.Parameter(torch.empty(8, 8))
        self.scaled = nn.Parameter(torch.empty(8, 8))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # cut at +-2 (100 stddevs)
        nn.init.orthogonal_(self.rotation)
        nn.init.normal_(self.scaled)
        with torch.no_grad():
            self.scaled.mul_(0.5)


def test_what_the_recorder_cannot_reproduce_is_kept_and_said():
    model = Unreproducible()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    job = vsgen.torch.init_(model, seed=0, convention="torch")
    rows = {row.name: row for row in job.rows}
    for name, tensor in model.state_dict().items():
        assert rows[name].init == "kept", name
        assert "not reproducible" in rows[name].reason, rows[name].reason
        assert torch.equal(tensor, before[name]), name
    assert "mul_" in rows["scaled"].reason
    # torch.nn.init's trunc_normal_ and orthogonal_ do nothing on the meta device
    assert "skips meta tensors" in rows["pos_embed"].reason
    assert "Unreproducible.reset_parameters" in rows["rotation"].reason


def dispatched(function, tensor, **arguments):
    """``function(tensor, **arguments)`` reaching the recorder whole, as torch.nn.init's
    functions that check ``has_torch_function`` do (kaiming_uniform_ in torch 2.x;
    others in other versions)."""
    return torch.overrides.handle_torch_function(function, (tensor,), tensor=tensor, **arguments)


def test_init_functions_that_reach_the_recorder_whole():
    model = nn.Module()
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        model.register_parameter(name, nn.Parameter(torch.empty(30, 20)))

    def run(copy: nn.Module) -> None:
        init = nn.init
        dispatched(init.trunc_normal_, copy.a, mean=0.5, std=0.02, a=0.46, b=0.54)
        dispatched(init.trunc_normal_, copy.b, mean=0.0, std=0.02, a=-2.0, b=2.0)
        dispatched(init.kaiming_normal_, copy.c, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
        dispatched(init.xavier_normal_, copy.d, gain=2.0)
        dispatched(init.ones_, copy.e)
        dispatched(init.orthogonal_, copy.f)
        dispatched(init.normal_, copy.g, mean=1.0, std=0.0)

    choices = vsgen.torch.record_init(model, run)
    assert choices["a"].init.label() == "truncated_normal(mean=0.5, stddev=0.02)"
    assert choices["b"].keeps and "trunc_normal_(std=0.02, a=-2, b=2)" in choices["b"].reason
    assert choices["c"].init.label() == "kaiming_normal(a=0.1, mode=fan_out)"
    assert choices["d"].init.label() == "xavier_normal(gain=2)"
    assert choices["e"].init.constant == 1.0
    assert choices["f"].keeps and "orthogonal_" in choices["f"].reason
    assert choices["g"].init.constant == 1.0


def test_init_functions_bound_in_torch_nn_init_by_wrappers_are_recorded(monkeypatch):
    """A framework may bind wrappers of torch.nn.init's functions under their names
    while it initialises (transformers does); torch.nn.init dispatches the name's
    current function, which the recorder must know by its name."""
    original = nn.init.normal_

    def normal_(tensor, mean=0.0, std=1.0, generator=None):
        return original(tensor, mean=mean, std=std, generator=generator)

    model = nn.Linear(20, 30)

    def run(copy: nn.Module) -> None:
        monkeypatch.setattr(nn.init, "normal_", normal_)
        try:
            normal_(copy.weight, std=0.25)
            normal_(copy.bias, std=0.5)
        finally:
            monkeypatch.setattr(nn.init, "normal_", original)
        # an in-place function of someone else's, given its tensor by keyword
        torch.overrides.handle_torch_function(scale_, (copy.bias,), tensor=copy.bias)

    def scale_(tensor):
        return tensor.mul_(2.0)

    choices = vsgen.torch.record_init(model, run)
    assert choices["weight"].init.label() == "random_normal(stddev=0.25)"
    assert choices["bias"].keeps and "scale_" in choices["bias"].reason


def test_record_init_runs_any_function_on_a_meta_copy():
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    pointer = model[0].weight.data_ptr()
    before = model[0].weight.clone()

    def init_weights(copy: nn.Module) -> None:
        for module in copy.modules():
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(mean=0.0, std=0.02)
                module.bias.data.zero_()

    choices = vsgen.torch.record_init(model, init_weights, origin="convention test")
    assert choices["0.weight"].init.label() == "random_normal(stddev=0.02)"
    assert choices["1.bias"].init.constant == 0.0
    assert choices["1.bias"].origin == "convention test"
    # the module itself is never touched
    assert model[0].weight.data_ptr() == pointer and torch.equal(model[0].weight, before)


def test_the_meta_copy_holds_no_copy_of_the_values():
    model = nn.Linear(2000, 2000)  # 16 MB
    model.cache = torch.ones(1000)  # a plain tensor attribute
    pointer = model.weight.data_ptr()
    copied = vsgen._torch_record._meta_copy(model)
    assert copied is not model and copied.weight is not model.weight
    assert copied.weight.is_meta and copied.bias.is_meta and copied.cache.is_meta
    assert isinstance(copied.weight, nn.Parameter) and copied.weight.requires_grad
    assert model.weight.data_ptr() == pointer and not model.weight.is_meta
