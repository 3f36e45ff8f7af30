#!/usr/bin/env bash
# Starts `ultraserve serve` on a free port with a small random model, runs the given command
# with ULTRASERVE_URL set (http://127.0.0.1:PORT), then stops the server.
#   usage: run_with_server.sh ULTRASERVE_BINARY COMMAND [ARGS...]
set -euo pipefail
binary=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
server_pid=""
# The server must also stop cleanly (exit 0 on SIGTERM): under the sanitizers (scripts/sanitize.sh)
# a report it makes while shutting down, such as a leak, fails the test, not only a failed client.
cleanup() {
  local status=$? server_status=0
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || server_status=$?
    if [ "$server_status" -ne 0 ]; then
      echo "the server exited with status $server_status:"
      cat "$work/server.log"
      [ "$status" -ne 0 ] || status=1
    fi
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
"$binary" make-checkpoint --config "$root/tests/fixtures/configs/moe_topk2_norm.json" --seed 5 --out "$work/model" 2>/dev/null
: >"$work/server.log"  # exists before the loop below reads it (the server's redirection may come later)
"$binary" serve --model "$work/model" --port 0 --no-admin --threads 1 --kv-memory-mb 16 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  port=$(sed -n 's|.*on http://127.0.0.1:\([0-9]*\) .*|\1|p' "$work/server.log")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "the server did not start:"; cat "$work/server.log"; exit 1; }
export ULTRASERVE_URL="http://127.0.0.1:$port"
"$@"
