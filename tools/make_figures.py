"""
tools/make_figures.py -- make the walkthrough's figures: train a small model quickly, then draw it.

    python prepare.py                 # once: data/shakespeare_char/
    python -m tools.make_figures      # about a minute on a laptop CPU; writes docs/figures/*.png

The run goes to a temporary folder (or --keep_dir, to look at it afterwards with plot.py and sample.py).
The same torch version on the same kind of machine gives the same pictures: every seed is fixed.
"""

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import sys

if __package__ in (None, ""):  # run by its path (python tools/make_figures.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plot
import train
from babygpt import checkpoint
from babygpt.cli import Parser
from babygpt.runner import run
from babygpt.tokenizer import tokenizer_from_meta

FIGURES = ROOT / "docs" / "figures"
# Small enough to train in about a minute on one CPU thread, big enough to learn words: 2 layers of 4 heads.
RUN = ["--preset", "classic", "--n_layer", "2", "--n_head", "4", "--n_embd", "64", "--block_size", "32", "--batch_size", "32",
       "--max_iters", "800", "--eval_interval", "50", "--eval_iters", "20", "--learning_rate", "3e-3",
       "--min_lr", "3e-4", "--warmup_iters", "50", "--log_interval", "10", "--sample_chars", "0",
       "--device", "cpu", "--compile", "off", "--threads", "1", "--seed", "1337"]
TEXT = "ROMEO:\nBut soft, what light"  # what the attention figure looks at
DPI = 72  # small files: tens of KB each


def main(argv=None):
    parser = Parser(prog="python -m tools.make_figures", description="Train a small model and draw the walkthrough's figures.")
    parser.add_argument("--data_dir", default=str(ROOT / "data" / "shakespeare_char"), help="prepared data (prepare.py)")
    parser.add_argument("--keep_dir", default="", help="train into this folder and keep it (default: a temporary one)")
    parser.add_argument("--figures", default=str(FIGURES), help="where the PNGs go")
    args = parser.parse_args(argv)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep_dir or tmp)
        train.main(["--data_dir", args.data_dir, "--out_dir", str(out_dir), "--overwrite", *RUN])
        state = checkpoint.load(checkpoint.resolve(out_dir))
        model = checkpoint.load_model(state)
        tokenizer = tokenizer_from_meta(state["meta"])

        series = plot.loss_curves(plot.read_metrics(out_dir))
        written = [plot.draw_loss([("2 layers x 4 heads, 64 wide", series, state["meta"]["vocab_size"])], figures / "loss.png", dpi=DPI)]
        idx = plot.encode_text(tokenizer, TEXT, model.config.block_size)  # (1, T)
        maps = plot.attention_maps(model, idx)[:, 0]  # (n_layer, nh, T, T)
        written.append(plot.draw_attention(maps, TEXT, figures / "attention.png", dpi=DPI))
        written.append(plot.draw_embeddings(model, state["meta"]["vocab"], figures / "embeddings.png", dpi=DPI))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1000} KB)")


if __name__ == "__main__":
    run(main)
