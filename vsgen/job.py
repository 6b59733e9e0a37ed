"""The one job type: what a writer writes, and the job of one tensor.

A :class:`ModelJob` is every tensor of an output, in order: its name, shape and
dtype (:class:`~vsgen.dtypes.TensorInfo`), its plan (what makes its values: a
``SamplePlan`` of an initializer, a constant or a copy) and its provenance record.
:func:`tensor_job` makes the job of one tensor (``vsgen sample --shape``);
:func:`vsgen.modelspec.build_job` and :func:`vsgen.modelspec.job_from_file` make
the jobs of models, and :func:`vsgen.modelspec.model_job` the job of any model
source (a spec, a checkpoint, a job) with the same keywords everywhere. The command line,
:mod:`vsgen.saving`, :mod:`vsgen.blockwrite` and :mod:`vsgen.dask` all write
these. A small module, so that a one-tensor job never imports the model
machinery.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from vsgen import provenance
from vsgen.dtypes import TensorInfo
from vsgen.fans import normalize_shape
from vsgen.initializer import Plan, RandomInitializer

__all__ = ["ModelJob", "PlanRow", "tensor_job"]


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
