"""The stand-in's model: a bigram table with nanoGPT's interface (GPTConfig(**model_args), GPT(config),
forward(idx, targets) -> (logits (B, T, V), loss))."""
from dataclasses import dataclass

import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, idx, targets=None):
        logits = self.table(idx)  # (B, T, V)
        if targets is None:
            return logits[:, [-1], :], None  # like nanoGPT: only the last position without targets
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
