"""``python -m vsgen``: the same as the ``vsgen`` command."""

from vsgen.cli import main

if __name__ == "__main__":
    main()
