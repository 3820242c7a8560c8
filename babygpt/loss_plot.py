"""
loss_plot.py -- a run's loss curves: read OUT_DIR/metrics.jsonl, draw OUT_DIR/loss.png. Without torch.

    python plot.py loss out          # what a person types (plot.py draws its other pictures too)
    python loss_plot.py out 65       # the same picture from this file alone: out/loss.png, ln(65) marked

Why a module of its own, with no torch in it: train.py redraws loss.png after every evaluation (its metrics log,
checkpoint.MetricsLog, asks for it), and it does so through a child process running this file (`--serve`: a
redraw whenever lines arrive on its stdin). The child imports only matplotlib and numpy, once; so the training
process never holds matplotlib (about 35 MB), never waits for a picture, and a plotting problem (no matplotlib,
a full disk) can never touch the run: it costs one warning, and plotting stays off for that run. It runs at a
lower priority than the training it draws, and it starts before train.py imports torch (start_early).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from babygpt import cli  # noqa: F401 -- first: a Ctrl-C during the slow imports exits quietly; an unsupported Python is refused
from babygpt import guards
from babygpt.cli import UserError, run


def is_record(value):
    """A metrics line is a JSON object with an integer iter; anything else (a list, a number, a line a person or
    another program added) is not one of ours."""
    return isinstance(value, dict) and type(value.get("iter")) is int


def read_metrics_lines(path):
    """The lines of metrics.jsonl, decoded with U+FFFD for bytes that are not UTF-8 (such a line is then simply
    not valid JSON and is skipped like any other non-record line)."""
    guards.regular_file(path, "metrics file")
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def new_figure(width, height, layout="constrained"):
    """A matplotlib Figure drawn by the Agg canvas: no window, no display needed, no global pyplot state.
    layout=None skips the automatic layout (it is most of the drawing time) for figures drawn often."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path, dpi=100):
    """Write atomically (temporary file, then rename), so a reader never sees half a PNG. Any failure of the disk
    (full, read-only, a folder in the way) is one line."""
    try:
        return guards.write_atomically(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))
    except guards.WriteError as e:
        raise UserError(str(e)) from None


# --------------------------------------------------------------------------------------------------------------
# loss curves, from OUT_DIR/metrics.jsonl


def read_metrics(out_dir):
    """The records train.py wrote to OUT_DIR/metrics.jsonl, in order. Lines that are not records (a half-written
    last line, bytes that are not UTF-8, JSON that is not an object with an integer iter and a finite train_loss)
    are skipped, with a count on stderr: one bad line must not hide a whole run's curves."""
    path = Path(out_dir) / "metrics.jsonl"
    if not Path(out_dir).is_dir():
        raise UserError(f"{out_dir} is not a folder (give the --out_dir of a training run)")
    if not os.path.lexists(path):
        raise UserError(f"{path} not found: train there first (python train.py --out_dir {out_dir})")
    lines = read_metrics_lines(path)
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if is_metrics_record(record):
            records.append(record)
    if len(lines) > len(records):
        print(f"note: skipped {len(lines) - len(records)} line(s) of {path} that are not metrics records",
              file=sys.stderr)
    if not records:
        raise UserError(f"{path} is empty (no metrics records): the run has not logged anything yet")
    return records


def is_metrics_record(record):
    """An object with an integer iter and the numbers loss_curves draws. Evaluation lines have a val_loss and an
    eval_train_loss (train_loss in files written before 2026-11-24); step lines a train_loss and an lr."""
    if not isinstance(record, dict):
        return False
    if "val_loss" in record:
        keys = ("tokens", "eval_train_loss" if "eval_train_loss" in record else "train_loss", "val_loss")
    else:
        keys = ("tokens", "train_loss", "lr")
    return is_record(record) and all(type(record.get(key)) in (int, float) for key in keys)


def loss_curves(records):
    """Split metrics records into the series the loss plot draws. Each series is a dict of equal-length lists.
        batch: every logged step -- iter, tokens, train_loss (of that one batch: noisy), lr
        eval:  every evaluation  -- iter, tokens, train_loss and val_loss (averaged over eval_iters batches)
    Evaluation lines are the ones with a val_loss; a resumed run can repeat an iteration, the later line wins.
    An evaluation line's train loss is eval_train_loss (train_loss in files written before 2026-11-24)."""
    batch, evals = {}, {}
    for r in records:
        if "val_loss" in r:
            evals[r["iter"]] = {**r, "train_loss": r.get("eval_train_loss", r.get("train_loss"))}
        else:
            batch[r["iter"]] = r
    series = {
        "batch": {key: [batch[i][key] for i in sorted(batch)] for key in ("iter", "tokens", "train_loss", "lr")},
        "eval": {key: [evals[i][key] for i in sorted(evals)] for key in ("iter", "tokens", "train_loss", "val_loss")},
    }
    return series


def draw_loss(runs, path, dpi=100):
    """runs: list of (label, loss_curves(...) series, vocab_size or None). Left: loss against iteration, with
    the learning rate on a second axis; right: loss against tokens seen. Dashed grey: ln(vocab_size), the loss
    of a model that guesses uniformly -- where a fresh model starts."""
    fig = new_figure(11, 4.2, layout=None)  # fixed margins: train.py redraws this at every evaluation
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.32)
    by_iter, by_tokens = fig.subplots(1, 2)
    lr_axis = by_iter.twinx()
    colors = [f"C{i}" for i in range(10)]
    for n, (label, series, _) in enumerate(runs):
        color = colors[n % len(colors)]
        batch, evals = series["batch"], series["eval"]
        for ax, x in ((by_iter, "iter"), (by_tokens, "tokens")):
            ax.plot(batch[x], batch["train_loss"], color=color, alpha=0.3, lw=0.8,
                    label=f"{label}: train (one batch)" if ax is by_iter else None)
            ax.plot(evals[x], evals["train_loss"], color=color, ls=":", marker=".",
                    label=f"{label}: train (eval)" if ax is by_iter else None)
            ax.plot(evals[x], evals["val_loss"], color=color, marker="o", ms=3,
                    label=f"{label}: val" if ax is by_iter else None)
        lr_axis.plot(batch["iter"], batch["lr"], color=color, ls="--", lw=0.8, alpha=0.6)
    for vocab_size in sorted({v for _, _, v in runs if v}):
        for ax in (by_iter, by_tokens):
            ax.axhline(math.log(vocab_size), color="grey", ls="--", lw=1,
                       label=f"ln({vocab_size}) = {math.log(vocab_size):.2f}: uniform guess" if ax is by_iter else None)
    by_iter.set_xlabel("iteration")
    by_iter.set_ylabel("cross-entropy loss (nats)")
    lr_axis.set_ylabel("learning rate (dashed)", color="grey")
    lr_axis.tick_params(axis="y", colors="grey")
    by_tokens.set_xlabel("tokens seen")
    by_tokens.set_ylabel("cross-entropy loss (nats)")
    by_iter.set_title("loss against iteration (learning rate on the right)")
    by_tokens.set_title("loss against tokens seen")
    by_iter.legend(fontsize=7, loc="upper right")
    for ax in (by_iter, by_tokens):
        ax.grid(alpha=0.3)
    return save_png(fig, path, dpi)


# ----------------------------------------------------------------------------------------------------------------
# train.py's side: one child process per run redraws loss.png whenever asked


_DRAWERS = {}  # out_dir -> its drawing child (`python loss_plot.py --serve`), or None once it failed
_SPARE = []  # a child started by start_early, not yet told what to draw


def start_early(module_name):
    """Start a drawing child before the run knows what it will draw: train.py calls this (when it runs as the
    program, on rank 0) before it imports torch, so the child's import of matplotlib (~1 s) runs on the other
    core while ours of torch (~2.5 s) runs on this one, not beside the first training steps. start_drawing
    hands it its out_dir; if nothing does (--help, a mistake on the command line), it exits when we do."""
    if module_name == "__main__" and os.environ.get("RANK", "0") == "0" and not _SPARE:
        try:
            _SPARE.append(_spawn())
        except OSError:
            pass  # start_drawing will try again, and say why if it fails too


def _child_env():
    """The child runs `-m babygpt.loss_plot` from any folder: the repo's root goes on its import path."""
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def _spawn():
    return subprocess.Popen([sys.executable, "-m", "babygpt.loss_plot", "--serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True, env=_child_env())  # its own session: a Ctrl-C meant for training is not for it


def start_drawing(out_dir, vocab_size=None):
    """The run's drawing child, told what to draw (its first line on stdin): the one start_early started, or a
    new one, which imports matplotlib at once. Never raises; returns the child, or None if plotting is off."""
    key = str(out_dir)
    if key not in _DRAWERS:
        child = None
        try:
            child = _SPARE.pop() if _SPARE else _spawn()
            child.stdin.write(json.dumps([key, vocab_size or 0]) + "\n")  # JSON: any path fits on one line
            child.stdin.flush()
            _DRAWERS[key] = child
        except OSError as e:  # it could not start, or it has already ended (its stderr says why)
            _give_up(key, child, None if child else f"{type(e).__name__}: {e}")
    return _DRAWERS[key]


def redraw_in_background(out_dir, vocab_size=None):
    """Ask the run's drawing child to redraw OUT_DIR/loss.png, and return at once: it draws while training goes
    on. The first call starts the run's child (start_drawing), so it imports matplotlib once.
    Never raises."""
    key = str(out_dir)
    child = start_drawing(out_dir, vocab_size)
    if child is None:
        return  # it failed before: plotting is off for this run
    try:
        if child.poll() is None:
            child.stdin.write("draw\n")  # one line, one redraw
            child.stdin.flush()
            return
    except OSError:  # it has just ended: its stderr says why
        pass
    _give_up(key, child)


def wait_for_drawing():
    """What train.py calls before it ends: each child draws what it was asked for, and exits."""
    for key, child in list(_DRAWERS.items()):
        if child is not None:
            try:
                child.stdin.close()  # no more requests: the child finishes its last picture and exits
            except OSError:
                pass
            if child.wait() != 0:
                _give_up(key, child)
            else:
                child.stderr.close()
        del _DRAWERS[key]


def _give_up(key, child, why=None):
    """One warning (the child's last line of stderr says why), and no more plotting for this run."""
    if child is not None:
        child.wait()
        lines = child.stderr.read().strip().splitlines()
        child.stderr.close()
        why = lines[-1].removeprefix("error: ") if lines else f"exit status {child.returncode}"
    _DRAWERS[key] = None
    print(f"warning: could not draw {Path(key) / 'loss.png'} ({why}); plotting is off for this run", file=sys.stderr)


def give_way_to_training():
    """The drawing child runs only when a core is idle (Linux's SCHED_IDLE), elsewhere at a lower priority
    (nice 10): the picture waits for the training, never the other way round (2 cores: every one counts)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        if hasattr(os, "nice"):  # (not on Windows)
            os.nice(10)


def main(argv=None):
    """python loss_plot.py OUT_DIR V draws OUT_DIR/loss.png once (V: the vocabulary size, 0 if unknown).
    python loss_plot.py --serve is train.py's child: its first line on stdin is ["OUT_DIR", V] (JSON), then it
    redraws whenever lines arrive, until stdin ends; requests that came in while it was drawing make one redraw,
    so it never falls behind a fast run."""
    argv = sys.argv[1:] if argv is None else argv

    def draw(out_dir, vocab_size):
        out_dir = Path(out_dir)
        draw_loss([(out_dir.name, loss_curves(read_metrics(out_dir)), vocab_size or None)], out_dir / "loss.png")

    if argv != ["--serve"]:
        if len(argv) != 2 or not argv[1].isdigit():
            raise UserError("usage: python loss_plot.py OUT_DIR VOCAB_SIZE (0 if unknown)")
        return draw(argv[0], int(argv[1]))
    give_way_to_training()
    new_figure(1, 1)  # import matplotlib now, before the first request (see start_early)
    received = b""
    while b"\n" not in received:
        chunk = os.read(0, 4096)
        if not chunk:
            return  # the run ended before it said what to draw
        received += chunk
    first_line, requests = received.split(b"\n", 1)
    out_dir, vocab_size = json.loads(first_line)
    while requests or (requests := os.read(0, 4096)):  # whatever requests arrived while it drew: one redraw
        draw(out_dir, vocab_size)
        requests = b""


if __name__ == "__main__":
    run(main)
