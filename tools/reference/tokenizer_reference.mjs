#!/usr/bin/env node
// Reference token ids from @lenml/tokenizers (a dependency-free fork of the transformers.js
// tokenizers), an implementation we did not write, for tests/tokenizer_test.cpp.
//
// Same output format as tokenizer_reference.py (the HF tokenizers reference, which is
// the one that counts): a metadata line {"_meta": {...}}, then one line per case
// {"text", "ids", "decoded"} with ids = encode(text) (default options) and
// decoded = decode(ids, skip_special_tokens=false).
//
// Setup (outside the repository; do not commit node_modules):
//   mkdir -p /tmp/lenml && cd /tmp/lenml && npm install @lenml/tokenizers
// Run:
//   NODE_PATH=/tmp/lenml/node_modules node tools/reference/tokenizer_reference.mjs \
//     --tokenizer data/qwen3-tokenizer/tokenizer.json \
//     [--config path/to/tokenizer_config.json] \
//     [--cases tests/fixtures/tokenizer/cases.jsonl] \
//     [--out tests/fixtures/tokenizer/qwen3_reference.jsonl]
// (ES modules ignore NODE_PATH; the script resolves the package through it itself.)
//
// Known differences from HF tokenizers (the C++ test skips these cases when the fixture
// was made by this script, see js_quirk() in tests/tokenizer_test.cpp):
//  - JavaScript's \s includes U+FEFF and excludes U+0085; Oniguruma's (HF) is the other
//    way round, so texts with either character may split differently.
//  - transformers.js rewrites (?i:'s|'t|...) as explicit [sS]... classes, so "'ſ"
//    (U+017F, which case-folds to s) is a contraction for HF but not here.

import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { createRequire } from "node:module";

const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, "..", "..");

function parseArgs(argv) {
  const args = {
    tokenizer: path.join(repo, "data/qwen3-tokenizer/tokenizer.json"),
    config: null,
    cases: path.join(repo, "tests/fixtures/tokenizer/cases.jsonl"),
    out: path.join(repo, "tests/fixtures/tokenizer/qwen3_reference.jsonl"),
  };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in args) || i + 1 >= argv.length) {
      console.error(`usage: tokenizer_reference.mjs [--tokenizer F] [--config F] [--cases F] [--out F]`);
      process.exit(2);
    }
    args[key] = argv[i + 1];
  }
  if (!args.config) args.config = path.join(path.dirname(args.tokenizer), "tokenizer_config.json");
  return args;
}

// Resolve @lenml/tokenizers from NODE_PATH entries or the current directory.
async function importLenml() {
  const roots = [...(process.env.NODE_PATH || "").split(path.delimiter).filter(Boolean), process.cwd()];
  for (const root of roots) {
    let resolved;
    try {
      resolved = createRequire(path.join(path.resolve(root), "noop.js")).resolve("@lenml/tokenizers");
    } catch {
      continue;
    }
    // The package does not export its package.json: walk up to it for the version.
    let dir = path.dirname(resolved);
    while (!fs.existsSync(path.join(dir, "package.json")) && dir !== path.dirname(dir)) dir = path.dirname(dir);
    const version = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;
    return { mod: await import(resolved), version };
  }
  console.error("cannot find @lenml/tokenizers: npm install it in a scratch dir and set NODE_PATH to its node_modules");
  process.exit(1);
}

const sha256 = (buf) => crypto.createHash("sha256").update(buf).digest("hex");

const args = parseArgs(process.argv);
const { mod, version } = await importLenml();
const tokenizerBytes = fs.readFileSync(args.tokenizer);
const tokenizerJSON = JSON.parse(tokenizerBytes.toString("utf8"));
const tokenizerConfig = fs.existsSync(args.config) ? JSON.parse(fs.readFileSync(args.config, "utf8")) : {};
const tokenizer = mod.TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });

const casesBytes = fs.readFileSync(args.cases);
// Split on "\n" only: texts contain raw U+2028/U+0085, which are not line ends here.
const cases = casesBytes.toString("utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).text);

const out = [];
out.push(
  JSON.stringify({
    _meta: {
      generator: "tools/reference/tokenizer_reference.mjs",
      library: "@lenml/tokenizers",
      library_version: version,
      runtime: `node ${process.version}`,
      tokenizer_json_sha256: sha256(tokenizerBytes),
      cases_sha256: sha256(casesBytes),
      cases: cases.length,
    },
  })
);
for (const text of cases) {
  const ids = tokenizer.encode(text, { add_special_tokens: true });
  // decode() refuses an empty list; HF returns "" for it.
  const decoded =
    ids.length === 0
      ? ""
      : tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  out.push(JSON.stringify({ text, ids, decoded }));
}
fs.mkdirSync(path.dirname(args.out), { recursive: true });
fs.writeFileSync(args.out, out.join("\n") + "\n");
console.log(`wrote ${cases.length} cases (${fs.statSync(args.out).size} bytes) to ${args.out}`);
