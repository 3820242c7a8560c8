"""
Which query may look at which key: attention patterns as boolean masks (True = allowed), for the sparse
attention lesson (lessons/sparse_attention.py) and its tests, and BigBird's links, which model.GPT takes as its
`pattern` (attention_pattern(config) draws them). model.py builds the causal and sliding masks itself
(causal_mask, layer_mask); this file draws BigBird's and counts what each costs.

Full causal attention lets query t look at every key 0..t, so a sequence of T tokens costs T(T+1)/2
query-key pairs: quadratic in T. Two sparser patterns keep the cost per query constant:

    sliding   the last `window` tokens, itself included (Longformer, Mistral). The band is the same at every
              length, so a sliding model is defined on a text of any length: no cropping, and a rolling KV
              cache of `window` positions per layer generates from it exactly, forever (see engine.py).
              Through L layers information still travels L * (window - 1) + 1 positions.

BigBird (Zaheer et al., 2020) adds two more kinds of links to the window, so the sequence costs about
T * (window + n_global + n_random):

    window    the last `window` tokens, itself included     (local context: most of what language needs)
    global    the first `n_global` tokens of the sequence     (hubs: any two tokens are two hops apart)
    random    `n_random` further earlier tokens, drawn once   (shortcuts, so information mixes quickly)

All of them stay causal: no query ever sees a later key. In a decoder, "global" can only mean "everyone may
read the first g tokens" (those tokens themselves can only read what comes before them anyway).

The BigBird mask is drawn once for block_size positions; a shorter sequence uses its top-left corner, which is
the same pattern, because row t never depends on the rows after it.
"""

import torch

from model import causal_mask


def bigbird_mask(T, window, n_global, n_random, seed=0):
    """(T, T) bool, BigBird's pattern (Zaheer et al., 2020), still causal: query t reads its last
    `window` tokens, the first n_global (hubs) and n_random more earlier ones (shortcuts, seeded).
    A shorter sequence uses the top-left corner (row t never depends on the rows below it)."""
    is_global = (torch.arange(T)[None, :] < n_global) & causal_mask(T)  # (T, T)
    allowed = causal_mask(T, window=window) | is_global  # (T, T)
    generator = torch.Generator().manual_seed(seed)
    for t in range(T):
        candidates = (~allowed[t, : t + 1]).nonzero().flatten()  # earlier keys not linked yet
        if n_random > 0 and len(candidates) > 0:
            pick = torch.randperm(len(candidates), generator=generator)[:n_random]
            allowed[t, candidates[pick]] = True
    return allowed


def attention_pattern(config):
    """The `pattern` model.GPT(config, pattern) takes: BigBird's links for attn_pattern 'bigbird' (drawn
    with seed 0, so every model of that config, and every checkpoint of it, has the same), else None."""
    if config.attn_pattern != "bigbird":
        return None
    return bigbird_mask(config.block_size, config.bigbird_window, config.bigbird_global,
                        config.bigbird_random)


def sliding_mask(T, window):
    """(T, T) bool: query t may look at keys t - window + 1 .. t, itself included."""
    return causal_mask(T, window=window)


def count_pairs(mask):
    """How many query-key scores the pattern needs: the attention's cost, up to a constant."""
    return int(mask.sum())


def receptive_field(n_layer, window):
    """How far back the last layer's output at position t can depend on the input: each layer reaches
    window - 1 positions further back, so L layers reach L * (window - 1) positions behind t, plus t itself."""
    return n_layer * (window - 1) + 1
