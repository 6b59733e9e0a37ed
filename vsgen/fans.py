"""Shapes and fans: how many input and output units a weight tensor has, and
which rows of it a slice or a shard holds.

Pure functions of a shape (and a layout); no I/O.

Layouts:

* ``keras`` (channels-last, the Keras/TF convention, the default):
  rank 0: fan_in = fan_out = 1; rank 1: fan_in = fan_out = shape[0];
  rank 2 ``(in, out)``: fan_in = shape[0], fan_out = shape[1];
  rank >= 3 ``(*spatial, in, out)``: r = prod(shape[:-2]),
  fan_in = shape[-2] * r, fan_out = shape[-1] * r.
* ``torch`` (PyTorch's ``(out, in, *spatial)``): rank 0 and 1 as above
  (PyTorch itself refuses them); rank >= 2: r = prod(shape[2:]),
  fan_in = shape[1] * r, fan_out = shape[0] * r.
* explicit axes (Keras 3.15 ``input_axes`` / ``output_axes``):
  fan_in = prod(shape[a] for a in input_axes), likewise fan_out.
* JAX's axes (``jax.nn.initializers.variance_scaling``'s ``in_axis``,
  ``out_axis``, ``batch_axis``; each an int or a sequence of ints):
  every axis not named is part of the receptive field,
  r = prod(shape[a] for a not in in_axis, out_axis or batch_axis);
  fan_in = prod(shape[in_axis]) * r, fan_out = prod(shape[out_axis]) * r.
  Unset ``in_axis``/``out_axis`` are the layout's (keras: -2 and -1, torch: 1
  and 0), so ``batch_axis`` alone drops batch axes from a layout's receptive
  field; such a shape needs rank >= 2 (as JAX). An axis named twice is
  refused (JAX would compute fractional fans).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

LAYOUTS = ("keras", "torch")

#: More dimensions than any real weight tensor has; NumPy's own limit is 64.
MAX_RANK = 32
#: Element counts must fit a signed 64-bit index (NumPy's ``intp``).
MAX_ELEMENTS = 2**63 - 1

Shape = tuple[int, ...]
#: An axis or a sequence of axes (JAX's ``in_axis``/``out_axis``/``batch_axis``).
AxisSpec = int | Sequence[int]

#: (in_axis, out_axis) of each layout, for JAX-style fans.
_LAYOUT_AXES = {"keras": (-2, -1), "torch": (1, 0)}


def normalize_shape(shape: object, argument: str = "shape") -> Shape:
    """Return ``shape`` as a tuple of non-negative Python ints, or raise.

    Accepts an int (rank 1) or a sequence of ints. Bools, floats, negative
    sizes, more than ``MAX_RANK`` dimensions and element counts that do not fit
    a signed 64-bit index are refused with a ``ValueError``/``TypeError`` that
    names the argument.
    """
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        try:
            shape = tuple(shape)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"Argument `{argument}` must be a sequence of integers. Received: "
                f"{argument}={shape!r}"
            ) from None
    dims = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) and not hasattr(dim, "__index__"):
            raise TypeError(
                f"Argument `{argument}` must contain integers only. Received: "
                f"{argument}={tuple(shape)!r}"
            )
        dim = int(dim.__index__())
        if dim < 0:
            raise ValueError(
                f"Argument `{argument}` must not contain negative sizes. Received: "
                f"{argument}={tuple(shape)!r}"
            )
        dims.append(dim)
    if len(dims) > MAX_RANK:
        raise ValueError(
            f"Argument `{argument}` has {len(dims)} dimensions; at most {MAX_RANK} are supported."
        )
    if math.prod(dims) > MAX_ELEMENTS:
        raise ValueError(
            f"Argument `{argument}` has {math.prod(dims)} elements, more than a 64-bit "
            f"index can address. Received: {argument}={tuple(dims)!r}"
        )
    return tuple(dims)


_SHAPE_SEPARATORS = re.compile(r"\s*[,xX×]\s*")
_INTEGER = re.compile(r"-?[0-9]+")


def parse_integer(text: str, argument: str, *, negative: bool = False) -> int:
    """Parse an integer written with ASCII digits only (and ``-`` if ``negative``).

    The one rule for every integer vsgen reads from text (shapes, seeds,
    thread counts, row ranges, shards, axes): no signs but an optional minus,
    no underscores (``1_0``), no other scripts' digits (``٣``), no ``²``.
    Surrounding blanks are ignored. Raises ValueError naming ``argument``.
    """
    stripped = text.strip()
    if _INTEGER.fullmatch(stripped) and (negative or not stripped.startswith("-")):
        return int(stripped)
    kind = "an integer" if negative else "a non-negative integer"
    raise ValueError(
        f"Argument `{argument}` must be {kind} written with the digits 0-9. "
        f"Received: {argument}={text!r}"
    )


def parse_shape(text: str) -> Shape:
    """Parse ``"512,256"``, ``"512x256"``, ``"3,3,64,128"`` or ``"[512, 256]"``.

    An empty string or ``"()"`` is the rank-0 (scalar) shape. Raises
    ``ValueError`` with the offending text.
    """
    stripped = text.strip().strip("()[]").strip()
    if stripped == "" and text.strip() in ("()", "[]"):
        return ()
    parts = _SHAPE_SEPARATORS.split(stripped)
    if stripped.endswith(","):
        parts = parts[:-1]  # "(512,)" is Python's spelling of a 1-D shape
    try:
        if not stripped:
            raise ValueError
        dims = tuple(parse_integer(part, "shape") for part in parts)
    except ValueError:
        raise ValueError(
            f"invalid shape {text!r}: expected non-negative integers (digits 0-9) separated "
            "by ',' or 'x', e.g. 512,256 or 3x3x64x128 ('()' for a scalar)"
        ) from None
    return normalize_shape(dims)


def _normalize_axes(axes: Sequence[int], rank: int, argument: str) -> tuple[int, ...]:
    result = []
    for axis in axes:
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(
                f"Argument `{argument}` must be a list of integers. Received: "
                f"{argument}={list(axes)!r}"
            )
        if not -rank <= axis < rank:
            raise ValueError(
                f"Argument `{argument}` has axis {axis}, out of range for a rank-{rank} "
                f"shape. Received: {argument}={list(axes)!r}"
            )
        result.append(axis % rank)
    if len(set(result)) != len(result):
        raise ValueError(
            f"Argument `{argument}` repeats an axis. Received: {argument}={list(axes)!r}"
        )
    return tuple(result)


def check_layout(layout: object) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else ``ValueError``."""
    if layout not in LAYOUTS:
        raise ValueError(
            f"Argument `layout` must be one of {', '.join(LAYOUTS)}. Received: layout={layout!r}"
        )
    return str(layout)


def check_axes_pair(input_axes: object, output_axes: object) -> None:
    """Explicit fan axes come as a pair: both or neither, else ``ValueError``."""
    if (input_axes is None) != (output_axes is None):
        raise ValueError(
            "Arguments `input_axes` and `output_axes` must be given together. Received: "
            f"input_axes={input_axes!r}, output_axes={output_axes!r}"
        )


def axis_tuple(axes: object, argument: str) -> tuple[int, ...]:
    """``axes`` (an int or a sequence of ints) as a tuple, else ``TypeError``."""
    if isinstance(axes, int) and not isinstance(axes, bool):
        return (axes,)
    if isinstance(axes, (str, bytes)) or not isinstance(axes, Sequence):
        raise TypeError(
            f"Argument `{argument}` must be an integer or a list of integers. Received: "
            f"{argument}={axes!r}"
        )
    return tuple(axes)


def check_jax_axes_alone(
    input_axes: object, output_axes: object, in_axis: object, out_axis: object, batch_axis: object
) -> None:
    """Keras's explicit axes and JAX's axes are two rules for the same thing:
    refuse both at once."""
    jax_axes = in_axis is not None or out_axis is not None or axis_tuple(batch_axis, "batch_axis")
    if jax_axes and (input_axes is not None or output_axes is not None):
        raise ValueError(
            "Arguments `input_axes`/`output_axes` (Keras) and `in_axis`/`out_axis`/"
            "`batch_axis` (JAX) cannot be combined. Received: "
            f"input_axes={input_axes!r}, output_axes={output_axes!r}, in_axis={in_axis!r}, "
            f"out_axis={out_axis!r}, batch_axis={batch_axis!r}"
        )


def axis_fans(
    shape: Sequence[int],
    in_axis: AxisSpec = -2,
    out_axis: AxisSpec = -1,
    batch_axis: AxisSpec = (),
) -> tuple[int, int]:
    """``(fan_in, fan_out)`` with JAX's rule: ``r`` = product of the axes in none
    of ``in_axis``, ``out_axis``, ``batch_axis``; ``fan_in = prod(in) * r``,
    ``fan_out = prod(out) * r``. The three must not share an axis."""
    shape = normalize_shape(shape)
    rank = len(shape)
    given = {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis}
    groups = {
        argument: _normalize_axes(axis_tuple(axes, argument), rank, argument)
        for argument, axes in given.items()
    }
    named = [axis for axes in groups.values() for axis in axes]
    if len(set(named)) != len(named):
        raise ValueError(
            "Arguments `in_axis`, `out_axis` and `batch_axis` must not share an axis. Received: "
            f"in_axis={in_axis!r}, out_axis={out_axis!r}, batch_axis={batch_axis!r}"
        )
    receptive_field = math.prod(shape[a] for a in range(rank) if a not in named)
    fan_in = math.prod(shape[a] for a in groups["in_axis"]) * receptive_field
    fan_out = math.prod(shape[a] for a in groups["out_axis"]) * receptive_field
    return fan_in, fan_out


def compute_fans(
    shape: Sequence[int],
    layout: str = "keras",
    input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
    *,
    in_axis: AxisSpec | None = None,
    out_axis: AxisSpec | None = None,
    batch_axis: AxisSpec = (),
) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight ``shape`` (see the module docstring).

    ``input_axes`` and ``output_axes`` (Keras's, no receptive field) must be
    given together; they override ``layout`` and exclude JAX's ``in_axis``,
    ``out_axis`` and ``batch_axis``. Negative axes count from the end.
    """
    shape = normalize_shape(shape)
    check_axes_pair(input_axes, output_axes)
    check_jax_axes_alone(input_axes, output_axes, in_axis, out_axis, batch_axis)
    if in_axis is not None or out_axis is not None or axis_tuple(batch_axis, "batch_axis"):
        default_in, default_out = _LAYOUT_AXES[check_layout(layout)]
        if len(shape) < 2 and (in_axis is None or out_axis is None):
            raise ValueError(
                f"A rank-{len(shape)} shape has no default input and output axes; give "
                f"`in_axis` and `out_axis` explicitly. Received: shape={shape!r}"
            )
        return axis_fans(
            shape,
            default_in if in_axis is None else in_axis,
            default_out if out_axis is None else out_axis,
            batch_axis,
        )
    if input_axes is not None and output_axes is not None:
        rank = len(shape)
        fan_in = math.prod(shape[a] for a in _normalize_axes(input_axes, rank, "input_axes"))
        fan_out = math.prod(shape[a] for a in _normalize_axes(output_axes, rank, "output_axes"))
        return fan_in, fan_out
    check_layout(layout)
    rank = len(shape)
    if rank == 0:
        return 1, 1
    if rank == 1:
        return shape[0], shape[0]
    if layout == "torch":
        receptive_field = math.prod(shape[2:])
        return shape[1] * receptive_field, shape[0] * receptive_field
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


#: Largest kernel side that :func:`looks_channels_last` takes for a kernel.
_KERNEL_SIDE_MAX = 11


def looks_channels_last(shape: Sequence[int]) -> bool:
    """True if a conv-like ``shape`` reads more naturally as Keras'
    ``(*kernel, in, out)`` than as PyTorch's ``(out, in, *kernel)``.

    That is: rank 3 to 5, the leading ``rank - 2`` sizes are kernel-like (at
    most 11) and smaller than both trailing ones, e.g. ``(3, 3, 64, 128)``.
    PyTorch's own weights such as ``(64, 3, 7, 7)`` or ``(32, 1, 3, 3)`` are
    not flagged. A hint for a warning, never a rule.
    """
    if not 3 <= len(shape) <= 5:
        return False
    kernel, channels = shape[:-2], shape[-2:]
    return max(kernel) <= _KERNEL_SIDE_MAX and max(kernel) < min(channels)


def parse_axes(text: str, argument: str) -> tuple[int, ...]:
    """Parse ``"0,1,2"`` or ``"-2"`` into a tuple of ints (axes may be negative)."""
    parts = [p.strip() for p in text.strip().strip("[]()").split(",") if p.strip()]
    try:
        return tuple(parse_integer(p, argument, negative=True) for p in parts)
    except ValueError:
        raise ValueError(
            f"invalid {argument} {text!r}: expected integers separated by ',', e.g. 0,1,2"
        ) from None


# --- rows and shards along axis 0 ---------------------------------------------------


def resolve_rows(shape: Sequence[int], rows: tuple[int | None, int | None]) -> tuple[int, int]:
    """``(a, b)`` with an open end filled in: ``None`` is 0 for ``a``, ``shape[0]`` for ``b``."""
    if not shape:
        raise ValueError("Argument `rows` needs a shape of rank >= 1; a scalar has no rows.")
    first, last = rows
    return (0 if first is None else int(first), shape[0] if last is None else int(last))


def row_range(shape: Shape, rows: tuple[int | None, int | None] | None) -> tuple[Shape, int, int]:
    """Shape and flat index range [start, stop) of rows ``a..b-1`` along axis 0
    (either end may be None: open)."""
    total = math.prod(shape)
    if rows is None:
        return shape, 0, total
    first, last = resolve_rows(shape, rows)
    if not 0 <= first <= last <= shape[0]:
        raise ValueError(
            f"Argument `rows` must satisfy 0 <= start <= stop <= {shape[0]} (the first "
            f"dimension). Received: rows={first}:{last}"
        )
    row_size = math.prod(shape[1:])
    return (last - first, *shape[1:]), first * row_size, last * row_size


def shard_rows(shape: Sequence[int], index: int, count: int) -> tuple[int, int]:
    """Rows of shard ``index`` (0-based) of ``count`` near-equal shards along axis 0.

    The first ``rows % count`` shards get one extra row, as ``numpy.array_split``.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"Argument `shard` must be K/N with 0 <= K < N. Received: shard={index}/{count}"
        )
    if not shape:
        raise ValueError("Argument `shard` needs a shape of rank >= 1; a scalar has no rows.")
    base, extra = divmod(shape[0], count)
    first = index * base + min(index, extra)
    return first, first + base + (1 if index < extra else 0)


# --- blocks: n-d boxes of a tensor and the flat index ranges they cover ----------------

#: Blocks (and Zarr chunks) of about this many bytes by default: big enough to
#: amortise a task's overhead on a cluster, small enough for several to sit in a
#: worker's memory.
DEFAULT_BLOCK_BYTES = 64 << 20


def auto_block_shape(
    shape: Sequence[int], itemsize: int, target_bytes: int = DEFAULT_BLOCK_BYTES
) -> tuple[int, ...]:
    """Blocks of whole trailing axes (contiguous in C order) of about ``target_bytes``.

    From the last axis backwards, axes are kept whole while the block stays within
    the target; the first axis that does not fit is cut to fit (at least 1). A
    block of whole trailing axes is one contiguous range of the tensor: one fill
    of the stream, one write of the file.
    """
    shape = tuple(int(d) for d in shape)
    block = list(shape)
    inner = itemsize
    for axis in range(len(shape) - 1, -1, -1):
        extent = max(1, shape[axis])
        if inner * extent <= target_bytes:
            inner *= extent
            block[axis] = extent
            continue
        block[axis] = max(1, target_bytes // inner)
        for earlier in range(axis):
            block[earlier] = 1
        break
    return tuple(max(1, b) for b in block)


def c_strides(shape: Sequence[int]) -> list[int]:
    """Flat (element) strides of a C-order array of ``shape``."""
    strides = [1] * len(shape)
    for axis in range(len(shape) - 2, -1, -1):
        strides[axis] = strides[axis + 1] * shape[axis + 1]
    return strides


def check_block(
    block_shape: Sequence[int], origin: Sequence[int], full_shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check that a block of ``block_shape`` at ``origin`` lies inside ``full_shape``.

    Returns ``(origin, full_shape)`` as int tuples; ValueError names the axis.
    """
    origin = tuple(int(o) for o in origin)
    full_shape = tuple(int(d) for d in full_shape)
    rank = len(block_shape)
    if len(origin) != rank or len(full_shape) != rank:
        raise ValueError(
            "Arguments `origin` and `full_shape` must have one entry per axis of the block. "
            f"Received: origin={origin}, full_shape={full_shape}, block shape={tuple(block_shape)}"
        )
    for axis, (first, extent, full) in enumerate(zip(origin, block_shape, full_shape, strict=True)):
        if first < 0 or first + extent > full:
            raise ValueError(
                f"Block does not fit the tensor on axis {axis}: origin {first} + extent "
                f"{extent} > {full}. Received: origin={origin}, full_shape={full_shape}"
            )
    return origin, full_shape


def block_runs(
    block_shape: Sequence[int], full_shape: Sequence[int]
) -> tuple[int, list[int], list[int]]:
    """A block as equal runs that are contiguous in both the block and the tensor.

    Returns ``(run_length, outer_shape, outer_strides)``: axes from the split axis on
    are covered by one run (every axis after the split axis is whole), the runs are
    indexed by the block's ``outer_shape`` (its leading axes) and lie
    ``outer_strides`` apart in the tensor's flat index.
    """
    rank = len(block_shape)
    if rank == 0:
        return 1, [], []
    split = rank - 1
    while split > 0 and block_shape[split] == full_shape[split]:
        split -= 1
    strides = c_strides(full_shape)
    return math.prod(block_shape[split:]), list(block_shape[:split]), strides[:split]


def block_start(origin: Sequence[int], full_shape: Sequence[int]) -> int:
    """Flat index in the full tensor of a block's first element."""
    return sum(o * s for o, s in zip(origin, c_strides(full_shape), strict=True))
