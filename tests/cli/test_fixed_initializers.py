"""The fixed-parameter initializers on the command line and in specs: sample,
describe, config, check, --config-from, refusals (one line, exit 2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen import modelspec
from vsgen.cli import cli

OPTIONS = {
    "random_normal": (["--mean", "1.5", "--stddev", "0.02"], vsgen.RandomNormal(1.5, 0.02)),
    "truncated_normal": (["--stddev", "0.3", "--mean", "-1"], vsgen.TruncatedNormal(-1.0, 0.3)),
    "random_uniform": (["--minval", "0", "--maxval", "4"], vsgen.RandomUniform(0.0, 4.0)),
}


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def _with_seed(init, seed, stream="vsgen"):
    return type(init).from_config({**init.get_config(), "seed": seed, "stream": stream})


@pytest.mark.parametrize("preset", list(OPTIONS))
@pytest.mark.parametrize("stream", ["vsgen", "keras"])
@pytest.mark.parametrize(("suffix", "dtype"), [(".npy", "float64"), (".safetensors", "bfloat16")])
def test_sample_writes_what_the_api_returns(tmp_path, preset, stream, suffix, dtype, read_back):
    args, init = OPTIONS[preset]
    out = tmp_path / f"w{suffix}"
    result = run(
        "sample",
        "--shape",
        "40,30",
        "--preset",
        preset,
        *args,
        "--seed",
        "9",
        "--stream",
        stream,
        "--dtype",
        dtype,
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    assert read_back(out).tobytes() == _with_seed(init, 9, stream)((40, 30), dtype).tobytes()


@pytest.mark.parametrize("preset", list(OPTIONS))
def test_defaults_without_arguments_are_keras_defaults(preset, tmp_path):
    out = tmp_path / "w.npy"
    assert (
        run("sample", "--shape", "8,8", "--preset", preset, "--seed", "1", "-o", str(out)).exit_code
        == 0
    )
    assert np.load(out).tobytes() == vsgen.get_preset(preset)(seed=1)((8, 8)).tobytes()


@pytest.mark.parametrize("preset", list(OPTIONS))
def test_config_and_config_back(preset, tmp_path):
    args, init = OPTIONS[preset]
    plain = run("config", "--preset", preset, *args, "--seed", "4")
    assert plain.exit_code == 0, plain.stderr
    document = json.loads(plain.stdout)
    assert document == _with_seed(init, 4).get_config()
    out = tmp_path / "w.npy"
    again = run("sample", "--config", "-", "--shape", "6,5", "-o", str(out), input=plain.stdout)
    assert again.exit_code == 0, again.stderr
    assert np.load(out).tobytes() == _with_seed(init, 4)((6, 5)).tobytes()
    # Explicit options override the file, as for VarianceScaling.
    name = "stddev" if preset != "random_uniform" else "maxval"
    override = run("config", "--config", "-", f"--{name}", "9", input=plain.stdout)
    assert json.loads(override.stdout)[name] == 9.0
    keras_form = json.loads(
        run("config", "--preset", preset, *args, "--seed", "4", "--keras").stdout
    )
    assert keras_form == _with_seed(init, 4).keras_config()
    assert keras_form["class_name"] == type(init).__name__
    unseeded = json.loads(run("config", "--preset", preset, "--keras").stdout)
    assert unseeded["config"]["seed"] is None


def test_describe_prints_their_numbers():
    table = run(
        "describe", "--shape", "512,256", "--preset", "truncated_normal", "--stddev", "0.02"
    )
    assert table.exit_code == 0, table.stderr
    assert "TruncatedNormal for shape (512, 256)" in table.stdout
    assert "0.0175925132" in table.stdout  # 0.87962566103423978 * 0.02
    info = json.loads(
        run(
            "describe",
            "--shape",
            "3,4",
            "--preset",
            "random_uniform",
            "--minval",
            "0.1",
            "--maxval",
            "0.7",
            "--json",
        ).stdout
    )
    assert info["minval"] == 0.1 and info["maxval"] == 0.7 and info["mean"] == 0.1 / 2 + 0.7 / 2
    assert info["initializer"] == "RandomUniform" and "fan_in" not in info
    assert math.isclose(info["stddev"], 0.6 / math.sqrt(12), rel_tol=1e-15)
    normal = json.loads(
        run(
            "describe", "--shape", "3,4", "--preset", "random_normal", "--mean", "2", "--json"
        ).stdout
    )
    assert (normal["mean"], normal["stddev"], normal["distribution"]) == (
        2.0,
        0.05,
        "untruncated_normal",
    )


RN, TN, RU = (
    ["--preset", name] for name in ("random_normal", "truncated_normal", "random_uniform")
)
REFUSALS = [
    (
        [*RN, "--scale", "2"],
        "--scale does not apply to --preset random_normal; it takes --mean, --stddev and has "
        "no fans",
    ),
    ([*TN, "--mode", "fan_out"], "--mode does not apply to --preset truncated_normal"),
    (
        [*RU, "--distribution", "uniform"],
        "--distribution does not apply to --preset random_uniform",
    ),
    ([*RN, "--layout", "torch"], "--layout does not apply to --preset random_normal"),
    ([*RN, "--in-axes", "0", "--out-axes", "1"], "--in-axes does not apply"),
    (
        [*RU, "--stddev", "1"],
        "--stddev does not apply to --preset random_uniform; it takes --minval, --maxval",
    ),
    (
        [*RN, "--minval", "1", "--maxval", "2"],
        "--minval, --maxval do not apply to --preset random_normal",
    ),
    (
        ["--stddev", "0.02"],
        "--stddev does not apply to VarianceScaling (no --preset); they are the arguments of "
        "--preset random_normal",
    ),
    (
        ["--preset", "he_normal", "--mean", "1"],
        "--mean does not apply to --preset he_normal; it has no arguments of its own",
    ),
    ([*RN, "--stddev", "0"], "--stddev must be a positive finite float. Received: --stddev=0.0"),
    ([*RN, "--mean", "inf"], "--mean must be a finite float"),
    (
        [*RU, "--minval", "2", "--maxval", "1"],
        "--maxval must be greater than --minval. Received: --minval=2.0, --maxval=1.0",
    ),
    ([*RN, "--stddev", "x"], "Invalid value for '--stddev'"),
    ([*RN, "--config", "-"], "--preset and --config both say which initializer to use"),
]


@pytest.mark.parametrize(("args", "message"), REFUSALS)
@pytest.mark.parametrize("command", ["config", "describe", "sample", "check"])
def test_options_that_do_not_apply_are_refused_in_one_line(command, args, message, tmp_path):
    extra = {
        "config": [],
        "describe": ["--shape", "4,4"],
        "sample": ["--shape", "4,4", "-o", str(tmp_path / "x.npy")],
        "check": [str(tmp_path / "missing.npy")],
    }[command]
    result = run(command, *extra, *args, input="{}")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.npy").exists()


def test_refusal_in_a_real_process():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--shape",
            "4,4",
            "--preset",
            "random_normal",
            "--scale",
            "2",
            "-o",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("Error: --scale does not apply to --preset random_normal")
    assert len(result.stderr.splitlines()) == 1


def test_a_real_process_writes_and_checks(tmp_path):
    out = tmp_path / "w.safetensors"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsgen",
            "sample",
            "--shape",
            "300,200",
            "--preset",
            "truncated_normal",
            "--stddev",
            "0.02",
            "--mean",
            "0.5",
            "--seed",
            "3",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    checked = subprocess.run(
        [sys.executable, "-m", "vsgen", "check", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout
    assert "expected (recorded provenance): TruncatedNormal, truncated_normal, mean 0.5" in (
        checked.stdout
    )
    assert checked.stdout.rstrip().endswith("verdict: consistent")


# --- check: consistent files pass, wrong ones do not --------------------------------

GOOD = [
    ("random_normal", ["--mean", "1", "--stddev", "0.02"]),
    ("random_normal", ["--mean", "-300", "--stddev", "0.5"]),
    ("truncated_normal", ["--mean", "0.25", "--stddev", "0.1"]),
    ("truncated_normal", []),
    ("random_uniform", ["--minval", "0", "--maxval", "1"]),
    ("random_uniform", ["--minval", "1000", "--maxval", "1001"]),
]


@pytest.mark.parametrize(("preset", "args"), GOOD)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_check_finds_files_consistent_with_their_record_and_options(
    tmp_path, preset, args, dtype, stream
):
    out = tmp_path / "w.safetensors"
    made = run(
        "sample",
        "--shape",
        "512,300",
        "--preset",
        preset,
        *args,
        "--seed",
        "5",
        "--dtype",
        dtype,
        "--stream",
        stream,
        "-o",
        str(out),
    )
    assert made.exit_code == 0, made.stderr
    recorded = run("check", str(out), "--json")
    report = json.loads(recorded.stdout)
    assert recorded.exit_code == 0, report["checks"]
    assert report["verdict"] == "consistent"
    assert report["expected"]["initializer"] == vsgen.get_preset(preset).__name__
    given = run("check", str(out), "--preset", preset, *args)
    assert given.exit_code == 0, given.stdout


WRONG = [
    ([*RN, "--mean", "1"], RN, {"mean", "ks"}),
    ([*RN, "--stddev", "0.06"], RN, {"std", "ks"}),
    (TN, RN, {"std", "ks"}),
    ([*RN, "--stddev", "0.02"], [*TN, "--stddev", "0.02"], {"bounds"}),
    (
        [*RU, "--minval", "0", "--maxval", "1"],
        [*RU, "--minval", "0", "--maxval", "0.9"],
        {"bounds"},
    ),
    ([*RU, "--minval", "0", "--maxval", "1"], [*RU, "--minval", "-0.1", "--maxval", "1"], {"mean"}),
    (["--preset", "he_normal"], [*TN, "--stddev", "0.1"], {"ks"}),
    ([*TN, "--mean", "0.5"], ["--preset", "he_uniform"], {"bounds"}),
]


@pytest.mark.parametrize(("made_with", "checked_with", "failing"), WRONG)
def test_check_finds_wrong_files_not_consistent(tmp_path, made_with, checked_with, failing):
    out = tmp_path / "w.npy"
    made = run("sample", "--shape", "600,400", *made_with, "--seed", "6", "-o", str(out))
    assert made.exit_code == 0, made.stderr
    result = run("check", str(out), *checked_with, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["verdict"] == "NOT consistent"
    assert failing <= {check["name"] for check in report["checks"] if not check["passed"]}


def test_config_from_replays_fixed_initializers_byte_for_byte(tmp_path):
    source = tmp_path / "w.h5"
    made = run(
        "sample",
        "--shape",
        "70,9",
        "--preset",
        "random_uniform",
        "--minval",
        "0.1",
        "--maxval",
        "0.7",
        "--dtype",
        "float64",
        "--rows",
        "10:50",
        "-o",
        str(source),
    )
    assert made.exit_code == 0, made.stderr
    copy = tmp_path / "copy.h5"
    assert run("sample", "--config-from", str(source), "-o", str(copy)).exit_code == 0
    import h5py

    with h5py.File(source) as a, h5py.File(copy) as b:
        assert a["weight"][()].tobytes() == b["weight"][()].tobytes()
    assert run("check", str(copy)).exit_code == 0


# --- specs ---------------------------------------------------------------------------

SPEC = """
seed = 11
layout = "torch"
init = { truncated_normal = 0.02 }

[rules]
"*.bias" = "zeros"
"embed.weight" = { random_normal = 0.02 }
"head.weight" = { class_name = "TruncatedNormal", config = { stddev = 0.02 } }
"gate.weight" = { random_uniform = [0.0, 0.5] }
"scale.weight" = { preset = "random_normal", mean = 1.0, stddev = 0.01 }

[tensors]
"embed.weight" = [100, 16]
"fc.weight" = [32, 16]
"fc.bias" = [32]
"head.weight" = [10, 32]
"gate.weight" = [8, 8]
"scale.weight" = [16, 4]
"""


def test_spec_short_forms_rules_and_keras_forms(tmp_path):
    spec_path = tmp_path / "m.toml"
    spec_path.write_text(SPEC)
    plan = run("sample", "--spec", str(spec_path), "--plan")
    assert plan.exit_code == 0, plan.stderr
    lines = {line.split()[0]: line for line in plan.stdout.splitlines()[1:-1]}
    assert "random_normal(stddev=0.02)" in lines["embed.weight"]
    assert "truncated_normal(stddev=0.02)" in lines["fc.weight"]
    assert "mean 0, std 0.01759, |x - mean| <= 0.04" in lines["head.weight"]
    assert "random_uniform(minval=0, maxval=0.5)" in lines["gate.weight"]
    assert "x in [0, 0.5)" in lines["gate.weight"]
    assert "random_normal(mean=1, stddev=0.01)" in lines["scale.weight"]
    out = tmp_path / "m.safetensors"
    assert run("sample", "--spec", str(spec_path), "-o", str(out)).exit_code == 0
    checked = run("check", str(out))
    assert checked.exit_code == 0, checked.stdout
    assert "scale.weight" in checked.stdout and "mean 1 stddev 0.01" in checked.stdout
    copy = tmp_path / "copy.safetensors"
    assert run("sample", "--config-from", str(out), "-o", str(copy)).exit_code == 0
    assert copy.read_bytes() == out.read_bytes()
    job = modelspec.build_job(modelspec.load_spec(str(spec_path)))
    arrays = job.arrays()
    expected = vsgen.RandomNormal(1.0, 0.01, seed=modelspec.derive_seed(11, "scale.weight"))
    assert arrays["scale.weight"].tobytes() == expected((16, 4)).tobytes()
    assert job.records["gate.weight"]["init"] == {
        "preset": "random_uniform",
        "minval": 0.0,
        "maxval": 0.5,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"random_normal": "0.02"}, "random_normal: must be the stddev, a number"),
        ({"random_normal": 0.02, "stddev": 0.1}, "takes mean, stream other keys; got stddev"),
        ({"random_uniform": 0.1, "mean": 0.5}, "got mean"),
        ({"random_uniform": [1, 2, 3]}, "must be a limit"),
        ({"random_uniform": [0.5, 0.1]}, "`maxval` must be greater than `minval`"),
        ({"random_normal": 0.02, "truncated_normal": 0.02}, "give one of"),
        ({"random_normal": -1}, "`stddev` must be a positive"),
        ({"stddev": 0.02}, "belong to a preset's table"),
        (
            {"preset": "random_normal", "scale": 2},
            "takes mean, stddev and stream only (it has no fans); drop scale",
        ),
        ({"preset": "random_uniform", "layout": "torch"}, "drop layout"),
        ({"preset": "truncated_normal", "minval": 0}, "drop minval"),
        ({"class_name": "RandomNormal", "config": {"seed": 1}}, "takes no seed"),
        ("random-normal-ish", "unknown initializer"),
    ],
)
def test_spec_errors_name_the_place(value, message):
    with pytest.raises(ValueError, match='^rules\\."w"') as caught:
        modelspec.parse_init(value, 'rules."w"')
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "random_normal",
        "TruncatedNormal",
        {"random_normal": 0.02},
        {"truncated_normal": 0.02, "mean": 0.5},
        {"random_uniform": 0.1},
        {"random_uniform": [-0.2, 0.6], "stream": "keras"},
        {"preset": "random_uniform", "minval": 1, "maxval": 2},
        {"class_name": "RandomUniform", "config": {"minval": 0.0, "maxval": 1.0}},
    ],
)
def test_spec_forms_round_trip_through_as_json(value):
    parsed = modelspec.parse_init(value)
    again = modelspec.parse_init(parsed.as_json())
    assert again.initializer(5).get_config() == parsed.initializer(5).get_config()
    assert again.label() == parsed.label()


def test_like_with_a_layout_and_a_fixed_default(tmp_path):
    # --layout is the model's (for the rules' variance-scaling tensors), not the
    # fixed-parameter default's: it is not refused here, and applies elsewhere.
    spec = tmp_path / "m.toml"
    spec.write_text('[tensors]\n"a.weight" = [16, 8]\n"b.weight" = [8, 4]\n"a.bias" = [16]\n')
    source = tmp_path / "m.safetensors"
    assert run("sample", "--spec", str(spec), "--seed", "0", "-o", str(source)).exit_code == 0
    rules = tmp_path / "rules.toml"
    rules.write_text('[rules]\n"b.weight" = "he_normal"\n')
    result = run(
        "sample", "--like", str(source), "--spec", str(rules), "--layout", "torch",
        "--preset", "random_normal", "--stddev", "0.02", "--seed", "1", "--plan", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["tensors"]}
    assert rows["a.weight"]["init"] == "random_normal(stddev=0.02)"
    assert rows["a.weight"]["stddev"] == 0.02 and rows["a.weight"]["mean"] == 0.0
    assert (rows["b.weight"]["fan_in"], rows["b.weight"]["fan_out"]) == (4, 8)  # torch layout
