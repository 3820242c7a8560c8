"""
busy.py -- what another busy program costs babygpt: the cpu preset's step and sample.py's speed with 1 thread,
with every core, and with auto threads, on a quiet machine and next to programs that keep cores busy.

    python -m tools.busy                          # quiet, one busy process, two; in turns; two rounds
    python -m tools.busy --busy 0,1 --rounds 3    # only quiet and one busy core
    python -m tools.busy --demo 1                 # also make demo's training (the whole cpu preset), auto threads
    python -m tools.busy --preset laptop --busy 0,1 --threads auto   # another preset's step (and --demo: run)

It starts the busy programs itself (`python -c "while True: pass"`, one core each) and stops them after each
condition. The step time is marginal: the mean ms per step after the first --skip steps (start-up, the first
evaluation and auto's first look at fewer threads are not in it; auto's later looks are). sample.py's speed is
characters per second between its first and last streamed character, and its wall time from process start.
Results and their machines are kept in docs/threads.md.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python tools/busy.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babygpt.cli import UserError, known_presets
from babygpt.runner import run
from tools.common import ToolParser, count, output

ROOT = Path(__file__).resolve().parent.parent
BUSY_LOOP = "while True: pass"
STEP_LINE = re.compile(r"^iter (\d+): loss [^,]+, lr [^,]+, ([\d.]+) ms/iter")
SWITCH_LINES = ("another program is using a core", "the machine is")


def child_env():
    """The scripts as a user runs them: torch picks its own thread count (no OMP_NUM_THREADS from outside)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def threads_flag(setting):
    return "0" if setting == "auto" else setting


def start_busy(count):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    time.sleep(0.5)  # let them take their cores
    return procs


def stop_busy(procs):
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def train(data_dir, out_dir, threads, extra, preset="cpu"):
    """Run train.py with the preset; return (ms of each logged step by iteration, switch lines, wall s)."""
    cmd = [sys.executable, "train.py", "--preset", preset, "--data_dir", str(data_dir), "--out_dir", str(out_dir),
           "--overwrite", "--threads", threads_flag(threads), *extra]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise UserError(f"train.py failed ({' '.join(cmd[1:])}): {result.stderr.strip().splitlines()[-1:]}")
    steps = {int(m[1]): float(m[2]) for m in map(STEP_LINE.match, result.stdout.splitlines()) if m}
    switches = [line for line in result.stdout.splitlines() if line.startswith(SWITCH_LINES)]
    return steps, switches, wall


def marginal_step(data_dir, out_dir, threads, steps, skip, preset="cpu"):
    """The mean ms per step after the first `skip` steps (every step is logged, no evaluation in between)."""
    ms, switches, _ = train(data_dir, out_dir, threads, ["--max_iters", str(steps), "--eval_interval", str(steps),
                                                          "--eval_iters", "1", "--sample_chars", "0",
                                                          "--log_interval", "1", "--save_interval", "0"], preset)
    return statistics.mean(v for it, v in ms.items() if it > skip), len(switches)


def sample(ckpt_dir, threads, chars):
    """Run sample.py; return (wall seconds from process start, characters per second while streaming)."""
    cmd = [sys.executable, "sample.py", "--out_dir", str(ckpt_dir), "--max_new_tokens", str(chars),
           "--threads", threads_flag(threads)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    reads = []  # (time, bytes) of each read of the streamed sample
    while chunk := os.read(proc.stdout.fileno(), 4096):
        reads.append((time.perf_counter(), len(chunk)))
    if proc.wait():
        raise UserError(f"sample.py failed: {' '.join(cmd[1:])}")
    wall = time.perf_counter() - start
    streamed = sum(n for _, n in reads[1:])  # the first read holds the prompt (and maybe a character)
    seconds = reads[-1][0] - reads[0][0] if len(reads) > 1 else float("nan")
    return wall, streamed / seconds if seconds else float("nan")


def load():
    return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def main(argv=None):
    parser = ToolParser(prog="python -m tools.busy", description="What busy programs cost babygpt's step and sampling,"
                    " for fixed and auto threads, in turns (not a test).")
    parser.add_argument("--busy", default="0,1,2", help="numbers of busy programs to run next to babygpt (default: "
                        "0,1,2: quiet, one busy core, two busy programs)")
    parser.add_argument("--threads", default=None, help="thread settings to compare (default: 1,<CPUs>,auto)")
    parser.add_argument("--rounds", type=count(1, 100), default=2, help="rounds of everything, in turns (default: 2)")
    parser.add_argument("--preset", default="cpu", help="the preset whose step (and, with --demo, whole run) is "
                                                          "timed (default: cpu)")
    parser.add_argument("--steps", type=count(2, 10**5), default=80, help="the preset's steps per run (default: 80)")
    parser.add_argument("--skip", type=count(0, 10**5), default=20, help="first steps left out of the marginal step (default: 20)")
    parser.add_argument("--chars", type=count(2, 10**6), default=500, help="characters per sample.py run (default: 500)")
    parser.add_argument("--demo", type=count(0, 1), default=0, help="1: also time the whole preset run (for cpu: make demo's "
                        "training), auto threads, quiet and next to one busy program (default: 0)")
    parser.add_argument("--data_dir", default="data/shakespeare_char", help="prepared data (default: %(default)s)")
    parser.add_argument("--json", type=output("json", optional=True), default="", help="also write the results to this file")
    args = parser.parse_args(argv)

    cpus = os.cpu_count() or 1
    if args.preset not in known_presets():
        raise UserError(f"unknown preset {args.preset!r}; known presets: {', '.join(known_presets())}")
    try:
        busy_counts = [int(b) for b in args.busy.split(",")]
    except ValueError:
        raise UserError(f"--busy takes numbers separated by commas, got {args.busy!r}") from None
    settings = (args.threads or f"1,{cpus},auto").split(",")
    for setting in settings:
        if setting != "auto" and not (setting.isdigit() and 1 <= int(setting) <= cpus):
            raise UserError(f"--threads takes auto or counts from 1 to {cpus}, got {setting!r}")
    if any(b < 0 or b > 2 * cpus for b in busy_counts):
        raise UserError(f"--busy counts must be from 0 to {2 * cpus}")
    if args.rounds < 1 or args.chars < 2 or not 0 <= args.skip < args.steps - 1:
        raise UserError("--rounds must be at least 1, --chars at least 2, and --skip from 0 to --steps - 2")
    data_dir = (ROOT / args.data_dir) if not Path(args.data_dir).is_absolute() else Path(args.data_dir)
    if not (data_dir / "train.bin").exists():
        raise UserError(f"no prepared data in {data_dir} (run prepare.py first)")

    results = {(b, s): {"step_ms": [], "switches": [], "sample_wall_s": [], "chars_per_s": []}
               for b in busy_counts for s in settings}
    demo = {}
    print(f"{cpus} CPUs; {load()}; busy programs {busy_counts}, threads {settings}, {args.rounds} round(s)",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="babygpt-busy-") as tmp:
        tmp = Path(tmp)
        # a cpu-preset checkpoint to sample from: its size is what matters for speed, not how well it learned
        train(data_dir, tmp / "ckpt", "1", ["--max_iters", "10", "--eval_interval", "10", "--eval_iters", "1",
                                             "--sample_chars", "0"], args.preset)
        for r in range(args.rounds):
            for b in busy_counts:
                procs = start_busy(b)
                try:
                    order = settings[r % len(settings):] + settings[:r % len(settings)]  # turns: each goes first
                    for s in order:
                        ms, switches = marginal_step(data_dir, tmp / "run", s, args.steps, args.skip, args.preset)
                        wall, cps = sample(tmp / "ckpt", s, args.chars)
                        row = results[(b, s)]
                        row["step_ms"].append(ms)
                        row["switches"].append(switches)
                        row["sample_wall_s"].append(wall)
                        row["chars_per_s"].append(cps)
                        print(f"round {r + 1}, {b} busy, threads {s}: {ms:.1f} ms/step ({switches} switches), "
                              f"sample {wall:.2f} s wall, {cps:.0f} chars/s; {load()}", file=sys.stderr)
                finally:
                    stop_busy(procs)
            if args.demo:
                for b in (0, 1):
                    procs = start_busy(b)
                    try:
                        _, switches, wall = train(data_dir, tmp / "demo", "auto", [], args.preset)
                    finally:
                        stop_busy(procs)
                    demo.setdefault(b, []).append(wall)
                    print(f"round {r + 1}: {args.preset} preset run, auto threads, {b} busy: {wall:.1f} s wall "
                          f"({len(switches)} switches); {load()}", file=sys.stderr)

    print(f"\n| busy programs | threads | marginal {args.preset}-preset step, ms (median of {args.rounds}) | sample.py "
          f"{args.chars} chars: wall s | chars/s | switches |")
    print("|---|---|---|---|---|---|")
    med = {key: {k: statistics.median(v) for k, v in row.items()} for key, row in results.items()}
    for (b, s), row in med.items():
        print(f"| {b} | {s} | {row['step_ms']:.1f} | {row['sample_wall_s']:.2f} | {row['chars_per_s']:.0f} "
              f"| {row['switches']:g} |")
    if "auto" in settings and 0 in busy_counts:
        quiet = med[(0, "auto")]
        fixed = [s for s in settings if s != "auto"]
        if fixed:
            best = min(med[(0, s)]["step_ms"] for s in fixed)
            print(f"\nquiet: auto's step is {quiet['step_ms'] / best:.3f}x the best fixed count's")
        for b in busy_counts:
            if b:
                auto = med[(b, "auto")]
                print(f"{b} busy: auto's step is {auto['step_ms'] / quiet['step_ms']:.2f}x its quiet step; "
                      f"sample.py's wall {auto['sample_wall_s'] / quiet['sample_wall_s']:.2f}x its quiet wall")
    if demo:
        q, b1 = statistics.median(demo[0]), statistics.median(demo[1])
        print(f"{args.preset} preset run, auto threads: quiet {q:.1f} s, one busy program {b1:.1f} s "
              f"({b1 / q:.2f}x)")
    print(load())
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpus": cpus, "preset": args.preset, "rounds": args.rounds, "steps": args.steps, "skip": args.skip, "chars": args.chars,
            "runs": [{"busy": b, "threads": s, **row} for (b, s), row in results.items()],
            "demo_wall_s": {str(b): v for b, v in demo.items()}}, indent=1))


if __name__ == "__main__":
    run(main)
