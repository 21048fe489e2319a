"""Tiny torchrun worker for tests/test_checkpoint.py: train, checkpoint, resume, record losses.

    torchrun --nproc-per-node=2 tests/helpers/ckpt_worker.py --ckpt DIR --out OUT.json \
        --parallel ddp|fsdp|none --opt adamw|muon --steps 6 --save 2,4 [--resume] [--seed 1]

Data comes from the global torch RNG (seeded per rank), so resumed losses only match bit-for-bit
if model, optimizer(s) *and* RNG states were all restored. After every save (and after a load) the
worker draws a probe from torch/python/numpy RNGs. Rank 0 writes a JSON with every rank's losses.
``--parallel none`` runs without a process group (the single-process path).
"""

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mupctl.checkpoint import Checkpointer  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--ckpt", required=True)
p.add_argument("--out", required=True)
p.add_argument("--parallel", choices=["ddp", "fsdp", "none"], default="ddp")
p.add_argument("--opt", choices=["adamw", "muon"], default="adamw")
p.add_argument("--steps", type=int, default=6)
p.add_argument("--save", default="")
p.add_argument("--keep-last", type=int, default=2)
p.add_argument("--resume", action="store_true")
p.add_argument("--async-save", action="store_true")
p.add_argument("--seed", type=int, default=1)
p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
a = p.parse_args()

dev = torch.device(a.device)
if a.device == "cuda":
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(dev)
if a.parallel != "none":
    dist.init_process_group("nccl" if a.device == "cuda" else "gloo")
rank = dist.get_rank() if a.parallel != "none" else 0
world = dist.get_world_size() if a.parallel != "none" else 1

# A different --seed on resume makes init + RNG differ, so only a correct load reproduces losses.
torch.manual_seed(a.seed)
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).to(dev)
torch.manual_seed(a.seed * 1000 + rank)
random.seed(a.seed * 1000 + rank)
np.random.seed(a.seed * 1000 + rank)

if a.parallel == "ddp":
    model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.index is not None else None)
elif a.parallel == "fsdp":
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(a.device, (world,))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)

params = list(model.parameters())
if a.opt == "muon":
    mats = [q for q in params if q.ndim == 2]
    rest = [q for q in params if q.ndim != 2]
    optimizers = [torch.optim.Muon(mats, lr=0.02, weight_decay=0.01),
                  torch.optim.AdamW(rest, lr=0.01, weight_decay=0.1)]
else:
    optimizers = [torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)]


def probe():
    return [torch.rand(3).tolist(), random.random(), float(np.random.rand())]


ck = Checkpointer(a.ckpt, keep_last=a.keep_last, async_save=a.async_save)
rec = {"losses": {}, "probes": {}, "loaded": None, "meta": None, "blocked_s": []}
start = 1
if a.resume:
    meta = ck.load_latest(model, optimizers)
    rec["meta"] = meta
    if meta is not None:
        rec["loaded"] = meta["step"]
        rec["probes"][meta["step"]] = probe()
        start = meta["step"] + 1

saves = {int(s) for s in a.save.split(",") if s}
for step in range(start, a.steps + 1):
    x, y = torch.randn(4, 8).to(dev), torch.randn(4, 4).to(dev)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    for o in optimizers:
        o.step()
        o.zero_grad(set_to_none=True)
    rec["losses"][step] = loss.item()
    if step in saves:
        blocked = ck.save(step, model, optimizers, {"tokens": step * 32 * world, "data_pos": step})
        rec["blocked_s"].append(blocked)
        rec["probes"][step] = probe()
ck.wait()
rec["checkpoints"] = [s for s, _ in ck.checkpoints()]

recs = [rec]
if world > 1:
    recs = [None] * world
    dist.all_gather_object(recs, rec)
if rank == 0:
    Path(a.out).write_text(json.dumps(recs))
if a.parallel != "none":
    dist.barrier()
    dist.destroy_process_group()
# FSDP2 + gloo aborts now and then *after* destroy_process_group, at interpreter teardown
# ("terminate called without an active exception", ~5-10% of runs, with or without checkpoints):
# all work is done and flushed here, so skip the teardown.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
