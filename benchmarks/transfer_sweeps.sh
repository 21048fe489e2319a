#!/usr/bin/env bash
# LR-transfer evidence on a GPU (issue 6). Usage: OUT=dir bash benchmarks/transfer_sweeps.sh width|depth|muon
# Sizes, LRs, steps and parallelism can be overridden (WIDTHS, DEPTHS, LRS, STEPS, PARALLEL) for a CPU dry run.
set -euo pipefail
PY=${PY:-python3}
OUT=${OUT:-out}; WHAT=${1:?width|depth|muon}
STEPS=${STEPS:-200}; PARALLEL=${PARALLEL:-8}; EXTRA=${EXTRA:-}
STAGE=/tmp/stage; mkdir -p "$OUT" "$STAGE"
trap 'tar -czf "$OUT/results-$WHAT.tgz" -C "$STAGE" .' EXIT
sweep() {  # name recipe axis sizes lrs [--set ...]
  local name=$1 recipe=$2 axis=$3 sizes=$4 lrs=$5; shift 5
  "$PY" -m mupctl sweep "$recipe" "--$axis" "$sizes" --lrs "$lrs" --steps "$STEPS" --out "/tmp/sweeps/$name" \
    --set train.eval_batches=16 \
    --parallel "$PARALLEL" "$@" $EXTRA
  for f in sweep.json sweep.md sweep.png; do cp "/tmp/sweeps/$name/$f" "$STAGE/$name-$f"; done
}
case $WHAT in
  width)
    W=${WIDTHS:-256,512,1024,2048}; L=${LRS:-2.4e-4,4.9e-4,9.8e-4,2e-3,3.9e-3,7.8e-3,1.6e-2,3.1e-2}
    sweep width-mup recipes/sweeps/width.yaml widths "$W" "$L"
    sweep width-none recipes/sweeps/width.yaml widths "$W" "$L" --set scaling.recipe=none
    "$PY" -m mupctl coord-check recipes/sweeps/width.yaml --widths "$W" --steps 5 --batch 16 --out /tmp/cc-w \
      --set optimizer.lr=1e-3 || true
    cp /tmp/cc-w/coord_check.json "$STAGE/coord-width-mup.json"; cp /tmp/cc-w/coord_check.png "$STAGE/coord-width-mup.png";;
  depth)
    D=${DEPTHS:-4,8,16,32}; L=${LRS:-4.9e-4,9.8e-4,2e-3,3.9e-3,7.8e-3,1.6e-2}
    sweep depth-depth_mup recipes/sweeps/depth.yaml depths "$D" "$L"
    sweep depth-mup recipes/sweeps/depth.yaml depths "$D" "$L" --set scaling.recipe=mup
    "$PY" -m mupctl coord-check recipes/sweeps/depth.yaml --depths "$D" --steps 5 --batch 16 --out /tmp/cc-d \
      --set optimizer.lr=1e-3 || true
    cp /tmp/cc-d/coord_check.json "$STAGE/coord-depth.json"; cp /tmp/cc-d/coord_check.png "$STAGE/coord-depth.png";;
  muon)
    W=${WIDTHS:-256,512,1024,2048}; L=${LRS:-2.5e-3,5e-3,1e-2,2e-2,4e-2,8e-2}
    sweep width-muon recipes/sweeps/width.yaml widths "$W" "$L" --set optimizer.name=muon
    "$PY" -m mupctl coord-check recipes/sweeps/width.yaml --widths "$W" --steps 5 --batch 16 --out /tmp/cc-m \
      --set optimizer.name=muon --set optimizer.lr=1e-3 || true
    cp /tmp/cc-m/coord_check.json "$STAGE/coord-width-muon.json"; cp /tmp/cc-m/coord_check.png "$STAGE/coord-width-muon.png";;
  coord)  # coordinate checks only (in-process, seconds): width mup/none/muon, depth depth_mup/mup
    cc() { local name=$1; shift; "$PY" -m mupctl coord-check "$@" --steps 5 --batch 16 --out "/tmp/cc-$name" \
             --set optimizer.lr=1e-3 || true
           cp "/tmp/cc-$name/coord_check.json" "$STAGE/coord-$name.json"; cp "/tmp/cc-$name/coord_check.png" "$STAGE/coord-$name.png"; }
    cc width-mup recipes/sweeps/width.yaml --widths 256,512,1024,2048
    cc width-none recipes/sweeps/width.yaml --widths 256,512,1024,2048 --set scaling.recipe=none
    cc width-muon recipes/sweeps/width.yaml --widths 256,512,1024,2048 --set optimizer.name=muon
    cc depth-depth_mup recipes/sweeps/depth.yaml --depths 4,8,16,32
    cc depth-mup recipes/sweeps/depth.yaml --depths 4,8,16,32 --set scaling.recipe=mup;;
esac
