"""Exercise 7 (walkthrough step 7, "Residual pathways and LayerNorm"): a pre-norm transformer block.

Check it: python -m exercises check block
"""


def block(x, ln_1, attn, ln_2, mlp):
    """One block: communicate (attention), then compute (the MLP), each added to the residual stream.

    x: (B, T, C); ln_1, ln_2: LayerNorms; attn, mlp: modules (B, T, C) -> (B, T, C). Returns (B, T, C).

    Each sub-layer reads a normalised copy of the stream and *adds* its result to the stream, un-normalised:
    first attention with ln_1, then the MLP with ln_2, on the stream as attention left it.

    Hint: two lines. This is model.py's Block.forward, in the "pre-norm" arrangement.
    """
    raise NotImplementedError
