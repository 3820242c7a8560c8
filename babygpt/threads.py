"""
threads.py -- decides how many CPU threads torch uses: --threads N, or (auto) the count that is fastest now,
found by timing steps while other programs come and go. Skip on a first read.
"""

import os
import statistics
import time
from collections import deque

import torch

from babygpt.cli import UserError


def use_threads(threads, adapt=True):
    """--threads N: N CPU threads for torch, fixed for the whole run. 0 (auto): start with torch's default count
    (one per core) and let the returned ThreadPicker change it while the run goes, as other programs load the
    machine. Either way the caller feeds it its step times (ThreadPicker.step); a fixed one ignores them. With
    adapt=False (a GPU, or several processes under torchrun), auto is simply torch's default count."""
    if threads < 0:
        raise UserError(f"--threads must not be negative, got {threads}")
    if threads > usable_cpus():
        where = f"{os.cpu_count()} CPUs of this machine" if usable_cpus() == os.cpu_count() else \
            f"{usable_cpus()} CPUs this process may use (taskset, a container: of {os.cpu_count()})"
        raise UserError(f"--threads {threads} is more than the {where}")
    if threads:
        torch.set_num_threads(threads)
    return ThreadPicker(most=torch.get_num_threads(), adapts=not threads and adapt)


def usable_cpus():
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ThreadPicker:
    """The thread count that is fastest now, found by timing steps.

    Why: torch splits every operation among its threads and each operation waits for the slowest of them.
    When another program holds a core, one of torch's threads keeps losing that core, and every operation waits
    for it: a step can take many times as long with every core's thread as with one thread fewer (2.5x to 15x
    on this repo's 2-core machine, 75x on another: docs/threads.md). Fewer threads then run at full speed.

    How: the caller calls step() after each step (a training step, or a generated token) and restart() after
    anything that is not a step (an evaluation). The picker starts on one thread (never collapses), times a few
    steps, then tries every core's thread (`most`), then one fewer, and so on, and keeps the fastest. Later it
    tries a count next to the current one every `recheck_seconds`, and at once when the recent steps got much
    slower than when the count was chosen (`slow_factor`). A trial: switch with torch.set_num_threads, skip a
    step (the new threads warm up), time `window` steps and keep the count whose median is faster (the new one
    must win by `margin`); a trial step more than `abort_factor` times the old median ends the trial at once
    (a collapse costs one step, not a window). Medians: a checkpoint save or a hiccup is one slow step.
    step() returns a line saying why the count changed, or None.

    The thread count changes rounding slightly (the sums are split differently): a run whose count changed is
    not bit-identical to one whose count did not. Pass --threads N for bit-identical reruns and resumes."""

    def __init__(self, most, adapts=True, clock=time.perf_counter, window=5, recheck_seconds=30.0,
                 slow_factor=1.5, margin=0.05, abort_factor=2.0):
        self.most, self.adapts, self.clock = most, adapts and most > 1, clock
        self.window, self.recheck_seconds, self.slow_factor = window, recheck_seconds, slow_factor
        self.margin, self.abort_factor = margin, abort_factor
        self.recent = deque(maxlen=window)  # the last step times at self.threads
        self.reference = None  # the median step time when the count was last chosen
        self.trial = None  # (the count being tried, the count to go back to, the median to beat)
        self.starting = self.adapts  # the start-up search: 1 thread, then most, most - 1, ... 2
        self.skip = 1  # steps not timed: the first one, and the first after a switch
        self.last = self.next_check = None
        self.threads = torch.get_num_threads()
        if self.adapts:
            self.switch(1)
        self.restart()

    def restart(self):
        """Time the next step from now (after an evaluation, a prompt typed, anything that is not a step)."""
        self.last = self.clock()

    def step(self):
        """One step is done. Returns a line to show if the thread count just changed, else None."""
        now = self.clock()
        seconds, self.last = now - self.last, now
        if not self.adapts:
            return None
        if self.next_check is None:
            self.next_check = now + self.recheck_seconds
        if self.trial is not None and seconds > self.abort_factor * self.trial[2]:
            return self.end_trial(seconds, now)  # far slower than the count it must beat: a collapse
        if self.skip:
            self.skip -= 1
            return None
        self.recent.append(seconds)
        if len(self.recent) < self.window:
            return None
        median = statistics.median(self.recent)
        if self.trial is not None:
            return self.end_trial(median, now)
        if self.reference is None:  # one thread measured: now every core's thread
            self.reference = median
            return self.begin_trial(self.most, median)
        if median > self.slow_factor * self.reference:  # much slower than when the count was chosen
            if self.threads > 1:
                return self.begin_trial(self.threads - 1, median)
            self.reference = median  # already on one thread: nothing fewer to try
        elif now >= self.next_check:  # every so often: is a count next to this one faster now?
            return self.begin_trial(self.threads + 1 if self.threads < self.most else self.threads - 1, median)
        return None

    def begin_trial(self, count, median):
        self.trial = (count, self.threads, median)
        self.switch(count)
        return None

    def end_trial(self, median, now):
        count, before, to_beat = self.trial
        self.trial = None
        self.next_check = now + self.recheck_seconds
        if median < (1 - self.margin) * to_beat:  # the new count is faster: keep it
            self.reference = median
            fewer = count < before
            if self.starting:  # the first count (from 1 thread) that beats one thread is the start-up's pick
                self.starting = False
                return self.why(count, fewer=True) if count < self.most else None
            if (fewer and count > 1) or (not fewer and count < self.most):  # and try the next one too
                self.begin_trial(count - 1 if fewer else count + 1, median)
            return self.why(count, fewer)
        self.reference = to_beat
        self.switch(before)
        if self.starting and count > 2:  # start-up: every core's thread lost to one thread; try one fewer
            return self.begin_trial(count - 1, to_beat)
        if self.starting:
            self.starting = False
            return self.why(1, fewer=True)
        return None

    def switch(self, count):
        torch.set_num_threads(count)
        self.threads = count
        self.recent.clear()
        self.skip = 1

    def why(self, count, fewer):
        if fewer:
            return f"another program is using a core: {count_threads(count)}"
        quiet = "quiet again" if count == self.most else "less busy"
        return f"the machine is {quiet}: {count_threads(count)}"


def count_threads(count):
    return f"{count} thread" if count == 1 else f"{count} threads"
