"""The ``vsgen`` v1 stream: counter-based, random-access, portable bytes.

Every value is a pure function of (seed, distribution, working precision,
flat index); docs/stream-v1.md defines it bit for bit. The definition has one
reference implementation, vectorised NumPy (``_reference``), and one
transcription, C kernels built at install (``_native_kernels.c``, loaded by
``_native``); both give the same bytes, which the golden checksums check.
``_dispatch`` picks one (the C kernels when built) and shares the work among
threads. This module is the part users call: ``fill`` checks its arguments
and ``VsgenStream`` puts it behind the ``Stream`` interface.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence

import numpy as np

from vsgen.dtypes import narrow_bounds, working_dtype
from vsgen.streams import _dispatch
from vsgen.streams._base import (
    DEFAULT_CHUNK,
    DISTRIBUTIONS,
    Draw,
    Stream,
    default_threads,
)
from vsgen.streams._reference import MAX_SEED, derive_keys

STREAM_NAME = "vsgen"
STREAM_VERSION = 1

__all__ = ["DISTRIBUTIONS", "MAX_SEED", "STREAM_NAME", "STREAM_VERSION", "VsgenStream", "fill"]


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


def _check_out(out) -> None:
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


def _check_draw(
    size: int, start, seed, distribution, multiplier, threads, job_size
) -> tuple[int, int, int, int]:
    """(seed, start, threads, job_size) checked; job_size at least ``size``."""
    seed = _integer(seed, "seed", 0, MAX_SEED, "an integer in [0, 2**64)")
    # Flat indices stay below 2**62 so that every counter fits an int64.
    start = _integer(start, "start", 0, (1 << 62) - size, "an integer in [0, 2**62 - out.size)")
    threads = _integer(threads, "threads", 1, None, "an integer >= 1")
    if job_size is not None:
        job_size = _integer(job_size, "job_size", 0, None, "None or an integer >= 0")
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
    return seed, start, threads, max(size, job_size or 0)


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
    not on `start` splitting, `threads`, the implementation or the CPU.

    Args:
        out: 1-D C-contiguous float32 or float64 array, overwritten.
        start: flat index of out[0] (>= 0).
        seed: integer in [0, 2**64).
        distribution: "truncated_normal", "untruncated_normal" or "uniform".
        multiplier: finite real scale (e.g. the truncated normal's s).
        threads: worker threads (>= 1); pieces of 2**16 .. 2**20 values are shared out.
        job_size: optional, the number of values the caller is about to
            generate in calls like this one (a tensor written in chunks): a
            large job without the C kernels gets one warning per process.

    Raises:
        ValueError / TypeError naming the offending argument.
    """
    _check_out(out)
    seed, start, threads, job_size = _check_draw(
        out.size, start, seed, distribution, multiplier, threads, job_size
    )
    if out.size == 0:
        return
    scale = out.dtype.type(multiplier)
    _dispatch.fill(out, start, derive_keys(seed), distribution, scale, threads, job_size)


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
        job ``out`` belongs to (a large job without the C kernels gets a warning;
        the bytes do not depend on it).

        float16/bfloat16 outputs are the float32 values rounded once, nearest
        even; rounding may carry a value onto or past its bound, so it is
        clamped back inside (``vsgen.dtypes.narrow_bounds``; float32/float64
        outputs never are: their bytes stay exactly as the stream defines them).
        """
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
        if not isinstance(out, np.ndarray) or out.ndim != 1:
            raise ValueError("Argument `out` must be a 1-D numpy array.")
        seed, start, threads, job_size = _check_draw(
            out.size, start, draw.seed, draw.distribution, draw.multiplier, threads, job_size
        )
        clamp = narrow_bounds(out.dtype, draw.distribution, draw.multiplier)
        _dispatch.fill_narrow(
            out,
            start,
            derive_keys(seed),
            draw.distribution,
            draw.multiplier,
            threads,
            clamp,
            job_size,
        )

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
        by default the whole tensor."""
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
