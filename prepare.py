"""
prepare.py -- turn a text file into the integer sequences train.py reads.

    python prepare.py                         # Tiny Shakespeare into data/shakespeare_char/
    python prepare.py --input my.txt --out_dir data/mine
    python prepare.py --tokenizer gpt2        # GPT-2's BPE (tiktoken) into data/shakespeare_gpt2/
    python prepare.py --tokenizer bpe --vocab_size 512   # train your own BPE: data/shakespeare_bpe512/

Writes into --out_dir:
    train.bin  the first 90% of the characters of the text, encoded: one uint16 per token
    val.bin    the last 10%, encoded on its own
    meta.json  the tokenizer (what is needed to rebuild it), characters and tokens of each split, sha256 of the
               input, and each .bin file's size and checksum (train.py checks them before it trains)
    bpe.tiktoken  (bpe only) the learned tokens in tiktoken's rank-file format, for use outside babygpt

Every file is written under a temporary name and renamed into place, meta.json last (the old one is removed
first): killed at any moment, the folder holds the old data set, or the new one, or no meta.json at all --
never new tokens described by an old meta.json. A lock file stops a prepare into a folder a training reads.
"""

import hashlib
import json
import os
import sys
import urllib.request
from pathlib import Path

from babygpt import cli  # noqa: F401 -- first: then a Ctrl-C during the slow imports below exits quietly (cli.py)
import numpy as np

from babygpt import guards
from babygpt.cli import Parser, UserError, run
from babygpt.bpe import save_ranks, train_bpe
from babygpt.tokenizer import META_FORMAT, META_VERSION, BPETokenizer, CharTokenizer, GPT2Tokenizer, TokenizerUnavailable

SHAKESPEARE_DIR = Path("data/shakespeare_char")  # also where the downloaded input.txt lives
TOKENIZERS = ("char", "gpt2", "bpe")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9


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
        guards.write_atomically(path, lambda f: f.write(data))  # never half a text that looks whole
    except (OSError, guards.WriteError) as e:
        raise UserError(f"cannot save Tiny Shakespeare: {getattr(e, 'strerror', None) or e}") from None


BYTES_PER_CHARACTER = 16  # what preparing costs in memory per byte of input: the bytes, the str, the ids


def read_text(path):
    """Read a UTF-8 text file, or raise UserError saying why it cannot be used."""
    path = guards.regular_file(path, "input file")
    guards.check_memory(BYTES_PER_CHARACTER * path.stat().st_size, f"preparing {path} "
                        f"({guards.gigabytes(path.stat().st_size)})", "split the text into smaller files")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (bad byte at position {e.start}); convert it to UTF-8 first") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if not text:
        raise UserError(f"{path} is empty")
    return text


def make_tokenizer(kind, train_text, text, vocab_size, source_name):
    """The tokenizer of kind char, gpt2 or bpe. The BPE learns from the training split only: the validation
    text must stay unseen, or its bits per character would flatter the model."""
    if kind == "char":
        tokenizer = CharTokenizer.from_text(text)
        if tokenizer.vocab_size > np.iinfo(np.uint16).max + 1:
            raise UserError(f"{source_name} has {tokenizer.vocab_size} distinct characters; uint16 storage allows 65536")
        return tokenizer
    if kind == "gpt2":
        try:
            return GPT2Tokenizer()
        except TokenizerUnavailable as e:
            raise UserError(str(e)) from None
    if not 256 <= vocab_size <= 65536:
        raise UserError(f"--vocab_size must be between 256 (the single bytes) and 65536 (uint16 ids), got {vocab_size}")
    print(f"training a byte-level BPE with {vocab_size} tokens on {len(train_text):,} characters ...", file=sys.stderr)
    ranks, _ = train_bpe(train_text, vocab_size)
    if len(ranks) < vocab_size:
        print(f"note: the training text ran out of pairs to merge; the vocabulary has {len(ranks)} tokens", file=sys.stderr)
    return BPETokenizer(ranks)


def prepare(text, out_dir, source_name="input", tokenizer="char", vocab_size=512):
    """Split `text` 90/10 by characters, tokenize each part, write train.bin, val.bin and meta.json (and
    bpe.tiktoken for bpe) into out_dir; return the meta. Splitting the characters first (not the tokens) gives
    every tokenizer exactly the same validation text, so their bits per character can be compared."""
    split = int(len(text) * TRAIN_FRACTION)
    train_text, val_text = text[:split], text[split:]
    tokenizer = make_tokenizer(tokenizer, train_text, text, vocab_size, source_name)
    train_ids = np.array(tokenizer.encode(train_text), dtype=np.uint16)
    val_ids = np.array(tokenizer.encode(val_text), dtype=np.uint16)

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror}") from None
    lock_data_dir(out_dir, exclusive=True)
    try:
        return write_data_set(out_dir, tokenizer, train_text, val_text, train_ids, val_ids, text, source_name)
    finally:
        guards.unlock_folder(out_dir)


def write_data_set(out_dir, tokenizer, train_text, val_text, train_ids, val_ids, text, source_name):
    """train.bin, val.bin (and bpe.tiktoken) under temporary names, then renamed into place, meta.json last."""
    meta = {
        "format": META_FORMAT,
        "version": META_VERSION,
        **tokenizer.to_meta(),
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "input_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "source": source_name,
        "files": {},
    }
    try:
        # every file under a temporary name first (a full disk fails here, with the old data set untouched) ...
        staged = {name: Path(guards.write_atomically(out_dir / (name + ".new"), write))
                  for name, write in (("train.bin", train_ids.tofile), ("val.bin", val_ids.tofile))}
        if tokenizer.kind == "bpe":
            staged["bpe.tiktoken"] = out_dir / "bpe.tiktoken.new"
            save_ranks(tokenizer.ranks, staged["bpe.tiktoken"])
        for name in ("train.bin", "val.bin"):
            meta["files"][name] = {"bytes": staged[name].stat().st_size, "checksum": guards.file_checksum(staged[name])}
        meta_text = json.dumps(meta, ensure_ascii=False, indent=1) + "\n"
        # ... then the renames, meta.json last: until it is back, train.py says "run prepare.py"
        (out_dir / "meta.json").unlink(missing_ok=True)
        for name, path in staged.items():
            path.replace(out_dir / name)
        guards.write_atomically(out_dir / "meta.json", lambda f: f.write(meta_text.encode("utf-8")))
    except (guards.WriteError, OSError) as e:
        for name in ("train.bin", "val.bin", "bpe.tiktoken"):
            guards.discard(out_dir / (name + ".new"))
        raise UserError(f"cannot write to {out_dir}: {e.strerror if isinstance(e, OSError) else e}") from None
    return meta


def lock_data_dir(data_dir, exclusive):
    """prepare.py holds DATA_DIR's lock alone; a training shares it while it reads the folder."""
    hint = ("let the training finish (or stop it) before preparing into this folder, or use another --out_dir"
            if exclusive else "wait for prepare.py to finish")
    guards.lock_folder(data_dir, exclusive, hint)


def verify_split(data_dir, split):
    """DATA_DIR/{split}.bin, checked against meta.json before train.py maps it: a regular file of whole uint16
    tokens, of the size meta.json records, with the checksum it records (prepare.py from before checksums
    recorded only the token counts). Returns its path."""
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.bin"
    if not os.path.lexists(path):
        raise UserError(f"{path} not found: run `python prepare.py --out_dir {data_dir}` first")
    guards.regular_file(path, "data file")
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))  # already validated by read_meta
    size, again = path.stat().st_size, f"run prepare.py again for {data_dir}"
    if size % 2:
        raise UserError(f"{path} has an odd size ({size:,} bytes) but holds 2-byte tokens: it is damaged; {again}")
    if size != 2 * meta[f"{split}_tokens"]:
        raise UserError(f"{path} holds {size // 2:,} tokens but meta.json says {meta[f'{split}_tokens']:,} (cut short, "
                        f"or from another prepare); {again}")
    entry = meta["files"].get(f"{split}.bin") if isinstance(meta.get("files"), dict) else None
    recorded = entry.get("checksum") if isinstance(entry, dict) else None
    if recorded and guards.file_checksum(path) != recorded:
        raise UserError(f"{path} does not match the checksum in meta.json (changed since prepare.py wrote it); {again}")
    return path


def main(argv=None):
    parser = Parser(prog="prepare.py", description="Turn a UTF-8 text file into train.bin, val.bin and meta.json.")
    parser.add_argument("--input", help="a UTF-8 text file (default: Tiny Shakespeare, downloaded if missing)")
    parser.add_argument("--out_dir", help="where to write (default: data/shakespeare_<tokenizer>, or the input's folder)")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="char",
                        help="char: one token per character (default); gpt2: GPT-2's BPE via tiktoken; "
                             "bpe: train a byte-level BPE on the training split")
    parser.add_argument("--vocab_size", type=int, default=512, help="tokens of the bpe vocabulary (default: 512)")
    args = parser.parse_args(argv)

    if args.input:
        input_path = Path(args.input)
        out_dir = Path(args.out_dir) if args.out_dir else input_path.parent
    else:
        default_dir = {"char": SHAKESPEARE_DIR, "gpt2": Path("data/shakespeare_gpt2"),
                       "bpe": Path(f"data/shakespeare_bpe{args.vocab_size}")}[args.tokenizer]
        out_dir = Path(args.out_dir) if args.out_dir else default_dir
        input_path = (out_dir if args.out_dir else SHAKESPEARE_DIR) / "input.txt"
        if not input_path.exists():
            download_shakespeare(input_path)
    text = read_text(input_path)
    meta = prepare(text, out_dir, source_name=input_path.name, tokenizer=args.tokenizer, vocab_size=args.vocab_size)

    print(f"{input_path}: {len(text):,} characters; tokenizer {meta['tokenizer']}, {meta['vocab_size']} tokens")
    if meta["tokenizer"] == "char":
        print("vocabulary: " + "".join(meta["vocab"]).replace("\n", "\\n"))
    for split in ("train", "val"):
        chars, tokens = meta[f"{split}_chars"], meta[f"{split}_tokens"]
        print(f"{split + ':':6} {chars:,} characters -> {tokens:,} tokens ({chars / max(tokens, 1):.2f} characters per token) "
              f"-> {out_dir / (split + '.bin')}")


if __name__ == "__main__":
    run(main)
