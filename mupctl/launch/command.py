"""The exact `torchrun` argv that `mupctl train` runs for a plan (pure Python; `mupctl plan` shows it)."""

from __future__ import annotations

import sys

RUN_DIR_PLACEHOLDER = "<run_dir>"
MONITOR_INTERVAL_S = 0.1  # how often torchrun's agent polls its workers: a run ends (or restarts) that much after them


def torchrun_argv(plan, run_dir: str = RUN_DIR_PLACEHOLDER, python: str | None = None) -> list[str]:
    """`python -m torch.distributed.run … -m mupctl.worker --run-dir DIR` as an argv list, from
    `plan.launch`.

    One node without a rendezvous endpoint uses `--standalone`; otherwise the c10d (or given)
    rendezvous, with `launch.rdzv_id` or the plan's name as the run id. `--max-restarts` is
    torchelastic's restart budget: restarted workers resume from the run's latest checkpoint on
    their own.
    """
    lc = plan.launch
    argv = [python or sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={lc.nnodes}", f"--nproc-per-node={lc.nproc_per_node}",
            f"--max-restarts={lc.max_restarts}", f"--monitor-interval={MONITOR_INTERVAL_S}"]
    if lc.nnodes == 1 and not lc.rdzv_endpoint:
        argv.append("--standalone")
    else:
        argv += [f"--rdzv-backend={lc.rdzv_backend}", f"--rdzv-endpoint={lc.rdzv_endpoint}",
                 f"--rdzv-id={lc.rdzv_id or plan.name}"]
        if lc.node_rank is not None:
            argv.append(f"--node-rank={lc.node_rank}")
    return argv + ["-m", "mupctl.worker", "--run-dir", str(run_dir)]
