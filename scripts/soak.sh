#!/usr/bin/env bash
# Soak: `ultraserve serve` under loadgen for a set time, with connects, disconnects and cancels
# mixed in, sampling the server's memory (RSS) and KV use every 10 s. Reports memory over time
# (it should be flat), errors (there should be none: cancels and drops are not errors) and KV
# blocks leaked (there should be zero once the load stops), as a table and JSON.
#
#   usage: scripts/soak.sh [MINUTES]      (default 30; SOAK_OUT=DIR for the results, default build/soak)
#
# Exits 1 if any request failed, KV blocks stayed in use, the server did not drain and exit
# cleanly, or RSS grew more than SOAK_MAX_RSS_GROWTH percent (default 10) after warm-up:
# SOAK_WARMUP_S seconds (default 600; queues, buffers and the allocator's pools take about ten
# minutes of this load to reach their working size, and a leak keeps growing after that). A run
# shorter than twice the warm-up reports RSS but is too short to judge it.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
out=${SOAK_OUT:-build/soak}
max_growth=${SOAK_MAX_RSS_GROWTH:-10}
warmup=${SOAK_WARMUP_S:-600}
bin=build/tools/ultraserve
[ -x "$bin" ] || scripts/build.sh
rm -rf "$out" && mkdir -p "$out"
work=$(mktemp -d)
server_pid="" sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$bin" make-checkpoint --config tests/fixtures/configs/moe_topk2_norm.json --seed 5 --out "$work/model" >/dev/null
"$bin" serve --model "$work/model" --port 0 --no-admin --device cpu --threads 1 --kv-memory-mb 64 \
  --max-connections 4000 >"$work/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's|.*on http://127.0.0.1:\([0-9]*\) .*|\1|p' "$work/server.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "soak: the server did not start:"; cat "$work/server.log"; exit 1; }
health() { curl -s --max-time 5 "http://127.0.0.1:$port/health"; }
json_number() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }

start=$(date +%s)
echo "seconds,rss_kb,kv_blocks_used,running,queued" >"$out/samples.csv"
(
  while kill -0 "$server_pid" 2>/dev/null; do
    h=$(health || true)
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0)
    echo "$(( $(date +%s) - start )),$rss,$(json_number kv_blocks_used "$h"),$(json_number running "$h"),$(json_number queued "$h")" \
      >>"$out/samples.csv"
    sleep 10
  done
) &
sampler_pid=$!

# Rounds of 1,000 connections (each round connects anew; 5% of them drop mid-stream, 10% of the
# requests are cancelled after their first token) until the time is up.
end=$(( start + minutes * 60 ))
round=0 requests=0 completed=0 cancelled=0 abandoned=0 errors=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  "$bin" loadgen --url "ws://127.0.0.1:$port/v1/stream" --connections 1000 --concurrency 1 --requests 3000 \
    --max-tokens 24 --temperature 0.8 --cancel-fraction 0.1 --disconnect-fraction 0.05 --seed "$round" \
    --timeout-s 600 --json "$work/round.json" >"$work/round.txt" 2>&1 || { cat "$work/round.txt"; errors=$((errors + 1)); }
  r=$(cat "$work/round.json" 2>/dev/null || echo "{}")
  requests=$((requests + $(json_number requests "$r")))
  completed=$((completed + $(json_number completed "$r")))
  cancelled=$((cancelled + $(json_number cancelled "$r")))
  abandoned=$((abandoned + $(json_number abandoned "$r")))
  errors=$((errors + $(json_number errors "$r")))
  grep '^errors ' "$work/round.txt" >>"$out/errors.txt" || true
done

# The load has stopped: every KV block must come back, then SIGTERM must drain and exit cleanly.
leaked=0
for _ in $(seq 100); do
  leaked=$(json_number kv_blocks_used "$(health)")
  [ "$leaked" = 0 ] && break
  sleep 0.1
done
rss_last=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")
rss_max=$(cut -d, -f2 "$out/samples.csv" | tail -n +2 | sort -n | tail -1)
kill "$sampler_pid" 2>/dev/null || true
sampler_pid=""
kill -TERM "$server_pid"
exit_code=0
wait "$server_pid" || exit_code=$?
server_pid=""
elapsed=$(( $(date +%s) - start ))
# The sample nearest the end of warm-up (or the middle of a run too short for one).
warm_at=$(( elapsed >= 2 * warmup ? warmup : elapsed / 2 ))
rss_warm=$(awk -F, -v t="$warm_at" 'NR > 1 && (best == "" || ($1 - t) ^ 2 < d) { d = ($1 - t) ^ 2; best = $2 } END { print best + 0 }' \
  "$out/samples.csv")
growth=$(awk -v a="$rss_warm" -v b="$rss_last" 'BEGIN { printf "%.1f", a ? 100 * (b - a) / a : 0 }')

printf '| minutes | rounds | requests | completed | cancelled | abandoned | errors | RSS after warm-up | RSS max | RSS last | growth | KV leaked | exit |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
printf '| %.1f | %d | %d | %d | %d | %d | %d | %d MB | %d MB | %d MB | %s%% | %s | %d |\n' \
  "$(awk -v s="$elapsed" 'BEGIN { print s / 60 }')" "$round" "$requests" "$completed" "$cancelled" "$abandoned" \
  "$errors" $((rss_warm / 1024)) $((rss_max / 1024)) $((rss_last / 1024)) "$growth" "$leaked" "$exit_code"
[ -s "$out/errors.txt" ] && sort "$out/errors.txt" | uniq -c
cat >"$out/soak.json" <<JSON
{"benchmark": "soak", "seconds": $elapsed, "rounds": $round, "requests": $requests, "completed": $completed,
 "cancelled": $cancelled, "abandoned": $abandoned, "errors": $errors, "rss_kb_after_warmup": $rss_warm, "warmup_s": $warm_at,
 "rss_kb_max": $rss_max, "rss_kb_last": $rss_last, "rss_growth_percent": $growth, "kv_blocks_leaked": $leaked,
 "server_exit_code": $exit_code, "samples": "$out/samples.csv"}
JSON
echo "soak: samples in $out/samples.csv, summary in $out/soak.json"
if [ "$elapsed" -lt $((2 * warmup)) ]; then
  echo "soak: RSS not judged: the run is shorter than twice the ${warmup} s warm-up"
elif ! awk -v g="$growth" -v m="$max_growth" 'BEGIN { exit !(g <= m) }'; then
  echo "soak: RSS grew $growth% after warm-up (limit $max_growth%)"
  exit 1
fi
[ "$errors" = 0 ] && [ "$leaked" = 0 ] && [ "$exit_code" = 0 ] || { echo "soak: FAILED"; exit 1; }
echo "soak: ok"
