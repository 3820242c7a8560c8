"""The checks of walkthrough step 8: the loss, the learning-rate schedule and AdamW (see
exercises/checks.py)."""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from exercises.checker import Wrong, describe


def check_lm_loss(c):
    B, T, V = 3, 5, 11
    logits, targets = torch.randn(B, T, V) * 2, torch.randint(V, (B, T))
    results = c.script(("lm_loss", (logits, targets)), ("lm_loss", (logits.clone().requires_grad_(), targets)))
    loss = results[0]
    if isinstance(loss, torch.Tensor) and loss.numel() == B * T:
        raise Wrong(f"the loss should be a single number (shape ()), yours has shape {tuple(loss.shape)}: one "
                    f"loss per position; take their mean")
    c.tensor(loss, "the loss", ())
    c.ok("the loss is a single number")
    flat_logits, flat_targets = logits.reshape(B * T, V), targets.reshape(B * T)
    expected = F.cross_entropy(flat_logits, flat_targets)
    c.match(loss, expected, "the loss", [
        (expected * B * T, f"your loss is {B * T}x babygpt's (B*T = {B}*{T}): average over the positions "
                           f"(F.cross_entropy's default), do not sum"),
        (-expected, "your loss is negative: it is minus the mean log-probability of the right tokens"),
        (F.cross_entropy(flat_logits.softmax(-1), flat_targets),
         "you applied a softmax before F.cross_entropy: it takes the raw logits and applies the softmax itself"),
        (F.cross_entropy(logits[:, -1], targets[:, -1]),
         "you scored only the last position: every one of the B*T positions predicts its next token"),
        (F.cross_entropy(flat_logits, targets.transpose(0, 1).reshape(B * T)),
         "the targets are in another order than the logits: flatten both the same way, "
         "logits.view(B*T, V) and targets.view(B*T)"),
        (F.cross_entropy(logits[:, :-1].reshape(-1, V), targets[:, 1:].reshape(-1)),
         "you shifted the targets again: get_batch's y is already the next token of every position"),
    ])
    c.ok(f"the loss equals F.cross_entropy over the B*T = {B * T} positions")
    again = results[1]
    if not (isinstance(again, torch.Tensor) and again.requires_grad):
        raise Wrong("your loss has no gradient: do not use .item(), .detach() or torch.tensor(...) on the way")
    c.ok("the loss has a gradient for the logits")


LR_STEPS = {"warmup": (0, 4, 9), "decay": (10, 35, 60, 85, 109), "after": (110, 150, 200)}
LR_PHASES = {  # what babygpt's rate is in each phase: the neutral line's reminder
    "warmup": "during warmup babygpt's rate is learning_rate * (it + 1) / (warmup_iters + 1)",
    "decay": "from warmup_iters to decay_iters babygpt's rate is min_lr + 0.5 * (1 + cos(pi * progress)) * "
             "(learning_rate - min_lr), progress = (it - warmup_iters) / (decay_iters - warmup_iters)",
    "after": "from decay_iters on babygpt's rate is min_lr",
}


def schedule(it, lr, min_lr, warmup, decay, warmup_from_zero=False, progress_from_zero=False, shape="cosine",
             clamp=True):
    """The learning rate with switches, to recognise what a mistake computes (all at their default: babygpt's)."""
    if it < warmup:
        return lr * it / warmup if warmup_from_zero else lr * (it + 1) / (warmup + 1)
    if clamp and it >= decay:
        return min_lr
    progress = it / decay if progress_from_zero else (it - warmup) / (decay - warmup)
    falling = 0.5 * (1 + math.cos(math.pi * progress))  # 1 -> 0
    return {"cosine": min_lr + falling * (lr - min_lr), "rising": min_lr + (1 - falling) * (lr - min_lr),
            "no half": min_lr + 2 * falling * (lr - min_lr), "to zero": falling * lr,
            "line": lr + progress * (min_lr - lr)}[shape]


LR_MISTAKES = [  # (phase, switches, what it means): named only when every step of that phase is this mistake's
    ("warmup", {"warmup_from_zero": True},
     "your warmup starts at 0, so the first step learns nothing. babygpt's climbs from lr/(warmup+1): "
     "lr * (it + 1) / (warmup_iters + 1)"),
    ("decay", {"progress_from_zero": True},
     "at the end of warmup the decay starts from the peak, learning_rate. Measure its progress from there: "
     "(it - warmup_iters) / (decay_iters - warmup_iters)"),
    ("decay", {"shape": "rising"},
     "your cosine rises, from min_lr at the end of warmup to learning_rate at decay_iters; it should fall from "
     "learning_rate to min_lr: min_lr + 0.5 * (1 + cos(pi * progress)) * (learning_rate - min_lr)"),
    ("decay", {"shape": "no half"},
     "your decay starts at 2 * learning_rate - min_lr: 1 + cos(pi * progress) goes from 2 down to 0, so halve "
     "it, 0.5 * (1 + cos(pi * progress))"),
    ("decay", {"shape": "line"},
     "yours decays in a straight line; babygpt's follows a cosine, min_lr + 0.5 * (1 + cos(pi * progress)) * "
     "(learning_rate - min_lr)"),
    ("decay", {"shape": "to zero"},
     "yours decays to 0, babygpt's to min_lr: min_lr + 0.5 * (1 + cos(pi * progress)) * (learning_rate - min_lr)"),
    ("after", {"clamp": False},
     "after decay_iters your cosine goes on and climbs again; babygpt's rate stays at min_lr from decay_iters on"),
]


def check_lr_schedule(c):
    import train  # the reference (imported here: it is slow to import)
    lr, min_lr, warmup, decay = 1e-3, 1e-4, 10, 110
    cfg = train.TrainConfig(learning_rate=lr, min_lr=min_lr, warmup_iters=warmup, lr_decay_iters=decay,
                            max_iters=decay)
    steps = [it for phase in LR_STEPS.values() for it in phase]
    yours = {}
    for it, got in zip(steps, c.calls("learning_rate_at", [(it, lr, min_lr, warmup, decay) for it in steps])):
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_complex():
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise Wrong(f"learning_rate_at should return a number, yours returned {describe(got)} at step {it}")
        yours[it] = got

    def same(a, b):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    for phase, phase_steps in LR_STEPS.items():
        wrong = [it for it in phase_steps if not same(yours[it], train.learning_rate_at(it, cfg))]
        if not wrong:
            continue
        it = wrong[0]
        said = f"at step {it} yours is {yours[it]:.4g}, babygpt's {train.learning_rate_at(it, cfg):.4g}"
        for mistake_phase, switches, meaning in LR_MISTAKES:
            if mistake_phase == phase and all(same(yours[s], schedule(s, lr, min_lr, warmup, decay, **switches))
                                              for s in phase_steps):
                raise Wrong(f"{said}: {meaning}")
        raise Wrong(f"{said} ({LR_PHASES[phase]})")
    c.ok("warmup: a straight line from lr/(warmup+1) up to the peak")
    c.ok("then a cosine from the peak down to min_lr, and min_lr after decay_iters: train.learning_rate_at's")


def adam_variant(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, correct=True, decoupled=True,
                 square=True, eps_inside=False):
    """One Adam(W) step with switches, to recognise what a mistake returns (defaults: AdamW)."""
    if not decoupled:
        grad = grad + weight_decay * param  # L2: the decay goes through the moments
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * (grad * grad if square else grad)
    m_hat, v_hat = (m / (1 - beta1 ** step), v / (1 - beta2 ** step)) if correct else (m, v)
    if decoupled:
        param = param * (1 - lr * weight_decay)
    denominator = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    return param - lr * m_hat / denominator, m, v


class TorchAdamW:
    """torch.optim.AdamW's update for one tensor: the reference the learner's update must equal."""

    def __init__(self, param, lr, betas, eps, weight_decay):
        self.param = nn.Parameter(param.clone())
        self.optimizer = torch.optim.AdamW([self.param], lr=lr, betas=betas, eps=eps,
                                           weight_decay=weight_decay)

    def step(self, grad):
        """One update with this gradient; the new param, m and v (torch's exp_avg and exp_avg_sq)."""
        self.param.grad = grad.clone()
        self.optimizer.step()
        state = self.optimizer.state[self.param]
        return self.param.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone()


def check_adamw(c):
    lr, beta1, beta2, eps, weight_decay = 0.01, 0.9, 0.99, 1e-2, 0.1  # eps this big, so that its place shows
    param = torch.randn(4, 3)
    reference = TorchAdamW(param, lr, (beta1, beta2), eps, weight_decay)
    m, v = torch.zeros_like(param), torch.zeros_like(param)
    steps = []  # (the inputs of each step: babygpt's state after the step before, and the step's settings)
    for step in (1, 2, 3):
        grad = torch.randn(4, 3)
        steps.append(((param, grad, m, v), (step, lr, beta1, beta2, eps, weight_decay), reference.step(grad)))
        param, m, v = steps[-1][2]
    results = c.script(*[("adamw_update", (*state, *settings)) for state, settings, _ in steps])
    for i, ((param, grad, m, v), settings, (expected_param, expected_m, expected_v)) in enumerate(steps):
        step = settings[0]
        new_param, new_m, new_v = c.pair(results[i], "adamw_update", ("param", "m", "v"))
        for what, t in (("the new param", new_param), ("the new m", new_m), ("the new v", new_v)):
            c.tensor(t, what, param.shape)
        at = f"at step {step}"
        l2 = adam_variant(param, grad, m, v, *settings, decoupled=False)
        c.match(new_m, expected_m, f"{at}, m", [
            (l2[1], "your weight decay goes through the moments (Adam with L2 regularisation): AdamW keeps it "
                    "out of m and v and shrinks the weights directly, param * (1 - lr * weight_decay)"),
            (grad, "m is a running mean of the gradients: beta1 * m + (1 - beta1) * grad, not the gradient"),
            (beta2 * m + (1 - beta2) * grad, "m uses beta2: m is beta1 * m + (1 - beta1) * grad, v uses beta2"),
        ])
        c.match(new_v, expected_v, f"{at}, v", [
            (adam_variant(param, grad, m, v, *settings, square=False)[2],
             "v is a running mean of the *squared* gradients: beta2 * v + (1 - beta2) * grad * grad"),
            (beta1 * v + (1 - beta1) * grad * grad, "v uses beta1: v is beta2 * v + (1 - beta2) * grad**2"),
        ])
        c.match(new_param, expected_param, f"{at}, the new param", [
            (adam_variant(param, grad, m, v, *settings, correct=False)[0],
             "no bias correction: m and v start at 0, so early on they are too small. Divide them by "
             "(1 - beta1**step) and (1 - beta2**step) before the update"),
            (adam_variant(param, grad, m, v, *settings, eps_inside=True)[0],
             "eps is inside the square root: AdamW divides by sqrt(v_hat) + eps"),
            (adam_variant(param, grad, m, v, *settings)[0] + lr * weight_decay * param - weight_decay * param,
             "the weight decay is not scaled by the learning rate: param * (1 - lr * weight_decay)"),
            (adam_variant(param, grad, m, v, *settings)[0] + lr * weight_decay * param,
             "no weight decay: shrink the weights, param * (1 - lr * weight_decay), before the update"),
            (l2[0], "your weight decay goes through the moments (Adam with L2 regularisation): AdamW shrinks "
                    "the weights directly, param * (1 - lr * weight_decay)"),
        ])
    c.ok("m and v: running means of the gradient and of its square")
    c.ok("the update, with bias correction and decoupled weight decay, equals torch.optim.AdamW's for 3 steps")
