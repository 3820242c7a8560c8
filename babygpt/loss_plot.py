"""
loss_plot.py -- a run's loss curves: read OUT_DIR/metrics.jsonl, draw OUT_DIR/loss.png.

    python plot.py loss out          # what a person types (plot.py draws its other pictures too)

train.py redraws loss.png after every evaluation (its metrics log, checkpoint.MetricsLog, calls redraw), in its
own process: matplotlib is imported at the first picture, with the Agg backend (no display needed), and each
redraw takes a fraction of a second next to an evaluation. A plotting problem (no matplotlib, a full disk) costs
one warning, and plotting stays off for that run.
"""

import json
import math
import os
import sys
from pathlib import Path

from babygpt import guards
from babygpt.checkpoint import is_record, read_metrics_lines  # the metrics file, as train.py writes it
from babygpt.cli import UserError


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
# train.py's side: loss.png redrawn after every evaluation, in the training process


def redraw(out_dir, vocab_size=None):
    """Draw OUT_DIR/loss.png from OUT_DIR/metrics.jsonl; True if it worked. Never raises: a picture must never
    stop a run. A failure (no matplotlib, a full disk, a folder in the way) prints one warning and returns
    False, and train.py (checkpoint.MetricsLog) then draws no more for that run."""
    out_dir = Path(out_dir)
    try:
        draw_loss([(out_dir.name, loss_curves(read_metrics(out_dir)), vocab_size)], out_dir / "loss.png")
        return True
    except Exception as e:  # noqa: BLE001 -- any failure: the run goes on without its picture
        why = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        print(f"warning: could not draw {out_dir / 'loss.png'} ({why}); plotting is off for this run",
              file=sys.stderr)
        return False
