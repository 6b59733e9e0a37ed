"""Whole models: many named tensors, each with its own initializer and seed.

A *model spec* (a TOML or JSON file, or the equivalent dict) lists tensors by
name with a shape, an optional dtype and an optional initializer; glob
*rules* give initializers to many names at once; top-level keys give the
defaults. ``docs/spec-files.md`` documents the schema. :func:`build_job`
turns a spec (or the tensor list of an existing checkpoint, ``like``) into one
plan per tensor: a :class:`~vsgen.job.ModelJob` (the one job type, defined in
:mod:`vsgen.job` and re-exported here with ``PlanRow`` and ``tensor_job``),
ready to be streamed into a single output file or written block by block.

How a tensor's initializer is chosen, first match wins:

1. its own ``init`` (spec tensors only);
2. the first rule, in the order written, whose pattern matches the name
   (``fnmatch.fnmatchcase``: ``*``, ``?``, ``[seq]``; case-sensitive);
3. for tensors of rank >= 2: the default initializer (the spec's top-level
   ``init``, else vsgen's default ``VarianceScaling``);
4. for tensors of rank 0 or 1: :func:`builtin_constant` (ones for norm
   scales and variances, zeros for everything else).

Seeds: every variance-scaling tensor draws from its own seed, derived from the
global seed and its name by :func:`derive_seed`, so adding, removing or
reordering tensors never changes the others. Pure: no printing; the only I/O
is reading the spec file and, for ``like``, a checkpoint's header.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import numbers
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vsgen import provenance
from vsgen._limits import MAX_TENSORS
from vsgen.dtypes import TensorInfo, resolve_dtype
from vsgen.fans import LAYOUTS, check_layout, normalize_shape, parse_shape
from vsgen.initializer import (
    INITIALIZERS,
    PRESETS,
    Plan,
    RandomInitializer,
    SamplePlan,
    VarianceScaling,
    deserialize,
    get_preset,
)
from vsgen.initializer import _TorchPreset as _TORCH_PRESET
from vsgen.job import ModelJob, PlanRow, tensor_job
from vsgen.streams import DEFAULT_CHUNK, DEFAULT_STREAM, JSON_SAFE_SEED_BITS, get_stream

__all__ = [
    "CONSTANTS",
    "COPY",
    "KEEP",
    "ArrayPlan",
    "Choice",
    "ConstantPlan",
    "CopyPlan",
    "FixedRowsPlan",
    "Init",
    "ModelJob",
    "ModelSpec",
    "PlanRow",
    "TensorEntry",
    "build_job",
    "builtin_constant",
    "builtin_init",
    "derive_seed",
    "init_from_initializer",
    "like_tensors",
    "load_spec",
    "parse_init",
    "parse_spec",
    "job_from_file",
    "plan_table",
    "seed_bound",
    "tensor_job",
]

#: Constant initializers by name.
CONSTANTS = {"zeros": 0.0, "ones": 1.0}

#: The initializer that keeps a ``--like`` checkpoint's own values.
COPY = "copy"

#: Global seeds are hashed as 8 little-endian bytes.
MAX_GLOBAL_SEED = 2**64

#: Recorded in provenance next to each derived seed.
SEED_RULE = "sha256(global_seed as u64le + utf8(name))[:8] as u64le mod 2**bits"

_TOP_KEYS = ("seed", "dtype", "layout", "stream", "init", "rules", "tensors")
_TENSOR_KEYS = ("shape", "dtype", "init", "seed")
#: A preset's own arguments: PyTorch's (a, nonlinearity, gain; ``mode`` is a
#: VarianceScaling key too) and the fixed-parameter initializers' (Keras's).
_ARGUMENT_KEYS = ("a", "nonlinearity", "gain", "mean", "stddev", "minval", "maxval")
_INIT_KEYS = (
    "preset",
    "scale",
    "mode",
    "distribution",
    "layout",
    "stream",
    "input_axes",
    "output_axes",
    "in_axis",
    "out_axis",
    "batch_axis",
    *_ARGUMENT_KEYS,
)
_VS_NAMES = ("variance_scaling", "VarianceScaling")


# --------------------------------------------------------------------------
# Seeds


def seed_bound(stream: str) -> int:
    """Exclusive upper bound of derived and drawn seeds for ``stream``: 2**32 for
    the keras stream, 2**53 for the vsgen stream (``Stream.seed_bits``)."""
    return 2 ** get_stream(stream).seed_bits


def derive_seed(global_seed: int, name: str, stream: str = DEFAULT_STREAM) -> int:
    """The seed of tensor ``name`` under ``global_seed``.

    ``h = SHA-256(global_seed.to_bytes(8, "little") + name.encode("utf-8"))``;
    the seed is ``int.from_bytes(h[:8], "little") % 2**bits`` with bits = 32
    for the keras stream and 53 for the vsgen stream (:func:`seed_bound`).
    A tensor's seed depends on nothing but these three inputs.
    """
    if isinstance(global_seed, bool) or not isinstance(global_seed, numbers.Integral):
        raise TypeError(
            f"Argument `seed` must be a non-negative integer. Received: seed={global_seed!r}"
        )
    if not 0 <= int(global_seed) < MAX_GLOBAL_SEED:
        raise ValueError(f"Argument `seed` must be in [0, 2**64). Received: seed={global_seed!r}")
    digest = hashlib.sha256(int(global_seed).to_bytes(8, "little") + name.encode("utf-8"))
    return int.from_bytes(digest.digest()[:8], "little") % seed_bound(stream)


# --------------------------------------------------------------------------
# Initializers as written in a spec


@dataclass(frozen=True)
class Init:
    """An initializer as a spec states it, without a seed.

    ``constant`` is set for constants (``zeros``, ``ones``, ``{constant = x}``);
    ``copy`` for ``"copy"`` (the values of the ``--like`` checkpoint, byte for
    byte); otherwise ``class_name`` is ``"VarianceScaling"``, a preset class
    name (``"HeNormal"``, ``"KaimingUniform"``) or a fixed-parameter
    initializer's (``"RandomNormal"``, ``"TruncatedNormal"``,
    ``"RandomUniform"``) and ``options`` holds the config keys given (scale,
    mode, distribution, layout, stream, axes; a PyTorch preset's a,
    nonlinearity, gain; mean, stddev, minval, maxval), as sorted ``(key,
    value)`` pairs.
    """

    constant: float | None = None
    class_name: str = "VarianceScaling"
    options: tuple[tuple[str, Any], ...] = ()
    copy: bool = False

    @property
    def is_constant(self) -> bool:
        """True for a constant initializer."""
        return self.constant is not None

    @property
    def is_random(self) -> bool:
        """True for a random initializer (neither constant nor copy)."""
        return self.constant is None and not self.copy

    def initializer_class(self) -> type[RandomInitializer]:
        """The class the init builds (a random init only)."""
        if self.class_name == "VarianceScaling":
            return VarianceScaling
        return get_preset(self.class_name)

    def initializer(
        self, seed: int | None, layout: str | None = "keras", stream: str = DEFAULT_STREAM
    ) -> RandomInitializer:
        """The initializer with ``seed``; ``layout``/``stream`` unless the init sets them
        (an initializer without fans, such as ``RandomNormal``, takes no layout).

        ``seed=None`` derives nothing: it only validates (seed 0 is used).
        """
        if not self.is_random:
            raise ValueError(f"{self.label()!r} is not a random initializer")
        cls = self.initializer_class()
        config = dict(self.options)
        # Explicit axes replace the layout; the layout still names the default.
        # No layout at all: the initializer's own default (torch for PyTorch's presets).
        if layout is not None and cls.uses_fans:
            config.setdefault("layout", layout)
        config.setdefault("stream", stream)
        config["seed"] = 0 if seed is None else seed
        for key in ("input_axes", "output_axes"):
            if key in config:
                config[key] = list(config[key])
        return cls.from_config(config)

    def stream_name(self, stream: str = DEFAULT_STREAM) -> str:
        """The stream this init draws from, given the global default ``stream``."""
        return get_stream(dict(self.options).get("stream", stream)).name

    def as_json(self) -> Any:
        """A JSON form that :func:`parse_init` reads back."""
        if self.copy:
            return COPY
        if self.constant is not None:
            for name, value in CONSTANTS.items():
                if self.constant == value:
                    return name
            return {"constant": self.constant}
        options = {key: list(v) if isinstance(v, tuple) else v for key, v in self.options}
        if self.class_name != "VarianceScaling":
            options["preset"] = _preset_key(self.class_name)
        return options or "variance_scaling"

    def label(self) -> str:
        """A short human-readable name: ``ones``, ``0.02``, ``copy``, ``he_normal``,
        ``variance_scaling(scale=0.5, mode=fan_avg, distribution=uniform)``,
        ``kaiming_uniform(a=2.236)``, ``random_normal(stddev=0.02)``.

        Options that match a preset's (scale, mode, distribution) are named
        after it; ``layout`` and ``stream`` are left out, explicit fan axes
        are added (``he_normal[in=0, out=1]``); a PyTorch preset shows the
        arguments that are not torch's defaults, a fixed-parameter initializer
        its parameters (the mean only when it is not 0).
        """
        if self.copy:
            return COPY
        if self.constant is not None:
            form = self.as_json()
            return form if isinstance(form, str) else f"{self.constant:g}"
        options = dict(self.options)
        cls = self.initializer_class()
        if not cls.uses_fans:
            built = self.initializer(None)
            shown = {
                key: getattr(built, key)
                for key in getattr(cls, "_KERAS_DEFAULTS", ())
                if not (key == "mean" and getattr(built, key) == 0.0)
            }
            arguments = ", ".join(f"{key}={value:g}" for key, value in shown.items())
            return f"{_preset_key(self.class_name)}({arguments})"
        if self.class_name != "VarianceScaling":
            name = _preset_key(self.class_name)
            torch_defaults = getattr(cls, "_TORCH_DEFAULTS", {})
            changed = [
                f"{key}={_short(options[key])}"
                for key in torch_defaults
                if key in options and options[key] != torch_defaults[key]
            ]
            if changed:
                name += f"({', '.join(changed)})"
        elif not {"scale", "mode", "distribution"} & set(options):
            name = "variance_scaling"
        else:
            params = (
                float(options.get("scale", 1.0)),
                options.get("mode", "fan_in"),
                _canonical_distribution(options.get("distribution", "truncated_normal")),
            )
            matches = [
                key for key, cls in PRESETS.items() if getattr(cls, "_PARAMS", None) == params
            ]
            name = (
                matches[0]
                if matches
                else (
                    f"variance_scaling(scale={params[0]:g}, mode={params[1]}, "
                    f"distribution={params[2]})"
                )
            )
        if "input_axes" in options:
            axes = ",".join(map(str, options["input_axes"]))
            outs = ",".join(map(str, options["output_axes"]))
            name += f"[in={axes}, out={outs}]"
        return name


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _canonical_distribution(value: object) -> str:
    text = str(value).lower()
    return "truncated_normal" if text == "normal" else text


def _preset_key(class_name: str) -> str:
    for key, cls in INITIALIZERS.items():
        if cls.__name__ == class_name:
            return key
    return class_name


def _freeze(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = []
    for key, value in sorted(config.items()):
        if isinstance(value, list):
            value = tuple(value)
        items.append((key, value))
    return tuple(items)


def init_from_initializer(initializer: RandomInitializer) -> Init:
    """The :class:`Init` of an existing initializer, dropping its seed."""
    config = initializer.get_config()
    config.pop("seed", None)
    if config.pop("preset", None) is not None:
        # PyTorch's presets keep their own formulas, fixed-parameter ones have no fans.
        for key in ("scale", "distribution"):
            config.pop(key, None)
        if "mode" not in getattr(type(initializer), "_TORCH_DEFAULTS", {}):
            config.pop("mode", None)
        return Init(class_name=type(initializer).__name__, options=_freeze(config))
    return Init(class_name="VarianceScaling", options=_freeze(config))


#: The short forms of the fixed-parameter initializers: ``{ random_normal = 0.02 }``.
_SHORT_FORMS = ("random_normal", "truncated_normal", "random_uniform")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_short_form(value: Mapping[str, Any], where: str) -> Init:
    """``{ random_normal = STDDEV }``, ``{ truncated_normal = STDDEV }`` (with an
    optional ``mean``), ``{ random_uniform = LIMIT }`` (``[-LIMIT, LIMIT)``) or
    ``{ random_uniform = [MINVAL, MAXVAL] }``; ``stream`` may be added."""
    keys = [key for key in _SHORT_FORMS if key in value]
    if len(keys) > 1:
        raise ValueError(f"{where}: give one of {', '.join(keys)}, not several")
    key = keys[0]
    allowed = {key, "stream", *(("mean",) if key != "random_uniform" else ())}
    extra = sorted(set(value) - allowed)
    if extra:
        raise ValueError(
            f"{where}: {{ {key} = ... }} takes {', '.join(sorted(allowed - {key})) or 'no'} "
            f"other keys; got {', '.join(extra)} (use {{ preset = {key!r}, ... }} for the "
            "general form)"
        )
    number = value[key]
    options: dict[str, Any] = {}
    if key == "random_uniform":
        if _is_number(number):
            options = {"minval": -float(number), "maxval": float(number)}
        elif isinstance(number, list) and len(number) == 2 and all(_is_number(v) for v in number):
            options = {"minval": float(number[0]), "maxval": float(number[1])}
        else:
            raise ValueError(
                f"{where}.random_uniform: must be a limit (values in [-limit, limit)) or "
                f"[minval, maxval], not {str(number)[:40]}"
            )
    else:
        if not _is_number(number):
            raise ValueError(f"{where}.{key}: must be the stddev, a number, not {str(number)[:40]}")
        options = {"stddev": number}
        if "mean" in value:
            options["mean"] = value["mean"]
    if "stream" in value:
        options["stream"] = value["stream"]
    return _checked(Init(class_name=get_preset(key).__name__, options=_freeze(options)), where)


def parse_init(value: object, where: str = "init") -> Init:
    """Parse an initializer as written in a spec; ``where`` prefixes errors.

    Accepted: ``"zeros"``, ``"ones"``, ``"copy"`` (with ``--like`` only: the
    checkpoint's own values), a preset or initializer name (``"he_normal"``,
    ``"HeNormal"``, ``"kaiming_uniform"``, ``"random_normal"``: Keras's
    defaults), ``"variance_scaling"``; a table ``{constant = 0.02}``; the
    short forms ``{random_normal = STDDEV}``, ``{truncated_normal = STDDEV}``
    (with ``mean`` if not 0), ``{random_uniform = LIMIT}`` or
    ``{random_uniform = [MINVAL, MAXVAL]}``; a table of VarianceScaling
    options with an optional ``preset`` (which fixes scale, mode and
    distribution; a PyTorch preset takes its arguments ``mode``, ``a``,
    ``nonlinearity`` or ``gain``, a fixed-parameter one ``mean``/``stddev``
    or ``minval``/``maxval``); a Keras serialized initializer (``{class_name
    = ..., config = {...}}``). Seeds are not accepted here.

    Raises:
        ValueError: one line naming ``where``.
    """
    if isinstance(value, str):
        if value in CONSTANTS:
            return Init(constant=CONSTANTS[value])
        if value == COPY:
            return Init(copy=True)
        if value in _VS_NAMES:
            return Init()
        try:
            cls = get_preset(value)
        except ValueError:
            known = ", ".join([*CONSTANTS, COPY, *INITIALIZERS, "variance_scaling"])
            raise ValueError(
                f"{where}: unknown initializer {value!r}; use one of {known}, "
                "or a table of VarianceScaling options"
            ) from None
        return _checked(Init(class_name=cls.__name__), where)
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{where}: must be an initializer name or a table, not {_type_name(value)} {value!r}"
        )
    if "constant" in value:
        extra = sorted(set(value) - {"constant"})
        if extra:
            raise ValueError(f"{where}: a constant takes no other keys; got {', '.join(extra)}")
        number = value["constant"]
        if isinstance(number, bool) or not isinstance(number, numbers.Real):
            raise ValueError(f"{where}.constant: must be a number, not {number!r}")
        try:
            finite = math.isfinite(float(number))
        except OverflowError:  # an integer such as 10**400
            finite = False
        if not finite:
            raise ValueError(f"{where}.constant: must be a finite float, not {str(number)[:40]}")
        return Init(constant=float(number))
    if "seed" in value or "seed" in (value.get("config") or {}):
        raise ValueError(
            f"{where}: an initializer takes no seed; each tensor's seed is derived from the "
            "global seed and its name (set `seed` on a tensor to fix one)"
        )
    if any(key in value for key in _SHORT_FORMS):
        return _parse_short_form(value, where)
    if "class_name" in value:
        try:
            built = deserialize(value)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from None
        cls_name = type(built).__name__
        if isinstance(built, VarianceScaling) and not isinstance(built, _TORCH_PRESET):
            config = built.get_config()
            config.pop("seed", None)
            if cls_name != "VarianceScaling":
                for key in ("scale", "mode", "distribution"):
                    config.pop(key, None)
        else:
            # PyTorch's presets and fixed parameters: the arguments the config gave.
            inner = value.get("config") or {}
            given = {key for key in inner if inner[key] is not None}
            config = {
                key: item
                for key, item in built.get_config().items()
                if key in given and key not in ("seed", "preset", "scale", "distribution")
            }
        return _checked(Init(class_name=cls_name, options=_freeze(config)), where)
    unknown = sorted(set(value) - set(_INIT_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r}; allowed: constant, {', '.join(_INIT_KEYS)}, "
            f"or one of {', '.join(_SHORT_FORMS)}"
        )
    config = dict(value)
    class_name = "VarianceScaling"
    arguments = sorted(set(config) & set(_ARGUMENT_KEYS))
    if "preset" in config:
        preset = config.pop("preset")
        try:
            cls = get_preset(str(preset))
        except ValueError as error:
            raise ValueError(f"{where}.preset: {error}") from None
        torch_arguments = set(getattr(cls, "_TORCH_DEFAULTS", ()))
        keras_order = list(getattr(cls, "_KERAS_DEFAULTS", ()))
        keras_arguments = set(keras_order)
        if not cls.uses_fans:
            extra = sorted(set(config) - keras_arguments - {"stream"})
            if extra:
                raise ValueError(
                    f"{where}: preset {preset!r} takes {', '.join(keras_order)} and stream "
                    f"only (it has no fans); drop {', '.join(extra)}"
                )
        fixed_keys = [k for k in ("scale", "mode", "distribution") if k not in torch_arguments]
        fixed = sorted(set(config) & set(fixed_keys))
        if fixed and cls.uses_fans:
            what = ", ".join(fixed_keys[:-1]) + f" and {fixed_keys[-1]}"
            raise ValueError(f"{where}: preset {preset!r} fixes {what}; drop {', '.join(fixed)}")
        wrong = sorted(set(arguments) - torch_arguments - keras_arguments)
        if wrong:
            raise ValueError(
                f"{where}: preset {preset!r} takes no {', '.join(wrong)}"
                + (
                    f"; its arguments: {', '.join(sorted(torch_arguments | keras_arguments))}"
                    if torch_arguments | keras_arguments
                    else ""
                )
            )
        class_name = cls.__name__
    elif arguments:
        raise ValueError(
            f"{where}: {', '.join(arguments)} belong to a preset's table: "
            '{ preset = "random_normal", stddev = 0.02 }, { preset = "kaiming_uniform", '
            "a = 2.236 }, ...; or use a short form such as { truncated_normal = 0.02 }"
        )
    return _checked(Init(class_name=class_name, options=_freeze(config)), where)


def _checked(init: Init, where: str) -> Init:
    try:
        init.initializer(None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {error}") from None
    return init


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        str: "a string",
    }.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------
# Built-in initializers: what a tensor no tensor ``init`` or rule covers gets

_NORM_PART = re.compile(r"(ln|bn)(_?[0-9a-z]{1,3})?")
_ONES_LEAVES = {
    "gamma": "norm scale",
    "running_var": "running variance",
    "moving_variance": "running variance",
}
_ZEROS_LEAVES = {
    "beta": "norm shift",
    "running_mean": "running mean",
    "moving_mean": "running mean",
}
#: Leaves of rank-1 scales: every rank-1 ``weight`` in PyTorch is a norm's
#: (Linear, Conv and Embedding weights have rank >= 2); Flax and keras-hub
#: call it ``scale``.
_SCALE_LEAVES = ("weight", "scale")
#: Floating buffers a model computes from its configuration rather than
#: learns (rotary frequencies, GPT-2's mask value): kept as they are.
_COPY_LEAVES = ("inv_freq", "masked_bias")


def _name_parts(name: str) -> list[str]:
    text = re.sub(r":\d+$", "", name.lower())  # Keras variable suffixes ("bias:0")
    return [part for part in re.split(r"[./]", text) if part] or [""]


def _builtin_constant(name: str, shape: Sequence[int] | None) -> tuple[float, str]:
    parts = _name_parts(name)
    leaf = parts[-1]
    if leaf in _ONES_LEAVES:
        return 1.0, _ONES_LEAVES[leaf]
    if "bias" in leaf:
        return 0.0, "bias"
    if leaf in _ZEROS_LEAVES:
        return 0.0, _ZEROS_LEAVES[leaf]
    if shape is not None and len(shape) == 1 and leaf in _SCALE_LEAVES:
        return 1.0, f"norm scale (rank-1 {leaf})"
    if any("norm" in part or _NORM_PART.fullmatch(part) for part in parts):
        return 1.0, "norm scale (by name)"
    return 0.0, f"rank-{len(shape)} tensor" if shape is not None else "no rule"


def builtin_constant(name: str, shape: Sequence[int] | None = None) -> float:
    """The built-in constant of a rank-0/1 floating tensor no rule covers: 1.0 or 0.0.

    The name is lower-cased, a trailing ``:<digits>`` dropped, and split at
    ``.`` and ``/`` into parts; the last part is the *leaf*. Then, in order:

    * leaf ``gamma``, ``running_var`` or ``moving_variance`` -> 1.0;
    * leaf containing ``bias``, or ``beta``, ``running_mean``, ``moving_mean``
      -> 0.0 (a norm's bias stays zero);
    * leaf ``weight`` or ``scale`` of a rank-1 tensor -> 1.0 (decided by
      structure: in PyTorch only norms have rank-1 weights, e.g.
      ``1.weight`` of a BatchNorm2d inside an ``nn.Sequential``); needs
      ``shape``, without it this step is skipped;
    * any part containing ``norm`` (``layernorm``, ``ln_norm``, ``rmsnorm``,
      ``final_layer_norm``...) or equal to ``ln``/``bn`` optionally followed
      by ``_`` and up to three letters or digits (``ln_1``, ``ln_f``, ``bn1``)
      -> 1.0 (a norm's weight or scale);
    * anything else -> 0.0.
    """
    return _builtin_constant(name, shape)[0]


def builtin_init(name: str, shape: Sequence[int], dtype: object) -> tuple[Init, str] | None:
    """The built-in initializer of a tensor no tensor ``init`` or rule covers, and why.

    * integer and bool tensors (``num_batches_tracked``, ``position_ids``,
      attention masks) -> ``copy``: the ``--like`` checkpoint's bytes;
    * leaves ``inv_freq`` and ``masked_bias`` (buffers computed from the
      model's configuration) -> ``copy``;
    * floating tensors of rank 0 or 1 -> :func:`builtin_constant`;
    * floating tensors of rank >= 2 -> None: the default initializer applies
      (embedding tables included: with ``layout="torch"`` an ``(num, dim)``
      table gets fan_in = dim, so a unit-scale preset gives stddev
      sqrt(scale / dim)).

    Returns ``(init, reason)``, or None for the default initializer.
    """
    kind = np.dtype(dtype).kind  # type: ignore[call-overload]
    if kind in "biu":
        return Init(copy=True), f"{np.dtype(dtype).name} tensor"  # type: ignore[call-overload]
    leaf = _name_parts(name)[-1]
    if leaf in _COPY_LEAVES:
        return Init(copy=True), f"fixed buffer ({leaf})"
    if len(shape) >= 2:
        return None
    value, reason = _builtin_constant(name, shape)
    return Init(constant=value), reason


#: The init of a tensor that keeps its values: a checkpoint's (``--like``), or a
#: module's (``vsgen.torch``).
KEEP = Init(copy=True)


@dataclass(frozen=True)
class Choice:
    """What a convention gives a tensor that no tensor ``init`` and no rule covers.

    ``init`` is the initializer (:data:`KEEP` keeps the values), or None for the
    default initializer (the command line's preset, the spec's ``init``).
    ``origin`` and ``reason`` say why (``builtin``/``LayerNorm weight``,
    ``convention torch``/``Linear.reset_parameters``); they go into the plan and
    into provenance (``init_from``). ``rows`` are ``(row, value)`` pairs set after
    the values are drawn (an ``nn.Embedding``'s padding row: ``((padding_idx,
    0.0),)``). ``on_meta`` is what a kept tensor gets when it has no values (a
    module on PyTorch's meta device): None refuses it.
    """

    init: Init | None
    reason: str | None = None
    origin: str = "builtin"
    rows: tuple[tuple[int, float], ...] = ()
    on_meta: Init | None = None

    @property
    def keeps(self) -> bool:
        """True when the tensor keeps its values."""
        return self.init is not None and self.init.copy


# --------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a spec: name, shape and what the spec says about it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype | None = None
    init: Init | None = None
    seed: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: top-level defaults, ordered rules and tensors."""

    seed: int | None = None
    dtype: np.dtype | None = None
    layout: str | None = None
    stream: str | None = None
    init: Init | None = None
    rules: tuple[tuple[str, Init], ...] = ()
    tensors: tuple[TensorEntry, ...] = ()
    source: str = "spec"


def load_spec(path: str) -> ModelSpec:
    """Read a spec file: ``.toml`` (tomllib) or ``.json``, by suffix.

    Raises:
        ValueError: unknown suffix, a syntax error or a schema error; one
            line, starting with the path.
        OSError: the file cannot be read.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(
            f"spec {path}: cannot tell the format from suffix {suffix or '(none)'!r}; "
            "name it .toml or .json"
        )
    if not os.path.exists(path):
        raise ValueError(f"spec {path}: file not found")
    if os.path.isdir(path):
        raise ValueError(f"spec {path}: is a directory")
    from vsgen._limits import MAX_SPEC_BYTES, MAX_TOML_BYTES, open_document, read_text

    limit = MAX_TOML_BYTES if suffix == ".toml" else MAX_SPEC_BYTES
    with open_document(path, f"spec {path}") as handle:
        text = read_text(handle, limit, f"spec {path}")
    document = _parse_toml(text, path) if suffix == ".toml" else _parse_json(text, path)
    return parse_spec(document, source=f"spec {path}")


def _parse_toml(text: str, path: str) -> Any:
    from vsgen._limits import loads_toml

    return loads_toml(text, f"spec {path}")


def _parse_json(text: str, path: str) -> Any:
    from vsgen._limits import loads_json

    return loads_json(text, f"spec {path}")


def _parse_seed(value: object, where: str, bound: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < bound:
        raise ValueError(
            f"{where}: must be an integer in [0, 2**{bound.bit_length() - 1}), not {value!r}"
        )
    return value


def _parse_dtype(value: object, where: str) -> np.dtype:
    if not isinstance(value, str):
        raise ValueError(f'{where}: must be a string such as "float32", not {value!r}')
    try:
        return resolve_dtype(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"{where}: must be one of float16, bfloat16, float32, float64, not {value!r}"
        ) from None


def _parse_shape(value: object, where: str) -> tuple[int, ...]:
    try:
        if isinstance(value, str):
            return parse_shape(value)
        if isinstance(value, list):
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
                raise ValueError("must contain integers only")
            return normalize_shape(value)
    except (ValueError, TypeError) as error:
        detail = str(error).split(". Received")[0]
        raise ValueError(f"{where}: {detail}: {value!r}") from None
    raise ValueError(
        f"{where}: must be a list of non-negative integers such as [512, 256], not {value!r}"
    )


def _parse_layout(value: object, where: str) -> str:
    try:
        return check_layout(value)
    except ValueError:
        raise ValueError(f"{where}: must be one of {', '.join(LAYOUTS)}, not {value!r}") from None


def _parse_stream(value: object, where: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return get_stream(value).name
    except ValueError:
        raise ValueError(f"{where}: must be one of vsgen, keras, not {value!r}") from None


def _key_path(name: str) -> str:
    """A TOML-style key for messages: bare if possible, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def parse_spec(document: object, source: str = "spec") -> ModelSpec:
    """Validate a spec document (the dict a TOML or JSON file parses to).

    Top-level keys: ``seed``, ``dtype``, ``layout``, ``stream``, ``init``,
    ``rules`` (pattern -> init, in order) and ``tensors`` (name -> table
    with ``shape`` and optional ``dtype``, ``init``, ``seed``; or just a
    shape). See ``docs/spec-files.md``.

    Raises:
        ValueError: one line naming ``source`` and the offending key or tensor.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"{source}: must be a table (a JSON object), not {_type_name(document)}")
    unknown = sorted(set(document) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(
            f"{source}: unknown top-level key {unknown[0]!r}; allowed: {', '.join(_TOP_KEYS)}"
        )
    seed = dtype = layout = stream = init = None
    if "seed" in document:
        seed = _parse_seed(document["seed"], f"{source}: seed", MAX_GLOBAL_SEED)
    if "dtype" in document:
        dtype = _parse_dtype(document["dtype"], f"{source}: dtype")
    if "layout" in document:
        layout = _parse_layout(document["layout"], f"{source}: layout")
    if "stream" in document:
        stream = _parse_stream(document["stream"], f"{source}: stream")
    if "init" in document:
        init = parse_init(document["init"], f"{source}: init")

    rules_doc = document.get("rules", {})
    if not isinstance(rules_doc, Mapping):
        raise ValueError(
            f"{source}: rules: must be a table of pattern = initializer, "
            f"not {_type_name(rules_doc)}"
        )
    rules = tuple(
        (str(pattern), parse_init(value, f"{source}: rules.{_key_path(str(pattern))}"))
        for pattern, value in rules_doc.items()
    )

    tensors_doc = document.get("tensors", {})
    if not isinstance(tensors_doc, Mapping):
        raise ValueError(
            f"{source}: tensors: must be a table of name = {{ shape = [...] }}, "
            f"not {_type_name(tensors_doc)}"
        )
    if len(tensors_doc) > MAX_TENSORS:
        raise ValueError(
            f"{source}: tensors: {len(tensors_doc):,} tensors, more than the {MAX_TENSORS:,} "
            "one output may hold; split the model"
        )
    tensors = tuple(
        _parse_tensor(str(name), value, f"{source}: tensors.{_key_path(str(name))}")
        for name, value in tensors_doc.items()
    )
    return ModelSpec(
        seed=seed,
        dtype=dtype,
        layout=layout,
        stream=stream,
        init=init,
        rules=rules,
        tensors=tensors,
        source=source,
    )


def _parse_tensor(name: str, value: object, where: str) -> TensorEntry:
    if not name:
        raise ValueError(f"{where}: a tensor name must not be empty")
    if isinstance(value, (list, str)):
        value = {"shape": value}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{where}: must be a table such as {{ shape = [512, 256] }} or a shape, "
            f"not {_type_name(value)}"
        )
    unknown = sorted(set(value) - set(_TENSOR_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(_TENSOR_KEYS)}")
    if "shape" not in value:
        raise ValueError(f"{where}: missing key 'shape', e.g. shape = [512, 256]")
    return TensorEntry(
        name=name,
        shape=_parse_shape(value["shape"], f"{where}.shape"),
        dtype=_parse_dtype(value["dtype"], f"{where}.dtype") if "dtype" in value else None,
        init=parse_init(value["init"], f"{where}.init") if "init" in value else None,
        seed=_parse_seed(value["seed"], f"{where}.seed", MAX_GLOBAL_SEED)
        if "seed" in value
        else None,
    )


# --------------------------------------------------------------------------
# Constants and copies as plans


@dataclass(frozen=True)
class ConstantPlan:
    """A constant tensor, streamed like a :class:`vsgen.SamplePlan` (a
    :class:`vsgen.initializer.Plan`)."""

    value: float
    dtype: np.dtype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", normalize_shape(self.shape))

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return math.prod(self.shape)

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """The values as consecutive flat chunks of at most ``chunk_size``.

        The chunks are read-only views of one shared block, so memory stays
        at one chunk however large the tensor. ``threads`` is ignored.
        """
        size = self.size
        if size == 0:
            return
        block = np.full(min(chunk_size, size), self.value, dtype=self.dtype)
        block.flags.writeable = False
        for offset in range(0, size, block.size):
            yield block[: min(block.size, size - offset)]

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        return np.full(self.shape, self.value, dtype=self.dtype)


@dataclass(frozen=True)
class CopyPlan:
    """A tensor copied byte for byte from the ``--like`` checkpoint.

    ``source`` is the checkpoint's path, read in chunks through
    ``vsgen.formats.readers.read_values`` (memory stays at one chunk);
    ``None`` when the values stay where they are (``vsgen.torch.init_``
    leaves such tensors untouched), in which case reading them is an error.
    """

    source: str | None
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return math.prod(self.shape)

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """The source's values as consecutive flat chunks of at most ``chunk_size``.

        Raises:
            ValueError: no source, or the source no longer holds this tensor
                with this dtype and size.
        """
        from vsgen.formats.readers import open_file, read_values

        if self.source is None:
            raise ValueError(
                f"tensor {self.name!r} is copied, but there is no checkpoint to copy from"
            )
        stored = open_file(self.source).tensor(self.name)
        if stored.numpy_dtype() != self.dtype or stored.size != self.size:
            raise ValueError(
                f"--like {self.source}: tensor {self.name!r} changed while it was copied"
            )
        copied = 0
        for values in read_values(stored, chunk_size):
            copied += values.size
            yield values
        if copied != self.size:
            raise ValueError(
                f"--like {self.source}: tensor {self.name!r} changed while it was copied"
            )

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        out = np.empty(self.shape, dtype=self.dtype)
        flat = out.reshape(-1)
        position = 0
        for chunk in self.chunks():
            flat[position : position + chunk.size] = chunk
            position += chunk.size
        return out


@dataclass(frozen=True)
class FixedRowsPlan:
    """A drawn tensor some of whose rows are then set to constants: an
    ``nn.Embedding``'s padding row, zero after the normal draw.

    ``set_rows`` are ``(row, value)`` pairs, rows of axis 0. The other values are
    ``base``'s, byte for byte; memory stays at ``base``'s chunks.
    """

    base: Plan
    set_rows: tuple[tuple[int, float], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the values produced."""
        return self.base.shape

    @property
    def dtype(self) -> np.dtype:
        """Output dtype of the values produced."""
        return self.base.dtype

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return self.base.size

    def _row_size(self) -> int:
        return math.prod(self.shape[1:])

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """``base``'s flat chunks, with the fixed rows' values replaced."""
        row_size = self._row_size()
        position = 0
        for chunk in self.base.chunks(chunk_size, threads):
            end = position + chunk.size
            for row, value in self.set_rows:
                low, high = max(position, row * row_size), min(end, (row + 1) * row_size)
                if low < high:
                    if not chunk.flags.writeable:
                        chunk = chunk.copy()
                    chunk[low - position : high - position] = value
            position = end
            yield chunk

    def array(self, threads: int | None = None) -> np.ndarray:
        """The values as one array of ``shape``."""
        out = self.base.array(threads)
        for row, value in self.set_rows:
            out[row] = value
        return out


@dataclass(frozen=True, eq=False)
class ArrayPlan:
    """A tensor whose values are already in memory, written as they are: a
    module's kept tensor (``vsgen.torch.save``). ``values`` is C-contiguous; it is
    read, never copied, until it is written."""

    values: np.ndarray
    name: str

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the values produced."""
        return tuple(self.values.shape)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the values produced."""
        return self.values.dtype

    @property
    def size(self) -> int:
        """Number of values this plan produces."""
        return int(self.values.size)

    def chunks(
        self, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None
    ) -> Iterator[np.ndarray]:
        """The values as consecutive flat read-only views of at most ``chunk_size``."""
        flat = self.values.reshape(-1)
        for offset in range(0, flat.size, chunk_size):
            view = flat[offset : offset + chunk_size]
            view.flags.writeable = False
            yield view

    def array(self, threads: int | None = None) -> np.ndarray:
        """A copy of the values."""
        return self.values.copy()


# --------------------------------------------------------------------------
# The plan as a table


def _count(number: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if number >= size:
            return f"{number / size:.3g} {unit}"
    return f"{number:g}"


def _columns(lines: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def _shown_name(row: PlanRow) -> str:
    """The tensor's name, with the other names of a tied tensor."""
    if not row.aliases:
        return row.name
    return f"{row.name} (= {', '.join(row.aliases)})"


def _name_lines(names: Sequence[str], width: int = 96) -> list[str]:
    """Names, comma-separated, wrapped at ``width`` columns, indented."""
    lines: list[str] = []
    current = ""
    for name in names:
        piece = name if not current else f", {name}"
        if current and len(current) + len(piece) > width:
            lines.append(f"    {current},")
            piece = name
            current = ""
        current += piece
    if current:
        lines.append(f"    {current}")
    return lines


def plan_table(rows: Sequence[PlanRow], max_rows: int | None = None) -> list[str]:
    """The plan as text lines: one per tensor, or summarised.

    With more than ``max_rows`` rows (None: never), tensors are grouped by
    dtype, initializer and origin, with their count, number of values and
    the range of stddevs; the tensors that keep or copy their values are
    listed by name under their group (never folded away: a mask among them
    must show). A last line gives the totals. Pure: returns lines.
    """
    total = sum(row.size for row in rows)
    footer = f"{len(rows)} tensors, {_count(total)} values"
    if max_rows is None or len(rows) <= max_rows:
        lines = [["name", "shape", "dtype", "init", "values", "from"]]
        for row in rows:
            shape = "x".join(map(str, row.shape)) or "()"
            lines.append(
                [_shown_name(row), shape, row.dtype, row.init, row.values_text(), row.origin_text()]
            )
        return [*_columns(lines), footer]
    groups: dict[tuple[str, str, str], list[PlanRow]] = {}
    for row in rows:
        groups.setdefault((row.dtype, row.init, row.origin_text()), []).append(row)
    lines = [["tensors", "values", "dtype", "init", "stddev", "from"]]
    listed: dict[int, list[str]] = {}
    for (dtype, init, origin), members in groups.items():
        stddevs = [row.stddev for row in members if row.stddev is not None]
        if stddevs:
            low, high = min(stddevs), max(stddevs)
            spread = f"{low:.3g}" if low == high else f"{low:.3g}..{high:.3g}"
        else:
            spread = (
                members[0].values_text()
                if len(members) == 1
                or all(row.values_text() == members[0].values_text() for row in members)
                else "various"
            )
        if members[0].kind == "copy":
            listed[len(lines)] = [_shown_name(row) for row in members]
        lines.append(
            [
                str(len(members)),
                _count(sum(row.size for row in members)),
                dtype,
                init,
                spread,
                origin,
            ]
        )
    table = _columns(lines)
    out: list[str] = []
    for index, line in enumerate(table):
        out.append(line)
        if index in listed:
            out.extend(_name_lines(listed[index]))
    return [*out, footer]


# --------------------------------------------------------------------------
# Jobs


def _choose(
    entry: TensorEntry,
    rules: Sequence[tuple[str, Init]],
    default: Init | None,
    choice: Choice | None,
) -> tuple[Init, str, str | None, tuple[tuple[int, float], ...]]:
    """The init for a tensor, where it came from (recorded in provenance), why,
    and the rows its convention sets after drawing (none if a rule decides)."""
    if entry.init is not None:
        return entry.init, "tensor", None, ()
    for pattern, init in rules:
        if fnmatch.fnmatchcase(entry.name, pattern):
            return init, f"rule {pattern}", None, ()
    if choice is not None:
        if choice.init is None:
            origin = "default" if choice.origin == "builtin" else choice.origin
            return (default or Init()), origin, choice.reason, choice.rows
        return choice.init, choice.origin, choice.reason, choice.rows
    builtin = builtin_init(entry.name, entry.shape, entry.dtype or resolve_dtype(None))
    if builtin is not None:
        return builtin[0], "builtin", builtin[1], ()
    return (default or Init()), "default", None, ()


def _is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind not in "biu"


def build_job(
    spec: ModelSpec | None = None,
    like: str | os.PathLike[str] | Sequence[TensorInfo] | None = None,
    *,
    seed: int | None = None,
    dtype: object = None,
    layout: str | None = None,
    stream: str | None = None,
    init: Init | None = None,
    convention: str | None = None,
    choices: Mapping[str, Choice] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> ModelJob:
    """Plan every tensor of a model.

    Tensors come from ``spec.tensors`` or, with ``like``, from an existing
    checkpoint: its path (headers are read with :func:`like_tensors`; tensors
    that are copied are read from it when written) or its tensor list (then
    copied tensors have no source: :class:`CopyPlan` with ``source=None``, shown
    as ``kept``: a module's own values). With ``like`` the spec only gives rules
    and defaults and must list no tensors. Keyword arguments override the spec's
    top-level values (they are the command line's ``--seed``, ``--dtype``,
    ``--layout``, ``--stream`` and initializer options); ``dtype`` also replaces
    the dtypes of floating ``like`` tensors, which otherwise keep their own;
    integer and bool tensors, and every copied tensor, keep theirs. Without any
    seed a global seed is drawn below 2**53 (``seed_was_drawn`` is then True).

    What a tensor gets that no tensor ``init`` and no rule covers is the
    ``convention``'s choice (:mod:`vsgen.conventions`: ``"vsgen"``, the default,
    or ``"torch"``), decided from the names, shapes and dtypes; ``choices`` (by
    name) replace it where the caller knows better (``vsgen.torch`` knows each
    tensor's module). Without ``layout`` a ``like`` checkpoint whose names look
    like PyTorch's (rank >= 2 ``*.weight`` tensors, no ``kernel``) or a
    convention of PyTorch's uses the ``torch`` layout. ``aliases`` (name ->
    other names of the same tensor, tied weights) are recorded with the tensor
    and shown in the plan.

    Raises:
        ValueError: no tensors, tensors in both spec and ``like``, an unknown
            convention, or a tensor its initializer cannot serve (message names
            the tensor).
    """
    from vsgen import conventions

    chosen_convention = conventions.get_convention(convention)
    prefix = "" if spec is None else f"{spec.source}: "
    spec = spec or ModelSpec()
    source = spec.source
    like_path: str | None = None
    if isinstance(like, (str, os.PathLike)):
        like_path = os.fspath(like)
        like = like_tensors(like_path)
    if like is not None and spec.tensors:
        raise ValueError(
            f"{source}: lists tensors, but with --like the tensors come from the checkpoint; "
            "give initializers as [rules] instead (an exact name is a pattern too)"
        )
    override_dtype = None if dtype is None else resolve_dtype(dtype)
    default_dtype = _first_dtype(override_dtype, spec.dtype, resolve_dtype(None))
    layout_given = layout is not None or spec.layout is not None
    # None: each initializer's own default (keras; torch for PyTorch's presets).
    layout = layout if layout is not None else spec.layout
    if layout is not None:
        check_layout(layout)
    stream = get_stream(stream).name if stream is not None else spec.stream or DEFAULT_STREAM
    default_init = init if init is not None else spec.init

    entries: list[TensorEntry]
    if like is not None:
        # The checkpoint's own dtype goes into the entry; --dtype applies below.
        entries = [TensorEntry(info.name, info.shape, info.dtype) for info in like]
    else:
        entries = [
            TensorEntry(e.name, e.shape, _first_dtype(e.dtype, default_dtype), e.init, e.seed)
            for e in spec.tensors
        ]
    if not entries:
        what = "the checkpoint holds" if like is not None else f"{source}: lists"
        raise ValueError(f"{what} no tensors")

    seed_was_drawn = False
    global_seed = seed if seed is not None else spec.seed
    if global_seed is None:
        global_seed = secrets.randbelow(2**JSON_SAFE_SEED_BITS)
        seed_was_drawn = True
    else:
        global_seed = _parse_seed(global_seed, "Argument `seed`", MAX_GLOBAL_SEED)

    if like is not None and not layout_given:
        if chosen_convention.layout is not None:
            layout = chosen_convention.layout
        elif _looks_like_torch(entries):
            layout = "torch"
    by_name = dict(chosen_convention.classify(entries, like is not None))
    if choices is not None:
        by_name.update(choices)
    job = ModelJob(seed=global_seed, seed_was_drawn=seed_was_drawn)
    for entry in entries:
        if entry.name in job.records:
            raise ValueError(f"tensor {entry.name!r} appears twice")
        chosen, origin, reason, rows = _choose(
            entry, spec.rules, default_init, by_name.get(entry.name)
        )
        dtype_ = _first_dtype(entry.dtype, default_dtype)
        if (
            like is not None
            and override_dtype is not None
            and _is_float(dtype_)
            and not chosen.copy
        ):
            dtype_ = override_dtype
        try:
            if chosen.copy and like is None:
                raise ValueError("'copy' needs a checkpoint to copy from (--like)")
            plan, record = _plan_tensor(
                entry, chosen, dtype_, global_seed, layout, stream, like_path
            )
            if rows:
                plan = FixedRowsPlan(plan, _checked_rows(rows, entry.shape, dtype_))
                record["set_rows"] = [[row, value] for row, value in plan.set_rows]
        except (ValueError, TypeError) as error:
            raise ValueError(f"{prefix}tensor {entry.name!r} ({origin}): {error}") from None
        record["init"] = chosen.as_json()
        record["init_from"] = origin
        tied = tuple(aliases.get(entry.name, ())) if aliases is not None else ()
        if tied:
            record["aliases"] = list(tied)
            job.aliases.update({alias: entry.name for alias in tied})
        job.infos.append(TensorInfo(entry.name, entry.shape, dtype_))
        job.plans.append(plan)
        job.records[entry.name] = record
        label = "kept" if chosen.copy and like is not None and like_path is None else None
        job.rows.append(
            _row(entry, dtype_, chosen, origin, reason, plan, record, label=label, aliases=tied)
        )
    return job


def _checked_rows(
    rows: Sequence[tuple[int, float]], shape: Sequence[int], dtype: np.dtype
) -> tuple[tuple[int, float], ...]:
    """Rows set to constants: indices of axis 0 of ``shape``, values the dtype can hold."""
    checked = []
    for row, value in rows:
        if not shape or not 0 <= row < shape[0]:
            raise ValueError(f"row {row} to set is outside the tensor's shape {tuple(shape)}")
        checked.append((int(row), _constant_for(float(value), np.dtype(dtype))))
    return tuple(checked)


def _looks_like_torch(entries: Sequence[TensorEntry]) -> bool:
    """PyTorch names weights ``*.weight``, Keras ``*/kernel``: the names decide the
    default layout of a ``like`` checkpoint."""
    leaves = [_name_parts(e.name)[-1] for e in entries if len(e.shape) >= 2]
    return "weight" in leaves and "kernel" not in leaves and "embeddings" not in leaves


def _row(
    entry: TensorEntry,
    dtype: np.dtype,
    chosen: Init,
    origin: str,
    reason: str | None,
    plan: Plan,
    record: Mapping[str, Any],
    *,
    label: str | None = None,
    aliases: tuple[str, ...] = (),
) -> PlanRow:
    common = {
        "name": entry.name,
        "shape": tuple(entry.shape),
        "dtype": np.dtype(dtype).name,
        "kind": record["kind"],
        "init": label or chosen.label(),
        "origin": origin,
        "reason": reason,
        "aliases": aliases,
        "set_rows": tuple(getattr(plan, "set_rows", ())),
    }
    if isinstance(plan, FixedRowsPlan):
        plan = plan.base
    if isinstance(plan, SamplePlan):
        scaling = plan.scaling
        return PlanRow(
            **common,
            distribution=scaling.distribution,
            stddev=scaling.stddev,
            bound=scaling.bound if scaling.distribution != "uniform" else scaling.multiplier,
            fan_in=scaling.fan_in,
            fan_out=scaling.fan_out,
            seed=plan.draw.seed,
            mean=None if scaling.n is not None else scaling.mean,
        )
    if isinstance(plan, ConstantPlan):
        return PlanRow(**common, value=plan.value)
    return PlanRow(**common)


def _first_dtype(*candidates: np.dtype | None) -> np.dtype:
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return resolve_dtype(None)


def _constant_for(value: float, dtype: np.dtype) -> float:
    """``value`` checked against an integer or bool ``dtype`` (floats take any value)."""
    if _is_float(dtype):
        return value
    if not float(value).is_integer():
        raise ValueError(f"a {dtype.name} tensor cannot hold the constant {value:g}")
    if dtype.kind == "b":
        if value not in (0.0, 1.0):
            raise ValueError(f"a bool tensor holds 0 or 1, not {value:g}")
    else:
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise ValueError(f"the constant {value:g} does not fit {dtype.name}")
    return value


def _plan_tensor(
    entry: TensorEntry,
    chosen: Init,
    dtype: np.dtype,
    global_seed: int,
    layout: str | None,
    stream: str,
    like_path: str | None = None,
) -> tuple[Plan, dict[str, Any]]:
    shape = normalize_shape(entry.shape)
    if chosen.copy:
        return CopyPlan(like_path, entry.name, np.dtype(dtype), shape), {
            "kind": "copy",
            "dtype": np.dtype(dtype).name,
            "shape": list(shape),
        }
    if chosen.constant is not None:
        value = _constant_for(chosen.constant, np.dtype(dtype))
        constant_plan = ConstantPlan(value, np.dtype(dtype), shape)
        with np.errstate(over="ignore"):
            stored = np.asarray(value, dtype=constant_plan.dtype)
        if not np.isfinite(stored.astype(np.float64)):
            raise ValueError(
                f"constant {value:g} overflows {constant_plan.dtype.name} "
                "(it would be stored as infinity)"
            )
        record = provenance.constant_record(value, constant_plan.dtype, shape)
        return constant_plan, record
    if not _is_float(dtype):
        raise ValueError(
            f"a {np.dtype(dtype).name} tensor cannot be drawn at random; "
            'give it "copy" or a constant'
        )
    stream_name = chosen.stream_name(stream)
    if entry.seed is not None:
        tensor_seed, how = entry.seed, "explicit"
    else:
        tensor_seed, how = derive_seed(global_seed, entry.name, stream_name), "derived"
    initializer = chosen.initializer(tensor_seed, layout, stream)
    plan = initializer.plan(entry.shape, dtype)
    record = provenance.tensor_record(initializer, plan)
    record["seed_from"] = how
    if how == "derived":
        record["global_seed"] = global_seed
        record["seed_rule"] = SEED_RULE.replace("bits", str(get_stream(stream_name).seed_bits))
    return plan, record


def like_tensors(path: str) -> list[TensorInfo]:
    """Names, shapes and dtypes of an existing checkpoint (headers only).

    Floating tensors are recreated; integer and bool tensors are copied
    (see :func:`builtin_init`).

    Raises:
        ValueError: the file is missing, unreadable as a checkpoint, or holds
            a dtype vsgen can neither write nor copy (complex, float8...).
    """
    from vsgen.formats import read_tensor_infos

    if "://" not in path and not os.path.exists(path):  # a URL: the reader says
        raise ValueError(f"--like: file not found: {path}")
    try:
        return read_tensor_infos(path)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--like: {error}") from None
    except KeyError as error:
        raise ValueError(f"--like: {path} has an unreadable header ({error})") from None


def job_from_file(path: str, names: Sequence[str] | None = None) -> ModelJob:
    """Re-plan the tensors a vsgen file records, to regenerate it byte for byte.

    Every tensor of the file (or those in ``names``), in the file's order,
    with the file's dtypes, from its own record: an initializer's config,
    seed, stream, layout, rows and fan shape, or a constant. The records are
    kept as read, so the new file carries the same provenance.

    Raises:
        ValueError: the file is unreadable, records no provenance, or a
            record is malformed or describes a tensor that cannot be
            regenerated (the message names the file, the tensor and the field).
    """
    from vsgen.formats.readers import open_file

    tensor_file = open_file(path)
    records = provenance.parse_metadata(tensor_file.metadata, path)
    wanted = list(names) if names is not None else tensor_file.names
    job = ModelJob(seed=0, seed_was_drawn=False)
    for name in wanted:
        stored = tensor_file.tensor(name)
        record = records.get(name)
        if record is None:
            raise ValueError(f"{path}: tensor {name[:200]!r} has no vsgen record")
        try:
            plan = _plan_from_record(record)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError) as error:
            detail = f"field {error} is missing" if isinstance(error, KeyError) else str(error)
            raise ValueError(
                f"{path}: the vsgen record of tensor {name[:200]!r} is malformed: "
                f"{' '.join(detail.split())[:300]}"
            ) from None
        info = TensorInfo(name, plan.shape, plan.dtype)
        if info.shape != stored.shape or info.dtype.name != stored.dtype:
            raise ValueError(
                f"{path}: tensor {name[:200]!r} is {stored.shape} {stored.dtype} in the file but "
                f"its record says {info.shape} {info.dtype.name}"
            )
        job.infos.append(info)
        job.plans.append(plan)
        job.records[name] = record
    if not job.plans:
        raise ValueError(f"{path} holds no tensors")
    return job


def _plan_from_record(record: Mapping[str, Any]) -> Plan:
    """The plan a provenance record describes (``KeyError`` names a missing field)."""
    kind = record.get("kind", "variance_scaling")
    if kind == "constant":
        value = record["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"field 'value' is {str(value)[:40]}, not a number")
        shape = provenance.record_shape(record, "shape")
        return ConstantPlan(float(value), resolve_dtype(record["dtype"]), shape)
    if not provenance.is_sampled(record):
        raise ValueError(
            f"field 'kind' is {str(kind)[:40]!r}; only sampled and constant tensors "
            "can be regenerated"
        )
    replayed = provenance.replay(record)
    plan: Plan = replayed.initializer.plan(
        replayed.full_shape,
        record["dtype"],
        rows=replayed.rows,
        fan_shape=replayed.fan_shape,
    )
    if record.get("set_rows"):
        plan = FixedRowsPlan(plan, _recorded_rows(record["set_rows"], plan))
    return plan


def _recorded_rows(value: object, plan: Plan) -> tuple[tuple[int, float], ...]:
    """A record's ``set_rows``: ``[[row, value], ...]`` within the tensor."""
    if not isinstance(value, list) or not all(
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], int)
        and not isinstance(item[0], bool)
        and isinstance(item[1], (int, float))
        and not isinstance(item[1], bool)
        for item in value
    ):
        raise ValueError("field 'set_rows' is not a list of [row, value] pairs")
    return _checked_rows([(row, float(v)) for row, v in value], plan.shape, plan.dtype)
