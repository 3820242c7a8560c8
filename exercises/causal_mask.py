"""Exercise 5 (walkthrough step 5, "The mask: no peeking at the answer"): attention with the causal mask.

Check it: python -m exercises check causal_mask
"""

import math  # noqa: F401 -- you will want these

import torch  # noqa: F401
from torch.nn import functional as F  # noqa: F401


def causal_attention(q, k, v):
    """Attention in which position t reads only positions 0..t.

    q, k, v: (B, T, hs). Returns (out, weights): out (B, T, hs), weights (B, T, T) with weights[b, t, s] = 0
    for every s > t, and each row summing to 1.

    Hint: torch.tril(torch.ones(T, T, dtype=torch.bool)) is True where key s may be read by query t (s <= t).
    Set the other scores to float('-inf') with scores.masked_fill(...) *before* the softmax: e^-inf = 0, and
    the weights of the past still sum to 1.
    """
    raise NotImplementedError
