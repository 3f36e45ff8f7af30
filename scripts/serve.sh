#!/usr/bin/env bash
# Sets up, builds and starts the main job: `ultraserve serve` on http://127.0.0.1:8080 (open it
# in a browser; WebSocket at /v1/stream, OpenAI-compatible API at /v1/...). Until the shipped
# trained model lands (models/default), the model is a small random-weight Qwen3-MoE with the real
# Qwen3 tokenizer, so the text it streams is not meaningful. Extra arguments go to `ultraserve serve`
# (e.g. --port 9000, --config-file config/ultraserve.conf).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target ultraserve
model=data/models/small-qwen3-moe-random
if [ ! -f "$model/config.json" ]; then
  build/tools/ultraserve make-checkpoint --config config/models/small-qwen3-moe.json \
    --tokenizer data/qwen3-tokenizer/tokenizer.json --out "$model" --seed 1
fi
exec build/tools/ultraserve serve --model "$model" "$@"
