#!/usr/bin/env bash
# The main job: set-up, build, then the demo on its embedded defaults. The demo trains on the
# CPU, so its gdn is built without the CUDA kernels (nvcc adds a minute on 2 cores), in its
# own directory so that it never flips the main build's CUDA setting.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${GDN_BUILD_DIR:-build-demo}
GDN_BUILD_DIR=$build GDN_BUILD_TARGETS=gdn bash scripts/build.sh -DGDN_CUDA=OFF
exec "$build/gdn" demo "$@"
