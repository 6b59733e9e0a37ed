"""The dispatcher of the ``vsgen`` stream: which implementation fills, on how many threads.

Two implementations give identical bytes (docs/stream-v1.md, section 8): the
C kernels (``_native``, built at install; the default) and the NumPy
reference (``_reference``; the fallback, and what ``VSGEN_KERNEL=numpy``
asks for). Here:

* ``choose``: the implementation for a fill (``_kernel_path`` says what was
  asked for and what was built); a large job without the C kernels gets one
  ``MissingKernelsWarning`` per process, naming the fix;
* ``fill``: a checked fill (``counter.fill`` checks) cut into pieces of
  ``THREAD_PIECE`` values or fewer, on the calling thread and a private pool
  of helper threads (started in the background when this module is
  imported; a forked child starts its own);
* ``fill_narrow``: float16/bfloat16 outputs, computed in float32 and rounded
  once: in one pass by the C kernels, else through a small float32 scratch
  buffer per thread.

Nothing here changes a byte: the pieces, the thread count and the
implementation are invisible in the output.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np

from vsgen.dtypes import round_into
from vsgen.streams import _kernel_path, _native, _reference
from vsgen.streams._base import usable_cpus

#: Values per thread task (largest and smallest); boundaries sit on multiples
#: of the piece size in the flat index.  Smaller fills run on one thread.
THREAD_PIECE = 1 << 20
MIN_THREAD_PIECE = 1 << 16
#: Values per piece of a narrow (float16/bfloat16) fill on the NumPy path:
#: 256 KiB of float32 scratch per thread, which stays in the core's cache
#: between compute and rounding.
NARROW_PIECE = 1 << 16
#: Jobs (values) from which sampling on the NumPy reference for want of the C
#: kernels is worth a warning: about 0.2 s lost on one core. Per core the
#: reference makes ~90-110 M/s of normals and ~550 M/s of uniforms, the C
#: kernels ~1300-1400 and ~4000 M/s (AVX-512 build; docs/stream-v1.md, section 8).
SLOW_JOB_VALUES = {
    "truncated_normal": 1 << 24,
    "untruncated_normal": 1 << 24,
    "uniform": 1 << 27,
}


class Filler(Protocol):
    """An implementation: fills a 1-D float32/float64 array with indices [start, ...)."""

    def __call__(
        self, out: np.ndarray, start: int, keys: tuple[int, int], distribution: str, multiplier
    ) -> None: ...


class MissingKernelsWarning(RuntimeWarning):
    """A large job runs on the NumPy reference because the C kernels are not
    built (no C compiler at install) or do not load."""


_warned = False
_warn_lock = threading.Lock()


def choose(distribution: str, job_size: int) -> Filler:
    """The implementation for a fill that belongs to a job of ``job_size`` values.

    ``auto`` and ``native`` take the C kernels whenever they load: they load
    in about a millisecond and beat NumPy from a few thousand values on.
    Without them both fall back to the NumPy reference (the same bytes),
    with a warning for a job of ``SLOW_JOB_VALUES`` or more; ``numpy`` takes
    the reference without a word.
    """
    if _kernel_path.kernel_choice() == "numpy":
        return _reference.fill
    native = _native.load()
    if native is not None:
        return native.fill
    if job_size >= SLOW_JOB_VALUES[distribution]:
        _warn_missing_kernels(job_size)
    return _reference.fill


def _warn_missing_kernels(job_size: int) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    reason = _native.unavailable() or "native kernels unavailable"
    warnings.warn(
        f"{reason}, so this job of {job_size:,} values samples on NumPy, 5-15x slower: install "
        "a C compiler and reinstall vsgen (pip install --force-reinstall --no-cache-dir vsgen)",
        MissingKernelsWarning,
        stacklevel=3,
    )


def fill(
    out: np.ndarray,
    start: int,
    keys: tuple[int, int],
    distribution: str,
    multiplier,
    threads: int,
    job_size: int,
) -> None:
    """out[i] = multiplier * z(start + i), on ``threads`` threads. The arguments
    are checked (``counter.fill``): ``out`` 1-D, contiguous, float32/float64,
    ``multiplier`` rounded to its precision; ``job_size`` >= out.size."""
    piece_fill = choose(distribution, job_size)

    def run(lo: int, hi: int) -> None:
        piece_fill(out[lo:hi], start + lo, keys, distribution, multiplier)

    if threads == 1 or out.size <= MIN_THREAD_PIECE:
        run(0, out.size)
        return
    _run_pieces(run, _piece_bounds(out.size, start, threads), threads)


def fill_narrow(
    out: np.ndarray,
    start: int,
    keys: tuple[int, int],
    distribution: str,
    multiplier: float,
    threads: int,
    bounds: tuple[float, float] | None,
    job_size: int,
) -> None:
    """A float16/bfloat16 ``out`` (1-D): the float32 values of indices
    [start, start + out.size) rounded once to its type, nearest even, then
    clamped to ``bounds`` (``vsgen.dtypes.narrow_bounds``). Arguments checked."""
    scale = np.float32(multiplier)
    native = _narrow_native(out)
    if native is not None:
        # One pass: each value computed in float32 and rounded (and clamped)
        # in the core's cache, pieces shared out as ``fill`` does.
        def run_native(lo: int, hi: int) -> None:
            native.fill_16(out[lo:hi], start + lo, keys, distribution, scale, bounds)

        if threads == 1 or out.size <= MIN_THREAD_PIECE:
            run_native(0, out.size)
            return
        _run_pieces(run_native, _piece_bounds(out.size, start, threads), threads)
        return

    # Each piece is computed in float32 into a small scratch buffer of its
    # thread (it stays in cache; no fresh pages per call) and rounded once
    # into ``out``; pieces run on the threads in parallel.
    def run(lo: int, hi: int) -> None:
        scratch = _scratch(np.dtype(np.float32))[: hi - lo]
        fill(scratch, start + lo, keys, distribution, scale, 1, job_size)
        round_into(out[lo:hi], scratch, bounds)

    pieces = [*range(0, out.size, NARROW_PIECE), out.size]
    if threads == 1 or len(pieces) <= 2:
        for lo, hi in zip(pieces[:-1], pieces[1:], strict=True):
            run(lo, hi)
        return
    _run_pieces(run, pieces, threads)


def _narrow_native(out: np.ndarray) -> _native.Kernels | None:
    """The C kernels, if they serve this process and can write ``out`` (a
    contiguous float16/bfloat16 array) directly: they compute and round in
    one pass, where the NumPy path goes through a float32 scratch buffer and
    NumPy's cast (which for float16 converts and clamps one value at a time)."""
    if out.flags.c_contiguous and out.flags.writeable and _kernel_path.kernel_choice() != "numpy":
        return _native.load()
    return None


_scratch_buffers = threading.local()


def _scratch(dtype: np.dtype) -> np.ndarray:
    """This thread's NARROW_PIECE-value scratch array of `dtype`, made once."""
    buffers = _scratch_buffers.__dict__
    key = np.dtype(dtype).str
    if key not in buffers or buffers[key].size < NARROW_PIECE:
        buffers[key] = np.empty(NARROW_PIECE, dtype=dtype)
    return buffers[key]


# --- pieces and the thread pool -------------------------------------------------


def _piece_bounds(size: int, start: int, threads: int) -> list[int]:
    """Offsets that cut [0, size) into the pieces of a threaded fill: on
    multiples of the piece size in the flat index (an even piece keeps float32
    pairs, which share one word, inside one piece)."""
    piece = _piece_size(size, threads)
    first_boundary = piece - start % piece
    return [0, *range(first_boundary, size, piece), size]


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
_pool_lock = threading.Lock()


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
        if _kernel_path.kernel_choice() != "numpy":
            _native.load()
        _start_helpers(usable_cpus() - 1)
    except Exception:  # noqa: BLE001, S110 - the fill repeats the step and reports it
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers_after_fork)
threading.Thread(target=_prepare, name="vsgen-prepare", daemon=True).start()
