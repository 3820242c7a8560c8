"""
Which query may look at which key: attention patterns as boolean masks (True = allowed), for the sparse
attention lesson (lessons/sparse_attention.py) and its tests. The masks a model applies are built in model.py
(causal_mask, bigbird_mask, layer_mask); this file counts what they cost.

Full causal attention lets query t look at every key 0..t, so a sequence of T tokens costs T(T+1)/2
query-key pairs: quadratic in T. Two sparser patterns keep the cost per query constant:

    sliding   the last `window` tokens, itself included (Longformer, Mistral). The band is the same at every
              length, so a sliding model is defined on a text of any length: no cropping, and a rolling KV
              cache of `window` positions per layer generates from it exactly, forever (see engine.py).
              Through L layers information still travels L * (window - 1) + 1 positions.

BigBird (Zaheer et al., 2020) adds two more kinds of links to the window, so the sequence costs about
T * (window + n_global + n_random):

    window    the last `window` tokens, itself included     (local context: most of what language needs)
    global    the first `n_global` tokens of the sequence     (hubs: any two tokens are two hops apart)
    random    `n_random` further earlier tokens, drawn once   (shortcuts, so information mixes quickly)

All of them stay causal: no query ever sees a later key. In a decoder, "global" can only mean "everyone may
read the first g tokens" (those tokens themselves can only read what comes before them anyway).

The BigBird mask is drawn once for block_size positions; a shorter sequence uses its top-left corner, which is
the same pattern, because row t never depends on the rows after it.
"""

from model import causal_mask


def sliding_mask(T, window):
    """(T, T) bool: query t may look at keys t - window + 1 .. t, itself included."""
    return causal_mask(T, window=window)


def count_pairs(mask):
    """How many query-key scores the pattern needs: the attention's cost, up to a constant."""
    return int(mask.sum())


def receptive_field(n_layer, window):
    """How far back the last layer's output at position t can depend on the input: each layer reaches
    window - 1 positions further back, so L layers reach L * (window - 1) positions behind t, plus t itself."""
    return n_layer * (window - 1) + 1
