"""The measuring tools are for users too: a bad flag value, a missing or foreign checkpoint, a run scored from
another folder -- one line and exit status 2, never a traceback (as the scripts promise, tests/test_fuzz.py).

Every flag of every tool command gets the values of the scripts' flag sweep, in this process, with stdout and
stderr as strict as the interpreter's own (a value that is not UTF-8 cannot be printed to a UTF-8 stdout).
The base command lines are tiny, so a value that is accepted finishes in a moment.
"""

import io
import shutil
import sys
import traceback

import pytest
import torch
from conftest import ROOT, TINY, train_main

from babygpt.runner import run
from prepare import prepare
from tools import busy, generation, peer, speed, whole_val

SWEEP = ["0", "-1", str(10 ** 30), "nan", "inf", "abc", "", "1.5", "bad\udcff"]  # \udcff: the byte 0xff in argv
TINY_SET = "n_layer=1,n_head=2,n_embd=16,block_size=16,batch_size=4,max_iters=2,threads=1"


def run_tool(main, argv):
    """main(argv) as `python -m tools.X` runs it: (exit status, stdout, stderr). stdout is strict UTF-8 and stderr
    escapes what it cannot encode, as in the interpreter; any exception but SystemExit fails the test."""
    out, err = io.TextIOWrapper(io.BytesIO(), "utf-8"), io.TextIOWrapper(io.BytesIO(), "utf-8", "backslashreplace")
    saved, threads = (sys.stdout, sys.stderr), torch.get_num_threads()
    sys.stdout, sys.stderr = out, err
    try:
        run(main, argv)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    except BaseException:
        sys.stdout, sys.stderr = saved
        pytest.fail(f"{argv}: a traceback\n{traceback.format_exc()}")
    finally:
        sys.stdout, sys.stderr = saved
        torch.set_num_threads(threads)
    out.flush(), err.flush()
    return code, out.buffer.getvalue().decode("utf-8"), err.buffer.getvalue().decode("utf-8")


def assert_one_line_or_done(main, argv):
    code, out, err = run_tool(main, argv)
    assert code in (0, 2), (argv, code, err)
    if code:  # progress lines may come first; the error is the last line, and the only one
        lines = err.strip().splitlines()
        assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1 \
            and "Traceback" not in err, (argv, err)
    return code, err


@pytest.fixture(scope="module")
def commands(slice_dir, trained_run, tmp_path_factory):
    """Each tool command: (main, its words before the flags, its base flags: tiny and quick)."""
    tmp = tmp_path_factory.mktemp("tools")
    data, json = str(slice_dir), str(tmp / "result.json")
    return {
        "speed throughput": (speed.main, ["throughput"], {
            "preset": "classic", "iters": 1, "rounds": 1, "warmup": 0, "eager": 0, "data_dir": data,
            "device": "cpu", "set": TINY_SET, "json": json}),
        "speed time-to-loss": (speed.main, ["time-to-loss"], {
            "presets": "classic", "target": 10, "evals": 1, "eval_batches": 1, "stop_at_target": 0,
            "data_dir": data, "device": "cpu", "set": TINY_SET, "json": json}),
        "speed levers": (speed.main, ["levers"], {
            "levers": "as train.py", "iters": 1, "rounds": 1, "warmup": 0, "data_dir": data}),
        "generation sample": (generation.main, ["sample"], {
            "preset": "classic", "samples": 1, "new_tokens": 2, "repeats": 1, "refill_every": 1, "threads": 1,
            "json": json, "lengths": "", "presets": "classic", "figure": ""}),
        "generation sample --lengths": (generation.main, ["sample"], {
            "lengths": "2", "presets": "classic", "samples": 1, "repeats": 1, "threads": 1, "json": json,
            "figure": "", "preset": "classic", "new_tokens": 2, "refill_every": 1}),
        "generation decode-step": (generation.main, ["decode-step"], {
            "steps": 1, "rounds": 1, "compile": 0, "threads": 1}),
        # not a nanoGPT checkout: a value that passes every check ends there, in one line, before any run
        "peer": (peer.main, [], {
            "nanogpt": str(tmp), "short": 1, "long": 2, "repeats": 1, "target": 10, "whole": 0, "together": 0,
            "nanogpt_flags": "", "babygpt_flags": "", "data_dir": data, "out_dir": str(tmp / "peer"),
            "json": json}),
        "whole_val": (whole_val.main, [str(trained_run)], {"data_dir": data}),
    }


# a value that is right and asks for a long run: time-to-loss --set '' trains both presets in full
LONG_BUT_RIGHT = {("speed time-to-loss", "set", "")}


@pytest.mark.parametrize("command", ["speed throughput", "speed time-to-loss", "speed levers", "generation sample",
                                     "generation sample --lengths", "generation decode-step", "peer", "whole_val"])
def test_every_tool_flag_takes_any_value_without_a_traceback(command, commands, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs (out-bench/, out-peer/) and relative values land here
    main, words, base = commands[command]
    assert run_tool(main, words + [f"--{k}={v}" for k, v in base.items()])[0] == (2 if command == "peer" else 0)
    for flag in [None, *base]:
        for value in SWEEP:
            if (command, flag, value) in LONG_BUT_RIGHT:
                continue
            if flag is None:  # the positional argument: a run's folder
                if command != "whole_val":
                    continue
                argv = [value] + [f"--{k}={v}" for k, v in base.items()]
            else:
                argv = words + [f"--{k}={value if k == flag else v}" for k, v in base.items()]
            assert_one_line_or_done(main, argv)


@pytest.mark.parametrize("main, argv, says", [  # DATA: the prepared slice, so that each reaches its measurement
    (speed.main, ["throughput", "--iters", "0", "DATA"], "argument --iters: expected a whole number from 1"),
    (speed.main, ["throughput", "--rounds", "0", "DATA"], "argument --rounds: expected a whole number from 1"),
    (speed.main, ["levers", "--levers", "as train.py", "--iters", "0", "DATA"], "argument --iters: expected a whole"),
    (speed.main, ["levers", "--levers", "as train.py", "--rounds", "0", "DATA"], "argument --rounds: expected a who"),
    (speed.main, ["levers", "--levers", "as train.py", "--iters", "1", "--warmup", "0", "--rounds", "1", "DATA"], ""),
    (speed.main, ["time-to-loss", "--presets", "classic", "--evals", "0", "DATA"], "argument --evals: expected a"),
    (speed.main, ["throughput", "--preset", "", "DATA"], "unknown preset ''"),
    (speed.main, ["time-to-loss", "--presets", "classic,", "DATA"], "unknown preset ''"),
    (generation.main, ["sample", "--samples", "0"], "argument --samples: expected a whole number from 1"),
    (generation.main, ["sample", "--preset", "nope"], "unknown preset 'nope'; known presets: classic,"),
    (generation.main, ["sample", "--lengths", "5", "--presets", "cpu,nope"], "unknown preset 'nope'"),
    (generation.main, ["decode-step", "--steps", "0"], "argument --steps: expected a whole number from 1"),
    (generation.main, ["decode-step", "--rounds", "0"], "argument --rounds: expected a whole number from 1"),
    (generation.main, ["decode-step", "--threads", str(10 ** 30)], "argument --threads: expected a whole number"),
    # against the stand-in for nanoGPT (tests/peer_standin), refused before any run
    (peer.main, ["--short", "5", "--long", "5", "PEER"], "--long (5) must be more steps than --short (5)"),
    (peer.main, ["--repeats", "0", "PEER"], "argument --repeats: expected a whole number from 1"),
    (peer.main, ["--whole", "-1", "PEER"], "argument --whole: expected a whole number from 0"),
    (peer.main, ["--nanogpt_flags=--max_iters='6", "PEER"], "--nanogpt_flags / --babygpt_flags: No closing"),
])
def test_the_issues_tool_values_are_one_line(main, argv, says, slice_dir, shakespeare_text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "DATA" in argv:
        argv = argv[:-1] + ["--data_dir", str(slice_dir)] + (["--set", TINY_SET] if argv[0] in SETS else [])
    if "PEER" in argv:
        shutil.copytree(ROOT / "tests" / "peer_standin", tmp_path / "nanogpt")
        shutil.copytree(slice_dir, tmp_path / "data")
        (tmp_path / "data" / "input.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
        whole = [] if "--whole" in argv else ["--whole", "0"]
        argv = argv[:-1] + ["--nanogpt", "nanogpt", "--data_dir", "data", *whole]
    code, err = assert_one_line_or_done(main, argv)
    assert code == (2 if says else 0) and says in err, err


SETS = ("throughput", "time-to-loss")  # the commands that take --set


def test_whole_val_on_a_missing_or_foreign_checkpoint_is_one_line(tmp_path):
    code, err = assert_one_line_or_done(whole_val.main, [str(tmp_path / "no-run")])
    assert code == 2 and f"{tmp_path / 'no-run' / 'ckpt.pt'} not found" in err
    foreign = tmp_path / "nanogpt-run"
    foreign.mkdir()  # what nanoGPT's train.py saves: another program's checkpoint
    torch.save({"model": {"lm_head.weight": torch.zeros(2, 2)}, "model_args": {"n_layer": 1}, "iter_num": 0},
               foreign / "ckpt.pt")
    code, err = assert_one_line_or_done(whole_val.main, [str(foreign)])
    assert code == 2 and "is not a babygpt checkpoint" in err


def test_whole_val_scores_a_run_from_another_folder(slice_dir, shakespeare_text, tmp_path, monkeypatch):
    """A run trained with relative --data_dir and --out_dir is scored the same from anywhere; data that are gone
    or of another vocabulary are one line naming --data_dir."""
    home = tmp_path / "home"
    shutil.copytree(slice_dir, home / "data")
    monkeypatch.chdir(home)
    train_main("--data_dir", "data", "--out_dir", "out", "--max_iters", 4, "--eval_interval", 2, *TINY)
    code, _, _ = run_tool(whole_val.main, ["out"])
    there = whole_val.main(["out"])["out"]
    monkeypatch.chdir(tmp_path)
    assert code == 0 and whole_val.main([str(home / "out")])[str(home / "out")] == there
    assert whole_val.main(["home/out", "--data_dir", "home/data"])["home/out"] == there

    shutil.move(home / "data", tmp_path / "moved")
    code, err = assert_one_line_or_done(whole_val.main, [str(home / "out")])
    assert code == 2 and "not found" in err and "--data_dir" in err
    assert whole_val.main([str(home / "out"), "--data_dir", "moved"])[str(home / "out")] == there
    prepare("just a few other letters, " * 20, tmp_path / "other")  # another vocabulary
    code, err = assert_one_line_or_done(whole_val.main, [str(home / "out"), "--data_dir", str(tmp_path / "other")])
    assert code == 2 and "vocabulary" in err and "--data_dir" in err


def test_every_busy_flag_takes_any_value_without_a_traceback(tmp_path):
    """tools.busy runs for minutes once its flags are accepted: here its data folder does not exist, so an
    accepted value ends at that check, in one line, and a refused one at its own."""
    base = {"busy": "0", "preset": "cpu", "threads": "1", "rounds": "1", "steps": "3", "skip": "0", "chars": "2", "demo": "0",
            "data_dir": str(tmp_path / "no-data"), "json": ""}
    for flag in base:
        for value in SWEEP:
            argv = [f"--{k}={value if k == flag else v}" for k, v in base.items()]
            code, err = assert_one_line_or_done(busy.main, argv)
            assert code == 2, (argv, err)
