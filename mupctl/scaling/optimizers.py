"""The optimizer registry: one entry per `optimizer.name`, everything mupctl knows about it. Pure Python.

An entry declares
- ``width``: its μP families, each a table role → quantity → width exponent a (value = base · m^a · λ^b
  under mup/depth_mup; the depth exponents b are family-generic, `rules.depth_in_branch`);
- ``family(role, ndim, adjust_lr_fn)``: the family that updates a tensor (``adjust_lr_fn`` is
  ``optimizer.muon.adjust_lr_fn``, the one setting that picks a family today);
- ``parts``: family → the registered optimizer whose torch class updates those tensors (default:
  itself; muon sends its non-matrix tensors to adamw); the plan's per-tensor ``optimizer`` is that part;
- ``section``: the recipe section holding the LR and weight decay of the tensors it updates itself
  (None: ``optimizer.*``; "muon": ``optimizer.muon.*``); ``eps``: its param groups carry ε;
  ``default_weight_decay``: the decay when ``optimizer.weight_decay`` is unset;
- ``state(settings)``: its per-element fp32 state tensors. Checkpoints store each one as
  ``optim.state.<parameter FQN>.<name>`` (DCP's flattened optimizer state dict), so it is keyed by
  parameter, never by rank, and loads at any world size; plan.summary counts 4 bytes per element each;
- ``torch`` ("module:Class", imported lazily by `mupctl.optim`), ``kwargs(settings)`` (its constructor
  arguments besides the param groups), ``fused`` (gets ``fused=`` on CUDA), ``named`` (gets the
  parameters' FQNs).

``settings`` is anything with the attributes of the recipe's ``optimizer`` section or the plan's
``optimizer_settings`` (``betas``, ``momentum``, ``nesterov``, ``muon``). Adding an optimizer is one
entry here plus tests (tests/test_muon_unit.py checks every entry's tables and parts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# -- μP families: width exponents per role (Tensor Programs V Table 8; microsoft/mup; arXiv 2310.17813) --

ADAM = {
    # init σ/√m for matrices with a width fan-in; LR η/m where an update sums over a width fan-in;
    # eps ε/m everywhere because every gradient is Θ(1/m) under the 1/m output multiplier;
    # wd·m where the LR is η/m so that LR·wd (decoupled decay per step) is width-independent.
    "embedding": {"init_std": 0, "lr": 0, "eps": -1, "weight_decay": 0},
    "hidden": {"init_std": -0.5, "lr": -1, "eps": -1, "weight_decay": 1},
    "hidden_out": {"init_std": -0.5, "lr": -1, "eps": -1, "weight_decay": 1},
    "output": {"init_std": 0, "lr": 0, "eps": -1, "weight_decay": 0},
    "vector": {"init_std": 0, "lr": 0, "eps": -1, "weight_decay": 0},
}
SGD = {
    # MuSGD: tensors with one width dimension (vector-like) get LR η·m and wd/m; matrices with
    # two width dimensions get η·fan_out_mult/fan_in_mult = η (all width dims grow with m).
    "embedding": {"init_std": 0, "lr": 1, "eps": 0, "weight_decay": -1},
    "hidden": {"init_std": -0.5, "lr": 0, "eps": 0, "weight_decay": 0},
    "hidden_out": {"init_std": -0.5, "lr": 0, "eps": 0, "weight_decay": 0},
    "output": {"init_std": 0, "lr": 1, "eps": 0, "weight_decay": -1},
    "vector": {"init_std": 0, "lr": 1, "eps": 0, "weight_decay": -1},
}
MUON = {
    # torch.optim.Muon "original": lr·√max(1, fan_out/fan_in) already meets the spectral
    # condition ‖ΔW‖ = Θ(√(fan_out/fan_in)), so the LR needs m⁰ (an extra 1/m would double-scale).
    "hidden": {"init_std": -0.5, "lr": 0, "eps": 0, "weight_decay": 0},
    "hidden_out": {"init_std": -0.5, "lr": 0, "eps": 0, "weight_decay": 0},
}
MUON_MATCH_RMS = {
    # "match_rms_adamw": lr·0.2·√max(A, B) gives the update Adam's RMS (0.2·lr), but not Adam's
    # spectral norm. Muon's update is full-rank (all singular values ≈ 1), so its spectral norm is
    # lr·0.2·√max(A, B) ∝ lr·√m; Adam's sign-like update of a low-rank gradient has spectral norm
    # ≈ lr·√(A·B) ∝ lr·m. The spectral condition ‖ΔW‖ = Θ(1) therefore needs η/√m here (not
    # Adam's η/m, which leaves features moving ∝ m^-½), and wd·√m to keep LR·wd width-independent.
    "hidden": {"init_std": -0.5, "lr": -0.5, "eps": 0, "weight_decay": 0.5},
    "hidden_out": {"init_std": -0.5, "lr": -0.5, "eps": 0, "weight_decay": 0.5},
}


@dataclass(frozen=True)
class Entry:
    """One optimizer (see the module docstring for each field)."""

    name: str
    width: dict[str, dict]
    family: Callable[[str, int, str], str]
    torch: str
    kwargs: Callable[[object], dict]
    state: Callable[[object], tuple[str, ...]]
    parts: dict[str, str] = field(default_factory=dict)
    section: str | None = None
    eps: bool = False
    default_weight_decay: float = 0.0
    fused: bool = False
    named: bool = False

    def part(self, fam: str) -> str:
        """The registered optimizer that updates tensors of family `fam`."""
        return self.parts.get(fam, self.name)


def _muon_family(role: str, ndim: int, adjust_lr_fn: str) -> str:
    """2-D hidden/hidden_out matrices are Muon's (its family follows the LR adjustment); the rest AdamW's."""
    if role in ("hidden", "hidden_out") and ndim == 2:
        return "muon" if adjust_lr_fn == "original" else "muon_match_rms"
    return "adam"


def _adam_kwargs(s) -> dict:
    return {"betas": tuple(s.betas)}


_ADAM_STATE = ("exp_avg", "exp_avg_sq")

ENTRIES = (
    Entry("adamw", {"adam": ADAM}, lambda role, ndim, adjust: "adam", "torch.optim:AdamW", _adam_kwargs,
          lambda s: _ADAM_STATE, eps=True, default_weight_decay=0.1, fused=True),
    Entry("adam", {"adam": ADAM}, lambda role, ndim, adjust: "adam", "torch.optim:Adam", _adam_kwargs,
          lambda s: _ADAM_STATE, eps=True, fused=True),
    Entry("sgd", {"sgd": SGD}, lambda role, ndim, adjust: "sgd", "torch.optim:SGD",
          lambda s: {"momentum": s.momentum, "nesterov": s.nesterov},
          lambda s: ("momentum_buffer",) if s.momentum > 0 else ()),
    Entry("muon", {"muon": MUON, "muon_match_rms": MUON_MATCH_RMS, "adam": ADAM}, _muon_family,
          "mupctl.optim.muon:Muon",
          lambda s: {"momentum": s.muon.momentum, "nesterov": s.muon.nesterov, "ns_steps": s.muon.ns_steps,
                     "adjust_lr_fn": s.muon.adjust_lr_fn, "distributed": s.muon.distributed,
                     "batched": s.muon.batched_ns},
          lambda s: ("momentum_buffer",), parts={"adam": "adamw"}, section="muon", default_weight_decay=0.1,
          named=True),
)
OPTIMIZERS: dict[str, Entry] = {e.name: e for e in ENTRIES}
NAMES = tuple(OPTIMIZERS)
"""Every `optimizer.name` (and every per-tensor plan `optimizer`), in registry order."""


def _width_tables() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for e in ENTRIES:
        for fam, table in e.width.items():
            if out.setdefault(fam, table) is not table:
                raise ValueError(f"optimizer {e.name}: family {fam} has two different width tables")
    return out


WIDTH = _width_tables()
"""Family → role → quantity → width exponent a (all entries' `width` tables, one per family)."""


def family(optimizer: str, role: str, ndim: int, adjust_lr_fn: str = "original") -> str:
    """The μP family that updates a tensor of this role and rank under `optimizer`."""
    return OPTIMIZERS[optimizer].family(role, ndim, adjust_lr_fn)


def part(optimizer: str, fam: str) -> str:
    """The registered optimizer (its torch class) that updates `optimizer`'s tensors of family `fam`."""
    return OPTIMIZERS[optimizer].part(fam)


def state_bytes(part_name: str, settings) -> int:
    """Bytes of optimizer state per parameter element of a tensor updated by `part_name` (fp32 state)."""
    return 4 * len(OPTIMIZERS[part_name].state(settings))
