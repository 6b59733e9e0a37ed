"""``python -m vsgen`` and the ``vsgen`` console script.

Ctrl-C must end vsgen with one line at any moment, also while Python is still
importing NumPy and click: so the handler is installed here, before any of
them is imported (``import vsgen`` itself imports nothing heavy).

This function owns the process, so it also tunes the cyclic garbage
collector for a short-lived command (``vsgen.cli.main(own_process=True)``).
"""

from __future__ import annotations

import gc
from typing import NoReturn

from vsgen._interrupt import end_at_once_on_interrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``vsgen`` command."""
    end_at_once_on_interrupt()
    # Importing NumPy, click and a command makes ~10**5 objects that live as
    # long as the process and no garbage cycles: collections during the
    # imports, and the full one at exit, would only traverse them again
    # (~40 ms of a small job).  The collector is off until the command's
    # module is imported, then those objects are frozen out of its reach
    # and it runs as usual for the command itself.
    gc.disable()
    from vsgen.cli import main as run

    run(argv, own_process=True)


if __name__ == "__main__":
    main()
