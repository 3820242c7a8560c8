"""
Text <-> integers. The lecture's first step: every character gets an integer.

The vocabulary (the sorted list of distinct characters of the input) is stored in meta.json next to the
data, and copied into every checkpoint, so a model can always be decoded without the data folder.
"""

import json
from pathlib import Path

META_FORMAT = "babygpt-meta"
META_VERSION = 1


class UnknownCharacters(ValueError):
    """The text has characters the vocabulary does not contain."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))
        super().__init__("characters not in the vocabulary: " + " ".join(repr(c) for c in self.chars))


class CharTokenizer:
    """One integer per character: the i-th character of the vocabulary is token i."""

    kind = "char"

    def __init__(self, vocab):
        self.vocab = list(vocab)  # index -> character
        self.index = {ch: i for i, ch in enumerate(self.vocab)}  # character -> index

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.vocab)

    def encode(self, text, unknown="error"):
        """str -> list of ints. unknown='error' raises UnknownCharacters; 'skip' drops such characters."""
        missing = [ch for ch in text if ch not in self.index]
        if missing and unknown == "error":
            raise UnknownCharacters(missing)
        return [self.index[ch] for ch in text if ch in self.index]

    def decode(self, ids):
        """list of ints -> str."""
        return "".join(self.vocab[i] for i in ids)

    def to_meta(self):
        return {"tokenizer": self.kind, "vocab": self.vocab, "vocab_size": self.vocab_size}


def tokenizer_from_meta(meta):
    """Rebuild the tokenizer described by a (validated) meta dict."""
    return CharTokenizer(meta["vocab"])


def validate_meta(meta, source):
    """Check a meta dict read from disk or a checkpoint; raise ValueError naming `source` if it is malformed."""
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: expected a JSON object")
    if meta.get("format", META_FORMAT) != META_FORMAT or meta.get("version", META_VERSION) != META_VERSION:
        raise ValueError(f"{source}: not a babygpt meta.json version {META_VERSION} "
                         f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
    if meta.get("tokenizer") != "char":
        raise ValueError(f"{source}: unknown tokenizer {meta.get('tokenizer')!r} (expected 'char')")
    vocab = meta.get("vocab")
    if not isinstance(vocab, list) or not all(isinstance(ch, str) and len(ch) == 1 for ch in vocab):
        raise ValueError(f"{source}: 'vocab' must be a list of single characters")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"{source}: 'vocab' has repeated characters")
    if type(meta.get("vocab_size")) is not int or meta["vocab_size"] != len(vocab):  # `type is int`: True == 1 otherwise
        raise ValueError(f"{source}: vocab_size {meta.get('vocab_size')!r} does not match the {len(vocab)} characters of 'vocab'")
    return meta


def read_meta(data_dir):
    """Load and validate DATA_DIR/meta.json."""
    path = Path(data_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run `python prepare.py --out_dir {data_dir}` first") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    return validate_meta(meta, str(path))
