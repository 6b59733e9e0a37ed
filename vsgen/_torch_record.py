"""Recording what a PyTorch module's own initialisation does, as vsgen's choices.

:func:`record_init` runs a function (by default every submodule's
``reset_parameters()``, children first) on a copy of a module on the meta
device, under a ``torch.overrides.TorchFunctionMode`` that sees every draw and
fill, and turns the last one of each tensor into the
:class:`vsgen.modelspec.Choice` of the same distribution. ``vsgen.torch``'s
``"torch"`` convention is built on it; ``vsgen.torch.record_init`` is its public
name. Nothing is guessed: what is not understood keeps its values, with the
reason. ``torch`` is imported only when :func:`record_init` is called.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vsgen._inits import KEEP, Choice, Init, parse_init
from vsgen.conventions import ONES, ZEROS

if TYPE_CHECKING:
    import torch

__all__ = ["record_init"]


def type_name(module: object) -> str:
    return type(module).__name__


def check_module(module: object) -> None:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"Argument `module` must be a torch.nn.Module. Received: {type(module).__name__}"
        )


_FULL = "full"
_PARTIAL = "partial"


@dataclass
class _State:
    """What has been done to one tensor so far."""

    init: Init | None = None
    rows: dict[int, float] = field(default_factory=dict)
    unknown: str | None = None
    by: str = ""


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _spec(form: Mapping[str, Any]) -> Init:
    return parse_init(dict(form), "a recorded init")


def _is_floating(tensor: torch.Tensor) -> bool:
    return bool(tensor.is_floating_point())


class _Recorder:
    """Records, per tensor, the draws and fills a module's reset makes (the body of
    the ``TorchFunctionMode`` made by :func:`_recording_mode`)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.alias: dict[int, tuple[int, object]] = {}
        self.states: dict[int, _State] = {}
        self.alive: list[Any] = []  # ids stay unique while these live
        self.touched: set[int] = set()
        self.method = ""
        init = torch.nn.init
        tensor = torch.Tensor
        self.init_functions: dict[Any, Callable[..., Init | str]] = {
            init.kaiming_uniform_: self._kaiming("kaiming_uniform"),
            init.kaiming_normal_: self._kaiming("kaiming_normal"),
            init.xavier_uniform_: self._xavier("xavier_uniform"),
            init.xavier_normal_: self._xavier("xavier_normal"),
            init.uniform_: lambda a=0.0, b=1.0, **_: self._uniform(a, b),
            init.normal_: lambda mean=0.0, std=1.0, **_: self._normal(mean, std),
            init.trunc_normal_: self._trunc_normal,
            init.constant_: lambda val, **_: self._constant(val),
            init.ones_: lambda **_: ONES,
            init.zeros_: lambda **_: ZEROS,
        }
        # By name too: code that wraps torch.nn.init's functions and binds the
        # wrappers in their place (transformers does while it initialises) reaches
        # this mode with the wrapper, as torch.nn.init dispatches its current global.
        self.init_names = {func.__name__: meaning for func, meaning in self.init_functions.items()}
        self.methods: dict[Any, Callable[..., Init | str]] = {
            tensor.uniform_: lambda low=0.0, high=1.0, *_, **kw: self._uniform(
                kw.get("from", low), kw.get("to", high)
            ),
            tensor.normal_: lambda mean=0.0, std=1.0, *_, **kw: self._normal(
                kw.get("mean", mean), kw.get("std", std)
            ),
            tensor.fill_: lambda value, **_: self._constant(value),
            tensor.zero_: lambda *_, **__: ZEROS,
        }

    # -- what a call means -----------------------------------------------------------

    @staticmethod
    def _kaiming(preset: str) -> Callable[..., Init | str]:
        def meaning(
            a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", **_: Any
        ) -> Init | str:
            return _spec({"preset": preset, "a": a, "mode": mode, "nonlinearity": nonlinearity})

        return meaning

    @staticmethod
    def _xavier(preset: str) -> Callable[..., Init | str]:
        def meaning(gain: float = 1.0, **_: Any) -> Init | str:
            return _spec({"preset": preset, "gain": gain})

        return meaning

    @staticmethod
    def _uniform(low: object, high: object) -> Init | str:
        low_value, high_value = _number(low), _number(high)
        if low_value is None or high_value is None:
            return "uniform_ with tensor bounds"
        if low_value == high_value:
            return Init(constant=low_value)
        return _spec({"preset": "random_uniform", "minval": low_value, "maxval": high_value})

    @staticmethod
    def _normal(mean: object, std: object) -> Init | str:
        mean_value, std_value = _number(mean), _number(std)
        if mean_value is None or std_value is None:
            return "normal_ with tensor arguments"
        if std_value == 0.0:
            return Init(constant=mean_value)
        return _spec({"preset": "random_normal", "mean": mean_value, "stddev": std_value})

    @staticmethod
    def _trunc_normal(
        mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, **_: Any
    ) -> Init | str:
        # vsgen's truncated normal is cut at 2 stddevs around the mean (Keras's).
        if a == mean - 2 * std and b == mean + 2 * std:
            return _spec({"preset": "truncated_normal", "mean": mean, "stddev": std})
        return f"trunc_normal_(std={std:g}, a={a:g}, b={b:g})"

    @staticmethod
    def _constant(value: object) -> Init | str:
        number = _number(value)
        if number is None:
            return "a fill with a tensor value"
        if not math.isfinite(number):
            return f"a fill with {number}"
        return Init(constant=number)

    # -- where a call writes -----------------------------------------------------------

    def _root(self, tensor: torch.Tensor) -> tuple[int, object]:
        found = self.alias.get(id(tensor))
        if found is not None:
            return found
        self.alive.append(tensor)
        return id(tensor), _FULL

    def _region(self, tensor: torch.Tensor, index: object) -> tuple[int, object]:
        """The part of its root a ``tensor[index]`` names: all, one row, or some."""
        root, region = self._root(tensor)
        if region != _FULL:
            return root, _PARTIAL
        if index is Ellipsis or index == slice(None):
            return root, _FULL
        if isinstance(index, tuple) and all(
            part is Ellipsis or part == slice(None) for part in index
        ):
            return root, _FULL
        if isinstance(index, int) and not isinstance(index, bool) and tensor.dim() >= 1:
            rows = int(tensor.shape[0])
            row = index + rows if index < 0 else index
            if 0 <= row < rows:
                return root, ("row", row)
        return root, _PARTIAL

    def _write(self, root: int, region: object, meaning: Init | str, tensor: torch.Tensor) -> None:
        self.touched.add(root)
        state = self.states.setdefault(root, _State())
        if isinstance(meaning, Init) and meaning.is_random and not _is_floating(tensor):
            meaning = f"a random draw into a {str(tensor.dtype).removeprefix('torch.')} tensor"
        if isinstance(meaning, str):
            self.states[root] = _State(unknown=meaning, by=self.method)
            return
        if region == _FULL:
            self.states[root] = _State(init=meaning, by=self.method)
        elif isinstance(region, tuple) and meaning.is_constant and state.init is not None:
            assert meaning.constant is not None
            if state.unknown is None:
                state.rows[region[1]] = meaning.constant
                state.by = self.method
        else:
            self.states[root] = _State(unknown="a write to part of the tensor", by=self.method)

    def _unknown(self, tensor: torch.Tensor, what: str) -> None:
        root, _ = self._root(tensor)
        self.touched.add(root)
        self.states[root] = _State(unknown=what, by=self.method)

    # -- the mode's hook ---------------------------------------------------------------

    def _bound_in_init(self, func: Any) -> bool:
        """Is ``func`` what ``torch.nn.init`` binds under its name now (itself, or a
        wrapper put in its place)?"""
        name = getattr(func, "__name__", None)
        return isinstance(name, str) and getattr(self.torch.nn.init, name, None) is func

    def __call__(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        torch = self.torch
        meaning_of = self.init_functions.get(func)
        if meaning_of is None and self._bound_in_init(func):
            meaning_of = self.init_names.get(func.__name__)
        if meaning_of is not None:
            bound = inspect.signature(func).bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            target = arguments.pop("tensor")
            result = func(*args, **kwargs)
            root, region = self._root(target)
            self._write(root, region, meaning_of(**arguments), target)
            return result
        if getattr(func, "__module__", None) == "torch.nn.init" or self._bound_in_init(func):
            # Another of torch.nn.init's functions (orthogonal_, eye_...): not drawable here.
            bound = inspect.signature(func).bind(*args, **kwargs)
            result = func(*args, **kwargs)
            target = bound.arguments.get("tensor")
            if isinstance(target, torch.Tensor):
                self._unknown(target, _function_name(func))
            return result
        method_meaning = self.methods.get(func)
        if method_meaning is not None:
            target, *rest = args
            result = func(*args, **kwargs)
            root, region = self._root(target)
            meaning = method_meaning(*rest, **{k: v for k, v in kwargs.items() if k != "generator"})
            self._write(root, region, meaning, target)
            return result
        if func is torch.Tensor.__setitem__:
            target, index, value = args
            result = func(*args, **kwargs)
            root, region = self._region(target, index)
            self._write(root, region, self._constant(value), target)
            return result
        if func is torch.Tensor.copy_:
            target, source = args[0], args[1]
            result = func(*args, **kwargs)
            self._copy(target, source)
            return result
        result = func(*args, **kwargs)
        # The tensor a call acts on: its first argument, positional or named.
        first = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(first, torch.Tensor):
            self._after(func, first, args, result)
        if isinstance(kwargs.get("out"), torch.Tensor):
            self._unknown(kwargs["out"], f"{_function_name(func)}(out=...)")
        return result

    def _copy(self, target: torch.Tensor, source: object) -> None:
        root, region = self._root(target)
        torch = self.torch
        if isinstance(source, torch.Tensor):
            source_root, source_region = self._root(source)
            known = self.states.get(source_root)
            if (
                region == _FULL
                and source_region == _FULL
                and known is not None
                and known.init is not None
                and known.unknown is None
                and tuple(source.shape) == tuple(target.shape)
            ):
                self.touched.add(root)
                self.states[root] = _State(known.init, dict(known.rows), None, known.by)
                return
        self._unknown(target, "copy_")

    def _after(self, func: Any, first: torch.Tensor, args: tuple[Any, ...], result: Any) -> None:
        """Track views of the tensors (whole, one row, part); note other writes."""
        torch = self.torch
        name = _function_name(func)
        descriptor = getattr(func, "__self__", None)
        is_data = name == "__get__" and getattr(descriptor, "__name__", "") == "data"
        if isinstance(result, torch.Tensor) and result is not first:
            if func is torch.Tensor.__getitem__:
                self.alias[id(result)] = self._region(first, args[1])
                self.alive.append(result)
            elif is_data or func is torch.Tensor.detach or _views(result, first):
                root, region = self._root(first)
                whole = region == _FULL and result.numel() == first.numel()
                self.alias[id(result)] = (root, _FULL if whole else _PARTIAL)
                self.alive.append(result)
        if _writes_in_place(name):
            self._unknown(first, name)
        elif name == "__get__" and getattr(descriptor, "__name__", "") == "is_meta":
            # Code that asks is on the meta device does something else there:
            # torch.nn.init's trunc_normal_, orthogonal_, dirac_ and sparse_ do nothing.
            self._unknown(first, "code that skips meta tensors (trunc_normal_, orthogonal_...)")


def _function_name(func: Any) -> str:
    return str(getattr(func, "__name__", type(func).__name__))


def _views(result: torch.Tensor, base: torch.Tensor) -> bool:
    """Is ``result`` a view of ``base`` (or of what ``base`` views)?"""
    result_base = getattr(result, "_base", None)
    return result_base is not None and (result_base is base or result_base is base._base)


#: Methods ending in ``_`` that do not change values.
_NOT_WRITES = frozenset({"requires_grad_", "share_memory_", "retain_grad", "record_stream"})
_IN_PLACE_OPERATORS = frozenset(
    {
        "__iadd__",
        "__isub__",
        "__imul__",
        "__itruediv__",
        "__ifloordiv__",
        "__imod__",
        "__ipow__",
        "__iand__",
        "__ior__",
        "__ixor__",
        "__ilshift__",
        "__irshift__",
        "__set__",
    }
)


def _writes_in_place(name: str) -> bool:
    if name in _IN_PLACE_OPERATORS:
        return True
    return name.endswith("_") and not name.startswith("__") and name not in _NOT_WRITES


@contextlib.contextmanager
def _recording_mode(recorder: _Recorder) -> Iterator[None]:
    from torch.overrides import TorchFunctionMode

    class Mode(TorchFunctionMode):
        def __torch_function__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            return recorder(func, args, kwargs or {})

    with Mode():
        yield


def _meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose tensors are on the meta device (no memory): its
    structure deep-copied, every parameter, buffer and tensor attribute replaced."""
    import torch

    memo: dict[int, Any] = {}
    for sub in module.modules():
        tensors = [*sub._parameters.values(), *sub._buffers.values(), *vars(sub).values()]
        for tensor in tensors:
            if not isinstance(tensor, torch.Tensor) or id(tensor) in memo:
                continue
            empty = torch.empty_like(tensor, device="meta")
            if isinstance(tensor, torch.nn.Parameter):
                empty = torch.nn.Parameter(empty, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = empty
    return copy.deepcopy(module, memo)


def _post_order(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Every submodule once, children before their parent, in registration order
    (the order construction resets them in)."""
    order: list[torch.nn.Module] = []
    seen: set[int] = {id(module)}
    stack: list[tuple[torch.nn.Module, Iterator[torch.nn.Module]]] = [
        (module, iter(module.children()))
    ]
    while stack:
        parent, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            order.append(parent)
        elif id(child) not in seen:
            seen.add(id(child))
            stack.append((child, iter(child.children())))
    return order


def _reset_all(module: torch.nn.Module, recorder: _Recorder) -> None:
    """Run every submodule's ``reset_parameters`` (else ``_reset_parameters``),
    children first; a reset that fails on the meta device marks what it touched
    and its module's own tensors as not understood."""
    for sub in _post_order(module):
        for attribute in ("reset_parameters", "_reset_parameters"):
            method = getattr(sub, attribute, None)
            if callable(method):
                break
        else:
            continue
        recorder.method = f"{type_name(sub)}.{attribute}"
        recorder.touched = set()
        try:
            method()
        except Exception as error:  # a custom reset may need values: keep, and say so
            detail = " ".join(str(error).split())[:120]
            reason = f"{recorder.method} failed on a meta copy ({type(error).__name__}: {detail})"
            own = [*sub._parameters.values(), *sub._buffers.values()]
            for root in {*recorder.touched, *(id(t) for t in own if t is not None)}:
                recorder.states[root] = _State(unknown=reason, by=recorder.method)


def record_init(
    module: torch.nn.Module,
    run: Callable[[torch.nn.Module], None] | None = None,
    *,
    origin: str = "convention torch",
) -> dict[str, Choice]:
    """What ``run`` does to each tensor of ``module``, as vsgen's choices, by name.

    ``run(copy)`` is called on a copy of ``module`` on the meta device (no
    memory; ``module`` itself is never touched) under a
    ``torch.overrides.TorchFunctionMode`` that records every draw and fill:
    ``torch.nn.init``'s functions and the in-place ``uniform_``, ``normal_``,
    ``fill_``, ``zero_``, an index assignment, and ``copy_`` from a tensor so
    drawn. Default ``run``: every submodule's ``reset_parameters()`` (else
    ``_reset_parameters()``), children before their parent.

    Each name of ``module.state_dict()`` gets a :class:`vsgen.modelspec.Choice`
    of ``origin``: the distribution of its last full draw or fill (uniform_(a, b)
    is ``RandomUniform(a, b)``, normal_(m, s) ``RandomNormal(m, s)``,
    kaiming_uniform_(a, mode, nonlinearity) ``KaimingUniform`` with those
    arguments...) with the rows filled afterwards (an embedding's padding row);
    ``KEEP`` with the reason for a tensor nothing drew, or one changed in a way
    vsgen cannot reproduce (arithmetic on the values, ``trunc_normal_`` beyond 2
    stddevs, ``orthogonal_``, a reset that fails on the meta device, a tensor the
    reset replaced). Nothing is guessed.
    """
    import torch

    check_module(module)
    try:
        clone = _meta_copy(module)
    except Exception as error:  # an attribute deepcopy cannot copy: keep everything
        reason = f"could not copy the module to the meta device ({type(error).__name__})"
        return {
            name: Choice(KEEP, reason, origin)
            for name, tensor in module.state_dict(keep_vars=True).items()
            if isinstance(tensor, torch.Tensor)
        }
    before = {
        name: tensor
        for name, tensor in clone.state_dict(keep_vars=True).items()
        if isinstance(tensor, torch.Tensor)
    }
    recorder = _Recorder()
    recorder.alive.extend(before.values())
    with torch.no_grad(), _recording_mode(recorder):
        if run is None:
            _reset_all(clone, recorder)
        else:
            recorder.method = getattr(run, "__qualname__", "run")
            run(clone)
    after = clone.state_dict(keep_vars=True)
    choices = {}
    for name, tensor in before.items():
        if after.get(name) is not tensor:
            choices[name] = Choice(KEEP, "the reset replaces the tensor", origin)
            continue
        state = recorder.states.get(id(tensor))
        if state is None:
            choices[name] = Choice(KEEP, "no reset sets it", origin)
        elif state.unknown is not None or state.init is None:
            choices[name] = Choice(KEEP, f"{state.by}: {state.unknown} (not reproducible)", origin)
        else:
            rows = tuple(sorted(state.rows.items()))
            choices[name] = Choice(state.init, state.by, origin, rows)
    return choices
