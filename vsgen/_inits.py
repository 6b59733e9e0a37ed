"""Initializers as a spec, a rule or a convention names them, and what a tensor
gets when none does.

:class:`Init` is an initializer as a spec states it, without a seed
(:func:`parse_init` reads every form ``docs/spec-files.md`` lists);
:func:`builtin_init` is what a tensor no tensor ``init`` and no rule covers gets,
decided from its name, shape and dtype; a :class:`Choice` is a convention's answer
for one tensor (:data:`KEEP` keeps its values); a :class:`TensorEntry` is one
tensor of a spec. Both :mod:`vsgen.conventions` and :mod:`vsgen.modelspec` build on
these; :mod:`vsgen.modelspec` is their documented home and re-exports them.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vsgen.initializer import (
    INITIALIZERS,
    PRESETS,
    RandomInitializer,
    VarianceScaling,
    deserialize,
    get_preset,
)
from vsgen.initializer import _TorchPreset as _TORCH_PRESET
from vsgen.streams import DEFAULT_STREAM, get_stream

__all__ = [
    "CONSTANTS",
    "COPY",
    "KEEP",
    "Choice",
    "Init",
    "TensorEntry",
    "builtin_constant",
    "builtin_init",
    "init_from_initializer",
    "parse_init",
]

#: Constant initializers by name.
CONSTANTS = {"zeros": 0.0, "ones": 1.0}

#: The initializer that keeps a ``--like`` checkpoint's own values.
COPY = "copy"

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
# Tensors of a spec


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a spec: name, shape and what the spec says about it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype | None = None
    init: Init | None = None
    seed: int | None = None
