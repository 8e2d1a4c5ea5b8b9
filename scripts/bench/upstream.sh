#!/usr/bin/env bash
# Issue 12, "defaults that serve" and "TLS done right": the broker with its
# DEFAULT config (only the upstream and a tenant given), Courier's double at
# 100 ms, 500 client connections: over plain HTTP, and over HTTPS through
# nginx (TLS terminator in front of the double, a test CA in courier.ca_file)
# with HTTP/1.1 and with HTTP/2. Prints rps against the 5000 rps ideal (goal
# >= 95%), errors, and the broker's CPU per request.
#   usage: upstream.sh BROKER DOUBLE [SECONDS]
#   UPSTREAM_BENCH_COURIER (optional): more of the courier table, e.g.
#     "max_connections = 64" to compare with an older default; UPSTREAM_BENCH_ONLY=plain: only
#     the plain HTTP run
#   UPSTREAM_BENCH_DISTINCT=1: every request for another user (a trusted_proxy
#     tenant), so each costs one Courier call; by default every request is
#     alice's and concurrent ones share a call (single-flight)
set -euo pipefail
broker=$1 double=$2 secs=${3:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/bench/lib.sh"
bench_setup
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "upstream bench: no nginx (scripts/install-deps.sh)"; exit 0; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)

start_double bench-courier-key upstream-bench
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
h1=$(free_port) h2=$(free_port) h1c=$(free_port)
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
    if [ -n "${UPSTREAM_BENCH_DISTINCT:-}" ]; then
      echo '  auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "127.0.0.1/32" } } } } }'
    else
      echo '  auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } } } }'
    fi
  } >"$conf"
  start_broker "$conf" "$work/$slug.log" upstream-bench
  b0=$(cpu_ticks "$bpid")
  BENCH_DISTINCT_USERS=${UPSTREAM_BENCH_DISTINCT:-} BENCH_BEARER=$session BENCH_BODY='{"user_id":"alice"}' wrk -t2 -c500 -d"${secs}s" --timeout 10s --latency \
    -s "$root/scripts/bench/post.lua" "http://127.0.0.1:$bport/v1/token" >"$work/$slug.txt" 2>&1 || true
  b1=$(cpu_ticks "$bpid")
  kill "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$slug.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$slug.txt")
  err=$(awk '/Non-2xx/ {print $NF}' "$work/$slug.txt"); err=${err:-0}
  se=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$work/$slug.txt"); err=$((err + ${se:-0}))
  n=$(awk '/requests in/ {print $1}' "$work/$slug.txt"); n=${n:-1}
  printf '%-40s %9s rps = %5.1f%% of 5000 (goal >= 95%%)  p99 %8s  errors %s  broker CPU %s us/req\n' \
    "$name" "${rps:-0}" "$(echo "${rps:-0} / 50" | bc -l)" "${p99:-?}" "$err" \
    "$(( (b1 - b0) * 1000000 / $(getconf CLK_TCK) / (n > 0 ? n : 1) ))"
}

echo
echo "default config, 100 ms upstream, 500 client connections, ${secs}s each:"
bench "plain HTTP" "http://127.0.0.1:$dport"
[ "${UPSTREAM_BENCH_ONLY:-}" = plain ] && exit 0
bench "HTTPS HTTP/1.1 (nginx)" "https://127.0.0.1:$h1" "$work/ca.pem"
bench "HTTPS HTTP/2 (nginx)" "https://127.0.0.1:$h2" "$work/ca.pem"
# Every call a new TLS connection (nginx closes after one request); ca_file
# adds the test CA to the whole system bundle (one store of both): the store
# and the TLS sessions must be reused, not rebuilt per connection.
bench "HTTPS HTTP/1.1, new connection per call" "https://127.0.0.1:$h1c" "$work/ca.pem"
# HTTP/2 streams get nginx's recycled fake connections: $connection does not
# count TLS connections there, so only HTTP/1.1 listeners are counted.
for v in h1 h1c; do
  [ -f "$work/ngx/$v.log" ] || continue
  awk -v v="$v" '{c++; if (!($4 in seen)) { seen[$4] = 1; n++; if ($2 == "r") r++ } } END {
    printf "  nginx %s: %d requests on %d TLS connections, %d of them resumed\n", v, c, n, r }' "$work/ngx/$v.log"
done
