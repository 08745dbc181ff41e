#!/usr/bin/env bash
# One command for an H100/H200: build for sm_90a, check every CUDA kernel against the CPU fp64
# reference, compute-sanitizer memcheck on small cases and racecheck on one, time our kernels and
# FLA's on the same machine, write bench/results/<date>-<gpu>.{json,md}.
#
#   bench/gpu/run.sh --fla PATH [--bin DIR] [--results DIR] [--quick] [--no-fla] [--fla-timeout S] [--kda]
#     --fla PATH        folder holding FLA's `fla` package (never committed here)
#     --bin DIR         use prebuilt gdn_gpu_check / gdn_gpu_bench (and DIR/lib) instead of building
#     --fla-timeout S   stop FLA's timing after S seconds and report the rows it finished (its Triton
#                       compile and autotune take minutes on a fresh machine: 158 s for the first shape
#                       once, bench/gpu/NOTES.md)
#     --kda             also time FLA's chunk_kda (after decode; its compile takes minutes too)
set -uo pipefail
cd "$(dirname "$0")/../.."
fla="" bin="" results="bench/results" quick="" no_fla="" fla_timeout="" kda=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fla) fla="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    --no-fla) no_fla=1; shift ;;
    --fla-timeout) fla_timeout="$2"; shift 2 ;;
    --kda) kda="--kda"; shift ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$fla" ] && [ -z "$no_fla" ]; then echo "run.sh: --fla PATH is required (or --no-fla)" >&2; exit 2; fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [ -z "$bin" ]; then
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null &&
    cmake --build build-gpu -j "$(nproc)" --target gdn_gpu_check gdn_gpu_bench || exit 1
  bin=build-gpu/tests/gpu
  bench_bin=build-gpu/tests/gpu/gdn_gpu_bench
else
  export LD_LIBRARY_PATH="$(cd "$bin" && pwd)/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  bench_bin="$bin/gdn_gpu_bench"
fi

failed=()
echo "== check against the fp64 reference"
"$bin/gdn_gpu_check" || failed+=(check)
echo "== compute-sanitizer memcheck (small cases)"
compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/gdn_gpu_check" \
  --gtest_filter='GpuChunkSmall.*:GpuDecodeSmall.*' || failed+=(memcheck)
echo "== compute-sanitizer racecheck (shared-memory hazards, the bf16 chunk cases: training path, chain (streamed too) and single-pass forward)"
compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 "$bin/gdn_gpu_check" \
  --gtest_filter='GpuChunkSmall.Bf16:GpuChunkSmall.SinglePassBf16:GpuChunkSmall.ChainStreamedBf16' || failed+=(racecheck)
tmp=$(mktemp -d)
echo "== timing gdn"
"$bench_bin" "$tmp/gdn.json" $quick || failed+=(bench)
if [ -z "$no_fla" ]; then
  echo "== timing FLA (first calls compile and autotune)"
  PYTHONUNBUFFERED=1 ${fla_timeout:+timeout "$fla_timeout"} python3 bench/gpu/fla_bench.py --fla "$fla" \
    --out "$tmp/fla.json" $quick $kda
  rc=$?
  if [ -n "$fla_timeout" ] && [ $rc = 124 ]; then
    fla_stopped=" FLA's timing was stopped at ${fla_timeout} s (--fla-timeout): its rows after that are missing."
    echo "run.sh:$fla_stopped"
  elif [ $rc != 0 ]; then
    failed+=(fla)
  fi
fi
if [ -f "$tmp/gdn.json" ]; then
  checks="gdn_gpu_check, memcheck and racecheck passed."
  [[ " ${failed[*]} " == *" check "* || " ${failed[*]} " == *" memcheck "* || " ${failed[*]} " == *" racecheck "* ]] &&
    checks="CHECKS FAILED: ${failed[*]} (see the log)."
  note="$checks FLA was not timed (--no-fla)."
  [ -z "$no_fla" ] &&
    note="$checks FLA's guard for its gated backward on Triton 3.4-3.7.1 (FLA issue #640) was turned off in the timed copy.${fla_stopped:-}"
  python3 bench/gpu/report.py "$tmp/gdn.json" "$tmp/fla.json" "$results" "$note" || failed+=(report)
fi
if [ ${#failed[@]} -gt 0 ]; then echo "run.sh: FAILED: ${failed[*]}"; exit 1; fi
echo "run.sh: all checks passed"
