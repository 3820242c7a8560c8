"""
Lesson: sparse attention (BigBird) -- change which tokens may talk, and the cost stops being quadratic.

    python -m lessons.sparse_attention                  # table + figure + a short causal-vs-bigbird training run
    python -m lessons.sparse_attention --iters 0        # only the table and the figure

The GPT itself changes in one place: CausalSelfAttention passes a boolean mask to attention instead of the
lower triangle (GPTConfig.attn_pattern = "bigbird", or "sliding" for the window alone; model.py builds the
causal and sliding masks, babygpt/attention_patterns.py draws BigBird's: bigbird_mask). This lesson
  1. counts the query-key pairs each pattern computes as T grows (full: T(T+1)/2, sliding window: ~T*w,
     BigBird: ~T(w+g+r)),
  2. draws both masks into docs/figures/bigbird_mask.png,
  3. trains the same small GPT on Tiny Shakespeare with each pattern for the same number of steps (via
     train.py) and prints the validation losses.
"""

import json
import tempfile
from pathlib import Path

import torch

import train
from babygpt import threads
from babygpt.attention_patterns import count_pairs, sliding_mask
from babygpt.cli import MAX_STEPS, Parser, check_output_file, check_range
from babygpt.runner import run
from babygpt.attention_patterns import bigbird_mask
from model import causal_mask

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "bigbird_mask.png"


def pairs_table(lengths, window, n_global, n_random):
    """Rows of (T, full pairs, sliding-window pairs, bigbird pairs, bigbird / full) for the markdown table."""
    rows = []
    for T in lengths:
        full, sparse = count_pairs(causal_mask(T)), count_pairs(bigbird_mask(T, window, n_global, n_random))
        rows.append((T, full, count_pairs(sliding_mask(T, window)), sparse, sparse / full))
    return rows


def draw_masks(path, T, window, n_global, n_random):
    """Full causal next to BigBird, with BigBird's links coloured by kind (window, global, random)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    sparse = bigbird_mask(T, window, n_global, n_random)
    rows, cols = torch.arange(T)[:, None], torch.arange(T)[None, :]
    kind = torch.zeros(T, T)  # 0 not allowed, 1 window, 2 global, 3 random
    kind[sparse] = 3
    kind[sparse & (cols < n_global)] = 2
    kind[sparse & (cols > rows - window)] = 1
    colours = ListedColormap(["white", "tab:blue", "tab:orange", "tab:green"])
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    axes[0].imshow(causal_mask(T).float(), cmap=ListedColormap(["white", "tab:blue"]), interpolation="nearest")
    axes[0].set_title(f"full causal: {count_pairs(causal_mask(T))} pairs")
    axes[1].imshow(kind, cmap=colours, vmin=0, vmax=3, interpolation="nearest")
    axes[1].set_title(f"BigBird w={window} g={n_global} r={n_random}: {count_pairs(sparse)} pairs")
    for ax in axes:
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    fig.text(0.5, 0.01, "blue: window   orange: global   green: random", ha="center")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def final_val_loss(out_dir):
    lines = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [line["val_loss"] for line in lines if "val_loss" in line][-1]


def main(argv=None):
    parser = Parser(prog="python -m lessons.sparse_attention", description=__doc__.split("\n")[1])
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--n_global", type=int, default=2)
    parser.add_argument("--n_random", type=int, default=2)
    parser.add_argument("--iters", type=int, default=300, help="training steps per pattern (0: skip training)")
    parser.add_argument("--data_dir", default="data/shakespeare_char")
    parser.add_argument("--figure", default=str(FIGURE))
    args = parser.parse_args(argv)
    for flag, low in (("window", 1), ("n_global", 0), ("n_random", 0)):
        check_range(flag, getattr(args, flag), low, 4096)  # 4096: the longest sequence of the table
    check_range("iters", args.iters, 0, MAX_STEPS)
    check_output_file("figure", args.figure)
    threads.use_threads(1)  # tiny models: one thread is as fast, and kinder to a shared machine

    print(f"query-key pairs, full causal vs a sliding window of {args.window} vs BigBird (that window, "
          f"{args.n_global} global, {args.n_random} random):")
    print("| T | full causal | sliding window | BigBird | BigBird / full |\n|---|---|---|---|---|")
    for T, full, window, sparse, ratio in pairs_table([64, 256, 1024, 4096], args.window, args.n_global, args.n_random):
        print(f"| {T} | {full:,} | {window:,} | {sparse:,} | {ratio:.3f} |")
    draw_masks(Path(args.figure), 64, args.window, args.n_global, args.n_random)
    print(f"figure: {args.figure}")

    if args.iters:
        bigbird = ["--attn_pattern", "bigbird", "--bigbird_window", str(args.window),
                   "--bigbird_global", str(args.n_global), "--bigbird_random", str(args.n_random)]
        with tempfile.TemporaryDirectory() as tmp:
            for name, extra in (("causal", []), ("bigbird", bigbird)):
                flags = ["--preset", "classic", "--data_dir", args.data_dir, "--out_dir", f"{tmp}/{name}",
                         "--max_iters", str(args.iters), "--eval_interval", str(args.iters), "--eval_iters", "20",
                         "--sample_chars", "0", "--log_interval", str(args.iters), "--threads", "1", *extra]
                train.main(flags)
                print(f"{name}: val loss {final_val_loss(f'{tmp}/{name}'):.4f} after {args.iters} steps")


if __name__ == "__main__":
    run(main)
