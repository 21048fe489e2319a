"""Which rank orthogonalizes which Muon matrix, and in which rounds. Pure Python (unit-tested without torch).

Cost model used for balancing: Newton–Schulz (NS) on an A × B matrix, n = min(A, B), N = max(A, B),
k steps of X ← a·X + (b·G + c·G²)·X with G = X Xᵀ (n × n), each
    G = X Xᵀ: 2·n²·N    G·G: 2·n³    (b·G + c·G²)·X: 2·n²·N
so ``ns_flops = k · (4·A·B·n + 2·n³)`` (element-wise terms left out).

Assignment (deterministic: a function of the shapes, their order, k and the world size W only).
Matrices are grouped by shape; the groups are taken in decreasing per-matrix cost (ties: first
appearance). A group of g matrices gives ⌊g/W⌋ to every rank and one more to the g mod W ranks with
the least load so far (ties: the lower rank); inside a group rank 0 takes the first of its share in
parameter order, then rank 1, and so on. Every rank's load is then within the largest single
matrix's cost of every other's, and each shape group is split as evenly as it can be, so the padded
all-gather of a round carries at most one matrix of padding per rank.

Rounds: each shape group is cut into rounds of at most ``max(1, round_elements // (A·B))`` matrices per
rank, and the rounds are ordered largest first, so that the last one, whose communication has no
Newton–Schulz work left to hide behind, is the smallest.
"""

from __future__ import annotations

from dataclasses import dataclass

ROUND_ELEMENTS = 1 << 25
"""Elements per rank in one round (64 MiB of bf16): a bound on a round's buffers, not a tuning knob."""


def ns_flops(shape: tuple[int, int], steps: int) -> int:
    """FLOPs of `steps` Newton–Schulz iterations on one matrix of `shape` (module docstring)."""
    a, b = shape
    n = min(a, b)
    return steps * (4 * a * b * n + 2 * n**3)


def shape_groups(shapes: list[tuple[int, int]], steps: int) -> list[list[int]]:
    """Matrix indices grouped by shape, groups in decreasing per-matrix cost (ties: first appearance)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault(tuple(s), []).append(i)
    order = sorted(groups.items(), key=lambda kv: (-ns_flops(kv[0], steps), kv[1][0]))
    return [idx for _, idx in order]


def assign(shapes: list[tuple[int, int]], world: int, steps: int) -> list[int]:
    """The owner rank of every matrix (module docstring)."""
    owners = [0] * len(shapes)
    load = [0] * world
    for group in shape_groups(shapes, steps):
        cost = ns_flops(shapes[group[0]], steps)
        q, extra = divmod(len(group), world)
        counts = [q] * world
        for r in sorted(range(world), key=lambda r: (load[r], r))[:extra]:
            counts[r] += 1
        it = iter(group)
        for r in range(world):
            for _ in range(counts[r]):
                owners[next(it)] = r
            load[r] += counts[r] * cost
    return owners


@dataclass(frozen=True)
class Round:
    """One batch of same-shape matrices: `ranks[r]` are the indices rank r orthogonalizes in it."""

    shape: tuple[int, int]
    ranks: tuple[tuple[int, ...], ...]

    @property
    def width(self) -> int:
        """The most matrices any rank has in this round (the padded all-gather's count per rank)."""
        return max(len(r) for r in self.ranks)


def rounds(shapes: list[tuple[int, int]], owners: list[int], world: int, steps: int,
           round_elements: int = ROUND_ELEMENTS) -> list[Round]:
    """The rounds of a step (module docstring); every matrix is in exactly one round."""
    out = []
    for group in shape_groups(shapes, steps):
        shape = tuple(shapes[group[0]])
        mine = [[i for i in group if owners[i] == r] for r in range(world)]
        per = max(1, round_elements // (shape[0] * shape[1]))
        for start in range(0, max(len(m) for m in mine), per):
            out.append(Round(shape, tuple(tuple(m[start:start + per]) for m in mine)))
    return sorted(out, key=lambda r: -r.width * r.shape[0] * r.shape[1])  # stable: equal sizes keep their order


def loads(shapes: list[tuple[int, int]], owners: list[int], world: int, steps: int) -> list[int]:
    """NS FLOPs per rank under `owners`."""
    out = [0] * world
    for s, r in zip(shapes, owners):
        out[r] += ns_flops(tuple(s), steps)
    return out
