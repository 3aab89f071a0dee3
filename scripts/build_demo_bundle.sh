#!/usr/bin/env bash
# Rebuild the shipped demo bundle (runtime/demo/bundle) from nothing, with the project's own pipeline:
#   hbci-synth (synthetic benchmark) -> hbci-pretrain (backbone on still frames) -> hbci-train small ->
#   export/build_engines.py (FP32+FP16, validated and calibrated on the val split) -> scripts/ship_demo_bundle.py
#   (keep FP16 only) -> hbci-gallery (the background gallery behind per-query thresholds, from the FP16 encoder).
# Needs the train extra (torch). About 21 minutes on a quiet 2-core CPU. Steps already done are reused:
#   SYNTH=/tmp/synth BACKBONE=/tmp/synth/backbone.pt CHECKPOINT=/tmp/runs/full/best.pt scripts/build_demo_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
WORK=${WORK:-/tmp/hbci-demo-build}
SYNTH=${SYNTH:-$WORK/synth}
BACKBONE=${BACKBONE:-$SYNTH/backbone.pt}
CHECKPOINT=${CHECKPOINT:-$WORK/run/best.pt}
PYTHON=${PYTHON:-python}

if [ ! -f "$SYNTH/meta.json" ]; then
  "$PYTHON" -m hbci.synth --out "$SYNTH" --seed 0 --train-captions 3 --workers "${WORKERS:-2}"
fi
if [ ! -f "$BACKBONE" ]; then
  "$PYTHON" -m hbci.pretrain --out "$BACKBONE" --no-progress
fi
if [ ! -f "$CHECKPOINT" ]; then
  "$PYTHON" -m hbci.train small data.root="$SYNTH" model.pretrained="$BACKBONE" \
    train.out_dir="$(dirname "$CHECKPOINT")"
fi
"$PYTHON" export/build_engines.py --checkpoint "$CHECKPOINT" --out "$WORK/bundle" --precision fp32,fp16 \
  --data "$SYNTH" --split val
"$PYTHON" scripts/ship_demo_bundle.py "$WORK/bundle" runtime/demo/bundle --precision fp16
"$PYTHON" -m hbci.runtime.gallery runtime/demo/bundle
du -sh runtime/demo/bundle
