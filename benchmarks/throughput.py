"""Training-step throughput of `mupctl.model.GPT` against the nanoGPT-mup anchor (../shared/ANCHORS.md).

    python benchmarks/throughput.py                              # 3 shapes x 3 recipes x 2 optimizers, CUDA
    python benchmarks/throughput.py --shapes 12x768 --recipes none --optimizers adamw --telemetry
    python benchmarks/throughput.py --precisions bf16,fp8 --shapes 24x2048 --recipes mup --loss-curve 200
    python benchmarks/throughput.py --micro attention --micro-only   # SDPA backends, the model's layout
    python benchmarks/throughput.py --shapes 24x2048 --recipes none --optimizers adamw --precisions bf16,fp8 --kernels 3
                                                                 # + GPU time per kernel group (GEMM, FP8 GEMM, ...)
    python benchmarks/throughput.py --anchor-file nanoGPT-mup/model.py   # + the anchor measured in this run
    python benchmarks/throughput.py --merge a.json b.json --markdown all.md   # one table from several runs
    python benchmarks/throughput.py --device cpu --tiny          # CPU smoke test of the harness

docs/performance.md has the results and what they mean.

Setup = the anchor's: GPT-2 style model (learned positions, LayerNorm, GELU MLP 4x, tied embeddings,
vocab 50304, no biases, n_heads = d_model/64, seq 1024), plans from `load_recipe` + `build_plan`
(recipes none, mup with base width 256, depth_mup with base 256 wide x 4 layers), the model and
optimizer exactly as the worker builds them (`GPT(plan, device)`, `build_optimizer` = fused AdamW
on CUDA, or Muon for hidden matrices + AdamW), `model.compile()`, bf16 autocast, micro batch 16 of
synthetic tokens. One timed step = the worker's own step (`mupctl.train_step.TrainStep`: forward +
backward + grad clip, 1.0 as the worker + optimizer step + zero_grad), with no host sync inside the
timed loop: each step is bracketed by CUDA events
and the host synchronizes once at the end; the figure is the median step time over --steps steps
after --warmup steps. tokens/s = micro_batch x seq_len / median step time; MFU = tokens/s x
(6N + 12 L d T) / (989e12 on H100/H200) with N = all parameters (`mupctl.mfu`); peak memory =
torch.cuda.max_memory_allocated over one optimizer's steps (weights included).

--anchor-file PATH (the peer's model.py: nanoGPT-mup's GPT and GPTConfig) also times the anchor model
itself, once per shape and in the same process: GPT(GPTConfig(block_size=seq_len, vocab_size, n_layer,
n_head=d/64, n_embd=d, dropout 0, bias=--anchor-bias, default 0 = bias-free as our rows)), compiled
as ours, its own configure_optimizers (AdamW, fused on CUDA; decay 0.1 on dim>=2 tensors, else 0;
lr 6e-4, betas 0.9/0.95), the same autocast, clip, batches and timing (row recipe "anchor"; N = its
parameters, the tied weight once). Each of our rows (bf16 or fp8) of that shape then gets "vs anchor (same
run)" = its tokens/s / the anchor's; "× anchor (published)" stays the ratio to ANCHORS (another run).

For each (shape, precision, recipe) the model is built and compiled once; the optimizers reuse it
(re-initialized), so a Muon row differs from its AdamW row by the optimizer alone. --telemetry adds
rows for the first recipe: the step with `model.record = {}` (what the μP health telemetry adds to
the compiled model), and the worker's whole telemetry step (`mupctl.telemetry.Telemetry`, which syncs).
--micro adds component timings (attention backends; the LM head + cross-entropy variants);
--sdpa restricts attention to one backend (A/B runs; it turns the compile caches off, which are
keyed on the traced graph and would hand a graph compiled with another backend back). --precisions
fp8 converts the hidden matmuls with `mupctl.fp8.apply_fp8` (torchao); --loss-curve N trains N steps
on the embedded corpus for the --curve-recipes and compares fp8 curves with the bf16 one.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mupctl.architecture import flops_per_token  # noqa: E402
from mupctl.errors import UserError  # noqa: E402
from mupctl.mfu import mfu, peak_flops  # noqa: E402
from mupctl.optim import build_optimizer  # noqa: E402
from mupctl.paths import atomic_write  # noqa: E402
from mupctl.plan import compile_plan  # noqa: E402
from mupctl.recipe import load_recipe  # noqa: E402
from mupctl.train_step import TrainStep  # noqa: E402

# nanoGPT-mup anchor (../shared/ANCHORS.md): tokens/s, MFU %, peak GiB; micro batch 16 x 1024, vocab 50304.
ANCHORS = {
    "H100": {"12x768": (457_779, 39.8, 11.5), "24x1024": (180_635, 44.4, 23.0), "24x2048": (61_824, 53.0, 49.2)},
    "H200": {"12x768": (501_460, 43.6, 11.5), "24x1024": (193_836, 47.6, 23.0), "24x2048": (65_255, 56.0, 49.2)},
}
BASES = {"none": None, "mup": {"d_model": 256, "d_head": 64},
         "depth_mup": {"d_model": 256, "n_layers": 4, "d_head": 64}}
SDPA_NAMES = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}  # SDPBackend values
TELEMETRY_INTERVAL = 50  # the worker's default train.telemetry_interval


# -- setup ----------------------------------------------------------------------------------------

def parse_shape(s: str) -> tuple[int, int]:
    layers, d_model = s.lower().split("x")
    return int(layers), int(d_model)


def make_plan(shape: str, recipe: str, optimizer: str, a):
    layers, d = parse_shape(shape)
    raw = {"name": f"bench-{shape}-{recipe}-{optimizer}",
           "model": {"d_model": d, "n_layers": layers, "n_heads": max(1, d // 64), "vocab_size": a.vocab,
                     "seq_len": a.seq_len, "tie_embeddings": True, "position": "learned", "norm": "layernorm",
                     "activation": "gelu", "bias": False},
           "scaling": {"recipe": recipe} | ({"base": BASES[recipe]} if BASES[recipe] else {}),
           "optimizer": {"name": optimizer},
           "train": {"micro_batch": a.micro_batch, "global_batch": a.micro_batch, "precision": "bf16"},
           "data": {"source": "synthetic"}}
    return compile_plan(load_recipe(raw=raw))


def load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_gpt_class(model_file: str | None):
    """`mupctl.model.GPT`, or the GPT of another model.py (before/after comparisons)."""
    if not model_file:
        from mupctl.model import GPT
        return GPT
    return load_module(model_file, "bench_model").GPT


def gpu_kind(name: str | None) -> str | None:
    for kind in ("H200", "H100"):
        if name and kind in name and "PCIe" not in name:
            return kind
    return None


def sdpa_context(choice: str):
    if choice == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                        "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[choice])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# -- timing ---------------------------------------------------------------------------------------

class Stepper:
    """The worker's `TrainStep` on one micro batch, called as step(x, y[, step]) → loss: with --sdpa's
    backend and, unless --no-autocast, bf16 autocast around forward and backward."""

    def __init__(self, model, optimizer, device, a, lr_factor=None, forward=None):
        def context():
            stack = contextlib.ExitStack()
            stack.enter_context(sdpa_context(a.sdpa))
            if a.autocast:
                stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
            return stack

        self.step = TrainStep(model, optimizer, grad_clip=a.clip, lr_factor=lr_factor, context=context,
                              forward=forward)

    def __call__(self, x, y, step: int = 0) -> torch.Tensor:
        return self.step(step, [(x, y)])[0]


def timed_loop(step_fn, batches, warmup: int, steps: int, device, before_step=None) -> dict:
    """Median step time with no host sync inside the timed loop (CUDA events; CPU: perf_counter)."""
    n = len(batches)
    t0 = time.perf_counter()
    for i in range(warmup):
        if before_step:
            before_step()
        step_fn(*batches[i % n])
        if i == 0:
            sync(device)
            first_step_s = time.perf_counter() - t0
    sync(device)
    cuda = device.type == "cuda"
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(steps)] if cuda else []
    host, losses = [], []
    wall0 = time.perf_counter()
    for i in range(steps):
        if before_step:
            before_step()
        if cuda:
            events[i][0].record()
        else:
            h0 = time.perf_counter()
        losses.append(step_fn(*batches[i % n]))
        if cuda:
            events[i][1].record()
        else:
            host.append(time.perf_counter() - h0)
    sync(device)
    wall = time.perf_counter() - wall0
    times = [s.elapsed_time(e) / 1e3 for s, e in events] if cuda else host
    last = torch.stack(losses).float()
    return {"step_s": statistics.median(times), "p10_s": percentile(times, 10), "p90_s": percentile(times, 90),
            "wall_step_s": wall / steps, "first_step_s": first_step_s if warmup else None,
            "loss": last[-1].item(), "finite": bool(torch.isfinite(last).all())}


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def synthetic_batches(plan, a, device, count=4, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    v, t = plan.model.vocab_size, plan.model.seq_len
    out = []
    for _ in range(count):
        tok = torch.randint(0, v, (a.micro_batch, t + 1), generator=g).to(device)
        out.append((tok[:, :-1].contiguous(), tok[:, 1:].contiguous()))  # as the worker's batches
    return out


def embedded_batches(plan, a, device, steps):
    from mupctl.data import open_data
    data = open_data(SimpleNamespace(source="embedded", path=None, val_fraction=0.05),
                     plan.model.vocab_size, plan.model.seq_len, 0)
    xs, ys = zip(*(data.batch("train", s, range(a.micro_batch)) for s in range(steps)))
    x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
    return [(x[s], y[s]) for s in range(steps)]


# -- one (shape, precision, recipe) group ----------------------------------------------------------

def run_group(shape, precision, recipe, a, device, GPT, rows, curves):
    plans, notes = {}, {}
    for opt in a.optimizers:
        try:
            plans[opt] = make_plan(shape, recipe, opt, a)
        except UserError as err:
            notes[opt] = f"rejected at plan time: {err}"
    for opt, why in notes.items():
        rows.append(base_row(shape, recipe, opt, precision, None, a) | {"skipped": why})
    if not plans:
        return
    first = plans[next(iter(plans))]
    free_memory(device)
    torch.manual_seed(a.seed)
    model = GPT(first, device=device)
    if precision == "fp8":
        from mupctl.fp8 import apply_fp8
        assert apply_fp8(model, a.fp8_recipe, emulate=device.type != "cuda") > 0, "no Linear converted to fp8"
    maybe_compile(model, a)
    batches = synthetic_batches(first, a, device)
    plain = {}
    for opt, plan in plans.items():
        assert plan.multipliers == first.multipliers, "optimizers that change the model need their own model"
        model.tensor_plan = plan.tensors
        torch.manual_seed(a.seed)
        model.init_weights()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        optimizer = build_optimizer(model, plan)
        stepper = Stepper(model, optimizer, device, a)
        r = plain[opt] = timed_row(stepper, batches, base_row(shape, recipe, opt, precision, plan, a), plan,
                                   device, a, rows, with_ops=opt == next(iter(plans)))
        if a.telemetry and opt == next(iter(plans)) and recipe == a.recipes[0] and a.telemetry in ("all", shape):
            rows.extend(telemetry_rows(model, optimizer, stepper, batches, shape, recipe, opt, precision, plan,
                                       r, a, device))
        del optimizer, stepper
        free_memory(device)
    if a.loss_curve and "adamw" in plans and recipe in a.curve_recipes:
        plan = plans["adamw"]
        model.tensor_plan = plan.tensors
        torch.manual_seed(a.seed)
        model.init_weights()
        optimizer = build_optimizer(model, plan)
        warm = max(1, a.loss_curve // 10)
        stepper = Stepper(model, optimizer, device, a, lr_factor=lambda s: min(1.0, (s + 1) / warm))
        data = embedded_batches(plan, a, device, a.loss_curve)
        losses, times = curve_loop(stepper, data, device)
        curves.append({"shape": shape, "recipe": recipe, "precision": precision, "optimizer": "adamw",
                       "losses": [round(x, 5) for x in losses],
                       "step_s": statistics.median(times[min(10, len(times) - 1):])})
        print(f"  loss curve {shape} {recipe} {precision}: first {losses[0]:.3f} last10 "
              f"{statistics.mean(losses[-10:]):.4f} step {curves[-1]['step_s'] * 1e3:.1f} ms", flush=True)
        del optimizer, stepper, data
    del model
    release(device, a)


def run_anchor(shape, a, device, Anchor, rows):
    """The peer's model (--anchor-file) timed as our rows: same compile, autocast, clip, batches, timing."""
    layers, d = parse_shape(shape)
    free_memory(device)
    torch.manual_seed(a.seed)
    model = Anchor.GPT(Anchor.GPTConfig(block_size=a.seq_len, vocab_size=a.vocab, n_layer=layers,
                                        n_head=max(1, d // 64), n_embd=d, dropout=0.0,
                                        bias=bool(a.anchor_bias))).to(device)
    n = sum(p.numel() for p in model.parameters())  # all parameters, the tied wte/lm_head weight once
    dims = SimpleNamespace(d_model=d, n_layers=layers, seq_len=a.seq_len, vocab_size=a.vocab)
    plan = SimpleNamespace(model=dims, summary={"params": n, "flops_per_token": flops_per_token(dims, n)})
    maybe_compile(model, a)
    batches = synthetic_batches(plan, a, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 1e-8, device.type)  # nanoGPT's train.py
    stepper = Stepper(model, optimizer, device, a, forward=lambda x, y: model(x, y)[1])  # it returns (logits, loss)
    base = base_row(shape, "anchor", "adamw", "bf16", plan, a) | {"model_file": a.anchor_file,
                                                                  "anchor_bias": bool(a.anchor_bias)}
    timed_row(stepper, batches, base, plan, device, a, rows, with_ops=True)
    del model, optimizer, stepper
    release(device, a)


def timed_row(stepper, batches, base: dict, plan, device, a, rows, with_ops: bool) -> dict:
    """Time `stepper` (--warmup, then --steps), append base + the measured figures to rows (with the
    attention ops one step calls when with_ops), print it; return timed_loop's result."""
    r = timed_loop(stepper, batches, a.warmup, a.steps, device)
    rows.append(base | measured(r, plan, device, a))
    if with_ops:
        rows[-1] |= profile_steps(stepper, batches, device, a.kernels)
    report(rows[-1])
    return r


def maybe_compile(model, a) -> None:
    """model.compile() with --compile-mode, when compiling is on (both our model and the anchor)."""
    if a.compile:
        model.compile(**({"mode": a.compile_mode} if a.compile_mode else {}))


def release(device, a) -> None:
    """After a group: drop compiled graphs (a new model compiles afresh) and free GPU memory."""
    if a.compile:
        torch._dynamo.reset()
    free_memory(device)


# Kernel groups of --kernels: a regex searched in the lower-cased CUDA kernel name, in this order (first
# hit wins). cuBLAS's nvjet kernels name their operand types after the arch: "nvjet_sm90_tst_…_h_…" is
# bf16/fp16, "nvjet_sm90_qqtst…"/"…_qrtst…" has FP8 operands. triton: Inductor's fused kernels (norms,
# GELU, residual adds, the loss, and under fp8 torchao's amax/scale/cast, fused into them).
KERNEL_GROUPS = (
    ("attention", r"sdpa|fmha|flash|attention|attn"),
    ("gemm_fp8", r"nvjet_sm\d+_q|e4m3|e5m2|f8f8"),
    ("gemm", r"gemm|nvjet|cutlass|xmma|cublas"),
    ("optimizer_clip", r"adam|multi_tensor|foreach"),
    ("comm_copy", r"nccl|memcpy|memset"),
    ("triton", r"triton"),
)


def kernel_group(name: str) -> str:
    low = name.lower()
    return next((group for group, pattern in KERNEL_GROUPS if re.search(pattern, low)), "other")


def profile_steps(step_fn, batches, device, kernel_steps: int) -> dict:
    """Profile warm steps. Always: the aten attention ops a (compiled) step calls, i.e. the SDPA backend
    really used. With kernel_steps > 0 and CUDA: GPU kernel time per step by KERNEL_GROUPS
    (kernel_ms, summed kernel durations, so overlap would count twice; one stream here) and the 12
    costliest kernels (top_kernels: name, ms per step, launches per step) over kernel_steps steps."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda" and kernel_steps > 0
    n = kernel_steps if cuda else 1
    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
        for i in range(n):
            step_fn(*batches[i % len(batches)])
        sync(device)
    events = prof.events()
    out = {"attention_ops": sorted({e.name for e in events if e.name.startswith("aten::_") and "attention" in e.name})}
    if cuda:
        per_name: dict[str, list[float]] = {}
        for e in events:
            if e.device_type == DeviceType.CUDA and not e.is_user_annotation:  # annotations span kernels
                per_name.setdefault(e.name, []).append((e.time_range.end - e.time_range.start) / 1e3)
        groups: dict[str, float] = {}
        for name, ms in per_name.items():
            groups[kernel_group(name)] = groups.get(kernel_group(name), 0.0) + sum(ms) / n
        top = sorted(per_name.items(), key=lambda kv: -sum(kv[1]))[:12]
        out |= {"kernel_ms": {g: round(v, 3) for g, v in sorted(groups.items(), key=lambda kv: -kv[1])},
                "kernel_total_ms": round(sum(groups.values()), 3),
                "top_kernels": [[name[:120], round(sum(ms) / n, 3), len(ms) / n] for name, ms in top]}
    return out


def curve_loop(stepper, data, device):
    """All steps of a loss curve, losses kept on the device; one sync at the end."""
    n = len(data)
    losses = torch.empty(n, device=device)
    cuda = device.type == "cuda"
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(n)] if cuda else []
    host = []
    for s, (x, y) in enumerate(data):
        if cuda:
            ev[s][0].record()
        h0 = time.perf_counter()
        losses[s] = stepper(x, y, s)
        if cuda:
            ev[s][1].record()
        else:
            host.append(time.perf_counter() - h0)
    sync(device)
    times = [s.elapsed_time(e) / 1e3 for s, e in ev] if cuda else host
    return losses.tolist(), times


def telemetry_rows(model, optimizer, stepper, batches, shape, recipe, opt, precision, plan, plain, a, device):
    """The μP health telemetry's cost: (1) the step with `model.record = {}` (no host sync, as the
    plain rows); (2) the worker's whole telemetry step: record + UpdateRatio snapshot/ratios + the
    `.item()` reads (these sync, so the step is timed by the host clock with a sync before it)."""
    from mupctl.telemetry import Telemetry

    out = []

    def arm():
        model.record = {}

    r = timed_loop(stepper, batches, a.warmup, a.steps, device, before_step=arm)
    model.record = None
    out.append(base_row(shape, recipe, opt, precision, plan, a) | measured(r, plan, device, a)
               | {"variant": "telemetry: model.record",
                  "telemetry_overhead_pct": 100 * (r["step_s"] / plain["step_s"] - 1)})
    report(out[-1])

    telemetry = Telemetry(model, interval=1, sharded=False)
    times = []
    for i in range(a.warmup + a.steps):
        x, y = batches[i % len(batches)]
        sync(device)
        t0 = time.perf_counter()
        telemetry.arm(i)
        stepper(x, y)
        telemetry.row(i)
        sync(device)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    r2 = dict(r, step_s=statistics.median(times), p10_s=percentile(times, 10), p90_s=percentile(times, 90),
              wall_step_s=statistics.mean(times), first_step_s=None)
    out.append(base_row(shape, recipe, opt, precision, plan, a) | measured(r2, plan, device, a)
               | {"variant": "telemetry: worker step",
                  "telemetry_overhead_pct": 100 * (r2["step_s"] / plain["step_s"] - 1)})
    report(out[-1])
    return out


def base_row(shape, recipe, opt, precision, plan, a) -> dict:
    layers, d = parse_shape(shape)
    return {"shape": shape, "layers": layers, "d_model": d, "recipe": recipe, "optimizer": opt,
            "precision": precision, "variant": "step", "label": a.label, "sdpa": a.sdpa,
            "compile_mode": a.compile_mode, "model_file": a.model_file,
            "params": plan.summary["params"] if plan else None}


def measured(r, plan, device, a) -> dict:
    tokens = a.micro_batch * plan.model.seq_len
    tps = tokens / r["step_s"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    fpt = plan.summary["flops_per_token"]
    assert fpt == flops_per_token(plan.model, plan.summary["params"])  # the plan's figure is this formula
    util = mfu(tps, fpt, name, 1)
    row = {"step_ms": 1e3 * r["step_s"], "p10_ms": 1e3 * r["p10_s"], "p90_ms": 1e3 * r["p90_s"],
           "wall_step_ms": 1e3 * r["wall_step_s"], "tokens_per_s": tps, "flops_per_token": fpt,
           "mfu": util, "peak_gib": peak_gib(device), "first_step_s": r["first_step_s"],
           "loss": r["loss"], "finite": r["finite"]}
    kind = gpu_kind(name)
    anchor = ANCHORS.get(kind, {}).get(row_shape(plan)) if anchor_setup(plan, a) else None
    if anchor:
        row |= {"anchor_gpu": kind, "anchor_tokens_per_s": anchor[0], "anchor_mfu": anchor[1] / 100,
                "x_anchor": tps / anchor[0], "mfu_pts_vs_anchor": 100 * util - anchor[1]}
    return row


def row_shape(plan) -> str:
    return f"{plan.model.n_layers}x{plan.model.d_model}"


def anchor_setup(plan, a) -> bool:
    m = plan.model
    return m.vocab_size == 50304 and m.seq_len == 1024 and a.micro_batch == 16


def report(row) -> None:
    extra = f" x{row['x_anchor']:.3f} anchor" if row.get("x_anchor") else ""
    util = f" MFU {100 * row['mfu']:.1f}%" if row.get("mfu") else ""
    peak = f" peak {row['peak_gib']:.1f} GiB" if row.get("peak_gib") else ""
    first = f" first step {row['first_step_s']:.1f} s" if row.get("first_step_s") else ""
    first += f" {row['attention_ops']}" if row.get("attention_ops") else ""
    print(f"  {row['shape']:>8} {row['recipe']:>9} {row['optimizer']:>5} {row['precision']:>4} {row['variant']:<24} "
          f"{row['step_ms']:8.2f} ms {row['tokens_per_s']:10,.0f} tok/s{util}{extra}{peak}{first}", flush=True)


# -- component micro-benchmarks --------------------------------------------------------------------

def bench(fn, warmup=3, iters=15, device=None) -> float:
    """Median seconds of fn() (CUDA events; CPU: perf_counter)."""
    for _ in range(warmup):
        fn()
    if device is not None and device.type == "cuda":
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for s, e in ev:
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) / 1e3 for s, e in ev)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def micro(a, device, out: list) -> None:
    """Attention backends (fwd+bwd, the model's qkv layout) and LM head + cross-entropy variants."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    B, T = a.micro_batch, a.seq_len
    dtype = torch.bfloat16
    for shape in a.shapes:
        _, d = parse_shape(shape)
        H, dh = max(1, d // 64), min(64, d)
        qkv = torch.randn(B, T, 3 * H * dh, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(B, H, T, dh, device=device, dtype=dtype)

        def attn():
            q, k, v = qkv.split(H * dh, dim=-1)
            q, k, v = (t.view(B, T, H, dh).transpose(1, 2) for t in (q, k, v))
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=dh ** -0.5)

        ref = None
        flops = 3.5 * 2 * 2 * B * H * T * T * dh / 2  # causal fwd (2 matmuls) + bwd (2.5x fwd)
        backends = ["flash", "cudnn", "efficient"] if device.type == "cuda" else ["math"]
        attn().sum().backward()  # SDPA fixes its default backend order lazily, at its first call
        qkv.grad = None
        q0, k0, v0 = (t.view(B, T, H, dh).transpose(1, 2) for t in qkv.detach().split(H * dh, dim=-1))
        default = SDPA_NAMES.get(int(torch._fused_sdp_choice(q0, k0, v0, is_causal=True, scale=dh ** -0.5)), "?")
        for name in backends + ["default"]:
            backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                       "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH,
                       "default": None}[name]
            try:
                with sdpa_kernel(backend) if name != "default" else contextlib.nullcontext():
                    y = attn()
                    y.backward(grad)
                    y = y.detach()
                    g = qkv.grad.clone()
                    qkv.grad = None
                    err = None if ref is None else float((y - ref[0]).float().norm() / ref[0].float().norm())
                    gerr = None if ref is None else float((g - ref[1]).float().norm() / ref[1].float().norm())
                    if ref is None:
                        ref = (y.detach(), g)

                    def fb():
                        attn().backward(grad)
                        qkv.grad = None
                    t = bench(fb, device=device)
                row = {"micro": "attention", "shape": shape, "variant": name if name != "default" else
                       f"default (= {default}; order {torch._C._get_sdp_priority_order()})", "ms": 1e3 * t,
                       "tflops": flops / t / 1e12, "rel_err_out": err, "rel_err_grad": gerr}
            except Exception as exc:  # a backend that cannot run this input
                row = {"micro": "attention", "shape": shape, "variant": name, "error": str(exc).splitlines()[0][:200]}
            out.append(row)
            print(f"  micro {row}", flush=True)
        del qkv, grad
        free_memory(device)
        if a.micro != "all":
            continue

        # LM head: norm_f -> (x alpha_out) -> tied matmul -> CE, fwd+bwd, as the model's tail.
        V = a.vocab
        x = torch.randn(B, T, d, device=device, requires_grad=True)
        w = (0.02 * torch.randn(V, d, device=device)).requires_grad_()
        g_n = torch.ones(d, device=device, requires_grad=True)
        y = torch.randint(0, V, (B, T), device=device)

        def head_float(x, w, g_n, y):
            h = F.layer_norm(x, (d,), g_n, None, 1e-5) * 0.5
            logits = F.linear(h, w)
            return F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))

        def head_autocast(x, w, g_n, y):
            h = F.layer_norm(x, (d,), g_n, None, 1e-5) * 0.5
            logits = F.linear(h, w)
            return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))

        variants = [("ce(logits.float()) compiled", head_float, True),
                    ("ce(logits) compiled", head_autocast, True),
                    ("ce(logits.float()) eager", head_float, False)]
        for name, fn, comp in variants:
            f = torch.compile(fn) if comp and a.compile else fn
            ac = torch.autocast(device.type, dtype=torch.bfloat16)

            def fb():
                with ac:
                    loss = f(x, w, g_n, y)
                loss.backward()
                x.grad = w.grad = g_n.grad = None
            free_memory(device)
            t0 = time.perf_counter()
            fb()
            sync(device)
            first = time.perf_counter() - t0
            t = bench(fb, device=device)
            row = {"micro": "head+ce", "shape": shape, "variant": name, "ms": 1e3 * t, "peak_gib": peak_gib(device),
                   "first_call_s": first}
            out.append(row)
            print(f"  micro {row}", flush=True)
        del x, w, g_n, y
        torch._dynamo.reset()
        free_memory(device)


# -- report ---------------------------------------------------------------------------------------

def fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


def markdown(rows, curves, micro_rows, env, argv) -> str:
    lines = [f"GPU: {env['gpu']} · torch {env['torch']} · CUDA {env['cuda']} · cuDNN {env['cudnn']} · "
             f"Python {env['python']}", "", f"Command: `{argv}`", ""]
    lines += ["| shape | params | recipe | optimizer | precision | variant | step ms | tokens/s | MFU | "
              "vs anchor (same run) | × anchor (published) | MFU Δ pts (published) | vs none | peak GiB | "
              "first step s |", "|" + " --- |" * 15]
    for r in rows:
        if r.get("skipped"):
            why = "rejected at plan time" if r["skipped"].startswith("rejected") else r["skipped"][:80]
            lines.append(f"| {r['shape']} | | {r['recipe']} | {r['optimizer']} | {r['precision']} | skipped: "
                         f"{why} | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['shape']} | {r['params'] / 1e6:,.0f}M | {r['recipe']} | {r['optimizer']} | {r['precision']} | "
            f"{r['variant']}{' [' + r['label'] + ']' if r.get('label') else ''} | {r['step_ms']:.2f} | "
            f"{r['tokens_per_s']:,.0f} | {fmt(None if r['mfu'] is None else 100 * r['mfu'], '.1f')}% | "
            f"{fmt(r.get('vs_anchor_same_run'), '.3f')} | {fmt(r.get('x_anchor'), '.3f')} | "
            f"{fmt(r.get('mfu_pts_vs_anchor'), '+.1f')} | {fmt(r.get('vs_none'), '.3f')} | "
            f"{fmt(r['peak_gib'], '.1f')} | {fmt(r['first_step_s'], '.1f')} |")
    lines += ["", "vs anchor (same run) = tokens/s ÷ the `anchor` row's (the peer model, --anchor-file) of the same "
              "shape, measured in the same run; × anchor (published) and MFU Δ pts (published) compare with the "
              "ANCHORS.md figures for this GPU (another run; only at micro batch 16 × 1024, vocab 50304)."]
    muon = [r for r in rows if r.get("muon_overhead_pct") is not None]
    if muon:
        lines += ["", "Muon step overhead vs AdamW (same compiled model): " + "; ".join(
            f"{r['shape']} {r['recipe']} {r['precision']}: {r['muon_overhead_pct']:+.1f}%" for r in muon)]
    tele = [r for r in rows if r.get("telemetry_overhead_pct") is not None]
    if tele:
        lines += ["", "Telemetry step overhead vs the plain step (amortized over the default interval "
                  f"{TELEMETRY_INTERVAL}): " + "; ".join(
                      f"{r['shape']} {r['variant']}: {r['telemetry_overhead_pct']:+.1f}% "
                      f"({r['telemetry_overhead_pct'] / TELEMETRY_INTERVAL:+.2f}%)" for r in tele)]
    fp8 = [r for r in rows if r.get("fp8_speedup") is not None]
    if fp8:
        lines += ["", "FP8 vs bf16 tokens/s: " + "; ".join(
            f"{r['shape']} {r['recipe']} {r['optimizer']}: ×{r['fp8_speedup']:.3f}" for r in fp8)]
    if curves:
        lines += ["", "| loss curve | steps | first | mean of last 10 | max |Δ vs bf16| (10-step means) | "
                  "step ms |", "| --- | --- | --- | --- | --- | --- |"]
        for c in curves:
            lines.append(f"| {c['shape']} {c['recipe']} {c['precision']} | {len(c['losses'])} | "
                         f"{c['losses'][0]:.3f} | {statistics.mean(c['losses'][-10:]):.4f} | "
                         f"{fmt(c.get('max_window_diff'), '.4f')} | {1e3 * c['step_s']:.1f} |")
    prof = [r for r in rows if r.get("kernel_ms")]
    if prof:
        names = [g for g, _ in KERNEL_GROUPS] + ["other"]
        lines += ["", "GPU kernel time per step by group (ms; --kernels):", "",
                  "| shape | recipe | optimizer | precision | step ms | kernels ms | " + " | ".join(names) + " |",
                  "|" + " --- |" * (6 + len(names))]
        for r in prof:
            lines.append(f"| {r['shape']} | {r['recipe']} | {r['optimizer']} | {r['precision']} | {r['step_ms']:.2f} | "
                         f"{r['kernel_total_ms']:.2f} | " + " | ".join(fmt(r['kernel_ms'].get(g), '.2f') for g in names)
                         + " |")
        for r in prof:
            lines += ["", f"Costliest kernels, {r['shape']} {r['recipe']} {r['precision']} (ms/step, launches/step): "
                      + "; ".join(f"`{k[:60]}` {ms:.2f} ({calls:g})" for k, ms, calls in r["top_kernels"])]
    if micro_rows:
        lines += ["", "| component | shape | variant | ms | TFLOP/s | rel. err (out / grad) | peak GiB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for m in micro_rows:
            if m.get("error"):
                lines.append(f"| {m['micro']} | {m['shape']} | {m['variant']} | error: {m['error'][:80]} | | | |")
                continue
            errs = (f"{fmt(m.get('rel_err_out'), '.1e')} / {fmt(m.get('rel_err_grad'), '.1e')}"
                    if m["micro"] == "attention" else "")
            lines.append(f"| {m['micro']} | {m['shape']} | {m['variant']} | {m['ms']:.3f} | "
                         f"{fmt(m.get('tflops'), '.0f')} | {errs} | {fmt(m.get('peak_gib'), '.1f')} |")
    return "\n".join(lines) + "\n"


def derive(rows, curves) -> None:
    """Cross-row figures: vs none, Muon overhead, FP8 speed-up, FP8 loss-curve distance."""
    plain = {(r["shape"], r["recipe"], r["optimizer"], r["precision"], r.get("label", "")): r for r in rows
             if not r.get("skipped") and r["variant"] == "step" and r["recipe"] != "anchor"}
    for (shape, recipe, opt, prec, label), r in plain.items():
        none = plain.get((shape, "none", opt, prec, label))
        if none and recipe != "none":
            r["vs_none"] = r["tokens_per_s"] / none["tokens_per_s"]
        adamw = plain.get((shape, recipe, "adamw", prec, label))
        if adamw and opt == "muon":
            r["muon_overhead_pct"] = 100 * (r["step_ms"] / adamw["step_ms"] - 1)
        bf16 = plain.get((shape, recipe, opt, "bf16", label))
        if bf16 and prec == "fp8":
            r["fp8_speedup"] = r["tokens_per_s"] / bf16["tokens_per_s"]
    ref = {(c["shape"], c["recipe"]): c for c in curves if c["precision"] == "bf16"}
    for c in curves:
        b = ref.get((c["shape"], c["recipe"]))
        if b and c is not b:
            w = 10
            means = lambda xs: [statistics.mean(xs[i:i + w]) for i in range(0, len(xs) - w + 1, w)]  # noqa: E731
            c["max_window_diff"] = max((abs(p - q) for p, q in zip(means(c["losses"]), means(b["losses"]))),
                                       default=None)


def same_run_anchor(rows) -> None:
    """Our rows (bf16 or fp8): tokens/s ÷ the (bf16) anchor row's of the same shape. Only within one run."""
    anchor = {r["shape"]: r for r in rows if r["recipe"] == "anchor" and not r.get("skipped")}
    for r in rows:
        ref = anchor.get(r["shape"])
        if ref and r["recipe"] != "anchor" and not r.get("skipped"):
            r["vs_anchor_same_run"] = r["tokens_per_s"] / ref["tokens_per_s"]


def environment(device) -> dict:
    cuda = device.type == "cuda"
    return {"gpu": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(),
            "peak_bf16_flops": peak_flops(torch.cuda.get_device_name(device)) if cuda else None,
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def merge(a) -> None:
    """One table from several runs' JSON (rows keep their own label; env and commands of each run listed)."""
    runs = [json.loads(Path(f).read_text()) for f in a.merge]
    rows = [r for run in runs for r in run["rows"]]
    curves = [c for run in runs for c in run["curves"]]
    micro_rows = [m for run in runs for m in run["micro"]]
    derive(rows, curves)
    md = markdown(rows, curves, micro_rows, runs[0]["env"], " ; ".join(run["command"] for run in runs))
    if a.markdown:
        Path(a.markdown).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps({"env": runs[0]["env"], "command": [run["command"] for run in runs],
                                            "rows": rows, "curves": curves, "micro": micro_rows}, indent=1))
    print(md)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="12x768,24x1024,24x2048", help="LAYERSxD_MODEL, comma-separated")
    p.add_argument("--recipes", default="none,mup,depth_mup")
    p.add_argument("--optimizers", default="adamw,muon")
    p.add_argument("--precisions", default="bf16", help="bf16 and/or fp8 (torchao float8 on the hidden matmuls)")
    p.add_argument("--steps", type=int, default=30, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny shapes and batch: a smoke test of the harness")
    p.add_argument("--telemetry", nargs="?", const="all", default=None, metavar="SHAPE",
                   help="also time the step with model.record = {} active (first recipe; all shapes or SHAPE)")
    p.add_argument("--micro", nargs="?", const="all", default=None, choices=["all", "attention"],
                   help="also time attention backends (and, for all, LM-head/CE variants) per shape")
    p.add_argument("--micro-only", action="store_true", help="only the --micro timings")
    p.add_argument("--loss-curve", type=int, default=0, metavar="STEPS",
                   help="also train STEPS steps of AdamW on the embedded corpus per (shape, recipe, precision)")
    p.add_argument("--curve-recipes", default="mup", help="recipes that get a --loss-curve (comma-separated)")
    p.add_argument("--fp8-recipe", default="tensorwise", choices=["tensorwise", "rowwise"])
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="auto: on for CUDA")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--sdpa", default="default", choices=["default", "flash", "cudnn", "efficient", "math"],
                   help="restrict SDPA to one backend for the whole step (turns the compile caches off)")
    p.add_argument("--clip", type=float, default=1.0,
                   help="grad-norm clip as the worker (0: off; the norm is still computed, as in the worker)")
    p.add_argument("--no-autocast", dest="autocast", action="store_false")
    p.add_argument("--model-file", default=None, help="take GPT from this model.py instead (A/B runs)")
    p.add_argument("--anchor-file", default=None, metavar="PATH",
                   help="also time the peer model (nanoGPT-mup model.py: GPT, GPTConfig) per shape, in this run")
    p.add_argument("--anchor-bias", type=int, default=0, choices=[0, 1],
                   help="the anchor's GPTConfig.bias (0: bias-free, as our rows)")
    p.add_argument("--kernels", type=int, default=0, metavar="STEPS",
                   help="CUDA: profile STEPS warm steps of each group's first row; GPU time per kernel group")
    p.add_argument("--label", default="", help="free text stored in every row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=0, help="seconds; skip groups that start after it")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="render the rows of earlier --json outputs as one table (no measuring)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--markdown", default=None, metavar="PATH")
    a = p.parse_args(argv)
    if a.merge:
        return merge(a)
    if a.tiny:
        if "--shapes" not in (argv or sys.argv):
            a.shapes = "2x128,4x128"
        a.vocab, a.seq_len, a.micro_batch = 512, 64, 2
        a.steps, a.warmup = min(a.steps, 3), min(a.warmup, 1)
        a.loss_curve = min(a.loss_curve, 6)
    for key in ("shapes", "recipes", "optimizers", "precisions", "curve_recipes"):
        setattr(a, key, [s.strip() for s in getattr(a, key).split(",") if s.strip()])
    device = torch.device(a.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    a.compile = a.compile == "on" or (a.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if a.sdpa != "default":
        # The compile caches are keyed on the traced graph, not on SDPA's backend flags: a graph cached
        # by an earlier process with another backend would be reused. Compile from scratch instead.
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False
    GPT = load_gpt_class(a.model_file)
    Anchor = load_module(a.anchor_file, "anchor_model") if a.anchor_file else None
    env = environment(device)
    cmd = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    print(f"{env['gpu']} · torch {env['torch']} · CUDA {env['cuda']} · cuDNN {env['cudnn']}\n{cmd}", flush=True)

    rows, curves, micro_rows = [], [], []
    t_start = time.perf_counter()

    def save():
        derive(rows, curves)
        same_run_anchor(rows)
        if a.json:  # atomic: a run killed mid-write keeps the last complete file
            atomic_write(Path(a.json), json.dumps({"env": env, "command": cmd, "args": vars(a), "rows": rows,
                                                   "curves": curves, "micro": micro_rows}, indent=1, default=str))

    if a.micro:
        micro(a, device, micro_rows)
        save()
    for shape in [] if a.micro_only else a.shapes:
        groups = [("bf16", "anchor")] * bool(Anchor) + [(p, r) for p in a.precisions for r in a.recipes]
        for precision, recipe in groups:
            opts = ["adamw"] if recipe == "anchor" else a.optimizers
            if a.time_budget and time.perf_counter() - t_start > a.time_budget:
                print(f"  time budget spent: skipping {shape} {precision} {recipe}", flush=True)
                rows.extend(base_row(shape, recipe, o, precision, None, a) | {"skipped": "time budget"}
                            for o in opts)
                continue
            t0 = time.perf_counter()
            try:
                if recipe == "anchor":
                    run_anchor(shape, a, device, Anchor, rows)
                else:
                    run_group(shape, precision, recipe, a, device, GPT, rows, curves)
            except Exception as exc:  # keep the other groups' numbers
                msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                print(f"  FAILED {shape} {precision} {recipe}: {msg}", flush=True)
                rows.extend(base_row(shape, recipe, o, precision, None, a) | {"skipped": f"failed: {msg}"}
                            for o in opts)
                torch._dynamo.reset()
                free_memory(device)
            print(f"  [{shape} {precision} {recipe}: {time.perf_counter() - t0:.0f} s, "
                  f"total {time.perf_counter() - t_start:.0f} s]", flush=True)
            save()
    save()
    md = markdown(rows, curves, micro_rows, env, cmd)
    if a.markdown:
        Path(a.markdown).write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
