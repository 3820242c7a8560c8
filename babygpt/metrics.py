"""
metrics.py -- the run's history, OUT_DIR/metrics.jsonl: written by train.py (MetricsLog, which has loss.png
redrawn after every evaluation), read back by plot.py and the tools (read_metrics), split into the loss curves
(loss_curves). Skip on a first read.
"""

import json
import os
import sys
from pathlib import Path

from babygpt import files
from babygpt.cli import UserError
from babygpt.files import WriteError, write_atomically


def is_record(value):
    """A metrics line is a JSON object with an integer iter; anything else (a list, a number, a line a person or
    another program added) is not one of ours."""
    return isinstance(value, dict) and type(value.get("iter")) is int


def read_metrics_lines(path):
    """The lines of metrics.jsonl, decoded with U+FFFD for bytes that are not UTF-8 (such a line is then simply
    not valid JSON and is skipped like any other non-record line)."""
    files.regular_file(path, "metrics file")
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def refuse_earlier_metrics(out_dir, resume, overwrite):
    """A folder holding only an earlier run's metrics (its checkpoints deleted, or it stopped before saving any):
    a new run would start metrics.jsonl empty, so it needs --overwrite too. An empty one holds nothing."""
    path = out_dir / "metrics.jsonl"
    if not resume and not overwrite and path.is_file() and path.stat().st_size:
        raise UserError(f"{out_dir} already holds {path.name} of an earlier run; use --overwrite to start over "
                        f"(it is emptied), or another --out_dir")


def metrics_up_to(path, iter_num):
    """The records of metrics.jsonl up to iteration iter_num, and how many lines were dropped. A line cut short
    by a crash mid-write, or that is not a record, is dropped."""
    kept, lines = [], read_metrics_lines(path)
    for line in lines:
        try:
            if is_record(record := json.loads(line)) and record["iter"] <= iter_num:
                kept.append(line)
        except ValueError:
            pass
    return "".join(line + "\n" for line in kept), len(lines) - len(kept)


class MetricsLog:
    """OUT_DIR/metrics.jsonl, one JSON object per line, written by rank 0 only. A new run starts it empty; a
    resumed one drops the lines written after its checkpoint (they belong to the lost tail of the run) -- by
    writing the kept lines to a temporary file and renaming it, never by rewriting the file in place (a full
    disk halfway through would otherwise cut the run's history). Otherwise lines are only ever appended.
    Every evaluation line also has OUT_DIR/loss.png redrawn from the file (redraw, in this process)."""

    def __init__(self, out_dir, resumed_at, master, vocab_size=None):
        self.path, self.master, self.vocab_size = Path(out_dir) / "metrics.jsonl", master, vocab_size
        self.plotting = master  # off after the first failure to draw (one warning, then none)
        try:
            if master and resumed_at is not None and os.path.lexists(self.path):
                kept, dropped = metrics_up_to(self.path, resumed_at)
                if dropped:
                    write_atomically(self.path, lambda f: f.write(kept.encode("utf-8")))
            elif master and resumed_at is None:
                write_atomically(self.path, lambda f: None)
            self.file = open(self.path, "a", encoding="utf-8") if master else open(os.devnull, "w")
        except WriteError as e:
            raise UserError(f"{e}; the metrics file is kept as it was") from None
        except OSError as e:  # e.g. metrics.jsonl is a folder
            raise UserError(f"cannot write {self.path}: {e.strerror}") from None

    def write(self, record):
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # e.g. the disk is full
            raise UserError(f"cannot write {self.path}: {e.strerror}; the checkpoints are kept") from None
        if self.plotting and "val_loss" in record:  # an evaluation: the picture follows
            self.plotting = redraw(self.path.parent, self.vocab_size)

    def close(self):
        self.file.close()


def read_metrics(out_dir):
    """The records train.py wrote to OUT_DIR/metrics.jsonl, in order. Lines that are not records (a half-written
    last line, bytes that are not UTF-8, JSON that is not an object with an integer iter and a finite train_loss)
    are skipped, with a count on stderr: one bad line must not hide a whole run's curves."""
    path = Path(out_dir) / "metrics.jsonl"
    if not Path(out_dir).is_dir():
        raise UserError(f"{out_dir} is not a folder (give the --out_dir of a training run)")
    if not os.path.lexists(path):
        if any(os.path.lexists(Path(out_dir) / name) for name in ("ckpt.pt", "last.pt")):
            raise UserError(f"{out_dir} has checkpoints but no metrics.jsonl (deleted, or copied without it): "
                            f"there are no loss curves to draw")
        raise UserError(files.elsewhere_hint(out_dir, "the folder") or f"{path} not found: train there first "
                        f"(python train.py --out_dir {out_dir})")
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


def redraw(out_dir, vocab_size=None):
    """Draw OUT_DIR/loss.png from OUT_DIR/metrics.jsonl; True if it worked. Never raises: a picture must never
    stop a run. A failure (no matplotlib, a full disk, a folder in the way) prints one warning and returns
    False, and train.py (MetricsLog) then draws no more for that run."""
    from babygpt.loss_plot import draw_loss  # (here, at the first picture: sample.py reads checkpoints, never draws)

    out_dir = Path(out_dir)
    try:
        draw_loss([(out_dir.name, loss_curves(read_metrics(out_dir)), vocab_size)], out_dir / "loss.png")
        return True
    except Exception as e:  # noqa: BLE001 -- any failure: the run goes on without its picture
        why = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        print(f"warning: could not draw {out_dir / 'loss.png'} ({why}); plotting is off for this run",
              file=sys.stderr)
        return False
