"""Sparse attention: the BigBird and sliding-window masks have the structure they claim, stay causal, cost
linear pairs, and degenerate to full causal attention when the window covers the whole sequence; a sliding
model's output at t depends on exactly the last L * (W - 1) + 1 inputs."""

import pytest
import torch

from babygpt.attention_patterns import (attention_pattern, bigbird_mask, count_pairs, receptive_field,
                                        sliding_mask)
from lessons.sparse_attention import pairs_table
from model import GPT, GPTConfig, causal_mask

SMALL = dict(block_size=32, vocab_size=11, n_layer=2, n_head=2, n_embd=24)


@pytest.mark.parametrize("T,window,n_global,n_random", [(64, 8, 2, 3), (40, 4, 0, 0), (50, 1, 5, 2), (30, 6, 3, 0)])
def test_bigbird_mask_structure_and_counts(T, window, n_global, n_random):
    mask = bigbird_mask(T, window, n_global, n_random, seed=1)
    assert not mask.triu(diagonal=1).any()  # causal: no query sees a later key
    for t in range(T):
        row = mask[t]
        assert row[max(0, t - window + 1): t + 1].all()  # the sliding window, itself included
        assert row[: min(n_global, t + 1)].all()  # the global tokens
        assert int(row.sum()) == min(t + 1, window + n_global + n_random)  # window + global + random, no more
    assert mask[:, :n_global].sum() == sum(min(n_global, t + 1) for t in range(T))  # every query reads the globals


def test_bigbird_pairs_grow_linearly_while_full_grows_quadratically():
    per_query = 8 + 2 + 2
    for T in (256, 512, 1024):
        assert count_pairs(causal_mask(T)) == T * (T + 1) // 2
        assert count_pairs(bigbird_mask(T, 8, 2, 2)) <= per_query * T
    assert count_pairs(bigbird_mask(1024, 8, 2, 2)) < 0.03 * count_pairs(causal_mask(1024))


def test_lesson_table_shows_linear_versus_quadratic_growth():
    rows = pairs_table([128, 512, 2048], window=16, n_global=2, n_random=2)
    full_growth = [b[1] / a[1] for a, b in zip(rows, rows[1:])]
    window_growth = [b[2] / a[2] for a, b in zip(rows, rows[1:])]
    sparse_growth = [b[3] / a[3] for a, b in zip(rows, rows[1:])]
    assert all(15 < g < 17 for g in full_growth)  # x4 in T -> about x16 pairs
    assert all(3.9 < g < 4.4 for g in window_growth + sparse_growth)  # x4 in T -> about x4 (short first rows)
    assert all(row[2] == 16 * row[0] - 16 * 15 // 2 for row in rows)  # w per query, fewer in the first w - 1 rows


@pytest.mark.parametrize("T,window", [(20, 1), (20, 5), (12, 12), (9, 30)])
def test_sliding_mask_is_a_causal_band(T, window):
    mask = sliding_mask(T, window)
    for t in range(T):
        assert mask[t].nonzero().flatten().tolist() == list(range(max(0, t - window + 1), t + 1))
    # a KV cache's rows: queries start..start+n-1 over keys 0..start+n-1 are the square mask's bottom rows
    assert torch.equal(causal_mask(4, T, first_query=T - 4, window=window), mask[-4:])
    assert torch.equal(causal_mask(4, T, first_query=T - 4), causal_mask(T)[-4:])


def test_bigbird_mask_is_reproducible_and_seeded():
    assert torch.equal(bigbird_mask(48, 4, 1, 3, seed=5), bigbird_mask(48, 4, 1, 3, seed=5))
    assert not torch.equal(bigbird_mask(48, 4, 1, 3, seed=5), bigbird_mask(48, 4, 1, 3, seed=6))


@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
def test_bigbird_with_full_window_equals_causal_attention(attn_impl):
    torch.manual_seed(0)
    causal = GPT(GPTConfig(**SMALL, attn_impl=attn_impl)).eval()
    sparse_config = GPTConfig(**SMALL, attn_impl=attn_impl, attn_pattern="bigbird", bigbird_window=32,
                              bigbird_global=0, bigbird_random=0)
    sparse = GPT(sparse_config, attention_pattern(sparse_config)).eval()
    sparse.load_state_dict(causal.state_dict())  # the mask is not a saved weight: the same state_dict fits both
    idx = torch.randint(0, 11, (3, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(causal(idx)[0], sparse(idx)[0], atol=1e-5)
        assert torch.allclose(causal(idx[:, :20])[0], sparse(idx[:, :20])[0], atol=1e-5)  # shorter input too


def test_bigbird_model_cannot_see_outside_its_pattern():
    """Changing a token outside a query's window, globals and random links leaves that query's logits alone."""
    torch.manual_seed(0)
    cfg = GPTConfig(**{**SMALL, "n_layer": 1}, attn_pattern="bigbird", bigbird_window=4, bigbird_global=1, bigbird_random=1)
    model = GPT(cfg, attention_pattern(cfg)).eval()
    mask = model.blocks[0].attn.pattern
    t = 31
    hidden = (~mask[t, :t]).nonzero().flatten()  # earlier keys that query t may not read
    idx = torch.randint(0, 11, (1, 32), generator=torch.Generator().manual_seed(3))
    changed = idx.clone()
    changed[0, hidden] = (changed[0, hidden] + 1) % 11
    visible = mask[t].nonzero().flatten()[1]  # a key it does read (the first one is the global token)
    changed_visible = idx.clone()
    changed_visible[0, visible] = (changed_visible[0, visible] + 1) % 11
    with torch.no_grad():
        assert torch.allclose(model(idx)[0][0, t], model(changed)[0][0, t], atol=1e-6)
        assert not torch.allclose(model(idx)[0][0, t], model(changed_visible)[0][0, t], atol=1e-6)


@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
def test_sliding_with_a_window_as_long_as_the_text_equals_causal_attention(attn_impl):
    """With W >= T nothing is ever outside the window: the same weights give the full causal RoPE model."""
    torch.manual_seed(0)
    causal = GPT(GPTConfig(**SMALL, attn_impl=attn_impl, pos_emb="rope")).eval()
    sliding = GPT(GPTConfig(**SMALL, attn_impl=attn_impl, pos_emb="rope", attn_pattern="sliding", attn_window=32)).eval()
    sliding.load_state_dict(causal.state_dict())  # no new weights: a mask is all that differs
    idx = torch.randint(0, 11, (3, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(causal(idx)[0], sliding(idx)[0], atol=1e-5, rtol=0)
        short = GPT(GPTConfig(**SMALL, pos_emb="rope", attn_pattern="sliding", attn_window=20)).eval()
        short.load_state_dict(causal.state_dict())  # W = 20 >= T = 20
        torch.testing.assert_close(causal(idx[:, :20])[0], short(idx[:, :20])[0], atol=1e-5, rtol=0)
        assert not torch.allclose(causal(idx)[0], short(idx)[0], atol=1e-4)  # but T = 32 > W = 20 differs


@pytest.mark.parametrize("n_layer,window", [(1, 4), (3, 4), (2, 7)])
def test_sliding_model_output_depends_on_exactly_its_receptive_field(n_layer, window):
    """Each layer reaches W - 1 positions further back: the last position's logits change when the token
    L * (W - 1) positions back changes, and not when any token before that one does. The text is longer than
    block_size: a sliding model reads it whole."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**SMALL, "n_layer": n_layer}, pos_emb="rope", attn_pattern="sliding", attn_window=window)).eval()
    idx = torch.randint(0, 11, (1, 48), generator=torch.Generator().manual_seed(4))  # 48 > block_size 32
    reach = receptive_field(n_layer, window)  # positions 48 - reach .. 47 can matter to position 47
    with torch.no_grad():
        base = model(idx)[0][0, -1]
        for position, matters in ((48 - reach, True), (48 - reach - 1, False), (0, False)):
            changed = idx.clone()
            changed[0, position] = (changed[0, position] + 1) % 11
            assert torch.allclose(model(changed)[0][0, -1], base, atol=1e-6) != matters, position


def test_bad_attn_pattern_is_rejected():
    with pytest.raises(ValueError, match="attn_pattern"):
        GPTConfig(attn_pattern="dense")
