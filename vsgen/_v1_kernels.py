"""Compiled (numba) kernels of the vsgen v1 stream.

Imported lazily by :mod:`vsgen._v1` only for large fills; they give exactly
the bytes of the NumPy path in ``_v1.py`` (docs/stream-v1.md is the
definition).  Every kernel is ``nogil`` so threads run in parallel, and
``fastmath=False`` so LLVM may neither reassociate nor fuse ``a * b + c``
into an FMA: each ``+ - * /`` is one IEEE 754 operation, rounded to nearest,
on every CPU.  No libm function is called anywhere: the rare paths use the
``exp``/``log`` below, made of ``+ - * /`` and integer operations.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np

from vsgen import _v1 as c

_U64 = np.uint64
GAMMA = _U64(c.GAMMA)
MIX1 = _U64(c.MIX1)
MIX2 = _U64(c.MIX2)
LOW32 = _U64(0xFFFFFFFF)
SHIFT = (_U64(8), _U64(9), _U64(11), _U64(27), _U64(30), _U64(31), _U64(32))
S8, S9, S11, S27, S30, S31, S32 = SHIFT
ONE = _U64(1)
INDEX_MASK = _U64(511)

WIDTH32 = c.WIDTH32
WIDTH64 = c.WIDTH64
INSIDE32 = c.INSIDE32
INSIDE64 = c.INSIDE64
DENSITY = c.DENSITY
POW2_NEG = c.POW2_NEG
EXP_COEFFICIENTS = c.EXP_COEFFICIENTS
LOG_COEFFICIENTS = c.LOG_COEFFICIENTS
R = c.R
INV_R = c.INV_R
LN2_HI = c.LN2_HI
LN2_LO = c.LN2_LO
LOG2E = c.LOG2E
SQRT2 = c.SQRT2
UNIT53 = c.UNIT53
TWO32 = np.float32(2.0)
TWO64 = 2.0
UNIFORM32_SCALE = np.float32(c.UNIFORM32_SCALE)
ONE32 = np.float32(1.0)
UNIFORM64_SCALE = c.UNIFORM64_SCALE


def _jit(function):
    """``numba.njit`` with the stream's flags; without a cache if none is writable.

    numba raises at decoration time when no cache directory (NUMBA_CACHE_DIR,
    ``__pycache__`` beside this file, the user cache) is writable; compiling
    every time is slower to start but gives the same bytes.
    """
    options = {"nogil": True, "fastmath": False, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError as error:
        warnings.warn(
            f"vsgen: numba cannot cache its kernels ({error}); compiling them in memory",
            RuntimeWarning,
            stacklevel=2,
        )
        return numba.njit(cache=False, **options)(function)


@_jit
def mix64(z):
    """splitmix64 finaliser: a bijection of uint64 with full avalanche."""
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


@_jit
def extra_word(extra_base, j):
    """Word j of a position's private sequence: mix64(B(p) + (j + 1) * GAMMA)."""
    return mix64(extra_base + _U64(j + 1) * GAMMA)


@_jit
def exp_neg(t):
    """e**-t for 0 <= t < 43 in float64 (round(t / ln 2) reduction, Taylor 13)."""
    k = np.int64(t * LOG2E + 0.5)
    kf = np.float64(k)
    s = (kf * LN2_HI - t) + kf * LN2_LO
    p = EXP_COEFFICIENTS[13]
    for i in range(12, -1, -1):
        p = p * s + EXP_COEFFICIENTS[i]
    return p * POW2_NEG[k]


@_jit
def neg_log_unit(word):
    """-ln(U) for U = ((word >> 11) + 1) * 2**-53 in (0, 1], in float64."""
    n = (word >> S11) + ONE
    b = 0
    for step in (32, 16, 8, 4, 2, 1):
        if (n >> _U64(b + step)) != 0:
            b += step
    mantissa = np.float64(np.int64(n)) * POW2_NEG[b]
    if mantissa > SQRT2:
        mantissa = mantissa * 0.5
        b += 1
    s = (mantissa - 1.0) / (mantissa + 1.0)
    s2 = s * s
    q = LOG_COEFFICIENTS[11]
    for i in range(10, -1, -1):
        q = q * s2 + LOG_COEFFICIENTS[i]
    log_mantissa = (s + s) * q
    e = np.float64(b - 53)
    return -(e * LN2_HI + (e * LN2_LO + log_mantissa))


@_jit
def _tail(extra_base, j):
    """Marsaglia's tail beyond r: returns (r + a, words used)."""
    while True:
        a = neg_log_unit(extra_word(extra_base, j)) * INV_R
        b = neg_log_unit(extra_word(extra_base, j + 1))
        j += 2
        if b + b > a * a:
            return R + a, j


@_jit
def _wedge_accepts(extra_base, j, layer, magnitude):
    """Is a uniform height in layer `layer` under f(magnitude)?"""
    u = np.float64(np.int64(extra_word(extra_base, j) >> S11)) * UNIT53
    y = DENSITY[layer] + u * (DENSITY[layer + 1] - DENSITY[layer])
    return y < exp_neg(0.5 * (magnitude * magnitude))


@_jit
def slow_f32(position, x, h, truncated, key_extra):
    """Resolve a float32 candidate that failed the hot test (see the docs)."""
    extra_base = mix64(key_extra + _U64(position) * GAMMA)
    j = 0
    while True:
        layer = np.int64(h & _U64(255))
        magnitude = np.float64(abs(x))
        if not (truncated and magnitude > 2.0):
            if layer == 0:
                if not truncated:
                    z, j = _tail(extra_base, j)
                    value = np.float32(z)
                    if (h >> S8) & ONE:
                        value = -value
                    return value
            else:
                accepted = _wedge_accepts(extra_base, j, layer, magnitude)
                j += 1
                if accepted:
                    return x
        h = extra_word(extra_base, j) & LOW32
        j += 1
        index = np.int64(h & INDEX_MASK)
        u = np.int32(h >> S9)
        x = np.float32(u) * WIDTH32[index]
        if u < INSIDE32[index] and not (truncated and abs(x) > TWO32):
            return x


@_jit
def slow_f64(position, x, h, truncated, key_extra):
    """Resolve a float64 candidate that failed the hot test (see the docs)."""
    extra_base = mix64(key_extra + _U64(position) * GAMMA)
    j = 0
    while True:
        layer = np.int64(h & _U64(255))
        magnitude = abs(x)
        if not (truncated and magnitude > 2.0):
            if layer == 0:
                if not truncated:
                    z, j = _tail(extra_base, j)
                    if (h >> S8) & ONE:
                        z = -z
                    return z
            else:
                accepted = _wedge_accepts(extra_base, j, layer, magnitude)
                j += 1
                if accepted:
                    return x
        h = extra_word(extra_base, j)
        j += 1
        index = np.int64(h & INDEX_MASK)
        u = np.int64(h >> S11)
        x = np.float64(u) * WIDTH64[index]
        if u < INSIDE64[index] and not (truncated and abs(x) > TWO64):
            return x


@_jit
def _normal_f32_value(h, position, truncated, key_extra):
    index = np.int64(h & INDEX_MASK)
    u = np.int32(h >> S9)
    x = np.float32(u) * WIDTH32[index]
    if u < INSIDE32[index] and not (truncated and abs(x) > TWO32):
        return x
    return slow_f32(position, x, h, truncated, key_extra)


@_jit
def normal_f32(out, start, key_main, key_extra, multiplier, truncated):
    """out[i] = multiplier * z(start + i), float32; pairs share a word."""
    n = out.shape[0]
    m = np.float32(multiplier)
    i = 0
    if n > 0 and start & 1:
        w = mix64(key_main + _U64(start >> 1) * GAMMA)
        out[0] = _normal_f32_value(w >> S32, start, truncated, key_extra) * m
        i = 1
    while i + 1 < n:
        position = start + i
        w = mix64(key_main + _U64(position >> 1) * GAMMA)
        out[i] = _normal_f32_value(w & LOW32, position, truncated, key_extra) * m
        out[i + 1] = _normal_f32_value(w >> S32, position + 1, truncated, key_extra) * m
        i += 2
    if i < n:
        position = start + i
        w = mix64(key_main + _U64(position >> 1) * GAMMA)
        out[i] = _normal_f32_value(w & LOW32, position, truncated, key_extra) * m


@_jit
def normal_f64(out, start, key_main, key_extra, multiplier, truncated):
    """out[i] = multiplier * z(start + i), float64; one word per value."""
    n = out.shape[0]
    for i in range(n):
        position = start + i
        h = mix64(key_main + _U64(position) * GAMMA)
        index = np.int64(h & INDEX_MASK)
        u = np.int64(h >> S11)
        x = np.float64(u) * WIDTH64[index]
        if not (u < INSIDE64[index] and not (truncated and abs(x) > TWO64)):
            x = slow_f64(position, x, h, truncated, key_extra)
        out[i] = x * multiplier


@_jit
def _uniform_f32_value(h):
    return np.float32(np.int32(h >> S8)) * UNIFORM32_SCALE - ONE32


@_jit
def uniform_f32(out, start, key_main, multiplier):
    """out[i] = multiplier * (u * 2**-23 - 1), u the top 24 bits of a half-word."""
    n = out.shape[0]
    m = np.float32(multiplier)
    i = 0
    if n > 0 and start & 1:
        w = mix64(key_main + _U64(start >> 1) * GAMMA)
        out[0] = _uniform_f32_value(w >> S32) * m
        i = 1
    pairs = (n - i) >> 1
    base = (start + i) >> 1
    for k in range(pairs):
        w = mix64(key_main + _U64(base + k) * GAMMA)
        out[i + 2 * k] = _uniform_f32_value(w & LOW32) * m
        out[i + 2 * k + 1] = _uniform_f32_value(w >> S32) * m
    i += 2 * pairs
    if i < n:
        w = mix64(key_main + _U64((start + i) >> 1) * GAMMA)
        out[i] = _uniform_f32_value(w & LOW32) * m


@_jit
def uniform_f64(out, start, key_main, multiplier):
    """out[i] = multiplier * (u * 2**-52 - 1), u the top 53 bits of the word."""
    n = out.shape[0]
    for i in range(n):
        w = mix64(key_main + _U64(start + i) * GAMMA)
        out[i] = (np.float64(np.int64(w >> S11)) * UNIFORM64_SCALE - 1.0) * multiplier
