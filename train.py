"""
train.py -- train a GPT on the integer sequences written by prepare.py. One loop, top to bottom.

    python train.py                              # the cpu preset's settings: a few minutes on a laptop
    python train.py --preset gpu                 # the baby GPT (6 layers, 384 wide) for a GPU
    python train.py --preset cpu --max_iters 500 --out_dir out-short
    python train.py --out_dir out --resume       # continue out/last.pt exactly where it stopped
    Ctrl-C (or SIGTERM) while training saves last.pt at the current iteration and exits; --resume continues
    python train.py --help                       # every setting, with its default
    torchrun --standalone --nproc_per_node=2 train.py --gradient_accumulation_steps 2   # 2 processes (DDP)

Settings come from, in increasing priority: the defaults below, config/PRESET.toml, the command line.

Writes into --out_dir:
    ckpt.pt        the checkpoint with the best validation loss (what sample.py reads)
    last.pt        the latest checkpoint (what --resume reads): written at each evaluation, every
                   save_interval steps, and when the run is stopped by Ctrl-C or SIGTERM
    metrics.jsonl  one JSON object per logged step: iter, tokens, train_loss, lr, ms_per_iter, tokens_per_s;
                   evaluation lines have train_loss and val_loss averaged over eval_iters batches, and val_bpc
                   (validation bits per character: comparable across tokenizers)
    loss.png       the loss curves so far, redrawn at each evaluation (python plot.py loss OUT_DIR does the same)
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import checkpoint
import plot
from cli import Parser, UserError, add_dataclass_flags, build, load_preset, pick_device, run
from model import GPT, GPTConfig, make_optimizer
from muon import make_muon_optimizer
from tokenizer import TokenizerUnavailable, bits_per_character, read_meta, same_tokenizer, tokenizer_from_meta


@dataclass
class TrainConfig:
    # data and output
    data_dir: str = "data/shakespeare_char"  # folder with train.bin, val.bin, meta.json from prepare.py
    out_dir: str = "out"  # where checkpoints and metrics go
    resume: bool = False  # continue OUT_DIR/last.pt instead of starting a new run
    overwrite: bool = False  # allow a new run to replace the checkpoints already in out_dir
    # how long, how often to evaluate
    max_iters: int = 2000  # optimizer steps in the whole run
    eval_interval: int = 250  # evaluate, print a sample and save checkpoints every this many steps
    save_interval: int = 100  # also save last.pt every this many steps, so a crash loses little (0: only at evaluations)
    eval_iters: int = 50  # batches averaged for each evaluation of train and val loss
    log_interval: int = 10  # write a metrics line every this many steps
    sample_chars: int = 200  # characters of text printed at each evaluation (0: none)
    # batches
    batch_size: int = 12  # sequences per micro-batch (B)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    # optimizer and schedule
    learning_rate: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # the cosine decay ends here
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: int = 0  # the cosine decay lasts this many steps (0: the whole run, max_iters)
    decay: str = "cosine"  # shape of the decay after warmup: 'cosine' or 'linear' (a straight warm-down)
    weight_decay: float = 0.1  # AdamW weight decay on 2-D weights
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    optimizer: str = "adamw"  # 'adamw', or 'muon' (Muon for the blocks' matrices, AdamW for the rest)
    muon_lr: float = 0.02  # Muon's peak learning rate (follows the same schedule as learning_rate)
    muon_momentum: float = 0.95  # Muon's momentum
    # system
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto (bfloat16 autocast on CUDA if supported, else float32), float32 or bfloat16
    compile: str = "auto"  # torch.compile the model: auto (on for CUDA only), on, off
    threads: int = 0  # CPU threads for torch (0: torch's default)
    seed: int = 1337  # seeds initialisation, batches and dropout

    def __post_init__(self):
        for name, value in vars(self).items():  # nan passes every < and > test below, so refuse it first
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        positive = ("max_iters", "eval_interval", "eval_iters", "log_interval", "batch_size", "gradient_accumulation_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("save_interval", "sample_chars", "warmup_iters", "lr_decay_iters", "threads", "weight_decay", "grad_clip", "min_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.device not in ("auto", "cpu", "mps", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be auto, on or off, got {self.compile!r}")
        if not -2**63 <= self.seed < 2**63 - 1:  # torch's generators take 64-bit seeds (evaluation uses seed + 1)
            raise ValueError(f"seed must fit in a signed 64-bit integer, got {self.seed}")
        if self.decay not in ("cosine", "linear"):
            raise ValueError(f"decay must be cosine or linear, got {self.decay!r}")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"optimizer must be adamw or muon, got {self.optimizer!r}")


MODEL_FLAGS = [f.name for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size"]  # vocab_size comes from the data
TRAIN_FLAGS = [f.name for f in dataclasses.fields(TrainConfig)]
DEFAULTS = {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name in MODEL_FLAGS}
DEFAULTS.update({f.name: f.default for f in dataclasses.fields(TrainConfig)})


def parse_args(argv):
    """The flags the user typed (and --preset), as a dict; defaults are applied later."""
    parser = Parser(prog="train.py", description="Train a character-level GPT. Flags override --preset, which overrides the defaults.")
    parser.add_argument("--preset", help="load config/PRESET.toml (e.g. cpu, gpu) before the flags")
    add_dataclass_flags(parser, GPTConfig, "model (GPTConfig)", skip=("vocab_size",))
    add_dataclass_flags(parser, TrainConfig, "training (TrainConfig)")
    return vars(parser.parse_args(argv))


# ----------------------------------------------------------------------------------------------------------------
# data: random windows of block_size tokens; the target of every position is the next token


def load_split(data_dir, split, block_size):
    """Memory-map DATA_DIR/{split}.bin (uint16 token ids) without reading it all into memory."""
    path = Path(data_dir) / f"{split}.bin"
    if not path.is_file():
        raise UserError(f"{path} not found: run `python prepare.py --out_dir {data_dir}` first")
    data = np.memmap(path, dtype=np.uint16, mode="r") if path.stat().st_size else np.zeros(0, np.uint16)
    if len(data) < block_size + 1:
        raise UserError(f"{path} has {len(data)} tokens; block_size {block_size} needs at least {block_size + 1} "
                        f"(use more text or a smaller --block_size)")
    return data


def get_batch(data, batch_size, block_size, generator):
    """B random windows of the token stream. x is each window, y the same window shifted one to the left:
    y[b, t] is the token that follows x[b, 0..t]. So one (B, T) batch holds B*T next-token examples."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = starts.numpy()[:, None] + np.arange(block_size + 1)  # (B, T+1) positions in the stream
    window = torch.from_numpy(data[offsets].astype(np.int64))  # (B, T+1)
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()  # x (B, T), y (B, T)


# ----------------------------------------------------------------------------------------------------------------
# schedule, evaluation, devices


def learning_rate_at(it, cfg: TrainConfig):
    """Linear warmup from lr/(warmup+1) (never a zero-lr first step), then cosine (or linear) decay to min_lr."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= decay_iters:
        return cfg.min_lr
    progress = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)  # 0 -> 1
    if cfg.decay == "linear":
        return cfg.learning_rate + progress * (cfg.min_lr - cfg.learning_rate)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


@torch.no_grad()
def estimate_loss(model, splits, cfg, block_size, device, autocast):
    """Mean loss over eval_iters batches per split, in eval mode. The batches come from a generator seeded
    the same way every time, so every evaluation scores the same text and curves are comparable; it also
    leaves the training batches' random stream untouched (needed for exact resume)."""
    model.eval()
    losses = {}
    for split, data in splits.items():
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        total = 0.0
        for _ in range(cfg.eval_iters):
            x, y = get_batch(data, cfg.batch_size, block_size, generator)
            with autocast:
                _, loss = model(x.to(device), y.to(device))
            total += loss.item()
        losses[split] = total / cfg.eval_iters
    model.train()
    return losses


def sample_text(model, tokenizer, num_chars, device, seed):
    """A short sample from a newline, to watch the model learn. Uses its own generator: training's random
    stream is left as it was."""
    model.eval()
    start = tokenizer.encode("\n", unknown="skip") or [0]
    idx = torch.tensor([start], dtype=torch.long, device=device)
    out = model.generate(idx, num_chars, temperature=1.0, generator=torch.Generator().manual_seed(seed))
    model.train()
    return tokenizer.decode(out[0, len(start):].tolist())


def pick_dtype(requested, device_type, bf16_supported):
    """float32 everywhere except CUDA with bf16 support, where 'auto' means bfloat16 autocast."""
    if requested == "auto":
        return "bfloat16" if device_type == "cuda" and bf16_supported else "float32"
    return requested


def autocast_context(device_type, dtype):
    """Mixed precision: matmuls in bfloat16, weights and the optimizer in float32. A no-op for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def rng_state(data_generators, device_type):
    """This process's random streams, for exact resume: the torch (dropout) state and the state of each of its
    micro-batch slots' data generators. Cheap: taken before every step, kept only when a checkpoint is written."""
    state = {"torch": [torch.get_rng_state()], "data": [g.get_state() for g in data_generators]}
    if device_type == "cuda":
        state["cuda"] = [torch.cuda.get_rng_state()]
    return state


def gather_rng_state(state, world_size):
    """Under torchrun each rank holds only its own streams: collect every rank's, in rank order (so "data" stays
    in slot order), for rank 0 to write. Every rank must call this at the same point."""
    if world_size == 1:
        return state
    gathered = [None] * world_size
    dist.all_gather_object(gathered, state)
    return {key: [s for rank_state in gathered for s in rank_state[key]] for key in state}


def restore_rng_state(state, data_generators, device_type, rank=0, first_slot=0):
    """Put back this rank's streams. A slot or rank the checkpoint does not have (more processes or more
    accumulation steps than before) keeps its fresh seed: the run continues, just not bit-exactly."""
    if rank < len(state["torch"]):
        torch.set_rng_state(state["torch"][rank])
    if device_type == "cuda" and rank < len(state.get("cuda", [])):
        torch.cuda.set_rng_state(state["cuda"][rank])
    for slot, generator in enumerate(data_generators, start=first_slot):
        if slot < len(state["data"]):
            generator.set_state(state["data"][slot])


def build_optimizer(model, cfg, fused=False):
    """AdamW for everything, or Muon for the blocks' matrices and AdamW for the rest (--optimizer muon)."""
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "muon":
        return make_muon_optimizer(model, cfg.learning_rate, cfg.muon_lr, cfg.muon_momentum, cfg.weight_decay, betas, fused)
    return make_optimizer(model, cfg.learning_rate, cfg.weight_decay, betas, fused=fused)


def setup_distributed():
    """Under torchrun (which sets RANK, LOCAL_RANK, WORLD_SIZE) join the process group: nccl between GPUs, gloo
    between CPU processes. Returns (rank, world_size, device or None); without torchrun (0, 1, None)."""
    if "RANK" not in os.environ:
        return 0, 1, None
    rank, local_rank, world_size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        device = f"cuda:{local_rank}"  # one GPU per process
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        device = "cpu"
        dist.init_process_group("gloo")
    return rank, world_size, device


def system_settings(cfg, device_type, bf16_supported):
    """The speed settings that depend on the device: dtype (bfloat16 autocast on CUDA when it can), whether to
    torch.compile (auto: CUDA only; on a CPU it was no faster, see docs/experiments.md) and the fused AdamW
    kernel (CUDA and CPU: one pass over all parameters instead of several; 3.5x faster on the CPU, ~4% of a step)."""
    return {"dtype": pick_dtype(cfg.dtype, device_type, bf16_supported),
            "compile": cfg.compile == "on" or (cfg.compile == "auto" and device_type == "cuda"),
            "fused": device_type in ("cuda", "cpu")}


def compile_or_fallback(model, x, y, autocast, backend="inductor"):
    """torch.compile(model), tried once on a real batch (compiling happens lazily, at the first call). If it
    fails (no C++ compiler, an unsupported GPU, a torch bug), say so in one line and train uncompiled instead.
    The trial runs with forked random streams and its gradients are dropped, so it changes nothing."""
    compiled = torch.compile(model, backend=backend)
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), autocast:
            compiled(x, y)[1].backward()
    except Exception as e:  # noqa: BLE001 -- any compiler failure means: fall back to eager
        print(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              f"training without it", file=sys.stderr)
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


# ----------------------------------------------------------------------------------------------------------------
# trustworthy runs: stop cleanly on a signal, never save a diverged model, never trust the data blindly


class StopSignal:
    """Ctrl-C (SIGINT) or SIGTERM (a closing laptop lid, `kill`, a cluster's time limit) during training only sets
    a flag; the loop looks at it between two steps, saves last.pt and returns. Why not stop at once? The signal
    can arrive in the middle of optimizer.step(), with half the weights updated: that state must never be saved.
    A second signal stops immediately (KeyboardInterrupt): even then the last checkpoint on disk is whole,
    because checkpoint.save writes a temporary file and renames it."""

    def __init__(self):
        self.received = None  # the name of the first signal, e.g. "SIGINT"
        self.previous = {}

    def listen(self):
        if threading.current_thread() is not threading.main_thread():
            return  # Python only delivers signals to the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def check_token_ids(data, vocab_size, path):
    """Every id in a .bin file must be a row of the embedding table; a meta.json edited or copied from another
    data set would otherwise fail deep inside the model (an index error on the first batch that hits it)."""
    if len(data) and int(data.max()) >= vocab_size:
        raise UserError(f"{path} holds token id {int(data.max())}, but meta.json's vocabulary has only {vocab_size} "
                        f"characters; run prepare.py again for this folder")


def diverged_message(what, iter_num, cfg, dtype, last_saved):
    """One line for a run whose loss or weights stopped being finite numbers, with the usual cures."""
    fixes = [f"a lower --learning_rate (it is {cfg.learning_rate:g})", "more --warmup_iters"]
    if dtype != "float32":
        fixes.append("--dtype float32")
    if not cfg.grad_clip:
        fixes.append("--grad_clip 1")
    kept = f"last.pt from iteration {last_saved} is kept" if last_saved is not None else "nothing was saved"
    return f"{what} at iteration {iter_num}: training diverged; try {', '.join(fixes)}; {kept}"


def weights_are_finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def metrics_up_to(path, iter_num):
    """The lines of metrics.jsonl up to iteration iter_num. A line cut short by a crash mid-write is dropped."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iter"] <= iter_num:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass
    return "".join(line + "\n" for line in kept)


# ----------------------------------------------------------------------------------------------------------------
# settings: defaults < preset < flags; on --resume, the saved run's settings < flags


def resolve_settings(flags):
    """Return (model settings dict, TrainConfig, the resumed checkpoint or None)."""
    preset = flags.pop("preset", None)
    resuming = flags.get("resume", False)
    out_dir = Path(flags.get("out_dir", DEFAULTS["out_dir"]))
    if resuming:
        if preset:
            raise UserError("--preset cannot be combined with --resume: the run keeps its saved settings")
        try:
            resumed = checkpoint.load(out_dir / "last.pt")
        except checkpoint.CheckpointError as e:
            raise UserError(f"cannot resume: {e}") from None
        for name in MODEL_FLAGS:
            if name in flags and flags[name] != resumed["model_config"].get(name):
                raise UserError(f"--{name} cannot change when resuming (the checkpoint has {resumed['model_config'].get(name)})")
        # DEFAULTS first: a checkpoint from before a setting existed resumes with that setting's default
        values = {**DEFAULTS, **resumed["model_config"], **resumed["train_config"], **flags}
        values["resume"] = True
    else:
        resumed = None
        values = {**DEFAULTS, **(load_preset(preset, DEFAULTS) if preset else {}), **flags}
    model_values = {name: values[name] for name in MODEL_FLAGS}
    build(GPTConfig, model_values, "invalid model setting")  # check the flags now, before any file is read
    cfg = build(TrainConfig, {name: values[name] for name in TRAIN_FLAGS}, "invalid setting")
    return model_values, cfg, resumed


def main(argv=None):
    with StopSignal() as stop:  # restores the usual Ctrl-C behaviour however training ends
        return train(argv, stop)


def train(argv, stop):
    model_values, cfg, resumed = resolve_settings(parse_args(argv))
    out_dir = Path(cfg.out_dir)
    rank, world_size, ddp_device = setup_distributed()
    master = rank == 0  # only rank 0 evaluates, logs, samples and writes checkpoints
    if cfg.gradient_accumulation_steps % world_size:
        raise UserError(f"--gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be a multiple of the "
                        f"number of processes ({world_size}): each process runs an equal share of the micro-batches")
    local_steps = cfg.gradient_accumulation_steps // world_size  # this process's micro-batches per step

    # -- the data and its vocabulary
    try:
        meta = read_meta(cfg.data_dir)
        tokenizer = tokenizer_from_meta(meta)
    except (FileNotFoundError, ValueError, TokenizerUnavailable) as e:
        raise UserError(str(e)) from None
    model_config = build(GPTConfig, {**model_values, "vocab_size": meta["vocab_size"]}, "invalid model setting")
    if resumed and not same_tokenizer(resumed["meta"], meta):
        raise UserError(f"the tokenizer (vocabulary) in {cfg.data_dir} differs from the one {out_dir / 'last.pt'} was trained on; "
                        f"resume with the same --data_dir")
    train_data = load_split(cfg.data_dir, "train", model_config.block_size)
    val_data = load_split(cfg.data_dir, "val", model_config.block_size)
    for split, data in (("train", train_data), ("val", val_data)):
        check_token_ids(data, meta["vocab_size"], Path(cfg.data_dir) / f"{split}.bin")

    # -- the output folder: never replace a previous run's checkpoints unless asked to
    if not cfg.resume and not cfg.overwrite and any((out_dir / name).exists() for name in ("ckpt.pt", "last.pt")):
        raise UserError(f"{out_dir} already holds checkpoints of an earlier run; use --resume to continue it, "
                        f"--overwrite to start over, or another --out_dir")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{rank}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {out_dir}: {e.strerror}") from None
    if world_size > 1:
        dist.barrier()  # every rank has checked out_dir before rank 0 writes into it

    # -- device and precision
    device = ddp_device or pick_device(cfg.device)
    device_type = device.split(":")[0]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    settings = system_settings(cfg, device_type, device_type == "cuda" and torch.cuda.is_bf16_supported())
    dtype = settings["dtype"]
    autocast = autocast_context(device_type, dtype)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls that do run (outside autocast) use TF32
        torch.backends.cudnn.allow_tf32 = True

    # -- model, optimizer, random streams
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = GPT(model_config).to(device)
    optimizer = build_optimizer(model, cfg, fused=settings["fused"])
    torch.manual_seed(cfg.seed + rank)  # dropout differs between ranks (rank 0: the single-process stream)
    # One data stream per micro-batch slot of a step, seeded by its slot number; rank r owns slots
    # r*local_steps .. (r+1)*local_steps-1. So N processes draw different batches, and together exactly the
    # batches that one process with N x the accumulation steps would draw.
    first_slot = rank * local_steps
    data_generators = [torch.Generator().manual_seed(cfg.seed + slot) for slot in range(first_slot, first_slot + local_steps)]
    iter_num, best_val_loss = 0, float("inf")
    if resumed:
        try:
            model.load_state_dict(resumed["model"])
            optimizer.load_state_dict(resumed["optimizer"])
            restore_rng_state(resumed["rng"], data_generators, device_type, rank, first_slot)
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:  # a damaged or hand-edited last.pt
            raise UserError(f"cannot resume: {out_dir / 'last.pt'} does not fit this run ({str(e).strip().splitlines()[-1]})") from None
        iter_num, best_val_loss = resumed["iter_num"], resumed["best_val_loss"]
    eval_model = model  # checkpoints always save the plain `model`
    if settings["compile"]:
        x, y = get_batch(train_data, cfg.batch_size, model_config.block_size, torch.Generator().manual_seed(0))
        eval_model = compile_or_fallback(model, x.to(device), y.to(device), autocast)
    compile_on = eval_model is not model
    # DDP averages the gradients of all ranks during backward(); rank 0 evaluates with the unwrapped model
    train_model = DistributedDataParallel(eval_model, device_ids=[device] if device_type == "cuda" else None) \
        if world_size > 1 else eval_model

    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * model_config.block_size
    if not master:
        sys.stdout = open(os.devnull, "w")  # only rank 0 talks (errors still reach stderr)
    print(f"model: {model.num_params():,} parameters, {model_config.n_layer} layers, {model_config.n_head} heads, "
          f"{model_config.n_embd} wide, block {model_config.block_size}, vocab {model_config.vocab_size}")
    print(f"device {device}, {dtype}, compile {'on' if compile_on else 'off'}, {torch.get_num_threads()} threads"
          f"{f', {world_size} processes' if world_size > 1 else ''}; {tokens_per_iter:,} tokens per iteration")
    if resumed:
        print(f"resuming {out_dir / 'last.pt'} at iteration {iter_num} (best val loss {best_val_loss:.4f})")

    # -- metrics: on resume, drop lines written after the checkpoint (they belong to the lost tail of the run)
    metrics_path = out_dir / "metrics.jsonl"
    if master and resumed and metrics_path.exists():
        metrics_path.write_text(metrics_up_to(metrics_path, iter_num))
    elif master and not resumed:
        metrics_path.write_text("")
    metrics_file = open(metrics_path, "a") if master else open(os.devnull, "w")

    def log(record):
        try:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
        except OSError as e:  # e.g. the disk is full
            raise UserError(f"cannot write {metrics_path}: {e.strerror}; the checkpoints are kept") from None

    def make_checkpoint(rng):
        return {
            "format": checkpoint.FORMAT, "version": checkpoint.VERSION,
            "model": model.state_dict(),
            "model_config": dataclasses.asdict(model_config),
            "train_config": dataclasses.asdict(cfg),
            "meta": meta,
            "optimizer": optimizer.state_dict(),
            "iter_num": iter_num,
            "best_val_loss": best_val_loss,
            "rng": rng,
        }

    last_saved = iter_num if resumed else None  # the iteration last.pt holds

    def save_last(also_best=False, rng=None):
        """last.pt (and ckpt.pt if asked) := the state at iter_num, whose loss was just found finite. `rng`: the
        random states from before this iteration's batch was drawn (default: now). Never half a file."""
        nonlocal last_saved
        rng = gather_rng_state(rng or rng_state(data_generators, device_type), world_size)  # every rank takes part
        if not weights_are_finite(model):
            raise UserError(diverged_message("the weights are no longer finite numbers", iter_num, cfg, dtype, last_saved))
        if not master:
            return
        try:
            state = make_checkpoint(rng)
            if last_saved != iter_num:
                checkpoint.save(state, out_dir / "last.pt")
            if also_best:
                checkpoint.save(state, out_dir / "ckpt.pt")
        except checkpoint.CheckpointError as e:
            raise UserError(str(e)) from None
        last_saved = iter_num

    def evaluate_and_save():
        nonlocal best_val_loss
        if not master:
            save_last()  # every rank takes part in gathering the random states; only rank 0 writes
            return
        losses = estimate_loss(eval_model, {"train": train_data, "val": val_data}, cfg, model_config.block_size, device, autocast)
        if not all(math.isfinite(loss) for loss in losses.values()):  # no sample from NaNs, no checkpoint of them
            raise UserError(diverged_message(f"the evaluation loss is {losses['val']}", iter_num, cfg, dtype, last_saved))
        improved = losses["val"] < best_val_loss
        best_val_loss = min(best_val_loss, losses["val"])
        # Loss per token depends on the tokenizer; bits per character of the same validation text does not.
        # losses["val"] is the mean loss per token over random windows of val.bin, an estimate of the mean over
        # all its val_tokens tokens; times val_tokens it is the total nats for the val text's val_chars characters.
        val_bpc = bits_per_character(losses["val"], meta["val_tokens"], meta["val_chars"])
        log({"iter": iter_num, "tokens": iter_num * tokens_per_iter, "train_loss": losses["train"],
             "val_loss": losses["val"], "val_bpc": val_bpc, "lr": learning_rate_at(iter_num, cfg)})
        plot.update_loss_png(out_dir, meta["vocab_size"])  # redraw OUT_DIR/loss.png; never raises
        tqdm.write(f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} ({val_bpc:.3f} bits/char)"
                   + (" (best, saved)" if improved else ""))
        if cfg.sample_chars:
            tqdm.write("sample: " + sample_text(model, tokenizer, cfg.sample_chars, device, cfg.seed).replace("\n", "\n        "))
        save_last(also_best=improved)

    # -- the training loop
    show_bar = master and sys.stdout.isatty()
    bar = tqdm(total=cfg.max_iters, initial=iter_num, disable=not show_bar, unit="it", dynamic_ncols=True)
    start_iter, run_start = iter_num, time.perf_counter()
    window_start, window_iters = time.perf_counter(), 0
    stop.listen()  # from here on, Ctrl-C / SIGTERM stop the loop between two steps
    while iter_num < cfg.max_iters:
        if iter_num % cfg.eval_interval == 0 and not (resumed and iter_num == start_iter):
            evaluate_and_save()
            window_start, window_iters = time.perf_counter(), 0  # evaluation time is not step time

        rng_before_batch = rng_state(data_generators, device_type)  # what a checkpoint of this iteration holds
        lr = learning_rate_at(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's groups run at their own peak rate
        loss_sum = 0.0
        for micro_step, generator in enumerate(data_generators):
            x, y = get_batch(train_data, cfg.batch_size, model_config.block_size, generator)
            # under DDP, gradients are averaged across ranks only once, in the last micro-step's backward
            last = micro_step == local_steps - 1
            with contextlib.nullcontext() if world_size == 1 or last else train_model.no_sync():
                with autocast:
                    _, loss = train_model(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                loss = loss / local_steps  # the micro-batches' gradients add up to a mean (DDP averages ranks)
                loss.backward()
            loss_sum += loss.detach()
        if not torch.isfinite(loss_sum):  # the first non-finite loss stops the run; nothing is saved
            raise UserError(diverged_message(f"the loss is {float(loss_sum)}", iter_num, cfg, dtype, last_saved))
        # Save here, before optimizer.step(): the weights are still those of iteration iter_num and their loss is
        # known to be finite. A resumed run draws the same batch again from rng_before_batch.
        stopping = bool(stop.received)
        if world_size > 1:  # under torchrun every rank must stop at the same step, even if only one got the signal
            flag = torch.tensor([float(stopping)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stopping = bool(flag.item())
        if stopping or (cfg.save_interval and iter_num % cfg.save_interval == 0):
            save_last(rng=rng_before_batch)  # (a no-op if last.pt already holds this iteration)
        if stopping:
            bar.close()
            metrics_file.close()
            print(f"stopped by {stop.received or 'a signal'} at iteration {iter_num}; saved {out_dir / 'last.pt'}. "
                  f"Continue with: python train.py --out_dir {out_dir} --resume")
            if world_size > 1:
                dist.destroy_process_group()
            return
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        window_iters += 1

        if iter_num % cfg.log_interval == 0 or iter_num == cfg.max_iters:
            train_loss = float(loss_sum)  # .item() waits for the device, so only do it when logging
            ms_per_iter = 1000 * (time.perf_counter() - window_start) / window_iters
            log({"iter": iter_num, "tokens": iter_num * tokens_per_iter, "train_loss": train_loss, "lr": lr,
                 "ms_per_iter": ms_per_iter, "tokens_per_s": tokens_per_iter * 1000 / ms_per_iter})
            if show_bar:
                bar.set_postfix(loss=f"{train_loss:.3f}", ms=f"{ms_per_iter:.0f}")
            else:
                print(f"iter {iter_num}: loss {train_loss:.4f}, lr {lr:.2e}, {ms_per_iter:.1f} ms/iter, "
                      f"{tokens_per_iter * 1000 / ms_per_iter:,.0f} tokens/s")
            window_start, window_iters = time.perf_counter(), 0
        bar.update(1)
    bar.close()

    if not (resumed and iter_num == start_iter):
        evaluate_and_save()
    metrics_file.close()
    if world_size > 1:
        dist.destroy_process_group()
    print(f"done: {iter_num} iterations in {time.perf_counter() - run_start:.1f} s, best val loss {best_val_loss:.4f}; "
          f"checkpoints in {out_dir}/ (sample with: python sample.py --out_dir {out_dir})")


if __name__ == "__main__":
    run(main)
