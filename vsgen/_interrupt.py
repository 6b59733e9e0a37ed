"""Ctrl-C and SIGTERM outside a command: end at once, with one line.

Imports only the standard library, so that ``vsgen.__main__`` can install
the handler before NumPy, click and the rest are imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

#: Set once the command's output is complete and in place: from then on an
#: interrupt changes nothing, for the work it asked to stop is done.
_output_in_place = False
#: Set by the command line when it owns the process (``python -m vsgen``, the
#: ``vsgen`` script): only then may it ignore signals until the process ends.
_owns_process = False


def own_process() -> None:
    """The caller owns the process (see :func:`output_in_place`)."""
    global _owns_process
    _owns_process = True


def output_in_place() -> None:
    """The command's output has been renamed into place: a Ctrl-C or SIGTERM from now
    on no longer interrupts it, and the process ends with exit code 0 (no message),
    since saying "interrupted" would make a script believe the old target is still
    there. In a process vsgen owns, both signals are ignored from now on: Python
    restores their default action while it shuts down, and a signal then would end
    the process by SIGINT or SIGTERM after the work was done."""
    global _output_in_place
    _output_in_place = True
    if _owns_process:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):  # not the main thread
                signal.signal(signum, signal.SIG_IGN)


def output_pending() -> None:
    """A command starts: no output of it is in place yet."""
    global _output_in_place
    _output_in_place = False


def is_output_in_place() -> bool:
    return _output_in_place


def restore(signum: int, handler: Any) -> None:
    """Put ``handler`` back for ``signum``, unless the output is in place in a process
    vsgen owns (the signal stays ignored then, see :func:`output_in_place`)."""
    if _output_in_place and _owns_process:
        handler = signal.SIG_IGN
    signal.signal(signum, handler)


def _interrupted_at_once(signum: int, frame: Any) -> None:
    if _output_in_place:
        os._exit(0)
    with contextlib.suppress(OSError):
        os.write(2, b"Error: interrupted\n")
    os._exit(1)


def end_at_once_on_interrupt() -> None:
    """End the process with ``Error: interrupted`` (exit 1) on Ctrl-C or SIGTERM.

    For the moments when no output is open (start-up imports, parsing, after
    a command): ending at once is safe then and never prints a traceback from
    inside an import. While a command runs, the CLI makes both signals raise
    KeyboardInterrupt instead, so temporary files are removed. Signals ignored
    when vsgen started (``nohup``, background jobs) stay ignored.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, _interrupted_at_once)
