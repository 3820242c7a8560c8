"""
bench.py -- measurements that are not tests: speed, memory and time-to-loss. Prints a table, writes JSON.

    python bench.py throughput --preset cpu
    python bench.py time-to-loss --target 1.88 --presets classic,cpu
    python bench.py sample

Results with their commands and machines are kept in docs/experiments.md.
"""

import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch

import engine
from cli import PRESET_DIR, Parser, UserError, run
from model import GPT, GPTConfig


def throughput(args):
    raise UserError("bench.py throughput is not written yet")


def time_to_loss(args):
    raise UserError("bench.py time-to-loss is not written yet")


# -- bench.py sample: generation speed with and without the KV cache, one sample at a time and batched

SAMPLE_MODES = [  # (name, kv_cache, batched, refill_every)
    ("uncached, one by one", False, False, 1),
    ("uncached, batched", False, True, 1),
    ("cached, one by one", True, False, 1),
    ("cached, batched", True, True, 1),
]


def time_generation(model, num_samples, new_tokens, kv_cache, batched, refill_every, seed):
    """Generate num_samples x new_tokens tokens after a one-token prompt, as one batch or one sample after
    another. Returns (tokens (num_samples, new_tokens), seconds while the window fills, seconds after it is
    full): the cache can only help in the first phase (see engine.py), batching in both."""
    fill_steps = model.config.block_size - 1  # new tokens until the window of the 1-token prompt is full
    groups = [num_samples] if batched else [1] * num_samples
    generator = torch.Generator().manual_seed(seed)
    rows, filling, full = [], 0.0, 0.0
    for size in groups:
        idx = torch.zeros(size, 1, dtype=torch.long)  # (size, 1): every sample starts from token 0
        start = time.perf_counter()
        steps = []
        for step, token in enumerate(engine.stream(model, idx, new_tokens, 1.0, None, generator, None,
                                                   kv_cache, refill_every)):
            steps.append(token)  # (size, 1)
            if step == fill_steps - 1:
                filled = time.perf_counter()
        end = time.perf_counter()
        if new_tokens < fill_steps:
            filled = end
        filling, full = filling + filled - start, full + end - filled
        rows.append(torch.cat(steps, dim=1))  # (size, new_tokens)
    return torch.cat(rows), filling, full


def sample(args):
    torch.set_num_threads(args.threads)
    preset = tomllib.loads((PRESET_DIR / f"{args.preset}.toml").read_text(encoding="utf-8"))
    shape = {k: preset[k] for k in ("n_layer", "n_head", "n_embd", "block_size") if k in preset}
    config = GPTConfig(vocab_size=65, **shape)
    torch.manual_seed(0)
    model = GPT(config).eval()  # random weights: speed does not depend on what the model learned
    modes = list(SAMPLE_MODES)
    if args.refill_every > 1:
        modes.append((f"cached, batched, refill every {args.refill_every} (not exact)", True, True, args.refill_every))
    print(f"{model.num_params():,} parameters, block_size {config.block_size}, {args.samples} samples x "
          f"{args.new_tokens} new characters, {args.threads} threads, {args.repeats} round(s)", file=sys.stderr)

    results = {name: [] for name, *_ in modes}
    tokens = {}
    for round_number in range(args.repeats):  # interleaved: every round measures every mode once
        for name, kv_cache, batched, refill_every in modes:
            out, filling, full = time_generation(model, args.samples, args.new_tokens, kv_cache, batched,
                                                 refill_every, seed=round_number)
            results[name].append({"seconds": filling + full, "filling_s": filling, "full_s": full})
            tokens[name, round_number] = out
            print(f"round {round_number + 1}: {name}: {filling + full:.1f} s", file=sys.stderr)

    chars = args.samples * args.new_tokens
    fill_chars = args.samples * min(args.new_tokens, config.block_size - 1)
    baseline = [r["seconds"] for r in results[SAMPLE_MODES[0][0]]]
    report = {"command": "python bench.py sample " + " ".join(sys.argv[2:]), "preset": args.preset,
              "params": model.num_params(), "block_size": config.block_size, "samples": args.samples,
              "new_tokens": args.new_tokens, "threads": args.threads, "repeats": args.repeats, "modes": {}}
    print(f"\n| mode | chars/s | speedup vs uncached one by one (min-max over rounds) | "
          f"chars/s while the window fills | chars/s once it is full |")
    print("|---|---|---|---|---|")
    for name, *_ in modes:
        runs = results[name]
        speedups = [b / r["seconds"] for b, r in zip(baseline, runs)]  # ratios within each round
        median = statistics.median(r["seconds"] for r in runs)
        fill_s = statistics.median(r["filling_s"] for r in runs)
        full_s = statistics.median(r["full_s"] for r in runs)
        rate_full = (chars - fill_chars) / full_s if chars > fill_chars else None  # None: never got past the window
        reference = name.replace("cached", "uncached")  # the same batching without the cache
        same = None  # for the uncached modes and the inexact one
        if name.startswith("cached") and reference in results:
            same = all(torch.equal(tokens[name, r], tokens[reference, r]) for r in range(args.repeats))
        report["modes"][name] = {"chars_per_s": chars / median, "speedup_median": statistics.median(speedups),
                                 "speedup_min": min(speedups), "speedup_max": max(speedups),
                                 "chars_per_s_filling": fill_chars / fill_s, "chars_per_s_full": rate_full,
                                 "same_tokens_as_uncached": same, "runs": runs}
        print(f"| {name} | {chars / median:.0f} | {statistics.median(speedups):.1f}x "
              f"({min(speedups):.1f}-{max(speedups):.1f}) | {fill_chars / fill_s:.0f} | "
              f"{'-' if rate_full is None else f'{rate_full:.0f}'} |"
              + ("" if same is None else f" same tokens as {reference}: {same}"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)


def main(argv=None):
    parser = Parser(prog="bench.py", description="Speed and time-to-loss measurements (not tests).")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("throughput", help="tokens/s, ms/iter, memory and FLOP/s of the training step")
    p.set_defaults(func=throughput)

    p = commands.add_parser("time-to-loss", help="wall time and tokens until val loss <= target, per preset")
    p.set_defaults(func=time_to_loss)

    p = commands.add_parser("sample", help="characters/s of generation, with and without the KV cache")
    p.add_argument("--preset", default="gpu", help="model shape from config/PRESET.toml (default: gpu)")
    p.add_argument("--samples", type=int, default=10, help="samples per measurement (default: 10)")
    p.add_argument("--new_tokens", type=int, default=500, help="new characters per sample (default: 500)")
    p.add_argument("--repeats", type=int, default=1, help="rounds, each measuring every mode once (default: 1)")
    p.add_argument("--refill_every", type=int, default=32,
                   help="also time the inexact cache that re-fills a full window every N tokens; 1: skip (default: 32)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads; 1 suits a shared machine (default: 1)")
    p.add_argument("--json", default="out-bench/sample.json", help="where to write the results (default: %(default)s)")
    p.set_defaults(func=sample)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run(main)
