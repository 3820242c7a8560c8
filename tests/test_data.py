"""Text becomes integers, and batches hold (context -> next character) examples."""

import json

import numpy as np
import torch

from babygpt.tokenizer import CharTokenizer, UnknownCharacters, read_meta
from prepare import prepare
from train import get_batch, load_split


def test_round_trip_and_split_sizes_on_tiny_shakespeare(shakespeare_text, tmp_path):
    meta = prepare(shakespeare_text, tmp_path)
    assert len(shakespeare_text) == 1_115_394 and meta["vocab_size"] == 65
    train_ids = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    val_ids = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    split = int(len(shakespeare_text) * 0.9)
    assert (len(train_ids), len(val_ids)) == (split, len(shakespeare_text) - split)
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train_ids), len(val_ids))
    tokenizer = CharTokenizer(read_meta(tmp_path)["vocab"])
    # the two files decode back to exactly the original text
    assert tokenizer.decode(train_ids.tolist()) + tokenizer.decode(val_ids.tolist()) == shakespeare_text


def test_meta_json_describes_the_vocabulary(tmp_path):
    prepare("hello world\n" * 10, tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))
    assert meta["tokenizer"] == "char"
    assert meta["vocab"] == sorted(set("hello world\n")) and meta["vocab_size"] == len(meta["vocab"])
    assert len(meta["input_sha256"]) == 64


def test_vocabulary_order_is_sorted_characters():
    tokenizer = CharTokenizer.from_text("hi there")
    assert tokenizer.vocab == [" ", "e", "h", "i", "r", "t"]
    assert tokenizer.encode("hi there") == [2, 3, 0, 5, 2, 1, 4, 1]


def test_unknown_characters_are_named_or_skipped():
    tokenizer = CharTokenizer.from_text("abc")
    try:
        tokenizer.encode("abxcz")
        raise AssertionError("expected UnknownCharacters")
    except UnknownCharacters as e:
        assert e.chars == ["x", "z"]
    assert tokenizer.decode(tokenizer.encode("abxcz", unknown="skip")) == "abc"


def test_targets_are_inputs_shifted_by_one(slice_dir):
    data = load_split(slice_dir, "train", block_size=16)
    x, y = get_batch(data, batch_size=4, block_size=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x moved one step to the left ...
    # ... and each row with its last target is a real, contiguous piece of the token stream
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(data), 17)  # (N-16, 17)
    for row_x, row_y in zip(x, y):
        piece = np.append(row_x.numpy(), row_y[-1].item())
        assert (windows == piece).all(axis=1).any()
