"""
prepare.py -- turn a text file into the integer sequences train.py reads.

    python prepare.py                         # Tiny Shakespeare into data/shakespeare_char/
    python prepare.py --input my.txt --out_dir data/mine

Writes into --out_dir:
    train.bin  the first 90% of the text, one uint16 per character
    val.bin    the last 10%
    meta.json  the tokenizer (the vocabulary as an ordered list of characters), sizes, sha256 of the input
"""

import hashlib
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np

from cli import Parser, UserError, run
from tokenizer import META_FORMAT, META_VERSION, CharTokenizer

SHAKESPEARE_DIR = Path("data/shakespeare_char")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def read_text(path):
    """Read a UTF-8 text file, or raise UserError saying why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file {path} not found" if not path.exists() else f"{path} is not a file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (bad byte at position {e.start}); convert it to UTF-8 first") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if not text:
        raise UserError(f"{path} is empty")
    return text


def prepare(text, out_dir, source_name="input"):
    """Tokenize `text`, split it 90/10, write train.bin, val.bin and meta.json into out_dir; return the meta."""
    tokenizer = CharTokenizer.from_text(text)
    if tokenizer.vocab_size > np.iinfo(np.uint16).max + 1:
        raise UserError(f"{source_name} has {tokenizer.vocab_size} distinct characters; uint16 storage allows 65536")
    split = int(len(text) * TRAIN_FRACTION)
    train_text, val_text = text[:split], text[split:]
    train_ids = np.array(tokenizer.encode(train_text), dtype=np.uint16)
    val_ids = np.array(tokenizer.encode(val_text), dtype=np.uint16)

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        train_ids.tofile(out_dir / "train.bin")
        val_ids.tofile(out_dir / "val.bin")
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
        }
        (out_dir / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror}") from None
    return meta


def main(argv=None):
    parser = Parser(prog="prepare.py", description="Turn a UTF-8 text file into train.bin, val.bin and meta.json.")
    parser.add_argument("--input", help="a UTF-8 text file (default: Tiny Shakespeare, downloaded if missing)")
    parser.add_argument("--out_dir", help="where to write (default: data/shakespeare_char, or the input's folder)")
    args = parser.parse_args(argv)

    if args.input:
        input_path = Path(args.input)
        out_dir = Path(args.out_dir) if args.out_dir else input_path.parent
    else:
        out_dir = Path(args.out_dir) if args.out_dir else SHAKESPEARE_DIR
        input_path = out_dir / "input.txt"
        if not input_path.exists():
            download_shakespeare(input_path)
    text = read_text(input_path)
    meta = prepare(text, out_dir, source_name=input_path.name)

    shown = "".join(meta["vocab"]).replace("\n", "\\n")
    print(f"{input_path}: {len(text):,} characters, {meta['vocab_size']} distinct")
    print(f"vocabulary: {shown}")
    print(f"train: {meta['train_tokens']:,} tokens -> {out_dir / 'train.bin'}")
    print(f"val:   {meta['val_tokens']:,} tokens -> {out_dir / 'val.bin'}")


if __name__ == "__main__":
    run(main)
