"""
engine.py -- fast generation with a KV cache, giving the same tokens as GPT.generate (the reference).

Why a cache? GPT.generate recomputes the whole context for every new token. But inside attention, the keys
and values of a position depend only on that position and the ones before it: when one token is appended,
nothing about the earlier positions changes. So we keep every layer's keys and values (the "KV cache") and
run only the new token through the model: one row instead of up to block_size rows per step.

The catch: the context window. The model has learned position embeddings for positions 0..block_size-1 only,
so the reference shows it the *last* block_size tokens, always numbered 0..block_size-1. Once the sequence is
longer than that, every new token shifts the window by one: the token that was at position 1 is now at
position 0, and so on. Its embedding changes (tok + pos), so its keys and values change in every layer, and
the whole cache is stale. Dropping the oldest entry ("sliding" the cache) would keep keys computed at the old
positions -- not what the reference computes. The exact fix is to throw the cache away and re-fill it from
the cropped window ("re-prefill"): one full forward over block_size tokens, which is exactly what the
reference does at that step. So the cache makes the steps *before* the window is full cheap, and batching
the samples makes every step, including the re-prefills, serve all samples at once.

refill_every=N (N > 1) trades exactness for speed: when the window is full, re-prefill only the last
block_size - N + 1 tokens, then append N - 1 tokens through the cache before the next re-prefill. The model
then sees between block_size - N + 1 and block_size tokens of context instead of exactly block_size, so the
text differs from the reference once the window is full (but one re-prefill serves N tokens).

A sliding-window model (GPTConfig.attn_pattern = "sliding", with rotary positions) has no such catch. Its
definition needs no cropping: in every layer position t reads only t - W + 1..t, and rotary positions make
that the same sum at any absolute position. So a key or value, once computed, never changes (it depends only
on text before it, and nothing is ever cropped away), and the last W of them per layer are all a new token
can read: `RollingKVCache` keeps exactly those W, writing each new position into the slot of the one that
just left the window (a ring). Generation then runs for any number of tokens with no re-prefill, at constant
memory and constant cost per token, and gives exactly the tokens of the model's own full forward over the
whole uncropped text (GPT.generate for such a model).

What a one-token step costs. At one sample, a step of a small model is about 140 tiny PyTorch operations
(4 layers of: norm, q/k/v projection, QK-norm, rotation, cache write, attention, output projection, norm, MLP),
each of a few hundred numbers, so their dispatch costs more than their arithmetic; a 64-token forward is the
same operations on 64 rows, and costs only a few times more. So this file keeps the step's operations few:
it runs under inference_mode, q and k are normalised and rotated together (model.CausalSelfAttention.qkv),
the rotary tables are sliced from a precomputed run (RotaryTable), and the caches index their layers once.
It still calls the model's own modules, so it follows every model option. docs/experiments.md ("Sliding-window
attention") has the measurements, and what a hand-written step would and would not buy.

The sampling itself is model.sample_next_token, shared with the reference: same logits, same draws.

    generate(model, idx, max_new_tokens, temperature, top_k, generator=g)   # == model.generate(...)
    for next_token in stream(model, idx, ...): ...                          # one (B, 1) step at a time
"""

import math

import torch
from torch.nn import functional as F

from model import causal_mask, layer_mask, rotary_cos_sin, sample_next_token


class RotaryTable:
    """RoPE's cos and sin (model.rotary_cos_sin) for a run of `size` positions at a time, sliced at every step.

    Rebuilding the tables for one position costs about a dozen tiny operations, a real share of a one-token
    step (see the top); a slice costs two views. Every angle is computed on its own (position x frequency), so a row
    of this table is exactly the row rotary_cos_sin gives for that position alone. When the text runs past the
    run, the next `size` positions replace it: memory stays constant however long the text grows."""

    def __init__(self, head_size, device, size):
        self.head_size, self.device, self.size = head_size, device, size
        self.first, self.cos, self.sin = 0, None, None  # positions first..first+size-1, once filled

    def __call__(self, start, T):
        """(cos, sin) for positions start..start+T-1, each (T, hs)."""
        if self.cos is None or not self.first <= start <= start + T <= self.first + self.cos.size(0):
            self.first = start
            positions = torch.arange(start, start + max(T, self.size), device=self.device)  # (size,)
            self.cos, self.sin = rotary_cos_sin(positions, self.head_size)  # (size, hs) each
        i = start - self.first
        return self.cos[i : i + T], self.sin[i : i + T]  # (T, hs) each


class KVCache:
    """Every layer's keys and values for the positions 0..length-1 of a batch of sequences.

    Memory is allocated once for block_size positions, so appending is a copy into a slice, not a torch.cat.

    Why a full-attention model cannot simply drop its oldest entry and go on, even with rotary positions: in
    layer 1 and up, a cached key still carries what its token saw when it was made, including tokens that have
    since left the window, while the crop-and-recompute reference recomputes every key from the window alone.
    Only a model whose own definition is a window -- a sliding model, see RollingKVCache -- can keep them.
    """

    def __init__(self, config, batch_size, device, dtype=torch.float32):
        head_size = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (n_layer, B, nh, block_size, hs)
        self.values = torch.zeros(shape, device=device, dtype=dtype)  # (n_layer, B, nh, block_size, hs)
        # each layer's (B, nh, block_size, hs) views, indexed once here rather than at every step
        self.layers = [(self.keys[i], self.values[i]) for i in range(config.n_layer)]
        self.length = 0  # how many positions are filled
        self.capacity = config.block_size
        self.rotary = RotaryTable(head_size, device, config.block_size) if config.pos_emb == "rope" else None

    def add(self, layer, k, v, attn):
        """Store k, v (B, nh, T, hs) at positions length..length+T-1 of `layer`; return the keys and values of
        all positions so far, each (B, nh, length+T, hs), and which of them each new position may read: the
        (T, length+T) rows of attn's pattern, or None when all of them. `length` itself moves on in `forward`
        once every layer has added its part."""
        T = k.size(2)
        start, end = self.length, self.length + T
        keys, values = self.layers[layer]  # (B, nh, block_size, hs) each
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        # new position i sits at start+i and may read 0..start+i (or its pattern's part of them); a single new
        # position under plain causal attention may read every position so far, so it needs no mask
        mask = layer_mask(attn, T, first=start, device=k.device, explicit=T > 1)  # (T, end) bool, or None
        return keys[:, :, :end], values[:, :, :end], mask


class RollingKVCache:
    """For a sliding-window model: every layer's keys and values for the last `window` (W) positions only.

    Position p lives in slot p % W, so a new position overwrites the one that has just left every query's
    window: a ring buffer. The slots are then out of order, which attention does not mind: a softmax-weighted
    sum over keys does not depend on their order, and each key was rotated for its own absolute position when
    it was made (RoPE), so it carries its position with it. Memory: 2 x n_layer x B x nh x W x hs numbers,
    however long the text grows; `length` (the next absolute position) is the only thing that keeps counting.
    """

    def __init__(self, config, batch_size, device, dtype=torch.float32):
        if config.attn_pattern != "sliding":
            raise ValueError(f"a rolling cache needs a sliding-window model, got attn_pattern {config.attn_pattern!r}")
        self.window = config.attn_window
        shape = (config.n_layer, batch_size, config.n_head, self.window, config.n_embd // config.n_head)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (n_layer, B, nh, W, hs)
        self.values = torch.zeros(shape, device=device, dtype=dtype)  # (n_layer, B, nh, W, hs)
        # each layer's (B, nh, W, hs) views, indexed once here rather than at every step
        self.layers = [(self.keys[i], self.values[i]) for i in range(config.n_layer)]
        self.length = 0  # positions seen so far: the absolute position of the next token
        self.capacity = math.inf  # no end: the ring is re-used forever
        # a sliding model has rotary positions; block_size of them at a time (a prompt comes in such chunks)
        self.rotary = RotaryTable(config.n_embd // config.n_head, device, config.block_size)

    def add(self, layer, k, v, attn=None):
        """Store k, v (B, nh, T, hs) for positions length..length+T-1 of `layer` (only the last W of them stay);
        return the keys and values the new positions may read, each (B, nh, S, hs), and a (T, S) bool mask
        saying which of them each one may read (None: all of them)."""
        T, W, start = k.size(2), self.window, self.length
        keys, values = self.layers[layer]  # (B, nh, W, hs) each: views into the ring
        if T == 1:  # the generation step: one slot, then every filled slot is inside the new query's window
            slot = start % W
            keys[:, :, slot : slot + 1] = k  # (B, nh, 1, hs)
            values[:, :, slot : slot + 1] = v
            if start + 1 >= W:  # the ring is full: all of it, as it is (no slicing: each op counts at T = 1)
                return keys, values, None  # (B, nh, W, hs) each
            return keys[:, :, : start + 1], values[:, :, : start + 1], None  # positions 0..start: slots 0..start
        # Several new positions (a prompt): the cached positions that are still inside some new query's window
        # (the last W - 1), oldest first, then the new ones; the band mask says who reads whom.
        old = torch.arange(max(0, start - (W - 1)), start, device=k.device)  # (n_old,) absolute positions
        all_keys = torch.cat((keys[:, :, old % W], k), dim=2)  # (B, nh, n_old+T, hs)
        all_values = torch.cat((values[:, :, old % W], v), dim=2)  # (B, nh, n_old+T, hs)
        mask = causal_mask(T, len(old) + T, first_query=len(old), window=W, device=k.device)  # (T, n_old+T)
        kept = torch.arange(start, start + T, device=k.device)[-W:]  # the new positions that stay in the ring
        keys[:, :, kept % W] = k[:, :, -W:]
        values[:, :, kept % W] = v[:, :, -W:]
        return all_keys, all_values, mask


def make_cache(model, batch_size, device, dtype=torch.float32):
    """The cache that suits the model: a rolling window for a sliding model, else one of block_size positions."""
    kind = RollingKVCache if model.config.attn_pattern == "sliding" else KVCache
    return kind(model.config, batch_size, device, dtype)


def cache_bytes(cache):
    """Memory the cache's tensors hold: constant for both kinds (block_size or W positions per layer)."""
    return sum(t.numel() * t.element_size() for t in (cache.keys, cache.values))


def attention_with_cache(attn, x, cache, layer, rope=None):
    """model.CausalSelfAttention's forward for new tokens x (B, T, C) that sit at positions
    cache.length..cache.length+T-1, attending to the cached positions and to each other (causally).
    rope: the rotary tables for those positions (None with learned positions)."""
    B, T, C = x.shape
    q, k, v = attn.qkv(x, rope)  # 3 x (B, nh, T, hs): the model's own projections, QK-norm and rotation
    keys, values, mask = cache.add(layer, k, v, attn)  # (B, nh, S, hs) each: the positions they may read
    y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again (a copy only if T > 1)
    return attn.c_proj(y)  # (B, T, C)


def forward(model, idx, cache):
    """Run new tokens idx (B, T) through the model at positions cache.length.., filling the cache.
    Returns the logits for the last position only, (B, V): that is all generation needs."""
    B, T = idx.shape
    start = cache.length
    if start + T > cache.capacity:
        raise ValueError(f"{start} cached + {T} new positions do not fit in block_size {cache.capacity}")
    if cache.rotary is None:  # learned positions: model.embed adds them
        x, rope = model.embed(idx, start)  # (B, T, C), None
    else:  # what model.embed gives with rotary positions, its tables sliced from the cache's run of them
        x, rope = model.token_embedding(idx), cache.rotary(start, T)  # (B, T, C), 2 x (T, hs)
    for layer, block in enumerate(model.blocks):  # the same sums as Block.forward
        x = x + attention_with_cache(block.attn, block.ln_1(x), cache, layer, rope)  # (B, T, C)
        x = x + block.mlp(block.ln_2(x))  # (B, T, C)
    cache.length += T
    return model.lm_head(model.ln_f(x[:, -1, :]))  # (B, V)


@torch.inference_mode()  # like no_grad, and cheaper per operation: nothing here is ever differentiated
def stream(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, top_p=None,
           kv_cache=True, refill_every=1):
    """Yield the next token of every row of idx (B, T), as a (B, 1) tensor, max_new_tokens times.

    kv_cache=False runs the reference (model.generate) one step at a time, for comparison. The model must be
    in eval mode (no dropout): the cached path has no dropout at all. A sliding-window model gets a rolling
    cache (see the top): exact at every length, so refill_every does not apply to it.
    """
    if model.training:
        raise ValueError("call model.eval() before generating")
    if max_new_tokens <= 0:  # nothing to yield: not even the prompt's forward is needed
        return
    if not kv_cache:
        for _ in range(max_new_tokens):
            idx = model.generate(idx, 1, temperature, top_k, generator, top_p)  # (B, T+1)
            yield idx[:, -1:]
        return
    block_size = model.config.block_size
    if not 1 <= refill_every <= block_size:
        raise ValueError(f"refill_every must be between 1 and block_size ({block_size}), got {refill_every}")
    cache = make_cache(model, idx.size(0), idx.device, model.token_embedding.weight.dtype)
    if isinstance(cache, RollingKVCache):
        yield from stream_rolling(model, idx, max_new_tokens, cache, temperature, top_k, generator, top_p)
        return
    logits = forward(model, idx[:, -block_size:], cache)  # (B, V): prefill with the cropped prompt
    for step in range(max_new_tokens):
        next_token = sample_next_token(logits, temperature, top_k, generator, top_p).to(idx.device)  # (B, 1)
        yield next_token
        if step == max_new_tokens - 1:
            break  # no logits needed after the last token
        # only the last block_size tokens are ever read again: a long generation keeps no growing copy
        idx = torch.cat((idx[:, max(0, idx.size(1) - block_size + 1) :], next_token), dim=1)  # (B, <=block_size)
        if cache.length < block_size:
            logits = forward(model, next_token, cache)  # (B, V): one new position, the cache grows by one
        else:
            # The window is full: the new token pushes every position down, so the cache is stale (see top).
            # Start over from the last block_size - refill_every + 1 tokens (all of the window when exact).
            cache.length = 0
            logits = forward(model, idx[:, -(block_size - refill_every + 1) :], cache)  # (B, V)


def stream_rolling(model, idx, max_new_tokens, cache, temperature, top_k, generator, top_p):
    """stream() for a sliding model: the whole prompt (never cropped: the reference reads all of it), fed in
    chunks of block_size so that a long prompt costs block_size x (W + block_size) scores at a time, then one
    position per new token, forever."""
    for chunk in torch.split(idx, model.config.block_size, dim=1):  # (B, <=block_size) each
        logits = forward(model, chunk, cache)  # (B, V): the last chunk's are the prompt's last position's
    for step in range(max_new_tokens):
        next_token = sample_next_token(logits, temperature, top_k, generator, top_p).to(idx.device)  # (B, 1)
        yield next_token
        if step < max_new_tokens - 1:  # no logits needed after the last token
            logits = forward(model, next_token, cache)  # (B, V): one new position, the ring turns by one


def context_length(config):
    """How many of a prompt's last tokens the next token can depend on: the block_size window stream() crops to,
    or for a sliding-window model (never cropped) what n_layer windows of W tokens reach back, one after another.
    A prompt is read (sample.py) and encoded no further back than this."""
    if config.attn_pattern == "sliding":
        return config.n_layer * (config.attn_window - 1) + 1
    return config.block_size


def generation_memory(config, num_samples, max_new_tokens):
    """A generous estimate, in bytes, of what stream() needs for a batch of num_samples, as (on the model's
    device, in the process's own memory): the KV cache, the widest forward (a block_size prefill: its activations,
    its attention scores), the logits with what sampling sorts of them, the kept tokens; and sample.py's texts
    (about 8 bytes a token: a BPE token's few characters, twice while they are joined for printing)."""
    B, L, C, T, V = num_samples, config.n_layer, config.n_embd, config.block_size, config.vocab_size
    S = config.attn_window if config.attn_pattern == "sliding" else T  # positions a cache holds
    cache = 2 * L * B * S * C * 4
    prefill = B * T * 16 * C * 4 + B * config.n_head * T * (T + S) * 4
    sampling = B * V * 6 * 4 + B * (T + 1) * 8 * 2
    texts = B * (max_new_tokens * 8 * 2 + 1024)  # + a decoder and a few list entries per sample
    return cache + prefill + sampling, texts


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, top_p=None,
             kv_cache=True, refill_every=1):
    """Like model.generate: returns idx (B, T) extended to (B, T + max_new_tokens)."""
    new = list(stream(model, idx, max_new_tokens, temperature, top_k, generator, top_p, kv_cache, refill_every))
    return torch.cat([idx, *new], dim=1)  # (B, T + max_new_tokens)
