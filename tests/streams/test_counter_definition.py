"""The uniform distribution of the ``vsgen`` stream, rebuilt from its written
definition (docs/stream-v1.md, sections 3 and 4) with Python integers, and
its half-open range [-limit, limit) tested at the very words that reach the ends.

Nothing here imports the stream's arithmetic: the words are computed from the
document's constants, and seeds are *constructed* (by inverting splitmix64's
finaliser, a bijection) so that a chosen index reads a chosen word, e.g. one
whose 24-bit uniform is all ones (the largest value, 1 - 2**-23) or all zeros
(exactly -1). Values go through the public API, on both code paths (the
NumPy reference and the C kernels, where built).
"""

from __future__ import annotations

import numpy as np
import pytest

import vsgen
from vsgen.streams._kernel_path import library_path

# docs/stream-v1.md, section 3.
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TAG = int.from_bytes(b"vsgen v1", "big")
MASK = (1 << 64) - 1


def mix64(z: int) -> int:
    z &= MASK
    z = ((z ^ (z >> 30)) * MIX1) & MASK
    z = ((z ^ (z >> 27)) * MIX2) & MASK
    return z ^ (z >> 31)


def _undo_xorshift(y: int, shift: int) -> int:
    x = y
    for _ in range(64 // shift + 1):
        x = y ^ (x >> shift)
    return x


def unmix64(w: int) -> int:
    """The inverse of ``mix64``: undo each step in reverse order."""
    z = _undo_xorshift(w, 31)
    z = (z * pow(MIX2, -1, 1 << 64)) & MASK
    z = _undo_xorshift(z, 27)
    z = (z * pow(MIX1, -1, 1 << 64)) & MASK
    return _undo_xorshift(z, 30)


def key_main(seed: int) -> int:
    return mix64((seed ^ TAG) + GAMMA)


def word(seed: int, q: int) -> int:
    """W(q) = mix64(key_main + q GAMMA)."""
    return mix64(key_main(seed) + q * GAMMA)


def seed_whose_word(q: int, wanted: int) -> int:
    """A seed for which W(q) == wanted."""
    key = (unmix64(wanted) - q * GAMMA) & MASK
    return ((unmix64(key) - GAMMA) & MASK) ^ TAG


def unit_uniform(seed: int, p: int, dtype: str) -> float:
    """z(p) of section 4, exactly (as a Python float; the steps are exact)."""
    if dtype == "float32":
        w = word(seed, p >> 1)
        h = (w >> 32) if p & 1 else (w & 0xFFFFFFFF)
        return (h >> 8) * 2.0**-23 - 1.0
    return (word(seed, p) >> 11) * 2.0**-52 - 1.0


def expected_values(seed: int, start: int, count: int, limit: float, dtype: str) -> np.ndarray:
    """out = round_P(round_P(limit) * z) for flat indices start .. start + count - 1."""
    typ = np.dtype(dtype).type
    z = np.array([unit_uniform(seed, p, dtype) for p in range(start, start + count)], dtype=dtype)
    return z * typ(limit)


NATIVE = pytest.param(
    "native",
    marks=pytest.mark.skipif(library_path() is None, reason="native kernels not built"),
)


@pytest.fixture(params=["numpy", NATIVE])
def code_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VSGEN_KERNEL", request.param)
    return request.param


def uniform(seed: int, scale: float) -> vsgen.VarianceScaling:
    return vsgen.VarianceScaling(scale, "fan_in", "uniform", seed=seed, stream="vsgen")


def test_the_inverse_is_an_inverse() -> None:
    for value in (0, 1, MASK, GAMMA, 0x0123456789ABCDEF):
        assert mix64(unmix64(value)) == value and unmix64(mix64(value)) == value
    for q, wanted in ((0, 0), (5, MASK), (2**39, 0xFFFFFFFF)):
        assert word(seed_whose_word(q, wanted), q) == wanted


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 + 7, 2**64 - 1])
def test_values_follow_the_written_definition(code_path: str, dtype: str, seed: int) -> None:
    # shape (4,) with fan_in 4 and scale 3: v = 0.75, limit = sqrt(2.25) = 1.5 exactly.
    values = uniform(seed, 3.0)((4,), dtype)
    assert values.tobytes() == expected_values(seed, 0, 4, 1.5, dtype).tobytes()
    # An odd start, 37 values, inside a larger tensor: rows 3..40 of a (64, 1) tensor
    # (fan_in 64, scale 48: v = 0.75 again).
    rows = uniform(seed, 48.0).sample((64, 1), dtype, rows=(3, 40)).ravel()
    assert rows.tobytes() == expected_values(seed, 3, 37, 1.5, dtype).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_lowest_word_gives_minus_limit_and_the_highest_stays_below_limit(
    code_path: str, dtype: str
) -> None:
    limit = np.dtype(dtype).type(1.5)
    if dtype == "float32":
        # Index 0 reads the low half of W(0), index 1 its high half.
        seed = seed_whose_word(0, 0x00000000_FFFFFFFF)
        values = uniform(seed, 3.0)((4,), dtype)
        top, bottom = values[0], values[1]
        assert unit_uniform(seed, 0, dtype) == 1.0 - 2.0**-23
        assert top == np.float32(1.0 - 2.0**-23) * limit
    else:
        seed_top, seed_bottom = seed_whose_word(0, MASK), seed_whose_word(0, 0)
        top = uniform(seed_top, 3.0)((4,), dtype)[0]
        bottom = uniform(seed_bottom, 3.0)((4,), dtype)[0]
        assert top == (1.0 - 2.0**-52) * 1.5
    assert bottom == -limit  # the closed end is reached exactly
    assert top < limit  # the open end never is


def test_the_ends_far_into_a_tensor(code_path: str) -> None:
    """The same at flat index 2**40 of a shard of a (2**41,) tensor, where the
    word counter q = 2**39 is far from the key."""
    q = 2**39
    seed = seed_whose_word(q, 0xFFFFFFFF_00000000)  # index 2q: all zeros; 2q + 1: all ones
    # fan_in 2**41, scale 1.5 * 2**40: v = 0.75, limit 1.5.
    init = uniform(seed, 1.5 * 2**40)
    values = init.sample((2**41,), "float32", rows=(2 * q, 2 * q + 2))
    assert values[0] == np.float32(-1.5)
    assert values[1] == np.float32(1.0 - 2.0**-23) * np.float32(1.5) < np.float32(1.5)


def test_no_value_reaches_limit_in_a_large_sample() -> None:
    """2**20 values on the default path: the maximum is below the limit, the
    minimum at or above -limit (a weaker, statistical companion of the above)."""
    values = uniform(7, 0.75 * 2**20).sample((2**20,), "float32")  # v = 0.75
    limit = np.float32(1.5)
    assert values.min() >= -limit and values.max() < limit
