"""Which implementation of the ``vsgen`` stream fills: the choice and the C library.

Two implementations give identical bytes: the C kernels (``_native_kernels.c``,
built at install when a C compiler is present) and the NumPy reference
(``_reference``). This module answers, without importing NumPy (so that
``vsgen --version`` stays as fast as ``--help``):

* what the user asked for: ``VSGEN_KERNEL`` = ``auto`` (default: the C kernels
  when built, else NumPy), ``native`` (the same; kept as an explicit request)
  or ``numpy``;
* whether the C library was built, whether it loads, and the instruction-set
  level it runs at: the best one this CPU supports, at most
  ``VSGEN_NATIVE_LEVEL`` (0, 3 or 4; for tests);
* ``describe()``: both in a few words, for ``vsgen --version``.

Loading the library costs ``import ctypes`` and one ``dlopen``, about 2 ms.
"""

from __future__ import annotations

import importlib.machinery
import os
import pathlib
from typing import Any, NamedTuple

#: What ``VSGEN_KERNEL`` may say.
KERNEL_CHOICES = ("auto", "native", "numpy")
#: x86-64 levels the library is built for: baseline, v3 (AVX2, FMA), v4 (AVX-512).
LEVELS = (0, 3, 4)
#: Version of the C interface this loader speaks (vsgen_native_abi()).
ABI = 2


def kernel_choice() -> str:
    """``VSGEN_KERNEL``, normalised (blank means ``auto``); ValueError if unknown.

    ``numba`` was a choice until the numba path was retired; it is refused with
    a word on why, so that an old setting fails in one clear line.
    """
    choice = os.environ.get("VSGEN_KERNEL", "auto").strip().lower() or "auto"
    if choice not in KERNEL_CHOICES:
        retired = " (numba was retired: the C kernels replace it)"
        raise ValueError(
            f"Environment variable `VSGEN_KERNEL` must be one of {', '.join(KERNEL_CHOICES)}"
            f"{retired if choice == 'numba' else ''}. Received: VSGEN_KERNEL={choice!r}"
        )
    return choice


def requested_level() -> int | None:
    """VSGEN_NATIVE_LEVEL caps the instruction set (0, 3 or 4); for tests."""
    text = os.environ.get("VSGEN_NATIVE_LEVEL", "").strip()
    if not text:
        return None
    if text not in ("0", "3", "4"):
        raise ValueError(
            "Environment variable `VSGEN_NATIVE_LEVEL` must be 0, 3 or 4. "
            f"Received: VSGEN_NATIVE_LEVEL={text!r}"
        )
    return int(text)


def library_path() -> pathlib.Path | None:
    """The built library beside this file, or None if it was not built."""
    here = pathlib.Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_native_kernels{suffix}"
        if candidate.is_file():
            return candidate
    return None


class Library(NamedTuple):
    """The opened C library and the level its kernels run at."""

    handle: Any
    level: int


class Unavailable(Exception):
    """The C kernels cannot serve this process; the message says why, in a few words."""


def open_library() -> Library:
    """Open the built library (``ctypes.CDLL``) and pick its level: the best this
    CPU runs, at most VSGEN_NATIVE_LEVEL. Raises ``Unavailable`` if the library
    was not built or does not load, ValueError for a bad VSGEN_NATIVE_LEVEL."""
    path = library_path()
    if path is None:
        raise Unavailable("native kernels not built")
    import ctypes

    try:
        handle = ctypes.CDLL(str(path))
        handle.vsgen_native_abi.restype = ctypes.c_int64
        handle.vsgen_native_level.restype = ctypes.c_int64
        abi = int(handle.vsgen_native_abi())
        best = int(handle.vsgen_native_level())
    except (OSError, AttributeError) as error:
        raise Unavailable(f"native kernels do not load: {error}") from None
    if abi != ABI:
        raise Unavailable(f"native kernels built for interface {abi}, not {ABI}: rebuild them")
    cap = requested_level()
    level = best if cap is None else min(best, cap)
    return Library(handle, max(lv for lv in LEVELS if lv <= level))


def level_name(level: int) -> str:
    """``x86-64-v4``, ``x86-64-v3``, ``x86-64`` (the baseline) on x86-64; the
    machine's name elsewhere, where only the baseline is built."""
    machine = getattr(os, "uname", lambda: None)()
    machine_name = machine.machine if machine is not None else ""
    if machine_name.lower() in ("x86_64", "amd64"):
        return "x86-64" if level == 0 else f"x86-64-v{level}"
    return machine_name or "baseline"


def describe() -> str:
    """The path this process fills with, as ``vsgen --version`` says it:
    ``native x86-64-v4``, ``numpy (VSGEN_KERNEL=numpy)``, ``numpy (native
    kernels not built)``, ... Never raises: a bad setting is described."""
    try:
        if kernel_choice() == "numpy":
            return "numpy (VSGEN_KERNEL=numpy)"
        library = open_library()
    except Unavailable as reason:
        return f"numpy ({reason})"
    except ValueError as error:
        return f"none: {error}"
    return f"native {level_name(library.level)}"
