"""Build the C kernels of the vsgen v1 stream.

Everything else lives in pyproject.toml.  The kernels are optional: without a
C compiler vsgen installs all the same and samples with its NumPy reference
(the same bytes, 5-15x slower).  pip hides a build's output unless it fails,
so the line printed here is seen only with ``pip install -v`` or
``python setup.py build_ext``; ``vsgen --version`` always says which kernels
run, and a large ``vsgen sample`` without them warns once.
``VSGEN_REQUIRE_NATIVE=1`` turns a failed build into an error (CI and wheels).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Every + - * / must be rounded on its own (no FMA contraction, no fast-math):
# the stream's bytes depend on it.  GCC only vectorises the table lookups of
# the hot loop with gathers when told to.
PORTABLE = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fvisibility=hidden"]
GCC_ONLY = ["-mtune-ctrl=use_gather_2parts,use_gather_4parts,use_gather"]


class OptionalBuildExt(build_ext):
    """Try the full flags, then the portable ones; a failure leaves vsgen pure Python."""

    def build_extension(self, ext):
        base = list(ext.extra_compile_args)
        for extra in (GCC_ONLY, []):
            ext.extra_compile_args = base + extra
            try:
                super().build_extension(ext)
                return
            except Exception as error:  # noqa: BLE001 - any compiler failure
                last = error
        if os.environ.get("VSGEN_REQUIRE_NATIVE") == "1":
            raise RuntimeError(f"vsgen: the C kernels did not build: {last}") from last
        reason = " ".join(str(last).split())[:160]
        print(
            "vsgen: no C kernels built (no working C compiler?); vsgen will run on NumPy, "
            f"5-15x slower: install a C compiler and reinstall [{reason}]",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "vsgen.streams._native_kernels",
            sources=["vsgen/streams/_native_kernels.c"],
            depends=["vsgen/streams/_native_kernels_body.h"],
            extra_compile_args=PORTABLE,
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
