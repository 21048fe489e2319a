"""`mupctl eval`: the loss of a checkpoint on held-out text, defined so other tools can reproduce it.

Tokens t₀ … t_{N-1} (the run's tokenizer on `--text FILE`, or the `val.bin` of a `--data DIR` made by
`mupctl data prepare`) are cut into K = ⌊N / (T+1)⌋ consecutive windows of T+1 tokens, T =
`model.seq_len` (the last partial window is dropped); window k predicts its tokens 1..T from the ones
before them, so K·T positions are scored:

    loss = (1 / K·T) Σ_k Σ_{i=1..T} −log softmax(logits_k,i−1)[t_{k(T+1)+i}]     (nats, fp32 model)
    bits_per_byte = loss / ln 2                                              (byte tokenizer only)

The model is the run's own `mupctl.model.GPT`, built from plan.json with the checkpoint's weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from mupctl.errors import UserError

LOGITS_BUDGET = 1 << 26  # logits elements per forward (256 MiB in fp32)


def windows(tokens: np.ndarray, seq_len: int, field: str) -> np.ndarray:
    """(K, seq_len + 1) view of the consecutive full windows of `tokens`."""
    k = len(tokens) // (seq_len + 1)
    if k == 0:
        raise UserError(f"has {len(tokens)} tokens, fewer than model.seq_len + 1 = {seq_len + 1}", field)
    return tokens[:k * (seq_len + 1)].reshape(k, seq_len + 1)


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, rows: np.ndarray, device: torch.device) -> float:
    """Mean next-token cross-entropy (nats) over every predicted position of the windows `rows`."""
    model.eval()
    per_row = rows.shape[1] - 1
    batch = max(1, LOGITS_BUDGET // (per_row * model.tok_emb.weight.shape[0]))
    total = 0.0
    for start in range(0, len(rows), batch):
        chunk = torch.from_numpy(np.asarray(rows[start:start + batch], dtype=np.int64)).to(device)
        loss = model(chunk[:, :-1], chunk[:, 1:])  # fp32 mean over this chunk's positions
        total += loss.double().item() * chunk.shape[0] * per_row
    return total / (len(rows) * per_row)


def text_tokens(plan, path: Path) -> tuple[np.ndarray, str]:
    """The run's tokenizer applied to the UTF-8 file `path`: (ids, tokenizer name)."""
    from mupctl.data.tokenizer import data_tokenizer, load_tokenizer
    name = data_tokenizer(plan.data)
    if name is None:
        why = "trained on synthetic tokens" if plan.data.source == "synthetic" else \
            f"has no readable {plan.data.path}/meta.json"
        raise UserError(f"the run {why}, so its tokenizer is unknown; evaluate on prepared shards with --data DIR",
                        "--text")
    if name != "bytes" and not Path(name).is_file():
        raise UserError(f"the run's tokenizer {name} is gone; restore it, or evaluate on prepared shards with "
                        "--data DIR", "--text")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no such file: {path}", "--text") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})", "--text") from None
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror})", "--text") from None
    return load_tokenizer(None if name == "bytes" else name).encode(text), name


def shard_tokens(plan, path: Path) -> tuple[np.ndarray, str]:
    """The val.bin tokens of a `mupctl data prepare` directory: (ids, its meta.json tokenizer)."""
    from mupctl.data import open_data
    from mupctl.data.tokenizer import data_tokenizer
    try:
        data = open_data(SimpleNamespace(source="bin", path=str(path), val_fraction=0.0),
                         vocab_size=plan.model.vocab_size, seq_len=0, seed=0)
    except UserError as err:  # it names the recipe field; here the flag is the input
        raise UserError(str(err).split(": ", 1)[-1], "--data") from None
    name = json.loads((path / "meta.json").read_text()).get("tokenizer")
    trained = data_tokenizer(plan.data)
    if trained is not None and name != trained:
        raise UserError(f"{path} was tokenized with {name}, the run with {trained}: the losses would not compare",
                        "--data")
    return data.splits["val"], name


def evaluate(run_dir: Path, step: int | None = None, text: Path | None = None, data: Path | None = None) -> dict:
    """{"loss", "tokens" (predicted positions), "step"} (+ "bits_per_byte" for byte tokens)."""
    from mupctl.model import GPT
    from mupctl.weights import load_run, run_plan
    if (text is None) == (data is None):
        raise UserError("give exactly one of --text FILE or --data DIR", "--text")
    plan = run_plan(Path(run_dir))
    tokens, tokenizer = text_tokens(plan, Path(text)) if text is not None else shard_tokens(plan, Path(data))
    rows = windows(tokens, plan.model.seq_len, "--text" if text is not None else "--data")
    if int(rows.max()) >= plan.model.vocab_size:
        raise UserError(f"holds token id {int(rows.max())}, not below model.vocab_size {plan.model.vocab_size}",
                        "--text" if text is not None else "--data")
    run = load_run(Path(run_dir), step, plan)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = GPT(plan, device=device)
    model.load_state_dict(run.state)
    loss = heldout_loss(model, rows, device)
    out = {"loss": loss, "tokens": int(rows.shape[0] * (rows.shape[1] - 1)), "step": run.step}
    if tokenizer == "bytes":
        out["bits_per_byte"] = loss / math.log(2)
    return out
