"""torchrun helper for tests/test_muon_dist.py: Muon replicated vs layer-wise, DDP and FSDP2, same batches.

    torchrun --nproc-per-node W tests/helpers/muon_equivalence.py --out DIR [--steps 4]

For each (strategy, distributed) of ddp/fsdp × replicated/layerwise it builds the model and optimizer
exactly as the worker does (`mupctl.worker.build` from a plan of recipes/tiny.yaml with Muon) and runs
the worker's step (`TrainStep`, accumulation, clipping, the schedule) on the worker's batches. Rank 0
writes DIR/W{W}.json (per config: the mean loss of every step, the Muon layout) and
DIR/W{W}-{strategy}-{distributed}.pt (every parameter, full tensors).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mupctl.optim import muon_layout  # noqa: E402
from mupctl.plan import compile_plan  # noqa: E402
from mupctl.ranks import global_mean  # noqa: E402
from mupctl.recipe import load_recipe  # noqa: E402
from mupctl.worker import setup  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["optimizer.name=muon", "scaling.recipe=mup", "scaling.base.d_model=64", "model.seq_len=64",
             "train.global_batch=12", "train.micro_batch=2", "launch.device=cpu", "schedule.warmup_steps=1"]


def train(strategy: str, mode: str, world: int, rank: int, steps: int) -> dict:
    plan = compile_plan(load_recipe(ROOT / "recipes" / "tiny.yaml", OVERRIDES + [
        f"launch.strategy={strategy}", f"optimizer.muon.distributed={mode}", f"launch.nproc_per_node={world}"]))
    device = torch.device("cpu")
    run = setup(plan, device, rank, world)
    losses = [global_mean(run.step(s, run.batches("train", s))[0]) for s in range(steps)]
    params = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
              for n, p in run.model.named_parameters()}
    muon = [x.name for x in plan.tensors if x.optimizer == "muon"]
    return {"losses": losses, "layout": muon_layout(run.optimizer), "muon_matrices": muon, "params": params}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--steps", type=int, default=4)
    a = p.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    report = {}
    for strategy in ("ddp", "fsdp"):
        for mode in ("replicated", "layerwise"):
            run = train(strategy, mode, world, rank, a.steps)
            if rank == 0:
                torch.save(run.pop("params"), a.out / f"W{world}-{strategy}-{mode}.pt")
                report[f"{strategy}-{mode}"] = run
    if rank == 0:
        (a.out / f"W{world}.json").write_text(json.dumps(report))
    dist.barrier()  # before destroy under FSDP2 + gloo (../shared/ENVIRONMENT.md)
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # FSDP2 under gloo can abort in interpreter teardown after a clean shutdown (mupctl.worker)


if __name__ == "__main__":
    main()
