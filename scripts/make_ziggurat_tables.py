"""Regenerate ``vsgen/streams/_tables.py``, the constants of the vsgen v1 stream.

The shipped module holds literal numbers only, so importing vsgen never runs a
libm ``exp``/``log`` (whose last bits differ between CPUs and libraries).  This
offline script derives the same literals with mpmath at 50 significant digits
and rounds each one once to the stored precision.

Ziggurat for f(x) = exp(-x**2 / 2) on x >= 0 with N = 256 layers of equal
area v (Marsaglia & Tsang 2000):

    x_1 = r,   v = r f(r) + integral_r^inf f(t) dt,   x_0 = v / f(r)
    x_{i+1} = sqrt(-2 ln(f(x_i) + v / x_i))   for i = 1 .. 254,   x_256 = 0

and r is the root of f(x_255) + v / x_255 = 1 (the top layer ends at f(0) = 1).

Usage::

    python scripts/make_ziggurat_tables.py            # print the module
    python scripts/make_ziggurat_tables.py --write    # overwrite it in place
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import mpmath

LAYERS = 256
TRUNCATION = 2  # the truncated normal's bound, in standard deviations
DIGITS = 50
TARGET = pathlib.Path(__file__).resolve().parent.parent / "vsgen" / "streams" / "_tables.py"
EXP_DEGREE = 13  # Taylor degree of exp(s) for |s| <= ln(2)/2: truncation < 1e-17
LOG_TERMS = 12  # terms of 2 atanh(s) for |s| <= 0.1716: truncation < 1e-19


def _density(x: mpmath.mpf) -> mpmath.mpf:
    return mpmath.exp(-x * x / 2)


def _layer_edges(r: mpmath.mpf) -> tuple[list[mpmath.mpf], mpmath.mpf, mpmath.mpf]:
    """Edges x_1 .. x_255 for a trial r, the area v, and the top-layer residual."""
    area = r * _density(r) + mpmath.sqrt(mpmath.pi / 2) * mpmath.erfc(r / mpmath.sqrt(2))
    edges = [r]
    for _ in range(LAYERS - 2):
        height = _density(edges[-1]) + area / edges[-1]
        if height >= 1:
            # The layers reached the top too early: r is too small.
            return edges, area, mpmath.mpf(1)
        edges.append(mpmath.sqrt(-2 * mpmath.log(height)))
    residual = _density(edges[-1]) + area / edges[-1] - 1
    return edges, area, residual


def solve_ziggurat() -> tuple[list[mpmath.mpf], mpmath.mpf]:
    """Return (x_0 .. x_256, v) by bisection on r to full working precision."""
    low, high = mpmath.mpf("3.5"), mpmath.mpf("3.8")
    for _ in range(170):  # 2**-170 * 0.3 is far below 10**-50
        middle = (low + high) / 2
        _, _, residual = _layer_edges(middle)
        if residual > 0:
            low = middle
        else:
            high = middle
    r = (low + high) / 2
    edges, area, _ = _layer_edges(r)
    x0 = area / _density(r)
    return [x0, *edges, mpmath.mpf(0)], area


def _bounded_layers(area: mpmath.mpf, strips: int) -> tuple[list[mpmath.mpf], mpmath.mpf]:
    """Curved-layer edges above `strips` full-width strips, and the top residual."""
    top_of_strips = strips * area / TRUNCATION
    edges = [mpmath.sqrt(-2 * mpmath.log(top_of_strips))]
    for _ in range(LAYERS - strips - 1):
        height = _density(edges[-1]) + area / edges[-1]
        if height >= 1:
            # The layers reached the top too early: the area is too large.
            return edges, mpmath.mpf(1)
        edges.append(mpmath.sqrt(-2 * mpmath.log(height)))
    return edges, _density(edges[-1]) + area / edges[-1] - 1


def solve_truncated_ziggurat() -> tuple[int, list[mpmath.mpf], mpmath.mpf]:
    """Ziggurat of f on [0, 2]: (S, curved edges x_1 .. x_{256-S}, layer area A).

    Layers 0 .. S-1 are strips [0, 2] x [s A/2, (s+1) A/2]; the last one
    straddles f(2), S = ceil(2 f(2) / A) (checked after solving for A).
    Layers S .. 255 are the curved layers [0, x_i] x [f(x_i), f(x_{i+1})]
    (x_{257-S} = 0) above y = S A / 2.
    """
    mass = mpmath.sqrt(mpmath.pi / 2) * mpmath.erf(TRUNCATION / mpmath.sqrt(2))
    strips = int(mpmath.ceil(TRUNCATION * _density(TRUNCATION) * LAYERS / mass))
    low, high = mass / LAYERS, 2 * mass / LAYERS
    for _ in range(170):
        middle = (low + high) / 2
        _, residual = _bounded_layers(middle, strips)
        if residual > 0:
            high = middle
        else:
            low = middle
    area = (low + high) / 2
    edges, _ = _bounded_layers(area, strips)
    strip_height = area / TRUNCATION
    # The strips must end between f(2) and one strip above it.
    assert (strips - 1) * strip_height <= _density(TRUNCATION) < strips * strip_height
    return strips, edges, area


def _f64(value: mpmath.mpf) -> float:
    with mpmath.workprec(53):
        return float(+value)


def _f32_hex(value: float) -> str:
    import numpy

    return float(numpy.float32(value)).hex()


def _hex_block(name: str, values: list[float], comment: str) -> str:
    lines = [f"# {comment}", f"{name}_HEX = ("]
    lines += [f'    "{value.hex() if isinstance(value, float) else value}",' for value in values]
    lines.append(")")
    return "\n".join(lines)


def _int_block(name: str, values: list[int], comment: str) -> str:
    lines = [f"# {comment}", f"{name} = ("]
    for offset in range(0, len(values), 4):
        lines.append("    " + " ".join(f"{value}," for value in values[offset : offset + 4]))
    lines.append(")")
    return "\n".join(lines)


def _render_truncated() -> str:
    """Tables of the ziggurat for f on [0, 2] (the truncated normal), per layer l."""
    strips, edges, area = solve_truncated_ziggurat()
    strip_height = area / TRUNCATION
    two = mpmath.mpf(TRUNCATION)
    # Layer l < S is strip l; layer S - 1 + i is curved layer i (edges[i - 1]).
    widths = [two] * strips + edges
    tops = (
        [(s + 1) * strip_height for s in range(strips)]
        + [_density(x) for x in edges[1:]]
        + [mpmath.mpf(1)]
    )
    bottoms = [s * strip_height for s in range(strips)] + [_density(x) for x in edges]
    # Inner edges: below them a whole column of the layer lies under f.
    inner = [two] * (strips - 1) + edges + [mpmath.mpf(0)]
    ratios = [inner[layer] / widths[layer] for layer in range(LAYERS)]
    k32 = [int(mpmath.floor(mpmath.ldexp(q, 23))) for q in ratios]
    k64 = [int(mpmath.floor(mpmath.ldexp(q, 53))) for q in ratios]
    x64 = [_f64(x) for x in widths]
    parts = [
        "# Truncated normal: f on [0, 2] in 256 layers of area A.  Layers 0 .. S-1 are",
        "# strips [0, 2] x [l A/2, (l+1) A/2] (the last straddles f(2)); layer S - 1 + i",
        "# is [0, x_i] x [f(x_i), f(x_{i+1})] for x_1 = TX[S] > ... > x_{256-S}, x_{257-S} = 0.",
        f"TRUNC_STRIPS = {strips}",
        "# A, the area of every layer (informative)",
        f'TRUNC_AREA_HEX = "{_f64(area).hex()}"',
        _hex_block("TX", x64, "layer widths: 2 for strips, x_i for curved layers"),
        _hex_block("TX32", [_f32_hex(x) for x in x64], "layer widths rounded to float32"),
        _hex_block("TLOW", [_f64(y) for y in bottoms], "bottom height of each layer"),
        _hex_block("THIGH", [_f64(y) for y in tops], "top height of each layer"),
        _int_block("TK32", k32, "floor(2**23 inner / width): smaller 23-bit u lie under f"),
        _int_block("TK64", k64, "floor(2**53 inner / width): smaller 53-bit u lie under f"),
    ]
    return "\n".join(parts)


def render() -> str:
    """The full text of ``vsgen/streams/_tables.py``."""
    mpmath.mp.dps = DIGITS
    edges, area = solve_ziggurat()
    r = edges[1]
    ratios = [edges[i + 1] / edges[i] for i in range(LAYERS)]
    k32 = [int(mpmath.floor(mpmath.ldexp(q, 23))) for q in ratios]
    k64 = [int(mpmath.floor(mpmath.ldexp(q, 53))) for q in ratios]
    x64 = [_f64(x) for x in edges]
    w32 = [_f32_hex(x) for x in x64[:LAYERS]]
    f64 = [_f64(_density(x)) for x in edges]
    ln2 = mpmath.log(2)
    # 32 significant bits: k * LN2_HI is exact for k < 2**21.
    ln2_hi = _f64(mpmath.ldexp(mpmath.floor(mpmath.ldexp(ln2, 32)), -32))
    ln2_lo = _f64(ln2 - mpmath.mpf(ln2_hi))
    exp_coefficients = [_f64(1 / mpmath.factorial(k)) for k in range(EXP_DEGREE + 1)]
    log_coefficients = [_f64(mpmath.mpf(1) / (2 * k + 1)) for k in range(LOG_TERMS)]
    scalars = {
        "R": (_f64(r), "x_1 = r, where the base layer's rectangle ends and the tail begins"),
        "INV_R": (_f64(1 / r), "1 / r, for the tail's a = -ln(U) / r"),
        "AREA": (_f64(area), "v, the area of every layer (informative)"),
        "LN2_HI": (ln2_hi, "ln 2 rounded to 32 bits, so k * LN2_HI is exact"),
        "LN2_LO": (ln2_lo, "ln 2 - LN2_HI"),
        "LOG2E": (_f64(1 / ln2), "1 / ln 2"),
        "SQRT2": (_f64(mpmath.sqrt(2)), "sqrt 2, the mantissa split point of the logarithm"),
    }
    parts = [
        '"""Constants of the vsgen v1 stream (generated; do not edit by hand).',
        "",
        "Regenerate with ``python scripts/make_ziggurat_tables.py --write``.  Every",
        "float is a ``float.hex`` literal so that the numbers are exact and no libm",
        "function runs at import.  See docs/stream-v1.md for how they are used.",
        '"""',
        "",
        f"LAYERS = {LAYERS}",
        "",
    ]
    for name, (value, comment) in scalars.items():
        parts.append(f"# {comment}")
        parts.append(f'{name}_HEX = "{value.hex()}"')
    parts.append("")
    parts.append(_hex_block("X", x64, "x_0 .. x_256; layer i is [0, x_i] x [f(x_i), f(x_{i+1})]"))
    parts.append("")
    parts.append(_hex_block("F", f64, "f(x_i) = exp(-x_i**2 / 2) for i = 0 .. 256"))
    parts.append("")
    parts.append(_hex_block("X32", w32, "x_0 .. x_255 rounded to float32 (float32 layer widths)"))
    parts.append("")
    parts.append(_int_block("K32", k32, "floor(2**23 x_{i+1} / x_i): smaller 23-bit u lie under f"))
    parts.append("")
    parts.append(_int_block("K64", k64, "floor(2**53 x_{i+1} / x_i): smaller 53-bit u lie under f"))
    parts.append("")
    parts.append(_render_truncated())
    parts.append("")
    parts.append(_hex_block("EXP_COEFFICIENTS", exp_coefficients, "1 / k! for k = 0 .. 13"))
    parts.append("")
    parts.append(_hex_block("LOG_COEFFICIENTS", log_coefficients, "1 / (2k + 1) for k = 0 .. 11"))
    parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="overwrite vsgen/streams/_tables.py")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        TARGET.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
