"""
stopping.py -- how a run ends: a signal (Ctrl-C, SIGTERM, SIGHUP) asks the loop to stop between two steps; a
loss that stops being finite ends it with the usual cures; and the last line says how to continue or where the
checkpoints are. Skip on a first read.
"""

import shlex
import signal
import sys
import threading
from pathlib import Path


class StopSignal:
    """Ctrl-C (SIGINT), SIGTERM (a closing laptop lid, `kill`, a cluster's time limit) or SIGHUP (a closed
    terminal, a dropped ssh connection) during training only sets a flag; the loop looks at it between two
    steps, saves last.pt and returns. Why not stop at once? The signal can arrive in the middle of
    optimizer.step(), with half the weights updated: that state must never be saved.
    A second signal stops immediately (KeyboardInterrupt): even then the last checkpoint on disk is whole,
    because checkpoint.save writes a temporary file and renames it."""

    def __init__(self):
        self.received = None  # the name of the first signal, e.g. "SIGINT"
        self.previous = {}

    def listen(self):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    @property
    def exit_status(self):
        """What the shell sees: 0 for a run no signal stopped; 128 + the signal's number for one that a signal
        stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), as shells and CI read "interrupted". A rank that
        torchrun's other ranks stopped has no signal of its own: 0, and rank 0 tells."""
        return 128 + signal.Signals[self.received].value if self.received else 0

    def handle(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def farewell(stopped, signal_name, iter_num, out_dir, seconds, best_val_loss):
    """The run's last line: how to continue a stopped run, or where a finished one's checkpoints are."""
    if stopped:  # under torchrun, a rank that was told to stop by another one has no signal name of its own
        return (f"stopped by {signal_name or 'a signal'} at iteration {iter_num}; saved {Path(out_dir) / 'last.pt'}. "
                f"Continue with: python {script('train.py')} --out_dir {shlex.quote(str(out_dir))} --resume")
    return (f"done: {iter_num} iterations in {seconds:.1f} s, best val loss {best_val_loss:.4f}; checkpoints in "
            f"{out_dir}/ (sample with: python {script('sample.py')} --out_dir {shlex.quote(str(out_dir))})")


def script(name):
    """How to run one of the project's scripts from here: beside this one as it was run (../sample.py, when
    train.py was run from docs/ as ../train.py), else by its name."""
    run_as = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if run_as.name in ("train.py", "sample.py", "prepare.py", "plot.py"):
        return shlex.quote(str(run_as.with_name(name)))
    return name


def diverged_message(what, iter_num, cfg, dtype, last_saved):
    """One line for a run whose loss or weights stopped being finite numbers, with the usual cures."""
    fixes = [f"a lower --learning_rate (it is {cfg.learning_rate:g})", "more --warmup_iters"]
    if dtype != "float32":
        fixes.append("--dtype float32")
    if not cfg.grad_clip:
        fixes.append("--grad_clip 1")
    kept = f"last.pt from iteration {last_saved} is kept" if last_saved is not None else "nothing was saved"
    return f"{what} at iteration {iter_num}: training diverged; try {', '.join(fixes)}; {kept}"
