#!/usr/bin/env bash
# make tsan: the integration suite against binaries built with
# -fsanitize=thread. Every process the tests start (broker, double, CLI runs)
# writes its reports to a scratch folder instead of stderr, so a report cannot
# hide in a log a test never reads; any report fails the run and is printed.
# tests/tsan.supp lists the only reports ignored (libraries' own, each with why).
# The browser suite is left out on purpose: it runs against the ASan + UBSan
# broker in make check; under TSan's slowdown a 6-second token's refresh
# timings stop meaning anything, and the broker's threads and loop are the
# integration suite's to exercise (the browser adds no concurrency of its own).
#   tsan.sh BROKER_BIN DOUBLE_BIN
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
export BROKER_BIN=$1 DOUBLE_BIN=$2
export TSAN_OPTIONS="suppressions=$root/tests/tsan.supp log_path=$reports/tsan second_deadlock_stack=1 history_size=4 ${TSAN_OPTIONS:-}"
# Deselected here only (they run in make test and make check): the cases that
# need a decision to hit its instruction budget before its 50 ms CPU-time
# budget, which TSan's 5-15x slowdown reverses.
export PYTEST_ADDOPTS="-k 'not test_work_inside_library_calls_is_charged and not test_pattern_bomb_is_stopped' \
 ${PYTEST_ADDOPTS:-}"
start=$(date +%s)
cd "$root" && bash scripts/run-tests.sh integration
status=$?
n=$(find "$reports" -type f | wc -l)
for f in $(find "$reports" -type f | sort); do
  echo "---- $(basename "$f")"
  head -80 "$f"
done
echo "tsan: $n report file(s), integration suite in $(($(date +%s) - start)) s"
[ "$n" -eq 0 ] && [ "$status" -eq 0 ]
