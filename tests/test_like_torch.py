"""``--like`` on real checkpoints: integer and bool tensors copied byte for byte,
norm scales and running statistics decided by structure, ``--plan``, and real
PyTorch modules (built here, no downloads) loaded back with
``load_state_dict(strict=True)``.

Expectations are derived independently of vsgen: stddevs from the modules'
own sizes (``in_channels * k * k``, ``in_features``...), the truncated
normal from ``scipy.stats.truncnorm``, seeds from ``hashlib``, and every file
is read back with the real readers (safetensors, h5py, numpy, torch)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import safetensors.numpy
from click.testing import CliRunner
from scipy import stats

import vsgen
from vsgen.cli import cli
from vsgen.formats.readers import read_tensor_range
from vsgen.modelspec import (
    CopyPlan,
    build_job,
    builtin_constant,
    builtin_init,
    parse_spec,
    plan_table,
)

ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def independent_seed(global_seed: int, name: str, bits: int = 53) -> int:
    digest = hashlib.sha256(global_seed.to_bytes(8, "little") + name.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << bits) - 1)


# --- reading a tensor's flat range -----------------------------------------------------

SOURCE = {
    "mask": np.tril(np.ones((5, 5), dtype=bool)),
    "ids": np.arange(3 * 4 * 5, dtype=np.int64).reshape(3, 4, 5) - 7,
    "count": np.array(9, dtype=np.int64),
    "small": np.array([-3, 0, 127], dtype=np.int8),
    "unsigned": np.array([[0, 65535], [7, 8]], dtype=np.uint16),
    "weights": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
}


def write_source(directory: Path, fmt: str) -> Path:
    if fmt == "safetensors":
        path = directory / "src.safetensors"
        safetensors.numpy.save_file(SOURCE, str(path))
    elif fmt in ("h5", "h5-chunked"):
        path = directory / f"{fmt}.h5"
        with h5py.File(path, "w") as handle:
            for name, values in SOURCE.items():
                if fmt == "h5-chunked" and values.ndim:
                    chunks = tuple(max(1, d // 2) for d in values.shape)
                    handle.create_dataset(name, data=values, chunks=chunks, compression="gzip")
                else:
                    handle.create_dataset(name, data=values)
    else:
        path = directory / "src"
        path.mkdir()
        for name, values in SOURCE.items():
            np.save(path / f"{name}.npy", values)
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "h5", "h5-chunked", "npydir"])
def test_read_tensor_range_gives_every_flat_range(tmp_path, fmt):
    path = write_source(tmp_path, fmt)
    for name, values in SOURCE.items():
        flat = values.reshape(-1)
        for start in range(flat.size + 1):
            # Lengths that cross the (3, 4, 5) tensor's row (5) and plane (20) edges.
            lengths = (0, 1, 2, 3, 5, 7, 11, 19, 23, 60)
            for stop in sorted({min(flat.size, start + length) for length in lengths}):
                got = read_tensor_range(str(path), name, start, stop)
                assert got.dtype == values.dtype, (name, got.dtype)
                np.testing.assert_array_equal(got, flat[start:stop])


def test_read_tensor_range_of_a_single_npy_file(tmp_path):
    path = tmp_path / "position_ids.npy"
    values = np.arange(40, dtype=">i4").reshape(4, 10)  # big-endian is refused
    np.save(path, values)
    with pytest.raises(ValueError, match="big-endian"):
        read_tensor_range(str(path), "position_ids", 0, 4)
    np.save(path, values.astype("<i4"))
    np.testing.assert_array_equal(
        read_tensor_range(str(path), "position_ids", 13, 27), np.arange(13, 27)
    )
    with pytest.raises(ValueError, match="no readable tensor 'other'"):
        read_tensor_range(str(path), "other", 0, 1)


def test_read_tensor_range_refuses_what_is_not_in_the_file(tmp_path):
    path = write_source(tmp_path, "safetensors")
    with pytest.raises(ValueError, match=r"range \[0, 61\) is outside"):
        read_tensor_range(str(path), "ids", 0, 61)
    with pytest.raises(ValueError, match="no readable tensor 'nothing'"):
        read_tensor_range(str(path), "nothing", 0, 1)
    with pytest.raises(ValueError, match="no readable tensor '__metadata__'"):
        read_tensor_range(str(path), "__metadata__", 0, 1)

    # data_offsets that point into the header, or past the end of the file.
    header = {"t": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}
    for offsets, message in (
        ([-8, 8], "must satisfy 0 <= begin <= end"),
        ([0, 8], "needs 16"),
        ([8, 24], "truncated"),
    ):
        header["t"]["data_offsets"] = offsets
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(len(text).to_bytes(8, "little") + text + bytes(16))
        with pytest.raises(ValueError, match=message):
            read_tensor_range(str(bad), "t", 0, 2)

    # HDF5 raw data in another file is never read.
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.arange(4, dtype="<i8").tobytes())
    external = tmp_path / "external.h5"
    with h5py.File(external, "w") as handle:
        handle.create_dataset("t", shape=(4,), dtype="<i8", external=[(str(outside), 0, 32)])
    with pytest.raises(ValueError, match="outside the file"):
        read_tensor_range(str(external), "t", 0, 4)


def test_copy_plan_reads_in_bounded_chunks(tmp_path):
    path = write_source(tmp_path, "safetensors")
    plan = CopyPlan(str(path), "ids", np.dtype(np.int64), (3, 4, 5))
    chunks = list(plan.chunks(chunk_size=7))
    assert [chunk.size for chunk in chunks] == [7] * 8 + [4]
    np.testing.assert_array_equal(np.concatenate(chunks), SOURCE["ids"].reshape(-1))
    np.testing.assert_array_equal(plan.array(), SOURCE["ids"])
    with pytest.raises(ValueError, match="no checkpoint to copy from"):
        list(CopyPlan(None, "ids", np.dtype(np.int64), (3, 4, 5)).chunks())


# --- built-in choices by structure -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "expected"),
    [
        # rank-1 weights are norm scales wherever they sit (nn.Sequential, torchvision)
        ("1.weight", (64,), "float32", ("constant", 1.0)),
        ("layer1.0.downsample.1.weight", (256,), "float32", ("constant", 1.0)),
        ("features.4.weight", (32,), "bfloat16", ("constant", 1.0)),
        ("decoder.final.scale", (16,), "float16", ("constant", 1.0)),
        ("layer1.0.downsample.1.bias", (256,), "float32", ("constant", 0.0)),
        ("layer1.0.downsample.1.running_mean", (256,), "float32", ("constant", 0.0)),
        ("layer1.0.downsample.1.running_var", (256,), "float32", ("constant", 1.0)),
        ("layer1.0.downsample.1.num_batches_tracked", (), "int64", ("copy", None)),
        ("embeddings.position_ids", (1, 512), "int64", ("copy", None)),
        ("h.0.attn.mask", (1, 1, 8, 8), "bool", ("copy", None)),
        ("layers.0.rotary_emb.inv_freq", (32,), "float32", ("copy", None)),
        ("logit_scale", (), "float32", ("constant", 0.0)),
        ("1.weight", (64, 3), "float32", None),  # rank >= 2: the default initializer
        ("tok_embeddings.weight", (1000, 64), "float32", None),
    ],
)
def test_builtin_init_by_structure(name, shape, dtype, expected):
    chosen = builtin_init(
        name,
        shape,
        np.dtype(dtype) if dtype != "bfloat16" else vsgen.dtypes.resolve_dtype("bfloat16"),
    )
    if expected is None:
        assert chosen is None
        return
    init, reason = chosen
    kind, value = expected
    assert reason
    if kind == "copy":
        assert init.copy and not init.is_constant
    else:
        assert init.constant == value


def test_builtin_constant_without_a_shape_keeps_the_name_rules():
    assert builtin_constant("linear.weight") == 0.0
    assert builtin_constant("linear.weight", (8,)) == 1.0
    assert builtin_constant("linear.weight", ()) == 0.0


# --- --like with integer and bool tensors, all formats ---------------------------------


@pytest.mark.parametrize("source_fmt", ["safetensors", "h5", "npydir"])
@pytest.mark.parametrize("out_suffix", [".safetensors", ".h5", "/"])
def test_like_copies_integer_and_bool_tensors(tmp_path, source_fmt, out_suffix):
    source = write_source(tmp_path, source_fmt)
    out = tmp_path / f"out{out_suffix}"
    dtype = "bfloat16" if out_suffix == ".safetensors" else "float16"
    args = ["--format", "npydir"] if out_suffix == "/" else []
    result = run(
        "sample", "--like", str(source), "--seed", "3", "--dtype", dtype, "-o", str(out), *args
    )
    assert result.exit_code == 0, result.stderr
    made = read_back(out)
    assert set(made) == set(SOURCE)
    for name in ("mask", "ids", "count", "small", "unsigned"):
        assert made[name].dtype == SOURCE[name].dtype, name  # --dtype converts floats only
        assert made[name].shape == SOURCE[name].shape
        assert made[name].tobytes() == SOURCE[name].tobytes(), name
    assert str(made["weights"].dtype) == dtype
    seed = independent_seed(3, "weights")
    expected = vsgen.VarianceScaling(seed=seed)((2, 3, 4), dtype)
    assert made["weights"].tobytes() == expected.tobytes()


def read_back(out: Path) -> dict[str, np.ndarray]:
    if out.suffix == ".safetensors":
        return safetensors.numpy.load_file(str(out))
    if out.suffix == ".h5":
        with h5py.File(out, "r") as handle:
            return {name: handle[name][()] for name in handle}
    return {path.stem: np.load(path) for path in out.glob("*.npy")}


def test_rules_override_the_builtins(tmp_path):
    source = write_source(tmp_path, "safetensors")
    spec = tmp_path / "rules.toml"
    spec.write_text(
        '[rules]\n"count" = { constant = 0 }\n"mask" = "ones"\n"small" = "zeros"\n'
        '"weights" = "copy"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.safetensors"
    result = run(
        "sample",
        "--like",
        str(source),
        "--spec",
        str(spec),
        "--seed",
        "1",
        "--dtype",
        "float16",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    made = safetensors.numpy.load_file(str(out))
    assert made["count"].dtype == np.int64 and made["count"] == 0
    assert made["mask"].dtype == bool and made["mask"].all()
    assert made["small"].dtype == np.int8 and not made["small"].any()
    # A copied floating tensor keeps its bytes and dtype, --dtype or not.
    assert made["weights"].tobytes() == SOURCE["weights"].tobytes()
    assert made["ids"].tobytes() == SOURCE["ids"].tobytes()
    records = json.loads(safetensors.safe_open(str(out), "np").metadata()["vsgen"])["tensors"]
    assert records["ids"] == {
        "kind": "copy",
        "dtype": "int64",
        "shape": [3, 4, 5],
        "init": "copy",
        "init_from": "builtin",
    }
    assert records["count"]["init_from"] == "rule count"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ('"ids" = "he_normal"', r"tensor 'ids' \(rule ids\): a int64 tensor cannot be drawn"),
        ('"mask" = { constant = 2 }', r"tensor 'mask' \(rule mask\): a bool tensor holds 0 or 1"),
        ('"small" = { constant = 300 }', r"the constant 300 does not fit int8"),
        ('"count" = { constant = 0.5 }', r"a int64 tensor cannot hold the constant 0.5"),
    ],
)
def test_rules_that_cannot_serve_an_integer_tensor_are_usage_errors(tmp_path, rules, message):
    source = write_source(tmp_path, "safetensors")
    spec = tmp_path / "rules.toml"
    spec.write_text(f"[rules]\n{rules}\n", encoding="utf-8")
    out = tmp_path / "out.safetensors"
    result = run("sample", "--like", str(source), "--spec", str(spec), "-o", str(out))
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr
    assert not out.exists()


def test_copy_without_a_checkpoint_is_an_error(tmp_path):
    spec = tmp_path / "model.toml"
    spec.write_text('[tensors]\n"w" = { shape = [2], init = "copy" }\n', encoding="utf-8")
    result = run("sample", "--spec", str(spec), "-o", str(tmp_path / "m.safetensors"))
    assert result.exit_code == 2
    assert "'copy' needs a checkpoint to copy from (--like)" in result.stderr


# --- --plan ----------------------------------------------------------------------------


def test_plan_prints_every_tensor_and_writes_nothing(tmp_path):
    source = write_source(tmp_path, "safetensors")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "never.safetensors"
    result = run(
        "sample",
        "--like",
        str(source),
        "--preset",
        "he_uniform",
        "--seed",
        "4",
        "--plan",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "shape", "dtype", "init", "values", "from"]
    by_name = {line.split()[0]: line for line in lines[1:-1]}
    assert set(by_name) == set(SOURCE)
    assert by_name["ids"].split()[1:4] == ["3x4x5", "int64", "copy"]
    assert "builtin: int64 tensor" in by_name["ids"]
    assert "builtin: bool tensor" in by_name["mask"]
    # keras layout (the default): (2, 3, 4) is (kernel, in, out), fan_in = 3 * 2;
    # he_uniform: stddev sqrt(2 / 6), limit sqrt(3) * stddev
    stddev, limit = math.sqrt(2 / 6), math.sqrt(6 / 6)
    assert f"std {stddev:.4g}, |x| < {limit:.4g}" in by_name["weights"]
    assert lines[-1] == f"6 tensors, {sum(v.size for v in SOURCE.values())} values"


def test_plan_json(tmp_path):
    source = write_source(tmp_path, "safetensors")
    result = run(
        "sample", "--like", str(source), "--layout", "torch", "--seed", "4", "--plan", "--json"
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["seed"] == 4
    rows = {row["name"]: row for row in document["tensors"]}
    assert set(rows) == set(SOURCE)
    weights = rows["weights"]
    # torch layout: fan_in = 3 * 4 for (2, 3, 4); default truncated normal, scale 1
    assert weights["fan_in"] == 12 and weights["fan_out"] == 8
    assert weights["stddev"] == pytest.approx(math.sqrt(1 / 12), rel=1e-12)
    s = math.sqrt(1 / 12) / stats.truncnorm.std(-2, 2)
    assert weights["bound"] == pytest.approx(2 * s, rel=1e-9)
    assert weights["seed"] == independent_seed(4, "weights")
    assert weights["kind"] == "variance_scaling" and weights["origin"] == "default"
    assert rows["count"]["kind"] == "copy" and rows["count"]["shape"] == []


def test_plan_without_a_seed_reports_the_drawn_one(tmp_path):
    source = write_source(tmp_path, "safetensors")
    result = run("sample", "--like", str(source), "--plan")
    assert result.exit_code == 0
    assert re.fullmatch(r"seed: \d+\n", result.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "4,4", "--plan"], "--plan shows the plan of --spec/--like"),
        (["--json", "-o", "x.safetensors"], "--json goes with --plan"),
        ([], "Missing option '-o' / '--output'"),
        (["--plan", "-o", "x.npy"], "a .npy file holds one tensor"),
    ],
)
def test_plan_option_errors(tmp_path, args, message):
    source = write_source(tmp_path, "safetensors")
    like = [] if "--shape" in args else ["--like", str(source)]
    result = run("sample", *like, *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr


def test_plan_table_is_summarised_for_many_tensors():
    names = {
        f"layers.{i}.{part}": shape
        for i in range(30)
        for part, shape in (("weight", [8, 8]), ("bias", [8]))
    }
    job = build_job(parse_spec({"tensors": names}), seed=0, layout="torch")
    assert len(plan_table(job.rows)) == 1 + 60 + 1
    summary = plan_table(job.rows, max_rows=40)
    assert summary[0].split() == ["tensors", "values", "dtype", "init", "stddev", "from"]
    assert summary[1].split()[:4] == ["30", "1.92", "k", "float32"]
    assert summary[2].split()[:4] == ["30", "240", "float32", "zeros"]
    assert summary[-1] == "60 tensors, 2.16 k values"


def test_the_plan_goes_to_stderr_on_a_terminal(tmp_path):
    source = write_source(tmp_path, "safetensors")
    out = tmp_path / "out.safetensors"
    primary, secondary = pty.openpty()
    try:
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "vsgen",
                "sample",
                "--like",
                str(source),
                "--seed",
                "2",
                "-o",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=120,
            env=SUBPROCESS_ENV,
        )
        os.close(secondary)
        secondary = -1
        captured = b""
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            captured += data
    finally:
        if secondary != -1:
            os.close(secondary)
        os.close(primary)
    assert process.returncode == 0
    text = captured.decode()
    assert "name" in text and "builtin: int64 tensor" in text and "6 tensors, 117 values" in text
    assert out.exists() and process.stdout == b""


# --- real PyTorch modules ----------------------------------------------------------------

TRUNCATED_STD = float(stats.truncnorm.std(-2, 2))  # std of N(0, 1) truncated to [-2, 2]


def build_model(torch):
    """A small model with every kind of tensor a real checkpoint has."""
    nn = torch.nn

    class Block(nn.Module):
        """ResNet's basic block, with the 1x1 projection shortcut in an nn.Sequential."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.downsample(x))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 64)
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
            self.layer1 = nn.Sequential(Block(16, 32, 2))
            self.gn = nn.GroupNorm(4, 32)
            self.encoder = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True)
            self.norm = nn.LayerNorm(64)
            self.head = nn.Linear(64, 10)
            self.register_buffer("position_ids", torch.arange(12).unsqueeze(0))
            self.register_buffer("attn_mask", torch.ones(12, 12, dtype=torch.bool).tril())

        def forward(self, image, tokens):
            features = self.gn(self.layer1(torch.relu(self.stem(image)))).mean((2, 3))
            sequence = self.encoder(self.embed(tokens) + features.repeat(1, 2)[:, None])
            return self.head(self.norm(sequence))

    torch.manual_seed(0)
    model = Model()
    model.train()
    for _ in range(3):  # running statistics move, num_batches_tracked becomes 3
        model(torch.randn(2, 3, 8, 8), torch.randint(0, 100, (2, 12)))
    return model


def expected_stddevs(model, scale: float) -> dict[str, float]:
    """sqrt(scale / fan_in) with fan_in from each module's own sizes (PyTorch layout)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    expected = {}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            expected[f"{prefix}.weight"] = math.sqrt(scale / fan_in)
        elif isinstance(module, nn.Linear):
            expected[f"{prefix}.weight"] = math.sqrt(scale / module.in_features)
        elif isinstance(module, nn.Embedding):
            expected[f"{prefix}.weight"] = math.sqrt(scale / module.embedding_dim)
        elif isinstance(module, nn.MultiheadAttention):
            expected[f"{prefix}.in_proj_weight"] = math.sqrt(scale / module.embed_dim)
    return expected


def load_output(path: Path, torch) -> dict:
    if path.suffix == ".safetensors":
        import safetensors.torch

        return safetensors.torch.load_file(str(path))
    with h5py.File(path, "r") as handle:
        names: list[str] = []
        handle.visititems(
            lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
        )
        return {
            name.replace("/", "."): torch.from_numpy(np.asarray(handle[name][()])) for name in names
        }


@pytest.mark.parametrize("suffix", [".safetensors", ".h5"])
def test_like_a_real_torch_checkpoint_loads_strictly(tmp_path, suffix):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    model = build_model(torch)
    source = tmp_path / "model.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(source))
    out = tmp_path / f"fresh{suffix}"
    result = run(
        "sample",
        "--like",
        str(source),
        "--layout",
        "torch",
        "--preset",
        "he_normal",
        "--seed",
        "11",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    state = load_output(out, torch)

    fresh = build_model(torch)
    fresh.load_state_dict(state, strict=True)
    nn = torch.nn
    norms = 0
    for module in fresh.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            norms += 1
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))
            assert module.num_batches_tracked.dtype == torch.int64
            assert module.num_batches_tracked.item() == 3
    assert norms == 8  # stem, block (3), GroupNorm, encoder (2), final LayerNorm
    source_state = model.state_dict()
    for name in ("position_ids", "attn_mask", "layer1.0.downsample.1.num_batches_tracked"):
        assert state[name].dtype == source_state[name].dtype
        assert torch.equal(state[name], source_state[name]), name
    for name, tensor in state.items():
        if name.endswith("bias"):
            assert not tensor.any(), name

    # Every weight has the He-normal stddev sqrt(2 / fan_in) and the truncated
    # normal's shape: a KS test against scipy's truncnorm, and the sample
    # stddev within 6 standard errors (sqrt((2 + excess kurtosis) / 4n)).
    kurtosis = float(stats.truncnorm.stats(-2, 2, moments="k"))
    expected = expected_stddevs(fresh, 2.0)
    assert len(expected) == 10  # embed, 4 convs, in_proj, out_proj, 2 MLP, head
    for name, stddev in expected.items():
        values = state[name].double().numpy().reshape(-1)
        scale = stddev / TRUNCATED_STD
        assert np.abs(values).max() <= 2 * scale * (1 + 1e-6), name
        p_value = stats.kstest(values, stats.truncnorm(-2, 2, scale=scale).cdf).pvalue
        assert p_value > 1e-4, (name, p_value)
        standard_error = math.sqrt((2 + kurtosis) / (4 * values.size))
        assert abs(values.std() / stddev - 1) < 6 * standard_error, (name, values.std(), stddev)
        seed = independent_seed(11, name)
        regenerated = vsgen.HeNormal(seed=seed, layout="torch")(tuple(state[name].shape))
        assert regenerated.tobytes() == state[name].numpy().reshape(-1).tobytes()


def test_norms_inside_a_plain_sequential_are_ones(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    nn = torch.nn
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4), nn.LayerNorm(4)
    )
    source = tmp_path / "seq.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(source))
    out = tmp_path / "fresh.safetensors"
    result = run(
        "sample", "--like", str(source), "--layout", "torch", "--seed", "0", "-o", str(out)
    )
    assert result.exit_code == 0, result.stderr
    state = safetensors.torch.load_file(str(out))
    model.load_state_dict(state, strict=True)
    assert torch.equal(model[1].weight, torch.ones(16))  # "1.weight"
    assert torch.equal(model[4].weight, torch.ones(4))  # "4.weight"
    assert torch.equal(model[1].running_var, torch.ones(16))
    assert not model[1].running_mean.any() and not model[0].bias.any()
    assert model[0].weight.std() > 0


def test_like_a_bfloat16_torch_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    model = build_model(torch).to(torch.bfloat16)
    source = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(source))
    out = tmp_path / "fresh.safetensors"
    result = run(
        "sample", "--like", str(source), "--layout", "torch", "--seed", "5", "-o", str(out)
    )
    assert result.exit_code == 0, result.stderr
    state = safetensors.torch.load_file(str(out))
    fresh = build_model(torch).to(torch.bfloat16)
    fresh.load_state_dict(state, strict=True)
    assert state["stem.1.weight"].dtype == torch.bfloat16
    assert torch.equal(state["stem.1.weight"], torch.ones(16, dtype=torch.bfloat16))
    assert state["stem.1.num_batches_tracked"].item() == 3
    assert torch.equal(state["attn_mask"], model.attn_mask)


def test_plan_rows_name_initializers_and_origins():
    spec = parse_spec(
        {
            "rules": {
                "a": {"scale": 0.5, "mode": "fan_avg", "distribution": "uniform"},
                "b": {"scale": 2.0, "distribution": "normal"},
                "c": {"preset": "glorot_normal", "input_axes": [0], "output_axes": [1]},
            },
            "tensors": {
                "a": [4, 6],
                "b": [4, 6],
                "c": [4, 6],
                "d": [4, 6],
                "e": [6],
                "f": {"shape": [6], "init": {"constant": 0.02}},
            },
        }
    )
    rows = {row.name: row for row in build_job(spec, seed=0).rows}
    assert rows["a"].init == "variance_scaling(scale=0.5, mode=fan_avg, distribution=uniform)"
    assert rows["a"].origin_text() == "rule a"
    assert rows["b"].init == "he_normal"  # the same numbers as the preset
    assert rows["c"].init == "glorot_normal[in=0, out=1]"
    assert (rows["d"].init, rows["d"].origin) == ("variance_scaling", "default")
    assert (rows["e"].init, rows["e"].origin_text()) == ("zeros", "builtin: rank-1 tensor")
    assert (rows["f"].init, rows["f"].values_text(), rows["f"].origin) == ("0.02", "0.02", "tensor")
    # untruncated: a stddev, no bound
    job = build_job(
        parse_spec(
            {"tensors": {"w": {"shape": [4, 9], "init": {"distribution": "untruncated_normal"}}}}
        ),
        seed=0,
    )
    assert job.rows[0].bound is None and job.rows[0].values_text() == f"std {math.sqrt(1 / 4):.4g}"


@pytest.mark.parametrize(
    ("names", "layout", "fans"),
    [
        # PyTorch's names: (out, in) -> fan_in = 3 by default, with no warning
        ({"fc.weight": (4, 3), "fc.bias": (4,)}, [], (3, 4)),
        ({"fc.weight": (4, 3), "fc.bias": (4,)}, ["--layout", "torch"], (3, 4)),
        ({"fc.weight": (4, 3), "fc.bias": (4,)}, ["--layout", "keras"], (4, 3)),
        # Keras's names keep the keras layout: (in, out)
        ({"dense/kernel": (3, 4), "dense/bias": (4,)}, [], (3, 4)),
    ],
)
def test_torch_names_use_the_torch_layout_by_default(tmp_path, names, layout, fans):
    source = tmp_path / "names.safetensors"
    safetensors.numpy.save_file(
        {name: np.zeros(shape, np.float32) for name, shape in names.items()}, str(source)
    )
    result = run("sample", "--like", str(source), "--seed", "0", *layout, "--plan", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    weight = next(row for row in json.loads(result.stdout)["tensors"] if len(row["shape"]) == 2)
    assert (weight["fan_in"], weight["fan_out"]) == fans
    assert weight["stddev"] == pytest.approx(math.sqrt(1 / fans[0]), rel=1e-12)


# --- a checkpoint without its module: conservative by name ---------------------------------


def gpt2_like_state(torch):
    """A GPT-2-style checkpoint with every kind of tensor a name can hide."""
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Module()
    model.wte = nn.Embedding(64, 16)
    model.ln_f = nn.LayerNorm(16)
    model.encoder = nn.TransformerEncoderLayer(256, 4, 2048, dropout=0.0, batch_first=True)
    state = {f"transformer.{k}": v for k, v in model.state_dict().items()}
    for layer in range(3):
        state[f"transformer.h.{layer}.attn.c_attn.weight"] = torch.randn(48, 16)
        state[f"transformer.h.{layer}.attn.c_attn.bias"] = torch.randn(48)
        state[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(8, 8)).view(1, 1, 8, 8)
        state[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
        state[f"transformer.h.{layer}.ln_1.weight"] = torch.rand(16)
        state[f"transformer.h.{layer}.ln_1.bias"] = torch.rand(16)
    state["logit_scale"] = torch.tensor(2.6592)  # CLIP
    state["stages.0.gamma"] = torch.full((16,), 1e-6)  # ConvNeXt's layer scale
    state["stages.0.dwconv.weight"] = torch.randn(16, 1, 7, 7)
    state["stages.0.act.weight"] = torch.tensor([0.25])  # nn.PReLU
    state["audio.window"] = torch.hann_window(32)
    state["audio.mel_filters"] = torch.rand(10, 17)
    state["bn.weight"] = torch.rand(16)  # a BatchNorm: rank-1 weight beside its bias
    state["bn.bias"] = torch.rand(16)
    state["bn.running_mean"] = torch.rand(16)
    state["bn.running_var"] = torch.rand(16)
    state["bn.num_batches_tracked"] = torch.tensor(140)
    return state


COPIED = (
    "transformer.h.0.attn.bias",
    "transformer.h.2.attn.bias",
    "transformer.h.1.attn.masked_bias",
    "logit_scale",
    "stages.0.gamma",
    "stages.0.act.weight",
    "audio.window",
    "audio.mel_filters",
    "bn.num_batches_tracked",
)


def test_like_keeps_what_is_not_recognisably_a_weight_bias_or_norm(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    state = gpt2_like_state(torch)
    source = tmp_path / "gpt2.safetensors"
    safetensors.torch.save_file(state, str(source))
    out = tmp_path / "fresh.safetensors"
    result = run("sample", "--like", str(source), "--seed", "3", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # the torch layout by default: no warning
    fresh = safetensors.torch.load_file(str(out))
    for name in COPIED:
        assert torch.equal(fresh[name], state[name]), name  # copied, never noised
    # weights drawn, with PyTorch's fans: linear1 is (2048, 256), fan_in 256
    linear1 = fresh["transformer.encoder.linear1.weight"].double()
    assert abs(linear1.std().item() / math.sqrt(1 / 256) - 1) < 0.02
    for name in ("transformer.h.1.attn.c_attn.weight", "stages.0.dwconv.weight"):
        assert not torch.equal(fresh[name], state[name]) and fresh[name].std() > 0, name
    # biases zero, norms one, running statistics reset
    for name in ("transformer.h.0.attn.c_attn.bias", "transformer.h.0.ln_1.bias", "bn.bias"):
        assert not fresh[name].any(), name
    for name in ("transformer.h.0.ln_1.weight", "transformer.ln_f.weight", "bn.weight"):
        assert fresh[name].eq(1).all(), name
    assert not fresh["bn.running_mean"].any() and fresh["bn.running_var"].eq(1).all()


def test_like_plan_lists_copied_tensors_by_name_when_summarised(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    source = tmp_path / "gpt2.safetensors"
    safetensors.torch.save_file(gpt2_like_state(torch), str(source))
    job = build_job(None, str(source), seed=0)
    rows = {row.name: row for row in job.rows}
    assert rows["transformer.h.0.attn.bias"].origin_text() == (
        "builtin: not recognisably a weight, bias or norm"
    )
    assert rows["transformer.h.0.attn.masked_bias"].origin_text() == (
        "builtin: fixed buffer (masked_bias)"
    )
    summary = plan_table(job.rows, max_rows=10)
    text = "\n".join(summary)
    for name in COPIED:
        assert name in text, name
    # every name of a copied group is listed under it, not only counted
    group = next(i for i, line in enumerate(summary) if "not recognisably" in line)
    listed = " ".join(summary[group + 1 : group + 4])
    assert "transformer.h.1.attn.bias" in listed and "audio.mel_filters" in listed


def test_like_with_the_torch_convention(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    state = gpt2_like_state(torch)
    source = tmp_path / "gpt2.safetensors"
    safetensors.torch.save_file(state, str(source))
    out = tmp_path / "torch.safetensors"
    result = run(
        "sample", "--like", str(source), "--convention", "torch", "--seed", "4", "-o", str(out)
    )
    assert result.exit_code == 0, result.stderr
    fresh = safetensors.torch.load_file(str(out))
    # nn.Linear's reset: U(+-1/sqrt(fan_in)) for weight and bias
    linear1 = fresh["transformer.encoder.linear1.weight"]
    bound = 1 / math.sqrt(256)
    assert linear1.abs().max() < bound and linear1.abs().max() > 0.99 * bound
    reference = torch.nn.Linear(256, 2048).weight.detach().reshape(-1).numpy()
    p_value = stats.ks_2samp(reference, linear1.reshape(-1).numpy()).pvalue
    assert p_value > 1e-3, p_value
    bias = fresh["transformer.encoder.linear1.bias"]
    assert bias.abs().max() < bound and bias.std() > 0
    # MultiheadAttention's: xavier_uniform_ in_proj, zero biases
    in_proj = fresh["transformer.encoder.self_attn.in_proj_weight"]
    assert in_proj.abs().max() < math.sqrt(6 / (256 + 768))
    assert not fresh["transformer.encoder.self_attn.in_proj_bias"].any()
    assert not fresh["transformer.encoder.self_attn.out_proj.bias"].any()
    # an embedding, by name: N(0, 1)
    assert abs(fresh["transformer.wte.weight"].std().item() - 1) < 0.1
    assert fresh["bn.num_batches_tracked"].item() == 0  # reset_running_stats
    for name in ("transformer.h.0.attn.bias", "logit_scale", "stages.0.gamma"):
        assert torch.equal(fresh[name], state[name]), name
