"""exercises/ as a sandbox: a learner's file that exits, kills, hangs, forks, starts threads, patches torch, math,
builtins or train, waits for input or returns tensors of another dtype or device gets its own line and cannot
change the checker, the other exercises' verdicts or the command's exit. Real child processes, really killed at
their limit; the learner files are the solutions with the hostile lines planted in them."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

from babygpt.cli import UserError
from babygpt.runner import run
from exercises import NAMES
from exercises.__main__ import main
from exercises.checker import SOLUTIONS, check
from exercises.yourgpt import train_both

torch.set_num_threads(1)

LR_BODY = "    if it < warmup_iters:"
BLOCK_RETURN = "    return x\n"
SLEEP_FOREVER = ("    import time\n    while True:\n        try:\n            time.sleep(10)\n"
                 "        except:  # noqa: E722\n            pass\n")

# name: (exercise, lines put first in the file, [(old, new) in the solution], state, words in the verdict)
HOSTILE = {
    "sys_exit": ("lr_schedule", "", [(LR_BODY, "    import sys\n    sys.exit(0)\n" + LR_BODY)], "wrong",
                 ["your code called sys.exit(0) at", "lr_schedule.py line 8 (`sys.exit(0)`)"]),
    "sys_exit_at_import": ("vocabulary", "import sys\nsys.exit(0)\n", [], "wrong",
                           ["your code called sys.exit(0) at", "vocabulary.py line 2"]),
    "os_exit": ("block", "", [("    x = x + attn", "    import os\n    os._exit(0)\n    x = x + attn")], "wrong",
                ["your code called os._exit(0) at", "block.py line 6 (`os._exit(0)`)"]),
    "keyboard_interrupt": ("lm_loss", "", [("    B, T, V = logits.shape", "    raise KeyboardInterrupt")], "wrong",
                           ["your code raised KeyboardInterrupt, at", "lm_loss.py line 7"]),
    "bare_except_around_sleep": ("attention_head", "", [("    q, k, v = query(x)", SLEEP_FOREVER + "    q, k, v = "
                                                         "query(x)")], "wrong",
                                 ["attention_head did not return within", "was stopped", "attention_head.py line",
                                  "never ends"]),
    "ignored_sigalrm": ("causal_mask", "import signal\n",
                        [("    T = q.size(1)", "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n"
                                            "        pass")], "wrong",
                        ["causal_attention did not return within", "never ends"]),
    "thread_that_never_ends": ("kv_cache", "import threading, time\nthreading.Thread(target=lambda: [time.sleep(0.05) "
                               "for _ in iter(int, 1)]).start()\n", [], "done", []),
    "fork": ("get_batch", "", [("    starts = torch.randint", "    import os\n    os.fork()\n    starts = "
                                "torch.randint")], "done", []),
    "patch_softmax": ("vocabulary", "import torch\nfrom torch.nn import functional as F\nF.softmax = lambda x, "
                      "dim=None, **kw: x\ntorch.Tensor.softmax = lambda self, dim=None: self\n", [], "done", []),
    "patch_math": ("vocabulary", "import math\nmath.sqrt = lambda x: 1.0\n", [], "done", []),
    "patch_grad": ("vocabulary", "import torch\ntorch.set_grad_enabled(False)\n", [], "done", []),
    "patch_print": ("vocabulary", "import builtins\nbuiltins.print = lambda *a, **k: None\n", [], "done", []),
    "chdir": ("vocabulary", "import os\nos.chdir('/')\n", [], "done", []),
    "patch_train": ("lr_schedule", "import train\ntrain.learning_rate_at = lambda it, cfg: 0.5\n",
                    [("    if it < warmup_iters:", "    return 0.5\n    if it < warmup_iters:")], "wrong",
                    ["at step 0 yours is 0.5, babygpt's 9.091e-05"]),
    "float64": ("attention_head", "", [("return weights @ v, weights", "return (weights @ v).double(), weights")],
                "wrong", ["the output should be torch.float32", "yours is torch.float64"]),
    "complex": ("lm_loss", "import torch\n", [("targets.reshape(B * T))", "targets.reshape(B * T)).to(torch."
                                               "complex64)")], "wrong", ["yours is torch.complex64"]),
    "bool": ("causal_mask", "", [("return weights @ v, weights", "return weights @ v, weights > 0")], "wrong",
             ["the weights should be torch.float32", "yours is torch.bool"]),
    "meta": ("block", "", [(BLOCK_RETURN, "    return x.to('meta')\n")], "wrong",
             ["block returned a tensor on the meta device"]),
    "input": ("lr_schedule", "", [(LR_BODY, "    input()\n" + LR_BODY)], "wrong",
              ["your code waits for input (input()) at", "lr_schedule.py line 7"]),
    "null_byte": ("block", "", [(BLOCK_RETURN, BLOCK_RETURN + "\0")], "wrong",
                  ["block.py holds a null byte", "plain UTF-8 text"]),
    "folder": ("block", None, [], "wrong", ["block.py is a folder, not a file"]),
    "fifo": ("block", None, [], "wrong", ["block.py is a FIFO (named pipe), not a file"]),
    "device": ("block", None, [], "wrong", ["block.py is a device, not a file"]),
}
SLOW = {"bare_except_around_sleep", "ignored_sigalrm"}  # each waits for its time limit
LIMIT = 2.0  # the time limit of the tests that are killed at it: generous against a busy machine's start-up


def plant_hostile(folder, case):
    """folder/NAME.py: the solution with the case's hostile lines, or a folder, FIFO or device in its place."""
    name, first, replacements, _, _ = HOSTILE[case]
    path = folder / f"{name}.py"
    if path.exists() or path.is_symlink():
        path.unlink()
    if case == "folder":
        path.mkdir()
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "device":
        path.symlink_to("/dev/null")  # a real character device, without needing root for mknod
    else:
        source = (SOLUTIONS / f"{name}.py").read_text()
        for old, new in replacements:
            assert old in source, (case, old)
            source = source.replace(old, new)
        path.write_text(first + source)
    return name


def all_solutions_with(folder, case):
    for name in NAMES:
        shutil.copy(SOLUTIONS / f"{name}.py", folder / f"{name}.py")
    return plant_hostile(folder, case)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in HOSTILE])
def test_a_hostile_file_gets_its_own_line(tmp_path, case):
    name = plant_hostile(tmp_path, case)
    result = check(name, tmp_path, time_limit=LIMIT) if case in SLOW else check(name, tmp_path)  # (5 s)
    _, _, _, state, words = HOSTILE[case]
    assert result.state == state, result.report()
    for word in words:
        assert word in result.problem, (word, result.problem)
    assert "Traceback" not in result.report()


def test_hostile_files_leave_the_checker_and_the_other_exercises_as_they_were(tmp_path):
    """Patching torch, math, builtins or train, changing folder, ending the process, waiting for input: in the
    child only. Afterwards every solution passes in this same process, and the folder is where it was."""
    here = os.getcwd()
    for case in ("patch_softmax", "patch_math", "patch_grad", "patch_print", "chdir", "patch_train"):
        check(plant_hostile(tmp_path, case), tmp_path)
    assert os.getcwd() == here and torch.is_grad_enabled()
    for name in ("attention_head", "multi_head", "lm_loss", "lr_schedule"):  # softmax, sqrt, gradients, train
        assert check(name, SOLUTIONS).state == "done", name


@pytest.mark.parametrize("case", ["patch_softmax", pytest.param("sys_exit_at_import", marks=pytest.mark.slow)])
def test_the_list_shows_the_other_eleven_done_with_a_hostile_file_among_them(tmp_path, capsys, case):
    hostile = all_solutions_with(tmp_path, case)
    assert main(["--dir", str(tmp_path)]) == 0
    listed = {line.split()[1]: line.split()[4] for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")}
    assert list(listed) == NAMES
    assert {n: s for n, s in listed.items() if n != hostile} == {n: "done" for n in NAMES if n != hostile}


def test_the_learners_printed_output_is_kept_apart_from_the_verdict(tmp_path):
    printing = "    print('hello from block')\n" + BLOCK_RETURN
    source = (SOLUTIONS / "block.py").read_text().replace(BLOCK_RETURN, printing)
    (tmp_path / "block.py").write_text(source)
    result = check("block", tmp_path)
    lines = result.report().splitlines()
    assert result.state == "done" and lines[-1] == "done: block behaves exactly as babygpt's."
    assert lines[1:3] == ["  your code printed (shown apart from the verdict):", "    | hello from block"]


def test_a_learners_fork_prints_the_verdict_once(tmp_path, capsys):
    name = plant_hostile(tmp_path, "fork")
    assert main(["check", name, "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("done: get_batch") == 1


def test_extra_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["check", "generate", "extra", "args"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments: extra args" in err


def test_a_scalar_difference_reads_without_an_index(tmp_path):
    source = (SOLUTIONS / "lm_loss.py").read_text().replace("targets.reshape(B * T))", "targets.reshape(B * T)) * 1.01")
    (tmp_path / "lm_loss.py").write_text(source)
    problem = check("lm_loss", tmp_path).problem
    assert problem.startswith("the loss differs from babygpt's: yours is ") and "at []" not in problem


def test_train_refuses_zero_iters_and_checks_its_data_as_train_py_does(tmp_path, capsys):
    with pytest.raises(UserError, match="--iters must be at least 1"):
        train_both(SOLUTIONS, iters=0)
    with pytest.raises(SystemExit) as stop:
        run(main, ["train", "--solutions", "--data_dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert f"python prepare.py --out_dir {tmp_path / 'nowhere'}" in err  # the folder named, not the default one
    (tmp_path / "meta.json").write_text("{ broken")
    with pytest.raises(SystemExit) as stop:
        run(main, ["train", "--solutions", "--data_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "meta.json is not valid JSON" in err


# -- the slow tier: the whole sweep as a user runs it, and what only a separate process shows


def exercises_command(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "exercises", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOSTILE))
def test_every_hostile_file_as_a_user_runs_it(tmp_path, case):
    """`python -m exercises check NAME`: the case's line and exit status, no traceback, nothing left running;
    `python -m exercises`: the other eleven solutions still done."""
    hostile = all_solutions_with(tmp_path, case)
    _, _, _, state, words = HOSTILE[case]
    started = time.monotonic()
    done = exercises_command("check", hostile, "--dir", tmp_path)
    assert time.monotonic() - started < 100  # (the time limit is 5 s: a hang would meet the subprocess timeout)
    assert done.returncode == (0 if state == "done" else 1), done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.count(f"{hostile} (") == 1  # one verdict, even from a learner's fork
    for word in words:
        assert word in done.stdout, (word, done.stdout)
    listed = exercises_command("--dir", tmp_path)
    assert listed.returncode == 0, listed.stderr
    states = {line.split()[1]: line.split()[4] for line in listed.stdout.splitlines() if line.startswith("  ")}
    assert {n: s for n, s in states.items() if n != hostile} == {n: "done" for n in NAMES if n != hostile}


@pytest.mark.slow
def test_ctrl_c_is_interrupted_and_130_and_stops_the_learners_code(tmp_path):
    """Ctrl-C while `python -m exercises` waits for a learner's file that never finishes importing (all twelve
    do: a minute of 5 s limits, whatever the machine's load when the signal comes)."""
    marker = tmp_path / "running"
    for name in NAMES:
        (tmp_path / f"{name}.py").write_text(f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\n"
                                             f"while True:\n    time.sleep(0.1)\n")
    command = [sys.executable, "-m", "exercises", "--dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 50
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(marker.read_text())
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip() == "interrupted" and "Traceback" not in out + err
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # the learner's code was stopped with the command
        os.kill(child, 0)


@pytest.mark.slow
def test_a_closed_pipe_and_a_full_disk_are_quiet(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "exercises", "--solutions"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.readline()  # `| head -1`
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err
    with open("/dev/full", "w") as full:  # `> /dev/full`
        done = subprocess.run([sys.executable, "-m", "exercises", "--solutions"], cwd=ROOT, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: cannot write to standard output: No space left on device"


@pytest.mark.slow
def test_train_stops_a_piece_that_never_returns(tmp_path, slice_dir, capsys):
    """A learning_rate_at that loops only at step 2 passes its check, and train stops it at its limit."""
    for name in NAMES:
        shutil.copy(SOLUTIONS / f"{name}.py", tmp_path / f"{name}.py")
    source = (SOLUTIONS / "lr_schedule.py").read_text().replace(LR_BODY, "    while it == 2:\n        pass\n" + LR_BODY)
    (tmp_path / "lr_schedule.py").write_text(source)
    assert check("lr_schedule", tmp_path).state == "done"
    assert train_both(tmp_path, iters=4, data_dir=slice_dir, piece_limit=LIMIT) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"your learning_rate_at did not return within {LIMIT:g} s at training step 3 and was "
                          f"stopped (it was at "), err
    assert "lr_schedule.py line 7 (`while it == 2:`)" in err and "never ends" in err


@pytest.mark.slow
def test_train_runs_the_learners_side_in_a_child(tmp_path, slice_dir, capsys):
    """A side effect of the learner's pieces (here: print replaced) cannot reach babygpt's side or the report."""
    for name in NAMES:
        shutil.copy(SOLUTIONS / f"{name}.py", tmp_path / f"{name}.py")
    plant_hostile(tmp_path, "patch_print")
    assert train_both(tmp_path, iters=8, data_dir=slice_dir) == 0
    out = capsys.readouterr().out
    assert "difference           0.0000  (the same model" in out and "your GPT: step 8/8" in out


def test_without_fork_the_checks_run_in_this_process_with_the_same_verdicts(monkeypatch):
    """Where there is no os.fork (Windows), the learner's code runs here, under a thread or alarm time limit (a
    file that ignores it, or sleeps under a bare except, is stopped only where the child can be killed)."""
    from exercises import sandbox
    monkeypatch.setattr(sandbox, "FORK", False)
    for name in ("vocabulary", "bigram", "generate"):
        assert check(name, SOLUTIONS).state == "done", name


@pytest.mark.slow
def test_without_fork_a_loop_still_meets_the_time_limit(tmp_path, monkeypatch):
    from exercises import sandbox
    monkeypatch.setattr(sandbox, "FORK", False)
    looping = "    while True:\n        pass\n    x = x + attn"
    source = (SOLUTIONS / "block.py").read_text().replace("    x = x + attn", looping)
    (tmp_path / "block.py").write_text(source)
    assert "block did not return within 1 s" in check("block", tmp_path, time_limit=1.0).problem
