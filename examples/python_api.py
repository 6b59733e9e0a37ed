"""The Python API: initializers, what they mean, configs, files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import h5py
import numpy as np

import vsgen

# An initializer and what it means for a conv kernel (kh, kw, in, out).
init = vsgen.HeNormal(seed=0)
scaling = init.scaling((3, 3, 64, 128))
print(
    f"fan_in={scaling.fan_in} fan_out={scaling.fan_out} stddev={scaling.stddev:.6f} "
    f"pre-truncation s={scaling.pre_truncation_std:.6f} bounds=±{scaling.bound:.6f}"
)

kernel = init((3, 3, 64, 128))
print("sampled:", kernel.shape, kernel.dtype, f"std={kernel.std():.6f}")
assert abs(kernel.std() - scaling.stddev) < 0.01 * scaling.stddev
assert np.abs(kernel).max() <= np.float32(scaling.bound)

# Configs round-trip, and the same config gives the same values.
config = init.get_config()
print("config:", json.dumps(config))
again = vsgen.VarianceScaling.from_config(config)
assert np.array_equal(again((3, 3, 64, 128)), kernel)

# Any row range of the full tensor can be made on its own.
assert np.array_equal(init.sample((3, 3, 64, 128), rows=(1, 2)), kernel[1:2])

# Writing files in one call, as `vsgen sample` does: streamed in chunks (never
# the whole tensor in memory), atomically, with the provenance record.
with tempfile.TemporaryDirectory() as tmp:
    target = Path(tmp) / "dense.h5"
    job = vsgen.save(target, vsgen.GlorotUniform(seed=1), (4096, 1024), "float16", name="kernel")
    with h5py.File(target, "r") as handle:
        loaded = handle["kernel"][()]
        record = json.loads(handle.attrs["vsgen"])["tensors"]["kernel"]
    assert np.array_equal(loaded, vsgen.GlorotUniform(seed=1)((4096, 1024), "float16"))
    assert record["config"]["seed"] == job.seed == 1
    print("saved", loaded.shape, loaded.dtype, "to HDF5, recorded seed", record["config"]["seed"])

    spec = Path(__file__).resolve().with_name("transformer_block.toml")
    model = vsgen.save_model(Path(tmp) / "block.h5", spec, seed=2024)
    with h5py.File(Path(tmp) / "block.h5", "r") as handle:
        assert sorted(handle) == sorted(info.name for info in model.infos)
    print("saved", len(model.infos), "tensors of", spec.name)
print("python_api OK")
