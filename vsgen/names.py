"""How names are spelled: one leniency rule for every name vsgen accepts.

A name is matched after :func:`spelling`: surrounding blanks removed, case
ignored, and ``-`` read as ``_``. So ``he-normal``, ``HE_NORMAL``,
``fan-in``, ``FAN_AVG``, ``Truncated-Normal`` and ``FP16`` all name what
their canonical spelling names. Aliases (``normal`` for truncated_normal,
``fp16``/``half`` for float16, ``bf16``, Keras class names such as
``HeNormal``) are listed next to each set of names and shown in ``--help``.

The command line applies the rule to every name option (``--mode``,
``--distribution``, ``--preset``, ``--dtype``, ``--stream``, ``--layout``,
``--format``). The Python constructors keep Keras 3's rules (``mode`` exact,
``distribution`` case-insensitive); :func:`canonical` is public so that
Python callers can apply the same rule to their own input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def spelling(text: str) -> str:
    """The comparable form of a name: stripped, lower case, ``-`` as ``_``."""
    return text.strip().lower().replace("-", "_")


def canonical(
    value: object,
    choices: Iterable[str],
    aliases: Mapping[str, str] | None = None,
    argument: str = "name",
) -> str:
    """The canonical name among ``choices`` that ``value`` spells, or ValueError.

    ``aliases`` maps alternative names to canonical ones; both sides are
    compared by :func:`spelling`.

    >>> canonical("FAN-AVG", ("fan_in", "fan_out", "fan_avg"), argument="mode")
    'fan_avg'
    """
    choices = tuple(choices)
    if isinstance(value, str):
        key = spelling(value)
        for choice in choices:
            if spelling(choice) == key:
                return choice
        for alias, target in (aliases or {}).items():
            if spelling(alias) == key:
                return target
    accepted = ", ".join(choices)
    if aliases:
        accepted += f" (or {describe_aliases(aliases)})"
    raise ValueError(
        f"Argument `{argument}` must be one of {accepted}. Received: {argument}={value!r}"
    )


def closest(value: str, names: Iterable[str]) -> str | None:
    """The name among ``names`` that ``value`` most likely misspells (compared by
    :func:`spelling`), or None if none is close: ``closest("he_nromal", ...)``
    is ``"he_normal"``. For suggestions ("did you mean ...?"), never to accept
    a name."""
    import difflib

    by_spelling: dict[str, str] = {}
    for name in names:
        by_spelling.setdefault(spelling(name), name)
    found = difflib.get_close_matches(spelling(value), list(by_spelling), n=1, cutoff=0.6)
    return by_spelling[found[0]] if found else None


def describe_aliases(aliases: Mapping[str, str]) -> str:
    """Aliases grouped by what they name, for help texts and errors:
    ``"half, fp16 for float16; bf16 for bfloat16"``."""
    grouped: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        grouped.setdefault(target, []).append(alias)
    return "; ".join(f"{', '.join(names)} for {target}" for target, names in grouped.items())
