"""Solution: the bigram model (walkthrough step 3)."""

import torch.nn as nn
from torch.nn import functional as F


class BigramLanguageModel(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)  # row i: the logits of the token after token i
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)  # small: the first guess is nearly uniform

    def forward(self, idx, targets=None):
        logits = self.table(idx)  # (B, T, V)
        if targets is None:
            return logits, None
        B, T, V = logits.shape
        return logits, F.cross_entropy(logits.view(B * T, V), targets.view(B * T))
