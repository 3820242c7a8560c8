"""
tools/whole_val.py -- training runs' best checkpoints scored on the whole validation split, by the evaluator
that tools/peer.py uses for both babygpt and nanoGPT (non-overlapping windows, every token but the first once).

    python -m tools.whole_val out out-cpu-sliding          # each OUT_DIR/ckpt.pt on its own data's val.bin
    python -m tools.whole_val /elsewhere/out --data_dir data/shakespeare_char

The val split is the run's --data_dir (as it was given: from where the run was started, which is found again
when the run's out_dir was relative too), or --data_dir; its vocabulary must be the checkpoint's.
"""

from pathlib import Path

import sys

if __package__ in (None, ""):  # run by its path (python tools/whole_val.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from torch.nn import functional as F

import train
from babygpt import checkpoint
from babygpt.cli import UserError
from babygpt.runner import run
from babygpt.tokenizer import same_tokenizer
from tools.common import ToolParser, data_meta


def whole_split_loss(logits_of, tokens, block_size, batch_size=64):
    """The one evaluator for both programs: mean cross-entropy over the whole split, cut into non-overlapping
    windows of block_size tokens (every token but the first is predicted exactly once). logits_of maps x (B, T)
    to logits (B, T, V). Its source is also run inside nanoGPT's checkout, next to nanoGPT's own model.py."""
    tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    windows = (len(tokens) - 1) // block_size
    x = tokens[:windows * block_size].view(windows, block_size)  # (N, T)
    y = tokens[1:windows * block_size + 1].view(windows, block_size)  # (N, T)
    total = 0.0
    with torch.no_grad():
        for i in range(0, windows, batch_size):
            logits = logits_of(x[i:i + batch_size])  # (b, T, V)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y[i:i + batch_size].reshape(-1),
                                     reduction="sum").item()
    return total / (windows * block_size)


def run_data_dirs(out_dir, train_config):
    """Where the run's data folder may be: its --data_dir as given (from here, or absolute), and, when it was
    relative, from the folder the run was started in -- out_dir less the run's own relative --out_dir."""
    data_dir, run_out = Path(train_config.get("data_dir", "")), Path(train_config.get("out_dir", ""))
    candidates = [data_dir]
    given = Path(out_dir).resolve().parts
    if not data_dir.is_absolute() and not run_out.is_absolute() and run_out.parts \
            and given[-len(run_out.parts):] == run_out.parts:
        candidates.append(Path(*given[:-len(run_out.parts)]) / data_dir)
    return candidates


def val_tokens(ckpt, saved, out_dir, data_dir=None):
    """The val split of the run's data (or of data_dir), checked: its vocabulary is the checkpoint's."""
    candidates = [Path(data_dir)] if data_dir else run_data_dirs(out_dir, saved["train_config"])
    found = next((c for c in candidates if (c / "meta.json").is_file()), None)
    if found is None:
        raise UserError(f"{candidates[0] / 'meta.json'} not found (the data {ckpt} was trained on, seen from "
                        f"{Path.cwd()}); run from the folder training ran in, or give --data_dir")
    meta = data_meta(found)
    if not same_tokenizer(meta, saved["meta"]):
        raise UserError(f"the vocabulary in {found} differs from the one {ckpt} was trained on; give the run's "
                        f"--data_dir")
    return train.load_split(found, "val", saved["model_config"]["block_size"])


def best_checkpoint_loss(out_dir, tokens=None, data_dir=None):
    """A babygpt run's best checkpoint (OUT_DIR/ckpt.pt) scored by whole_split_loss on tokens (by default its
    data's val.bin), and the iteration it was saved at."""
    ckpt = Path(out_dir) / "ckpt.pt"
    try:
        saved = checkpoint.load(ckpt)
        model = checkpoint.load_model(saved, source=str(ckpt)).eval()
    except checkpoint.CheckpointError as e:
        raise UserError(str(e)) from None
    if tokens is None:
        tokens = val_tokens(ckpt, saved, out_dir, data_dir)
    return whole_split_loss(lambda x: model(x)[0], tokens, model.config.block_size), saved["iter_num"]


def main(argv=None):
    parser = ToolParser(prog="python -m tools.whole_val",
                        description="Best checkpoints scored on the whole val split (tools.peer's evaluator).")
    parser.add_argument("out_dirs", nargs="+", help="training runs' --out_dir folders")
    parser.add_argument("--data_dir", help="the prepared data to score on (default: each run's own --data_dir)")
    args = parser.parse_args(argv)
    scores = {}
    for out_dir in args.out_dirs:
        scores[out_dir], iter_num = best_checkpoint_loss(out_dir, data_dir=args.data_dir)
        print(f"{out_dir}: {scores[out_dir]:.4f} on the whole val split (iteration {iter_num})")
    return scores


if __name__ == "__main__":
    run(main)
