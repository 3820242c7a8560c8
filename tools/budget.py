"""
tools/budget.py -- what a few minutes of training buy: the laptop preset's best checkpoint on the whole
validation split after 2.5, 5, 10 and 20 minutes of budget, each budget its own run whose schedule ends at
it; nanoGPT's classic CPU recipe and the cpu preset, run as they are, on the same axes. Prints a table,
writes OUT_DIR/budget.json and a figure of loss against minutes.

    python -m tools.budget --nanogpt PATH           # laptop at 2.5, 5, 10, 20 min, cpu preset, nanoGPT classic
    python -m tools.budget --minutes 10 --seeds 0,1 --peers 0   # the laptop preset's own budget, two seeds
    python -m tools.budget --runs 0                 # the table and figure again from OUT_DIR/budget.json

The laptop preset is sized for ten minutes of a 2-core CPU: a budget of m minutes runs it with max_iters and
eval_interval scaled by m / 10 (the learning rate then decays to its end at the budget). Wall time counts from
process start, start-up and evaluations included. Results add up in budget.json (a new run of the same
program, budget and seed replaces the old one), so the long budgets can be run one at a time. Results with
their commands and machines are kept in docs/experiments.md ("A laptop's ten minutes").
"""

import io
import json
import os
import platform
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python tools/budget.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train
from babygpt import device
from babygpt.cli import UserError, load_preset
from babygpt.loss_plot import new_figure, save_png
from babygpt.runner import run
from tools.common import ToolParser, output, write_json
from tools.peer import (NANOGPT_CLASSIC, nanogpt_whole_val, our_val_tokens, prepare_nanogpt_data,
                        timed_run)
from tools.whole_val import best_checkpoint_loss

ROOT = Path(__file__).resolve().parent.parent
PRESET_MINUTES = 10.0  # the budget config/laptop.toml is sized for
GPU_BABY_GPT = 1.4697  # nanoGPT's README: the baby GPT's val loss after 5000 steps on a GPU


def scaled_run(preset_values, minutes):
    """The preset's max_iters and eval_interval for a budget of `minutes`: the same step, a schedule that ends
    when the budget does, and as many evaluations as the preset's own run (at least one step and one evaluation
    at the end)."""
    max_iters = max(1, round(preset_values["max_iters"] * minutes / PRESET_MINUTES))
    evaluations = len(range(0, preset_values["max_iters"], preset_values["eval_interval"]))
    return max_iters, -(-max_iters // evaluations)  # the ceiling: never one evaluation more than the preset's


def parse_list(kind, text):
    """'2.5,5,10' as numbers (kind: float or int), each checked; one line if not."""
    try:
        values = [kind(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from None
    return values


def budget(args):
    minutes = parse_list(float, args.minutes)
    seeds = parse_list(int, args.seeds)
    if any(not 0 < m <= 24 * 60 for m in minutes):
        raise UserError(f"--minutes: each budget must be above 0 and at most a day, got {args.minutes!r}")
    if any(not 0 <= s < 2 ** 31 for s in seeds):
        raise UserError(f"--seeds: each seed must be from 0 to 2**31 - 1, got {args.seeds!r}")
    preset_values = {**train.DEFAULTS, **load_preset(args.preset, train.DEFAULTS)}
    out = Path(args.out_dir).resolve()
    json_path = Path(args.json) if args.json else out / "budget.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        results = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else {}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot use {json_path}: {e}") from None
    runs = results.setdefault("runs", {})
    python, data_dir = sys.executable, str(Path(args.data_dir).resolve())
    val_tokens = our_val_tokens(args.data_dir) if args.runs else None

    def babygpt(name, preset, *extra):
        command = [python, str(ROOT / "train.py"), "--preset", preset, "--data_dir", data_dir, *map(str, extra),
                   "--out_dir", str(out / name), "--overwrite"]
        result = timed_run(command, ROOT, out / f"{name}.log")
        result["whole_val"], result["best_iter"] = best_checkpoint_loss(out / name, val_tokens)
        return result

    def record(name, result, **about):
        runs[name] = {**about, "seconds": result["seconds"], "whole_val": result["whole_val"],
                      "evals": [list(e) for e in result["evals"]], "command": result["command"], "host": host()}
        write_json(json_path, results, log=io.StringIO())  # kept after every run: a crash loses one

    if args.runs:
        for m in minutes:
            for seed in seeds:
                max_iters, eval_interval = scaled_run(preset_values, m)
                name = f"{args.preset}-{m:g}min-seed{seed}"
                extra = ["--max_iters", max_iters, "--eval_interval", eval_interval, "--seed", seed, *args.flags]
                record(name, babygpt(name, args.preset, *extra), program=args.preset, minutes=m, seed=seed,
                       max_iters=max_iters)
        if args.peers:
            record("cpu", babygpt("cpu", "cpu", *args.flags), program="cpu", seed=0)
            if args.nanogpt:
                nanogpt = Path(args.nanogpt).resolve()
                if not (nanogpt / "train.py").is_file():
                    raise UserError(f"{nanogpt} is not a nanoGPT checkout (no train.py)")
                prepare_nanogpt_data(nanogpt, args.data_dir)
                command = [python, "train.py", *NANOGPT_CLASSIC, *args.nanogpt_flags,
                           f"--out_dir={out / 'nanogpt-classic'}"]
                result = timed_run(command, nanogpt, out / "nanogpt-classic.log")
                result["whole_val"] = nanogpt_whole_val(nanogpt, out / "nanogpt-classic", args.data_dir, python)
                record("nanogpt-classic", result, program="nanoGPT classic CPU", seed=1337)
    if not runs:
        raise UserError(f"no results in {json_path} yet: run some budgets first (--runs 1)")
    print(f"results in {json_path}")
    print_table(runs)
    if args.figure:
        draw(runs, args.figure, args.preset)
    return results


def host():
    """What the wall times depend on: the CPU, its core count, and whether it multiplies in bfloat16."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "fast_bf16": device.fast_bf16("cpu"), "load_before": os.getloadavg()[0]}


def print_table(runs):
    print(f"{'run':32} {'budget':>8} {'wall':>8} {'steps':>7} {'whole-val':>10}")
    for name, r in sorted(runs.items(), key=lambda item: (item[1].get("minutes", 0), item[0])):
        budget_text = f"{r['minutes']:g} min" if "minutes" in r else "its own"
        steps = r["evals"][-1][1] if r["evals"] else "-"
        print(f"{name:32} {budget_text:>8} {r['seconds']:7.1f}s {steps:>7} {r['whole_val']:10.4f}")
    print(f"(the GPU baby GPT, for reference: {GPU_BABY_GPT})")


def draw(runs, path, preset):
    """Whole-val loss against wall minutes: the preset's budgets as a line through the mean of their seeds (each
    run a dot), the other programs as points, the GPU baby GPT's val loss as a horizontal line. A PNG."""
    fig = new_figure(6.4, 4)
    ax = fig.subplots()
    ours = [r for r in runs.values() if r["program"] == preset]
    ax.scatter([r["seconds"] / 60 for r in ours], [r["whole_val"] for r in ours], color="C0", s=12)
    by_budget = [[r for r in ours if r["minutes"] == m] for m in sorted({r["minutes"] for r in ours})]
    ax.plot([sum(r["seconds"] for r in rs) / len(rs) / 60 for rs in by_budget],
            [sum(r["whole_val"] for r in rs) / len(rs) for rs in by_budget], "o-", color="C0",
            label=f"babygpt --preset {preset}: each budget its own run")
    others = sorted((r["program"], r["seconds"], r["whole_val"]) for r in runs.values() if r["program"] != preset)
    for i, (program, seconds, loss) in enumerate(others):
        label = "babygpt --preset cpu" if program == "cpu" else f"{program} recipe"
        ax.plot(seconds / 60, loss, "s", color=f"C{i + 1}", label=label)
    ax.axhline(GPU_BABY_GPT, color="gray", linestyle="--", label=f"nanoGPT's baby GPT on a GPU: {GPU_BABY_GPT}")
    ax.set_xlabel("wall minutes from process start")
    ax.set_ylabel("best checkpoint, whole val split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    print(f"wrote {save_png(fig, path, dpi=72)}")


def main(argv=None):
    p = ToolParser(prog="python -m tools.budget",
                   description="The laptop preset's whole-val loss against minutes of budget, beside the cpu "
                               "preset and nanoGPT's classic CPU recipe.")
    p.add_argument("--minutes", default="2.5,5,10,20", help="budgets in minutes, each its own run (default: 2.5,5,10,20)")
    p.add_argument("--seeds", default="0", help="seeds, each budget run once per seed (default: 0)")
    p.add_argument("--preset", default="laptop", help="the preset sized for 10 minutes (default: laptop)")
    p.add_argument("--runs", type=int, choices=(0, 1), default=1, help="0: only the table and figure from budget.json")
    p.add_argument("--peers", type=int, choices=(0, 1), default=1,
                   help="1: also the cpu preset's run and, with --nanogpt, nanoGPT's classic CPU recipe (default: 1)")
    p.add_argument("--nanogpt", help="a checkout of nanoGPT (git clone https://github.com/karpathy/nanoGPT)")
    p.add_argument("--nanogpt_flags", default="", help="extra --key=value flags for nanoGPT's run (tests: fewer steps)")
    p.add_argument("--flags", default="", help="extra flags for every babygpt run (tests: a smaller model)")
    p.add_argument("--data_dir", default="data/shakespeare_char", help="prepared data, with input.txt for nanoGPT")
    p.add_argument("--out_dir", default="out-budget", help="logs, checkpoints and budget.json (default: out-budget)")
    p.add_argument("--json", type=output("json"), help="the results file (default: OUT_DIR/budget.json)")
    p.add_argument("--figure", type=output("png", optional=True), default="docs/figures/laptop_budget.png",
                   help="where to draw the figure ('' : none) (default: docs/figures/laptop_budget.png)")
    args = p.parse_args(argv)
    try:
        args.flags, args.nanogpt_flags = shlex.split(args.flags), shlex.split(args.nanogpt_flags)
    except ValueError as e:  # an unclosed quote
        p.error(f"--flags / --nanogpt_flags: {e}")
    return budget(args)


if __name__ == "__main__":
    run(main)
