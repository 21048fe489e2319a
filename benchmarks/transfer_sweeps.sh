#!/usr/bin/env bash
# LR-transfer evidence on a GPU (issue 6): OUT=dir bash benchmarks/transfer_sweeps.sh width|depth|muon|coord
# Results are staged in /tmp/stage and packed into $OUT/results-<what>.tgz (docs/results/ holds them).
# Sizes, LRs, steps and parallelism can be overridden (WIDTHS, DEPTHS, LRS, STEPS, PARALLEL, EXTRA) for a
# CPU dry run, e.g. PY=.venv/bin/python STEPS=6 WIDTHS=64,128 LRS=1e-3,1e-2 EXTRA="--set model.seq_len=32 …".
set -euo pipefail
PY=${PY:-python3}
OUT=${OUT:-out}; WHAT=${1:?width|depth|muon|coord}
STEPS=${STEPS:-200}; PARALLEL=${PARALLEL:-8}; EXTRA=${EXTRA:-}
STAGE=/tmp/stage; mkdir -p "$OUT" "$STAGE"
trap 'tar -czf "$OUT/results-$WHAT.tgz" -C "$STAGE" .' EXIT

sweep() {  # NAME RECIPE AXIS SIZES LRS [--set …]
  local name=$1 recipe=$2 axis=$3 sizes=$4 lrs=$5; shift 5
  "$PY" -m mupctl sweep "$recipe" "--$axis" "$sizes" --lrs "$lrs" --steps "$STEPS" --out "/tmp/sweeps/$name" \
    --set train.eval_batches=16 --parallel "$PARALLEL" "$@" $EXTRA
  for f in sweep.json sweep.md sweep.png; do cp "/tmp/sweeps/$name/$f" "$STAGE/$name-$f"; done
}
pair() {  # AXIS SIZES LRS RECIPE SCALING_A SCALING_B: the same grid under two scaling recipes
  local axis=$1 sizes=$2 lrs=$3 recipe=$4
  for scaling in "$5" "$6"; do sweep "$axis-$scaling" "$recipe" "${axis}s" "$sizes" "$lrs" --set "scaling.recipe=$scaling"; done
}
cc() {  # NAME RECIPE ARGS…: a coordinate check near the base optimum LR (in-process, seconds)
  local name=$1; shift
  "$PY" -m mupctl coord-check "$@" --steps 5 --batch 16 --out "/tmp/cc-$name" --set optimizer.lr=1e-3 || true
  for ext in json png; do cp "/tmp/cc-$name/coord_check.$ext" "$STAGE/coord-$name.$ext"; done
}

W=${WIDTHS:-256,512,1024,2048}; D=${DEPTHS:-4,8,16,32}
case $WHAT in
  width) pair width "$W" "${LRS:-2.4e-4,4.9e-4,9.8e-4,2e-3,3.9e-3,7.8e-3,1.6e-2,3.1e-2}" recipes/sweeps/width.yaml mup none;;
  depth) pair depth "$D" "${LRS:-4.9e-4,9.8e-4,2e-3,3.9e-3,7.8e-3,1.6e-2}" recipes/sweeps/depth.yaml depth_mup mup;;
  muon) sweep width-muon recipes/sweeps/width.yaml widths "$W" "${LRS:-2.5e-3,5e-3,1e-2,2e-2,4e-2,8e-2}" \
          --set optimizer.name=muon;;
  coord)
    cc width-mup recipes/sweeps/width.yaml --widths "$W"
    cc width-none recipes/sweeps/width.yaml --widths "$W" --set scaling.recipe=none
    cc width-muon recipes/sweeps/width.yaml --widths "$W" --set optimizer.name=muon
    cc depth-depth_mup recipes/sweeps/depth.yaml --depths "$D"
    cc depth-mup recipes/sweeps/depth.yaml --depths "$D" --set scaling.recipe=mup;;
esac
