#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ with clang (-fsanitize=fuzzer,address,undefined)
# into build-fuzz/, runs each for SECONDS (default 60) from its seed corpus, and prints a table
# of executions and crashes (also written to build-fuzz/fuzz-results.json).
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 120, scripts/fuzz.sh 30 tokenizer
# Crash, timeout and out-of-memory inputs go to build-fuzz/crashes/<target>/; replay one with
#   build-fuzz/tests/fuzz/<target>_fuzzer build-fuzz/crashes/<target>/crash-...
# Inputs the fuzzer found interesting accumulate in build-fuzz/corpus/<target>/ (the committed
# seeds in tests/fuzz/corpus/ are only read). Environment: JOBS (build parallelism, default 2),
# ULTRASERVE_TOKENIZER_JSON (the tokenizer target's tokenizer.json).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-60}
shift || true
[[ "$duration" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2; }
all_targets=(ws_message openai_body safetensors model_config tokenizer_json tokenizer)
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")

# Everything the normal build needs (and the Qwen3 tokenizer), then clang and its libFuzzer
# runtime: not part of scripts/test.sh, so not in setup.sh's list. Idempotent like setup.sh.
# clang 16 (Debian 12 main), not the default clang 14: 14 has no _Float16 on x86-64, which
# model/random_checkpoint.cpp uses.
clang_version=16
scripts/setup.sh clang-$clang_version libclang-rt-$clang_version-dev

build=build-fuzz
# Symbolized stacks in crash reports; UBSan findings abort (the build also sets -fno-sanitize-recover).
symbolizer=/usr/lib/llvm-$clang_version/bin/llvm-symbolizer
[ -x "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cmake -S . -B $build -DCMAKE_CXX_COMPILER=clang++-$clang_version -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DULTRASERVE_FUZZ=ON -DULTRASERVE_CUDA=OFF >/dev/null
build_targets=()
for t in "${targets[@]}"; do build_targets+=(--target "${t}_fuzzer"); done
cmake --build $build -j"${JOBS:-2}" "${build_targets[@]}"

results=()
for t in "${targets[@]}"; do
  corpus=$build/corpus/$t crashes=$build/crashes/$t log=$build/logs/$t.log
  mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
  marker=$(mktemp)
  dict=()
  [ "$t" != tokenizer ] && dict=(-dict=tests/fuzz/json.dict)
  echo "fuzz: $t for ${duration}s"
  # -fork=1 with -ignore_*: a crash does not end the run; each distinct one is saved and counted.
  # The first corpus directory receives new inputs; the seeds are only read.
  set +e
  "$build/tests/fuzz/${t}_fuzzer" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_total_time="$duration" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$crashes/" "${dict[@]}" "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  # Fork mode's status lines: "#<executions>: cov: ... oom/timeout/crash: a/b/c time: ...".
  execs=$(grep -oE '^#[0-9]+:' "$log" | tail -1 | tr -d '#:' || true)
  found=$(find "$crashes" -type f -newer "$marker" | wc -l)
  rm -f "$marker"
  corpus_size=$(find "$corpus" -type f | wc -l)
  results+=("$t ${execs:-0} $found $corpus_size $rc")
done

echo
printf '%-16s %14s %8s %8s\n' target executions crashes corpus
json="{\"date\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"seconds_per_target\":$duration,\"host_cores\":$(nproc),\"targets\":["
sep="" failed=0
for r in "${results[@]}"; do
  read -r t execs found corpus_size rc <<<"$r"
  printf '%-16s %14s %8s %8s\n' "$t" "$execs" "$found" "$corpus_size"
  json+="$sep{\"target\":\"$t\",\"executions\":$execs,\"crashes\":$found,\"corpus\":$corpus_size,\"exit\":$rc,\"crash_dir\":\"$build/crashes/$t\"}"
  sep=","
  ((found == 0)) || failed=1
  # A fuzzer that could not start (e.g. no tokenizer.json) runs nothing: that is a failure too.
  ((execs > 0)) || { echo "fuzz: $t ran no inputs; see $build/logs/$t.log" >&2; failed=1; }
done
json+="]}"
echo "$json" >$build/fuzz-results.json
echo "fuzz: results in $build/fuzz-results.json, logs in $build/logs/, crash inputs in $build/crashes/"
exit $failed
