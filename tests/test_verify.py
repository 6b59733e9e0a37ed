"""``vsgen check`` and ``vsgen.verify``: genuine files pass, wrong ones fail.

Every file is written under ``tmp_path`` by the real CLI (or by the writers,
for deliberately wrong data) and judged by the CLI through ``CliRunner`` or by
the library. The statistics themselves are compared with scipy.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen import formats, verify
from vsgen.cli import cli

DISTRIBUTIONS = ["truncated_normal", "untruncated_normal", "uniform"]
SHAPE = "256,128"  # 32768 values: the checks have power, the test stays fast


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def sample(path, *args: str) -> None:
    result = run("sample", "-o", str(path), "-q", *args)
    assert result.exit_code == 0, result.stderr


def write(path, array: np.ndarray, metadata: dict[str, str] | None = None, name="weight"):
    """Write ``array`` as it is (possibly wrong data) with the writers."""
    fmt = formats.resolve_format(str(path), None)
    info = formats.TensorInfo(name=name, shape=array.shape, dtype=array.dtype)
    with formats.open_output(str(path), fmt, [info], metadata=metadata) as output:
        output.write(np.ascontiguousarray(array).reshape(-1))
        output.commit()


def load(path) -> np.ndarray:
    """The whole tensor (small test files only)."""
    source = verify.open_tensor(str(path))
    return np.concatenate(list(source.chunks())).reshape(source.shape)


#: ``vsgen check``'s exit code for a file that is readable but NOT consistent.
NOT_CONSISTENT_EXIT = 1


def no_crash(result) -> None:
    """The command ended through click (an exit code), never by an exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stdout + result.stderr


def check(path, *args: str):
    """``vsgen check``; a NOT-consistent verdict is a clean report on stdout:
    the verdict printed, nothing on stderr, no exception (a crash after the
    verdict must not pass for a verdict)."""
    result = run("check", str(path), *args)
    no_crash(result)
    if result.exit_code == NOT_CONSISTENT_EXIT:
        assert result.stderr == "", result.stderr
        verdict = json.loads(result.stdout)["verdict"] if "--json" in args else result.stdout
        assert "NOT consistent" in verdict, result.stdout
    return result


def check_json(path, *args: str) -> tuple[int, dict]:
    result = check(path, "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def failed(document: dict) -> set[str]:
    return {c["name"] for c in document["checks"] if not c["passed"]}


# --- genuine files are consistent -----------------------------------------------------


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("suffix", [".h5", ".safetensors", ".npy"])
@pytest.mark.parametrize("stream", ["vsgen", "keras"])
def test_generated_files_are_consistent(tmp_path, distribution, suffix, stream):
    path = tmp_path / f"w{suffix}"
    options = ["--scale", "2", "--mode", "fan_avg", "--distribution", distribution]
    sample(path, "--shape", SHAPE, "--seed", "11", "--stream", stream, *options)
    # .npy records nothing: say what to expect; the others use their provenance.
    given = options if suffix == ".npy" else []
    code, report = check_json(path, *given)
    assert code == 0, report["checks"]
    assert report["verdict"] == "consistent" and report["consistent"] is True
    assert report["source"] == ("options" if suffix == ".npy" else "provenance")
    assert report["expected"]["distribution"] == distribution
    assert report["summary"]["count"] == 256 * 128


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_every_dtype_is_consistent(tmp_path, distribution, dtype):
    # 2**18 values: float16/bfloat16 steps are coarse enough that a KS test
    # against the continuous CDF would fail; the rounding-aware one must not.
    path = tmp_path / "w.safetensors"
    sample(
        path, "--shape", "512,512", "--seed", "3", "--distribution", distribution, "--dtype", dtype
    )
    code, report = check_json(path)
    assert code == 0, report["checks"]
    assert report["dtype"] == dtype


def test_rounding_aware_ks_is_needed_for_bfloat16():
    """The plain KS test rejects a genuine bfloat16 uniform tensor of 4 Mi values
    (its 8-bit steps move the empirical CDF by up to 2**-9); ours accepts it."""
    stats = pytest.importorskip("scipy.stats")
    init = vsgen.VarianceScaling(distribution="uniform", seed=5)
    values = init.sample((2048, 2048), "bfloat16")
    limit = math.sqrt(3.0 / 2048)  # scale 1, fan_in 2048
    plain = stats.kstest(values.astype(np.float64).ravel(), stats.uniform(-limit, 2 * limit).cdf)
    assert plain.pvalue < verify.KS_ALPHA
    report = verify.verify_array(values, init, max_sample=values.size)
    assert report.ks is not None and report.ks.sample_size == values.size
    assert report.verdict == verify.CONSISTENT, report.checks


def test_shards_and_fan_shape(tmp_path):
    # An .h5 shard records its full shape: fans come from it.
    shard = tmp_path / "p.h5"
    sample(shard, "--shape", "1024,64", "--seed", "4", "--preset", "he_uniform", "--shard", "2/4")
    code, report = check_json(shard)
    assert code == 0 and report["expected"]["fan_in"] == 1024
    # An .npy shard records nothing: --fan-shape gives the full shape...
    part = tmp_path / "p.npy"
    sample(part, "--shape", "1024,64", "--seed", "4", "--preset", "he_uniform", "--shard", "2/4")
    assert check(part, "--preset", "he_uniform", "--fan-shape", "1024,64").exit_code == 0
    # ...and without it the fans of the shard's own shape are wrong (stddev x2).
    result = check(part, "--preset", "he_uniform")
    assert result.exit_code == NOT_CONSISTENT_EXIT and "verdict: NOT consistent" in result.stdout


def test_layout_and_axes_from_provenance(tmp_path):
    torch_like = tmp_path / "t.safetensors"
    sample(
        torch_like,
        "--shape",
        "64,32,3,3",
        "--seed",
        "2",
        "--preset",
        "he_normal",
        "--layout",
        "torch",
    )
    code, report = check_json(torch_like)
    assert code == 0 and report["expected"]["fan_in"] == 32 * 9
    # Judged with the keras layout instead, fan_in = 64 * 32 * 3 is wrong.
    assert check(torch_like, "--preset", "he_normal").exit_code == NOT_CONSISTENT_EXIT
    axes = tmp_path / "a.h5"
    sample(
        axes,
        "--shape",
        "16,8,64",
        "--seed",
        "2",
        "--in-axes",
        "0,1",
        "--out-axes",
        "2",
        "--distribution",
        "uniform",
    )
    code, report = check_json(axes)
    assert code == 0 and report["expected"]["fan_in"] == 128


# --- wrong files are not ----------------------------------------------------------------


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_wrong_scale_is_detected(tmp_path, distribution):
    path = tmp_path / "w.npy"
    sample(path, "--shape", SHAPE, "--seed", "1", "--scale", "2", "--distribution", distribution)
    result = check(path, "--scale", "1", "--distribution", distribution)
    assert result.exit_code == NOT_CONSISTENT_EXIT
    assert "verdict: NOT consistent" in result.stdout
    assert "FAIL  std" in result.stdout


@pytest.mark.parametrize("made", DISTRIBUTIONS)
@pytest.mark.parametrize("judged", DISTRIBUTIONS)
def test_wrong_distribution_is_detected(tmp_path, made, judged):
    path = tmp_path / "w.npy"
    sample(path, "--shape", SHAPE, "--seed", "1", "--distribution", made)
    code, report = check_json(path, "--distribution", judged)
    if made == judged:
        assert code == 0
    else:
        # Same stddev by construction: only the shape of the distribution differs.
        assert code == NOT_CONSISTENT_EXIT and "ks" in failed(report)
        assert "std" not in failed(report)


def test_uniform_judged_as_normal_alias(tmp_path):
    path = tmp_path / "w.npy"
    sample(path, "--shape", SHAPE, "--seed", "9", "--distribution", "uniform")
    result = check(path, "--distribution", "normal")  # alias of truncated_normal
    assert result.exit_code == NOT_CONSISTENT_EXIT
    assert "FAIL  ks" in result.stdout


def test_tampered_values_with_genuine_provenance(tmp_path):
    genuine = tmp_path / "w.h5"
    sample(genuine, "--shape", SHAPE, "--seed", "5", "--distribution", "untruncated_normal")
    metadata = formats.read_metadata(str(genuine))
    values = load(genuine)
    scaled = tmp_path / "scaled.h5"
    write(scaled, (values * np.float32(math.sqrt(2))).astype(np.float32), metadata)
    code, report = check_json(scaled)
    assert code == NOT_CONSISTENT_EXIT and {"std", "ks"} <= failed(report)


@pytest.mark.parametrize("suffix", [".h5", ".safetensors"])
def test_clipped_values_are_detected(tmp_path, suffix):
    genuine = tmp_path / f"w{suffix}"
    sample(genuine, "--shape", SHAPE, "--seed", "5", "--distribution", "untruncated_normal")
    values = load(genuine)
    limit = 1.5 * float(values.std())
    clipped = tmp_path / f"clipped{suffix}"
    write(clipped, np.clip(values, -limit, limit), formats.read_metadata(str(genuine)))
    code, report = check_json(clipped)
    assert code == NOT_CONSISTENT_EXIT and {"std", "ks"} <= failed(report)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("constant", [0.0, 0.01])
def test_constant_array_is_detected(tmp_path, distribution, constant):
    path = tmp_path / "c.npy"
    np.save(path, np.full((128, 128), constant, dtype=np.float32))
    code, report = check_json(path, "--distribution", distribution)
    assert code == NOT_CONSISTENT_EXIT and {"std", "ks"} <= failed(report)


def test_out_of_bounds_values_are_detected(tmp_path):
    init = vsgen.VarianceScaling(distribution="uniform", seed=3)
    values = init.sample((128, 128))
    values[7, 7] = 1.01 * math.sqrt(3.0 / 128)  # scale 1, fan_in 128
    report = verify.verify_array(values, init)
    assert report.verdict == verify.NOT_CONSISTENT
    assert [c.name for c in report.checks if not c.passed] == ["bounds"]


def test_nan_is_detected(tmp_path):
    values = vsgen.VarianceScaling(seed=3).sample((64, 64))
    values[0, 0] = np.nan
    path = tmp_path / "n.npy"
    np.save(path, values)
    code, report = check_json(path, "--scale", "1")
    assert code == NOT_CONSISTENT_EXIT and "finite" in failed(report)
    assert report["summary"]["nonfinite"] == 1


def test_record_mismatch_is_detected(tmp_path):
    genuine = tmp_path / "w.safetensors"
    sample(genuine, "--shape", "64,64", "--seed", "5")
    other = tmp_path / "other.safetensors"
    values = vsgen.VarianceScaling(seed=5).sample((64, 32))  # not the recorded shape
    write(other, values, formats.read_metadata(str(genuine)))
    code, report = check_json(other)
    assert code == NOT_CONSISTENT_EXIT and failed(report) == {"record"}


# --- small and empty tensors ----------------------------------------------------------


def test_small_tensor_is_too_few_to_judge(tmp_path):
    path = tmp_path / "s.h5"
    sample(path, "--shape", "3,3", "--seed", "1")
    result = check(path)
    assert result.exit_code == 0
    assert "verdict: too few values to judge" in result.stdout
    assert "note: only 9 values" in result.stdout


def test_small_tensor_far_off_is_still_not_consistent(tmp_path):
    path = tmp_path / "s.npy"
    sample(path, "--shape", "3,3", "--seed", "1", "--scale", "100", "--distribution", "uniform")
    result = check(path, "--distribution", "uniform")
    assert result.exit_code == NOT_CONSISTENT_EXIT and "FAIL  bounds" in result.stdout


def test_empty_tensor(tmp_path):
    path = tmp_path / "e.safetensors"
    sample(path, "--shape", "0,5", "--seed", "1")
    code, report = check_json(path)
    assert code == 0 and report["verdict"] == "too few values to judge"
    assert report["summary"]["count"] == 0


# --- bounded memory: chunked reading ----------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".h5", ".safetensors"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_chunks_are_bounded_and_complete(tmp_path, suffix, dtype):
    path = tmp_path / f"w{suffix}"
    sample(path, "--shape", "7,300,5", "--seed", "1", "--dtype", dtype)
    source = verify.open_tensor(str(path))
    expected = vsgen.VarianceScaling(seed=1).sample((7, 300, 5), dtype)
    for chunk_size in (1, 999, 1500, 4096, 10**6):
        pieces = list(source.chunks(chunk_size))
        assert max(piece.size for piece in pieces) <= chunk_size
        assert all(piece.dtype == np.dtype(dtype) for piece in pieces)
        assert np.concatenate(pieces).tobytes() == expected.tobytes()


def test_bfloat16_chunks(tmp_path):
    path = tmp_path / "w.safetensors"
    sample(path, "--shape", "33,31", "--seed", "1", "--dtype", "bfloat16")
    expected = vsgen.VarianceScaling(seed=1).sample((33, 31), "bfloat16")
    pieces = list(verify.open_tensor(str(path)).chunks(100))
    assert np.concatenate(pieces).view(np.uint16).tobytes() == expected.view(np.uint16).tobytes()


@pytest.mark.parametrize("suffix", [".npy", ".h5", ".safetensors"])
def test_report_does_not_depend_on_chunk_size(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"w{suffix}"
    sample(path, "--shape", "300,301", "--seed", "8", "--distribution", "uniform")
    init = vsgen.VarianceScaling(distribution="uniform")
    reference = verify.verify_file(str(path), initializer=init).as_dict()
    for chunk in (1000, 4099, 65536 + 7):
        monkeypatch.setattr(verify, "READ_CHUNK", chunk)
        assert verify.verify_file(str(path), initializer=init).as_dict() == reference
    # ...and through the CLI, with the JSON report.
    monkeypatch.setattr(verify, "READ_CHUNK", 777)
    code, document = check_json(path, "--distribution", "uniform")
    assert code == 0 and document["summary"] == reference["summary"]
    assert document["ks"] == reference["ks"]


def test_subsample_is_bounded_and_strided(tmp_path, monkeypatch):
    path = tmp_path / "w.npy"
    sample(path, "--shape", "1000,10", "--seed", "2")
    monkeypatch.setattr(verify, "MAX_SAMPLE", 3000)
    report = verify.verify_file(str(path), initializer=vsgen.VarianceScaling())
    assert report.ks is not None
    assert report.ks.stride == 4 and report.ks.sample_size == 2500
    assert report.histogram.sample_size == 2500
    assert report.summary.count == 10_000  # moments still use every value


# --- the statistics, against scipy ----------------------------------------------------


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_ks_statistic_equals_scipy(distribution):
    stats = pytest.importorskip("scipy.stats")
    init = vsgen.VarianceScaling(distribution=distribution, seed=4)
    values = init.sample((40, 50), "float64")
    stddev = math.sqrt(1.0 / 40)  # scale 1, fan_in 40: derived here, not by vsgen
    if distribution == "untruncated_normal":
        reference = stats.norm(0, stddev)
    elif distribution == "truncated_normal":
        reference = stats.truncnorm(-2, 2, 0, stddev / stats.truncnorm(-2, 2).std())
    else:
        limit = math.sqrt(3.0) * stddev
        reference = stats.uniform(-limit, 2 * limit)
    scaling = init.scaling((40, 50))  # the input verify is given, judged by the reference
    ours = verify.ks_test(values.ravel(), scaling)
    theirs = stats.kstest(values.ravel(), reference.cdf)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.pvalue == pytest.approx(theirs.pvalue, rel=0.05, abs=1e-3)
    x = np.linspace(-3, 3, 101) * stddev
    np.testing.assert_allclose(verify.expected_cdf(scaling, x), reference.cdf(x), atol=1e-14)


def test_kurtosis_and_critical_value():
    stats = pytest.importorskip("scipy.stats")
    assert verify.KURTOSIS["truncated_normal"] == pytest.approx(
        3 + float(stats.truncnorm(-2, 2).stats(moments="k")), rel=1e-12
    )
    assert verify.KURTOSIS["uniform"] == pytest.approx(3 + float(stats.uniform.stats(moments="k")))
    # Stephens' form at alpha = 1e-3 against scipy's exact one-sample KS distribution.
    for m in (10, 100, 1000):
        exact = stats.kstwo(m).isf(verify.KS_ALPHA)
        assert verify.ks_critical(m) == pytest.approx(exact, rel=0.02)
    assert verify.kolmogorov_sf(1.9495) == pytest.approx(1e-3, rel=1e-3)
    assert verify.kolmogorov_sf(0.5) == pytest.approx(stats.kstwobign.sf(0.5), rel=1e-9)


def test_false_alarm_rate_is_small():
    """40 genuine small tensors, different seeds: all pass (each fails w.p. ~1e-3)."""
    for seed in range(40):
        for distribution in DISTRIBUTIONS:
            init = vsgen.VarianceScaling(distribution=distribution, seed=seed)
            report = verify.verify_array(init.sample((20, 30), "float16"), init)
            assert report.verdict == verify.CONSISTENT, (seed, distribution, report.checks)


# --- the command line -------------------------------------------------------------------


def test_human_output(tmp_path):
    path = tmp_path / "w.h5"
    sample(path, "--shape", SHAPE, "--seed", "3", "--preset", "glorot_uniform")
    result = check(path)
    assert result.exit_code == 0 and result.stderr == ""
    out = result.stdout
    for word in (
        "count",
        "mean",
        "std",
        "min",
        "max",
        "histogram",
        "limit",
        "PASS  ks",
        "PASS  bounds",
        "PASS  record",
        "expected (recorded provenance): uniform",
    ):
        assert word in out
    assert out.rstrip().endswith("verdict: consistent")
    bars = [line for line in out.splitlines() if " | " in line]
    assert len(bars) == verify.HISTOGRAM_BINS and all("#" in line for line in bars)


def test_npy_without_options_is_a_usage_error(tmp_path):
    path = tmp_path / "w.npy"
    sample(path, "--shape", "8,8", "--seed", "1")
    result = check(path)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--preset" in result.stderr and "provenance" in result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["missing.h5"], "not found"),
        (["empty"], "holds no tensors"),
        (["x.txt"], "not a .npy"),
        (["int.npy", "--scale", "1"], "dtype int32"),
        (["two.safetensors"], "carries no vsgen provenance"),
        (["two.safetensors", "--name", "c"], "no tensor named 'c'"),
        (["w.h5", "--fan-shape", "8,8"], "--fan-shape needs"),
        (["w.h5", "--scale", "-1"], "scale"),
        (["w.h5", "--fan-shape", "8,x"], "--fan-shape"),
    ],
)
def test_usage_errors(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    sample(tmp_path / "w.h5", "--shape", "8,8", "--seed", "1")
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.txt").write_text("hello, not a tensor\n")
    np.save(tmp_path / "int.npy", np.arange(10, dtype=np.int32))
    infos = [formats.TensorInfo("a", (4,), np.float32), formats.TensorInfo("b", (2,), np.float32)]
    with formats.open_output("two.safetensors", "safetensors", infos) as output:
        output.write(np.zeros(4, np.float32))
        output.write(np.zeros(2, np.float32))
        output.commit()
    result = check(*args)
    assert result.exit_code == 2, result.stdout
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_name_selects_a_tensor(tmp_path):
    path = tmp_path / "two.h5"
    a = vsgen.VarianceScaling(seed=1).sample((64, 32))
    b = vsgen.VarianceScaling(seed=2, distribution="uniform").sample((32, 64))
    infos = [
        formats.TensorInfo("dense/a", a.shape, a.dtype),
        formats.TensorInfo("b", b.shape, b.dtype),
    ]
    with formats.open_output(str(path), "h5", infos) as output:
        output.write(a.ravel())
        output.write(b.ravel())
        output.commit()
    assert check(path, "--name", "dense/a", "--scale", "1").exit_code == 0
    assert check(path, "--name", "b", "--distribution", "uniform").exit_code == 0
    assert check(path, "--name", "b", "--scale", "1").exit_code == NOT_CONSISTENT_EXIT


def test_json_report_is_complete(tmp_path):
    path = tmp_path / "w.safetensors"
    sample(path, "--shape", SHAPE, "--seed", "3", "--dtype", "float16")
    code, report = check_json(path)
    assert code == 0
    assert set(report) >= {
        "path",
        "format",
        "name",
        "shape",
        "dtype",
        "source",
        "expected",
        "summary",
        "ks",
        "histogram",
        "checks",
        "verdict",
        "notes",
        "consistent",
    }
    assert report["ks"]["alpha"] == 1e-3 and report["ks"]["critical"] > report["ks"]["statistic"]
    assert sum(report["histogram"]["counts"]) == report["ks"]["sample_size"]
    assert report["expected"]["stddev"] == math.sqrt(1.0 / 256)  # scale 1, fan_in 256


def test_exit_codes_in_a_real_process(tmp_path):
    path = tmp_path / "w.npy"
    sample(path, "--shape", SHAPE, "--seed", "1", "--scale", "2")

    def vsgen_check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vsgen", "check", str(path), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    good, bad, usage = vsgen_check("--scale", "2"), vsgen_check("--scale", "1"), vsgen_check()
    assert (good.returncode, bad.returncode, usage.returncode) == (0, NOT_CONSISTENT_EXIT, 2)
    assert good.stderr == "" and bad.stderr == ""  # a verdict, even a bad one, is not an error
    assert "verdict: NOT consistent" in bad.stdout
    assert "Traceback" not in usage.stderr and len(usage.stderr.splitlines()) == 1


def _check_examples() -> list[str]:
    text = run("check", "--help").stdout
    return [
        line.strip()
        for line in text.split("Examples:", 1)[1].splitlines()
        if line.strip().startswith("vsgen ")
    ]


@pytest.mark.parametrize("command", _check_examples())
def test_help_examples_run(command, tmp_path):
    result = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {command}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


# --- constant tensors written from a model spec -----------------------------------------


def _spec_file(tmp_path):
    spec = tmp_path / "m.toml"
    spec.write_text(
        'seed = 3\nlayout = "torch"\n[rules]\n"*.bias" = "zeros"\n"*norm*.weight" = "ones"\n'
        '[tensors]\n"fc.weight" = [64, 32]\n"fc.bias" = [64]\n"norm.weight" = [64]\n'
    )
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, ["sample", "--spec", str(spec), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.parametrize(("name", "value"), [("norm.weight", 1.0), ("fc.bias", 0.0)])
def test_constant_tensors_are_checked_exactly(tmp_path, name, value):
    out = _spec_file(tmp_path)
    result = CliRunner().invoke(cli, ["check", str(out), "--name", name])
    assert result.exit_code == 0, result.output
    assert f"every value {value:g}" in result.stdout
    assert "verdict: consistent" in result.stdout


def test_a_changed_constant_is_not_consistent(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    out = _spec_file(tmp_path)
    with safe_open(str(out), "np") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(out))
    tensors["norm.weight"][5] = 0.5
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    result = check(bad, "--name", "norm.weight")
    assert result.exit_code == NOT_CONSISTENT_EXIT
    assert "FAIL  constant" in result.stdout
    assert "verdict: NOT consistent" in result.stdout


# --- the whole record -------------------------------------------------------------------


def model_file(tmp_path, suffix: str) -> str:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"seed": 3, "tensors": {"a": [64, 32], "b": [32, 16], "c": [8]}}))
    target = tmp_path / f"m{suffix}"
    extra = ["--format", "safetensors-sharded", "--max-shard-size", "9000"] if suffix == "" else []
    result = run("sample", "--spec", str(spec), "-o", str(target), "-q", *extra)
    assert result.exit_code == 0, result.output
    return str(target)


def remove_tensor(path: str, name: str) -> None:
    """Delete tensor ``name`` from a vsgen output, leaving its record in place."""
    import os

    if path.endswith(".h5"):
        import h5py

        with h5py.File(path, "a") as h5:
            del h5[name]
    elif path.endswith(".zarr"):
        import shutil

        shutil.rmtree(os.path.join(path, name))
    elif path.endswith(".safetensors"):
        import safetensors.numpy
        from safetensors import safe_open

        with safe_open(path, "np") as handle:
            metadata = handle.metadata()
        tensors = safetensors.numpy.load_file(path)
        del tensors[name]
        safetensors.numpy.save_file(tensors, path, metadata=metadata)
    else:  # a shard directory: the index entry goes
        index_path = os.path.join(path, "model.safetensors.index.json")
        with open(index_path) as handle:
            index = json.load(handle)
        del index["weight_map"][name]
        with open(index_path, "w") as handle:
            json.dump(index, handle)


@pytest.mark.parametrize("suffix", [".h5", ".safetensors", ".zarr", ""])
@pytest.mark.parametrize("removed", ["a", "c"])
def test_a_recorded_tensor_that_is_gone_fails_the_file(tmp_path, suffix, removed):
    path = model_file(tmp_path, suffix)
    assert check(path).exit_code == 0
    remove_tensor(path, removed)
    result = check(path)
    assert result.exit_code == NOT_CONSISTENT_EXIT
    assert f"missing: {removed}: recorded by the file's vsgen provenance" in result.stdout
    code, document = check_json(path)
    assert code == NOT_CONSISTENT_EXIT and document["missing"] == [removed]
    assert document["verdict"] == "NOT consistent"
    # The library says the same.
    assert verify.missing_tensors(formats.readers.open_file(path)) == [removed]


def test_a_file_left_with_one_of_its_recorded_tensors_fails(tmp_path):
    """One tensor left of two: not judged as a file of one tensor and passed."""
    path = model_file(tmp_path, ".safetensors")
    remove_tensor(path, "a")
    remove_tensor(path, "b")
    result = check(path)
    assert result.exit_code == NOT_CONSISTENT_EXIT
    assert "missing: a" in result.stdout and "missing: b" in result.stdout
    # Judged against options instead, the record does not matter.
    assert "missing" not in check(path, "--scale", "1").stdout


def test_an_unrecorded_tensor_is_reported_not_judged(tmp_path):
    import safetensors.numpy
    from safetensors import safe_open

    path = model_file(tmp_path, ".safetensors")
    with safe_open(path, "np") as handle:
        metadata = handle.metadata()
    tensors = safetensors.numpy.load_file(path)
    tensors["extra"] = np.zeros(4, np.float32)
    safetensors.numpy.save_file(tensors, path, metadata=metadata)
    result = check(path)
    assert result.exit_code == 0
    assert "not judged: extra:" in result.stdout and "vsgen did not write it" in result.stdout


def test_a_malformed_record_in_a_file_of_several_tensors_is_refused(tmp_path):
    """The other tensors' records are fine; one malformed record must not be skipped
    (and the file called consistent): the whole check is refused, naming the tensor."""
    import safetensors.numpy
    from safetensors import safe_open

    path = model_file(tmp_path, ".safetensors")
    with safe_open(path, "np") as handle:
        metadata = handle.metadata()
    document = json.loads(metadata["vsgen"])
    document["tensors"]["b"]["config"] = "not an object"
    metadata["vsgen"] = json.dumps(document)
    safetensors.numpy.save_file(safetensors.numpy.load_file(path), path, metadata=metadata)
    result = check(path)
    assert result.exit_code == 2
    assert "the vsgen record of tensor 'b' is malformed" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
    with pytest.raises(ValueError, match="tensor 'b' is malformed"):
        verify.verify_tensors(path)
