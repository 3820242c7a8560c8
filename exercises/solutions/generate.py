"""Solution: sampling and generation (walkthrough step 9)."""

import torch
from torch.nn import functional as F


def next_token_probs(logits, temperature=1.0, top_k=None):
    logits = logits / temperature  # (B, V)
    if top_k is not None:
        values, indices = torch.topk(logits, top_k, dim=-1)  # (B, k)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)  # the rest: -inf
    return F.softmax(logits, dim=-1)  # (B, V)


@torch.no_grad()
def generate(model, idx, max_new_tokens, block_size, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])  # (B, t, V): the model sees at most block_size tokens
        probs = next_token_probs(logits[:, -1, :], temperature, top_k)  # (B, V): the last position's
        next_token = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
        idx = torch.cat((idx, next_token), dim=1)  # (B, T+1)
    return idx
