"""
Which query may look at which key: attention patterns as boolean masks (True = allowed).

Full causal attention lets query t look at every key 0..t, so a sequence of T tokens costs T(T+1)/2
query-key pairs: quadratic in T. BigBird (Zaheer et al., 2020) keeps only three kinds of links per query,
so the cost per query is a constant and the whole sequence costs about T * (window + n_global + n_random):

    window    the last `window` tokens, itself included     (local context: most of what language needs)
    global    the first `n_global` tokens of the sequence     (hubs: any two tokens are two hops apart)
    random    `n_random` further earlier tokens, drawn once   (shortcuts, so information mixes quickly)

All three stay causal: no query ever sees a later key. In a decoder, "global" can only mean "everyone may
read the first g tokens" (those tokens themselves can only read what comes before them anyway).

The mask is drawn once for block_size positions; a shorter sequence uses its top-left corner, which is the
same pattern, because row t never depends on the rows after it.
"""

import torch


def causal_mask(T):
    """(T, T) bool: query t may look at keys 0..t. The decoder's lower triangle."""
    return torch.ones(T, T, dtype=torch.bool).tril()


def bigbird_mask(T, window, n_global, n_random, seed=0):
    """(T, T) bool BigBird pattern, still causal. Row t (a query) has exactly min(t + 1, window + n_global +
    n_random) True entries when the window and the global tokens do not overlap (see the module docstring)."""
    rows = torch.arange(T)[:, None]  # (T, 1) query positions
    cols = torch.arange(T)[None, :]  # (1, T) key positions
    in_window = (cols <= rows) & (cols > rows - window)  # (T, T) a band of width `window` ending on the diagonal
    is_global = (cols < n_global) & (cols <= rows)  # (T, T) the first n_global columns, below the diagonal
    allowed = in_window | is_global
    generator = torch.Generator().manual_seed(seed)  # the same seed gives the same links, run after run
    for t in range(T):
        candidates = (~allowed[t, : t + 1]).nonzero().flatten()  # earlier keys not linked yet
        if n_random > 0 and len(candidates) > 0:
            pick = torch.randperm(len(candidates), generator=generator)[:n_random]
            allowed[t, candidates[pick]] = True
    return allowed


def pattern_mask(pattern, T, window=8, n_global=2, n_random=2, seed=0):
    """The (T, T) mask for a GPTConfig.attn_pattern name."""
    if pattern == "causal":
        return causal_mask(T)
    if pattern == "bigbird":
        return bigbird_mask(T, window, n_global, n_random, seed)
    raise ValueError(f"unknown attention pattern {pattern!r}: use 'causal' or 'bigbird'")


def count_pairs(mask):
    """How many query-key scores the pattern needs: the attention's cost, up to a constant."""
    return int(mask.sum())
