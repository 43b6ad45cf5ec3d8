#!/usr/bin/env bash
# Quality on the held-out split (unseen backgrounds and foregrounds) after a fixed CPU time budget at
# 64 px, for the default pair and the original's pair, one after the other on the same machine.
#
#   tools/bench_quality.sh DATA [MINUTES] [OUT]        (defaults: 20 minutes, out/quality)
#
# Each run stops at the time limit (training + validations counted), then validates on the first
# 2,000 val samples; the last line of each run's metrics.jsonl holds the figures, printed at the end.
# RUNS="default" (or "original") runs one of the two. Both use dm-train's default precision: bf16
# autocast + channels_last where the CPU computes bf16 natively (training/precision.py).
set -euo pipefail
DATA=${1:?usage: tools/bench_quality.sh DATA [MINUTES] [OUT]}
MINUTES=${2:-20}
OUT=${3:-out/quality}
EPOCHS=${EPOCHS:-100}  # the time limit ends the run; the LR schedule follows the time
RUNS=${RUNS:-default original}
mkdir -p "$OUT"
run() {
  local name=$1; shift
  dm-train "$DATA" --output "$OUT/$name" --overwrite --schedule "64:$EPOCHS" --epoch-samples 6000 \
    --val-samples 2000 --batch-size 32 --workers 2 --device cpu --time-limit-min "$MINUTES" --no-progress "$@"
}
for name in $RUNS; do
  case $name in
    # the best measured within 20 CPU minutes (docs/benchmarks.md): a narrower mask network leaves
    # the compute to the depth network
    default) run default --lr 2e-3 --width 1.5 --mask-width 0.5 ;;
    original) run original --depth-arch resnet50-upproj --mask-arch autoencoder --lr 1e-3 ;;
    *) echo "bench_quality.sh: unknown run '$name' in RUNS (default, original)" >&2; exit 2 ;;
  esac
done
python - "$OUT" $RUNS <<'PY'
import json, sys, pathlib
for name in sys.argv[2:]:
    rows = [json.loads(l) for l in open(pathlib.Path(sys.argv[1]) / name / "metrics.jsonl")]
    base, last = rows[0], rows[-1]
    print(f"{name:9s} epochs {last['epoch']:3d} ({last['elapsed_s'] / 60:.1f} min)  depth RMSE {last['depth_rmse']:.4f} "
          f"(constant {base['depth_rmse']:.4f})  delta1 {last['depth_delta1']:.3f}  AbsRel {last['depth_absrel']:.3f}  "
          f"mask IoU {last['mask_iou']:.4f} (constant {base['mask_iou']:.4f})  Dice {last['mask_dice']:.4f}")
PY
