"""Keras's own initializer tests, run against ``vsgen.keras``.

The keras wheel ships ``keras/src/initializers/random_initializers_test.py``.
This module imports that installed file (it is not copied here) and runs its
VarianceScaling, preset, RandomNormal and RandomUniform tests with Keras's
classes replaced by vsgen's: the names ``initializers.VarianceScaling``,
``initializers.GlorotNormal``, ``initializers.RandomNormal``, ..., the string
lookups (``"lecun_normal"``, ``"random_normal"``) and the test module's
``compute_fans`` point to vsgen for the duration of each test. A spy counts
vsgen draws, so a test that should draw values cannot pass on Keras's code.

Tests of other initializers (Orthogonal, tensors as initializers) do not
apply; docs/frameworks.md lists them and why.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
from unittest import mock

import pytest

os.environ["KERAS_BACKEND"] = "numpy"
keras = pytest.importorskip("keras")

import vsgen  # noqa: E402
import vsgen.keras as vk  # noqa: E402

PEER_FILE = Path(keras.__file__).parent / "src" / "initializers" / "random_initializers_test.py"
if not PEER_FILE.is_file():  # pragma: no cover - every keras 3 wheel has it
    pytest.skip(f"this keras wheel has no {PEER_FILE.name}", allow_module_level=True)

PRESETS = ("GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal", "LecunUniform")
FIXED = ("RandomNormal", "TruncatedNormal", "RandomUniform")

#: Keras's test name -> does it draw values (so vsgen must have drawn)?
APPLICABLE = {
    "test_random_normal": True,
    "test_random_uniform": True,
    "test_variance_scaling": True,
    "test_variance_scaling_invalid_scale": False,
    "test_variance_scaling_invalid_mode": False,
    "test_variance_scaling_invalid_distribution": False,
    "test_serialization_with_seed_generator": False,
    "test_compute_fans_with_axes": False,
    "test_variance_scaling_with_axes": True,
    "test_mha_query_projection_variance": True,
    "test_variance_scaling_serialization_with_axes": False,
    "test_get_method": False,
}
#: Keras's tests of initializers vsgen does not provide.
NOT_APPLICABLE = {
    "test_orthogonal": "Orthogonal is not a variance-scaling initializer",
    "test_get_method_with_tensor": "tests initializers made from tensors",
}


def _skip_if_backend(given_backend: str, reason: str):
    """What Keras's repository conftest provides to its tests."""
    return pytest.mark.skipif(keras.backend.backend() == given_backend, reason=reason)


def _load_peer_module() -> types.ModuleType:
    # The peer file does `from conftest import skip_if_backend`, Keras's
    # repository conftest, which the wheel does not ship: give it a stand-in
    # just for the import, then put back whatever `conftest` was.
    shim = types.ModuleType("conftest")
    shim.skip_if_backend = _skip_if_backend  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("keras_peer_random_initializers_test", PEER_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"conftest": shim}):
        spec.loader.exec_module(module)
    return module


peer = _load_peer_module()


def _vsgen_compute_fans(shape, input_axes=None, output_axes=None):
    return vsgen.compute_fans(shape, input_axes=input_axes, output_axes=output_axes)


class _Substituted(peer.RandomInitializersTest):
    """Keras's test case with vsgen's classes in place of Keras's."""

    __test__ = False  # only the subclass below, with the applicable tests, is collected

    def setUp(self) -> None:
        super().setUp()
        from keras.src import initializers as keras_initializers

        self.draws = 0
        original_call = vk._VsgenDraws.__call__

        def counting_call(initializer, shape, dtype=None):
            self.draws += 1
            return original_call(initializer, shape, dtype)

        replacements = {"VarianceScaling": vk.VarianceScaling}
        replacements.update({name: getattr(vk, name) for name in (*PRESETS, *FIXED)})
        lookups = {}
        for name, cls in replacements.items():
            lookups[name] = cls
            if name in (*PRESETS, *FIXED):
                snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
                lookups[snake] = cls
        lookups["variance_scaling"] = vk.VarianceScaling
        patches = [
            mock.patch.object(vk._VsgenDraws, "__call__", counting_call),
            mock.patch.dict(keras_initializers.ALL_OBJECTS_DICT, lookups),
            mock.patch.object(peer, "compute_fans", _vsgen_compute_fans),
        ]
        patches += [
            mock.patch.object(keras_initializers, name, cls) for name, cls in replacements.items()
        ]
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)


def _make_test(name: str, draws_values: bool):
    method = getattr(peer.RandomInitializersTest, name)

    def test(self) -> None:
        method(self)
        if draws_values:
            assert self.draws > 0, f"{name} ran without drawing from vsgen.keras"

    test.__name__ = name
    test.__doc__ = f"Keras's {name}, against vsgen.keras."
    return test


TestKerasRandomInitializersWithVsgen = type(
    "TestKerasRandomInitializersWithVsgen",
    (_Substituted,),
    {
        "__test__": True,
        **{name: _make_test(name, draws) for name, draws in APPLICABLE.items()},
        # Not collected: see NOT_APPLICABLE.
        **dict.fromkeys(NOT_APPLICABLE),
    },
)


def test_every_peer_test_is_classified():
    """A new test in a future Keras must be looked at, not silently ignored."""
    names = {name for name in dir(peer.RandomInitializersTest) if name.startswith("test")}
    assert names == set(APPLICABLE) | set(NOT_APPLICABLE)


def test_substitution_reaches_layers_and_lookups():
    """Inside the substituted test case, Keras's names resolve to vsgen's classes."""
    case = TestKerasRandomInitializersWithVsgen("test_get_method")
    case.setUp()
    try:
        from keras.src import initializers as keras_initializers

        assert type(keras_initializers.get("lecun_normal")) is vk.LecunNormal
        assert type(keras_initializers.get("glorot_uniform")) is vk.GlorotUniform
        assert keras_initializers.VarianceScaling is vk.VarianceScaling
        assert type(keras_initializers.get("random_normal")) is vk.RandomNormal
        assert keras_initializers.RandomUniform is vk.RandomUniform
        layer = peer.MultiHeadAttention(num_heads=2, key_dim=4, kernel_initializer="he_normal")
        layer.build((None, 3, 8), (None, 3, 8))
        assert case.draws > 0
    finally:
        case.doCleanups()
    assert type(keras_initializers.get("lecun_normal")) is keras.initializers.LecunNormal
