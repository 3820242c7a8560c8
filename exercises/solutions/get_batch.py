"""Solution: random windows and their targets (walkthrough step 2)."""

import numpy as np
import torch


def get_batch(data, batch_size, block_size, generator):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in starts.tolist()])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in starts.tolist()])
    return x, y  # (B, T) each
