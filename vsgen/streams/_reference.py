"""The NumPy reference of the ``vsgen`` v1 stream: pure functions, no state.

Every value is a pure function of (seed, distribution, working precision,
flat index); docs/stream-v1.md defines it bit for bit.  In short:

* keys: ``state = seed ^ TAG``; ``key_main = mix64(state + GAMMA)``,
  ``key_extra = mix64(state + 2 GAMMA)`` (the first two splitmix64 outputs);
* main words ``W(q) = mix64(key_main + q GAMMA)`` (mod 2**64); a float32 value
  at index p uses half ``p & 1`` of ``W(p >> 1)``, a float64 value all of ``W(p)``;
* normal: a 256-layer ziggurat, sign folded into the table, hot path
  ``x = u * width[index]``, accepted when ``u < inside[index]``; the
  truncated normal has its own ziggurat on [0, 2] (58 full-width strips under
  198 curved layers), so it never rejects for the bound; the rare
  wedge/tail/redraw paths read the words ``E(p, j) = mix64(B(p) + (j + 1)
  GAMMA)``, ``B(p) = mix64(key_extra + p GAMMA)``, private to index p;
* uniform: ``u * 2**-23 - 1`` (float32, 24-bit u) or ``u * 2**-52 - 1``
  (float64, 53-bit u), exact, then one rounded product with the multiplier.

Only ``+ - * /``, comparisons and integer operations are used, so the bytes do
not depend on the CPU, on NumPy's SIMD dispatch or on libm.  This module is
the reference: the C kernels (``_native_kernels.c``) transcribe it and must
give its bytes, which the golden checksums check on both.  ``fill`` is
vectorised over chunks of ``NUMPY_CHUNK`` values; choosing an implementation
and sharing work among threads is ``_dispatch``'s business, and checking the
arguments ``counter``'s.
"""

from __future__ import annotations

import numpy as np

from vsgen.streams._constants import (
    GAMMA,
    INV_R,
    LN2_HI,
    LN2_LO,
    LOG_COEFFICIENTS,
    MIX1,
    MIX2,
    POW2_NEG,
    SQRT2,
    TAG,
    UNIFORM32_SCALE,
    UNIFORM64_SCALE,
    UNIT53,
    ZIGGURATS,
    R,
    Ziggurat,
    exp_neg,
)

#: Seeds are any 64-bit unsigned integer.
MAX_SEED = 1 << 64
#: Values per NumPy step: bounds the temporaries (about 40 bytes per value,
#: 5 MiB) while keeping the per-call overhead of ~20 ufunc calls small.
NUMPY_CHUNK = 1 << 17

_MASK64 = (1 << 64) - 1


def mix64(value: int) -> int:
    """splitmix64's finaliser on a Python int (the key derivation uses it)."""
    value &= _MASK64
    value = ((value ^ (value >> 30)) * MIX1) & _MASK64
    value = ((value ^ (value >> 27)) * MIX2) & _MASK64
    return value ^ (value >> 31)


def derive_keys(seed: int) -> tuple[int, int]:
    """(key_main, key_extra) = the first two splitmix64 outputs from seed ^ TAG."""
    state = seed ^ TAG
    return mix64(state + GAMMA), mix64(state + 2 * GAMMA)


def _mix_inplace(z: np.ndarray) -> np.ndarray:
    z ^= z >> np.uint64(30)
    z *= np.uint64(MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(MIX2)
    z ^= z >> np.uint64(31)
    return z


def _main_words(key: int, first: int, count: int) -> np.ndarray:
    """W(q) = mix64(key + q GAMMA) for q = first .. first + count - 1."""
    z = np.arange(count, dtype=np.uint64)
    z += np.uint64(first)
    z *= np.uint64(GAMMA)
    z += np.uint64(key)
    return _mix_inplace(z)


def _half_words(key: int, start: int, count: int) -> np.ndarray:
    """The 32-bit word of each index: half (p & 1) of W(p >> 1), low half first."""
    parity = start & 1
    words = _main_words(key, start >> 1, (parity + count + 1) >> 1)
    halves = words.astype("<u8", copy=False).view("<u4")
    return halves[parity : parity + count]


def _extra_bases(key_extra: int, positions: np.ndarray) -> np.ndarray:
    """B(p) = mix64(key_extra + p GAMMA)."""
    z = positions.astype(np.uint64) * np.uint64(GAMMA)
    z += np.uint64(key_extra)
    return _mix_inplace(z)


def _extra_words(bases: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """E(p, j) = mix64(B(p) + (j + 1) GAMMA)."""
    z = (counters + np.uint64(1)) * np.uint64(GAMMA)
    z += bases
    return _mix_inplace(z)


def _neg_log_unit(words: np.ndarray) -> np.ndarray:
    """-ln(U), U = ((word >> 11) + 1) 2**-53 in (0, 1]: U = m 2**(b - 53) with
    m in [sqrt(1/2), sqrt 2], ln m = 2 atanh((m - 1) / (m + 1)) (12 terms)."""
    n = (words >> np.uint64(11)) + np.uint64(1)
    b = np.zeros(n.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        b += step * ((n >> (b + step).astype(np.uint64)) != 0)
    mantissa = n.astype(np.int64).astype(np.float64) * POW2_NEG[b]
    large = mantissa > SQRT2
    mantissa = np.where(large, mantissa * 0.5, mantissa)
    b += large
    s = (mantissa - 1.0) / (mantissa + 1.0)
    s2 = s * s
    q = np.full_like(s, LOG_COEFFICIENTS[11])
    for coefficient in LOG_COEFFICIENTS[10::-1]:
        q = q * s2 + coefficient
    log_mantissa = (s + s) * q
    e = (b - 53).astype(np.float64)
    return -(e * LN2_HI + (e * LN2_LO + log_mantissa))


def _tail(bases: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Marsaglia's tail: r + a with a = -ln(U1) / r, accepted when
    -2 ln(U2) > a**2; each try reads E(p, j), E(p, j + 1). Updates counters."""
    result = np.empty(bases.shape, dtype=np.float64)
    active = np.arange(bases.size)
    while active.size:
        a = _neg_log_unit(_extra_words(bases[active], counters[active])) * INV_R
        b = _neg_log_unit(_extra_words(bases[active], counters[active] + np.uint64(1)))
        counters[active] += np.uint64(2)
        accepted = b + b > a * a
        result[active[accepted]] = R + a[accepted]
        active = active[~accepted]
    return result


def _candidates(words: np.ndarray, zig: Ziggurat) -> tuple[np.ndarray, np.ndarray]:
    """Ziggurat candidates x = u width[index] and the hot-test flags u < inside[index]."""
    index = (words & words.dtype.type(511)).astype(np.intp)
    if zig.width.dtype == np.float64:
        u = (words >> np.uint64(11)).astype(np.int64)
        return u.astype(np.float64) * zig.width[index], u < zig.inside[index]
    u = (words >> words.dtype.type(9)).astype(np.int32)
    return u.astype(np.float32) * zig.width[index], u < zig.inside[index]


def _resolve(
    positions: np.ndarray, x: np.ndarray, words: np.ndarray, zig: Ziggurat, key_extra: int
) -> np.ndarray:
    """Final z for candidates that failed the hot test, in their own precision.

    Each index follows the scalar procedure of docs/stream-v1.md ("Rare
    paths") on its private words E(p, 0), E(p, 1), ...; vectorising over
    indices does not change any index's sequence.
    """
    is64 = x.dtype == np.float64
    result = np.empty(x.shape, dtype=x.dtype)
    ids = np.arange(x.size)
    bases = _extra_bases(key_extra, positions)
    counters = np.zeros(x.size, dtype=np.uint64)
    words = words.astype(np.uint64)
    while ids.size:
        layer = (words & np.uint64(255)).astype(np.intp)
        tail = (layer == 0) if zig.has_tail else np.zeros(ids.size, dtype=bool)

        picked = np.flatnonzero(tail)
        if picked.size:
            counters_tail = counters[picked]
            value = _tail(bases[picked], counters_tail).astype(x.dtype)
            counters[picked] = counters_tail
            negative = ((words[picked] >> np.uint64(8)) & np.uint64(1)) == 1
            value[negative] = -value[negative]
            result[ids[picked]] = value

        picked = np.flatnonzero(~tail)
        uniform = _extra_words(bases[picked], counters[picked]) >> np.uint64(11)
        counters[picked] += np.uint64(1)
        u = uniform.astype(np.int64).astype(np.float64) * UNIT53
        lower, upper = zig.low[layer[picked]], zig.high[layer[picked]]
        height = lower + u * (upper - lower)
        magnitude = np.abs(x[picked]).astype(np.float64)
        accepted = height < exp_neg(0.5 * (magnitude * magnitude))
        result[ids[picked[accepted]]] = x[picked[accepted]]

        picked = picked[~accepted]
        fresh = _extra_words(bases[picked], counters[picked])
        counters[picked] += np.uint64(1)
        if not is64:
            fresh &= np.uint64(0xFFFFFFFF)
        fresh_x, hot = _candidates(fresh, zig)
        result[ids[picked[hot]]] = fresh_x[hot]
        keep = picked[~hot]
        ids, bases, counters = ids[keep], bases[keep], counters[keep]
        x, words = fresh_x[~hot], fresh[~hot]
    return result


def _fill_normal(out: np.ndarray, start: int, keys: tuple[int, int], multiplier, zig: Ziggurat):
    n = out.size
    is64 = out.dtype == np.float64
    words = _main_words(keys[0], start, n) if is64 else _half_words(keys[0], start, n)
    x, hot = _candidates(words, zig)
    np.multiply(x, multiplier, out=out)
    if not hot.all():
        missed = np.flatnonzero(~hot)
        positions = missed.astype(np.uint64) + np.uint64(start)
        z = _resolve(positions, x[missed], words[missed], zig, keys[1])
        out[missed] = z * multiplier


def _fill_uniform(out: np.ndarray, start: int, keys: tuple[int, int], multiplier):
    if out.dtype == np.float64:
        u = (_main_words(keys[0], start, out.size) >> np.uint64(11)).astype(np.int64)
        v = u.astype(np.float64) * UNIFORM64_SCALE - 1.0
    else:
        u = (_half_words(keys[0], start, out.size) >> np.uint32(8)).astype(np.int32)
        v = u.astype(np.float32) * np.float32(UNIFORM32_SCALE) - np.float32(1.0)
    np.multiply(v, multiplier, out=out)


def fill(out: np.ndarray, start: int, keys: tuple[int, int], distribution: str, multiplier) -> None:
    """out[i] = multiplier * z(start + i) for the stream keyed by ``keys``
    (``derive_keys``); ``out`` is 1-D, contiguous, float32 or float64, and
    ``multiplier`` already rounded to its precision. Temporaries are bounded
    by ``NUMPY_CHUNK`` values, never a copy of ``out``."""
    for offset in range(0, out.size, NUMPY_CHUNK):
        piece = out[offset : offset + NUMPY_CHUNK]
        if distribution == "uniform":
            _fill_uniform(piece, start + offset, keys, multiplier)
        else:
            zig = ZIGGURATS[distribution, out.dtype == np.float64]
            _fill_normal(piece, start + offset, keys, multiplier, zig)
