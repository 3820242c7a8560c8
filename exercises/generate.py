"""Exercise 11 (walkthrough step 9, "Generation, cropped at block_size"): sampling, and the generation loop.

Check it: python -m exercises check generate
"""

import torch  # noqa: F401 -- you will want these
from torch.nn import functional as F  # noqa: F401


def next_token_probs(logits, temperature=1.0, top_k=None):
    """The distribution to draw the next token from: logits (B, V) -> probabilities (B, V), rows summing to 1.

    temperature: divide the logits by it (below 1: sharper, above 1: flatter).
    top_k: if not None, keep only the k largest logits of each row and set the others to -inf, before the
    softmax, so exactly k tokens can be drawn.

    Hint: values, indices = torch.topk(logits, top_k, dim=-1); then
    torch.full_like(logits, float('-inf')).scatter(-1, indices, values) keeps just those.
    """
    raise NotImplementedError


@torch.no_grad()
def generate(model, idx, max_new_tokens, block_size, temperature=1.0, top_k=None, generator=None):
    """Extend idx (B, T) by max_new_tokens tokens, one at a time; returns (B, T + max_new_tokens).

    model(idx) returns (logits, loss) with logits (B, t, V), and accepts at most block_size tokens.
    At each step: give the model the last block_size tokens at most; take the logits of the last position;
    next_token_probs(...); draw one token per row with
        torch.multinomial(probs, num_samples=1, generator=generator)   # (B, 1)
    and append it (torch.cat on dim 1). The same generator seed then writes the same text as GPT.generate.

    Hint: idx[:, -block_size:] is the last block_size tokens (all of them while there are fewer).
    """
    raise NotImplementedError
