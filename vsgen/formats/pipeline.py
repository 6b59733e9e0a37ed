"""write_chunks: produce chunks in a helper thread while the caller writes them."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

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
    if prefetch == 0:
        for chunk in chunks:
            output.write(chunk)
            if on_progress is not None:
                on_progress(chunk.size)
        return

    pending: queue.Queue[object] = queue.Queue(maxsize=prefetch)
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
                break
            if isinstance(item, _ProducerFailed):
                raise item.error
            output.write(item)  # type: ignore[arg-type]
            count = item.size  # type: ignore[attr-defined]
            del item  # drop the reference so memory stays bounded by the queue
            if on_progress is not None:
                on_progress(count)
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue and drop queued chunks.
        while True:
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        producer.join()
