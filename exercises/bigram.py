"""Exercise 3 (walkthrough steps 3 and 8): the bigram model, and its first loss.

The simplest language model: the next character depends only on the current one. The whole model is one
(V, V) table of scores: row i holds the logits for the character that follows character i.

Check it: python -m exercises check bigram
"""

import torch.nn as nn
from torch.nn import functional as F  # noqa: F401 -- you will want F.cross_entropy


class BigramLanguageModel(nn.Module):
    def __init__(self, vocab_size):
        """Make the (V, V) table: nn.Embedding(vocab_size, vocab_size) is exactly that.

        Hint: start its numbers small, nn.init.normal_(table.weight, mean=0.0, std=0.02). Then every logit is
        close to 0, the first guess is close to uniform, and the first loss close to ln(V) (ln 65 = 4.17);
        with nn.Embedding's own start (std 1) it is well above.
        """
        super().__init__()
        raise NotImplementedError

    def forward(self, idx, targets=None):
        """idx: (B, T) token ids; targets: (B, T), the next token at every position, or None.

        Returns (logits, loss): logits (B, T, V), the table's row for each token; loss the mean cross-entropy
        over all B*T positions (a scalar tensor), or None when targets is None.

        Hint: F.cross_entropy wants (N, V) logits and (N,) targets: logits.view(B*T, V), targets.view(B*T).
        Return the raw logits, not probabilities: cross_entropy applies the softmax itself.
        """
        raise NotImplementedError
