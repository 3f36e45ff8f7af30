#!/usr/bin/env python3
"""Reference token ids from Hugging Face `tokenizers` for tests/tokenizer_test.cpp.

Reads the cases made by tokenizer_cases.py and a tokenizer.json, and writes
tests/fixtures/tokenizer/qwen3_reference.jsonl:
  line 1:  {"_meta": {generator, library, library_version, python, tokenizer_json_sha256, ...}}
  then:    {"text": ..., "ids": encode(text).ids, "decoded": decode(ids, skip_special_tokens=False)}
with the library's default encode options (add_special_tokens=True, which adds nothing for
Qwen3: its post-processor is ByteLevel).

This is the authoritative reference (tokenizer_reference.mjs writes the same format with a
JavaScript implementation, for machines without HF tokenizers). Needs `pip install tokenizers`.

Usage:
  python3 tools/reference/tokenizer_reference.py \\
      [--tokenizer data/qwen3-tokenizer/tokenizer.json] \\
      [--cases tests/fixtures/tokenizer/cases.jsonl] \\
      [--out tests/fixtures/tokenizer/qwen3_reference.jsonl]
"""

import argparse
import hashlib
import json
import pathlib
import platform

REPO = pathlib.Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", type=pathlib.Path, default=REPO / "data/qwen3-tokenizer/tokenizer.json")
    ap.add_argument("--cases", type=pathlib.Path, default=REPO / "tests/fixtures/tokenizer/cases.jsonl")
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "tests/fixtures/tokenizer/qwen3_reference.jsonl")
    args = ap.parse_args()

    import tokenizers  # imported late so that --help works without it
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.tokenizer))
    tokenizer_bytes = args.tokenizer.read_bytes()
    cases_bytes = args.cases.read_bytes()
    # Split on "\n" only: the texts contain raw U+2028 / U+0085, which str.splitlines()
    # would also treat as line ends.
    texts = [json.loads(line)["text"] for line in cases_bytes.decode("utf-8").split("\n") if line]

    meta = {
        "generator": "tools/reference/tokenizer_reference.py",
        "library": "tokenizers",
        "library_version": tokenizers.__version__,
        "runtime": f"python {platform.python_version()}",
        "tokenizer_json_sha256": hashlib.sha256(tokenizer_bytes).hexdigest(),
        "cases_sha256": hashlib.sha256(cases_bytes).hexdigest(),
        "cases": len(texts),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps({"_meta": meta}, ensure_ascii=False, separators=(",", ":")) + "\n")
        for text in texts:
            ids = tok.encode(text).ids
            decoded = tok.decode(ids, skip_special_tokens=False)
            f.write(json.dumps({"text": text, "ids": ids, "decoded": decoded}, ensure_ascii=False,
                               separators=(",", ":")) + "\n")
    print(f"wrote {len(texts)} cases ({args.out.stat().st_size} bytes) to {args.out}")


if __name__ == "__main__":
    main()
