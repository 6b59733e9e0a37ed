"""Build the optional ahead-of-time kernels of the vsgen v1 stream.

Everything else lives in pyproject.toml.  The extension is optional: without
a C compiler vsgen installs all the same and uses its numba/NumPy paths.
"""

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
        print(f"vsgen: the native kernels were not built ({last}); using numba/NumPy")


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
