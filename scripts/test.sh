#!/usr/bin/env bash
# The test command: set-up, build, then every CTest test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
build=${GDN_BUILD_DIR:-build}
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
