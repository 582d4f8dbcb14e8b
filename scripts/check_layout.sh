#!/usr/bin/env bash
# The layout's one-way data flow (README, "Layout"): no crate depends on `pipeline`, and only
# `pipeline` pulls in DataFusion; only `model`, `eval` and `trainer` pull in Burn.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
for crate in schemas progress model-files verify model eval trainer; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -qE '^(pipeline|datafusion) '; then
    echo "layout: $crate depends on pipeline or datafusion:" >&2
    cargo tree -p "$crate" -e normal -i datafusion 2>/dev/null | head -5 >&2 || true
    fail=1
  fi
done
for crate in schemas progress model-files verify pipeline; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -qE '^burn '; then
    echo "layout: $crate depends on burn" >&2
    fail=1
  fi
done
[ "$fail" = 0 ] && echo "layout: dependencies point one way"
exit "$fail"
