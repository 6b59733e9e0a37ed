"""PyTorch's presets equal ``torch.nn.init`` with its default arguments.

``kaiming_normal``, ``kaiming_uniform``, ``xavier_normal`` and
``xavier_uniform`` must use the very stddev / bound doubles that torch passes
to ``Tensor.normal_`` / ``Tensor.uniform_``: they are captured here from the
real torch functions (their sampling calls are intercepted), not recomputed
from a formula. Fans come from ``torch.nn.init._calculate_fan_in_and_fan_out``
on real tensors; the distributions are compared with torch's own samples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli

torch = pytest.importorskip("torch")
init = torch.nn.init

SHAPES = [(64, 3, 7, 7), (256, 512), (10, 10), (1000, 3, 3, 3), (7, 13, 5), (1, 1), (3, 2049)]
TORCH_FUNCTIONS = {
    "kaiming_normal": init.kaiming_normal_,
    "kaiming_uniform": init.kaiming_uniform_,
    "xavier_normal": init.xavier_normal_,
    "xavier_uniform": init.xavier_uniform_,
}


def torch_parameter(name: str, shape: tuple[int, ...]) -> float:
    """The std (normal) or bound (uniform) torch's function passes to its sampler."""
    captured: list[float] = []

    def normal_(self, mean=0.0, std=1.0, *args, **kwargs):
        captured.append(std)
        return self

    def uniform_(self, low=0.0, high=1.0, *args, **kwargs):
        assert low == -high
        captured.append(high)
        return self

    tensor = torch.empty(shape)
    original = torch.Tensor.normal_, torch.Tensor.uniform_
    torch.Tensor.normal_, torch.Tensor.uniform_ = normal_, uniform_
    try:
        TORCH_FUNCTIONS[name](tensor)
    finally:
        torch.Tensor.normal_, torch.Tensor.uniform_ = original
    assert len(captured) == 1
    return float(captured[0])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(TORCH_FUNCTIONS))
def test_stddev_and_limit_equal_torch_to_the_last_bit(name, shape):
    scaling = vsgen.get_preset(name)(seed=0).scaling(shape)
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert (scaling.fan_in, scaling.fan_out) == (fan_in, fan_out)
    expected = torch_parameter(name, shape)
    if name.endswith("uniform"):
        assert scaling.distribution == "uniform"
        assert scaling.limit == expected  # exact: the same double
    else:
        assert scaling.distribution == "untruncated_normal"
        assert scaling.stddev == expected


def test_torch_formula_differs_from_keras_order_somewhere():
    """Why the presets compute the parameters torch's way: sqrt(2 / fan) (Keras'
    order) and sqrt(2) / sqrt(fan) (torch's) are not always the same double."""
    keras_order = vsgen.VarianceScaling(2.0, distribution="untruncated_normal", layout="torch")
    differ = [
        fan
        for fan in range(1, 200)
        if keras_order.scaling((4, fan)).stddev != torch_parameter("kaiming_normal", (4, fan))
    ]
    assert differ, "Keras' order would already match torch bit for bit"
    for fan in differ:
        stddev = vsgen.KaimingNormal(seed=0).scaling((4, fan)).stddev
        assert stddev == torch_parameter("kaiming_normal", (4, fan))


@pytest.mark.parametrize("name", list(TORCH_FUNCTIONS))
def test_values_follow_torch_distribution(name):
    """Same distribution as torch's own samples (two-sample KS, fixed seeds)."""
    from scipy import stats

    shape = (512, 256, 3, 3)
    ours = vsgen.get_preset(name)(seed=11).sample(shape).astype(np.float64).ravel()
    generator = torch.Generator().manual_seed(11)
    theirs_tensor = torch.empty(shape)
    TORCH_FUNCTIONS[name](theirs_tensor, generator=generator)
    theirs = theirs_tensor.numpy().astype(np.float64).ravel()
    step = 7  # about 170k values from each side
    result = stats.ks_2samp(ours[::step], theirs[::step])
    assert result.pvalue > 1e-3, result
    expected = torch_parameter(name, shape)
    std = expected / math.sqrt(3.0) if name.endswith("uniform") else expected
    assert abs(ours.std() - std) < 0.01 * std
    if name.endswith("uniform"):
        assert np.abs(ours).max() < expected


def test_presets_use_torch_layout_by_default_and_load_into_a_module(tmp_path):
    from safetensors.torch import load_file

    conv = torch.nn.Conv2d(3, 64, 7, bias=False)
    target = tmp_path / "conv.safetensors"
    args = ["sample", "--shape", "64,3,7,7", "--preset", "kaiming_uniform", "--seed", "5"]
    result = CliRunner().invoke(cli, [*args, "--name", "weight", "-o", str(target)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # (out, in, kH, kW) is no channels-last lookalike
    state = load_file(str(target))
    conv.load_state_dict(state, strict=True)
    bound = torch_parameter("kaiming_uniform", (64, 3, 7, 7))
    assert conv.weight.abs().max().item() < bound


@pytest.mark.parametrize("name", list(TORCH_FUNCTIONS))
def test_presets_round_trip_through_configs_and_files(tmp_path, name):
    preset = vsgen.get_preset(name)(seed=3)
    config = preset.get_config()
    assert config["preset"] == name and config["layout"] == "torch"
    rebuilt = vsgen.VarianceScaling.from_config(config)
    assert type(rebuilt) is type(preset) and rebuilt == preset
    assert vsgen.deserialize(config) == preset
    # A file's record regenerates the same bytes with the same torch-exact parameter.
    runner = CliRunner()
    source, copy = tmp_path / "w.safetensors", tmp_path / "copy.npy"
    args = ["sample", "--shape", "33,17,3", "--preset", name, "--seed", "3", "-o", str(source)]
    assert runner.invoke(cli, args).exit_code == 0
    again = runner.invoke(cli, ["sample", "--config-from", str(source), "-o", str(copy)])
    assert again.exit_code == 0, again.stderr
    from safetensors.numpy import load_file

    assert np.load(copy).tobytes() == load_file(str(source))["weight"].tobytes()
    assert np.load(copy).tobytes() == preset.sample((33, 17, 3)).tobytes()


def test_describe_shows_torch_parameters():
    result = CliRunner().invoke(
        cli, ["describe", "--shape", "64,3,7,7", "--preset", "kaiming_normal", "--json"]
    )
    assert result.exit_code == 0
    import json

    info = json.loads(result.stdout)
    assert info["layout"] == "torch" and info["fan_in"] == 3 * 7 * 7
    assert info["stddev"] == torch_parameter("kaiming_normal", (64, 3, 7, 7))
    assert info["distribution"] == "untruncated_normal" and info["bound"] is None


def test_python_names():
    assert vsgen.get_preset("kaiming_normal") is vsgen.KaimingNormal
    assert vsgen.get_preset("KaimingUniform") is vsgen.KaimingUniform
    assert vsgen.get_preset("xavier-normal_") is vsgen.XavierNormal
    assert vsgen.get_preset("XAVIER_UNIFORM") is vsgen.XavierUniform
    assert vsgen.get_preset("glorot_normal") is vsgen.GlorotNormal  # Keras' stays Keras'
    with pytest.raises(ValueError, match="preset"):
        vsgen.get_preset("xavier")


@pytest.mark.parametrize(
    ("layout_line", "layout"), [("", "torch"), ('layout = "keras"\n', "keras")]
)
def test_spec_files_keep_the_torch_layout_unless_told(tmp_path, layout_line, layout):
    import json

    from safetensors import safe_open

    spec = tmp_path / "m.toml"
    spec.write_text(f'seed = 1\n{layout_line}init = "kaiming_normal"\n[tensors]\n"w" = [8, 4]\n')
    target = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, ["sample", "--spec", str(spec), "-o", str(target)])
    assert result.exit_code == 0, result.stderr
    with safe_open(str(target), "np") as handle:
        record = json.loads(handle.metadata()["vsgen"])["tensors"]["w"]
    assert record["layout"] == layout
    fans = (4, 8) if layout == "torch" else (8, 4)
    assert (record["fan_in"], record["fan_out"]) == fans
