"""Chunks produced in a helper thread while the caller works on the previous
ones: ``prefetched`` (any consumer) and ``write_chunks`` (into an output)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator

import numpy

from vsgen.formats.output import Output

_DONE = object()


class _ProducerFailed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def write_chunks(
    output: Output,
    chunks: Iterable[numpy.ndarray],
    on_progress: Callable[[int], None] | None = None,
    prefetch: int = 2,
) -> None:
    """Write every chunk of ``chunks`` to ``output``, producing ahead in a thread.

    A background thread pulls chunks from ``chunks`` into a queue of at most
    ``prefetch`` chunks while the calling thread writes them, so computing
    values (NumPy releases the GIL) overlaps the I/O. ``prefetch=0`` writes
    in the calling thread without a helper thread. At most ``prefetch + 2``
    chunks are alive at once; the iterator must yield a new array each time
    (or not modify an array already yielded). ``on_progress`` is called after
    each chunk with the number of values that chunk held (an increment, as
    a progress bar's ``advance`` takes; ``output.values_written`` is the total).

    The first exception from either side (the iterator, ``output.write`` or
    ``on_progress``; KeyboardInterrupt included) propagates to the caller;
    the helper thread is stopped and joined before that. ``output`` is not
    committed or aborted here.
    """
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
        raise ValueError(
            f"Argument `prefetch` must be a non-negative integer. Received: prefetch={prefetch!r}"
        )
    with contextlib.closing(prefetched(chunks, prefetch)) as ahead:
        for chunk in ahead:
            output.write(chunk)
            count = chunk.size
            del chunk  # drop the reference so memory stays bounded by the queue
            if on_progress is not None:
                on_progress(count)


def prefetched(
    chunks: Iterable[numpy.ndarray], depth: int = 2
) -> Generator[numpy.ndarray, None, None]:
    """The chunks of ``chunks``, pulled ahead by a helper thread into a queue
    of at most ``depth`` chunks, so that producing the next ones (reading a
    file, sampling: both release the GIL) overlaps the caller's work on this
    one. ``depth=0`` iterates in the calling thread. The iterator must yield
    a new array each time (or not modify one already yielded).

    The first exception of the iterator (KeyboardInterrupt included) is
    raised to the caller at the point it would have come. Closing this
    generator (``contextlib.closing``, or leaving a ``for`` loop and dropping
    it) stops the helper thread and joins it.
    """
    if depth == 0:
        yield from chunks
        return
    pending: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        # A bounded put that gives up when the consumer has stopped listening.
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        iterator: Iterator[numpy.ndarray] | None = None
        try:
            iterator = iter(chunks)
            for chunk in iterator:
                if not offer(chunk):
                    return
            offer(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            offer(_ProducerFailed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                # The first error is the one reported.
                with contextlib.suppress(Exception):
                    close()

    producer = threading.Thread(target=produce, name="vsgen-chunk-producer", daemon=True)
    producer.start()
    try:
        while True:
            item = pending.get()
            if item is _DONE:
                return
            if isinstance(item, _ProducerFailed):
                raise item.error
            yield item  # type: ignore[misc]
            del item
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue and drop queued chunks.
        while True:
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        producer.join()
