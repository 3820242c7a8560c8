"""Solution: attention with the causal mask (walkthrough step 5)."""

import math

import torch
from torch.nn import functional as F


def causal_attention(q, k, v):
    T = q.size(1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, T, T)
    past = torch.tril(torch.ones(T, T, dtype=torch.bool))  # (T, T): key s allowed for query t if s <= t
    scores = scores.masked_fill(~past, float("-inf"))  # before the softmax: the future gets weight 0
    weights = F.softmax(scores, dim=-1)  # (B, T, T)
    return weights @ v, weights
