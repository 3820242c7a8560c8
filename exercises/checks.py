"""
The checks, one per exercise, in the walkthrough's order: check_NAME(c) calls the learner's code through
c.call(...) (in a child process, see exercises/sandbox.py), records what holds with c.ok(...), and raises
Wrong(message) at the first thing that does not. A known mistake is named only when the learner's numbers
equal what that mistake computes (c.match, and the mistake tables below); otherwise the verdict is the neutral
"expected ... got ... at ..." line. Every reference value is computed here, in the checker's own process,
which never runs the learner's code.
"""

import math

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from exercises import NAMES
from exercises.checker import Later, Verdict, Wrong, describe, first_difference
from exercises.pipe_format import Made



def check_vocabulary(c):
    text = "hello world\nHELLO, World!"
    chars = sorted(set(text))
    stoi, itos = c.pair(c.call("build_vocabulary", text), "build_vocabulary", ("stoi", "itos"))
    if not isinstance(stoi, dict):
        raise Wrong(f"stoi should be a dict from character to number, yours is {describe(stoi)}")
    if len(stoi) != len(chars) or len(itos) != len(chars):
        raise Wrong(f"the text has {len(chars)} distinct characters, but your stoi has {len(stoi)} entries and "
                    f"itos {len(itos)}: each character once (set(text))")
    numbers = sorted(stoi.values())
    if numbers == list(range(1, len(chars) + 1)):
        raise Wrong("your numbers start at 1: the first character is number 0 (enumerate counts from 0), so "
                    "that the numbers are the rows 0..V-1 of the embedding table")
    if numbers != list(range(len(chars))):
        raise Wrong(f"the numbers should be 0..{len(chars) - 1}, each once; yours are {numbers}")
    c.ok(f"{len(chars)} distinct characters, numbered 0..{len(chars) - 1}")
    order = [ch for ch, _ in sorted(stoi.items(), key=lambda kv: kv[1])]
    if order != chars:
        if order == list(dict.fromkeys(text)):
            raise Wrong("your characters are numbered in the order they first appear; babygpt sorts them "
                        "(sorted(set(text))), so the numbers do not depend on where the text starts")
        raise Wrong(f"character 0 should be {chars[0]!r} and character 1 {chars[1]!r} (sorted order), yours are "
                    f"{order[0]!r} and {order[1]!r}: sort the characters, sorted(set(text))")
    if any(itos[i] != ch for i, ch in enumerate(chars)):
        raise Wrong("itos is not the reverse of stoi: itos[stoi[ch]] should be ch for every character")
    c.ok("sorted, as prepare.py numbers them; itos is the reverse of stoi")
    expected = [stoi[ch] for ch in "hello"]
    later = c.script(("encode", ("hello", stoi)), ("decode", (expected, itos)), ("encode", (text, stoi)),
                     ("decode", (Later(2), itos)))
    ids = later[0]
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if list(ids) != expected:
        raise Wrong(f"encode('hello') should be {expected}, yours is {ids!r}")
    c.ok(f"encode('hello') = {expected}")
    back = later[1]
    if not isinstance(back, str):
        raise Wrong(f"decode should return one string, yours returned {describe(back)}: join the characters, "
                    f"''.join(...)")
    if back != "hello":
        raise Wrong(f"decode(encode('hello')) should be 'hello', yours is {back!r}")
    if later[3] != text:
        raise Wrong("decode(encode(text)) is not the text again")
    c.ok("decode(encode(text)) gives the text back")


def check_get_batch(c):
    import train  # the reference (imported here: it is slow to import)
    data = np.arange(300, dtype=np.uint16)  # token i at position i: a window shows where it was cut
    B, T = 4, 8
    short = np.arange(T + 1, dtype=np.uint16)  # exactly one window fits
    # the second call, with a generator seeded the same, sees another global random state (the first call's
    # draws moved it on): only the generator may fix the batches
    results = c.script(("get_batch", (data, B, T, torch.Generator().manual_seed(1))),
                       ("get_batch", (data, B, T, torch.Generator().manual_seed(1))),
                       ("get_batch", (short, 2, T, torch.Generator().manual_seed(0))))
    x, y = c.pair(results[0], "get_batch", ("x", "y"))
    c.tensor(x, "x", (B, T), "(batch_size, block_size)", dtype=None)
    c.tensor(y, "y", (B, T), "(batch_size, block_size)", dtype=None)
    for name, t in (("x", x), ("y", y)):
        if t.dtype != torch.long:
            raise Wrong(f"{name} has dtype {t.dtype}; token ids go into nn.Embedding, which wants torch.long "
                        f"(int64): .astype(np.int64) before torch.from_numpy, or .long()")
    c.ok(f"x and y have shape (batch_size, block_size) = {(B, T)}, dtype torch.long")
    if not torch.equal(x[:, 1:] - x[:, :-1], torch.ones(B, T - 1, dtype=torch.long)):
        raise Wrong(f"row 0 of x is {x[0].tolist()}, not a stretch of consecutive tokens of data: each row "
                    f"should be data[i : i + block_size] for a random start i")
    c.ok("every row of x is a window of consecutive tokens")
    if torch.equal(y, x):
        raise Wrong(f"y[0, 0] should be x[0, 1] = {x[0, 1].item()} (the token that follows x[0, 0]), but y is "
                    f"x itself: the targets are not shifted")
    if torch.equal(y, x - 1):
        raise Wrong(f"y[0, 0] is {y[0, 0].item()}, the token before x[0, 0]; it should be the one after it, "
                    f"x[0, 1] = {x[0, 1].item()}: y is data[i + 1 : i + 1 + block_size]")
    if not torch.equal(y, x + 1):
        raise Wrong(f"y[0, 0] should be x[0, 1] = {x[0, 0].item() + 1} (the token that follows x[0, 0]), yours "
                    f"is {y[0, 0].item()}: the targets are the same window shifted left by one")
    c.ok("y is x shifted by one: y[b, t] is the token after x[b, t]")
    again = c.pair(results[1], "get_batch", ("x", "y"))
    if not torch.equal(again[0], x):
        raise Wrong("two calls with generators seeded the same gave different batches: pass "
                    "generator=generator to torch.randint, so a seed fixes the batches")
    ref_x, _ = train.get_batch(data, B, T, torch.Generator().manual_seed(1))
    if not torch.equal(x, ref_x):
        raise Wrong(f"your windows start at {x[:, 0].tolist()}, train.get_batch's (same seed) at "
                    f"{ref_x[:, 0].tolist()}: draw the starts as the docstring says, torch.randint(len(data) - "
                    f"block_size, (batch_size,), generator=generator)")
    x1, y1 = c.pair(results[2], "get_batch", ("x", "y"))
    if not (torch.equal(x1[0], torch.arange(T)) and torch.equal(y1[0], torch.arange(1, T + 1))):
        raise Wrong(f"with len(data) = block_size + 1 the only window is data[0 : {T}]; yours starts at "
                    f"{x1[0, 0].item()}")
    c.ok("the same batches as train.get_batch for the same seed, up to the last window of the data")


def check_bigram(c):
    V, B, T = 65, 4, 16
    idx = torch.randint(V, (B, T))
    targets = torch.randint(V, (B, T))
    results = c.script(("BigramLanguageModel", (V,)), (Later(0), (idx,)), (Later(0), (idx, targets)))
    model = results[0]  # made in the child: what it is (the later calls use the model itself)
    if not (isinstance(model, Made) and model.is_module):
        raise Wrong(f"BigramLanguageModel should be an nn.Module, yours made {describe(model)}")
    n = model.n_params
    if n != V * V:
        raise Wrong(f"a bigram model is one (V, V) = ({V}, {V}) table, {V * V} numbers; yours has {n} parameters")
    c.ok(f"one ({V}, {V}) table of parameters")
    logits, loss = c.pair(results[1], "forward(idx)", ("logits", "loss"))
    c.tensor(logits, "the logits", (B, T, V), "(B, T, V)")
    if loss is not None:
        raise Wrong(f"without targets the loss should be None, yours is {describe(loss)}")
    if (logits >= 0).all() and torch.allclose(logits.sum(-1), torch.ones(B, T), atol=1e-4):
        raise Wrong("your logits look like probabilities (each row is positive and sums to 1): return the raw "
                    "scores; F.cross_entropy applies the softmax itself")
    same = idx == idx[0, 0]  # every place where the first token occurs again
    if not torch.allclose(logits[same], logits[0, 0].expand_as(logits[same]), atol=1e-6):
        raise Wrong("the same token gives different logits at different places: a bigram's logits are just the "
                    "table's row for the current token, table(idx)")
    c.ok(f"forward(idx) gives logits of shape (B, T, V) = {(B, T, V)} and loss None")
    logits, loss = c.pair(results[2], "forward(idx, targets)", ("logits", "loss"))
    c.tensor(loss, "the loss", ())
    expected = F.cross_entropy(logits.detach().reshape(B * T, V), targets.reshape(B * T))
    if not torch.allclose(loss.detach(), expected, rtol=1e-6, atol=1e-6):  # the same numbers: a fresh table's
        # logits are nearly uniform, so even a loss against the wrong targets comes close
        if torch.allclose(loss.detach(), expected * B * T, rtol=1e-4):
            raise Wrong(f"your loss is {B * T}x (B*T) the cross-entropy's mean: average over the positions "
                        f"(F.cross_entropy's default), do not sum")
        wrong_targets = F.cross_entropy(logits.detach().reshape(B * T, V), idx.reshape(B * T))
        if torch.allclose(loss.detach(), wrong_targets, rtol=1e-6, atol=1e-6):
            raise Wrong("your loss scores the logits against idx, the inputs: score them against targets")
        raise Wrong(f"your loss is {loss.item():.4f}, the cross-entropy of your logits against the targets is "
                    f"{expected.item():.4f}: F.cross_entropy(logits.view(B*T, V), targets.view(B*T))")
    if not loss.requires_grad:
        raise Wrong("your loss has no gradient (it is cut off from the table): do not use .item(), "
                    ".detach() or torch.tensor(...) on the way")
    c.ok("the loss is the mean cross-entropy over the B*T positions, and has a gradient")
    if abs(loss.item() - math.log(V)) > 0.1:
        raise Wrong(f"a fresh model's loss should be close to ln({V}) = {math.log(V):.2f} (a uniform guess); "
                    f"yours is {loss.item():.2f}: start the table's numbers small, "
                    f"nn.init.normal_(weight, std=0.02) (nn.Embedding starts them at std 1)")
    c.ok(f"the first loss is {loss.item():.2f}, close to ln({V}) = {math.log(V):.2f}")



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


def check_lm_loss(c):
    B, T, V = 3, 5, 11
    logits, targets = torch.randn(B, T, V) * 2, torch.randint(V, (B, T))
    results = c.script(("lm_loss", (logits, targets)), ("lm_loss", (logits.clone().requires_grad_(), targets)))
    loss = results[0]
    if isinstance(loss, torch.Tensor) and loss.numel() == B * T:
        raise Wrong(f"the loss should be a single number (shape ()), yours has shape {tuple(loss.shape)}: one "
                    f"loss per position; take their mean")
    c.tensor(loss, "the loss", ())
    c.ok("the loss is a single number")
    flat_logits, flat_targets = logits.reshape(B * T, V), targets.reshape(B * T)
    expected = F.cross_entropy(flat_logits, flat_targets)
    c.match(loss, expected, "the loss", [
        (expected * B * T, f"your loss is {B * T}x babygpt's (B*T = {B}*{T}): average over the positions "
                           f"(F.cross_entropy's default), do not sum"),
        (-expected, "your loss is negative: it is minus the mean log-probability of the right tokens"),
        (F.cross_entropy(flat_logits.softmax(-1), flat_targets),
         "you applied a softmax before F.cross_entropy: it takes the raw logits and applies the softmax itself"),
        (F.cross_entropy(logits[:, -1], targets[:, -1]),
         "you scored only the last position: every one of the B*T positions predicts its next token"),
        (F.cross_entropy(flat_logits, targets.transpose(0, 1).reshape(B * T)),
         "the targets are in another order than the logits: flatten both the same way, "
         "logits.view(B*T, V) and targets.view(B*T)"),
        (F.cross_entropy(logits[:, :-1].reshape(-1, V), targets[:, 1:].reshape(-1)),
         "you shifted the targets again: get_batch's y is already the next token of every position"),
    ])
    c.ok(f"the loss equals F.cross_entropy over the B*T = {B * T} positions")
    again = results[1]
    if not (isinstance(again, torch.Tensor) and again.requires_grad):
        raise Wrong("your loss has no gradient: do not use .item(), .detach() or torch.tensor(...) on the way")
    c.ok("the loss has a gradient for the logits")


LR_STEPS = {"warmup": (0, 4, 9), "decay": (10, 35, 60, 85, 109), "after": (110, 150, 200)}
LR_PHASES = {  # what babygpt's rate is in each phase: the neutral line's reminder
    "warmup": "during warmup babygpt's rate is learning_rate * (it + 1) / (warmup_iters + 1)",
    "decay": "from warmup_iters to decay_iters babygpt's rate is min_lr + 0.5 * (1 + cos(pi * progress)) * "
             "(learning_rate - min_lr), progress = (it - warmup_iters) / (decay_iters - warmup_iters)",
    "after": "from decay_iters on babygpt's rate is min_lr",
}


def schedule(it, lr, min_lr, warmup, decay, warmup_from_zero=False, progress_from_zero=False, shape="cosine",
             clamp=True):
    """The learning rate with switches, to recognise what a mistake computes (all at their default: babygpt's)."""
    if it < warmup:
        return lr * it / warmup if warmup_from_zero else lr * (it + 1) / (warmup + 1)
    if clamp and it >= decay:
        return min_lr
    progress = it / decay if progress_from_zero else (it - warmup) / (decay - warmup)
    falling = 0.5 * (1 + math.cos(math.pi * progress))  # 1 -> 0
    return {"cosine": min_lr + falling * (lr - min_lr), "rising": min_lr + (1 - falling) * (lr - min_lr),
            "no half": min_lr + 2 * falling * (lr - min_lr), "to zero": falling * lr,
            "line": lr + progress * (min_lr - lr)}[shape]


LR_MISTAKES = [  # (phase, switches, what it means): named only when every step of that phase is this mistake's
    ("warmup", {"warmup_from_zero": True},
     "your warmup starts at 0, so the first step learns nothing. babygpt's climbs from lr/(warmup+1): "
     "lr * (it + 1) / (warmup_iters + 1)"),
    ("decay", {"progress_from_zero": True},
     "at the end of warmup the decay starts from the peak, learning_rate. Measure its progress from there: "
     "(it - warmup_iters) / (decay_iters - warmup_iters)"),
    ("decay", {"shape": "rising"},
     "your cosine rises, from min_lr at the end of warmup to learning_rate at decay_iters; it should fall from "
     "learning_rate to min_lr: min_lr + 0.5 * (1 + cos(pi * progress)) * (learning_rate - min_lr)"),
    ("decay", {"shape": "no half"},
     "your decay starts at 2 * learning_rate - min_lr: 1 + cos(pi * progress) goes from 2 down to 0, so halve "
     "it, 0.5 * (1 + cos(pi * progress))"),
    ("decay", {"shape": "line"},
     "yours decays in a straight line; babygpt's follows a cosine, min_lr + 0.5 * (1 + cos(pi * progress)) * "
     "(learning_rate - min_lr)"),
    ("decay", {"shape": "to zero"},
     "yours decays to 0, babygpt's to min_lr: min_lr + 0.5 * (1 + cos(pi * progress)) * (learning_rate - min_lr)"),
    ("after", {"clamp": False},
     "after decay_iters your cosine goes on and climbs again; babygpt's rate stays at min_lr from decay_iters on"),
]


def check_lr_schedule(c):
    import train  # the reference (imported here: it is slow to import)
    lr, min_lr, warmup, decay = 1e-3, 1e-4, 10, 110
    cfg = train.TrainConfig(learning_rate=lr, min_lr=min_lr, warmup_iters=warmup, lr_decay_iters=decay,
                            max_iters=decay)
    steps = [it for phase in LR_STEPS.values() for it in phase]
    yours = {}
    for it, got in zip(steps, c.calls("learning_rate_at", [(it, lr, min_lr, warmup, decay) for it in steps])):
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_complex():
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise Wrong(f"learning_rate_at should return a number, yours returned {describe(got)} at step {it}")
        yours[it] = got

    def same(a, b):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    for phase, phase_steps in LR_STEPS.items():
        wrong = [it for it in phase_steps if not same(yours[it], train.learning_rate_at(it, cfg))]
        if not wrong:
            continue
        it = wrong[0]
        said = f"at step {it} yours is {yours[it]:.4g}, babygpt's {train.learning_rate_at(it, cfg):.4g}"
        for mistake_phase, switches, meaning in LR_MISTAKES:
            if mistake_phase == phase and all(same(yours[s], schedule(s, lr, min_lr, warmup, decay, **switches))
                                              for s in phase_steps):
                raise Wrong(f"{said}: {meaning}")
        raise Wrong(f"{said} ({LR_PHASES[phase]})")
    c.ok("warmup: a straight line from lr/(warmup+1) up to the peak")
    c.ok("then a cosine from the peak down to min_lr, and min_lr after decay_iters: train.learning_rate_at's")


def adam_variant(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, correct=True, decoupled=True,
                 square=True, eps_inside=False):
    """One Adam(W) step with switches, to recognise what a mistake returns (defaults: AdamW)."""
    if not decoupled:
        grad = grad + weight_decay * param  # L2: the decay goes through the moments
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * (grad * grad if square else grad)
    m_hat, v_hat = (m / (1 - beta1 ** step), v / (1 - beta2 ** step)) if correct else (m, v)
    if decoupled:
        param = param * (1 - lr * weight_decay)
    denominator = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    return param - lr * m_hat / denominator, m, v


class TorchAdamW:
    """torch.optim.AdamW's update for one tensor: the reference the learner's update must equal."""

    def __init__(self, param, lr, betas, eps, weight_decay):
        self.param = nn.Parameter(param.clone())
        self.optimizer = torch.optim.AdamW([self.param], lr=lr, betas=betas, eps=eps,
                                           weight_decay=weight_decay)

    def step(self, grad):
        """One update with this gradient; the new param, m and v (torch's exp_avg and exp_avg_sq)."""
        self.param.grad = grad.clone()
        self.optimizer.step()
        state = self.optimizer.state[self.param]
        return self.param.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone()


def check_adamw(c):
    lr, beta1, beta2, eps, weight_decay = 0.01, 0.9, 0.99, 1e-2, 0.1  # eps this big, so that its place shows
    param = torch.randn(4, 3)
    reference = TorchAdamW(param, lr, (beta1, beta2), eps, weight_decay)
    m, v = torch.zeros_like(param), torch.zeros_like(param)
    steps = []  # (the inputs of each step: babygpt's state after the step before, and the step's settings)
    for step in (1, 2, 3):
        grad = torch.randn(4, 3)
        steps.append(((param, grad, m, v), (step, lr, beta1, beta2, eps, weight_decay), reference.step(grad)))
        param, m, v = steps[-1][2]
    results = c.script(*[("adamw_update", (*state, *settings)) for state, settings, _ in steps])
    for i, ((param, grad, m, v), settings, (expected_param, expected_m, expected_v)) in enumerate(steps):
        step = settings[0]
        new_param, new_m, new_v = c.pair(results[i], "adamw_update", ("param", "m", "v"))
        for what, t in (("the new param", new_param), ("the new m", new_m), ("the new v", new_v)):
            c.tensor(t, what, param.shape)
        at = f"at step {step}"
        l2 = adam_variant(param, grad, m, v, *settings, decoupled=False)
        c.match(new_m, expected_m, f"{at}, m", [
            (l2[1], "your weight decay goes through the moments (Adam with L2 regularisation): AdamW keeps it "
                    "out of m and v and shrinks the weights directly, param * (1 - lr * weight_decay)"),
            (grad, "m is a running mean of the gradients: beta1 * m + (1 - beta1) * grad, not the gradient"),
            (beta2 * m + (1 - beta2) * grad, "m uses beta2: m is beta1 * m + (1 - beta1) * grad, v uses beta2"),
        ])
        c.match(new_v, expected_v, f"{at}, v", [
            (adam_variant(param, grad, m, v, *settings, square=False)[2],
             "v is a running mean of the *squared* gradients: beta2 * v + (1 - beta2) * grad * grad"),
            (beta1 * v + (1 - beta1) * grad * grad, "v uses beta1: v is beta2 * v + (1 - beta2) * grad**2"),
        ])
        c.match(new_param, expected_param, f"{at}, the new param", [
            (adam_variant(param, grad, m, v, *settings, correct=False)[0],
             "no bias correction: m and v start at 0, so early on they are too small. Divide them by "
             "(1 - beta1**step) and (1 - beta2**step) before the update"),
            (adam_variant(param, grad, m, v, *settings, eps_inside=True)[0],
             "eps is inside the square root: AdamW divides by sqrt(v_hat) + eps"),
            (adam_variant(param, grad, m, v, *settings)[0] + lr * weight_decay * param - weight_decay * param,
             "the weight decay is not scaled by the learning rate: param * (1 - lr * weight_decay)"),
            (adam_variant(param, grad, m, v, *settings)[0] + lr * weight_decay * param,
             "no weight decay: shrink the weights, param * (1 - lr * weight_decay), before the update"),
            (l2[0], "your weight decay goes through the moments (Adam with L2 regularisation): AdamW shrinks "
                    "the weights directly, param * (1 - lr * weight_decay)"),
        ])
    c.ok("m and v: running means of the gradient and of its square")
    c.ok("the update, with bias correction and decoupled weight decay, equals torch.optim.AdamW's for 3 steps")


def spy_model(block_size=8, vocab_size=20, seed=0):
    """A small model.GPT with weights large enough that its next-token distributions are peaked (so that a
    mistake changes the tokens drawn), and a stand-in that records what it is given and stops the check (a
    Verdict) when it is given more than block_size tokens."""
    from model import GPT, GPTConfig
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.normal_(0.0, 0.7)

    class Spy:
        def __init__(self):
            self.inputs = []

        def __call__(self, idx, targets=None):
            self.inputs.append(idx.clone())
            if idx.size(1) > block_size:
                raise Verdict(f"at step {len(self.inputs)} the model was given {idx.size(1)} tokens, but it has "
                              f"only block_size = {block_size} positions: crop the context to the last "
                              f"block_size tokens, idx[:, -block_size:]")
            with torch.no_grad():
                return gpt(idx)
    return gpt, Spy()


def reference_probs(logits, temperature=1.0, top_k=None):
    logits = logits / temperature
    if top_k is not None:
        values, indices = torch.topk(logits, top_k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)
    return logits.softmax(-1)


def check_generate(c):
    B, V = 2, 20
    logits = torch.randn(B, V) * 2
    temperatures = (0.5, 2.0)
    results = c.script(("next_token_probs", (logits,)),
                       *[("next_token_probs", (logits,), {"temperature": t}) for t in temperatures],
                       ("next_token_probs", (logits,), {"top_k": 5}))
    probs = c.tensor(results[0], "the probabilities", (B, V), "(B, V)")
    sums = probs.detach().sum(-1)
    if not torch.allclose(sums, torch.ones(B), atol=1e-4):
        raise Wrong(f"row 0 of the probabilities sums to {sums[0].item():.3f}, not 1: softmax over the "
                    f"vocabulary, the last dimension")
    c.match(probs, reference_probs(logits), "the probabilities", [
        (logits, "these are the logits themselves: turn them into probabilities with a softmax")])
    c.ok("next_token_probs: softmax of the logits, each row sums to 1")
    for i, temperature in enumerate(temperatures, 1):
        got = results[i]
        c.match(got, reference_probs(logits, temperature), f"with temperature {temperature}, the probabilities", [
            (reference_probs(logits), f"temperature {temperature} changed nothing: divide the logits by it"),
            (reference_probs(logits, 1 / temperature),
             f"temperature {temperature} made the distribution {'flatter' if temperature < 1 else 'sharper'}: "
             f"divide the logits by the temperature (below 1: sharper), do not multiply"),
        ])
    c.ok("temperature divides the logits: 0.5 sharper, 2.0 flatter")
    got = c.tensor(results[3], "with top_k=5, the probabilities", (B, V))
    kept = int((got.detach()[0] > 0).sum())
    if kept != 5:
        raise Wrong(f"with top_k=5 row 0 keeps {kept} tokens with probability above 0: set all but the 5 largest "
                    f"logits to -inf before the softmax")
    if (got.detach().sum(-1) < 0.999).any():
        raise Wrong(f"with top_k=5 row 0 sums to {got.detach()[0].sum().item():.2f}, not 1: cut to the top k "
                    f"on the logits (-inf) before the softmax, not on the probabilities after it")
    c.match(got, reference_probs(logits, top_k=5), "with top_k=5, the probabilities")
    c.ok("top_k keeps exactly the k most likely tokens, and they sum to 1")

    gpt, spy = spy_model()
    block_size, n_new = gpt.config.block_size, 14
    prompt = torch.randint(V, (B, 3))
    every_settings = ({}, {"temperature": 0.7, "top_k": 5})
    spies = [spy_model()[1] for _ in every_settings]  # fresh ones, for babygpt's tokens with these settings

    def seeded(seed):
        return {"generator": torch.Generator().manual_seed(seed)}
    # the second run, with a generator seeded the same, sees another global random state (the first run's
    # draws moved it on): only the generator may fix the tokens
    runs = c.script(("generate", (spy, prompt, n_new, block_size), seeded(0), lambda: spy.inputs),
                    ("generate", (spy, prompt, n_new, block_size), seeded(0)),
                    *[("generate", (each, prompt, n_new, block_size), seeded(1) | settings)
                      for each, settings in zip(spies, every_settings)])
    out, inputs = runs[0], runs.watched[0]
    c.tensor(out, "the output", (B, 3 + n_new), "(B, T + max_new_tokens)", dtype=torch.long)
    if not torch.equal(out[:, :3], prompt):
        raise Wrong("the output should start with the prompt, unchanged, then the new tokens")
    c.ok(f"the output is the prompt followed by {n_new} new tokens")
    if len(inputs) != n_new:
        raise Wrong(f"the model was called {len(inputs)} times for {n_new} new tokens: once per new token")
    for step, given in enumerate(inputs):
        seen = out[:, :3 + step]
        if given.shape == seen[:, -block_size:].shape and torch.equal(given, seen[:, -block_size:]):
            continue
        if given.shape == seen[:, :block_size].shape and torch.equal(given, seen[:, :block_size]):
            raise Wrong(f"at step {step + 1} the model was given the first {block_size} tokens of the text: crop "
                        f"the other end, the last block_size tokens, idx[:, -block_size:]")
        raise Wrong(f"at step {step + 1} the model should be given the last {min(block_size, seen.size(1))} "
                    f"tokens of the text so far, yours gave it {describe(given)}")
    c.ok(f"the model always sees the last block_size = {block_size} tokens at most")
    again = c.tensor(runs[1], "the output", (B, 3 + n_new), dtype=torch.long)
    if not torch.equal(again, out):
        raise Wrong("two runs with generators seeded the same wrote different tokens: draw with "
                    "torch.multinomial(probs, num_samples=1, generator=generator)")
    for i, settings in enumerate(every_settings, 2):
        got = c.tensor(runs[i], "the output", (B, 3 + n_new), dtype=torch.long)
        expected = gpt.generate(prompt, n_new, generator=torch.Generator().manual_seed(1), **settings)
        if not torch.equal(got, expected):
            first = first_logits_generate(gpt, prompt, n_new, block_size, settings)
            if first is not None and torch.equal(got, first):
                raise Wrong("your tokens come from the first position's logits: the next token is predicted at "
                            "the last position, logits[:, -1, :]")
            t = int((got != expected).any(0).nonzero()[0])
            said = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the defaults"
            raise Wrong(f"with {said} and the same seed, token {t} is {got[0, t].item()}, babygpt's "
                        f"{expected[0, t].item()}: take the last position's logits, next_token_probs, then "
                        f"torch.multinomial(probs, num_samples=1, generator=generator)")
    c.ok("the same tokens as babygpt's GPT.generate for the same seed, temperature and top_k")


def first_logits_generate(gpt, idx, n_new, block_size, settings):
    """What generation gives when it samples from the first position's logits (a known mistake)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(n_new):
            logits, _ = gpt(idx[:, -block_size:])
            probs = reference_probs(logits[:, 0, :], **settings)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
    return idx


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


CHECKS = {name: globals()[f"check_{name}"] for name in NAMES}
