"""
How the next token is drawn from the model's logits: greedy, temperature, top-k, top-p (nucleus).

GPT.generate (the reference loop in model.py) and engine.py (the KV cache) both call sample_next_token, so the
same logits and the same generator give the same tokens on either path.
"""

import torch
from torch.nn import functional as F


def sample_next_token(logits, temperature=1.0, top_k=None, generator=None, top_p=None):
    """Pick one token per row from logits (B, V) -> (B, 1) on the CPU.

    temperature 0 means greedy (argmax). Otherwise logits are divided by the temperature (below 1: sharper,
    above 1: flatter); with top_k, all but the k highest are removed (exactly k survive, ties broken by
    torch.topk); with top_p (nucleus sampling), only the smallest set of most likely tokens whose probabilities
    add up to at least top_p survives. The draw happens on the CPU with the given torch.Generator: the same seed
    then gives the same text on any device, and it avoids torch.multinomial's known bug on Apple's MPS backend.
    """
    logits = logits.float().cpu()  # (B, V)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None:
        top_values, top_indices = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)  # (B, k) each
        logits = torch.full_like(logits, float("-inf")).scatter(-1, top_indices, top_values)  # (B, V)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each, most likely first
        sorted_probs = F.softmax(sorted_logits, dim=-1)  # (B, V)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V): mass of the tokens ranked above
        # a token is needed only while the tokens above it hold less than top_p (the first always stays)
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))  # (B, V)
        logits = torch.empty_like(logits).scatter(-1, order, sorted_logits)  # (B, V), back in vocabulary order
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
