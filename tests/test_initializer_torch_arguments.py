"""PyTorch's init arguments: ``KaimingNormal(a, mode, nonlinearity)``,
``KaimingUniform(...)``, ``XavierNormal(gain)``, ``XavierUniform(gain)``.

References are the real torch functions: the std or bound they pass to
``Tensor.normal_``/``uniform_`` (captured by intercepting those calls, not
recomputed here), ``torch.nn.init.calculate_gain`` itself, torch's errors and
warnings, and torch's own samples (two-sample KS with fixed seeds).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen import modelspec
from vsgen.cli import cli

torch = pytest.importorskip("torch")
init = torch.nn.init

pytestmark = pytest.mark.required_in_ci

SHAPES = [(64, 3, 7, 7), (256, 512), (10, 10), (7, 13, 5), (1, 1), (3, 2049), (2, 1, 4, 4, 4)]
NONLINEARITIES = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]
SLOPES = [0, 0.0, 0.01, 0.2, 5**0.5, -0.3, 3]
FUNCTIONS = {
    "KaimingNormal": init.kaiming_normal_,
    "KaimingUniform": init.kaiming_uniform_,
    "XavierNormal": init.xavier_normal_,
    "XavierUniform": init.xavier_uniform_,
}


def torch_parameter(function, shape, **kwargs) -> float:
    """The std (normal) or bound (uniform) ``function`` passes to its sampler."""
    captured: list[float] = []

    def normal_(self, mean=0.0, std=1.0, *args, **kw):
        captured.append(std)
        return self

    def uniform_(self, low=0.0, high=1.0, *args, **kw):
        assert low == -high
        captured.append(high)
        return self

    tensor = torch.empty(shape)
    original = torch.Tensor.normal_, torch.Tensor.uniform_
    torch.Tensor.normal_, torch.Tensor.uniform_ = normal_, uniform_
    try:
        function(tensor, **kwargs)
    finally:
        torch.Tensor.normal_, torch.Tensor.uniform_ = original
    assert len(captured) == 1
    return float(captured[0])


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_calculate_gain_is_torchs(nonlinearity):
    for slope in (None, *SLOPES):
        assert vsgen.calculate_gain(nonlinearity, slope) == init.calculate_gain(nonlinearity, slope)


def test_calculate_gain_errors_like_torch():
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="Argument `nonlinearity` must be one of"):
        vsgen.calculate_gain("gelu")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)
    with pytest.raises(TypeError, match="Argument `a`"):
        vsgen.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("cls", ["KaimingNormal", "KaimingUniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity", ["leaky_relu", "relu", "tanh", "linear", "selu"])
def test_kaiming_parameters_equal_torch_to_the_last_bit(cls, mode, nonlinearity):
    for shape in SHAPES:
        for a in SLOPES:
            ours = getattr(vsgen, cls)(seed=0, a=a, mode=mode, nonlinearity=nonlinearity)
            expected = torch_parameter(
                FUNCTIONS[cls], shape, a=a, mode=mode, nonlinearity=nonlinearity
            )
            scaling = ours.scaling(shape)
            plan = ours.plan(shape)
            got = scaling.limit if cls.endswith("Uniform") else scaling.stddev
            assert got == expected, (shape, a)
            assert plan.draw.multiplier == expected  # what the stream draws with
            fan_in, fan_out = init._calculate_fan_in_and_fan_out(torch.empty(shape))
            assert (scaling.fan_in, scaling.fan_out) == (fan_in, fan_out)


@pytest.mark.parametrize("cls", ["XavierNormal", "XavierUniform"])
@pytest.mark.parametrize("gain", [1.0, 0.5, 2**0.5, 5.0 / 3, 0.75, 3, 1e-3])
def test_xavier_parameters_equal_torch_to_the_last_bit(cls, gain):
    for shape in SHAPES:
        ours = getattr(vsgen, cls)(seed=0, gain=gain)
        expected = torch_parameter(FUNCTIONS[cls], shape, gain=gain)
        scaling = ours.scaling(shape)
        got = scaling.limit if cls.endswith("Uniform") else scaling.stddev
        assert got == expected
        assert ours.plan(shape).draw.multiplier == expected


def test_defaults_are_the_presets_of_before():
    # The default arguments keep the configs (and so the records and bytes) of
    # the argument-free presets: scale 2 / 1, no torch keys.
    assert vsgen.KaimingNormal(seed=1).get_config() == {
        "scale": 2.0,
        "mode": "fan_in",
        "distribution": "untruncated_normal",
        "seed": 1,
        "preset": "kaiming_normal",
        "layout": "torch",
    }
    assert vsgen.XavierUniform(seed=1).get_config()["scale"] == 1.0
    assert "gain" not in vsgen.XavierUniform(seed=1, gain=1).get_config()
    explicit = vsgen.KaimingNormal(seed=4, a=0, mode="fan_in", nonlinearity="leaky_relu")
    assert explicit((20, 30)).tobytes() == vsgen.KaimingNormal(seed=4)((20, 30)).tobytes()


@pytest.mark.parametrize(
    "preset",
    [
        vsgen.KaimingUniform(seed=3, a=5**0.5),
        vsgen.KaimingNormal(seed=3, mode="FAN_OUT", nonlinearity="relu"),
        vsgen.KaimingNormal(seed=3, a=0.2, nonlinearity="leaky_relu", layout="keras"),
        vsgen.XavierNormal(seed=3, gain=5.0 / 3),
    ],
    ids=["a", "mode-relu", "slope-keras-layout", "gain"],
)
def test_configs_and_files_round_trip(preset, tmp_path):
    config = preset.get_config()
    assert json.loads(json.dumps(config)) == config
    assert vsgen.deserialize(config) == preset
    assert vsgen.VarianceScaling.from_config(config) == preset
    assert type(preset).from_config(config) == preset
    keras_form = {"class_name": type(preset).__name__, "config": dict(preset.torch_arguments)}
    assert vsgen.deserialize(keras_form).torch_arguments == preset.torch_arguments
    source, copy = tmp_path / "w.safetensors", tmp_path / "copy.npy"
    args = ["sample", "--shape", "33,17,3", "--config", "-", "-o", str(source)]
    runner = CliRunner()
    assert runner.invoke(cli, args, input=json.dumps(config)).exit_code == 0
    again = runner.invoke(cli, ["sample", "--config-from", str(source), "-o", str(copy)])
    assert again.exit_code == 0, again.stderr
    assert np.load(copy).tobytes() == preset((33, 17, 3)).tobytes()
    report = runner.invoke(cli, ["check", str(source)])
    assert report.exit_code == 0, report.stdout


def test_rank_below_two_is_refused_as_torch_does():
    for cls in FUNCTIONS:
        with pytest.raises(ValueError, match="fewer than 2 dimensions"):
            FUNCTIONS[cls](torch.empty(5))
        for shape in [(5,), ()]:
            with pytest.raises(ValueError, match="Fan in and fan out can not be computed"):
                getattr(vsgen, cls)(seed=0)(shape)
    # A rule forcing a PyTorch preset onto a bias names the tensor.
    spec = {"rules": {"*": "kaiming_uniform"}, "tensors": {"fc.bias": [8]}}
    with pytest.raises(ValueError, match="fc.bias.*fewer than 2 dimensions"):
        modelspec.build_job(modelspec.parse_spec(spec), seed=0)


def test_zero_elements_warn_as_torch_does():
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        init.kaiming_normal_(torch.empty(0, 4))
    for cls in FUNCTIONS:
        for shape in [(0, 4), (3, 0, 2), (0,)]:
            with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
                values = getattr(vsgen, cls)(seed=0)(shape)
            assert values.shape == shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vsgen.KaimingNormal(seed=0)((2, 2))


def test_argument_errors():
    with pytest.raises(ValueError, match="Argument `mode` must be fan_in or fan_out"):
        vsgen.KaimingNormal(mode="fan_avg")
    with pytest.raises(ValueError, match="Argument `nonlinearity` must be one of"):
        vsgen.KaimingUniform(nonlinearity="gelu")
    with pytest.raises(TypeError, match="Argument `a`"):
        vsgen.KaimingUniform(a="0.2")
    with pytest.raises(ValueError, match="Argument `gain` must be a positive"):
        vsgen.XavierNormal(gain=0)
    with pytest.raises(TypeError, match="unexpected keyword argument.*'gain'"):
        vsgen.KaimingNormal(gain=2.0)
    with pytest.raises(TypeError, match="unexpected keyword argument.*'a'"):
        vsgen.XavierNormal(a=2.0)
    with pytest.raises(ValueError, match="KaimingNormal has scale=2.0; the config says 3.0"):
        vsgen.KaimingNormal.from_config({"scale": 3.0})


CASES = [
    ("KaimingNormal", {"a": 0.2, "mode": "fan_out"}, (512, 256, 3, 3)),
    ("KaimingUniform", {"a": 5**0.5}, (512, 1024)),
    ("KaimingNormal", {"nonlinearity": "tanh"}, (2048, 300)),
    ("XavierNormal", {"gain": 2.5}, (300, 700)),
    ("XavierUniform", {"gain": 0.5}, (64, 32, 5, 5)),
]


@pytest.mark.parametrize(("cls", "kwargs", "shape"), CASES)
def test_values_follow_torchs_own_samples(cls, kwargs, shape):
    """Two-sample KS against torch's own samplers with the same arguments."""
    from scipy import stats

    ours = getattr(vsgen, cls)(seed=11, **kwargs)(shape).astype(np.float64).ravel()
    tensor = torch.empty(shape)
    FUNCTIONS[cls](tensor, generator=torch.Generator().manual_seed(11), **kwargs)
    theirs = tensor.numpy().astype(np.float64).ravel()
    step = max(1, ours.size // 150_000)
    assert stats.ks_2samp(ours[::step], theirs[::step]).pvalue > 1e-3
    parameter = torch_parameter(FUNCTIONS[cls], shape, **kwargs)
    std = parameter / math.sqrt(3.0) if cls.endswith("Uniform") else parameter
    assert abs(ours.std() - std) < 6 * std * math.sqrt(2 / ours.size) + 1e-7 * std
    if cls.endswith("Uniform"):
        assert np.abs(ours).max() < parameter


def test_command_line_takes_torchs_arguments(tmp_path):
    runner = CliRunner()
    out = tmp_path / "w.npy"
    args = ["--preset", "kaiming_normal", "--a", "0.2", "--mode", "fan-out"]
    result = runner.invoke(
        cli,
        [
            "sample",
            "--shape",
            "64,32,3,3",
            *args,
            "--nonlinearity",
            "LEAKY-RELU",
            "--seed",
            "4",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.stderr
    expected = vsgen.KaimingNormal(seed=4, a=0.2, mode="fan_out", nonlinearity="leaky_relu")
    assert np.load(out).tobytes() == expected((64, 32, 3, 3)).tobytes()
    alias = runner.invoke(
        cli,
        [
            "describe",
            "--shape",
            "64,32,3,3",
            "--preset",
            "kaiming_normal",
            "--negative-slope",
            "0.2",
            "--mode",
            "fan_out",
            "--json",
        ],
    )
    info = json.loads(alias.stdout)
    assert info["a"] == 0.2 and info["mode"] == "fan_out" and info["fan_out"] == 64 * 9
    assert info["stddev"] == torch_parameter(
        init.kaiming_normal_, (64, 32, 3, 3), a=0.2, mode="fan_out"
    )
    gain = runner.invoke(
        cli, ["config", "--preset", "xavier_uniform", "--gain", "1.5", "--seed", "2"]
    )
    assert json.loads(gain.stdout)["gain"] == 1.5
    linear = runner.invoke(
        cli,
        ["describe", "--shape", "10,20", "--preset", "kaiming_uniform", "--a", "2.23606797749979"],
    )
    assert "KaimingUniform for shape (10, 20)" in linear.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--preset", "kaiming_normal", "--scale", "2"],
            "Error: --scale does not apply to --preset kaiming_normal; its scale and "
            "distribution are torch's; it takes --a, --mode, --nonlinearity",
        ),
        (
            ["--preset", "xavier_normal", "--mode", "fan_in"],
            "Error: --mode does not apply to --preset xavier_normal; its scale, mode and "
            "distribution are torch's; it takes --gain",
        ),
        (
            ["--preset", "xavier_normal", "--a", "1"],
            "Error: --a does not apply to --preset xavier_normal;",
        ),
        (
            ["--preset", "kaiming_normal", "--gain", "2"],
            "Error: --gain does not apply to --preset kaiming_normal;",
        ),
        (["--preset", "he_normal", "--gain", "2"], "Error: --gain does not apply to --preset"),
        (["--a", "0.2"], "Error: --a does not apply to VarianceScaling (no --preset);"),
        (
            ["--preset", "kaiming_normal", "--mode", "fan_avg"],
            "Error: --mode must be fan_in or fan_out (torch.nn.init's kaiming modes). "
            "Received: --mode='fan_avg'",
        ),
        (
            ["--preset", "kaiming_uniform", "--nonlinearity", "gelu"],
            "Error: --nonlinearity: torch.nn.init.calculate_gain has no gain for 'gelu'; "
            "use one of linear, conv1d,",
        ),
        (["--preset", "xavier_uniform", "--gain", "-1"], "Error: --gain must be a positive"),
    ],
)
@pytest.mark.parametrize("command", ["config", "describe"])
def test_command_line_refusals(command, args, message):
    extra = ["--shape", "4,4"] if command == "describe" else []
    result = CliRunner().invoke(cli, [command, *extra, *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1


def test_specs_and_rules_take_torchs_arguments():
    spec = modelspec.parse_spec(
        {
            "seed": 3,
            "layout": "torch",
            "init": {"preset": "kaiming_uniform", "a": 5**0.5},
            "rules": {
                "head.weight": {"class_name": "XavierNormal", "config": {"gain": 0.5}},
                "out.weight": {
                    "preset": "kaiming_normal",
                    "mode": "fan_out",
                    "nonlinearity": "relu",
                },
            },
            "tensors": {
                "fc.weight": [128, 64],
                "head.weight": [10, 128],
                "out.weight": [32, 16, 3, 3],
            },
        }
    )
    job = modelspec.build_job(spec)
    labels = {row.name: row.init for row in job.rows}
    assert labels == {
        "fc.weight": "kaiming_uniform(a=2.236)",
        "head.weight": "xavier_normal(gain=0.5)",
        "out.weight": "kaiming_normal(mode=fan_out, nonlinearity=relu)",
    }
    bound = torch_parameter(init.kaiming_uniform_, (128, 64), a=5**0.5)
    assert math.isclose(bound, 1 / math.sqrt(64), rel_tol=1e-15)  # nn.Linear's 1/sqrt(fan_in)
    arrays = job.arrays()
    assert np.abs(arrays["fc.weight"]).max() < bound
    assert job.rows[0].bound == bound
    for bad, message in [
        ({"preset": "kaiming_uniform", "scale": 2}, "fixes scale and distribution; drop scale"),
        ({"preset": "xavier_uniform", "mode": "fan_in"}, "fixes scale, mode and distribution"),
        ({"preset": "xavier_uniform", "a": 1}, "takes no a; its arguments: gain"),
        ({"a": 1}, "belong to a preset's table"),
        ({"preset": "kaiming_uniform", "nonlinearity": "gelu"}, "nonlinearity"),
    ]:
        with pytest.raises(ValueError, match=message):
            modelspec.parse_init(bad, "init")


def test_torch_init_takes_keras_forms_tables_and_instances():
    import vsgen.torch

    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 10))
    expected_bound = 1 / math.sqrt(64)
    vsgen.torch.init_(model, {"class_name": "KaimingUniform", "config": {"a": 5**0.5}}, seed=0)
    first = model[0].weight.detach().numpy().copy()
    assert np.abs(first).max() < expected_bound
    vsgen.torch.init_(model, {"preset": "kaiming_uniform", "a": 5**0.5}, seed=0)
    assert np.array_equal(model[0].weight.detach().numpy(), first)
    vsgen.torch.init_(model, vsgen.KaimingUniform(a=5**0.5), seed=0)
    assert np.array_equal(model[0].weight.detach().numpy(), first)
    # nn.Linear's own reset_parameters draws from the same distribution.
    from scipy import stats

    big = torch.nn.Linear(512, 1024)
    torch.manual_seed(0)
    big.reset_parameters()
    theirs = big.weight.detach().numpy().ravel()
    clone = torch.nn.Linear(512, 1024)
    vsgen.torch.init_(clone, {"class_name": "KaimingUniform", "config": {"a": 5**0.5}}, seed=1)
    ours = clone.weight.detach().numpy().ravel()
    assert stats.ks_2samp(ours[::3], theirs[::3]).pvalue > 1e-3


def test_the_zero_element_warning_is_one_line_on_the_command_line(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "empty.npy"
    result = subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", "--shape", "0,4", "--preset",
         "kaiming_normal", "--seed", "1", "-o", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stderr == "warning: Initializing zero-element tensors is a no-op\n"
    assert np.load(out).shape == (0, 4)
    rank_one = subprocess.run(
        [sys.executable, "-m", "vsgen", "sample", "--shape", "5", "--preset",
         "kaiming_normal", "--seed", "1", "-o", str(tmp_path / "bias.npy")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert rank_one.returncode == 2
    assert rank_one.stderr == (
        "Error: Fan in and fan out can not be computed for tensor with fewer than 2 "
        "dimensions. Received: shape=(5,)\n"
    )
    assert not (tmp_path / "bias.npy").exists()


@pytest.mark.parametrize(
    "nonlinearity", ["leaky_relu", "relu", "tanh", "linear", "selu", "sigmoid"]
)
@pytest.mark.parametrize("a", [0, 0.01, 5**0.5])
def test_kaiming_config_scale_is_torchs_gain_squared(nonlinearity, a):
    # The config's scale is gain**2 (exact fractions: 2, 25/9, 9/16, ...); torch's
    # own calculate_gain is the reference, equal within a rounding of the square.
    scale = vsgen.KaimingNormal(seed=0, a=a, nonlinearity=nonlinearity).get_config()["scale"]
    assert math.isclose(scale, init.calculate_gain(nonlinearity, a) ** 2, rel_tol=4e-16)


def test_torch_presets_take_explicit_axes_and_read_them_back():
    preset = vsgen.KaimingNormal(seed=3, input_axes=[0], output_axes=[1])
    # (20, 30) read as (in, out) here, against torch's (out, in) by default.
    assert (preset.scaling((20, 30)).fan_in, preset.scaling((20, 30)).fan_out) == (20, 30)
    assert vsgen.KaimingNormal(seed=3).scaling((20, 30)).fan_in == 30
    config = preset.get_config()
    assert (config["input_axes"], config["output_axes"]) == ([0], [1])
    assert vsgen.KaimingNormal.from_config(config) == preset
    assert vsgen.deserialize(config) == preset


def test_torch_preset_plans_of_rows_are_rows_of_the_whole():
    preset = vsgen.KaimingUniform(seed=2, a=0.1)
    whole = preset((10, 6))
    part = np.empty((3, 6), dtype=np.float32)
    preset.plan((10, 6), rows=(2, 5)).fill(part)
    assert part.tobytes() == whole[2:5].tobytes()


def test_torch_presets_refuse_complex_dtypes():
    with pytest.raises(ValueError) as caught:
        vsgen.KaimingNormal(seed=1).plan((4, 4), "complex64")
    assert str(caught.value) == (
        "PyTorch presets make real tensors only (torch.nn.init defines no complex "
        "variant). Received: a complex dtype"
    )


def test_activations_without_a_torch_gain_are_named_not_corrected():
    from vsgen.initializer import NO_TORCH_GAIN

    for name in NO_TORCH_GAIN:
        with pytest.raises(ValueError, match="Unsupported nonlinearity"):
            init.calculate_gain(name)  # torch itself has no gain for it
        result = CliRunner().invoke(
            cli, ["config", "--preset", "kaiming_normal", "--nonlinearity", name.upper()]
        )
        assert result.exit_code == 2
        assert result.stderr.startswith(
            f"Error: --nonlinearity: torch.nn.init.calculate_gain has no gain for {name!r}; "
        )
        assert "did you mean" not in result.stderr and result.stderr.count("\n") == 1
