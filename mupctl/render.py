"""Human-readable views of a plan (rich tables). Agents use `--json` instead."""

from __future__ import annotations

import shlex
import sys
from types import SimpleNamespace

from rich.console import Console
from rich.table import Table

from mupctl.architecture import ROLES
from mupctl.scaling.optimizers import OPTIMIZERS, family


def make_console() -> Console:
    """A TTY gets rich's own width; pipes and agents get wide, unwrapped tables."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _num(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _exp(e: dict) -> str:
    parts = [f"{k.replace('lambda', 'λ')}^{v:g}" for k, v in e.items() if v]
    return "·".join(parts) or "m^0"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return ""


def print_plan(plan: dict, explain: bool = False, console: Console | None = None) -> None:
    c = console or make_console()
    m, s = plan["model"], plan["summary"]
    c.print(f"[bold]{plan['name']}[/]  recipe [cyan]{plan['recipe']}[/]  optimizer [cyan]{plan['optimizer']}[/]"
            f"  m = {plan['width_mult']:g}  λ = {plan['depth_mult']:g}"
            + (f"  α = {plan['depth_alpha']:g}" if plan.get("depth_alpha") is not None else "")
            + f"  m_head = {plan['head_dim_mult']:g}"
            f"  base = {plan['base']}")

    t = Table(title="model", show_header=False)
    mem = s["memory_per_gpu_bytes"]
    rows = [
        ("shape", f"{m['n_layers']} layers × d_model {m['d_model']}, {m['n_heads']} heads "
                  f"({m['n_kv_heads']} kv) × d_head {m['d_head']}, d_ff {m['d_ff']}"),
        ("blocks", f"{m['norm']}, {m['position']}, {m['activation']}, bias={m['bias']}, "
                   f"tied={m['tie_embeddings']}, vocab {m['vocab_size']}, seq {m['seq_len']}"),
        ("params", f"{s['params']:,} total, {s['non_embedding_params']:,} non-embedding"),
        ("FLOPs/token", f"{s['flops_per_token']:.3e} (6·N + 12·L·d·T)"),
        ("memory/GPU", f"{_bytes(mem['total'])} = weights {_bytes(mem['weights'])} + grads "
                       f"{_bytes(mem['grads'])} + optimizer {_bytes(mem['optimizer_state'])} (no activations)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    c.print(t)

    t = Table(title="per-role policy (value = base · m^a · λ^b)")
    cols = ["role", "tensors", "optimizer", "init std", "LR", "eps", "weight decay"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("role", "optimizer") else "right")
    for role in ROLES:
        r = plan["roles"][role]
        q = ("init_std", "lr", "eps", "weight_decay")
        cells = [f"{_num(r[k])}" + (f" [dim]{_exp(r['exponents'][k])}[/]" if explain else "") for k in q]
        t.add_row(role, str(r["tensors"]), r["optimizer"], *cells)
        if "outside_branch" in r:
            o = r["outside_branch"]
            cells = [f"{_num(o[k])}" + (f" [dim]{_exp(o['exponents'][k])}[/]" if explain else "") for k in q]
            t.add_row(f"{role} (outside branch)", "", "", *cells)
    c.print(t)

    t = Table(title="forward multipliers")
    t.add_column("multiplier")
    t.add_column("value", justify="right")
    if explain:
        t.add_column("exponents", justify="right")
    for name, v in plan["multipliers"].items():
        t.add_row(name, _num(v), *([_exp(plan["multiplier_exponents"][name])] if explain else []))
    c.print(t)
    if explain:
        c.print(optimizer_table(plan))
    c.print("[bold]launch[/]: " + shlex.join(plan["command"]), soft_wrap=True)
    c.print(f"[bold]plan hash[/]: {plan['hash']}")


def optimizer_table(plan: dict) -> Table:
    """The registry's declaration of every optimizer the plan uses (mupctl.scaling.optimizers)."""
    settings = plan["optimizer_settings"]
    muon = settings.get("muon") or {}
    parts: dict[str, dict] = {}
    for t in plan["tensors"]:
        fam = family(plan["optimizer"], t["role"], len(t["shape"]), muon.get("adjust_lr_fn", "original"))
        info = parts.setdefault(t["optimizer"], {"roles": [], "families": [], "tensors": 0})
        info["tensors"] += 1
        for key, value in (("roles", t["role"]), ("families", fam)):
            if value not in info[key]:
                info[key].append(value)
    t = Table(title="optimizers (registry: mupctl/scaling/optimizers.py)")
    for col in ("optimizer", "updates", "μP family", "state per element", "checkpointed as", "torch"):
        t.add_column(col)
    for name, info in parts.items():
        entry = OPTIMIZERS[name]
        state = entry.state(SimpleNamespace(**settings))
        torch_class = entry.torch + (f" (Newton–Schulz: {muon.get('distributed')}, batched {muon.get('batched_ns')})"
                                     if entry.section == "muon" else "")
        t.add_row(name, f"{', '.join(info['roles'])} ({info['tensors']} tensors)", ", ".join(info["families"]),
                  f"{', '.join(state) or 'none'} ({4 * len(state)} B)",
                  "optim.state.<FQN>.<state>" if state else "—", torch_class)
    return t


def print_mismatches(mismatches, console: Console | None = None) -> None:
    c = console or make_console()
    if not mismatches:
        c.print("[green]verify: the realized model and optimizer match the plan, tensor by tensor[/]")
        return
    t = Table(title=f"verify: {len(mismatches)} mismatch(es) between the realized model and the plan")
    for col in ("tensor", "field", "plan", "realized"):
        t.add_column(col)
    for mm in mismatches:
        t.add_row(mm.tensor, mm.field, _num(mm.expected), _num(mm.actual))
    c.print(t)
