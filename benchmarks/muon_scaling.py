"""Layer-wise Muon on several GPUs of one node (issue 26): throughput, a profile of one step, SIGKILL + resume.

    python benchmarks/muon_scaling.py --json s.json --markdown s.md          # all visible GPUs, every part
    python benchmarks/muon_scaling.py --parts profile,resume --shapes 24x1024
    python benchmarks/muon_scaling.py --dry-run                               # CPU, gloo, 2 processes, tiny

1. train: real `mupctl train` runs (benchmarks/muon.py's `train_row`: GPT-2 shape, mup, bf16, compile,
   synthetic data, micro batch 16 per GPU) at global batch --batch × 1024 tokens, on 1 and on all GPUs
   (--gpus), DDP and FSDP2, for adamw, muon-replicated and muon-layerwise (at 1 GPU layer-wise is
   replicated, so that run is skipped). Per row: tokens/s and tokens/s per GPU; Muon overhead = step
   time / the same-run AdamW row's (same shape, strategy, GPUs) − 1.
2. profile: benchmarks/muon_profile.py under torchrun at each GPU count and strategy, replicated and
   layer-wise in one launch: per rank the Newton–Schulz time, the Muon step, the exposed communication
   (compute stream waiting on a collective) and the same collectives alone (serialized): hidden = alone −
   exposed. Layer-wise NS time per rank should fall as 1/GPUs.
3. resume: a layer-wise run (first shape and strategy, all GPUs, checkpoint every 4 steps) SIGKILLed after
   step 6 (`MUPCTL_FAULT_STEP`, rank 0 kills itself), `mupctl resume` at all GPUs (killed again after step
   10), then `mupctl resume --nproc-per-node N/2` to step 12. It passes when the starts read fresh /
   resumed at 4 / resumed at 8, the ownership rows name N, N and N/2 ranks, and steps 1–12 each have one
   finite loss.

Every part saves its results as it goes (--json, --markdown). docs/performance.md has the commands.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from mupctl.metrics import read_jsonl  # noqa: E402
from muon import VARIANTS, add_run_args, finish_args, save as save_result, train_row  # noqa: E402
from scaling import child_env, probe_environment, run_overrides  # noqa: E402
from throughput import fmt  # noqa: E402

PROFILE = ROOT / "benchmarks" / "muon_profile.py"


def passthrough(a) -> list[str]:
    """The run arguments a child benchmark needs to build the same plans."""
    out = ["--device", a.device, "--vocab", str(a.vocab), "--seq-len", str(a.seq_len), "--micro-batch",
           str(a.micro_batch), "--d-head", str(a.d_head), "--base-d-model", str(a.base_d_model),
           "--recipe", a.recipe, "--compile", {"true": "on", "false": "off"}[a.compile], "--precision", a.precision]
    return out + [x for s in a.set for x in ("--set", s)]


def profile_part(shape: str, strategy: str, gpus: int, a, work: Path) -> dict:
    out = work / f"profile-{shape}-{strategy}-{gpus}g.json"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}", str(PROFILE),
            "--shape", shape, "--strategy", strategy, "--batch", str(a.batch), "--warmup", str(a.profile_warmup),
            "--modes", "replicated,layerwise" if gpus > 1 else "replicated",
            "--out", str(out), *passthrough(a)] + (["--trace", str(work / "traces")] if a.trace else [])
    row = {"shape": shape, "strategy": strategy, "gpus": gpus, "command": shlex.join(argv)}
    print(f"[profile {shape} {strategy} {gpus}] {row['command']}", flush=True)
    try:
        res = subprocess.run(argv, cwd=ROOT, env=child_env(a), capture_output=True, text=True, timeout=a.run_timeout)
        row["rc"] = res.returncode
        if res.returncode:
            row["error"] = (res.stdout + res.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        row["rc"], row["error"] = None, f"killed at --run-timeout {a.run_timeout:.0f} s"
    if out.exists():
        row["modes"] = json.loads(out.read_text())["modes"]
    row["status"] = "ok" if row.get("rc") == 0 and row.get("modes") else "failed"
    return row


def mupctl(args: list[str], a, fault: int | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = child_env(a) | ({"MUPCTL_FAULT_STEP": str(fault)} if fault else {})
    try:
        return subprocess.run([sys.executable, "-m", "mupctl", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout or a.run_timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, None, str(exc.stdout or ""), f"timeout after {exc.timeout} s")


def resume_part(shape: str, strategy: str, gpus: int, a, work: Path) -> dict:
    """Train at `gpus` killed after 6, resume at `gpus` killed after 10, resume at gpus/2 to 12."""
    run = work / f"resume-{shape}-{strategy}-{gpus}g"
    half = max(1, gpus // 2)
    sets = run_overrides(shape, strategy, gpus, a) + list(a.set) + [
        f"train.global_batch={a.batch}", "train.steps=12", "checkpoint.interval=4", "checkpoint.keep_last=3",
    ] + VARIANTS["muon-layerwise"]
    train = ["train", a.recipe, "--run-dir", str(run), *[x for s in sets for x in ("--set", s)]]
    steps = [("train", train, 6), ("resume", ["resume", str(run)], 10),
             ("resume-half", ["resume", str(run), "--nproc-per-node", str(half)], None)]
    row = {"shape": shape, "strategy": strategy, "gpus": gpus, "half": half, "run_dir": str(run), "calls": []}
    for name, args, fault in steps:
        print(f"[resume {shape} {strategy} {gpus}] {name}: mupctl {shlex.join(args)}"
              + (f"  (MUPCTL_FAULT_STEP={fault})" if fault else ""), flush=True)
        t0 = time.perf_counter()
        res = mupctl(args, a, fault)
        row["calls"].append({"call": name, "rc": res.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                             "tail": (res.stdout + res.stderr)[-1500:] if res.returncode not in (0, 1) else ""})
    events = read_jsonl(run / "events.jsonl")
    losses = {}
    for r in read_jsonl(run / "metrics.jsonl"):
        if "loss" in r:
            losses.setdefault(r["step"], []).append(r["loss"])
    row["starts"] = [e["state"] for e in events if e["event"] == "start"]
    row["muon_world_sizes"] = [e["world_size"] for e in events if e["event"] == "muon"]
    row["losses"] = {s: v[0] for s, v in sorted(losses.items())}
    checks = {
        "exit codes 1, 1, 0": [c["rc"] for c in row["calls"]] == [1, 1, 0],
        "starts fresh, resumed at 4, resumed at 8": [s.split(" (")[0] for s in row["starts"]]
        == ["fresh", "resumed at step 4", "resumed at step 8"],
        f"ownership over {gpus}, {gpus}, {half} ranks": row["muon_world_sizes"] == [gpus, gpus, half],
        "one finite loss per step 1-12": sorted(losses) == list(range(1, 13))
        and all(len(v) == 1 and math.isfinite(v[0]) for v in losses.values()),
    }
    row["checks"], row["status"] = checks, "ok" if all(checks.values()) else "failed"
    print(f"    -> resume: {row['status']} {checks}", flush=True)
    return row


def markdown(result: dict) -> str:
    env, a = result["env"], result["args"]
    lines = [f"Muon scaling, `mupctl train` ({a['device']}): {env.get('gpu') or 'CPU'} × {env.get('gpu_count') or '-'} · "
             f"torch {env.get('torch')} · CUDA {env.get('cuda')} · NCCL {env.get('nccl')} · {env['time']}", "",
             f"Command: `{result['command']}`", "",
             f"Global batch {a['batch']} × {a['seq_len']} tokens, micro batch {a['micro_batch']} per GPU, "
             f"{a['precision']}, compile {a['compile']}, {a['steps']} steps (median after {a['warmup']}).", "",
             "| shape | strategy | GPUs | variant | tokens/s | tokens/s/GPU | step ms | Muon overhead vs AdamW | "
             "layer-wise / replicated | status |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        over, per_gpu = r.get("overhead_pct"), r["tokens_per_s"] / r["gpus"] if r.get("tokens_per_s") else None
        lines.append(f"| {r['shape']} | {r['strategy']} | {r['gpus']} | {r['variant']} | {fmt(r.get('tokens_per_s'), ',.0f')} | "
                     f"{fmt(per_gpu, ',.0f')} | {fmt(r.get('step_ms'), '.1f')} | {fmt(over, '+.1f')}"
                     f"{'%' if over is not None else ''} | {fmt(r.get('vs_replicated'), '.3f')} | {r.get('status')} |")
    if result["profiles"]:
        lines += ["", "One profiled step per rank (ms; exposed = the Muon step's wait for collectives; alone = the "
                  "same collectives serialized; hidden = alone − exposed):", "",
                  "| shape | strategy | GPUs | mode | NS per rank | max NS | Muon step (max) | exposed (max) | alone | "
                  "train step |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in result["profiles"]:
            for mode, ranks in (p.get("modes") or {}).items():
                ns = [r["ns_ms"] for r in ranks]
                lines.append(f"| {p['shape']} | {p['strategy']} | {p['gpus']} | {mode} | "
                             f"{', '.join(f'{x:.1f}' for x in ns)} | {max(ns):.1f} | "
                             f"{max(r['muon_step_ms'] for r in ranks):.1f} | {max(r['exposed_ms'] for r in ranks):.1f} | "
                             f"{max(r['comm_ms'] for r in ranks):.1f} | {max(r['step_ms'] for r in ranks):.1f} |")
            if p["status"] != "ok":
                lines.append(f"| {p['shape']} | {p['strategy']} | {p['gpus']} | failed | | | | | | |")
    for r in result["resumes"]:
        lines += ["", f"SIGKILL + resume ({r['shape']} {r['strategy']}, {r['gpus']} then {r['half']} GPUs): "
                  f"**{r['status']}**; starts {r['starts']}; ownership over {r['muon_world_sizes']} ranks; calls "
                  + ", ".join(f"{c['call']} exit {c['rc']} ({c['wall_s']} s)" for c in r["calls"])]
    for r in result["rows"]:
        if r.get("status") not in ("ok", "skipped"):
            lines += ["", f"**{r['shape']} {r['strategy']} {r['gpus']} {r['variant']}: {r.get('status')}**", "", "```",
                      (r.get("error") or "").strip()[-2000:], "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="24x1024,24x2048", help="LAYERSxD_MODEL: 355M, 1.3B")
    p.add_argument("--strategies", default="ddp,fsdp")
    p.add_argument("--gpus", default=None, help="GPU counts (default: 1 and all visible)")
    p.add_argument("--variants", default="adamw,muon-replicated,muon-layerwise")
    p.add_argument("--batch", type=int, default=256, help="global batch (sequences)")
    p.add_argument("--parts", default="train,profile,resume")
    p.add_argument("--profile-warmup", type=int, default=5, help="steps before the profiled one (compile)")
    p.add_argument("--trace", action="store_true", help="also write torch.profiler traces of the profiled steps")
    add_run_args(p)
    a = p.parse_args(argv)
    finish_args(a, {"device": "cpu", "shapes": "2x64,2x128", "gpus": "1,2", "batch": 16, "vocab": 256, "seq_len": 64,
                    "micro_batch": 4, "steps": 8, "warmup": 3, "base_d_model": 64, "profile_warmup": 2,
                    "run_timeout": 300})
    env = probe_environment(a.device)
    n = env.get("gpu_count") or 0
    counts = [int(x) for x in (a.gpus or f"1,{n}").split(",") if x]
    counts = sorted({c for c in counts if c >= 1})
    shapes, strategies = [s for s in a.shapes.split(",") if s], [s for s in a.strategies.split(",") if s]
    variants, parts = [v for v in a.variants.split(",") if v], set(a.parts.split(","))
    work = Path(a.work_dir or ROOT / "runs" / f"muon-scaling-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    cmd = shlex.join([sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])])
    print(f"{env.get('gpu') or 'CPU'} × {n} · torch {env.get('torch')} · NCCL {env.get('nccl')}\n{cmd}\n"
          f"GPU counts {counts}; run directories: {work}", flush=True)
    result = {"env": env, "command": cmd, "args": vars(a), "rows": [], "profiles": [], "resumes": []}
    t0 = time.perf_counter()
    over = lambda: a.time_budget and time.perf_counter() - t0 > a.time_budget  # noqa: E731
    for shape in shapes if "train" in parts else []:
        for strategy in strategies:
            for gpus in counts:
                for variant in variants:
                    row = {"shape": shape, "strategy": strategy, "gpus": gpus, "global_batch": a.batch,
                           "variant": variant}
                    if gpus == 1 and variant == "muon-layerwise":
                        continue  # one rank owns every matrix: the replicated run
                    result["rows"].append(row)
                    if over():
                        row |= {"status": "skipped", "error": "time budget spent"}
                        continue
                    train_row(row, a, env, work / f"{strategy}-{gpus}g")
                    save_result(result, a, markdown)
    for shape in shapes if "profile" in parts else []:
        for strategy in strategies:
            for gpus in counts:
                if not over():
                    result["profiles"].append(profile_part(shape, strategy, gpus, a, work))
                    save_result(result, a, markdown)
    if "resume" in parts and max(counts) > 1 and not over():
        result["resumes"].append(resume_part(shapes[0], strategies[0], max(counts), a, work))
    md = save_result(result, a, markdown)
    print()
    print(md)
    bad = [r for r in result["rows"] + result["profiles"] + result["resumes"] if r.get("status") not in ("ok", "skipped")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
