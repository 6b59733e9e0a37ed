"""``python -m vsgen`` and the ``vsgen`` console script.

Ctrl-C must end vsgen with one line at any moment, also while Python is still
importing NumPy and click: so the handler is installed here, before any of
them is imported (``import vsgen`` itself imports nothing heavy).
"""

from __future__ import annotations

from typing import NoReturn

from vsgen._interrupt import end_at_once_on_interrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``vsgen`` command."""
    end_at_once_on_interrupt()
    from vsgen.cli import main as run

    run(argv)


if __name__ == "__main__":
    main()
