"""The child process of ``vsgen.hf.plan(..., isolate=True)``.

Reads the pickled keyword arguments of :func:`vsgen.hf.plan` on standard input and
writes a pickled ``(kind, payload, warnings)`` on standard output: ``("job", ModelJob,
...)`` or ``("error", exception, ...)``. ``warnings`` are ``(category, message)`` pairs
of the Python warnings raised while planning, for the parent to raise again.

The child exists so that the process that writes the model never imports torch or
transformers (about 400 MiB together): it plans, answers and exits before the first
byte is written. Its SIGINT is the default action, so a Ctrl-C at the terminal ends it
without a traceback and the parent reports the interrupt once.
"""

from __future__ import annotations

import pickle
import signal
import sys
import warnings
from typing import Any


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(str(error))
    return error


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    kwargs: dict[str, Any] = pickle.load(sys.stdin.buffer)
    from vsgen import hf

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            answer: tuple[str, Any] = ("job", hf.plan(**kwargs))
        except Exception as error:
            answer = ("error", _portable(error))
    raised = []
    for warning in caught:
        category = warning.category
        try:
            pickle.dumps(category)
        except Exception:
            category = UserWarning
        raised.append((category, str(warning.message)))
    pickle.dump((*answer, raised), sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
