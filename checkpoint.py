"""
Checkpoints: what a training run leaves behind, written so a crash never destroys a good one,
and read so a file from a stranger can never run code.

A checkpoint is a dict of tensors and plain Python values (str, int, float, bool, list, dict):
    format, version   "babygpt-checkpoint", 1
    model             the model's state_dict (of the plain module, never the torch.compile wrapper)
    model_config      GPTConfig as a dict
    train_config      TrainConfig as a dict
    meta              the tokenizer description from meta.json (vocabulary etc.)
    optimizer         the optimizer's state_dict
    iter_num          optimizer steps taken so far
    best_val_loss     the lowest validation loss seen in this run
    rng               random-number-generator states (tensors), so a resumed run continues exactly
Because it holds nothing else, torch.load(path, weights_only=True) reads it, and weights_only refuses any
pickled object that would execute code while loading.
"""

import os
import pickle
from pathlib import Path

import torch

from model import GPT, GPTConfig
from tokenizer import validate_meta

FORMAT = "babygpt-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "model_config", "train_config", "meta", "iter_num", "best_val_loss")


class CheckpointError(Exception):
    """The file is missing, unreadable, unsafe, or not a babygpt checkpoint."""


def save(checkpoint, path):
    """Write atomically: into a temporary file in the same folder, flushed to disk, then renamed over `path`.
    A crash or a full disk at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {e.strerror or e}; the previous checkpoint is kept") from None


def load(path, map_location="cpu"):
    """Read and check a checkpoint. Raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file or use --out_dir")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refused something. "GLOBAL" means the file asks to import a Python object (a class or a
        # function such as os.system) -- the way a pickle runs code. Anything else: not a torch file at all.
        if "GLOBAL" in str(e):
            raise CheckpointError(f"{path} contains Python objects that could run code when loaded; refusing to load it") from None
        raise CheckpointError(f"{path} is not a babygpt checkpoint (unreadable by torch.load)") from None
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except Exception:  # torch raises RuntimeError, EOFError, zipfile errors ... for truncated or foreign files
        raise CheckpointError(f"{path} is not a babygpt checkpoint (unreadable by torch.load)") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a babygpt checkpoint")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {checkpoint.get('version')!r}; this babygpt reads version {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is incomplete (missing {', '.join(missing)})")
    try:
        validate_meta(checkpoint["meta"], f"{path} (meta)")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    return checkpoint


def resolve(out_dir, ckpt=None):
    """The file sample.py and friends should read: --ckpt if given, else OUT_DIR/ckpt.pt (the best one)."""
    return Path(ckpt) if ckpt else Path(out_dir) / "ckpt.pt"


def load_model(checkpoint, device="cpu"):
    """The GPT stored in a loaded checkpoint, on `device`, in eval mode (dropout off)."""
    model = GPT(GPTConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()
