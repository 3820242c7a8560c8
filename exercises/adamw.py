"""Exercise 10 (walkthrough step 8, the optimizer): one AdamW update, as torch.optim.AdamW does it.

Check it: python -m exercises check adamw
"""


def adamw_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step for one parameter tensor. Returns (new_param, new_m, new_v), all of param's shape.

    param, grad: the parameter and its gradient; m, v: the running means of the gradient and of its square
    (zeros before the first step); step: 1 for the first update, 2 for the second, ...

        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)   # bias correction: m, v start at 0
        param = param * (1 - lr * weight_decay)                      # decoupled weight decay (the W)
        param = param - lr * m_hat / (sqrt(v_hat) + eps)

    Return new tensors: do not change param, grad, m or v in place (no +=, no methods ending in _).
    Hint: v_hat.sqrt() is the element-wise square root.
    """
    raise NotImplementedError
