#!/usr/bin/env bash
# make docs-check: the option table in docs/configuration.md (from its
# "| name | type | default | bounds | description |" line to the first line
# that is not a table row) must equal what the code prints from its option
# table (PRINT_OPTIONS, built from config_print_options). Prints a diff
# (docs → code) and exits 1 when they differ.
#   docs-check.sh PRINT_OPTIONS_BIN [DOC]
set -euo pipefail
bin=$1
doc=${2:-docs/configuration.md}
code=$(mktemp); docs=$(mktemp)
trap 'rm -f "$code" "$docs"' EXIT
"$bin" >"$code"
awk '/^\| name \| type \| default \| bounds \| description \|$/ { on = 1 }
     on && !/^\|/ { exit }
     on { print }' "$doc" >"$docs"
if [ ! -s "$docs" ]; then
  echo "docs-check: no option table (| name | type | default | bounds | description |) in $doc" >&2
  exit 1
fi
if ! diff -u --label "$doc" --label "config_print_options" "$docs" "$code"; then
  echo "docs-check: $doc's option table differs from the code's (above); paste the code's table in" >&2
  exit 1
fi
echo "docs-check: $doc matches the option table ($(($(wc -l <"$code") - 2)) options)"
