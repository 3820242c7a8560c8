"""babygpt's model: a decoder-only transformer (a GPT), in the order the lecture explains it.

    characters --(integers)--> token embedding + position embedding
               --> n_layer x Block:  x = x + attention(ln(x))   # communication between positions
                                      x = x + mlp(ln(x))         # computation at each position
               --> final LayerNorm --> LM head (shares weights with the token embedding)
               --> logits over the vocabulary --> cross-entropy against the next character

Shapes: B batch size, T sequence length (<= block_size), C n_embd, V vocab_size, nh n_head,
hs head size = C // nh. The file needs nothing but PyTorch: copy it anywhere and `import model`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

@dataclass
class GPTConfig:
    block_size: int = 64  # the longest context; also the number of learned positions
    vocab_size: int = 65  # distinct tokens (65 characters in Tiny Shakespeare)
    n_layer: int = 4  # blocks applied in series
    n_head: int = 4  # attention heads running in parallel inside each block
    n_embd: int = 128  # width of the residual stream: every token is a vector of this size
    dropout: float = 0.0  # dropout probability during training (0 turns it off)
    bias: bool = True  # biases in Linear and LayerNorm layers
    attn_impl: str = "sdpa"  # 'sdpa' (one fused kernel) or 'explicit' (explicit_attention)
    attn_pattern: str = "causal"  # 'causal' (every earlier token), 'sliding' or 'bigbird'
    attn_window: int = 0  # sliding: the last this-many tokens, itself included (0: block_size // 2)
    bigbird_window: int = 16  # bigbird: the last this-many tokens, itself included
    bigbird_global: int = 2  # bigbird: the first this-many tokens are read by every query
    bigbird_random: int = 2  # bigbird: extra random earlier tokens per query (drawn once, seed 0)
    # Modern options, all off by default (the lecture's model); docs/experiments.md: what they buy.
    pos_emb: str = "learned"  # 'learned' (block_size position vectors) or 'rope' (rotate q and k)
    norm: str = "layernorm"  # or 'rmsnorm': scale by the root-mean-square only (no mean, no bias)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys (steadier at high lr)
    mlp_act: str = "gelu"  # nonlinearity: 'gelu', 'gelu_tanh' (GPT-2's) or 'relu2' (ReLU squared)
    tie_head: bool = True  # the LM head shares its matrix with the token embedding
    zero_init_proj: bool = False  # output projections start at 0: each block starts as identity

    def __post_init__(self):
        # Catch impossible settings here, with a message naming the field, not deep in forward().
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_impl not in ("sdpa", "explicit"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'explicit', got {self.attn_impl!r}")
        for name, allowed in (("pos_emb", ("learned", "rope")), ("norm", ("layernorm", "rmsnorm")),
                              ("mlp_act", ("gelu", "relu2", "gelu_tanh")),
                              ("attn_pattern", ("causal", "sliding", "bigbird"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"pos_emb 'rope' needs an even head size, got {self.n_embd // self.n_head}")
        if self.bigbird_window < 1 or self.bigbird_global < 0 or self.bigbird_random < 0:
            raise ValueError("bigbird_window must be at least 1, bigbird_global and bigbird_random not negative")
        if self.attn_pattern == "sliding" and self.pos_emb != "rope":
            raise ValueError("attn_pattern 'sliding' needs pos_emb 'rope' (relative positions, so "
                             f"the model runs past block_size), got pos_emb {self.pos_emb!r}")
        if self.attn_pattern == "sliding":
            self.attn_window = self.attn_window or self.block_size // 2
        if self.attn_pattern == "sliding" and not 1 <= self.attn_window <= self.block_size:
            raise ValueError(f"attn_window must be between 1 and block_size ({self.block_size}), "
                             f"got {self.attn_window} (0 means block_size // 2)")


def causal_mask(n_queries, n_keys=None, first_query=0, window=None, device=None):
    """(n_queries, n_keys) bool: query i (at position first_query + i) may read keys 0..first_query
    + i (or their last `window`). causal_mask(T) is the decoder's lower triangle."""
    n_keys = n_queries if n_keys is None else n_keys
    queries = torch.arange(first_query, first_query + n_queries, device=device)[:, None]  # (Tq, 1)
    keys = torch.arange(n_keys, device=device)[None, :]  # (1, Tk)
    allowed = keys <= queries  # (Tq, Tk): nothing from the future
    if window is not None:
        allowed &= keys > queries - window  # (Tq, Tk): a band ending on the diagonal
    return allowed


def layer_mask(attn, n_new, first=0, device=None, explicit=False):
    """(n_new, first+n_new) bool: what the queries at positions first.. of layer attn may read;
    None for plain causal attention (the fused kernel's is_causal), unless explicit=True."""
    n_keys = first + n_new
    if attn.pattern is not None:
        return attn.pattern[first:n_keys, :n_keys]
    if attn.window is None and not explicit:
        return None
    return causal_mask(n_new, n_keys, first_query=first, window=attn.window, device=device)


def rotary_cos_sin(positions, head_size, base=10000.0):
    """RoPE tables for positions (T,) -> cos, sin (T, head_size): pair i (elements i, i+hs/2) turns
    by position * base^(-2i/hs); q and k both turn, so q . k depends only on their distance."""
    freqs = base ** (-torch.arange(0, head_size, 2, device=positions.device).float() / head_size)
    angles = positions.float()[:, None] * freqs[None, :]  # (T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, hs): pair i's angle at i and at i + hs/2
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate each pair (x1, x2) = (x[i], x[i + hs/2]) of x (..., T, hs): the "rotate-half" form."""
    x1, x2 = x.float().chunk(2, dim=-1)  # 2 x (..., T, hs/2)
    return (x.float() * cos + torch.cat((-x2, x1), dim=-1) * sin).type_as(x)  # (..., T, hs)


def make_norm(config):
    """The normalisation in front of each sub-layer and before the LM head."""
    rms = config.norm == "rmsnorm"
    return nn.RMSNorm(config.n_embd) if rms else nn.LayerNorm(config.n_embd, bias=config.bias)


def explicit_attention(q, k, v, causal, dropout_p=0.0, allowed=None):
    """softmax(q @ k^T / sqrt(hs)) @ v, written out: q (B, nh, Tq, hs), k and v (B, nh, Tk, hs).
    causal=True: query t reads keys 0..t only; `allowed`, a (Tq, Tk) bool mask, replaces that."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, nh, Tq, Tk): query-key match
    if causal and allowed is None:
        allowed = causal_mask(q.size(-2), k.size(-2), device=q.device)  # (Tq, Tk)
    if allowed is not None:  # a masked-out key (the future) gets zero weight after the softmax
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = F.softmax(scores, dim=-1)  # (B, nh, Tq, Tk), each row sums to 1
    weights = F.dropout(weights, p=dropout_p)  # dropout_p is 0 outside training
    return weights @ v  # (B, nh, Tq, hs): a weighted average of the values


class CausalSelfAttention(nn.Module):
    """Communication. Every position emits a query ("what am I looking for"), a key ("what do I
    contain") and a value ("what I will tell you"), then averages the values of the positions it may
    read, weighted by how well its query matches their keys. n_head heads do this side by side."""

    def __init__(self, config: GPTConfig, pattern=None):
        super().__init__()
        self.n_head, self.dropout, self.qk_norm = config.n_head, config.dropout, config.qk_norm
        self.attn_impl = config.attn_impl
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k and v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # mixes the heads
        self.c_proj.is_residual_projection = True  # GPT-2 init scales it down (GPT._init_weights)
        self.resid_dropout = nn.Dropout(config.dropout)
        # Which keys a query may read (layer_mask): a sliding band or BigBird's links (not saved).
        self.window = config.attn_window if config.attn_pattern == "sliding" else None
        self.register_buffer("pattern", pattern, persistent=False)

    def qkv(self, x, rope=None):
        """Every head's queries, keys and values: x (B, T, C) -> 3 x (B, nh, T, hs)."""
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3, nh, hs)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs): heads run as a batch, q, k, v first
        qk, v = qkv[:2], qkv[2]  # (2, B, nh, T, hs), (B, nh, T, hs): q and k go through together
        if self.qk_norm:
            qk = F.rms_norm(qk, (qk.size(-1),))  # (2, B, nh, T, hs)
        if rope is not None:
            qk = apply_rotary(qk, *rope)  # (2, B, nh, T, hs): position enters through the angles
        return qk[0], qk[1], v

    def forward(self, x, causal=True, rope=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x, rope)  # 3 x (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        mask = layer_mask(self, T, device=x.device) if causal else None  # (T, T) bool, or None
        if self.attn_impl == "sdpa":
            # the same maths as explicit_attention, in one fused kernel
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                               is_causal=causal and mask is None)  # (B, nh, T, hs)
        else:
            y = explicit_attention(q, k, v, causal, dropout_p, allowed=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Computation. Each position thinks on its own about what it gathered: widen 4x, GELU, back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)
        self.relu2 = config.mlp_act == "relu2"
        self.gelu = "tanh" if config.mlp_act == "gelu_tanh" else "none"  # GPT-2 uses the tanh form

    def forward(self, x):
        x = self.c_fc(x)  # (B, T, 4C)
        x = F.relu(x).square() if self.relu2 else F.gelu(x, approximate=self.gelu)  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """One transformer block: communicate, then compute. Each sub-layer reads a normalised copy of
    the residual stream x and *adds* its result back: a straight path for gradients, from the loss
    to the first layer, is what makes a deep stack trainable."""

    def __init__(self, config: GPTConfig, pattern=None):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, pattern)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, causal=True, rope=None):
        x = x + self.attn(self.ln_1(x), causal=causal, rope=rope)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """The whole language model: integers in, next-token logits (and optionally the loss) out.
    attn_pattern 'bigbird' takes its mask as `pattern` (babygpt/attention_patterns.py draws it)."""

    def __init__(self, config: GPTConfig, pattern=None):
        super().__init__()
        if (config.attn_pattern == "bigbird") != (pattern is not None):
            raise ValueError("attn_pattern 'bigbird' needs its mask as `pattern`, and only it does")
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)  # what each token is
        if config.pos_emb == "learned":
            self.position_embedding = nn.Embedding(config.block_size, config.n_embd)  # where it is
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, pattern) for _ in range(config.n_layer)])
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: one (V, C) matrix reads a token in and scores it on the way out (saves V*C)
        if config.tie_head:
            self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """GPT-2's: weights ~ N(0, 0.02), biases 0; the 2 projections per block that add into the
        residual stream get std 0.02/sqrt(2*n_layer), so the stream's variance does not grow."""
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std = 0.0 if self.config.zero_init_proj else 0.02 / math.sqrt(2 * self.config.n_layer)
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        """Parameters, each counted once (the tied embedding / LM head matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def embed(self, idx, start=0):
        """Tokens idx (B, T) at positions start.. -> residual stream (B, T, C), RoPE's tables."""
        positions = torch.arange(start, start + idx.size(1), device=idx.device)  # (T,)
        x = self.token_embedding(idx)  # (B, T, C)
        if self.config.pos_emb == "learned":
            return x + self.position_embedding(positions), None  # (B, T, C) + (T, C) broadcast
        return x, rotary_cos_sin(positions, self.config.n_embd // self.config.n_head)  # 2 x (T, hs)

    def forward(self, idx, targets=None):
        """idx: (B, T) tokens, T <= block_size (any T if sliding). targets: (B, T), idx shifted
        left by one, or None. Returns logits (B, T, V) and the mean cross-entropy loss or None."""
        B, T = idx.shape
        block_size = self.config.block_size
        # a sliding band fits any length; the other patterns stop at block_size positions
        if T > block_size and self.config.attn_pattern != "sliding":
            raise ValueError(f"sequence of length {T} is longer than block_size {block_size}: the model "
                             f"has position embeddings for only {block_size} places; crop the input")
        x, rope = self.embed(idx)  # (B, T, C), rotary tables or None
        x = self.drop(x)  # (B, T, C)
        for block in self.blocks:
            x = block(x, rope=rope)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V): a score for each next token, each place
        loss = None
        if targets is not None:
            # every one of the B*T positions is its own prediction problem
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, top_p=None):
        """Extend idx (B, T) by max_new_tokens tokens, one at a time, feeding each choice back in,
        the model seeing the last block_size tokens (sliding: all). Call model.eval() first.
        It recomputes the whole context per token; engine.py gives the same tokens faster."""
        crop = self.config.attn_pattern != "sliding"
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :] if crop else idx  # (B, <=block_size)
            logits, _ = self(context)  # (B, t, V)
            next_token = sample_next_token(logits[:, -1, :], temperature, top_k, generator, top_p)
            idx = torch.cat((idx, next_token.to(idx.device)), dim=1)  # (B, T+1)
        return idx


def sample_next_token(logits, temperature=1.0, top_k=None, generator=None, top_p=None):
    """One token per row of logits (B, V) -> (B, 1). temperature 0: argmax; else logits / it
    (below 1: sharper); top_k keeps the k highest; top_p the fewest likeliest holding >= top_p of
    the probability. Drawn on the CPU: the same seed gives the same text on any device."""
    logits = logits.float().cpu()  # (B, V)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None:
        values, indices = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)  # (B, k) each
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)  # (B, V)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) likeliest 1st
        sorted_probs = F.softmax(sorted_logits, dim=-1)  # (B, V)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V): mass ranked above
        # a token is needed only while the tokens above it hold less than top_p (the first stays)
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))  # (B, V)
        logits = torch.empty_like(logits).scatter(-1, order, sorted_logits)  # (B, V), vocab order
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
