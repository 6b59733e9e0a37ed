"""The ``vsgen`` v1 stream: counter-based, random-access, portable bytes.

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
not depend on the CPU, on NumPy's SIMD dispatch or on libm.  Two code paths
give identical bytes: vectorised NumPy (below; no compiler, fast start) and
numba kernels (``_kernels``; imported only for large fills).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Protocol

import numpy as np

from vsgen.dtypes import narrow_bounds, round_into, working_dtype
from vsgen.streams import _native
from vsgen.streams._base import (
    DEFAULT_CHUNK,
    DISTRIBUTIONS,
    Draw,
    Stream,
    default_threads,
    usable_cpus,
)
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

STREAM_NAME = "vsgen"
STREAM_VERSION = 1
#: Seeds are any 64-bit unsigned integer.
MAX_SEED = 1 << 64

_MASK64 = (1 << 64) - 1

# --- path selection and work splitting --------------------------------------

#: Values per NumPy step: bounds the temporaries (about 40 bytes per value,
#: 5 MiB) while keeping the per-call overhead of ~20 ufunc calls small.
NUMPY_CHUNK = 1 << 17
#: Values per thread task (largest and smallest); boundaries sit on multiples
#: of the piece size in the flat index.  Smaller fills run on one thread.
THREAD_PIECE = 1 << 20
MIN_THREAD_PIECE = 1 << 16
#: Job sizes (values) from which a process without the kernels loaded takes the
#: numba path.  Importing numba and loading the first cached kernel costs
#: ~0.45 s (0.15 + 0.3); per core the NumPy path makes ~60 M/s of normals and
#: ~550 M/s of uniforms, the kernels ~600 and ~3900 M/s.  The start-up is won
#: back from 0.45 s / (1/60 - 1/600 M/s) = 3e7 normals and 0.45 s /
#: (1/550 - 1/3900 M/s) = 2.9e8 uniforms (docs/stream-v1.md, section 8).
NUMBA_MIN_COLD = {
    "truncated_normal": 1 << 25,
    "untruncated_normal": 1 << 25,
    "uniform": 1 << 28,
}
#: Once the kernels are loaded they are faster for anything but tiny fills.
NUMBA_MIN_WARM = 1 << 12


class Filler(Protocol):
    """A compiled path: fills a 1-D float32/float64 array with indices [start, ...)."""

    def __call__(
        self, out: np.ndarray, start: int, keys: tuple[int, int], distribution: str, multiplier
    ) -> None: ...


_kernels_module: ModuleType | None = None
_kernels_failed = False
#: NumPy-path work done by `auto` so far, in units of its numba threshold.
_numpy_work = 0.0
_kernels_lock = threading.Lock()
#: (distribution, dtype) -> whether the numba kernel matched the NumPy path.
_kernel_checks: dict[tuple[str, str], bool] = {}
_pool_lock = threading.Lock()


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


# --- the NumPy path -----------------------------------------------------------


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


def _numpy_normal(out: np.ndarray, start: int, keys: tuple[int, int], multiplier, zig: Ziggurat):
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


def _numpy_uniform(out: np.ndarray, start: int, keys: tuple[int, int], multiplier):
    if out.dtype == np.float64:
        u = (_main_words(keys[0], start, out.size) >> np.uint64(11)).astype(np.int64)
        v = u.astype(np.float64) * UNIFORM64_SCALE - 1.0
    else:
        u = (_half_words(keys[0], start, out.size) >> np.uint32(8)).astype(np.int32)
        v = u.astype(np.float32) * np.float32(UNIFORM32_SCALE) - np.float32(1.0)
    np.multiply(v, multiplier, out=out)


def _numpy_fill(out: np.ndarray, start: int, keys, distribution: str, multiplier) -> None:
    for offset in range(0, out.size, NUMPY_CHUNK):
        piece = out[offset : offset + NUMPY_CHUNK]
        if distribution == "uniform":
            _numpy_uniform(piece, start + offset, keys, multiplier)
        else:
            zig = ZIGGURATS[distribution, out.dtype == np.float64]
            _numpy_normal(piece, start + offset, keys, multiplier, zig)


# --- the numba path -------------------------------------------------------------


def _load_kernels() -> ModuleType | None:
    """Import the numba kernels once; None if numba is unavailable."""
    global _kernels_module, _kernels_failed
    with _kernels_lock:
        if _kernels_module is None and not _kernels_failed:
            try:
                from vsgen.streams import _kernels
            except ImportError:
                _kernels_failed = True
            else:
                _kernels_module = _kernels
        return _kernels_module


def _numba_fill(kernels: ModuleType, out, start, keys, distribution, multiplier) -> None:
    key_main, key_extra = np.uint64(keys[0]), np.uint64(keys[1])
    is64 = out.dtype == np.float64
    if distribution == "uniform":
        kernel = kernels.uniform_f64 if is64 else kernels.uniform_f32
        kernel(out, start, key_main, float(multiplier))
    else:
        kernel = kernels.normal_f64 if is64 else kernels.normal_f32
        zig = ZIGGURATS[distribution, is64]
        kernel(out, start, key_main, key_extra, float(multiplier), zig.has_tail, *zig[:4])


def _kernels_agree(kernels: ModuleType, distribution: str, dtype: np.dtype) -> bool:
    """Do the kernels give the NumPy path's bytes for this case?  Checked once.

    numba's cache is keyed on the kernel file alone, not on the tables it
    froze in, so a stale cache (or a miscompiling build) could silently
    differ; 4096 values at an odd start, rare paths included, cost < 1 ms.
    """
    key = (distribution, np.dtype(dtype).str)
    if key not in _kernel_checks:
        keys = derive_keys(0x5EED)
        expected = np.empty(4096, dtype=dtype)
        got = np.empty(4096, dtype=dtype)
        scale = expected.dtype.type(0.75)
        _numpy_fill(expected, 12_345, keys, distribution, scale)
        _numba_fill(kernels, got, 12_345, keys, distribution, scale)
        agree = expected.tobytes() == got.tobytes()
        if not agree:
            warnings.warn(
                f"vsgen: the numba kernel for {distribution} ({key[1]}) disagrees with the "
                "NumPy path (a stale NUMBA_CACHE_DIR?); using the NumPy path",
                RuntimeWarning,
                stacklevel=3,
            )
        _kernel_checks[key] = agree
    return _kernel_checks[key]


KERNEL_CHOICES = ("auto", "native", "numba", "numpy")


def _kernel_choice() -> str:
    choice = os.environ.get("VSGEN_KERNEL", "auto").strip().lower() or "auto"
    if choice not in KERNEL_CHOICES:
        raise ValueError(
            f"Environment variable `VSGEN_KERNEL` must be one of {', '.join(KERNEL_CHOICES)}. "
            f"Received: VSGEN_KERNEL={choice!r}"
        )
    return choice


def _choose_path(size: int, job_size: int, distribution: str, dtype: np.dtype) -> Filler | None:
    """The compiled path for this fill, or None for the NumPy path.

    ``auto`` takes the native kernels whenever they were built: they load in
    about a millisecond and beat the NumPy path from a few thousand values
    on. Without them, numba's cost of ~0.45 s per process decides (the rule
    in ``_choose_numba``). ``native`` and ``numba`` force a path and fall
    back silently (native -> numba -> NumPy) when it is unavailable.
    """
    choice = _kernel_choice()
    if choice == "numpy":
        return None
    if choice in ("auto", "native"):
        native = _native.load()
        if native is not None:
            return native.fill
    kernels = _load_kernels() if choice != "auto" else _choose_numba(size, job_size, distribution)
    if kernels is None or not _kernels_agree(kernels, distribution, dtype):
        return None
    return functools.partial(_numba_fill, kernels)


def _choose_numba(size: int, job_size: int, distribution: str) -> ModuleType | None:
    global _numpy_work
    if _kernels_module is not None and not _kernels_failed:
        return _kernels_module if size >= NUMBA_MIN_WARM else None
    threshold = NUMBA_MIN_COLD[distribution]
    # Without a job_size hint a large tensor arrives as many chunks: once the
    # NumPy path has done about as much work as loading numba costs, switch
    # (the ski-rental rule: at most twice the better choice's time).
    with _kernels_lock:
        _numpy_work += size / threshold
        spent = _numpy_work
    if job_size >= threshold or spent >= 1.0:
        return _load_kernels()
    return None


# --- public entry point ---------------------------------------------------------


def _integer(value, name: str, low: int, high: int | None, wording: str) -> int:
    """operator.index(value) if it is an integer (not a bool) in [low, high)."""
    message = f"Argument `{name}` must be {wording}. Received: {name}={value!r}"
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(message) from None
    if value < low or (high is not None and value >= high):
        raise ValueError(message)
    return value


def _check_arguments(
    out, start, seed, distribution, multiplier, threads, job_size
) -> tuple[int, int, int]:
    if not isinstance(out, np.ndarray) or out.dtype not in (np.float32, np.float64):
        raise TypeError(
            "Argument `out` must be a float32 or float64 numpy array. "
            f"Received: out={type(out).__name__} of dtype {getattr(out, 'dtype', None)}"
        )
    if out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(
            "Argument `out` must be a writeable 1-D C-contiguous array. "
            f"Received: out with shape {out.shape}"
        )
    seed = _integer(seed, "seed", 0, MAX_SEED, "an integer in [0, 2**64)")
    # Flat indices stay below 2**62 so that every counter fits an int64.
    start = _integer(start, "start", 0, (1 << 62) - out.size, "an integer in [0, 2**62 - out.size)")
    threads = _integer(threads, "threads", 1, None, "an integer >= 1")
    if job_size is not None:
        _integer(job_size, "job_size", 0, None, "None or an integer >= 0")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Argument `distribution` must be one of {', '.join(DISTRIBUTIONS)}. "
            f"Received: distribution={distribution!r}"
        )
    real = isinstance(multiplier, (int, float, np.integer, np.floating))
    if isinstance(multiplier, bool) or not real or not math.isfinite(float(multiplier)):
        raise ValueError(
            "Argument `multiplier` must be a finite real number. "
            f"Received: multiplier={multiplier!r}"
        )
    return seed, start, threads


def fill(
    out: np.ndarray,
    start: int,
    seed: int,
    distribution: str,
    multiplier: float,
    threads: int = 1,
    *,
    job_size: int | None = None,
) -> None:
    """Fill `out` with the values of flat indices [start, start + out.size).

    out[i] = round(m * z(start + i)) in the working precision of `out`
    (float32 or float64), with m = multiplier rounded to that precision and
    z drawn from, per `distribution`:

    * ``truncated_normal``: N(0, 1) conditioned on -2 <= z <= 2 (std
      0.87962566103423978); |out| <= 2 |m| always;
    * ``untruncated_normal``: N(0, 1);
    * ``uniform``: U[-1, 1) on the grid k 2**-23 (float32) or k 2**-52 (float64).

    The bytes depend only on (seed, distribution, dtype of `out`, index):
    not on `start` splitting, `threads`, the code path or the CPU.

    Args:
        out: 1-D C-contiguous float32 or float64 array, overwritten.
        start: flat index of out[0] (>= 0).
        seed: integer in [0, 2**64).
        distribution: "truncated_normal", "untruncated_normal" or "uniform".
        multiplier: finite real scale (e.g. the truncated normal's s).
        threads: worker threads (>= 1); pieces of 2**16 .. 2**20 values are shared out.
        job_size: optional hint, the number of values the caller is about to
            generate in calls like this one (a tensor written in chunks); it
            only helps choose between the NumPy and numba paths.

    Raises:
        ValueError / TypeError naming the offending argument.
    """
    seed, start, threads = _check_arguments(
        out, start, seed, distribution, multiplier, threads, job_size
    )
    if out.size == 0:
        return
    keys = derive_keys(seed)
    scale = out.dtype.type(multiplier)
    compiled = _choose_path(out.size, max(out.size, job_size or 0), distribution, out.dtype)
    piece_fill = _numpy_fill if compiled is None else compiled

    def run(lo: int, hi: int) -> None:
        piece_fill(out[lo:hi], start + lo, keys, distribution, scale)

    if threads == 1 or out.size <= MIN_THREAD_PIECE:
        run(0, out.size)
        return
    if compiled is not None:
        # Compile or load a numba kernel here, once, rather than in every worker.
        compiled(np.empty(2, out.dtype), 0, keys, distribution, scale)
    _run_pieces(run, _piece_bounds(out.size, start, threads), threads)


def _piece_bounds(size: int, start: int, threads: int) -> list[int]:
    """Offsets that cut [0, size) into the pieces of a threaded fill: on
    multiples of the piece size in the flat index (an even piece keeps float32
    pairs, which share one word, inside one piece)."""
    piece = _piece_size(size, threads)
    first_boundary = piece - start % piece
    return [0, *range(first_boundary, size, piece), size]


def _fill_narrow_native(
    native: _native.Kernels,
    out: np.ndarray,
    start: int,
    draw: Draw,
    threads: int,
    bounds: tuple[float, float] | None,
) -> None:
    """A float16/bfloat16 ``out`` filled by the native kernels in one pass: each
    value computed in float32 and rounded (and clamped to ``bounds``) in the
    core's cache, pieces shared out as ``fill`` does."""
    seed = _integer(draw.seed, "seed", 0, MAX_SEED, "an integer in [0, 2**64)")
    start = _integer(start, "start", 0, (1 << 62) - out.size, "an integer in [0, 2**62 - out.size)")
    keys = derive_keys(seed)
    scale = np.float32(draw.multiplier)

    def run(lo: int, hi: int) -> None:
        native.fill_16(out[lo:hi], start + lo, keys, draw.distribution, scale, bounds)

    if threads == 1 or out.size <= MIN_THREAD_PIECE:
        run(0, out.size)
        return
    _run_pieces(run, _piece_bounds(out.size, start, threads), threads)


#: Values per piece of a narrow (float16/bfloat16) fill: 256 KiB of float32
#: scratch per thread, which stays in the core's cache between compute and rounding.
NARROW_PIECE = 1 << 16
_scratch_buffers = threading.local()


def _narrow_native(out: np.ndarray) -> _native.Kernels | None:
    """The native kernels, if they serve this process and can write ``out`` (a
    contiguous float16/bfloat16 array) directly: they compute and round in
    one pass, where the other paths go through a float32 scratch buffer and
    NumPy's cast (which for float16 converts and clamps one value at a time)."""
    if out.flags.c_contiguous and out.flags.writeable and _kernel_choice() in ("auto", "native"):
        return _native.load()
    return None


def _scratch(dtype: np.dtype) -> np.ndarray:
    """This thread's NARROW_PIECE-value scratch array of `dtype`, made once."""
    buffers = _scratch_buffers.__dict__
    key = np.dtype(dtype).str
    if key not in buffers or buffers[key].size < NARROW_PIECE:
        buffers[key] = np.empty(NARROW_PIECE, dtype=dtype)
    return buffers[key]


def _piece_size(size: int, threads: int) -> int:
    """THREAD_PIECE, halved (not below MIN_THREAD_PIECE) until each thread gets
    about four pieces: a busy core then delays a small share of the work."""
    piece = THREAD_PIECE
    while piece > MIN_THREAD_PIECE and piece * 4 * threads > size:
        piece //= 2
    return piece


class _Job:
    """One fill's pieces, taken in turn by whichever threads work on it."""

    def __init__(self, run: Callable[[int, int], None], bounds: list[int]) -> None:
        self.run = run
        self.bounds = bounds
        self.pieces = len(bounds) - 1
        self._next = itertools.count()  # next() on it is atomic in CPython
        self._lock = threading.Lock()
        self._remaining = self.pieces
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def work(self) -> None:
        while (index := next(self._next)) < self.pieces:
            try:
                self.run(self.bounds[index], self.bounds[index + 1])
            except BaseException as error:  # noqa: BLE001 - re-raised by the caller
                with self._lock:
                    self.error = self.error or error
            with self._lock:
                self._remaining -= 1
                if self._remaining == 0:
                    self.finished.set()


#: Jobs for the helper threads; each waiting thread takes one and works on it.
_inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_helpers: list[threading.Thread] = []


def _helper() -> None:
    while True:
        _inbox.get().work()


def _run_pieces(run: Callable[[int, int], None], bounds: list[int], threads: int) -> None:
    """run(lo, hi) for consecutive bounds on `threads` threads: the caller and
    threads - 1 persistent helpers (started on first use; a plain pool of
    daemon threads, so that the first large fill of a process does not pay
    for importing concurrent.futures)."""
    job = _Job(run, bounds)
    helpers = min(threads, job.pieces) - 1
    _start_helpers(helpers)
    for _ in range(helpers):
        _inbox.put(job)
    job.work()
    job.finished.wait()
    if job.error is not None:
        raise job.error


def _start_helpers(count: int) -> None:
    with _pool_lock:
        while len(_helpers) < count:
            thread = threading.Thread(target=_helper, name="vsgen", daemon=True)
            thread.start()
            _helpers.append(thread)


def _forget_helpers_after_fork() -> None:
    # A forked child has none of the parent's threads; it starts its own.
    global _inbox, _pool_lock
    _helpers.clear()
    _inbox = queue.SimpleQueue()
    _pool_lock = threading.Lock()


def _prepare() -> None:
    """Load the native kernels and start the helper threads of a multi-core
    machine, in a background thread started when this module is imported:
    importing the sampler is the first hint that a fill follows, and the
    first fill then finds everything ready (~1-3 ms that would otherwise
    land on it). Errors are left for the fill itself to report."""
    try:
        if _kernel_choice() != "numpy":
            _native.load()
        _start_helpers(usable_cpus() - 1)
    except Exception:  # noqa: BLE001, S110 - the fill repeats the step and reports it
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers_after_fork)
threading.Thread(target=_prepare, name="vsgen-prepare", daemon=True).start()


# --- the stream -----------------------------------------------------------------


class VsgenStream(Stream):
    """The counter-based ``vsgen`` stream: ``fill`` above, behind the ``Stream`` interface."""

    name = STREAM_NAME
    version = STREAM_VERSION
    max_seed = MAX_SEED
    random_access = True

    def fill(
        self,
        out: np.ndarray,
        start: int,
        draw: Draw,
        threads: int | None = None,
        job_size: int | None = None,
    ) -> None:
        """Fill ``out`` (see ``Stream.fill``); ``job_size`` is the size of the whole
        job ``out`` belongs to, so that a big job picks the compiled kernels from
        its first chunk on (the bytes do not depend on it)."""
        if out.size == 0:
            return
        threads = default_threads() if threads is None else threads
        if out.dtype.kind == "c":
            # Complex values are made from real draws (docs/stream-v1.md, section 11).
            from vsgen.streams._complex import fill_complex

            fill_complex(self, out, start, draw, threads)
            return
        job_size = out.size if job_size is None else job_size
        if draw.offset != 0.0 or draw.interval is not None:
            # A mean or an off-centre range (docs/stream-v1.md, section 12): the
            # zero-offset values below, shifted and clamped.
            from vsgen.streams._offset import fill_offset

            fill_offset(self, out, start, draw, threads, job_size)
            return
        work = working_dtype(draw.dtype)
        if out.dtype == work:
            fill(
                out,
                start,
                draw.seed,
                draw.distribution,
                draw.multiplier,
                threads,
                job_size=job_size,
            )
            return
        # Narrow outputs: each piece is computed in float32 into a small scratch
        # buffer of its thread (it stays in cache; no fresh pages per call) and
        # rounded once into `out`; pieces run on the threads in parallel.
        # Rounding may carry a value onto or past its bound, so it is clamped
        # back inside (float32/float64 outputs never pass here: their bytes
        # stay exactly as the stream defines them).
        if not isinstance(out, np.ndarray) or out.ndim != 1:
            raise ValueError("Argument `out` must be a 1-D numpy array.")
        clamp = narrow_bounds(out.dtype, draw.distribution, draw.multiplier)
        native = _narrow_native(out)
        if native is not None:
            _fill_narrow_native(native, out, start, draw, threads, clamp)
            return

        def run(lo: int, hi: int) -> None:
            scratch = _scratch(work)[: hi - lo]
            fill(
                scratch,
                start + lo,
                draw.seed,
                draw.distribution,
                draw.multiplier,
                1,
                job_size=job_size,
            )
            round_into(out[lo:hi], scratch, clamp)

        bounds = [*range(0, out.size, NARROW_PIECE), out.size]
        if threads == 1 or len(bounds) <= 2:
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                run(lo, hi)
            return
        _run_pieces(run, bounds, threads)

    def fill_block(
        self,
        out: np.ndarray,
        origin: Sequence[int],
        full_shape: Sequence[int],
        draw: Draw,
        threads: int | None = None,
        job_size: int | None = None,
    ) -> None:
        """Fill an n-d block (see ``Stream.fill_block``); ``job_size`` as for ``fill``,
        by default the whole tensor, so that blocks of a big tensor take the compiled
        kernels from the first block on."""
        from vsgen.streams._blocks import fill_block

        job_size = math.prod(full_shape) if job_size is None else job_size

        def fill_run(flat: np.ndarray, start: int) -> None:
            self.fill(flat, start, draw, threads, job_size=job_size)

        fill_block(fill_run, out, origin, full_shape)

    def chunks(
        self,
        draw: Draw,
        start: int,
        stop: int,
        chunk_size: int = DEFAULT_CHUNK,
        threads: int | None = None,
    ) -> Iterator[np.ndarray]:
        for offset in range(start, stop, chunk_size):
            chunk = np.empty(min(chunk_size, stop - offset), dtype=draw.dtype)
            self.fill(chunk, offset, draw, threads, job_size=stop - start)
            yield chunk
