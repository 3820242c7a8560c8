"""
tools/peer.py -- babygpt against nanoGPT itself (a checkout you provide), on the same machine, taking turns.

    python -m tools.peer --nanogpt PATH                     # git clone https://github.com/karpathy/nanoGPT
    python -m tools.peer --nanogpt PATH --repeats 7 --whole 0
    python -m tools.peer --nanogpt PATH --short 100 --long 500 --together 1

nanoGPT's classic recipe and babygpt's classic preset at two lengths (their difference is the marginal time per
step, the rest is fixed cost), then nanoGPT's whole classic run and babygpt's cpu preset, both best checkpoints
scored by one evaluator (tools/whole_val.py). Prints a table, writes OUT_DIR/peer.json. Results with their
commands and machines are kept in docs/experiments.md.
"""

import concurrent.futures
import inspect
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python tools/peer.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

import train
from babygpt.cli import UserError
from babygpt.runner import run
from tools.common import ToolParser, count, data_meta, finite, output, write_json
from tools.whole_val import best_checkpoint_loss, whole_split_loss

# nanoGPT's README recipe for a CPU ("baby GPT" shrunk to 4 layers x 128 wide, block 64, batch 12, 2000 steps)
NANOGPT_CLASSIC = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                   "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                   "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
# an evaluation line of either program: nanoGPT "step 250: train loss 1.9, val loss 2.0", babygpt "iter 250: ..."
EVAL_LINE = re.compile(r"(?:step|iter) (\d+): train loss ([\d.]+), val loss ([\d.]+)")


NANOGPT_SCORER = """
import sys, numpy as np, torch
from torch.nn import functional as F
from model import GPT, GPTConfig
checkpoint = torch.load(sys.argv[1], map_location="cpu", weights_only=True)  # tensors and plain values only
model = GPT(GPTConfig(**checkpoint["model_args"]))
model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()})
model.eval()
tokens = np.fromfile(sys.argv[2], dtype=np.uint16)
# nanoGPT's forward returns every position's logits only when given targets: x itself serves
print(whole_split_loss(lambda x: model(x, x)[0], tokens, model.config.block_size))
"""


def timed_run(command, cwd, log_path):
    """Run a training program; return its wall time, the evaluations it printed (seconds from process start,
    iteration, val loss) and its peak resident memory (from the kernel's accounting for that one process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    evals = []
    with open(log_path, "w", encoding="utf-8") as log:
        for line in proc.stdout:
            log.write(line)
            if match := EVAL_LINE.search(line):
                evals.append((time.perf_counter() - start, int(match[1]), float(match[3])))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise UserError(f"`{' '.join(map(str, command))}` failed (exit {proc.returncode}); its output is in {log_path}")
    print(f"  {seconds:6.1f} s  {' '.join(map(str, command))}", flush=True)
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "evals": evals,
            "peak_rss_mb": usage.ru_maxrss / 1024, "command": command}


def prepare_nanogpt_data(nanogpt, data_dir):
    """nanoGPT's own data: its prepare.py downloads input.txt unless one is there, so give it ours first. Then check
    that both programs hold the same validation tokens (the one evaluator scores both on babygpt's val.bin)."""
    ours = our_val_tokens(data_dir)
    folder = nanogpt / "data" / "shakespeare_char"
    if not (folder / "val.bin").is_file():
        text = Path(data_dir) / "input.txt"
        if not text.is_file():
            raise UserError(f"{text} not found: copy Tiny Shakespeare there (nanoGPT's prepare.py would download it)")
        if not (folder / "prepare.py").is_file():
            raise UserError(f"{folder / 'prepare.py'} not found: is {nanogpt} a nanoGPT checkout?")
        shutil.copyfile(text, folder / "input.txt")
        prepared = subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=nanogpt,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if prepared.returncode:
            raise UserError(f"nanoGPT's data/shakespeare_char/prepare.py failed: {last_line(prepared.stderr)}")
    if not np.array_equal(np.fromfile(folder / "val.bin", dtype=np.uint16), ours):
        raise UserError(f"{folder}/val.bin and {data_dir}/val.bin differ: prepare both from the same input.txt")
    return ours


def our_val_tokens(data_dir):
    """babygpt's val split in data_dir, checked against its meta.json as train.py checks it."""
    data_meta(data_dir)
    return np.asarray(train.load_split(data_dir, "val", 1))


def last_line(text):
    return (text.strip().splitlines() or ["(no output)"])[-1]


def seconds_to(evals, target):
    return next((seconds for seconds, _, val in evals if val <= target), None)


def median_or_none(values):
    """The median of the times, a None (never got there) counting as longer than any time; None if that is it."""
    middle = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(middle) else middle


def peer(args):
    """Runs, taking turns: nanoGPT's classic recipe and babygpt's classic preset at two lengths (their difference
    is the marginal time per step, the rest is fixed cost), then nanoGPT's whole classic run and babygpt's cpu
    preset; scores both best checkpoints with whole_split_loss; prints the side-by-side table."""
    if args.long <= args.short:
        raise UserError(f"--long ({args.long}) must be more steps than --short ({args.short})")
    if not args.out_dir:
        raise UserError("--out_dir must name a folder")
    try:
        nano_flags, baby_flags = shlex.split(args.nanogpt_flags), shlex.split(args.babygpt_flags)
    except ValueError as e:  # an unclosed quote
        raise UserError(f"--nanogpt_flags / --babygpt_flags: {e}") from None
    our_val_tokens(args.data_dir)
    nanogpt, out = Path(args.nanogpt).resolve(), Path(args.out_dir).resolve()
    if not (nanogpt / "train.py").is_file() or not (nanogpt / "model.py").is_file():
        raise UserError(f"{nanogpt} is not a nanoGPT checkout (no train.py and model.py)")
    val_tokens = prepare_nanogpt_data(nanogpt, args.data_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make {out}: {e.strerror or e}") from None
    python, ours = sys.executable, Path(__file__).resolve().parent.parent

    def nano(name, *extra):
        command = [python, "train.py", *NANOGPT_CLASSIC, *nano_flags, *extra, f"--out_dir={out / name}"]
        return timed_run(command, nanogpt, out / f"{name}.log")

    def baby(name, preset, *extra):
        command = [python, str(ours / "train.py"), "--preset", preset, "--data_dir", str(Path(args.data_dir).resolve()),
                   *baby_flags, *map(str, extra), "--out_dir", str(out / name), "--overwrite"]
        return timed_run(command, ours, out / f"{name}.log")

    def pair(nano_run, baby_run):
        """nanoGPT's run, then babygpt's (in turns), or both at once with --together 1: the same load either way."""
        if not args.together:
            return nano_run(), baby_run()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            started = pool.submit(nano_run), pool.submit(baby_run)
            return started[0].result(), started[1].result()

    runs, load_before = {}, os.getloadavg()[0]  # how busy the machine was: read the times with it
    print(f"tools.peer: nanoGPT at {nanogpt}, {args.repeats} round(s) of {args.short} and {args.long} steps, "
          f"then the whole runs, {'at the same time' if args.together else 'in turns'}; logs in {out}/", flush=True)
    for round_number in range(args.repeats):  # each length of each program, in turns
        for steps in (args.short, args.long):
            n, b = pair(lambda: nano(f"nanogpt-{steps}", f"--max_iters={steps}", f"--eval_interval={steps}"),
                        lambda: baby(f"babygpt-{steps}", "classic", "--max_iters", steps, "--eval_interval", steps))
            runs.setdefault(f"nanogpt-{steps}", []).append(n)
            runs.setdefault(f"babygpt-{steps}", []).append(b)
    # the whole runs, in turns, args.whole rounds: this machine's speed drifts by ~10-20% between minutes, so one
    # pair can land on either side of a difference that small (both are deterministic: every round scores alike)
    whole_rounds = [pair(lambda: nano("nanogpt-classic"), lambda: baby("babygpt-cpu", "cpu")) for _ in range(args.whole)]

    def marginal_and_fixed(who, key="seconds"):
        short = statistics.median(r[key] for r in runs[f"{who}-{args.short}"])
        long = statistics.median(r[key] for r in runs[f"{who}-{args.long}"])
        per_step = (long - short) / (args.long - args.short)
        return 1000 * per_step, short - args.short * per_step

    (nano_ms, nano_fixed), (baby_ms, baby_fixed) = marginal_and_fixed("nanogpt"), marginal_and_fixed("babygpt")
    (nano_cpu_ms, _), (baby_cpu_ms, _) = marginal_and_fixed("nanogpt", "cpu_seconds"), marginal_and_fixed("babygpt", "cpu_seconds")
    # each round's own ratio: its four runs came minutes apart, so the machine's drift (10-20% between runs here)
    # moves both programs alike; the ratio of the medians above can pair a fast minute's run with a slow one's
    round_ratios = [
        (n_long["seconds"] - n_short["seconds"]) / (b_long["seconds"] - b_short["seconds"])
        for n_short, n_long, b_short, b_long in zip(*(runs[f"{who}-{steps}"] for who in ("nanogpt", "babygpt")
                                                      for steps in (args.short, args.long)))
    ]
    nano_rss = statistics.median(r["peak_rss_mb"] for r in runs[f"nanogpt-{args.short}"])
    baby_rss = statistics.median(r["peak_rss_mb"] for r in runs[f"babygpt-{args.short}"])
    rows = [
        (f"classic recipe, marginal time per iteration ({args.long} minus {args.short} iterations)",
         f"{nano_ms:.1f} ms", f"{baby_ms:.1f} ms", f"{nano_ms / baby_ms:.2f}x"),
        ("the same, round by round (nanoGPT's marginal time over babygpt's in each round of four runs; their median)",
         "", "rounds " + " / ".join(f"{r:.2f}x" for r in round_ratios), f"{statistics.median(round_ratios):.2f}x"),
        ("the same in CPU time (user + system, all threads: less sensitive to other programs)",
         f"{nano_cpu_ms:.1f} ms", f"{baby_cpu_ms:.1f} ms", f"{nano_cpu_ms / baby_cpu_ms:.2f}x"),
        ("fixed cost of a classic run (start-up, first and last evaluation, saves)",
         f"{nano_fixed:.1f} s", f"{baby_fixed:.1f} s", f"{nano_fixed / baby_fixed:.2f}x" if baby_fixed > 0 else "-"),
        (f"peak RSS, classic, {args.short} iterations", f"{nano_rss:.0f} MB", f"{baby_rss:.0f} MB",
         f"{baby_rss / nano_rss:.2f}x"),
    ]
    result = {"nanogpt": str(nanogpt), "together": args.together, "short": args.short, "long": args.long,
              "repeats": args.repeats, "load_average_at_start": load_before, "target": args.target, "nanogpt_ms_per_iter": nano_ms, "babygpt_ms_per_iter": baby_ms,
              "throughput_ratio": nano_ms / baby_ms, "throughput_ratio_by_round": round_ratios,
              "throughput_ratio_median_of_rounds": statistics.median(round_ratios), "nanogpt_cpu_ms_per_iter": nano_cpu_ms,
              "babygpt_cpu_ms_per_iter": baby_cpu_ms, "nanogpt_fixed_s": nano_fixed, "babygpt_fixed_s": baby_fixed,
              "nanogpt_peak_rss_mb": nano_rss, "babygpt_peak_rss_mb": baby_rss, "runs": runs}
    if args.whole:
        rows[4:4], whole = whole_run_rows(args, out, nanogpt, python, val_tokens, whole_rounds)
        result.update(whole)
        result["runs"].update({"nanogpt-classic": [n for n, _ in whole_rounds],
                               "babygpt-cpu": [b for _, b in whole_rounds]})
    print(f"\n| what ({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}, load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end) | nanoGPT | babygpt | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\ncommands (the marginal runs add --max_iters/--eval_interval N, nanoGPT --out_dir, babygpt --out_dir --overwrite):")
    print("  nanoGPT: (cd " + str(nanogpt) + " && " + " ".join(map(str, runs[f"nanogpt-{args.short}"][0]["command"][1:])) + ")")
    print("  babygpt: python " + " ".join(map(str, runs[f"babygpt-{args.short}"][0]["command"][1:])))
    if args.whole:
        print("  babygpt cpu: python " + " ".join(map(str, whole_rounds[0][1]["command"][1:])))
    write_json(args.json or out / "peer.json", json.loads(json.dumps(result, default=str)))
    return result


def nanogpt_whole_val(nanogpt, out_dir, data_dir, python=sys.executable):
    """nanoGPT's best checkpoint (OUT_DIR/ckpt.pt) scored by whole_split_loss on babygpt's val.bin, in nanoGPT's
    checkout, next to nanoGPT's own model.py."""
    script = "import numpy as np, torch\nfrom torch.nn import functional as F\n" + \
             inspect.getsource(whole_split_loss) + NANOGPT_SCORER
    scored = subprocess.run([python, "-c", script, str(Path(out_dir) / "ckpt.pt"),
                             str(Path(data_dir).resolve() / "val.bin")],
                            cwd=nanogpt, capture_output=True, text=True)
    if scored.returncode:
        raise UserError(f"scoring nanoGPT's checkpoint failed: {last_line(scored.stderr)}")
    return float(scored.stdout.strip().splitlines()[-1])


def whole_run_rows(args, out, nanogpt, python, val_tokens, whole_rounds):
    """The table's rows for nanoGPT's whole classic run and babygpt's cpu preset (medians over the rounds of
    (nanoGPT run, babygpt run) in whole_rounds), and their numbers."""
    baby_score, _ = best_checkpoint_loss(out / "babygpt-cpu", val_tokens)
    nano_score = nanogpt_whole_val(nanogpt, out / "nanogpt-classic", args.data_dir, python)
    records = [json.loads(line) for line in (out / "babygpt-cpu" / "metrics.jsonl").read_text().splitlines()]
    eval_seconds = sum(r.get("eval_seconds", 0.0) for r in records)
    nano_wall, baby_wall = (statistics.median(r["seconds"] for r in runs) for runs in zip(*whole_rounds))
    # a run that never printed a val <= target has no time to it; the median is then "never" only if most never did
    nano_to, baby_to = (median_or_none([seconds_to(r["evals"], args.target) for r in runs]) for runs in zip(*whole_rounds))
    nano_final = whole_rounds[-1][0]["evals"][-1][2]

    def s(x):
        return "never" if x is None else f"{x:.1f} s"

    if nano_to:
        to_ratio = f"{nano_to / baby_to:.2f}x" if baby_to else "-"
    else:
        to_ratio = f">= {nano_wall / baby_to:.2f}x" if baby_to else "-"
    rounds = f"median of {len(whole_rounds)}" if len(whole_rounds) > 1 else "one run each"
    rows = [
        (f"nanoGPT classic vs babygpt `--preset cpu`: from process start to its own first printed val <= {args.target}"
         f" ({rounds})", s(nano_to) + ("" if nano_to else f" (final {nano_final:.4f})"), s(baby_to), to_ratio),
        ("same runs: best checkpoint on the whole validation split (non-overlapping windows, one evaluator)",
         f"{nano_score:.4f}", f"{baby_score:.4f}", ""),
        (f"same runs: whole run, wall ({rounds}"
         + (": " + ", ".join(f"{n['seconds']:.1f} / {b['seconds']:.1f} s" for n, b in whole_rounds) if len(whole_rounds) > 1
            else "") + ")", s(nano_wall), s(baby_wall), f"{nano_wall / baby_wall:.2f}x"),
        ("babygpt `--preset cpu`: evaluation's share of the wall time", "",
         f"{eval_seconds:.1f} s ({eval_seconds / whole_rounds[-1][1]['seconds']:.0%}, the last round)", ""),
    ]
    return rows, {"nanogpt_seconds_to_target": nano_to, "babygpt_cpu_seconds_to_target": baby_to,
                  "nanogpt_wall_s": nano_wall, "babygpt_cpu_wall_s": baby_wall,
                  "nanogpt_whole_val": nano_score, "babygpt_cpu_whole_val": baby_score, "babygpt_cpu_eval_s": eval_seconds}




def main(argv=None):
    p = ToolParser(prog="python -m tools.peer",
                   description="babygpt against nanoGPT itself: the classic recipe side by side, in turns.")
    p.add_argument("--nanogpt", required=True, help="a checkout of nanoGPT (git clone https://github.com/karpathy/nanoGPT)")
    p.add_argument("--short", type=count(1, 10 ** 6), default=100, help="the shorter classic run, in steps (default: 100)")
    p.add_argument("--long", type=count(2, 10 ** 6), default=500, help="the longer classic run, in steps (default: 500)")
    p.add_argument("--repeats", type=count(1, 1000), default=1, help="rounds of the two lengths; medians are used (default: 1)")
    p.add_argument("--target", type=finite, default=1.88, help="the val loss whose first print is timed (default: 1.88)")
    p.add_argument("--whole", type=count(0, 1000), default=1, help="rounds of the whole runs (nanoGPT's 2000 steps, "
                                                                  "babygpt's cpu preset), in turns, medians used; 0: "
                                                                  "only the classic step (default: 1)")
    p.add_argument("--together", type=int, choices=(0, 1), default=0,
                   help="1: run each nanoGPT/babygpt pair at the same time instead of in turns (halves the wait on a "
                        "busy machine) (default: 0)")
    p.add_argument("--nanogpt_flags", default="", help="extra --key=value flags for every nanoGPT run (tests: fewer steps)")
    p.add_argument("--babygpt_flags", default="", help="extra flags for every babygpt run (tests: a smaller model)")
    p.add_argument("--data_dir", default="data/shakespeare_char", help="babygpt's prepared data, with input.txt (default: data/shakespeare_char)")
    p.add_argument("--out_dir", default="out-peer", help="logs, checkpoints and peer.json (default: out-peer)")
    p.add_argument("--json", type=output("json"), help="where to write the JSON result (default: OUT_DIR/peer.json)")
    return peer(p.parse_args(argv))


if __name__ == "__main__":
    run(main)
