# shellcheck shell=bash
# Shared by the benchmarks (scripts/bench.sh and scripts/bench/*.sh; sourced
# once root, broker and double are set): the scratch folder, and starting
# the Courier double and a broker the one way they all do.
. "$root/scripts/lib.sh"

# bench_setup: $work (a temporary folder), pids (what it starts), removed
# and stopped on exit (cleanup); file descriptors for many connections.
bench_setup() {
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
  ulimit -n 65536 2>/dev/null || true
}

# start_double KEY WHO: the Courier double on a free port of 127.0.0.1,
# accepting the API key KEY; sets dport. WHO names a timeout.
start_double() {
  COURIER_DOUBLE_KEYS=$1 "$double" --port 0 >"$work/double.out" 2>"$work/double.err" &
  pids+=($!)
  dport=$(wait_for "$work/double.out" '^PORT [0-9]+' "$2")
}

# start_broker CONF LOG WHO: `serve -c CONF`, its stderr in LOG; sets bpid
# and bport (its port, once it listens). WHO names a timeout.
start_broker() {
  "$broker" serve -c "$1" 2>"$2" &
  bpid=$!
  pids+=("$bpid")
  bport=$(wait_for "$2" 'listening on 127\.0\.0\.1:[0-9]+' "$3")
}

# jwt_tenant NAME: tenant NAME of a configuration's tenants table, running
# policies/default.lua for the app's HS256 session tokens (APP_JWT_SECRET).
jwt_tenant() {
  cat <<T
  $1 = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "$root/policies/default.lua",
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
  },
T
}
