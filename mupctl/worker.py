"""The training worker that torchrun starts in every rank: `python -m mupctl.worker --run-dir DIR`.

It reads the run's `plan.json` (and nothing else of the run's configuration), builds the model and
optimizer from it, resumes from the newest valid checkpoint if there is one (so torchrun's
restarts and `mupctl resume` need nothing else), and trains:

    for each step: one `TrainStep` (schedule, accumulation over global_batch / (micro_batch · world)
                   micro batches, clip, optimizer step), then at their intervals: the train row,
                   validation, the stop check, a checkpoint

Sequence j of step s is a pure function of (seed, s, j) (`TokenData.micro_batches`), so any world
size sees the same global batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from mupctl import faults
from mupctl.checkpoint import Checkpointer
from mupctl.data import TokenData, open_data
from mupctl.errors import RunFailure
from mupctl.evaluation import Evaluator
from mupctl.launch.child import die_with_parent
from mupctl.metrics import MetricsLog, Throughput, truncate_metrics
from mupctl.mfu import mfu
from mupctl.model import GPT
from mupctl.optim import build_optimizer, muon_layout, optimizer_parts
from mupctl.paths import atomic_write
from mupctl.plan import Plan, read_plan
from mupctl.ranks import agree, global_mean
from mupctl.run_state import append_event as write_event  # rank 0's start, stop and failed rows
from mupctl.run_state import record_orphaned
from mupctl.schedule import lr_factor
from mupctl.stop import StopProbe
from mupctl.telemetry import Telemetry
from mupctl.train_step import TrainStep

DIVERGED = "DIVERGED.json"


class Divergence(RuntimeError):
    pass


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def precision(plan: Plan, device) -> str:
    p = plan.train.precision
    return ("bf16" if device.type == "cuda" else "fp32") if p == "auto" else p


def bf16_compute(plan: Plan, device) -> bool:
    """bf16 autocast (DDP) or bf16 parameters (FSDP2): bf16, and fp8, whose fp8 matmuls sit inside it."""
    return precision(plan, device) in ("bf16", "fp8")


def build(plan: Plan, device: torch.device, world: int):
    """Model (wrapped for DDP/FSDP2, optionally compiled) and optimizer, both from the plan."""
    torch.manual_seed(plan.train.seed)
    model = GPT(plan, device=device, activation_checkpointing=plan.train.activation_checkpointing)
    cuda = device.type == "cuda"
    compile_on = plan.train.compile is True or (plan.train.compile == "auto" and cuda)
    if precision(plan, device) == "fp8":
        from mupctl.fp8 import apply_fp8
        apply_fp8(model)
    if plan.launch.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        bf16 = bf16_compute(plan, device)
        kw = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)} if bf16 else {}
        if compile_on:
            model.compile_pieces()
        for block in model.blocks:
            fully_shard(block, **kw)
        fully_shard(model, **kw)
        wrapped = model
    else:
        if compile_on:
            model.compile()
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None) \
            if world > 1 else model
    optimizer = build_optimizer(model, plan, fused=cuda)
    return model, wrapped, optimizer


@dataclass
class Setup:
    """What one rank trains with, all built from the plan."""
    model: GPT
    wrapped: torch.nn.Module  # the model under DDP / FSDP2 (itself on one rank)
    optimizer: torch.optim.Optimizer
    accum: int  # micro batches per rank per step
    data: TokenData
    batches: Callable  # (split, step) → this rank's micro batches of that step
    autocast: Callable[[], contextlib.AbstractContextManager]
    step: TrainStep


def setup(plan: Plan, device: torch.device, rank: int, world: int) -> Setup:
    """`build`, the data, and the one training step, which accumulates accum = global_batch /
    (micro_batch · world) micro batches per rank (the worker, benchmarks and test helpers train with it)."""
    t = plan.train
    model, wrapped, optimizer = build(plan, device, world)
    accum = t.global_batch // (t.micro_batch * world)
    data = open_data(plan.data, plan.model.vocab_size, plan.model.seq_len, t.seed)
    batches = partial(data.micro_batches, rank=rank, world=world, micro=t.micro_batch, accum=accum, device=device)
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16) \
        if bf16_compute(plan, device) and plan.launch.strategy != "fsdp" else contextlib.nullcontext
    step = TrainStep(model, optimizer, wrapped=wrapped, accum=accum, grad_clip=t.grad_clip, context=autocast,
                     lr_factor=partial(lr_factor, **plan.schedule.model_dump()))
    return Setup(model, wrapped, optimizer, accum, data, batches, autocast, step)


class Trainer:
    def __init__(self, run_dir: Path, plan: Plan, device: torch.device):
        self.run_dir, self.plan, self.device = run_dir, plan, device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        t = plan.train
        self.shapes = {x.name: list(x.shape) for x in plan.tensors}
        s = setup(plan, device, self.rank, self.world)
        self.model, self.wrapped, self.optimizer, self.accum = s.model, s.wrapped, s.optimizer, s.accum
        self.data, self.batches, self.step = s.data, s.batches, s.step
        self.evaluator = Evaluator(self.model, self.wrapped, partial(self.batches, "val"), t.eval_batches,
                                   self.accum, t.eval_interval, s.autocast)
        c = plan.checkpoint
        self.ckpt = Checkpointer(run_dir / "checkpoints", c.keep_last, c.async_save, c.interval)
        self.telemetry = Telemetry(self.model, t.telemetry_interval, plan.launch.strategy == "fsdp")
        self.device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        self.log: MetricsLog | None = None

    def run(self) -> None:
        steps = self.plan.train.steps
        start = self.restore()
        if self.rank == 0 and (layout := muon_layout(self.optimizer)):  # who orthogonalizes which matrix
            write_event(self.run_dir, event="muon", step=start, **layout)
        stop_probe = StopProbe(start, self.device)
        if start == 0 and self.evaluator.interval:
            self.log.log({"step": 0, "val_loss": self.evaluator.evaluate()})
        timer = Throughput(self.plan.tokens_per_step, self.sync)
        timer.start(start)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)  # a non-finite loss or grad norm so far
        for step in range(start, steps):
            done, last = step + 1, step + 1 == steps
            telemetry = self.telemetry.arm(done)
            loss, grad_norm = self.step(step, self.batches("train", step))
            bad |= ~torch.isfinite(loss) | ~torch.isfinite(grad_norm)
            if telemetry:
                self.log.log(self.telemetry.row(done))
            log_now = done % self.plan.train.log_interval == 0 or last
            save_now = self.ckpt.due(done, last)
            if save_now:
                bad |= ~self.params_finite()  # a checkpoint never holds a non-finite state
            if (log_now or save_now) and agree(bool(bad), self.device):
                self.diverged(done)
            if log_now:
                self.log_train(done, loss, grad_norm, timer.tokens_per_s(done))
            if self.evaluator.due(done, last):
                with timer.paused():
                    self.log.log({"step": done, "val_loss": self.evaluator.evaluate()})
            stop = stop_probe(done, forced=log_now or save_now)
            if save_now or stop:
                with timer.paused():
                    blocked = self.ckpt.maybe_save(done, self.model, optimizer_parts(self.optimizer),
                                                   self.meta(done), last=last, stop=stop)
                if blocked is not None:
                    self.log.log({"step": done, "checkpoint_blocked_s": blocked})
            faults.after_step(done, self.rank, self.restart)
            if stop:
                self.stopped(done)
                break
            if log_now:
                timer.start(done)
        self.ckpt.wait()
        self.log.close()

    def restore(self) -> int:
        """Load the newest valid checkpoint (model, optimizer, RNG), open the metrics log where it left
        off, say what happened; the step to start from."""
        if (self.run_dir / DIVERGED).exists():
            raise Divergence((self.run_dir / DIVERGED).read_text().strip())
        newest = self.ckpt.newest_meta()
        if newest is not None:  # before the load, which restores the RNG states
            self.step.settle_buckets(self.batches("train", 0))
        same_shapes = newest is None or newest.get("shapes", self.shapes) == self.shapes
        meta = self.ckpt.load_latest(self.model, optimizer_parts(self.optimizer), weights=same_shapes)
        start = meta["step"] if meta else 0
        wandb_id = self.run_dir / "wandb_id"
        self.log = MetricsLog(self.run_dir, self.rank == 0, self.plan.train.steps, self.plan.logging,
                              wandb_id=wandb_id.read_text().strip() if wandb_id.exists() else None,
                              config=self.plan.summary)
        if self.rank == 0:
            kept = truncate_metrics(self.log.path, start if meta else -1)  # a fresh start logs step 0 again
            if meta and not any(row.get("step") == start and "checkpoint_blocked_s" in row
                                for row in kept):  # killed between the commit and its row
                self.log.log({"step": start, "checkpoint_blocked_s": None})
            state = f"resumed at step {start}" if meta else "fresh"
            if meta and not same_shapes:
                state += " with fresh weights (the checkpoint's tensor shapes differ from the plan: --force)"
            elif meta and meta.get("plan_hash") != self.plan.hash:
                state += f" (plan {meta.get('plan_hash')} -> {self.plan.hash}: --force)"
            p, launch = self.plan, self.plan.launch
            self.log.say(f"mupctl worker: {state}; restart {self.restart}/{launch.max_restarts}; world {self.world} "
                         f"({launch.strategy}, {self.device.type}, {precision(p, self.device)}"
                         f"{', deterministic' if p.train.deterministic else ''}); {self.accum} micro-batch(es) "
                         f"of {p.train.micro_batch} per rank; data: {self.data.describe()}")
            write_event(self.run_dir, event="start", state=state, step=start, restart=self.restart)
        return start

    def log_train(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, tokens_per_s: float) -> None:
        self.log.log({"step": step, "loss": global_mean(loss), "lr": self.optimizer.param_groups[0]["lr"],
                      "tokens": step * self.plan.tokens_per_step, "tokens_per_s": tokens_per_s,
                      "mfu": mfu(tokens_per_s, self.plan.summary["flops_per_token"], self.device_name, self.world),
                      "grad_norm": grad_norm.item()})

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def params_finite(self) -> torch.Tensor:
        """One device bool: every (local shard of every) parameter is finite."""
        flags = [torch.isfinite(p.detach().to_local() if hasattr(p, "to_local") else p.detach()).all()
                 for p in self.model.parameters()]
        return torch.stack(flags).all()

    def meta(self, step: int) -> dict:
        """What a checkpoint after `step` records besides the state (docs/checkpoints.md)."""
        return {"step": step, "tokens": step * self.plan.tokens_per_step, "data_step": step,
                "plan_hash": self.plan.hash, "seed": self.plan.train.seed, "shapes": self.shapes}

    def stopped(self, step: int) -> None:
        saved = self.plan.checkpoint.interval > 0
        if self.rank == 0:
            write_event(self.run_dir, event="stop", step=step, checkpoint=saved)
        self.log.say(f"stopped by signal after step {step}; " + (f"resume with: mupctl resume {self.run_dir}"
                     if saved else "no checkpoint was written (checkpoint.interval: 0)"))

    def diverged(self, step: int) -> None:
        again = "then resume from the last checkpoint" if self.ckpt.checkpoints() else \
            "no checkpoint: a resume starts over"
        msg = (f"non-finite loss by step {step}: the run diverged (no checkpoint was written from this state; "
               f"lower optimizer.lr or check the recipe; {again})")
        if self.rank == 0:
            atomic_write(self.run_dir / DIVERGED, json.dumps({"step": step, "message": msg}))
            self.log.say(msg)
        raise Divergence(msg)


@record
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mupctl.worker")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    local0 = os.environ.get("LOCAL_RANK", "0") == "0"  # a killed launcher writes nothing: say how the run ended
    die_with_parent(partial(record_orphaned, args.run_dir) if local0 else None)
    plan = read_plan(args.run_dir / "plan.json")
    if plan.train.deterministic:  # before CUDA is initialized
        from mupctl.determinism import make_deterministic
        make_deterministic()
    device = pick_device(plan.launch.device, int(os.environ.get("LOCAL_RANK", 0)))
    # torchrun's store outlives a restart: keys of the dead attempt (e.g. gloo's peer addresses)
    # would be read by the new one, so each attempt gets its own key prefix.
    store, rank, world = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"mupctl/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)
    if device.type == "cuda":
        dist.init_process_group("nccl", store=store, rank=rank, world_size=world, device_id=device)
    else:
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    code = 0
    try:
        Trainer(args.run_dir, plan, device).run()
    except Divergence as err:
        print(f"mupctl worker: {err}", file=sys.stderr)
        code = 1
    except RunFailure as err:  # e.g. no readable checkpoint: one line, and the reason for the launcher
        print(f"mupctl worker: {err}", file=sys.stderr)
        if dist.get_rank() == 0:
            write_event(args.run_dir, event="failed", message=str(err))
        code = 1
    finally:
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.barrier()
            dist.destroy_process_group()
    # FSDP2 under gloo can abort in interpreter teardown after a clean shutdown (~5% of runs):
    # leave without running it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
