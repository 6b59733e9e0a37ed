"""Hugging Face transformers: whole models from a config, initialised as transformers
does, written as a directory that ``from_pretrained`` loads.

::

    vsgen.hf.save_pretrained("config.json", "model", seed=0)   # shards, index, config.json
    model = transformers.AutoModelForCausalLM.from_pretrained("model")

The model is built from its config by transformers' own class (the config's
``architectures``, else its causal-LM or base auto class) on the meta device: shapes
and dtypes, no memory for the weights. What each tensor gets is decided by the
``"hf"`` convention (:data:`HF`): the model's own ``initialize_weights()``, which
calls ``_init_weights`` on every submodule, is run on a meta copy and recorded
(:func:`vsgen.torch.record_init`), so ``normal_(std=initializer_range)`` becomes
``RandomNormal(0, initializer_range)``, ``zeros_`` a constant, a padding row a set
row, and an architecture's own cases (GPT-2's residual projections,
N(0, initializer_range / sqrt(2 n_layer))) come with the model, new
architectures included. Nothing is guessed: a tensor whose initialisation vsgen
cannot reproduce keeps its values, and on the meta device that is refused with its
name. Tied weights (``tie_word_embeddings``) are recorded untied, as transformers
initialises them before tying, and written once under the name ``save_pretrained``
keeps (:func:`saved_tied_name`). The values are drawn from vsgen's stream, block by
block (:func:`vsgen.torch.save`), so memory stays bounded whatever the model's size.
(:func:`saved_tied_name`, :func:`record_init_weights` and :func:`model_files` are
defined in ``vsgen._hf_model``, which :mod:`vsgen.torch` uses for any transformers
model, and imported from here.)

The output directory holds ``model-0000K-of-0000N.safetensors``,
``model.safetensors.index.json``, ``config.json`` (its ``dtype`` the one written,
its ``architectures`` the class built) and, for models that generate,
``generation_config.json``, all committed together.

transformers and torch are imported only when these functions are called
(``pip install 'vsgen[hf]'``; torch as built for your machine).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vsgen import modelspec
from vsgen._hf_model import (
    _FLOATING,
    CONFIG_NAME,
    GENERATION_CONFIG_NAME,
    SHARDED,
    _one_line,
    model_files,
    record_init_weights,
    saved_tied_name,
)
from vsgen._limits import MAX_SPEC_BYTES, loads_json, read_capped
from vsgen.torch import HF, HFConvention, ModuleConvention

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "CONFIG_NAME",
    "GENERATION_CONFIG_NAME",
    "HF",
    "HFConvention",
    "build_meta_model",
    "config_file",
    "load_config",
    "model_files",
    "plan",
    "record_init_weights",
    "save_pretrained",
    "saved_tied_name",
]

INSTALL = "pip install 'vsgen[hf]'"
#: Files that make a directory a checkpoint rather than a config to build from.
_WEIGHT_FILE = re.compile(
    r".*\.(safetensors|bin|pt|pth|ckpt|h5|hdf5|msgpack|npz|npy|gguf|zarr)|.*\.index\.json",
    re.IGNORECASE,
)

# --- finding and reading a config -----------------------------------------------------------


def config_file(like: str | os.PathLike[str]) -> str | None:
    """The Hugging Face config ``like`` names, or None if ``like`` is a checkpoint.

    A ``.json`` file (not a ``*.index.json``) is a config; a directory is one when it
    holds a ``config.json`` and no weights (no ``.safetensors``, ``.bin``, ``.h5``,
    index...): its ``config.json``. Needs neither transformers nor torch.
    """
    path = os.fspath(like)
    if os.path.isdir(path):
        entries = os.listdir(path)
        if CONFIG_NAME not in entries or any(_WEIGHT_FILE.fullmatch(e) for e in entries):
            return None
        return os.path.join(path, CONFIG_NAME)
    lowered = path.lower()
    if lowered.endswith(".json") and not lowered.endswith(".index.json"):
        return path
    return None


def _transformers() -> Any:
    """transformers (with torch), or ImportError saying what to install."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(
            "a model from a Hugging Face config needs torch (the build for your machine, "
            f"https://pytorch.org) and transformers ({INSTALL})"
        ) from None
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"a model from a Hugging Face config needs transformers: {INSTALL}"
        ) from None
    return transformers


def load_config(config: Any) -> PretrainedConfig:
    """A transformers config (a copy of it): a ``PretrainedConfig``, a dict as in a
    ``config.json``, or the path of a ``config.json`` or of the directory holding one.

    The file is read under vsgen's JSON caps; its ``model_type`` chooses the config
    class, which reads the rest (``PretrainedConfig.from_dict``). A repository's
    own code (``auto_map``) is never run.

    Raises:
        ValueError: not a JSON object, no ``model_type``, a ``model_type`` this
            transformers does not know, or a config transformers cannot read.
        TypeError: ``config`` is none of the above.
        ImportError: transformers or torch is missing.
    """
    transformers = _transformers()
    if isinstance(config, transformers.PretrainedConfig):
        return copy.deepcopy(config)
    if isinstance(config, Mapping):
        return _config_from_dict(dict(config), "Argument `config`", transformers)
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: file not found")
        with open(path, "rb") as handle:
            text = read_capped(handle, MAX_SPEC_BYTES, path)
        return _config_from_dict(loads_json(text, path), path, transformers)
    raise TypeError(
        "Argument `config` must be a transformers PretrainedConfig, a dict, or the path of a "
        f"config.json or of its directory. Received: {type(config).__name__}"
    )


def _config_from_dict(document: object, where: str, transformers: Any) -> PretrainedConfig:
    if not isinstance(document, dict):
        raise ValueError(f"{where}: not a Hugging Face config (a JSON object)")
    model_type = document.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"{where}: not a Hugging Face config (no model_type)")
    mapping = transformers.CONFIG_MAPPING
    if model_type not in mapping:
        own_code = " (its auto_map names code of its own, which vsgen does not run)"
        raise ValueError(
            f"{where}: unknown architecture: transformers {transformers.__version__} has no "
            f"model_type {model_type!r}{own_code if 'auto_map' in document else ''}"
        )
    try:
        return mapping[model_type].from_dict(document)
    except Exception as error:  # a config class may raise anything on bad values
        raise ValueError(f"{where}: transformers cannot read it ({_one_line(error)})") from None


# --- building the model on the meta device --------------------------------------------------


def _model_class(config: PretrainedConfig, model_class: object, transformers: Any) -> type:
    """The class to build: ``model_class`` (a class, or a name of transformers': a model
    class or an auto class such as ``"AutoModelForMaskedLM"``), else the config's first
    ``architectures`` entry, else its causal-LM auto class, else its base one."""
    base = transformers.PreTrainedModel
    if model_class is not None:
        found: Any = model_class
        if isinstance(model_class, str):
            found = getattr(transformers, model_class, None)
        mapping = getattr(found, "_model_mapping", None)  # an auto class
        if mapping is not None:
            if type(config) not in mapping:
                raise ValueError(
                    f"Argument `model_class`: {found.__name__} has no model for "
                    f"{type(config).__name__}"
                )
            return mapping[type(config)]
        if isinstance(found, type) and issubclass(found, base):
            return found
        raise ValueError(
            "Argument `model_class` must be a transformers model class or auto class, or its "
            f"name. Received: model_class={model_class!r}"
        )
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        name = architectures[0]
        found = getattr(transformers, name, None) if isinstance(name, str) else None
        if not (isinstance(found, type) and issubclass(found, base)):
            raise ValueError(
                f"unknown architecture {name!r}: transformers {transformers.__version__} has no "
                "such model class"
            )
        return found
    for mapping in (transformers.MODEL_FOR_CAUSAL_LM_MAPPING, transformers.MODEL_MAPPING):
        if type(config) in mapping:
            return mapping[type(config)]
    raise ValueError(
        f"transformers has no model class for model_type {config.model_type!r}; "
        "name one in the config's architectures"
    )


def _torch_dtype(dtype: object, config: PretrainedConfig) -> torch.dtype:
    """``dtype`` (default: the config's ``dtype``/``torch_dtype``, else float32) as a
    floating torch dtype."""
    import torch

    from vsgen.dtypes import normalize_dtype

    given = dtype if dtype is not None else getattr(config, "dtype", None)
    if given is None:
        return torch.float32
    where = "Argument `dtype`" if dtype is not None else "the config's dtype"
    try:
        name = normalize_dtype(str(given).removeprefix("torch.")).name
    except ValueError:
        name = ""
    if name not in _FLOATING:
        raise ValueError(
            f"{where} must be a floating type ({', '.join(_FLOATING)}). Received: {given!r}"
        )
    return getattr(torch, name)


def _persistent_buffers(model: torch.nn.Module) -> list[str]:
    saved = set(model.state_dict(keep_vars=True))
    return [name for name, _ in model.named_buffers() if name in saved]


def build_meta_model(
    config: Any, *, dtype: object = None, model_class: object = None
) -> PreTrainedModel:
    """The model ``config`` describes, built by transformers on the meta device.

    ``config`` as :func:`load_config` takes it; ``dtype`` the parameters' floating
    type (default: the config's ``dtype``, else float32); ``model_class`` as
    described in :func:`_model_class` (default: the config's ``architectures``).
    Parameters and buffers are on the meta device, without memory. A model whose
    state dict holds buffers (values computed in ``__init__``, which the meta
    device cannot hold) is built again under :func:`vsgen.torch.meta_parameters`:
    parameters on the meta device, buffers computed and initialised by
    transformers (memory peaks at the largest single parameter then).

    Raises:
        ValueError: an unknown architecture, a bad ``dtype``, or a config
            transformers cannot build a model from (the message says why).
        ImportError: transformers or torch is missing.
    """
    transformers = _transformers()
    import torch

    from vsgen.torch import meta_parameters

    config = load_config(config)
    cls: Any = _model_class(config, model_class, transformers)
    torch_dtype = _torch_dtype(dtype, config)

    def build(context: Any) -> PreTrainedModel:
        try:
            with context:
                return cls._from_config(copy.deepcopy(config), dtype=torch_dtype)
        except Exception as error:  # transformers and torch raise anything on bad sizes
            raise ValueError(
                f"transformers cannot build {cls.__name__} from this config ({_one_line(error)})"
            ) from None

    model = build(torch.device("meta"))
    if _persistent_buffers(model):
        model = build(meta_parameters())
    return model


# --- the hf convention -----------------------------------------------------------------------


# --- plans and directories -------------------------------------------------------------------


def _with_initializer_range(config: PretrainedConfig, initializer_range: object) -> None:
    if initializer_range is None:
        return
    if (
        isinstance(initializer_range, bool)
        or not isinstance(initializer_range, (int, float))
        or not math.isfinite(initializer_range)
        or initializer_range <= 0
    ):
        raise ValueError(
            "Argument `initializer_range` must be a positive float. "
            f"Received: initializer_range={initializer_range!r}"
        )
    if not hasattr(config, "initializer_range"):
        raise ValueError(
            f"Argument `initializer_range`: {type(config).__name__} has no initializer_range "
            "(its model reads another field); set that field in the config"
        )
    config.initializer_range = float(initializer_range)


def _meta_model(
    config: Any, dtype: object, initializer_range: object, model_class: object
) -> PreTrainedModel:
    loaded = load_config(config)
    _with_initializer_range(loaded, initializer_range)
    return build_meta_model(loaded, dtype=dtype, model_class=model_class)


def plan(
    config: Any,
    preset: Any = None,
    *,
    seed: int | None = None,
    rules: Mapping[str, Any] | None = None,
    spec: Any = None,
    convention: str | ModuleConvention | None = None,
    dtype: object = None,
    initializer_range: float | None = None,
    model_class: object = None,
    layout: str | None = None,
    stream: str | None = None,
    isolate: bool = False,
) -> modelspec.ModelJob:
    """The plan of the model ``config`` describes (``job.rows``: every tensor's
    initializer and why), with ``job.companions`` the ``config.json`` (and
    ``generation_config.json``) :func:`save_pretrained` writes beside the weights.

    Args:
        config: a transformers ``PretrainedConfig``, a dict as in a ``config.json``,
            or the path of a ``config.json`` or of the directory holding one.
        preset, seed, rules, spec, layout, stream: as :func:`vsgen.torch.plan`
            (rules first; ``preset`` serves only what the convention leaves to it).
        convention: ``"hf"`` (default), ``"torch"`` or ``"vsgen"``.
        dtype: the floating type of the weights (default: the config's ``dtype``,
            else float32); the model is built in it, as transformers would.
        initializer_range: replaces the config's ``initializer_range`` (the
            standard deviation of transformers' weights), in the plan and in the
            ``config.json`` written.
        model_class: the class to build (a transformers model or auto class, or
            its name); default the config's ``architectures``, else its causal-LM
            auto class.
        isolate: build and record the model in a child Python process, which exits
            before this returns, so that this process never imports torch or
            transformers (about 400 MiB of memory for as long as it runs; the
            command line does this). The job is the same; the arguments must
            pickle (a ``convention`` object defined in ``__main__`` does not).

    Raises:
        ValueError / TypeError: bad arguments, a config transformers cannot build, an
            unknown architecture, a tensor on the meta device without values.
        ImportError: transformers or torch is missing (``pip install 'vsgen[hf]'``).
        OSError: ``isolate`` and the child process could not run or died.
    """
    if isolate:
        return _plan_in_child(
            config=config,
            preset=preset,
            seed=seed,
            rules=rules,
            spec=spec,
            convention=convention,
            dtype=dtype,
            initializer_range=initializer_range,
            model_class=model_class,
            layout=layout,
            stream=stream,
        )
    from vsgen import torch as vsgen_torch

    model = _meta_model(config, dtype, initializer_range, model_class)
    job = vsgen_torch.plan(
        model,
        preset,
        seed=seed,
        rules=rules,
        spec=spec,
        convention=convention,
        layout=layout,
        stream=stream,
    )
    job.companions = model_files(model, job)
    return job


def _plan_in_child(**kwargs: Any) -> modelspec.ModelJob:
    """:func:`plan` run by a child process (:mod:`vsgen._hf_planner`); its warnings
    are raised again here, its exception re-raised, the child killed if this process
    is interrupted first."""
    import pickle
    import subprocess
    import warnings

    try:
        request = pickle.dumps(kwargs, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise TypeError(f"Argument `isolate`: the arguments do not pickle ({error})") from None
    child = subprocess.Popen(_child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdin is not None and child.stdout is not None
        with child.stdin:
            child.stdin.write(request)
        _preload()  # while the child works, on another CPU
        answer = child.stdout.read()
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 0 or not answer:
        how = (
            f"was ended by signal {-child.returncode}"
            if child.returncode < 0
            else f"exited with status {child.returncode}"
        )
        raise OSError(f"the process that builds the model from its config {how}")
    kind, payload, raised = pickle.loads(answer)  # our own child's answer
    for category, message in raised:
        warnings.warn(message, category, stacklevel=3)
    if kind == "error":
        raise payload
    job: modelspec.ModelJob = payload
    return job


def _preload() -> None:
    """Import what writing the job will need (ml_dtypes alone takes about half a second)."""
    import contextlib
    import importlib

    for name in ("ml_dtypes", "vsgen.blockwrite", "vsgen.formats.sharded"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _child_command() -> list[str]:
    """The child's command line: this Python with this process's ``sys.path``, so that
    it imports this very vsgen (and transformers), wherever each was found here."""
    import sys

    search = [os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path]
    code = (
        f"import sys; sys.path[:] = {search!r}; "
        "from vsgen._hf_planner import main; sys.exit(main())"
    )
    return [sys.executable, "-c", code]


def save_pretrained(
    config: Any,
    directory: str | os.PathLike[str],
    preset: Any = None,
    *,
    seed: int | None = None,
    rules: Mapping[str, Any] | None = None,
    spec: Any = None,
    convention: str | ModuleConvention | None = None,
    dtype: object = None,
    initializer_range: float | None = None,
    model_class: object = None,
    max_shard_size: int | str | None = None,
    scheduler: object = None,
    force: bool = False,
    threads: int | None = None,
    layout: str | None = None,
    stream: str | None = None,
    chunks: Any = None,
    on_progress: Callable[[int], None] | None = None,
) -> modelspec.ModelJob:
    """Write the model ``config`` describes, initialised as transformers would, into
    ``directory``: sharded safetensors, ``model.safetensors.index.json``,
    ``config.json`` and (for models that generate) ``generation_config.json``, which
    ``from_pretrained(directory)`` of the config's class (or its auto class) loads
    with no missing, unexpected or mismatched keys.

    Nothing of the model's size is allocated: it is built on the meta device and
    written block by block (:func:`vsgen.torch.save`); the directory appears whole
    or not at all, and replaces an earlier one only with ``force`` (and only one
    vsgen wrote, unchanged).

    Args:
        config, preset, seed, rules, spec, convention, dtype, initializer_range,
            model_class, layout, stream: as :func:`plan`.
        directory: the output directory.
        max_shard_size: the largest shard (bytes or ``"5GB"``, the default).
        scheduler, force, threads, chunks, on_progress: as :func:`vsgen.torch.save`.

    Returns:
        The :class:`vsgen.modelspec.ModelJob` written.

    Raises:
        ValueError / TypeError: as :func:`plan`; an existing directory without
            ``force``. Nothing is written then.
        ImportError: transformers or torch is missing.
        OSError: the directory could not be written (nothing is left behind).
    """
    from vsgen import torch as vsgen_torch

    model = _meta_model(config, dtype, initializer_range, model_class)
    return vsgen_torch.save(
        model,
        directory,
        preset,
        seed=seed,
        rules=rules,
        spec=spec,
        convention=convention,
        format=SHARDED,
        max_shard_size=max_shard_size,
        scheduler=scheduler,
        force=force,
        threads=threads,
        layout=layout,
        stream=stream,
        chunks=chunks,
        on_progress=on_progress,
    )
