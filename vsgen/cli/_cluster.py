"""What the command line adds to a Dask cluster: quiet logs, the dashboard link.

Dask logs through Python's ``logging`` to stderr (``distributed.client - ERROR -
Failed to reconnect ...``) and warns through ``warnings``; the command line's
promise is one line per error. So, unless ``--verbose``, the ``distributed``,
``tornado``, ``bokeh`` and ``asyncio`` loggers of this process keep their records
to themselves while a command runs (a local cluster's worker processes are
silenced by ``vsgen.dask.local_cluster``), and Dask's warnings are not shown. The
errors that matter reach the user as vsgen's own one-line errors.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from vsgen.cli._errors import say

#: The loggers (and their descendants) that stay quiet without --verbose.
_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")


@contextlib.contextmanager
def cluster_logs(verbose: bool) -> Iterator[None]:
    """Within the block, Dask's log records and warnings never reach stderr, unless
    ``verbose``. Loggers made later (inside the block) are silenced too: every
    record ends at a top-level logger that holds only a ``NullHandler``."""
    if verbose:
        yield
        return
    import distributed  # noqa: F401 - its import installs the handlers silenced here

    manager = logging.root.manager
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for name in list(manager.loggerDict):
        logger = manager.loggerDict[name]
        if isinstance(logger, logging.Logger) and name.split(".")[0] in _LOGGERS:
            saved.append((logger, list(logger.handlers), logger.propagate))
    for top in _LOGGERS:
        logger = logging.getLogger(top)
        if all(entry[0] is not logger for entry in saved):
            saved.append((logger, list(logger.handlers), logger.propagate))
    for logger, _, _ in saved:
        is_top = logger.name in _LOGGERS
        logger.handlers = [logging.NullHandler()] if is_top else []
        logger.propagate = not is_top
    try:
        with warnings.catch_warnings():
            for module in ("distributed", "dask", "tornado", "bokeh"):
                warnings.filterwarnings("ignore", module=rf"{module}(\..*)?$")
            yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate


def say_dashboard(runner: Any, show: bool) -> None:
    """``dashboard: http://...`` on stderr for a cluster runner's client, if ``show``."""
    client = getattr(runner, "client", None)
    if not show or client is None:
        return
    link = None
    with contextlib.suppress(Exception):
        link = client.dashboard_link
    if link:
        say(f"dashboard: {link}")
