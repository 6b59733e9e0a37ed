"""Which kernels fill, and what the user is told when the C kernels are missing.

``vsgen --version`` names the kernels a fill would use (``_kernel_path.describe``),
and a large job without them gets one warning, ``warning: ...`` on the command
line. "Missing" is simulated honestly: a copy of the package without the built
library (as an install without a C compiler leaves it), or the library's path
pointing nowhere; ``VSGEN_KERNEL=numpy`` is a choice, not a missing library,
and never warns.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vsgen
from vsgen.cli import cli
from vsgen.streams import Draw, VsgenStream, _dispatch, _kernel_path, _native, _reference, counter

#: The tree subprocesses run: tests/conftest.py puts it first on PYTHONPATH (this
#: tree, or the unmutated one under mutation testing).
SOURCE = Path(os.environ["PYTHONPATH"].split(os.pathsep)[0])
HAVE_NATIVE = _kernel_path.library_path() is not None
needs_native = pytest.mark.skipif(not HAVE_NATIVE, reason="native kernels not built")
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
LARGE = _dispatch.SLOW_JOB_VALUES["truncated_normal"]


@pytest.fixture
def fresh(monkeypatch):
    """A process that has loaded no kernels and warned about nothing yet."""
    for name in ("VSGEN_KERNEL", "VSGEN_NATIVE_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_native, "_loaded", None)
    monkeypatch.setattr(_native, "_failed", None)
    monkeypatch.setattr(_dispatch, "_warned", False)
    return monkeypatch


@pytest.fixture
def not_built(fresh):
    fresh.setattr(_kernel_path, "library_path", lambda: None)
    return fresh


# --- describe(): what --version says ------------------------------------------------


@needs_native
def test_auto_names_the_native_build_a_fill_uses(fresh):
    assert _dispatch.choose("uniform", 10) == _native.load().fill
    assert _kernel_path.describe() == f"native {_kernel_path.level_name(_native.load().level)}"


@needs_native
@pytest.mark.skipif(not IS_X86_64, reason="x86-64 instruction-set levels")
@pytest.mark.parametrize(("cap", "name"), [("0", "x86-64"), ("3", "x86-64-v3")])
def test_a_level_cap_is_named(fresh, cap, name):
    fresh.setenv("VSGEN_NATIVE_LEVEL", cap)
    assert _kernel_path.describe() == f"native {name}"
    assert _native.load().level == int(cap)  # what the fills run


@pytest.mark.skipif(not IS_X86_64, reason="x86-64 instruction-set levels")
def test_level_names_on_x86_64():
    names = [_kernel_path.level_name(level) for level in _kernel_path.LEVELS]
    assert names == ["x86-64", "x86-64-v3", "x86-64-v4"]


def test_numpy_by_choice_is_named_as_a_choice(fresh):
    fresh.setenv("VSGEN_KERNEL", " NumPy ")
    assert _kernel_path.describe() == "numpy (VSGEN_KERNEL=numpy)"
    assert _dispatch.choose("uniform", 10) is _reference.fill


def test_a_library_that_was_not_built_is_named(not_built):
    assert _kernel_path.describe() == "numpy (native kernels not built)"
    not_built.setenv("VSGEN_KERNEL", "native")  # asked for, but there is none
    assert _kernel_path.describe() == "numpy (native kernels not built)"
    assert _dispatch.choose("uniform", 10) is _reference.fill


def test_a_library_that_does_not_load_is_named(fresh, tmp_path):
    broken = tmp_path / "_native_kernels.so"
    broken.write_bytes(b"not a shared library")
    fresh.setattr(_kernel_path, "library_path", lambda: broken)
    text = _kernel_path.describe()
    assert text.startswith("numpy (native kernels do not load: ") and "\n" not in text
    assert _native.load() is None
    assert _native.unavailable().startswith("native kernels do not load: ")


@pytest.mark.parametrize(
    ("value", "retired"), [("numba", " (numba was retired: the C kernels replace it)"), ("x", "")]
)
def test_a_bad_choice_is_described_not_raised(fresh, value, retired):
    fresh.setenv("VSGEN_KERNEL", value)
    assert _kernel_path.describe() == (
        "none: Environment variable `VSGEN_KERNEL` must be one of auto, native, numpy"
        f"{retired}. Received: VSGEN_KERNEL={value!r}"
    )


def test_version_line_says_the_kernels(fresh):
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stderr == ""
    expected = f"vsgen {vsgen.__version__} (stream vsgen/1, kernels: {_kernel_path.describe()})\n"
    assert result.stdout == expected
    if HAVE_NATIVE:
        assert "kernels: native " in result.stdout


# --- the warning for a large job without the kernels ---------------------------------


def _fill(job_size: int, distribution: str = "truncated_normal") -> np.ndarray:
    out = np.empty(1000, np.float32)
    counter.fill(out, 0, 7, distribution, 0.5, job_size=job_size)
    return out


def test_a_large_job_without_the_kernels_warns_once(not_built):
    with pytest.warns(vsgen.streams.MissingKernelsWarning) as caught:  # public, to filter
        _fill(LARGE)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"native kernels not built, so this job of {LARGE:,} values samples")
    assert "install a C compiler and reinstall vsgen" in message and "\n" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fill(LARGE)  # once per process


@pytest.mark.parametrize(
    ("job", "distribution"),
    [
        (LARGE - 1, "truncated_normal"),
        (LARGE, "uniform"),  # uniforms are cheap on NumPy: their bar is higher
        (_dispatch.SLOW_JOB_VALUES["uniform"] - 1, "uniform"),
    ],
)
def test_smaller_jobs_do_not_warn(not_built, job, distribution):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fill(job, distribution)


def test_numpy_by_choice_never_warns(not_built):
    not_built.setenv("VSGEN_KERNEL", "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fill(1 << 40)


@needs_native
def test_with_the_kernels_nothing_warns(fresh):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fill(1 << 40)


def test_a_large_narrow_job_without_the_kernels_warns_too(not_built):
    out = np.empty(5000, np.float16)
    draw = Draw("untruncated_normal", 0.5, 3, np.dtype(np.float16))
    with pytest.warns(_dispatch.MissingKernelsWarning, match="native kernels not built"):
        VsgenStream().fill(out, 0, draw, threads=1, job_size=LARGE)


# --- the command line, from a copy of the package that has no library ---------------


@pytest.fixture
def without_library(tmp_path):
    """A copy of the package without the built library, and an environment that
    imports it (and nothing else) as ``vsgen``."""
    copy = tmp_path / "site"
    shutil.copytree(
        SOURCE / "vsgen", copy / "vsgen", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSGEN_")}
    env["PYTHONPATH"] = str(copy)
    return env


def vsgen_run(env, *args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "vsgen", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_version_says_the_kernels_were_not_built(without_library, tmp_path):
    done = vsgen_run(without_library, "--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (
        f"vsgen {vsgen.__version__} (stream vsgen/1, kernels: numpy (native kernels not built))\n"
    )


def test_a_large_sample_warns_in_one_line_and_writes_the_same_bytes(without_library, tmp_path):
    side = int(LARGE**0.5)  # 4096 x 4096 = LARGE values
    args = ["sample", "--shape", f"{side},{side}", "--seed", "5"]
    done = vsgen_run(without_library, *args, "-o", "big.npy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("warning: native kernels not built, so this job of 16,777,216")
    assert lines[0].endswith(
        "install a C compiler and reinstall vsgen "
        "(pip install --force-reinstall --no-cache-dir vsgen)"
    )
    expected = vsgen.VarianceScaling(seed=5).sample((side, side))  # this process' kernels
    assert np.load(tmp_path / "big.npy").tobytes() == expected.tobytes()
    # A choice of NumPy is not a missing library: no warning.
    chosen = vsgen_run(
        {**without_library, "VSGEN_KERNEL": "numpy"}, *args, "-o", "chosen.npy", cwd=tmp_path
    )
    assert chosen.returncode == 0 and chosen.stderr == ""


def test_a_small_sample_says_nothing(without_library, tmp_path):
    done = vsgen_run(
        without_library, "sample", "--shape", "512,256", "--seed", "0", "-o", "w.npy", cwd=tmp_path
    )
    assert done.returncode == 0 and done.stderr == ""


# --- how a threaded fill is cut into pieces -------------------------------------------------


def test_piece_size_halves_until_each_thread_has_about_four_pieces():
    from vsgen.streams._dispatch import _piece_size

    mib = 1 << 20
    assert _piece_size(64 * mib, 2) == mib  # 8 pieces of 2**20 already cover 2 threads x 4
    assert _piece_size(8 * mib, 2) == mib  # exactly 4 per thread: no halving
    assert _piece_size(8 * mib - 1, 2) == mib // 2  # one value short: halved once
    assert _piece_size(mib, 2) == mib // 8  # 2**20 / (4 * 2) = 2**17
    assert _piece_size(mib, 4) == 1 << 16  # 2**16, the floor
    assert _piece_size(1000, 8) == 1 << 16  # never below the floor


@pytest.mark.parametrize(
    ("size", "start", "threads", "expected"),
    [
        # piece 2**17 (size 2**20, 2 threads); start 0: boundaries on multiples of 2**17
        (1 << 20, 0, 2, [0, *range(1 << 17, 1 << 20, 1 << 17), 1 << 20]),
        # start 5: the first boundary where start + offset is a multiple, 2**17 - 5
        (1 << 20, 5, 2, [0, *range((1 << 17) - 5, 1 << 20, 1 << 17), 1 << 20]),
        # piece 2**16 (the floor); 100,000 values from flat index 70,000:
        # flat 131,072 is offset 61,072; then the end
        (100_000, 70_000, 2, [0, 61_072, 100_000]),
    ],
)
def test_piece_bounds_fall_on_multiples_of_the_piece_in_the_flat_index(
    size, start, threads, expected
):
    from vsgen.streams._dispatch import _piece_bounds

    assert _piece_bounds(size, start, threads) == expected


def test_the_helper_threads_are_named_vsgen():
    # So that a user's thread dump (py-spy, faulthandler) says whose threads they are.
    import threading

    from vsgen.streams import _dispatch

    _dispatch._start_helpers(1)
    helpers = [t for t in threading.enumerate() if t in _dispatch._helpers]
    assert helpers and all(t.name == "vsgen" and t.daemon for t in helpers)
