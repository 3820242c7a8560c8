"""The optimizers: runs use torch.optim.AdamW (weight decay on matrices only); adamw_step, the update written
out as a lesson, takes torch's steps; optimizer states saved before the runs used torch.optim load and go on
the same; Muon is a torch.optim.Optimizer; and no private torch call is left on the learner's path."""

import io
import re

import pytest
import torch
from conftest import ROOT

from babygpt.muon import Muon, make_muon_optimizer
from babygpt.optimizer import adamw_step, load_state, make_optimizer, weight_decay_groups
from model import GPT, GPTConfig


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=16, block_size=8))


def gradients(model, seed):
    """A real loss.backward() on a random batch: every parameter gets its gradient."""
    idx = torch.randint(0, 11, (4, 9), generator=torch.Generator().manual_seed(seed))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()


def train_steps(model, optimizer, steps, seed):
    for step in range(steps):
        gradients(model, seed * 1000 + step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def through_a_file(state):
    """A state_dict as a checkpoint holds it: saved, then loaded back with weights_only=True (no pickle)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_make_optimizer_is_torchs_adamw_with_decay_on_matrices_only():
    model = tiny_gpt()
    optimizer = make_optimizer(model, 1e-2, 0.1, (0.9, 0.99), fused=True)
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["fused"]
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("fused", [False, True])
def test_the_written_out_adamw_step_takes_torchs_steps(fused):
    lr, ours, reference = 1e-2, tiny_gpt(), tiny_gpt()
    optimizer = make_optimizer(reference, lr, 0.1, (0.9, 0.99), fused=fused)
    train_steps(reference, optimizer, 6, seed=1)
    groups = weight_decay_groups(list(ours.parameters()), 0.1)  # the groups make_optimizer gives torch
    decay = {p: group["weight_decay"] for group in groups for p in group["params"]}
    states = {}
    for step in range(6):
        gradients(ours, 1000 + step)
        for p in ours.parameters():
            adamw_step(p, states.setdefault(p, {}), lr, (0.9, 0.99), weight_decay=decay[p])
            p.grad = None
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        if fused:  # one kernel, its own order of operations: within 1% of one step (lr) of the loop
            assert torch.allclose(p, q, rtol=0, atol=lr / 100), name
        else:  # torch's own for-loop does exactly this arithmetic
            assert torch.equal(p, q), name
            assert torch.equal(states[p]["exp_avg_sq"], optimizer.state[q]["exp_avg_sq"]), name
    assert not torch.equal(ours.token_embedding.weight, tiny_gpt().token_embedding.weight)  # it did move


def old_layout(state):
    """An optimizer state as babygpt wrote it before the runs used torch.optim: torch's layout, but each group
    holds only lr, betas, eps, weight_decay (and Muon's settings), no fused/foreach/... keys."""
    kept = ("lr", "betas", "eps", "weight_decay", "momentum", "lr_scale", "params")
    return {"state": state["state"], "param_groups": [{k: v for k, v in group.items() if k in kept}
                                                      for group in state["param_groups"]]}


def test_a_state_without_torchs_group_keys_loads_keeps_the_fused_kernel_and_goes_on_the_same():
    reference = tiny_gpt()
    reference_opt = make_optimizer(reference, 1e-2, 0.1, (0.9, 0.99), fused=True)
    train_steps(reference, reference_opt, 3, seed=2)
    ours = tiny_gpt()
    ours.load_state_dict(reference.state_dict())
    ours_opt = make_optimizer(ours, 1e-2, 0.1, (0.9, 0.99), fused=True)
    load_state(ours_opt, through_a_file(old_layout(reference_opt.state_dict())))
    # torch.optim's own load_state_dict would leave fused None here: its slowest loop, other arithmetic
    assert all(group["fused"] is True for group in ours_opt.param_groups)
    train_steps(reference, reference_opt, 3, seed=3)
    train_steps(ours, ours_opt, 3, seed=3)
    for p, q in zip(ours.parameters(), reference.parameters()):
        assert torch.equal(p, q)  # the same kernel on the same state: bit for bit


def test_a_state_of_other_shapes_is_refused():
    small, wide = tiny_gpt(), GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=32, block_size=8))
    small_opt = make_optimizer(small, 1e-2, 0.1, (0.9, 0.99))
    train_steps(small, small_opt, 1, seed=5)
    with pytest.raises(ValueError, match="the saved exp_avg of parameter 0"):
        load_state(make_optimizer(wide, 1e-2, 0.1, (0.9, 0.99)), small_opt.state_dict())


def test_muon_is_a_torch_optimizer_whose_state_round_trips_through_a_file():
    model, twin = tiny_gpt(), tiny_gpt()
    optimizer = make_muon_optimizer(model, 1e-3, 0.02, 0.95, 0.1, (0.9, 0.99), fused=True)
    assert isinstance(optimizer.muon, Muon) and isinstance(optimizer.muon, torch.optim.Optimizer)
    train_steps(model, optimizer, 2, seed=6)
    twin.load_state_dict(model.state_dict())
    twin_opt = make_muon_optimizer(twin, 1e-3, 0.02, 0.95, 0.1, (0.9, 0.99), fused=True)
    load_state(twin_opt, through_a_file(optimizer.state_dict()))
    train_steps(model, optimizer, 2, seed=7)
    train_steps(twin, twin_opt, 2, seed=7)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_no_private_torch_call_outside_the_measuring_tools():
    """torch._anything is PyTorch's undocumented inside: it may change in any release. The learner's code (the
    scripts, the package, the lessons) uses only torch's public API; tools/ may measure with anything."""
    private = re.compile(r"\btorch\._")
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("tools", "tests") or any(part.startswith(".") for part in relative.parts):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if private.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == []
