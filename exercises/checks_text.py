"""The checks of walkthrough steps 1-3: the vocabulary, the batches and the bigram model (see
exercises/checks.py)."""

import math

import numpy as np
import torch
from torch.nn import functional as F

from exercises.checker import Later, Wrong, describe
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
