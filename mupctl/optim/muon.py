"""Muon with batched Newton–Schulz and the Newton–Schulz work split over data-parallel ranks.

The update is torch.optim.Muon's (this class subclasses it and keeps its param groups and its
``momentum_buffer`` state), per matrix W with gradient g (after DDP's all-reduce or FSDP2's
reduce-scatter):

    B ← μ·B + (1 − μ)·g                     (momentum_buffer; torch's lerp form)
    U = (1 − μ)·g + μ·B  if nesterov else B
    O = NS(U)                               (`newton_schulz.orthogonalize`, bf16)
    W ← W·(1 − lr·wd) − adjusted_lr(lr, shape)·O     (decoupled decay with the unadjusted lr)

Who computes O (``distributed``; "auto" = layerwise when the world size W > 1, else replicated):
- replicated: every rank orthogonalizes every matrix (torch.optim.Muon's behaviour).
- layerwise: rank r orthogonalizes only the matrices `layout.assign` gives it, in the rounds of
  `layout.rounds` (one batched NS per round). Under DDP every rank keeps every momentum buffer (the
  element-wise update is cheap) and, per round, the owners' O (bf16) are all-gathered into every rank
  (`all_gather_into_tensor`, padded to the round's widest rank). Under FSDP2 (DTensor parameters,
  Shard(0) on a 1-D mesh) the owner first gathers the full U of its matrices from the row shards
  (`all_to_all_single`, bf16), runs NS, and sends every rank its rows of O back (a second
  `all_to_all_single`); buffers, weights and updates stay sharded.

What overlaps (all collectives are asynchronous, issued in the same order on every rank):
- DDP: the all-gather of round k runs while this rank computes NS of rounds k+1, k+2, …; the updates
  are applied after the last round's NS, each after its round's wait. Exposed: the last round's gather
  (the rounds are ordered largest first, so it is the smallest) and any gather longer than the NS
  work after it.
- FSDP2: the gather of round k+1's inputs is issued before NS of round k, and the scatter of round k's
  results right after it, so both overlap NS of the neighbouring rounds; exposed: the first round's
  gather and the last round's scatter.
Nothing overlaps with the next forward: the step returns with every parameter updated.

FSDP2 replicated: every rank gathers the full U of every matrix (the same all-to-all, every rank an
owner), runs all of NS and keeps its own rows. Both FSDP2 modes and the DDP modes compute each O from
the same bf16 matrix with the same ops, so with the same gradients they give the same parameters
(bit for bit on the CPU; tests/test_muon_dist.py).

Checkpoints: the state is torch.optim.Muon's ``momentum_buffer`` per parameter (a DTensor shard under
FSDP2), which DCP stores under the parameter's FQN: a checkpoint does not depend on the ownership,
and a resume at another world size recomputes it.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.distributed as dist
from torch.profiler import record_function

from mupctl.optim import layout
from mupctl.optim.newton_schulz import adjusted_lr, orthogonalize

MODES = ("auto", "layerwise", "replicated")


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local tensor of a DTensor (its shard, sharing storage), or `t` itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _rows(n: int, world: int, rank: int) -> tuple[int, int]:
    """[start, end) of rank's rows of an n-row tensor sharded on dim 0 (torch.chunk's split, as DTensor)."""
    size = math.ceil(n / world)
    return min(n, rank * size), min(n, (rank + 1) * size)


class Muon(torch.optim.Muon):
    """torch.optim.Muon with batched and (optionally) layer-wise distributed Newton–Schulz (module docstring).

    `names` maps each parameter to its FQN (for `layout()`); `distributed`: auto | layerwise |
    replicated; `batched`: one NS per round of same-shape matrices (False: one per matrix, torch's own
    chain). Every param group must share ns_steps, ns_coefficients and eps."""

    def __init__(self, params, *, names: dict | None = None, distributed: str = "auto", batched: bool = True,
                 **kwargs):
        super().__init__(params, **kwargs)
        if distributed not in MODES:
            raise ValueError(f"distributed must be one of {MODES}, got {distributed!r}")
        self.pairs = self.matrices
        ns = {(g["ns_steps"], tuple(g["ns_coefficients"]), g["eps"]) for g in self.param_groups}
        if len(ns) > 1:
            raise ValueError(f"every Muon param group needs the same ns_steps, ns_coefficients and eps, got {ns}")
        (self.ns_steps, self.coefficients, self.eps), = ns  # torch.optim.Muon refuses an empty parameter list
        names = names or {}
        self.names = [names.get(p, f"param{i}") for i, (p, _) in enumerate(self.matrices)]
        self.shapes = [tuple(p.shape) for p, _ in self.matrices]
        self.sharded = any(hasattr(p, "device_mesh") for p, _ in self.matrices)
        self.group, self.world, self.rank = self._process_group()
        self.mode = distributed if distributed != "auto" else ("layerwise" if self.world > 1 else "replicated")
        self.batched = batched
        owners = layout.assign(self.shapes, self.world, self.ns_steps) if self.mode == "layerwise" \
            else [0] * len(self.shapes)
        self.owners = owners
        self.rounds = layout.rounds(self.shapes, owners, self.world if self.mode == "layerwise" else 1, self.ns_steps)
        self.timer = None  # a PhaseTimer while a step is being profiled

    @property
    def matrices(self) -> list[tuple[torch.Tensor, dict]]:
        """(parameter, its param group), from the live param_groups: `load_state_dict` replaces the group
        dicts, and a schedule writes the lr into the new ones."""
        return [(p, g) for g in self.param_groups for p in g["params"]]

    def _process_group(self):
        """(group, world size, rank) that the NS work is split over: the FSDP2 mesh of DTensor
        parameters, else the default group when one is initialized, else a single process."""
        if self.sharded:
            meshes = {p.device_mesh for p, _ in self.matrices}
            mesh = meshes.pop()
            from torch.distributed.tensor import Shard
            if meshes or mesh.ndim != 1 or any(tuple(p.placements) != (Shard(0),) for p, _ in self.matrices):
                raise ValueError("Muon supports DTensor parameters sharded on dim 0 over one 1-D mesh (FSDP2's "
                                 "fully_shard default)")
            group = mesh.get_group()
            return group, dist.get_world_size(group), dist.get_rank(group)
        if dist.is_available() and dist.is_initialized():
            return None, dist.get_world_size(), dist.get_rank()
        return None, 1, 0

    def layout(self) -> dict:
        """Who orthogonalizes what: for the events.jsonl row the worker writes at start."""
        out = {"distributed": self.mode, "world_size": self.world, "strategy": "fsdp" if self.sharded else "ddp",
               "batched_ns": self.batched, "matrices": len(self.matrices), "rounds": len(self.rounds)}
        if self.mode == "layerwise":
            gflop = layout.loads(self.shapes, self.owners, self.world, self.ns_steps)
            out["ranks"] = [[n for n, o in zip(self.names, self.owners) if o == r] for r in range(self.world)]
            out["ns_gflop"] = [round(f / 1e9, 3) for f in gflop]
        return out

    # -- the step ------------------------------------------------------------------------------------

    def _phase(self, name: str):
        """A named span (torch.profiler's record_function; timed when `timer` is set)."""
        if self.timer is None:
            return record_function(f"muon.{name}")
        return self.timer.phase(name)

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        self.pairs = self.matrices  # (parameter, group) for this step; index i = matrix i
        live = [p.grad is not None for p, _ in self.pairs]
        if any(live):
            self._update(live)
        return loss

    def _update(self, live: list[bool]) -> None:
        if not all(live) and (self.world > 1 or self.sharded):
            missing = [n for n, has in zip(self.names, live) if not has]
            raise RuntimeError(f"distributed Muon needs a gradient for every matrix; none for {missing[:5]}")
        with self._phase("step"):
            with self._phase("momentum"):
                for (p, g), has in zip(self.pairs, live):
                    if has:
                        state = self.state[p]
                        if "momentum_buffer" not in state:
                            state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                        _local(state["momentum_buffer"]).lerp_(_local(p.grad), 1 - g["momentum"])
            if self.world == 1 or (self.mode == "replicated" and not self.sharded):
                self._step_local(live)  # one rank: the local tensors are the whole matrices
            elif self.sharded:
                self._step_sharded()
            else:
                self._step_gathered()

    def _input(self, i: int) -> torch.Tensor:
        """U of matrix i (local rows under FSDP2)."""
        p, g = self.pairs[i]
        grad, buf = _local(p.grad), _local(self.state[p]["momentum_buffer"])
        return grad.lerp(buf, g["momentum"]) if g["nesterov"] else buf

    def _ns(self, inputs) -> torch.Tensor:
        """NS of same-shape matrices (matrix indices, whose U is computed here, or a [n, A, B] tensor)
        → [n, A, B] bf16: one batched chain, or one chain per matrix."""
        with self._phase("ns"):
            if not isinstance(inputs, torch.Tensor):
                inputs = torch.stack([self._input(i).to(torch.bfloat16) for i in inputs])
            if self.batched:
                return orthogonalize(inputs, self.ns_steps, self.coefficients, self.eps)
            return torch.stack([orthogonalize(u, self.ns_steps, self.coefficients, self.eps) for u in inputs])

    def _apply(self, i: int, update: torch.Tensor) -> None:
        """W ← W·(1 − lr·wd) − adjusted_lr·O on this rank's (local rows of) matrix i."""
        p, g = self.pairs[i]
        w = _local(p)
        w.mul_(1 - g["lr"] * g["weight_decay"])
        w.add_(update, alpha=-adjusted_lr(g["lr"], g["adjust_lr_fn"], p.shape))

    def _step_local(self, live: list[bool]) -> None:
        """Every matrix here, round by round (replicated and unsharded, or a single rank)."""
        for rnd in self.rounds:
            idx = [i for i in rnd.ranks[0] if live[i]]
            if idx:
                out = self._ns(idx)
                with self._phase("apply"):
                    for i, o in zip(idx, out):
                        self._apply(i, o)

    def _step_gathered(self) -> None:
        """Layerwise under DDP (replicated weights): NS of my matrices per round, all-gather of every
        rank's results (asynchronous, overlapping the next rounds' NS), then every update applied."""
        pending = [(rnd, *self.gather_round(rnd, self._round_ns(rnd))) for rnd in self.rounds]
        for rnd, received, work in pending:
            with self._phase("wait"):
                work.wait()
            with self._phase("apply"):
                for r, idx in enumerate(rnd.ranks):
                    for j, i in enumerate(idx):
                        self._apply(i, received[r, j])

    def _round_ns(self, rnd: layout.Round) -> torch.Tensor | None:
        mine = rnd.ranks[self.rank]
        return self._ns(mine) if mine else None

    def gather_round(self, rnd: layout.Round, mine: torch.Tensor | None):
        """Start the all-gather of one round's results: (the [W, width, A, B] bf16 receive buffer, its
        work handle). `mine`: this rank's [len(mine), A, B] results, or None (zeros: a replay)."""
        with self._phase("pack"):
            send = torch.empty((rnd.width, *rnd.shape), dtype=torch.bfloat16, device=self._device())
            filled = 0 if mine is None else len(mine)
            if mine is not None:
                send[:filled].copy_(mine)
            send[filled:].zero_()  # padding (and a replay's buffer): zeros, never read
            received = torch.empty((self.world * rnd.width, *rnd.shape), dtype=torch.bfloat16, device=send.device)
        work = dist.all_gather_into_tensor(received, send, group=self.group, async_op=True)
        return received.view(self.world, rnd.width, *rnd.shape), work

    def _device(self) -> torch.device:
        return _local(self.pairs[0][0]).device

    # -- FSDP2 ---------------------------------------------------------------------------------------

    def _owners_of(self, rnd: layout.Round) -> list[tuple[int, ...]]:
        """Per rank, the matrices it orthogonalizes in this round (replicated: every rank all of them)."""
        return list(rnd.ranks) if self.mode == "layerwise" else [rnd.ranks[0]] * self.world

    def exchange_in(self, rnd: layout.Round, replay: bool = False):
        """Start sending every owner the rows this rank holds of its matrices' U (bf16; `replay`:
        zeros of the same sizes): (receive buffer, work handle, send buffer)."""
        rows, cols = rnd.shape
        owners, (lo, hi) = self._owners_of(rnd), _rows(rows, self.world, self.rank)
        with self._phase("pack"):
            if replay:
                send = torch.zeros(sum(len(o) for o in owners) * (hi - lo) * cols, dtype=torch.bfloat16,
                                   device=self._device())
            else:
                flat = {i: self._input(i).to(torch.bfloat16).reshape(-1) for i in set().union(*owners)}
                parts = [flat[i] for o in owners for i in o]
                send = torch.cat(parts) if parts else torch.empty(0, dtype=torch.bfloat16, device=self._device())
            counts = [(b - a) * cols for a, b in (_rows(rows, self.world, s) for s in range(self.world))]
            mine = len(owners[self.rank])
            received = torch.empty(mine * sum(counts), dtype=torch.bfloat16, device=send.device)
        work = dist.all_to_all_single(received, send, [mine * c for c in counts],
                                      [len(o) * (hi - lo) * cols for o in owners], group=self.group, async_op=True)
        return received, work, send

    def _assemble(self, rnd: layout.Round, received: torch.Tensor) -> torch.Tensor:
        """[mine, A, B]: the full matrices from every rank's row blocks (in rank order)."""
        rows, cols = rnd.shape
        mine = len(self._owners_of(rnd)[self.rank])
        blocks, offset = [], 0
        for s in range(self.world):
            a, b = _rows(rows, self.world, s)
            n = mine * (b - a) * cols
            blocks.append(received[offset:offset + n].view(mine, b - a, cols))
            offset += n
        return torch.cat(blocks, dim=1)

    def exchange_out(self, rnd: layout.Round, out: torch.Tensor | None):
        """Start sending every rank its rows of this rank's results [mine, A, B] (None: zeros, a
        replay): (receive buffer, work handle, send buffer)."""
        rows, cols = rnd.shape
        owners, (lo, hi) = self._owners_of(rnd), _rows(rows, self.world, self.rank)
        mine = len(owners[self.rank])
        spans = [_rows(rows, self.world, s) for s in range(self.world)]
        with self._phase("pack"):
            if out is None:
                out = torch.zeros((mine, rows, cols), dtype=torch.bfloat16, device=self._device())
            send = torch.cat([out[:, a:b].reshape(-1) for a, b in spans])
            received = torch.empty(sum(len(o) for o in owners) * (hi - lo) * cols, dtype=torch.bfloat16,
                                   device=send.device)
        work = dist.all_to_all_single(received, send, [len(o) * (hi - lo) * cols for o in owners],
                                      [mine * (b - a) * cols for a, b in spans], group=self.group, async_op=True)
        return received, work, send

    def _step_sharded(self) -> None:
        """FSDP2: per round, gather U to its owners, NS, rows of O back to every rank (module docstring);
        round k+1's gather is issued before round k's NS."""
        incoming = [self.exchange_in(self.rounds[0])] if self.rounds else []
        outgoing = []
        for k, rnd in enumerate(self.rounds):
            if k + 1 < len(self.rounds):
                incoming.append(self.exchange_in(self.rounds[k + 1]))
            received, work, _ = incoming[k]
            incoming[k] = None  # free the buffers once used
            with self._phase("wait"):
                work.wait()
            mine = self._owners_of(rnd)[self.rank]
            out = self._ns(self._assemble(rnd, received)) if mine else None
            if self.mode == "layerwise":
                outgoing.append((rnd, self.exchange_out(rnd, out)))
            elif out is not None:
                lo, hi = _rows(rnd.shape[0], self.world, self.rank)
                with self._phase("apply"):
                    for i, o in zip(mine, out):
                        self._apply(i, o[lo:hi])
        for rnd, (received, work, _) in outgoing:
            with self._phase("wait"):
                work.wait()
            rows, cols = rnd.shape
            lo, hi = _rows(rows, self.world, self.rank)
            with self._phase("apply"):
                offset = 0
                for idx in rnd.ranks:
                    for i in idx:
                        n = (hi - lo) * cols
                        self._apply(i, received[offset:offset + n].view(hi - lo, cols))
                        offset += n


class PhaseTimer:
    """Time of each named phase of the Muon steps taken while it is set as `Muon.timer` (ms, summed
    over calls): device time from CUDA events on the current stream on a GPU, wall time on the CPU.
    "step" spans the whole step; "ns", "momentum", "pack", "apply" are compute, "wait" is time spent
    blocked on a collective. Exposed communication = step − (momentum + ns + pack + apply)."""

    COMPUTE = ("momentum", "ns", "pack", "apply")

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.spans: list[tuple[str, object, object]] = []

    @contextlib.contextmanager
    def phase(self, name: str):
        with record_function(f"muon.{name}"):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                yield
                end.record()
            else:
                start = time.perf_counter()
                yield
                end = time.perf_counter()
            self.spans.append((name, start, end))

    def result(self) -> dict:
        """{phase: ms} plus "exposed_comm"; synchronizes the device."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self.spans:
            ms = start.elapsed_time(end) if self.cuda else 1e3 * (end - start)
            out[name] = out.get(name, 0.0) + ms
        out["exposed_comm"] = max(0.0, out.get("step", 0.0) - sum(out.get(k, 0.0) for k in self.COMPUTE))
        return out
