"""Exercise 12 (walkthrough step 9, the KV cache): one step of attention that reuses the past's keys and values.

When generating, the keys and values of the positions already seen do not change when a token is appended.
Keep them (the cache) and compute only the new position's query, key and value.

Check it: python -m exercises check kv_cache
"""

import math  # noqa: F401 -- you will want these

import torch  # noqa: F401
from torch.nn import functional as F  # noqa: F401


def cached_attention_step(q, k, v, cache_k, cache_v):
    """Attention for one new position t, given the cached keys and values of positions 0..t-1.

    q, k, v: (B, nh, 1, hs), the new position's; cache_k, cache_v: (B, nh, t, hs) (t may be 0).
    Returns (out, cache_k, cache_v): out (B, nh, 1, hs); the caches with the new k, v appended,
    (B, nh, t + 1, hs) each. out must equal row t of the causal attention recomputed over all t + 1 positions.

    Hint: append first (torch.cat on the positions' dimension, 2), then attend the new query over all t + 1
    keys. The newest position may read every earlier one, so it needs no mask.
    """
    raise NotImplementedError
