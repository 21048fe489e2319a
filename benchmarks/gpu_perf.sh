#!/usr/bin/env bash
# The GPU throughput run behind docs/performance.md (issue 7), in two parts that each fit one
# 10-minute device call; every group has a time limit so one slow compile cannot eat the call.
# Results: $OUT/perf-<part>.tgz (JSON + the merged markdown).
# Usage: OUT=dir ANCHOR=path/to/nanoGPT-mup/model.py bash benchmarks/gpu_perf.sh 1|2
#   1: the anchor (in the same process) and our bf16 rows at the three shapes (AdamW, Muon at 24/1024)
#   2: FP8 vs bf16 at 24/2048 with loss curves, and FP8 at 12/768 and 24/1024 (FP8's first compiled
#      step takes ~110 s at 24/2048)
set -uo pipefail
export PYTHONUNBUFFERED=1
PART=${1:?part 1 or 2}; OUT=${OUT:-out}; STAGE=$(mktemp -d); mkdir -p "$OUT"
trap 'python3 benchmarks/throughput.py --merge "$STAGE"/p_*.json --markdown "$STAGE/perf.md" > /dev/null
      cat "$STAGE/perf.md"; tar -czf "$OUT/perf-$PART.tgz" -C "$STAGE" .' EXIT
B=(python3 benchmarks/throughput.py --steps 20 --warmup 10)
A=(--anchor-file "${ANCHOR:?path to the peer model.py}")
case $PART in
  1) timeout 150 "${B[@]}" "${A[@]}" --shapes 24x2048 --recipes mup --optimizers adamw --json "$STAGE/p_2048.json"
     timeout 240 "${B[@]}" "${A[@]}" --shapes 24x1024 --recipes none,mup,depth_mup --optimizers adamw,muon --json "$STAGE/p_1024.json"
     timeout 100 "${B[@]}" "${A[@]}" --shapes 12x768 --recipes none --optimizers adamw --json "$STAGE/p_768.json";;
  2) timeout 300 "${B[@]}" --shapes 24x2048 --recipes mup --optimizers adamw --precisions bf16,fp8 --loss-curve 150 --json "$STAGE/p_2048fp8.json"
     timeout 120 "${B[@]}" --shapes 12x768 --recipes none --optimizers adamw --precisions bf16,fp8 --json "$STAGE/p_768fp8.json"
     timeout 150 "${B[@]}" --shapes 24x1024 --recipes none --optimizers adamw --precisions bf16,fp8 --json "$STAGE/p_1024fp8.json";;
  *) echo "part must be 1 or 2"; exit 2;;
esac
