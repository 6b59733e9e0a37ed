"""Messages in the words of the caller: Python arguments, not command-line options.

Some messages of the writers (:mod:`vsgen.formats`, :mod:`vsgen.blockwrite`,
:mod:`vsgen.modelspec`) name the command line's options (``use --force to
overwrite``, ``--format npydir``, ``--like``). The Python entry points that write
(:func:`vsgen.save`, :func:`vsgen.save_model`, :func:`vsgen.blockwrite.write`,
:func:`vsgen.dask.write`) run inside :func:`library_errors`, which rewrites those
words into their arguments' (``pass force=True to overwrite``,
``format="npydir"``, ``a checkpoint``) and keeps the original message on the
exception as ``command_line_message``, which the command line prints instead
(:func:`vsgen.cli._errors.user_errors`). A message either way says the same
thing; this is the one table of the two vocabularies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

#: (pattern, replacement) in order: the specific phrases before the bare option.
_LIBRARY_TERMS = (
    (r"\buse --force to\b", "pass force=True to"),
    (r"--force\b(?!-)", "force=True"),
    (r"\bpass --format\b", "pass the `format` argument"),
    (r"--format ([a-z0-9][a-z0-9-]*)", r'format="\1"'),
    (r"--layout (\w+)", r'layout="\1"'),
    (r"\bgive smaller --chunks\b", "give smaller chunks"),
    (r"\brun that command again with --resume\b", "write that job again with resume=True"),
    (r"--resume\b", "resume=True"),
    (r"\bwithout --scheduler\b", "written by vsgen.save/vsgen.save_model without a scheduler"),
    (r"\bwith --like\b", "with a checkpoint as the source"),
    (r"\(--like\)", "(a checkpoint as the source)"),
    (r"--like\b", "checkpoint"),
)

#: The attribute of an exception that holds its message in command-line words.
COMMAND_LINE_MESSAGE = "command_line_message"


def in_library_terms(message: str) -> str:
    """``message`` with command-line options replaced by the arguments that mean them.

    >>> in_library_terms("output file 'w.npy' exists; use --force to overwrite")
    "output file 'w.npy' exists; pass force=True to overwrite"
    """
    if "--" not in message:  # most messages: no need to compile the patterns
        return message
    import re

    for pattern, replacement in _LIBRARY_TERMS:
        message = re.sub(pattern, replacement, message)
    return message


@contextlib.contextmanager
def library_errors() -> Iterator[None]:
    """Re-raise ValueError and TypeError (their subclasses included, as they are)
    with the message in library words; the original stays readable as the
    exception's ``command_line_message``."""
    try:
        yield
    except (ValueError, TypeError) as error:
        if len(error.args) == 1 and isinstance(error.args[0], str):
            original = error.args[0]
            reworded = in_library_terms(original)
            if reworded != original:
                if not hasattr(error, COMMAND_LINE_MESSAGE):
                    setattr(error, COMMAND_LINE_MESSAGE, original)
                error.args = (reworded,)
        raise
