"""
Memory beyond the window: an ∞-former lesson (Martins et al., 2021, "∞-former: Infinite Memory Transformer").

A GPT sees block_size tokens and nothing else: whatever fell out of the window is gone. The ∞-former keeps
the hidden states that left the window in a *continuous* long-term memory of fixed size:

    L past vectors x_1..x_L (L grows forever)  --ridge regression-->  N coefficients B (N, C), N fixed
    the memory is then a function of t in [0, 1]:   x(t) = B^T psi(t),   psi = N radial basis functions
    a query reads it with a continuous softmax: a Gaussian density p(t) = N(t; mu, sigma^2) on [0, 1] whose
    mean and width the query predicts, and the answer is E_p[v(t)] = (E_p[psi(t)])^T (B W_v).

When a new segment arrives, the old signal is re-sampled at a fixed number of points, the new states are
appended, and everything is re-fitted into the same N coefficients ("contraction"): old content is squeezed
into a smaller part of [0, 1] every time, so it gets coarser, but the memory never grows.

Run `python -m lessons.infinite_memory` for the comparison on a recall task no window can solve and on
Tiny Shakespeare. Shapes: B batch, T segment length (= block_size), C n_embd, N basis functions, L vectors
being fitted, P points where the signal is read, S segments, nh heads, hs head size.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

from babygpt.cli import (MAX_SEED, MAX_STEPS, MAX_THREADS, Parser, UserError, add_dataclass_flags,
                         check_output_file, check_range)
from babygpt.optimizer import make_optimizer
from babygpt.runner import run
from babygpt.threads import use_threads
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------------------------
# 1. the continuous memory, as plain functions


def basis_centers(num_basis):
    """(N,) centers of the radial basis functions, evenly spaced over [0, 1]."""
    return torch.linspace(0.0, 1.0, num_basis, dtype=torch.float64)


def basis_width(num_basis):
    """The width (standard deviation) of every basis function: one spacing between centers, so neighbours
    overlap and their sum is a smooth, nearly flat curve."""
    return 1.0 / (num_basis - 1)


def rbf_basis(t, num_basis):
    """psi_j(t) = exp(-(t - c_j)^2 / (2 w^2)).  t: (P,) points in [0, 1] -> (P, N)."""
    centers = basis_centers(num_basis).to(t)  # (N,)
    return torch.exp(-((t[:, None] - centers[None, :]) ** 2) / (2 * basis_width(num_basis) ** 2))  # (P, N)


def ridge_fit(x, num_basis, ridge=1e-3):
    """Compress L vectors into N coefficients: x (B, L, C) -> B (B, N, C).

    The L vectors are placed at evenly spaced points t_1..t_L of [0, 1], and B minimises
    sum_i |x_i - B^T psi(t_i)|^2 + ridge * |B|^2, whose solution is B = (F^T F + ridge I)^-1 F^T x with
    F = psi(t) (L, N). The ridge term keeps the N x N solve well-posed when L < N or the bases overlap a lot.
    """
    L = x.size(1)
    t = torch.linspace(0.0, 1.0, L, dtype=x.dtype, device=x.device)  # (L,)
    Fm = rbf_basis(t, num_basis)  # (L, N)
    gram = Fm.T @ Fm + ridge * torch.eye(num_basis, dtype=x.dtype, device=x.device)  # (N, N)
    return torch.linalg.solve(gram, Fm.T @ x)  # (N, N) solve against (B, N, C) -> (B, N, C)


def reconstruct(coeffs, t):
    """Read the continuous signal at any points: coeffs (B, N, C), t (P,) in [0, 1] -> (B, P, C)."""
    return rbf_basis(t.to(coeffs), coeffs.size(1)) @ coeffs  # (P, N) @ (B, N, C) -> (B, P, C)


def contract(coeffs, new_states, num_basis, num_old_samples, ridge=1e-3):
    """Append a segment to the memory without letting it grow.

    coeffs (B, N, C) or None (empty memory), new_states (B, T, C) -> coeffs (B, N, C).
    The old signal is re-sampled at num_old_samples points (M), the T new vectors are appended after them,
    and the M + T vectors are re-fitted into N coefficients. The old content now lives in the first
    M / (M + T) of [0, 1]: each contraction squeezes it again, so older content gets coarser.
    """
    if coeffs is None:
        return ridge_fit(new_states, num_basis, ridge)  # (B, N, C): the first segment fills all of [0, 1]
    old = reconstruct(coeffs, torch.linspace(0.0, 1.0, num_old_samples))  # (B, M, C)
    return ridge_fit(torch.cat([old, new_states.to(coeffs)], dim=1), num_basis, ridge)  # (B, M + T -> N, C)


def normal_cdf(z):
    """Phi(z), the standard normal CDF, through erf."""
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def gaussian_density(t, mu, sigma):
    """The continuous softmax: a Gaussian N(mu, sigma^2) truncated to [0, 1] and renormalised, so it is a
    probability density over the memory's time axis. t (P,), mu and sigma (...,) -> (..., P)."""
    t = t.to(mu)
    mu, sigma = mu[..., None], sigma[..., None]  # (..., 1)
    mass_inside = normal_cdf((1 - mu) / sigma) - normal_cdf((0 - mu) / sigma)  # (..., 1): Z, the part on [0, 1]
    pdf = torch.exp(-0.5 * ((t - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))  # (..., P)
    return pdf / mass_inside  # (..., P)


def expected_basis(mu, sigma, num_basis):
    """E_p[psi_j(t)] = integral over [0, 1] of p(t) psi_j(t) dt, in closed form. mu, sigma (...,) -> (..., N).

    Why closed form and not quadrature: a Gaussian times a Gaussian bump is another (scaled) Gaussian, so the
    integral over [0, 1] is a difference of two erf values -- exact, O(N) per query, and differentiable in mu
    and sigma. A numeric quadrature on P points costs O(N P) per query and silently breaks when sigma shrinks
    below the grid spacing (the density falls between the points). tests/ checks the two agree.

    With w the basis width and c_j its center:  N(t; mu, sigma^2) psi_j(t) = w / sqrt(sigma^2 + w^2)
    * exp(-(mu - c_j)^2 / (2 (sigma^2 + w^2))) * N(t; m_j, s^2), where s^2 = sigma^2 w^2 / (sigma^2 + w^2)
    and m_j = (mu w^2 + c_j sigma^2) / (sigma^2 + w^2). Integrate the last factor over [0, 1], divide by Z.
    """
    centers = basis_centers(num_basis).to(mu)  # (N,)
    w2 = basis_width(num_basis) ** 2
    mu, var = mu[..., None], sigma[..., None] ** 2  # (..., 1)
    total = var + w2  # (..., 1)
    scale = math.sqrt(w2) / total.sqrt() * torch.exp(-((mu - centers) ** 2) / (2 * total))  # (..., N)
    m = (mu * w2 + centers * var) / total  # (..., N): mean of the product Gaussian
    s = (var * w2 / total).sqrt()  # (..., 1): its width
    inside = normal_cdf((1 - m) / s) - normal_cdf((0 - m) / s)  # (..., N)
    mass = normal_cdf((1 - mu) / sigma[..., None]) - normal_cdf((0 - mu) / sigma[..., None])  # (..., 1): Z
    return scale * inside / mass  # (..., N)


# ----------------------------------------------------------------------------------------------------------------
# 2. the model: model.py's GPT, plus an attention over the long-term memory in the top blocks


@dataclass
class MemoryConfig:
    num_basis: int = 16  # N: coefficients per channel; the memory's size, fixed forever
    num_old_samples: int = 32  # M: points where the old signal is re-sampled at each contraction
    ridge: float = 1e-3  # the ridge penalty of the fit
    memory_layers: int = 2  # how many of the top blocks read the long-term memory
    min_sigma: float = 0.01  # floor on the Gaussian's width, so the density stays finite


class ContinuousMemoryAttention(nn.Module):
    """Attention over the continuous memory. Every position emits a query; per head, the query is compared
    with the N keys of the memory's coefficients (the key of the signal at t is psi(t)^T B W_k, so B W_k holds
    everything about the keys); two learned vectors of size N turn those N scores into the Gaussian's mean
    (sigmoid -> inside [0, 1]) and width (softplus -> positive). The value read is E_p[psi]^T (B W_v)."""

    def __init__(self, config: GPTConfig, memory: MemoryConfig):
        super().__init__()
        self.n_head, self.num_basis, self.min_sigma = config.n_head, memory.num_basis, memory.min_sigma
        self.query = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.key_value = nn.Linear(config.n_embd, 2 * config.n_embd, bias=config.bias)
        self.to_mu = nn.Linear(memory.num_basis, 1)  # the paper's w_mu, shared by the heads
        self.to_sigma = nn.Linear(memory.num_basis, 1)  # the paper's w_sigma
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True  # scaled down at init like every write into the stream

    def density_parameters(self, x, coeffs):
        """x (B, T, C), coeffs (B, N, C) -> mu, sigma (B, nh, T) each, and the values (B, nh, N, hs)."""
        B, T, C = x.shape
        hs = C // self.n_head
        q = self.query(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k, v = self.key_value(coeffs).split(C, dim=2)  # 2 x (B, N, C)
        k = k.view(B, self.num_basis, self.n_head, hs).transpose(1, 2)  # (B, nh, N, hs)
        v = v.view(B, self.num_basis, self.n_head, hs).transpose(1, 2)  # (B, nh, N, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, N)
        mu = torch.sigmoid(self.to_mu(scores)).squeeze(-1)  # (B, nh, T)
        sigma = F.softplus(self.to_sigma(scores)).squeeze(-1) + self.min_sigma  # (B, nh, T)
        return mu, sigma, v

    def forward(self, x, coeffs):
        B, T, C = x.shape
        mu, sigma, v = self.density_parameters(x, coeffs)
        weights = expected_basis(mu, sigma, self.num_basis)  # (B, nh, T, N): how much of each basis p covers
        y = weights @ v  # (B, nh, T, hs): E_p[value(t)]
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y)  # (B, T, C)


class InfiniteMemoryGPT(nn.Module):
    """model.py's GPT (embeddings, Blocks, final LayerNorm, tied head, GPT-2 init), with a long-term memory in
    each of the top `memory.memory_layers` blocks. A long text is fed as S segments of block_size tokens, in
    order. In a memory block, between the block's own attention and its MLP, x += memory_attention(x, memory);
    after the segment, the block's input states (LayerNorm-ed, detached) are contracted into that memory.
    Detached: like the paper, no gradient flows into old segments, so training costs one segment at a time."""

    def __init__(self, config: GPTConfig, memory: MemoryConfig):
        super().__init__()
        if not 1 <= memory.memory_layers <= config.n_layer:
            raise ValueError(f"memory_layers must be in 1..n_layer ({config.n_layer}), got {memory.memory_layers}")
        if memory.num_basis < 2:
            raise ValueError(f"num_basis must be at least 2, got {memory.num_basis}")
        self.config, self.memory = config, memory
        self.gpt = GPT(config)
        self.first_memory_layer = config.n_layer - memory.memory_layers
        self.ln_memory = nn.ModuleList([nn.LayerNorm(config.n_embd, bias=config.bias) for _ in range(memory.memory_layers)])
        self.memory_attn = nn.ModuleList([ContinuousMemoryAttention(config, memory) for _ in range(memory.memory_layers)])
        self.memory_attn.apply(self.gpt._init_weights)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def empty_memory(self):
        """One memory per memory block; None means nothing stored yet."""
        return [None] * self.memory.memory_layers

    def forward_segment(self, idx, memories):
        """idx (B, T) one segment, memories: list of (B, N, C) or None -> logits (B, T, V), the new memories."""
        gpt = self.gpt
        x = gpt.drop(gpt.token_embedding(idx) + gpt.position_embedding(torch.arange(idx.size(1), device=idx.device)))
        to_store = []
        for i, block in enumerate(gpt.blocks):
            if i < self.first_memory_layer:
                x = block(x)  # (B, T, C)
                continue
            j = i - self.first_memory_layer
            to_store.append(F.layer_norm(x, (x.size(-1),)).detach())  # (B, T, C): what this layer remembers
            x = x + block.attn(block.ln_1(x))  # (B, T, C): the window, as in model.py
            if memories[j] is not None:
                x = x + self.memory_attn[j](self.ln_memory[j](x), memories[j])  # (B, T, C): the long-term memory
            x = x + block.mlp(block.ln_2(x))  # (B, T, C)
        logits = gpt.lm_head(gpt.ln_f(x))  # (B, T, V)
        with torch.no_grad():
            new_memories = [contract(m, s, self.memory.num_basis, self.memory.num_old_samples, self.memory.ridge)
                            for m, s in zip(memories, to_store)]
        return logits, new_memories

    def forward(self, segments):
        """segments (B, S, T) -> logits (B, S, T, V), processed in order, the memory carried along."""
        memories = self.empty_memory()
        all_logits = []
        for s in range(segments.size(1)):
            logits, memories = self.forward_segment(segments[:, s], memories)
            all_logits.append(logits)
        return torch.stack(all_logits, dim=1)  # (B, S, T, V)


class WindowGPT(nn.Module):
    """The baseline with the same interface: model.py's GPT applied to each segment on its own (a window of
    block_size tokens that forgets everything before it)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gpt = GPT(config)

    def num_params(self):
        return self.gpt.num_params()

    def forward(self, segments):
        B, S, T = segments.shape
        logits, _ = self.gpt(segments.reshape(B * S, T))  # (B*S, T, V)
        return logits.view(B, S, T, -1)  # (B, S, T, V)


def matching_window_config(config: GPTConfig, target_params):
    """The plain GPT's config for a fair comparison: same depth and heads, n_embd widened (in steps of
    n_head) until its parameter count is closest to target_params (the memory model's)."""
    candidates = [GPTConfig(**{**config.__dict__, "n_embd": c}) for c in range(config.n_head, 4 * config.n_embd, config.n_head)]
    return min(candidates, key=lambda c: abs(GPT(c).num_params() - target_params))


# ----------------------------------------------------------------------------------------------------------------
# 3. a task no window can solve: remember a key letter across several segments

KEYS = "ABCDEFGH"  # the letter to remember: one of 8, so chance is 1/8
FILLER = "abcdefghijklmnopqrstuvwxyz"  # noise between the key and the question (disjoint from the keys)
RECALL_VOCAB = KEYS + FILLER + "#?"  # '#' announces the key, '?' asks for it
KEY_MARK, QUESTION = RECALL_VOCAB.index("#"), RECALL_VOCAB.index("?")


def recall_batch(batch_size, num_segments, block_size, generator):
    """'#', the key, then random lowercase letters, and '?' as the very last token; the answer is the key.

    -> segments (B, S, T) token ids, answers (B,). The key sits at position 1 of segment 0 and the question
    at the end of segment S-1: S*T - 2 tokens apart, so with S >= 2 no window of block_size tokens holds both.
    """
    S, T = num_segments, block_size
    tokens = torch.randint(len(KEYS), len(KEYS) + len(FILLER), (batch_size, S * T), generator=generator)  # (B, S*T)
    answers = torch.randint(0, len(KEYS), (batch_size,), generator=generator)  # (B,)
    tokens[:, 0], tokens[:, 1], tokens[:, -1] = KEY_MARK, answers, QUESTION
    return tokens.view(batch_size, S, T), answers  # (B, S, T), (B,)


def recall_loss(model, segments, answers):
    """Cross-entropy of the prediction after '?' (the last position of the last segment) against the key."""
    logits = model(segments)[:, -1, -1, :]  # (B, V): the prediction at the question mark
    return F.cross_entropy(logits, answers), logits


def train_recall(model, steps, block_size, segment_range, batch_size=32, lr=3e-3, seed=0, log_every=0):
    """Train on recall batches whose number of segments is drawn from segment_range each step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, lr, 0.0, (0.9, 0.99))
    model.train()
    for step in range(steps):
        lr_now = lr * min(1.0, (step + 1) / 50)  # a short warmup, then constant
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        S = int(torch.randint(segment_range[0], segment_range[1] + 1, (1,), generator=generator))
        loss, _ = recall_loss(model, *recall_batch(batch_size, S, block_size, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"  step {step:4d}  recall loss {loss.item():.3f}", flush=True)
    return model


@torch.no_grad()
def recall_accuracy(model, num_segments, block_size, num_examples=512, seed=1234):
    """Fraction of fresh examples where the model's top choice after '?' is the key."""
    model.eval()
    segments, answers = recall_batch(num_examples, num_segments, block_size, torch.Generator().manual_seed(seed))
    _, logits = recall_loss(model, segments, answers)
    return (logits.argmax(-1) == answers).float().mean().item()


@torch.no_grad()
def memory_sizes(model, num_segments, block_size):
    """Floats held in the long-term memory after each of num_segments segments (one example)."""
    segments, _ = recall_batch(1, num_segments, block_size, torch.Generator().manual_seed(0))
    memories, sizes = model.empty_memory(), []
    for s in range(num_segments):
        _, memories = model.forward_segment(segments[:, s], memories)
        sizes.append(sum(m.numel() for m in memories))
    return sizes


# ----------------------------------------------------------------------------------------------------------------
# 4. Tiny Shakespeare with a short window: does the memory help a real language model?


def shakespeare_batch(data, batch_size, num_segments, block_size, generator):
    """B random stretches of S*T characters cut into S segments: x, y (B, S, T), y shifted by one."""
    from train import (
        get_batch,  # train.py's batching: random windows and their next-token targets
    )

    x, y = get_batch(data, batch_size, num_segments * block_size, generator)  # (B, S*T) each
    return x.view(batch_size, num_segments, block_size), y.view(batch_size, num_segments, block_size)


def lm_loss(model, x, y):
    """Mean next-character cross-entropy over every position of every segment, and per segment (S,)."""
    logits = model(x)  # (B, S, T, V)
    per_token = F.cross_entropy(logits.flatten(0, 2), y.flatten(), reduction="none").view(y.shape)  # (B, S, T)
    return per_token.mean(), per_token.mean(dim=(0, 2))


def train_shakespeare(model, train_data, steps, num_segments, block_size, batch_size=16, lr=2e-3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, lr, 0.1, (0.9, 0.99))
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        loss, _ = lm_loss(model, *shakespeare_batch(train_data, batch_size, num_segments, block_size, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model


@torch.no_grad()
def shakespeare_val(model, val_data, num_segments, block_size, batches=8, batch_size=16, seed=4321):
    """Val loss on fixed stretches (the same for every model): the mean, and per segment index (S,)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals = [lm_loss(model, *shakespeare_batch(val_data, batch_size, num_segments, block_size, generator))
              for _ in range(batches)]
    return sum(t[0] for t in totals).item() / batches, (sum(t[1] for t in totals) / batches).tolist()


# ----------------------------------------------------------------------------------------------------------------
# 5. the picture, and the command line


def reconstruction_error(num_vectors, num_basis, channels=8, seed=0):
    """Mean squared error of fitting num_vectors random vectors (B=1, L, channels) with num_basis bases."""
    x = torch.randn(1, num_vectors, channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, num_vectors, dtype=torch.float64)
    return (reconstruct(ridge_fit(x, num_basis), t) - x).pow(2).mean().item()


def save_reconstruction_figure(path, num_basis=16, lengths=(8, 32, 128)):
    """One dimension of L random-walk vectors and its reconstruction from num_basis coefficients, per L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(lengths), figsize=(3.2 * len(lengths), 2.4), sharey=True)
    generator = torch.Generator().manual_seed(0)
    for ax, L in zip(axes, lengths):
        x = torch.randn(1, L, 1, generator=generator, dtype=torch.float64).cumsum(1) / math.sqrt(L / 8)  # (1, L, 1)
        t = torch.linspace(0.0, 1.0, L, dtype=torch.float64)
        fine = torch.linspace(0.0, 1.0, 400, dtype=torch.float64)
        ax.plot(t, x[0, :, 0], ".", ms=3, color="0.4", label=f"{L} vectors (dimension 0)")
        coeffs = ridge_fit(x, num_basis)  # (1, N, 1)
        ax.plot(fine, reconstruct(coeffs, fine)[0, :, 0], color="C3", label=f"N = {num_basis} coefficients")
        error = (reconstruct(coeffs, t) - x).pow(2).mean().item()
        ax.set_title(f"L = {L} vectors: mean squared error {error:.3f}", fontsize=9)
        ax.set_xlabel("t", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass
class LessonConfig:
    part: str = "all"  # 'all', 'recall', 'shakespeare' or 'figure'
    block_size: int = 16  # the window (segment length) for the recall task
    recall_steps: int = 300  # training steps for each model on the recall task
    train_segments: str = "2-4"  # range of segment counts seen in training (the gap is about S*block_size)
    eval_segments: str = "2,3,4,6,8,12,16"  # segment counts at which recall accuracy is measured
    lm_block_size: int = 32  # the window on Tiny Shakespeare
    lm_segments: int = 4  # segments per Tiny Shakespeare training stretch
    lm_steps: int = 300  # training steps for each model on Tiny Shakespeare
    data_dir: str = "data/shakespeare_char"  # prepared Tiny Shakespeare (python prepare.py)
    figure: str = "docs/figures/infinite_memory_reconstruction.png"  # where --part figure writes the PNG
    threads: int = 1  # torch CPU threads (the lesson is small; 1 is kind to a shared machine)
    seed: int = 0  # seed for the initial weights and the batches


def parse_range(text, what):
    try:
        if "-" in text:
            low, high = (int(v) for v in text.split("-"))
            return low, high
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--{what} should look like 2-4 or 1,2,4, got {text!r}") from None


def compare_recall(cfg: LessonConfig):
    low, high = parse_range(cfg.train_segments, "train_segments")
    eval_counts = parse_range(cfg.eval_segments, "eval_segments")
    if not 1 <= low <= high or min(eval_counts) < 1:
        raise UserError("segment counts must be at least 1 (and a range low-high with low <= high)")
    config = GPTConfig(block_size=cfg.block_size, vocab_size=len(RECALL_VOCAB), n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(cfg.seed)
    memory_model = InfiniteMemoryGPT(config, MemoryConfig())
    torch.manual_seed(cfg.seed)
    window_model = WindowGPT(matching_window_config(config, memory_model.num_params()))
    print(f"recall task: key shown at position 1, asked for at the end of segment S; window {cfg.block_size}; "
          f"chance {1 / len(KEYS):.3f}")
    print(f"parameters: window GPT {window_model.num_params():,} (n_embd {window_model.gpt.config.n_embd}), "
          f"memory GPT {memory_model.num_params():,} (n_embd {config.n_embd} + memory attention)")
    for name, model in (("window GPT", window_model), ("memory GPT", memory_model)):
        start = time.time()
        train_recall(model, cfg.recall_steps, cfg.block_size, (low, high), seed=cfg.seed)
        print(f"trained {name}: {cfg.recall_steps} steps, segments {low}-{high}, {time.time() - start:.0f} s")
    print(f"{'segments S':>10} {'gap (tokens)':>12} {'window GPT':>10} {'memory GPT':>10} {'memory floats':>13}")
    for S in eval_counts:
        sizes = memory_sizes(memory_model, S, cfg.block_size)
        print(f"{S:>10} {S * cfg.block_size - 2:>12} {recall_accuracy(window_model, S, cfg.block_size):>10.3f} "
              f"{recall_accuracy(memory_model, S, cfg.block_size):>10.3f} {sizes[-1]:>13}")


def compare_shakespeare(cfg: LessonConfig):
    from train import load_split

    train_data = load_split(cfg.data_dir, "train", cfg.lm_segments * cfg.lm_block_size)
    val_data = load_split(cfg.data_dir, "val", cfg.lm_segments * cfg.lm_block_size)
    vocab_size = int(max(train_data.max(), val_data.max())) + 1
    config = GPTConfig(block_size=cfg.lm_block_size, vocab_size=vocab_size, n_layer=2, n_head=4, n_embd=64)
    torch.manual_seed(cfg.seed)
    memory_model = InfiniteMemoryGPT(config, MemoryConfig(num_basis=16, num_old_samples=32))
    torch.manual_seed(cfg.seed)
    window_model = WindowGPT(matching_window_config(config, memory_model.num_params()))
    print(f"Tiny Shakespeare: window {cfg.lm_block_size} chars, {cfg.lm_segments} segments per stretch, "
          f"{cfg.lm_steps} steps of 16 stretches each")
    print(f"parameters: window GPT {window_model.num_params():,}, memory GPT {memory_model.num_params():,}")
    for name, model in (("window GPT", window_model), ("memory GPT", memory_model)):
        start = time.time()
        train_shakespeare(model, train_data, cfg.lm_steps, cfg.lm_segments, cfg.lm_block_size, seed=cfg.seed)
        mean, per_segment = shakespeare_val(model, val_data, cfg.lm_segments, cfg.lm_block_size)
        print(f"{name}: val loss {mean:.4f}   per segment " + " ".join(f"{v:.3f}" for v in per_segment)
              + f"   ({time.time() - start:.0f} s)")


def main(argv=None):
    parser = Parser(prog="python -m lessons.infinite_memory", description="The ∞-former lesson: a continuous "
                    "long-term memory vs the plain window GPT, on a recall task and on Tiny Shakespeare.")
    add_dataclass_flags(parser, LessonConfig, "lesson")
    cfg = LessonConfig(**vars(parser.parse_args(argv)))
    if cfg.part not in ("all", "recall", "shakespeare", "figure"):
        raise UserError(f"--part must be all, recall, shakespeare or figure, got {cfg.part!r}")
    for name in ("block_size", "recall_steps", "lm_block_size", "lm_segments", "lm_steps", "threads"):
        if getattr(cfg, name) < (0 if name.endswith("steps") else 1):
            raise UserError(f"--{name} must be positive, got {getattr(cfg, name)}")
    for name in ("block_size", "lm_block_size", "lm_segments"):
        check_range(name, getattr(cfg, name), 1, 4096)
    check_range("recall_steps", cfg.recall_steps, 0, MAX_STEPS)
    check_range("lm_steps", cfg.lm_steps, 0, MAX_STEPS)
    check_range("threads", cfg.threads, 1, MAX_THREADS)
    check_range("seed", cfg.seed, 0, MAX_SEED)
    if cfg.part == "figure":
        check_output_file("figure", cfg.figure)
    use_threads(cfg.threads)
    if cfg.part == "figure":
        save_reconstruction_figure(cfg.figure)
        print(f"wrote {cfg.figure}")
        for L in (8, 16, 32, 64, 128, 256):
            print(f"L = {L:3d} random vectors (unit variance) in N = 16 coefficients: mean squared error "
                  f"{reconstruction_error(L, 16):.3f}")
        return
    if cfg.part in ("all", "recall"):
        compare_recall(cfg)
    if cfg.part in ("all", "shakespeare"):
        compare_shakespeare(cfg)


if __name__ == "__main__":
    run(main)
