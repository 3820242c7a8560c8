"""The GPT's properties a learner can check: causal, tied, correctly sized, correctly initialised, trainable."""

import math

import pytest
import torch

from babygpt.optimizer import make_optimizer
from model import GPT, GPTConfig, sample_next_token

SMALL = dict(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=24)


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **overrides})).eval()


def test_causality_future_tokens_do_not_change_past_logits():
    model = small_model()
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(1))
    t = 7
    changed = idx.clone()
    changed[:, t + 1] = (changed[:, t + 1] + 1) % 11
    with torch.no_grad():
        before, _ = model(idx)
        after, _ = model(changed)
    assert torch.equal(before[:, : t + 1], after[:, : t + 1])  # positions 0..t never saw token t+1
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])  # positions from t+1 on did


@pytest.mark.parametrize("training", [False, True])
def test_sdpa_equals_explicit_attention(training):
    sdpa = small_model(attn_impl="sdpa")
    explicit = small_model(attn_impl="explicit")
    explicit.load_state_dict(sdpa.state_dict())
    sdpa.train(training), explicit.train(training)
    idx = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(sdpa(idx)[0], explicit(idx)[0], atol=1e-5)


def test_lm_head_is_tied_to_token_embedding():
    model = small_model()
    assert model.lm_head.weight is model.token_embedding.weight
    _, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    loss.backward()
    assert model.token_embedding.weight.grad is not None


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_matches_formula(bias):
    c, v, t, layers = 24, 11, 16, 2
    # attention 4C^2 (+4C biases), MLP 8C^2 (+5C biases), two LayerNorms 4C (2C gains without biases)
    per_block = 12 * c * c + (13 * c if bias else 2 * c)
    expected = v * c + t * c + layers * per_block + (2 * c if bias else c)  # + embeddings, final LayerNorm
    assert small_model(bias=bias).num_params() == expected


def test_loss_at_initialisation_is_a_uniform_guess():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    idx = torch.randint(0, 65, (8, 64))
    targets = torch.randint(0, 65, (8, 64))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(65)) < 0.1  # ln 65 = 4.17: every character equally likely


def test_residual_projections_get_scaled_init():
    model = GPT(GPTConfig(n_layer=8, n_embd=256, n_head=4))
    scaled = 0.02 / math.sqrt(2 * 8)
    assert abs(model.blocks[0].attn.c_proj.weight.std().item() - scaled) < 0.1 * scaled
    assert abs(model.blocks[0].mlp.c_proj.weight.std().item() - scaled) < 0.1 * scaled
    assert abs(model.blocks[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002


def test_a_tiny_batch_can_be_memorised():
    model = small_model().train()
    idx = torch.randint(0, 11, (4, 16), generator=torch.Generator().manual_seed(3))
    targets = torch.randint(0, 11, (4, 16), generator=torch.Generator().manual_seed(4))
    optimizer = make_optimizer(model, learning_rate=1e-2, weight_decay=0.0, betas=(0.9, 0.99))
    for _ in range(150):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_forward_refuses_sequences_longer_than_block_size():
    with pytest.raises(ValueError, match="block_size"):
        small_model()(torch.zeros(1, 17, dtype=torch.long))


def test_generation_runs_past_block_size_by_cropping():
    model = small_model()
    prompt = torch.randint(0, 11, (2, 20))  # already longer than block_size 16
    out = model.generate(prompt, max_new_tokens=50, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 70) and torch.equal(out[:, :20], prompt)


def test_temperature_zero_is_greedy_and_deterministic():
    model = small_model()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    first = model.generate(prompt, 30, temperature=0, generator=torch.Generator().manual_seed(1))
    second = model.generate(prompt, 30, temperature=0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, second)
    with torch.no_grad():  # each token is the argmax given the (cropped) context before it
        for t in range(1, first.size(1)):
            logits, _ = model(first[:, max(0, t - 16) : t])
            assert first[0, t] == logits[0, -1].argmax()


def test_same_seed_same_sample_different_seed_different_sample():
    model = small_model()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(prompt, 40, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 40, generator=torch.Generator().manual_seed(5))
    c = model.generate(prompt, 40, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.zeros(1, 10)  # all tied
    generator = torch.Generator().manual_seed(0)
    drawn = {sample_next_token(logits, top_k=3, generator=generator).item() for _ in range(300)}
    assert len(drawn) == 3
    assert sample_next_token(torch.zeros(1, 10), top_k=1000, generator=generator).shape == (1, 1)  # clamped


def test_weight_decay_only_on_matrices_and_tied_matrix_once():
    model = small_model()
    optimizer = make_optimizer(model, learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert sum(p is model.token_embedding.weight for p in decayed["params"]) == 1
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.num_params()


@pytest.mark.parametrize("bad, message", [
    (dict(n_embd=30, n_head=4), "divisible"),
    (dict(n_layer=0), "n_layer"),
    (dict(block_size=-1), "block_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(attn_impl="flash"), "attn_impl"),
])
def test_impossible_configs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**bad)
