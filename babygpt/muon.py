"""
Muon for the 2-D weight matrices inside the blocks, AdamW for everything else (as modded-nanogpt and nanochat do).

Adam scales each number of the gradient on its own. Muon treats a weight matrix as a whole: it keeps a
momentum of the gradient G and replaces it by the nearest orthogonal matrix (U V^T, from G = U S V^T), so every
direction the matrix can move in gets the same step size, and rare-but-useful directions are not drowned out by
the few large ones. The orthogonalisation is done with a few matrix multiplications (Newton-Schulz), cheap next
to the forward and backward passes.

Muon is meant for hidden matrices only: the token embedding (a lookup table), the LM head and the 1-D gains
and biases stay with AdamW (torch.optim.AdamW). Muon itself is ours, a torch.optim.Optimizer: torch has its own
only from 2.9 on, and babygpt runs on 2.5.
"""

import torch

from babygpt.optimizer import weight_decay_groups


def orthogonalize(G, steps=5, bf16=False):
    """Approximately U V^T for G = U S V^T, with the quintic Newton-Schulz iteration of Keller Jordan's Muon.

    G (rows, cols), or a stack (n, rows, cols) of same-shaped matrices done together -> same shape. The
    coefficients push every singular value towards 1 fast (to roughly 0.7..1.2, which is all Muon needs), so
    bfloat16 is precise enough: bf16=True multiplies in it where that is fast (a GPU, a CPU with AVX-512 BF16);
    elsewhere float32 matmuls are the fast ones."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if bf16 else G.float()
    X = X.unsqueeze(0) if X.dim() == 2 else X  # (n, rows, cols): one batched matmul per product for the stack
    transposed = X.size(1) > X.size(2)
    if transposed:  # work with the short side first: X @ X^T is then the smaller matrix
        X = X.mT  # (n, cols, rows)
    X = X / (X.norm(dim=(1, 2), keepdim=True) + 1e-7)  # singular values now at most 1, each matrix on its own
    for _ in range(steps):  # X <- a X + (b A + c A^2) X with A = X X^T; baddbmm does "beta M + alpha P @ Q" at once
        A = X @ X.mT  # (n, short, short)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A @ A, (n, short, short)
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B @ X, same shape as X (20% faster than the spelled-out sum)
    X = X.mT if transposed else X
    return X.reshape(G.shape).type_as(G)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum, whose update is orthogonalised before it is applied. For 2-D parameters only.
    torch.optim.Optimizer keeps the groups and the per-parameter state, and saves and loads them. bf16: the
    orthogonalisation's matmuls in bfloat16 (a setting of the machine, not of the run: not saved)."""

    def __init__(self, params, lr=0.02, momentum=0.95, weight_decay=0.0, bf16=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.bf16 = bf16

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            by_shape = {}  # same-shaped matrices are orthogonalised together: 1.5x faster on 2 threads
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(p.shape, []).append(p)
            for params in by_shape.values():
                looks_ahead = []
                for p in params:
                    state = self.state[p]  # (a defaultdict: empty before the first step)
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.lerp_(p.grad, 1 - group["momentum"])  # running average of the gradient
                    looks_ahead.append(p.grad.lerp(buf, group["momentum"]))  # Nesterov: look one step ahead
                updates = orthogonalize(torch.stack(looks_ahead), bf16=self.bf16)  # (n, rows, cols)
                # an orthogonal (rows, cols) matrix has entries ~1/sqrt(cols): rescale so tall ones are not too timid
                if params[0].size(0) > params[0].size(1):  # (a wide or square one keeps its scale: no pass over it)
                    updates *= (params[0].size(0) / params[0].size(1)) ** 0.5
                for p, update in zip(params, updates):
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update, alpha=-group["lr"])


class MuonAndAdamW:
    """Two optimizers that act as one: step, zero_grad, param_groups, state, state_dict, load_state_dict.

    Each param group carries an "lr_scale": the training loop sets group lr = schedule lr x lr_scale, so one
    schedule (warmup, decay) drives both optimizers with their own peak rates."""

    def __init__(self, muon, adamw):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self):
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self):
        return {**self.muon.state, **self.adamw.state}

    def step(self):
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state):
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def hidden_matrices(model):
    """The 2-D weights inside the transformer blocks: what Muon updates."""
    return [p for p in model.blocks.parameters() if p.dim() == 2 and p.requires_grad]


def make_muon_optimizer(model, learning_rate, muon_lr, muon_momentum, weight_decay, betas, fused=False,
                        bf16=False, muon_weight_decay=0.0):
    """Muon (peak lr muon_lr, decay muon_weight_decay) on the blocks' matrices, AdamW (peak lr learning_rate)
    on the rest, with weight decay on the rest's 2-D weights (the embedding), as make_optimizer does.
    bf16: Muon's matmuls in bfloat16 (where the run trains in it)."""
    matrices = hidden_matrices(model)
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not m for m in matrices)]
    muon = Muon([{"params": matrices, "lr_scale": muon_lr / learning_rate}], lr=muon_lr, momentum=muon_momentum,
                weight_decay=muon_weight_decay, bf16=bf16)
    groups = weight_decay_groups(rest, weight_decay)
    adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)
    return MuonAndAdamW(muon, adamw)
