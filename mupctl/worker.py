"""The training worker that torchrun starts in every rank: `python -m mupctl.worker --run-dir DIR`.

It reads `recipe.yaml` and `plan.json` from the run directory, builds the model and optimizer from
the plan, resumes from the newest valid checkpoint if there is one (so torchrun's restarts and
`mupctl resume` need nothing else), and trains:

    for each step: lr = peak_lr · factor(step) per param group
                   accumulate gradients over global_batch / (micro_batch · world) micro batches
                   clip, step; log / validate / checkpoint at their intervals

Sequence j of step s is a pure function of (seed, s, j), and rank r's micro batch k takes
j = (k·world + r)·micro + i, so any world size sees the same global batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from mupctl.checkpoint import Checkpointer
from mupctl.data import open_data
from mupctl.errors import RunFailure
from mupctl.metrics import MetricsLog, truncate_metrics
from mupctl.mfu import mfu
from mupctl.model import GPT
from mupctl.optim import build_optimizer, optimizer_parts
from mupctl.recipe import load_recipe
from mupctl.schedule import lr_factor
from mupctl.telemetry import UpdateRatio

DIVERGED = "DIVERGED.json"
STOP_CHECK_S = 2.0  # seconds between checks for a stop request (SIGTERM/SIGINT) on every rank
STOP_PROBE = (5, 10)  # steps after the (re)start between which the step time is measured


class Divergence(RuntimeError):
    pass


class StopFlag:
    """SIGTERM/SIGINT ask for a clean stop at the next stop check: every log or checkpoint step, and
    every ~STOP_CHECK_S seconds (a checkpoint is saved there). A second SIGINT to the worker exits at
    once. (The launcher passes a Ctrl-C on to torchrun as one SIGTERM, which torchrun forwards here; a
    second Ctrl-C ends torchrun, and the worker follows it: die_with_parent.)"""

    def __init__(self):
        self.requested = False
        self.interrupts = 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.interrupts += signum == signal.SIGINT
        if self.interrupts > 1:
            sys.exit(128 + signum)
        self.requested = True


def write_event(run_dir: Path, **fields) -> None:
    """Append one row to events.jsonl (rank 0 calls it): start, stop and failed events."""
    with (run_dir / "events.jsonl").open("a") as f:
        f.write(json.dumps(fields | {"time": time.time()}) + "\n")


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie: a SIGKILLed launcher stays one until its own
    parent reaps it, which a harness reading the run's output may do only once every writer of that
    pipe, this worker included, has exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (a reused PID): not ours to judge
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone meanwhile, or no /proc (not Linux: existence is all there is to tell)
        return not os.path.isdir("/proc")
    return state != "Z"


def die_with_parent(poll_s: float = 0.1) -> None:
    """Exit when the torchrun agent that started this worker dies, or the `mupctl` launcher above it
    (`MUPCTL_LAUNCHER_PID`), so a killed run leaves no orphan trainer behind (holding GPUs, or
    writing into a run that is being resumed). The launcher check also covers an agent that died
    before this worker could read its PID. A polling thread rather than PR_SET_PDEATHSIG, which
    fires when the *thread* that forked us exits."""
    parent = os.getppid()
    launcher = int(os.environ.get("MUPCTL_LAUNCHER_PID", "0"))

    def alive() -> bool:
        return os.getppid() == parent and (not launcher or running(launcher))

    def watch():
        while alive():
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    if not alive():
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def build(plan: dict, recipe, device: torch.device, world: int):
    """Model (wrapped for DDP/FSDP2, optionally compiled) and optimizer, both from the plan."""
    torch.manual_seed(recipe.train.seed)
    model = GPT(plan, device=device, activation_checkpointing=recipe.train.activation_checkpointing)
    cuda = device.type == "cuda"
    compile_on = recipe.train.compile is True or (recipe.train.compile == "auto" and cuda)
    bf16 = bf16_compute(recipe, device)
    if precision(recipe, device) == "fp8":
        from mupctl.fp8 import apply_fp8
        apply_fp8(model)
    if recipe.launch.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kw = {"mp_policy": mp} if mp else {}
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


def precision(recipe, device) -> str:
    p = recipe.train.precision
    return ("bf16" if device.type == "cuda" else "fp32") if p == "auto" else p


def bf16_compute(recipe, device) -> bool:
    """bf16 autocast (DDP) or bf16 parameters (FSDP2): bf16, and fp8, whose fp8 matmuls sit inside it."""
    return precision(recipe, device) in ("bf16", "fp8")


class Trainer:
    def __init__(self, run_dir: Path, recipe, device: torch.device):
        self.run_dir = run_dir
        self.recipe = recipe
        self.plan = json.loads((run_dir / "plan.json").read_text())
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = device
        r, t = self.recipe, self.recipe.train
        self.micro, self.accum = t.micro_batch, t.global_batch // (t.micro_batch * self.world)
        self.tokens_per_step = t.global_batch * r.model.seq_len
        self.shapes = {x["name"]: x["shape"] for x in self.plan["tensors"]}
        self.model, self.wrapped, self.optimizer = build(self.plan, r, self.device, self.world)
        self.data = open_data(r.data, r.model.vocab_size, r.model.seq_len, t.seed)
        self.ckpt = Checkpointer(run_dir / "checkpoints", r.checkpoint.keep_last, r.checkpoint.async_save)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) \
            if bf16_compute(r, self.device) and r.launch.strategy != "fsdp" else contextlib.nullcontext()
        self.stop = StopFlag()
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None

    # -- one step ---------------------------------------------------------------------------------
    def indices(self, k: int) -> list[int]:
        start = (k * self.world + self.rank) * self.micro
        return list(range(start, start + self.micro))

    def micro_batches(self, split: str, step: int):
        for k in range(self.accum):
            x, y = self.data.batch(split, step, self.indices(k))
            yield k, x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def grad_sync(self, on: bool):
        if isinstance(self.wrapped, torch.nn.parallel.DistributedDataParallel) and not on:
            return self.wrapped.no_sync()
        if hasattr(self.wrapped, "set_requires_gradient_sync"):
            self.wrapped.set_requires_gradient_sync(on)
        return contextlib.nullcontext()

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        factor = lr_factor(step, **self.recipe.schedule.model_dump(), steps=self.recipe.train.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        loss_sum = torch.zeros((), device=self.device)
        for k, x, y in self.micro_batches("train", step):
            with self.grad_sync(k == self.accum - 1), self.autocast:
                loss = self.wrapped(x, y) / self.accum
                loss.backward()
            loss_sum += loss.detach()
        clip = self.recipe.train.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, grad_norm

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over eval_batches fixed global batches of the validation split."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        for b in range(self.recipe.train.eval_batches):
            for _, x, y in self.micro_batches("val", b):
                with self.autocast:
                    total += self.wrapped(x, y).float()
        self.model.train()
        return self.global_mean(total) / (self.recipe.train.eval_batches * self.accum)

    def global_mean(self, value: torch.Tensor) -> float:
        value = value.detach().float().clone()
        dist.all_reduce(value)
        return value.item() / self.world

    def agree(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return t.item() > 0

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        r, t = self.recipe, self.recipe.train
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if (self.run_dir / DIVERGED).exists():
            raise Divergence((self.run_dir / DIVERGED).read_text().strip())
        newest = self.ckpt.newest_meta()
        same_shapes = newest is None or newest.get("shapes", self.shapes) == self.shapes
        meta = self.ckpt.load_latest(self.model, optimizer_parts(self.optimizer), weights=same_shapes)
        start = meta["step"] if meta else 0
        log = MetricsLog(self.run_dir, self.rank == 0, t.steps, r.logging,
                         wandb_id=(self.run_dir / "wandb_id").read_text().strip()
                         if (self.run_dir / "wandb_id").exists() else None, config=self.plan["summary"])
        if self.rank == 0:
            kept = truncate_metrics(log.path, start if meta else -1)  # a fresh start logs step 0 again
            if meta and not any(row.get("step") == start and "checkpoint_blocked_s" in row
                                for row in kept):  # killed between the commit and its row
                log.log({"step": start, "checkpoint_blocked_s": None})
            state = f"resumed at step {start}" if meta else "fresh"
            if meta and not same_shapes:
                state += " with fresh weights (the checkpoint's tensor shapes differ from the plan: --force)"
            elif meta and meta.get("plan_hash") != self.plan["hash"]:
                state += f" (plan {meta.get('plan_hash')} -> {self.plan['hash']}: --force)"
            log.say(f"mupctl worker: {state}; restart {restart}/{r.launch.max_restarts}; world {self.world} "
                    f"({r.launch.strategy}, {self.device.type}, {precision(r, self.device)}); "
                    f"{self.accum} micro-batch(es) of {self.micro} per rank; data: {self.data.describe()}")
            write_event(self.run_dir, event="start", state=state, step=start, restart=restart)
        roles = self.model.param_roles()
        telemetry = UpdateRatio(dict(self.model.named_parameters()), roles, r.launch.strategy == "fsdp")
        fault = int(os.environ.get("MUPCTL_FAULT_STEP", "0"))  # test-only crash hook (first attempt)
        if start == 0 and t.eval_interval:
            log.log({"step": 0, "val_loss": self.evaluate()})
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        last_time, last_step = time.perf_counter(), start
        stop_every, probe = 1, {}  # stop requests: checked every step until the step time is measured
        for step in range(start, t.steps):
            done = step + 1
            if done - start in STOP_PROBE:
                probe[done - start] = time.perf_counter()
                if len(probe) == 2:
                    stop_every = self.stop_check_interval((probe[STOP_PROBE[1]] - probe[STOP_PROBE[0]])
                                                          / (STOP_PROBE[1] - STOP_PROBE[0]))
            tele = t.telemetry_interval and done % t.telemetry_interval == 0
            if tele:
                self.model.record = {}
                telemetry.snapshot()
            loss, grad_norm = self.train_step(step)
            bad |= ~torch.isfinite(loss) | ~torch.isfinite(grad_norm)
            if tele:
                acts = {k: v.item() for k, v in self.model.record.items()}
                self.model.record = None
                log.log({"step": done, "act_rms": acts, "update_ratio": telemetry.ratios()})
            is_last = done == t.steps
            log_now = done % t.log_interval == 0 or is_last
            ckpt_now = r.checkpoint.interval > 0 and (done % r.checkpoint.interval == 0 or is_last)
            if log_now or ckpt_now:
                if ckpt_now:
                    bad |= ~self.params_finite()
                if self.agree(bool(bad)):
                    self.diverged(done, log)
            if log_now:
                mean_loss = self.global_mean(loss)
                now = time.perf_counter()
                tps = (done - last_step) * self.tokens_per_step / (now - last_time)
                last_time, last_step = now, done
                log.log({"step": done, "loss": mean_loss, "lr": self.optimizer.param_groups[0]["lr"],
                         "tokens": done * self.tokens_per_step, "tokens_per_s": tps,
                         "mfu": mfu(tps, self.plan["summary"]["flops_per_token"], self.device_name, self.world),
                         "grad_norm": grad_norm.item()})
            eval_now = bool(t.eval_interval) and (done % t.eval_interval == 0 or is_last)
            if eval_now and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the queued training work is not eval time
            paused = time.perf_counter()  # throughput counts training time only: eval and saves are left out
            if eval_now:
                log.log({"step": done, "val_loss": self.evaluate()})
            check = log_now or ckpt_now or (done - start) % stop_every == 0
            stop = check and self.agree(self.stop.requested)
            if ckpt_now or (stop and r.checkpoint.interval):
                log.log({"step": done, "checkpoint_blocked_s": self.save(done)})
            last_time += time.perf_counter() - paused
            if fault and done == fault and restart == 0 and self.rank == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            if stop:
                if self.rank == 0:
                    write_event(self.run_dir, event="stop", step=done, checkpoint=bool(r.checkpoint.interval))
                log.say(f"stopped by signal after step {done}; " + (f"resume with: mupctl resume {self.run_dir}"
                        if r.checkpoint.interval else "no checkpoint was written (checkpoint.interval: 0)"))
                break
        self.ckpt.wait()
        log.close()

    def stop_check_interval(self, seconds_per_step: float) -> int:
        """Steps between stop checks (a host sync each): about STOP_CHECK_S apart, so that a SIGTERM is
        answered well inside torchrun's 30 s grace before SIGKILL. Rank 0's timing, on every rank."""
        n = torch.tensor([max(1, int(STOP_CHECK_S / max(seconds_per_step, 1e-9)))], device=self.device)
        dist.broadcast(n, 0)
        return int(n.item())

    def params_finite(self) -> torch.Tensor:
        """One device bool: every (local shard of every) parameter is finite."""
        flags = [torch.isfinite(p.detach().to_local() if hasattr(p, "to_local") else p.detach()).all()
                 for p in self.model.parameters()]
        return torch.stack(flags).all()

    def save(self, step: int) -> float:
        """Checkpoint after `step`; returns the seconds training was blocked."""
        meta = {"step": step, "tokens": step * self.tokens_per_step, "data_step": step,
                "plan_hash": self.plan["hash"], "seed": self.recipe.train.seed, "shapes": self.shapes}
        return self.ckpt.save(step, self.model, optimizer_parts(self.optimizer), meta)

    def diverged(self, step: int, log: MetricsLog) -> None:
        msg = (f"non-finite loss by step {step}: the run diverged (no checkpoint was written from this state; "
               f"lower optimizer.lr or check the recipe, then resume from the last checkpoint)")
        if self.rank == 0:
            (self.run_dir / DIVERGED).write_text(json.dumps({"step": step, "message": msg}))
            log.say(msg)
        raise Divergence(msg)


@record
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mupctl.worker")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    die_with_parent()
    recipe = load_recipe(args.run_dir / "recipe.yaml")
    device = pick_device(recipe.launch.device, int(os.environ.get("LOCAL_RANK", 0)))
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
        Trainer(args.run_dir, recipe, device).run()
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
