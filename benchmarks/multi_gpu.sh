#!/usr/bin/env bash
# Multi-GPU checks of the real training path on one node (N = visible GPUs; 2×H200 now, 8×H200 later):
#   1. weak scaling: benchmarks/scaling.py, shapes 24x1024,24x2048 × ddp,fsdp × 1 and N GPUs, micro batch
#      16 per GPU, bf16, compile;
#   2. `mupctl sweep recipes/sweeps/width.yaml --widths 256,512 --lrs 1e-3,2e-3 --steps 100 --parallel N
#      --gpus 0..N-1`: by sweep.json's per-cell CUDA_VISIBLE_DEVICES ("gpus") and start/end times, did two
#      cells run at the same time on different GPUs?
#   3. FSDP2 at N ranks: 24x1024 for 40 steps with checkpoint.interval 20, `mupctl resume` to 60: do the
#      metrics continue from step 40? REF=1 (default under DRY) adds an uninterrupted 60-step run; under DRY
#      (CPU) the resumed run must equal it bit for bit (a failed or partial reference fails the check); on
#      GPUs the difference is only reported.
#
# Usage:  OUT=dir bash benchmarks/multi_gpu.sh
#         DRY=1 OUT=dir bash benchmarks/multi_gpu.sh     # CPU dry run: tiny shapes, gloo, 2 processes
# Writes ONE tarball at exit, also after a failure or timeout: $OUT/multi_gpu.tgz with multi_gpu.log,
# summary.txt (one PASS/FAIL line per step), env.txt, scaling.{json,md} and the runs' logs, sweep.{json,md,png},
# sweep_concurrency.json, the resume run's files and resume_check.json. Exit 0 when every step passed, else 1.
# Time: BUDGET seconds in all (default 540 on GPUs, 1500 for DRY); each step runs under its own `timeout`:
# what is left minus what later steps reserve (SWEEP_RESERVE, CKPT_RESERVE). scaling.py skips the runs that
# would start in the last 45 s of its share. Override: STEPS/WARMUP (scaling), RUN_TIMEOUT, NGPUS, PY, WORK.
# pydantic is missing on the device machine: carry .whl/; it is installed into /tmp/site when needed.
set -euo pipefail
shopt -s nullglob

DRY=${DRY:-0}
OUT=${OUT:-out}
if [[ $DRY == 1 && -z ${PY:-} && -x .venv/bin/python ]]; then PY=.venv/bin/python; fi
PY=${PY:-python3}
WORK=${WORK:-$(mktemp -d /tmp/multi_gpu.XXXXXX)}
STAGE=$WORK/stage
mkdir -p "$OUT" "$STAGE"
OUT=$(cd "$OUT" && pwd)
if [[ $DRY == 1 ]]; then BUDGET=${BUDGET:-1500}; else BUDGET=${BUDGET:-540}; fi
T0=$(date +%s); DEADLINE=$(( T0 + BUDGET ))
export PYTHONUNBUFFERED=1
FAILED=0

# --- the log and the tarball at exit --------------------------------------------------------------
exec 3>&1 4>&2
exec > >(tee -a "$STAGE/multi_gpu.log") 2>&1
TEE_PID=$!
finish() {
  local rc=$?
  set +e
  echo "== summary ($(( $(date +%s) - T0 )) s, exit ${rc})"
  cat "$STAGE/summary.txt" 2>/dev/null
  exec 1>&3 2>&4 3>&- 4>&-       # close tee's input so that it flushes and exits
  wait "$TEE_PID" 2>/dev/null
  tar -czf "$OUT/multi_gpu.tgz" -C "$STAGE" .
  echo "wrote $OUT/multi_gpu.tgz ($(du -h "$OUT/multi_gpu.tgz" | cut -f1)); work dir $WORK"
  exit "$rc"
}
trap finish EXIT

left() { echo $(( DEADLINE - $(date +%s) )); }
clamp() { local v=$1; (( v < $2 )) && v=$2; (( v > $3 )) && v=$3; echo "$v"; }  # clamp VALUE LO HI
record() {  # record STEP RC SECONDS [note]
  local verdict=PASS; [[ $2 != 0 ]] && { verdict="FAIL (exit $2)"; FAILED=1; }
  printf '%-10s %s  %ss  %s\n' "$1" "$verdict" "$3" "${4:-}" | tee -a "$STAGE/summary.txt"
}
step_header() { echo; echo "== $1  ($(left) s of the budget left)"; }

# --- environment ------------------------------------------------------------------------------------
if ! "$PY" -c 'import pydantic' 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  echo "installing .whl/*.whl into /tmp/site (pydantic is missing)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
  echo "date: $(date -u)"; echo "host: $(uname -n)  cpus: $(nproc)  DRY=$DRY  BUDGET=$BUDGET"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
    torch.version.cuda, "devices", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])' || true
  env | grep -E '^(NCCL_|TORCH_|NVSHMEM_|CUDA_VISIBLE)' | sort || true
  if [[ $DRY != 1 ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv || true
    nvidia-smi topo -m || true
  fi
} > "$STAGE/env.txt" 2>&1
cat "$STAGE/env.txt"

if [[ $DRY == 1 ]]; then
  N=${NGPUS:-2}
  SWEEP_RESERVE=${SWEEP_RESERVE:-300}; CKPT_RESERVE=${CKPT_RESERVE:-240}
  SCALE_ARGS=(--device cpu --tiny --steps "${STEPS:-12}" --warmup "${WARMUP:-4}" --run-timeout "${RUN_TIMEOUT:-120}")
  SWEEP_ARGS=(--widths 64,128 --lrs 1e-3,2e-3 --steps 10 --parallel "$N"
              --set launch.device=cpu --set model.seq_len=32 --set train.global_batch=8 --set train.micro_batch=8
              --set schedule.warmup_steps=2 --set train.eval_batches=2)
  CKPT_SHAPE=(--set model.n_layers=2 --set model.d_model=128 --set model.n_heads=2 --set model.vocab_size=256
              --set model.seq_len=64 --set scaling.base.d_model=64 --set launch.device=cpu)
else
  N=${NGPUS:-$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)}
  if [[ $N == 0 ]] && command -v nvidia-smi >/dev/null; then N=$(nvidia-smi -L | wc -l); fi
  if (( N < 1 )); then echo "no GPU visible (use DRY=1 for the CPU dry run)"; exit 2; fi
  SWEEP_RESERVE=${SWEEP_RESERVE:-100}; CKPT_RESERVE=${CKPT_RESERVE:-170}
  SCALE_ARGS=(--steps "${STEPS:-40}" --warmup "${WARMUP:-15}" --run-timeout "${RUN_TIMEOUT:-200}")
  SWEEP_ARGS=(--widths 256,512 --lrs 1e-3,2e-3 --steps 100 --parallel "$N" --gpus "$(seq -s, 0 $(( N - 1 )))")
  CKPT_SHAPE=(--set model.n_layers=24 --set model.d_model=1024 --set model.n_heads=16)
fi
GPUS=1; (( N > 1 )) && GPUS="1,$N"
echo "N=$N  gpus for scaling: $GPUS  work: $WORK"

# --- 1. weak scaling ------------------------------------------------------------------------------
step_header "1. weak scaling (scaling.py, gpus $GPUS)"
T=$(clamp $(( $(left) - SWEEP_RESERVE - CKPT_RESERVE )) 60 3600)
t=$(date +%s); rc=0
timeout -k 30 "$T" "$PY" benchmarks/scaling.py --gpus "$GPUS" "${SCALE_ARGS[@]}" --time-budget $(( T - 45 )) \
  --work-dir "$WORK/scaling" --json "$STAGE/scaling.json" --markdown "$STAGE/scaling.md" || rc=$?
mkdir -p "$STAGE/scaling_runs"
(cd "$WORK/scaling" && cp --parents logs/* */{metrics.jsonl,train.log,events.jsonl,recipe.yaml} \
  "$STAGE/scaling_runs/" 2>/dev/null) || true
counts=$("$PY" -c 'import collections, json, sys
print(dict(collections.Counter(r["status"] for r in json.load(open(sys.argv[1]))["rows"])))' \
  "$STAGE/scaling.json" 2>/dev/null || echo "no scaling.json")
record scaling "$rc" $(( $(date +%s) - t )) "runs: $counts; timeout ${T}s; table in scaling.md"

# --- 2. sweep, one cell per GPU -------------------------------------------------------------------
step_header "2. width sweep, $N cell(s) at a time"
T=$(clamp $(( $(left) - CKPT_RESERVE )) 60 $(( SWEEP_RESERVE + 60 )))
t=$(date +%s); rc=0
timeout -k 20 "$T" "$PY" -m mupctl sweep recipes/sweeps/width.yaml "${SWEEP_ARGS[@]}" --out "$WORK/sweep" --json \
  > "$STAGE/sweep_stdout.json" || rc=$?
cp "$WORK"/sweep/sweep.{json,md,png} "$STAGE/" 2>/dev/null || true
mkdir -p "$STAGE/sweep_cells"
(cd "$WORK/sweep/cells" && cp --parents */{metrics.jsonl,events.jsonl,sweep.log} \
  "$STAGE/sweep_cells/" 2>/dev/null) || true
crc=0
"$PY" - "$WORK/sweep/sweep.json" "$STAGE/sweep_concurrency.json" "$N" "$DRY" <<'EOF' || crc=$?
"""Did two cells run at the same time on different GPUs? sweep.json's cells carry the CUDA_VISIBLE_DEVICES
the sweep gave them ("gpus"; null on CPU, where only the overlap in time is checked) and their start and
end times. With one GPU nothing can overlap: then only "no cell failed" is checked."""
import itertools, json, sys
from pathlib import Path
path, out, n, dry = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
report = json.loads(path.read_text()) if path.exists() else {"cells": [], "counts": {}}
ran = [c for c in report["cells"] if c.get("started") and c.get("ended")]
t0 = min((c["started"] for c in ran), default=0)
for c in ran:
    print(f"  {c['id']}: CUDA_VISIBLE_DEVICES {c['gpus']}, {c['started'] - t0:.1f}-{c['ended'] - t0:.1f} s, "
          f"{c['status']}")
gpus = {c["id"]: set((c["gpus"] or "").split(",")) - {""} for c in ran}
pairs = [(a["id"], b["id"]) for a, b in itertools.combinations(ran, 2)
         if a["started"] < b["ended"] and b["started"] < a["ended"]
         and (dry or (gpus[a["id"]] and gpus[b["id"]] and not gpus[a["id"]] & gpus[b["id"]]))]
ok = bool(report["cells"]) and not report["counts"].get("failed") and (n < 2 or bool(pairs))
cells = [{k: c.get(k) for k in ("id", "gpus", "started", "ended", "status")} for c in ran]
out.write_text(json.dumps({"gpus": n, "overlapping_pairs": pairs, "cells": cells, "counts": report["counts"],
                           "shift_octaves": report.get("shift_octaves"), "pass": ok}, indent=1) + "\n")
print(f"  {len(pairs)} pair(s) of cells overlapped in time{'' if dry else ' on different GPUs'}; "
      f"counts {report['counts']}\n  concurrency check: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
(( rc == 0 )) && rc=$crc
record sweep "$rc" $(( $(date +%s) - t )) "timeout ${T}s; sweep.md, sweep_concurrency.json"

# --- 3. FSDP2 checkpoint save + resume at N ranks --------------------------------------------------
step_header "3. FSDP2 checkpoint + resume at $N rank(s)"
CK_DIR=$WORK/ckpt
CK_COMMON=(recipes/gpt2-124m-mup.yaml "${CKPT_SHAPE[@]}"
    --set data.source=embedded --set data.path=null --set schedule.name=constant --set schedule.warmup_steps=10
    --set train.micro_batch=16 --set train.global_batch=$(( 16 * N ))
    --set launch.nproc_per_node="$N" --set launch.strategy=fsdp --set checkpoint.interval=20
    --set train.eval_interval=0 --set train.telemetry_interval=0 --set train.log_interval=1)
CK=("${CK_COMMON[@]}" --run-dir "$CK_DIR" --set train.steps=40)
t=$(date +%s); rc=0
T=$(clamp $(( $(left) - 70 )) 60 $(( CKPT_RESERVE - 40 )))
echo "\$ $PY -m mupctl train ${CK[*]}   (timeout ${T}s)"
timeout -k 30 "$T" "$PY" -m mupctl train "${CK[@]}" || rc=$?
if (( rc == 0 )); then
  T=$(clamp $(( $(left) - 10 )) 30 $(( CKPT_RESERVE )))
  echo "\$ $PY -m mupctl resume $CK_DIR --set train.steps=60   (timeout ${T}s)"
  timeout -k 30 "$T" "$PY" -m mupctl resume "$CK_DIR" --set train.steps=60 || rc=$?
fi
REF=${REF:-$DRY}
EXACT=0; [[ $REF == 1 && $DRY == 1 ]] && EXACT=1   # CPU (deterministic): bit for bit
REF_RC=none                                          # the reference run's exit status; none: not run
if (( rc == 0 )) && [[ $REF == 1 ]]; then
  T=$(clamp $(( $(left) - 10 )) 30 $(( CKPT_RESERVE )))
  echo "\$ $PY -m mupctl train … --run-dir $CK_DIR-ref --set train.steps=60   (reference, timeout ${T}s)"
  REF_RC=0
  timeout -k 30 "$T" "$PY" -m mupctl train "${CK_COMMON[@]}" --run-dir "$CK_DIR-ref" --set train.steps=60 \
    > "$STAGE/resume_reference.log" 2>&1 || REF_RC=$?
fi
mkdir -p "$STAGE/resume_run"
cp "$CK_DIR"/{metrics.jsonl,events.jsonl,train.log,recipe.yaml} "$STAGE/resume_run/" 2>/dev/null || true
ls -la "$CK_DIR/checkpoints" > "$STAGE/resume_run/checkpoints_ls.txt" 2>&1 || true
crc=0
"$PY" - "$CK_DIR" "$N" "$STAGE/resume_check.json" "$CK_DIR-ref" "$EXACT" "$REF_RC" <<'EOF' || crc=$?
"""Does the resumed run continue at step 40 (the checks below)? EXACT=1: the uninterrupted reference run
exited 0, has one train row per step 1..60, and its losses equal the resumed run's exactly."""
import json, statistics, sys
from pathlib import Path
from mupctl.metrics import read_jsonl
run, n, out, ref, exact, ref_rc = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), \
    sys.argv[5] == "1", sys.argv[6]

rows, events = read_jsonl(run / "metrics.jsonl"), read_jsonl(run / "events.jsonl")
train = [r for r in rows if "loss" in r]
ckpt_steps = [r["step"] for r in rows if "checkpoint_blocked_s" in r]
metas = [json.loads(p.read_text()) for p in sorted((run / "checkpoints").glob("step_*/meta.json"))]
loss = {r["step"]: r["loss"] for r in train}
print("  loss at steps 36-40 | 41-45:", " ".join(f"{loss[s]:.4f}" + (" |" if s == 40 else "")
                                              for s in range(36, 46) if s in loss))
before = [loss[s] for s in range(36, 41) if s in loss]
after = [loss[s] for s in range(41, 46) if s in loss]
checks = {
    "train rows are steps 1..60, each once": [r["step"] for r in train] == list(range(1, 61)),
    "two worker starts, the second 'resumed at step 40'": len(events) == 2 and events[0]["state"] == "fresh"
        and events[1]["state"].startswith("resumed at step 40") and events[1]["step"] == 40,
    "checkpoint rows at 20, 40, 60": ckpt_steps == [20, 40, 60],
    f"checkpoints written by {n} rank(s)": bool(metas) and all(m.get("world_size") == n for m in metas),
    "loss continues at the resume point (|mean 41-45 - mean 36-40| < 0.5)":
        bool(before and after) and abs(statistics.mean(after) - statistics.mean(before)) < 0.5,
    "loss well below its start (mean 41-45 < loss(1) - 1)": bool(after) and 1 in loss
        and statistics.mean(after) < loss[1] - 1,
}
ref_train = [r for r in read_jsonl(ref / "metrics.jsonl") if "loss" in r]
ref_loss = {r["step"]: r["loss"] for r in ref_train}
common = [s for s in range(1, 61) if s in ref_loss and s in loss]
max_diff = max(abs(ref_loss[s] - loss[s]) for s in common) if common else None
if ref_rc != "none":
    print(f"  uninterrupted reference run (exit {ref_rc}, {len(ref_train)} train rows): max |loss difference| "
          f"over {len(common)} common steps = {max_diff}")
if exact:
    checks["reference run: exit 0, train rows 1..60, equal to the resumed run bit for bit (CPU)"] = \
        ref_rc == "0" and [r["step"] for r in ref_train] == list(range(1, 61)) and len(common) == 60 and max_diff == 0
for k, v in checks.items():
    print(f"  {'ok  ' if v else 'FAIL'} {k}")
result = {"checks": checks, "pass": all(checks.values()), "reference_exit": ref_rc,
          "reference_max_abs_loss_diff": max_diff, "events": events, "checkpoint_rows": ckpt_steps,
          "checkpoint_meta": metas, "loss": loss}
out.write_text(json.dumps(result, indent=1) + "\n")
print("  resume check:", "PASS" if result["pass"] else "FAIL")
sys.exit(0 if result["pass"] else 1)
EOF
(( rc == 0 )) && rc=$crc
record resume "$rc" $(( $(date +%s) - t )) "resume_check.json"

exit "$FAILED"
