"""
The optimizer of every run: torch.optim.AdamW with weight decay on the matrices only (make_optimizer), and
what its update does, written out (adamw_step: a lesson, tested equal to torch's; runs never call it).

An optimizer holds the parameters in groups that share settings (a learning rate, a weight decay) and a dict of
state for each parameter (Adam's two running means and its step count). Both go into every checkpoint
(optimizer.state_dict()), and load_state puts them back on --resume.
"""

import torch


def weight_decay_groups(params, weight_decay):
    """Two param groups: weight decay for 2-D weight matrices (Linear weights and embeddings), none for the rest.

    Biases and LayerNorm gains are 1-D: decaying them toward 0 only hurts, so they get weight_decay 0.
    The tied token-embedding / LM-head matrix is one Parameter: model.parameters() yields it once, it is
    2-D, so it is decayed once, as an ordinary weight matrix."""
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def make_optimizer(model, learning_rate, weight_decay, betas, fused=False):
    """torch.optim.AdamW over model's trainable parameters, weight decay on its matrices only.
    fused=True: one kernel for the whole update (torch has it for CUDA and the CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = weight_decay_groups(params, weight_decay)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)


# Group settings that say how an update is computed on this machine, not what it computes.
HOW_NOT_WHAT = ("foreach", "fused", "capturable", "differentiable")


def set_learning_rate(optimizer, lr):
    """Every param group follows the schedule (train.py's learning_rate_at); Muon's at its own peak rate
    (lr_scale, muon.py)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def load_state(optimizer, state_dict):
    """optimizer.load_state_dict(state_dict), keeping how this machine computes the update.

    torch.optim takes every group setting from the file, also fused and foreach. A file written before the runs
    used torch.optim has no such keys (fused would become None: torch's slowest loop), and one from another
    machine may name a kernel this one lacks; so those settings stay as the optimizer was built. The
    hyperparameters (betas, eps, weight decay) and the state come from the file, as before."""
    built = [{key: group[key] for key in HOW_NOT_WHAT if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state_dict)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):  # torch.optim would only fail at the first step, mid-run
        for name, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                raise ValueError(f"the saved {name} of parameter {i} is {tuple(value.shape)}, the "
                                 f"parameter {tuple(p.shape)}")
    for group, how in zip(optimizer.param_groups, built):
        group.update(how)
        if group.get("fused") or group.get("capturable"):
            # these kernels count steps in a float32 tensor on the parameter's device
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if torch.is_tensor(state.get("step")):
                    state["step"] = state["step"].to(p.device, torch.float32)


@torch.no_grad()
def adamw_step(p, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """One AdamW update of parameter p (gradient p.grad), written out: what torch.optim.AdamW computes.

    Adam with decoupled weight decay (Loshchilov and Hutter). For each number p of a parameter, gradient g:

        m <- beta1 m + (1 - beta1) g          a running mean of the gradient (momentum)
        v <- beta2 v + (1 - beta2) g^2        a running mean of its square: how large g usually is
        p <- p (1 - lr wd) - lr m^ / (sqrt(v^) + eps)

    where m^ = m / (1 - beta1^t) and v^ = v / (1 - beta2^t) undo the means' start at 0 (t: the step count).
    Dividing by sqrt(v^) gives every number a step of about lr, whatever the scale of its gradient.
    `state` is the parameter's dict in torch's layout (step, exp_avg, exp_avg_sq), filled at the first call.
    """
    beta1, beta2 = betas
    if not state:
        state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
    state["step"] += 1
    t = state["step"].item()
    p.mul_(1 - lr * weight_decay)  # decoupled: the decay does not pass through m and v
    state["exp_avg"].lerp_(p.grad, 1 - beta1)  # m
    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # v
    denominator = (state["exp_avg_sq"].sqrt() / (1 - beta2**t) ** 0.5).add_(eps)  # sqrt(v^) + eps
    p.addcdiv_(state["exp_avg"], denominator, value=-lr / (1 - beta1**t))  # - lr m^ / (sqrt(v^) + eps)
