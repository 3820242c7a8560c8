"""
sample.py -- generate text from a trained checkpoint.

    python sample.py                                  # from out/ckpt.pt, starting at a newline
    python sample.py --start "ROMEO:" --max_new_tokens 300
    python sample.py --start FILE:prompt.txt --num_samples 3 --temperature 0.8
    python sample.py --ckpt out/last.pt --temperature 0   # greedy: the most likely next token
    python sample.py --start "ROMEO:" --stop "\n\n"     # stop at the end of the speech
    python sample.py --interactive                     # a prompt per line, typed or piped in

Only the samples go to stdout (so `> file.txt` captures just the text); the rest goes to stderr.
The checkpoint carries its own vocabulary: the data folder is not needed.
"""

import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from babygpt import files, memory, runner

# Ctrl-C during the slow imports below (torch: a second or two): "interrupted", not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT, runner.exit_quietly)

import torch

from babygpt import checkpoint, engine, gpt2
from babygpt.cli import Parser, UserError, add_dataclass_flags, build
from babygpt.device import pick_device
from babygpt.runner import run
from babygpt.threads import use_threads
from babygpt.tokenizer import (StreamDecoder, TokenizerUnavailable, UnknownCharacters,
                               tokenizer_from_meta)

SEPARATOR = "\n" + "-" * 40 + "\n"
MAX_PROMPT_LINE = 1 << 20  # characters of one --interactive line (the model reads only its end)
MIN_TEMPERATURE = 1e-3  # below this, sampling is greedy in all but name: use 0


@dataclass
class SampleConfig:
    out_dir: str = "out"  # read OUT_DIR/ckpt.pt, the best checkpoint train.py wrote there
    ckpt: str = ""  # read this checkpoint instead: a file or a run's folder (its ckpt.pt)
    init_from: str = ""  # GPT-2's weights instead: gpt2, gpt2-medium, -large, -xl, or a folder
    start: str = "\n"  # the prompt; FILE:path reads it from a file; empty means a newline
    num_samples: int = 1  # samples to generate, as one batch
    max_new_tokens: int = 500  # tokens to generate per sample (characters, for the char tokenizer)
    temperature: float = 0.8  # 0: always the most likely token; <1 sharper, >1 more random
    top_k: int = 200  # keep only the k most likely tokens at each step (clamped to the vocabulary)
    top_p: float = 1.0  # nucleus: the fewest most likely tokens whose probabilities sum to >= p
    stop: str = ""  # end a sample right after this text; \n is a newline (empty: never)
    seed: int = 1337  # the same seed gives the same samples
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps
    unknown: str = "error"  # prompt characters missing from the vocabulary: error, or skip them
    kv_cache: bool = True  # 1: fast, with the KV cache (engine.py); 0: recompute (the same text)
    refill_every: int = 1  # re-fill a full cache window every N tokens: 1 is exact, more is faster
    interactive: bool = False  # read prompts from stdin, one per line, until Ctrl-D or Ctrl-C
    threads: int = 0  # CPU threads. 0: auto, fewer while other programs use cores; N: N

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must not be negative, got {self.max_new_tokens}")
        # NaN and inf are refused too; a tiny temperature would overflow logits / temperature to inf
        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature < math.inf):
            raise ValueError(f"temperature must be 0 (greedy) or a number from {MIN_TEMPERATURE} "
                             f"up, got {self.temperature}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.threads < 0:
            raise ValueError(f"threads must not be negative, got {self.threads}")
        if self.refill_every < 1:
            raise ValueError(f"refill_every must be at least 1, got {self.refill_every}")
        self.stop = self.stop.replace("\\n", "\n")  # so that --stop '\n\n' works from a shell
        if self.unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', got {self.unknown!r}")
        if not -2**63 <= self.seed < 2**64:  # what torch.Generator.manual_seed accepts
            raise ValueError(f"seed must fit in 64 bits, got {self.seed}")


def read_prompt(start, max_bytes):
    """--start TEXT, or FILE:path for a prompt kept in a file (its last max_bytes)."""
    if not start.startswith("FILE:"):
        return start
    path = Path(start[len("FILE:") :])
    if not start[len("FILE:") :]:
        raise UserError("--start FILE: names no file; give FILE:path (or the prompt itself)")
    try:
        # a regular file (a FIFO would never end), and only the tail that the model reads
        return files.read_text_tail(files.regular_file(path, "prompt file"), max_bytes)
    except FileNotFoundError:
        raise UserError(f"prompt file {path} not found") from None
    except UnicodeDecodeError:
        raise UserError(f"prompt file {path} is not UTF-8 text") from None
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL character
        why = getattr(e, "strerror", None) or e
        raise UserError(f"cannot read prompt file {path}: {why}") from None


def encode_prompt(tokenizer, prompt, unknown):
    """Prompt text -> token ids. An empty prompt (or one emptied by --unknown skip) starts from a newline."""
    # the default prompt (a newline) is not the user's: a vocabulary without one starts from token 0
    try:
        ids = tokenizer.encode(prompt, unknown="skip" if prompt == "\n" else unknown)
    except UnknownCharacters as e:
        raise UserError(f"the prompt has {e} (use --unknown skip to drop them)") from None
    if not ids:
        if prompt != "\n" and prompt:
            print("note: --unknown skip dropped every character of the prompt; starting from a newline",
                  file=sys.stderr)
        ids = tokenizer.encode("\n", unknown="skip") or [0]
    return ids


def main(argv=None):
    parser = Parser(prog="sample.py", description="Generate text from a babygpt checkpoint.")
    add_dataclass_flags(parser, SampleConfig, "sampling")
    cfg = build(SampleConfig, vars(parser.parse_args(argv)), "invalid setting")

    path = Path(cfg.init_from) if cfg.init_from else checkpoint.resolve(cfg.out_dir, cfg.ckpt)
    device = pick_device(cfg.device)
    # the time per generated token tells it when another program takes a core (babygpt/threads.py)
    threads = use_threads(cfg.threads, adapt=device == "cpu")
    try:
        ckpt = gpt2.as_checkpoint(cfg.init_from) if cfg.init_from else checkpoint.load(path)
        model = checkpoint.load_model(ckpt, device, source=path)
    except checkpoint.CheckpointError as e:
        if elsewhere := files.elsewhere_hint(cfg.out_dir, "--out_dir"):  # (run from another folder)
            raise UserError(elsewhere) from None
        hint = "" if cfg.ckpt or path.exists() else " (train one with `python train.py`, or pass --ckpt FILE)"
        raise UserError(f"{e}{hint}") from None
    try:
        tokenizer = tokenizer_from_meta(ckpt["meta"])
    except TokenizerUnavailable as e:
        raise UserError(str(e)) from None
    context = engine.context_length(model.config)  # the prompt's last tokens that the model reads
    prompt_bytes = (context + 1) * tokenizer.max_token_bytes
    prompt = read_prompt(cfg.start, prompt_bytes)
    prompt_ids = encode_prompt(tokenizer, prompt, cfg.unknown)
    if len(prompt_ids) > context:  # the model reads only its window: the printed prompt is that window too
        print(f"note: the prompt is {len(prompt_ids):,} tokens; the model reads (and this prints) its last "
              f"{context:,}", file=sys.stderr)
        prompt_ids = prompt_ids[-context:]
    # one line, before the first tensor, if the samples cannot fit in memory
    memory.check_generation_fits(model.config, cfg.num_samples, cfg.max_new_tokens, device)
    print(f"{path}: iteration {ckpt['iter_num']}, val loss {ckpt['best_val_loss']:.4f}, "
          f"{model.num_params():,} parameters, on {device}", file=sys.stderr)

    if cfg.refill_every > model.config.block_size:
        raise UserError(f"refill_every must be at most the model's block_size "
                        f"({model.config.block_size})")
    if cfg.refill_every > 1 and model.config.attn_pattern == "sliding":
        raise UserError("refill_every does not apply to a sliding-window model: its rolling cache "
                        "never re-fills")

    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.interactive:
        interact(model, tokenizer, cfg, generator, device, threads)
    else:
        write_samples(model, tokenizer, prompt_ids, cfg, generator, device, threads=threads)


def write_samples(model, tokenizer, prompt_ids, cfg, generator, device, echo_prompt=True,
                  threads=None):
    """Generate cfg.num_samples continuations of prompt_ids as one batch and write them to stdout.

    One sample is streamed: each character is printed as soon as it exists. Several are printed
    together at the end, separated by a line. A sample ends after max_new_tokens, or right after the
    --stop text.
    """
    idx = torch.tensor([prompt_ids] * cfg.num_samples, dtype=torch.long, device=device)  # (N, T)
    prompt = tokenizer.decode(prompt_ids) if echo_prompt else ""
    texts = [""] * cfg.num_samples  # what each sample has generated so far
    # one incremental decoder per sample: a BPE token may end inside a multi-byte character, which
    # is held back until it is complete, so only whole characters are printed or searched for --stop
    decoders = [StreamDecoder(tokenizer) for _ in range(cfg.num_samples)]
    done = [False] * cfg.num_samples
    streaming = cfg.num_samples == 1
    if streaming:
        sys.stdout.write(prompt)
    steps = engine.stream(model, idx, cfg.max_new_tokens, cfg.temperature, cfg.top_k, generator,
                          cfg.top_p, cfg.kv_cache, cfg.refill_every)
    # the thread count adapts to other programs silently: a note would land between the samples
    if threads:
        threads.restart()
    for next_token in steps:  # (N, 1)
        if threads:
            threads.step()
        for row, token in enumerate(next_token[:, 0].tolist()):
            if done[row]:
                # a finished sample still rides along in the batch; its new tokens are dropped
                continue
            before = len(texts[row])
            texts[row] += decoders[row].add(token)
            if cfg.stop:
                found = texts[row].find(cfg.stop, max(0, before - len(cfg.stop) + 1))
                if found >= 0:
                    texts[row] = texts[row][: found + len(cfg.stop)]
                    done[row] = True
            if streaming:
                sys.stdout.write(texts[row][before:])
                sys.stdout.flush()
        if all(done):
            break
    # an unfinished character at the very end comes out as U+FFFD
    for row in range(cfg.num_samples):
        if not done[row]:
            tail = decoders[row].flush()
            texts[row] += tail
            if streaming:
                sys.stdout.write(tail)
    if streaming:
        sys.stdout.write("\n")
    else:
        print(SEPARATOR.join(prompt + text for text in texts))
    sys.stdout.flush()


PROMPT = "> "


def interact(model, tokenizer, cfg, generator, device, threads=None):
    """--interactive: a small loop. Read one prompt per line from stdin, write its continuation to stdout,
    repeat. The "> " marker and messages go to stderr, so stdout holds only generated text. End of input
    (Ctrl-D, or the end of a piped file) or Ctrl-C at the prompt ends it; Ctrl-C while generating stops that
    answer only. An empty line prompts with a newline."""
    runner.standard_input()  # closed (<&-): one line
    print("type a prompt and press Enter; Ctrl-D or Ctrl-C quits", file=sys.stderr)
    while True:
        sys.stderr.write(PROMPT)
        sys.stderr.flush()
        try:
            line = sys.stdin.readline(MAX_PROMPT_LINE + 1)  # bounded: `< /dev/zero` is one endless line
        except KeyboardInterrupt:
            line = ""
        if len(line) > MAX_PROMPT_LINE:
            raise UserError(f"a prompt line of more than {MAX_PROMPT_LINE:,} characters (only the last "
                            f"{engine.context_length(model.config):,} tokens are read); use --start FILE:path")
        if not line:  # readline returns "" only at end of input
            sys.stderr.write("\n")
            return
        try:
            prompt_ids = encode_prompt(tokenizer, line.rstrip("\n"), cfg.unknown)
            write_samples(model, tokenizer, prompt_ids, cfg, generator, device, echo_prompt=False,
                          threads=threads)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
        except KeyboardInterrupt:
            print("\n(stopped)", file=sys.stderr)

if __name__ == "__main__":
    run(main)
