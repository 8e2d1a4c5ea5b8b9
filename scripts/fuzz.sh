#!/usr/bin/env bash
# make fuzz: runs each libFuzzer driver for SECONDS (default 60) on a copy of
# its checked-in corpus (tests/fuzz/corpus/NAME), so the repository's corpus
# only grows by hand. Prints executions, executions per second and findings
# per driver, and a summary table at the end.
#
#   FUZZ_RUNS=N      a fixed number of executions per driver instead of SECONDS
#   FUZZ_TIMEOUT=S   one input running longer than S seconds is a finding (10)
#   FUZZ_FORK=N      N worker processes (-fork=N): crashes and timeouts are
#                    counted and the run goes on
#   FUZZ_KEEP=DIR    where findings are written (build/fuzz/findings), as
#                    NAME-crash-<sha1>, NAME-timeout-<sha1>, ...
#   FUZZ_ARGS="..."  more libFuzzer flags
set -u
secs=${1:-60}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${FUZZ_RUNS:-}
fork=${FUZZ_FORK:-}
keep=${FUZZ_KEEP:-$root/build/fuzz/findings}
mkdir -p "$keep" && keep=$(cd "$keep" && pwd)
status=0
summary=()
# UBSan reports are findings too, not just lines in the log.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for bin in "$@"; do
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")   # the run happens in a scratch folder
  name=${bin##*/fuzz_}
  work=$(mktemp -d)
  [ -d "$root/tests/fuzz/corpus/$name" ] && cp -r "$root/tests/fuzz/corpus/$name/." "$work/"
  args=(-timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 -artifact_prefix="$keep/$name-")
  [ -f "$root/tests/fuzz/$name.dict" ] && args+=(-dict="$root/tests/fuzz/$name.dict")
  if [ -n "$runs" ]; then args+=(-runs="$runs"); what="$runs runs"; else args+=(-max_total_time="$secs"); what="${secs}s"; fi
  if [ -n "$fork" ]; then
    args+=(-fork="$fork" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  # shellcheck disable=SC2206
  args+=(${FUZZ_ARGS:-})
  log="$work.log"
  t0=$(date +%s.%N)
  (cd "$work" && "$bin" "${args[@]}" "$work" >"$log" 2>&1)
  rc=$?
  t1=$(date +%s.%N)
  if [ -n "$fork" ]; then   # the parent's last status line: "#N: cov: ... crash: C ..."
    execs=$(sed -n 's/^#\([0-9]*\): .*/\1/p' "$log" | tail -1)
    found=$(sed -n 's/^#[0-9]*: .* oom\/timeout\/crash: \([0-9\/]*\) .*/\1/p' "$log" | tail -1)
  else
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    found=
  fi
  rate=$(awk -v n="${execs:-0}" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a > 0) ? n / (b - a) : 0 }')
  if [ $rc -ne 0 ] || { [ -n "$found" ] && [ "$found" != "0/0/0" ]; }; then
    status=1
    echo "fuzz_$name: FINDING after ${execs:-?} executions (exit $rc${found:+, oom/timeout/crash $found})"
    grep -aE 'ERROR|unprotected|SUMMARY|Test unit written|ALARM' "$log" | sort | uniq -c | sort -rn | head -8
    echo "  findings kept in $keep"
  else
    echo "fuzz_$name: ${execs:-?} executions in $what, no findings"
  fi
  summary+=("$(printf '%-16s %12s executions %8s exec/s  %s' "fuzz_$name" "${execs:-?}" "$rate" \
    "$([ $rc -ne 0 ] || { [ -n "$found" ] && [ "$found" != "0/0/0" ]; } && echo FINDING || echo clean)")")
  rm -rf "$work" "$log"
done
echo "--- fuzz summary (wall-clock exec/s, corpus loading included)"
printf '%s\n' "${summary[@]}"
exit $status
