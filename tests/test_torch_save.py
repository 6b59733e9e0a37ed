"""``vsgen.torch.save`` and ``plan`` from meta-device modules, ``meta_parameters()``,
tied weights, and the bad input of whole modules.

Every file is read back with the real readers (safetensors, h5py, numpy, zarr,
``safetensors.torch.load_model``) and compared byte for byte with ``init_`` on
the same module built with memory."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
import h5py  # noqa: E402
import safetensors  # noqa: E402
import safetensors.numpy  # noqa: E402

import vsgen.torch  # noqa: E402
from vsgen.cli import cli  # noqa: E402
from vsgen.modelspec import plan_table  # noqa: E402

nn = torch.nn
pytestmark = pytest.mark.required_in_ci


class Net(nn.Module):
    """A small language model: tied embedding and head, a transformer layer, a
    BatchNorm, a convolution, a PReLU and a float causal-mask buffer."""

    def __init__(self, with_integers: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16, padding_idx=0)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(16) if not with_integers else nn.BatchNorm1d(16)
        self.conv = nn.Conv1d(16, 8, 3)
        self.act = nn.PReLU()
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("mask", torch.ones(6, 6).tril()[None, None])
        if with_integers:
            self.register_buffer("position_ids", torch.arange(6)[None])


def state_bytes(state: dict) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    out = {}
    for name, tensor in state.items():
        array = tensor if isinstance(tensor, np.ndarray) else _numpy(tensor)
        out[name] = (array.dtype.name, tuple(array.shape), np.ascontiguousarray(array).tobytes())
    return out


def _numpy(tensor) -> np.ndarray:
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(vsgen.dtypes.bfloat16())
    return tensor.numpy()


def read_back(path: Path, fmt: str) -> dict[str, np.ndarray]:
    """Every tensor of a file, by name, with the format's own reader."""
    if fmt == "safetensors":
        return safetensors.numpy.load_file(str(path))
    if fmt == "safetensors-sharded":
        index = json.loads((path / "model.safetensors.index.json").read_text())
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(safetensors.numpy.load_file(str(path / shard)))
        assert set(tensors) == set(index["weight_map"])
        return tensors
    if fmt == "h5":
        with h5py.File(path, "r") as handle:
            return {name: np.asarray(handle[name][()]) for name in handle}
    if fmt == "npydir":
        return {file.name[:-4]: np.load(file) for file in path.glob("*.npy")}
    if fmt == "zarr":
        import zarr

        group = zarr.open_group(str(path), mode="r")
        return {name: array[...] for name, array in group.arrays()}
    raise AssertionError(fmt)


def materialised_init(convention: str | None, **kwargs) -> tuple[dict, vsgen.modelspec.ModelJob]:
    module = kwargs.pop("make", Net)()
    job = vsgen.torch.init_(module, seed=7, convention=convention, **kwargs)
    state = dict(module.state_dict())
    for alias in job.aliases:  # tied: written once
        del state[alias]
    return state, job


# --- plan and save from the meta device ---------------------------------------------------


def test_plan_accepts_a_meta_module_and_needs_no_memory():
    with torch.device("meta"):
        model = nn.Sequential(
            nn.Linear(4096, 4096), nn.BatchNorm1d(4096), nn.Embedding(10**6, 512), nn.PReLU()
        )
    job = vsgen.torch.plan(model, "he_uniform", seed=1)
    rows = {row.name: row for row in job.rows}
    assert rows["0.weight"].init == "he_uniform" and rows["0.weight"].fan_in == 4096
    assert rows["2.weight"].size == 512 * 10**6
    # the batch count has no value on the meta device: a fresh module's, 0
    count = rows["1.num_batches_tracked"]
    assert (count.kind, count.value, count.dtype) == ("constant", 0.0, "int64")
    assert count.reason == "BatchNorm1d batch count: zeros on the meta device"
    # PReLU's weight, kept with memory, is what its reset_parameters sets on meta
    prelu = rows["3.weight"]
    assert (prelu.kind, prelu.value) == ("constant", 0.25)
    assert (
        prelu.reason == "a parameter of PReLU: on the meta device, what PReLU.reset_parameters sets"
    )
    real = vsgen.torch.plan(
        nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64)), "he_uniform", seed=1
    )
    assert {row.name: row.kind for row in real.rows}["1.num_batches_tracked"] == "copy"


@pytest.mark.parametrize("convention", [None, "torch"])
@pytest.mark.parametrize("fmt", ["safetensors", "safetensors-sharded", "h5", "npydir", "zarr"])
def test_save_from_meta_equals_init_of_the_module_materialised(tmp_path, fmt, convention):
    integers = fmt != "zarr"  # Zarr stores hold floating tensors only
    with vsgen.torch.meta_parameters():
        meta = Net(with_integers=integers)
    assert meta.block.linear1.weight.device.type == "meta" and meta.mask.device.type == "cpu"
    suffix = {"safetensors": ".safetensors", "h5": ".h5", "zarr": ".zarr"}.get(fmt, "")
    target = tmp_path / f"model{suffix}"
    job = vsgen.torch.save(
        meta, target, seed=7, convention=convention, format=fmt, max_shard_size="8KB"
    )
    expected, expected_job = materialised_init(convention, make=lambda: Net(integers))
    assert [row.name for row in job.rows] == [row.name for row in expected_job.rows]
    written = read_back(target, fmt)
    assert state_bytes(written) == state_bytes(expected)
    if fmt == "safetensors-sharded":
        assert len(list(target.glob("model-*-of-*.safetensors"))) > 1


def test_save_bfloat16_converts_what_is_drawn_or_set(tmp_path):
    with vsgen.torch.meta_parameters():
        meta = Net()
    target = tmp_path / "bf16.safetensors"
    vsgen.torch.save(meta, target, seed=3, dtype="bfloat16")
    written = safetensors_torch.load_file(str(target))
    real = Net().to(torch.bfloat16)
    vsgen.torch.init_(real, seed=3)
    for name, tensor in written.items():
        if name in ("mask", "position_ids", "norm.num_batches_tracked"):
            assert tensor.dtype in (torch.float32, torch.int64), name  # kept: their own dtype
            continue
        # PReLU's weight has no values on meta: what its reset sets, 0.25, converted
        assert tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor.view(torch.int16), real.state_dict()[name].view(torch.int16))


def test_save_writes_kept_tensors_from_the_module_s_memory(tmp_path):
    torch.manual_seed(4)
    model = Net()
    model.act.weight.data.fill_(0.7)  # trained values
    model.mask.mul_(3)
    job = vsgen.torch.plan(model, seed=0)
    index = [info.name for info in job.infos].index("mask")
    assert np.shares_memory(job.plans[index].values, model.mask.numpy())  # no copy
    vsgen.torch.save(model, tmp_path / "m.safetensors", seed=0)
    written = safetensors_torch.load_file(str(tmp_path / "m.safetensors"))
    assert torch.equal(written["mask"], model.mask)
    assert torch.equal(written["act.weight"], torch.tensor([0.7]))
    assert torch.equal(written["position_ids"], model.position_ids)
    assert written["norm.num_batches_tracked"].item() == 0


def test_save_on_a_dask_cluster_writes_the_same_bytes(tmp_path):
    pytest.importorskip("distributed")
    with vsgen.torch.meta_parameters():
        meta = Net()
    local = tmp_path / "local"
    cluster = tmp_path / "cluster"
    vsgen.torch.save(meta, local, seed=2, format="safetensors-sharded", max_shard_size="8KB")
    vsgen.torch.save(
        meta,
        cluster,
        seed=2,
        format="safetensors-sharded",
        max_shard_size="8KB",
        scheduler="local:1",
    )
    files = sorted(path.name for path in local.iterdir())
    assert files == sorted(path.name for path in cluster.iterdir())
    for name in files:
        assert (local / name).read_bytes() == (cluster / name).read_bytes(), name


def test_save_replaces_an_existing_output_only_with_force(tmp_path):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"old")
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="exists"):
        vsgen.torch.save(model, target, seed=0)
    assert target.read_bytes() == b"old"
    vsgen.torch.save(model, target, seed=0, force=True)
    assert set(safetensors_torch.load_file(str(target))) == {"weight", "bias"}


# --- tied weights --------------------------------------------------------------------------


class TiedLM(nn.Module):
    """GPT-2's tie: the head's weight is the token embedding's."""

    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict({"wte": nn.Embedding(40, 8), "ln_f": nn.LayerNorm(8)})
        self.lm_head = nn.Linear(8, 40, bias=False)
        self.lm_head.weight = self.transformer.wte.weight


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_tied_weights_are_written_once_and_load_tied(tmp_path, device):
    with torch.device(device):
        model = TiedLM()
    target = tmp_path / "tied.safetensors"
    job = vsgen.torch.save(model, target, seed=9)
    # the name safetensors.torch.save_model keeps (the first in sorted order)
    reference = tmp_path / "reference.safetensors"
    safetensors_torch.save_model(TiedLM(), str(reference))
    written = safetensors_torch.load_file(str(target))
    assert set(written) == set(safetensors_torch.load_file(str(reference)))
    assert "lm_head.weight" in written and "transformer.wte.weight" not in written
    metadata = safetensors.safe_open(str(target), "pt").metadata()
    assert metadata["transformer.wte.weight"] == "lm_head.weight"  # as save_model records
    assert job.aliases == {"transformer.wte.weight": "lm_head.weight"}

    fresh = TiedLM()
    missing, unexpected = safetensors_torch.load_model(fresh, str(target))
    assert (list(missing), list(unexpected)) == ([], [])
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    assert torch.equal(fresh.lm_head.weight, written["lm_head.weight"])

    # init_ fills the tensor once, with the same bytes
    model = TiedLM()
    pointer = model.lm_head.weight.data_ptr()
    in_place = vsgen.torch.init_(model, seed=9)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == pointer
    assert torch.equal(model.lm_head.weight, written["lm_head.weight"])
    assert [info.name for info in in_place.infos] == [
        "transformer.ln_f.weight",
        "transformer.ln_f.bias",
        "lm_head.weight",
    ]


def test_the_plan_shows_the_alias():
    job = vsgen.torch.plan(TiedLM(), seed=0)
    row = next(row for row in job.rows if row.name == "lm_head.weight")
    assert row.aliases == ("transformer.wte.weight",)
    assert row.as_dict()["aliases"] == ["transformer.wte.weight"]
    assert job.records["lm_head.weight"]["aliases"] == ["transformer.wte.weight"]
    line = next(line for line in plan_table(job.rows) if line.startswith("lm_head"))
    assert line.startswith("lm_head.weight (= transformer.wte.weight)")
    # an Embedding tied to a Linear: the written name's module (Linear) decides
    assert row.reason == "Linear weight"


# --- meta_parameters -----------------------------------------------------------------------


def test_meta_parameters_keeps_buffers_and_ties():
    torch.manual_seed(0)
    real = Net()
    with vsgen.torch.meta_parameters():
        meta = Net()
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert all(isinstance(p, nn.Parameter) for p in meta.parameters())
    for name, buffer in meta.named_buffers():
        assert buffer.device.type == "cpu" and torch.equal(buffer, real.get_buffer(name)), name
    assert meta.head.weight is meta.embed.weight
    assert nn.Linear(2, 2).weight.device.type == "cpu"  # undone on exit
    with pytest.raises(RuntimeError, match="inside"), vsgen.torch.meta_parameters():
        raise RuntimeError("inside")
    assert nn.Linear(2, 2).weight.device.type == "cpu"


# --- what cannot be written ---------------------------------------------------------------


class Clip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))


def test_a_meta_buffer_without_values_is_refused_with_the_way_out(tmp_path):
    with torch.device("meta"):
        model = Net()
    target = tmp_path / "never.safetensors"
    with pytest.raises(ValueError) as caught:
        vsgen.torch.save(model, target, seed=0)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("buffer 'mask' is on the meta device and has no values")
    assert "(and 1 more)" in message  # position_ids
    assert "vsgen.torch.meta_parameters()" in message
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="buffer 'mask'"):
        vsgen.torch.plan(model, seed=0)
    # a rule is a way out too
    vsgen.torch.save(model, target, seed=0, rules={"mask": "ones", "position_ids": "zeros"})
    assert safetensors_torch.load_file(str(target))["mask"].eq(1).all()


def test_a_meta_parameter_that_is_kept_needs_a_rule(tmp_path):
    with torch.device("meta"):
        model = Clip()
    with pytest.raises(ValueError, match=r"^parameter 'logit_scale' is on the meta device.*rules="):
        vsgen.torch.save(model, tmp_path / "clip.safetensors", seed=0)
    vsgen.torch.save(
        model, tmp_path / "clip.safetensors", seed=0, rules={"logit_scale": {"constant": 2.6592}}
    )
    written = safetensors_torch.load_file(str(tmp_path / "clip.safetensors"))
    assert written["logit_scale"].item() == pytest.approx(2.6592)


def test_the_torch_convention_computes_what_a_reset_sets_on_meta(tmp_path):
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.PReLU(3, init=0.1))
    vsgen.torch.save(model, tmp_path / "m.safetensors", seed=1, convention="torch")
    written = safetensors_torch.load_file(str(tmp_path / "m.safetensors"))
    assert torch.equal(written["2.weight"], torch.full((3,), 0.1))
    assert written["1.num_batches_tracked"].item() == 0
    assert written["0.weight"].abs().max() <= 1 / math.sqrt(8)
    # what it cannot reproduce has no values on meta: refused, with the reason
    with torch.device("meta"):
        odd = nn.Module()
        odd.rotation = nn.Linear(4, 4)
        nn.init.orthogonal_(odd.rotation.weight)

        class Rotation(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.weight = nn.Parameter(torch.empty(4, 4))

            def reset_parameters(self) -> None:
                nn.init.orthogonal_(self.weight)

        odd.custom = Rotation()
    with pytest.raises(ValueError, match=r"parameter 'custom.weight'.*skips meta tensors"):
        vsgen.torch.save(odd, tmp_path / "odd.safetensors", seed=1, convention="torch")


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda: nn.LazyLinear(4), {}, "tensor 'weight' is not materialised yet"),
        (lambda: nn.Linear(2, 2), {"convention": "keras"}, "Argument `convention` must be one of"),
        (lambda: nn.Linear(2, 2), {"convention": "hf"}, "Linear is not a transformers"),
        (lambda: nn.Linear(2, 2), {"scheduler": 3}, "Argument `scheduler` must be"),
        (lambda: nn.Linear(2, 2, dtype=torch.complex64), {}, "dtype complex64"),
        (lambda: nn.Linear(2, 2), {"stream": "keras"}, "sequential"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, make, kwargs, message):
    target = tmp_path / "out.safetensors"
    with pytest.raises((ValueError, TypeError), match=message) as caught:
        vsgen.torch.save(make(), target, seed=0, **kwargs)
    assert "\n" not in str(caught.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--convention", "tensorflow"], "Error: --convention: unknown name 'tensorflow'"),
        (["--convention", "torch", "--shape", "3,3"], "--convention applies to whole models"),
    ],
)
def test_cli_convention_errors(tmp_path, args, message):
    spec = tmp_path / "m.toml"
    spec.write_text('[tensors]\n"fc.weight" = [4, 3]\n', encoding="utf-8")
    base = [] if "--shape" in args else ["--spec", str(spec)]
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(cli, ["sample", *base, *args, "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr and not out.exists()


# --- the to_empty route ----------------------------------------------------------------------


def test_init_after_to_empty_resets_what_the_torch_convention_defines():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.to_empty(device="cpu")
    model[1].num_batches_tracked.fill_(140200058533840)  # what to_empty left, once
    model[1].running_var.fill_(float("nan"))
    vsgen.torch.init_(model, seed=0, convention="torch")
    assert model[1].num_batches_tracked.item() == 0
    assert torch.equal(model[1].running_var, torch.ones(4))
    assert torch.equal(model[1].running_mean, torch.zeros(4))


def test_init_refuses_kept_bool_garbage_and_warns_of_non_finite_kept_values():
    model = nn.Module()
    model.fc = nn.Linear(3, 3)
    model.register_buffer("mask", torch.ones(4, dtype=torch.bool))
    model.register_buffer("window", torch.ones(4))
    model.mask.view(torch.uint8)[2] = 7  # memory never written as a bool
    before = model.fc.weight.clone()
    with pytest.raises(ValueError, match=r"bool tensor 'mask'.*bytes other than 0 and 1"):
        vsgen.torch.init_(model, seed=0)
    assert torch.equal(model.fc.weight, before)  # nothing changed
    model.mask.fill_(True)
    model.window[1] = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vsgen.torch.init_(model, seed=0)
    assert any("'window', which init_ keeps, holds non-finite" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="meta device and has no memory.*vsgen.torch.save"):
        vsgen.torch.init_(nn.Linear(2, 2, device="meta"), seed=0)


# --- provenance of a padding row -------------------------------------------------------------


def test_a_padding_row_is_recorded_and_replayed(tmp_path):
    model = nn.Sequential(nn.Embedding(30, 8, padding_idx=4), nn.Linear(8, 3))
    target = tmp_path / "m.safetensors"
    vsgen.torch.save(model, target, seed=5)
    records = json.loads(safetensors.safe_open(str(target), "np").metadata()["vsgen"])["tensors"]
    assert records["0.weight"]["set_rows"] == [[4, 0.0]]
    written = safetensors.numpy.load_file(str(target))
    assert not written["0.weight"][4].any() and written["0.weight"][5].any()
    again = tmp_path / "again.safetensors"
    result = CliRunner().invoke(cli, ["sample", "--config-from", str(target), "-o", str(again)])
    assert result.exit_code == 0, result.stderr
    assert again.read_bytes() == target.read_bytes()


def test_one_padded_tensor_is_replayed_whole(tmp_path):
    model = nn.Sequential(nn.Embedding(30, 8, padding_idx=4), nn.Linear(8, 3))
    target = tmp_path / "m.safetensors"
    vsgen.torch.save(model, target, seed=5)
    one = tmp_path / "embedding.npy"
    args = ["sample", "--config-from", str(target), "--name", "0.weight"]
    result = CliRunner().invoke(cli, [*args, "-o", str(one)])
    assert result.exit_code == 0, result.stderr
    written = safetensors.numpy.load_file(str(target))["0.weight"]
    np.testing.assert_array_equal(np.load(one), written)
    result = CliRunner().invoke(cli, [*args, "--rows", "0:3", "-o", str(tmp_path / "rows.npy")])
    assert result.exit_code == 2 and "drop --rows, --shard and --dtype" in result.stderr


def test_a_convention_of_ones_own():
    class Zeros(vsgen.torch.ModuleConvention):
        name = "zeros"

        def choices(self, module, tensors):
            return {
                item.name: vsgen.modelspec.Choice(
                    vsgen.conventions.ZEROS, "mine", "convention zeros"
                )
                for item in tensors
            }

        def kept_name(self, names):
            return max(names)  # the last in sorted order

    model = TiedLM()
    job = vsgen.torch.init_(model, seed=0, convention=Zeros())
    assert not any(tensor.any() for tensor in model.state_dict().values())
    assert job.aliases == {"lm_head.weight": "transformer.wte.weight"}
    assert {row.origin_text() for row in job.rows} == {"convention zeros: mine"}
