#!/usr/bin/env bash
# Sets up, builds and runs every test, then the whole CPU suite again under AddressSanitizer +
# LeakSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh asan, about 15 minutes on two
# cores; ULTRASERVE_SKIP_SANITIZERS=1 skips it for a quick local run). GPU tests skip where there
# is no GPU (scripts/gpu.sh runs them on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
if [ "${ULTRASERVE_SKIP_SANITIZERS:-0}" != 1 ]; then
  JOBS="${JOBS:-$(nproc)}" scripts/sanitize.sh asan
fi
