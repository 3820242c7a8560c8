"""
train.py -- train a GPT on the integer sequences written by prepare.py. One loop, top to bottom.

    python train.py                              # the cpu preset: a few minutes on a laptop CPU
    python train.py --preset classic             # the lecture's recipe (the defaults below)
    python train.py --preset gpu                 # the baby GPT (6 layers, 384 wide) for a GPU
    python train.py --out_dir out --resume       # continue out/last.pt exactly where it stopped
    python train.py --help                       # every setting, with its default
    torchrun --standalone --nproc_per_node=2 train.py --gradient_accumulation_steps 2   # DDP

Settings: the defaults below < config/PRESET.toml (cpu unless --preset says otherwise) < the flags.
Writes ckpt.pt (the best), last.pt, metrics.jsonl and loss.png; Ctrl-C (or SIGTERM) saves last.pt.
Read get_batch, the schedule, evaluation, then main() and its fenced loop; babygpt/ can wait.
"""

import dataclasses
import math
import signal
import time

from babygpt import runner
# Ctrl-C during the slow imports below (torch: a second or two): "interrupted", not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT, runner.exit_quietly)

import numpy as np
import torch
from tqdm import tqdm

from babygpt import checkpoint, compiling, device, distributed, engine, files, gpt2, locks, memory
from babygpt.attention_patterns import attention_pattern
from babygpt.cli import (UserError, add_dataclass_flags, build, check_fields, load_preset, preset_note, preset_parser)
from babygpt.metrics import MetricsLog
from babygpt.muon import make_muon_optimizer
from babygpt.optimizer import make_optimizer, set_learning_rate
from babygpt.progress import Progress
from babygpt.stopping import StopSignal, farewell
from babygpt.tokenizer import (TokenizerUnavailable, bits_per_character, read_meta,
                               tokenizer_from_meta)
from model import GPT, GPTConfig

DEFAULT_PRESET = "cpu"  # what `python train.py` runs with no --preset: the README's fast recipe


@dataclasses.dataclass
class TrainConfig:
    # data and output
    data_dir: str = "data/shakespeare_char"  # prepare.py's folder: train.bin, val.bin, meta.json
    out_dir: str = "out"  # where checkpoints and metrics go
    resume: bool = False  # continue OUT_DIR/last.pt instead of starting a new run
    overwrite: bool = False  # allow a new run to replace the checkpoints already in out_dir
    init_from: str = ""  # start from GPT-2's weights: gpt2, gpt2-medium, -large, -xl, or a folder
    # how long, how often to evaluate
    max_iters: int = 2000  # optimizer steps in the whole run
    eval_interval: int = 250  # evaluate, print a sample and save checkpoints every this many steps
    save_interval: int = 100  # also save last.pt this often, so a crash loses little (0: never)
    eval_iters: int = 20  # batches averaged for each evaluation of train and val loss
    log_interval: int = 10  # write a metrics line every this many steps
    sample_chars: int = 200  # tokens (characters) sampled at each evaluation (0: none)
    # batches
    batch_size: int = 12  # sequences per micro-batch (B)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    # optimizer and schedule
    learning_rate: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # the decay ends here
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: int = 0  # the decay lasts this many steps (0: the whole run, max_iters)
    decay: str = "cosine"  # the decay after warmup: 'cosine' or 'linear' (a straight warm-down)
    weight_decay: float = 0.1  # AdamW weight decay on 2-D weights
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    optimizer: str = "adamw"  # 'adamw', or 'muon' (Muon: the blocks' matrices; AdamW: the rest)
    muon_lr: float = 0.02  # Muon's peak learning rate (follows the same schedule as learning_rate)
    muon_momentum: float = 0.95  # Muon's momentum
    muon_weight_decay: float = 0.0  # Muon's decoupled weight decay on the blocks' matrices
    # system
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto (bfloat16 autocast where fast: CUDA, bf16 CPUs), float32, bfloat16
    compile: str = "auto"  # torch.compile the model: auto (on for CUDA only), on, off
    threads: int = 0  # CPU threads. 0: auto, fewer while other programs use cores; N: N (bit-exact)
    seed: int = 1337  # seeds initialisation, batches and dropout

    def __post_init__(self):
        check_fields(
            self, positive=("max_iters", "eval_interval", "eval_iters", "log_interval",
                            "batch_size", "gradient_accumulation_steps"),
            non_negative=("save_interval", "sample_chars", "warmup_iters", "lr_decay_iters",
                          "threads", "weight_decay", "muon_weight_decay", "grad_clip", "min_lr"),
            choices={"dtype": ("auto", "float32", "bfloat16"), "compile": ("auto", "on", "off"),
                     "decay": ("cosine", "linear"), "optimizer": ("adamw", "muon")},
            unit_interval=("beta1", "beta2", "muon_momentum"),
            above_zero=("learning_rate", "muon_lr"), folders=("data_dir", "out_dir"),
            device=True, seed=True, schedule=True)


MODEL_FLAGS = [f.name for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size"]  # (data's)
TRAIN_FLAGS = [f.name for f in dataclasses.fields(TrainConfig)]
MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name in MODEL_FLAGS}
DEFAULTS = {**MODEL_DEFAULTS, **{f.name: f.default for f in dataclasses.fields(TrainConfig)}}


# -- settings: defaults < preset < flags; on --resume, the saved run's settings < flags ------------

def resolve_settings(argv):
    """The command line, as (model settings, TrainConfig, the resumed checkpoint or None)."""
    parser, shown = preset_parser("train.py", "Train a character-level GPT.", DEFAULT_PRESET, DEFAULTS, argv)
    add_dataclass_flags(parser, GPTConfig, "model (GPTConfig)", skip=("vocab_size",), shown=shown)
    add_dataclass_flags(parser, TrainConfig, "training (TrainConfig)", shown=shown)
    flags = vars(parser.parse_args(argv))  # only what the user typed: defaults are SUPPRESSed
    preset, resumed = flags.pop("preset", None), None
    if flags.get("resume", False):  # the saved run's settings < flags (checkpoint.py)
        resumed, values = checkpoint.load_for_resume(flags, preset, DEFAULTS, MODEL_DEFAULTS)
    else:
        preset = DEFAULT_PRESET if preset is None else preset  # --preset '' is no default
        values = {**DEFAULTS, **load_preset(preset, DEFAULTS), **flags}
    model_values = {name: values[name] for name in MODEL_FLAGS}
    build(GPTConfig, model_values, "invalid model setting")  # checked now, before any file is read
    cfg = build(TrainConfig, {name: values[name] for name in TRAIN_FLAGS}, "invalid setting")
    return model_values, cfg, resumed


# -- data: random windows of block_size tokens; the target of every position is the next token -----

def load_vocabulary(data_dir):
    """meta.json and its tokenizer; the folder stays locked against a prepare.py into it."""
    locks.lock_data_dir(data_dir, exclusive=False)
    try:
        meta = read_meta(data_dir)
        return meta, tokenizer_from_meta(meta)
    except (FileNotFoundError, ValueError, TokenizerUnavailable) as e:
        raise UserError(str(e)) from None


def load_split(data_dir, split, block_size, vocab_size=None):
    """DATA_DIR/{split}.bin (uint16 token ids), memory-mapped, checked against meta.json."""
    path = files.verify_split(data_dir, split)
    data = np.memmap(path, np.uint16, mode="r") if path.stat().st_size else np.zeros(0, np.uint16)
    if len(data) < block_size + 1:
        raise UserError(f"{path} has {len(data)} tokens; block_size {block_size} needs at least "
                        f"{block_size + 1} (use more text or a smaller --block_size)")
    if vocab_size is not None and int(data.max()) >= vocab_size:
        raise UserError(f"{path} holds token id {int(data.max())}, but meta.json's vocabulary has "
                        f"only {vocab_size} characters; run prepare.py again for this folder")
    return data


def get_batch(data, batch_size, block_size, generator):
    """B random windows of the token stream. x is each window, y the same window shifted one to the
    left: y[b, t] is the token that follows x[b, 0..t]. So one (B, T) batch holds B*T examples."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = starts.numpy()[:, None] + np.arange(block_size + 1)  # (B, T+1) stream positions
    window = torch.from_numpy(data[offsets].astype(np.int64))  # (B, T+1)
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()  # x (B, T), y (B, T)


# -- learning: the schedule, the optimizer, and how we watch it learn ------------------------------

def learning_rate_at(it, cfg: TrainConfig):
    """Linear warmup from lr/(warmup+1) (never a zero-lr step), then cosine or linear decay."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= decay_iters:
        return cfg.min_lr
    progress = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)  # 0 -> 1
    if cfg.decay == "linear":
        return cfg.learning_rate + progress * (cfg.min_lr - cfg.learning_rate)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def build_optimizer(model, cfg, fused=False, bf16=False):
    """AdamW for everything, or Muon for the blocks' matrices and AdamW for the rest (bf16: Muon's
    matmuls in bfloat16, where the run trains in it)."""
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "muon":
        return make_muon_optimizer(model, cfg.learning_rate, cfg.muon_lr, cfg.muon_momentum,
                                   cfg.weight_decay, betas, fused, bf16, cfg.muon_weight_decay)
    return make_optimizer(model, cfg.learning_rate, cfg.weight_decay, betas, fused=fused)


@torch.no_grad()
def estimate_loss(model, splits, cfg, block_size, device, autocast):
    """Mean loss over eval_iters batches per split, in eval mode: the same batches every time."""
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


def sample_text(model, tokenizer, num_tokens, device, seed):
    """A short sample from a newline (its own generator: training's random stream is untouched)."""
    model.eval()
    start = tokenizer.encode("\n", unknown="skip") or [0]
    idx = torch.tensor([start], dtype=torch.long, device=device)  # (1, T)
    generator = torch.Generator().manual_seed(seed)
    out = engine.generate(model, idx, num_tokens, temperature=1.0, generator=generator)
    model.train()
    return tokenizer.decode(out[0, len(start):].tolist())


def evaluate_and_save(iter_num, model, eval_model, splits, tokenizer, cfg, machine, saver, metrics):
    """The loss on both splits, a metrics line (loss.png follows), a sample and checkpoints (ckpt.pt
    too if the val loss is the best yet). Rank 0 evaluates; all ranks save (and gather streams)."""
    if not machine.master:
        return saver.save(iter_num, saver.rng_now())
    block_size, meta, eval_start = model.config.block_size, saver.meta, time.perf_counter()
    losses = estimate_loss(eval_model, splits, cfg, block_size, machine.device, machine.autocast())
    if not all(math.isfinite(loss) for loss in losses.values()):  # no sample or checkpoint of NaNs
        raise saver.diverged(f"the evaluation loss is {losses['val']}", iter_num)
    improved = saver.record(losses["val"])
    saver.save(iter_num, saver.rng_now(), also_best=improved)  # before the line below says "saved"
    val_bpc = bits_per_character(losses["val"], meta["val_tokens"], meta["val_chars"])
    tqdm.write(f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
               f"({val_bpc:.3f} bits/char)" + (" (best, saved)" if improved else ""))
    if iter_num:  # no sample at step 0, where the model knows nothing
        text = sample_text(model, tokenizer, cfg.sample_chars, machine.device, cfg.seed)
        if text:  # (sample_chars 0: none)
            tqdm.write("sample: " + text.replace("\n", "\n        "))
    tokens = iter_num * cfg.gradient_accumulation_steps * cfg.batch_size * block_size
    metrics.write({"iter": iter_num, "tokens": tokens, "eval_train_loss": losses["train"],
                   "val_loss": losses["val"], "val_bpc": val_bpc, "lr": learning_rate_at(iter_num, cfg),
                   "eval_seconds": time.perf_counter() - eval_start})


def main(argv=None):
    # -- settings, and the machine: device, precision, and under torchrun which process this is
    model_values, cfg, resumed = resolve_settings(argv)
    if not resumed and (note := preset_note(argv)):
        print(note)  # what to expect of the preset's run: how long it takes, how to shorten it
    machine = device.set_up(cfg)
    local_steps = distributed.micro_steps_per_rank(cfg.gradient_accumulation_steps, machine)
    runner.outlive_a_closed_pipe(cfg.out_dir)  # `| head -1`: training goes on when the reader goes

    # -- the data and its vocabulary
    meta, tokenizer = load_vocabulary(cfg.data_dir)
    model_values["vocab_size"] = meta["vocab_size"]
    model_config = build(GPTConfig, model_values, "invalid model setting")
    block_size = model_config.block_size
    memory.check_model_fits(model_config, cfg.batch_size, machine.device)  # not a MemoryError
    splits = {split: load_split(cfg.data_dir, split, block_size, meta["vocab_size"])
              for split in ("train", "val")}
    checkpoint.prepare_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite, machine)

    # -- model, optimizer, random streams
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = GPT(model_config, attention_pattern(model_config)).to(machine.device)  # (BigBird's links)
    model_config, model = gpt2.start_from(cfg, model, meta, resumed)  # --init_from: GPT-2 instead
    optimizer = build_optimizer(model, cfg, machine.fused, bf16=machine.dtype == "bfloat16")
    torch.manual_seed(cfg.seed + machine.rank)  # dropout differs between ranks (rank 0: as alone)
    # One data stream per micro-batch slot of a step, seeded by its slot number. Rank r owns the
    # next local_steps slots: N processes draw the batches of one with N x the accumulation steps.
    first_slot = machine.rank * local_steps
    data_generators = [torch.Generator().manual_seed(cfg.seed + first_slot + i)
                       for i in range(local_steps)]
    saver = checkpoint.Saver(cfg.out_dir, model, optimizer, model_config, cfg, meta, machine,
                             data_generators)
    iter_num = saver.restore(resumed, first_slot, cfg.max_iters) if resumed else 0
    resumed_at = iter_num if resumed else None  # no evaluation right after a resume: last.pt has it
    # checkpoints save the plain `model`; eval_model may be compiled, train_model DDP's wrapper
    example = get_batch(splits["train"], 2, block_size, torch.Generator())
    eval_model = compiling.maybe_compile(model, example, machine)
    train_model = distributed.wrap_for_ranks(eval_model, machine)
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * block_size
    print(f"model: {model.num_params():,} parameters, {model_config.n_layer} layers, {model_config.n_head}"
          f" heads, {model_config.n_embd} wide, block {block_size}, vocab {model_config.vocab_size}")
    print(machine.describe(compiled=eval_model is not model)
          + f"; {tokens_per_iter:,} tokens per iteration")
    metrics = MetricsLog(cfg.out_dir, resumed_at, machine.master, meta["vocab_size"])
    progress = Progress(cfg.max_iters, iter_num, tokens_per_iter, machine)
    run_start, autocast, stopping = time.perf_counter(), machine.autocast(), False

    # Ctrl-C or SIGTERM now only ask the loop to stop between two steps
    with StopSignal().listen() as stop:
        # ---------------------------------------------------------------------- the training loop
        while iter_num < cfg.max_iters:
            if iter_num % cfg.eval_interval == 0 and iter_num != resumed_at:
                evaluate_and_save(iter_num, model, eval_model, splits, tokenizer, cfg, machine,
                                  saver, metrics)
                progress.restart()  # evaluation time is not step time

            rng_before_batch = saver.rng_now()  # what a checkpoint of this iteration holds
            lr = learning_rate_at(iter_num, cfg)
            set_learning_rate(optimizer, lr)
            loss_sum = 0.0
            for micro_step, generator in enumerate(data_generators):
                x, y = get_batch(splits["train"], cfg.batch_size, block_size, generator)  # (B, T)
                x, y = (t.to(machine.device, non_blocking=True) for t in (x, y))
                with distributed.gradient_sync(train_model, micro_step == local_steps - 1):
                    with autocast:
                        _, loss = train_model(x, y)
                    loss = loss / local_steps  # the micro-batches' gradients add up to a mean
                    loss.backward()
                loss_sum += loss.detach()
            if not torch.isfinite(loss_sum):  # the first non-finite loss stops the run, unsaved
                raise saver.diverged(f"the loss is {float(loss_sum)}", iter_num)

            # Save here, before optimizer.step(): the weights are still those of iteration iter_num
            # and their loss is known to be finite. A resumed run draws the same batch again from
            # rng_before_batch. Under torchrun every rank stops at the same step.
            stopping = distributed.any_rank_says(stop.received, machine)
            if stopping or (cfg.save_interval and iter_num % cfg.save_interval == 0):
                saver.save(iter_num, rng_before_batch)  # (a no-op if last.pt holds this iteration)
            if stopping:
                break
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            iter_num += 1
            progress.step()
            if iter_num % cfg.log_interval == 0 or iter_num == cfg.max_iters:
                # float() waits for the device to finish the step, so only do it when logging
                metrics.write(progress.report(iter_num, float(loss_sum), lr))
        # --------------------------------------------------------------- end of the training loop
        progress.close()
        if not stopping and iter_num != resumed_at:
            evaluate_and_save(iter_num, model, eval_model, splits, tokenizer, cfg, machine, saver,
                              metrics)
    metrics.close()
    distributed.shut_down(machine)
    seconds, best = time.perf_counter() - run_start, saver.best_val_loss
    print(farewell(stopping, stop.received, iter_num, cfg.out_dir, seconds, best))
    return stop.exit_status  # 0 when done; 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP


if __name__ == "__main__":
    raise SystemExit(runner.run(main))  # the exit status says whether the run finished
