#!/usr/bin/env bash
# Fault soak (issue 12): Courier (the double) fails a random share of calls
# with 503; wrk drives the broker with its default Courier settings
# (courier.retries and its retry budget, the breaker), then without the
# budget (at most courier.retries), with 3 retries and with retries off, for
# comparison. The last column counts the failed requests by error code.
# Prints the broker's success rate (goal >= 99.9% with retries) and p99.
#   usage: fault-soak.sh BROKER DOUBLE [SECONDS] [FAIL_PERCENT] [CONNS] [LATENCY_MS]
set -euo pipefail
broker=$1 double=$2
secs=${3:-60} pct=${4:-20} conns=${5:-50} lat=${6:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/bench/lib.sh"
bench_setup

start_double soak-courier-key soak
export COURIER_API_KEY=soak-courier-key APP_JWT_SECRET=soak-app-secret
session=$(/usr/bin/python3 -c 'import jwt, time, sys
print(jwt.encode({"sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 3600}, sys.argv[1], algorithm="HS256"))' "$APP_JWT_SECRET")

# soak NAME RETRIES [BUDGET_PERCENT]: one broker, one wrk run, one row.
soak() {
  local name=$1 retries=$2 budget=${3:-10} bport bpid
  cat >"$work/$name.conf.lua" <<CONF
listen = "127.0.0.1:0"
courier = { base_url = "http://127.0.0.1:$dport", retries = $retries, retry_budget_percent = $budget }
tenants = {
$(jwt_tenant default)
}
CONF
  start_broker "$work/$name.conf.lua" "$work/$name.log" soak
  curl -sS -X POST "http://127.0.0.1:$dport/_double/config" \
    -d "{\"latency_ms\": $lat, \"status\": 503, \"fail_percent\": $pct}" >/dev/null
  BENCH_BEARER=$session BENCH_BODY='{"user_id":"alice"}' wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s --latency \
    -s "$root/scripts/bench/post.lua" "http://127.0.0.1:$bport/v1/token" >"$work/$name.txt" 2>&1 || true
  local n non2xx p99 opened
  n=$(awk '/requests in/ {print $1}' "$work/$name.txt"); n=${n:-0}
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$name.txt"); non2xx=${non2xx:-0}
  p99=$(awk '$1=="99%" {print $2}' "$work/$name.txt")
  opened=$(grep -c -- '-> open' "$work/$name.log" || true)
  # Why requests failed: the error code of each failed token request.
  why=$( (grep -o '"event":"token_request".*"error":"[a-z_]*"' "$work/$name.log" || true) |
    grep -o '"error":"[a-z_]*"' | sort | uniq -c | awk '{gsub(/"error":|"/, "", $2); printf "%s%s=%d", sep, $2, $1; sep=" "}' || true)
  kill "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  awk -v name="$name" -v n="$n" -v bad="$non2xx" -v p99="${p99:-?}" -v o="$opened" -v why="${why:-none}" 'BEGIN {
    printf "%-22s %8d requests  success %7.3f%%  p99 %9s  breaker opened %d times  failed: %s\n", name, n,
      n ? 100 * (n - bad) / n : 0, p99, o, why }'
}

echo "fault soak: Courier fails ${pct}% of calls (503) at random, ${lat} ms latency, ${secs}s, wrk -t2 -c${conns}"
soak "retries=2 (default)" 2
soak "retries=2, no budget" 2 0
[ -n "${SOAK_ONLY_DEFAULT:-}" ] || soak "retries=3" 3
[ -n "${SOAK_ONLY_DEFAULT:-}" ] || soak "retries=0" 0
