"""The one job type: what a writer writes, and the job of one tensor.

A :class:`ModelJob` is every tensor of an output, in order: its name, shape and
dtype (:class:`~vsgen.dtypes.TensorInfo`), its plan (what makes its values: a
``SamplePlan`` of an initializer, a constant or a copy) and its provenance record.
:func:`tensor_job` makes the job of one tensor (``vsgen sample --shape``);
:func:`vsgen.modelspec.build_job` and :func:`vsgen.modelspec.job_from_file` make
the jobs of models, and :func:`model_job` the job of any model source (a spec,
a checkpoint, a job) with the same keywords everywhere. The command line,
:mod:`vsgen.saving`, :mod:`vsgen.blockwrite` and :mod:`vsgen.dask` all write
these. A small module, so that a one-tensor job never imports the model
machinery.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from vsgen import provenance
from vsgen.dtypes import TensorInfo
from vsgen.fans import normalize_shape
from vsgen.initializer import Plan, RandomInitializer

if TYPE_CHECKING:
    from vsgen.modelspec import Init, ModelSpec

__all__ = ["ModelJob", "PlanRow", "model_job", "tensor_job"]


class PlanRow(NamedTuple):
    """One line of a job's plan: what a tensor will hold and why.

    ``kind`` is ``"variance_scaling"``, a fixed-parameter initializer's
    (``"random_normal"``, ``"truncated_normal"``, ``"random_uniform"``),
    ``"constant"`` or ``"copy"``; ``init`` the initializer's short name
    (:meth:`vsgen.modelspec.Init.label`); ``origin`` where it came from
    (``tensor``, ``rule PATTERN``, ``default``, ``builtin``) and ``reason`` why a
    built-in one was chosen. For sampled tensors ``stddev`` is the values' target
    stddev (sqrt(scale / n) for variance scaling), ``bound`` the truncation bound
    2 s (truncated_normal) or the ``limit`` (uniform: the half-width), None for
    untruncated_normal; ``mean`` is the centre of a fixed-parameter
    initializer's values (None for variance scaling, centred on 0). ``aliases`` are
    the other names of the same tensor (tied weights: written once, under
    ``name``); ``set_rows`` the ``(row, value)`` pairs set after drawing (an
    embedding's padding row). ``kind`` ``"copy"`` with ``init`` ``"kept"`` is a
    module's own values (``vsgen.torch``), ``"copy"`` a checkpoint's.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    init: str
    origin: str
    reason: str | None = None
    distribution: str | None = None
    stddev: float | None = None
    bound: float | None = None
    value: float | None = None
    fan_in: int | None = None
    fan_out: int | None = None
    seed: int | None = None
    mean: float | None = None
    aliases: tuple[str, ...] = ()
    set_rows: tuple[tuple[int, float], ...] = ()

    @property
    def size(self) -> int:
        """Number of values of the tensor."""
        return math.prod(self.shape)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types (the shape as a list), for ``--plan --json``."""
        row = self._asdict()
        row["shape"] = list(self.shape)
        if self.mean is None:
            del row["mean"]  # variance scaling: centred on 0
        for key in ("aliases", "set_rows"):
            if row[key]:
                row[key] = [list(item) if isinstance(item, tuple) else item for item in row[key]]
            else:
                del row[key]
        return row

    def values_text(self) -> str:
        """What the values are: ``std 0.036, |x| <= 0.083``, ``1``, ``as source``."""
        if self.kind == "copy":
            return "module's values" if self.init == "kept" else "as source"
        if self.kind == "constant":
            return f"{self.value:g}"
        text = self._drawn_text()
        for row, value in self.set_rows:
            text += f"; row {row} = {value:g}"
        return text

    def _drawn_text(self) -> str:
        text = f"std {self.stddev:.4g}"
        if self.mean is not None:
            if self.distribution == "uniform" and self.bound is not None:
                low, high = self.mean - self.bound, self.mean + self.bound
                return f"{text}, x in [{low:.4g}, {high:.4g})"
            text = f"mean {self.mean:.4g}, {text}"
            if self.bound is None:
                return text
            return f"{text}, |x - mean| <= {self.bound:.4g}"
        if self.bound is None:
            return text
        # uniform values lie in [-limit, limit); truncated ones in [-2s, 2s].
        relation = "<" if self.distribution == "uniform" else "<="
        return f"{text}, |x| {relation} {self.bound:.4g}"

    def origin_text(self) -> str:
        """``origin`` with the reason of a built-in choice: ``builtin: bias``."""
        return f"{self.origin}: {self.reason}" if self.reason else self.origin


@dataclass
class ModelJob:
    """Everything needed to write a model (or one tensor): tensors, plans and provenance.

    ``infos``, ``plans`` and ``records`` are parallel in output order
    (``records`` keyed by name); ``rows`` is the plan as a table
    (:class:`PlanRow`, see :func:`vsgen.modelspec.plan_table`) for jobs built from a
    spec or a checkpoint (:func:`vsgen.modelspec.build_job`), empty for one tensor
    (:func:`tensor_job`) and for a file's replay (:func:`vsgen.modelspec.job_from_file`).
    ``warnings`` are one-line notes for the user (the command line prints them on
    stderr). ``seed`` is the global seed (one tensor's own seed for
    :func:`tensor_job`), ``seed_was_drawn`` whether it was drawn rather than given.
    ``aliases`` maps the other names of tied tensors to the name each is written
    under (``{"head.weight": "embed.weight"}``). ``companions`` (file name ->
    contents) are written beside the tensors by the formats that hold them
    (safetensors-sharded: a Hugging Face model's ``config.json``).
    """

    seed: int
    seed_was_drawn: bool
    infos: list[TensorInfo] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[PlanRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    companions: dict[str, bytes] = field(default_factory=dict)

    @property
    def total_values(self) -> int:
        """Number of values of all tensors together."""
        return sum(plan.size for plan in self.plans)

    def metadata(self) -> dict[str, str]:
        """File metadata (``provenance.file_metadata``) recording every tensor, and
        each tied alias's name mapped to the name it is written under (as
        ``safetensors.torch.save_model`` records the names it drops)."""
        metadata = provenance.file_metadata(self.records)
        for alias, name in self.aliases.items():
            metadata.setdefault(alias, name)
        return metadata

    def tensor_metadata(self) -> dict[str, dict[str, str]]:
        """Per-tensor metadata (``provenance.tensor_metadata``): each tensor's own record."""
        return provenance.tensor_metadata(self.records)

    def arrays(self, threads: int | None = None) -> dict[str, np.ndarray]:
        """Every tensor in memory, by name (for small models and tests)."""
        return {
            info.name: plan.array(threads)
            for info, plan in zip(self.infos, self.plans, strict=True)
        }


def tensor_job(
    initializer: RandomInitializer,
    shape: Sequence[int],
    dtype: object = "float32",
    name: str = "weight",
    *,
    rows: tuple[int | None, int | None] | None = None,
    fan_shape: Sequence[int] | None = None,
) -> ModelJob:
    """One tensor as a job (what ``vsgen sample --shape`` writes): ``initializer``'s
    values for ``shape`` and ``dtype`` under ``name``, with its provenance record.

    ``rows`` and ``fan_shape`` are as for ``VarianceScaling.plan`` (rows a..b-1 of
    the full tensor; fans from another shape). The job's seed is the tensor's;
    ``seed_was_drawn`` tells whether the initializer drew it. ``rows`` (the plan
    table) stays empty: a table is for models.

    Raises:
        ValueError: a bad shape, dtype, row range or name.
    """
    plan = initializer.plan(shape, dtype, rows=rows, fan_shape=fan_shape)
    fans = None if fan_shape is None else normalize_shape(fan_shape)
    job = ModelJob(seed=plan.draw.seed, seed_was_drawn=bool(initializer.seed_was_drawn))
    job.infos.append(TensorInfo(name, plan.shape, plan.dtype))
    job.plans.append(plan)
    job.records[name] = provenance.tensor_record(initializer, plan, fans)
    return job


def model_job(
    source: Any,
    *,
    seed: int | None = None,
    dtype: object = None,
    layout: str | None = None,
    stream: str | None = None,
    init: Any = None,
    rules: Mapping[str, Any] | None = None,
) -> ModelJob:
    """The job of a model, as ``vsgen sample --spec/--like`` makes it.

    ``source`` is a spec (a ``.toml``/``.json`` path, its dict, or a
    :class:`~vsgen.modelspec.ModelSpec`), any other path (a checkpoint whose
    names, shapes and dtypes are kept: ``--like``; its integer tensors are
    copied from it), or a :class:`ModelJob`, returned as it is. The keywords are
    the command line's: ``seed`` (``--seed``, the global seed), ``dtype``,
    ``layout``, ``stream``, ``init`` (the default initializer of tensors of rank
    >= 2 no rule covers: a preset name, a spec's initializer table, a
    :class:`~vsgen.modelspec.Init` or an initializer object) and ``rules`` (glob
    pattern -> initializer, before the spec's own rules; the first match wins).

    Raises:
        ValueError: a malformed spec, rule or initializer, an unreadable
            checkpoint, or keywords given with a finished job.
        TypeError: ``source`` or ``rules`` of the wrong type.
    """
    from vsgen import modelspec

    if isinstance(source, ModelJob):
        given = {
            "seed": seed,
            "dtype": dtype,
            "layout": layout,
            "stream": stream,
            "init": init,
            "rules": rules,
        }
        extra = [key for key, value in given.items() if value is not None]
        if extra:
            raise ValueError(
                f"Argument `source` is a finished ModelJob, which {', '.join(extra)} cannot "
                "change: build the job with them (vsgen.modelspec.build_job) or pass its spec. "
                f"Received: {', '.join(f'{key}={given[key]!r}' for key in extra)}"
            )
        return source
    spec: ModelSpec | None = None
    like: str | None = None
    if isinstance(source, modelspec.ModelSpec):
        spec = source
    elif isinstance(source, Mapping):
        spec = modelspec.parse_spec(source, source="Argument `source`")
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.lower().endswith((".toml", ".json")):
            spec = modelspec.load_spec(path)
        else:
            like = path
    else:
        raise TypeError(
            "Argument `source` must be a spec (a .toml/.json path, a dict or a ModelSpec), "
            f"a checkpoint path or a ModelJob. Received: {type(source).__name__}"
        )
    if rules is not None:
        spec = _with_rules(spec or modelspec.ModelSpec(source="Argument `rules`"), rules)
    return modelspec.build_job(
        spec,
        like,
        seed=seed,
        dtype=dtype,
        layout=layout,
        stream=stream,
        init=_default_init(init),
    )


def _default_init(init: Any) -> Init | None:
    """A default initializer given as a name, a table, an Init or an initializer."""
    from vsgen import modelspec

    if init is None or isinstance(init, modelspec.Init):
        return init
    if isinstance(init, RandomInitializer):
        return modelspec.init_from_initializer(init)
    return modelspec.parse_init(init, "Argument `init`")


def _with_rules(spec: ModelSpec, rules: Mapping[str, Any]) -> ModelSpec:
    """``spec`` with ``rules`` before its own (the first match wins)."""
    import dataclasses

    from vsgen import modelspec

    if not isinstance(rules, Mapping):
        raise TypeError(
            f"Argument `rules` must map glob patterns to initializers. Received: rules={rules!r}"
        )
    extra = modelspec.parse_spec({"rules": dict(rules)}, source="Argument `rules`").rules
    return dataclasses.replace(spec, rules=extra + spec.rules)
