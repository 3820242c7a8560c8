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

With rotary position embeddings (relative positions) the window could slide instead: see `KVCache`.
The sampling itself is model.sample_next_token, shared with the reference: same logits, same draws.

    engine.generate(model, idx, max_new_tokens, temperature, top_k, generator=g)   # == model.generate(...)
    for next_token in engine.stream(model, idx, ...): ...                          # one (B, 1) step at a time
"""

import torch
from torch.nn import functional as F

from model import sample_next_token


class KVCache:
    """Every layer's keys and values for the positions 0..length-1 of a batch of sequences.

    Memory is allocated once for block_size positions, so appending is a copy into a slice, not a torch.cat.

    Where a sliding window would go: with rotary position embeddings, attention sees only the distance between
    two positions, so a full cache could drop its oldest entry and keep going (shift the tensors left by one)
    instead of being re-filled. Note what that computes: in layer 1 and up, a cached key still carries what
    its token saw when it was made, including tokens that have since left the window. That is a fine model of
    its own (a "streaming" window), but no longer the crop-and-recompute reference of GPT.generate, which
    recomputes every key from the window alone; only a one-layer model gives the same tokens both ways.
    """

    def __init__(self, config, batch_size, device, dtype=torch.float32):
        head_size = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (n_layer, B, nh, block_size, hs)
        self.values = torch.zeros(shape, device=device, dtype=dtype)  # (n_layer, B, nh, block_size, hs)
        self.length = 0  # how many positions are filled
        self.capacity = config.block_size

    def add(self, layer, k, v):
        """Store k, v (B, nh, T, hs) at positions length..length+T-1 of `layer`; return the keys and values of
        all positions so far, each (B, nh, length+T, hs). `length` itself moves on in `forward` once every
        layer has added its part."""
        start, end = self.length, self.length + k.size(2)
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


def attention_with_cache(attn, x, cache, layer, rope=None):
    """model.CausalSelfAttention's forward for new tokens x (B, T, C) that sit at positions
    cache.length..cache.length+T-1, attending to the cached positions and to each other (causally).
    rope: the rotary tables for those positions (None with learned positions)."""
    B, T, C = x.shape
    q, k, v = attn.qkv(x, rope)  # 3 x (B, nh, T, hs): the model's own projections, QK-norm and rotation
    start = cache.length
    keys, values = cache.add(layer, k, v)  # (B, nh, start+T, hs) each
    if attn.pattern is not None:
        # a sparse pattern (e.g. BigBird): the rows of the new positions, over every position so far
        mask = attn.pattern[start : start + T, : start + T]  # (T, start+T)
    elif T == 1:
        mask = None  # the one new token may look at every position before it, and at itself
    else:
        # new token i sits at position start+i and may look at positions 0..start+i
        mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)  # (T, start+T)
    y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, nh, T, hs)
    y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
    return attn.c_proj(y)  # (B, T, C)


def forward(model, idx, cache):
    """Run new tokens idx (B, T) through the model at positions cache.length.., filling the cache.
    Returns the logits for the last position only, (B, V): that is all generation needs."""
    B, T = idx.shape
    start = cache.length
    if start + T > cache.capacity:
        raise ValueError(f"{start} cached + {T} new positions do not fit in block_size {cache.capacity}")
    x, rope = model.embed(idx, start)  # (B, T, C), and rotary tables for positions start.. (or None)
    for layer, block in enumerate(model.blocks):  # the same sums as Block.forward
        x = x + attention_with_cache(block.attn, block.ln_1(x), cache, layer, rope)  # (B, T, C)
        x = x + block.mlp(block.ln_2(x))  # (B, T, C)
    cache.length += T
    return model.head(x[:, -1, :])  # (B, V)


@torch.no_grad()
def stream(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, top_p=None,
           kv_cache=True, refill_every=1):
    """Yield the next token of every row of idx (B, T), as a (B, 1) tensor, max_new_tokens times.

    kv_cache=False runs the reference (model.generate) one step at a time, for comparison. The model must be
    in eval mode (no dropout): the cached path has no dropout at all.
    """
    if model.training:
        raise ValueError("call model.eval() before generating")
    if not kv_cache:
        for _ in range(max_new_tokens):
            idx = model.generate(idx, 1, temperature, top_k, generator, top_p)  # (B, T+1)
            yield idx[:, -1:]
        return
    block_size = model.config.block_size
    if not 1 <= refill_every <= block_size:
        raise ValueError(f"refill_every must be between 1 and block_size ({block_size}), got {refill_every}")
    dtype = model.token_embedding.weight.dtype
    cache = KVCache(model.config, idx.size(0), idx.device, dtype)
    logits = forward(model, idx[:, -block_size:], cache)  # (B, V): prefill with the cropped prompt
    for step in range(max_new_tokens):
        next_token = sample_next_token(logits, temperature, top_k, generator, top_p).to(idx.device)  # (B, 1)
        yield next_token
        if step == max_new_tokens - 1:
            break  # no logits needed after the last token
        idx = torch.cat((idx, next_token), dim=1)  # (B, T+1)
        if cache.length < block_size:
            logits = forward(model, next_token, cache)  # (B, V): one new position, the cache grows by one
        else:
            # The window is full: the new token pushes every position down, so the cache is stale (see top).
            # Start over from the last block_size - refill_every + 1 tokens (all of the window when exact).
            cache.length = 0
            logits = forward(model, idx[:, -(block_size - refill_every + 1) :], cache)  # (B, V)


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, top_p=None,
             kv_cache=True, refill_every=1):
    """Like model.generate: returns idx (B, T) extended to (B, T + max_new_tokens)."""
    new = list(stream(model, idx, max_new_tokens, temperature, top_k, generator, top_p, kv_cache, refill_every))
    return torch.cat([idx, *new], dim=1)  # (B, T + max_new_tokens)
