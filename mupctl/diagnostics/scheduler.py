"""Run many cells (child processes) a fixed number at a time, spread over the visible GPUs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mupctl.errors import RunFailure, UserError
from mupctl.launch.child import spawn

POLL_S = 0.2


def gpu_groups(recipe, gpus: list[int] | None) -> list[list[str]]:
    """CUDA_VISIBLE_DEVICES values per slot group: `gpus` as given, else the visible devices (the
    parent's CUDA_VISIBLE_DEVICES entries, or 0..count−1); one group = launch.nproc_per_node GPUs.
    [] when the recipe runs on CPU or no GPU is visible."""
    if recipe.launch.device == "cpu":
        return []
    if gpus is None:
        import torch
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",")[:torch.cuda.device_count()] if visible else \
            [str(i) for i in range(torch.cuda.device_count())]
    else:
        ids = [str(g) for g in gpus]
    n = recipe.launch.nproc_per_node
    if ids and len(ids) < n:
        raise UserError(f"each cell needs launch.nproc_per_node = {n} GPUs, only {len(ids)} given", "--gpus")
    return [ids[i:i + n] for i in range(0, len(ids) - n + 1, n)]


def slot_env(slot: int, groups: list[list[str]], parallel: int) -> dict:
    """The child's environment: its GPU group (slot mod #groups, so parallel > #groups packs cells
    per GPU); on CPU, the cores split between the running cells unless OMP_NUM_THREADS is set."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if groups:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[slot % len(groups)])
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


OUT_OF_MEMORY = ("CUDA out of memory", "OutOfMemoryError")
"""What a worker that ran out of GPU memory leaves in its train.log (torch.OutOfMemoryError)."""
RETRIES = 2


def out_of_memory(job: dict) -> bool:
    """Whether this attempt of the job (its train.log past job["log_offset"]) ran out of GPU memory."""
    try:
        with open(Path(job["dir"]) / "train.log", "rb") as f:
            f.seek(job["log_offset"])
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in OUT_OF_MEMORY)


def run_jobs(jobs: list[dict], parallel: int, groups: list[list[str]]) -> None:
    """Run jobs ({"argv", "dir"}, optional "retry_argv") `parallel` at a time, slot i on GPU group
    i mod #groups; sets job["rc"], job["seconds"], job["gpus"] (the CUDA_VISIBLE_DEVICES it gave the
    job, None on CPU) and job["started"] / job["ended"] (time.time()). Output goes to <dir>/sweep.log.
    A job that runs out of GPU memory is queued again (at most RETRIES times, with its retry_argv), and
    its GPU group then takes at most as many jobs at a time as were still running there: packing
    more cells on a GPU than fit backs off instead of failing them. On Ctrl-C, SIGTERM or an error the
    running children get SIGTERM, once: they run in their own sessions, so a terminal's Ctrl-C does not
    reach them too (launch.child); a signal then ends the sweep with a one-line `RunFailure`."""
    pending, running, cap = list(jobs), {}, {}  # cap: group index → most jobs at once there

    def group(slot: int) -> int:
        return slot % len(groups) if groups else 0

    def busy(g: int) -> int:
        return sum(group(slot) == g for slot in running)

    def stop(signum, frame):
        raise Stopped(signum)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            for slot in range(parallel):
                if slot not in running and pending and busy(group(slot)) < cap.get(group(slot), parallel):
                    job = pending.pop(0)
                    Path(job["dir"]).mkdir(parents=True, exist_ok=True)
                    env = slot_env(slot, groups, parallel)
                    job["gpus"], job["started"] = env["CUDA_VISIBLE_DEVICES"] if groups else None, time.time()
                    log_path = Path(job["dir"]) / "train.log"
                    job["log_offset"] = log_path.stat().st_size if log_path.exists() else 0
                    with open(Path(job["dir"]) / "sweep.log", "a") as log:
                        proc = spawn(job["argv"], stdout=log, stderr=subprocess.STDOUT, env=env)
                    running[slot] = (job, proc, time.perf_counter())
            for slot, (job, proc, t0) in list(running.items()):
                if proc.poll() is not None:
                    job["rc"], job["seconds"] = proc.returncode, round(time.perf_counter() - t0, 2)
                    job["ended"] = time.time()
                    del running[slot]
                    note(f"{job['id']}: exit {job['rc']} after {job['seconds']} s")
                    if job["rc"] and groups and job.get("retry_argv") and job.get("tries", 0) < RETRIES \
                            and out_of_memory(job):
                        g = group(slot)
                        cap[g] = max(1, min(cap.get(g, parallel), busy(g)))
                        job["tries"], job["argv"] = job.get("tries", 0) + 1, job["retry_argv"]
                        pending.insert(0, job)
                        note(f"{job['id']}: out of GPU memory on GPU(s) {job['gpus']}; queued again, and from "
                             f"now on at most {cap[g]} cell(s) at a time there")
            time.sleep(POLL_S)
    except Stopped as stopped:
        raise RunFailure(f"stopped by {signal.Signals(stopped.args[0]).name}: the {len(running)} running cell(s) stop "
                         "at their next step, with a checkpoint where checkpoint.interval > 0 (a sweep's cells have "
                         "none unless --set gives one: those start over); rerun the same command to continue "
                         "(finished cells are kept)") from None
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for _, proc, _ in running.values():
            proc.terminate()
        for _, proc, _ in running.values():
            proc.wait()


class Stopped(Exception):
    """A SIGINT or SIGTERM reached the sweep (args: the signal number)."""


def note(message: str) -> None:
    """Progress for people and agents on stderr (stdout stays clean for --json)."""
    print(f"mupctl sweep: {message}", file=sys.stderr, flush=True)
