#!/usr/bin/env bash
# Configures and builds gdn (Release) into ${GDN_BUILD_DIR:-build}; every target, or only
# those named in GDN_BUILD_TARGETS (the demo needs only the gdn executable).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${GDN_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build" -j "$(nproc)" ${GDN_BUILD_TARGETS:+--target $GDN_BUILD_TARGETS}
