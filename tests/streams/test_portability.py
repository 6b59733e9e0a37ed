"""The vsgen v1 stream gives the same bytes whatever the CPU features.

NumPy dispatches its transcendental ufuncs to per-CPU SIMD kernels and a C
compiler may fuse multiply-adds, so a stream that leaned on either's
``exp``/``log`` or on fused multiply-adds would change its bytes between an
AVX-512 node and an SSE2 laptop.  Here the golden checksums of test_counter.py
are recomputed in fresh interpreters under:

(a) the default settings;
(b) NumPy's top dispatch targets disabled (AVX2 kernels at most) and the C
    kernels' AVX2 build (VSGEN_NATIVE_LEVEL=3);
(c) every NumPy dispatch target disabled, the C kernels' baseline (SSE2)
    build (VSGEN_NATIVE_LEVEL=0) and glibc's libm restricted to its non-AVX,
    non-FMA variants;

each with both code paths: VSGEN_KERNEL=numpy and native.
(b) and (c) are x86-64 specific and skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import textwrap

import pytest

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parents[1]

_spec = importlib.util.spec_from_file_location("_stream_v1_golden", HERE / "test_counter.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

WORKER = """
    import hashlib, json, sys
    import numpy as np
    from vsgen.streams import counter

    cases = json.loads(sys.argv[1])
    digests = []
    for seed, distribution, dtype, size, start, multiplier in cases:
        out = np.empty(size, dtype=dtype)
        counter.fill(out, start, seed, distribution, multiplier)
        little = out.astype("<f4" if dtype == "float32" else "<f8", copy=False)
        digests.append(hashlib.sha256(little.tobytes()).hexdigest())
    report = {"digests": digests}
    from vsgen.streams import _native
    report["native_level"] = _native.load().level if _native.loaded() else None
    print(json.dumps(report))
"""


def _dispatch_targets() -> list[str]:
    from numpy._core import _multiarray_umath

    return list(getattr(_multiarray_umath, "__cpu_dispatch__", []))


def _settings() -> list:
    targets = _dispatch_targets()
    x86 = pytest.mark.skipif(not IS_X86_64, reason="x86-64 CPU feature settings")
    return [
        pytest.param("default", {}, id="default"),
        pytest.param(
            "avx2",
            {
                # Everything above the first (AVX2-level) target: AVX-512 kernels off.
                "NPY_DISABLE_CPU_FEATURES": " ".join(targets[1:]),
                "VSGEN_NATIVE_LEVEL": "3",
            },
            id="avx2",
            marks=x86,
        ),
        pytest.param(
            "sse2",
            {
                "NPY_DISABLE_CPU_FEATURES": " ".join(targets),
                "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F,-AVX",
                "VSGEN_NATIVE_LEVEL": "0",
            },
            id="sse2",
            marks=x86,
        ),
    ]


def _start(kernel: str, settings: dict[str, str], work_dir: pathlib.Path) -> subprocess.Popen:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VSGEN_", "NPY_")) and k != "GLIBC_TUNABLES"
    }
    env.update(settings)
    env["VSGEN_KERNEL"] = kernel
    if kernel != "native":
        env.pop("VSGEN_NATIVE_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    cases = json.dumps(golden.GOLDEN_CASES)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), cases],
        env=env,
        cwd=work_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(("name", "settings"), _settings())
def test_golden_checksums_under_cpu_settings(name, settings, tmp_path):
    kernels = ["numpy"] + (["native"] if golden.HAVE_NATIVE else [])
    # Both paths run at once: two interpreters use both cores.
    running = {kernel: _start(kernel, settings, tmp_path) for kernel in kernels}
    expected = [golden.GOLDEN[case] for case in golden.GOLDEN_CASES]
    for kernel, process in running.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        report = json.loads(stdout.strip().splitlines()[-1])
        if kernel == "native":
            # The capped build ran (or a lower one, on a CPU without that level).
            cap = int(settings.get("VSGEN_NATIVE_LEVEL", 4))
            assert report["native_level"] is not None and report["native_level"] <= cap
            if name != "default":
                assert report["native_level"] == cap or not IS_X86_64
        else:
            assert report["native_level"] is None  # the NumPy reference alone
        pairs = zip(golden.GOLDEN_CASES, report["digests"], expected, strict=True)
        mismatched = [case for case, got, want in pairs if got != want]
        assert not mismatched, f"{name}/{kernel}: digests differ for {mismatched}"
