#!/usr/bin/env bash
# make bench: wrk against the broker (test double upstream) and against the
# double directly, in one run; prints rps, p50, p99 and the ratios.
#   BENCH_SECONDS (default 10): length of each wrk run
#   BENCH_ROUNDS (default 5): alternating double/broker runs at 0 ms; the
#     ratio is the median of the rounds' ratios (the machine is shared with
#     wrk and the double, so one run alone swings by 15-30%)
set -euo pipefail
broker=$1 double=$2
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/bench/lib.sh"
secs=${BENCH_SECONDS:-10}
rounds=${BENCH_ROUNDS:-5}
bench_setup

start_double bench-courier-key bench

cat >"$work/bench.conf.lua" <<CONF
listen = "127.0.0.1:0"
threads = 2
max_connections = 8192
courier = { base_url = "http://127.0.0.1:$dport", timeout_ms = 5000, max_connections = 1024 }
tenants = {
$(jwt_tenant default)
}
CONF
export COURIER_API_KEY=bench-courier-key APP_JWT_SECRET=bench-app-secret
start_broker "$work/bench.conf.lua" "$work/broker.log" bench

session=$(/usr/bin/python3 -c 'import jwt, time, sys
print(jwt.encode({"sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 3600}, sys.argv[1], algorithm="HS256"))' "$APP_JWT_SECRET")

# CPU time (clock ticks) a process used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME URL CONNS BEARER BODY -> prints a row, leaves figures in $work/NAME
run() {
  local name=$1 url=$2 conns=$3
  local b0 b1 n
  b0=$(cpu_ticks "$bpid")
  BENCH_BEARER=$4 BENCH_BODY=$5 wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s --latency \
    -s "$root/scripts/bench/post.lua" "$url" >"$work/$name.txt" 2>&1 || true
  local rps p50 p99 non2xx sockerr
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$name.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$name.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$name.txt"); non2xx=${non2xx:-0}
  sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$work/$name.txt"); sockerr=${sockerr:-0}
  b1=$(cpu_ticks "$bpid")
  n=$(awk '/requests in/ {print $1}' "$work/$name.txt"); n=${n:-0}
  printf '%-34s %6s conns %10s rps  p50 %9s  p99 %9s  errors %s' "$name" "$conns" "${rps:-?}" "${p50:-?}" "${p99:-?}" "$((non2xx + sockerr))"
  # Broker CPU per request, when the run went to the broker.
  case $url in *":$bport/"*) [ "$n" -gt 0 ] && printf '  broker CPU %s us/req' "$(( (b1 - b0) * 1000000 / $(getconf CLK_TCK) / n ))";; esac
  echo
  echo "${rps:-0} $((non2xx + sockerr))" >"$work/$name"
}

reset_double() { curl -sS -X POST "http://127.0.0.1:$dport/_double/config" -d "{\"latency_ms\": $1}" >/dev/null; }

echo "courier-broker benchmark: ${secs}s per run, wrk -t2, $(nproc) cores"
reset_double 0
ratios=()
for r in $(seq "$rounds"); do
  run "double direct (0 ms) #$r" "http://127.0.0.1:$dport/auth/issue-token" 32 bench-courier-key \
    '{"scope":"user_id:alice inbox:read:messages inbox:write:events read:brands","expires_in":"3600s"}'
  run "broker (0 ms upstream) #$r" "http://127.0.0.1:$bport/v1/token" 32 "$session" '{"user_id":"alice"}'
  read -r d_rps _ <"$work/double direct (0 ms) #$r"
  read -r b_rps _ <"$work/broker (0 ms upstream) #$r"
  ratios+=("$d_rps:$b_rps")
done
reset_double 100
run "broker (100 ms upstream)" "http://127.0.0.1:$bport/v1/token" 500 "$session" '{"user_id":"alice"}'
rss=$(awk '/VmHWM/ {print $2}' "/proc/$bpid/status")
reset_double 0

read -r s_rps s_err <"$work/broker (100 ms upstream)"
echo
/usr/bin/python3 - "$s_rps" "$s_err" "$rss" "${ratios[@]}" <<'PY'
import statistics, sys
s, err, rss = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
pairs = [tuple(float(x) for x in a.split(":")) for a in sys.argv[4:]]
each = [b / d if d else 0 for d, b in pairs]
print("ratio broker/double at 0 ms, 32 conns:   %.1f%% median of %d rounds (%s)  (goal >= 33%%)"
      % (100 * statistics.median(each), len(each), ", ".join("%.1f%%" % (100 * r) for r in each)))
print("100 ms upstream, 500 conns:              %.0f rps = %.1f%% of the 5000 rps ideal (goal >= 90%%), %d errors" % (s, s / 50, err))
print("broker peak RSS:                         %.1f MiB (goal < 64 MiB)" % (rss / 1024))
PY

# ------------------------------------------------------ reload (issue 5)
# Reload time for 100 tenants (and `check`), throughput during a SIGHUP storm
# next to throughput without one: scripts/bench/reload.sh, own processes.
bash "$root/scripts/bench/reload.sh" "$broker" "$double" "$secs"

# ---- policy errors (issue 10) ----------------------------------------------
# 101 tenants, a policy a client can make raise: the error path's rate next to
# the deny path's (goal: at least half). scripts/bench/errors.sh, own processes.
bash "$root/scripts/bench/errors.sh" "$broker" "$double" "$secs"

# ---- cluster (issue 16): shared rate limits on a local Redis next to local
# buckets, 0 ms upstream. scripts/bench/cluster.sh, own processes.
bash "$root/scripts/bench/cluster.sh" "$broker" "$double" "$secs" "$rounds"

# ---- upstream (issue 12): default config at 100 ms / 500 conns, plain HTTP and
# HTTPS (nginx, HTTP/1.1 and HTTP/2), with TLS connections opened and resumed.
bash "$root/scripts/bench/upstream.sh" "$broker" "$double" "$secs"

# ---- JWT verification cost per algorithm (issue 3): its own target ----------
echo
make -C "$root" --no-print-directory bench-jwt

# ---- policy decision cost (issue 4): its own target --------------------------
# Request table built, policies/default.lua run in its sandbox, decision
# validated; median and p99 µs per decision (goal: median < 2 µs).
echo
make -C "$root" --no-print-directory bench-decision

# ---- fault soak (issue 12): Courier fails 20% of calls at random -----------
# Success rate (goal >= 99.9%) and p99 with courier.retries 2, 3 and 0:
# scripts/bench/fault-soak.sh, own processes. SOAK_SECONDS (default 60).
echo
bash "$root/scripts/bench/fault-soak.sh" "$broker" "$double" "${SOAK_SECONDS:-60}" 20
