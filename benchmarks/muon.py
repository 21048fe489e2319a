"""Muon's cost on one GPU through the real training path, and batched vs per-matrix Newton–Schulz.

    python benchmarks/muon.py --json muon.json --markdown muon.md     # 12x768 (124M), 24x1024 (355M) × batch 16, 256
    python benchmarks/muon.py --shapes 12x768 --batches 16 --variants adamw,muon
    python benchmarks/muon.py --dry-run                                # CPU: tiny shapes, gloo; a harness test

1. Step time. Every row is a real `mupctl train` run (benchmarks/scaling.py's `run_one`: the GPT-2 shape of
   recipes/gpt2-124m-*.yaml, mup with base width 256, bf16, torch.compile, synthetic data, micro batch 16,
   one row per step, checkpoints/validation/telemetry off) at global batch 16 and 256 sequences of 1024
   tokens (256: 16 accumulation steps), for each variant:
       adamw             fused AdamW on every tensor
       muon              Muon (batched Newton–Schulz) on the hidden matrices + AdamW on the rest
       muon-per-matrix   the same with `optimizer.muon.batched_ns: false` (one NS chain per matrix)
   tokens/s = the median of the worker's per-step figure after --warmup steps; step ms = global batch ×
   seq / tokens/s; "Muon overhead" = step ms / the same-run AdamW row's step ms − 1 (same shape and batch).
2. Newton–Schulz alone (in this process, after every run): the model's Muon matrices in the rounds the optimizer runs
   (`mupctl.optim.layout`, world 1), fp32 inputs like a momentum buffer; per-matrix chain vs one batched
   chain per round, median of --ns-reps (CUDA events), the NS FLOPs (`layout.ns_flops`) and the max
   |batched − per-matrix| over the largest entry (the test's tolerance is 2⁻⁷).

benchmarks/muon_scaling.py reuses these pieces on several GPUs. Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402

from mupctl.optim import layout  # noqa: E402
from mupctl.optim.newton_schulz import orthogonalize  # noqa: E402
from mupctl.paths import atomic_write  # noqa: E402
from mupctl.plan import compile_plan  # noqa: E402
from mupctl.recipe import load_recipe  # noqa: E402
from scaling import DEFAULT_RECIPE, probe_environment, run_one, run_overrides  # noqa: E402
from throughput import bench, fmt  # noqa: E402

VARIANTS = {
    "adamw": ["optimizer.name=adamw"],
    "muon": ["optimizer.name=muon"],
    "muon-per-matrix": ["optimizer.name=muon", "optimizer.muon.batched_ns=false"],
    "muon-replicated": ["optimizer.name=muon", "optimizer.muon.distributed=replicated"],
    "muon-layerwise": ["optimizer.name=muon", "optimizer.muon.distributed=layerwise"],
}
"""Benchmark variant → the recipe overrides that make it (on top of scaling.run_overrides)."""


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The arguments `scaling.run_one` reads, with this benchmark's defaults."""
    p.add_argument("--steps", type=int, default=30, help="training steps per run")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the median (compile, warm-up)")
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per GPU per forward")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--d-head", type=int, default=64)
    p.add_argument("--base-d-model", type=int, default=256)
    p.add_argument("--recipe", default=DEFAULT_RECIPE)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--precision", default=None, help="train.precision (default bf16 on cuda, auto on cpu)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run")
    p.add_argument("--run-timeout", type=float, default=900)
    p.add_argument("--time-budget", type=float, default=0, help="seconds; later runs are skipped (0: none)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: a test of the harness")
    p.add_argument("--label", default="")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--markdown", default=None, metavar="PATH")


def finish_args(a, dry: dict) -> None:
    """--dry-run's settings, then the derived ones (as scaling.py's main)."""
    if a.dry_run:
        for k, v in dry.items():
            setattr(a, k, v)
    a.log_interval, a.no_nvidia_smi = 1, a.device == "cpu"
    if a.precision is None:
        a.precision = "bf16" if a.device == "cuda" else "auto"
    a.compile = {"on": "true", "off": "false"}.get(a.compile, "true" if a.device == "cuda" else "false")
    if a.warmup >= a.steps:
        raise SystemExit(f"--warmup ({a.warmup}) must be below --steps ({a.steps})")


def train_row(row: dict, a, env: dict, work: Path) -> dict:
    """One `mupctl train` run of row's shape, strategy, gpus, global_batch and variant; fills `row`."""
    b = copy.copy(a)
    b.set = list(a.set) + [f"train.global_batch={row['global_batch']}"] + VARIANTS[row["variant"]]
    run_one(row, b, env, work / f"{row['variant']}-b{row['global_batch']}")
    return row


def derive(rows: list[dict]) -> None:
    """Muon overhead vs the same-run AdamW row; per-matrix vs batched NS; layer-wise vs replicated."""
    key = lambda r, v: (r["shape"], r["strategy"], r["gpus"], r["global_batch"], v)  # noqa: E731
    ok = {key(r, r["variant"]): r for r in rows if r.get("tokens_per_s")}
    for r in ok.values():
        adamw = ok.get(key(r, "adamw"))
        if adamw and r["variant"] != "adamw":
            r["overhead_pct"] = 100 * (r["step_ms"] / adamw["step_ms"] - 1)
        batched = ok.get(key(r, "muon"))
        if batched and r["variant"] == "muon-per-matrix":
            r["vs_batched"] = r["step_ms"] / batched["step_ms"]
        replicated = ok.get(key(r, "muon-replicated"))
        if replicated and r["variant"] == "muon-layerwise":
            r["vs_replicated"] = r["step_ms"] / replicated["step_ms"]


def muon_shapes(shape: str, a) -> list[tuple[int, int]]:
    """The Muon matrices' shapes of the model one run of `shape` trains."""
    plan = compile_plan(load_recipe(ROOT / a.recipe, run_overrides(shape, "ddp", 1, a) + ["optimizer.name=muon"]))
    return [tuple(t.shape) for t in plan.tensors if t.optimizer == "muon"]


def ns_rows(shape: str, a, steps: int = 5) -> list[dict]:
    """Batched vs per-matrix Newton–Schulz over one model's Muon matrices, per round and in total."""
    device = torch.device(a.device)
    shapes = muon_shapes(shape, a)
    gen = torch.Generator(device="cpu").manual_seed(0)
    inputs = [torch.randn(s, generator=gen).to(device) for s in shapes]
    out, total = [], {"per_matrix_ms": 0.0, "batched_ms": 0.0, "gflop": 0.0}
    for rnd in layout.rounds(shapes, [0] * len(shapes), 1, steps):
        idx = rnd.ranks[0]
        stack = lambda: torch.stack([inputs[i].to(torch.bfloat16) for i in idx])  # noqa: E731 (as Muon._ns)
        single = lambda: [orthogonalize(inputs[i], steps) for i in idx]  # noqa: E731
        batched = lambda: orthogonalize(stack(), steps)  # noqa: E731
        per_ms, bat_ms = (1e3 * bench(fn, warmup=1, iters=a.ns_reps, device=device) for fn in (single, batched))
        ref = torch.stack(single()).float()
        diff = (batched().float() - ref).abs().max().item() / ref.abs().max().item()
        gflop = len(idx) * layout.ns_flops(rnd.shape, steps) / 1e9
        out.append({"shape": shape, "matrix": "x".join(map(str, rnd.shape)), "count": len(idx),
                    "per_matrix_ms": per_ms, "batched_ms": bat_ms, "speedup": per_ms / bat_ms, "gflop": gflop,
                    "batched_tflops": gflop / bat_ms, "max_rel_diff": diff})
        for k in ("per_matrix_ms", "batched_ms", "gflop"):
            total[k] += out[-1][k]
    out.append({"shape": shape, "matrix": "all", "count": len(shapes), **total,
                "speedup": total["per_matrix_ms"] / total["batched_ms"], "batched_tflops": total["gflop"] / total["batched_ms"],
                "max_rel_diff": max(r["max_rel_diff"] for r in out)})
    return out


def markdown(result: dict) -> str:
    env, a = result["env"], result["args"]
    lines = [f"Muon on one GPU, `mupctl train`: {env.get('gpu') or 'CPU'} · torch {env.get('torch')} · "
             f"CUDA {env.get('cuda')} · {env['time']}", "", f"Command: `{result['command']}`", "",
             f"{a['steps']} steps per run, median tokens/s after step {a['warmup']}; micro batch {a['micro_batch']}, "
             f"seq {a['seq_len']}, {a['precision']}, compile {a['compile']}, mup (base {a['base_d_model']}).", "",
             "| shape | global batch | variant | tokens/s | step ms | Muon overhead vs AdamW | per-matrix / batched | status |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        over = r.get("overhead_pct")
        lines.append(f"| {r['shape']} | {r['global_batch']} | {r['variant']} | {fmt(r.get('tokens_per_s'), ',.0f')} | "
                     f"{fmt(r.get('step_ms'), '.1f')} | {fmt(over, '+.1f')}{'%' if over is not None else ''} | "
                     f"{fmt(r.get('vs_batched'), '.3f')} | {r.get('status')} |")
    if result["ns"]:
        lines += ["", "Newton–Schulz alone (5 steps, this process): per-matrix chain vs one batched chain per round.", "",
                  "| shape | matrices | count | per-matrix ms | batched ms | speed-up | GFLOP | batched TFLOP/s | "
                  "max abs diff / max entry |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in result["ns"]:
            lines.append(f"| {r['shape']} | {r['matrix']} | {r['count']} | {r['per_matrix_ms']:.3f} | {r['batched_ms']:.3f} | "
                         f"{r['speedup']:.2f} | {r['gflop']:.1f} | {r['batched_tflops']:.1f} | {r['max_rel_diff']:.2e} |")
    for r in result["rows"]:
        if r.get("status") not in ("ok", "skipped"):
            lines += ["", f"**{r['shape']} b{r['global_batch']} {r['variant']}: {r.get('status')}**", "", "```",
                      (r.get("error") or "").strip()[-2000:], "```"]
    return "\n".join(lines) + "\n"


def save(result: dict, a, render=markdown) -> str:
    """Derived figures, then --json and --markdown rewritten (atomically); the markdown text."""
    derive(result["rows"])
    md = render(result)
    if a.json:
        atomic_write(Path(a.json), json.dumps(result, indent=1, default=str) + "\n")
    if a.markdown:
        atomic_write(Path(a.markdown), md)
    return md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="12x768,24x1024", help="LAYERSxD_MODEL, comma-separated")
    p.add_argument("--batches", default="16,256", help="global batches (sequences), comma-separated")
    p.add_argument("--variants", default="adamw,muon,muon-per-matrix", help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--ns-reps", type=int, default=20, help="Newton–Schulz timing repetitions (0: skip part 2)")
    add_run_args(p)
    a = p.parse_args(argv)
    finish_args(a, {"device": "cpu", "shapes": "2x64,2x128", "batches": "4,16", "vocab": 256, "seq_len": 64,
                    "micro_batch": 4, "steps": 8, "warmup": 3, "base_d_model": 64, "ns_reps": 2})
    shapes, batches = [s for s in a.shapes.split(",") if s], [int(b) for b in a.batches.split(",") if b]
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    work = Path(a.work_dir or ROOT / "runs" / f"muon-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    env = probe_environment(a.device)
    cmd = shlex.join([sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])])
    print(f"{env.get('gpu') or 'CPU'} · torch {env.get('torch')}\n{cmd}\nrun directories: {work}", flush=True)
    result = {"env": env, "command": cmd, "args": vars(a), "rows": [], "ns": []}
    t0 = time.perf_counter()
    for shape in shapes:
        for batch in batches:
            for variant in variants:
                row = {"shape": shape, "strategy": "ddp", "gpus": 1, "global_batch": batch, "variant": variant}
                result["rows"].append(row)
                if a.time_budget and time.perf_counter() - t0 > a.time_budget:
                    row |= {"status": "skipped", "error": "time budget spent"}
                    continue
                train_row(row, a, env, work)
                save(result, a)
    for shape in shapes if a.ns_reps else []:  # last: this process then holds a CUDA context
        result["ns"] += ns_rows(shape, a)
        print(f"  NS {shape}: batched {result['ns'][-1]['batched_ms']:.2f} ms, per-matrix "
              f"{result['ns'][-1]['per_matrix_ms']:.2f} ms", flush=True)
        save(result, a)
    md = save(result, a)
    print()
    print(md)
    return 1 if any(r.get("status") not in ("ok", "skipped") for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
