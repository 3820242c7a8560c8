"""Runs that are stopped, killed, diverge or hit a full disk: little is lost, nothing good is overwritten,
and --resume carries on exactly as if nothing had happened.

The signal tests start train.py as a real process (signals, exit codes and kill -9 cannot be faked in-process)
and compare the result with an uninterrupted run trained in this process: the weights must be bit-identical.
"""

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, train_main

from babygpt import checkpoint
from babygpt.stopping import StopSignal

MAX_ITERS = 40
RUN = ["--eval_interval", 10, "--dropout", 0.1, "--max_iters", MAX_ITERS, *TINY]


@pytest.fixture(scope="module")
def straight_run(slice_dir, tmp_path_factory):
    """The reference: MAX_ITERS iterations with nothing in the way."""
    out_dir = tmp_path_factory.mktemp("straight")
    train_main("--data_dir", slice_dir, "--out_dir", out_dir, *RUN)
    return out_dir


def start_training(*args):
    """train.py in its own process, as a user would start it."""
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, process, timeout=60, pause=0.001):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"train.py ended early: {process.communicate()}"
        assert time.monotonic() < deadline, "train.py made no progress"
        time.sleep(pause)


def logged_iters(out_dir):
    path = out_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["iter"] for line in lines[:-1]]  # the last line may be half written


def assert_same_run(out_dir, reference_dir):
    """Bit-identical weights and the same logged losses as the reference run."""
    mine, ref = checkpoint.load(out_dir / "last.pt"), checkpoint.load(reference_dir / "last.pt")
    assert mine["iter_num"] == ref["iter_num"] == MAX_ITERS
    for name, tensor in ref["model"].items():
        assert torch.equal(tensor, mine["model"][name]), name

    def losses(run_dir):
        records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        return [(r["iter"], r.get("train_loss"), r.get("eval_train_loss"), r.get("val_loss")) for r in records]
    assert losses(out_dir) == losses(reference_dir)


def kill_in_the_middle_of_a_write(process, tmp):
    """Freeze the process (SIGSTOP) the moment a checkpoint's temporary file exists; if the write is really
    unfinished, SIGKILL it there (no handler runs, no cleanup: like a power cut), else let it go on and try at
    the next write."""
    while True:
        wait_until(tmp.exists, process, pause=0)  # look as often as possible: a write takes milliseconds
        process.send_signal(signal.SIGSTOP)
        os.waitpid(process.pid, os.WUNTRACED)  # returns once it is really stopped
        if tmp.exists():
            process.kill()
            process.communicate()
            return
        process.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_ctrl_c_and_kill_9_anywhere_then_resume_ends_bit_identical_to_a_straight_run(straight_run, slice_dir, tmp_path):
    """Ctrl-C saves and exits 130 (interrupted, after its resume line); kill -9 in the middle of a checkpoint write leaves the previous last.pt loadable.
    After both, the resumed run ends bit-identical to the straight one. (Each round is a fresh Python process,
    about 2 s of importing torch: two rounds keep the test short.)"""
    out_dir, last, tmp = tmp_path / "run", tmp_path / "run" / "last.pt", tmp_path / "run" / "last.pt.tmp"
    chooser = random.Random(8)

    # 1. Ctrl-C at a random moment. --save_interval 1: a checkpoint after every step, so that later kills land
    # inside a write often (and to show that saving does not change the run)
    process = start_training("--data_dir", slice_dir, "--out_dir", out_dir, "--save_interval", 1, *RUN)
    wait_until(lambda: any(it >= 5 for it in logged_iters(out_dir)), process)
    time.sleep(chooser.uniform(0, 0.05))
    process.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal does
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr  # 128 + SIGINT: "interrupted"
    stopped = checkpoint.load(last)["iter_num"]
    assert 5 <= stopped < MAX_ITERS
    assert f"stopped by SIGINT at iteration {stopped}" in stdout
    assert f"Continue with: python {ROOT / 'train.py'} --out_dir {out_dir} --resume" in stdout  # as it was run

    # 2. kill -9 at a random moment, made the worst one: while last.pt.tmp is half written
    before = last.stat().st_mtime_ns
    process = start_training("--out_dir", out_dir, "--resume")
    wait_until(lambda: last.stat().st_mtime_ns != before, process)  # it is training and saving again
    time.sleep(chooser.uniform(0, 0.05))
    kill_in_the_middle_of_a_write(process, tmp)
    killed = checkpoint.load(last)  # the previous, whole checkpoint
    assert stopped < killed["iter_num"] < MAX_ITERS

    train_main("--out_dir", out_dir, "--resume")
    assert_same_run(out_dir, straight_run)


def test_sigterm_is_caught_like_ctrl_c_and_a_second_signal_stops_at_once():
    """The handler train.py installs around its loop, with real signals sent to this process."""
    previous_handler = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        stop.listen()
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID`, a cluster's time limit, a shutting-down laptop
        assert stop.received == "SIGTERM"  # noted; the loop saves and returns at the next step boundary
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # impatient: the second one interrupts right away
    assert signal.getsignal(signal.SIGTERM) is previous_handler  # restored when training ends


def test_a_diverging_run_stops_at_the_first_nan_and_keeps_the_last_good_checkpoint(trained_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("last.pt", "ckpt.pt")}
    # a learning rate a million times too large: real AdamW steps blow the weights up within an iteration or two
    with pytest.raises(SystemExit) as exit_info:
        train_main("--out_dir", run_dir, "--resume", "--max_iters", 80, "--learning_rate", 1e6, "--dtype", "bfloat16")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "training diverged" in err
    assert 40 <= int(re.search(r"at iteration (\d+)", err).group(1)) < 45  # within a few steps of the resume at 40
    assert "--learning_rate" in err and "--dtype float32" in err and "last.pt from iteration 40 is kept" in err
    for name, data in before.items():
        assert (run_dir / name).read_bytes() == data, name


def test_out_dir_that_cannot_be_a_folder_is_a_clear_error(slice_dir, tmp_path, capsys):
    (tmp_path / "a_file").write_text("I am a file, not a folder")
    with pytest.raises(SystemExit) as exit_info:
        train_main("--data_dir", slice_dir, "--out_dir", tmp_path / "a_file" / "out", *TINY)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"cannot write to {tmp_path / 'a_file' / 'out'}: Not a directory" in err


def test_full_disk_at_save_time_keeps_the_previous_checkpoint(trained_run, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = (run_dir / "last.pt").read_bytes()

    def disk_full(fd):  # filesystems often report a full disk only when the data is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        train_main("--out_dir", run_dir, "--resume", "--max_iters", 50, "--save_interval", 5)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"could not write {run_dir / 'last.pt'}: No space left on device; the previous checkpoint is kept" in err
    assert (run_dir / "last.pt").read_bytes() == before
    assert not (run_dir / "last.pt.tmp").exists()
    monkeypatch.undo()
    assert checkpoint.load(run_dir / "last.pt")["iter_num"] == 40


def test_importing_the_scripts_or_the_package_installs_no_signal_handler():
    """Quiet Ctrl-C during the imports is one visible line at the top of each script, taken only when the script
    runs as the program: a notebook or a test that imports it keeps its own Ctrl-C."""
    script = ("import signal\n"
              "from babygpt import cli\n"
              "import train, sample, plot\n"
              "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
