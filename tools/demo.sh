#!/usr/bin/env bash
# The main job on the embedded default, as in the README: build the full procedural dataset (424,320
# samples), print its statistics, train both networks for a few minutes on CPU (a demo: bounded by time,
# so it ends on any machine; the 20-minute recipe in the README trains them properly), and export sample
# grids and the training curves. Outputs go under out/ (git-ignored). Rerunning resumes or skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=out/default
RUN=out/runs/demo
DEMO_TRAIN_MIN=${DEMO_TRAIN_MIN:-3}
dm-build-lmdb "$DATA"
dm-stats "$DATA"
if [ -f "$RUN/last.pt" ]; then resume=(--resume); else resume=(); fi
dm-train "$DATA" --output "$RUN" --schedule 64:100 --epoch-samples 2000 --val-samples 500 --lr 2e-3 \
  --width 1.5 --mask-width 0.5 --time-limit-min "$DEMO_TRAIN_MIN" --batch-size 32 --workers 2 --device cpu \
  "${resume[@]}"
dm-export-samples "$DATA" --split val --count 8 --output out/samples-val.png --overwrite
dm-export-samples "$DATA" --split val --count 8 --checkpoint "$RUN/best.pt" --output out/predictions-val.png --overwrite
echo "done: dataset $DATA, run $RUN (curves $RUN/curves.png), grids out/samples-val.png and out/predictions-val.png"
