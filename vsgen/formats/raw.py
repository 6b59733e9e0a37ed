"""raw (``.raw``, ``.bin``): the bare values, little-endian, C order, with no header;
several tensors are concatenated in the caller's order. No metadata, and nothing
to read back (without a header a file cannot say what it holds)."""

from __future__ import annotations

import itertools

from vsgen.formats.base import FileLayout, Format, WriteRequest


class RawFormat(Format):
    """raw: the tensors' values back to back, nothing else."""

    label = ".raw"
    holds_bfloat16 = True
    to_stdout = True
    named = False

    def plan(self, request: WriteRequest) -> FileLayout:
        tensors = request.tensors
        offsets = itertools.accumulate((info.nbytes for info in tensors[:-1]), initial=0)
        return FileLayout(tensors, b"", tuple(offsets))
