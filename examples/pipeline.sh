#!/usr/bin/env bash
# A shell pipeline: make a config, sample with it (reading the config from
# stdin), then describe what it means and check the file against it.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

vsgen config --preset he_normal --seed 42 > "$work/he.json"
cat "$work/he.json"

vsgen config --preset he_normal --seed 42 \
  | vsgen sample --config - --shape 3,3,64,128 -o "$work/conv.safetensors" --name conv1.kernel

vsgen describe --config "$work/he.json" --shape 3,3,64,128

# NPY through a pipe: NumPy's readers need a seekable file, so buffer it.
vsgen sample --config "$work/he.json" --shape 256,128 -o - \
  | python -c "import io, sys, numpy; a = numpy.load(io.BytesIO(sys.stdin.buffer.read())); print(a.shape, a.dtype, round(float(a.std()), 4))"

# The stdout copy and a file copy are the same bytes.
vsgen sample --config "$work/he.json" --shape 256,128 -o "$work/w.npy"
vsgen sample --config "$work/he.json" --shape 256,128 -o - | cmp - "$work/w.npy"
echo "pipeline OK"
