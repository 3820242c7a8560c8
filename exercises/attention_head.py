"""Exercise 4 (walkthrough step 4, "Attention is communication"): one head of attention, written out.

Check it: python -m exercises check attention_head
"""

import math  # noqa: F401 -- you will want these

import torch  # noqa: F401
from torch.nn import functional as F  # noqa: F401


def attention_head(x, query, key, value):
    """One head of self-attention, with no mask yet (every position reads every position).

    x: (B, T, C); query, key, value: nn.Linear(C, hs, bias=False) layers (hs: the head size).
    Returns (out, weights):
        weights (B, T, T): row t is how much position t reads each position; each row sums to 1
        out     (B, T, hs): each position's weighted average of the values

    Steps: q, k, v = query(x), key(x), value(x)                    # (B, T, hs) each
           scores  = q @ k^T / sqrt(hs)                            # (B, T, T)
           weights = softmax of the scores over the keys (which dimension is that?)
           out     = weights @ v

    Hint: k.transpose(-2, -1) swaps the last two dimensions. Without the 1/sqrt(hs) the scores grow with the
    head size and the softmax turns into an argmax.
    """
    raise NotImplementedError
