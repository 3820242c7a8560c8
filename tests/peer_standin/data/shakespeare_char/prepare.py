"""Characters to integers, as nanoGPT's prepare.py does: reads input.txt beside this file, writes train.bin,
val.bin (uint16, first 90% / last 10% of the text) and meta.pkl."""
import os
import pickle

import numpy as np

here = os.path.dirname(__file__)
with open(os.path.join(here, 'input.txt'), 'r') as f:
    data = f.read()
chars = sorted(set(data))
stoi = {ch: i for i, ch in enumerate(chars)}
n = len(data)
for name, text in (('train', data[:int(n * 0.9)]), ('val', data[int(n * 0.9):])):
    np.array([stoi[c] for c in text], dtype=np.uint16).tofile(os.path.join(here, f'{name}.bin'))
with open(os.path.join(here, 'meta.pkl'), 'wb') as f:
    pickle.dump({'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': stoi}, f)
