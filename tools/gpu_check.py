"""
tools/gpu_check.py -- the CUDA path checked in one command, one table: for the first minutes with a GPU.

    python -m tools.gpu_check                       # on a CUDA machine: about 5 minutes on one H100 or A100
    python -m tools.gpu_check --max_iters 1000      # shorter: the gpu preset cut to 1000 steps
    make gpu-check                                  # the same

It needs torch with CUDA and Tiny Shakespeare prepared (python prepare.py, or input.txt copied beside it:
nothing is downloaded), and runs the commands a user runs, each timed from process start:
    1. python train.py --preset gpu                 wall time, the time to val loss <= 1.47 (the number nanoGPT's
                                                    README reports for its baby GPT), whole-val of ckpt.pt
    2. the same step with --compile on and off      tokens per second of each (the median of the logged steps)
    3. sampling from the trained model              tokens per second with the KV cache (engine.generate)
    4. torchrun --standalone --nproc_per_node=1     the distributed path on one GPU, and its tokens per second
and prints the table, which is also written to --json. On a CPU (--device cpu, with --preset and flags to
make it small) it runs the same steps: a test runs it so that it cannot rot. Not a test itself: a measurement.
"""

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python tools/gpu_check.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from babygpt import checkpoint, engine
from babygpt.cli import UserError
from babygpt.runner import run
from tools.common import ToolParser, count, file_name, output
from tools.whole_val import best_checkpoint_loss

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.47  # nanoGPT's baby GPT on Tiny Shakespeare: val 1.4697 after 5000 steps on an A100
EVAL_LINE = re.compile(r"^iter (\d+): train loss [\d.]+, val loss ([\d.]+)")


def train_command(args, out_dir, *extra, launcher=None):
    """The train.py command line a user would type, with this check's settings."""
    base = launcher or [sys.executable]
    return [*base, str(ROOT / "train.py"), "--preset", args.preset, "--out_dir", str(out_dir), "--overwrite",
            "--data_dir", args.data_dir, "--device", args.device, *args.flags.split(), *map(str, extra)]


def timed_run(command, log):
    """Run a command; return (seconds from its start, the seconds at which each stdout line came, the lines).
    A failure stops the check with the command's last lines."""
    start, stamps, lines = time.perf_counter(), [], []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="backslashreplace") as process:
        for line in process.stdout:
            stamps.append(time.perf_counter() - start)
            lines.append(line.rstrip("\n"))
            log.write(line)
            log.flush()
    if process.returncode:
        last = lines[-1] if lines else ""
        raise UserError(f"{' '.join(command[1:3])} ... exited with status {process.returncode} (its last line: "
                        f"{last!r}; all of it in {log.name})")
    return time.perf_counter() - start, stamps, lines


def median_tokens_per_s(out_dir):
    """The median tokens per second of the logged training steps (evaluations excluded), from metrics.jsonl."""
    speeds = [record["tokens_per_s"] for record in map(json.loads, (Path(out_dir) / "metrics.jsonl").open())
              if "tokens_per_s" in record]
    return statistics.median(speeds[1:] or speeds)  # the first interval holds the warm-up (and compilation)


@torch.no_grad()
def sampling_speed(out_dir, device, samples, new_tokens):
    """Tokens per second of engine.generate (the KV cache) from the run's ckpt.pt: samples x new_tokens."""
    state = checkpoint.load(Path(out_dir) / "ckpt.pt", map_location=device)
    model = checkpoint.load_model(state, device)
    idx = torch.zeros((samples, 1), dtype=torch.long, device=device)
    engine.generate(model, idx, 8, generator=torch.Generator().manual_seed(0))  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    engine.generate(model, idx, new_tokens, generator=torch.Generator().manual_seed(0))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return samples * new_tokens / (time.perf_counter() - start)


def gpu_check(args):
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("this torch sees no CUDA GPU: run the check on a GPU machine (or --device cpu with a "
                        "small --preset to try it here)")
    if not (Path(args.data_dir) / "meta.json").is_file():
        raise UserError(f"{args.data_dir} is not prepared: run python prepare.py first (Tiny Shakespeare at "
                        f"{args.data_dir}/input.txt is used as it is; nothing else is downloaded)")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device}
    with open(work / "gpu_check.log", "w", encoding="utf-8") as log:
        # 1. the preset as a user runs it
        wall, stamps, lines = timed_run(train_command(args, work / "run", *args.max_iters_flag()), log)
        evals = [(stamp, int(m[1]), float(m[2])) for stamp, line in zip(stamps, lines) if (m := EVAL_LINE.match(line))]
        reached = next(((stamp, it) for stamp, it, val in evals if val <= TARGET), None)
        described = next((line for line in lines if line.startswith("device ")), "")
        rows.update({"preset": args.preset, "wall_s": round(wall, 1), "best_val_loss": min(v for _, _, v in evals),
                     "whole_val": round(best_checkpoint_loss(work / "run", data_dir=args.data_dir)[0], 4),
                     f"s_to_val_{TARGET}": round(reached[0], 1) if reached else None,
                     f"iter_to_val_{TARGET}": reached[1] if reached else None,
                     "bfloat16": "bfloat16" in described, "setup": described})
        # 2. the step with and without torch.compile
        for compiled in ("on", "off"):
            timed_run(train_command(args, work / f"compile-{compiled}", "--compile", compiled, "--max_iters",
                                    args.speed_iters, "--eval_interval", args.speed_iters, "--eval_iters", 1,
                                    "--sample_chars", 0), log)
            rows[f"tokens_per_s_compile_{compiled}"] = round(median_tokens_per_s(work / f"compile-{compiled}"))
        # 3. sampling with the KV cache
        rows["sample_tokens_per_s"] = round(sampling_speed(work / "run", args.device, args.samples, args.new_tokens))
        # 4. the distributed path, one process
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
        wall, _, _ = timed_run(train_command(args, work / "torchrun", "--max_iters", args.speed_iters,
                                             "--eval_interval", args.speed_iters, "--eval_iters", 1,
                                             "--sample_chars", 0, launcher=torchrun), log)
        rows["torchrun_1gpu_wall_s"] = round(wall, 1)
        rows["torchrun_1gpu_tokens_per_s"] = round(median_tokens_per_s(work / "torchrun"))
    print("\n| what | value |\n|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {value} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"command": args.command_line, **rows}, indent=1) + "\n")
    print(f"(written to {args.json}; the commands' output is in {work / 'gpu_check.log'})")
    if not args.keep:
        shutil.rmtree(work / "compile-on", ignore_errors=True)
        shutil.rmtree(work / "compile-off", ignore_errors=True)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = ToolParser(prog="python -m tools.gpu_check", description="The CUDA path in one table (a measurement).")
    p.add_argument("--preset", default="gpu", help="the preset to train (default: gpu)")
    p.add_argument("--max_iters", type=count(1, 10 ** 7), default=None, help="cut the preset's steps to this")
    p.add_argument("--speed_iters", type=count(2, 10 ** 6), default=200,
                   help="steps of each compile on/off and torchrun run (default: 200)")
    p.add_argument("--samples", type=count(1, 10 ** 4), default=16, help="samples in one batch (default: 16)")
    p.add_argument("--new_tokens", type=count(1, 10 ** 6), default=500, help="tokens per sample (default: 500)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to try the check itself")
    p.add_argument("--data_dir", default="data/shakespeare_char", help="the prepared Tiny Shakespeare")
    p.add_argument("--flags", default="", help="more train.py flags for every run, e.g. '--n_layer 2'")
    p.add_argument("--work_dir", type=file_name, default="out-gpu-check", help="where the runs go")
    p.add_argument("--json", type=output("json"), default="out-gpu-check/gpu_check.json", help="the table as JSON")
    p.add_argument("--keep", action="store_true", help="keep the compile on/off runs too")
    args = p.parse_args(argv)
    args.max_iters_flag = lambda: ["--max_iters", args.max_iters] if args.max_iters else []
    args.command_line = "python -m tools.gpu_check " + " ".join(argv)
    return gpu_check(args)


if __name__ == "__main__":
    run(main)
