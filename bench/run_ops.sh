#!/usr/bin/env bash
# Runs `gdn bench ops` and keeps its record in bench/results/<date>-cpu-ops.json.
# Extra arguments go to the benchmark (e.g. --threads 2 --repeats 7).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${GDN_BUILD_DIR:-build}
[ -x "$build/gdn" ] || bash scripts/build.sh
out="bench/results/$(date -u +%Y-%m-%d)-cpu-ops.json"
"$build/gdn" bench ops --out "$out" "$@"
echo "wrote $out"
