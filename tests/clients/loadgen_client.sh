#!/usr/bin/env bash
# `ultraserve loadgen` against a real server (run through run_with_server.sh): a tiny run must
# exit 0 with every request completed and no errors, in its JSON and in its table.
#   usage: loadgen_client.sh ULTRASERVE_BINARY
set -euo pipefail
binary=$1
json=$(mktemp)
trap 'rm -f "$json"' EXIT
table=$("$binary" loadgen --url "ws://${ULTRASERVE_URL#http://}/v1/stream" --connections 2 --concurrency 2 \
  --requests 8 --max-tokens 4 --timeout-s 60 --json "$json")
echo "$table"
cat "$json"
status=0
for field in '"requests":8' '"completed":8' '"errors":0'; do
  grep -q "$field" "$json" || { echo "FAIL: the JSON lacks $field"; status=1; }
done
# The table's row: | connections | requests | completed | cancelled | abandoned | errors | ...
grep -q '^| 2 | 8 | 8 | 0 | 0 | 0 |' <<<"$table" || { echo "FAIL: the table does not show 8 of 8 completed, 0 errors"; status=1; }
exit $status
