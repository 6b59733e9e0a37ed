"""The Python API: initializers, what they mean, configs, files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

import vsgen
from vsgen import formats

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

# Streaming a big tensor to a file without holding it in memory.
with tempfile.TemporaryDirectory() as tmp:
    target = str(Path(tmp) / "big.safetensors")
    plan = vsgen.GlorotUniform(seed=1).plan((4096, 1024), "float16")
    info = formats.TensorInfo("dense.kernel", plan.shape, plan.draw.dtype)
    with formats.open_output(target, formats.resolve_format(target, None), [info]) as output:
        formats.write_chunks(output, plan.chunks(chunk_size=1 << 20))
        output.commit()
    from safetensors.numpy import load_file

    loaded = load_file(target)["dense.kernel"]
    assert np.array_equal(loaded, plan.array())
    print("streamed", loaded.shape, loaded.dtype, "to safetensors and read it back")
print("python_api OK")
