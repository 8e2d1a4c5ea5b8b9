#!/usr/bin/env bash
# make fuzz: runs each libFuzzer driver for SECONDS (default 60) on a copy of
# its checked-in corpus (tests/fuzz/corpus/NAME), so the repository's corpus
# only grows by hand. Prints executions and findings per driver.
set -u
secs=${1:-60}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
status=0
for bin in "$@"; do
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")   # the run happens in a scratch folder
  name=${bin##*/fuzz_}
  work=$(mktemp -d)
  [ -d "$root/tests/fuzz/corpus/$name" ] && cp -r "$root/tests/fuzz/corpus/$name/." "$work/"
  dict=()
  [ -f "$root/tests/fuzz/$name.dict" ] && dict=(-dict="$root/tests/fuzz/$name.dict")
  log="$work.log"
  (cd "$work" && "$bin" -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" "$work" >"$log" 2>&1)
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    status=1
    echo "fuzz_$name: FINDING after ${execs:-?} executions (exit $rc)"
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5
  else
    echo "fuzz_$name: ${execs:-?} executions in ${secs}s, no findings"
  fi
  rm -rf "$work" "$log"
done
exit $status
