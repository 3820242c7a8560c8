"""
tools/generation.py -- how fast babygpt generates: characters/s with and without the KV cache, against the
generated length (full attention vs a sliding window), and what one generated character costs. Prints a table.

    python -m tools.generation sample                       # the gpu model's shape: cached or not, batched or not
    python -m tools.generation sample --lengths 100,1000,10000 --presets cpu,cpu-sliding
    python -m tools.generation decode-step                  # one character: crop, rolling cache, compiled

Random weights throughout: speed does not depend on what a model learned. Results with their commands and
machines are kept in docs/experiments.md.
"""

import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python tools/generation.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.nn import functional as F

import train
from babygpt import engine
from babygpt.cli import UserError, build, load_preset
from babygpt.memory import check_memory, memory_needed
from babygpt.runner import run
from babygpt.threads import use_threads
from model import GPT, GPTConfig, rotary_cos_sin
from tools.common import ToolParser, count, output, peak_memory_mb, preset_names, write_json

# -- sample: generation speed with and without the KV cache, one sample at a time and batched

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


def check_batch_fits(config, samples):
    """Refuse, before any tensor is made, more samples at once than this machine's memory holds."""
    _, needed = memory_needed(config, samples, training=False)
    check_memory(needed, f"{samples:,} samples at once", "use a smaller --samples")


def sample(args):
    if args.lengths:
        return sample_lengths(args)
    use_threads(args.threads)
    preset = load_preset(args.preset, train.DEFAULTS)
    shape = {k: preset[k] for k in ("n_layer", "n_head", "n_embd", "block_size") if k in preset}
    config = GPTConfig(vocab_size=65, **shape)
    if args.refill_every > config.block_size:
        raise UserError(f"--refill_every {args.refill_every} is more than preset {args.preset}'s block_size "
                        f"{config.block_size}")
    check_batch_fits(config, args.samples)
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
    report = {"command": args.command_line, "preset": args.preset,
              "params": model.num_params(), "block_size": config.block_size, "samples": args.samples,
              "new_tokens": args.new_tokens, "threads": args.threads, "repeats": args.repeats, "modes": {}}
    print("\n| mode | chars/s | speedup vs uncached one by one (min-max over rounds) | "
          "chars/s while the window fills | chars/s once it is full |")
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
    write_json(args.json, report, log=sys.stderr)


# -- sample --lengths: characters/s against the generated length, full attention vs a sliding window


MAX_LENGTH = 10 ** 6  # characters of one --lengths measurement


def length_modes(model):
    """(name, kv_cache) of the ways to generate from this model exactly."""
    if model.config.attn_pattern == "sliding":
        return [("rolling cache", True)]  # never crops, never re-fills: see engine.py
    return [("crop and recompute", False), ("KV cache, re-filled once full", True)]


def resident_mb():
    """The process's resident memory now, in MB (Linux /proc; None elsewhere). Unlike the peak (ru_maxrss), it
    can go down again, so reading it at 100, 1,000 and 10,000 characters shows whether memory grows."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def time_lengths(model, lengths, kv_cache, batch, seed):
    """Generate max(lengths) tokens for `batch` samples after a one-token prompt, as sample.py does; return
    {length: seconds until the first `length` tokens were out} and {length: resident MB at that moment}."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.zeros(batch, 1, dtype=torch.long)  # (batch, 1): every sample starts from token 0
    seconds, memory = {}, {}
    start = time.perf_counter()
    for n, _ in enumerate(engine.stream(model, idx, max(lengths), 1.0, None, generator, None, kv_cache), start=1):
        if n in lengths:
            seconds[n] = time.perf_counter() - start
            memory[n] = resident_mb()
    return seconds, memory


def preset_model(preset):
    """A preset's model with random weights (seed 0), in eval mode: generation speed does not depend on them."""
    values = load_preset(preset, train.DEFAULTS)
    config = build(GPTConfig, {k: v for k, v in values.items() if k in train.MODEL_FLAGS} | {"vocab_size": 65},
                   f"preset {preset}")
    torch.manual_seed(0)
    return GPT(config).eval()


def sample_lengths(args):
    """Characters/s over the first N characters, for each N in --lengths, for every exact way of generating from
    each preset's model (random weights: speed does not depend on them). Modes take turns in every round."""
    use_threads(args.threads)
    try:
        lengths = sorted({int(n) for n in args.lengths.split(",")})
    except ValueError:
        raise UserError(f"--lengths: expected whole numbers separated by commas, got {args.lengths!r}") from None
    if lengths[0] < 1:
        raise UserError("--lengths: every length must be at least 1")
    if lengths[-1] > MAX_LENGTH:
        raise UserError(f"--lengths: every length must be at most {MAX_LENGTH:,}, got {lengths[-1]:,}")
    models = {preset: preset_model(preset) for preset in preset_names(args.presets, train.DEFAULTS)}
    for model in models.values():
        check_batch_fits(model.config, args.samples)
    runs = [(preset, name, kv_cache) for preset, model in models.items() for name, kv_cache in length_modes(model)]
    print(f"presets {args.presets}: {args.samples} sample(s) x {max(lengths):,} characters, {args.threads} thread(s), "
          f"{args.repeats} round(s)", file=sys.stderr)
    results = {(preset, name): [] for preset, name, _ in runs}
    for round_number in range(args.repeats):
        for preset, name, kv_cache in runs:
            seconds, memory = time_lengths(models[preset], lengths, kv_cache, args.samples, seed=round_number)
            results[preset, name].append({"seconds": seconds, "resident_mb": memory})
            print(f"round {round_number + 1}: {preset}, {name}: {seconds[max(lengths)]:.1f} s", file=sys.stderr)

    report = {"command": args.command_line, "lengths": lengths,
              "samples": args.samples, "threads": args.threads, "repeats": args.repeats, "runs": []}
    print(f"\nchars/s over the first N characters ({args.samples} sample(s); median of {args.repeats} round(s))\n")
    print("| model | mode | " + " | ".join(f"N = {n:,}" for n in lengths) + " | KV cache | resident MB at "
          f"N = {lengths[0]:,} / {lengths[-1]:,} |")
    print("|---|---|" + "---|" * len(lengths) + "---|---|")
    for preset, name, kv_cache in runs:
        model, rounds = models[preset], results[preset, name]
        rates = {n: args.samples * n / statistics.median(r["seconds"][n] for r in rounds) for n in lengths}
        memory = {n: statistics.median(r["resident_mb"][n] or 0.0 for r in rounds) for n in lengths}
        cache = engine.cache_bytes(engine.make_cache(model, args.samples, "cpu")) if kv_cache else 0
        c = model.config
        window = f", window {c.attn_window}" if c.attn_pattern == "sliding" else ""
        shape = f"{preset} ({c.n_layer} layers, block {c.block_size}{window})"
        report["runs"].append({"preset": preset, "mode": name, "params": model.num_params(), "block_size": c.block_size,
                               "attn_window": c.attn_window, "chars_per_s": rates, "cache_bytes": cache,
                               "resident_mb": memory, "rounds": rounds})
        print(f"| {shape} | {name} | " + " | ".join(f"{rates[n]:,.0f}" for n in lengths)
              + f" | {cache / 1024:,.0f} KiB | {memory[lengths[0]]:.0f} / {memory[lengths[-1]]:.0f} |")
    print(f"\npeak resident memory of the whole process: {peak_memory_mb('cpu'):.0f} MB")
    report["peak_memory_mb"] = peak_memory_mb("cpu")
    write_json(args.json, report, log=sys.stderr)
    if args.figure:
        print(f"wrote {draw_lengths(report, args.figure)}", file=sys.stderr)
    return report


def draw_lengths(report, path):
    """chars/s against the generated length (log scale), one line per model and mode; the rate axis starts at 0."""
    import plot

    fig = plot.new_figure(6.4, 3.8)
    ax = fig.subplots()
    for run_ in report["runs"]:
        points = sorted((int(n), rate) for n, rate in run_["chars_per_s"].items())  # JSON keys are strings
        ax.plot(*zip(*points), marker="o", label=f"{run_['preset']}: {run_['mode']}")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("characters generated (N)")
    ax.set_ylabel("characters / s over the first N")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return plot.save_png(fig, path, dpi=80)


# ----------------------------------------------------------------------------------------------------------------
# decode-step: what one generated character costs at one sample, eager and compiled, against the full
# 64-character forward that every character of a cropped model costs (issue 14's 10x)


def rolling_step(model, token, position, keys, values, cos, sin):
    """engine.forward's one-token step for a sliding model, written for torch.compile: the ring slot, the rotary
    row and the mask of filled slots come from the position tensor (1,), so one graph serves every step.
    token (B, 1); keys, values (L, B, nh, W, hs), written in place as engine.RollingKVCache's ring; cos, sin
    (P, hs) for every position. Returns the logits (B, V)."""
    W = keys.size(3)
    x = model.token_embedding(token)  # (B, 1, C)
    rope = cos.index_select(0, position), sin.index_select(0, position)  # 2 x (1, hs)
    slot = position % W  # (1,): the ring slot of this position
    filled = (torch.arange(W, device=keys.device) <= position).view(1, 1, 1, W)  # all of them once the ring is full
    for layer, block in enumerate(model.blocks):
        q, k, v = block.attn.qkv(block.ln_1(x), rope)  # 3 x (B, nh, 1, hs)
        keys[layer].index_copy_(2, slot, k)
        values[layer].index_copy_(2, slot, v)
        y = F.scaled_dot_product_attention(q, keys[layer], values[layer], attn_mask=filled)  # (B, nh, 1, hs)
        x = x + block.attn.c_proj(y.transpose(1, 2).reshape(x.shape))  # (B, 1, C)
        x = x + block.mlp(block.ln_2(x))  # (B, 1, C)
    return model.lm_head(model.ln_f(x[:, -1]))  # (B, V)


@torch.inference_mode()
def decode_step(args):
    """ms per character, in turns: the cpu model's forward over block_size characters (crop and recompute),
    engine.forward's rolling-cache step of cpu-sliding (eager), and rolling_step compiled (--compile 1)."""
    use_threads(args.threads)
    full, sliding = preset_model("cpu"), preset_model("cpu-sliding")
    config = sliding.config
    shape = (config.n_layer, 1, config.n_head, config.attn_window, config.n_embd // config.n_head)
    positions = args.steps * (args.rounds + 2) + 8  # every position the timed steps reach
    cos, sin = rotary_cos_sin(torch.arange(positions), config.n_embd // config.n_head)
    tokens = torch.randint(0, config.vocab_size, (1, positions), generator=torch.Generator().manual_seed(0))
    keys, values, cache = torch.zeros(shape), torch.zeros(shape), engine.make_cache(sliding, 1, "cpu")
    worst = max((engine.forward(sliding, tokens[:, p : p + 1], cache) -  # the step is exact: same logits
                 rolling_step(sliding, tokens[:, p : p + 1], torch.tensor([p]), keys, values, cos, sin)).abs().max().item()
                for p in range(args.steps))
    print(f"rolling_step against engine.forward, {args.steps} steps: logits within {worst:.1e}")
    window = tokens[:, : full.config.block_size]  # (1, block_size)
    modes = {"crop and recompute: cpu, one forward over block_size": lambda p: full(window),
             "rolling cache: cpu-sliding, engine.forward (eager)": lambda p: engine.forward(sliding, tokens[:, p : p + 1], cache)}
    if args.compile:
        compiled = torch.compile(rolling_step, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        for p in range(3):
            compiled(sliding, tokens[:, p : p + 1], torch.tensor([p]), keys, values, cos, sin)
        print(f"compiling rolling_step: {time.perf_counter() - start:.1f} s")
        modes["rolling cache: cpu-sliding, rolling_step compiled"] = \
            lambda p: compiled(sliding, tokens[:, p : p + 1], torch.tensor([p]), keys, values, cos, sin)
    ms, position = {name: [] for name in modes}, args.steps
    for _ in range(args.rounds):
        for name, step in modes.items():
            start = time.perf_counter()
            for p in range(position, position + args.steps):
                step(p)
            ms[name].append(1000 * (time.perf_counter() - start) / args.steps)
        position += args.steps  # the next round's positions, for every mode alike
    crop = ms[next(iter(modes))]
    print(f"\n| one character, {args.threads} thread(s), {args.rounds} rounds of {args.steps} (in turns) | ms | "
          f"crop and recompute's ms / this one's (per round) |\n|---|---|---|")
    for name, times in ms.items():
        ratios = [c / t for c, t in zip(crop, times)]
        print(f"| {name} | {min(times):.2f}-{max(times):.2f} | {min(ratios):.1f}-{max(ratios):.1f}x |")
    return {"max_logit_difference": worst, "ms": ms}



def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ToolParser(prog="python -m tools.generation", description="Generation speed measurements (not tests).")
    commands = parser.add_subparsers(dest="command", required=True)
    threads = count(1, os.cpu_count() or 1)

    p = commands.add_parser("sample", help="characters/s of generation, with and without the KV cache")
    p.add_argument("--preset", default="gpu", help="model shape from config/PRESET.toml (default: gpu)")
    p.add_argument("--samples", type=count(1, 10 ** 6), default=10, help="samples per measurement (default: 10)")
    p.add_argument("--new_tokens", type=count(1, 10 ** 6), default=500, help="new characters per sample (default: 500)")
    p.add_argument("--repeats", type=count(1, 1000), default=1, help="rounds, each measuring every mode once (default: 1)")
    p.add_argument("--refill_every", type=count(1, 10 ** 6), default=32,
                   help="also time the inexact cache that re-fills a full window every N tokens; 1: skip (default: 32)")
    p.add_argument("--threads", type=threads, default=1, help="torch CPU threads; 1 suits a shared machine (default: 1)")
    p.add_argument("--json", type=output("json"), default="out-bench/sample.json", help="where to write the results (default: %(default)s)")
    p.add_argument("--lengths", default="", help="e.g. 100,1000,10000: chars/s against the generated length instead, "
                   "for every exact mode of each of --presets (--samples 1: one sample, as sample.py streams it)")
    p.add_argument("--presets", default="cpu,cpu-sliding", help="with --lengths: the models (default: %(default)s)")
    p.add_argument("--figure", type=output("png", optional=True), default="", help="with --lengths: also draw chars/s against the length into this PNG")
    p.set_defaults(func=sample)

    p = commands.add_parser("decode-step", help="ms per generated character at one sample: crop, rolling cache, compiled")
    p.add_argument("--steps", type=count(1, 10 ** 4), default=300, help="characters per timed round (default: 300)")
    p.add_argument("--rounds", type=count(1, 100), default=6, help="rounds, the modes in turns (default: 6)")
    p.add_argument("--compile", type=int, choices=(0, 1), default=1,
                   help="1: also time the step compiled by torch.compile (default: 1)")
    p.add_argument("--threads", type=threads, default=1, help="torch threads (default: 1, as one sample streams best)")
    p.set_defaults(func=decode_step)

    args = parser.parse_args(argv)
    args.command_line = "python -m tools.generation " + " ".join(argv)  # into the JSON, to run it again
    return args.func(args)


if __name__ == "__main__":
    run(main)
