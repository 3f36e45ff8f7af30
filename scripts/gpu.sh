#!/usr/bin/env bash
# The GPU machine, in two steps (it has no network and no Debian packages, so we build here):
#
#   scripts/gpu.sh pack [--gpu-only]
#                                here: build with CUDA (sm_90a), and pack into .gpu/bundle.tar.gz the
#                                binaries, the shared libraries they need that Ubuntu lacks, the random
#                                reference checkpoints, the Qwen3 tokenizer and the training corpus;
#                                --gpu-only: the binaries, libraries and GPU tests alone (a quarter of
#                                the size, room in the 64 MiB a call carries for earlier builds in ab).
#   scripts/gpu.sh run [PART...]
#                                on the GPU machine (device tool: carry [".gpu"]): the parts named, or
#                                all of them: tests (every test binary; gpu-tests: the GPU ones), sanitizer (compute-sanitizer
#                                memcheck on the GPU tests), gpu-bench (ours) and hf-gpu-bench (HF
#                                transformers on the GPU), persistent-bench (batch-1 decode as the
#                                persistent step, its stages timed), spec-bench (DFlash rounds on the GPU: the
#                                30B-A3B shape with its draft's shape, then the shipped pair on the GPU
#                                and on the CPU), mimo-bench (the MiMo-V2-Flash shape cut to 24 and 6
#                                layers, next to HF transformers at 6), ab (earlier builds' gpu_decode_bench, put in
#                                .gpu/ab/NAME/ after packing, alternated with this one), fp8-probe (the scale layouts of
#                                cuBLASLt's block-scaled FP8), gemv-sweep (our GEMV vs cuBLAS for 2-8 rows), attention-sweep
#                                (where a row's attention splits are merged), cpu-bench
#                                (ours, then HF on the CPU),
#                                serving-bench, ncu (hardware counters of two layers' kernels), profile (nsys),
#                                train (tools/train/train.sh: trains the shipped default from the corpus that
#                                tools/train/build_corpus.py made here; TRAIN_ARGS go to train.py), train-draft
#                                (a new draft for the shipped target, then the pair measured on the GPU).
#                                references (the HF fixtures made again: fixtures.tar.gz). Everything
#                                lands in $OUT (run.log with the whole output).
#
# One device call:  run(command="bash scripts/gpu.sh run", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu

pack() {
  local gpu_only=0 tests='*_test'
  [ "${1:-}" = --gpu-only ] && gpu_only=1 tests='gpu_*_test'
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DULTRASERVE_CUDA=ON >/dev/null  # the usual build folder
  cmake --build build -j"$(nproc)"
  rm -rf "$bundle" && mkdir -p "$bundle"/build/tools "$bundle"/build/tests "$bundle"/lib "$bundle"/qwen3-tokenizer
  cp build/tools/ultraserve build/tools/bench/{cpu_generate,gpu_decode,serving,speculative}_bench \
    build/tools/fp8_scale_layout_probe "$bundle"/build/tools/
  find build/tests -maxdepth 1 -type f -name "$tests" -exec cp {} "$bundle"/build/tests/ \;
  strip "$bundle"/build/tools/* "$bundle"/build/tests/*  # the device call carries at most 64 MiB
  # Libraries from Debian packages that the Ubuntu GPU image does not have.
  for bin in "$bundle"/build/tools/* "$bundle"/build/tests/*; do
    ldd "$bin" | awk '/=> \// {print $3}' | grep -E 'libcaf_|libsimdjson|libutf8proc|libpcre2-8' || true
  done | sort -u | xargs -r cp -L -t "$bundle"/lib
  # The reference checkpoints, exactly as the tests will write them again (not for GPU-only runs).
  [ $gpu_only = 1 ] || python3 - <<'PY' | while read -r name config seed dtype shard; do
import json
for c in json.load(open("tests/fixtures/reference/cases.json"))["cases"]:
    print(c["name"], c["config"], c["seed"], c["dtype"], c["shard_mb"])
PY
    build/tools/ultraserve make-checkpoint --config "tests/fixtures/configs/$config" --seed "$seed" \
      --dtype "$dtype" --shard-mb "$shard" --out "$bundle/reference-checkpoints/$name" 2>/dev/null
  done
  if [ $gpu_only = 0 ]; then
    cp -r data/qwen3-tokenizer/. "$bundle"/qwen3-tokenizer/
    [ -d data/train/corpus ] && cp -r data/train/corpus "$bundle"/train-corpus  # for the train part
  fi
  # Compressed, it travels in a third of the space (the device call carries at most 64 MiB).
  tar -czf /tmp/ultraserve-bundle.tar.gz -C "$bundle" . && rm -rf "$bundle" && mkdir "$bundle"
  mv /tmp/ultraserve-bundle.tar.gz "$bundle"/bundle.tar.gz
  du -sh "$bundle"
}

# bench_pair MODEL TAG DEVICE:PLACE...: speculative_bench of MODEL and its draft/ on 20 held-out prompts
# (document starts or middles, spread over the held-out file), on each device named.
bench_pair() {
  local model=$1 tag=$2 failed=0 heldout=()
  shift 2
  [ -f "$bundle"/train-corpus/heldout.jsonl ] && heldout=(--text "$bundle"/train-corpus/heldout.jsonl)
  for run in "$@"; do
    "$bundle"/build/tools/speculative_bench --device "${run%%:*}" --model "$model" --draft "$model/draft" \
      "${heldout[@]}" --from "${run##*:}" --prompts 20 --new-tokens 200 \
      --json "$out/spec_${tag}_${run%%:*}_${run##*:}.json" || failed=1
  done
  return $failed
}

run() {
  local out=${OUT:-/tmp/ultraserve-out}
  mkdir -p "$out"
  [ -f "$bundle"/bundle.tar.gz ] && tar -xzf "$bundle"/bundle.tar.gz -C "$bundle"
  export LD_LIBRARY_PATH="$PWD/$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export ULTRASERVE_SOURCE_DIR="$PWD" ULTRASERVE_BINARY_DIR="$PWD/$bundle/build"
  export NCCL_NVLS_ENABLE=0
  mkdir -p data && rm -rf data/qwen3-tokenizer && cp -r "$bundle"/qwen3-tokenizer data/

  local parts=("$@")
  [ ${#parts[@]} -eq 0 ] && parts=(tests sanitizer gpu-bench spec-bench mimo-bench hf-gpu-bench cpu-bench serving-bench)
  local logs; logs=$(mktemp -d) failed=0
  echo "== devices"
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
  "$bundle"/build/tools/ultraserve devices --bandwidth
  for part in "${parts[@]}"; do
    echo "== $part"
    case "$part" in
      tests | gpu-tests)  # every test binary, or only the GPU ones (gpu_*_test)
        local pattern='*_test'; [ "$part" = gpu-tests ] && pattern='gpu_*_test'
        for t in "$bundle"/build/tests/$pattern; do
          local log="$logs/$(basename "$t").log"
          "$t" --gtest_brief=1 >"$log" 2>&1 || { failed=1; echo "FAILED: $t"; tail -30 "$log"; }
          grep -E '^\[ (gpu|reference) \]|PASSED|FAILED|SKIPPED' "$log" | sed "s|^|$(basename "$t"): |" || true
        done ;;
      sanitizer)
        local sanitizer=/usr/local/cuda/bin/compute-sanitizer
        [ -x "$sanitizer" ] || sanitizer=$(command -v compute-sanitizer || true)
        if [ -z "$sanitizer" ]; then echo "compute-sanitizer not found"; failed=1; continue; fi
        "$sanitizer" --tool memcheck --leak-check full --error-exitcode 3 "$bundle"/build/tests/gpu_model_test \
          --gtest_brief=1 >"$logs/memcheck.log" 2>&1 || { failed=1; echo "FAILED: memcheck"; }
        tail -5 "$logs/memcheck.log"
        # The draft's pass, the verify rounds and their sampling (the greedy sweep is the same kernels, 150 times).
        "$sanitizer" --tool memcheck --leak-check full --error-exitcode 3 "$bundle"/build/tests/gpu_speculative_test \
          --gtest_filter='*Proposes*:*Sampled*:*Refused*' --gtest_brief=1 >"$logs/memcheck_speculative.log" 2>&1 ||
          { failed=1; echo "FAILED: memcheck (speculative)"; }
        tail -5 "$logs/memcheck_speculative.log" ;;
      gpu-bench)  # with the SM clock sampled alongside: a latency-bound step runs at the clock it gets
        nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw --format=csv,noheader,nounits -lms 100 >"$logs/clocks.csv" &
        local sampler=$!
        "$bundle"/build/tools/gpu_decode_bench --config config/models/qwen3-30b-a3b.json --json "$out"/gpu_decode.json
        kill "$sampler" || true
        sort -t, -k1 -n "$logs/clocks.csv" | awk -F, '{c[NR]=$1} END {if (NR) printf "SM clock during the bench: min %d, median %d, max %d MHz (%d samples)\n", c[1], c[int((NR+1)/2)], c[NR], NR}' ;;
      persistent-bench)  # batch-1 decode as the persistent step (off by default: docs/perf.md), its stages timed
        "$bundle"/build/tools/gpu_decode_bench --config config/models/qwen3-30b-a3b.json --persistent 1 --batches '[8]' \
          --pass-tokens '[1]' --json "$out"/gpu_decode_persistent.json || failed=1 ;;
      spec-bench)  # draft and verify times of the 30B-A3B shape; tau and tokens/s of the shipped pair
        "$bundle"/build/tools/speculative_bench --device cuda --config config/models/qwen3-30b-a3b.json \
          --draft-config config/models/qwen3-coder-30b-a3b-dflash.json --prompts 2 --json "$out"/spec_30b.json || failed=1
        # The shipped pair on held-out prompts: document starts on the GPU and the CPU, document middles on the GPU.
        bench_pair models/default default cuda:starts cpu:starts cuda:middles || failed=1 ;;
      train-draft)  # a new draft for the shipped target (TRAIN_ARGS go to train.py), then the pair on the GPU
        local work; work=$(mktemp -d)
        # shellcheck disable=SC2086  # TRAIN_ARGS are words for train.py
        python3 tools/train/train.py --corpus "$bundle"/train-corpus --target-from models/default --out "$work/trained" \
          ${TRAIN_ARGS:-} || { failed=1; continue; }
        cp "$work/training.json" "$out/draft-training.json"
        cp -r models/default "$work/pair" && rm -rf "$work/pair/draft" && cp -r "$work/trained/draft" "$work/pair/draft"
        tar -czf "$out/draft.tar.gz" -C "$work/pair" draft
        bench_pair "$work/pair" new_draft cuda:starts cuda:middles || failed=1 ;;
      gemv-sweep)  # where our GEMV should hand over to cuBLAS: passes of 2..8 rows at each threshold
        for rows in 8 4 2 0; do
          echo "-- gemv_max_rows $rows"
          "$bundle"/build/tools/gpu_decode_bench --contexts '[128]' --batches '[4,8]' --pass-tokens '[2,4,8]' \
            --steps 30 --gemv-rows "$rows" --json "$out/gemv_sweep_$rows.json" | grep -E '^\| \| [0-9]' || failed=1
          "$bundle"/build/tools/speculative_bench --device cuda --config config/models/qwen3-30b-a3b.json \
            --draft-config config/models/qwen3-coder-30b-a3b-dflash.json --prompts 1 --new-tokens 32 --blocks '[4,8]' \
            --gemv-rows "$rows" | grep -E '^\| [0-9]|plain decode' || failed=1
        done ;;
      attention-sweep)  # how short a row's attention splits may be, and where the combine kernel should
                        # hand their merge to the row's last attention block (positions:splits)
        for pair in 64:16 128:8 128:16 128:32 256:16; do
          echo "-- attention_split_positions ${pair%%:*}, attention_combine_max_splits ${pair##*:}"
          "$bundle"/build/tools/gpu_decode_bench --contexts '[128,1024,2048,4096]' --batches '[8]' --batch-context 2048 \
            --pass-tokens '[8]' --steps 50 --split-positions "${pair%%:*}" --combine-max-splits "${pair##*:}" \
            --json "$out/attention_sweep_${pair/:/_}.json" | grep -E '^\| \| [0-9]' || failed=1
        done ;;
      ncu)  # hardware counters of two layers' kernels of a batch-1 decode step (Nsight Compute)
        local ncu; ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
        if [ -z "$ncu" ]; then echo "ncu not found"; continue; fi
        "$ncu" --clock-control none --csv --page raw --launch-skip 45 --launch-count 22 \
          -k 'regex:gemv|qk_norm|attention_kernel|combine|add_rms|route|gate_up|down_kernel' \
          --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,gpc__cycles_elapsed.avg.per_second,launch__grid_size \
          "$bundle"/build/tools/gpu_decode_bench --contexts '[128]' --batches '[1]' --pass-tokens '[1]' --steps 2 \
          >"$logs/ncu.csv" 2>"$logs/ncu.err" || { echo "ncu failed"; tail -5 "$logs/ncu.err"; }
        python3 - "$logs/ncu.csv" <<'PY' || true
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head, units, data = rows[0], rows[1], rows[2:]
pick = ["Kernel Name", "gpu__time_duration.sum", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
        "sm__throughput.avg.pct_of_peak_sustained_elapsed", "gpc__cycles_elapsed.avg.per_second", "launch__grid_size"]
idx = [head.index(p) for p in pick]
print("| kernel | time | DRAM % | SM % | clock | grid |")
for r in data:
    v = [r[i] for i in idx]
    print("| " + v[0].split("(")[0][-40:] + " | " + " | ".join(f"{x} {units[i]}".strip() for x, i in zip(v[1:], idx[1:])) + " |")
PY
        ;;
      ab)  # what a kernel change is worth: gpu_decode_bench of each earlier build put in .gpu/ab/NAME/ by
           # hand after `pack`, and of this one, alternated twice in the same call (A/B/A/B)
        for round in 1 2; do
          for bench in "$bundle"/ab/*/gpu_decode_bench "$bundle"/build/tools/gpu_decode_bench; do
            [ -x "$bench" ] || continue  # no earlier builds put in .gpu/ab: this one alone
            local name; name=$(basename "$(dirname "$bench")"); [ "$name" = tools ] && name=this
            echo "-- $name, round $round"
            "$bench" --config config/models/qwen3-30b-a3b.json --contexts '[128,4096]' --batches '[8]' --pass-tokens '[8]' \
              --steps 100 --json "$out/ab_${name}_$round.json" | grep -E '^\| (ultraserve|\| )' || failed=1
          done
        done ;;
      fp8-probe)  # the scale layouts cuBLASLt's block-scaled FP8 matmul reads, against an fp64 reference
        "$bundle"/build/tools/fp8_scale_layout_probe || failed=1 ;;
      hf-gpu-bench)
        python3 tools/reference/hf_gpu_decode_bench.py --config config/models/qwen3-30b-a3b.json \
          --json "$out"/hf_gpu_decode.json || failed=1 ;;
      mimo-bench)  # the MiMo-V2-Flash shape (FP8 attention, MXFP4 experts) cut to 24 layers and to 6; HF at 6
        for layers in 24 6; do
          "$bundle"/build/tools/gpu_decode_bench --config config/models/mimo-v2-flash.json --layers "$layers" \
            --batches '[8,32,64]' --json "$out/gpu_decode_mimo_${layers}l.json" || failed=1
        done
        echo "-- 6 layers, FP8 (and bf16) GEMV up to 8 rows instead of 2"
        "$bundle"/build/tools/gpu_decode_bench --config config/models/mimo-v2-flash.json --layers 6 --gemv-rows 8 \
          --contexts '[128]' --batches '[4,8]' --steps 30 --json "$out/gpu_decode_mimo_6l_gemv8.json" |
          grep -E '^\| \| [0-9]' || failed=1
        echo "-- 24 layers, FP8 projections of passes beyond 2 rows on FP8 tensor cores"
        "$bundle"/build/tools/gpu_decode_bench --config config/models/mimo-v2-flash.json --layers 24 --fp8-tensor-cores \
          --contexts '[128]' --batches '[8,32,64]' --steps 30 --json "$out/gpu_decode_mimo_24l_fp8_tc.json" |
          grep -E '^\| \| [0-9]' || failed=1
        python3 tools/reference/hf_gpu_decode_bench.py --config config/models/mimo-v2-flash.json --layers 6 \
          --json "$out"/hf_gpu_decode_mimo_6l.json || failed=1 ;;
      profile)  # where a batch-1 decode step spends its time, kernel by kernel
        local nsys; nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1 || true)
        if [ -z "$nsys" ]; then echo "nsys not found"; continue; fi
        "$nsys" profile --cuda-graph-trace=node --force-overwrite true -o /tmp/decode "$bundle"/build/tools/gpu_decode_bench \
          --contexts '[128]' --batches '[1]' --pass-tokens '[1]' --steps 20 >/dev/null
        "$nsys" stats --report cuda_gpu_kern_sum --format csv /tmp/decode.nsys-rep 2>/dev/null | cut -d, -f1-4,9 | head -30 ;;
      cpu-bench)
        local model=/tmp/small-qwen3-moe
        "$bundle"/build/tools/ultraserve make-checkpoint --config config/models/small-qwen3-moe.json --seed 1 \
          --tokenizer data/qwen3-tokenizer/tokenizer.json --out "$model"
        "$bundle"/build/tools/cpu_generate_bench --model "$model" --threads '[1,2,16]' --json "$out"/cpu_generate.json
        python3 tools/reference/hf_generate_bench.py --model "$model" --threads 1,2,16 --json "$out"/hf_cpu_generate.json ;;
      serving-bench)
        ulimit -n 65536 || true
        "$bundle"/build/tools/serving_bench --ultraserve "$bundle"/build/tools/ultraserve \
          --connections '[100,1000,10000]' --json "$out"/serving.json ;;
      references)  # the HF fixtures, made again from the same checkpoints (fixtures.tar.gz)
        echo "HF transformers $(python3 -c 'import transformers; print(transformers.__version__)')"
        { python3 tools/reference/model_reference.py --cases tests/fixtures/reference/cases.json \
            --checkpoints "$bundle"/reference-checkpoints --out tests/fixtures/reference &&
          python3 tools/reference/tokenizer_reference.py --cases tests/fixtures/tokenizer/cases.jsonl \
            --tokenizer data/qwen3-tokenizer/tokenizer.json --out tests/fixtures/tokenizer/qwen3_reference.jsonl &&
          "$bundle"/build/tools/ultraserve make-checkpoint --config tests/fixtures/configs/moe_fp8_partial_blocks.json \
            --seed 11 --dtype fp8 --out /tmp/fp8-reference-checkpoint >/dev/null &&
          CUDA_VISIBLE_DEVICES= python3 tools/reference/fp8_reference.py --checkpoint /tmp/fp8-reference-checkpoint \
            --out tests/fixtures/reference/fp8_moe_partial_blocks.safetensors; } || failed=1
        tar -czf "$out"/fixtures.tar.gz tests/fixtures/reference/*.safetensors tests/fixtures/tokenizer/qwen3_reference* ;;
      train)
        # shellcheck disable=SC2086  # TRAIN_ARGS are words for train.py
        tools/train/train.sh "$bundle"/build/tools/ultraserve "$bundle"/train-corpus data/qwen3-tokenizer/tokenizer.json \
          "$out" ${TRAIN_ARGS:-} || failed=1 ;;
      *) echo "unknown part $part"; failed=1 ;;
    esac
  done
  tar -czf "$out"/logs.tar.gz -C "$logs" .
  return $failed
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu.sh pack [--gpu-only] | run [tests|gpu-tests|sanitizer|gpu-bench|spec-bench|gemv-sweep|hf-gpu-bench|cpu-bench|serving-bench|ncu|profile|train|references ...]" >&2; exit 2 ;;
esac
