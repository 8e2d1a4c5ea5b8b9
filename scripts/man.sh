#!/usr/bin/env bash
# Writes a man page from its template (docs/man/*.in) at build time:
#   @VERSION@  the version
#   @USAGE@    `courier-broker --help`, verbatim
#   @OPTIONS@  the option table (build/print-options, the code's own table,
#              the one docs/configuration.md holds) as a roff tagged list
# so that the pages never disagree with the code. Usage:
#   scripts/man.sh TEMPLATE OUT VERSION BROKER PRINT_OPTIONS
set -euo pipefail

template=$1 out=$2 version=$3 broker=$4 print_options=$5
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.usage" "$tmp.options"' EXIT

# roff: a backslash is \e, a line may not start with . or ', and the few
# non-ASCII characters get their roff names (man -l and groff -Tascii agree).
roff_text() {
  sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/" -e 's/—/\\(em/g' -e 's/…/.../g' -e 's/-/\\-/g'
}

"$broker" --help | roff_text >"$tmp.usage"

# | `name` | type | default | bounds | description |  ->  .TP / .B name / (type, ...) / text
"$print_options" | tail -n +3 | roff_text | awk -F' \\| ' '
  function trim(s) { gsub(/^[| ]+|[| ]+$/, "", s); return s }
  {
    name = trim($1); type = trim($2); def = trim($3); bounds = trim($4); desc = trim($5)
    gsub(/`/, "", name)
    print ".TP"
    print ".B " name
    line = type
    if (def != "" && def != "\\(em") line = line "; default " def
    if (bounds != "") line = line "; " bounds
    print line "."
    print ".br"
    print desc
  }' | sed -E 's/`([^`]*)`/\\fB\1\\fR/g' >"$tmp.options"

awk -v usage="$tmp.usage" -v options="$tmp.options" -v version="$version" '
  function dump(f,   l) { while ((getline l < f) > 0) print l; close(f) }
  /^@USAGE@$/ { dump(usage); next }
  /^@OPTIONS@$/ { dump(options); next }
  { gsub(/@VERSION@/, version); print }' "$template" >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$out"
