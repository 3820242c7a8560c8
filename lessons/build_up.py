"""
Lesson: build the GPT up from a bigram table, one idea per step, and measure what each idea buys.

    python -m lessons.build_up                      # every step, the same budget, the table: 9-15 min on 2 cores
    python -m lessons.build_up --only 5             # only step 5 (5a and 5b: a stack without, then with residuals)
    python -m lessons.build_up --seed 1337 1338 --classic --plot   # two seeds, train.py as a check, the figure

The lecture builds the model in this order; each step adds one idea to the one before:

    1   bigram         the next character depends only on this one: a (V, V) table of next-character logits
    2   + attention    the lecture's GPT frame -- token + position embeddings, one block, a final LayerNorm, a
                       linear LM head -- whose block is one causal self-attention head, 128 wide: x = x + attn(x)
    3   4 heads        the same width split into 4 heads of 32: four channels of talk (same parameters)
    4   + MLP          after talking, each position thinks on its own: x = x + mlp(x)
    5a  4 blocks       4 such blocks in series, with the residual pathways taken out: x = attn(x); x = mlp(x)
    5b  + residuals    the same 4 blocks with them: x = x + attn(x); x = x + mlp(x)
    6   + LayerNorm    pre-norm: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))
    7   + tied head    the LM head shares the token embedding's matrix: now exactly model.GPT, classic shape
    8   + dropout      the same with dropout (default 0.1): model.GPT as train.py builds it with --dropout 0.1

Why these choices (found while writing the lesson, at the default budget; StepGPT's switches let you retry each):
  * From step 2 on, each sub-layer's output is *added* to the stream, so a step can still do whatever the one
    before it did (step 2 holds the bigram's path: embedding -> head). With the stream *replaced* instead, as in
    the lecture's first single-head model, one head at GPT-2's small initialisation stays worse than the
    bigram for the whole budget. Step 5a takes the pathways away where they matter most: in depth.
  * The frame's final LayerNorm is there from step 2 (the lecture's frame has it); step 6 adds the two
    LayerNorms inside each block. Without it, logits read straight off a stream of 0.02-sized numbers grow
    slowly, and the one-head and four-head steps stay worse than the bigram within the budget.
  * The LM head is tied to the embedding only at step 7. Tied, the direct path's logit for "b after a" is
    e_a . e_b, the same as for "a after b"; before the MLP only attention can break that symmetry, and tied,
    steps 2 and 3 stay worse than the bigram within the budget.

Steps 2-8 are model.GPT with its blocks switched (StepGPT below: the embeddings, the LM head, GPT-2
initialisation and forward() all come from model.py); steps 7 and 8 are exactly model.GPT, and the tests check
that with copied weights. Every step trains with the classic recipe read from config/classic.toml (4 layers,
4 heads, 128 wide, block 64; batch 12; AdamW at 1e-3 with 100 warmup steps and a cosine decay to 1e-4,
weight decay 0.1, gradients clipped at 1) for the same number of steps, from the same seed, on the same
batches, using train.py's own get_batch and learning_rate_at. --classic also runs train.py itself, with the
same steps and seed, as a check of each step that is model.GPT: `train.py --preset classic` next to step 7, and
`train.py --preset classic --dropout 0.1` next to step 8 (the tests check that from the same initial weights
both end bit-identical). Losses are measured in eval mode: val on every character of val.bin, train on as many
random train windows (the same ones for every step).
"""

import contextlib
import io
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

import train
from babygpt import checkpoint
from babygpt.cli import (MAX_SEED, MAX_STEPS, MAX_THREADS, Parser, UserError, check_output_file,
                         check_range, load_preset)
from babygpt.optimizer import make_optimizer
from babygpt.runner import run
from babygpt.threads import use_threads
from babygpt.tokenizer import read_meta
from model import GPT, Block, GPTConfig

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "build_up.png"


# ----------------------------------------------------------------------------------------------------------------
# the models of the progression


class Bigram(nn.Module):
    """Step 1. The next character depends only on the current one, so the whole model is a (V, V) table:
    row a holds the logits of every character that may follow a.

    The table is stored as a product, token embedding (V, C) @ LM head (C, V), and C >= V, so it can still
    be any (V, V) table. Why not a raw nn.Embedding(V, V)? AdamW moves each entry by at most about the learning
    rate per step: over the 1000 steps of the default schedule (1e-3, warmup, cosine to 1e-4) that adds up to
    about 0.55, while the logits need a spread of ~10. In the product every logit is a sum of C terms that all
    grow at once, so it learns the table within the budget every other step gets.
    The head is not tied to the embedding: a tied product E @ E^T would be symmetric, and "u after q" is not
    "q after u".
    The embedding keeps torch's own initialisation, N(0, 1) (the lecture's bigram table is an nn.Embedding left
    at it); only the head gets GPT-2's 0.02, so the table starts near zero, an almost uniform guess. Why not
    0.02 for both, like the later steps? A step of AdamW moves each head entry by about the learning rate, so a
    logit moves by about that times the summed size of its row's C embedding entries: with rows of 0.02 the
    table grows slowly and is still short of the floor when the schedule ends (found while writing the lesson,
    seeds 1337-1339: val 2.53 with 0.02 rows, 2.51 with N(0, 1) rows, against the counted floor 2.48, which
    the same model does reach with 4000 steps from 1e-2 down to 1e-3)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)  # (V, C), torch's N(0, 1) init
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # (C -> V)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)  # GPT-2's initialisation: logits start near 0

    def table(self):
        """The (V, V) table of next-character logits the model holds."""
        return self.token_embedding.weight @ self.lm_head.weight.T  # (V, V)

    def forward(self, idx, targets=None):
        logits = self.lm_head(self.token_embedding(idx))  # (B, T, V): row idx[b, t] of the table
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class StepBlock(Block):
    """model.Block with the switches of the progression. mlp=False: attention only. residual=False: each
    sub-layer's output *replaces* the stream instead of being added to it. layernorm=False: no LayerNorm in
    front of the sub-layers. With all three on it is model.Block (tests/test_build_up.py checks)."""

    def __init__(self, config: GPTConfig, mlp=True, residual=True, layernorm=True):
        super().__init__(config)  # ln_1, attn, ln_2, mlp: model.py's own pieces
        self.residual = residual
        if not layernorm:
            self.ln_1 = self.ln_2 = nn.Identity()
        if not mlp:
            self.mlp, self.ln_2 = None, nn.Identity()

    def forward(self, x, causal=True, rope=None):
        x = self.join(x, self.attn(self.ln_1(x), causal=causal, rope=rope))  # (B, T, C)
        if self.mlp is not None:
            x = self.join(x, self.mlp(self.ln_2(x)))  # (B, T, C)
        return x

    def join(self, x, update):
        """The residual pathway: add the update to the stream, or (without one) let it replace the stream."""
        return x + update if self.residual else update


class StepGPT(GPT):
    """model.GPT with StepBlocks. The frame is the lecture's GPT and stays the same from step 2 on: token and
    position embeddings added, a series of blocks, a final LayerNorm, a linear LM head (tied to the token
    embedding only from step 7, config.tie_head). Initialisation and forward() are model.GPT's."""

    def __init__(self, config: GPTConfig, mlp=True, residual=True, layernorm=True):
        super().__init__(config)
        self.blocks = nn.ModuleList([StepBlock(config, mlp, residual, layernorm) for _ in range(config.n_layer)])
        self.apply(self._init_weights)  # initialise the new blocks the way GPT does


UNTIED = dict(tie_head=False)
# (id, what the step adds, how it changes the classic GPTConfig, how the model is built from that config)
STEPS = [
    ("1", "bigram: a (V, V) table of logits", {}, lambda c: Bigram(c)),
    ("2", "+ positions, one attention head", dict(n_layer=1, n_head=1, **UNTIED), lambda c: StepGPT(c, mlp=False, layernorm=False)),
    ("3", "4 heads (same width)", dict(n_layer=1, **UNTIED), lambda c: StepGPT(c, mlp=False, layernorm=False)),
    ("4", "+ MLP", dict(n_layer=1, **UNTIED), lambda c: StepGPT(c, layernorm=False)),
    ("5a", "4 blocks, residuals removed", UNTIED, lambda c: StepGPT(c, residual=False, layernorm=False)),
    ("5b", "4 blocks with residuals", UNTIED, lambda c: StepGPT(c, layernorm=False)),
    ("6", "+ LayerNorm (pre-norm)", UNTIED, lambda c: StepGPT(c)),
    ("7", "+ tied LM head: the classic GPT", {}, lambda c: StepGPT(c)),
    ("8", "+ dropout", {}, lambda c: StepGPT(c)),  # the only step trained with dropout
]
STEP_IDS = [step[0] for step in STEPS]


def step_config(step_id, classic: GPTConfig, dropout):
    """The GPTConfig of one step: the classic one with the step's changes; only the last step has dropout."""
    changes = next(changes for sid, _, changes, _ in STEPS if sid == step_id)
    return GPTConfig(**{**vars(classic), **changes, "dropout": dropout if step_id == STEP_IDS[-1] else 0.0})


def build_step(step_id, classic: GPTConfig, dropout=0.1):
    """The model of step `step_id`, freshly initialised from torch's global seed."""
    build = next(build for sid, _, _, build in STEPS if sid == step_id)
    return build(step_config(step_id, classic, dropout))


# ----------------------------------------------------------------------------------------------------------------
# one recipe for every step, and losses on whole splits


def recipe(max_iters, seed, **overrides):
    """(GPTConfig fields, train.TrainConfig) of config/classic.toml, with this budget and seed."""
    values = {**train.DEFAULTS, **load_preset("classic", train.DEFAULTS), **overrides, "max_iters": max_iters, "seed": seed}
    model_values = {name: values[name] for name in train.MODEL_FLAGS}
    return model_values, train.TrainConfig(**{name: values[name] for name in train.TRAIN_FLAGS})


def train_model(model, train_data, cfg: train.TrainConfig, block_size):
    """train.py's loop without the bookkeeping: for each step, the learning rate of the schedule, a batch from
    the seeded stream (the same batches for every model), loss, backward, clip, AdamW. Returns the losses."""
    optimizer = make_optimizer(model, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2), fused=True)
    torch.manual_seed(cfg.seed)  # dropout's stream, seeded as train.py seeds it once the model is built
    generator = torch.Generator().manual_seed(cfg.seed)  # train.py's first data stream
    model.train()
    losses = []
    for it in range(cfg.max_iters):
        for group in optimizer.param_groups:
            group["lr"] = train.learning_rate_at(it, cfg)
        x, y = train.get_batch(train_data, cfg.batch_size, block_size, generator)  # (B, T) each
        _, loss = model(x, y)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def whole_split(data, block_size):
    """Every token of `data` as a target exactly once: consecutive windows of block_size, the last one shorter.
    Returns [(x, y)] with x, y (n, T). Each character is predicted from the ones before it in its window (0 to
    block_size - 1 of them): on average the same context train.py's random evaluation windows give."""
    tokens = torch.from_numpy(np.asarray(data, dtype=np.int64))  # (N,)
    full = (len(tokens) - 1) // block_size
    x = tokens[: full * block_size].view(full, block_size)  # (n, T)
    y = tokens[1 : full * block_size + 1].view(full, block_size)  # (n, T): shifted by one
    parts = [(x, y)]
    if len(tokens) - 1 > full * block_size:  # the tail
        parts.append((tokens[full * block_size : -1][None], tokens[full * block_size + 1 :][None]))  # (1, t) each
    return parts


def random_windows(data, count, block_size, seed):
    """`count` windows at random places of `data` (seeded): [(x, y)] with x, y (count, T)."""
    return [train.get_batch(data, count, block_size, torch.Generator().manual_seed(seed))]


@torch.no_grad()
def mean_loss(model, parts, batch=256):
    """Mean cross-entropy per predicted token over all windows in `parts`, in eval mode (dropout off)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in parts:
        for i in range(0, len(x), batch):
            logits, _ = model(x[i : i + batch])  # (b, T, V)
            total += F.cross_entropy(logits.flatten(0, 1), y[i : i + batch].flatten(), reduction="sum").item()
            count += y[i : i + batch].numel()
    model.train(was_training)
    return total / count


def bigram_floor(train_data, val_data, vocab_size):
    """The best a bigram can do on val, about: count every pair (a, b) in train (plus one, so no pair has
    probability 0), turn the counts into probabilities, score val with them."""
    tokens, val = np.asarray(train_data, dtype=np.int64), np.asarray(val_data, dtype=np.int64)
    counts = np.ones((vocab_size, vocab_size))  # add-one smoothing
    np.add.at(counts, (tokens[:-1], tokens[1:]), 1)
    probs = counts / counts.sum(axis=1, keepdims=True)  # (V, V): row a, P(next = b | a)
    return float(-np.log(probs[val[:-1], val[1:]]).mean())


def unigram_loss(train_data, val_data, vocab_size):
    """What knowing only how common each character is gets on val (no context at all), counted the same way."""
    counts = np.bincount(np.asarray(train_data, dtype=np.int64), minlength=vocab_size) + 1.0
    return float(-np.log(counts / counts.sum())[np.asarray(val_data[1:], dtype=np.int64)].mean())


def run_step(step_id, classic: GPTConfig, cfg: train.TrainConfig, train_data, val_parts, train_parts, dropout):
    """Build, train and measure one step. Returns a dict: params, train_loss, val_loss, seconds, losses."""
    torch.manual_seed(cfg.seed)  # the same initialisation stream for every step
    model = build_step(step_id, classic, dropout)
    start = time.perf_counter()
    losses = train_model(model, train_data, cfg, classic.block_size)
    seconds = time.perf_counter() - start
    return {"params": sum(p.numel() for p in model.parameters()), "train_loss": mean_loss(model, train_parts),
            "val_loss": mean_loss(model, val_parts), "seconds": seconds, "losses": losses}


def train_py_command(dropout):
    """The train.py command whose model is step 7's (no dropout) or step 8's (with its dropout)."""
    return "train.py --preset classic" + (f" --dropout {dropout:g}" if dropout else "")


def train_py_run(data_dir, cfg: train.TrainConfig, threads, val_parts, train_parts, dropout):
    """train_py_command(dropout) run with the same steps and seed, its final model scored like the steps. In
    float32, like the lesson (train.py's auto is bfloat16 autocast on CPUs with bf16 instructions), so the
    two differ only in the random draw of the initial weights. Returns the same dict as run_step (no losses)."""
    with tempfile.TemporaryDirectory() as out_dir:
        flags = ["--preset", "classic", "--dropout", str(dropout), "--dtype", "float32", "--data_dir", data_dir,
                 "--out_dir", out_dir, "--seed", str(cfg.seed), "--max_iters", str(cfg.max_iters),
                 "--eval_interval", str(cfg.max_iters), "--eval_iters", "1", "--log_interval", str(cfg.max_iters),
                 "--save_interval", "0", "--sample_chars", "0"]
        if threads:
            flags += ["--threads", str(threads)]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines are not part of the table
            train.main(flags)
        seconds = time.perf_counter() - start
        model = checkpoint.load_model(checkpoint.load(Path(out_dir) / "last.pt"))  # the model after the last step
    return {"params": model.num_params(), "train_loss": mean_loss(model, train_parts),
            "val_loss": mean_loss(model, val_parts), "seconds": seconds, "command": train_py_command(dropout)}


# ----------------------------------------------------------------------------------------------------------------
# the table and the figure


def spread(values, sign=""):
    """'2.081' for one value, '2.081 (2.075 to 2.087)' (mean, then min to max) for several. sign="+": '+0.012'."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:{sign}.3f}"
    return f"{mean:{sign}.3f} ({min(values):{sign}.3f} to {max(values):{sign}.3f})"


# The check runs (--classic): train.py itself, building and training the model of a step. The row of each
# sits right after its step in the table, and its "vs previous" is the change from that step.
TWINS = {"7": "train.py", STEP_IDS[-1]: "train.py + dropout"}  # step -> the row id of its train.py run


def describe(row_id, result):
    """What a row of the table adds (for a train.py row: which command, checking which step)."""
    for step_id, twin in TWINS.items():
        if row_id == twin:
            return f"`{result['command']}` itself: step {step_id}'s model, same steps and seed (vs step {step_id})"
    return next(what for sid, what, _, _ in STEPS if sid == row_id)


def table(step_ids, results):
    """results[seed][row_id] -> a markdown table. 'vs previous' is the change in val loss from the step before,
    seed by seed (the same seed means the same batches), so its range shows whether an idea's effect is real.
    A train.py row, if there is one, comes right after its step and is compared with it."""
    seeds = list(results)
    row_ids = []
    for sid in step_ids:
        row_ids += [sid] + ([TWINS[sid]] if TWINS.get(sid) in results[seeds[0]] else [])
    rows = ["| step | what was added | parameters | train loss | val loss | vs previous | seconds |",
            "|---|---|---|---|---|---|---|"]
    previous = None  # the last step row (a train.py row is never "previous")
    for rid in row_ids:
        runs = [results[seed][rid] for seed in seeds]
        change = "" if previous is None else \
            spread([results[s][rid]["val_loss"] - results[s][previous]["val_loss"] for s in seeds], "+")
        rows.append(f"| {rid} | {describe(rid, runs[0])} | {runs[0]['params']:,} | "
                    f"{spread([r['train_loss'] for r in runs])} | {spread([r['val_loss'] for r in runs])} | {change} | "
                    f"{sum(r['seconds'] for r in runs) / len(runs):.0f} |")
        previous = previous if rid in TWINS.values() else rid
    return "\n".join(rows)


def draw(path, step_ids, results, floors, vocab_size, steps):
    """Val loss per step, one dot per seed (train.py's runs as stars beside steps 7 and 8), with ln V (a uniform
    guess), the character-frequency loss and the bigram floor marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    xs = list(range(len(step_ids)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (seed, by_row), colour in zip(results.items(), colours):
        ax.plot(xs, [by_row[r]["val_loss"] for r in step_ids], "o", color=colour, alpha=0.6, label=f"seed {seed}")
        for step_id, twin in TWINS.items():
            if twin in by_row:
                ax.plot([step_ids.index(step_id) + 0.15], [by_row[twin]["val_loss"]], "*", color=colour, ms=9)
    if any(twin in next(iter(results.values())) for twin in TWINS.values()):
        ax.plot([], [], "*", color="gray", ms=9, label="train.py, the same model (same seed)")
    main_path = [(x, r) for x, r in zip(xs, step_ids) if r != "5a"]  # 5a is a detour: the line skips it
    means = [sum(results[seed][r]["val_loss"] for seed in results) / len(results) for _, r in main_path]
    ax.plot([x for x, _ in main_path], means, "-", color="gray", lw=1, zorder=0)
    lines = [(math.log(vocab_size), f"ln {vocab_size} = {math.log(vocab_size):.2f}: a uniform guess", "--", "tab:red"),
             (floors["unigram"], f"{floors['unigram']:.2f}: character frequencies only (counted)", "-.", "tab:purple"),
             (floors["bigram"], f"{floors['bigram']:.2f}: the bigram floor (counted)", ":", "tab:green")]
    for y, text, style, colour in lines:
        ax.axhline(y, ls=style, color=colour, lw=1)
        ax.text(xs[-1] + 0.4, y + 0.03, text, ha="right", va="bottom", fontsize=7, color=colour)
    short = {"1": "bigram", "2": "+ one head", "3": "4 heads", "4": "+ MLP", "5a": "4 blocks,\nno residuals",
             "5b": "4 blocks,\nresiduals", "6": "+ LayerNorm", "7": "+ tied head", "8": "+ dropout"}
    ax.set_xticks(xs, [f"{r}\n{short[r]}" for r in step_ids], fontsize=6.5)
    ax.set_xlim(-0.5, xs[-1] + 0.5)
    ax.set_ylabel("val loss (nats/char, whole val split)")
    ax.set_title(f"Building up the GPT: {steps} steps of the classic recipe each, the same batches", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_only(text):
    """'1,5,7' -> ['1', '5a', '5b', '7'] in the progression's order ('5' means both halves of step 5)."""
    wanted = set()
    for part in (p.strip() for p in text.split(",")):
        matches = [sid for sid in STEP_IDS if sid == part or sid.rstrip("ab") == part]
        if not matches:
            raise UserError(f"--only: unknown step {part!r}; steps are {', '.join(STEP_IDS)} (5 means 5a and 5b)")
        wanted.update(matches)
    return [sid for sid in STEP_IDS if sid in wanted]


def report(seed, name, result):
    print(f"seed {seed} {name}: {result['params']:,} parameters, train {result['train_loss']:.4f}, "
          f"val {result['val_loss']:.4f}, {result['seconds']:.1f} s", flush=True)


def main(argv=None):
    parser = Parser(prog="python -m lessons.build_up", description=__doc__.split("\n")[1] + " One seed takes 9 to "
                    "15 minutes on a 2-core CPU (docs/walkthrough.md, 'Build it up').")
    parser.add_argument("--steps", type=int, default=1000, help="training steps for every model (default 1000)")
    parser.add_argument("--only", help="comma-separated steps to run, e.g. 1,5 (default: all)")
    parser.add_argument("--seed", type=int, nargs="+", default=[1337], help="one or more seeds (default 1337)")
    parser.add_argument("--dropout", type=float, default=0.1, help="the last step's dropout (default 0.1)")
    parser.add_argument("--classic", action="store_true",
                        help="also run train.py with the model of step 7 (--preset classic) and of step 8 (and --dropout), "
                             "same steps and seed, scored the same way")
    parser.add_argument("--plot", action="store_true", help="draw the val losses into --figure")
    parser.add_argument("--figure", default=str(FIGURE), help="where --plot saves (default docs/figures/build_up.png)")
    parser.add_argument("--data_dir", default="data/shakespeare_char", help="prepared by prepare.py")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: as fast for these small models, kinder to a shared machine; 0: torch's default)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.threads < 0:
        raise UserError(f"--threads must not be negative, got {args.threads}")
    check_range("steps", args.steps, 1, MAX_STEPS)
    check_range("threads", args.threads, 0, MAX_THREADS)
    for seed in args.seed:
        check_range("seed", seed, 0, MAX_SEED)
    if args.plot:
        check_output_file("figure", args.figure)
    if len(set(args.seed)) < len(args.seed):
        raise UserError(f"--seed: each seed once, got {' '.join(map(str, args.seed))}")
    step_ids = parse_only(args.only) if args.only else STEP_IDS
    if args.classic and not any(sid in TWINS for sid in step_ids):
        raise UserError(f"--classic checks steps {' and '.join(TWINS)} against train.py; --only has neither")
    if args.threads:
        use_threads(args.threads)

    try:
        meta = read_meta(args.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    # torch sets up its fused AdamW kernel at the first step (seconds): do it now, so no step's time includes it
    warm = nn.Linear(1, 1)
    warm(torch.ones(1, 1)).sum().backward()
    make_optimizer(warm, 1e-3, 0.0, (0.9, 0.99), fused=True).step()
    results, command_start = {}, time.perf_counter()
    for seed in args.seed:
        model_values, cfg = recipe(args.steps, seed)
        classic = GPTConfig(**{**model_values, "vocab_size": meta["vocab_size"]})
        train_data = train.load_split(args.data_dir, "train", classic.block_size)
        val_data = train.load_split(args.data_dir, "val", classic.block_size)
        val_parts = whole_split(val_data, classic.block_size)
        train_parts = random_windows(train_data, len(val_parts[0][0]), classic.block_size, seed + 1)
        if seed == args.seed[0]:
            floors = {"unigram": unigram_loss(train_data, val_data, meta["vocab_size"]),
                      "bigram": bigram_floor(train_data, val_data, meta["vocab_size"])}
            print(f"{args.steps} steps of batch {cfg.batch_size} x block {classic.block_size} for every model; "
                  f"val: all {len(val_data) - 1:,} next-character predictions of {args.data_dir}/val.bin; "
                  f"{torch.get_num_threads()} torch thread(s)")
            print(f"for reference, on val: a uniform guess ln {meta['vocab_size']} = {math.log(meta['vocab_size']):.4f}; "
                  f"character frequencies only {floors['unigram']:.4f}; the bigram floor {floors['bigram']:.4f} "
                  f"(both counted from train.bin, add-one)")
        results[seed] = {}
        for sid in step_ids:
            results[seed][sid] = run_step(sid, classic, cfg, train_data, val_parts, train_parts, args.dropout)
            report(seed, f"step {sid}", results[seed][sid])
            if args.classic and sid in TWINS:  # its check: train.py with the same model, right after it
                dropout = step_config(sid, classic, args.dropout).dropout
                twin = results[seed][TWINS[sid]] = train_py_run(args.data_dir, cfg, args.threads, val_parts,
                                                                train_parts, dropout)
                report(seed, twin["command"], twin)
    print(table(step_ids, results))
    if args.plot:
        draw(Path(args.figure), step_ids, results, floors, meta["vocab_size"], args.steps)
        print(f"figure: {args.figure}")
    print(f"the whole command: {time.perf_counter() - command_start:.0f} s")


if __name__ == "__main__":
    run(main)
