#!/usr/bin/env bash
# make demo: the Courier test double and the broker on loopback, a token asked
# for the way a frontend would, the answer and the decoded token, then stop.
set -euo pipefail
broker=$1 double=$2
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"
work=$(mktemp -d)
pids=()
trap cleanup EXIT


COURIER_DOUBLE_KEYS=demo-courier-key "$double" --port 0 >"$work/double.out" 2>"$work/double.err" &
pids+=($!)
dport=$(wait_for "$work/double.out" '^PORT [0-9]+' demo)
echo "== Courier test double on 127.0.0.1:$dport"

export COURIER_BASE_URL="http://127.0.0.1:$dport" COURIER_API_KEY=demo-courier-key APP_JWT_SECRET=demo-app-secret
"$broker" serve -c "$root/examples/demo.conf.lua" 2>"$work/broker.log" &
pids+=($!)
bport=$(wait_for "$work/broker.log" 'listening on 127\.0\.0\.1:[0-9]+' demo)
echo "== courier-broker on 127.0.0.1:$bport (examples/demo.conf.lua, policies/default.lua)"

# The app's own session token for alice, as the frontend already has it.
session=$(/usr/bin/python3 -c 'import jwt, time, sys
print(jwt.encode({"sub": "alice", "tier": "preferences", "iat": int(time.time()), "exp": int(time.time()) + 300}, sys.argv[1], algorithm="HS256"))' "$APP_JWT_SECRET")

echo "== POST /v1/token  {\"user_id\": \"alice\", \"expires_in\": \"2h\"}"
resp=$(curl -sS -X POST "http://127.0.0.1:$bport/v1/token" \
  -H "Authorization: Bearer $session" -H 'Content-Type: application/json' \
  -d '{"user_id": "alice", "expires_in": "2h"}' -w '\n%{http_code}')
code=${resp##*$'\n'}; body=${resp%$'\n'*}
echo "HTTP $code"
echo "$body" | /usr/bin/python3 -m json.tool
echo "== the Courier token, decoded (not verified)"
echo "$body" | /usr/bin/python3 -c 'import json, sys, base64
t = json.load(sys.stdin)["token"].split(".")
for part in t[:2]:
    print(json.dumps(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))), indent=2))'
echo "== the broker's log line for it (the token appears only as a hash)"
grep '"event":"token_request"' "$work/broker.log" | tail -1
[ "$code" = 200 ]
