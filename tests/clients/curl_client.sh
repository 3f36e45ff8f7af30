#!/usr/bin/env bash
# The HTTP API driven by curl (run through run_with_server.sh). Prints "N passed, M failed".
set -uo pipefail
passed=0 failed=0
check() {  # check NAME CONDITION-EXIT-STATUS [DETAIL]
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL $1 ${3:-}"; fi
}
u=$ULTRASERVE_URL

out=$(curl -sN "$u/v1/completions" -d '{"prompt":"Hello","max_tokens":8,"stream":true,"temperature":0}')
echo "$out" | head -1 | grep -q '^data: {' ; check "SSE starts with data events" $? "$out"
[ "$(echo "$out" | grep -v '^$' | tail -1)" = "data: [DONE]" ]; check "SSE ends with [DONE]" $? "$out"
echo "$out" | grep -q '"finish_reason":"\(stop\|length\)"'; check "SSE last chunk has a finish reason" $?

out=$(curl -s "$u/v1/chat/completions" -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}')
echo "$out" | grep -q '"object":"chat.completion"'; check "chat completion" $? "$out"
echo "$out" | grep -q '"total_tokens":'; check "chat usage" $? "$out"

code=$(curl -s -o /dev/null -w '%{http_code}' "$u/v1/completions" -d '{bad json')
[ "$code" = 400 ]; check "malformed body is 400" $? "$code"
code=$(head -c 2000000 /dev/zero | tr '\0' a | curl -s -o /dev/null -w '%{http_code}' "$u/v1/completions" --data-binary @-)
[ "$code" = 413 ]; check "oversized body is 413" $? "$code"
curl -s "$u/health" | grep -q '"status":"ok"'; check "health" $?
curl -s "$u/v1/models" | grep -q '"object":"list"'; check "models" $?
curl -s "$u/metrics" | grep -q '^ultraserve_requests_total{outcome="'; check "metrics" $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
