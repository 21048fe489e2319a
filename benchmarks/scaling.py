"""Weak-scaling benchmark of the real training path: `mupctl train` → torchrun → worker, DDP vs FSDP2.

    python benchmarks/scaling.py                                  # 24x1024,24x2048 × ddp,fsdp × 1,2 GPUs
    python benchmarks/scaling.py --gpus 1,2,8 --json s.json --markdown s.md
    python benchmarks/scaling.py --device cpu --tiny              # CPU smoke test (gloo, processes as "GPUs")

Every run is a real `python -m mupctl train recipes/gpt2-124m-mup.yaml --run-dir DIR --set …` with the
throughput anchor's model (GPT-2 style: learned positions, LayerNorm, GELU, tied embeddings, vocab
50304, seq 1024, n_heads = d_model / 64; benchmarks/throughput.py), recipe mup (base width 256, head
64), AdamW, bf16, torch.compile, synthetic data, micro batch 16 per GPU and global batch 16 × GPUs
(weak scaling: one micro batch per rank per step, no accumulation), checkpoints, validation and μP
telemetry off, `train.log_interval` 1 (one train row per step). One run at a time: shape × strategy × GPUs.

Per run: median of the train rows' `tokens_per_s` over the steps after --warmup (the first steps
include torch.compile); tokens/s per GPU = that / GPUs; scaling efficiency = tokens/s per GPU at n
GPUs / tokens/s per GPU at 1 GPU (same shape and strategy); MFU per GPU = `mupctl.mfu.mfu` with the
plan's `summary.flops_per_token`; peak memory = the largest rise of `nvidia-smi` memory.used on any
GPU over its first sample (`nvidia-smi --loop-ms=500` into logs/<run>.smi.csv, started just before
the run), so it includes the CUDA context, NCCL buffers and the caching allocator's reserve. "state
GiB" = the plan's fp32 weights + grads + optimizer state per GPU (FSDP divides it by the world size).

Each row's `tokens_per_s` comes from the worker, which syncs the host once per logged step (loss and
grad-norm .item()); the anchor's loop does not, so a 1-GPU figure here sits slightly below
throughput.py's. A run that fails or passes --run-timeout is recorded with the tail of its stderr;
the benchmark goes on. SIGTERM/SIGINT stops the current run (kept as "interrupted") and marks the rest
skipped. JSON (--json) and markdown (--markdown) are rewritten after every run.

Read DDP against FSDP with care: under bf16 the worker runs DDP with autocast (fp32 weights, fp32
residual stream, bf16 matmuls) but FSDP2 with MixedPrecisionPolicy(param_dtype=bf16) and no autocast
(every op, the residual stream included, in bf16), so the two do not do the same arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from mupctl.errors import UserError  # noqa: E402
from mupctl.metrics import read_jsonl  # noqa: E402
from mupctl.mfu import mfu, peak_flops  # noqa: E402
from mupctl.plan import compile_plan  # noqa: E402
from mupctl.recipe import load_recipe  # noqa: E402
from throughput import ANCHORS, fmt, gpu_kind, parse_shape, percentile  # noqa: E402

DEFAULT_RECIPE = "recipes/gpt2-124m-mup.yaml"


STOP: list[str] = []  # names of the signals (SIGTERM, SIGINT) received: stop the current run, skip the rest


def on_signal(signum, frame) -> None:
    STOP.append(signal.Signals(signum).name)


def parse_list(text: str, kind=str) -> list:
    return [kind(s.strip()) for s in text.split(",") if s.strip()]


# -- environment ----------------------------------------------------------------------------------

PROBE = r"""
import json, platform, torch
cuda = torch.cuda.is_available()
out = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
       "gpu_count": torch.cuda.device_count() if cuda else 0,
       "gpu": torch.cuda.get_device_name(0) if cuda else None,
       "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
       "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None}
print(json.dumps(out))
"""


def probe_environment(device: str) -> dict:
    """torch / CUDA / GPU facts from a child process, so this process never holds a CUDA context."""
    env = {"device": device, "host": os.uname().nodename, "cpus": os.cpu_count(),
           "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
        env |= json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:  # keep going: the runs will say what is wrong
        env["probe_error"] = f"{type(exc).__name__}: {exc}"[:300]
    if device == "cpu":
        env["gpu"] = None
    env["peak_bf16_flops"] = peak_flops(env.get("gpu"))
    return env


def peak_rise_mib(path: Path) -> dict[int, float]:
    """{GPU index: highest memory.used (MiB) in an `index, memory.used` nvidia-smi log above its first
    sample}; {} when the log is missing or empty."""
    samples: dict[int, list[float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            i, mib = line.split(",")
            samples.setdefault(int(i), []).append(float(mib))
        except ValueError:  # a cut-off last line
            continue
    return {i: max(v) - v[0] for i, v in sorted(samples.items())}


# -- one run --------------------------------------------------------------------------------------

def run_overrides(shape: str, strategy: str, ngpus: int, a) -> list[str]:
    """Every --set of one run, spelled out (the recipe file supplies nothing that matters)."""
    layers, d = parse_shape(shape)
    if d % a.d_head:
        raise UserError(f"d_model {d} is not a multiple of --d-head {a.d_head}", "--shapes")
    sets = {
        "name": f"scale-{shape}-{strategy}-{ngpus}g",
        "model.n_layers": layers, "model.d_model": d, "model.n_heads": d // a.d_head,
        "model.vocab_size": a.vocab, "model.seq_len": a.seq_len, "model.tie_embeddings": "true",
        "model.position": "learned", "model.norm": "layernorm", "model.activation": "gelu", "model.bias": "false",
        "scaling.recipe": "mup", "scaling.base.d_model": a.base_d_model, "scaling.base.d_head": a.d_head,
        "optimizer.name": "adamw",
        "schedule.warmup_steps": a.steps // 3,
        "train.steps": a.steps, "train.micro_batch": a.micro_batch, "train.global_batch": a.micro_batch * ngpus,
        "train.precision": a.precision, "train.compile": a.compile, "train.eval_interval": 0,
        "train.telemetry_interval": 0, "train.log_interval": a.log_interval,
        "data.source": "synthetic", "data.path": "null",
        "launch.nproc_per_node": ngpus, "launch.nnodes": 1, "launch.strategy": strategy, "launch.device": a.device,
        "launch.max_restarts": 0,
        "checkpoint.interval": 0, "logging.wandb": "disabled",
    }
    return [f"{k}={v}" for k, v in sets.items()] + list(a.set)


def tail(path: Path, n: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def kill_run(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGTERM to `mupctl train` (it forwards it to torchrun, which stops its workers), then SIGKILL to
    its process group after 20 s; then any worker of this run directory that is still alive (torchrun
    starts workers in their own sessions; they also exit by themselves when torchrun is gone)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and anything else left in the launcher's group
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    time.sleep(1)
    for p in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            if b"mupctl.worker" in cmd and str(run_dir).encode() in cmd:
                os.kill(int(p.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def train_rows(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "tokens_per_s" in r]


def measure(rows: list[dict], warmup: int, tokens_per_step: int) -> dict | None:
    """Median throughput over the train rows whose interval (previous logged step, step] starts at or
    after `warmup`; step ms p10/p90 by throughput.py's `percentile`; None when there is no such row."""
    kept, prev = [], 0
    for r in rows:
        if prev >= warmup and r["tokens_per_s"] and r["tokens_per_s"] > 0:
            kept.append((r["step"] - prev, r["tokens_per_s"]))
        prev = r["step"]
    if not kept:
        return None
    tps = [t for _, t in kept]
    step_s = [tokens_per_step / t for t in tps]
    first = rows[0]
    return {"tokens_per_s": statistics.median(tps), "measured_steps": sum(n for n, _ in kept),
            "step_ms": 1e3 * statistics.median(step_s), "step_ms_p10": 1e3 * percentile(step_s, 10),
            "step_ms_p90": 1e3 * percentile(step_s, 90),
            "first_row_s": first["step"] * tokens_per_step / first["tokens_per_s"] if first["tokens_per_s"] else None,
            "final_loss": rows[-1]["loss"], "last_step": rows[-1]["step"]}


def child_env(a) -> dict:
    """The environment of a benchmark's `mupctl` child: unbuffered, this checkout importable, and on CPU
    one thread per rank at every process count (torchrun sets it only for n > 1)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if a.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_one(row: dict, a, env: dict, work: Path) -> None:
    """One `mupctl train` run, start to finish, stopped at --run-timeout or on a signal (STOP); fills
    `row` (status ok, failed, timeout or interrupted)."""
    shape, strategy, ngpus = row["shape"], row["strategy"], row["gpus"]
    run_dir, logs = work / f"{shape}-{strategy}-{ngpus}g", work / "logs"
    row |= {"label": a.label, "status": "failed", "run_dir": str(run_dir)}
    try:
        row["layers"], row["d_model"] = parse_shape(shape)
        overrides = run_overrides(shape, strategy, ngpus, a)
        plan = compile_plan(load_recipe(Path(ROOT / a.recipe), overrides))  # fails fast on a bad --set
        if (run_dir / "plan.json").exists():
            raise UserError(f"{run_dir} already holds a run (use another --work-dir)", "--work-dir")
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        print(f"    -> [{shape} {strategy} {ngpus} GPU(s)] {describe(row)}", flush=True)
        return
    s = plan.summary
    row |= {"params": s["params"], "flops_per_token": s["flops_per_token"],
            "state_gib_per_gpu": s["memory_per_gpu_bytes"]["total"] / 2**30}
    argv = [sys.executable, "-m", "mupctl", "train", a.recipe, "--run-dir", str(run_dir)]
    argv += [arg for o in overrides for arg in ("--set", o)]
    row["command"] = f"cd {shlex.quote(str(ROOT))} && {shlex.join(argv)}"
    print(f"[{shape} {strategy} {ngpus} GPU(s)] {row['command']}", flush=True)

    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path, smi_path = (logs / f"{run_dir.name}{ext}" for ext in (".out", ".err", ".smi.csv"))
    smi = None
    if a.device == "cuda" and not a.no_nvidia_smi and shutil.which("nvidia-smi"):
        with open(smi_path, "w") as f:
            smi = subprocess.Popen(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits",
                                    "--loop-ms=500"], stdout=f, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(a), stdout=out, stderr=err, start_new_session=True)
    while proc.poll() is None and not STOP and time.perf_counter() - t0 < a.run_timeout:
        time.sleep(0.2)
    rc = proc.poll()
    interrupted = rc is None and bool(STOP)
    if rc is None:
        kill_run(proc, run_dir)
    row["wall_s"], row["rc"] = round(time.perf_counter() - t0, 1), rc
    if smi is not None:
        smi.send_signal(signal.SIGINT)  # its Ctrl-C: ends the loop
        try:
            smi.wait(timeout=5)
        except subprocess.TimeoutExpired:
            smi.kill()
            smi.wait()
        peaks = row["peak_mem_mib_by_gpu"] = peak_rise_mib(smi_path)
        row["peak_mem_gib"] = max(peaks.values()) / 1024 if peaks else None
    rows = train_rows(run_dir)
    m = measure(rows, a.warmup, plan.tokens_per_step)
    err_tail = tail(err_path) or tail(out_path)
    if interrupted:
        row["status"], row["error"] = "interrupted", f"stopped by {STOP[0]} (figures: the steps it made)"
    elif rc is None:
        row["status"], row["error"] = "timeout", f"killed at --run-timeout {a.run_timeout:.0f} s\n{err_tail}"
    elif rc != 0:
        row["error"] = f"exit {rc}\n{err_tail}"
    elif m is None:
        row["error"] = f"no train rows after step {a.warmup} in {run_dir / 'metrics.jsonl'} ({len(rows)} rows)"
    else:
        row["status"] = "ok"
    if m is not None:  # a timed-out run may still have its rows: keep them, the status says what happened
        row |= m
        row["tokens_per_s_per_gpu"] = m["tokens_per_s"] / ngpus
        row["mfu_per_gpu"] = mfu(m["tokens_per_s"], s["flops_per_token"], env.get("gpu"), ngpus)
    print(f"    -> [{shape} {strategy} {ngpus} GPU(s)] {describe(row)}", flush=True)


def describe(row: dict) -> str:
    if row.get("tokens_per_s") is None:
        first = (row.get("error") or "").strip().splitlines()
        return f"{row['status']}: {first[0][:200]}" if first else row["status"]
    util = f", MFU {100 * row['mfu_per_gpu']:.1f}%" if row.get("mfu_per_gpu") is not None else ""
    mem = f", peak {row['peak_mem_gib']:.1f} GiB" if row.get("peak_mem_gib") is not None else ""
    return (f"{row['status']}: {row['tokens_per_s']:,.0f} tok/s ({row['tokens_per_s_per_gpu']:,.0f}/GPU), "
            f"step {row['step_ms']:.1f} ms over {row['measured_steps']} steps{util}{mem}, wall {row['wall_s']} s")


# -- derived figures and output -------------------------------------------------------------------

def derive(rows: list[dict], env: dict, a) -> None:
    base = {(r["shape"], r["strategy"]): r for r in rows if r["gpus"] == 1 and r.get("tokens_per_s_per_gpu")}
    anchor_setup = a.vocab == 50304 and a.seq_len == 1024 and a.micro_batch == 16 and a.device == "cuda"
    anchors = ANCHORS.get(gpu_kind(env.get("gpu")), {}) if anchor_setup else {}
    for r in rows:
        if not r.get("tokens_per_s_per_gpu"):
            continue
        b = base.get((r["shape"], r["strategy"]))
        r["scaling_efficiency"] = r["tokens_per_s_per_gpu"] / b["tokens_per_s_per_gpu"] if b else None
        anchor = anchors.get(r["shape"])
        r["x_anchor_per_gpu"] = r["tokens_per_s_per_gpu"] / anchor[0] if anchor else None


def markdown(result: dict) -> str:
    env, a = result["env"], result["args"]
    gpu = env.get("gpu") or "CPU"
    lines = [f"Weak scaling, `mupctl train` ({a['device']}): {gpu} × {env.get('gpu_count') or env.get('cpus')} · "
             f"torch {env.get('torch')} · CUDA {env.get('cuda')} · NCCL {env.get('nccl')} · {env['time']}", "",
             f"{a['steps']} steps per run, median over the steps after {a['warmup']}; micro batch {a['micro_batch']} "
             f"per GPU, global batch {a['micro_batch']} × GPUs, seq {a['seq_len']}, vocab {a['vocab']}, "
             f"{a['precision']}, compile {a['compile']}; mup (base {a['base_d_model']}, head {a['d_head']}), AdamW, "
             f"synthetic data.", "",
             "| shape | params | strategy | GPUs | tokens/s | tokens/s/GPU | scaling eff. | MFU/GPU | step ms "
             "(p10–p90) | peak GiB | state GiB/GPU | × anchor/GPU | 1st step s | wall s | status |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        params = f"{r['params'] / 1e6:,.1f}M" if r.get("params") else ""
        util = None if r.get("mfu_per_gpu") is None else 100 * r["mfu_per_gpu"]
        steps = (f"{r['step_ms']:.1f} ({r['step_ms_p10']:.1f}–{r['step_ms_p90']:.1f})"
                 if r.get("step_ms") is not None else "–")
        lines.append(
            f"| {r['shape']} | {params} | {r['strategy']} | {r['gpus']} | {fmt(r.get('tokens_per_s'), ',.0f')} | "
            f"{fmt(r.get('tokens_per_s_per_gpu'), ',.0f')} | {fmt(r.get('scaling_efficiency'), '.3f')} | "
            f"{fmt(util, '.1f')}{'%' if util is not None else ''} | {steps} | {fmt(r.get('peak_mem_gib'), '.1f')} | "
            f"{fmt(r.get('state_gib_per_gpu'), '.2f')} | {fmt(r.get('x_anchor_per_gpu'), '.3f')} | "
            f"{fmt(r.get('first_row_s'), '.1f')} | {fmt(r.get('wall_s'), '.0f')} | {r['status']} |")
    skipped = [f"{r['shape']} {r['strategy']} {r['gpus']}" for r in result["rows"] if r["status"] == "skipped"]
    if skipped:
        reasons = sorted({r.get("error", "") for r in result["rows"] if r["status"] == "skipped"})
        lines += ["", f"Skipped ({'; '.join(reasons)}): {', '.join(skipped)}."]
    for r in result["rows"]:
        if r["status"] not in ("ok", "skipped"):
            lines += ["", f"**{r['shape']} {r['strategy']} {r['gpus']} GPU(s): {r['status']}**", "", "```",
                      (r.get("error") or "").strip()[-3000:], "```"]
    lines += ["", "scaling eff. = tokens/s per GPU at n GPUs / at 1 GPU (same shape and strategy). peak GiB = "
              "the largest nvidia-smi memory.used rise on any GPU during the run (context + NCCL + allocator "
              "reserve). state GiB = the plan's fp32 weights + grads + AdamW state per GPU. × anchor = tokens/s "
              "per GPU / the 1-GPU nanoGPT-mup anchor of benchmarks/throughput.py. 1st step s = the first "
              "logged step, torch.compile included."]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, a) -> str:
    result["commands"] = [r["command"] for r in result["rows"] if r.get("command")]
    derive(result["rows"], result["env"], a)
    md = markdown(result)
    for path, text in ((a.json, json.dumps(result, indent=1, default=str) + "\n"), (a.markdown, md)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    return md


# -- main -----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="24x1024,24x2048", help="LAYERSxD_MODEL, comma-separated")
    p.add_argument("--strategies", default="ddp,fsdp")
    p.add_argument("--gpus", default="1,2", help="GPU (CPU: process) counts, e.g. 1,2,8")
    p.add_argument("--steps", type=int, default=60, help="training steps per run")
    p.add_argument("--warmup", type=int, default=20, help="steps left out of the median (compile, warm-up)")
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per GPU per step")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--d-head", type=int, default=64, help="n_heads = d_model / d_head; also scaling.base.d_head")
    p.add_argument("--base-d-model", type=int, default=256, help="scaling.base.d_model")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe file the --set overrides apply to "
                                                            "(relative to the repository root)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="launch.device")
    p.add_argument("--precision", default=None, help="train.precision (default bf16 on cuda, auto=fp32 on cpu)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="auto: on for cuda")
    p.add_argument("--log-interval", type=int, default=1, help="train.log_interval (1: one row per step)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run")
    p.add_argument("--tiny", action="store_true", help="tiny shapes, seq 64, vocab 256, few steps: a harness test")
    p.add_argument("--run-timeout", type=float, default=900, help="seconds per run before it is killed")
    p.add_argument("--time-budget", type=float, default=0, help="seconds; runs that would start after it are "
                                                                "skipped (0: no budget)")
    p.add_argument("--work-dir", default=None, help="where the run directories go (default runs/scaling-<time>)")
    p.add_argument("--no-nvidia-smi", action="store_true", help="do not log GPU memory with nvidia-smi")
    p.add_argument("--label", default="", help="free text stored in every row")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--markdown", default=None, metavar="PATH")
    given = argv if argv is not None else sys.argv[1:]
    if "--tiny" in given:  # new defaults; --shapes, --steps, --warmup, --base-d-model still apply
        p.set_defaults(shapes="2x64,2x128", steps=12, warmup=4, base_d_model=64)
    a = p.parse_args(argv)
    if a.tiny:
        a.vocab, a.seq_len = 256, 64
    if a.precision is None:
        a.precision = "bf16" if a.device == "cuda" else "auto"
    a.compile = {"on": "true", "off": "false"}.get(a.compile, "true" if a.device == "cuda" else "false")
    if a.warmup >= a.steps:
        p.error(f"--warmup ({a.warmup}) must be below --steps ({a.steps})")
    shapes, strategies, counts = parse_list(a.shapes), parse_list(a.strategies), parse_list(a.gpus, int)
    work = Path(a.work_dir or ROOT / "runs" / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    work.mkdir(parents=True, exist_ok=True)

    env = probe_environment(a.device)
    if a.device == "cuda" and env.get("gpu_count", 0) < max(counts):
        print(f"warning: {max(counts)} GPUs asked for, {env.get('gpu_count', 0)} visible; those runs will fail",
              file=sys.stderr)
    cmd = shlex.join([sys.executable, str(Path(__file__).resolve()), *given])
    print(f"{env.get('gpu') or 'CPU'} × {env.get('gpu_count')} · torch {env.get('torch')} · CUDA {env.get('cuda')}"
          f"\n{cmd}\nrun directories: {work}", flush=True)
    result = {"env": env, "command": cmd, "args": vars(a), "work_dir": str(work), "commands": [], "rows": []}

    STOP.clear()
    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    t_start = time.perf_counter()
    for shape in shapes:
        for strategy in strategies:
            for n in counts:
                row = {"shape": shape, "strategy": strategy, "gpus": n}
                result["rows"].append(row)
                if STOP or (a.time_budget and time.perf_counter() - t_start > a.time_budget):
                    row |= {"status": "skipped", "error": f"benchmark stopped by {STOP[0]}" if STOP
                            else "time budget spent"}
                    print(f"[{shape} {strategy} {n} GPU(s)] skipped: {row['error']}", flush=True)
                    continue
                run_one(row, a, env, work)
                write_outputs(result, a)
    for sig, handler in old.items():
        signal.signal(sig, handler)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    md = write_outputs(result, a)
    print()
    print(md)
    if STOP:
        return 143
    # a failed or timed-out run is an error; runs skipped by --time-budget are listed, not an error
    return 1 if any(r["status"] not in ("ok", "skipped") for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
