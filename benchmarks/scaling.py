"""Weak-scaling benchmark of the real training path: `mupctl train` → torchrun → worker, DDP vs FSDP2.

    python benchmarks/scaling.py                                  # 24x1024,24x2048 × ddp,fsdp × 1,2 GPUs
    python benchmarks/scaling.py --gpus 1,2,8 --json s.json --markdown s.md
    python benchmarks/scaling.py --device cpu --tiny              # CPU smoke test (gloo, processes as "GPUs")

Every run is a real `python -m mupctl train recipes/gpt2-124m-mup.yaml --run-dir DIR --set …` with the
throughput anchor's model (GPT-2 style: learned positions, LayerNorm, GELU, tied embeddings, vocab
50304, seq 1024, n_heads = d_model / 64; benchmarks/throughput.py), recipe mup (base width 256, head
64), AdamW, bf16, torch.compile, synthetic data, micro batch 16 per GPU and global batch 16 × GPUs
(weak scaling: one micro batch per rank per step, no accumulation), checkpoints, validation and μP
telemetry off, `train.log_interval` 1 so that metrics.jsonl has one train row per step.

Per run: median of the train rows' `tokens_per_s` over the steps after --warmup (the first steps
include torch.compile); tokens/s per GPU = that / GPUs; scaling efficiency = tokens/s per GPU at n
GPUs / tokens/s per GPU at 1 GPU (same shape and strategy); MFU per GPU = `mupctl.mfu.mfu` with the
plan's `summary.flops_per_token`; peak memory = the highest `nvidia-smi` memory.used of the run's
GPUs above its value before the run (the worker's metrics have no allocator peak, so this includes
the CUDA context, NCCL buffers and the caching allocator's reserve). "state GiB" is the plan's
estimate of fp32 weights + grads + optimizer state per GPU (FSDP divides it by the world size).

Each row's `tokens_per_s` comes from the worker, which syncs the host once per logged step (loss and
grad-norm .item()); the anchor's loop does not, so a 1-GPU figure here sits slightly below
throughput.py's. A run that fails or passes --run-timeout is recorded with the tail of its stderr;
the benchmark goes on. JSON (--json) and markdown (--markdown) are rewritten after every run.
--concurrent-singles K runs the 1-GPU runs K at a time, each alone on its own GPU
(CUDA_VISIBLE_DEVICES), before the multi-GPU runs: the same numbers in less wall time on a node.

Read DDP against FSDP with care: under bf16 the worker runs DDP with autocast (fp32 weights, fp32
residual stream, bf16 matmuls) but FSDP2 with MixedPrecisionPolicy(param_dtype=bf16) and no autocast
(every op, the residual stream included, in bf16), so the two do not do the same arithmetic.
Validation and checkpoints are off and every step is logged (the worker leaves eval and save time
out of `tokens_per_s` in any case).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mupctl.errors import UserError  # noqa: E402
from mupctl.mfu import mfu, peak_flops  # noqa: E402
from mupctl.plan import build_plan  # noqa: E402
from mupctl.recipe import load_recipe  # noqa: E402

DEFAULT_RECIPE = "recipes/gpt2-124m-mup.yaml"
# nanoGPT-mup anchor, 1 GPU (benchmarks/throughput.py): tokens/s, MFU %, peak GiB (micro batch 16 x 1024)
try:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from throughput import ANCHORS  # noqa: E402
except Exception:  # the table just loses its anchor column
    ANCHORS = {}


class Interrupted(Exception):
    """SIGTERM/SIGINT: stop the current run, record the rest as skipped, write the outputs."""


def parse_list(text: str, kind=str) -> list:
    return [kind(s.strip()) for s in text.split(",") if s.strip()]


def parse_shape(s: str) -> tuple[int, int]:
    layers, d_model = s.lower().split("x")
    return int(layers), int(d_model)


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


class MemoryPoller:
    """Highest `nvidia-smi` memory.used (MiB) per GPU index while a run is going (one streaming
    nvidia-smi process, `--loop-ms`), minus the value seen at start; {} when nvidia-smi is unavailable."""

    def __init__(self, interval_ms: int = 500):
        self.interval_ms = interval_ms
        self.base: dict[int, float] = {}
        self.peak: dict[int, float] = {}
        self.proc = None

    def _query(self) -> dict[int, float]:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
        return {int(i): float(m) for i, m in (line.split(",") for line in out.stdout.strip().splitlines())}

    def start(self) -> None:
        try:
            self.base = self._query()
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=index,memory.used",
                                          "--format=csv,noheader,nounits", f"--loop-ms={self.interval_ms}"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except Exception:
            self.proc = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                i, m = line.split(",")
                self.peak[int(i)] = max(self.peak.get(int(i), 0.0), float(m))
            except ValueError:
                continue

    def stop(self) -> dict[int, float]:
        """{gpu index: peak MiB above the start value}."""
        if self.proc is None:
            return {}
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return {i: max(0.0, m - self.base.get(i, 0.0)) for i, m in sorted(self.peak.items())}


def visible_gpus(count: int) -> list[tuple[str, int | None]]:
    """(CUDA_VISIBLE_DEVICES entry, nvidia-smi index or None) of CUDA devices 0..count-1: the parent's
    CUDA_VISIBLE_DEVICES entries when set (an index only where the entry is numeric), else 0..count-1."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in cvd.split(",") if x.strip()] if cvd else [str(i) for i in range(count)]
    return [(x, int(x) if x.isdigit() else None) for x in ids[:count]]


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
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


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
    for pid in worker_pids(run_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def worker_pids(run_dir: Path) -> list[int]:
    pids = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mupctl.worker" in cmd and str(run_dir).encode() in cmd:
            pids.append(int(p.name))
    return pids


def train_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "tokens_per_s" in r]


def measure(rows: list[dict], warmup: int, tokens_per_step: int) -> dict | None:
    """Median throughput over the train rows whose interval (previous logged step, step] starts at or
    after `warmup`; None when there is none."""
    kept, prev = [], 0
    for r in rows:
        if prev >= warmup and r["tokens_per_s"] and r["tokens_per_s"] > 0:
            kept.append((r["step"] - prev, r["tokens_per_s"]))
        prev = r["step"]
    if not kept:
        return None
    tps = [t for _, t in kept]
    step_s = sorted(tokens_per_step / t for t in tps)
    first = rows[0]
    return {"tokens_per_s": statistics.median(tps), "measured_steps": sum(n for n, _ in kept),
            "step_ms": 1e3 * statistics.median(step_s), "step_ms_p10": 1e3 * step_s[int(0.1 * (len(step_s) - 1))],
            "step_ms_p90": 1e3 * step_s[round(0.9 * (len(step_s) - 1))],
            "first_row_s": first["step"] * tokens_per_step / first["tokens_per_s"] if first["tokens_per_s"] else None,
            "final_loss": rows[-1]["loss"], "last_step": rows[-1]["step"]}


class Run:
    """One `mupctl train` run: prepare (overrides, plan, argv), start (optionally pinned to one GPU
    through CUDA_VISIBLE_DEVICES), then finish (metrics → row)."""

    def __init__(self, shape: str, strategy: str, ngpus: int, a, env: dict, work: Path):
        self.a, self.env, self.ngpus = a, env, ngpus
        layers, d = parse_shape(shape)
        self.row = {"shape": shape, "layers": layers, "d_model": d, "strategy": strategy, "gpus": ngpus,
                    "label": a.label, "status": "failed"}
        self.run_dir = work / f"{shape}-{strategy}-{ngpus}g"
        self.row["run_dir"] = str(self.run_dir)
        self.logs = work / "logs"
        self.proc = None
        self.ready = False
        try:
            self.overrides = run_overrides(shape, strategy, ngpus, a)
            plan = build_plan(load_recipe(Path(ROOT / a.recipe), self.overrides))  # fails fast on a bad --set
        except Exception as exc:
            self.row["error"] = f"{type(exc).__name__}: {exc}"
            return
        s = plan["summary"]
        self.flops_per_token = s["flops_per_token"]
        self.row |= {"params": s["params"], "flops_per_token": s["flops_per_token"],
                     "state_gib_per_gpu": s["memory_per_gpu_bytes"]["total"] / 2**30}
        self.argv = [sys.executable, "-m", "mupctl", "train", a.recipe, "--run-dir", str(self.run_dir)]
        self.argv += [arg for o in self.overrides for arg in ("--set", o)]
        self.row["command"] = f"cd {shlex.quote(str(ROOT))} && {shlex.join(self.argv)}"
        if (self.run_dir / "plan.json").exists():
            self.row["error"] = f"{self.run_dir} already holds a run (use another --work-dir)"
            return
        self.ready = True

    def start(self, gpu: str | None = None, concurrent_with: list[str] | None = None) -> None:
        """gpu: a CUDA_VISIBLE_DEVICES value for this run alone (concurrent 1-GPU runs)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = self.logs / f"{self.run_dir.name}.out", self.logs / f"{self.run_dir.name}.err"
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if self.a.device == "cpu":  # one thread per rank at every process count (torchrun sets it only for n > 1)
            env.setdefault("OMP_NUM_THREADS", "1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
            self.row["cuda_visible_devices"] = gpu
            self.row["command"] = self.row["command"].replace(" && ", f" && CUDA_VISIBLE_DEVICES={gpu} ", 1)
        if concurrent_with:
            self.row["concurrent_with"] = concurrent_with
        r = self.row
        print(f"[{r['shape']} {r['strategy']} {r['gpus']} GPU(s)] {r['command']}", flush=True)
        self.t0 = time.perf_counter()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)

    def overdue(self) -> bool:
        return time.perf_counter() - self.t0 > self.a.run_timeout

    def stop(self) -> None:
        kill_run(self.proc, self.run_dir)

    def finish(self, rc: int | None, peaks: dict[int, float], gpu_ids: list[int], interrupted: bool = False) -> dict:
        """rc None: killed at --run-timeout (or, interrupted, when the benchmark was stopped).
        peaks: nvidia-smi MiB by GPU index; gpu_ids: this run's."""
        a, row = self.a, self.row
        row["wall_s"] = round(time.perf_counter() - self.t0, 1)
        row["rc"] = rc
        if peaks:
            used = {i: peaks[i] for i in gpu_ids if i in peaks}
            row["peak_mem_mib_by_gpu"] = used
            row["peak_mem_gib"] = max(used.values()) / 1024 if used else None
        tokens_per_step = a.micro_batch * self.ngpus * a.seq_len
        rows = train_rows(self.run_dir)
        m = measure(rows, a.warmup, tokens_per_step)
        err = tail(self.err_path) or tail(self.out_path)
        if interrupted:
            row["status"] = "interrupted"
            row["error"] = "benchmark interrupted during this run (the figures, if any, cover the steps it made)"
        elif rc is None:
            row["status"] = "timeout"
            row["error"] = f"no exit after --run-timeout {a.run_timeout:.0f} s (killed)\n{err}"
        elif rc != 0:
            row["error"] = f"exit {rc}\n{err}"
        elif m is None:
            row["error"] = f"no train rows after step {a.warmup} in {self.run_dir / 'metrics.jsonl'} ({len(rows)} rows)"
        else:
            row["status"] = "ok"
        if m is not None:  # a timed-out run may still have its rows: keep them, the status says what happened
            row |= m
            row["tokens_per_s_per_gpu"] = m["tokens_per_s"] / self.ngpus
            row["mfu_per_gpu"] = mfu(m["tokens_per_s"], self.flops_per_token, self.env.get("gpu"), self.ngpus)
        print(f"    -> [{row['shape']} {row['strategy']} {row['gpus']} GPU(s)] {describe(row)}", flush=True)
        return row


def run_wave(runs: list[Run], a, pinned: bool) -> None:
    """Start the runs together (pinned: run k alone on visible GPU k), wait for each, with its own
    --run-timeout; GPU memory sampled over the wave. On an interruption every run is stopped."""
    for r in runs:
        if not r.ready:
            print(f"    -> [{r.row['shape']} {r.row['strategy']} {r.row['gpus']} GPU(s)] {describe(r.row)}", flush=True)
    runs = [r for r in runs if r.ready]
    if not runs:
        return
    poller = MemoryPoller() if a.device == "cuda" and not a.no_nvidia_smi else None
    if poller:
        poller.start()
    visible = visible_gpus(max(len(runs), max(r.ngpus for r in runs)))
    names = [r.run_dir.name for r in runs]
    gpu_ids, rcs = {}, {}
    try:
        for k, r in enumerate(runs):
            if pinned:
                gpu_ids[k] = [visible[k][1]]
                r.start(visible[k][0] if a.device == "cuda" else None,
                        [n for n in names if n != r.run_dir.name] or None)
            else:
                gpu_ids[k] = [i for _, i in visible[:r.ngpus]]
                r.start()
        while len(rcs) < len(runs):
            for k, r in enumerate(runs):
                if k in rcs:
                    continue
                if r.proc.poll() is not None:
                    rcs[k] = r.proc.returncode
                elif r.overdue():
                    r.stop()
                    rcs[k] = None
            time.sleep(0.2)
    except BaseException:  # Interrupted, KeyboardInterrupt: leave no run behind, keep what it measured
        peaks = poller.stop() if poller else {}
        for k, r in enumerate(runs):
            if r.proc is None:
                continue
            if k not in rcs:
                r.stop()
                r.finish(None, peaks, gpu_ids.get(k, []), interrupted=True)
            else:
                r.finish(rcs[k], peaks, gpu_ids.get(k, []))
        raise
    peaks = poller.stop() if poller else {}
    for k, r in enumerate(runs):
        r.finish(rcs[k], peaks, gpu_ids[k])


def describe(row: dict) -> str:
    if row.get("tokens_per_s") is None:
        first = (row.get("error") or "").strip().splitlines()
        return f"{row['status']}: {first[0][:200]}" if first else row["status"]
    util = f", MFU {100 * row['mfu_per_gpu']:.1f}%" if row.get("mfu_per_gpu") is not None else ""
    mem = f", peak {row['peak_mem_gib']:.1f} GiB" if row.get("peak_mem_gib") is not None else ""
    return (f"{row['status']}: {row['tokens_per_s']:,.0f} tok/s ({row['tokens_per_s_per_gpu']:,.0f}/GPU), "
            f"step {row['step_ms']:.1f} ms over {row['measured_steps']} steps{util}{mem}, wall {row['wall_s']} s")


# -- derived figures and output -------------------------------------------------------------------

def gpu_kind(name: str | None) -> str | None:
    for kind in ("H200", "H100"):
        if name and kind in name and "PCIe" not in name:
            return kind
    return None


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


def fmt(v, spec: str, none: str = "–") -> str:
    return none if v is None else format(v, spec)


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
            f"| {r['shape']} | {params} | {r['strategy']} | {r['gpus']}{'*' if r.get('concurrent_with') else ''} | "
            f"{fmt(r.get('tokens_per_s'), ',.0f')} | "
            f"{fmt(r.get('tokens_per_s_per_gpu'), ',.0f')} | {fmt(r.get('scaling_efficiency'), '.3f')} | "
            f"{fmt(util, '.1f')}{'%' if util is not None else ''} | {steps} | {fmt(r.get('peak_mem_gib'), '.1f')} | "
            f"{fmt(r.get('state_gib_per_gpu'), '.2f')} | {fmt(r.get('x_anchor_per_gpu'), '.3f')} | "
            f"{fmt(r.get('first_row_s'), '.1f')} | {fmt(r.get('wall_s'), '.0f')} | {r['status']} |")
    skipped = [f"{r['shape']} {r['strategy']} {r['gpus']}" for r in result["rows"] if r["status"] == "skipped"]
    if skipped:
        reasons = sorted({r.get("error", "") for r in result["rows"] if r["status"] == "skipped"})
        lines += ["", f"Skipped ({'; '.join(reasons)}): {', '.join(skipped)}."]
    bad = [r for r in result["rows"] if r["status"] not in ("ok", "skipped")]
    for r in bad:
        lines += ["", f"**{r['shape']} {r['strategy']} {r['gpus']} GPU(s): {r['status']}**", "", "```",
                  (r.get("error") or "").strip()[-3000:], "```"]
    lines += ["", "scaling eff. = tokens/s per GPU at n GPUs / at 1 GPU (same shape and strategy). peak GiB = "
              "nvidia-smi memory.used above its pre-run value (context + NCCL + allocator reserve). state GiB = "
              "the plan's fp32 weights + grads + AdamW state per GPU. × anchor = tokens/s per GPU / the 1-GPU "
              "nanoGPT-mup anchor of benchmarks/throughput.py. 1st step s = the first logged step, "
              "torch.compile included."]
    if any(r.get("concurrent_with") for r in result["rows"]):
        lines += ["", "\\* ran at the same time as the other 1-GPU runs of its wave (--concurrent-singles), each "
                  "alone on its own GPU (CUDA_VISIBLE_DEVICES in the JSON); on CPU they share the cores."]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, a) -> str:
    derive(result["rows"], result["env"], a)
    md = markdown(result)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(md)
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
    p.add_argument("--concurrent-singles", type=int, default=0, metavar="K",
                   help="run the 1-GPU runs K at a time, each alone on its own GPU (CUDA_VISIBLE_DEVICES), "
                        "before the multi-GPU runs; saves wall time on a multi-GPU node (0: off)")
    p.add_argument("--time-budget", type=float, default=0, help="seconds; runs that would start after it are "
                                                                "skipped (0: no budget)")
    p.add_argument("--work-dir", default=None, help="where the run directories go (default runs/scaling-<time>)")
    p.add_argument("--no-nvidia-smi", action="store_true", help="do not sample GPU memory with nvidia-smi")
    p.add_argument("--label", default="", help="free text stored in every row")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--markdown", default=None, metavar="PATH")
    a = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if a.tiny:
        if "--shapes" not in given:
            a.shapes = "2x64,2x128"
        a.vocab, a.seq_len = 256, 64
        if "--steps" not in given:
            a.steps = 12
        if "--warmup" not in given:
            a.warmup = 4
        if "--base-d-model" not in given:
            a.base_d_model = 64
    if a.precision is None:
        a.precision = "bf16" if a.device == "cuda" else "auto"
    a.compile = {"on": "true", "off": "false"}.get(a.compile, "true" if a.device == "cuda" else "false")
    if a.warmup >= a.steps:
        p.error(f"--warmup ({a.warmup}) must be below --steps ({a.steps})")
    shapes, strategies, counts = parse_list(a.shapes), parse_list(a.strategies), parse_list(a.gpus, int)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(a.work_dir or ROOT / "runs" / f"scaling-{stamp}").resolve()
    work.mkdir(parents=True, exist_ok=True)

    env = probe_environment(a.device)
    if a.device == "cuda" and env.get("gpu_count", 0) < max(counts):
        print(f"warning: {max(counts)} GPUs asked for, {env.get('gpu_count', 0)} visible; those runs will fail",
              file=sys.stderr)
    cmd = shlex.join([sys.executable, str(Path(__file__).resolve()), *given])
    print(f"{env.get('gpu') or 'CPU'} × {env.get('gpu_count')} · torch {env.get('torch')} · CUDA {env.get('cuda')}"
          f"\n{cmd}\nrun directories: {work}", flush=True)
    result = {"env": env, "command": cmd, "args": vars(a), "work_dir": str(work), "commands": [], "rows": []}

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    t_start = time.perf_counter()
    order = [(shape, strategy, n) for shape in shapes for strategy in strategies for n in counts]
    # waves: the 1-GPU runs k at a time, each pinned to its own GPU (--concurrent-singles k), then the rest
    # one at a time; without --concurrent-singles every run is its own wave, in the order above
    k = min(a.concurrent_singles, env.get("gpu_count") or 0) if a.device == "cuda" else a.concurrent_singles
    singles = [x for x in order if x[2] == 1] if k > 1 else []
    waves = [singles[i:i + k] for i in range(0, len(singles), max(k, 1))] + [[x] for x in order if x not in singles]
    code, runs = 0, {}
    try:
        for wave in waves:
            if a.time_budget and time.perf_counter() - t_start > a.time_budget:
                for shape, strategy, n in wave:
                    print(f"[{shape} {strategy} {n} GPU(s)] skipped: time budget {a.time_budget:.0f} s spent",
                          flush=True)
                    runs[(shape, strategy, n)] = {"shape": shape, "strategy": strategy, "gpus": n,
                                                  "status": "skipped", "error": "time budget spent"}
                continue
            batch = [Run(shape, strategy, n, a, env, work) for shape, strategy, n in wave]
            for key, r in zip(wave, batch):
                runs[key] = r.row
            run_wave(batch, a, pinned=len(wave) > 1 or (k > 1 and wave[0][2] == 1))
            result["rows"] = [runs[x] for x in order if x in runs]
            result["commands"] = [r["command"] for r in result["rows"] if r.get("command")]
            write_outputs(result, a)
    except Interrupted as why:
        code = 143
        print(f"interrupted ({why}): recording the remaining runs as skipped", flush=True)
        for x in order:
            if x not in runs:
                runs[x] = {"shape": x[0], "strategy": x[1], "gpus": x[2], "status": "skipped",
                           "error": f"benchmark interrupted ({why})"}
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    result["rows"] = [runs[x] for x in order if x in runs]
    result["commands"] = [r["command"] for r in result["rows"] if r.get("command")]
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    md = write_outputs(result, a)
    print()
    print(md)
    if code == 0 and any(r["status"] not in ("ok", "skipped") for r in result["rows"]):
        code = 1  # a failed or timed-out run; runs skipped by --time-budget are listed, not an error
    return code


if __name__ == "__main__":
    sys.exit(main())
