"""Exercise 2 (walkthrough step 2, "Batches"): random windows of the text, and their targets.

Check it: python -m exercises check get_batch
"""

import numpy as np  # noqa: F401 -- you will want these
import torch  # noqa: F401


def get_batch(data, batch_size, block_size, generator):
    """batch_size random windows of block_size tokens, and the same windows shifted left by one.

    data: a 1-D numpy array of token ids (uint16, as train.py memory-maps train.bin); generator: a
    torch.Generator, so that a seed fixes the batches.
    Returns x, y, each a (B, T) = (batch_size, block_size) tensor of dtype torch.long:
        x[b] = data[i : i + block_size]         for a random start i
        y[b] = data[i + 1 : i + 1 + block_size]  y[b, t] is the token that follows x[b, 0..t]

    Draw the starts exactly like this, so your batches are train.get_batch's for the same seed:
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)

    Hint: data[i : i + block_size] is a numpy array; .astype(np.int64) then torch.from_numpy(...) makes it a
    long tensor, and torch.stack([...]) puts the B rows together.
    """
    raise NotImplementedError
