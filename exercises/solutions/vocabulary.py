"""Solution: a character vocabulary (walkthrough step 1)."""


def build_vocabulary(text):
    chars = sorted(set(text))  # every distinct character once, in a fixed order
    stoi = {ch: i for i, ch in enumerate(chars)}
    return stoi, chars


def encode(text, stoi):
    return [stoi[ch] for ch in text]


def decode(ids, itos):
    return "".join(itos[i] for i in ids)
