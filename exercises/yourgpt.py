"""
`python -m exercises train`: your pieces put together as a GPT, trained next to babygpt's own.

Both sides start from the same seed, so from the very same initial weights (a model.GPT: its parameters are
the numbers being learned), and draw their batches from generators seeded the same way. babygpt's side runs
as train.py does: model.GPT's forward, train.get_batch, train.learning_rate_at, torch.optim.AdamW (weight decay
on the matrices only) and the same gradient clipping. Your side runs the same parameters through your code:
get_batch, multi_head_attention inside block, lm_loss, learning_rate_at and adamw_update, and writes its sample
with your generate and decode. If every piece is right the two runs see the same numbers, and their
validation losses agree to within float rounding.

Your side runs in a child process (exercises/sandbox.py), as the checks do: each call of one of your pieces has
PIECE_LIMIT seconds before the child is killed, and nothing your code does there can change babygpt's side.
"""

import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from babygpt import locks
from babygpt.cli import UserError
from exercises.checker import check, exercise_path, learner_problem, load_module, shown_path
from exercises.sandbox import run_in_child

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data" / "shakespeare_char"
NEEDED = ["vocabulary", "get_batch", "multi_head", "block", "lm_loss", "lr_schedule", "adamw", "generate"]
# a small model and recipe that learns visibly within a minute on one CPU core (both sides together)
MODEL = dict(block_size=32, n_layer=2, n_head=4, n_embd=64, dropout=0.0)
BATCH_SIZE, LEARNING_RATE, MIN_LR, WARMUP_ITERS = 16, 2e-3, 2e-4, 30
BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = (0.9, 0.99), 1e-8, 0.1, 1.0
ITERS, EVAL_ITERS, SEED, SAMPLE_CHARS = 1500, 20, 1337, 200
PIECE_LIMIT = 60.0  # seconds for one call of one of your pieces (each takes milliseconds; generous on a busy CPU)
FUNCTIONS = {"vocabulary": ["build_vocabulary", "encode", "decode"], "get_batch": ["get_batch"],
             "multi_head": ["multi_head_attention"], "block": ["block"], "lm_loss": ["lm_loss"],
             "lr_schedule": ["learning_rate_at"], "adamw": ["adamw_update"], "generate": ["generate"]}


def load_pieces(folder, announce):
    """The learner's functions, by exercise name (they all passed their checks), each call announced first (in
    the child: the parent's time limit starts again, and it knows which piece a killed child was in)."""
    def traced(name, function):
        def call(*args, **kwargs):
            announce(["piece", name])
            return function(*args, **kwargs)
        return call
    pieces = {}
    for exercise in NEEDED:
        module = load_module(exercise_path(exercise, folder))
        pieces[exercise] = SimpleNamespace(**{name: traced(name, getattr(module, name))
                                              for name in FUNCTIONS[exercise]})
    return pieces


def your_logits(pieces, model, idx):
    """model.GPT's forward, with your attention, block and (below) loss in place of model.py's."""
    B, T = idx.shape
    x = model.token_embedding(idx) + model.position_embedding(torch.arange(T))  # (B, T, C)
    for layer in model.blocks:
        def attention(h, layer=layer):
            return pieces["multi_head"].multi_head_attention(h, layer.attn.c_attn, layer.attn.c_proj,
                                                             model.config.n_head)
        x = pieces["block"].block(x, layer.ln_1, attention, layer.ln_2, layer.mlp)  # (B, T, C)
    return model.lm_head(model.ln_f(x))  # (B, T, V)


class Side:
    """One of the two runs: how it draws batches, computes the loss, sets the rate and steps the optimizer."""

    def __init__(self, name, pieces, vocab_size, say=print):
        import train
        from model import GPT, GPTConfig
        self.name, self.pieces, self.train, self.say = name, pieces, train, say
        torch.manual_seed(SEED)
        self.model = GPT(GPTConfig(vocab_size=vocab_size, **MODEL))
        self.params = list(self.model.parameters())
        self.schedule = train.TrainConfig(learning_rate=LEARNING_RATE, min_lr=MIN_LR, warmup_iters=WARMUP_ITERS,
                                          max_iters=ITERS)
        if pieces is None:
            groups = [{"params": [p for p in self.params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
                      {"params": [p for p in self.params if p.dim() < 2], "weight_decay": 0.0}]
            self.optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=BETAS, eps=EPS)
        else:
            self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]

    def batch(self, data, generator):
        if self.pieces is None:
            return self.train.get_batch(data, BATCH_SIZE, MODEL["block_size"], generator)
        return self.pieces["get_batch"].get_batch(data, BATCH_SIZE, MODEL["block_size"], generator)

    def loss(self, x, y):
        if self.pieces is None:
            return self.model(x, y)[1]
        return self.pieces["lm_loss"].lm_loss(your_logits(self.pieces, self.model, x), y)

    def learning_rate(self, it, iters):
        if self.pieces is None:
            self.schedule.max_iters = iters
            return self.train.learning_rate_at(it, self.schedule)
        return self.pieces["lr_schedule"].learning_rate_at(it, LEARNING_RATE, MIN_LR, WARMUP_ITERS, iters)

    def step(self, it, lr):
        if self.pieces is None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            return
        update = self.pieces["adamw"].adamw_update
        with torch.no_grad():
            for i, p in enumerate(self.params):
                decay = WEIGHT_DECAY if p.dim() >= 2 else 0.0  # matrices only, as babygpt's optimizer
                new, m, v = update(p.detach(), p.grad, *self.moments[i], it + 1, lr, *BETAS, EPS, decay)
                p.copy_(new)
                self.moments[i] = (m, v)
                p.grad = None

    def train_on(self, data, iters):
        generator = torch.Generator().manual_seed(SEED)
        start = time.perf_counter()
        for it in range(iters):
            if self.pieces is not None:
                self.say(["step", it + 1])
            lr = self.learning_rate(it, iters)
            x, y = self.batch(data, generator)
            loss = self.loss(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
            self.step(it, lr)
            if (it + 1) % max(1, iters // 5) == 0 or it + 1 == iters:
                self.say(f"  {self.name}: step {it + 1}/{iters}, train loss {loss.item():.4f} "
                         f"({time.perf_counter() - start:.0f} s)")

    @torch.no_grad()
    def val_loss(self, data):
        generator = torch.Generator().manual_seed(SEED + 1)  # the same val batches for both sides
        return sum(self.loss(*self.batch(data, generator)).item() for _ in range(EVAL_ITERS)) / EVAL_ITERS


def read_data(data_dir):
    """meta.json and the two splits, with train.py's own checks (one line for a missing, broken or foreign
    folder, naming the folder to prepare)."""
    import train
    meta, _ = train.load_vocabulary(data_dir)
    locks.unlock_folder(data_dir)  # read once, here: the lock train.py holds for a whole run is not needed
    if meta.get("tokenizer", "char") != "char":
        raise UserError(f"{data_dir} holds {meta['tokenizer']} tokens; the exercises train on characters: "
                        f"python prepare.py --out_dir {data_dir} (the default tokenizer is char)")
    splits = {s: train.load_split(data_dir, s, MODEL["block_size"], meta["vocab_size"]) for s in ("train", "val")}
    return meta, splits


def train_both(folder, iters=None, data_dir=None, piece_limit=PIECE_LIMIT):
    """The command: check the pieces, train both sides, print their val losses and your sample."""
    iters = ITERS if iters is None else iters
    if iters < 1:
        raise UserError(f"--iters must be at least 1 (optimizer steps), got {iters}")
    data_dir = Path(data_dir) if data_dir is not None else Path(shown_path(DATA_DIR))
    torch.set_num_threads(1)  # both sides alike, and steady on a busy machine
    meta, splits = read_data(data_dir)  # first: a missing data set is found before the checks' second or two
    results = [check(name, folder) for name in NEEDED]
    unfinished = [f"{r.name} ({r.state})" for r in results if r.state != "done"]
    if unfinished:
        print(f"train builds a GPT from your pieces; finish these first: {', '.join(unfinished)} "
              f"(python -m exercises check NAME)", file=sys.stderr)
        return 1
    vocab_size = meta["vocab_size"]
    print(f"a GPT of {MODEL['n_layer']} layers, {MODEL['n_head']} heads, {MODEL['n_embd']} wide, block "
          f"{MODEL['block_size']}; {iters} steps of batch {BATCH_SIZE} on Tiny Shakespeare, seed {SEED}, once "
          f"with babygpt's code and once with yours (files in {shown_path(folder)}/)", flush=True)
    babygpt = Side("babygpt's model.GPT", None, vocab_size)
    babygpt.train_on(splits["train"], iters)
    babygpt_loss = babygpt.val_loss(splits["val"])
    where = {"step": None, "piece": None}

    def heard(message):  # from the child: a line to print, or where it is
        if isinstance(message, str):
            print(message, flush=True)
        else:
            where[message[0]] = message[1]

    def job(channel):
        pieces = load_pieces(folder, channel.send)
        channel.loaded()
        yours = Side("your GPT", pieces, vocab_size, say=channel.send)
        yours.train_on(splits["train"], iters)
        return {"loss": yours.val_loss(splits["val"]), "text": your_sample(pieces, yours.model, meta)}
    paths = [exercise_path(name, folder) for name in NEEDED]
    outcome = run_in_child(job, paths, piece_limit, on_message=heard)
    if outcome.printed:
        print("your code printed (shown apart):\n" + "\n".join(f"  | {line}" for line in
                                                           outcome.printed.splitlines()[:20]))
    value = outcome.value if outcome.kind == "value" else None
    if not (isinstance(value, dict) and isinstance(value.get("loss"), float)):
        step = f" at training step {where['step']}" if where["step"] else ""
        piece = f"your {where['piece']}" if where["piece"] else "your code"
        if outcome.kind == "timeout":
            at = f" (it was at {outcome.where})" if outcome.where else ""
            problem = (f"{piece} did not return within {piece_limit:g} s{step} and was stopped{at}: is there a "
                       f"loop that never ends?")
        elif outcome.kind == "value":
            problem = f"your GPT's val loss is {value!r:.60}, not a number"
        else:
            problem = f"{learner_problem(outcome, piece, paths[0], piece_limit)}{step}"
        print(problem, file=sys.stderr)
        return 1
    losses = {babygpt.name: babygpt_loss, "your GPT": value["loss"]}
    gap = abs(losses["your GPT"] - losses[babygpt.name])
    print(f"\nval loss ({EVAL_ITERS} batches, the same for both; ln({vocab_size}) = {math.log(vocab_size):.2f} at "
          f"the start):")
    for name, loss in losses.items():
        print(f"  {name:<20} {loss:.4f}")
    verdict = "the same model: your pieces are babygpt's" if gap <= 0.01 else \
        "they differ: a piece passes its checks but not the whole run; compare your files with exercises/solutions/"
    print(f"  difference           {gap:.4f}  ({verdict})")
    print(f"\nyour GPT writes ({SAMPLE_CHARS} characters, your generate and decode):")
    print(value["text"] if isinstance(value["text"], str) else f"(your decode returned {value['text']!r:.60})")
    return 0 if gap <= 0.01 else 1


def your_sample(pieces, model, meta):
    stoi, itos = pieces["vocabulary"].build_vocabulary("".join(meta["vocab"]))
    start = torch.tensor([pieces["vocabulary"].encode("\n", stoi)], dtype=torch.long)  # (1, 1)

    def forward(idx, targets=None):
        return your_logits(pieces, model, idx), None
    with torch.no_grad():
        out = pieces["generate"].generate(forward, start, SAMPLE_CHARS, MODEL["block_size"], temperature=1.0,
                                          generator=torch.Generator().manual_seed(SEED))
    return pieces["vocabulary"].decode(out[0, 1:].tolist(), itos)
