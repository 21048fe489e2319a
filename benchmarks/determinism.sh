#!/usr/bin/env bash
# train.deterministic on one GPU (issue 23, item 6): recipes/gpt2-124m-mup.yaml (compile, bf16, embedded
# corpus, global batch 16 x 1024) trained STEPS steps four times with the same seed, deterministic off,
# on, on, off. Reports whether the two deterministic runs' per-step losses are bit-identical (and the
# first step and size of any difference), the same for the two default runs (the problem: up to 0.115
# apart by step 200 on an H100), and tokens/s on vs off: the median train row after WARMUP steps
# (log_interval 1: every step is its own timed window), the ratio on/off and the mean of each pair.
#   OUT=dir bash benchmarks/determinism.sh          # on the GPU machine; < 9 minutes on one H100
#   DRY=1 OUT=dir bash benchmarks/determinism.sh    # CPU smoke test of the script (tiny model, no compile)
# Writes OUT/determinism.json, OUT/determinism.md and each run's metrics.jsonl and train.log as it
# finishes. Override: STEPS (200), WARMUP (20), PY (python3), RUN_TIMEOUT (s per run, 130).
# pydantic is missing on the device machine: carry .whl/; it is installed into /tmp/site when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
DRY=${DRY:-0}
if [[ $DRY == 1 && -z ${PY:-} && -x .venv/bin/python ]]; then PY=.venv/bin/python; fi
PY=${PY:-python3}
STEPS=${STEPS:-200}
WARMUP=${WARMUP:-20}
RUN_TIMEOUT=${RUN_TIMEOUT:-130}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/determinism.XXXXXX)
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled

if ! "$PY" -c 'import pydantic' 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  echo "installing .whl/*.whl into /tmp/site (pydantic is missing)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' \
  | tee "$OUT/env.txt"

common=(recipes/gpt2-124m-mup.yaml --set data.source=embedded --set launch.nproc_per_node=1
        --set train.global_batch=16 --set train.micro_batch=16 --set "train.steps=$STEPS"
        --set "schedule.warmup_steps=$WARMUP" --set train.log_interval=1 --set train.eval_interval=0
        --set train.telemetry_interval=0 --set checkpoint.interval=0 --set train.seed=0)
if [[ $DRY == 1 ]]; then
  common+=(--set model.d_model=64 --set model.n_heads=2 --set model.n_layers=2 --set model.seq_len=64
           --set scaling.base.d_model=32 --set scaling.base.d_head=32 --set launch.device=cpu
           --set train.precision=fp32 --set train.compile=false)
else
  common+=(--set launch.device=cuda --set train.precision=bf16 --set train.compile=true)
fi

for run in off-a on-a on-b off-b; do  # on/off interleaved: a drift of the machine hits both alike
  det=false; [[ $run == on-* ]] && det=true
  echo "== $run (train.deterministic=$det)"
  start=$(date +%s)
  timeout "$RUN_TIMEOUT" "$PY" -m mupctl train "${common[@]}" --set "train.deterministic=$det" \
    --run-dir "$WORK/$run" > "$OUT/$run.stdout" 2>&1 || echo "$run: exit $? (see $OUT/$run.stdout)"
  cp "$WORK/$run/metrics.jsonl" "$OUT/$run.metrics.jsonl" 2>/dev/null || true
  cp "$WORK/$run/train.log" "$OUT/$run.train.log" 2>/dev/null || true
  echo "$run: $(( $(date +%s) - start )) s"
done

"$PY" - "$OUT" "$WARMUP" <<'EOF'
import json, statistics, sys
from pathlib import Path

out, warmup = Path(sys.argv[1]), int(sys.argv[2])


def rows(run):
    path = out / f"{run}.metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses(run):
    return {r["step"]: r["loss"] for r in rows(run) if "loss" in r}


def compare(a, b):
    la, lb = losses(a), losses(b)
    steps = sorted(set(la) & set(lb))
    diff = [s for s in steps if la[s] != lb[s]]
    return {"runs": [a, b], "steps_compared": len(steps), "bit_identical": bool(steps) and not diff,
            "first_different_step": diff[0] if diff else None,
            "max_abs_diff": max((abs(la[s] - lb[s]) for s in steps), default=None)}


def tokens_per_s(run):
    tps = [r["tokens_per_s"] for r in rows(run) if "tokens_per_s" in r and r["step"] > warmup]
    return statistics.median(tps) if tps else None


speed = {run: tokens_per_s(run) for run in ("off-a", "on-a", "on-b", "off-b")}
on = [v for k, v in speed.items() if k.startswith("on") and v]
off = [v for k, v in speed.items() if k.startswith("off") and v]
report = {"deterministic": compare("on-a", "on-b"), "default": compare("off-a", "off-b"),
          "tokens_per_s": speed, "ratio_on_over_off": statistics.mean(on) / statistics.mean(off) if on and off else None,
          "ratio_a": speed["on-a"] / speed["off-a"] if speed["on-a"] and speed["off-a"] else None,
          "ratio_b": speed["on-b"] / speed["off-b"] if speed["on-b"] and speed["off-b"] else None}
(out / "determinism.json").write_text(json.dumps(report, indent=1) + "\n")
fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
lines = ["| runs | steps | bit-identical | first different step | max abs diff |", "| --- | --- | --- | --- | --- |"]
for key in ("deterministic", "default"):
    c = report[key]
    lines.append(f"| {key} ({' vs '.join(c['runs'])}) | {c['steps_compared']} | {c['bit_identical']} | "
                 f"{c['first_different_step']} | {fmt(c['max_abs_diff'], '.3g')} |")
lines += ["", "| run | tokens/s (median after warmup) |", "| --- | --- |"]
lines += [f"| {run} | {fmt(v, ',.0f')} |" for run, v in speed.items()]
lines += ["", f"deterministic on / off: {fmt(report['ratio_on_over_off'], '.3f')} "
          f"(pairs: {fmt(report['ratio_a'], '.3f')}, {fmt(report['ratio_b'], '.3f')})"]
(out / "determinism.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
