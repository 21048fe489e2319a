"""Checks that need the machine, made before anything is written or launched (failures exit 2):
the device, the data files, optional packages and W&B credentials. `mupctl train`, `resume` and
`sweep` run them."""

from __future__ import annotations

import importlib.util
import netrc
import os
import urllib.parse

from mupctl.errors import UserError


def preflight(recipe):
    """Check `recipe` (a `Recipe`, or a `Plan`: the same launch/train/logging/data/model fields)
    against this machine; return its opened `TokenData`."""
    launch = recipe.launch
    if launch.device == "cuda" or recipe.train.precision == "fp8":
        import torch
        if not torch.cuda.is_available():
            field = "launch.device" if launch.device == "cuda" else "train.precision"
            raise UserError("needs CUDA but no GPU is visible; use launch.device: cpu / train.precision: fp32",
                            field)
        if launch.nproc_per_node > torch.cuda.device_count():
            raise UserError(f"asks for {launch.nproc_per_node} GPUs per node, this node has "
                            f"{torch.cuda.device_count()}", "launch.nproc_per_node")
    if recipe.train.precision == "fp8" and importlib.util.find_spec("torchao") is None:
        raise UserError("fp8 needs torchao (pip install torchao)", "train.precision")
    if recipe.logging.wandb != "disabled" and importlib.util.find_spec("wandb") is None:
        raise UserError("wandb is not installed; pip install 'mupctl[wandb]' or set logging.wandb: disabled",
                        "logging.wandb")
    if recipe.logging.wandb == "online" and not wandb_credentials():
        raise UserError("online logging needs W&B credentials: run `wandb login` or set WANDB_API_KEY, or use "
                        "logging.wandb: offline (and `wandb sync` the run later)", "logging.wandb")
    from mupctl.data import open_data
    return open_data(recipe.data, recipe.model.vocab_size, recipe.model.seq_len, recipe.train.seed)


def wandb_credentials() -> bool:
    """Whether wandb will find credentials without prompting: WANDB_API_KEY or WANDB_IDENTITY_TOKEN_FILE
    in the environment, or a netrc entry (what `wandb login` writes) for the host of WANDB_BASE_URL."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except OSError:  # no netrc file
        return False
    except netrc.NetrcParseError:  # one that Python's stricter reader refuses (e.g. mode 644): wandb may not
        return True
