"""`train.deterministic: true`: the same plan, seed and data on the same GPU and software give
bit-identical runs (checked by benchmarks/determinism.sh). Without it, compiled bf16 runs of
recipes/gpt2-124m-mup.yaml differed by up to 0.115 in loss by step 200 (H100).

`make_deterministic()` switches off every source of run-to-run variation torch exposes; call it
before CUDA is initialized:

- `CUBLAS_WORKSPACE_CONFIG=:4096:8`: cuBLAS keeps one reduction order (its documented setting for
  reproducible results; torch refuses cuBLAS calls in deterministic mode without it);
- `torch.use_deterministic_algorithms(True)`: deterministic kernels where torch has one (embedding
  and index_put backward, SDPA's flash and memory-efficient backward), an error where it has none;
- cuDNN: deterministic algorithms, no benchmarking (`cudnn.benchmark = False`);
- SDPA: the cuDNN attention backend off (no deterministic backward), so flash / memory-efficient /
  math are chosen;
- Inductor: `torch._inductor.config.deterministic` (where the torch version has it): no on-device
  benchmarking that could pick another kernel, or reduction split, from run to run.
"""

from __future__ import annotations

import os

CUBLAS_WORKSPACE = ":4096:8"


def make_deterministic() -> None:
    import torch
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.enable_cudnn_sdp(False)
    import torch._inductor.config as inductor
    if hasattr(inductor, "deterministic"):
        inductor.deterministic = True
