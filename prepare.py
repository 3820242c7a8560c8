"""
prepare.py -- turn a text file into the integer sequences train.py reads.

    python prepare.py                  # Tiny Shakespeare into data/shakespeare_char/
    python prepare.py --input my.txt --out_dir data/mine
    python prepare.py --tokenizer gpt2 # GPT-2's BPE (tiktoken) into data/shakespeare_gpt2/
    python prepare.py --tokenizer bpe --vocab_size 512  # your own BPE: data/shakespeare_bpe512/

Writes into --out_dir:
    train.bin  the first 90% of the characters of the text, encoded: one uint16 per token
    val.bin    the last 10%, encoded on its own
    meta.json  the tokenizer (what is needed to rebuild it), characters and tokens of each split,
               sha256 of the input, and each .bin file's size and checksum (train.py checks them)
    bpe.tiktoken  (bpe only) the learned tokens in tiktoken's rank-file format, for use elsewhere

The new files are written whole into a staging folder first, then swapped in with renames, meta.json
last; a failure at any step puts the old data set back, and a kill leaves it whole in .prepare-old,
where the next prepare.py puts it back. Never new tokens described by an old meta.json. A lock file
stops a prepare into a folder that a training reads.
"""

import hashlib
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

from babygpt import files, locks, memory, runner

# Ctrl-C during the slow imports below (numpy, tiktoken): "interrupted", not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT, runner.exit_quietly)

import numpy as np

from babygpt.bpe import rank_file, train_bpe
from babygpt.cli import Parser, UserError
from babygpt.runner import run
from babygpt.tokenizer import (META_FORMAT, META_VERSION, BPETokenizer, CharTokenizer,
                               GPT2Tokenizer, TokenizerUnavailable)

SHAKESPEARE_DIR = Path("data/shakespeare_char")  # also where the downloaded input.txt lives
TOKENIZERS = ("char", "gpt2", "bpe")
SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                   "tinyshakespeare/input.txt")
TRAIN_FRACTION = 0.9
BOM = "\ufeff"  # the byte-order mark some editors put first: a marker, not a character of the text


def download_shakespeare(path):
    """Fetch Tiny Shakespeare into `path`; with no network, say where to put the file by hand."""
    print(f"downloading Tiny Shakespeare to {path} ...", file=sys.stderr)
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            data = response.read()
    except OSError as e:
        raise UserError(
            f"could not download Tiny Shakespeare ({getattr(e, 'reason', e)}); "
            f"copy its input.txt to {path} by hand, or use --input FILE"
        ) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # never half a text that looks whole
        files.write_atomically(path, lambda f: f.write(data))
    except (OSError, files.WriteError) as e:
        reason = getattr(e, "strerror", None) or e
        raise UserError(f"cannot save Tiny Shakespeare: {reason}") from None


# what preparing costs in memory per byte of input: the bytes, the str, the ids
BYTES_PER_CHARACTER = 16


def read_text(path):
    """Read a UTF-8 text file, or raise UserError saying why it cannot be used."""
    path = files.regular_file(path, "input file")
    size = path.stat().st_size
    memory.check_memory(BYTES_PER_CHARACTER * size, f"preparing {path} ({memory.gigabytes(size)})",
                        "split the text into smaller files")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (bad byte at position {e.start}); "
                        f"convert it to UTF-8 first") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if not text.removeprefix(BOM):
        raise UserError(f"{path} is empty")
    return text


def make_tokenizer(kind, train_text, text, vocab_size, source_name):
    """The tokenizer of kind char, gpt2 or bpe. The BPE learns from the training split only: the
    validation text must stay unseen, or its bits per character would flatter the model."""
    if kind == "char":
        tokenizer = CharTokenizer.from_text(text)
        if tokenizer.vocab_size > np.iinfo(np.uint16).max + 1:
            raise UserError(f"{source_name} has {tokenizer.vocab_size} distinct characters; "
                            f"uint16 storage allows 65536")
        return tokenizer
    if kind == "gpt2":
        try:
            return GPT2Tokenizer()
        except TokenizerUnavailable as e:
            raise UserError(str(e)) from None
    if not 256 <= vocab_size <= 65536:
        raise UserError(f"--vocab_size must be between 256 (the single bytes) and 65536 "
                        f"(uint16 ids), got {vocab_size}")
    print(f"training a byte-level BPE with {vocab_size} tokens on {len(train_text):,} characters "
          f"...", file=sys.stderr)
    ranks, _ = train_bpe(train_text, vocab_size)
    if len(ranks) < vocab_size:
        print(f"note: the training text ran out of pairs to merge; the vocabulary has "
              f"{len(ranks)} tokens", file=sys.stderr)
    return BPETokenizer(ranks)


def prepare(text, out_dir, source_name="input", tokenizer="char", vocab_size=512):
    """Split `text` 90/10 by characters, tokenize each part, write train.bin, val.bin and meta.json
    (and bpe.tiktoken for bpe) into out_dir; return the meta. Splitting the characters first (not
    the tokens) gives every tokenizer exactly the same validation text, so their bits per character
    can be compared. A byte-order mark at the start is left out (input_sha256 is still the
    input's)."""
    out_dir, made_here = Path(out_dir), not os.path.lexists(out_dir)
    hold_folder(out_dir)  # for the whole run: a second prepare.py into it is refused, not raced
    try:
        input_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        text = text.removeprefix(BOM)
        split = int(len(text) * TRAIN_FRACTION)
        train_text, val_text = text[:split], text[split:]
        tokenizer = make_tokenizer(tokenizer, train_text, text, vocab_size, source_name)
        train_ids = np.array(tokenizer.encode(train_text), dtype=np.uint16)
        val_ids = np.array(tokenizer.encode(val_text), dtype=np.uint16)
        restore_interrupted(out_dir)
        return write_data_set(out_dir, tokenizer, train_text, val_text, train_ids, val_ids,
                              input_sha256, source_name)
    except BaseException:
        if made_here:  # a folder this run made holds nothing of value: no empty folder left behind
            files.remove_folder(out_dir)
        raise
    finally:
        locks.unlock_folder(out_dir)


def hold_folder(out_dir):
    """OUT_DIR, made if missing and locked for this process alone (re-entrant: main and prepare both ask)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror}") from None
    locks.lock_data_dir(out_dir, exclusive=True)
    return out_dir


DATA_FILES = ("train.bin", "val.bin", "bpe.tiktoken", "meta.json")  # meta.json last: it commits
STAGING, BACKUP = ".prepare-new", ".prepare-old"  # folders inside out_dir, gone after every run


def write_data_set(out_dir, tokenizer, train_text, val_text, train_ids, val_ids, input_sha256,
                   source_name):
    """Write the new data set into a fresh staging folder, then swap it in (swap_in)."""
    meta = {
        "format": META_FORMAT,
        "version": META_VERSION,
        **tokenizer.to_meta(),
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "input_sha256": input_sha256,
        "source": source_name,
        "files": {},
    }
    staging = out_dir / STAGING
    try:
        # a full disk or a folder in the way fails here, with the old data set untouched
        files.fresh_folder(staging)
        for name, ids in (("train.bin", train_ids), ("val.bin", val_ids)):
            path = files.write_atomically(staging / name, ids.tofile)
            meta["files"][name] = {"bytes": path.stat().st_size,
                                   "checksum": files.file_checksum(path)}
        if tokenizer.kind == "bpe":
            ranks = rank_file(tokenizer.ranks)
            files.write_atomically(staging / "bpe.tiktoken", lambda f: f.write(ranks))
        meta_text = json.dumps(meta, ensure_ascii=False, indent=1) + "\n"
        files.write_atomically(staging / "meta.json", lambda f: f.write(meta_text.encode("utf-8")))
        swap_in(out_dir, staging)
    except (files.WriteError, OSError) as e:
        raise UserError(f"cannot write to {out_dir}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        files.remove_folder(staging)
    return meta


def swap_in(out_dir, staging):
    """Move the old data set aside into out_dir/.prepare-old, the staged one in, meta.json last;
    then drop the old one. A failure at any rename puts the old set back; a kill leaves it whole in
    .prepare-old, where the next prepare.py (restore_interrupted) finds it. Until the new meta.json
    is in place, train.py finds no meta.json and says to run prepare.py: never new tokens under an
    old meta.json."""
    backup = files.fresh_folder(out_dir / BACKUP)
    moved, placed = [], []
    try:
        # meta.json first: the moment it is gone, the folder no longer claims to hold a data set
        for name in DATA_FILES[::-1]:
            # a folder in the way is the user's: it stays, and the rename into its place fails
            if os.path.lexists(out_dir / name) and not os.path.isdir(out_dir / name):
                os.replace(out_dir / name, backup / name)
                moved.append(name)
        for name in DATA_FILES:
            if os.path.lexists(staging / name):
                os.replace(staging / name, out_dir / name)
                placed.append(name)
    except BaseException:
        put_back(out_dir, backup, moved, placed)
        raise
    files.sync_folder(out_dir)
    files.remove_folder(backup)


def put_back(out_dir, backup, moved, placed):
    """Undo a swap that stopped half way: the new files (placed) go, the old ones (moved) come back,
    meta.json last."""
    try:
        for name in placed:
            os.unlink(out_dir / name)
        for name in DATA_FILES:
            if name in moved:
                os.replace(backup / name, out_dir / name)
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror}; the previous data set is whole "
                        f"in {backup}: move its files back into {out_dir}") from None
    files.remove_folder(backup)


def restore_interrupted(out_dir):
    """A prepare.py killed in swap_in left the old data set in out_dir/.prepare-old: put it back,
    unless the new meta.json made it into place (then the kill came after the swap, and the new set
    is whole). Once the staging folder has given up its train.bin, every old file was aside: what is
    in out_dir then is new."""
    backup, staging = out_dir / BACKUP, out_dir / STAGING
    if not backup.is_dir():
        return
    if not os.path.lexists(out_dir / "meta.json") and (backup / "meta.json").is_file():
        print(f"note: putting back the data set that an interrupted prepare.py left in {backup}",
              file=sys.stderr)
        moved = [name for name in DATA_FILES if os.path.lexists(backup / name)]
        placing = staging.is_dir() and not os.path.lexists(staging / "train.bin")
        placed = [name for name in DATA_FILES if placing and os.path.lexists(out_dir / name)]
        put_back(out_dir, backup, moved, placed)
    files.remove_folder(backup)


def printable(text):
    """The vocabulary as one line: a line break, a tab, NUL or any other control character spelled
    out (\\n, \\t, \\x00), the visible characters as they are."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def main(argv=None):
    parser = Parser(prog="prepare.py",
                    description="Turn a UTF-8 text file into train.bin, val.bin and meta.json.")
    parser.add_argument("--input",
                        help="a UTF-8 text file (default: Tiny Shakespeare, downloaded if missing)")
    parser.add_argument("--out_dir", help="where to write (default: data/shakespeare_<tokenizer>, "
                                          "or the input's folder)")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="char",
                        help="char: one token per character (default); gpt2: GPT-2's BPE via "
                             "tiktoken; bpe: train a byte-level BPE on the training split")
    parser.add_argument("--vocab_size", type=int, default=512,
                        help="tokens of the bpe vocabulary (default: 512)")
    args = parser.parse_args(argv)
    # an empty name (a shell variable that was not set) is a mistake, not a request for the default
    for flag in ("input", "out_dir"):
        if getattr(args, flag) == "":
            raise UserError(f"--{flag} is empty; name a {'file' if flag == 'input' else 'folder'}, "
                            f"or leave --{flag} out for the default")

    if args.input is not None:
        input_path = Path(args.input)
        out_dir = Path(args.out_dir) if args.out_dir else input_path.parent
    else:
        default_dir = {"char": SHAKESPEARE_DIR, "gpt2": Path("data/shakespeare_gpt2"),
                       "bpe": Path(f"data/shakespeare_bpe{args.vocab_size}")}[args.tokenizer]
        out_dir = Path(args.out_dir) if args.out_dir else default_dir
        input_path = (out_dir if args.out_dir else SHAKESPEARE_DIR) / "input.txt"
        if out_dir.is_dir():  # held before the download: a second prepare.py into it is refused at once
            hold_folder(out_dir)
        if not input_path.exists():
            download_shakespeare(input_path)
    text = read_text(input_path)
    meta = prepare(text, out_dir, source_name=input_path.name, tokenizer=args.tokenizer,
                   vocab_size=args.vocab_size)

    print(f"{input_path}: {len(text):,} characters; "
          f"tokenizer {meta['tokenizer']}, {meta['vocab_size']} tokens")
    if meta["tokenizer"] == "char":
        print("vocabulary: " + printable("".join(meta["vocab"])))
    for split in ("train", "val"):
        chars, tokens = meta[f"{split}_chars"], meta[f"{split}_tokens"]
        per_token = chars / max(tokens, 1)
        print(f"{split + ':':6} {chars:,} characters -> {tokens:,} tokens "
              f"({per_token:.2f} characters per token) -> {out_dir / (split + '.bin')}")


if __name__ == "__main__":
    run(main)
