#!/usr/bin/env bash
# Zoology's MQAR point (L=256, 16 pairs), Gated DeltaNet d_model 64, 2 layers, as the README
# reports it: four learning-rate cycles on Zoology's training mixture, each warm-started from
# the previous one's weights (fresh AdamW, its own warmup + cosine), the last on a fresh draw
# of the mixture. About 5.5 hours on 2 cores (2.5 M tokens/min), 1.5 on 16.
#   bench/train/zoology_cycles.sh [--threads N] [--dir DIR] [--gdn BIN]
# Resumable: a cycle interrupted mid-way continues from its checkpoint (--resume), a finished
# one (DIR/cN.done) is skipped. Ends with the held-out accuracy on (256,16) and the
# evaluation JSON in DIR/eval.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=$(nproc) dir=zoology_cycles gdn=build/gdn
while [ $# -gt 0 ]; do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --gdn) gdn=$2; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--dir DIR] [--gdn BIN]" >&2; exit 2 ;;
  esac
done
[ -x "$gdn" ] || { echo "zoology_cycles: no gdn binary at $gdn (bash scripts/build.sh)" >&2; exit 1; }
mkdir -p "$dir"
config=configs/mqar_zoology_mix.json
# cycle: epochs, peak lr, data seed (cycle 1 takes the config's 12 epochs at 2.2e-3)
cycles=("12 2.2e-3 0" "12 1e-3 0" "5 5e-4 0" "5 5e-4 1")
prev=""
for i in 1 2 3 4; do
  read -r epochs lr seed <<<"${cycles[$((i - 1))]}"
  ck=$dir/c$i.safetensors
  if [ ! -f "$dir/c$i.done" ]; then
    args=(train --config $config --epochs "$epochs" --lr "$lr" --data-seed "$seed" --threads "$threads"
          --checkpoint "$ck" --checkpoint-every 100 --json)
    if [ -f "$ck" ]; then args+=(--resume); elif [ -n "$prev" ]; then args+=(--init-from "$prev"); fi
    echo "zoology_cycles: cycle $i: $epochs epochs, peak lr $lr, data seed $seed" >&2
    "$gdn" "${args[@]}" > "$dir/c$i.json"
    touch "$dir/c$i.done"
  fi
  prev=$ck
done
"$gdn" eval --checkpoint "$prev" --config $config --threads "$threads" --json | tail -1 > "$dir/eval.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f'held-out (256,16): {100*d[\"eval_accuracy\"]:.2f}%')" "$dir/eval.json"
