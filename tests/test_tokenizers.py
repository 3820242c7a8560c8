"""Three tokenizers (char, gpt2, bpe): exact round trips, a BPE trainer that does what the textbook says,
tiktoken-compatible rank files, bits per character, and sampling from a BPE model without its data folder."""

import json
import math
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tiktoken
import tiktoken.load
from conftest import ROOT, TINY, skip_for_missing_data, train_main

import sample
from babygpt import checkpoint
from babygpt.bpe import encode_with_merges, train_bpe
from babygpt.runner import run
from babygpt.tokenizer import (BPETokenizer, CharTokenizer, GPT2Tokenizer, StreamDecoder,
                               TokenizerUnavailable, bits_per_character, read_meta, same_tokenizer,
                               tokenizer_from_meta, validate_meta)
from prepare import main as prepare_main
from prepare import prepare

SHARED_TIKTOKEN_CACHE = ROOT.parent / "shared" / "data" / "tiktoken-cache"


@pytest.fixture
def gpt2(monkeypatch):
    """GPT-2's tokenizer, from TIKTOKEN_CACHE_DIR, else the shared offline cache, else a download."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ and SHARED_TIKTOKEN_CACHE.is_dir():
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED_TIKTOKEN_CACHE))
    try:
        return GPT2Tokenizer()
    except TokenizerUnavailable as e:
        reason = f"GPT-2's rank file is not cached and cannot be downloaded ({e})"
    skip_for_missing_data(reason)


@pytest.fixture(scope="session")
def shakespeare_bpe(shakespeare_text):
    """A 512-token BPE trained on the first 50,000 characters (training on all of it takes seconds)."""
    ranks, merges = train_bpe(shakespeare_text[:50_000], 512)
    return BPETokenizer(ranks), merges


# -- the BPE trainer


def test_bpe_learns_the_most_frequent_pairs_in_order():
    # the textbook example: "aa" occurs 4 times; then "ab" and "aa"+"a" tie at 2 and the smaller pair
    # (97, 98) wins; then "aa"+"ab" occurs twice
    ranks, merges = train_bpe("aaabdaaabac", 259)
    assert merges == [(97, 97), (97, 98), (256, 257)]
    assert ranks[:256] == [bytes([b]) for b in range(256)] and ranks[256:] == [b"aa", b"ab", b"aaab"]
    assert encode_with_merges("aaabdaaabac", merges) == [258, 100, 258, 97, 99]  # aaab d aaab a c
    assert BPETokenizer(ranks).encode("aaabdaaabac") == [258, 100, 258, 97, 99]  # tiktoken agrees


def test_bpe_merges_never_cross_word_boundaries(shakespeare_bpe):
    tokenizer, _ = shakespeare_bpe
    for token in tokenizer.ranks[256:]:
        if not token.isspace():  # a run of spaces or newlines may be one token; words keep only a leading space
            assert b" " not in token[1:] and b"\n" not in token, token
    assert b" the" in tokenizer.ranks and b"d the" not in tokenizer.ranks


def test_bpe_stops_when_the_text_has_no_pairs_left():
    # chunks "ab" and " ab": merge "ab", then " " + "ab"; after that every chunk is a single token
    ranks, merges = train_bpe("ab ab", 1000)
    assert merges == [(97, 98), (32, 256)] and ranks[256:] == [b"ab", b" ab"]


def test_tiktoken_encoding_equals_replaying_the_merges(shakespeare_text, shakespeare_bpe):
    tokenizer, merges = shakespeare_bpe
    text = shakespeare_text[-5_000:]  # text the BPE was not trained on
    assert tokenizer.encode(text) == encode_with_merges(text, merges)


def test_saved_rank_file_loads_back_into_tiktoken_with_identical_ids(shakespeare_text, tmp_path, monkeypatch):
    meta = prepare(shakespeare_text[:20_000], tmp_path, tokenizer="bpe", vocab_size=300)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # "" = no cache: tiktoken reads the local file directly
    ranks = tiktoken.load.load_tiktoken_bpe(str(tmp_path / "bpe.tiktoken"))
    assert len(ranks) == meta["vocab_size"] == 300
    ours = tokenizer_from_meta(meta)
    theirs = tiktoken.Encoding(name="from-file", pat_str=ours.encoding._pat_str, mergeable_ranks=ranks, special_tokens={})
    text = shakespeare_text[:20_000]
    train_ids = np.fromfile(tmp_path / "train.bin", dtype=np.uint16).tolist()
    assert theirs.encode_ordinary(text[:18_000]) == ours.encode(text[:18_000]) == train_ids


# -- round trips on all of Tiny Shakespeare, and on text it never contained


def test_round_trip_is_exact_for_every_tokenizer(shakespeare_text, shakespeare_bpe, gpt2):
    strange = "Café naïve — 日本語 🙂 <|endoftext|> \t\r\n  x"
    char = CharTokenizer.from_text(shakespeare_text)
    bpe, _ = shakespeare_bpe
    for tokenizer in (char, bpe, gpt2):
        ids = tokenizer.encode(shakespeare_text)
        assert max(ids) < tokenizer.vocab_size <= 65536  # fits the uint16 files
        assert tokenizer.decode(ids) == shakespeare_text, tokenizer.kind
    for tokenizer in (bpe, gpt2):  # byte-level: nothing is unknown
        assert tokenizer.decode(tokenizer.encode(strange)) == strange
    # fewer tokens for the same text is what a bigger vocabulary buys
    assert len(gpt2.encode(shakespeare_text)) < len(bpe.encode(shakespeare_text)) < len(shakespeare_text)


def test_gpt2_is_tiktokens_r50k_base(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.vocab_size == 50257


def test_gpt2_without_cache_or_network_is_one_clear_line(tmp_path):
    (tmp_path / "t.txt").write_text("hello world\n" * 50)
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache")}
    result = subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--input", tmp_path / "t.txt", "--tokenizer", "gpt2",
                             "--out_dir", tmp_path / "out"], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        pytest.skip("this machine has network access: tiktoken downloaded the file")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "TIKTOKEN_CACHE_DIR" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_prepare_splits_characters_then_encodes_each_part(shakespeare_text, tmp_path):
    text = shakespeare_text[:20_000]
    meta = prepare(text, tmp_path, tokenizer="bpe", vocab_size=300)
    split = int(len(text) * 0.9)
    assert (meta["train_chars"], meta["val_chars"]) == (split, len(text) - split)  # the same as for char
    tokenizer = tokenizer_from_meta(read_meta(tmp_path))
    train_ids = np.fromfile(tmp_path / "train.bin", dtype=np.uint16).tolist()
    val_ids = np.fromfile(tmp_path / "val.bin", dtype=np.uint16).tolist()
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train_ids), len(val_ids))
    assert tokenizer.decode(train_ids) == text[:split] and tokenizer.decode(val_ids) == text[split:]
    assert meta["train_tokens"] < meta["train_chars"]  # merges made tokens longer than one character


# -- streaming: only whole characters are printed


def test_stream_decoder_holds_back_half_characters(shakespeare_bpe):
    tokenizer, _ = shakespeare_bpe
    stream = StreamDecoder(tokenizer)
    assert [stream.add(b) for b in "é!".encode("utf-8")] == ["", "é", "!"]  # é is 2 bytes: nothing, then é
    rng = random.Random(0)
    for _ in range(50):  # any sequence, valid UTF-8 or not: streamed text == text decoded all at once
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 30))]
        stream = StreamDecoder(tokenizer)
        assert "".join(stream.add(i) for i in ids) + stream.flush() == tokenizer.decode(ids)


# -- bits per character


def test_bits_per_character_by_hand():
    # 4 tokens for 8 characters, each token costing 2 bits = 2 ln 2 nats: 8 bits in all, 1 bit per character
    assert bits_per_character(2 * math.log(2), num_tokens=4, num_chars=8) == pytest.approx(1.0)
    # a char model that is unsure between 4 characters everywhere: ln 4 nats per token = 2 bits per character
    assert bits_per_character(math.log(4), num_tokens=10, num_chars=10) == pytest.approx(2.0)


def test_char_run_logs_bits_per_character(trained_run):
    evals = [r for r in map(json.loads, (trained_run / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
    for r in evals:  # one token per character: bits per character is the loss in bits
        assert r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2))


# -- meta.json: what rebuilds the tokenizer, and refusing a tampered one


def bpe_meta():
    ranks, _ = train_bpe("aaabdaaabac", 259)
    return {"tokenizer": "bpe", **BPETokenizer(ranks).to_meta()}


@pytest.mark.parametrize("tamper, message", [
    (lambda m: m.update(vocab_size=300), "vocab_size 300 does not match the 259 tokens"),
    (lambda m: m["ranks"].__setitem__(258, "eHl6"), "token 258 is not a merge"),  # b"xyz"
    (lambda m: m["ranks"].__setitem__(65, "Qg=="), "single bytes"),  # byte 65 replaced by b"B"
    (lambda m: m["ranks"].__setitem__(257, "YWE="), "token 257 repeats"),  # b"aa" twice
    (lambda m: m["ranks"].__setitem__(0, "not base64!"), "base64"),
    (lambda m: m.update(pattern=r"(?s).*"), "unknown split pattern"),
    (lambda m: m.update(tokenizer="sentencepiece"), "unknown tokenizer 'sentencepiece'"),
    (lambda m: m.update(val_chars=-1), "val_chars must be a non-negative integer"),
])
def test_tampered_bpe_meta_is_refused(tamper, message):
    meta = bpe_meta()
    validate_meta(meta, "meta.json")  # the untouched one is fine
    tamper(meta)
    with pytest.raises(ValueError, match="meta.json: ") as e:
        validate_meta(meta, "meta.json")
    assert message in str(e.value)


@pytest.mark.parametrize("meta, message", [
    ({"tokenizer": "gpt2", "encoding": "cl100k_base", "vocab_size": 50257}, "encoding 'cl100k_base'"),
    ({"tokenizer": "gpt2", "encoding": "r50k_base", "vocab_size": 512}, "vocab_size 512 does not match gpt2's 50257"),
])
def test_tampered_gpt2_meta_is_refused(meta, message):
    with pytest.raises(ValueError, match=message):
        validate_meta(meta, "meta.json")


def test_same_tokenizer_compares_what_defines_the_ids():
    char = {"tokenizer": "char", **CharTokenizer.from_text("abc").to_meta()}
    bpe = bpe_meta()
    assert same_tokenizer(bpe, {**bpe, "train_chars": 5}) and not same_tokenizer(bpe, char)
    assert not same_tokenizer(bpe, {**bpe, "ranks": bpe["ranks"][:-1], "vocab_size": 258})


# -- end to end: train on BPE tokens, sample without the data folder


def test_train_and_sample_a_bpe_model_without_its_data_folder(shakespeare_text, tmp_path, capsys):
    data_dir, out_dir = tmp_path / "data", tmp_path / "out"
    meta = prepare(shakespeare_text[:20_000], data_dir, tokenizer="bpe", vocab_size=320)
    train_main("--data_dir", data_dir, "--out_dir", out_dir, "--max_iters", 20, "--eval_interval", 10, *TINY)
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in records if "val_loss" in r):  # bits per character uses this split's characters per token
        assert r["val_bpc"] == pytest.approx(r["val_loss"] * meta["val_tokens"] / meta["val_chars"] / math.log(2))
    ckpt = checkpoint.load(out_dir / "ckpt.pt")
    assert ckpt["meta"]["tokenizer"] == "bpe" and ckpt["model_config"]["vocab_size"] == 320
    shutil.rmtree(data_dir)  # the checkpoint carries the tokenizer
    capsys.readouterr()  # forget training's output

    prompt = "ROMEO: café"  # é is not in the training text; byte-level BPE encodes it anyway
    run(sample.main, ["--out_dir", str(out_dir), "--start", prompt, "--max_new_tokens", "30"])
    streamed = capsys.readouterr().out
    assert streamed.startswith(prompt) and len(streamed) > len(prompt) + 10
    run(sample.main, ["--out_dir", str(out_dir), "--num_samples", "2", "--max_new_tokens", "20", "--seed", "3"])
    assert capsys.readouterr().out.count("-" * 40) == 1  # two samples


def test_prepare_refuses_an_impossible_bpe_vocabulary(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("hello world\n" * 50)
    with pytest.raises(SystemExit) as exit_info:
        run(prepare_main, ["--input", str(tmp_path / "t.txt"), "--tokenizer", "bpe", "--vocab_size", "100"])
    assert exit_info.value.code == 2 and "--vocab_size must be between 256" in capsys.readouterr().err
    assert not (tmp_path / "train.bin").exists()
