"""The checks of walkthrough steps 4-7 and the KV cache of step 9: attention, its mask, its heads, the block
(see exercises/checks.py)."""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from exercises.checker import Wrong, first_difference


def linear(n_in, n_out, bias=False, std=None):
    """An nn.Linear with random weights large enough that attention's scores are far from uniform."""
    layer = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0.0, std if std is not None else 1.0 / math.sqrt(n_in))
        if bias:
            layer.bias.normal_(0.0, 0.1)
    return layer


def reference_attention(q, k, v, causal):
    """babygpt's attention (model.explicit_attention) on (B, T, hs) inputs: one head. Returns out, weights."""
    from model import explicit_attention
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, T, T)
    if causal:
        future = torch.ones(q.size(1), k.size(1), dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    out = explicit_attention(q[:, None], k[:, None], v[:, None], causal)[:, 0]  # (B, T, hs)
    return out, F.softmax(scores, dim=-1)


def score_ratio(weights, q, k, causal=False):
    """If the learner's weights are softmax(r * q @ k^T / sqrt(hs)) for some factor r, that r (else None).
    With the causal mask only the last row, which sees every key, is compared."""
    reference = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, T, T)
    if causal:
        weights, reference = weights[:, -1:], reference[:, -1:]
    if not (weights > 0).all():
        return None
    mine = weights.detach().log()
    mine, reference = mine - mine.mean(-1, keepdim=True), reference - reference.mean(-1, keepdim=True)
    r = (mine * reference).sum() / (reference * reference).sum()
    if torch.allclose(mine, r * reference, atol=1e-3 * float(mine.abs().max()) + 1e-5):
        return r.item()
    return None


def masked_scores(q, k, causal, keep=None):
    """q @ k^T / sqrt(head_size), (B, T, T); with causal, -inf where keep is False (keep: the past, s <= t)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))
    if causal:
        T = q.size(1)
        keep = torch.ones(T, T, dtype=torch.bool).tril() if keep is None else keep
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores


def check_weights(c, weights, q, k, v, causal, B, T):
    """The shared part of attention_head and causal_mask: rows sum to 1, scale, query/key order."""
    sums = weights.detach().sum(-1)  # (B, T)
    bad = (sums - 1).abs() > 1e-4
    if bad.any():
        b, t = (int(i) for i in bad.nonzero()[0])
        said = f"row {t} of the attention weights sums to {sums[b, t].item():.2f}, not 1"
        scores = masked_scores(q, k, causal)
        mistakes = [(scores.softmax(-2), f"{said}: your softmax is over dim=1, the queries (each column sums to "
                                         f"1); take the softmax over the last dimension (dim=-1), the keys")]
        if causal:
            past = torch.ones(T, T, dtype=torch.bool).tril()
            mistakes.append((masked_scores(q, k, False).softmax(-1) * past,
                             f"{said}, and the future is 0: the mask was applied after the softmax. Set the "
                             f"future's scores to -inf before the softmax, so the weights of the past still sum "
                             f"to 1"))
        for result, message in mistakes:
            if c.same_as(weights, result):
                raise Wrong(message)
        raise Wrong(f"{said} (babygpt's weights are a softmax over the keys: every row sums to 1)")
    c.ok("every row of the weights sums to 1 (the softmax is over the keys)")
    expected_out, expected = reference_attention(q, k, v, causal)
    swapped = reference_attention(k, q, v, causal)[1]
    if not causal and c.same_as(weights, swapped):
        raise Wrong("your weights are babygpt's with query and key swapped: the scores are q @ k.transpose(-2, "
                    "-1), row t holds query t against every key")
    if not c.same_as(weights, expected):
        r = score_ratio(weights, q, k, causal)
        hs = q.size(-1)
        if r is not None and abs(r - math.sqrt(hs)) < 0.01 * math.sqrt(hs):
            raise Wrong(f"your scores are {r:.2f}x babygpt's, that is sqrt(head_size) = sqrt({hs}): did you "
                        f"divide q @ k^T by sqrt(head_size)?")
        if r is not None and abs(r - 1 / math.sqrt(hs)) < 0.01:
            raise Wrong(f"your scores are {r:.2f}x babygpt's, 1/sqrt({hs}): divide by sqrt(head_size), not by "
                        f"head_size")
        if r is not None:
            raise Wrong(f"your scores are {r:.2f}x babygpt's: they should be q @ k^T / sqrt(head_size)")
        raise Wrong(f"the attention weights differ from babygpt's: {first_difference(weights, expected)}")
    c.ok("the weights are softmax(q @ k^T / sqrt(head_size)), as babygpt's")
    return expected_out


def check_attention_head(c):
    B, T, C, hs = 2, 6, 16, 8
    x = torch.randn(B, T, C)
    query, key, value = linear(C, hs), linear(C, hs), linear(C, hs)
    got = c.call("attention_head", x, query, key, value)
    out, weights = c.pair(got, "attention_head", ("out", "weights"))
    c.tensor(out, "the output", (B, T, hs), "(B, T, head_size)")
    c.tensor(weights, "the weights", (B, T, T), "(B, T, T)")
    c.ok(f"out has shape (B, T, head_size) = {(B, T, hs)}, weights (B, T, T) = {(B, T, T)}")
    with torch.no_grad():
        q, k, v = query(x), key(x), value(x)
    if c.same_as(weights, masked_scores(q, k, True).softmax(-1)):
        raise Wrong("your weights are 0 above the diagonal: this head has no mask yet, every position reads "
                    "every position (the mask is the next exercise, causal_mask)")
    expected_out = check_weights(c, weights, q, k, v, False, B, T)
    w = weights.detach()
    c.match(out, expected_out, "the output", [
        (w @ k, "your weights are right, but the output averages the keys: it is weights @ v, the values"),
        (w @ q, "your weights are right, but the output averages the queries: it is weights @ v, the values"),
        (w.transpose(-2, -1) @ v, "the output uses the transposed weights: out = weights @ v"),
    ])
    c.ok("the output is the weights times the values, as babygpt's")


def check_causal_mask(c):
    B, T, hs = 2, 7, 8
    q, k, v = torch.randn(B, T, hs), torch.randn(B, T, hs), torch.randn(B, T, hs)
    changed_v, changed_k = v.clone(), k.clone()
    changed_v[:, 5] += 1.0
    changed_k[:, 5] += 1.0
    results = c.script(("causal_attention", (q, k, v)), ("causal_attention", (q, changed_k, changed_v)))
    out, weights = c.pair(results[0], "causal_attention", ("out", "weights"))
    c.tensor(out, "the output", (B, T, hs), "(B, T, head_size)")
    c.tensor(weights, "the weights", (B, T, T), "(B, T, T)")
    c.ok(f"out has shape (B, T, head_size) = {(B, T, hs)}, weights (B, T, T) = {(B, T, T)}")
    w = weights.detach()
    past = torch.ones(T, T, dtype=torch.bool).tril()
    if torch.isnan(w).any():
        t = int(torch.isnan(w).any(-1).any(0).nonzero()[0])
        said = f"row {t} of the weights is NaN"
        for result, message in [
            (masked_scores(q, k, True, keep=~past).softmax(-1),
             f"{said}: your mask is inverted. It hides each position and its past and keeps only the future (the "
             f"last position, with nothing left to read, gets NaN). Hide the future instead: -inf where key s "
             f"comes after query t (s > t), torch.tril keeps the rest"),
            (masked_scores(q, k, True, keep=past.tril(-1)).softmax(-1),
             f"{said}: position {t} may see nothing, all its scores are -inf. Every position may read itself: "
             f"keep the diagonal (torch.tril keeps it, column <= row)"),
        ]:
            if c.same_as(w, result):
                raise Wrong(message)
        raise Wrong(f"{said} (a softmax of a row whose scores are all -inf is NaN); babygpt's rows are numbers "
                    f"that sum to 1")
    if c.same_as(w, masked_scores(q, k, True, keep=past.T).softmax(-1)):
        raise Wrong("position 0 reads the positions after it and the last position reads only itself: the "
                    "triangle is upside down. Keep the past, torch.tril: key s is allowed for query t if s <= t")
    future = w.triu(1)
    if future.abs().max() > 1e-7:
        b, t, s = (int(i) for i in (future.abs() > 1e-7).nonzero()[0])
        zero_scores = masked_scores(q, k, False).masked_fill(~past, 0.0).softmax(-1)
        if c.same_as(w, zero_scores):
            raise Wrong(f"position {t} gives weight {w[b, t, s].item():.2f} to position {s}: the future's scores "
                        f"were set to 0, not -inf, and e^0 = 1 still counts. Use float('-inf')")
        raise Wrong(f"position {t} gives weight {w[b, t, s].item():.2f} to position {s}, which comes after it: "
                    f"the mask lets it see the future")
    c.ok("no position gives weight to a later one")
    expected_out = check_weights(c, w, q, k, v, True, B, T)
    c.match(out, expected_out, "the output", [(w @ k, "your weights are right, but the output averages the "
                                                      "keys: it is weights @ v, the values")])
    out2, _ = c.pair(results[1], "causal_attention", ("out", "weights"))
    c.tensor(out2, "the output", (B, T, hs), "(B, T, head_size)")
    moved = (out2.detach() - out.detach()).abs().amax(dim=(0, 2)) > 1e-6  # (T,)
    if moved[:5].any():
        t = int(moved[:5].nonzero()[0])
        raise Wrong(f"position {t}'s output changes when position 5 changes: the mask lets it see the future")
    c.ok("changing position 5 changes only positions 5 and later, as babygpt's")


def heads_attention(x, c_attn, c_proj, n_head, scale=None, causal=True, project=True, split=True, merge=True,
                    mask_after=False, softmax_dim=-1):
    """Multi-head attention with switches, to recognise what a mistake returns (all switches at their default:
    babygpt's). split/merge False: heads cut with view alone, which mixes positions."""
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
    if split:
        q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    else:
        q, k, v = (t.reshape(B, n_head, T, hs) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(scale or hs)  # (B, nh, T, T)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    if causal and not mask_after:
        scores = scores.masked_fill(future, float("-inf"))
    weights = scores.softmax(softmax_dim)
    if causal and mask_after:
        weights = weights.masked_fill(future, 0.0)
    y = weights @ v  # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C) if merge else y.reshape(B, T, C)
    return c_proj(y) if project else y


def check_multi_head(c):
    from model import CausalSelfAttention, GPTConfig
    B, T, C, nh = 2, 6, 16, 4
    x = torch.randn(B, T, C)
    c_attn, c_proj = linear(C, 3 * C, bias=True), linear(C, C, bias=True)
    changed = x.clone()
    changed[:, 4] += 1.0
    results = c.script(("multi_head_attention", (x, c_attn, c_proj, nh)),
                       ("multi_head_attention", (changed, c_attn, c_proj, nh)))
    out = c.tensor(results[0], "the output", (B, T, C), "(B, T, C)")
    c.ok(f"the output has shape (B, T, C) = {(B, T, C)}")
    reference = CausalSelfAttention(GPTConfig(block_size=T, vocab_size=2, n_embd=C, n_head=nh))
    reference.c_attn.load_state_dict(c_attn.state_dict())
    reference.c_proj.load_state_dict(c_proj.state_dict())
    with torch.no_grad():
        expected = reference(x)
        hs = C // nh
        mistakes = [
            (heads_attention(x, c_attn, c_proj, nh, project=False),
             "your output is the heads' outputs side by side, before c_proj: finish with c_proj, which mixes them"),
            (heads_attention(x, c_attn, c_proj, 1),
             f"your output is what one head of size C = {C} gives: split C into n_head = {nh} heads of size "
             f"C // n_head = {hs}, view(B, T, n_head, hs).transpose(1, 2)"),
            (heads_attention(x, c_attn, c_proj, nh, scale=C),
             f"your scores are divided by sqrt(C) = sqrt({C}); each head divides by sqrt(head_size) = sqrt({hs})"),
            (heads_attention(x, c_attn, c_proj, nh, scale=1),
             f"your scores are sqrt(head_size) = {math.sqrt(hs):.1f}x babygpt's: did you divide by "
             f"sqrt(head_size)?"),
            (heads_attention(x, c_attn, c_proj, nh, merge=False),
             "the heads are put back together with view(B, T, C) straight from (B, nh, T, hs), which mixes "
             "positions: transpose(1, 2) first, y.transpose(1, 2).contiguous().view(B, T, C)"),
            (heads_attention(x, c_attn, c_proj, nh, split=False),
             "the heads are cut with view(B, n_head, T, hs) straight from (B, T, C), which mixes positions: "
             "view(B, T, n_head, hs).transpose(1, 2)"),
            (heads_attention(x, c_attn, c_proj, nh, causal=False),
             "position 0's output depends on later positions: the mask lets it see the future"),
            (heads_attention(x, c_attn, c_proj, nh, mask_after=True),
             "the mask was applied after the softmax: the future's weights are 0, but the softmax counted the "
             "future's scores, so each row of weights sums to less than 1 and depends on later positions. Set "
             "the future's scores to -inf before the softmax"),
            (heads_attention(x, c_attn, c_proj, nh, softmax_dim=-2),
             "your softmax is over dim=-2, the queries: each key's weights sum to 1 over the positions that "
             "read it, so a position's output depends on later ones. Take the softmax over the last dimension "
             "(dim=-1), the keys"),
        ]
    moved = (c.tensor(results[1], "the output", (B, T, C), "(B, T, C)").detach() - out.detach()).abs()
    moved = moved.amax(dim=(0, 2)) > 1e-6  # (T,)
    if moved[:4].any() and not c.same_as(out, expected):
        for result, message in mistakes:
            if c.same_as(out, result):
                raise Wrong(message)
        t = int(moved[:4].nonzero()[0])
        raise Wrong(f"position {t}'s output changes when position 4's input changes (babygpt's position {t} "
                    f"depends only on positions 0..{t})")
    c.ok("changing position 4 changes only positions 4 and later")
    c.match(out, expected, "the output", mistakes)
    c.ok("the output equals babygpt's CausalSelfAttention with the same weights")


def check_block(c):
    from model import MLP, CausalSelfAttention, GPTConfig
    B, T, C = 2, 5, 16
    config = GPTConfig(block_size=T, vocab_size=2, n_embd=C, n_head=4)
    ln_1, ln_2, attn, mlp = nn.LayerNorm(C), nn.LayerNorm(C), CausalSelfAttention(config), MLP(config)
    with torch.no_grad():
        for p in [*ln_1.parameters(), *ln_2.parameters()]:  # gains and biases that tell ln_1 and ln_2 apart
            p.normal_(0.5, 0.5)
        for p in [*attn.parameters(), *mlp.parameters()]:
            p.normal_(0.0, 0.3)
    x = torch.randn(B, T, C)
    out = c.tensor(c.call("block", x, ln_1, attn, ln_2, mlp), "the output", (B, T, C), "(B, T, C)")
    c.ok(f"the output has shape (B, T, C) = {(B, T, C)}")
    with torch.no_grad():
        h = x + attn(ln_1(x))
        expected = h + mlp(ln_2(h))
        post = ln_1(x + attn(x))
        normed = ln_1(x)
        normed = normed + attn(normed)
        normed = ln_2(normed)
        mlp_first = x + mlp(ln_2(x))
        mistakes = [
            (mlp(ln_2(attn(ln_1(x)))),
             "no residual: the output should be x plus what each sub-layer adds, x = x + attn(ln_1(x)), "
             "then x = x + mlp(ln_2(x))"),
            (ln_2(post + mlp(post)),
             "this is the post-norm block (the original paper's): babygpt normalises the copy each sub-layer "
             "reads, not the sum: x = x + attn(ln_1(x))"),
            (normed + mlp(normed),
             "you normalised the stream itself: the residual adds attn(ln_1(x)) to the un-normalised x"),
            (mlp_first + attn(ln_1(mlp_first)),
             "the MLP runs before attention: communicate first (attention), then compute (the MLP)"),
            (h + mlp(ln_1(h)), "the MLP reads ln_1(x): each sub-layer has its own LayerNorm, the MLP uses ln_2"),
            (x + attn(ln_1(x)) + mlp(ln_2(x)),
             "the MLP reads the block's input, not the stream after attention was added: x = x + attn(...) "
             "first, then x = x + mlp(ln_2(x)) on that new x"),
        ]
    c.match(out, expected, "the output", mistakes)
    c.ok("x + attn(ln_1(x)), then + mlp(ln_2(x)): the same as babygpt's Block")


def check_kv_cache(c):
    from model import explicit_attention
    B, nh, T, hs = 2, 2, 5, 4
    q, k, v = torch.randn(B, nh, T, hs), torch.randn(B, nh, T, hs), torch.randn(B, nh, T, hs)
    full = explicit_attention(q, k, v, causal=True)  # (B, nh, T, hs): recomputing everything
    results = c.script(*[("cached_attention_step", (q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
                                                     k[:, :, :t], v[:, :, :t])) for t in range(T)])
    for t in range(T):
        step = slice(t, t + 1)
        got = results[t]
        out, cache_k, cache_v = c.pair(got, "cached_attention_step", ("out", "cache_k", "cache_v"))
        c.tensor(cache_k, f"after step {t + 1}, cache_k", (B, nh, t + 1, hs), "(B, nh, t + 1, hs)")
        c.tensor(cache_v, f"after step {t + 1}, cache_v", (B, nh, t + 1, hs), "(B, nh, t + 1, hs)")
        if t and torch.equal(cache_k, torch.cat((k[:, :, step], k[:, :, :t]), dim=2)):
            raise Wrong(f"after step {t + 1} the new key is at the front of the cache: append it at the end, "
                        f"torch.cat((cache_k, k), dim=2), so the cache stays in position order")
        if not (torch.equal(cache_k, k[:, :, :t + 1]) and torch.equal(cache_v, v[:, :, :t + 1])):
            raise Wrong(f"after step {t + 1} the cache should hold the keys and values of positions 0..{t} in "
                        f"order: the old cache, then the new k and v")
        c.tensor(out, f"at step {t + 1}, the output", (B, nh, 1, hs), "(B, nh, 1, hs)")
        keys, values = k[:, :, :t + 1], v[:, :, :t + 1]
        mistakes = [
            (v[:, :, :1].expand_as(out), "your new position reads only key 0: a causal mask built for a single "
                                         "query (torch.tril of a 1 x (t+1) shape) hides the rest. The newest "
                                         "position may read every cached key: it needs no mask"),
            (F.softmax(q[:, :, step] @ keys.transpose(-2, -1), dim=-1) @ values,
             f"your scores are sqrt(head_size) = {math.sqrt(hs):.0f}x babygpt's: divide by sqrt(head_size)"),
        ]
        itself = "your new position does not read itself: add its k and v to the cache first, then attend " \
                 "over all t + 1 of them"
        mistakes.append((explicit_attention(q[:, :, step], k[:, :, :t], v[:, :, :t], causal=False) if t
                         else torch.zeros_like(out), itself))
        c.match(out, full[:, :, step], f"at step {t + 1}, the output", mistakes)
    c.ok("the cache grows by one position per step, (B, nh, t + 1, hs), in order")
    c.ok(f"every step's output equals the full causal attention recomputed over all {T} positions")
