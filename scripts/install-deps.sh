#!/usr/bin/env bash
# Installs what courier-broker's build, tests and benchmarks need on Debian 12.
# Idempotent and quiet: does nothing when every package is already present.
set -euo pipefail

pkgs=(build-essential pkg-config git
      liblua5.4-dev lua-cjson-dev libmicrohttpd-dev libgnutls28-dev libcurl4-openssl-dev libssl-dev
      libcmocka-dev python3 python3-pytest python3-jwt python3-cryptography
      wrk curl clang libclang-rt-14-dev clang-format cppcheck man-db nginx
      prometheus   # promtool: tests check the /metrics exposition
      libhiredis-dev redis-server  # cluster: hiredis, and the Redis the tests start
      openssl      # the rediss:// tests make their CA with the openssl command
      chromium)    # the browser suite (tests/browser) drives Debian's chromium
# node and npm for the browser suite: Debian's, unless a node is already installed.
command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)

# The browser suite's npm packages (playwright-core, courier-js; the web
# examples' courier-react, react, esbuild), again only when package-lock.json
# changed or a previous npm ci did not finish (the stamp is its copy, written
# last). Debian 12's node 18 is enough (every package's engines: node >= 18).
# No browser is ever downloaded: playwright-core has no install step, and the
# variable below stops any that would; the suite drives /usr/bin/chromium.
browser_deps() {
  local root d stamp
  root="$(cd "$(dirname "$0")/.." && pwd)"
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 18 ? 1 : 0)' ||
    { echo "install-deps: node $(node --version) is too old: the browser suite needs node >= 18" >&2; exit 1; }
  for d in tests/browser examples/web; do
    stamp="$root/$d/node_modules/.courier-broker-lock"
    cmp -s "$root/$d/package-lock.json" "$stamp" && continue
    echo "install-deps: npm ci in $d" >&2
    (cd "$root/$d" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm_config_update_notifier=false \
      npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$root/$d/package-lock.json" "$stamp"
  done
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { browser_deps; exit 0; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
browser_deps
