"""Compiled (numba) kernels of the vsgen v1 stream.

Imported lazily by :mod:`vsgen.streams.counter` only for large fills; they give
exactly the bytes of the NumPy path in ``counter.py`` (docs/stream-v1.md is the
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

from vsgen.streams import _constants as c

_U64 = np.uint64
GAMMA = _U64(c.GAMMA)
MIX1 = _U64(c.MIX1)
MIX2 = _U64(c.MIX2)
LOW32 = _U64(0xFFFFFFFF)
SHIFT = (_U64(8), _U64(9), _U64(11), _U64(27), _U64(30), _U64(31), _U64(32))
S8, S9, S11, S27, S30, S31, S32 = SHIFT
ONE = _U64(1)
INDEX_MASK = _U64(511)

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
UNIFORM32_SCALE = np.float32(c.UNIFORM32_SCALE)
ONE32 = np.float32(1.0)
UNIFORM64_SCALE = c.UNIFORM64_SCALE
#: Values per hot pass: its flags stay in L1 and the misses are redone while hot.
BLOCK = 2048


_warned = False


def _jit(function):
    """``numba.njit`` with the stream's flags; without a cache if none is writable.

    numba raises at decoration time when no cache directory (NUMBA_CACHE_DIR,
    ``__pycache__`` beside this file, the user cache) is writable; compiling
    every time is slower to start but gives the same bytes.
    """
    global _warned
    try:
        return _compile(function, cache=True)
    except RuntimeError as error:
        if not _warned:
            _warned = True
            warnings.warn(
                f"vsgen: numba cannot cache its kernels ({error}); compiling them in memory",
                RuntimeWarning,
                stacklevel=2,
            )
        return _compile(function, cache=False)


def _compile(function, cache: bool):
    return numba.njit(cache=cache, nogil=True, fastmath=False, error_model="numpy")(function)


@_jit
def mix64(z):
    """splitmix64 finaliser: a bijection of uint64 with full avalanche."""
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


@_jit
def extra_word(extra_base, j):
    """Word j of an index's private sequence: E(p, j) = mix64(B(p) + (j + 1) GAMMA)."""
    return mix64(extra_base + _U64(j + 1) * GAMMA)


#: The NumPy path's own function, compiled: one formula for both paths.
exp_neg = _jit(c.exp_neg)


@_jit
def neg_log_unit(word):
    """-ln(U) for U = ((word >> 11) + 1) 2**-53 in (0, 1], in float64."""
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
    """Marsaglia's tail beyond r: returns (r + a, next word counter)."""
    while True:
        a = neg_log_unit(extra_word(extra_base, j)) * INV_R
        b = neg_log_unit(extra_word(extra_base, j + 1))
        j += 2
        if b + b > a * a:
            return R + a, j


@_jit
def _under_density(extra_base, j, layer, magnitude, low, high):
    """Wedge test: is a uniform height in layer `layer` below exp(-magnitude**2 / 2)?"""
    u = np.float64(np.int64(extra_word(extra_base, j) >> S11)) * UNIT53
    y = low[layer] + u * (high[layer] - low[layer])
    return y < exp_neg(0.5 * (magnitude * magnitude))


@_jit
def slow_f32(position, x, h, has_tail, key_extra, width, inside, low, high):
    """Resolve a float32 candidate (x, word h) that failed the hot test."""
    extra_base = mix64(key_extra + _U64(position) * GAMMA)
    j = 0
    while True:
        layer = np.int64(h & _U64(255))
        if has_tail and layer == 0:
            z, j = _tail(extra_base, j)
            value = np.float32(z)
            if (h >> S8) & ONE:
                value = -value
            return value
        accepted = _under_density(extra_base, j, layer, np.float64(abs(x)), low, high)
        j += 1
        if accepted:
            return x
        h = extra_word(extra_base, j) & LOW32
        j += 1
        index = np.int64(h & INDEX_MASK)
        u = np.int32(h >> S9)
        x = np.float32(u) * width[index]
        if u < inside[index]:
            return x


@_jit
def slow_f64(position, x, h, has_tail, key_extra, width, inside, low, high):
    """Resolve a float64 candidate (x, word h) that failed the hot test."""
    extra_base = mix64(key_extra + _U64(position) * GAMMA)
    j = 0
    while True:
        layer = np.int64(h & _U64(255))
        if has_tail and layer == 0:
            z, j = _tail(extra_base, j)
            if (h >> S8) & ONE:
                z = -z
            return z
        accepted = _under_density(extra_base, j, layer, abs(x), low, high)
        j += 1
        if accepted:
            return x
        h = extra_word(extra_base, j)
        j += 1
        index = np.int64(h & INDEX_MASK)
        u = np.int64(h >> S11)
        x = np.float64(u) * width[index]
        if u < inside[index]:
            return x


# The hot passes read their tables as module globals, which numba freezes
# into constants: LLVM then knows they cannot alias `out` and vectorises the
# loops (passed as arguments, the same tables block that).
_N32 = c.ZIGGURATS["untruncated_normal", False]
_T32 = c.ZIGGURATS["truncated_normal", False]
_N64 = c.ZIGGURATS["untruncated_normal", True]
_T64 = c.ZIGGURATS["truncated_normal", True]
N32_WIDTH, N32_INSIDE = _N32.width, _N32.inside
T32_WIDTH, T32_INSIDE = _T32.width, _T32.inside
N64_WIDTH, N64_INSIDE = _N64.width, _N64.inside
T64_WIDTH, T64_INSIDE = _T64.width, _T64.inside


@_jit
def _hot_pair(w, m, width, inside):
    """Both float32 values of word w: (m x_low, m x_high, missed_low, missed_high)."""
    low_half = w & LOW32
    high_half = w >> S32
    index_low = np.int64(low_half & INDEX_MASK)
    index_high = np.int64(high_half & INDEX_MASK)
    u_low = np.int32(low_half >> S9)
    u_high = np.int32(high_half >> S9)
    return (
        (np.float32(u_low) * width[index_low]) * m,
        (np.float32(u_high) * width[index_high]) * m,
        u_low >= inside[index_low],
        u_high >= inside[index_high],
    )


@_jit
def _hot_pass_f32(out, missed, first_pair, pairs, key_main, m, truncated):
    """Hot path for `pairs` word pairs: out = m x, missed = failed the hot test.

    Branch-free, so LLVM vectorises it (the table lookups become gathers
    where the CPU has them); the few misses are redone afterwards.
    """
    if truncated:
        for k in range(pairs):
            w = mix64(key_main + _U64(first_pair + k) * GAMMA)
            a, b, missed_a, missed_b = _hot_pair(w, m, T32_WIDTH, T32_INSIDE)
            out[2 * k], out[2 * k + 1] = a, b
            missed[2 * k], missed[2 * k + 1] = missed_a, missed_b
    else:
        for k in range(pairs):
            w = mix64(key_main + _U64(first_pair + k) * GAMMA)
            a, b, missed_a, missed_b = _hot_pair(w, m, N32_WIDTH, N32_INSIDE)
            out[2 * k], out[2 * k + 1] = a, b
            missed[2 * k], missed[2 * k + 1] = missed_a, missed_b


@_jit
def _hot_one(h, m, width, inside):
    index = np.int64(h & INDEX_MASK)
    u = np.int64(h >> S11)
    return (np.float64(u) * width[index]) * m, u >= inside[index]


@_jit
def _hot_pass_f64(out, missed, first, count, key_main, m, truncated):
    """Hot path for `count` float64 values (see `_hot_pass_f32`)."""
    if truncated:
        for k in range(count):
            h = mix64(key_main + _U64(first + k) * GAMMA)
            out[k], missed[k] = _hot_one(h, m, T64_WIDTH, T64_INSIDE)
    else:
        for k in range(count):
            h = mix64(key_main + _U64(first + k) * GAMMA)
            out[k], missed[k] = _hot_one(h, m, N64_WIDTH, N64_INSIDE)


@_jit
def _misses(missed, count, offsets):
    """Offsets of the set flags in missed[:count].

    Eight flags are tested at once: with ~1.5 % of them set, most groups are
    all clear, and no branch per flag is taken on random data.
    """
    found = 0
    groups = missed[: count & ~7].view(np.uint64)
    for g in range(groups.shape[0]):
        if groups[g] != 0:
            for k in range(8 * g, 8 * g + 8):
                offsets[found] = k
                found += missed[k]
    for k in range(count & ~7, count):
        offsets[found] = k
        found += missed[k]
    return found


@_jit
def _value_f32(h, position, has_tail, key_extra, width, inside, low, high):
    """z for one float32 index from its 32-bit word h (used at range edges)."""
    index = np.int64(h & INDEX_MASK)
    u = np.int32(h >> S9)
    x = np.float32(u) * width[index]
    if u < inside[index]:
        return x
    return slow_f32(position, x, h, has_tail, key_extra, width, inside, low, high)


@_jit
def normal_f32(out, start, key_main, key_extra, multiplier, has_tail, width, inside, low, high):
    """out[i] = multiplier z(start + i) in float32; index pairs share a word.

    (width, inside, low, high) are the ziggurat's tables; `has_tail` is true
    for the normal (layer 0 continues beyond r) and false for the truncated one.
    """
    n = out.shape[0]
    m = np.float32(multiplier)
    i = 0
    if n > 0 and start & 1:
        w = mix64(key_main + _U64(start >> 1) * GAMMA)
        z = _value_f32(w >> S32, start, has_tail, key_extra, width, inside, low, high)
        out[0] = z * m
        i = 1
    missed = np.empty(BLOCK, dtype=np.bool_)
    offsets = np.empty(BLOCK, dtype=np.int64)
    while n - i >= 2:
        count = min(BLOCK, (n - i) & ~1)
        block = out[i : i + count]
        _hot_pass_f32(block, missed, (start + i) >> 1, count >> 1, key_main, m, not has_tail)
        for k in range(_misses(missed, count, offsets)):
            position = start + i + offsets[k]
            w = mix64(key_main + _U64(position >> 1) * GAMMA)
            h = (w >> (S32 * _U64(position & 1))) & LOW32
            x = np.float32(np.int32(h >> S9)) * width[np.int64(h & INDEX_MASK)]
            z = slow_f32(position, x, h, has_tail, key_extra, width, inside, low, high)
            block[offsets[k]] = z * m
        i += count
    if i < n:
        w = mix64(key_main + _U64((start + i) >> 1) * GAMMA)
        z = _value_f32(w & LOW32, start + i, has_tail, key_extra, width, inside, low, high)
        out[i] = z * m


@_jit
def normal_f64(out, start, key_main, key_extra, multiplier, has_tail, width, inside, low, high):
    """out[i] = multiplier z(start + i) in float64; one word per value."""
    n = out.shape[0]
    missed = np.empty(BLOCK, dtype=np.bool_)
    offsets = np.empty(BLOCK, dtype=np.int64)
    for i in range(0, n, BLOCK):
        count = min(BLOCK, n - i)
        block = out[i : i + count]
        _hot_pass_f64(block, missed, start + i, count, key_main, multiplier, not has_tail)
        for k in range(_misses(missed, count, offsets)):
            position = start + i + offsets[k]
            h = mix64(key_main + _U64(position) * GAMMA)
            x = np.float64(np.int64(h >> S11)) * width[np.int64(h & INDEX_MASK)]
            z = slow_f64(position, x, h, has_tail, key_extra, width, inside, low, high)
            block[offsets[k]] = z * multiplier


@_jit
def _uniform_f32_value(h):
    return np.float32(np.int32(h >> S8)) * UNIFORM32_SCALE - ONE32


@_jit
def uniform_f32(out, start, key_main, multiplier):
    """out[i] = multiplier (u 2**-23 - 1), u the top 24 bits of the index's half-word."""
    n = out.shape[0]
    m = np.float32(multiplier)
    i = 0
    if n > 0 and start & 1:
        w = mix64(key_main + _U64(start >> 1) * GAMMA)
        out[0] = _uniform_f32_value(w >> S32) * m
        i = 1
    pairs = (n - i) >> 1
    first_pair = (start + i) >> 1
    for k in range(pairs):
        w = mix64(key_main + _U64(first_pair + k) * GAMMA)
        out[i + 2 * k] = _uniform_f32_value(w & LOW32) * m
        out[i + 2 * k + 1] = _uniform_f32_value(w >> S32) * m
    i += 2 * pairs
    if i < n:
        w = mix64(key_main + _U64((start + i) >> 1) * GAMMA)
        out[i] = _uniform_f32_value(w & LOW32) * m


@_jit
def uniform_f64(out, start, key_main, multiplier):
    """out[i] = multiplier (u 2**-52 - 1), u the top 53 bits of the index's word."""
    n = out.shape[0]
    for i in range(n):
        w = mix64(key_main + _U64(start + i) * GAMMA)
        out[i] = (np.float64(np.int64(w >> S11)) * UNIFORM64_SCALE - 1.0) * multiplier
