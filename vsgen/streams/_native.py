"""The C kernels of the vsgen v1 stream, called through ctypes.

``_native_kernels.c`` is built at install time (setup.py; without a C
compiler vsgen still works, on the NumPy reference). ``_kernel_path`` finds
and opens the library; this module types its entry points. Loading takes
about 2 ms (``import ctypes`` and ``dlopen``), so even the first fill of a
process runs at full speed. ctypes releases the GIL during each call, so
threads fill their pieces in parallel.

The kernels receive the ziggurat tables and the rare-path constants from
``_constants`` on every call: they hold no copy that could go stale, and give
the NumPy reference's bytes by construction (``+ - * /`` rounded one at a
time, no FMA contraction, no libm), which the golden checksums check for each
instruction-set build (``VSGEN_NATIVE_LEVEL``).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from vsgen.streams import _constants as c
from vsgen.streams import _kernel_path

_SUFFIX = {0: "base", 3: "v3", 4: "v4"}

_lock = threading.Lock()
_loaded: Kernels | None = None
#: Why the kernels do not serve this process (None until a load failed).
_failed: str | None = None


def _constants_array() -> np.ndarray:
    """The rare-path constants in the order _native_kernels.c expects (C_R ... C_POW2_NEG)."""
    values = np.zeros(96, dtype=np.float64)
    values[:6] = [c.R, c.INV_R, c.LN2_HI, c.LN2_LO, c.LOG2E, c.SQRT2]
    values[6:20] = c.EXP_COEFFICIENTS
    values[20:32] = c.LOG_COEFFICIENTS
    values[32:96] = c.POW2_NEG
    return values


class Kernels:
    """Typed entry points of one instruction-set build of the library."""

    def __init__(self, library: Any, level: int) -> None:
        import ctypes

        class Ziggurat(ctypes.Structure):
            _fields_ = [
                ("width", ctypes.c_void_p),
                ("inside", ctypes.c_void_p),
                ("low", ctypes.c_void_p),
                ("high", ctypes.c_void_p),
                ("has_tail", ctypes.c_int64),
            ]

        self.level = level
        self._constants = _constants_array()
        # The structures point into ZIGGURATS' arrays, which live as long as
        # the module; keep them (and the constants) referenced here.
        self._zigs = {
            key: Ziggurat(
                zig.width.ctypes.data,
                zig.inside.ctypes.data,
                zig.low.ctypes.data,
                zig.high.ctypes.data,
                int(zig.has_tail),
            )
            for key, zig in c.ZIGGURATS.items()
        }
        self._zig_refs = {key: ctypes.byref(zig) for key, zig in self._zigs.items()}
        pointer, i64, u64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_double
        suffix = _SUFFIX[level]
        self._normal = {}
        self._uniform = {}
        for is64, name in ((False, "f32"), (True, "f64")):
            normal = getattr(library, f"vsgen_normal_{name}_{suffix}")
            normal.argtypes = [pointer, i64, i64, u64, u64, f64, pointer, pointer]
            normal.restype = None
            uniform = getattr(library, f"vsgen_uniform_{name}_{suffix}")
            uniform.argtypes = [pointer, i64, i64, u64, f64]
            uniform.restype = None
            self._normal[is64], self._uniform[is64] = normal, uniform
        self._constants_address = self._constants.ctypes.data
        round_16 = getattr(library, f"vsgen_round_16_{suffix}")
        round_16.argtypes = [pointer, pointer, i64, i64, i64, f64, f64]
        round_16.restype = None
        self._round_16 = round_16
        fill_16 = getattr(library, f"vsgen_fill_16_{suffix}")
        fill_16.argtypes = [pointer, i64, i64, u64, u64, f64, pointer, pointer, i64, i64, f64, f64]
        fill_16.restype = None
        self._fill_16 = fill_16

    def fill(
        self,
        out: np.ndarray,
        start: int,
        keys: tuple[int, int],
        distribution: str,
        multiplier: float,
    ) -> None:
        """out[i] = multiplier z(start + i); out is 1-D, contiguous, float32/64."""
        is64 = out.dtype == np.float64
        address = out.ctypes.data
        if distribution == "uniform":
            self._uniform[is64](address, out.size, start, keys[0], float(multiplier))
        else:
            self._normal[is64](
                address,
                out.size,
                start,
                keys[0],
                keys[1],
                float(multiplier),
                self._zig_refs[distribution, is64],
                self._constants_address,
            )

    def fill_16(
        self,
        out: np.ndarray,
        start: int,
        keys: tuple[int, int],
        distribution: str,
        multiplier: float,
        bounds: tuple[float, float] | None,
    ) -> None:
        """out[i] = the float32 value of index start + i (``fill`` into a float32
        array) rounded to out's float16/bfloat16 and clamped as ``round_16``
        does, without a float32 array: the same bytes in one pass."""
        low, high = bounds if bounds is not None else (0.0, 0.0)
        uniform = distribution == "uniform"
        self._fill_16(
            out.ctypes.data,
            out.size,
            start,
            keys[0],
            keys[1],
            float(multiplier),
            None if uniform else self._zig_refs[distribution, False],
            self._constants_address,
            int(out.dtype.kind != "f"),
            int(bounds is not None),
            float(low),
            float(high),
        )

    def round_16(
        self, out: np.ndarray, values: np.ndarray, bounds: tuple[float, float] | None
    ) -> None:
        """out[...] = values (float32) rounded to out's float16/bfloat16, nearest
        even, then clamped to ``bounds`` (values of out's type): the bytes of
        ``vsgen.dtypes.round_into``. Both arrays are 1-D, contiguous, of one size.
        ``fill_16`` rounds through the same C code; this entry point lets the
        rounding alone be compared with NumPy's and ml_dtypes' casts."""
        low, high = bounds if bounds is not None else (0.0, 0.0)
        self._round_16(
            out.ctypes.data,
            values.ctypes.data,
            out.size,
            int(out.dtype.kind != "f"),
            int(bounds is not None),
            float(low),
            float(high),
        )


def load() -> Kernels | None:
    """The kernels at the best level this CPU runs (at most VSGEN_NATIVE_LEVEL),
    loaded once; None if the library is absent or unusable (``unavailable``
    then says why)."""
    global _loaded, _failed
    if _loaded is not None or _failed is not None:
        return _loaded
    with _lock:
        if _loaded is None and _failed is None:
            try:
                library = _kernel_path.open_library()
            except _kernel_path.Unavailable as reason:
                _failed = str(reason)
                return None
            _loaded = Kernels(library.handle, library.level)
    return _loaded


def loaded() -> bool:
    """True once the library is loaded in this process."""
    return _loaded is not None


def unavailable() -> str | None:
    """Why ``load`` found no kernels (e.g. "native kernels not built"), or None."""
    return _failed
