"""Atomic, sharded training checkpoints on top of ``torch.distributed.checkpoint`` (DCP).

Works with plain modules, DDP and FSDP2 (``fully_shard``) and with a *list* of optimizers (e.g. Muon
for 2-D matrices + AdamW for the rest): ``get_state_dict``/``set_state_dict`` turn model and
optimizers into one FQN-keyed state dict (optimizer state flattened, so it does not depend on the
order of the list), which DCP writes as one shard file per rank and can reshard on load.

Layout: ``ckpt_dir/step_00000120/`` holds DCP's ``.metadata`` + ``__R_0.distcp`` shards (model and
optimizers), ``meta.json`` (caller's meta + "step", "world_size", "time"), ``rng/rank{R}.pt`` (each
rank's torch/CUDA/python/numpy RNG) and ``COMMITTED``; ``ckpt_dir/latest`` names the newest (a hint).

Atomicity protocol of ``save`` (collective):

1. rank 0 removes a stale ``.tmp-step_00000120/``; barrier.
2. every rank writes its RNG file and, via ``dcp.save``, its fsynced shard into the tmp dir; DCP's
   coordinator writes ``.metadata`` after all shards. (Async: this runs in a background thread and
   steps 3-4 happen at the next ``save``/``load_latest``/``wait``.) Barrier.
3. rank 0 writes ``meta.json`` then ``COMMITTED`` (fsynced), fsyncs the tmp dir, renames it to
   ``step_00000120`` (``os.replace``) and fsyncs ``ckpt_dir``: **the rename is the commit point**.
4. rank 0 replaces ``latest`` (``paths.atomic_write``), then purges committed checkpoints beyond
   ``keep_last``, checkpoints with a *larger* step (an abandoned timeline, e.g. the unreadable
   ones a fallback skipped) and ``.tmp-*`` dirs; it then broadcasts success or its error (the final
   barrier; a failed commit raises ``RunFailure`` on every rank).

A kill at any point leaves either only a ``.tmp-*`` dir (ignored, purged by the next save) or a
complete ``step_*`` dir; older checkpoints are deleted only after the new one is committed.
``load_latest`` trusts the directory listing, not ``latest``: it tries checkpoints newest first and
falls back, with a one-line warning, past any that misses files or that DCP fails to read.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException!
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from mupctl import faults
from mupctl.errors import RunFailure, warn
from mupctl.paths import atomic_write, fsync_dir

try:
    import numpy as np
except ImportError:  # numpy is optional
    np = None

_STEP_RE = re.compile(r"^step_(\d{8})$")
_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _world() -> int:
    return dist.get_world_size() if _dist() else 1


def _barrier() -> None:
    if _dist():
        dist.barrier()


@contextmanager
def _quiet():
    """Hide DCP's 'assuming the intent is to save in a single process' warning (no process group)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _reason(e: BaseException) -> str:
    """One line for the fallback warning; unwraps DCP's per-rank CheckpointException."""
    if isinstance(e, CheckpointException) and e.failures:
        e = e.failures[min(e.failures)][0]
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def _bcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if not _dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _first_error(error: str | None) -> str | None:
    """Collective: the first rank's error (or None when every rank succeeded), on every rank."""
    if not _dist():
        return error
    errors = [None] * _world()
    dist.all_gather_object(errors, error)
    return next((e for e in errors if e is not None), None)


def _rng_state() -> dict:
    """This process's RNG states as plain types + tensors (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if "numpy" in state and np is not None:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def step_dirs(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``step_*`` directory under ckpt_dir, committed or not, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_RE.match(p.name)))


def meta_problem(meta, path: Path) -> str | None:
    """What is wrong with a checkpoint's parsed ``meta.json``, or None: it must be an object whose
    "step" (an int, the one in the dir name ``step_NNNNNNNN``) and "world_size" (an int ≥ 1) are
    there, and every rank's ``rng/rank{R}.pt`` must exist."""
    step, world = (meta.get("step"), meta.get("world_size")) if isinstance(meta, dict) else (None, None)
    named = _STEP_RE.match(path.name)
    if type(step) is not int or step < 0 or (named and step != int(named.group(1))):
        return f"meta.json: step is {step!r}, not this checkpoint's step"
    if type(world) is not int or world < 1:
        return f"meta.json: world_size is {world!r}"
    missing = next((r for r in range(world) if not (path / "rng" / f"rank{r}.pt").is_file()), None)
    return None if missing is None else f"missing rng/rank{missing}.pt"


def file_problem(path: Path) -> str | None:
    """What makes checkpoint dir ``path`` unreadable without loading any tensor, or None: a missing
    file, an unreadable or incomplete ``meta.json`` (`meta_problem`) or ``.metadata``, or a shard
    shorter than ``.metadata`` says (a torn or truncated write). Bit flips inside a shard are not
    detected (DCP stores no checksums)."""
    missing = [f for f in ("COMMITTED", ".metadata", "meta.json") if not (path / f).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        problem = meta_problem(json.loads((path / "meta.json").read_text()), path)
        if problem:
            return problem
        storage = dcp.FileSystemReader(str(path)).read_metadata().storage_data or {}
    except Exception as e:  # noqa: BLE001 - any failure makes this checkpoint unusable
        return _reason(e)
    ends: dict[str, int] = {}
    for info in storage.values():
        ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(ends.items()):
        size = (path / name).stat().st_size if (path / name).is_file() else -1
        if size < end:
            return f"shard {name} is {'missing' if size < 0 else f'{size} bytes, .metadata needs {end}'}"
    return None


def fallback_warning(name: str, problem: str, older: list[str]) -> None:
    """The one-line warning of a loader that skips unreadable checkpoint `name` for the next of `older`."""
    warn([f"checkpoint {name} is unreadable ({problem}); falling back to {older[0] if older else 'none left'}"])


def readable_steps(ckpt_dir: Path) -> tuple[list[int], list[str]]:
    """(steps of the step_* dirs that pass `file_problem`, "step_…: problem" for the others)."""
    good, bad = [], []
    for step, path in step_dirs(ckpt_dir):
        problem = file_problem(path)
        if problem is None:
            good.append(step)
        else:
            bad.append(f"{path.name}: {problem}")
    return good, bad


class Checkpointer:
    """Saves/loads ``step_*`` checkpoints under ``ckpt_dir``; see the module docstring. With an
    ``interval``, it also decides when a training loop saves (`due`, `maybe_save`)."""

    def __init__(self, ckpt_dir: str | Path, keep_last: int = 2, async_save: bool = False, interval: int = 0):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.dir = Path(ckpt_dir)
        self.keep_last = keep_last
        self.async_save = async_save
        self.interval = interval
        self._pending = None  # (future, step, tmp dir, meta) of an in-flight async save
        self._async_pg = None
        self._said_sync = False

    # ---- listing -------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """Committed checkpoints, oldest first."""
        return [(s, p) for s, p in step_dirs(self.dir) if (p / "COMMITTED").is_file()]

    # ---- save ----------------------------------------------------------------------------------
    def due(self, step: int, last: bool = False) -> bool:
        """Whether a loop saves after `step` completed steps: every `interval` steps and after the
        last one (`last`); never with interval 0."""
        return self.interval > 0 and (step % self.interval == 0 or last)

    def maybe_save(self, step: int, model, optimizers: list, meta: dict, last: bool = False,
                   stop: bool = False) -> float | None:
        """Collective. `save` when `due(step, last)`, or when the loop stops there (`stop`) and
        checkpointing is on; the seconds blocked, or None when nothing was saved."""
        if not (self.due(step, last) or (stop and self.interval > 0)):
            return None
        return self.save(step, model, optimizers, meta)

    def save(self, step: int, model, optimizers: list, meta: dict) -> float:
        """Collective (every rank calls). Returns seconds the caller was blocked."""
        t0 = time.perf_counter()
        self.wait()
        name = f"step_{step:08d}"
        tmp = self.dir / f".tmp-{name}"
        if _rank() == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        _barrier()
        (tmp / "rng").mkdir(parents=True, exist_ok=True)
        torch.save(_rng_state(), tmp / "rng" / f"rank{_rank()}.pt")
        msd, osd = get_state_dict(model, optimizers, options=_OPTIONS)
        state = {"model": msd, "optim": osd}
        meta = {**meta, "step": step, "world_size": _world(), "time": time.time()}
        if self.async_save and torch.cuda.is_available():
            if _dist() and torch.device("cpu") not in dist.group.WORLD._device_types:
                self._async_pg = self._async_pg or dist.new_group(backend="gloo")
            fut = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self._async_pg,
                                  no_dist=not _dist())
            fut = getattr(fut, "upload_completion", fut)  # AsyncSaveResponse vs Future
            self._pending = (fut, step, tmp, meta)
        else:
            if self.async_save and not self._said_sync and _rank() == 0:
                warn(["checkpoint.async_save needs CUDA; saving synchronously"])  # the launcher shows warnings
                self._said_sync = True
            with _quiet():
                dcp.save(state, checkpoint_id=str(tmp), no_dist=not _dist())
            self._commit(step, tmp, meta)
        return time.perf_counter() - t0

    def wait(self) -> None:
        """Finish a pending async save (no-op otherwise). Collective when a save is pending."""
        if self._pending is not None:
            fut, step, tmp, meta = self._pending
            self._pending = None
            fut.result()
            self._commit(step, tmp, meta)

    def _commit(self, step: int, tmp: Path, meta: dict) -> None:
        _barrier()  # every rank's shard + RNG file is on disk (DCP wrote .metadata last)
        error = None
        if _rank() == 0:
            try:
                atomic_write(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True), durable=True)
                atomic_write(tmp / "COMMITTED", b"", durable=True)
                final = tmp.with_name(tmp.name.removeprefix(".tmp-"))
                if final.exists():  # re-saving a step (e.g. after a fallback): move the old one aside
                    aside = self.dir / f".tmp-replaced-{final.name}"
                    shutil.rmtree(aside, ignore_errors=True)
                    os.replace(final, aside)
                faults.before_commit(step)
                os.replace(tmp, final)  # the commit point (a directory rename)
                fsync_dir(self.dir)
                atomic_write(self.dir / "latest", final.name, durable=True)
                self._purge(step)
            except OSError as e:
                error = f"{type(e).__name__}: {e}"
        error = _bcast(error)  # doubles as the final barrier: nobody runs ahead of the rename
        if error:
            raise RunFailure(f"checkpoint {tmp.name}: commit failed ({error})")

    def _purge(self, step: int) -> None:
        kept = [p for s, p in self.checkpoints() if s <= step][-self.keep_last :]
        doomed = [p for _, p in step_dirs(self.dir) if p not in kept]
        doomed += [p for p in self.dir.glob(".tmp-*") if p.is_dir()]
        for p in doomed:
            shutil.rmtree(p, ignore_errors=True)

    # ---- load ----------------------------------------------------------------------------------
    def newest_meta(self) -> dict | None:
        """Collective. meta.json of the newest committed checkpoint whose meta passes `meta_problem`
        (rank 0's view), or None."""
        meta = None
        if _rank() == 0:
            for _, p in reversed(self.checkpoints()):
                try:
                    meta = json.loads((p / "meta.json").read_text())
                except (OSError, ValueError):
                    continue
                if meta_problem(meta, p) is None:
                    break
                meta = None
        return _bcast(meta)

    def load_latest(self, model, optimizers: list, weights: bool = True) -> dict | None:
        """Collective. Loads the newest valid checkpoint into model/optimizers (in place), restores
        this rank's RNG states, returns its meta dict (with "step"), or None when there is none
        (fresh run). Raises ``RunFailure`` when checkpoints exist but none is readable. The optimizers'
        state (moments, momentum buffers) comes from the checkpoint, their param-group hyperparameters
        (lr, peak_lr, eps, weight decay, betas, fused, …) stay as built: a forced resume with a new LR
        trains at it, and with the same plan they are the same values.
        ``weights=False`` restores only RNG and meta (a forced resume onto new tensor shapes)."""
        self.wait()
        _barrier()
        candidates = _bcast([p.name for _, p in reversed(step_dirs(self.dir))] if _rank() == 0 else None)
        for i, name in enumerate(candidates):
            path = self.dir / name
            # Phase 1 (local): files present, meta + this rank's RNG readable. Agreed before
            # dcp.load, because a rank that skipped the collective load would hang the others.
            try:
                problem = file_problem(path)
                if problem:
                    raise FileNotFoundError(problem)
                meta = json.loads((path / "meta.json").read_text())
                rng = None
                if meta.get("world_size") == _world():
                    rng = torch.load(path / "rng" / f"rank{_rank()}.pt", weights_only=True)
                error = None
            except Exception as e:  # noqa: BLE001 - any failure: try the previous checkpoint
                error = _reason(e)
            error = _first_error(error)
            if error is None and weights:  # Phase 2 (collective): DCP reports any rank's failure on all ranks
                try:
                    msd, osd = get_state_dict(model, optimizers, options=_OPTIONS)
                    plan_groups = copy.deepcopy({k: v for k, v in osd.items() if k.startswith("param_groups.")})
                    with _quiet():
                        dcp.load({"model": msd, "optim": osd}, checkpoint_id=str(path), no_dist=not _dist())
                except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException
                    error = _reason(e)
                error = _first_error(error)
            if error is None:
                if weights:
                    osd.update(plan_groups)  # the plan's hyperparameters (docstring)
                    set_state_dict(model, optimizers, model_state_dict=msd, optim_state_dict=osd,
                                   options=_OPTIONS)
                if rng is not None:
                    _set_rng_state(rng)
                elif _rank() == 0:
                    warn([f"checkpoint {name} was saved with world size {meta.get('world_size')}, now {_world()}; "
                          "RNG states not restored"])
                return meta
            if _rank() == 0:
                fallback_warning(name, error, candidates[i + 1:])
        if candidates:
            raise RunFailure(f"no readable checkpoint in {self.dir} (tried {', '.join(candidates)})")
        return None
