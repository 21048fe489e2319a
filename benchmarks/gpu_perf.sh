#!/usr/bin/env bash
# The GPU throughput run behind docs/performance.md (issue 7), most important group first; each group
# has a time limit so one slow compile cannot eat the call. Results: $OUT/perf.tgz (JSON + markdown).
# Usage: OUT=dir ANCHOR=path/to/nanoGPT-mup/model.py bash benchmarks/gpu_perf.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out}; STAGE=${STAGE:-/tmp/perf}; mkdir -p "$OUT" "$STAGE"
trap 'python3 benchmarks/throughput.py --merge "$STAGE"/p_*.json --markdown "$STAGE/perf.md" > /dev/null; cat "$STAGE/perf.md"; tar -czf "$OUT/perf.tgz" -C "$STAGE" .' EXIT
B="python3 benchmarks/throughput.py --steps 20 --warmup 10"
A="--anchor-file ${ANCHOR:?path to the peer model.py}"
timeout 240 $B $A --shapes 24x2048 --recipes mup --optimizers adamw --precisions bf16,fp8 --loss-curve 200 --json "$STAGE/p_2048.json"
timeout 160 $B $A --shapes 24x1024 --recipes none,mup,depth_mup --optimizers adamw,muon --json "$STAGE/p_1024.json"
timeout 100 $B $A --shapes 12x768 --recipes none --optimizers adamw --precisions bf16,fp8 --json "$STAGE/p_768.json"
timeout 50 $B --shapes 24x1024 --recipes none --optimizers adamw --precisions fp8 --json "$STAGE/p_1024fp8.json"
