#!/usr/bin/env bash
# Sets up, builds and starts the main job: `ultraserve serve` on http://127.0.0.1:8080 (open it
# in a browser; WebSocket at /v1/stream, OpenAI-compatible API at /v1/...) with the shipped default
# model, models/default, and its DFlash draft. Until that model is trained (models/README.md), a
# small random-weight Qwen3-MoE with the real Qwen3 tokenizer stands in, so the text it streams is
# not meaningful. Extra arguments go to `ultraserve serve` (e.g. --port 9000, --no-draft,
# --config-file config/ultraserve.conf).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target ultraserve
model=models/default
if [ ! -f "$model/config.json" ]; then
  model=data/models/small-qwen3-moe-random
fi
if [ "$model" != models/default ] && [ ! -f "$model/config.json" ]; then
  build/tools/ultraserve make-checkpoint --config config/models/small-qwen3-moe.json \
    --tokenizer data/qwen3-tokenizer/tokenizer.json --out "$model" --seed 1
fi
exec build/tools/ultraserve serve --model "$model" "$@"
