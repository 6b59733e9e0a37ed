"""Conventions: what each tensor of a model gets when no rule says otherwise.

A *convention* decides, for every tensor that has no ``init`` of its own and
that no rule matches, whether it is drawn (and from what), set to a constant,
or keeps its values. Three exist:

* ``"vsgen"`` (the default): the chosen initializer (``--preset``, a spec's
  ``init``, ``vsgen.torch.init_``'s ``preset``) for the weights; zeros for the
  biases; ones and zeros for normalisation layers (running statistics reset);
  **every other tensor keeps its values** (a checkpoint's, copied; a module's).
* ``"torch"``: PyTorch's own defaults, what each module's ``reset_parameters()``
  draws: U(+-1/sqrt(fan_in)) for Linear and convolution weights (``kaiming_uniform_``
  with ``a = sqrt(5)``) and biases, N(0, 1) for embeddings, ones and zeros for
  norms with their running statistics and ``num_batches_tracked`` reset, ...
* ``"hf"``: Hugging Face's, what a transformers model's ``_init_weights`` does:
  N(0, initializer_range) for Linear and Embedding weights (the padding row
  zero), zeros for biases, ones and zeros for norms, and each architecture's own
  cases (GPT-2's residual projections N(0, initializer_range / sqrt(2 n_layer))).

A convention decides in one of two ways:

* from names, shapes and dtypes alone (a checkpoint file, ``--like``; the
  tensors of a spec): :func:`classify` here, torch-free. The rules are
  conservative: a tensor must be *recognisably* a weight, a bias or part of a
  norm to be drawn or set, and is kept otherwise (``docs/spec-files.md``);
* from the module that owns each tensor (``vsgen.torch``, where the module's
  type decides, or PyTorch's own ``reset_parameters`` recorded on a meta copy):
  an object of ``vsgen.torch.MODULE_CONVENTIONS``, by the same name, so that this
  module never imports torch.

A new convention is one entry of :data:`CONVENTIONS` (its names-only rules) and
one of ``vsgen.torch.MODULE_CONVENTIONS`` (its module-side object).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vsgen._inits import (
    KEEP,
    Choice,
    Init,
    TensorEntry,
    _name_parts,
    builtin_init,
    parse_init,
)
from vsgen.names import canonical

__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "Convention", "classify", "get_convention"]

DEFAULT_CONVENTION = "vsgen"

# --- recognising tensors by name ---------------------------------------------------------

#: Leaves of weights (rank >= 2): PyTorch's (``weight``, MultiheadAttention's,
#: recurrent layers'), Keras's and Flax's (``kernel``, ``embeddings``...), TF-slim's.
_WEIGHT_LEAVES = frozenset(
    {
        "weight",
        "weights",
        "kernel",
        "embeddings",
        "embedding",
        "depthwise_kernel",
        "pointwise_kernel",
        "recurrent_kernel",
        "in_proj_weight",
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
    }
)
#: ``weight_ih_l0``, ``weight_hh_l1_reverse``, ``weight_hr_l0`` (LSTM projections),
#: and the cells' ``weight_ih``/``weight_hh``.
_RNN_WEIGHT = re.compile(r"weight_(ih|hh|hr)(_l[0-9]+(_reverse)?)?")
_RNN_BIAS = re.compile(r"bias_(ih|hh)(_l[0-9]+(_reverse)?)?")
_BIAS_LEAVES = frozenset({"bias", "biases", "in_proj_bias"})
#: Leaves of a norm's scale (rank 1) and shift.
_SCALE_LEAVES = frozenset({"weight", "scale", "gamma"})
_SHIFT_LEAVES = frozenset({"bias", "beta"})
_RUNNING = {
    "running_mean": (0.0, "running mean"),
    "moving_mean": (0.0, "running mean"),
    "running_var": (1.0, "running variance"),
    "moving_variance": (1.0, "running variance"),
}
#: Floating buffers computed from the configuration (rotary frequencies, GPT-2's
#: mask value): kept.
_FIXED_BUFFERS = frozenset({"inv_freq", "masked_bias"})
_NORM_PART = re.compile(r"(ln|bn)(_?[0-9a-z]{1,3})?")
_EMBEDDING_PART = re.compile(r".*embed.*|wte|wpe")

ZEROS = Init(constant=0.0)
ONES = Init(constant=1.0)


def is_weight_leaf(leaf: str) -> bool:
    """A leaf that names a weight (``weight``, ``kernel``, ``weight_ih_l0``...)."""
    return leaf in _WEIGHT_LEAVES or _RNN_WEIGHT.fullmatch(leaf) is not None


def is_bias_leaf(leaf: str) -> bool:
    """A leaf that names a bias (``bias``, ``biases``, ``in_proj_bias``, ``bias_ih_l0``)."""
    return leaf in _BIAS_LEAVES or _RNN_BIAS.fullmatch(leaf) is not None


@dataclass(frozen=True)
class _Tensor:
    entry: TensorEntry
    parts: tuple[str, ...]

    @property
    def leaf(self) -> str:
        return self.parts[-1]

    @property
    def prefix(self) -> tuple[str, ...]:
        return self.parts[:-1]

    @property
    def rank(self) -> int:
        return len(self.entry.shape)

    @property
    def floating(self) -> bool:
        dtype = self.entry.dtype
        return dtype is None or np.dtype(dtype).kind not in "biu"


class _Model:
    """The tensors of a model by prefix (``layer.0.attn``) and leaf (``bias``)."""

    def __init__(self, entries: Sequence[TensorEntry]) -> None:
        self.tensors = [_Tensor(entry, tuple(_name_parts(entry.name))) for entry in entries]
        self.by_prefix: dict[tuple[str, ...], dict[str, _Tensor]] = {}
        for tensor in self.tensors:
            self.by_prefix.setdefault(tensor.prefix, {})[tensor.leaf] = tensor

    def siblings(self, tensor: _Tensor) -> dict[str, _Tensor]:
        return {
            leaf: other
            for leaf, other in self.by_prefix.get(tensor.prefix, {}).items()
            if other is not tensor
        }

    def weight_sibling(self, tensor: _Tensor) -> _Tensor | None:
        """The weight beside a bias (``fc.weight`` for ``fc.bias``; ``weight_ih_l0``
        for ``bias_ih_l0``; a norm's scale for its shift)."""
        siblings = self.siblings(tensor)
        rnn = _RNN_BIAS.fullmatch(tensor.leaf)
        if rnn is not None:
            return siblings.get("weight" + tensor.leaf[len("bias") :])
        if tensor.leaf == "in_proj_bias":
            return siblings.get("in_proj_weight") or siblings.get("q_proj_weight")
        for leaf in ("weight", "weights", "kernel", "scale", "gamma"):
            if leaf in siblings:
                return siblings[leaf]
        return None

    def is_norm_scale(self, tensor: _Tensor) -> bool:
        """A rank-1 ``weight``/``scale``/``gamma`` that belongs to a norm: its name
        says so (``norm``, ``ln_1``, ``bn1``), or a shift or running statistics of
        its shape sit beside it (an ``nn.BatchNorm2d`` inside an ``nn.Sequential``:
        ``1.weight`` beside ``1.bias``). An ``nn.PReLU``'s ``weight`` has neither."""
        if tensor.rank != 1 or tensor.leaf not in _SCALE_LEAVES:
            return False
        if _says_norm(tensor.prefix):
            return True
        siblings = self.siblings(tensor)
        return any(
            leaf in siblings and siblings[leaf].entry.shape == tensor.entry.shape
            for leaf in ("bias", "beta", "running_mean", "moving_mean")
        )

    def is_norm_shift(self, tensor: _Tensor) -> bool:
        """A rank-1 ``bias``/``beta`` beside a norm's scale."""
        if tensor.rank != 1 or tensor.leaf not in _SHIFT_LEAVES:
            return False
        siblings = self.siblings(tensor)
        return any(
            leaf in siblings and self.is_norm_scale(siblings[leaf]) for leaf in _SCALE_LEAVES
        )


def _says_norm(prefix: Sequence[str]) -> bool:
    return any("norm" in part or _NORM_PART.fullmatch(part) for part in prefix)


def _kept(reason: str) -> Choice:
    return Choice(KEEP, reason)


# --- the vsgen convention ------------------------------------------------------------------


def _vsgen_checkpoint(model: _Model, tensor: _Tensor) -> Choice:
    """The vsgen convention for one tensor of a checkpoint (names only)."""
    entry = tensor.entry
    if not tensor.floating:
        return _kept(f"{np.dtype(entry.dtype).name} tensor")
    if tensor.leaf in _FIXED_BUFFERS:
        return _kept(f"fixed buffer ({tensor.leaf})")
    if tensor.rank >= 2 and is_weight_leaf(tensor.leaf):
        return Choice(None)  # the default initializer
    if tensor.rank == 1 and tensor.leaf in _RUNNING:
        value, reason = _RUNNING[tensor.leaf]
        return Choice(Init(constant=value), reason)
    if tensor.rank >= 1 and is_bias_leaf(tensor.leaf) and model.weight_sibling(tensor):
        return Choice(ZEROS, "bias")
    if model.is_norm_scale(tensor):
        return Choice(ONES, f"norm scale ({tensor.leaf})")
    if model.is_norm_shift(tensor):
        return Choice(ZEROS, f"norm shift ({tensor.leaf})")
    return _kept("not recognisably a weight, bias or norm")


# --- the torch convention ------------------------------------------------------------------

_TORCH = "convention torch"
#: nn.Linear's and the convolutions' weights: kaiming_uniform_(w, a=sqrt(5)).
LINEAR_WEIGHT = Init(class_name="KaimingUniform", options=(("a", math.sqrt(5.0)),))


def _uniform(bound: float) -> Init:
    """U(-bound, bound) as PyTorch's ``uniform_(w, -bound, bound)``; zeros for 0."""
    if bound == 0.0:
        return ZEROS
    return parse_init({"preset": "random_uniform", "minval": -bound, "maxval": bound})


def _torch_fan_in(shape: Sequence[int]) -> int:
    """``torch.nn.init._calculate_fan_in_and_fan_out(w)[0]``: shape[1] * receptive field."""
    return int(shape[1]) * math.prod(int(d) for d in shape[2:])


def _rnn_hidden(model: _Model, tensor: _Tensor) -> int | None:
    """An RNN's hidden size from its recurrent weights beside ``tensor``: the
    inputs of ``weight_hr`` (LSTM projections) or of ``weight_hh``."""
    match = _RNN_WEIGHT.fullmatch(tensor.leaf) or _RNN_BIAS.fullmatch(tensor.leaf)
    assert match is not None
    suffix = match.group(2) or ""
    siblings = {**model.siblings(tensor), tensor.leaf: tensor}
    for leaf in (f"weight_hr{suffix}", f"weight_hh{suffix}"):
        if leaf in siblings and siblings[leaf].rank == 2:
            return int(siblings[leaf].entry.shape[1])
    return None


def _is_attention(model: _Model, prefix: tuple[str, ...]) -> bool:
    leaves = model.by_prefix.get(prefix, {})
    return "in_proj_weight" in leaves or "q_proj_weight" in leaves


def _torch_checkpoint(model: _Model, tensor: _Tensor) -> Choice:
    """The torch convention for one tensor of a checkpoint (names only)."""
    entry, leaf = tensor.entry, tensor.leaf
    if not tensor.floating:
        if leaf == "num_batches_tracked":
            return Choice(ZEROS, "BatchNorm reset_running_stats", _TORCH)
        return _kept(f"{np.dtype(entry.dtype).name} tensor")
    if leaf in _FIXED_BUFFERS:
        return _kept(f"fixed buffer ({leaf})")
    if tensor.rank == 1 and leaf in _RUNNING:
        value, reason = _RUNNING[leaf]
        return Choice(Init(constant=value), f"BatchNorm reset_running_stats: {reason}", _TORCH)
    if _RNN_WEIGHT.fullmatch(leaf) or _RNN_BIAS.fullmatch(leaf):
        hidden = _rnn_hidden(model, tensor)
        if hidden is None:
            return _kept("a recurrent layer's tensor without its weight_hh beside it")
        bound = 1.0 / math.sqrt(hidden) if hidden > 0 else 0.0
        return Choice(_uniform(bound), "RNN reset_parameters: U(+-1/sqrt(hidden_size))", _TORCH)
    if leaf in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        return Choice(Init(class_name="XavierUniform"), "MultiheadAttention", _TORCH)
    if leaf == "in_proj_bias" or (
        leaf == "bias"
        and tensor.prefix[-1:] == ("out_proj",)
        and _is_attention(model, tensor.prefix[:-1])
    ):
        return Choice(ZEROS, "MultiheadAttention", _TORCH)
    if leaf in ("bias_k", "bias_v") and _is_attention(model, tensor.prefix):
        return Choice(Init(class_name="XavierNormal"), "MultiheadAttention", _TORCH)
    if tensor.rank >= 2 and is_weight_leaf(leaf):
        if tensor.rank == 2 and any(_EMBEDDING_PART.fullmatch(p) for p in tensor.prefix):
            normal = parse_init({"random_normal": 1.0})
            return Choice(normal, "Embedding reset_parameters: N(0, 1) (by name)", _TORCH)
        return Choice(LINEAR_WEIGHT, "Linear/Conv reset_parameters", _TORCH)
    if tensor.rank >= 1 and is_bias_leaf(leaf):
        weight = model.weight_sibling(tensor)
        if weight is not None and weight.rank >= 2:
            fan_in = _torch_fan_in(weight.entry.shape)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            reason = "Linear/Conv reset_parameters: U(+-1/sqrt(fan_in))"
            return Choice(_uniform(bound), reason, _TORCH)
    if model.is_norm_scale(tensor):
        return Choice(ONES, f"norm reset_parameters ({leaf})", _TORCH)
    if model.is_norm_shift(tensor):
        return Choice(ZEROS, f"norm reset_parameters ({leaf})", _TORCH)
    return _kept("not recognisably a weight, bias or norm")


# --- the hf convention ---------------------------------------------------------------------

_HF = "convention hf"
#: transformers' initializer_range when a config does not say otherwise (a
#: checkpoint known by names only has no config to read it from).
HF_INITIALIZER_RANGE = 0.02


def hf_normal(stddev: float = HF_INITIALIZER_RANGE) -> Init:
    """``normal_(w, mean=0, std=stddev)``: transformers' weights."""
    return parse_init({"preset": "random_normal", "mean": 0.0, "stddev": stddev})


def _hf_checkpoint(model: _Model, tensor: _Tensor) -> Choice:
    """The hf convention for one tensor of a checkpoint (names only): what
    ``PreTrainedModel._init_weights`` does to the modules a name can tell. The
    architectures' own special cases need the model (``vsgen.hf``)."""
    entry, leaf = tensor.entry, tensor.leaf
    if not tensor.floating:
        if leaf == "num_batches_tracked":
            return Choice(ZEROS, "_init_weights: BatchNorm batch count", _HF)
        return _kept(f"{np.dtype(entry.dtype).name} tensor")
    if leaf in _FIXED_BUFFERS:
        return _kept(f"fixed buffer ({leaf})")
    if tensor.rank == 1 and leaf in _RUNNING:
        value, reason = _RUNNING[leaf]
        return Choice(Init(constant=value), f"_init_weights: BatchNorm {reason}", _HF)
    if _RNN_WEIGHT.fullmatch(leaf) or _RNN_BIAS.fullmatch(leaf):
        # LSTM gets xavier_uniform_, GRU and RNN their own reset: a name cannot tell.
        return _kept("a recurrent layer's tensor (LSTM, GRU and RNN differ)")
    if leaf in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        return Choice(Init(class_name="XavierUniform"), "MultiheadAttention", _HF)
    if leaf == "in_proj_bias" or (
        leaf == "bias"
        and tensor.prefix[-1:] == ("out_proj",)
        and _is_attention(model, tensor.prefix[:-1])
    ):
        return Choice(ZEROS, "MultiheadAttention", _HF)
    if tensor.rank >= 2 and is_weight_leaf(leaf):
        reason = f"_init_weights: normal(0, initializer_range={HF_INITIALIZER_RANGE:g})"
        return Choice(hf_normal(), reason, _HF)
    if tensor.rank >= 1 and is_bias_leaf(leaf) and model.weight_sibling(tensor):
        return Choice(ZEROS, "_init_weights: bias", _HF)
    if model.is_norm_scale(tensor):
        return Choice(ONES, f"_init_weights: norm ({leaf})", _HF)
    if model.is_norm_shift(tensor):
        return Choice(ZEROS, f"_init_weights: norm ({leaf})", _HF)
    return _kept("not recognisably a weight, bias or norm")


# --- the registry ----------------------------------------------------------------------------

Rule = Callable[[_Model, _Tensor], Choice]


@dataclass(frozen=True)
class Convention:
    """A convention: its name, a one-line summary, the fan layout its numbers
    assume (None: the initializers' own) and its rule for a tensor known by name
    only (the object that decides from a module's structure is
    ``vsgen.torch.MODULE_CONVENTIONS[name]``)."""

    name: str
    summary: str
    layout: str | None
    rule: Rule

    def classify(self, entries: Sequence[TensorEntry], copyable: bool) -> dict[str, Choice]:
        """Every tensor's choice (see :func:`classify`)."""
        if not copyable and self.name == DEFAULT_CONVENTION:
            return {}  # a spec's tensors: the built-in rules specs always had
        model = _Model(entries)
        choices: dict[str, Choice] = {}
        for tensor in model.tensors:
            if tensor.entry.init is not None:
                continue  # a spec tensor's own init decides
            choice = self.rule(model, tensor)
            if choice.keeps and not copyable:
                builtin = _spec_builtin(tensor.entry)
                if builtin is None:
                    continue  # the default initializer
                choice = builtin
            choices[tensor.entry.name] = choice
        return choices


def _spec_builtin(entry: TensorEntry) -> Choice | None:
    """What a spec's tensor gets without a rule: :func:`vsgen.modelspec.builtin_init`."""
    chosen = builtin_init(entry.name, entry.shape, entry.dtype or np.dtype(np.float32))
    if chosen is None:
        return None
    return Choice(chosen[0], chosen[1])


CONVENTIONS: dict[str, Convention] = {
    "vsgen": Convention(
        "vsgen",
        "the chosen initializer for weights, zeros for biases, ones/zeros for norms; "
        "every other tensor keeps its values",
        None,
        _vsgen_checkpoint,
    ),
    "torch": Convention(
        "torch",
        "PyTorch's defaults: what each module's reset_parameters() draws",
        "torch",
        _torch_checkpoint,
    ),
    "hf": Convention(
        "hf",
        "Hugging Face's defaults: what the model's _init_weights draws "
        "(normal(0, initializer_range) for Linear and Embedding weights...)",
        "torch",
        _hf_checkpoint,
    ),
}
#: Other spellings of the conventions' names.
CONVENTION_ALIASES = {"pytorch": "torch", "huggingface": "hf", "transformers": "hf"}


def get_convention(value: object = None) -> Convention:
    """The convention ``value`` names (None: ``"vsgen"``), or ValueError
    (``Argument `convention` must be one of vsgen, torch. Received: ...``)."""
    if value is None:
        return CONVENTIONS[DEFAULT_CONVENTION]
    if isinstance(value, Convention):
        return value
    name = canonical(value, CONVENTIONS, CONVENTION_ALIASES, argument="convention")
    return CONVENTIONS[name]


def classify(
    entries: Sequence[TensorEntry], convention: object = None, copyable: bool = True
) -> Mapping[str, Choice]:
    """What ``convention`` gives each of ``entries`` (by name), from names, shapes and
    dtypes only.

    ``copyable``: the tensors have values to keep (a checkpoint, ``--like``).
    Without them (a spec's tensors) a tensor the convention would keep gets
    :func:`vsgen.modelspec.builtin_init`'s choice instead, and the ``vsgen``
    convention is exactly the rules specs always had. Tensors with their own
    ``init`` get no choice.
    """
    return get_convention(convention).classify(entries, copyable)
