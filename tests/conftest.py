"""Shared fixtures. Keras must see its backend before its first import."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

# The Keras tests compare against Keras's numpy backend; a KERAS_BACKEND (or a
# ~/.keras/keras.json) chosen for other work must not silently skip them.
os.environ["KERAS_BACKEND"] = "numpy"


def _read_back(
    path: Path | str,
    name: str = "weight",
    *,
    shape: Sequence[int] | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Tensor ``name`` of a file, read by its format's own library (never vsgen's
    reader), by suffix: .npy, .h5, .safetensors; .raw needs ``shape`` (and ``dtype``)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as handle:
            return handle[name][()]
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))[name]
    if path.suffix == ".raw" and shape is not None:
        return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<")).reshape(tuple(shape))
    raise AssertionError(f"cannot read back {path} (a .raw file needs its shape)")


@pytest.fixture
def read_back() -> Callable[..., np.ndarray]:
    """The read-back helper: ``read_back(path, name="weight", shape=..., dtype=...)``."""
    return _read_back
