#!/usr/bin/env bash
# The cluster section of `make bench` (called by scripts/bench.sh; issue 16):
# throughput at 0 ms upstream of two brokers with the same rate limits (per
# tenant and per requester, set high enough never to refuse), one on its own
# buckets, one on the cluster's (an EVALSHA to a local redis-server per
# request, or a token of a lease: cluster.rate_lease_ms, default 10 ms).
# Rounds alternate the two; the cost is the median of the rounds'
# ratios. Goal: under 10% of throughput.
# Usage: cluster.sh BROKER DOUBLE SECONDS ROUNDS
set -euo pipefail
broker=$1 double=$2 secs=${3:-10} rounds=${4:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
work=$(mktemp -d)
pids=()
trap cleanup EXIT

command -v redis-server >/dev/null || { echo "cluster: redis-server missing (scripts/install-deps.sh)"; exit 0; }
rport=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >"$work/redis.log" 2>&1 &
rpid=$!
pids+=($rpid)
for _ in $(seq 100); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.1; done

COURIER_DOUBLE_KEYS=bench-courier-key "$double" --port 0 >"$work/double.out" 2>"$work/double.err" &
pids+=($!)
dport=$(wait_for "$work/double.out" '^PORT [0-9]+' bench)
export COURIER_API_KEY=bench-courier-key APP_JWT_SECRET=bench-app-secret

# conf NAME EXTRA: a config file like scripts/bench.sh's, with rate limits.
conf() {
  cat >"$work/$1.conf.lua" <<CONF
listen = "127.0.0.1:0"
threads = 2
max_connections = 8192
courier = { base_url = "http://127.0.0.1:$dport", timeout_ms = 5000, max_connections = 1024 }
tenants = {
  default = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "$root/policies/default.lua",
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
    rate_limit = { per_second = 1000000, burst = 1000000,
                   per_requester = { per_second = 1000000, burst = 1000000 } },
  },
}
$2
CONF
}
conf local ""
conf shared "cluster = { redis = { url = \"redis://127.0.0.1:$rport/0\" }, name = \"bench\" }"
"$broker" serve -c "$work/local.conf.lua" 2>"$work/local.log" &
lpid=$!
pids+=($lpid)
lport=$(wait_for "$work/local.log" 'listening on 127\.0\.0\.1:[0-9]+' bench)
"$broker" serve -c "$work/shared.conf.lua" 2>"$work/shared.log" &
spid=$!
pids+=($spid)
sport=$(wait_for "$work/shared.log" 'listening on 127\.0\.0\.1:[0-9]+' bench)
wait_for "$work/shared.log" 'connected to Redis at [0-9.]+:[0-9]+' bench >/dev/null

session=$(/usr/bin/python3 -c 'import jwt, time, sys
print(jwt.encode({"sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 3600}, sys.argv[1], algorithm="HS256"))' "$APP_JWT_SECRET")

# CPU time (clock ticks) a process used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# rps PORT NAME PID...: one wrk run's requests per second; the CPU each PID
# used per request (us), in order, in $work/NAME.cpu.
rps() {
  local port=$1 name=$2 n p out=""
  shift 2
  local -a c0=()
  for p in "$@"; do c0+=("$(cpu_ticks "$p")"); done
  BENCH_BEARER=$session BENCH_BODY='{"user_id":"alice"}' wrk -t2 -c32 -d"${secs}s" --timeout 10s \
    -s "$root/scripts/bench/post.lua" "http://127.0.0.1:$port/v1/token" >"$work/$name.txt" 2>&1 || true
  n=$(awk '/requests in/ {print $1}' "$work/$name.txt"); n=${n:-0}
  [ "$n" -gt 0 ] || n=1
  local k=0
  for p in "$@"; do
    out="$out $(( ($(cpu_ticks "$p") - c0[k]) * 1000000 / $(getconf CLK_TCK) / n ))"
    k=$((k + 1))
  done
  echo $out >"$work/$name.cpu"
  awk '/^Requests\/sec/ {print $2}' "$work/$name.txt"
}

echo
echo "cluster rate limits (issue 16): 0 ms upstream, 32 conns, ${secs}s runs, $rounds rounds"
pairs=()
for r in $(seq "$rounds"); do
  l=$(rps "$lport" "local$r" "$lpid")
  s=$(rps "$sport" "shared$r" "$spid" "$rpid")
  read -r lc <"$work/local$r.cpu"
  read -r sc rc <"$work/shared$r.cpu"
  printf '  round %d: local buckets %9s rps (broker CPU %s us/req)   cluster %9s rps (broker CPU %s us/req, Redis CPU %s us/req)\n' \
    "$r" "${l:-?}" "$lc" "${s:-?}" "$sc" "$rc"
  pairs+=("${l:-0}:${s:-0}")
done
shared=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="shared"\}/ {print $2}')
lease=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="lease"\}/ {print $2}')
local_=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="local"\}/ {print $2}')
non2xx=$(cat "$work"/*.txt | awk '/Non-2xx/ {s += $NF} END {print s + 0}')
/usr/bin/python3 - "$shared" "${lease:-0}" "$local_" "$non2xx" "${pairs[@]}" <<'PY'
import statistics, sys
shared, lease, local, non2xx = sys.argv[1:5]
pairs = [tuple(float(x) for x in a.split(":")) for a in sys.argv[5:]]
ratios = [s / l if l else 0 for l, s in pairs]
med = statistics.median(ratios)
print("cluster/local throughput:                %.1f%% median of %d rounds (%s)" %
      (100 * med, len(ratios), ", ".join("%.1f%%" % (100 * r) for r in ratios)))
print("cost of the shared rate limits:          %.1f%% (goal < 10%%); checks by Redis %s, by leases %s, "
      "by local buckets %s; non-2xx %s" % (100 * (1 - med), shared, lease, local, non2xx))
PY
