#!/usr/bin/env bash
# GPU smoke run (issues 4 and 5): the GPT-2-124M-shaped mup recipe with NCCL, bf16 and compile on
# the embedded corpus; checkpoints every 100 steps (sync, then async), then a resume to 400 steps.
# Usage: OUT=dir bash benchmarks/gpu_train_smoke.sh
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
common=(recipes/gpt2-124m-mup.yaml --set data.source=embedded --set launch.nproc_per_node=1
        --set train.global_batch=16 --set train.log_interval=50 --set checkpoint.interval=100
        --set train.telemetry_interval=100 --set train.eval_interval=100)
rm -rf /tmp/r_sync /tmp/r_async
python3 -m mupctl train "${common[@]}" --set train.steps=300 --run-dir /tmp/r_sync
python3 -m mupctl resume /tmp/r_sync --set train.steps=400
python3 -m mupctl train "${common[@]}" --set train.steps=300 --set checkpoint.async_save=true --run-dir /tmp/r_async
cp /tmp/r_sync/metrics.jsonl "$OUT/sync_metrics.jsonl"; cp /tmp/r_async/metrics.jsonl "$OUT/async_metrics.jsonl"
du -sh /tmp/r_sync/checkpoints/*
