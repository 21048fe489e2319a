"""The exact `torchrun` argv that `mupctl train` runs (pure Python, shown by `mupctl plan`)."""

from __future__ import annotations

import sys

RUN_DIR_PLACEHOLDER = "<run_dir>"


def torchrun_argv(recipe, run_dir: str = RUN_DIR_PLACEHOLDER, python: str | None = None) -> list[str]:
    """`python -m torch.distributed.run … -m mupctl.worker --run-dir DIR` as an argv list.

    One node without a rendezvous endpoint uses `--standalone`; otherwise the c10d (or given)
    rendezvous. `--max-restarts` is torchelastic's restart budget: restarted workers resume from
    the run's latest checkpoint on their own.
    """
    lc = recipe.launch
    argv = [python or sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={lc.nnodes}", f"--nproc-per-node={lc.nproc_per_node}",
            f"--max-restarts={lc.max_restarts}", "--monitor-interval=1"]
    if lc.nnodes == 1 and not lc.rdzv_endpoint:
        argv.append("--standalone")
    else:
        argv += [f"--rdzv-backend={lc.rdzv_backend}", f"--rdzv-endpoint={lc.rdzv_endpoint}",
                 f"--rdzv-id={lc.rdzv_id or recipe.name}"]
        if lc.node_rank is not None:
            argv.append(f"--node-rank={lc.node_rank}")
    return argv + ["-m", "mupctl.worker", "--run-dir", str(run_dir)]
