"""
Which query may look at which key: attention patterns as boolean masks (True = allowed).

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

Every lower triangle in babygpt (the model's, the KV cache's, the attention maps') comes from causal_mask.
"""

import torch

PATTERNS = ("causal", "sliding", "bigbird")  # the values of GPTConfig.attn_pattern


def causal_mask(n_queries, n_keys=None, first_query=0, window=None, device=None):
    """(n_queries, n_keys) bool: query i sits at position first_query + i and may look at keys 0..first_query + i,
    or with a window only at the last `window` of them (first_query + i - window + 1 .. first_query + i).

    causal_mask(T) is the decoder's (T, T) lower triangle. A KV cache that already holds `start` positions
    asks for causal_mask(T, start + T, first_query=start): the rows of its T new positions."""
    n_keys = n_queries if n_keys is None else n_keys
    queries = torch.arange(first_query, first_query + n_queries, device=device)[:, None]  # (Tq, 1) positions
    keys = torch.arange(n_keys, device=device)[None, :]  # (1, Tk) positions
    allowed = keys <= queries  # (Tq, Tk): nothing from the future
    if window is not None:
        allowed &= keys > queries - window  # (Tq, Tk): a band of width `window` ending on the diagonal
    return allowed


def sliding_mask(T, window):
    """(T, T) bool: query t may look at keys t - window + 1 .. t, itself included."""
    return causal_mask(T, window=window)


def bigbird_mask(T, window, n_global, n_random, seed=0):
    """(T, T) bool BigBird pattern, still causal. Row t (a query) has exactly min(t + 1, window + n_global +
    n_random) True entries when the window and the global tokens do not overlap (see the module docstring)."""
    cols = torch.arange(T)[None, :]  # (1, T) key positions
    in_window = sliding_mask(T, window)  # (T, T) the band
    is_global = (cols < n_global) & causal_mask(T)  # (T, T) the first n_global columns, below the diagonal
    allowed = in_window | is_global
    generator = torch.Generator().manual_seed(seed)  # the same seed gives the same links, run after run
    for t in range(T):
        candidates = (~allowed[t, : t + 1]).nonzero().flatten()  # earlier keys not linked yet
        if n_random > 0 and len(candidates) > 0:
            pick = torch.randperm(len(candidates), generator=generator)[:n_random]
            allowed[t, candidates[pick]] = True
    return allowed


def pattern_mask(pattern, T, window=8, n_global=2, n_random=2, seed=0):
    """The (T, T) mask for a GPTConfig.attn_pattern name (window: the sliding or BigBird window)."""
    if pattern == "causal":
        return causal_mask(T)
    if pattern == "sliding":
        return sliding_mask(T, window)
    if pattern == "bigbird":
        return bigbird_mask(T, window, n_global, n_random, seed)
    raise ValueError(f"unknown attention pattern {pattern!r}: use {', '.join(PATTERNS)}")


def count_pairs(mask):
    """How many query-key scores the pattern needs: the attention's cost, up to a constant."""
    return int(mask.sum())


def receptive_field(n_layer, window):
    """How far back the last layer's output at position t can depend on the input: each layer reaches
    window - 1 positions further back, so L layers reach L * (window - 1) positions behind t, plus t itself."""
    return n_layer * (window - 1) + 1


# -- the model's side: GPTConfig's pattern fields, and the mask each attention layer applies


def check_pattern_settings(config):
    """Validate GPTConfig's attention-pattern fields (raises ValueError), and fill in attn_window's default
    (block_size // 2) for a sliding model."""
    if config.attn_pattern not in PATTERNS:
        raise ValueError(f"attn_pattern must be one of {', '.join(PATTERNS)}, got {config.attn_pattern!r}")
    if config.bigbird_window < 1 or config.bigbird_global < 0 or config.bigbird_random < 0:
        raise ValueError("bigbird_window must be at least 1, bigbird_global and bigbird_random not negative")
    if config.attn_pattern != "sliding":
        return
    if config.pos_emb != "rope":  # learned positions stop at block_size; a sliding model reads any length
        raise ValueError(f"attn_pattern 'sliding' needs pos_emb 'rope' (relative positions, so the model runs "
                         f"past block_size), got pos_emb {config.pos_emb!r}")
    if config.attn_window == 0:
        config.attn_window = config.block_size // 2
    if not 1 <= config.attn_window <= config.block_size:
        raise ValueError(f"attn_window must be between 1 and block_size ({config.block_size}), got "
                         f"{config.attn_window} (0 means block_size // 2)")


def fixed_pattern(config):
    """The mask a layer keeps as a buffer: BigBird's links, drawn once for block_size positions; None for the
    other patterns, whose masks depend only on the length and are built when needed (see layer_mask)."""
    if config.attn_pattern != "bigbird":
        return None
    return bigbird_mask(config.block_size, config.bigbird_window, config.bigbird_global, config.bigbird_random)


def layer_mask(attn, n_new, first=0, device=None, explicit=False):
    """The rows of the queries at positions first..first+n_new-1 of an attention layer's pattern, over the
    keys 0..first+n_new-1: (n_new, first+n_new) bool. attn is a model.CausalSelfAttention (its .pattern,
    BigBird's buffer, and its .window, the sliding width, or None). Plain causal attention gives None unless
    explicit=True: the fused kernel's is_causal applies its lower triangle without building one."""
    n_keys = first + n_new
    if attn.pattern is not None:
        return attn.pattern[first:n_keys, :n_keys]
    if attn.window is None and not explicit:
        return None
    return causal_mask(n_new, n_keys, first_query=first, window=attn.window, device=device)
