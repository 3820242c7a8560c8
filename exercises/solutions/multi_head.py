"""Solution: multi-head causal self-attention (walkthrough step 6)."""

import math

import torch
from torch.nn import functional as F


def multi_head_attention(x, c_attn, c_proj, n_head):
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
    q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    weights = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # (B, nh, T, T)
    y = (weights @ v).transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
    return c_proj(y)
