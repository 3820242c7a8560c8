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
import warnings
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
            os.fsync(f.fileno())  # the bytes are on the disk before the name points at them
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {e.strerror or e}; the previous checkpoint is kept") from None
    except BaseException:  # e.g. a second Ctrl-C mid-write: drop the partial file, keep the previous checkpoint
        tmp.unlink(missing_ok=True)
        raise


def load(path, map_location="cpu"):
    """Read and check a checkpoint. Raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file or use --out_dir")
    try:
        with warnings.catch_warnings():  # a garbage file can make torch warn before it fails: one line is enough
            warnings.simplefilter("ignore")
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
    validate_contents(checkpoint, path)
    return checkpoint


def validate_contents(checkpoint, path):
    """The fields a tampered or damaged file could get wrong, each refused by name before anything uses it."""
    model_config = checkpoint["model_config"]
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{path}: model_config must be a dict")
    try:
        GPTConfig(**model_config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model_config ({e})") from None
    if model_config["vocab_size"] != checkpoint["meta"]["vocab_size"]:
        raise CheckpointError(f"{path}: model_config has vocab_size {model_config['vocab_size']} but meta has "
                              f"{checkpoint['meta']['vocab_size']} characters")
    if not isinstance(checkpoint["train_config"], dict):
        raise CheckpointError(f"{path}: train_config must be a dict")
    if type(checkpoint["iter_num"]) is not int or checkpoint["iter_num"] < 0:
        raise CheckpointError(f"{path}: iter_num must be a non-negative integer, got {checkpoint['iter_num']!r}")
    if type(checkpoint["best_val_loss"]) not in (int, float):
        raise CheckpointError(f"{path}: best_val_loss must be a number, got {checkpoint['best_val_loss']!r}")
    weights = checkpoint["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in weights.items()):
        raise CheckpointError(f"{path}: model must map parameter names to tensors")
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight {name} holds NaN or infinite values (a damaged or diverged model)")


def resolve(out_dir, ckpt=None):
    """The file sample.py and friends should read: --ckpt if given, else OUT_DIR/ckpt.pt (the best one)."""
    return Path(ckpt) if ckpt else Path(out_dir) / "ckpt.pt"


def load_model(checkpoint, device="cpu", source="the checkpoint"):
    """The GPT stored in a loaded checkpoint, on `device`, in eval mode (dropout off)."""
    model = GPT(GPTConfig(**checkpoint["model_config"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:  # missing or unexpected names, wrong shapes: the weights do not fit model_config
        reason = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{source}: the weights do not fit model_config ({reason})") from None
    return model.to(device).eval()
