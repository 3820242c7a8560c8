"""Fuzzing with hypothesis: random texts, bytes, prompts, flag values and damaged files. Whatever comes in, babygpt
either does the right thing or says in one line what is wrong (exit status 2): never a traceback.

Each test runs a fixed, small number of examples chosen the same way every time (derandomize=True), so the suite
stays fast and a failure is reproducible; raise max_examples locally to search harder.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import plot
import prepare
import sample
import train
from babygpt import metrics
from babygpt.bpe import ranks_to_base64
from babygpt.runner import run
from babygpt.tokenizer import (MAX_TOKEN_BYTES, CharTokenizer, read_meta, tokenizer_from_meta,
                               validate_meta)
from model import GPTConfig


def fuzz(max_examples):
    # capsys and tmp_path are shared by the examples of one test: each example reads its own output first
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_cli(main, argv, capsys):
    """main(argv) as the command line runs it: (exit status, stdout, stderr). A traceback fails the test."""
    capsys.readouterr()
    try:
        run(main, [str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    if code:
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return code, out, err


# -- the tokenizer

@fuzz(150)
@given(text=st.text(), extra=st.text())
@example(text="", extra="")
@example(text="a\r\nb\r\n", extra="")
@example(text="𝕏😀\U0010FFFF", extra="é")
@pytest.mark.slow
def test_char_tokenizer_round_trips_any_text_over_its_vocabulary(text, extra):
    tokenizer = CharTokenizer.from_text(text + extra)  # a vocabulary that holds at least the text's characters
    ids = tokenizer.encode(text)
    assert len(ids) == len(text) and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text
    # and the same through meta.json, as prepare.py writes it and train.py reads it
    meta = validate_meta(json.loads(json.dumps(tokenizer.to_meta(), ensure_ascii=False)), "fuzz")
    assert tokenizer_from_meta(meta).encode(text) == ids


# -- prepare.py on any file

@fuzz(60)
@given(data=st.one_of(st.text(max_size=300).map(lambda t: t.encode("utf-8")), st.binary(max_size=300)))
@example(data=b"")  # empty
@example(data=b"a")  # one character: all of it goes to val.bin
@example(data="𝕏 😀 \U0001F600\U0010FFFF".encode("utf-8"))  # astral-plane characters: one token each
@example(data=b"First line\r\nSecond line\r\n")  # CRLF is kept as it is: \r is just another character
@example(data=b"caf\xc3")  # UTF-8 cut in the middle of a character
@example(data=b"\xff\xfe\x00h\x00i")  # UTF-16 with a byte-order mark: not UTF-8
@example(data=b"\xed\xa0\x80")  # an encoded lone surrogate: invalid in UTF-8
@example(data="\ufeffwith a BOM".encode("utf-8"))
@example(data="\ufeff".encode("utf-8"))  # a BOM alone: empty
def test_prepare_writes_correct_files_or_fails_in_one_line(data, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        source, out_dir = Path(tmp) / "input.txt", Path(tmp) / "out"
        source.write_bytes(data)
        code, _, err = run_cli(prepare.main, ["--input", source, "--out_dir", out_dir], capsys)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            assert code == 2 and "not UTF-8" in err and not out_dir.exists()
            return
        text = text.removeprefix("\ufeff")  # a byte-order mark marks the encoding; it is not text
        if not text:
            assert code == 2 and "empty" in err and not out_dir.exists()
            return
        assert code == 0
        meta = read_meta(out_dir)  # valid by the same rules train.py applies
        assert meta["vocab"] == sorted(set(text))
        assert meta["input_sha256"] == hashlib.sha256(data).hexdigest()
        tokenizer = tokenizer_from_meta(meta)
        train_ids = np.fromfile(out_dir / "train.bin", dtype=np.uint16).tolist()
        val_ids = np.fromfile(out_dir / "val.bin", dtype=np.uint16).tolist()
        assert tokenizer.decode(train_ids) + tokenizer.decode(val_ids) == text  # nothing lost, nothing changed
        assert len(train_ids) == meta["train_tokens"] == int(len(text) * prepare.TRAIN_FRACTION)


def is_merge_table(ranks):
    """The definition, tried cut by cut: each token after the 256 bytes is two earlier ones glued."""
    seen = set(ranks[:256])
    for token in ranks[256:]:
        if token in seen or not any(token[:c] in seen and token[c:] in seen for c in range(1, len(token))):
            return False
        seen.add(token)
    return True


@fuzz(80)
@given(tokens=st.lists(st.one_of(st.tuples(st.integers(0, 400), st.integers(0, 400)),  # a merge of two
                                 st.binary(min_size=0, max_size=40)),  # or any bytes
                       max_size=60))
@example(tokens=[(97, 97)] + [(256 + i, 97) for i in range(40)])  # a, aa, aaa, ...: a long valid chain
@example(tokens=[b"ab" * 600])  # longer than any token bpe.py makes
def test_a_hand_made_bpe_vocabulary_is_checked_by_the_definition(tokens):
    """meta.json's (or a checkpoint's) 'ranks', made by hand: accepted exactly when every token is a merge
    of two earlier ones and no token is longer than MAX_TOKEN_BYTES; otherwise one ValueError line."""
    ranks = [bytes([b]) for b in range(256)]
    for token in tokens:
        if isinstance(token, tuple):
            token = ranks[token[0] % len(ranks)] + ranks[token[1] % len(ranks)]
        ranks.append(token)
    meta = {"tokenizer": "bpe", "pattern": "gpt2", "vocab_size": len(ranks), "ranks": ranks_to_base64(ranks)}
    fits = max(map(len, ranks)) <= MAX_TOKEN_BYTES
    try:
        validate_meta(meta, "meta.json")
    except ValueError as e:
        assert not (fits and is_merge_table(ranks)) and str(e).startswith("meta.json: "), e
        assert "\n" not in str(e)
    else:
        assert fits and is_merge_table(ranks)


# -- sample.py with random prompts and flag values

def junk():
    return st.text(max_size=8)


usable_flags = st.fixed_dictionaries({}, optional={
    "num_samples": st.integers(1, 3),
    "max_new_tokens": st.integers(0, 6),
    "temperature": st.one_of(st.just(0.0), st.floats(1e-3, 1e6)),
    "top_k": st.integers(1, 300),
    "seed": st.integers(-2**63, 2**64 - 1),
    "unknown": st.sampled_from(["error", "skip"]),
    "device": st.sampled_from(["cpu", "auto"]),
    "start": st.text(max_size=30),
})
bad_flag = st.sampled_from(["num_samples", "max_new_tokens", "temperature", "top_k", "seed", "unknown", "device",
                            "start"]).flatmap(lambda name: st.tuples(st.just(name), st.one_of(
    junk(), st.integers(-2**70, 2**70), st.floats(), st.sampled_from(["cuda", "cuda:3", "mps", "tpu", "1e-300"]),
    st.text(max_size=10).map(lambda t: "FILE:" + t))))
# usable values, and half the time one of them replaced by something odd
sample_flags = st.tuples(usable_flags, st.one_of(st.none(), bad_flag)).map(
    lambda pair: {**pair[0], **dict([pair[1]] if pair[1] else [])})


@fuzz(50)
@given(flags=sample_flags)
@example(flags={"temperature": float("nan")})
@example(flags={"temperature": 1e-300})
@example(flags={"seed": 2**64})
@example(flags={"device": "tpu"})
@example(flags={"start": "FILE:bad\x00path"})
@pytest.mark.slow
def test_sample_never_prints_a_traceback(flags, trained_run, capsys):
    argv = ["--out_dir", trained_run]
    for name, value in flags.items():
        argv.append(f"--{name}={value}")  # --flag=value: a value that starts with '-' stays a value
    code, out, err = run_cli(sample.main, argv, capsys)
    event(f"exit status {code}")  # pytest --hypothesis-show-statistics: how many examples got to sampling
    if code == 0:
        assert f"{trained_run / 'ckpt.pt'}: iteration 40" in err


# -- sample.py reading garbage, or a real checkpoint damaged on disk

@pytest.fixture(scope="module")
def checkpoint_bytes(trained_run):
    return (trained_run / "ckpt.pt").read_bytes()


damage = st.one_of(
    st.binary(max_size=2000).map(lambda junk_bytes: ("replace", 0, junk_bytes)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
)


@fuzz(60)
@given(damage=damage)
@example(damage=("replace", 0, b""))
@example(damage=("replace", 0, b"PK\x03\x04"))
@example(damage=("truncate", 0.5, b""))
@example(damage=("truncate", 0.999, b""))
@pytest.mark.slow
def test_sample_with_a_garbage_or_damaged_checkpoint_never_prints_a_traceback(damage, checkpoint_bytes, tmp_path, capsys):
    kind, where, junk_bytes = damage
    position = int(where * (len(checkpoint_bytes) - 1))
    if kind == "replace":
        data = junk_bytes
    elif kind == "truncate":
        data = checkpoint_bytes[:position]
    else:
        data = checkpoint_bytes[:position] + junk_bytes + checkpoint_bytes[position + len(junk_bytes):]
    (tmp_path / "damaged.pt").write_bytes(data)
    code, out, err = run_cli(sample.main, ["--ckpt", tmp_path / "damaged.pt", "--max_new_tokens", 3], capsys)
    event(f"{kind}: exit status {code}")
    if kind != "overwrite":  # a flipped byte may land where it does no harm; every other case must be refused
        assert code == 2 and "damaged.pt" in err


# -- the command-line parser

def field_types():
    """{flag: type} for every train.py flag whose values are checked (paths accept any text)."""
    fields = [*dataclasses.fields(GPTConfig), *dataclasses.fields(train.TrainConfig)]
    return {f.name: type(f.default) for f in fields if f.name not in ("vocab_size", "data_dir", "out_dir", "init_from")}


def is_valid(kind, text):
    try:
        if kind is bool:
            return text.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        number = kind(text)  # int("abc"), float("2x") raise
        return kind is not str and math.isfinite(number)  # str settings: names from a short list, never random text
    except ValueError:
        return False


@fuzz(50)
@given(flag=st.sampled_from(sorted(field_types())), value=st.text(max_size=10))
@example(flag="n_layer", value="abc")
@example(flag="dropout", value="2")
@example(flag="dropout", value="nan")
@example(flag="learning_rate", value="-inf")
@example(flag="bias", value="maybe")
@example(flag="seed", value="99999999999999999999999")
@pytest.mark.slow
def test_cli_rejects_junk_values_with_a_message_that_names_the_flag(flag, value, tmp_path, capsys):
    if is_valid(field_types()[flag], value) and (flag, value) != ("dropout", "2"):
        value = "not-a-number"  # the property is about junk; a valid value would start training
    # a data folder that does not exist: if a junk value slipped through, the error would not name the flag
    code, _, err = run_cli(train.main, [f"--{flag}={value}", "--data_dir", tmp_path / "nowhere",
                                        "--out_dir", tmp_path / "out"], capsys)
    assert code == 2 and flag in err, err


# -- the kinds of a hostile world (issue 16): special files, hand-edited configs, float32 underflow, resource
#    flags, invalid Unicode, metrics lines that are JSON but not records

def make_special(path, kind):
    """Put at `path` something that is not a regular file (or nothing at all)."""
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif kind == "folder":
        path.mkdir()
    elif kind == "/dev/null":
        path.symlink_to("/dev/null")
    elif kind == "symlink loop":
        path.symlink_to(path)
    elif kind == "dangling symlink":
        path.symlink_to(path.with_name("nowhere"))


SPECIAL_KINDS = ["fifo", "folder", "/dev/null", "symlink loop", "dangling symlink", "missing"]


@fuzz(30)
@given(kind=st.sampled_from(SPECIAL_KINDS), target=st.sampled_from(["input", "meta.json", "train.bin", "val.bin",
                                                                    "checkpoint", "metrics.jsonl", "prompt"]))
def test_a_special_file_where_a_regular_file_belongs_is_one_line_never_a_hang(kind, target, slice_dir, trained_run,
                                                                            capsys):
    work = Path(tempfile.mkdtemp())
    if target == "input":
        make_special(work / "in.txt", kind)
        code, _, err = run_cli(prepare.main, ["--input", work / "in.txt", "--out_dir", work / "out"], capsys)
    elif target in ("meta.json", "train.bin", "val.bin"):
        shutil.copytree(slice_dir, work / "data", ignore=shutil.ignore_patterns(".babygpt.lock"))
        (work / "data" / target).unlink()
        make_special(work / "data" / target, kind)
        code, _, err = run_cli(train.main, ["--data_dir", work / "data", "--out_dir", work / "out", "--max_iters", 1,
                                            *TINY], capsys)
    elif target == "checkpoint":
        make_special(work / "x.pt", kind)
        code, _, err = run_cli(sample.main, ["--ckpt", work / "x.pt"], capsys)
    elif target == "prompt":
        make_special(work / "prompt.txt", kind)
        code, _, err = run_cli(sample.main, ["--out_dir", trained_run, f"--start=FILE:{work / 'prompt.txt'}"], capsys)
    else:
        (work / "run").mkdir()
        make_special(work / "run" / "metrics.jsonl", kind)
        code, _, err = run_cli(plot.main, ["loss", work / "run", "--out", work / "loss.png"], capsys)
    assert code == 2
    if kind == "symlink loop":
        assert "symbolic link loop" in err
    elif kind not in ("missing", "dangling symlink"):
        assert "not a regular file" in err or "is a folder" in err


@pytest.fixture(scope="module")
def trained_state(trained_run):
    return torch.load(trained_run / "ckpt.pt", weights_only=True)


config_values = st.one_of(st.integers(-2**70, 2**70), st.integers(0, 5000), st.floats(), st.text(max_size=5),
                          st.booleans(), st.none(), st.lists(st.integers(0, 3), max_size=2))


@fuzz(40)
@given(field=st.sampled_from([f.name for f in dataclasses.fields(GPTConfig)]), value=config_values)
@example(field="n_layer", value=10**5)  # would take minutes to build
@example(field="n_embd", value=2**20)  # would not fit in memory
@example(field="n_layer", value=2.0)  # a float where an int belongs
@example(field="dropout", value=1e-320)  # 0 in float32
@example(field="attn_pattern", value="bigbird")  # a valid edit: the same weights, another mask; it samples
@pytest.mark.slow
def test_a_hand_edited_checkpoint_config_is_refused_in_one_line_or_samples(field, value, trained_state, tmp_path,
                                                                           capsys):
    state = {**trained_state, "model_config": {**trained_state["model_config"], field: value}}
    torch.save(state, tmp_path / "edited.pt")
    code, _, err = run_cli(sample.main, ["--ckpt", tmp_path / "edited.pt", "--max_new_tokens", 3], capsys)
    event(f"exit status {code}")
    if code:
        assert "edited.pt" in err
    if (field, value) == ("attn_pattern", "bigbird"):
        assert code == 0


FLOAT_FLAGS = sorted(f.name for f in [*dataclasses.fields(GPTConfig), *dataclasses.fields(train.TrainConfig)]
                     if type(f.default) is float)


@fuzz(30)
@given(flag=st.sampled_from(FLOAT_FLAGS),
       value=st.one_of(st.floats(5e-324, 1.1e-38), st.floats(3.5e38, 1.7e308)))
@example(flag="min_lr", value=1e-320)
@pytest.mark.slow
def test_a_float_setting_float32_cannot_hold_is_refused_by_name(flag, value, slice_dir, tmp_path, capsys):
    code, _, err = run_cli(train.main, [f"--{flag}={value!r}", "--data_dir", slice_dir, "--out_dir", tmp_path / "o",
                                        *TINY], capsys)
    assert code == 2 and flag in err, err


@fuzz(25)
@given(flag=st.sampled_from(["n_embd", "n_layer", "block_size", "batch_size", "threads"]),
       value=st.integers(10**7, 10**15))
@example(flag="n_embd", value=131072)
@pytest.mark.slow
def test_resource_flags_beyond_the_machine_are_refused_before_anything_is_allocated(flag, value, slice_dir, tmp_path,
                                                                                     capsys):
    extra = ["--n_head", 1] if flag == "n_embd" else []
    code, _, err = run_cli(train.main, [*TINY, f"--{flag}", value, *extra, "--data_dir", slice_dir,
                                        "--out_dir", tmp_path / "o"], capsys)
    assert code == 2 and ("needs about" in err or "CPUs" in err), err


@fuzz(20)
@given(surrogate=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), where=st.integers(0, 57))
@pytest.mark.slow
def test_a_vocabulary_with_invalid_unicode_is_refused(surrogate, where, slice_dir, trained_state, capsys):
    work = Path(tempfile.mkdtemp())
    shutil.copytree(slice_dir, work / "data", ignore=shutil.ignore_patterns(".babygpt.lock"))
    meta = json.loads((work / "data" / "meta.json").read_text(encoding="utf-8"))
    meta["vocab"][where] = surrogate
    (work / "data" / "meta.json").write_text(json.dumps(meta), encoding="utf-8")  # JSON spells it \udxxx
    code, _, err = run_cli(train.main, ["--data_dir", work / "data", "--out_dir", work / "o", *TINY], capsys)
    assert code == 2 and "half of a UTF-16 pair" in err
    state = {**trained_state, "meta": {**trained_state["meta"], "vocab": meta["vocab"]}}
    torch.save(state, work / "x.pt")
    code, _, err = run_cli(sample.main, ["--ckpt", work / "x.pt"], capsys)
    assert code == 2 and "half of a UTF-16 pair" in err


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["iter", "tokens", "train_loss", "val_loss", "lr", "x"]), inner,
                               max_size=4), max_leaves=6)
junk_line = st.one_of(json_values.map(json.dumps), st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
                      st.just("\udcff")).filter(lambda line: line.splitlines() in ([line], []))  # one line each


@fuzz(40)
@given(junk=st.lists(st.tuples(st.integers(0, 20), junk_line), min_size=1, max_size=4))
@example(junk=[(0, "[1, 2]"), (3, "7"), (5, '"text"'), (6, "{}"), (8, '{"iter": "1"}')])
def test_metrics_lines_that_are_not_records_are_skipped_and_counted(junk, trained_run, capsys):
    real = (trained_run / "metrics.jsonl").read_text().splitlines()
    lines, added = list(real), 0
    for position, line in junk:
        try:
            is_record = metrics.is_metrics_record(json.loads(line))
        except ValueError:
            is_record = False
        if not is_record:
            lines.insert(min(position, len(lines)), line)
            added += 1
    work = Path(tempfile.mkdtemp())
    (work / "metrics.jsonl").write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n")
    records = plot.read_metrics(work)
    assert records == [json.loads(line) for line in real]
    if added:
        assert f"skipped {added} line(s)" in capsys.readouterr().err
    kept, dropped = metrics.metrics_up_to(work / "metrics.jsonl", 40)
    assert [json.loads(line) for line in kept.splitlines()] == records and dropped == added


# -- the lessons' command lines (issue 29): every flag with the values of the sweep, one line or a run

SWEEP = ["0", "-1", str(10**30), "nan", "inf", "abc", "", "1.5", "bad\udcff"]  # \udcff: the byte 0xff in argv


def lesson_cases(tmp_path, data_dir):
    """(module, quick command line, flags): the quick line keeps a run that a valid value lets through short."""
    figure = str(tmp_path / "figure.png")
    return [
        ("message_passing", [], []),
        ("sparse_attention", ["--iters", "0", "--figure", figure],
         ["window", "n_global", "n_random", "iters", "figure", "data_dir"]),
        ("encoder_decoder", ["--iters", "1", "--batch_size", "2", "--length", "2"],
         ["task", "length", "iters", "batch_size", "seed", "threads"]),
        ("vit", ["--iters", "1", "--batch_size", "2"], ["iters", "batch_size", "learning_rate", "seed", "threads", "show"]),
        ("build_up", ["--steps", "1", "--only", "1", "--data_dir", str(data_dir), "--figure", figure],
         ["steps", "only", "seed", "dropout", "figure", "data_dir", "threads"]),
        ("infinite_memory", ["--part", "figure", "--figure", figure],
         ["part", "block_size", "recall_steps", "train_segments", "eval_segments", "lm_block_size", "lm_segments",
          "lm_steps", "data_dir", "figure", "threads", "seed"]),
    ]


def run_lesson(name, argv, capsys):
    import importlib
    module = importlib.import_module(f"lessons.{name}")
    threads = torch.get_num_threads()
    try:
        return run_cli(module.main, argv, capsys)
    finally:
        torch.set_num_threads(threads)


def test_the_lessons_named_cases_are_one_line_errors(slice_dir, tmp_path, capsys):
    """The cases of issue 29: --threads 0 or negative, a seed past 64 bits, --figure into a missing folder,
    --help (which message_passing ignored, then ran)."""
    cases = [("encoder_decoder", ["--threads", "0"]), ("vit", ["--threads", "-2"]),
             ("encoder_decoder", ["--seed", str(2**64)]), ("vit", ["--seed", str(2**64)]),
             ("sparse_attention", ["--iters", "0", "--figure", str(tmp_path / "nowhere" / "f.png")]),
             ("infinite_memory", ["--part", "figure", "--figure", str(tmp_path / "nowhere" / "f.png")]),
             ("build_up", ["--plot", "--figure", str(tmp_path / "nowhere" / "f.png"), "--data_dir", slice_dir])]
    for name, argv in cases:
        code, _, err = run_lesson(name, argv, capsys)
        assert code == 2 and err.startswith("error: --"), (name, argv, err)
    code, out, _ = run_lesson("message_passing", ["--help"], capsys)
    assert code == 0 and out.startswith("usage: python -m lessons.message_passing") and "largest difference" not in out


@pytest.mark.slow
def test_no_lesson_flag_value_of_the_sweep_prints_a_traceback(slice_dir, tmp_path, capsys):
    for name, quick, flags in lesson_cases(tmp_path, slice_dir):
        for flag in flags:
            for value in SWEEP:
                code, _, err = run_lesson(name, [*quick, f"--{flag}", value], capsys)
                assert code in (0, 2), (name, flag, value, err)
        assert run_lesson(name, [*quick, "--no_such_flag", "1"], capsys)[0] == 2
