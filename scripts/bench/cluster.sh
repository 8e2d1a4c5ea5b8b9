#!/usr/bin/env bash
# The cluster section of `make bench` (called by scripts/bench.sh; issue 16):
# throughput at 0 ms upstream of two brokers with the same rate limits (per
# tenant and per requester, set high enough never to refuse), one on its own
# buckets, one on the cluster's (an EVALSHA to a local redis-server per
# request, or a token of a lease: cluster.rate_lease_ms, default 10 ms).
# A third broker does the same over TLS (rediss:// to a second
# redis-server, TLS only, asking for a client certificate: the test CA and
# pairs are made here with openssl). Rounds alternate the three, each
# round starting with another (whoever runs first gains a little); each cost
# is the median of the rounds' ratios to the local buckets. Goal: under 10%
# of throughput.
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

# The TLS Redis: a CA, its certificate for 127.0.0.1, a broker's client pair.
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
(cd "$work" && openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca &&
  for n in redis:IP:127.0.0.1 client:DNS:broker; do
    f=${n%%:*}
    printf 'subjectAltName=%s\n' "${n#*:}" >"$f.ext"
    openssl req "${ec[@]}" -keyout "$f.key" -out "$f.csr" -subj "/CN=$f" &&
      openssl x509 -req -in "$f.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$f.pem" -days 2 \
        -extfile "$f.ext" || exit 1
  done && chmod 600 client.key) >/dev/null 2>&1
tport=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port 0 --tls-port "$tport" --bind 127.0.0.1 --tls-cert-file "$work/redis.pem" \
  --tls-key-file "$work/redis.key" --tls-ca-cert-file "$work/ca.pem" --save '' --appendonly no \
  --loglevel warning >"$work/redis-tls.log" 2>&1 &
tpid=$!
pids+=($tpid)

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
conf tls "cluster = { redis = { url = \"rediss://127.0.0.1:$tport/0\", ca_file = \"$work/ca.pem\",
  cert = \"$work/client.pem\", key = { file = \"$work/client.key\" } }, name = \"bench\" }"
"$broker" serve -c "$work/local.conf.lua" 2>"$work/local.log" &
lpid=$!
pids+=($lpid)
lport=$(wait_for "$work/local.log" 'listening on 127\.0\.0\.1:[0-9]+' bench)
"$broker" serve -c "$work/shared.conf.lua" 2>"$work/shared.log" &
spid=$!
pids+=($spid)
sport=$(wait_for "$work/shared.log" 'listening on 127\.0\.0\.1:[0-9]+' bench)
wait_for "$work/shared.log" 'connected to Redis at [0-9.]+:[0-9]+' bench >/dev/null
"$broker" serve -c "$work/tls.conf.lua" 2>"$work/tls.log" &
tbpid=$!
pids+=($tbpid)
tbport=$(wait_for "$work/tls.log" 'listening on 127\.0\.0\.1:[0-9]+' bench)
wait_for "$work/tls.log" 'connected to Redis at [0-9.]+:[0-9]+' bench >/dev/null

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
  # Each round starts with another broker: no one always runs first.
  for k in 0 1 2; do
    case $(((r + k) % 3)) in
    1) l=$(rps "$lport" "local$r" "$lpid") ;;
    2) s=$(rps "$sport" "shared$r" "$spid" "$rpid") ;;
    0) t=$(rps "$tbport" "tls$r" "$tbpid" "$tpid") ;;
    esac
  done
  read -r lc <"$work/local$r.cpu"
  read -r sc rc <"$work/shared$r.cpu"
  read -r tc trc <"$work/tls$r.cpu"
  printf '  round %d: local buckets %9s rps (broker CPU %s us/req)   cluster %9s rps (broker CPU %s us/req, Redis CPU %s us/req)   over TLS %9s rps (broker CPU %s us/req, Redis CPU %s us/req)\n' \
    "$r" "${l:-?}" "$lc" "${s:-?}" "$sc" "$rc" "${t:-?}" "$tc" "$trc"
  pairs+=("${l:-0}:${s:-0}:${t:-0}")
done
shared=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="shared"\}/ {print $2}')
lease=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="lease"\}/ {print $2}')
local_=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="local"\}/ {print $2}')
tls_shared=$(curl -s "http://127.0.0.1:$tbport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="shared"\}/ {print $2}')
tls_lease=$(curl -s "http://127.0.0.1:$tbport/metrics" | awk '/^broker_cluster_rate_checks_total\{by="lease"\}/ {print $2}')
non2xx=$(cat "$work"/*.txt | awk '/Non-2xx/ {s += $NF} END {print s + 0}')
/usr/bin/python3 - "$shared" "${lease:-0}" "$local_" "$non2xx" "${tls_shared:-0}" "${tls_lease:-0}" "${pairs[@]}" <<'PY'
import statistics, sys
shared, lease, local, non2xx, tls_shared, tls_lease = sys.argv[1:7]
rounds = [tuple(float(x) for x in a.split(":")) for a in sys.argv[7:]]
for name, i in (("cluster", 1), ("cluster over TLS", 2)):
    ratios = [r[i] / r[0] if r[0] else 0 for r in rounds]
    med = statistics.median(ratios)
    print("%-40s %.1f%% median of %d rounds (%s); cost %.1f%% (goal < 10%%)" %
          (name + "/local throughput:", 100 * med, len(ratios), ", ".join("%.1f%%" % (100 * r) for r in ratios),
           100 * (1 - med)))
print("plain cluster broker: checks by Redis %s, by leases %s, by local buckets %s; over TLS: by Redis %s, "
      "by leases %s; non-2xx (all) %s" % (shared, lease, local, tls_shared, tls_lease, non2xx))
PY
