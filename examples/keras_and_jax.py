"""vsgen inside Keras and JAX: initializers that the frameworks treat as their own.

Without Keras or JAX it says so and exits 0.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Keras reads its backend once, when first imported; its default (TensorFlow)
# is not what vsgen's test extra installs.
os.environ.setdefault("KERAS_BACKEND", "numpy")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

try:
    import jax
    import keras
except ImportError as missing:  # optional: pip install "vsgen[test]" installs both
    print(f"{missing.name} not installed: skipping (pip install keras jax)")
    sys.exit(0)

import numpy as np  # noqa: E402

import vsgen  # noqa: E402
import vsgen.jax  # noqa: E402
import vsgen.keras  # noqa: E402

# Keras: MultiHeadAttention hands the query kernel (256, 8, 32) its axes, so
# LeCun normal gets fan_in = 256 (std 1/16), not a conv kernel's 256 * 8.
attention = keras.layers.MultiHeadAttention(
    num_heads=8, key_dim=32, kernel_initializer=vsgen.keras.LecunNormal(seed=1)
)
attention.build((None, 10, 256), (None, 10, 256))
query = keras.ops.convert_to_numpy(attention.query_dense.kernel)
print(f"query kernel {query.shape}: std {query.std():.4f} (target {1 / 16:.4f})")
assert abs(query.std() - 1 / 16) < 0.02 / 16

# A model with vsgen initializers saves and loads like any Keras model.
inputs = keras.Input((16,))
outputs = keras.layers.Dense(4, kernel_initializer=vsgen.keras.HeUniform(seed=3))(inputs)
model = keras.Model(inputs, outputs)
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
kernel = keras.ops.convert_to_numpy(loaded.layers[-1].kernel)
assert kernel.tobytes() == vsgen.HeUniform(seed=3)((16, 4)).tobytes()
print("saved and loaded:", type(loaded.layers[-1].kernel_initializer).__name__)

# JAX: jax.nn.initializers' signature; key(n) gives the values of seed n.
init = vsgen.jax.variance_scaling(2.0, "fan_geo_avg", "normal", in_axis=0, out_axis=(1, 2))
weights = init(jax.random.key(42), (64, 4, 16))
same = vsgen.VarianceScaling(
    2.0, "fan_geo_avg", "untruncated_normal", seed=42, in_axis=0, out_axis=(1, 2)
)((64, 4, 16))
assert np.asarray(weights).tobytes() == same.tobytes()
print("jax:", weights.shape, weights.dtype, f"std {float(weights.std()):.4f}")

# Complex weights with JAX's semantics: a disk of radius sqrt(2 v).
disk = vsgen.jax.glorot_uniform()(jax.random.key(0), (128, 128), jax.numpy.complex64)
radius = np.sqrt(2 * 1.0 / 128)
assert float(jax.numpy.abs(disk).max()) <= radius * (1 + 1e-6)
print("complex:", disk.dtype, f"max |z| {float(jax.numpy.abs(disk).max()):.4f} <= {radius:.4f}")
