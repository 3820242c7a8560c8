"""
loss_plot.py -- a run's loss curves: read OUT_DIR/metrics.jsonl, draw OUT_DIR/loss.png.

    python plot.py loss out          # what a person types (plot.py draws its other pictures too)

train.py redraws loss.png after every evaluation (its metrics log, metrics.MetricsLog, calls redraw), in its
own process: matplotlib is imported at the first picture, with the Agg backend (no display needed), and each
redraw takes a fraction of a second next to an evaluation. A plotting problem (no matplotlib, a full disk) costs
one warning, and plotting stays off for that run.
"""

import math

import os
import re
import sys
import warnings

from babygpt import files
from babygpt.cli import UserError


def new_figure(width, height, layout="constrained"):
    """A matplotlib Figure drawn by the Agg canvas: no window, no display needed, no global pyplot state.
    layout=None skips the automatic layout (it is most of the drawing time) for figures drawn often."""
    import_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def import_matplotlib():
    """matplotlib, even when MPLBACKEND names no backend it knows (matplotlib refuses to import then): babygpt
    draws with Agg and never uses that setting, so it is dropped with one note."""
    try:
        import matplotlib  # noqa: F401
    except ValueError:
        print(f"note: MPLBACKEND={os.environ.get('MPLBACKEND')!r} is not a matplotlib backend; babygpt draws "
              f"PNG files with Agg and ignores it", file=sys.stderr)
        os.environ.pop("MPLBACKEND", None)
        for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:  # the half import
            del sys.modules[name]
        import matplotlib  # noqa: F401


def save_png(fig, path, dpi=100):
    """Write atomically (temporary file, then rename), so a reader never sees half a PNG. Any failure of the disk
    (full, read-only, a folder in the way) is one line; characters the font lacks are one note, not a warning
    each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            written = files.write_atomically(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))
        except files.WriteError as e:
            raise UserError(str(e)) from None
    missing = sorted({chr(int(m.group(1))) for w in caught if (m := re.match(r"Glyph (\d+) ", str(w.message)))})
    if missing:
        print(f"note: the font has no glyph for {len(missing)} character(s) ({', '.join(missing[:8])}"
              f"{', ...' if len(missing) > 8 else ''}); they are drawn as boxes", file=sys.stderr)
    for w in caught:
        if "missing from font" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return written


# --------------------------------------------------------------------------------------------------------------
# loss curves, from OUT_DIR/metrics.jsonl


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


