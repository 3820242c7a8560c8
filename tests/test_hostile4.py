"""The third hostile round: flags that never guess, text that can always be printed, interrupted runs that say
so in their exit status. Each test plants the fault for real (a real taskset, a real FIFO, a real encoding)."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TINY, run_script
from test_errors import fails

import plot
import prepare
import sample
import train
from babygpt import cli
from tools import whole_val


# -- flags that guess: argparse took any unambiguous prefix of a flag for the flag

@pytest.mark.parametrize("main, argv, typed", [
    (train.main, ["--lr", "3"], "--lr"),  # was --lr_decay_iters 3: trained at min_lr from step 3, exit 0
    (train.main, ["--lr", "3e-2"], "--lr"),  # was "argument --lr_decay_iters: invalid int value"
    (train.main, ["--max_it", "5"], "--max_it"),
    (train.main, ["--learning_rat", "1e-3"], "--learning_rat"),
    (sample.main, ["--temp", "0.5"], "--temp"),
    (sample.main, ["--num_sam", "2"], "--num_sam"),
    (prepare.main, ["--tok", "char"], "--tok"),
    (plot.main, ["attention", "--ckpt", "out", "--text", "x", "--dp", "9"], "--dp"),
    (whole_val.main, ["out", "--bat", "4"], "--bat"),
])
def test_a_prefix_of_a_flag_is_never_taken_for_the_flag(main, argv, typed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    err = fails(main, argv, capsys)
    assert f"unrecognized arguments: {typed}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("main, typo, meant", [
    (sample.main, "--temprature", "--temperature"),
    (train.main, "--learnin_rate", "--learning_rate"),
    (train.main, "--max_iter", "--max_iters"),
    (prepare.main, "--tokeniser", "--tokenizer"),
])
def test_a_misspelt_flag_gets_did_you_mean(main, typo, meant, capsys):
    err = fails(main, [typo, "1"], capsys)
    assert f"did you mean {meant}?" in err


def test_a_flag_nothing_resembles_gets_no_guess(capsys):
    err = fails(sample.main, ["--zzzzzz", "1"], capsys)
    assert "unrecognized arguments: --zzzzzz" in err and "did you mean" not in err


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not shutil.which("taskset") or (os.cpu_count() or 1) < 2,
                    reason="needs taskset and two CPUs")
def test_threads_are_checked_against_the_cpus_the_process_may_use(trained_run):
    """Under `taskset -c 0` the process may use one CPU: --threads 2 was accepted (auto threads did use it)."""
    done = subprocess.run(["taskset", "-c", "0", sys.executable, str(ROOT / "sample.py"), "--out_dir",
                           str(trained_run), "--threads", "2", "--max_new_tokens", "5"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "--threads 2 is more than the 1 CPUs this process may use" in done.stderr


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    """A copy of config/ where a preset can be a folder, a FIFO or a file that is not UTF-8."""
    folder = tmp_path / "config"
    shutil.copytree(ROOT / "config", folder)
    monkeypatch.setattr(cli, "PRESET_DIR", folder)
    return folder


def test_a_preset_that_is_a_folder_or_a_fifo_is_named_not_listed(preset_dir, capsys):
    (preset_dir / "dir.toml").mkdir()
    os.mkfifo(preset_dir / "fifo.toml")
    for name in ("dir", "fifo"):
        err = fails(train.main, ["--preset", name], capsys)
        assert f"preset file {preset_dir / name}.toml is not a regular file" in err
    err = fails(train.main, ["--preset", "nope"], capsys)
    assert "known presets:" in err and "dir" not in err.split("known presets:")[1]


def test_a_preset_that_is_not_utf8_is_one_line(preset_dir, capsys):
    (preset_dir / "latin.toml").write_bytes(b"# caf\xe9\nmax_iters = 3\n")
    err = fails(train.main, ["--preset", "latin"], capsys)
    assert "latin.toml is not UTF-8 text" in err


# -- text that cannot be printed: a terminal whose encoding lacks a character

def test_prepare_prints_a_vocabulary_the_terminal_cannot_show(tmp_path):
    """PYTHONIOENCODING=ascii on a text with accents, CJK and emoji: prepare.py wrote the data set, then died
    printing the vocabulary (exit 1: the user believed it failed)."""
    (tmp_path / "in.txt").write_text("café naïve 東京 🙂 " * 200, encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--input", str(tmp_path / "in.txt"),
                           "--out_dir", str(tmp_path / "d")], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300, encoding="utf-8", errors="replace")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "\\xe9" in done.stdout + done.stderr  # é, spelled so the terminal can show it
    assert (tmp_path / "d" / "meta.json").is_file()


# -- interrupted means non-zero: the exit statuses themselves are tested with real signals in the slow tier
# (test_interrupt.py: SIGINT 130; test_hostile.py: SIGTERM 143; test_hostile3.py: SIGHUP 129)

def test_a_finished_training_exits_0(slice_dir, tmp_path):
    done = run_script("train.py", "--data_dir", slice_dir, "--out_dir", tmp_path / "o", *TINY, "--max_iters", 2,
                      "--eval_interval", 2)
    assert done.returncode == 0 and "done: 2 iterations" in done.stdout, done.stderr
