#!/usr/bin/env bash
# The GPU machine, in two steps (it has no network and no Debian packages, so we build here):
#
#   scripts/gpu.sh pack          here: build with CUDA (sm_90a), and gather into .gpu/ the binaries,
#                                the shared libraries they need that Ubuntu lacks, the random reference
#                                checkpoints and the Qwen3 tokenizer.
#   scripts/gpu.sh run [--references]
#                                on the GPU machine (device tool: carry [".gpu"]): GPU tests, the
#                                test suite, benchmarks with their reference systems; --references also
#                                regenerates the HF reference fixtures. Everything lands in $OUT.
#
# One device call:  run(command="bash scripts/gpu.sh run", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu

pack() {
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DULTRASERVE_CUDA=ON >/dev/null
  cmake --build build-gpu -j"$(nproc)"
  rm -rf "$bundle" && mkdir -p "$bundle"/build/tools "$bundle"/build/tests "$bundle"/lib
  cp build-gpu/tools/ultraserve build-gpu/tools/bench/cpu_generate_bench "$bundle"/build/tools/
  find build-gpu/tests -maxdepth 1 -type f -name '*_test' -exec cp {} "$bundle"/build/tests/ \;
  # Libraries from Debian packages that the Ubuntu GPU image does not have.
  for bin in "$bundle"/build/tools/* "$bundle"/build/tests/*; do
    ldd "$bin" | awk '/=> \// {print $3}' | grep -E 'libcaf_|libsimdjson|libutf8proc|libpcre2-8' || true
  done | sort -u | xargs -r cp -L -t "$bundle"/lib
  # The reference checkpoints, exactly as the tests will write them again.
  python3 - <<'PY' | while read -r name config seed dtype shard; do
import json
for c in json.load(open("tests/fixtures/reference/cases.json"))["cases"]:
    print(c["name"], c["config"], c["seed"], c["dtype"], c["shard_mb"])
PY
    build-gpu/tools/ultraserve make-checkpoint --config "tests/fixtures/configs/$config" --seed "$seed" \
      --dtype "$dtype" --shard-mb "$shard" --out "$bundle/reference-checkpoints/$name" 2>/dev/null
  done
  cp -r data/qwen3-tokenizer "$bundle"/
  du -sh "$bundle"
}

run() {
  local out=${OUT:-/tmp/ultraserve-out}
  mkdir -p "$out"
  export LD_LIBRARY_PATH="$PWD/$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export ULTRASERVE_SOURCE_DIR="$PWD" ULTRASERVE_BINARY_DIR="$PWD/$bundle/build"
  export NCCL_NVLS_ENABLE=0
  mkdir -p data && rm -rf data/qwen3-tokenizer && cp -r "$bundle"/qwen3-tokenizer data/

  if [ "${1:-}" = "--references" ]; then
    echo "== reference fixtures (HF transformers $(python3 -c 'import transformers; print(transformers.__version__)'))"
    python3 tools/reference/model_reference.py --cases tests/fixtures/reference/cases.json \
      --checkpoints "$bundle"/reference-checkpoints --out tests/fixtures/reference
    python3 tools/reference/tokenizer_reference.py --cases tests/fixtures/tokenizer/cases.jsonl \
      --tokenizer data/qwen3-tokenizer/tokenizer.json --out tests/fixtures/tokenizer/qwen3_reference.jsonl
    tar -czf "$out"/fixtures.tar.gz tests/fixtures/reference/*.safetensors tests/fixtures/tokenizer/qwen3_reference*
  fi

  local logs; logs=$(mktemp -d)
  echo "== devices"
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
  "$bundle"/build/tools/ultraserve devices --bandwidth
  echo "== tests"
  local failed=0
  for t in "$bundle"/build/tests/*_test; do
    local log="$logs/$(basename "$t").log"
    "$t" --gtest_brief=1 >"$log" 2>&1 || { failed=1; echo "FAILED: $t"; tail -30 "$log"; }
    grep -E '^\[ (gpu|reference) \]|PASSED|FAILED|SKIPPED' "$log" | sed "s|^|$(basename "$t"): |" || true
  done
  echo "== benchmarks (CPU of the GPU machine; ours next to HF transformers on the same checkpoint)"
  local model=/tmp/small-qwen3-moe
  "$bundle"/build/tools/ultraserve make-checkpoint --config config/models/small-qwen3-moe.json --seed 1 \
    --tokenizer data/qwen3-tokenizer/tokenizer.json --out "$model"
  "$bundle"/build/tools/cpu_generate_bench --model "$model" --threads '[1,2,16]' --json "$out"/cpu_generate.json
  python3 tools/reference/hf_generate_bench.py --model "$model" --threads 1,2,16 --json "$out"/hf_cpu_generate.json
  tar -czf "$out"/logs.tar.gz -C "$logs" .
  return $failed
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu.sh pack | run [--references]" >&2; exit 2 ;;
esac
