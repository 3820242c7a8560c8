"""Exercise 6 (walkthrough step 6, "Heads in parallel"): multi-head causal self-attention.

Check it: python -m exercises check multi_head
"""

import math  # noqa: F401 -- you will want these

import torch  # noqa: F401
from torch.nn import functional as F  # noqa: F401


def multi_head_attention(x, c_attn, c_proj, n_head):
    """n_head causal attention heads side by side, as model.py's CausalSelfAttention computes them.

    x: (B, T, C); c_attn: nn.Linear(C, 3C), every head's query, key and value at once; c_proj: nn.Linear(C, C),
    which mixes the heads' outputs; C is divisible by n_head, hs = C // n_head.
    Returns (B, T, C).

    Steps: q, k, v = c_attn(x).split(C, dim=2)                        # 3 x (B, T, C)
           split:   (B, T, C) -> view(B, T, n_head, hs) -> transpose(1, 2) -> (B, nh, T, hs)
           attend:  causal attention in every head at once (scores / sqrt(hs), mask, softmax, @ v)
           merge:   (B, nh, T, hs) -> transpose(1, 2) -> contiguous().view(B, T, C)
           project: c_proj(...)

    Hint: the head axis is just another batch axis: @ and softmax work on the last two dimensions.
    """
    raise NotImplementedError
