"""
compiling.py -- decides whether the model runs compiled: torch.compile tried on a real batch, and every later
kind of call tried again, with one line and the eager model whenever the compiler fails. Skip on a first read:
train.py calls maybe_compile once.
"""

import sys

import torch


def maybe_compile(model, example_batch, machine):
    """The model torch.compile'd when the settings ask for it (tried on one real batch), else the model itself."""
    if not machine.compile:
        return model
    x, y = (t.to(machine.device) for t in example_batch)
    compiled = compile_or_fallback(model, x, y, machine.autocast())
    return model if compiled is model else CompileGuard(model, compiled, trial_backward=machine.world_size == 1)


def compile_or_fallback(model, x, y, autocast, backend="inductor"):
    """torch.compile(model), tried once on a real batch (compiling happens lazily, at the first call). If it
    fails (no C++ compiler, an unsupported GPU, a torch bug), say so in one line and train uncompiled instead.
    The trial runs with forked random streams and its gradients are dropped, so it changes nothing."""
    compiled = torch.compile(model, backend=backend)
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), autocast:
            compiled(x, y)[1].backward()
    except Exception as e:  # noqa: BLE001 -- any compiler failure means: fall back to eager
        print(f"warning: torch.compile failed ({type(e).__name__}: {first_line(e)}); "
              f"training without it", file=sys.stderr)
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


class CompileGuard(torch.nn.Module):
    """The compiled model, and the eager one to fall back on. torch.compile compiles again for every new kind of
    call (the training batch, the evaluation under no_grad; its backward lazily, at the first backward), long
    after compile_or_fallback's trial; any of those compiles can fail (a compile cache left half-written by a
    killed run, a compiler bug for one shape). So each new kind of call is first tried here -- its forward and,
    when gradients are on, its backward, with forked random streams and the gradients so far put aside -- and a
    failure, then or later, is one line and the run goes on uncompiled. Under torchrun the backward is not tried
    (DDP's gradient hooks would fire): a failure there stays a traceback."""

    def __init__(self, model, compiled, trial_backward=True):
        super().__init__()
        self.model, self.compiled, self.trial_backward = model, compiled, trial_backward
        self.tried, self.failed = set(), False

    def forward(self, *inputs):
        if not self.failed:
            kind = (tuple(tuple(t.shape) for t in inputs if t is not None), torch.is_grad_enabled(),
                    self.model.training)
            try:
                if kind not in self.tried:
                    self.try_compiled(inputs)
                    self.tried.add(kind)
                return self.compiled(*inputs)
            except torch.OutOfMemoryError:
                raise  # not the compiler's fault: the eager model would run out of memory too
            except Exception as e:  # noqa: BLE001 -- any compiler failure means: go on eager
                self.failed = True
                print(f"warning: torch.compile failed ({type(e).__name__}: {first_line(e)}); going on without it",
                      file=sys.stderr)
        return self.model(*inputs)

    def try_compiled(self, inputs):
        devices = [t.device for t in inputs if t is not None and t.device.type == "cuda"][:1]
        backward = self.trial_backward and torch.is_grad_enabled()
        grads = [p.grad for p in self.model.parameters()]  # the micro-batches' gradients so far, put aside
        try:
            with torch.random.fork_rng(devices=devices):
                loss = self.compiled(*inputs)[1]
                if backward and loss is not None:
                    loss.backward()
        finally:
            for p, grad in zip(self.model.parameters(), grads):
                p.grad = grad


def first_line(e):
    """What went wrong, in one line: torch's compiler errors start "backend='inductor' raised:", the cause next."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines or [""])[0]
