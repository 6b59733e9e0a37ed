"""PyTorch: initialise every parameter and buffer of an ``nn.Module`` in place.

``init_(module, preset, seed=..., rules=...)`` gives each tensor of
``module.state_dict()`` exactly the bytes that ``vsgen sample --like`` writes
for a checkpoint holding that state dict (same rules, same per-name seeds,
``layout="torch"`` by default)::

    model = MyModel()
    vsgen.torch.init_(model, "he_normal", seed=0, rules={"*embed*.weight": "glorot_uniform"})

    # the same bytes as
    safetensors.torch.save_file(model.state_dict(), "model.safetensors")
    # vsgen sample --like model.safetensors --layout torch --preset he_normal --seed 0 ...

How each tensor is chosen is the ``--like`` order (``docs/spec-files.md``):
a rule, then the built-ins (integer and bool buffers such as
``num_batches_tracked`` keep their values; rank-1 ``weight``/``scale`` and
``running_var`` become ones; biases and ``running_mean`` zeros), then
``preset`` for floating tensors of rank >= 2. Fans use PyTorch's layout
``(out, in, *kernel)``: fan_in = in * prod(kernel), fan_out = out * prod(kernel).

No copies: a CPU tensor that is contiguous is filled through its own memory
(``Tensor.numpy()`` of the detached tensor, which shares it; bfloat16 through
a 16-bit integer view seen as ``ml_dtypes.bfloat16``), by the stream's
multi-threaded ``fill``. Other tensors (non-contiguous, or on a GPU) are
filled into a contiguous CPU buffer of their size, then ``copy_``'d: one
temporary per tensor. Tensors that share memory (tied weights) are filled
once, under their first name in ``state_dict`` order. Non-persistent buffers
are not in the state dict and are left as they are.

``torch`` is imported only when these functions are called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from vsgen import modelspec
from vsgen.dtypes import TensorInfo, normalize_dtype
from vsgen.initializer import RandomInitializer, SamplePlan
from vsgen.inplace import torch_array

if TYPE_CHECKING:
    import torch

__all__ = ["init_", "plan"]

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


def _default_init(preset: object) -> modelspec.Init | None:
    if preset is None or isinstance(preset, modelspec.Init):
        return preset
    if isinstance(preset, RandomInitializer):
        return modelspec.init_from_initializer(preset)
    return modelspec.parse_init(preset, "Argument `preset`")


def _spec(
    spec: str | os.PathLike[str] | Mapping[str, Any] | modelspec.ModelSpec | None,
    rules: Mapping[str, Any] | None,
) -> modelspec.ModelSpec:
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


def _state(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The state dict's tensors, in order, each storage once (tied weights)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"Argument `module` must be a torch.nn.Module. Received: {type(module).__name__}"
        )
    seen: dict[tuple[Any, ...], str] = {}
    tensors = []
    for name, tensor in module.state_dict(keep_vars=True).items():
        if not isinstance(tensor, torch.Tensor):
            continue  # `_extra_state` entries hold arbitrary objects
        if torch.nn.parameter.is_lazy(tensor):
            raise ValueError(
                f"tensor {name!r} is not materialised yet (a lazy module): run a forward pass first"
            )
        if tensor.device.type == "meta":
            raise ValueError(
                f"tensor {name!r} is on the meta device and has no memory: materialise the "
                "module first, e.g. module.to_empty(device='cpu')"
            )
        key = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if tensor.numel() and key in seen:
            continue  # tied to an earlier name
        seen[key] = name
        tensors.append((name, tensor))
    return tensors


def _info(name: str, tensor: torch.Tensor) -> TensorInfo:
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in _DTYPES:
        raise ValueError(
            f"tensor {name!r} has dtype {dtype}; vsgen initialises float16, bfloat16, "
            "float32 and float64 tensors and keeps integer and bool ones"
        )
    return TensorInfo(name, tuple(tensor.shape), normalize_dtype(_DTYPES[dtype]))


def plan(
    module: torch.nn.Module,
    preset: str | Mapping[str, Any] | RandomInitializer | modelspec.Init | None = None,
    *,
    seed: int | None = None,
    rules: Mapping[str, Any] | None = None,
    spec: str | os.PathLike[str] | Mapping[str, Any] | modelspec.ModelSpec | None = None,
    layout: str | None = None,
    stream: str | None = None,
) -> modelspec.ModelJob:
    """The plan :func:`init_` carries out, without touching the module.

    ``job.rows`` is the table ``vsgen sample --plan`` prints
    (:func:`vsgen.modelspec.plan_table`). Arguments as :func:`init_`.
    """
    state = _state(module)
    parsed = _spec(spec, rules)
    infos = [_info(name, tensor) for name, tensor in state]
    return modelspec.build_job(
        parsed,
        infos,
        seed=seed,
        layout=layout if layout is not None else parsed.layout or "torch",
        stream=stream,
        init=_default_init(preset),
    )


def init_(
    module: torch.nn.Module,
    preset: str | Mapping[str, Any] | RandomInitializer | modelspec.Init | None = None,
    *,
    seed: int | None = None,
    rules: Mapping[str, Any] | None = None,
    spec: str | os.PathLike[str] | Mapping[str, Any] | modelspec.ModelSpec | None = None,
    layout: str | None = None,
    stream: str | None = None,
    threads: int | None = None,
) -> modelspec.ModelJob:
    """Initialise every tensor of ``module.state_dict()`` in place, as ``sample --like``.

    Args:
        module: a ``torch.nn.Module`` whose tensors have memory (CPU or any
            device; not ``meta``, not lazy).
        preset: the initializer of floating tensors of rank >= 2 that no rule
            covers: a name (``"he_normal"``, ``"kaiming_uniform"``,
            ``"random_normal"``...), ``"variance_scaling"``, a table as in a
            spec (``{"preset": "kaiming_uniform", "a": 5**0.5}``,
            ``{"truncated_normal": 0.02}``), Keras's form
            (``{"class_name": "KaimingUniform", "config": {"a": 5**0.5}}``), or
            a vsgen initializer (``vsgen.KaimingNormal(mode="fan_out")``; its
            seed is ignored). Default: the spec's ``init``, else
            VarianceScaling(1, fan_in, truncated_normal), i.e. stddev
            sqrt(1 / fan_in).
        seed: the global seed; each tensor's seed is
            ``derive_seed(seed, name)`` (SHA-256 of the seed and the name).
            None draws one: it is ``job.seed`` of the result.
        rules: ``{pattern: initializer}`` as a spec's ``[rules]``, tried
            before the spec's own rules; first match wins.
        spec: a spec file, dict or ``ModelSpec`` giving defaults and rules
            (not tensors).
        layout: fan convention; default the spec's, else ``"torch"``.
        stream: ``"vsgen"`` (default) or ``"keras"``.
        threads: threads per tensor; default all usable CPUs.

    Returns:
        The :class:`vsgen.modelspec.ModelJob` that was carried out (``seed``,
        ``rows``, ``records``).

    Raises:
        ValueError / TypeError: a bad argument or a tensor that cannot be
            initialised (meta, lazy, complex...); nothing is changed then.
    """
    import torch

    from vsgen.streams import usable_cpus

    threads = usable_cpus() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"Argument `threads` must be an integer >= 1. Received: {threads!r}")
    state = _state(module)
    job = plan(module, preset, seed=seed, rules=rules, spec=spec, layout=layout, stream=stream)
    with torch.no_grad():
        for (_, tensor), tensor_plan in zip(state, job.plans, strict=True):
            if isinstance(tensor_plan, modelspec.CopyPlan):
                continue  # the module's own values are what the file would copy
            _fill_tensor(tensor.detach(), tensor_plan, threads)
    return job


def _fill_flat(out: np.ndarray, tensor_plan: Any, threads: int) -> None:
    if isinstance(tensor_plan, SamplePlan):
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
