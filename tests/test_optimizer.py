"""optimizer.py's AdamW against torch.optim.AdamW (the reference), and the start-up time it exists for."""

import io
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY
from model import GPT, GPTConfig
from babygpt.optimizer import make_optimizer


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=16, block_size=8))


def train_steps(model, optimizer, steps, seed):
    batches = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 11, (4, 9), generator=batches)
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def torch_adamw(model, fused):
    """torch.optim.AdamW over the same groups (weight decay on 2-D weights only) and settings as make_optimizer."""
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.99), fused=fused)


def through_a_file(state):
    """A state_dict as a checkpoint holds it: saved, then loaded back with weights_only=True (no pickle)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_takes_the_same_steps_as_torch_optims(fused):
    ours, reference = tiny_gpt(), tiny_gpt()
    train_steps(ours, make_optimizer(ours, 1e-2, 0.1, (0.9, 0.99), fused=fused), 6, seed=1)
    train_steps(reference, torch_adamw(reference, fused), 6, seed=1)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6), name  # the loop is torch's own arithmetic: equal in practice
    assert not torch.equal(ours.token_embedding.weight, tiny_gpt().token_embedding.weight)  # it did move


@pytest.mark.parametrize("fused", [False, True])
def test_a_state_saved_by_torch_optim_loads_and_goes_on_the_same_and_back(fused):
    # a checkpoint written before optimizer.py existed (torch.optim.AdamW) resumes; and ours loads into torch's
    reference = tiny_gpt()
    reference_opt = torch_adamw(reference, fused)
    train_steps(reference, reference_opt, 3, seed=2)
    ours = tiny_gpt()
    ours.load_state_dict(reference.state_dict())
    ours_opt = make_optimizer(ours, 1e-2, 0.1, (0.9, 0.99), fused=fused)
    ours_opt.load_state_dict(through_a_file(reference_opt.state_dict()))
    train_steps(reference, reference_opt, 3, seed=3)
    train_steps(ours, ours_opt, 3, seed=3)
    for p, q in zip(ours.parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)
    back = tiny_gpt()
    back.load_state_dict(ours.state_dict())
    back_opt = torch_adamw(back, fused)
    back_opt.load_state_dict(through_a_file(ours_opt.state_dict()))
    train_steps(back, back_opt, 2, seed=4)
    train_steps(ours, ours_opt, 2, seed=4)
    for p, q in zip(ours.parameters(), back.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


def test_a_state_of_other_shapes_is_refused():
    small, wide = tiny_gpt(), GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=32, block_size=8))
    small_opt = make_optimizer(small, 1e-2, 0.1, (0.9, 0.99))
    train_steps(small, small_opt, 1, seed=5)
    with pytest.raises(ValueError, match="the saved exp_avg of parameter 0"):
        make_optimizer(wide, 1e-2, 0.1, (0.9, 0.99)).load_state_dict(small_opt.state_dict())


@pytest.mark.slow
def test_training_resuming_and_sampling_never_import_torchs_compiler(slice_dir, tmp_path):
    # torch.optim's first optimizer, and any normal_ on the 'meta' device, import torch._dynamo: 2.3 s of start-up
    out_dir = tmp_path / "run"
    flags = ["--data_dir", str(slice_dir), "--out_dir", str(out_dir), "--eval_interval", "5", *TINY]
    script = (f"import sys, train, sample\n"
              f"train.main({[*flags, '--max_iters', '5']!r})\n"
              f"train.main({[*flags, '--max_iters', '10', '--resume']!r})\n"
              f"train.main({[*flags, '--max_iters', '5', '--overwrite', '--optimizer', 'muon']!r})\n"
              f"sample.main(['--out_dir', {str(out_dir)!r}, '--max_new_tokens', '5'])\n"
              f"print('compiler imported:', 'torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "compiler imported: False"
