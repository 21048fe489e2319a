#!/usr/bin/env bash
# benchmarks/regret.py on a GPU machine, cut at BUDGET seconds and packed so that nothing is lost
# when the machine goes back:  OUT=dir BUDGET=540 [RESTORE=results.tgz] bash benchmarks/regret_gpu.sh PHASE… [--flags]
# Builds the code corpus (benchmarks/code_corpus.py) into $WORK/code-corpus once. At exit
# $OUT/results.tgz holds every sweep report and every finished or diverged cell's metrics.jsonl,
# recipe.yaml and DIVERGED.json (failed cells: sweep.log and train.log, the worker's traceback); RESTORE= unpacks such a file into WORK
# first, so a later call skips the finished cells. Cells record the corpus's absolute path: keep WORK.
set -uo pipefail
PY=${PY:-python3}; WORK=${WORK:-/tmp/regret-work}; OUT=${OUT:-out}; BUDGET=${BUDGET:-540}
DEADLINE=$(( $(date +%s) + BUDGET ))
mkdir -p "$WORK/sweeps" "$WORK/reports" "$OUT"
if [[ -n ${RESTORE:-} ]]; then tar -xzf "$RESTORE" -C "$WORK"; fi
[[ -f $WORK/code-corpus/corpus.json ]] || "$PY" benchmarks/code_corpus.py "$WORK/code-corpus" || exit 1
pack() {  # the reports + what a later call needs to skip the finished cells (unfinished ones rerun)
  "$PY" - "$WORK" > "$WORK/files.txt" <<'PY'
import sys
from pathlib import Path
from mupctl.diagnostics.cells import cell_state
from mupctl.recipe import load_recipe
work = Path(sys.argv[1])
for path in sorted(work.glob("reports/*")) + sorted(work.glob("sweeps/**/sweep.*")):
    print(path.relative_to(work))
for cell in sorted(work.glob("sweeps/**/cells/*")):
    recipe = cell / "recipe.yaml"
    state = cell_state(cell, load_recipe(recipe).train.steps) if recipe.exists() else "new"
    names = ("metrics.jsonl", "DIVERGED.json", "recipe.yaml") if state in ("done", "diverged") else ("sweep.log", "train.log")
    for name in names:
        if (cell / name).exists():
            print((cell / name).relative_to(work))
PY
  tar -czf "$OUT/results.tgz" -C "$WORK" -T "$WORK/files.txt"
  cp "$WORK"/reports/*.md "$OUT"/ 2>/dev/null
}
trap pack EXIT
timeout $(( DEADLINE - $(date +%s) )) "$PY" benchmarks/regret.py --work "$WORK/sweeps" --data "$WORK/code-corpus" \
  --report-dir "$WORK/reports" "$@"
echo "regret.py: exit $?"
