"""
sample.py -- generate text from a trained checkpoint.

    python sample.py                                  # from out/ckpt.pt, starting at a newline
    python sample.py --start "ROMEO:" --max_new_tokens 300
    python sample.py --start FILE:prompt.txt --num_samples 3 --temperature 0.8
    python sample.py --ckpt out/last.pt --temperature 0   # greedy: always the most likely next character

Only the samples go to stdout (so `> file.txt` captures just the text); everything else goes to stderr.
The checkpoint carries its own vocabulary: the data folder is not needed.
"""

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import checkpoint
from cli import Parser, UserError, add_dataclass_flags, build, pick_device, run
from tokenizer import StreamDecoder, TokenizerUnavailable, UnknownCharacters, tokenizer_from_meta

SEPARATOR = "\n" + "-" * 40 + "\n"
MIN_TEMPERATURE = 1e-3  # below this, sampling is greedy in all but name: use 0


@dataclass
class SampleConfig:
    out_dir: str = "out"  # read OUT_DIR/ckpt.pt, the best checkpoint train.py wrote there
    ckpt: str = ""  # read this checkpoint file instead (e.g. out/last.pt)
    start: str = "\n"  # the prompt; FILE:path reads it from a file; empty means a newline
    num_samples: int = 1  # samples to generate, as one batch
    max_new_tokens: int = 500  # characters to generate per sample
    temperature: float = 0.8  # 0: always the most likely character; <1 sharper, >1 more random
    top_k: int = 200  # keep only the k most likely characters at each step (clamped to the vocabulary)
    seed: int = 1337  # the same seed gives the same samples
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps
    unknown: str = "error"  # prompt characters missing from the vocabulary: error, or skip them

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must not be negative, got {self.max_new_tokens}")
        # NaN and inf are refused too; and a tiny temperature would overflow logits / temperature to inf
        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature < math.inf):
            raise ValueError(f"temperature must be 0 (greedy) or a number from {MIN_TEMPERATURE} up, got {self.temperature}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', got {self.unknown!r}")
        if not -2**63 <= self.seed < 2**64:  # what torch.Generator.manual_seed accepts
            raise ValueError(f"seed must fit in 64 bits, got {self.seed}")


def read_prompt(start):
    """--start TEXT, or FILE:path for a prompt kept in a file."""
    if not start.startswith("FILE:"):
        return start
    path = Path(start[len("FILE:") :])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"prompt file {path} not found") from None
    except UnicodeDecodeError:
        raise UserError(f"prompt file {path} is not UTF-8 text") from None
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL character
        raise UserError(f"cannot read prompt file {path}: {getattr(e, 'strerror', None) or e}") from None


def encode_prompt(tokenizer, prompt, unknown):
    """Prompt text -> token ids. An empty prompt (or one emptied by --unknown skip) starts from a newline."""
    try:
        ids = tokenizer.encode(prompt, unknown=unknown)
    except UnknownCharacters as e:
        raise UserError(f"the prompt has {e} (use --unknown skip to drop them)") from None
    if not ids:
        ids = tokenizer.encode("\n", unknown="skip") or [0]
    return ids


def main(argv=None):
    parser = Parser(prog="sample.py", description="Generate text from a babygpt checkpoint.")
    add_dataclass_flags(parser, SampleConfig, "sampling")
    cfg = build(SampleConfig, vars(parser.parse_args(argv)), "invalid setting")

    path = checkpoint.resolve(cfg.out_dir, cfg.ckpt)
    device = pick_device(cfg.device)
    try:
        ckpt = checkpoint.load(path)
        model = checkpoint.load_model(ckpt, device, source=path)
    except checkpoint.CheckpointError as e:
        hint = "" if cfg.ckpt or path.exists() else " (train one with `python train.py`, or pass --ckpt FILE)"
        raise UserError(f"{e}{hint}") from None
    try:
        tokenizer = tokenizer_from_meta(ckpt["meta"])
    except TokenizerUnavailable as e:
        raise UserError(str(e)) from None
    prompt_ids = encode_prompt(tokenizer, read_prompt(cfg.start), cfg.unknown)
    print(f"{path}: iteration {ckpt['iter_num']}, val loss {ckpt['best_val_loss']:.4f}, "
          f"{model.num_params():,} parameters, on {device}", file=sys.stderr)

    generator = torch.Generator().manual_seed(cfg.seed)
    idx = torch.tensor([prompt_ids] * cfg.num_samples, dtype=torch.long, device=device)  # (N, T)
    if cfg.num_samples == 1:
        # stream: one token at a time, printed as soon as it makes whole characters
        sys.stdout.write(tokenizer.decode(prompt_ids))
        stream = StreamDecoder(tokenizer)
        for _ in range(cfg.max_new_tokens):
            idx = model.generate(idx, 1, cfg.temperature, cfg.top_k, generator)  # (1, T+1)
            sys.stdout.write(stream.add(idx[0, -1].item()))
            sys.stdout.flush()
        sys.stdout.write(stream.flush() + "\n")
    else:
        out = model.generate(idx, cfg.max_new_tokens, cfg.temperature, cfg.top_k, generator)  # (N, T+new)
        print(SEPARATOR.join(tokenizer.decode(row.tolist()) for row in out))


if __name__ == "__main__":
    run(main)
