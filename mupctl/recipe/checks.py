"""Cross-field recipe checks (shapes, batch arithmetic, launch) → `UserError` naming the field."""

from __future__ import annotations

from mupctl.errors import UserError


def check_recipe(r) -> None:
    m = r.model
    if m.d_model % m.n_heads:
        raise UserError(f"must divide model.d_model ({m.d_model}), got {m.n_heads}", "model.n_heads")
    d_head = m.d_model // m.n_heads
    if m.n_kv_heads is not None and m.n_heads % m.n_kv_heads:
        raise UserError(f"must divide model.n_heads ({m.n_heads}), got {m.n_kv_heads}", "model.n_kv_heads")
    if m.position == "rope" and d_head % 2:
        raise UserError(f"RoPE needs an even head size, got d_model/n_heads = {d_head}; change "
                        "model.n_heads or use model.position: learned", "model.n_heads")
    t = r.train
    world = r.launch.nproc_per_node * r.launch.nnodes
    if t.global_batch % (t.micro_batch * world):
        raise UserError(f"must be a multiple of train.micro_batch × world size ({t.micro_batch} × {world}), "
                        f"got {t.global_batch}", "train.global_batch")
    if r.schedule.warmup_steps >= t.steps:
        raise UserError(f"must be < train.steps ({t.steps}), got {r.schedule.warmup_steps}",
                        "schedule.warmup_steps")
    if r.data.source == "bin" and not r.data.path:
        raise UserError("required when data.source is bin (a directory with train.bin and val.bin; "
                        "make one with `mupctl data prepare`)", "data.path")
    if r.launch.node_rank is not None and r.launch.node_rank >= r.launch.nnodes:
        raise UserError(f"must be < launch.nnodes ({r.launch.nnodes}), got {r.launch.node_rank}", "launch.node_rank")
    if r.launch.nnodes > 1 and not r.launch.rdzv_endpoint:
        raise UserError("required when launch.nnodes > 1 (host:port of the rendezvous node)",
                        "launch.rdzv_endpoint")
    if t.precision == "fp8" and r.launch.device == "cpu":
        raise UserError("fp8 needs CUDA; use fp32 or bf16 on launch.device: cpu", "train.precision")
