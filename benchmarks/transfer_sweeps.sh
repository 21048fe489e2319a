#!/usr/bin/env bash
# LR-transfer evidence on a GPU (issue 6): OUT=dir bash benchmarks/transfer_sweeps.sh JOB… where JOB is
#   width-mup width-none depth-depth_mup depth-mup depth8-depth_mup depth8-mup depth8-depth_mup-muon
#   depth8-mup-muon muon muon-rms coord coord8
# (depth8-*: the depth sweep from a base of 8 layers, depths DEPTHS8 = 8,16,32,64; coord8 its coordinate check;
# muon: Muon with adjust_lr_fn original, muon-rms: with match_rms_adamw; depth8-*-muon: the depth sweep
# with Muon original, sweeping the Muon LR over MUON_LRS)
# Jobs run in order until BUDGET seconds (default 540) are used; a sweep cut short by the budget is
# resumed by the next call (finished cells are skipped). At exit $OUT/results.tgz holds stage/ (the
# reports), every finished or diverged cell's metrics.jsonl, DIVERGED.json and recipe.yaml, and every
# failed or unfinished cell's sweep.log (its error), so
# nothing is lost when the machine goes back: RESTORE=that results.tgz unpacks it into WORK first.
# Sizes, LRs, steps, seeds and parallelism can be overridden: WIDTHS, DEPTHS, DEPTHS8, LRS, STEPS, SEEDS,
# PARALLEL, EXTRA (more --set overrides for every sweep) and TAG (a suffix for the sweep names, so that a
# job can run again under other settings next to its earlier results, e.g. TAG=-1000steps STEPS=1000).
# CORPUS=code trains every cell on the Python sources of the machine (benchmarks/code_corpus.py, built once
# into $WORK/code-corpus) instead of the embedded Shakespeare, which a cell of more than ~110 steps repeats;
# cells record the corpus's absolute path, so a RESTORE must use the same WORK path.
# A CPU dry run: PY=.venv/bin/python STEPS=6 WIDTHS=64,128 LRS=1e-3,1e-2 \
#   EXTRA="--set model.seq_len=32 --set train.global_batch=4 --set train.micro_batch=4 --set schedule.warmup_steps=2" … width-mup
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:-out}; WORK=${WORK:-gpu-work}; BUDGET=${BUDGET:-540}
# PARALLEL: cells sharing the GPU; 4 fits an 80 GB H100 (8 ran out of memory at width 2048 and depth 64;
# compiled depth-64 cells take 15.6 GB each and 6 ran out); 8 fits depths ≤ 16
STEPS=${STEPS:-300}; SEEDS=${SEEDS:-1}; PARALLEL=${PARALLEL:-4}; EXTRA=${EXTRA:-}; TAG=${TAG:-}
DEADLINE=$(( $(date +%s) + BUDGET ))
STAGE=$WORK/stage; mkdir -p "$OUT" "$STAGE"
if [[ -n ${RESTORE:-} ]]; then tar -xzf "$RESTORE" -C "$WORK"; fi
if [[ ${CORPUS:-embedded} == code ]]; then
  [[ -f $WORK/code-corpus/corpus.json ]] || "$PY" benchmarks/code_corpus.py "$WORK/code-corpus" || exit 1
  if [[ -f $STAGE/code-corpus.json ]] && ! cmp -s "$STAGE/code-corpus.json" "$WORK/code-corpus/corpus.json"; then
    echo "warning: this code corpus differs from the one the restored cells trained on ($STAGE/code-corpus.json)"
  fi
  cp "$WORK/code-corpus/corpus.json" "$STAGE/code-corpus.json"
  EXTRA="$EXTRA --set data.source=bin --set data.path=$(cd "$WORK/code-corpus" && pwd)"
fi
pack() {  # the reports + what a resumed sweep needs to skip the finished cells (unfinished ones rerun)
  "$PY" - "$WORK" > "$WORK/cells.txt" <<'PY'
import sys
from pathlib import Path
from mupctl.diagnostics.cells import cell_state
from mupctl.recipe import load_recipe
work = Path(sys.argv[1])
for cell in sorted(work.glob("sweeps/*/cells/*")):
    recipe = cell / "recipe.yaml"  # each cell's own step count: one WORK holds sweeps of several lengths
    state = cell_state(cell, load_recipe(recipe).train.steps) if recipe.exists() else "new"
    names = ("metrics.jsonl", "DIVERGED.json", "recipe.yaml") if state in ("done", "diverged") else ("sweep.log",)
    for name in names:
        if (cell / name).exists():
            print((cell / name).relative_to(work))
PY
  tar -czf "$OUT/results.tgz" -C "$WORK" stage -T "$WORK/cells.txt"
}
trap pack EXIT

left() { echo $(( DEADLINE - $(date +%s) )); }
sweep() {  # NAME RECIPE AXIS SIZES LRS [--set …]: one sweep, cut at the deadline, resumable
  local name=$1$TAG recipe=$2 axis=$3 sizes=$4 lrs=$5; shift 5
  if (( $(left) < 30 )); then echo "skip $name: budget used"; return; fi
  timeout "$(left)" "$PY" -m mupctl sweep "$recipe" "--$axis" "$sizes" --lrs "$lrs" --steps "$STEPS" \
    --seeds "$SEEDS" --out "$WORK/sweeps/$name" --parallel "$PARALLEL" "$@" $EXTRA
  echo "sweep $name: exit $?"
  for f in sweep.json sweep.md sweep.png; do cp "$WORK/sweeps/$name/$f" "$STAGE/$name-$f" 2>/dev/null; done
}
cc() {  # NAME RECIPE ARGS…: a coordinate check near the base optimum LR (in-process, seconds)
  local name=$1$TAG; shift
  if (( $(left) < 30 )); then echo "skip coord $name: budget used"; return; fi
  timeout "$(left)" "$PY" -m mupctl coord-check "$@" --steps 5 --batch 16 --out "$WORK/cc-$name" --set optimizer.lr=1e-3
  for ext in json png; do cp "$WORK/cc-$name/coord_check.$ext" "$STAGE/coord-$name.$ext" 2>/dev/null; done
}

W=${WIDTHS:-256,512,1024,2048}; D=${DEPTHS:-4,8,16,32}; D8=${DEPTHS8:-8,16,32,64}
BASE8=(--set scaling.base.n_layers=8 --set model.n_layers=8)
MUON=(--set optimizer.name=muon --set optimizer.muon.adjust_lr_fn=original)
MUON_RMS=(--set optimizer.name=muon --set optimizer.muon.adjust_lr_fn=match_rms_adamw)
WIDTH_LRS=${LRS:-2.4e-4,4.9e-4,9.8e-4,2e-3,3.9e-3,7.8e-3,1.6e-2,3.1e-2}
DEPTH_LRS=${LRS:-4.9e-4,9.8e-4,2e-3,3.9e-3,7.8e-3,1.6e-2}
MUON_LRS=${LRS:-2.5e-3,5e-3,1e-2,2e-2,4e-2,8e-2}
MUON_RMS_LRS=${LRS:-4.9e-4,9.8e-4,2e-3,3.9e-3,7.8e-3,1.6e-2}
for job in "$@"; do
  case $job in
    width-mup|width-none) sweep "$job" recipes/sweeps/width.yaml widths "$W" "$WIDTH_LRS" --set "scaling.recipe=${job#width-}";;
    depth-depth_mup|depth-mup) sweep "$job" recipes/sweeps/depth.yaml depths "$D" "$DEPTH_LRS" --set "scaling.recipe=${job#depth-}";;
    depth8-depth_mup|depth8-mup) sweep "$job" recipes/sweeps/depth.yaml depths "$D8" "$DEPTH_LRS" \
      --set "scaling.recipe=${job#depth8-}" "${BASE8[@]}";;
    depth8-depth_mup-muon|depth8-mup-muon) recipe=${job#depth8-}; sweep "$job" recipes/sweeps/depth.yaml depths "$D8" \
      "$MUON_LRS" --set "scaling.recipe=${recipe%-muon}" "${BASE8[@]}" "${MUON[@]}";;
    muon) sweep width-muon recipes/sweeps/width.yaml widths "$W" "$MUON_LRS" "${MUON[@]}";;
    muon-rms) sweep width-muon-rms recipes/sweeps/width.yaml widths "$W" "$MUON_RMS_LRS" "${MUON_RMS[@]}";;
    coord)
      cc width-mup recipes/sweeps/width.yaml --widths "$W"
      cc width-none recipes/sweeps/width.yaml --widths "$W" --set scaling.recipe=none
      cc width-muon recipes/sweeps/width.yaml --widths "$W" "${MUON[@]}"
      cc width-muon-rms recipes/sweeps/width.yaml --widths "$W" "${MUON_RMS[@]}"
      cc depth-depth_mup recipes/sweeps/depth.yaml --depths "$D"
      cc depth-mup recipes/sweeps/depth.yaml --depths "$D" --set scaling.recipe=mup;;
    coord8) cc depth8-depth_mup recipes/sweeps/depth.yaml --depths "$D8" "${BASE8[@]}";;
    *) echo "unknown job $job (width-mup width-none depth-depth_mup depth-mup depth8-depth_mup depth8-mup depth8-depth_mup-muon depth8-mup-muon muon muon-rms coord coord8)"; exit 2;;
  esac
done
