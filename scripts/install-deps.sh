#!/usr/bin/env bash
# Installs what courier-broker's build, tests and benchmarks need on Debian 12.
# Idempotent and quiet: does nothing when every package is already present.
set -euo pipefail

pkgs=(build-essential pkg-config git
      liblua5.4-dev lua-cjson-dev libmicrohttpd-dev libgnutls28-dev libcurl4-openssl-dev libssl-dev
      libcmocka-dev python3 python3-pytest python3-jwt python3-cryptography
      wrk curl clang libclang-rt-14-dev clang-format cppcheck man-db nginx
      prometheus  # promtool: tests check the /metrics exposition
      libhiredis-dev redis-server)  # cluster: hiredis, and the Redis the tests start

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
