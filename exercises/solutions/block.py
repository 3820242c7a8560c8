"""Solution: a pre-norm residual block (walkthrough step 7)."""


def block(x, ln_1, attn, ln_2, mlp):
    x = x + attn(ln_1(x))  # communicate
    x = x + mlp(ln_2(x))  # compute
    return x
