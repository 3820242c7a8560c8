"""Exercise 9 (walkthrough step 8, the training loop): the learning-rate schedule.

Check it: python -m exercises check lr_schedule
"""

import math  # noqa: F401 -- you will want math.cos and math.pi


def learning_rate_at(it, learning_rate, min_lr, warmup_iters, decay_iters):
    """The learning rate at step `it` (0, 1, 2, ...), as train.py's learning_rate_at computes it:

    warmup  (it < warmup_iters): a straight line up, learning_rate * (it + 1) / (warmup_iters + 1); the
            first step already learns a little, and the line reaches the peak just after warmup
    decay   (warmup_iters <= it < decay_iters): a cosine from learning_rate down to min_lr, over
            progress = (it - warmup_iters) / (decay_iters - warmup_iters), going from 0 to 1
    after   (it >= decay_iters): min_lr

    Returns a float. Hint: 0.5 * (1 + cos(pi * progress)) goes from 1 down to 0.
    """
    raise NotImplementedError
