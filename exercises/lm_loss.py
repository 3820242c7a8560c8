"""Exercise 8 (walkthrough step 8, "The LM head and the loss"): the language-model loss.

Check it: python -m exercises check lm_loss
"""

from torch.nn import functional as F  # noqa: F401 -- you will want F.cross_entropy


def lm_loss(logits, targets):
    """The mean cross-entropy over every position of every sequence.

    logits: (B, T, V), the model's scores for the next token at each position; targets: (B, T), the token
    that really comes next (get_batch's y: already shifted). Returns a scalar tensor (shape ()).

    Hint: every one of the B*T positions is its own example. F.cross_entropy wants (N, V) and (N,):
    reshape both the same way. It averages over N and applies the softmax itself.
    """
    raise NotImplementedError
