"""One profiled Muon step per rank (torchrun): Newton–Schulz time, exposed communication, the gather alone.

    torchrun --nproc-per-node N benchmarks/muon_profile.py --shape 24x1024 --strategy ddp --out prof.json
    (benchmarks/muon_scaling.py runs it; --dry-run: CPU, gloo, tiny)

For each --modes entry (replicated, layerwise) the model and optimizer are built as the worker builds them
(`mupctl.worker.build` from the plan that benchmarks/muon_scaling.py's `mupctl train` runs use: the GPT-2
shape, mup, bf16, compile, micro batch 16, global batch --batch), --warmup steps run, then one step with
`mupctl.optim.muon.PhaseTimer` on the Muon part. Per rank:
    ns_ms         Newton–Schulz of this rank's matrices (device time, CUDA events on the compute stream)
    muon_step_ms  the whole Muon step: momentum, NS, packing, waits, updates
    exposed_ms    muon_step_ms − the compute inside it (momentum, NS, packing, updates): time the compute
                  stream sat waiting for a collective, i.e. the communication nothing hid
    comm_ms       the same collectives replayed alone with zero buffers, each waited for (serialized):
                  what the gathers cost without overlap; hidden = comm_ms − exposed_ms
    step_ms       the whole training step (forward, backward, clip, both optimizers)
Rank 0 writes every rank's figures to --out (JSON). --trace DIR also writes a torch.profiler trace of the
profiled step per rank (CPU and CUDA activity).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from mupctl.optim import optimizer_parts  # noqa: E402
from mupctl.optim.muon import Muon, PhaseTimer  # noqa: E402
from mupctl.paths import atomic_write  # noqa: E402
from mupctl.plan import compile_plan  # noqa: E402
from mupctl.recipe import load_recipe  # noqa: E402
from mupctl.worker import pick_device, setup  # noqa: E402
from muon import VARIANTS, add_run_args, finish_args  # noqa: E402
from scaling import run_overrides  # noqa: E402
from throughput import sync  # noqa: E402


def replay_ms(opt: Muon, device) -> float:
    """The step's collectives alone (zero buffers), each started and waited for in turn."""
    if opt.world == 1 or (opt.mode == "replicated" and not opt.sharded):
        return 0.0
    sync(device)
    t0 = time.perf_counter()
    for rnd in opt.rounds:
        if opt.sharded:
            opt.exchange_in(rnd, replay=True)[1].wait()
            if opt.mode == "layerwise":
                opt.exchange_out(rnd, None)[1].wait()
        else:
            opt.gather_round(rnd, None)[1].wait()
        sync(device)
    return 1e3 * (time.perf_counter() - t0)


def profile(mode: str, a, rank: int, world: int, device) -> dict:
    overrides = run_overrides(a.shape, a.strategy, world, a) + list(a.set) + [f"train.global_batch={a.batch}"]
    plan = compile_plan(load_recipe(ROOT / a.recipe, overrides + VARIANTS[f"muon-{mode}"]))
    run = setup(plan, device, rank, world)
    muon = next(o for o in optimizer_parts(run.optimizer) if isinstance(o, Muon))
    step, batches = run.step, partial(run.batches, "train")
    for s in range(a.warmup):
        step(s, batches(s))
    sync(device)
    muon.timer = PhaseTimer(device)
    tracer = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])) if a.trace else contextlib.nullcontext()
    t0 = time.perf_counter()
    with tracer:
        step(a.warmup, batches(a.warmup))
        sync(device)
    step_ms = 1e3 * (time.perf_counter() - t0)
    phases, muon.timer = muon.timer.result(), None
    if a.trace:
        Path(a.trace).mkdir(parents=True, exist_ok=True)
        tracer.export_chrome_trace(str(Path(a.trace) / f"{a.shape}-{a.strategy}-{mode}-w{world}-rank{rank}.json"))
    layout = muon.layout()
    out = {"rank": rank, "mode": muon.mode, "step_ms": step_ms, "ns_ms": phases.get("ns", 0.0),
           "muon_step_ms": phases.get("step", 0.0), "exposed_ms": phases["exposed_comm"],
           "comm_ms": replay_ms(muon, device), "phases": phases,
           "matrices": len(layout["ranks"][rank]) if "ranks" in layout else layout["matrices"],
           "ns_gflop": layout["ns_gflop"][rank] if "ns_gflop" in layout else None}
    del run, muon, step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="24x1024")
    p.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    p.add_argument("--modes", default="replicated,layerwise")
    p.add_argument("--batch", type=int, default=256, help="global batch (sequences)")
    p.add_argument("--out", required=True)
    p.add_argument("--trace", default=None, metavar="DIR", help="torch.profiler trace of the profiled step per rank")
    add_run_args(p)
    a = p.parse_args(argv)
    finish_args(a, {"device": "cpu", "vocab": 256, "seq_len": 64, "micro_batch": 4, "warmup": 2, "steps": 3,
                    "base_d_model": 64, "batch": 16})
    device = pick_device(a.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {"shape": a.shape, "strategy": a.strategy, "gpus": world, "batch": a.batch, "modes": {}}
    for mode in [m for m in a.modes.split(",") if m]:
        mine = profile(mode, a, rank, world, device)
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
        result["modes"][mode] = ranks
        if rank == 0:
            worst = max(ranks, key=lambda r: r["muon_step_ms"])
            print(f"[{a.shape} {a.strategy} {world} rank(s) {mode}] NS ms per rank "
                  f"{[round(r['ns_ms'], 2) for r in ranks]}, Muon step {worst['muon_step_ms']:.2f} ms, exposed "
                  f"{worst['exposed_ms']:.2f} ms, collectives alone {worst['comm_ms']:.2f} ms", flush=True)
            atomic_write(Path(a.out), json.dumps(result, indent=1) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
