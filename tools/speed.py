"""
tools/speed.py -- how fast a preset trains: its step's throughput, its time to a val loss, and what each lever
of the classic step buys. Measurements, not tests: prints a table, writes JSON.

    python -m tools.speed throughput --preset cpu          # tokens/s, ms/iter, memory, FLOP/s, against eager
    python -m tools.speed time-to-loss --target 1.88 --presets classic,cpu
    python -m tools.speed levers                           # the classic step, one change at a time, CPU ms

Results with their commands and machines are kept in docs/experiments.md.
"""

import math
import os
import statistics
import time

import sys
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python tools/speed.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

import train
from babygpt import checkpoint, compiling, threads
from babygpt.cli import UserError, build
from babygpt.device import autocast_context, fast_bf16, pick_device, system_settings
from babygpt.optimizer import set_learning_rate
from babygpt.runner import run
from model import GPT, GPTConfig
from tools.common import (ToolParser, count, data_meta, finite, output, peak_memory_mb, preset_names,
                          write_json)

# ----------------------------------------------------------------------------------------------------------------
# throughput and time-to-loss: a preset's training step, exactly as train.py runs it


class PresetRun:
    """One preset's model, optimizer and batch stream, built the way train.py builds them, stepped in chunks so
    that several presets can take turns (and so see the same machine load)."""

    def __init__(self, preset, data_dir, device, overrides=()):
        preset_names(preset, train.DEFAULTS)  # an unknown name (or '') is an error, not the default preset
        argv = ["--preset", preset, "--data_dir", data_dir, *(f"--{name}={value}" for name, value in dict(overrides).items())]
        model_values, self.cfg, _ = train.resolve_settings(argv)
        meta = data_meta(data_dir)
        self.name, self.device = preset, device
        if self.cfg.threads > (os.cpu_count() or 1):
            raise UserError(f"--set threads={self.cfg.threads} is more than the {os.cpu_count()} CPUs of this machine")
        self.model_config = build(GPTConfig, {**model_values, "vocab_size": meta["vocab_size"]}, f"preset {preset}")
        self.train_data = train.load_split(data_dir, "train", self.model_config.block_size)
        self.val_data = train.load_split(data_dir, "val", self.model_config.block_size)
        device_type = device.split(":")[0]
        settings = system_settings(self.cfg, device_type, fast_bf16(device_type))
        self.autocast = autocast_context(device_type, settings["dtype"])
        torch.manual_seed(self.cfg.seed)
        self.model = GPT(self.model_config).to(device)
        self.optimizer = train.build_optimizer(self.model, self.cfg, settings["fused"],
                                              bf16=settings["dtype"] == "bfloat16")
        self.generators = [torch.Generator().manual_seed(self.cfg.seed + i) for i in range(self.cfg.gradient_accumulation_steps)]
        self.step_model = self.model
        if settings["compile"]:
            x, y = self.batch(self.generators[0])
            self.step_model = compiling.compile_or_fallback(self.model, x, y, self.autocast)
        self.iter_num, self.train_seconds = 0, 0.0
        self.tokens_per_iter = self.cfg.gradient_accumulation_steps * self.cfg.batch_size * self.model_config.block_size

    def batch(self, generator):
        x, y = train.get_batch(self.train_data, self.cfg.batch_size, self.model_config.block_size, generator)
        return x.to(self.device), y.to(self.device)

    def train(self, iters):
        """iters optimizer steps, the body of train.py's loop (without its logging); returns their seconds."""
        if self.cfg.threads:
            threads.use_threads(self.cfg.threads)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            set_learning_rate(self.optimizer, train.learning_rate_at(self.iter_num, self.cfg))
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



def throughput(args):
    """Chunks of the preset's step, the eager reference's step and a matmul measurement, taken in turns, so a
    change in machine load hits all of them alike; medians over the rounds."""
    device = pick_device(args.device)
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
    device = pick_device(args.device)
    runs = [PresetRun(name, args.data_dir, device, overrides=_overrides(args)) for name in preset_names(args.presets, train.DEFAULTS)]
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


# -- levers: what each candidate change does to the classic step, in CPU time (robust to a loaded machine)

LEVERS = {  # name: what changes from train.py's classic step
    "as train.py": {},
    "no rng snapshot": {"rng": False},
    "no grad clipping": {"clip": False},
    "for-loop AdamW": {"fused": False},
    "no biases": {"bias": False},
    "bfloat16 autocast": {"bf16": True},
    "torch.compile": {"compile": "default"},
    "torch.compile max-autotune": {"compile": "max-autotune-no-cudagraphs"},
    "bfloat16 + compile": {"bf16": True, "compile": "default"},
}


def levers(args):
    """The classic step (B 12, T 64, 4x128) with one thing changed at a time, in turns, on 1 thread, timed in
    process CPU seconds: other programs on a shared machine slow the wall clock, much less the CPU time it takes."""
    cfg, names = train.TrainConfig(), [n.strip() for n in args.levers.split(",")]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise UserError(f"unknown lever {unknown[0]!r}; known: {', '.join(LEVERS)}")
    torch.set_num_threads(1)
    data_meta(args.data_dir)
    data = train.load_split(args.data_dir, "train", 64)
    states = {}
    for name in names:
        lever = {"rng": True, "clip": True, "fused": True, "bias": True, "bf16": False, "compile": None,
                 **LEVERS[name]}
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=65, bias=lever["bias"]))
        step_model = torch.compile(model, mode=lever["compile"], dynamic=False) if lever["compile"] else model
        optimizer = train.build_optimizer(model, cfg, fused=lever["fused"])
        states[name] = (lever, model, step_model, optimizer,
                        torch.Generator().manual_seed(cfg.seed), [0])

    def run_(name, iters):
        lever, model, step_model, optimizer, generator, it = states[name]
        autocast = autocast_context("cpu", "bfloat16" if lever["bf16"] else "float32")
        start = time.process_time()
        for _ in range(iters):
            if lever["rng"]:
                checkpoint.rng_state([generator], "cpu")
            set_learning_rate(optimizer, train.learning_rate_at(it[0], cfg))
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
        if args.warmup:
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


def _common_flags(p):
    p.add_argument("--data_dir", default="data/shakespeare_char", help="prepared data (default: data/shakespeare_char)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    p.add_argument("--set", help="name=value,... overriding every preset (e.g. threads=1,max_iters=300)")
    p.add_argument("--json", type=output("json"),
                   help="where to write the JSON result (default: out-bench/<command>.json)")



def main(argv=None):
    parser = ToolParser(prog="python -m tools.speed", description="Training speed and time-to-loss measurements (not tests).")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("throughput", help="tokens/s, ms/iter, memory and FLOP/s of the training step")
    p.add_argument("--preset", default="classic", help="config/PRESET.toml to measure (default: classic)")
    p.add_argument("--iters", type=count(1, 10 ** 5), default=20, help="steps per timed chunk (default: 20)")
    p.add_argument("--rounds", type=count(1, 10 ** 4), default=5, help="timed chunks, alternating with the eager reference (default: 5)")
    p.add_argument("--warmup", type=count(0, 10 ** 5), default=5, help="untimed steps first (default: 5)")
    p.add_argument("--eager", type=int, choices=(0, 1), default=1, help="1: also time the eager reference step, 0: skip it")
    _common_flags(p)
    p.set_defaults(func=throughput)

    p = commands.add_parser("time-to-loss", help="wall time and tokens until val loss <= target, per preset")
    p.add_argument("--target", type=finite, default=1.88, help="val loss to reach (default: 1.88)")
    p.add_argument("--presets", default="classic,cpu", help="comma-separated; the first is the yardstick (default: classic,cpu)")
    p.add_argument("--evals", type=count(1, 10 ** 5), default=20, help="evaluations per preset, one per round; a round moves every preset 1/evals of its run (default: 20)")
    p.add_argument("--eval_batches", type=count(1, 10 ** 5), default=100, help="val batches of 12 windows per evaluation (default: 100)")
    p.add_argument("--stop_at_target", type=int, choices=(0, 1), default=0, help="1: stop each preset once it reaches the target (default: 0, run to max_iters)")
    _common_flags(p)
    p.set_defaults(func=time_to_loss)

    p = commands.add_parser("levers", help="the classic step with one change at a time, CPU ms per step, in turns")
    p.add_argument("--levers", default=",".join(LEVERS), help="comma-separated, the first is the baseline (default: all)")
    p.add_argument("--iters", type=count(1, 10 ** 5), default=10, help="steps per timed chunk (default: 10)")
    p.add_argument("--rounds", type=count(1, 10 ** 4), default=6, help="chunks per lever, in turns (default: 6)")
    p.add_argument("--warmup", type=count(0, 10 ** 5), default=5, help="untimed steps first, compiling included (default: 5)")
    p.add_argument("--data_dir", default="data/shakespeare_char", help="prepared data (default: data/shakespeare_char)")
    p.set_defaults(func=levers)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run(main)
