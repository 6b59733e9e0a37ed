"""``--scheduler``: the workers of a Dask cluster write the blocks (``vsgen.dask``,
imported only when the option is given)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def cluster_runners(scheduler: str | None) -> contextlib.AbstractContextManager[Any]:
    """The runner of ``vsgen.blockwrite.write`` for ``--scheduler``: None (local
    threads) without one, else a ``vsgen.dask.ClusterRunner`` of a client connected
    on entering the context. The address is checked at once (ValueError)."""
    if scheduler is None:
        return contextlib.nullcontext(None)
    from vsgen import dask as vsgen_dask

    vsgen_dask.parse_scheduler(scheduler)

    @contextlib.contextmanager
    def connected() -> Iterator[Any]:
        with vsgen_dask.connect(scheduler) as client:
            yield vsgen_dask.ClusterRunner(client)

    return connected()
