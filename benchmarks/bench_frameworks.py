"""vsgen.keras and vsgen.jax against the frameworks' own initializers, in one run.

On the user's path, each in a fresh interpreter (so imports, first calls and
compilation are counted as a user meets them):

* Keras (``KERAS_BACKEND``, default numpy): build a stack of ``--layers``
  ``Dense(--width)`` layers plus one ``MultiHeadAttention``, all kernels with
  ``keras.initializers.GlorotUniform`` / ``HeNormal`` versus
  ``vsgen.keras.GlorotUniform`` / ``HeNormal`` (vsgen stream); the time of
  ``model.build`` (every kernel initialised) after the imports.
* JAX: ``jax.nn.initializers.he_normal()`` versus ``vsgen.jax.he_normal()`` on a
  ``--width`` x ``--width`` float32 kernel: the first call (including JAX's
  compilation or vsgen's kernel load) and the median of ``--repeat`` warm
  calls (``block_until_ready``), eager and under ``jax.jit``.

Prints seconds and the ratio peer / vsgen (> 1: vsgen faster).

Usage::

    python benchmarks/bench_frameworks.py [--width 4096] [--layers 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent

KERAS_SCRIPT = """
import json, sys, time
width, layers, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import keras
if which == "vsgen":
    import vsgen.keras as source
else:
    source = keras.initializers
start = time.perf_counter()
inputs = keras.Input((16, width))
x = inputs
for i in range(layers):
    init = source.HeNormal(seed=i) if i % 2 else source.GlorotUniform(seed=i)
    x = keras.layers.Dense(width, kernel_initializer=init)(x)
x = keras.layers.MultiHeadAttention(
    num_heads=16, key_dim=width // 16, kernel_initializer=source.GlorotUniform(seed=99)
)(x, x)
model = keras.Model(inputs, x)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "params": model.count_params()}))
"""

JAX_SCRIPT = """
import json, statistics, sys, time
width, repeat, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import jax
if which == "vsgen":
    import vsgen.jax as source
else:
    source = jax.nn.initializers
init = source.he_normal()
key = jax.random.key(0)
shape = (width, width)
start = time.perf_counter()
init(key, shape).block_until_ready()
first = time.perf_counter() - start
def timed(fn):
    times = []
    for i in range(repeat):
        k = jax.random.key(i + 1)
        start = time.perf_counter()
        fn(k).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
eager = timed(lambda k: init(k, shape))
jitted_fn = jax.jit(lambda k: init(k, shape))
jitted_fn(key).block_until_ready()
jitted = timed(jitted_fn)
print(json.dumps({"first": first, "eager": eager, "jit": jitted}))
"""


def _run(script: str, *args: str, backend: str | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "numpy"))
    args = parser.parse_args()

    print(f"Keras ({args.backend} backend): build {args.layers} x Dense({args.width}) + MHA")
    keras_rows = {}
    for which in ("keras", "vsgen"):
        keras_rows[which] = _run(
            KERAS_SCRIPT, str(args.width), str(args.layers), which, backend=args.backend
        )
        row = keras_rows[which]
        print(f"  {which:6s} {row['seconds']:8.3f} s  ({row['params'] / 1e6:.1f} M parameters)")
    ratio = keras_rows["keras"]["seconds"] / keras_rows["vsgen"]["seconds"]
    print(f"  ratio keras / vsgen: {ratio:.2f}")

    print(f"JAX: he_normal on ({args.width}, {args.width}) float32")
    jax_rows = {
        which: _run(JAX_SCRIPT, str(args.width), str(args.repeat), which)
        for which in ("jax", "vsgen")
    }
    for key in ("first", "eager", "jit"):
        theirs, ours = jax_rows["jax"][key], jax_rows["vsgen"][key]
        print(f"  {key:6s} jax {theirs:8.4f} s  vsgen {ours:8.4f} s  ratio {theirs / ours:6.2f}")


if __name__ == "__main__":
    main()
