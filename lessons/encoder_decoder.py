"""
Lesson: the encoder and the encoder-decoder, built from model.py's Block -- learn to reverse (or sort) strings.

    python -m lessons.encoder_decoder                    # reverse 10 random letters; prints held-out exact match
    python -m lessons.encoder_decoder --task sort        # sort them instead

What differs from the GPT (model.py), line by line:
  * The encoder is model.Block with the mask off: `block(x, causal=False)`. Every source letter may look at
    every other one, before and after it -- the encoder reads the whole input at once (like BERT).
  * The decoder is model.Block plus ONE extra sub-layer, cross-attention: its queries come from the
    decoder's own stream x, its keys and values from the encoder's output ("memory"). That line is how the
    target side reads the source side (the original Transformer of "Attention Is All You Need").
  * The decoder's self-attention keeps its causal mask, so while writing output letter t it cannot peek at
    letters t+1.. of the answer it is being trained on.
Training is teacher forcing: the decoder reads [BOS, y0, ..., y_{L-2}] and predicts [y0, ..., y_{L-1}].
At test time it writes the answer one letter at a time, feeding each choice back in (greedy decoding).
"""

import time

import torch
import torch.nn as nn

from babygpt import threads
from babygpt.cli import MAX_SEED, MAX_STEPS, MAX_THREADS, Parser, UserError, check_range
from babygpt.optimizer import make_optimizer
from babygpt.runner import run
from model import GPT, Block, GPTConfig, explicit_attention

LETTERS = "abcdefghijklmnopqrstuvwxyz"
BOS = len(LETTERS)  # token 26: "begin the answer", the decoder's first input
VOCAB_SIZE = len(LETTERS) + 1


def make_examples(n, length, task, generator):
    """n random strings of `length` letters and their answers: src (n, L), tgt (n, L), as integers 0..25."""
    src = torch.randint(0, len(LETTERS), (n, length), generator=generator)  # (n, L)
    tgt = src.flip(1) if task == "reverse" else src.sort(dim=1).values  # (n, L)
    return src, tgt


def decoder_inputs(tgt):
    """Teacher forcing: the answer shifted right by one, starting with BOS. (n, L) -> (n, L)."""
    bos = torch.full_like(tgt[:, :1], BOS)  # (n, 1)
    return torch.cat([bos, tgt[:, :-1]], dim=1)  # (n, L)


class CrossAttention(nn.Module):
    """Attention between two sequences: queries from x (the decoder), keys and values from memory (the
    encoder's output). The same maths as model.CausalSelfAttention -- only where q, k, v come from differs,
    and there is no mask: every target position may read every source position."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.q_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # queries, from the decoder
        self.kv_proj = nn.Linear(config.n_embd, 2 * config.n_embd, bias=config.bias)  # keys and values, from the encoder
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True

    def forward(self, x, memory):
        B, T, C = x.shape
        S = memory.size(1)  # source length; it may differ from T
        hs = C // self.n_head
        q = self.q_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k, v = self.kv_proj(memory).split(C, dim=2)  # 2 x (B, S, C)
        k = k.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        y = explicit_attention(q, k, v, causal=False)  # (B, nh, T, hs): model.py's attention, no mask
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y)  # (B, T, C)


class DecoderBlock(Block):
    """model.Block (causal self-attention, then the MLP) with cross-attention in between."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)  # ln_1, attn, ln_2, mlp: exactly the GPT's
        self.ln_cross = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.cross_attn = CrossAttention(config)

    def forward(self, x, memory):
        x = x + self.attn(self.ln_1(x), causal=True)  # (B, T, C) read the answer written so far
        x = x + self.cross_attn(self.ln_cross(x), memory)  # (B, T, C) the one new line: read the source
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class EncoderDecoder(nn.Module):
    """src (B, S) -> encoder -> memory (B, S, C); tgt_in (B, T) + memory -> decoder -> logits (B, T, V)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)  # letters, shared by both sides
        self.src_position = nn.Embedding(config.block_size, config.n_embd)
        self.tgt_position = nn.Embedding(config.block_size, config.n_embd)
        self.encoder = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_memory = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.decoder = nn.ModuleList([DecoderBlock(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # tied, as in the GPT
        self.apply(lambda module: GPT._init_weights(self, module))  # the GPT's initialisation

    def encode(self, src):
        x = self.token_embedding(src) + self.src_position(torch.arange(src.size(1)))  # (B, S, C)
        for block in self.encoder:
            x = block(x, causal=False)  # (B, S, C) the encoder: the GPT's Block with the mask off
        return self.ln_memory(x)  # (B, S, C)

    def decode(self, tgt_in, memory):
        x = self.token_embedding(tgt_in) + self.tgt_position(torch.arange(tgt_in.size(1)))  # (B, T, C)
        for block in self.decoder:
            x = block(x, memory)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def forward(self, src, tgt_in, targets=None):
        logits = self.decode(tgt_in, self.encode(src))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def generate(self, src, length):
        """Greedy decoding: encode once, then write `length` tokens, each fed back in. (B, S) -> (B, length)."""
        memory = self.encode(src)  # (B, S, C)
        out = torch.full((src.size(0), 1), BOS, dtype=torch.long)  # (B, 1)
        for _ in range(length):
            logits = self.decode(out, memory)  # (B, t, V)
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)  # (B, t+1)
        return out[:, 1:]  # (B, length), without BOS


def exact_match(model, src, tgt):
    """Fraction of examples whose whole answer is right."""
    model.eval()
    guess = model.generate(src, tgt.size(1))
    model.train()
    return (guess == tgt).all(dim=1).float().mean().item()


def train(task="reverse", length=10, iters=800, batch_size=64, learning_rate=2e-3, n_layer=2, n_head=4,
          n_embd=64, eval_every=250, n_test=1000, seed=0, log=print):
    """Train on fresh random strings (seed) and score exact match on held-out strings (seed + 1000).
    Returns (model, held-out exact match, (wall seconds, CPU seconds))."""
    torch.manual_seed(seed)
    config = GPTConfig(block_size=length, vocab_size=VOCAB_SIZE, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    model = EncoderDecoder(config)
    optimizer = make_optimizer(model, learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
    train_gen = torch.Generator().manual_seed(seed)
    test_src, test_tgt = make_examples(n_test, length, task, torch.Generator().manual_seed(seed + 1000))
    start, cpu_start = time.perf_counter(), time.process_time()
    for it in range(1, iters + 1):
        lr = learning_rate * min(1.0, it / 100) * (1 - 0.9 * it / iters)  # warmup, then linear decay to lr/10
        for group in optimizer.param_groups:
            group["lr"] = lr
        src, tgt = make_examples(batch_size, length, task, train_gen)
        _, loss = model(src, decoder_inputs(tgt), tgt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if it % eval_every == 0 or it == iters:
            acc = exact_match(model, test_src[:200], test_tgt[:200])
            log(f"step {it}: loss {loss.item():.4f}, held-out exact match (200 strings) {acc:.1%}, "
                f"{time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU")
    seconds = (time.perf_counter() - start, time.process_time() - cpu_start)  # wall, CPU
    return model, exact_match(model, test_src, test_tgt), seconds


def main(argv=None):
    parser = Parser(prog="python -m lessons.encoder_decoder", description=__doc__.split("\n")[1])
    parser.add_argument("--task", default="reverse", help="reverse or sort")
    parser.add_argument("--length", type=int, default=10, help="letters per string")
    parser.add_argument("--iters", type=int, default=800, help="training steps")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.task not in ("reverse", "sort"):
        raise UserError(f"--task must be reverse or sort, got {args.task!r}")
    if args.length < 1 or args.iters < 1 or args.batch_size < 1:
        raise UserError("--length, --iters and --batch_size must be at least 1")
    check_range("length", args.length, 1, 256)
    check_range("iters", args.iters, 1, MAX_STEPS)
    check_range("batch_size", args.batch_size, 1, 65536)
    check_range("seed", args.seed, 0, MAX_SEED)
    check_range("threads", args.threads, 1, MAX_THREADS)
    threads.use_threads(args.threads)
    model, acc, seconds = train(args.task, args.length, args.iters, args.batch_size, seed=args.seed)
    src, tgt = make_examples(3, args.length, args.task, torch.Generator().manual_seed(args.seed + 2000))
    for s, g in zip(src, model.eval().generate(src, args.length)):
        # an undertrained decoder may emit BOS (not a letter): shown as ^
        print(f"  {''.join(LETTERS[i] for i in s)} -> {''.join((LETTERS + '^')[i] for i in g)}")
    print(f"{args.task}, {args.length} letters: held-out exact match {acc:.1%} on 1000 strings "
          f"after {args.iters} steps ({seconds[0]:.0f} s wall, {seconds[1]:.0f} s CPU, {torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    run(main)
