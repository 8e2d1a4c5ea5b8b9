#!/usr/bin/env bash
# Issue 12, "defaults that serve" and "TLS done right": the broker with its
# DEFAULT config (only the upstream and a tenant given), Courier's double at
# 100 ms, 500 client connections: over plain HTTP, and over HTTPS through
# nginx (TLS terminator in front of the double, a test CA in courier.ca_file)
# with HTTP/1.1 and with HTTP/2. Every request is for another user (a
# trusted_proxy tenant), so each costs one Courier call, as in production.
# Prints rps against the 5000 rps ideal and against this machine's ceiling
# (goal >= 95%), errors, and the broker's CPU per request.
#
# The ceiling: the same wrk, with the same 500 connections, straight at the
# double (and at nginx's HTTPS in front of it), no broker between. The load
# generator, the double and the broker share this machine's cores, so even
# the double alone does not reach 5000 rps here: the ceiling is what a
# broker that cost nothing would get.
#   usage: upstream.sh BROKER DOUBLE [SECONDS]
#   UPSTREAM_BENCH_COURIER (optional): more of the courier table, e.g.
#     "max_connections = 64" to compare with an older default; UPSTREAM_BENCH_ONLY=plain: only
#     the plain HTTP runs
#   A last row runs every request as one user (alice, a session JWT): 500
#     identical grants share each Courier call (single-flight), all answered
#     at the same instant, so wrk's connections move in lock step and each
#     round's 500 requests queue behind each other: that row measures the
#     burst, not the defaults.
set -euo pipefail
broker=$1 double=$2 secs=${3:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/bench/lib.sh"
bench_setup
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "upstream bench: no nginx (scripts/install-deps.sh)"; exit 0; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)

start_double bench-courier-key upstream-bench
dpid=${pids[-1]}
curl -sS -X POST "http://127.0.0.1:$dport/_double/config" -d '{"latency_ms": 100}' >/dev/null

# A test CA and a certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/srv.key" -out "$work/srv.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$work/ext"
openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
  -extfile "$work/ext" -out "$work/srv.pem" 2>/dev/null

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
h1=$(free_port) h2=$(free_port) h1c=$(free_port) h1w=$(free_port)
mkdir -p "$work/ngx/tmp"
user=""; [ "$(id -u)" -eq 0 ] && user="user root;"
cat >"$work/ngx/nginx.conf" <<CONF
$user
daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  log_format tls '\$ssl_protocol \$ssl_session_reused \$server_protocol \$connection';
  client_body_temp_path $work/ngx/tmp; proxy_temp_path $work/ngx/tmp; fastcgi_temp_path $work/ngx/tmp;
  uwsgi_temp_path $work/ngx/tmp; scgi_temp_path $work/ngx/tmp;
  upstream double { server 127.0.0.1:$dport; keepalive 512; }
  ssl_certificate $work/srv.pem;
  ssl_certificate_key $work/srv.key;
  ssl_session_cache shared:TLS:10m;
  keepalive_requests 100000;
  http2_max_requests 100000;
  server {
    listen 127.0.0.1:$h1 ssl;
    access_log $work/ngx/h1.log tls;
    location / { proxy_pass http://double; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$h1w ssl;
    access_log off;
    location / { proxy_pass http://double; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$h1c ssl;
    keepalive_requests 1;
    access_log $work/ngx/h1c.log tls;
    location / { proxy_pass http://double; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$h2 ssl http2;
    access_log $work/ngx/h2.log tls;
    location / { proxy_pass http://double; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
"$nginx" -p "$work/ngx" -c "$work/ngx/nginx.conf" 2>"$work/ngx/stderr" &
pids+=($!)
ngxpid=$!
for _ in $(seq 50); do curl -s --cacert "$work/ca.pem" -o /dev/null "https://127.0.0.1:$h2/" && break; sleep 0.1; done

export COURIER_API_KEY=bench-courier-key APP_JWT_SECRET=bench-app-secret
session=$(/usr/bin/python3 -c 'import jwt, time, sys
print(jwt.encode({"sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 3600}, sys.argv[1], algorithm="HS256"))' "$APP_JWT_SECRET")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# bench NAME BASE_URL [CA_FILE]: a broker with the default config, one wrk run.
bench() {
  local name=$1 url=$2 ca=${3:-} slug=${1//[^A-Za-z0-9]/_} b0 b1 n rps p99 err se bport bpid
  local conf="$work/$slug.conf.lua"
  {
    echo 'listen = "127.0.0.1:0"'
    if [ -n "$ca" ]; then echo "courier = { base_url = \"$url\", ca_file = \"$ca\", ${UPSTREAM_BENCH_COURIER:-} }"
    else echo "courier = { base_url = \"$url\", ${UPSTREAM_BENCH_COURIER:-} }"; fi
    echo "tenants = { default = { api_key = { env = \"COURIER_API_KEY\" }, policy = \"$root/policies/default.lua\","
    if [ -z "${same:-}" ]; then
      echo '  auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "127.0.0.1/32" } } } } }'
    else
      echo '  auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } } } }'
    fi
  } >"$conf"
  start_broker "$conf" "$work/$slug.log" upstream-bench
  [ -z "${pin:-}" ] || taskset -a -p -c 0 "$bpid" >/dev/null
  b0=$(cpu_ticks "$bpid")
  BENCH_DISTINCT_USERS=$([ -n "${same:-}" ] || echo 1) BENCH_BEARER=$session BENCH_BODY='{"user_id":"alice"}' ${pin:+taskset -c 1} wrk -t2 -c500 -d"${secs}s" --timeout 10s --latency \
    -s "$root/scripts/bench/post.lua" "http://127.0.0.1:$bport/v1/token" >"$work/$slug.txt" 2>&1 || true
  b1=$(cpu_ticks "$bpid")
  kill "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$slug.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$slug.txt")
  err=$(awk '/Non-2xx/ {print $NF}' "$work/$slug.txt"); err=${err:-0}
  se=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$work/$slug.txt"); err=$((err + ${se:-0}))
  n=$(awk '/requests in/ {print $1}' "$work/$slug.txt"); n=${n:-1}
  last_rps=${rps:-0}
  printf '%-44s %7.0f rps = %5.1f%% of 5000, %5.1f%% of the ceiling  p99 %8s  errors %s  broker CPU %s us/req\n' \
    "$name" "${rps:-0}" "$(echo "${rps:-0} / 50" | bc -l)" "$(if [ -n "${ceil:-}" ]; then echo "100 * ${rps:-0} / $ceil" | bc -l; else echo 0; fi)" "${p99:-?}" "$err" \
    "$(( (b1 - b0) * 1000000 / $(getconf CLK_TCK) / (n > 0 ? n : 1) ))"
}

# ceiling NAME URL: the same wrk straight at Courier's endpoint (the double,
# or nginx in front of it), no broker: sets ceil (rps).
ceiling() {
  local slug=ceil_${1//[^A-Za-z0-9]/_}
  BENCH_BEARER=bench-courier-key BENCH_BODY='{"scope":"user_id:alice inbox:read:messages","expires_in":"1h"}' \
    ${pin:+taskset -c 1} wrk -t2 -c500 -d"${secs}s" --timeout 10s --latency -s "$root/scripts/bench/post.lua" "$2/auth/issue-token" \
    >"$work/$slug.txt" 2>&1 || true
  ceil=$(awk '/^Requests\/sec/ && $2 > 0 {print $2}' "$work/$slug.txt")
  if [ -z "$ceil" ]; then
    echo "ceiling: wrk straight at $1: no figure ($(head -c 300 "$work/$slug.txt" | tr '\n' ' '))"
    return
  fi
  printf '%-44s %7.0f rps = %5.1f%% of 5000  p99 %8s\n' "ceiling: wrk straight at $1" "$ceil" \
    "$(echo "$ceil / 50" | bc -l)" "$(awk '$1=="99%" {print $2}' "$work/$slug.txt")"
}

# pair NAME URL CA CEILING_NAME CEILING_URL: $rounds rounds, each the ceiling
# then the broker (so both see the same machine); prints every run and the
# medians, the broker's as a share of 5000 and of the ceiling (the goal).
rounds=${UPSTREAM_BENCH_ROUNDS:-3}
pair() {
  local name=$1 url=$2 ca=$3 r ceils=() rpss=()
  for r in $(seq "$rounds"); do
    ceiling "$4" "$5"
    [ -z "$ceil" ] || ceils+=("$ceil")
    bench "$name" "$url" "$ca"
    rpss+=("$last_rps")
  done
  /usr/bin/python3 - "$name" "${ceils[*]}" "${rpss[*]}" <<'PY'
import statistics, sys
name, ceils, rpss = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
if not ceils:
    print("=> %s: no ceiling measured" % name)
    sys.exit(0)
c, b = statistics.median(ceils), statistics.median(rpss)
print("=> %s: median %.0f rps = %.1f%% of 5000, %.1f%% of the ceiling's median %.0f (goal >= 95%%)" %
      (name, b, b / 50, 100 * b / c, c))
PY
}

echo
echo "default config, 100 ms upstream, 500 client connections, every request another user, ${secs}s each:"
pair "plain HTTP" "http://127.0.0.1:$dport" "" "the double (plain HTTP)" "http://127.0.0.1:$dport"
plain_ceil=$ceil
if [ "${UPSTREAM_BENCH_ONLY:-}" = plain ]; then
  same=1 bench "plain HTTP, one user (lock step, see above)" "http://127.0.0.1:$dport"
  exit 0
fi
pair "HTTPS HTTP/1.1 (nginx)" "https://127.0.0.1:$h1" "$work/ca.pem" "nginx HTTPS HTTP/1.1" "https://127.0.0.1:$h1w"
bench "HTTPS HTTP/2 (nginx)" "https://127.0.0.1:$h2" "$work/ca.pem"
# Every call a new TLS connection (nginx closes after one request); ca_file
# adds the test CA to the whole system bundle (one store of both): the store
# and the TLS sessions must be reused, not rebuilt per connection.
bench "HTTPS HTTP/1.1, new connection per call" "https://127.0.0.1:$h1c" "$work/ca.pem"
ceil=$plain_ceil
same=1 bench "plain HTTP, one user (lock step, see above)" "http://127.0.0.1:$dport"
# HTTP/2 streams get nginx's recycled fake connections: $connection does not
# count TLS connections there, so only HTTP/1.1 listeners are counted.
for v in h1 h1c; do
  [ -f "$work/ngx/$v.log" ] || continue
  awk -v v="$v" '{c++; if (!($4 in seen)) { seen[$4] = 1; n++; if ($2 == "r") r++ } } END {
    printf "  nginx %s: %d requests on %d TLS connections, %d of them resumed\n", v, c, n, r }' "$work/ngx/$v.log"
done

# Pinned (two or more CPUs and taskset): the broker alone on CPU 0, and wrk,
# nginx and the double on CPU 1, in the ceiling runs too. In production the
# broker has its host to itself and Courier is far away; shared cores make
# the broker's figure pay for the load generator's and the double's bursts.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  echo
  echo "pinned: the broker on CPU 0; wrk, nginx and the double on CPU 1 (ceiling runs too):"
  pin=1
  for p in "$dpid" "$ngxpid" $(pgrep -P "$ngxpid"); do taskset -a -p -c 1 "$p" >/dev/null; done
  pair "plain HTTP, pinned" "http://127.0.0.1:$dport" "" "the double (plain HTTP)" "http://127.0.0.1:$dport"
  pair "HTTPS HTTP/1.1 (nginx), pinned" "https://127.0.0.1:$h1" "$work/ca.pem" "nginx HTTPS HTTP/1.1" "https://127.0.0.1:$h1w"
fi
