#!/usr/bin/env bash
# Run every example; CI calls this. Each example checks its own results.
set -euo pipefail
cd "$(dirname "$0")"
bash pipeline.sh
python python_api.py
python torch_linear.py
python torch_like.py
for extra in shards.py transformer_block.py keras_and_jax.py; do
  if [ -f "$extra" ]; then python "$extra"; fi
done
echo "all examples OK"
