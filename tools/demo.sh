#!/usr/bin/env bash
# The main job on the embedded default, as in the README: build the full procedural dataset,
# print its statistics, train both networks briefly on CPU, and export sample grids.
# Outputs go under out/ (git-ignored). Rerunning resumes or skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=out/default
mkdir -p out/runs
RUN=out/runs/demo
dm-build-lmdb "$DATA"
dm-stats "$DATA"
if [ -f "$RUN/last.pt" ]; then resume=(--resume); else resume=(); fi
dm-train "$DATA" --output "$RUN" --schedule 32:1,64:1 --epoch-samples 6000 --val-samples 1000 \
  --batch-size 32 --workers 2 --device cpu "${resume[@]}"
dm-export-samples "$DATA" --split val --count 8 --output out/samples-val.png --overwrite
dm-export-samples "$DATA" --split val --count 8 --checkpoint "$RUN/best.pt" --output out/predictions-val.png --overwrite
echo "done: dataset $DATA, run $RUN, grids out/samples-val.png and out/predictions-val.png"
