"""PyTorch: a module's tensors initialised in place, or written to a file from
its definition alone (the meta device: no memory for the model).

``init_(module, preset, seed=..., convention=...)`` gives every tensor of
``module.state_dict()`` its values in place; ``save(module, path, ...)`` writes
the same bytes into any format vsgen writes, block by block, without the
module's memory (a module on the ``meta`` device works); ``plan(...)`` says what
either would do::

    with torch.device("meta"):
        model = MyModel()                      # no memory
    vsgen.torch.save(model, "model.safetensors", "he_normal", seed=0)

    model = MyModel()
    vsgen.torch.init_(model, "he_normal", seed=0)  # the same bytes, in memory

What each tensor gets is decided, first match wins, by a rule (``rules=``, a
spec's ``[rules]``), then by the *convention* (:mod:`vsgen.conventions`) from
the type of the module that owns the tensor, never from its name:

* ``"vsgen"`` (default): ``preset`` (default VarianceScaling(1, fan_in,
  truncated_normal)) for the weights of ``Linear``, ``Bilinear``, the
  convolutions and transposed convolutions, ``Embedding``/``EmbeddingBag``
  (padding row zero), ``MultiheadAttention`` (``in_proj_weight``,
  ``q/k/v_proj_weight``, ``bias_k``/``bias_v``), ``RNN``/``LSTM``/``GRU`` and their
  cells; zeros for their biases; ones and zeros for the norms (``BatchNorm*``,
  ``InstanceNorm*``, ``LayerNorm``, ``GroupNorm``, ``RMSNorm``: weight, bias,
  running mean and variance); **every other parameter and buffer keeps its
  values**, ``num_batches_tracked`` included (0 on the meta device).
* ``"torch"``: what each module's own ``reset_parameters()`` (or
  ``_reset_parameters()``) draws, recorded by running it on a meta copy of the
  module under a ``torch.overrides.TorchFunctionMode`` (children before their
  parent, as construction does): every ``torch.nn.init`` function and in-place
  draw or fill (``uniform_``, ``normal_``, ``fill_``, ``zero_``, a row filled
  through an index) becomes vsgen's initializer of the same distribution, drawn
  from vsgen's stream. Custom modules with their own ``reset_parameters`` work
  the same way. A tensor no reset touches keeps its values; one a reset changes
  in a way vsgen cannot reproduce (``trunc_normal_``, ``orthogonal_``,
  arithmetic on the values) keeps them too, and the plan says why.

Fans use PyTorch's layout ``(out, in, *kernel)``. Each drawn tensor's seed is
``derive_seed(seed, name)``, so the bytes are those ``vsgen sample --like`` writes
for the same choices. Tied weights (one tensor under several names) are drawn
once and written once, under the name ``safetensors.torch.save_model`` keeps (the
first in sorted order); ``safetensors.torch.load_model`` loads them tied.

In place, no copies: a CPU tensor that is contiguous is filled through its own
memory (bfloat16 through a 16-bit integer view seen as ``ml_dtypes.bfloat16``),
by the stream's multi-threaded ``fill``; other tensors go through one CPU buffer
each. Non-persistent buffers are not in the state dict and are left alone.

``torch`` is imported only when these functions are called.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vsgen import _hf_model, conventions, modelspec
from vsgen._torch_record import check_module, record_init, type_name
from vsgen.conventions import ONES, ZEROS
from vsgen.dtypes import TensorInfo, normalize_dtype
from vsgen.initializer import RandomInitializer, SamplePlan
from vsgen.inplace import torch_array
from vsgen.modelspec import KEEP, Choice, Init

if TYPE_CHECKING:
    import torch

__all__ = [
    "TORCH",
    "VSGEN",
    "ModuleConvention",
    "ModuleTensor",
    "init_",
    "meta_parameters",
    "plan",
    "record_init",
    "save",
]

#: torch dtype name -> the dtype vsgen writes (or copies) for it.
_DTYPES = {
    "float16": "float16",
    "bfloat16": "bfloat16",
    "float32": "float32",
    "float64": "float64",
    "bool": "bool",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "uint64": "uint64",
}

Preset = str | Mapping[str, Any] | RandomInitializer | Init | None
SpecArgument = str | os.PathLike[str] | Mapping[str, Any] | modelspec.ModelSpec | None


# --- the module's tensors ------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleTensor:
    """One tensor of a module's state dict, written once.

    ``name`` is the name it is written under, ``aliases`` its other names (tied
    weights), ``owners`` the ``(name, module, local name, is_parameter)`` of every
    name (the module that holds it and what it calls it there; None for a name a
    custom ``state_dict`` hook made).
    """

    name: str
    tensor: torch.Tensor
    aliases: tuple[str, ...] = ()
    owners: tuple[tuple[str, torch.nn.Module | None, str, bool], ...] = ()

    @property
    def is_meta(self) -> bool:
        """True on the meta device: a shape and dtype, no values."""
        return self.tensor.device.type == "meta"


def _owners(module: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str, bool]]:
    """Every parameter's and buffer's full name -> (owning module, local name, is_parameter)."""
    owners: dict[str, tuple[torch.nn.Module, str, bool]] = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        base = f"{prefix}." if prefix else ""
        for local in sub._parameters:
            owners[base + local] = (sub, local, True)
        for local in sub._buffers:
            owners[base + local] = (sub, local, False)
    return owners


def _tensor_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Two names with the same key are one tensor: the same object, or (with memory)
    the same view of the same storage."""
    if tensor.device.type == "meta":
        return ("meta", id(tensor))
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
    )


def _collect(
    module: torch.nn.Module, kept_name: Callable[[Sequence[str]], str]
) -> list[ModuleTensor]:
    """The state dict's tensors in order, each once (tied weights under
    ``kept_name(names)``, at that name's place)."""
    import torch

    check_module(module)
    state = module.state_dict(keep_vars=True)
    groups: dict[tuple[Any, ...], list[str]] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue  # `_extra_state` entries hold arbitrary objects
        if torch.nn.parameter.is_lazy(tensor):
            raise ValueError(
                f"tensor {name!r} is not materialised yet (a lazy module): run a forward pass "
                "first, or give the module its sizes"
            )
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise ValueError(
                f"tensor {name!r} has dtype {dtype}; vsgen initialises float16, bfloat16, "
                "float32 and float64 tensors and keeps integer and bool ones"
            )
        tensors[name] = tensor
        # Tensors without elements share nothing worth tying.
        key = _tensor_key(tensor) if tensor.numel() else ("empty", name)
        groups.setdefault(key, []).append(name)
    owners = _owners(module)
    kept: dict[str, tuple[str, ...]] = {}
    for names in groups.values():
        chosen = kept_name(names) if len(names) > 1 else names[0]
        kept[chosen] = tuple(name for name in names if name != chosen)
    collected = []
    for name, tensor in tensors.items():
        if name not in kept:
            continue
        every = (name, *kept[name])
        collected.append(
            ModuleTensor(
                name,
                tensor,
                kept[name],
                tuple((n, *owners[n]) if n in owners else (n, None, n, False) for n in every),
            )
        )
    return collected


def _info(item: ModuleTensor) -> TensorInfo:
    dtype = str(item.tensor.dtype).removeprefix("torch.")
    return TensorInfo(item.name, tuple(item.tensor.shape), normalize_dtype(_DTYPES[dtype]))


# --- conventions, decided from the module ------------------------------------------------


class ModuleConvention:
    """How a convention decides from a module (:mod:`vsgen.conventions` names it).

    Subclasses give :meth:`choices`: a :class:`vsgen.modelspec.Choice` for every
    tensor (by the name it is written under); rules still come first.
    :meth:`kept_name` picks the name tied weights are written under;
    :attr:`layout` is the fan layout of the weights.
    """

    name = ""
    layout = "torch"

    def choices(
        self, module: torch.nn.Module, tensors: Sequence[ModuleTensor]
    ) -> dict[str, Choice]:
        raise NotImplementedError

    def kept_name(self, names: Sequence[str]) -> str:
        """``safetensors.torch.save_model``'s choice: the first name in sorted order."""
        return sorted(names)[0]


def _norm_types() -> tuple[type, ...]:
    import torch.nn as nn

    types: list[type] = [nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm]
    if hasattr(nn, "RMSNorm"):
        types.append(nn.RMSNorm)
    return tuple(types)


def _vsgen_choice(owner: torch.nn.Module | None, local: str, is_parameter: bool) -> Choice:
    """The vsgen convention for one tensor, from its owning module's type."""
    import torch.nn as nn

    if owner is None:
        return Choice(KEEP, "not a parameter or buffer of a module (a state_dict hook)")
    kind = type_name(owner)
    weight = Choice(None, f"{kind} weight")
    bias = Choice(ZEROS, f"{kind} bias")
    if isinstance(owner, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)):
        if local == "weight":
            return weight
        if local == "bias":
            return bias
    elif isinstance(owner, (nn.Embedding, nn.EmbeddingBag)):
        if local == "weight":
            padding = owner.padding_idx
            if padding is None:
                return weight
            return Choice(None, f"{kind} weight, padding row zero", rows=((padding, 0.0),))
    elif isinstance(owner, nn.MultiheadAttention):
        if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return weight
        if local in ("bias_k", "bias_v"):
            return Choice(None, f"{kind} {local}")
        if local == "in_proj_bias":
            return bias
    elif isinstance(owner, (nn.RNNBase, nn.RNNCellBase)):
        if local.startswith("weight"):
            return weight
        if local.startswith("bias"):
            return bias
    elif isinstance(owner, _norm_types()):
        if local == "weight":
            return Choice(ONES, f"{kind} weight")
        if local == "bias":
            return Choice(ZEROS, f"{kind} bias")
        if local == "running_mean":
            return Choice(ZEROS, f"{kind} running mean")
        if local == "running_var":
            return Choice(ONES, f"{kind} running variance")
        if local == "num_batches_tracked":
            return Choice(KEEP, f"{kind} batch count", on_meta=ZEROS)
    what = "parameter" if is_parameter else "buffer"
    return Choice(KEEP, f"a {what} of {kind}")


class _VsgenModules(ModuleConvention):
    """The ``vsgen`` convention, from each tensor's module type (see the module doc)."""

    name = "vsgen"

    def choices(
        self, module: torch.nn.Module, tensors: Sequence[ModuleTensor]
    ) -> dict[str, Choice]:
        decided = {}
        for item in tensors:
            # The written name's module decides; a tied alias that is a weight
            # (an Embedding tied to an unrecognised head) wins over keeping.
            options = [
                _vsgen_choice(owner, local, is_param) for _, owner, local, is_param in item.owners
            ]
            decided[item.name] = next((c for c in options if not c.keeps), options[0])
        return decided


class _TorchModules(ModuleConvention):
    """The ``torch`` convention: each module's own ``reset_parameters()``, recorded."""

    name = "torch"

    def choices(
        self, module: torch.nn.Module, tensors: Sequence[ModuleTensor]
    ) -> dict[str, Choice]:
        recorded = record_init(module, origin="convention torch")
        return {item.name: recorded[item.name] for item in tensors}


VSGEN: ModuleConvention = _VsgenModules()
TORCH: ModuleConvention = _TorchModules()


class HFConvention(ModuleConvention):
    """The ``"hf"`` convention: what a transformers model's ``_init_weights`` does,
    recorded on a meta copy (:func:`vsgen.hf.record_init_weights`). Only for
    transformers models."""

    name = "hf"
    layout = "torch"

    def choices(
        self, module: torch.nn.Module, tensors: Sequence[ModuleTensor]
    ) -> dict[str, Choice]:
        if not is_transformers_model(module):
            raise TypeError(
                "convention 'hf' records a transformers model's _init_weights; "
                f"{type(module).__name__} is not a transformers PreTrainedModel: use "
                "convention 'torch' or 'vsgen'"
            )
        recorded = _hf_model.record_init_weights(module)
        targets = _hf_model._tied_targets(module)
        decided = {}
        for item in tensors:
            # A tied tensor takes its source's initialisation (a target is re-tied).
            names = [item.name, *item.aliases]
            sources = [name for name in names if name not in targets and name in recorded]
            decided[item.name] = recorded[sources[0] if sources else item.name]
        return decided


HF: ModuleConvention = HFConvention()
#: The module-side object of each convention of :data:`vsgen.conventions.CONVENTIONS`.
MODULE_CONVENTIONS: dict[str, ModuleConvention] = {"vsgen": VSGEN, "torch": TORCH, "hf": HF}


def is_transformers_model(module: object) -> bool:
    """A Hugging Face transformers model (``PreTrainedModel``), told without importing
    transformers: a model can only be one if transformers is imported already."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return False
    try:
        base = transformers.PreTrainedModel
    except (AttributeError, ImportError):  # a transformers without torch
        return False
    return isinstance(module, base)


def _module_convention(convention: object, module: object) -> tuple[str, ModuleConvention]:
    """The convention object ``convention`` names; None means ``"hf"`` for a
    transformers model (its own ``_init_weights``), else ``"vsgen"``."""
    if isinstance(convention, ModuleConvention):
        return convention.name, convention
    if convention is None and is_transformers_model(module):
        convention = "hf"
    chosen = conventions.get_convention(convention)
    return chosen.name, MODULE_CONVENTIONS[chosen.name]


def _kept_name(
    module: torch.nn.Module, convention: ModuleConvention
) -> Callable[[Sequence[str]], str]:
    """How tied weights' written name is chosen: as the framework's loader expects
    it (a transformers model: the name ``save_pretrained`` keeps, whatever the
    convention), else by the convention (``safetensors.torch.save_model``'s)."""
    if is_transformers_model(module):
        return lambda names: _hf_model.saved_tied_name(module, names)
    return convention.kept_name


# --- plans ---------------------------------------------------------------------------------


def _default_init(preset: object) -> Init | None:
    if preset is None or isinstance(preset, Init):
        return preset
    if isinstance(preset, RandomInitializer):
        return modelspec.init_from_initializer(preset)
    return modelspec.parse_init(preset, "Argument `preset`")


def _spec_with_rules(spec: SpecArgument, rules: Mapping[str, Any] | None) -> modelspec.ModelSpec:
    if spec is None:
        parsed = modelspec.ModelSpec(source="Argument `spec`")
    elif isinstance(spec, modelspec.ModelSpec):
        parsed = spec
    elif isinstance(spec, Mapping):
        parsed = modelspec.parse_spec(spec, source="Argument `spec`")
    else:
        parsed = modelspec.load_spec(os.fspath(spec))
    if rules is None:
        return parsed
    if not isinstance(rules, Mapping):
        raise TypeError(
            f"Argument `rules` must map glob patterns to initializers. Received: rules={rules!r}"
        )
    extra = modelspec.parse_spec({"rules": dict(rules)}, source="Argument `rules`").rules
    # Rules given here come first: the first match wins.
    return modelspec.ModelSpec(
        seed=parsed.seed,
        dtype=parsed.dtype,
        layout=parsed.layout,
        stream=parsed.stream,
        init=parsed.init,
        rules=extra + parsed.rules,
        tensors=parsed.tensors,
        source=parsed.source,
    )


def _resolve_meta(
    module: torch.nn.Module, choices: dict[str, Choice], tensors: Sequence[ModuleTensor]
) -> None:
    """A kept tensor on the meta device has no values: it takes the convention's
    value for it (``on_meta``), else what the module's own initialisation sets
    (:func:`_own_init`, recorded): the value the module would hold had it been built
    with memory. Others stay kept (and are refused later)."""
    recorded: dict[str, Choice] | None = None
    for item in tensors:
        choice = choices.get(item.name)
        if not item.is_meta or choice is None or not choice.keeps:
            continue
        if choice.on_meta is not None:
            reason = f"{choice.reason}: {choice.on_meta.label()} on the meta device"
            choices[item.name] = Choice(choice.on_meta, reason, choice.origin)
            continue
        if recorded is None:
            recorded = _own_init(module)
        reset = recorded.get(item.name)
        if reset is not None and not reset.keeps:
            reason = f"{choice.reason}: on the meta device, what {reset.reason} sets"
            choices[item.name] = Choice(reset.init, reason, choice.origin, reset.rows)


def _own_init(module: torch.nn.Module) -> dict[str, Choice]:
    """What the module's own initialisation sets, recorded: a transformers model's
    ``_init_weights`` (what ``from_config`` gives it), else every ``reset_parameters``."""
    if is_transformers_model(module):
        return _hf_model.record_init_weights(module)
    return record_init(module)


def _refuse_meta_kept(
    job: modelspec.ModelJob, tensors: Sequence[ModuleTensor], convention: str
) -> None:
    """One line naming the first meta tensor the plan would keep, and the way out."""
    missing = [
        (item, row)
        for item, row, plan in zip(tensors, job.rows, job.plans, strict=True)
        if item.is_meta and isinstance(plan, modelspec.CopyPlan)
    ]
    if not missing:
        return
    item, row = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    is_parameter = any(owner[3] for owner in item.owners)
    what = "parameter" if is_parameter else "buffer"
    why = f"convention {convention!r} keeps it: {row.reason}" if row.reason else "it is kept"
    if is_parameter:
        way_out = (
            f"give it a rule (rules={{{item.name!r}: {{'constant': ...}}}}, or an initializer), "
            "or build the module with its values"
        )
    else:
        way_out = (
            "build the module under vsgen.torch.meta_parameters() (parameters on meta, buffers "
            f"with their values), or give it a rule (rules={{{item.name!r}: ...}})"
        )
    raise ValueError(
        f"{what} {item.name!r} is on the meta device and has no values{more} ({why}): {way_out}"
    )


def _kept_values(tensor: torch.Tensor) -> np.ndarray:
    """The values of a kept tensor as a C-contiguous NumPy array: the tensor's own
    memory when it is a contiguous CPU tensor, else one CPU copy."""
    data = tensor.detach()
    if data.device.type != "cpu" or not data.is_contiguous():
        data = data.to("cpu").contiguous()
    return torch_array(data, floating_only=False)


def plan(
    module: torch.nn.Module,
    preset: Preset = None,
    *,
    seed: int | None = None,
    rules: Mapping[str, Any] | None = None,
    spec: SpecArgument = None,
    convention: str | ModuleConvention | None = None,
    layout: str | None = None,
    stream: str | None = None,
    dtype: object = None,
) -> modelspec.ModelJob:
    """The plan :func:`init_` carries out and :func:`save` writes, without touching
    the module. ``module`` may be on the meta device (no memory is needed).

    ``job.rows`` is the table ``vsgen sample --plan`` prints
    (:func:`vsgen.modelspec.plan_table`): every tensor's initializer, values and
    why (``default: Linear weight``, ``builtin: LayerNorm weight``, ``kept``...), a
    tied tensor's other names. ``dtype`` converts the floating tensors that are
    drawn or set (kept ones keep theirs). Other arguments as :func:`init_`.

    Raises:
        ValueError: as :func:`init_`; and a meta tensor the plan would keep (it has
            no values): the message names it and the way out.
    """
    name, module_convention = _module_convention(convention, module)
    tensors = _collect(module, _kept_name(module, module_convention))
    parsed = _spec_with_rules(spec, rules)
    choices = module_convention.choices(module, tensors)
    _resolve_meta(module, choices, tensors)
    job = modelspec.build_job(
        parsed,
        [_info(item) for item in tensors],
        seed=seed,
        dtype=dtype,
        layout=layout if layout is not None else parsed.layout or module_convention.layout,
        stream=stream,
        init=_default_init(preset),
        choices=choices,  # every tensor's: the convention decided from the module
        aliases={item.name: item.aliases for item in tensors if item.aliases},
    )
    _refuse_meta_kept(job, tensors, name)
    for index, (item, tensor_plan) in enumerate(zip(tensors, job.plans, strict=True)):
        if isinstance(tensor_plan, modelspec.CopyPlan):
            job.plans[index] = modelspec.ArrayPlan(_kept_values(item.tensor), item.name)
    return job


# --- in place ------------------------------------------------------------------------------


def _refuse_meta_module(tensors: Sequence[ModuleTensor]) -> None:
    meta = next((item for item in tensors if item.is_meta), None)
    if meta is not None:
        raise ValueError(
            f"tensor {meta.name!r} is on the meta device and has no memory to fill: write the "
            "module to a file with vsgen.torch.save(module, path), which needs none, or "
            "materialise it first (module.to_empty(device='cpu'), then init_ with "
            "convention='torch' so that buffers a reset defines are recomputed)"
        )


def _check_kept(tensors: Sequence[ModuleTensor], job: modelspec.ModelJob) -> None:
    """Refuse kept tensors that cannot hold what a module made (bool bytes other than
    0 and 1: memory never written, as after ``to_empty``); warn of non-finite ones."""
    import torch

    for item, tensor_plan in zip(tensors, job.plans, strict=True):
        if not isinstance(tensor_plan, modelspec.ArrayPlan) or not item.tensor.numel():
            continue
        values = item.tensor.detach()
        if values.dtype == torch.bool:
            if int(values.view(torch.uint8).max()) > 1:
                raise ValueError(
                    f"bool tensor {item.name!r}, which init_ keeps, holds bytes other than 0 "
                    "and 1: memory never written (after module.to_empty?); rebuild the module "
                    "so that its buffers are computed, or give it a rule"
                )
        elif values.is_floating_point() and not bool(torch.isfinite(values).all()):
            warnings.warn(
                f"tensor {item.name!r}, which init_ keeps, holds non-finite values "
                "(uninitialised memory after module.to_empty?)",
                UserWarning,
                stacklevel=3,
            )


def init_(
    module: torch.nn.Module,
    preset: Preset = None,
    *,
    seed: int | None = None,
    rules: Mapping[str, Any] | None = None,
    spec: SpecArgument = None,
    convention: str | ModuleConvention | None = None,
    layout: str | None = None,
    stream: str | None = None,
    threads: int | None = None,
) -> modelspec.ModelJob:
    """Initialise every tensor of ``module.state_dict()`` in place.

    Args:
        module: a ``torch.nn.Module`` whose tensors have memory (CPU or any
            device; not ``meta``, not lazy).
        preset: the initializer of the weights the convention leaves to it
            (``"vsgen"``: the weights of Linear, Conv, Embedding...): a name
            (``"he_normal"``, ``"kaiming_uniform"``, ``"random_normal"``...),
            ``"variance_scaling"``, a table as in a spec (``{"preset":
            "kaiming_uniform", "a": 5**0.5}``, ``{"truncated_normal": 0.02}``),
            Keras's form (``{"class_name": "KaimingUniform", "config": {"a":
            5**0.5}}``), or a vsgen initializer (``vsgen.KaimingNormal(mode=
            "fan_out")``; its seed is ignored). Default: the spec's ``init``,
            else VarianceScaling(1, fan_in, truncated_normal), i.e. stddev
            sqrt(1 / fan_in).
        seed: the global seed; each drawn tensor's seed is
            ``derive_seed(seed, name)`` (SHA-256 of the seed and the name).
            None draws one: it is ``job.seed`` of the result.
        rules: ``{pattern: initializer}`` as a spec's ``[rules]``, tried
            before the spec's own rules and before the convention; first match
            wins (``{"*.logit_scale": "copy"}`` keeps, ``"zeros"``...).
        spec: a spec file, dict or ``ModelSpec`` giving defaults and rules
            (not tensors).
        convention: ``"vsgen"`` (default) or ``"torch"`` (PyTorch's own
            ``reset_parameters``), see the module doc; or a
            :class:`ModuleConvention` of your own.
        layout: fan convention; default the spec's, else ``"torch"``.
        stream: ``"vsgen"`` (default) or ``"keras"``.
        threads: threads per tensor; default all usable CPUs.

    Returns:
        The :class:`vsgen.modelspec.ModelJob` that was carried out (``seed``,
        ``rows``, ``records``).

    Raises:
        ValueError / TypeError: a bad argument or a tensor that cannot be
            initialised (meta, lazy, complex, a kept bool tensor holding bytes
            other than 0 and 1...); nothing is changed then.
    """
    import torch

    from vsgen.streams import usable_cpus

    threads = usable_cpus() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"Argument `threads` must be an integer >= 1. Received: {threads!r}")
    check_module(module)
    _, module_convention = _module_convention(convention, module)
    tensors = _collect(module, _kept_name(module, module_convention))
    _refuse_meta_module(tensors)
    job = plan(
        module,
        preset,
        seed=seed,
        rules=rules,
        spec=spec,
        convention=convention,
        layout=layout,
        stream=stream,
    )
    _check_kept(tensors, job)
    with torch.no_grad():
        for item, tensor_plan in zip(tensors, job.plans, strict=True):
            if isinstance(tensor_plan, (modelspec.ArrayPlan, modelspec.CopyPlan)):
                continue  # the module's own values are what the file would hold
            _fill_tensor(item.tensor.detach(), tensor_plan, threads)
    return job


def _fill_flat(out: np.ndarray, tensor_plan: Any, threads: int) -> None:
    if isinstance(tensor_plan, modelspec.FixedRowsPlan):
        _fill_flat(out, tensor_plan.base, threads)
        row_size = math.prod(tensor_plan.shape[1:])
        for row, value in tensor_plan.set_rows:
            out[row * row_size : (row + 1) * row_size] = value
    elif isinstance(tensor_plan, SamplePlan):
        if out.size:
            tensor_plan.stream.fill(out, tensor_plan.start, tensor_plan.draw, threads)
    else:
        out[...] = tensor_plan.value


def _fill_tensor(tensor: torch.Tensor, tensor_plan: Any, threads: int) -> None:
    import torch

    if tensor.device.type == "cpu" and tensor.is_contiguous():
        _fill_flat(torch_array(tensor, floating_only=False).reshape(-1), tensor_plan, threads)
        return
    # Not addressable from NumPy: fill a contiguous CPU copy and copy it over.
    buffer = torch.empty(tuple(tensor.shape), dtype=tensor.dtype)
    _fill_flat(torch_array(buffer, floating_only=False).reshape(-1), tensor_plan, threads)
    tensor.copy_(buffer)


# --- to a file -------------------------------------------------------------------------------


def _runner(scheduler: object, threads: int | None) -> contextlib.AbstractContextManager[Any]:
    """The block writer's runner: local threads (None), a Dask cluster by address or
    ``local:N`` (a string), a ``distributed.Client``, or a runner itself."""
    from vsgen import blockwrite

    if scheduler is None:
        return contextlib.nullcontext(blockwrite.LocalRunner(threads))
    if isinstance(scheduler, str):
        from vsgen import dask as vsgen_dask

        vsgen_dask.parse_scheduler(scheduler)

        @contextlib.contextmanager
        def connected() -> Iterator[Any]:
            with vsgen_dask.connect(scheduler) as client:
                yield vsgen_dask.ClusterRunner(client)

        return connected()
    if all(hasattr(scheduler, name) for name in ("prepare", "run", "sync", "forget")):
        return contextlib.nullcontext(scheduler)
    if hasattr(scheduler, "submit") and hasattr(scheduler, "scheduler_info"):
        from vsgen import dask as vsgen_dask

        return contextlib.nullcontext(vsgen_dask.ClusterRunner(scheduler))  # type: ignore[arg-type]
    raise TypeError(
        "Argument `scheduler` must be None (local threads), a scheduler address or "
        f"'local:N', a distributed.Client or a runner. Received: {type(scheduler).__name__}"
    )


def save(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    preset: Preset = None,
    *,
    seed: int | None = None,
    rules: Mapping[str, Any] | None = None,
    spec: SpecArgument = None,
    convention: str | ModuleConvention | None = None,
    format: str | None = None,  # noqa: A002  (the command line's --format)
    max_shard_size: int | str | None = None,
    scheduler: object = None,
    dtype: object = None,
    force: bool = False,
    threads: int | None = None,
    layout: str | None = None,
    stream: str | None = None,
    chunks: Any = None,
    on_progress: Callable[[int], None] | None = None,
) -> modelspec.ModelJob:
    """Write every tensor of ``module.state_dict()`` to ``path``, as :func:`init_`
    would make it, without the module's memory.

    ``module`` may be on the meta device: nothing of its size is allocated, the
    values are drawn block by block (about 64 MiB each, a few per thread) and
    written in place, so memory stays at vsgen's bounded buffers whatever the
    model's size. A kept tensor of a real module is written from the module's
    memory; a kept tensor on the meta device has no values and is refused (the
    message names it) unless the convention computes it (``num_batches_tracked``,
    and under ``"torch"`` what a reset sets). The bytes equal those of
    ``init_`` on the same module materialised (with the same arguments; ``dtype``
    as ``module.to(dtype)`` for the drawn and set tensors, kept ones keep
    theirs). Tied weights are written once (:class:`ModuleConvention`'s
    ``kept_name``), the other names recorded in the file's metadata as
    ``safetensors.torch.save_model`` does, so ``safetensors.torch.load_model``
    loads them tied.

    Args:
        module, preset, seed, rules, spec, convention, layout, stream: as :func:`init_`.
        path: the output: ``.safetensors``, ``.h5``, ``.zarr``, a directory with
            ``format="npydir"`` or ``"safetensors-sharded"`` (Hugging Face shards
            with ``model.safetensors.index.json``).
        format: ``safetensors``, ``h5``, ``zarr``, ``npydir``,
            ``safetensors-sharded`` (default: from ``path``).
        max_shard_size: the largest shard of ``safetensors-sharded`` (bytes or
            ``"5GB"``, the default).
        scheduler: None (threads of this process), a Dask scheduler address or
            ``"local:N"``, a ``distributed.Client``, or a ``vsgen.blockwrite`` runner.
        dtype: convert the floating tensors that are drawn or set (``"bfloat16"``).
        force: replace an existing output.
        threads: local threads (default: the usable CPUs).
        chunks: block shapes, as ``vsgen.blockwrite.write``.
        on_progress: ``on_progress(values)`` as blocks complete.

    Returns:
        The :class:`vsgen.modelspec.ModelJob` written.

    Raises:
        ValueError / TypeError: bad arguments, a lazy module, a meta tensor without
            values to keep, an existing output without ``force``; nothing is written.
        OSError: the output could not be written (nothing is left behind).
    """
    from vsgen import blockwrite
    from vsgen.formats.sharded import DEFAULT_MAX_SHARD_SIZE

    job = plan(
        module,
        preset,
        seed=seed,
        rules=rules,
        spec=spec,
        convention=convention,
        layout=layout,
        stream=stream,
        dtype=dtype,
    )
    blockwrite.check(job)
    if is_transformers_model(module):
        from vsgen.formats import registry

        if registry.resolve_format(os.fspath(path), format, len(job.infos)) == _hf_model.SHARDED:
            # A directory from_pretrained loads: the config beside the shards.
            job.companions = _hf_model.model_files(module, job)
    with _runner(scheduler, threads) as runner:
        blockwrite.write(
            job,
            os.fspath(path),
            format,
            runner=runner,
            chunks=chunks,
            max_shard_size=DEFAULT_MAX_SHARD_SIZE if max_shard_size is None else max_shard_size,
            force=force,
            threads=threads,
            on_progress=on_progress,
        )
    return job


# --- building on the meta device -----------------------------------------------------------


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Build modules whose parameters are on the meta device and whose buffers are real.

    Inside the block, every parameter a module registers is moved to the meta
    device as it is registered; buffers (masks, windows, position ids, rotary
    frequencies, running statistics) keep the values the module computes. Then
    :func:`save` (and :func:`plan`) can keep the buffers and draw the parameters::

        with vsgen.torch.meta_parameters():
            model = MyModel()
        vsgen.torch.save(model, "model.safetensors", seed=0)

    Each parameter is made by its module's code on the CPU (or the default
    device) and moved at once: memory peaks at the largest single parameter,
    not at the model. Nested use is allowed; the patch is undone on exit. Not
    thread-safe: another thread building modules meanwhile gets meta parameters too.
    """
    import torch

    original = torch.nn.Module.register_parameter

    def register_parameter(
        self: torch.nn.Module, name: str, param: torch.nn.Parameter | None
    ) -> None:
        original(self, name, param)
        registered = self._parameters.get(name)
        if (
            registered is None
            or registered.device.type == "meta"
            or torch.nn.parameter.is_lazy(registered)
        ):
            return
        moved = torch.nn.Parameter(registered.to("meta"), requires_grad=registered.requires_grad)
        if type(registered) is not torch.nn.Parameter:
            with contextlib.suppress(TypeError):  # a subclass built like Parameter
                moved = type(registered)(moved, requires_grad=registered.requires_grad)
        for key, value in vars(registered).items():  # attributes frameworks set on it
            setattr(moved, key, value)
        self._parameters[name] = moved

    torch.nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]
