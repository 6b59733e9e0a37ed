"""``python -m vsgen`` and the ``vsgen`` console script.

Ctrl-C must end vsgen with one line at any moment, also while Python is still
importing NumPy and click: so the handler is installed here, before any of
them is imported (``import vsgen`` itself imports nothing heavy).

This function owns the process, so it also tunes the cyclic garbage
collector for a short-lived command (``vsgen.cli.main(own_process=True)``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from typing import NoReturn

from vsgen._interrupt import end_at_once_on_interrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``vsgen`` command."""
    end_at_once_on_interrupt()
    _say_if_shadowed()
    # Importing NumPy, click and a command makes ~10**5 objects that live as
    # long as the process and no garbage cycles: collections during the
    # imports, and the full one at exit, would only traverse them again
    # (~40 ms of a small job).  The collector is off until the command's
    # module is imported, then those objects are frozen out of its reach
    # and it runs as usual for the command itself.
    gc.disable()
    from vsgen.cli import main as run

    try:
        run(argv, own_process=True)
    finally:
        _ignore_late_signals()


def _ignore_late_signals() -> None:
    """Ignore Ctrl-C and SIGTERM once the command has ended (its output committed or
    removed, its line printed, its exit code chosen).

    Python's finalization resets the signal handlers it installed to the system's
    default, so a signal arriving in the process's last moments would end it by
    that signal (status -2 or -15) instead of with the command's exit code, after
    a run that did its work.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
            signal.signal(signum, signal.SIG_IGN)


def shadowing_folders() -> list[str]:
    """The folders of a ``vsgen`` that is not this package, or ``[]``.

    ``python -m vsgen`` and ``python -c "import vsgen"`` put the current
    directory first on ``sys.path``: a folder named ``vsgen`` there that is not
    the package (the clone's own folder, seen from its parent) is imported as a
    namespace package, which has no ``__file__`` and none of vsgen's names.
    With an editable install the submodules still resolve (so this command
    runs), but ``vsgen.VarianceScaling`` raises AttributeError.
    """
    package = sys.modules.get("vsgen")
    if package is None or getattr(package, "__file__", None) is not None:
        return []
    return [str(folder) for folder in getattr(package, "__path__", [])]


def _say_if_shadowed() -> None:
    folders = shadowing_folders()
    if folders:
        with contextlib.suppress(OSError):
            os.write(
                2,
                (
                    f"warning: 'import vsgen' here finds the folder {folders[0]}, which is not the "
                    "vsgen package (it has no __init__.py), so 'import vsgen' fails with "
                    "AttributeError in Python started here: run Python from another directory\n"
                ).encode(errors="replace"),
            )


if __name__ == "__main__":
    main()
