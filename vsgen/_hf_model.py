"""What :mod:`vsgen.torch` needs to know of a transformers model, torch-free at import.

:func:`saved_tied_name` is the name ``save_pretrained`` writes tied weights under;
:func:`record_init_weights` records what the model's own ``initialize_weights()``
does to each tensor (:func:`vsgen.torch.record_init` on a meta copy, tied weights
untied first); :func:`model_files` are the ``config.json`` and
``generation_config.json`` written beside the weights. :mod:`vsgen.torch` uses them
for any transformers model; :mod:`vsgen.hf` builds on them and re-exports them
(their documented home). torch is imported only when a function is called.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vsgen._inits import KEEP, Choice
from vsgen._torch_record import record_init

if TYPE_CHECKING:
    import torch

    from vsgen.job import ModelJob

__all__ = [
    "CONFIG_NAME",
    "GENERATION_CONFIG_NAME",
    "SHARDED",
    "model_files",
    "record_init_weights",
    "saved_tied_name",
]

#: The format of a directory ``from_pretrained`` loads.
SHARDED = "safetensors-sharded"
CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
_ORIGIN = "convention hf"
#: The floating dtypes a transformers model's weights may have.
_FLOATING = ("float16", "bfloat16", "float32", "float64")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- what _init_weights does -----------------------------------------------------------------


def _tied_targets(model: torch.nn.Module) -> dict[str, str]:
    """transformers' tied weights, ``{target: source}`` (``lm_head.weight`` ->
    ``model.embed_tokens.weight`` when ``tie_word_embeddings``), expanded."""
    tied = getattr(model, "all_tied_weights_keys", None)
    return dict(tied) if isinstance(tied, Mapping) else {}


def _untie(model: torch.nn.Module) -> None:
    """Give every tied target a parameter of its own: transformers initialises the
    weights before it ties them, so the source's initialisation is the one kept."""
    import torch

    for target in _tied_targets(model):
        parent_name, _, leaf = target.rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
        except AttributeError:
            continue
        current = parent._parameters.get(leaf)
        if current is not None:
            fresh = torch.empty_like(current, device="meta")
            parent._parameters[leaf] = torch.nn.Parameter(fresh, current.requires_grad)


def _forget_initialized(model: torch.nn.Module) -> None:
    """Clear transformers' ``_is_hf_initialized`` marks (a model built with memory, or
    loaded, carries them), which make ``initialize_weights`` skip what they mark."""
    for sub in model.modules():
        for item in (sub, *sub._parameters.values(), *sub._buffers.values()):
            if item is not None and "_is_hf_initialized" in vars(item):
                delattr(item, "_is_hf_initialized")


def record_init_weights(model: torch.nn.Module) -> dict[str, Choice]:
    """What a transformers model's ``initialize_weights()`` (``_init_weights`` on
    every submodule) does to each tensor, by name, recorded on a meta copy with its
    tied weights untied (:func:`vsgen.torch.record_init`); ``model`` is not touched."""
    import torch

    def initialize(clone: torch.nn.Module) -> None:
        _untie(clone)
        _forget_initialized(clone)
        clone.initialize_weights()  # type: ignore[operator]

    initialize.__qualname__ = f"{type(model).__name__}._init_weights"
    try:
        return record_init(model, initialize, origin=_ORIGIN)
    except Exception as error:  # a model's init may need values the meta copy lacks
        reason = f"{initialize.__qualname__} failed on a meta copy ({_one_line(error)})"
        return {
            name: Choice(KEEP, reason, _ORIGIN)
            for name, tensor in model.state_dict(keep_vars=True).items()
            if isinstance(tensor, torch.Tensor)
        }


def saved_tied_name(model: torch.nn.Module, names: Sequence[str]) -> str:
    """The name under which transformers' ``save_pretrained`` writes a tensor known by
    all of ``names`` (tied weights), and ``from_pretrained`` expects it: not one of
    the model's ``_tied_weights_keys`` targets (they are re-tied on loading), the
    first such in sorted order; if every name is a target, the last one."""
    patterns: list[str] = []
    for prefix, sub in model.named_modules():
        keys = getattr(sub, "_tied_weights_keys", None) or {}
        patterns.extend(f"{prefix}.{key}" if prefix else key for key in keys)
    ordered = sorted(names)
    targets = [n for n in ordered if any(re.search(p, n) for p in patterns)]
    others = [n for n in ordered if n not in targets]
    return others[0] if others else targets[-1]


# --- the files beside the weights ------------------------------------------------------------


def _written_dtype(job: ModelJob) -> str | None:
    """The floating dtype that holds most of the job's bytes."""
    sizes: Counter[str] = Counter()
    for info in job.infos:
        if info.dtype.name in _FLOATING:
            sizes[info.dtype.name] += info.nbytes
    return sizes.most_common(1)[0][0] if sizes else None


def model_files(model: Any, job: ModelJob) -> dict[str, bytes]:
    """``config.json`` (and ``generation_config.json`` for a model that generates)
    as transformers' ``save_pretrained`` writes them for ``model`` saved as ``job``:
    the config's differences from its class's defaults, ``architectures`` the
    model's class, ``dtype`` the floating type the job writes."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    dtype = _written_dtype(job)
    if dtype is not None:
        config.dtype = dtype
    files = {CONFIG_NAME: config.to_json_string(use_diff=True).encode("utf-8")}
    generation = getattr(model, "generation_config", None)
    if generation is not None and model.can_generate():
        files[GENERATION_CONFIG_NAME] = generation.to_json_string(use_diff=True).encode("utf-8")
    return files
