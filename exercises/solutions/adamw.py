"""Solution: one AdamW update (walkthrough step 8)."""


def adamw_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m = beta1 * m + (1 - beta1) * grad  # running mean of the gradient
    v = beta2 * v + (1 - beta2) * grad * grad  # running mean of its square
    m_hat = m / (1 - beta1**step)  # bias correction: m and v start at 0
    v_hat = v / (1 - beta2**step)
    param = param * (1 - lr * weight_decay)  # decoupled weight decay
    param = param - lr * m_hat / (v_hat.sqrt() + eps)
    return param, m, v
