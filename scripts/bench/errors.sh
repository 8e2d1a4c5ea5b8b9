#!/usr/bin/env bash
# The policy-error section of `make bench` (called by scripts/bench.sh):
# 101 tenants on one broker, one policy that denies or raises on request;
# wrk throughput of the deny path next to the error path. A policy error
# must not cost the whole engine (every tenant's compiled policies) a full
# collection: goal, the error path keeps at least half the deny path's rate.
# Usage: errors.sh BROKER DOUBLE SECONDS
set -euo pipefail
broker=$1 double=$2 secs=${3:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/bench/lib.sh"
bench_setup

start_double bench-courier-key bench
export COURIER_API_KEY=bench-courier-key BENCH_CLIENT_KEY=bench-client-key-0123456789

# A policy a client can steer: "deny" denies, "error" indexes a nil claim.
# It sits beside a copy of the shipped policies, which every tenant compiles
# as its modules: a heap the size of a real multi-tenant broker's.
mkdir "$work/policies"
cp "$root"/policies/*.lua "$root"/policies/*.json "$work/policies/"
rm -f "$work"/policies/*_test.lua
# and reads a data file of 2,000 users, as a tenant mapping users to orgs would.
/usr/bin/python3 -c 'import json, sys
json.dump({"orgs": {"user%04d" % i: "org%d" % (i % 50) for i in range(2000)}}, sys.stdout)' >"$work/policies/orgs.json"
cat >"$work/policies/steer.lua" <<'LUA'
return function(req)
  if req.body.path == "error" then
    error("boom")
  end
  return { allow = false, reason = "denied" }
end
LUA
{
  echo 'listen = "127.0.0.1:0"'
  echo 'threads = 2'
  echo 'max_connections = 8192'
  echo "courier = { base_url = \"http://127.0.0.1:$dport\", timeout_ms = 5000 }"
  echo 'tenants = {'
  for i in $(seq 0 100); do
    if [ "$i" -eq 0 ]; then name=default; else name=$(printf 't%03d' "$i"); fi
    echo "  $name = { api_key = { env = \"COURIER_API_KEY\" }, policy = \"$work/policies/steer.lua\", data = \"$work/policies/orgs.json\", auth = { client_keys = { { name = \"bench\", key = { env = \"BENCH_CLIENT_KEY\" } } } } },"
  done
  echo '}'
} >"$work/errors.conf.lua"

start_broker "$work/errors.conf.lua" "$work/broker.log" bench

# run PATH -> the rps of a wrk run that posts {"path": PATH}; first checks
# that one such request gets the status the path is for.
run() {
  local want code
  case $1 in deny) want=403 ;; *) want=500 ;; esac
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BENCH_CLIENT_KEY" \
    -H 'Content-Type: application/json' -d "{\"user_id\":\"alice\",\"path\":\"$1\"}" \
    "http://127.0.0.1:$bport/v1/token")
  [ "$code" = "$want" ] || { echo "bench: the $1 path answered $code, not $want" >&2; exit 1; }
  BENCH_BEARER=$BENCH_CLIENT_KEY BENCH_BODY="{\"user_id\":\"alice\",\"path\":\"$1\"}" wrk -t2 -c8 -d"${secs}s" \
    -s "$root/scripts/bench/post.lua" "http://127.0.0.1:$bport/v1/token" >"$work/$1.txt" 2>&1 || true
  awk '/^Requests\/sec/ {print $2}' "$work/$1.txt"
}

echo
echo "== policy errors (issue 10): 101 tenants, 8 connections, ${secs}s each"
deny=$(run deny)
err=$(run error)
/usr/bin/python3 - "$deny" "$err" <<'PY'
import sys
deny, err = float(sys.argv[1] or 0), float(sys.argv[2] or 0)
print("deny path (403):               %8.0f rps" % deny)
print("error path (500 policy_error): %8.0f rps" % err)
print("error/deny:                    %7.1f%%  (goal >= 50%%)" % (100 * err / deny if deny else 0))
PY
