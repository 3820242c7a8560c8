"""Solution: one head of attention (walkthrough step 4)."""

import math

from torch.nn import functional as F


def attention_head(x, query, key, value):
    q, k, v = query(x), key(x), value(x)  # (B, T, hs) each
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, T, T)
    weights = F.softmax(scores, dim=-1)  # (B, T, T): each row sums to 1
    return weights @ v, weights  # (B, T, hs), (B, T, T)
