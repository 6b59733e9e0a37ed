"""Fill existing arrays and tensors in place: no allocation, no copy.

``fill_(tensor, initializer)`` writes the initializer's values for
``tensor.shape`` straight into the tensor's memory, which it reaches without
copying: a NumPy array as it is, a CPU torch tensor through ``.numpy()`` (the
same memory; bfloat16 through an int16 view, reinterpreted as
``ml_dtypes.bfloat16``), anything else through DLPack or the buffer protocol.
torch is never imported here unless the caller passed a torch tensor (and so
had imported it already).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from vsgen.initializer import RandomInitializer

T = TypeVar("T")


def fill_(
    tensor: T,
    initializer: RandomInitializer,
    *,
    fan_shape: Sequence[int] | None = None,
    threads: int | None = None,
) -> T:
    """Overwrite ``tensor`` with ``initializer``'s values for its shape; return it.

    The values are exactly ``initializer(tensor.shape, dtype)`` (fans from
    ``tensor.shape`` under the initializer's layout, or from ``fan_shape``),
    written without allocating or copying the tensor. The dtype is the
    tensor's: float16, bfloat16, float32 or float64.

    Args:
        tensor: a writeable, C-contiguous NumPy array; a contiguous CPU torch
            tensor (``requires_grad`` is fine: the write bypasses autograd, as
            ``torch.nn.init`` does under ``no_grad``); or any writeable object
            exporting DLPack or the buffer protocol.
        initializer: any vsgen initializer (``VarianceScaling``, a preset,
            ``RandomNormal``...).
        fan_shape: compute fans from this shape instead of ``tensor.shape``.
        threads: sampling threads (default: the usable CPUs).

    Raises:
        TypeError: an unsupported tensor type or dtype.
        ValueError: a read-only, non-contiguous or non-CPU tensor.
    """
    if not isinstance(initializer, RandomInitializer):
        raise TypeError(
            "Argument `initializer` must be a vsgen initializer (VarianceScaling, a preset, "
            "RandomNormal...). "
            f"Received: initializer={type(initializer).__name__}"
        )
    array = writable_view(tensor)
    initializer.sample(array.shape, fan_shape=fan_shape, threads=threads, out=array)
    if _is_torch_tensor(tensor):
        _mark_modified(tensor)
    return tensor


def writable_view(tensor: Any) -> np.ndarray:
    """A NumPy array sharing ``tensor``'s memory, checked to be writeable and
    C-contiguous (so that filling it fills the tensor)."""
    if isinstance(tensor, np.ndarray):
        array = tensor
    elif _is_torch_tensor(tensor):
        array = torch_array(tensor)
    elif hasattr(tensor, "__dlpack__"):
        try:
            array = np.from_dlpack(tensor)
        except (BufferError, TypeError, RuntimeError) as error:
            raise TypeError(
                f"Argument `tensor` ({type(tensor).__name__}) cannot be shared through "
                f"DLPack: {error}"
            ) from None
    else:
        try:
            array = np.asarray(memoryview(tensor))
        except TypeError:
            raise TypeError(
                "Argument `tensor` must be a numpy array, a CPU torch tensor or an object "
                f"with DLPack or the buffer protocol. Received: {type(tensor).__name__}"
            ) from None
    if not array.flags.writeable:
        raise ValueError(
            f"Argument `tensor` ({type(tensor).__name__}) is read-only; fill_ writes in place"
        )
    if not array.flags.c_contiguous:
        raise ValueError(
            f"Argument `tensor` ({type(tensor).__name__}) must be C-contiguous; "
            f"received strides {array.strides}"
        )
    return array


def _is_torch_tensor(value: object) -> bool:
    # A torch tensor can only exist if torch is imported; never import it here.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _mark_modified(tensor: Any) -> None:
    """Bump the tensor's version counter, as torch's own in-place ops do, so that
    autograd notices if a graph saved the old values (memory written through
    NumPy is invisible to it)."""
    try:
        from torch.autograd.graph import increment_version
    except ImportError:  # older torch: no public way; the values are written all the same
        return
    increment_version(tensor)


def torch_array(tensor: Any, *, floating_only: bool = True) -> np.ndarray:
    """A NumPy array sharing the memory of a contiguous CPU torch tensor, of
    its shape: bfloat16 through an int16 view read as ``ml_dtypes.bfloat16``.

    ``floating_only`` refuses all but float16, bfloat16, float32 and float64
    (what ``fill_`` samples into); without it any dtype NumPy has is viewed
    (``vsgen.torch.init_`` also writes integer constants).

    Raises:
        ValueError: a tensor off the CPU or not contiguous.
        TypeError: another dtype under ``floating_only``.
    """
    torch = sys.modules["torch"]
    if tensor.device.type != "cpu":
        raise ValueError(
            f"Argument `tensor` must be on the CPU to be filled in place. Received: a tensor "
            f"on {tensor.device}; fill a CPU tensor and move it with .to(device)"
        )
    if not tensor.is_contiguous():
        raise ValueError(
            f"Argument `tensor` must be contiguous. Received: a tensor with strides "
            f"{tuple(tensor.stride())}"
        )
    data = tensor.detach()
    if data.dtype == torch.bfloat16:
        from vsgen.dtypes import bfloat16

        # NumPy has no bfloat16: view the same 2-byte words as int16, then as
        # ml_dtypes' bfloat16, which vsgen rounds float32 values into.
        return data.view(torch.int16).numpy().view(bfloat16())
    if floating_only and data.dtype not in (torch.float16, torch.float32, torch.float64):
        raise TypeError(
            "Argument `tensor` must be a floating tensor (float16, bfloat16, float32, "
            f"float64). Received: dtype={data.dtype}"
        )
    return data.numpy()
