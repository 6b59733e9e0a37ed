"""``vsgen.hf`` and ``vsgen sample --like config.json`` on real transformers models.

Every model is built from a tiny config written here (no network, no hub):

* the ``"hf"`` convention against transformers' own initialisation
  (``torch.manual_seed`` then ``Model(config)``): two-sample Kolmogorov-Smirnov
  tests per tensor group (a group: one tensor's name with the layer number left
  out, values pooled over layers and 12 fixed seeds; alpha = 1e-3), exact
  equality for constants and padding rows;
* the directories written load with ``from_pretrained(..., output_loading_info=True)``
  reporting no missing, unexpected or mismatched key and transformers logging no
  warning, tied weights tied, for tied and untied configs of five architectures;
* the command line route, ``--force``, and bad input (one line, exit 2, nothing
  written).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402
from scipy import stats  # noqa: E402

import vsgen.hf  # noqa: E402
import vsgen.torch  # noqa: E402
from vsgen.cli import cli  # noqa: E402

pytestmark = pytest.mark.required_in_ci
nn = torch.nn

SEEDS = range(12)
ALPHA = 1e-3


def tiny(kind: str, **overrides) -> transformers.PretrainedConfig:
    """A config of a few thousand parameters: two layers, width 32, vocabulary 128."""
    decoder = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    if kind == "llama":
        config = transformers.LlamaConfig(**decoder)
    elif kind == "mistral":
        config = transformers.MistralConfig(**decoder)
    elif kind == "qwen2":
        config = transformers.Qwen2Config(**decoder)
    elif kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=128, n_embd=32, n_layer=3, n_head=4, n_positions=64,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
    elif kind == "bert":
        config = transformers.BertConfig(
            vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, architectures=["BertForMaskedLM"],
        )  # fmt: skip
    else:
        raise AssertionError(kind)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def model_class(config) -> type:
    if config.architectures:
        return getattr(transformers, config.architectures[0])
    return transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]


def group(name: str) -> str:
    """``model.layers.1.mlp.up_proj.weight`` -> ``model.layers.*.mlp.up_proj.weight``."""
    return re.sub(r"\.[0-9]+\.", ".*.", name)


def transformers_values(config, seeds=SEEDS) -> dict[str, list[np.ndarray]]:
    """Each state-dict tensor of transformers' own initialisation, per seed."""
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for seed in seeds:
        torch.manual_seed(seed)
        model = model_class(config)(config)
        for name, tensor in model.state_dict().items():
            out[name].append(tensor.detach().double().numpy())
    return out


def vsgen_values(config, seeds=SEEDS, **kwargs) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for seed in seeds:
        job = vsgen.hf.plan(config, seed=seed, **kwargs)
        for name, array in job.arrays().items():
            out[name].append(np.asarray(array, dtype=np.float64))
    return out


def pooled(values: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for name, arrays in values.items():
        groups[group(name)].extend(a.reshape(-1) for a in arrays)
    return {key: np.concatenate(arrays) for key, arrays in groups.items()}


# --- the hf convention against transformers' own init -----------------------------------------

ARCHITECTURES = ["llama", "mistral", "qwen2", "gpt2", "bert"]


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_the_hf_convention_draws_what_transformers_draws(kind):
    config = tiny(kind)
    theirs = transformers_values(config)
    ours = vsgen_values(config)
    # Written once per tied group: every written name is transformers' own.
    assert set(ours) <= set(theirs)
    ours_pooled, theirs_pooled = pooled(ours), pooled(theirs)
    compared = 0
    for key, reference in theirs_pooled.items():
        if key not in ours_pooled:  # a tied target, written under its source
            continue
        sample = ours_pooled[key]
        assert sample.shape == reference.shape, key
        if np.all(reference == reference[0]):  # a constant: exactly
            assert np.array_equal(sample, reference), key
            continue
        result = stats.ks_2samp(sample, reference)
        assert result.pvalue > ALPHA, (key, result, sample.std(), reference.std())
        compared += 1
    assert compared >= 6


def test_the_ks_test_tells_the_scaled_projections_apart():
    """The test above can fail: GPT-2's c_proj (stddev 0.02 / sqrt(6)) against its
    c_fc (0.02)."""
    config = tiny("gpt2")
    theirs = pooled(transformers_values(config, range(4)))
    ours = pooled(vsgen_values(config, range(4)))
    result = stats.ks_2samp(
        ours["transformer.h.*.mlp.c_fc.weight"], theirs["transformer.h.*.mlp.c_proj.weight"]
    )
    assert result.pvalue < 1e-12


def test_gpt2_residual_projections_are_scaled_by_the_depth():
    config = tiny("gpt2", initializer_range=0.03)
    rows = {row.name: row for row in vsgen.hf.plan(config, seed=0).rows}
    scaled = 0.03 / math.sqrt(2 * 3)
    for layer in range(3):
        for path in ("attn.c_proj", "mlp.c_proj"):
            row = rows[f"transformer.h.{layer}.{path}.weight"]
            assert row.kind == "random_normal" and row.mean == 0
            assert row.stddev == pytest.approx(scaled, rel=1e-15)
        assert rows[f"transformer.h.{layer}.attn.c_attn.weight"].stddev == 0.03
        assert rows[f"transformer.h.{layer}.attn.c_attn.bias"].value == 0
        assert rows[f"transformer.h.{layer}.ln_1.weight"].value == 1
    assert rows["transformer.wte.weight"].origin == "convention hf"
    assert "GPT2LMHeadModel._init_weights" in rows["transformer.wte.weight"].reason


def test_padding_rows_are_zero_as_in_transformers():
    config = tiny("llama", pad_token_id=5)
    torch.manual_seed(0)
    reference = model_class(config)(config).model.embed_tokens.weight.detach()
    assert torch.all(reference[5] == 0)  # the oracle sets it
    job = vsgen.hf.plan(config, seed=0)
    embed = job.arrays()["model.embed_tokens.weight"]
    assert np.all(embed[5] == 0) and np.all(embed[4] != 0) and np.all(embed[6] != 0)
    row = {row.name: row for row in job.rows}["model.embed_tokens.weight"]
    assert row.set_rows == ((5, 0.0),)


def test_a_tied_embedding_keeps_the_initialisation_of_its_source():
    """BERT ties the decoder of its head to the word embeddings after initialising both:
    the embedding's padding row stays zero (a tied recording would lose it)."""
    config = tiny("bert")
    assert config.pad_token_id == 0 and config.tie_word_embeddings
    torch.manual_seed(0)
    model = model_class(config)(config)
    assert torch.all(model.cls.predictions.decoder.weight[0] == 0)
    job = vsgen.hf.plan(config, seed=0)
    arrays = job.arrays()
    assert "cls.predictions.decoder.weight" not in arrays
    assert np.all(arrays["bert.embeddings.word_embeddings.weight"][0] == 0)
    assert job.aliases == {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }


def test_initializer_range_is_read_from_the_config_and_can_be_replaced(tmp_path):
    config = tiny("qwen2", initializer_range=0.05)
    theirs = pooled(transformers_values(config, range(6)))
    ours = pooled(vsgen_values(config, range(6)))
    key = "model.layers.*.mlp.down_proj.weight"
    assert stats.ks_2samp(ours[key], theirs[key]).pvalue > ALPHA
    assert ours[key].std() == pytest.approx(0.05, rel=0.05)
    job = vsgen.hf.save_pretrained(tiny("qwen2"), tmp_path / "m", seed=0, initializer_range=0.01)
    assert {row.stddev for row in job.rows if row.kind == "random_normal"} == {0.01}
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    assert written["initializer_range"] == 0.01


def test_rules_come_before_the_convention():
    job = vsgen.hf.plan(
        tiny("llama"),
        seed=0,
        rules={"*.mlp.*": {"truncated_normal": 0.1}, "model.norm.weight": "zeros"},
    )
    rows = {row.name: row for row in job.rows}
    assert rows["model.layers.0.mlp.up_proj.weight"].kind == "truncated_normal"
    assert rows["model.norm.weight"].value == 0
    assert rows["model.layers.0.self_attn.q_proj.weight"].stddev == 0.02


def test_the_hf_convention_is_for_transformers_models_only():
    with pytest.raises(TypeError, match="Linear is not a transformers PreTrainedModel"):
        vsgen.torch.plan(nn.Linear(3, 2), seed=0, convention="hf")


def test_a_transformers_model_defaults_to_the_hf_convention():
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(tiny("llama"))
    rows = vsgen.torch.plan(model, seed=0).rows
    assert {row.origin for row in rows} == {"convention hf"}
    vsgen_rows = vsgen.torch.plan(model, seed=0, convention="vsgen").rows
    by_name = {row.name: row for row in vsgen_rows}
    assert by_name["model.layers.0.mlp.up_proj.weight"].kind == "variance_scaling"
    # LlamaRMSNorm is not a norm vsgen knows: kept, i.e. what transformers gives it
    assert by_name["model.norm.weight"].value == 1
    assert "LlamaForCausalLM._init_weights" in by_name["model.norm.weight"].reason


def test_init_in_place_of_a_model_built_with_memory():
    """transformers marks what it initialised (``_is_hf_initialized``); the recording
    runs on a copy without the marks, so vsgen draws every tensor in place."""
    config = tiny("gpt2")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    before = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    job = vsgen.torch.init_(model, seed=5)
    assert {row.origin for row in job.rows} == {"convention hf"}
    expected = vsgen.hf.plan(config, seed=5).arrays()
    state = model.state_dict()
    for name, array in expected.items():
        assert np.array_equal(state[name].numpy(), array), name
    assert not torch.equal(model.transformer.h[0].mlp.c_fc.weight, before)
    assert model.lm_head.weight is model.transformer.wte.weight


# --- a checkpoint known by names only ----------------------------------------------------------


def test_the_hf_convention_by_names_on_a_checkpoint(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(tiny("bert"))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "decoder" not in k}
    save_file(state, str(tmp_path / "bert.safetensors"))
    like = str(tmp_path / "bert.safetensors")
    result = invoke("--like", like, "--convention", "hf", "--plan", "--json", "--seed", "0")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["tensors"]}
    query = rows["bert.encoder.layer.0.attention.self.query.weight"]
    assert query["kind"] == "random_normal" and query["stddev"] == 0.02
    assert rows["bert.embeddings.word_embeddings.weight"]["stddev"] == 0.02
    assert rows["bert.encoder.layer.0.attention.self.query.bias"]["value"] == 0
    assert rows["bert.embeddings.LayerNorm.weight"]["value"] == 1
    assert rows["bert.embeddings.LayerNorm.bias"]["value"] == 0
    assert rows["cls.predictions.bias"]["kind"] == "copy"  # no weight beside it: kept


# --- directories from_pretrained loads ---------------------------------------------------------


class TransformersWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_warnings():
    handler = TransformersWarnings()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def load(directory, auto=None):
    config = transformers.AutoConfig.from_pretrained(directory)
    if auto is None:
        auto = (
            transformers.AutoModelForMaskedLM
            if config.model_type == "bert"
            else transformers.AutoModelForCausalLM
        )
    return auto.from_pretrained(directory, output_loading_info=True)


CASES = [
    ("llama", True),
    ("llama", False),
    ("mistral", False),
    ("qwen2", True),
    ("qwen2", False),
    ("gpt2", True),
    ("gpt2", False),
    ("bert", True),
    ("bert", False),
]


@pytest.mark.parametrize(("kind", "tied"), CASES)
def test_from_pretrained_loads_every_key_without_a_warning(
    tmp_path, transformers_warnings, kind, tied
):
    config = tiny(kind, tie_word_embeddings=tied)
    job = vsgen.hf.save_pretrained(config, tmp_path / "out", seed=3)
    model, info = load(tmp_path / "out")
    assert info == {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
    }
    assert transformers_warnings == []
    # every value is the plan's, under transformers' own names
    arrays = job.arrays()
    state = model.state_dict()
    for name, array in arrays.items():
        assert np.array_equal(state[name].detach().numpy(), array), name
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    assert (head.weight is embedding.weight) == tied
    if tied:  # the target is not written: from_pretrained re-ties it
        assert not any(
            name.endswith("decoder.weight") or name == "lm_head.weight" for name in arrays
        )
    written = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert list(written["weight_map"]) == [info.name for info in job.infos]


def test_the_control_a_missing_key_is_reported(tmp_path, transformers_warnings):
    """The check above can fail: a directory with one tensor removed is reported."""
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file

    out = tmp_path / "out"
    vsgen.hf.save_pretrained(tiny("llama"), out, seed=0)
    shard = out / "model-00001-of-00001.safetensors"
    tensors = load_torch(str(shard))
    del tensors["model.norm.weight"]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index = json.loads((out / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.norm.weight"]
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    _, info = load(out)
    assert info["missing_keys"] == {"model.norm.weight"}
    assert any("newly initialized" in message for message in transformers_warnings)


def test_the_directory_holds_the_configs_and_the_written_dtype(tmp_path):
    config = tiny("llama", tie_word_embeddings=True)
    config.dtype = "bfloat16"
    vsgen.hf.save_pretrained(config, tmp_path / "bf16", seed=0)
    out = tmp_path / "bf16"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
    ]
    written = json.loads((out / "config.json").read_text())
    assert written["dtype"] == "bfloat16" and written["architectures"] == ["LlamaForCausalLM"]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["bos_token_id"] == config.bos_token_id
    model, _ = load(out)
    assert model.dtype == torch.bfloat16
    shard = (out / "model-00001-of-00001.safetensors").read_bytes()
    header = json.loads(shard[8 : 8 + int.from_bytes(shard[:8], "little")])
    assert header["model.norm.weight"]["dtype"] == "BF16"
    # dtype= replaces the config's, in the weights and in config.json
    vsgen.hf.save_pretrained(config, tmp_path / "f16", seed=0, dtype="float16")
    assert json.loads((tmp_path / "f16" / "config.json").read_text())["dtype"] == "float16"
    assert load(tmp_path / "f16")[0].dtype == torch.float16
    # an encoder that does not generate has no generation_config.json
    vsgen.hf.save_pretrained(tiny("bert"), tmp_path / "bert", seed=0, model_class="BertModel")
    assert not (tmp_path / "bert" / "generation_config.json").exists()
    _, info = load(tmp_path / "bert", transformers.AutoModel)
    assert not any(info.values())


def test_many_shards_and_the_torch_route_write_the_same(tmp_path):
    config = tiny("gpt2")
    vsgen.hf.save_pretrained(config, tmp_path / "a", seed=9, max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "a").glob("model-*.safetensors"))
    assert len(shards) > 2
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(config)
    vsgen.torch.save(
        model, tmp_path / "b", seed=9, format="safetensors-sharded", max_shard_size="20KB"
    )
    for name in [*shards, "config.json", "generation_config.json", "model.safetensors.index.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    _, info = load(tmp_path / "b")
    assert not any(info.values())


def test_a_model_with_a_persistent_buffer_keeps_the_values_transformers_computes(tmp_path):
    """Buffers cannot hold values on the meta device: such a model is built with its
    parameters on meta and its buffers computed (and initialised) by transformers."""
    config = BufferConfig(width=8)
    torch.manual_seed(0)
    reference = BufferModel(config)
    vsgen.hf.save_pretrained(config, tmp_path / "out", seed=0, model_class=BufferModel)
    written = load_file(str(tmp_path / "out" / "model-00001-of-00001.safetensors"))
    assert np.array_equal(written["window"], reference.window.numpy())
    assert np.array_equal(written["steps"], reference.steps.numpy())  # _init_weights' zeros
    assert written["proj.weight"].std() == pytest.approx(0.02, rel=0.3)
    loaded, info = BufferModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values())


class BufferConfig(transformers.PretrainedConfig):
    model_type = "vsgen-test-buffers"

    def __init__(self, width: int = 8, initializer_range: float = 0.02, **kwargs) -> None:
        self.width = width
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


class BufferModel(transformers.PreTrainedModel):
    config_class = BufferConfig

    def __init__(self, config: BufferConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.width, config.width)
        self.register_buffer("window", torch.hann_window(config.width))
        self.register_buffer("steps", torch.full((3,), 7, dtype=torch.int64))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BufferModel):
            transformers.initialization.zeros_(module.steps)


class OddModel(transformers.PreTrainedModel):
    """An _init_weights vsgen cannot reproduce: arithmetic on the drawn values."""

    config_class = BufferConfig

    def __init__(self, config: BufferConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.width, config.width)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, 0.02)
            module.weight.mul_(2.0)
            module.bias.zero_()


def test_what_the_model_init_cannot_reproduce_is_refused_on_meta(tmp_path):
    with pytest.raises(
        ValueError, match=r"parameter 'proj.weight' is on the meta device.*mul_"
    ) as caught:
        vsgen.hf.save_pretrained(BufferConfig(), tmp_path / "out", seed=0, model_class=OddModel)
    assert "\n" not in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_a_meta_buffer_without_values_is_refused(tmp_path):
    with torch.device("meta"):
        model = BufferModel(BufferConfig())
    with pytest.raises(ValueError, match=r"buffer 'window' is on the meta device.*meta_parameters"):
        vsgen.torch.save(model, tmp_path / "out", seed=0, format="safetensors-sharded")
    assert not list(tmp_path.iterdir())


# --- the command line ----------------------------------------------------------------------------


def write_config(directory: Path, config) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    return directory / "config.json"


def invoke(*args: str):
    return CliRunner().invoke(cli, ["sample", *args])


def test_cli_like_config_json_writes_a_loadable_directory(tmp_path, transformers_warnings):
    config = tiny("llama", tie_word_embeddings=True)
    config.dtype = "bfloat16"
    path = write_config(tmp_path / "cfg", config)
    result = invoke(
        "--like",
        str(path),
        "--seed",
        "4",
        "-o",
        str(tmp_path / "out"),
        "--format",
        "safetensors-sharded",
    )
    assert result.exit_code == 0, result.stderr
    model, info = load(tmp_path / "out")
    assert not any(info.values()) and transformers_warnings == []
    assert model.dtype == torch.bfloat16  # the config's dtype by default
    same = vsgen.hf.plan(path, seed=4).arrays()
    for name, array in same.items():
        assert np.array_equal(model.state_dict()[name].float().numpy(), array.astype(np.float32))
    # a directory holding the config and no weights; a directory output means shards
    result = invoke("--like", str(tmp_path / "cfg"), "--seed", "4", "-o", str(tmp_path / "again"))
    assert result.exit_code == 0, result.stderr
    for name in ("model-00001-of-00001.safetensors", "config.json", "model.safetensors.index.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    result = invoke(
        "--like", str(path), "--seed", "4", "-o", str(tmp_path / "f32"), "--dtype", "float32"
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "f32" / "config.json").read_text())["dtype"] == "float32"


def test_cli_plan_of_a_config(tmp_path):
    path = write_config(tmp_path / "cfg", tiny("gpt2"))
    result = invoke("--like", str(path), "--seed", "0", "--plan")
    assert result.exit_code == 0, result.stderr
    assert "transformer.wte.weight (= lm_head.weight)" in result.stdout
    assert "convention hf: GPT2LMHeadModel._init_weights" in result.stdout
    result = invoke("--like", str(path), "--seed", "0", "--plan", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)["tensors"]}
    assert rows["transformer.h.0.attn.c_proj.weight"]["stddev"] == pytest.approx(
        0.02 / math.sqrt(6)
    )
    assert rows["transformer.wte.weight"]["aliases"] == ["lm_head.weight"]
    assert not list((tmp_path / "cfg").glob("*.safetensors"))


def test_cli_config_to_one_file_says_the_configs_are_not_written(tmp_path):
    path = write_config(tmp_path / "cfg", tiny("mistral"))
    result = invoke("--like", str(path), "--seed", "0", "-o", str(tmp_path / "m.safetensors"))
    assert result.exit_code == 0, result.stderr
    assert "config.json and generation_config.json are written only beside" in result.stderr
    written = load_file(str(tmp_path / "m.safetensors"))
    assert "lm_head.weight" in written and len(written) == 21


def test_cli_initializer_options_the_hf_convention_leaves_unused_are_said(tmp_path):
    path = write_config(tmp_path / "cfg", tiny("llama"))
    result = invoke("--like", str(path), "--preset", "he_normal", "--plan", "--json")
    assert result.exit_code == 0, result.stderr
    assert "the initializer options serve no tensor" in result.stderr
    result = invoke(
        "--like", str(path), "--preset", "he_normal", "--convention", "vsgen", "--plan", "--json"
    )
    assert result.exit_code == 0 and result.stderr == ""
    rows = json.loads(result.stdout)["tensors"]
    assert {row["init"] for row in rows if row["origin"] == "default"} == {"he_normal"}


def test_cli_config_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    path = write_config(tmp_path / "cfg", tiny("qwen2", tie_word_embeddings=True))
    out = tmp_path / "out"
    result = invoke(
        "--like", str(path), "--seed", "1", "-o", str(out), "--scheduler", "local:2", "-q"
    )
    assert result.exit_code == 0, result.stderr
    _, info = load(out)
    assert not any(info.values())
    vsgen.hf.save_pretrained(path, tmp_path / "local", seed=1)
    for name in ("model-00001-of-00001.safetensors", "config.json", "model.safetensors.index.json"):
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_cli_force_replaces_only_what_vsgen_wrote(tmp_path):
    path = write_config(tmp_path / "cfg", tiny("llama"))
    out = tmp_path / "out"
    args = ("--like", str(path), "-o", str(out))
    assert invoke(*args, "--seed", "1").exit_code == 0
    first = (out / "model-00001-of-00001.safetensors").read_bytes()
    result = invoke(*args, "--seed", "2")
    assert result.exit_code == 2 and "exists; use --force" in result.stderr
    result = invoke(*args, "--seed", "2", "--force")
    assert result.exit_code == 0, result.stderr
    assert (out / "model-00001-of-00001.safetensors").read_bytes() != first
    # a config edited since, or a file added, is not vsgen's: the directory stays
    config_text = (out / "config.json").read_text()
    (out / "config.json").write_text(
        config_text.replace('"initializer_range": 0.02', '"initializer_range": 0.03')
    )
    result = invoke(*args, "--seed", "3", "--force")
    assert result.exit_code == 2 and "holds other files" in result.stderr
    (out / "config.json").write_text(config_text)
    (out / "README.md").write_text("notes")
    result = invoke(*args, "--seed", "3", "--force")
    assert result.exit_code == 2 and "holds other files" in result.stderr
    assert (out / "README.md").read_text() == "notes"
    (out / "README.md").unlink()
    assert invoke(*args, "--seed", "3", "--force").exit_code == 0


LLAMA = {"model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 1}
BAD_CONFIGS = [
    ({**LLAMA, "hidden_size": 30}, "transformers cannot read it"),
    (
        {**LLAMA, "hidden_size": 32, "intermediate_size": -8},
        "transformers cannot build LlamaForCausalLM from this config (RuntimeError",
    ),
    ({"model_type": "no-such-model", "hidden_size": 32}, "unknown architecture: transformers"),
    ({**LLAMA, "architectures": ["LlamaForTea"]}, "unknown architecture 'LlamaForTea'"),
    ({"hidden_size": 32}, "not a Hugging Face config (no model_type)"),
    ({**LLAMA, "torch_dtype": "int8"}, "the config's dtype must be a floating type"),
]


@pytest.mark.parametrize(("document", "message"), BAD_CONFIGS)
def test_cli_bad_configs_are_one_line_and_write_nothing(tmp_path, document, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    out = tmp_path / "out"
    result = invoke("--like", str(path), "-o", str(out), "--seed", "0")
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_cli_a_tensor_without_values_is_one_line(tmp_path):
    """A rule that keeps a meta tensor leaves it without values: refused, nothing written."""
    path = write_config(tmp_path / "cfg", tiny("llama"))
    spec = tmp_path / "keep.toml"
    spec.write_text('[rules]\n"model.norm.weight" = "copy"\n')
    result = invoke("--like", str(path), "--spec", str(spec), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "parameter 'model.norm.weight' is on the meta device and has no values" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_without_transformers_says_what_to_install(tmp_path, monkeypatch):
    path = write_config(tmp_path / "cfg", tiny("llama"))
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    # ... here and in the child process that builds the model
    fake = tmp_path / "fake" / "transformers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'transformers'\")\n")
    monkeypatch.syspath_prepend(str(fake.parent))  # the child takes this sys.path
    result = invoke("--like", str(path), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: --like {path}: a model from a Hugging Face config needs transformers: "
        "pip install 'vsgen[hf]'"
    )
    assert not (tmp_path / "out").exists()


def test_cli_an_unknown_convention_names_hf(tmp_path):
    path = write_config(tmp_path / "cfg", tiny("llama"))
    result = invoke("--like", str(path), "--convention", "jax", "--plan")
    assert result.exit_code == 2
    assert "use one of vsgen, torch, hf" in result.stderr


def test_config_file_tells_configs_from_checkpoints(tmp_path):
    from vsgen.hf import config_file

    write_config(tmp_path / "cfg", tiny("llama"))
    assert config_file(tmp_path / "cfg") == str(tmp_path / "cfg" / "config.json")
    assert config_file(tmp_path / "cfg" / "config.json") == str(tmp_path / "cfg" / "config.json")
    vsgen.hf.save_pretrained(tmp_path / "cfg", tmp_path / "model", seed=0)
    assert config_file(tmp_path / "model") is None  # weights: a checkpoint
    assert config_file(tmp_path / "model" / "model.safetensors.index.json") is None
    assert config_file(tmp_path / "model" / "model-00001-of-00001.safetensors") is None


def test_python_bad_arguments():
    with pytest.raises(ValueError, match=r"Argument `initializer_range` must be a positive float"):
        vsgen.hf.plan(tiny("llama"), initializer_range=-1)
    with pytest.raises(ValueError, match=r"Argument `dtype` must be a floating type"):
        vsgen.hf.plan(tiny("llama"), dtype="int32")
    with pytest.raises(
        TypeError, match=r"Argument `config` must be a transformers PretrainedConfig"
    ):
        vsgen.hf.plan(3)
    with pytest.raises(
        ValueError, match=r"AutoModelForImageClassification has no model for LlamaConfig"
    ):
        vsgen.hf.plan(tiny("llama"), model_class="AutoModelForImageClassification")
    with pytest.raises(
        ValueError, match=r"Argument `model_class` must be a transformers model class"
    ):
        vsgen.hf.plan(tiny("llama"), model_class="Dropout")


def test_the_readme_block_runs_as_written(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### From a Hugging Face config", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert found is not None
    exec(compile(found.group(1), "README.md", "exec"), {})  # in tmp_path (conftest)
    assert (tmp_path / "tiny-llama" / "config.json").exists()


# --- planning in a child process (the command line's way) ---------------------------------------


def _same_jobs(one, other) -> None:
    assert one.infos == other.infos
    assert one.records == other.records
    assert one.rows == other.rows
    assert one.aliases == other.aliases
    assert one.companions == other.companions
    assert one.warnings == other.warnings
    for mine, theirs in zip(one.plans, other.plans, strict=True):
        assert type(mine) is type(theirs)
        assert mine.array().tobytes() == theirs.array().tobytes()


@pytest.mark.parametrize(("kind", "tied"), [("llama", True), ("gpt2", False), ("bert", False)])
def test_a_plan_made_in_a_child_process_is_the_plan_made_here(tmp_path, kind, tied):
    path = write_config(tmp_path / "cfg", tiny(kind, tie_word_embeddings=tied))
    here = vsgen.hf.plan(path, seed=7)
    there = vsgen.hf.plan(path, seed=7, isolate=True)
    _same_jobs(here, there)
    assert there.aliases == ({"lm_head.weight": "model.embed_tokens.weight"} if tied else {})


def test_a_child_s_error_is_raised_here_as_it_was_raised_there():
    document = {"model_type": "no-such-model"}
    with pytest.raises(ValueError) as here:
        vsgen.hf.plan(document)
    with pytest.raises(ValueError) as there:
        vsgen.hf.plan(document, isolate=True)
    assert str(there.value) == str(here.value)
    with pytest.raises(TypeError, match=r"Argument `isolate`: the arguments do not pickle"):
        vsgen.hf.plan(tiny("llama"), rules={"x": lambda: 0}, isolate=True)


def test_the_child_sends_its_warnings_and_its_answer(monkeypatch):
    """The child's side of the exchange, run here: a warning raised while planning
    travels with the job."""
    import io
    import warnings

    from vsgen import _hf_planner

    def plan(**kwargs):
        warnings.warn("a note from planning", UserWarning, stacklevel=1)
        return {"planned": kwargs}

    monkeypatch.setattr(vsgen.hf, "plan", plan)
    stdin = io.TextIOWrapper(io.BytesIO(pickle.dumps({"seed": 3})))
    stdout = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", stdout)
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert _hf_planner.main() == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    kind, payload, raised = pickle.loads(stdout.buffer.getvalue())
    assert (kind, payload) == ("job", {"planned": {"seed": 3}})
    assert raised == [(UserWarning, "a note from planning")]


def test_the_parent_raises_the_child_s_warnings_again_and_reports_a_dead_child(monkeypatch):
    answer = pickle.dumps(("job", "the job", [(UserWarning, "from the child")]))
    code = f"import sys; sys.stdin.buffer.read(); sys.stdout.buffer.write({answer!r})"
    monkeypatch.setattr(vsgen.hf, "_child_command", lambda: [sys.executable, "-c", code])
    with pytest.warns(UserWarning, match="^from the child$"):
        assert vsgen.hf.plan({"model_type": "llama"}, isolate=True) == "the job"
    dead = "import sys; sys.stdin.buffer.read(); sys.exit(3)"
    monkeypatch.setattr(vsgen.hf, "_child_command", lambda: [sys.executable, "-c", dead])
    with pytest.raises(OSError, match="builds the model from its config exited with status 3$"):
        vsgen.hf.plan({"model_type": "llama"}, isolate=True)
    killed = "import os, signal, sys; sys.stdin.buffer.read(); os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(vsgen.hf, "_child_command", lambda: [sys.executable, "-c", killed])
    with pytest.raises(OSError, match="was ended by signal 9$"):
        vsgen.hf.plan({"model_type": "llama"}, isolate=True)


def test_the_command_line_writes_a_model_without_importing_torch(tmp_path):
    """The writing process never holds torch or transformers: the child built the model."""
    path = write_config(tmp_path / "cfg", tiny("llama", tie_word_embeddings=True))
    out = tmp_path / "out"
    command = [sys.executable, "-X", "importtime", "-m", "vsgen", "sample", "--like", str(path)]
    done = subprocess.run(
        [*command, "--seed", "5", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "vsgen.hf" in imported  # the listing is this process's
    assert not {"torch", "transformers"} & imported
    here = vsgen.hf.plan(path, seed=5)
    written = load_file(str(out / "model-00001-of-00001.safetensors"))
    assert sorted(written) == sorted(info.name for info in here.infos)
    import ml_dtypes  # noqa: F401 - safetensors reads bfloat16 through it

    for info, plan in zip(here.infos, here.plans, strict=True):
        assert written[info.name].tobytes() == plan.array().tobytes(), info.name
