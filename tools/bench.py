"""
bench.py -- measurements that are not tests: speed, memory and time-to-loss. Prints a table, writes JSON.

    python -m tools.bench throughput --preset cpu
    python -m tools.bench time-to-loss --target 1.88 --presets classic,cpu
    python -m tools.bench sample
    python -m tools.bench sample --lengths 100,1000,10000 --presets cpu,cpu-sliding
    python -m tools.bench decode-step             # one generated character: crop, rolling cache, compiled
    python -m tools.bench whole-val out out-cpu-sliding   # best checkpoints on the whole val split
    python -m tools.bench peer --nanogpt PATH     # against nanoGPT itself (a checkout you provide), in turns
    python -m tools.bench levers                  # the classic step with one change at a time, in CPU time

Results with their commands and machines are kept in docs/experiments.md.
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
import subprocess
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from babygpt import checkpoint
from babygpt import engine
from babygpt import runtime
import train
from babygpt.cli import PRESET_DIR, Parser, UserError, build, load_preset, run, tomllib
from model import GPT, GPTConfig, rotary_cos_sin
from babygpt.tokenizer import read_meta


# ----------------------------------------------------------------------------------------------------------------
# throughput and time-to-loss: a preset's training step, exactly as train.py runs it


class PresetRun:
    """One preset's model, optimizer and batch stream, built the way train.py builds them, stepped in chunks so
    that several presets can take turns (and so see the same machine load)."""

    def __init__(self, preset, data_dir, device, overrides=()):
        argv = ["--preset", preset, "--data_dir", data_dir, *(f"--{name}={value}" for name, value in dict(overrides).items())]
        model_values, self.cfg, _ = train.resolve_settings(argv)
        try:
            meta = read_meta(data_dir)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        self.name, self.device = preset, device
        self.model_config = build(GPTConfig, {**model_values, "vocab_size": meta["vocab_size"]}, f"preset {preset}")
        self.train_data = train.load_split(data_dir, "train", self.model_config.block_size)
        self.val_data = train.load_split(data_dir, "val", self.model_config.block_size)
        device_type = device.split(":")[0]
        settings = runtime.system_settings(self.cfg, device_type, runtime.fast_bf16(device_type))
        self.autocast = runtime.autocast_context(device_type, settings["dtype"])
        torch.manual_seed(self.cfg.seed)
        self.model = GPT(self.model_config).to(device)
        self.optimizer = train.build_optimizer(self.model, self.cfg, fused=settings["fused"])
        self.generators = [torch.Generator().manual_seed(self.cfg.seed + i) for i in range(self.cfg.gradient_accumulation_steps)]
        self.step_model = self.model
        if settings["compile"]:
            x, y = self.batch(self.generators[0])
            self.step_model = runtime.compile_or_fallback(self.model, x, y, self.autocast)
        self.iter_num, self.train_seconds = 0, 0.0
        self.tokens_per_iter = self.cfg.gradient_accumulation_steps * self.cfg.batch_size * self.model_config.block_size

    def batch(self, generator):
        x, y = train.get_batch(self.train_data, self.cfg.batch_size, self.model_config.block_size, generator)
        return x.to(self.device), y.to(self.device)

    def train(self, iters):
        """iters optimizer steps, the body of train.py's loop (without its logging); returns their seconds."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            train.set_learning_rate(self.optimizer, train.learning_rate_at(self.iter_num, self.cfg))
            for generator in self.generators:
                x, y = self.batch(generator)
                with self.autocast:
                    _, loss = self.step_model(x, y)
                (loss / len(self.generators)).backward()
            if self.cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.iter_num += 1
        sync()
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        return seconds

    @torch.no_grad()
    def val_loss(self, batches, batch_size=12):
        """Mean loss over a fixed set of val windows (the same starts every call): batches x batch_size windows."""
        self.model.eval()
        generator = torch.Generator().manual_seed(12345)
        total = 0.0
        for _ in range(batches):
            x, y = train.get_batch(self.val_data, batch_size, self.model_config.block_size, generator)
            with self.autocast:
                total += self.model(x.to(self.device), y.to(self.device))[1].item()
        self.model.train()
        return total / batches


def sync():
    """Wait for the GPU (CUDA or Apple's MPS) to finish: its work is queued, so a timer alone would miss it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elif torch.backends.mps.is_available():
        torch.mps.synchronize()


def flops_per_token(config):
    """Training FLOPs per token: 6 per weight (forward 2, backward 4) for every matrix a token passes through,
    plus attention's scores and weighted sum (12 x layers x block x width), as in the PaLM paper's appendix B."""
    matrices = 12 * config.n_layer * config.n_embd ** 2 + config.vocab_size * config.n_embd  # blocks + LM head
    return 6 * matrices + 12 * config.n_layer * config.block_size * config.n_embd


def matmul_flops(device, seconds=0.5):
    """This machine's matmul throughput, measured now: float32 on a CPU, bfloat16 on CUDA (the dtypes training
    uses there). The best of a few timed repetitions of a large square matmul."""
    n, dtype = (1024, torch.float32) if device == "cpu" else (8192, torch.bfloat16)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best


def peak_memory_mb(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    try:
        import resource  # Unix only: Windows has no peak-RSS call in the standard library
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # of the whole process
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, Linux KiB


class EagerReference:
    """The straightforward eager implementation the classic step is compared with: the lecture's gpt.py training
    step with the same shapes (each head its own key/query/value Linear and explicit masked softmax, batches
    stacked from Python slices, torch's default AdamW), on the same data."""

    def __init__(self, run):
        c, self.cfg = run.model_config, run.cfg
        self.data = torch.from_numpy(np.asarray(run.train_data, dtype=np.int64))
        self.block_size, self.device = c.block_size, run.device
        torch.manual_seed(0)
        self.model = _EagerGPT(c.vocab_size, c.n_embd, c.n_head, c.n_layer, c.block_size).to(run.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.learning_rate)
        self.tokens_per_iter, self.name = run.tokens_per_iter, "eager reference"

    def train(self, iters):
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            ix = torch.randint(len(self.data) - self.block_size, (self.cfg.batch_size,))
            x = torch.stack([self.data[i:i + self.block_size] for i in ix]).to(self.device)
            y = torch.stack([self.data[i + 1:i + self.block_size + 1] for i in ix]).to(self.device)
            _, loss = self.model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        sync()
        return time.perf_counter() - start


class _EagerHead(nn.Module):
    def __init__(self, n_embd, head_size, block_size):
        super().__init__()
        self.key, self.query, self.value = (nn.Linear(n_embd, head_size, bias=False) for _ in range(3))
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))

    def forward(self, x):
        B, T, C = x.shape
        k, q = self.key(x), self.query(x)  # (B, T, hs) each
        wei = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5  # (B, T, T)
        wei = F.softmax(wei.masked_fill(self.tril[:T, :T] == 0, float("-inf")), dim=-1)  # (B, T, T)
        return wei @ self.value(x)  # (B, T, hs)


class _EagerBlock(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.heads = nn.ModuleList([_EagerHead(n_embd, n_embd // n_head, block_size) for _ in range(n_head)])
        self.proj = nn.Linear(n_embd, n_embd)
        self.ffwd = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.proj(torch.cat([h(self.ln1(x)) for h in self.heads], dim=-1))  # (B, T, C)
        return x + self.ffwd(self.ln2(x))  # (B, T, C)


class _EagerGPT(nn.Module):
    def __init__(self, vocab_size, n_embd, n_head, n_layer, block_size):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[_EagerBlock(n_embd, n_head, block_size) for _ in range(n_layer)])
        self.ln_f, self.head = nn.LayerNorm(n_embd), nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))  # (B, T, C)
        logits = self.head(self.ln_f(self.blocks(x)))  # (B, T, V)
        return logits, F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))


def write_json(path, result):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def throughput(args):
    """Chunks of the preset's step, the eager reference's step and a matmul measurement, taken in turns, so a
    change in machine load hits all of them alike; medians over the rounds."""
    device = runtime.pick_device(args.device)
    run_ = PresetRun(args.preset, args.data_dir, device, overrides=_overrides(args))
    contenders = [run_] + ([EagerReference(run_)] if args.eager else [])
    for c in contenders:
        c.train(args.warmup)  # first steps allocate memory and warm caches
    ms = {c.name: [] for c in contenders}
    peaks = []
    for _ in range(args.rounds):
        for c in contenders:
            ms[c.name].append(1000 * c.train(args.iters) / args.iters)
        peaks.append(matmul_flops(device))
    step_ms, eager_ms = statistics.median(ms[run_.name]), statistics.median(ms.get("eager reference", [math.nan]))
    peak = statistics.median(peaks)
    achieved = flops_per_token(run_.model_config) * run_.tokens_per_iter / (step_ms / 1000)
    result = {
        "preset": args.preset, "device": device, "threads": torch.get_num_threads(),
        "tokens_per_iter": run_.tokens_per_iter, "ms_per_iter": step_ms, "tokens_per_s": run_.tokens_per_iter * 1000 / step_ms,
        "peak_memory_mb": peak_memory_mb(device), "achieved_flops": achieved,
        "matmul_flops": peak, "fraction_of_matmul": achieved / peak,
        "eager_reference_ms_per_iter": eager_ms, "speedup_vs_eager": eager_ms / step_ms,
        "ms_per_iter_rounds": ms, "rounds": args.rounds, "iters_per_round": args.iters,
    }
    print(f"{'preset':10} {'ms/iter':>8} {'tokens/s':>9} {'peak MB':>8} {'GFLOP/s':>8} {'of matmul':>9} {'eager ms':>9} {'speedup':>8}")
    print(f"{args.preset:10} {step_ms:8.1f} {result['tokens_per_s']:9,.0f} {result['peak_memory_mb']:8.0f} "
          f"{achieved / 1e9:8.1f} {result['fraction_of_matmul']:9.0%} {eager_ms:9.1f} {result['speedup_vs_eager']:7.2f}x")
    print(f"(matmul: {peak / 1e9:.1f} GFLOP/s {'float32' if device == 'cpu' else 'bfloat16'}; "
          f"spread of step ms over rounds: {min(ms[run_.name]):.1f}..{max(ms[run_.name]):.1f})")
    write_json(args.json or f"out-bench/throughput-{args.preset}.json", result)
    return result


def time_to_loss(args):
    """Train every preset to the end of its own max_iters (or to the target, with --stop_at_target 1), in turns.
    Each round moves every preset 1/evals of its own run forward (timed), then scores it on a fixed val set
    (not timed). So all presets advance in step and finish in the same round: every preset sees the same machine
    load throughout, and the ratio holds even when the load drifts over time."""
    device = runtime.pick_device(args.device)
    runs = [PresetRun(name, args.data_dir, device, overrides=_overrides(args)) for name in args.presets.split(",")]
    curves = {r.name: [(0, 0.0, r.val_loss(args.eval_batches))] for r in runs}
    def running(r):
        reached = args.stop_at_target and any(loss <= args.target for _, _, loss in curves[r.name][1:])
        return r.iter_num < r.cfg.max_iters and not reached

    while any(running(r) for r in runs):
        for r in runs:
            if running(r):
                chunk = math.ceil(r.cfg.max_iters / args.evals)
                r.train(min(chunk, r.cfg.max_iters - r.iter_num))
                curves[r.name].append((r.iter_num, r.train_seconds, r.val_loss(args.eval_batches)))
                print(f"{r.name}: iter {r.iter_num}, {r.train_seconds:.1f} s, val {curves[r.name][-1][2]:.4f}", flush=True)
    rows = {}
    for r in runs:
        reached = next(((it, s) for it, s, loss in curves[r.name][1:] if loss <= args.target), None)  # after training
        rows[r.name] = {
            "max_iters": r.cfg.max_iters, "iters": r.iter_num, "train_seconds": r.train_seconds, "ms_per_iter": 1000 * r.train_seconds / r.iter_num,
            "final_val": curves[r.name][-1][2], "best_val": min(loss for _, _, loss in curves[r.name]),
            "seconds_to_target": reached[1] if reached else None,
            "tokens_to_target": reached[0] * r.tokens_per_iter if reached else None,
            "curve": [{"iter": it, "seconds": s, "val_loss": loss} for it, s, loss in curves[r.name]],
        }
    base = rows[runs[0].name]
    print(f"\ntarget val loss {args.target}, {args.eval_batches} x 12 val windows, {args.evals} evaluations per preset")
    print(f"{'preset':10} {'iters':>6} {'ms/iter':>8} {'train s':>8} {'final val':>9} {'s to target':>11} {'tokens':>10} {'speedup':>8}")
    for name, row in rows.items():
        if row["seconds_to_target"] and base["seconds_to_target"]:
            row["speedup"] = base["seconds_to_target"] / row["seconds_to_target"]
        elif row["seconds_to_target"]:  # the yardstick never got there: its whole run is a lower bound
            row["speedup_at_least"] = base["train_seconds"] / row["seconds_to_target"]
        speedup = f"{row['speedup']:.2f}x" if "speedup" in row else (f">{row['speedup_at_least']:.2f}x" if "speedup_at_least" in row else "-")
        to_target = f"{row['seconds_to_target']:.1f}" if row["seconds_to_target"] else "not reached"
        tokens = f"{row['tokens_to_target']:,}" if row["tokens_to_target"] else "-"
        print(f"{name:10} {row['iters']:6} {row['ms_per_iter']:8.1f} {row['train_seconds']:8.1f} {row['final_val']:9.4f} "
              f"{to_target:>11} {tokens:>10} {speedup:>8}")
    result = {"target": args.target, "device": device, "eval_batches": args.eval_batches, "evals": args.evals,
              "presets": rows}
    write_json(args.json or "out-bench/time-to-loss.json", result)
    return result


def _overrides(args):
    """--set name=value,... applied to every preset (e.g. --set max_iters=200 for a quick look)."""
    overrides = {}
    for item in filter(None, (args.set or "").split(",")):
        name, _, value = item.partition("=")
        if name not in train.DEFAULTS:
            raise UserError(f"--set: unknown setting {name!r}")
        kind = type(train.DEFAULTS[name])
        try:
            overrides[name] = (value.lower() in ("1", "true", "on", "yes")) if kind is bool else kind(value)
        except ValueError:
            raise UserError(f"--set: {name} should be {kind.__name__}, got {value!r}") from None
    return overrides


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
    if args.lengths:
        return sample_lengths(args)
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
    report = {"command": "python -m tools.bench sample " + " ".join(sys.argv[2:]), "preset": args.preset,
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
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)


# -- bench.py sample --lengths: characters/s against the generated length, full attention vs a sliding window


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
    torch.set_num_threads(args.threads)
    try:
        lengths = sorted({int(n) for n in args.lengths.split(",")})
    except ValueError:
        raise UserError(f"--lengths: expected whole numbers separated by commas, got {args.lengths!r}") from None
    if lengths[0] < 1:
        raise UserError("--lengths: every length must be at least 1")
    models = {preset: preset_model(preset) for preset in args.presets.split(",")}
    runs = [(preset, name, kv_cache) for preset, model in models.items() for name, kv_cache in length_modes(model)]
    print(f"presets {args.presets}: {args.samples} sample(s) x {max(lengths):,} characters, {args.threads} thread(s), "
          f"{args.repeats} round(s)", file=sys.stderr)
    results = {(preset, name): [] for preset, name, _ in runs}
    for round_number in range(args.repeats):
        for preset, name, kv_cache in runs:
            seconds, memory = time_lengths(models[preset], lengths, kv_cache, args.samples, seed=round_number)
            results[preset, name].append({"seconds": seconds, "resident_mb": memory})
            print(f"round {round_number + 1}: {preset}, {name}: {seconds[max(lengths)]:.1f} s", file=sys.stderr)

    report = {"command": "python -m tools.bench sample " + " ".join(sys.argv[2:]), "lengths": lengths,
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
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
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
# bench.py decode-step: what one generated character costs at one sample, eager and compiled, against the full
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
    return model.head(x[:, -1])  # (B, V)


@torch.inference_mode()
def decode_step(args):
    """ms per character, in turns: the cpu model's forward over block_size characters (crop and recompute),
    engine.forward's rolling-cache step of cpu-sliding (eager), and rolling_step compiled (--compile 1)."""
    torch.set_num_threads(args.threads)
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


# ----------------------------------------------------------------------------------------------------------------
# bench.py peer: babygpt against nanoGPT itself (a checkout the user provides), same machine, taking turns

# nanoGPT's README recipe for a CPU ("baby GPT" shrunk to 4 layers x 128 wide, block 64, batch 12, 2000 steps)
NANOGPT_CLASSIC = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                   "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                   "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
# an evaluation line of either program: nanoGPT "step 250: train loss 1.9, val loss 2.0", babygpt "iter 250: ..."
EVAL_LINE = re.compile(r"(?:step|iter) (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def whole_split_loss(logits_of, tokens, block_size, batch_size=64):
    """The one evaluator for both programs: mean cross-entropy over the whole split, cut into non-overlapping
    windows of block_size tokens (every token but the first is predicted exactly once). logits_of maps x (B, T)
    to logits (B, T, V). Its source is also run inside nanoGPT's checkout, next to nanoGPT's own model.py."""
    tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    windows = (len(tokens) - 1) // block_size
    x = tokens[:windows * block_size].view(windows, block_size)  # (N, T)
    y = tokens[1:windows * block_size + 1].view(windows, block_size)  # (N, T)
    total = 0.0
    with torch.no_grad():
        for i in range(0, windows, batch_size):
            logits = logits_of(x[i:i + batch_size])  # (b, T, V)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y[i:i + batch_size].reshape(-1),
                                     reduction="sum").item()
    return total / (windows * block_size)


def best_checkpoint_loss(out_dir, tokens=None):
    """A babygpt run's best checkpoint (OUT_DIR/ckpt.pt) scored by whole_split_loss on tokens (by default its
    data's val.bin), and the iteration it was saved at."""
    saved = checkpoint.load(Path(out_dir) / "ckpt.pt")
    model = checkpoint.load_model(saved).eval()
    if tokens is None:
        tokens = np.fromfile(Path(saved["train_config"]["data_dir"]) / "val.bin", dtype=np.uint16)
    return whole_split_loss(lambda x: model(x)[0], tokens, model.config.block_size), saved["iter_num"]


def whole_val(args):
    """Each run's best checkpoint on the whole val split: the evaluator of bench.py peer, for any babygpt run."""
    scores = {}
    for out_dir in args.out_dirs:
        scores[out_dir], iter_num = best_checkpoint_loss(out_dir)
        print(f"{out_dir}: {scores[out_dir]:.4f} on the whole val split (iteration {iter_num})")
    return scores


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
    folder = nanogpt / "data" / "shakespeare_char"
    if not (folder / "val.bin").is_file():
        text = Path(data_dir) / "input.txt"
        if not text.is_file():
            raise UserError(f"{text} not found: copy Tiny Shakespeare there (nanoGPT's prepare.py would download it)")
        shutil.copyfile(text, folder / "input.txt")
        subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=nanogpt, check=True,
                       stdout=subprocess.DEVNULL)
    ours = np.fromfile(Path(data_dir) / "val.bin", dtype=np.uint16)
    if not np.array_equal(np.fromfile(folder / "val.bin", dtype=np.uint16), ours):
        raise UserError(f"{folder}/val.bin and {data_dir}/val.bin differ: prepare both from the same input.txt")
    return ours


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
    nanogpt, out = Path(args.nanogpt).resolve(), Path(args.out_dir).resolve()
    if not (nanogpt / "train.py").is_file() or not (nanogpt / "model.py").is_file():
        raise UserError(f"{nanogpt} is not a nanoGPT checkout (no train.py and model.py)")
    val_tokens = prepare_nanogpt_data(nanogpt, args.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    python, ours = sys.executable, Path(__file__).resolve().parent.parent
    nano_flags, baby_flags = shlex.split(args.nanogpt_flags), shlex.split(args.babygpt_flags)

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
    print(f"bench.py peer: nanoGPT at {nanogpt}, {args.repeats} round(s) of {args.short} and {args.long} steps, "
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


def whole_run_rows(args, out, nanogpt, python, val_tokens, whole_rounds):
    """The table's rows for nanoGPT's whole classic run and babygpt's cpu preset (medians over the rounds of
    (nanoGPT run, babygpt run) in whole_rounds), and their numbers."""
    baby_score, _ = best_checkpoint_loss(out / "babygpt-cpu", val_tokens)
    script = "import numpy as np, torch\nfrom torch.nn import functional as F\n" + \
             inspect.getsource(whole_split_loss) + NANOGPT_SCORER
    scored = subprocess.run([python, "-c", script, str(out / "nanogpt-classic" / "ckpt.pt"),
                             str(Path(args.data_dir).resolve() / "val.bin")],
                            cwd=nanogpt, capture_output=True, text=True)
    if scored.returncode:
        raise UserError(f"scoring nanoGPT's checkpoint failed: {scored.stderr.strip().splitlines()[-1]}")
    nano_score = float(scored.stdout.strip().splitlines()[-1])
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


# -- bench.py levers: what each candidate change does to the classic step, in CPU time (robust to a loaded machine)

LEVERS = {  # name: what changes from train.py's classic step
    "as train.py": {},
    "no rng snapshot": {"rng": False},
    "no grad clipping": {"clip": False},
    "for-loop AdamW": {"fused": False},
    "torch.optim AdamW": {"torch_optim": True},  # torch's own fused AdamW, which optimizer.py's replaced
    "no biases": {"bias": False},
    "bfloat16 autocast": {"bf16": True},
    "torch.compile": {"compile": "default"},
    "torch.compile max-autotune": {"compile": "max-autotune-no-cudagraphs"},
    "bfloat16 + compile": {"bf16": True, "compile": "default"},
}


def levers(args):
    """The classic step (B 12, T 64, 4x128) with one thing changed at a time, in turns, on 1 thread, timed in
    process CPU seconds: other programs on a shared machine slow the wall clock, much less the CPU time it takes."""
    torch.set_num_threads(1)
    data = train.load_split(args.data_dir, "train", 64)
    cfg, names = train.TrainConfig(), [n.strip() for n in args.levers.split(",")]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise UserError(f"unknown lever {unknown[0]!r}; known: {', '.join(LEVERS)}")
    states = {}
    for name in names:
        lever = {"rng": True, "clip": True, "fused": True, "bias": True, "bf16": False, "compile": None,
                 "torch_optim": False, **LEVERS[name]}
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=65, bias=lever["bias"]))
        step_model = torch.compile(model, mode=lever["compile"], dynamic=False) if lever["compile"] else model
        optimizer = train.build_optimizer(model, cfg, fused=lever["fused"])
        if lever["torch_optim"]:  # the same groups and settings, in torch.optim.AdamW
            optimizer = torch.optim.AdamW(optimizer.param_groups, fused=True)
        states[name] = (lever, model, step_model, optimizer,
                        torch.Generator().manual_seed(cfg.seed), [0])

    def run_(name, iters):
        lever, model, step_model, optimizer, generator, it = states[name]
        autocast = runtime.autocast_context("cpu", "bfloat16" if lever["bf16"] else "float32")
        start = time.process_time()
        for _ in range(iters):
            if lever["rng"]:
                checkpoint.rng_state([generator], "cpu")
            train.set_learning_rate(optimizer, train.learning_rate_at(it[0], cfg))
            x, y = train.get_batch(data, cfg.batch_size, 64, generator)
            with autocast:
                _, loss = step_model(x, y)
            loss.backward()
            if lever["clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            it[0] += 1
        return 1000 * (time.process_time() - start) / iters

    for name in names:
        run_(name, args.warmup)  # compiles, allocates
    ms = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            ms[name].append(run_(name, args.iters))
    base = statistics.median(ms[names[0]])
    print(f"| lever (classic step, 1 thread, CPU ms per step, median of {args.rounds} rounds of {args.iters}) | ms | vs {names[0]} |")
    print("|---|---|---|")
    for name in names:
        print(f"| {name} | {statistics.median(ms[name]):.1f} ({min(ms[name]):.1f}-{max(ms[name]):.1f}) | "
              f"{base / statistics.median(ms[name]):.2f}x |")
    return {name: statistics.median(v) for name, v in ms.items()}


def _common_bench_flags(p):
    p.add_argument("--data_dir", default="data/shakespeare_char", help="prepared data (default: data/shakespeare_char)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    p.add_argument("--set", help="name=value,... overriding every preset (e.g. threads=1,max_iters=300)")
    p.add_argument("--json", help="where to write the JSON result (default: out-bench/<command>.json)")


def main(argv=None):
    parser = Parser(prog="python -m tools.bench", description="Speed and time-to-loss measurements (not tests).")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("throughput", help="tokens/s, ms/iter, memory and FLOP/s of the training step")
    p.add_argument("--preset", default="classic", help="config/PRESET.toml to measure (default: classic)")
    p.add_argument("--iters", type=int, default=20, help="steps per timed chunk (default: 20)")
    p.add_argument("--rounds", type=int, default=5, help="timed chunks, alternating with the eager reference (default: 5)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    p.add_argument("--eager", type=int, default=1, help="1: also time the eager reference step, 0: skip it")
    _common_bench_flags(p)
    p.set_defaults(func=throughput)

    p = commands.add_parser("time-to-loss", help="wall time and tokens until val loss <= target, per preset")
    p.add_argument("--target", type=float, default=1.88, help="val loss to reach (default: 1.88)")
    p.add_argument("--presets", default="classic,cpu", help="comma-separated; the first is the yardstick (default: classic,cpu)")
    p.add_argument("--evals", type=int, default=20, help="evaluations per preset, one per round; a round moves every preset 1/evals of its run (default: 20)")
    p.add_argument("--eval_batches", type=int, default=100, help="val batches of 12 windows per evaluation (default: 100)")
    p.add_argument("--stop_at_target", type=int, default=0, help="1: stop each preset once it reaches the target (default: 0, run to max_iters)")
    _common_bench_flags(p)
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
    p.add_argument("--lengths", default="", help="e.g. 100,1000,10000: chars/s against the generated length instead, "
                   "for every exact mode of each of --presets (--samples 1: one sample, as sample.py streams it)")
    p.add_argument("--presets", default="cpu,cpu-sliding", help="with --lengths: the models (default: %(default)s)")
    p.add_argument("--figure", default="", help="with --lengths: also draw chars/s against the length into this PNG")
    p.set_defaults(func=sample)

    p = commands.add_parser("whole-val", help="best checkpoints scored on the whole val split (peer's evaluator)")
    p.add_argument("out_dirs", nargs="+", help="training runs' --out_dir folders")
    p.set_defaults(func=whole_val)

    p = commands.add_parser("decode-step", help="ms per generated character at one sample: crop, rolling cache, compiled")
    p.add_argument("--steps", type=int, default=300, help="characters per timed round (default: 300)")
    p.add_argument("--rounds", type=int, default=6, help="rounds, the modes in turns (default: 6)")
    p.add_argument("--compile", type=int, default=1, help="1: also time the step compiled by torch.compile (default: 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, as one sample streams best)")
    p.set_defaults(func=decode_step)

    p = commands.add_parser("peer", help="babygpt against nanoGPT itself: the classic recipe side by side, in turns")
    p.add_argument("--nanogpt", required=True, help="a checkout of nanoGPT (git clone https://github.com/karpathy/nanoGPT)")
    p.add_argument("--short", type=int, default=100, help="the shorter classic run, in steps (default: 100)")
    p.add_argument("--long", type=int, default=500, help="the longer classic run, in steps (default: 500)")
    p.add_argument("--repeats", type=int, default=1, help="rounds of the two lengths; medians are used (default: 1)")
    p.add_argument("--target", type=float, default=1.88, help="the val loss whose first print is timed (default: 1.88)")
    p.add_argument("--whole", type=int, default=1, help="rounds of the whole runs (nanoGPT's 2000 steps, babygpt's cpu "
                                                       "preset), in turns, medians used; 0: only the classic step "
                                                       "(default: 1)")
    p.add_argument("--together", type=int, default=0, help="1: run each nanoGPT/babygpt pair at the same time instead "
                                                          "of in turns (halves the wait on a busy machine) (default: 0)")
    p.add_argument("--nanogpt_flags", default="", help="extra --key=value flags for every nanoGPT run (tests: fewer steps)")
    p.add_argument("--babygpt_flags", default="", help="extra flags for every babygpt run (tests: a smaller model)")
    p.add_argument("--data_dir", default="data/shakespeare_char", help="babygpt's prepared data, with input.txt (default: data/shakespeare_char)")
    p.add_argument("--out_dir", default="out-peer", help="logs, checkpoints and peer.json (default: out-peer)")
    p.add_argument("--json", help="where to write the JSON result (default: OUT_DIR/peer.json)")
    p.set_defaults(func=peer)

    p = commands.add_parser("levers", help="the classic step with one change at a time, CPU ms per step, in turns")
    p.add_argument("--levers", default=",".join(LEVERS), help="comma-separated, the first is the baseline (default: all)")
    p.add_argument("--iters", type=int, default=10, help="steps per timed chunk (default: 10)")
    p.add_argument("--rounds", type=int, default=6, help="chunks per lever, in turns (default: 6)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first, compiling included (default: 5)")
    p.add_argument("--data_dir", default="data/shakespeare_char", help="prepared data (default: data/shakespeare_char)")
    p.set_defaults(func=levers)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run(main)
