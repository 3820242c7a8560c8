"""Exercise 1 (walkthrough step 1, "Text becomes integers"): a character vocabulary.

Check it: python -m exercises check vocabulary
"""


def build_vocabulary(text):
    """Number every distinct character of `text`, in sorted order, from 0.

    text: str -> (stoi, itos)
        stoi: dict, character -> its number (0 .. V-1)
        itos: list, itos[i] is character number i (the reverse of stoi)
    build_vocabulary("hello") -> ({'e': 0, 'h': 1, 'l': 2, 'o': 3}, ['e', 'h', 'l', 'o'])

    Hint: set(text) has each character once; sorted(...) puts them in a fixed order (so the numbers do not
    depend on where the text starts); enumerate(...) numbers them from 0.
    """
    raise NotImplementedError


def encode(text, stoi):
    """str -> list of ints, one per character: encode("hell", stoi) -> [1, 0, 2, 2]."""
    raise NotImplementedError


def decode(ids, itos):
    """list of ints -> str, the reverse of encode: decode(encode(s, stoi), itos) == s.

    Hint: ''.join(...) turns a list of characters into one string.
    """
    raise NotImplementedError
