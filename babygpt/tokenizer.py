"""
Text <-> integers. The lecture's first step: every character gets an integer.

Three tokenizers, chosen with `prepare.py --tokenizer`:
    char  one token per character; the vocabulary is the sorted list of the input's distinct characters
    gpt2  GPT-2's byte-level BPE (tiktoken's r50k_base, 50257 tokens), fixed, trained by OpenAI on web text
    bpe   a byte-level BPE you train on your own text (bpe.py), with the vocabulary size you choose
What is needed to rebuild the tokenizer is stored in meta.json next to the data, and copied into every
checkpoint, so a model can always be decoded without the data folder (gpt2 also needs tiktoken's cached file).

Because the tokenizers cut text differently, compare models in bits per character, never in loss per token.
"""

import codecs
import hashlib
import itertools
import json
import math
import os
import random
from pathlib import Path

import tiktoken

from babygpt import files
from babygpt.bpe import SPLIT_PATTERNS, ranks_from_base64, ranks_to_base64
from babygpt.cli import UserError

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
    max_token_bytes = 4  # a character: at most 4 bytes of UTF-8

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

    def token_bytes(self, token_id):
        return self.vocab[token_id].encode("utf-8")

    def to_meta(self):
        return {"tokenizer": self.kind, "vocab": self.vocab, "vocab_size": self.vocab_size}


class TokenizerUnavailable(Exception):
    """The tokenizer's files cannot be had (gpt2 without tiktoken's cached file and without network)."""


class TiktokenTokenizer:
    """A byte-level BPE run by tiktoken (its fast Rust core): text -> UTF-8 bytes -> tokens. Every string can
    be encoded (any byte is a token), so there are no unknown characters; `unknown` is accepted and ignored."""

    max_token_bytes = 1024  # MAX_TOKEN_BYTES below, what a bpe meta.json may hold (GPT-2's longest token: 128)

    def __init__(self, encoding):
        self.encoding = encoding

    @property
    def vocab_size(self):
        return self.encoding.n_vocab

    def encode(self, text, unknown="error"):
        return self.encoding.encode_ordinary(text)  # ordinary: "<|endoftext|>" in the text is just text

    def decode(self, ids):
        """list of ints -> str. A sequence the model made up may cut a UTF-8 character in half; such bytes
        become U+FFFD (the replacement character) instead of an error."""
        return self.encoding.decode(ids, errors="replace")

    def token_bytes(self, token_id):
        return self.encoding.decode_single_token_bytes(token_id)


class GPT2Tokenizer(TiktokenTokenizer):
    """GPT-2's BPE: tiktoken's r50k_base. tiktoken downloads its rank file once and caches it in the folder
    named by TIKTOKEN_CACHE_DIR (or a temp folder); offline, that cached file is all it needs."""

    kind = "gpt2"
    ENCODING = "r50k_base"
    VOCAB_SIZE = 50257  # the 256 bytes, 50,000 merges, and <|endoftext|> (id 50256)

    EXPECTED_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # tiktoken_ext's
    URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"

    def __init__(self):
        self.check_cached_file()
        try:
            super().__init__(tiktoken.get_encoding(self.ENCODING))
        except (OSError, ValueError) as e:  # requests' connection errors are OSErrors; a bad hash is a ValueError
            cache = os.environ.get("TIKTOKEN_CACHE_DIR") or "tiktoken's default cache (TIKTOKEN_CACHE_DIR is not set)"
            reason = type(e).__name__ if isinstance(e, OSError) else str(e)[:100]
            raise TokenizerUnavailable(
                f"cannot load GPT-2's tokenizer ({self.ENCODING}): it is not in {cache} and downloading it failed "
                f"({reason}); connect to the internet once, or set TIKTOKEN_CACHE_DIR to a folder holding "
                f"tiktoken's cached {self.ENCODING} file") from None

    @classmethod
    def check_cached_file(cls):
        """tiktoken deletes a cached file whose hash is wrong and then tries to download it again; offline that
        reads as "not in the cache". Look first, and name the damaged file instead (it is left in place)."""
        cache = os.environ.get("TIKTOKEN_CACHE_DIR")
        path = Path(cache) / hashlib.sha1(cls.URL.encode()).hexdigest() if cache else None
        if path is None or not path.is_file():
            return
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise TokenizerUnavailable(f"cannot read tiktoken's cached {cls.ENCODING} file {path}: {e.strerror}") from None
        if digest != cls.EXPECTED_SHA256:
            raise TokenizerUnavailable(f"tiktoken's cached {cls.ENCODING} file {path} is damaged or altered (its sha256 "
                                       f"is not the published one); replace it with a good copy or delete it and "
                                       f"connect to the internet once")

    def to_meta(self):
        return {"tokenizer": self.kind, "encoding": self.ENCODING, "vocab_size": self.VOCAB_SIZE}


class BPETokenizer(TiktokenTokenizer):
    """A byte-level BPE trained by bpe.py: `ranks` lists the token byte strings, token id = index."""

    kind = "bpe"

    def __init__(self, ranks, pattern="gpt2"):
        self.ranks, self.pattern = list(ranks), pattern
        super().__init__(tiktoken.Encoding(
            name=f"babygpt-bpe-{len(self.ranks)}", pat_str=SPLIT_PATTERNS[pattern],
            mergeable_ranks={token: rank for rank, token in enumerate(self.ranks)}, special_tokens={}))

    def to_meta(self):
        # base64 keeps arbitrary bytes (half of a UTF-8 character, say) as plain JSON text
        return {"tokenizer": self.kind, "pattern": self.pattern, "vocab_size": len(self.ranks),
                "ranks": ranks_to_base64(self.ranks)}


class StreamDecoder:
    """Token ids in, text out, one token at a time, for printing while sampling. With a byte-level BPE a token
    can end in the middle of a UTF-8 character ("é" is 2 bytes, which may sit in two tokens): the incremental
    UTF-8 decoder holds such bytes back until the character is complete, so only whole characters come out."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id):
        return self.utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self):
        """Whatever is still held back (an unfinished character) -- as U+FFFD."""
        return self.utf8.decode(b"", final=True)


def bits_per_character(mean_token_loss, num_tokens, num_chars):
    """Cross-entropy in bits per character of text, the unit in which different tokenizers can be compared.
    mean_token_loss is in nats per token; times num_tokens it is the total nats the model needs for the text;
    spread over its num_chars characters and divided by ln 2 (nats -> bits), it is bits per character."""
    return mean_token_loss * num_tokens / num_chars / math.log(2)


# what defines each kind of tokenizer (besides vocab_size): equal values mean the same token ids
DEFINING_KEYS = {"char": ("vocab",), "gpt2": ("encoding",), "bpe": ("pattern", "ranks")}


def same_tokenizer(meta_a, meta_b):
    """True if two (validated) metas describe the same tokenizer, i.e. the same text -> ids mapping."""
    kind = meta_a["tokenizer"]
    return kind == meta_b["tokenizer"] and all(meta_a[k] == meta_b[k] for k in ("vocab_size", *DEFINING_KEYS[kind]))


def tokenizer_from_meta(meta):
    """Rebuild the tokenizer described by a (validated) meta dict. gpt2 may raise TokenizerUnavailable."""
    if meta["tokenizer"] == "gpt2":
        return GPT2Tokenizer()
    if meta["tokenizer"] == "bpe":
        return BPETokenizer(ranks_from_base64(meta["ranks"]), meta["pattern"])
    return CharTokenizer(meta["vocab"])


def validate_meta(meta, source):
    """Check a meta dict read from disk or a checkpoint; raise ValueError naming `source` if it is malformed."""
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: expected a JSON object")
    if meta.get("format", META_FORMAT) != META_FORMAT or meta.get("version", META_VERSION) != META_VERSION:
        raise ValueError(f"{source}: not a babygpt meta.json version {META_VERSION} "
                         f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
    if meta.get("tokenizer") not in DEFINING_KEYS:
        raise ValueError(f"{source}: unknown tokenizer {meta.get('tokenizer')!r} (expected one of {', '.join(DEFINING_KEYS)})")
    for key in ("train_chars", "val_chars", "train_tokens", "val_tokens"):  # absent in hand-made metas: fine
        if key in meta and not (type(meta[key]) is int and meta[key] >= 0):
            raise ValueError(f"{source}: {key} must be a non-negative integer, got {meta[key]!r}")
    if meta["tokenizer"] == "gpt2":
        return validate_gpt2_meta(meta, source)
    if meta["tokenizer"] == "bpe":
        return validate_bpe_meta(meta, source)
    vocab = meta.get("vocab")
    if not isinstance(vocab, list) or not all(isinstance(ch, str) and len(ch) == 1 for ch in vocab):
        raise ValueError(f"{source}: 'vocab' must be a list of single characters")
    surrogates = [ch for ch in vocab if "\ud800" <= ch <= "\udfff"]  # JSON can spell them; no text holds them
    if surrogates:
        raise ValueError(f"{source}: 'vocab' holds {ascii(surrogates[0])}, half of a UTF-16 pair: not a character")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"{source}: 'vocab' has repeated characters")
    if vocab != sorted(vocab):  # prepare.py writes it sorted: two characters swapped would decode wrong letters
        raise ValueError(f"{source}: 'vocab' is not in the sorted order prepare.py writes (edited by hand?); "
                         f"run prepare.py again")
    if type(meta.get("vocab_size")) is not int or meta["vocab_size"] != len(vocab):  # `type is int`: True == 1 otherwise
        raise ValueError(f"{source}: vocab_size {meta.get('vocab_size')!r} does not match the {len(vocab)} characters of 'vocab'")
    return meta


def validate_gpt2_meta(meta, source):
    if meta.get("encoding") != GPT2Tokenizer.ENCODING:
        raise ValueError(f"{source}: gpt2 tokenizer with encoding {meta.get('encoding')!r} (expected {GPT2Tokenizer.ENCODING!r})")
    if meta.get("vocab_size") != GPT2Tokenizer.VOCAB_SIZE:
        raise ValueError(f"{source}: vocab_size {meta.get('vocab_size')!r} does not match gpt2's {GPT2Tokenizer.VOCAB_SIZE}")
    return meta


def validate_bpe_meta(meta, source):
    """A byte-level BPE table must start with the 256 single bytes, and every later token must be two earlier
    tokens glued together (that is what a merge makes; tiktoken's encoder relies on it)."""
    if meta.get("pattern") not in SPLIT_PATTERNS:
        raise ValueError(f"{source}: unknown split pattern {meta.get('pattern')!r} (expected one of {', '.join(SPLIT_PATTERNS)})")
    strings = meta.get("ranks")
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise ValueError(f"{source}: 'ranks' must be a list of base64 strings")
    try:
        ranks = ranks_from_base64(strings)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if meta.get("vocab_size") != len(ranks):
        raise ValueError(f"{source}: vocab_size {meta.get('vocab_size')!r} does not match the {len(ranks)} tokens of 'ranks'")
    if not 256 <= len(ranks) <= 65536:
        raise ValueError(f"{source}: a byte-level BPE has 256 to 65536 tokens (uint16 ids), got {len(ranks)}")
    if ranks[:256] != [bytes([b]) for b in range(256)]:
        raise ValueError(f"{source}: the first 256 tokens of 'ranks' must be the single bytes 0..255 in order")
    longest = max(range(len(ranks)), key=lambda rank: len(ranks[rank]))
    if len(ranks[longest]) > MAX_TOKEN_BYTES:
        raise ValueError(f"{source}: a BPE token has at most {MAX_TOKEN_BYTES} bytes, but token {longest} has "
                         f"{len(ranks[longest]):,}")
    if sum(map(len, ranks)) > MAX_RANKS_BYTES:
        raise ValueError(f"{source}: a BPE vocabulary has at most {MAX_RANKS_BYTES:,} bytes in all, but this "
                         f"one has {sum(map(len, ranks)):,}")
    check_merges(ranks, source)
    return meta


MAX_TOKEN_BYTES = 1024  # bpe.py's tokens are merges within 256-character pieces: at most 1024 UTF-8 bytes
MAX_RANKS_BYTES = 4 << 20  # all tokens together (GPT-2's 50,257 take 320,814 bytes, the longest 128)
HASH_MODULUS = (1 << 61) - 1  # a prime: polynomial hashes of byte strings modulo it rarely collide


def check_merges(ranks, source):
    """Every token after the 256 bytes must be two earlier tokens glued together, in time linear in the
    bytes of all tokens: trying each cut of a token with slices (token[:cut] in seen) costs its length
    squared, minutes for one crafted 1 MB token. Instead a rolling hash gives the hash of every prefix and
    every suffix in one pass; only a cut whose two hashes both belong to earlier tokens is compared byte by
    byte. The base is random, so no vocabulary can be made to collide on purpose."""
    base, m = random.randrange(256, HASH_MODULUS), HASH_MODULUS
    powers = list(itertools.accumulate(range(MAX_TOKEN_BYTES), lambda p, _: p * base % m, initial=1))
    seen, hashes = set(), set()  # the earlier tokens, and their (length, hash) pairs
    for rank, token in enumerate(ranks):
        # prefix[i]: the hash of token[:i]
        prefix = list(itertools.accumulate(token, lambda h, b: (h * base + b) % m, initial=0))
        n, whole = len(token), prefix[-1]
        if token in seen:
            raise ValueError(f"{source}: token {rank} repeats an earlier token")
        if rank >= 256 and not any((cut, prefix[cut]) in hashes
                                   and (n - cut, (whole - prefix[cut] * powers[n - cut]) % m) in hashes
                                   and token[:cut] in seen and token[cut:] in seen for cut in range(1, n)):
            raise ValueError(f"{source}: token {rank} is not a merge of two earlier tokens")
        seen.add(token)
        hashes.add((n, whole))


def read_meta(data_dir):
    """Load and validate DATA_DIR/meta.json."""
    if not os.path.lexists(data_dir):
        raise FileNotFoundError(files.elsewhere_hint(data_dir, "--data_dir") or f"data folder {data_dir} not found: "
                                f"run `python prepare.py --out_dir {data_dir}` first (or name another folder with "
                                f"--data_dir)")
    files.folder(data_dir, "data folder")
    path = Path(data_dir) / "meta.json"
    try:
        meta = json.loads(files.regular_file(path, "meta file").read_text(encoding="utf-8"))
    except UserError as e:
        if os.path.lexists(path):
            raise ValueError(str(e)) from None
        backup = Path(data_dir) / ".prepare-old"
        if (backup / "meta.json").is_file():  # prepare.py was killed while swapping in a new data set
            raise FileNotFoundError(f"{path} not found: a prepare.py into {data_dir} was stopped; the previous "
                                    f"data set is whole in {backup}: run `python prepare.py --out_dir "
                                    f"{data_dir}` again (it first puts that one back)") from None
        raise FileNotFoundError(f"{path} not found: run `python prepare.py --out_dir {data_dir}` first") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    validate_meta(meta, str(path))
    for key in ("train_chars", "val_chars", "train_tokens", "val_tokens"):  # train.py needs them for bits/char
        if key not in meta:
            raise ValueError(f"{path}: {key} is missing; run prepare.py again")
    if meta["val_chars"] < 1:
        raise ValueError(f"{path}: val_chars must be at least 1")
    return meta
