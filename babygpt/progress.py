"""
progress.py -- what the user sees while the loop runs: a progress bar or a line per log interval, with the speed
in ms per step (evaluation time excluded), which also feeds the thread picker. Skip on a first read.
"""

import sys
import time

import torch
from tqdm import tqdm

from babygpt.threads import ThreadPicker, count_threads


class Progress:
    """What the user sees while the loop runs: a progress bar in a terminal (rank 0 only), else a printed line
    at every report; and the speed (ms per step) since the last report, evaluation time excluded. Each step's
    time also goes to the machine's ThreadPicker, which may change the thread count (and says why in a line)."""

    def __init__(self, max_iters, iter_num, tokens_per_iter, machine):
        show_bar = machine.master and sys.stdout.isatty()
        self.bar = tqdm(total=max_iters, initial=iter_num, disable=not show_bar, unit="it", dynamic_ncols=True)
        self.tokens_per_iter = tokens_per_iter
        self.threads = machine.threads or ThreadPicker(torch.get_num_threads(), adapts=False)
        self.restart()

    def restart(self):
        """Start a new speed window (after an evaluation: its time is not step time)."""
        self.start, self.steps = time.perf_counter(), 0
        self.threads.restart()

    def step(self):
        self.steps += 1
        self.bar.update(1)
        why = self.threads.step()
        if why and self.bar.disable:
            print(why)
        elif why:
            self.bar.write(why)

    def report(self, iter_num, train_loss, lr):
        """Show this step's loss and the speed since the last report; return them as a metrics record."""
        ms_per_iter = 1000 * (time.perf_counter() - self.start) / max(1, self.steps)
        tokens_per_s = self.tokens_per_iter * 1000 / ms_per_iter
        if self.bar.disable:
            print(f"iter {iter_num}: loss {train_loss:.4f}, lr {lr:.2e}, {ms_per_iter:.1f} ms/iter, "
                  f"{tokens_per_s:,.0f} tokens/s, {count_threads(torch.get_num_threads())}")
        else:
            self.bar.set_postfix(loss=f"{train_loss:.3f}", ms=f"{ms_per_iter:.0f}", threads=torch.get_num_threads())
        self.restart()
        return {"iter": iter_num, "tokens": iter_num * self.tokens_per_iter, "train_loss": train_loss, "lr": lr,
                "ms_per_iter": ms_per_iter, "tokens_per_s": tokens_per_s}

    def close(self):
        self.bar.close()
