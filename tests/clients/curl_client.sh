#!/usr/bin/env bash
# The HTTP API driven by curl (run through run_with_server.sh). Prints "N passed, M failed".
set -uo pipefail
passed=0 failed=0
check() {  # check NAME CONDITION-EXIT-STATUS [DETAIL]
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL $1 ${3:-}"; fi
}
# Output is checked from variables (grep <<<"$out"), never as `curl | grep -q`: grep -q exits at
# its first match, a curl still writing then fails with status 23 (write error), and pipefail
# turns that into a failed check -- 7% of /metrics checks under ThreadSanitizer, whose slower
# server sends the response in more pieces.
check_stream() {  # check_stream NAME OUTPUT OBJECT: an OpenAI SSE stream of OBJECT chunks, ended by [DONE]
  [[ "$2" == "data: {"* ]]; check "$1 SSE starts with data events" $? "$2"
  grep -q "\"object\":\"$3\"" <<<"$2"; check "$1 SSE chunks are $3" $? "$2"
  [ "$(grep -v '^$' <<<"$2" | tail -1)" = "data: [DONE]" ]; check "$1 SSE ends with [DONE]" $? "$2"
  grep -q '"finish_reason":"\(stop\|length\)"' <<<"$2"; check "$1 SSE last chunk has a finish reason" $?
}
u=$ULTRASERVE_URL

out=$(curl -sN "$u/v1/completions" -d '{"prompt":"Hello","max_tokens":8,"stream":true,"temperature":0}')
check_stream completion "$out" text_completion
out=$(curl -sN "$u/v1/chat/completions" -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}')
check_stream chat "$out" chat.completion.chunk

out=$(curl -s "$u/v1/chat/completions" -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}')
grep -q '"object":"chat.completion"' <<<"$out"; check "chat completion" $? "$out"
grep -q '"total_tokens":' <<<"$out"; check "chat usage" $? "$out"

code=$(curl -s -o /dev/null -w '%{http_code}' "$u/v1/completions" -d '{bad json')
[ "$code" = 400 ]; check "malformed body is 400" $? "$code"
code=$(head -c 2000000 /dev/zero | tr '\0' a | curl -s -o /dev/null -w '%{http_code}' "$u/v1/completions" --data-binary @-)
[ "$code" = 413 ]; check "oversized body is 413" $? "$code"
out=$(curl -s "$u/health"); grep -q '"status":"ok"' <<<"$out"; check "health" $? "$out"
out=$(curl -s "$u/v1/models"); grep -q '"object":"list"' <<<"$out"; check "models" $? "$out"
out=$(curl -s "$u/metrics"); grep -q '^ultraserve_requests_total{outcome="' <<<"$out"; check "metrics" $? "$out"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
