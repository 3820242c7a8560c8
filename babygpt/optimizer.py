"""
The optimizers' common part, AdamW written out, and make_optimizer (AdamW with weight decay on matrices only).

An optimizer holds the parameters in groups that share settings (a learning rate, a weight decay), and a dict of
state for each parameter (Adam's two running means, Muon's momentum). torch.optim's optimizers do this too, but
the first one built imports torch._dynamo, PyTorch's compiler front end, only to mark its methods as
not-to-compile: 2.3 s of every run's start on a 2-core CPU, more than the model's first evaluation
(docs/experiments.md). The few lines we need are here, and state_dict() keeps torch.optim's layout, so a
checkpoint written with torch.optim.AdamW loads into AdamW below and the other way round.
"""

import torch


class Optimizer:
    """Parameters in groups ("params" and the group's settings, e.g. "lr"), and a dict of state per parameter."""

    def __init__(self, params, defaults):
        groups = list(params)
        if groups and not isinstance(groups[0], dict):  # a plain list of parameters is one group
            groups = [{"params": groups}]
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        self.state = {}  # parameter -> its state, made at its first step

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self):
        """{"state": {i: state}, "param_groups": [settings, "params": [i, ...]]}, i counting parameters across
        the groups in order (torch.optim's layout: the parameters themselves are the model's to save)."""
        params = [p for group in self.param_groups for p in group["params"]]
        groups, first = [], 0
        for group in self.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            groups.append({**settings, "params": list(range(first, first + len(group["params"])))})
            first += len(group["params"])
        state = {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Take back a state_dict() of an optimizer built the same way (the same groups of same-shaped parameters)."""
        saved_groups = state_dict["param_groups"]
        if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the saved optimizer has other parameter groups than this one")
        params = {}  # saved index -> our parameter
        for saved, group in zip(saved_groups, self.param_groups):
            params.update(zip(saved["params"], group["params"]))
        state = {}
        for i, saved_state in state_dict["state"].items():
            p = params[i]
            state[p] = {name: self._to_parameter(value, name, p) for name, value in saved_state.items()}
            for name, value in state[p].items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                    raise ValueError(f"the saved {name} of parameter {i} is {tuple(value.shape)}, the parameter "
                                     f"{tuple(p.shape)}")
        self.state = state
        for saved, group in zip(saved_groups, self.param_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})

    @staticmethod
    def _to_parameter(value, name, p):
        """A saved state tensor on its parameter's device; running means in its dtype, a step count as it was."""
        if not torch.is_tensor(value):
            return value
        dtype = p.dtype if value.is_floating_point() and name != "step" else value.dtype
        return value.to(device=p.device, dtype=dtype, copy=True)  # never shared with the dict it came from


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter). For each number p of a parameter, with gradient g:

        m <- beta1 m + (1 - beta1) g          a running mean of the gradient (momentum)
        v <- beta2 v + (1 - beta2) g^2        a running mean of its square: how large g usually is
        p <- p (1 - lr wd) - lr m^ / (sqrt(v^) + eps)

    where m^ = m / (1 - beta1^t) and v^ = v / (1 - beta2^t) undo the means' start at 0 (t: the step count). Dividing
    by sqrt(v^) gives every number a step of about lr, whatever the scale of its gradient. fused=True runs the same
    update as one kernel over a whole group (torch._fused_adamw_, the kernel torch.optim.AdamW(fused=True) calls;
    CUDA and CPU), 3.5x faster than the loop on a CPU; the loop below is what it computes.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.fused = fused

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p not in self.state:  # the fused kernel reads the step count from a float32 tensor on the device
                    self.state[p] = {"step": torch.tensor(0.0, device=p.device if self.fused else "cpu"),
                                     "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            states = [self.state[p] for p in params]
            lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            if self.fused and params:
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                torch._fused_adamw_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                                    [s["exp_avg_sq"] for s in states], [], steps, lr=lr, beta1=beta1, beta2=beta2,
                                    weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)
                continue
            for p, s in zip(params, states):
                s["step"] += 1
                t = s["step"].item()
                p.mul_(1 - lr * weight_decay)  # decoupled: the decay does not pass through m and v
                s["exp_avg"].lerp_(p.grad, 1 - beta1)  # m
                s["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # v
                denominator = (s["exp_avg_sq"].sqrt() / (1 - beta2 ** t) ** 0.5).add_(eps)  # sqrt(v^) + eps
                p.addcdiv_(s["exp_avg"], denominator, value=-lr / (1 - beta1 ** t))  # - lr m^ / (sqrt(v^) + eps)


def weight_decay_groups(params, weight_decay):
    """Two param groups: weight decay for 2-D weight matrices (Linear weights and embeddings), none for the rest.

    Biases and LayerNorm gains are 1-D: decaying them toward 0 only hurts, so they get weight_decay 0.
    The tied token-embedding / LM-head matrix is one Parameter: model.parameters() yields it once, it is
    2-D, so it is decayed once, as an ordinary weight matrix."""
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def make_optimizer(model, learning_rate, weight_decay, betas, fused=False):
    """AdamW over all of model's trainable parameters, weight decay on its matrices only (weight_decay_groups).
    fused=True: one kernel for the whole update (CUDA and CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return AdamW(weight_decay_groups(params, weight_decay), lr=learning_rate, betas=betas, fused=fused)
