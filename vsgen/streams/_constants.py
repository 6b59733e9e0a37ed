"""Constants of the ``vsgen`` v1 stream, shared by its NumPy reference and its C kernels.

Part of the frozen definition (docs/stream-v1.md): the splitmix64 constants,
the domain tag, the ziggurats built from the generated tables in ``_tables``,
and ``exp_neg``, the one exponential of the rare paths. ``_reference``
(NumPy) imports this module and ``_native`` hands its tables and constants to
the C kernels on every call; it imports neither.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from vsgen.streams import _tables as tables

#: splitmix64's Weyl increment (2**64 / golden ratio, odd) and mixing multipliers.
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
#: Domain tag XOR-ed into the seed: the bytes of "vsgen v1", big-endian.
TAG = int.from_bytes(b"vsgen v1", "big")


def _floats(hex_strings: tuple[str, ...], dtype: type) -> np.ndarray:
    return np.array([float.fromhex(text) for text in hex_strings], dtype=dtype)


R = float.fromhex(tables.R_HEX)
INV_R = float.fromhex(tables.INV_R_HEX)
LN2_HI = float.fromhex(tables.LN2_HI_HEX)
LN2_LO = float.fromhex(tables.LN2_LO_HEX)
LOG2E = float.fromhex(tables.LOG2E_HEX)
SQRT2 = float.fromhex(tables.SQRT2_HEX)
UNIT53 = math.ldexp(1.0, -53)
UNIFORM32_SCALE = math.ldexp(1.0, -23)
UNIFORM64_SCALE = math.ldexp(1.0, -52)

#: f(x_i) = exp(-x_i**2 / 2), i = 0 .. 256 (float64).
DENSITY = _floats(tables.F_HEX, np.float64)
#: 2**-k for k = 0 .. 63; ldexp scales by a power of two, which is exact.
POW2_NEG = np.array([math.ldexp(1.0, -k) for k in range(64)], dtype=np.float64)
EXP_COEFFICIENTS = _floats(tables.EXP_COEFFICIENTS_HEX, np.float64)
LOG_COEFFICIENTS = _floats(tables.LOG_COEFFICIENTS_HEX, np.float64)


def _signed_widths(layer_edges: np.ndarray, bits: int, dtype: type) -> np.ndarray:
    """width[index] = (-1)**(index >> 8) * x_(index & 255) * 2**-bits.

    Folding the sign bit into the table keeps the hot path free of a 50/50
    branch; scaling by a power of two is exact in either precision.
    """
    widths: np.ndarray = np.ldexp(layer_edges.astype(dtype), -bits).astype(dtype)
    return np.concatenate([widths, -widths]).astype(dtype)


class Ziggurat(NamedTuple):
    """One ziggurat in one precision, indexed by the low 9 bits of a word.

    width[index] and inside[index] (512 entries, sign folded in) drive the hot
    path; low[layer], high[layer] (256 entries) are each layer's height range
    for the wedge test; has_tail marks layer 0 as the normal's base layer.
    """

    width: np.ndarray
    inside: np.ndarray
    low: np.ndarray
    high: np.ndarray
    has_tail: bool


def _ziggurat(widths, bits, dtype, inside, low, high, has_tail) -> Ziggurat:
    integer = np.int64 if dtype == np.float64 else np.int32
    return Ziggurat(
        _signed_widths(_floats(widths, dtype), bits, dtype),
        np.array(tuple(inside) * 2, dtype=integer),
        np.ascontiguousarray(low, dtype=np.float64),
        np.ascontiguousarray(high, dtype=np.float64),
        has_tail,
    )


_NORMAL_X = tables.X_HEX[: tables.LAYERS]
_TRUNC_LOW = _floats(tables.TLOW_HEX, np.float64)
_TRUNC_HIGH = _floats(tables.THIGH_HEX, np.float64)
#: (distribution, float64?) -> tables.  The normal's layer l spans heights
#: [f(x_l), f(x_{l+1})]; the truncated normal has its own ziggurat on [0, 2].
ZIGGURATS = {
    ("untruncated_normal", False): _ziggurat(
        tables.X32_HEX, 23, np.float32, tables.K32, DENSITY[:-1], DENSITY[1:], True
    ),
    ("untruncated_normal", True): _ziggurat(
        _NORMAL_X, 53, np.float64, tables.K64, DENSITY[:-1], DENSITY[1:], True
    ),
    ("truncated_normal", False): _ziggurat(
        tables.TX32_HEX, 23, np.float32, tables.TK32, _TRUNC_LOW, _TRUNC_HIGH, False
    ),
    ("truncated_normal", True): _ziggurat(
        tables.TX_HEX, 53, np.float64, tables.TK64, _TRUNC_LOW, _TRUNC_HIGH, False
    ),
}


def exp_neg(t: np.ndarray) -> np.ndarray:
    """e**-t for 0 <= t < 43: k = trunc(t log2(e) + 1/2), s = k ln 2 - t,
    e**-t = 2**-k sum_{i<=13} s**i / i!, summed in Estrin's order (independent
    pairs, then s**2, s**4, s**8: a quarter of Horner's latency).

    Written for arrays and scalars alike: the NumPy reference calls it on
    arrays; the C kernels transcribe it operation for operation (``exp_neg`` in
    ``_native_kernels_body.h``, with these coefficients passed in).
    """
    k = np.int64(t * LOG2E + 0.5)
    kf = np.float64(k)
    s = (kf * LN2_HI - t) + kf * LN2_LO
    c = EXP_COEFFICIENTS
    s2 = s * s
    s4 = s2 * s2
    s8 = s4 * s4
    b0 = (c[0] + c[1] * s) + (c[2] + c[3] * s) * s2
    b1 = (c[4] + c[5] * s) + (c[6] + c[7] * s) * s2
    b2 = (c[8] + c[9] * s) + (c[10] + c[11] * s) * s2
    b3 = c[12] + c[13] * s
    return ((b0 + b1 * s4) + (b2 + b3 * s4) * s8) * POW2_NEG[k]
