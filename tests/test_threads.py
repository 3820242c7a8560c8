"""Threads that keep their speed when another program holds a core (babygpt/threads.py's ThreadPicker).

The choice logic runs on a fake clock: a simulated 2-core machine whose step time depends on the thread count
and on whether another program is busy (the numbers measured on this repo's 2-core machine, docs/threads.md).
One slow test runs train.py for real next to a busy process."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from babygpt import threads
from babygpt.cli import UserError

ROOT = Path(__file__).resolve().parent.parent

# ms per cpu-preset step on the 2-core machine: quiet, and with one core held by a busy loop
QUIET = {1: 125.0, 2: 85.0}
BUSY = {1: 124.0, 2: 260.0}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Machine:
    """A fake clock whose steps take what a real step takes on this many threads, quiet or busy."""

    def __init__(self, busy_ms=BUSY):
        self.now, self.busy, self.busy_ms = 0.0, False, busy_ms

    def clock(self):
        return self.now

    def run(self, picker, steps):
        """Run `steps` steps; return the thread count of each step and the lines the picker said."""
        counts, lines = [], []
        for _ in range(steps):
            counts.append(torch.get_num_threads())
            self.now += (self.busy_ms if self.busy else QUIET)[torch.get_num_threads()] / 1000
            line = picker.step()
            if line:
                lines.append(line)
        return counts, lines


def auto_picker(machine, **kwargs):
    torch.set_num_threads(2)
    return threads.ThreadPicker(most=2, clock=machine.clock, **kwargs)


def test_a_quiet_machine_keeps_every_core_after_a_short_look_at_fewer():
    machine = Machine()
    picker = auto_picker(machine)
    counts, lines = machine.run(picker, 300)
    assert lines == []  # nothing to say
    assert counts[-1] == 2
    # the start-up look at one thread, and one look every 30 s, cost a few steps each: under 3% of the steps
    assert counts.count(1) <= 0.03 * len(counts), counts.count(1)


def test_a_busy_core_at_the_start_is_found_within_a_few_steps():
    machine = Machine()
    machine.busy = True
    picker = auto_picker(machine)
    counts, lines = machine.run(picker, 100)
    assert lines == ["another program is using a core: 1 thread"]
    assert counts[0] == 1 and set(counts[15:40]) == {1}


def test_a_deep_collapse_costs_one_step_per_look_not_a_window():
    """Where a busy core makes every-core steps 75x slower (seen on another machine), a look at them must
    stop after the first slow step."""
    machine = Machine(busy_ms={1: BUSY[1], 2: 75 * BUSY[1]})
    machine.busy = True
    picker = auto_picker(machine)
    counts, lines = machine.run(picker, 800)  # ~100 s: three looks every 30 s
    assert lines == ["another program is using a core: 1 thread"]
    assert 1 <= counts.count(2) <= 5, counts.count(2)


def test_a_core_taken_mid_run_is_noticed_and_given_back_when_the_machine_is_quiet_again():
    machine = Machine()
    picker = auto_picker(machine)
    machine.run(picker, 200)
    machine.busy = True
    counts, lines = machine.run(picker, 200)
    assert lines == ["another program is using a core: 1 thread"]
    assert counts.index(1) <= 10  # seen from the slower steps at once, not at the next 30 s look
    # the busy run's steps on the whole: near one thread's 124 ms, far from two threads' 260 ms
    assert sum(BUSY[n] for n in counts) / len(counts) < 1.2 * BUSY[1]
    machine.busy = False
    counts, lines = machine.run(picker, 600)  # 600 x ~125 ms: more than the 30 s between looks
    assert lines == ["the machine is quiet again: 2 threads"]
    assert counts[-1] == 2 and counts[-100:].count(1) <= 6


def test_a_forced_thread_count_is_never_changed():
    machine = Machine()
    machine.busy = True
    picker = threads.use_threads(2, adapt=True)
    picker.clock = machine.clock
    counts, lines = machine.run(picker, 300)
    assert lines == [] and set(counts) == {2}
    picker = threads.use_threads(1, adapt=True)
    picker.clock = machine.clock
    machine.busy = False
    counts, lines = machine.run(picker, 600)
    assert lines == [] and set(counts) == {1}


def test_auto_without_adapting_is_torchs_default_and_stays_put():
    machine = Machine()
    machine.busy = True
    torch.set_num_threads(2)
    picker = threads.use_threads(0, adapt=False)  # a GPU, or several processes under torchrun
    picker.clock = machine.clock
    counts, lines = machine.run(picker, 100)
    assert lines == [] and set(counts) == {2}


def test_time_that_is_not_a_step_is_not_counted():
    """An evaluation between two steps (restart() after it) must not look like a collapse."""
    machine = Machine()
    picker = auto_picker(machine, recheck_seconds=1e9)  # no look every so often: only slow steps trigger one
    machine.run(picker, 100)
    for _ in range(20):
        machine.now += 5.0  # a 5 s evaluation
        picker.restart()
        counts, lines = machine.run(picker, 10)
        assert lines == [] and set(counts) == {2}


def test_one_slow_step_is_not_a_busy_machine():
    machine = Machine()
    picker = auto_picker(machine, recheck_seconds=1e9)  # no look every so often: only slow steps trigger one
    machine.run(picker, 100)
    for _ in range(10):
        machine.now += 2.0  # a checkpoint save inside a step
        counts, lines = machine.run(picker, 20)
        assert lines == [] and set(counts[1:]) == {2}


def test_more_threads_than_cpus_is_one_line():
    with pytest.raises(UserError, match="more than the"):
        threads.use_threads((os.cpu_count() or 1) + 1)


@pytest.mark.slow
def test_train_py_next_to_a_busy_process_finishes_its_steps(tmp_path, slice_dir):
    """For real: a busy loop holds a core while train.py (auto threads) trains. It must finish every step;
    how fast is for tools/busy.py to measure, not for a test on a shared machine."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        result = subprocess.run(
            [sys.executable, "train.py", "--data_dir", str(slice_dir), "--out_dir", str(tmp_path / "out"),
             "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--batch_size", "8",
             "--max_iters", "40", "--eval_interval", "20", "--eval_iters", "2", "--log_interval", "10",
             "--sample_chars", "0", "--warmup_iters", "5", "--compile", "off", "--device", "cpu"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 0, result.stderr
    assert "done: 40 iterations" in result.stdout
    last_progress = [line for line in result.stdout.splitlines() if line.startswith("iter 40: loss")]
    assert last_progress and last_progress[0].endswith(("1 thread", "2 threads")), result.stdout  # in use
