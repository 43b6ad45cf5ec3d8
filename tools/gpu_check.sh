#!/usr/bin/env bash
# Every GPU path of depthmask in one short run, figures in OUT/gpu_check.json and OUT/gpu_check.md:
#   throughput  both pairs (default, resnet50-upproj/autoencoder) at 64 and 224 px, float32 vs bf16 +
#               channels_last, eager and torch.compile: samples/s, step time, peak memory
#   loader      the default pair trained from make_loader at 224 px with one worker per core: the share of
#               each step spent waiting for data
#   ddp         torchrun over every GPU with NCCL (world size 1 still goes through NCCL), 300 steps, held-out
#               metrics against the same loop in one process
#   depth_model dm-build-lmdb --depth-model (a small TorchScript model made here) on CUDA vs CPU
#   predict     dm-predict on CUDA, when the command exists
#   quality     dm-train for 5 minutes at 224 px on the default dataset: held-out depth RMSE, delta1, IoU
#
#   tools/gpu_check.sh [--out DIR] [--data DATASET] [--wheels DIR] [--quality-min M] [--overwrite]
#   tools/gpu_check.sh --dry-run [--out DIR]       # every step, tiny, on the CPU (gloo), about a minute
#
# Set-up of a fresh GPU machine (not counted in the 8 minutes the run takes after it). torch comes with the
# machine; the others may not. Beforehand, on a machine with the package index and the same Python:
#   pip download lmdb msgpack click tqdm opencv-python-headless pillow -d wheels/ --only-binary=:all:
# then carry wheels/ with the working tree and run  tools/gpu_check.sh --wheels wheels  (it installs the
# missing ones with pip install --no-index --find-links wheels). Without --data it builds the default
# dataset (dm-build-lmdb OUT/data, 424,320 samples at 224 px) first, also as set-up.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
DRY=0 OUT=out/gpu_check DATA="" WHEELS="" QUALITY_MIN=5 OVERWRITE=0
die() { echo "error: gpu_check.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUT=${2:?}; shift ;;
    --data) DATA=${2:?}; shift ;;
    --wheels) WHEELS=${2:?}; shift ;;
    --quality-min) QUALITY_MIN=${2:?}; shift ;;
    --overwrite) OVERWRITE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
[ -n "$DATA" ] && [ ! -f "$DATA/manifest.json" ] && die "--data: $DATA holds no dataset (no manifest.json)"
if [ -e "$OUT/gpu_check.json" ] && [ $OVERWRITE = 0 ]; then
  die "--out: $OUT holds a report already; pass --overwrite to replace it"
fi
[ -n "$WHEELS" ] && [ ! -d "$WHEELS" ] && die "--wheels: $WHEELS is not a folder"

# ---- set-up ---------------------------------------------------------------------------------------
missing=$($PY - <<'PY'
import importlib.util
names = {"lmdb": "lmdb", "msgpack": "msgpack", "cv2": "opencv-python-headless", "click": "click", "tqdm": "tqdm",
         "PIL": "pillow", "torch": "torch", "torchvision": "torchvision"}
print(" ".join(pkg for mod, pkg in names.items() if importlib.util.find_spec(mod) is None))
PY
)
if [ -n "$missing" ]; then
  [ -n "$WHEELS" ] || die "missing Python packages: $missing; bring their wheels (see --help) and pass --wheels DIR"
  $PY -m pip install --no-index --find-links "$WHEELS" $missing >&2 || die "could not install $missing from $WHEELS"
fi
rm -rf "$OUT/parts"
mkdir -p "$OUT"
# the product's commands: installed console scripts, or the same click commands from this tree
dm_build() { if command -v dm-build-lmdb >/dev/null; then dm-build-lmdb "$@"; else
  $PY -c 'import sys; sys.argv[0] = "dm-build-lmdb"; from pipeline.cli import build_lmdb_command as m; m()' "$@"; fi; }
dm_train() { if command -v dm-train >/dev/null; then dm-train "$@"; else $PY -m training.cli "$@"; fi; }
now() { date +%s.%N; }
since() { $PY -c "import sys; print(round($(now) - $1, 2))"; }
note() { $PY tools/gpu_check.py note "$OUT" "$@"; }

if [ $DRY = 1 ]; then
  DEVICE=cpu NGPU=2 SIZE=192 DEPTH_DEVICE=cpu BUILD_LIMIT=8 DEPTH_INPUT=32 DRY_FLAG=--dry-run
  [ -n "$DATA" ] || { DATA=$OUT/data; rm -rf "$DATA"; dm_build "$DATA" --backgrounds 4 --foregrounds 4 --positions 2 \
    --size 192 --shard-size 16 --workers 1 --no-progress >&2; }
  QUALITY=(--schedule 32:100 --epoch-samples 32 --val-samples 8 --batch-size 8 --width 0.25 --workers 0)
  QUALITY_MIN=0.05
else
  DEVICE=cuda SIZE=224 DEPTH_DEVICE=cuda BUILD_LIMIT=2048 DEPTH_INPUT=256 DRY_FLAG=
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
  [ "$NGPU" -ge 1 ] || die "no CUDA GPU here (torch.cuda.device_count() is 0); use --dry-run on a CPU"
  if [ -z "$DATA" ]; then
    DATA=$OUT/data
    t=$(now); dm_build "$DATA" --no-progress >&2; echo "set-up: default dataset built in $(since "$t") s" >&2
  fi
  CORES=$(nproc)
  QUALITY=(--schedule 224:1000 --epoch-samples 50000 --val-samples 2000 --batch-size 128 --lr 2e-3 --workers "$CORES")
fi
START=$(now)

# ---- env, throughput, loader, the single-process DDP reference, inputs of later steps ------------
$PY tools/gpu_check.py run "$OUT" "$DATA" env throughput loader ddp depth-model-file predict-pairs $DRY_FLAG >&2

# ---- the same DDP loop in a process group over every GPU (gloo over 2 CPU processes in the dry run)
torchrun --standalone --nproc-per-node "$NGPU" tools/gpu_check.py run "$OUT" "$DATA" ddp $DRY_FLAG >&2 ||
  echo "gpu_check.sh: torchrun failed (the report says which section)" >&2

# ---- the depth model's device path in dm-build-lmdb, against the CPU ------------------------------
PHOTOS=$OUT/photos
$PY tools/make_photo_folders.py "$PHOTOS" --backgrounds 4 --foregrounds 4 --height $((SIZE * 3 / 2)) >&2
depth_build() {  # OUTPUT DEVICE
  rm -rf "$1"
  dm_build "$1" --bg "$PHOTOS/bg" --fg "$PHOTOS/fg" --depth-model "$OUT/depth_model.pt" --depth-mode per-sample \
    --depth-model-output depth --depth-model-input-size $DEPTH_INPUT --depth-device "$2" --limit $BUILD_LIMIT \
    --size $SIZE --no-progress >&2
}
if t=$(now) && depth_build "$OUT/depth-$DEPTH_DEVICE" "$DEPTH_DEVICE" && s1=$(since "$t") &&
   t=$(now) && depth_build "$OUT/depth-cpu-ref" cpu && s2=$(since "$t"); then
  $PY tools/gpu_check.py depth-model "$OUT" "$OUT/depth-$DEPTH_DEVICE" "$OUT/depth-cpu-ref" --seconds "$s1" "$s2" \
    --device "$DEPTH_DEVICE" >&2
else
  note depth_model failed "dm-build-lmdb --depth-model --depth-device $DEPTH_DEVICE failed (its error is above)"
fi

# ---- the quality run: dm-train at 224 px for QUALITY_MIN minutes ----------------------------------
QCMD=(dm-train "$DATA" --output "$OUT/quality" --overwrite --device "$DEVICE" --time-limit-min "$QUALITY_MIN"
      --val-samples 2000 --no-progress "${QUALITY[@]}")
t=$(now)
if dm_train "${QCMD[@]:1}" >&2; then
  $PY tools/gpu_check.py quality "$OUT" "$OUT/quality" --seconds "$(since "$t")" --command "${QCMD[*]}" >&2
else
  note quality failed "dm-train failed (its error is above): ${QCMD[*]}"
fi

# ---- dm-predict on the device, with the quality run's checkpoint ----------------------------------
if ! command -v dm-predict >/dev/null; then
  note predict skipped "dm-predict is not installed here (another issue is building it); run this script again once it is"
else
  help=$(dm-predict --help 2>&1 || true)
  model=()  # the checkpoint: positional (Usage: dm-predict [OPTIONS] MODEL) or an option
  if grep -q "Usage: dm-predict \[OPTIONS\] MODEL" <<<"$help"; then model=("$OUT/quality/best.pt")
  else for o in --checkpoint --model; do grep -q -- "$o" <<<"$help" && { model=("$o" "$OUT/quality/best.pt"); break; }; done; fi
  if [ ${#model[@]} = 0 ] || ! grep -q -- "--fg-bg" <<<"$help" || ! grep -q -- "--output" <<<"$help"; then
    note predict skipped "dm-predict exists but not with the options this script expects (MODEL, --bg, --fg-bg, --output, --device): update tools/gpu_check.sh"
  else
    t=$(now)
    if dm-predict "${model[@]}" --bg "$OUT/pairs/bg" --fg-bg "$OUT/pairs/fg_bg" \
         --output "$OUT/predicted" --device "$DEVICE" --overwrite --no-progress >&2; then
      s=$(since "$t"); n=$(ls "$OUT/pairs/bg" | wc -l)
      note predict ok "dm-predict on $DEVICE: $n pairs from the val split ($($PY -c "print(round($n / $s, 1))") pairs/s, start-up included)" --seconds "$s"
    else
      note predict failed "dm-predict best.pt --bg --fg-bg --output --device $DEVICE failed (its error is above)"
    fi
  fi
fi

$PY tools/gpu_check.py report "$OUT" --seconds "$(since "$START")"
cat "$OUT/gpu_check.md"
