# Shared by scripts/demo.sh and the benchmarks (through scripts/bench/lib.sh)
# (sourced). They set `work` (a temporary folder) and `pids` (the processes
# they start) and `trap cleanup EXIT`.

# Stops the processes in pids and removes $work.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# wait_for FILE REGEX [WHO]: the trailing number of REGEX's first match in
# FILE, once it appears; bounded to 10 s (100 x 0.1 s).
wait_for() {
  local file=$1 rx=$2 who=${3:-${0##*/}} m
  for _ in $(seq 100); do
    m=$(grep -oE "$rx" "$file" 2>/dev/null | head -1 || true)
    [ -n "$m" ] && { echo "$m" | grep -oE '[0-9]+$'; return 0; }
    sleep 0.1
  done
  echo "$who: timed out waiting for $rx in $file" >&2; cat "$file" >&2; return 1
}
