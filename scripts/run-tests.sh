#!/usr/bin/env bash
# Runs the test suites and ends with one line: "N passed, N failed[, N skipped]".
#   run-tests.sh unit BIN...         cmocka binaries
#   run-tests.sh integration         pytest suites in tests/integration
#   run-tests.sh browser             the browser suite in tests/browser (node, chromium)
#   run-tests.sh all BIN...          all three
# BROKER_BIN and DOUBLE_BIN name the binaries the integration tests start.
set -u
mode=$1; shift
passed=0; failed=0; skipped=0
py=/usr/bin/python3

run_unit() {
  for bin in "$@"; do
    out=$("$bin" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -E '^\[ *(RUN|OK|FAILED|PASSED|SKIPPED|  ERROR) *\]|ERROR|error:|Failure' | grep -v '^\[ RUN' || true
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
    p=${p:-0}; f=${f:-0}; s=${s:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
      echo "$(basename "$bin"): exited $rc"; printf '%s\n' "$out" | tail -20; f=1
    fi
    echo "unit $(basename "$bin"): $p passed, $f failed"
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  done
}

run_integration() {
  [ -d tests/integration ] || return 0
  log=$(mktemp)
  $py -m pytest -q -p no:cacheprovider tests/integration 2>&1 | tee "$log"
  line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped)|no tests ran' "$log" | tail -1)
  p=$(printf '%s' "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); p=${p:-0}
  f=$(printf '%s' "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+'); f=${f:-0}
  e=$(printf '%s' "$line" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+'); e=${e:-0}
  s=$(printf '%s' "$line" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+'); s=${s:-0}
  if [ -z "$line" ]; then echo "integration: pytest gave no summary"; f=1; fi
  rm -f "$log"
  echo "integration: $p passed, $((f + e)) failed, $s skipped"
  passed=$((passed + p)); failed=$((failed + f + e)); skipped=$((skipped + s))
}

# tests/browser: node's test runner (TAP) driving Debian's chromium; at most 5 minutes.
run_browser() {
  [ -d tests/browser ] || return 0
  log=$(mktemp); t0=$SECONDS
  (cd tests/browser && timeout 300 node --test --test-reporter=tap browser.test.mjs) >"$log" 2>&1; rc=$?
  grep -E '^ *(not )?ok [0-9]|^ *# [a-z]' "$log" | grep -vE '^# (tests|suites|cancelled|todo|duration_ms) ' || true
  p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -1); p=${p:-0}
  f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -1); f=${f:-0}
  s=$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$log" | tail -1); s=${s:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "browser: exited $rc"; tail -40 "$log"; f=1
  elif [ "$f" -gt 0 ]; then
    tail -80 "$log"
  fi
  rm -f "$log"
  echo "browser: $p passed, $f failed, $s skipped ($((SECONDS - t0)) s)"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

case "$mode" in
  unit) run_unit "$@" ;;
  integration) run_integration ;;
  browser) run_browser ;;
  all) run_unit "$@"; run_integration; run_browser ;;
  *) echo "usage: run-tests.sh unit|integration|browser|all [BIN...]" >&2; exit 2 ;;
esac

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
