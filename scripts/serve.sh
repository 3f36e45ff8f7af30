#!/usr/bin/env bash
# Sets up, builds and starts the main job.
# Today that is `ultraserve generate` on a small random-weight Qwen3-MoE model that uses the real
# Qwen3 tokenizer (the output is therefore not meaningful text); it becomes the server, with a
# trained default model, as the serving issues land. Extra arguments go to `ultraserve generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target ultraserve
model=data/models/small-qwen3-moe-random
if [ ! -f "$model/config.json" ]; then
  build/tools/ultraserve make-checkpoint --config config/models/small-qwen3-moe.json \
    --tokenizer data/qwen3-tokenizer/tokenizer.json --out "$model" --seed 1
fi
exec build/tools/ultraserve generate --model "$model" --prompt "Translate to French: the house is red." \
  --chat --max-tokens 48 "$@"
