#!/usr/bin/env bash
# The whole training of the shipped default, on the GPU machine (scripts/gpu.sh run train calls it):
#   tools/train/train.sh ULTRASERVE CORPUS QWEN3_TOKENIZER OUT [train.py arguments...]
# 1. tools/train/train.py: tokenizer, target, draft (BF16) into WORK/default-bf16
# 2. `ultraserve quantize`: the target's experts to MXFP4, into WORK/default (the draft copied beside)
# 3. `ultraserve evaluate`: held-out perplexity (MXFP4 vs BF16 top-1 agreement), tau for B = 4, 8, 16
# 4. HF tokenizers' ids for the tokenizer test cases (a fixture for ultraserve's tokenizer test)
# OUT receives default-model.tar.gz (models/default as it is to be committed), training.json,
# evaluate.json and the tokenizer fixture.
set -euo pipefail
ultraserve=$1 corpus=$2 qwen3_tokenizer=$3 out=$4
shift 4
work=$(mktemp -d)
python3 tools/train/train.py --corpus "$corpus" --qwen3-tokenizer "$qwen3_tokenizer" --out "$work/default-bf16" "$@"
cp "$work/training.json" "$out/"

"$ultraserve" quantize --model "$work/default-bf16" --out "$work/default"
cp -r "$work/default-bf16/draft" "$work/default/draft"
du -sh "$work/default" "$work/default/draft"

python3 tools/reference/tokenizer_reference.py --cases tests/fixtures/tokenizer/cases.jsonl \
  --tokenizer "$work/default/tokenizer.json" --out "$out/default_tokenizer_reference.jsonl"
tar -czf "$out/default-model.tar.gz" -C "$work" default
ls -la "$out"
# TRAIN_EVALUATE=0 leaves this to a later `ultraserve evaluate` (the device call's time is bounded).
if [ "${TRAIN_EVALUATE:-1}" != 0 ]; then
  "$ultraserve" evaluate --model "$work/default" --compare "$work/default-bf16" --text "$corpus/heldout.jsonl" \
    --blocks '[4,8,16]' --json "$out/evaluate.json"
else  # the BF16 original, for evaluate --compare wherever it runs (29 MB: not for git; in parts, as the
      # device call returns files of at most 16 MiB)
  tar -czf - -C "$work" default-bf16 | split -b 15m - "$out/default-bf16.tar.gz.part-"
fi
