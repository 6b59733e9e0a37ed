"""vsgen's tensor files: the public entry point of ``vsgen.formats``.

Write with :func:`open_output` (after :func:`resolve_format`), feeding
:meth:`Output.write` directly or through :func:`write_chunks`, then
:meth:`Output.commit`; read headers back with :func:`read_tensor_infos` and
:func:`read_metadata`. The formats and their guarantees are described in
``vsgen.formats``.
"""

from vsgen.formats import *  # noqa: F403 - this module is the package's public face
from vsgen.formats import __all__ as __all__
