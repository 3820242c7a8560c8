"""The stand-in's train.py: nanoGPT's command line (a config file, then --key=value overrides), its printed
lines ("step N: train loss X, val loss Y" at each evaluation, "iter N: loss X" per step) and its ckpt.pt
(saved when the val loss improves, after step 0)."""
import ast
import os
import sys

import numpy as np
import torch

from model import GPT, GPTConfig

settings = {}
for arg in sys.argv[1:]:
    if arg.startswith('--'):
        key, value = arg[2:].split('=', 1)
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value
    else:
        exec(open(arg).read(), {}, settings)
data_dir = os.path.join('data', settings['dataset'])
B, T = settings['batch_size'], settings['block_size']
splits = {s: np.memmap(os.path.join(data_dir, f'{s}.bin'), dtype=np.uint16, mode='r') for s in ('train', 'val')}
vocab_size = 1 + max(int(data.max()) for data in splits.values())  # (nanoGPT reads meta.pkl; no unpickling here)


def get_batch(split, generator=None):
    data = splits[split]
    ix = torch.randint(len(data) - T, (B,), generator=generator)
    x = torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
    return x, y


torch.manual_seed(1337)
model_args = dict(vocab_size=vocab_size, block_size=T)
model = GPT(GPTConfig(**model_args))
optimizer = torch.optim.AdamW(model.parameters(), lr=settings['learning_rate'])
os.makedirs(settings['out_dir'], exist_ok=True)
best_val_loss, iter_num = 1e9, 0
while True:
    if iter_num % settings['eval_interval'] == 0:
        with torch.no_grad():
            fixed = torch.Generator().manual_seed(1)  # the same batches at every evaluation
            losses = {s: float(np.mean([model(*get_batch(s, fixed))[1].item() for _ in range(settings['eval_iters'])]))
                      for s in splits}
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if losses['val'] < best_val_loss:
            best_val_loss = losses['val']
            if iter_num > 0:
                torch.save({'model': model.state_dict(), 'model_args': model_args, 'iter_num': iter_num,
                            'best_val_loss': best_val_loss}, os.path.join(settings['out_dir'], 'ckpt.pt'))
    _, loss = model(*get_batch('train'))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    print(f"iter {iter_num}: loss {loss.item():.4f}")
    iter_num += 1
    if iter_num > settings['max_iters']:
        break
