#!/usr/bin/env bash
# Sets up, builds and starts the main job: `ultraserve serve` on http://127.0.0.1:8080 (open it
# in a browser; WebSocket at /v1/stream, OpenAI-compatible API at /v1/...) with the shipped default
# model, models/default, and its DFlash draft (models/README.md), on the GPU if there is one, else on
# the CPU. Extra arguments go to `ultraserve serve` (e.g. --port 9000, --no-draft,
# --config-file config/ultraserve.conf, --model DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target ultraserve
exec build/tools/ultraserve serve "$@"  # the model defaults to models/default
