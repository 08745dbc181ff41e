#!/usr/bin/env bash
# The main job: set-up, build, then the demo on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
GDN_BUILD_TARGETS=gdn bash scripts/build.sh
build=${GDN_BUILD_DIR:-build}
exec "$build/gdn" demo "$@"
