"""Generation: the KV-cache engine gives the reference's tokens, the sampling controls keep the right tokens,
and sample.py's --interactive loop answers prompts and ends at end of input."""

import pytest
import torch
from conftest import run_script

import sample
from babygpt import checkpoint, engine
from babygpt.attention_patterns import attention_pattern
from babygpt.runner import run
from model import sample_next_token


@pytest.fixture(scope="module")
def trained_model(trained_run):
    """The tiny trained model (block_size 32, 2 layers) from the conftest run, in eval mode."""
    return checkpoint.load_model(checkpoint.load(trained_run / "ckpt.pt"), "cpu").eval()


def prompts(model, length, batch=3):
    """`batch` different prompts of `length` tokens each, (batch, length)."""
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(length))


@pytest.mark.parametrize("prompt_length", [5, 50])  # shorter and longer than block_size 32
@pytest.mark.parametrize("settings", [dict(temperature=0), dict(temperature=1.0), dict(temperature=0.8, top_k=5, top_p=0.9)],
                         ids=["greedy", "sampled", "top-k-top-p"])
def test_cached_generation_gives_the_reference_tokens(trained_model, prompt_length, settings):
    idx = prompts(trained_model, prompt_length)
    new = 4 * trained_model.config.block_size  # run far past the window: the cache must be re-filled exactly
    reference = trained_model.generate(idx, new, generator=torch.Generator().manual_seed(3), **settings)
    cached = engine.generate(trained_model, idx, new, generator=torch.Generator().manual_seed(3), **settings)
    assert cached.shape == (3, prompt_length + new)
    assert torch.equal(cached, reference)


@pytest.mark.parametrize("options", [
    dict(attn_pattern="bigbird", bigbird_window=4, bigbird_global=1, bigbird_random=1),
    dict(pos_emb="rope", norm="rmsnorm", qk_norm=True, mlp_act="relu2", tie_head=False),
    dict(pos_emb="rope", attn_pattern="sliding", attn_window=4, norm="rmsnorm", mlp_act="relu2"),
])
def test_cached_generation_follows_every_model_option(options):
    """The cache must compute what the full forward pass computes, whatever the options: sparse mask rows,
    rotary positions, QK-norm, RMSNorm, ReLU², an untied head, a sliding window (whose
    60 new tokens run past block_size on the rolling cache)."""
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(block_size=24, vocab_size=11, n_layer=2, n_head=2, n_embd=16, **options)
    model = GPT(config, attention_pattern(config)).eval()
    with torch.no_grad():  # sharpen attention: at initialisation it is nearly uniform, which hides the mask
        for block in model.blocks:
            block.attn.c_attn.weight.mul_(20)
    idx = torch.randint(0, 11, (2, 24), generator=torch.Generator().manual_seed(1))
    cache = engine.KVCache(config, 2, "cpu")
    engine.forward(model, idx[:, :3], cache)  # prefill three tokens, then one at a time
    full_logits, _ = model(idx)
    for t in range(3, 24):
        cached = engine.forward(model, idx[:, t : t + 1], cache)  # (2, V) at position t
        assert torch.allclose(cached, full_logits[:, t], atol=1e-5), t
    prompt = idx[:, :3]
    sampled = dict(temperature=1.0, generator=torch.Generator().manual_seed(3))
    reference = model.generate(prompt, 60, **sampled)
    sampled["generator"] = torch.Generator().manual_seed(3)
    assert torch.equal(engine.generate(model, prompt, 60, **sampled), reference)


def test_cached_logits_match_the_full_recompute(trained_model):
    """Token by token through the cache, the logits equal a full forward over the same prefix (to float error)."""
    idx = prompts(trained_model, trained_model.config.block_size, batch=2)  # (2, 32)
    cache = engine.KVCache(trained_model.config, batch_size=2, device="cpu")
    with torch.no_grad():
        cached = [engine.forward(trained_model, idx[:, :4], cache)]  # prefill 4 tokens, then one at a time
        cached += [engine.forward(trained_model, idx[:, t - 1 : t], cache) for t in range(5, idx.size(1) + 1)]
        full = [trained_model(idx[:, :t])[0][:, -1, :] for t in range(4, idx.size(1) + 1)]
    assert cache.length == trained_model.config.block_size
    assert torch.allclose(torch.stack(cached), torch.stack(full), atol=1e-5, rtol=0)


def test_refill_every_n_agrees_until_the_window_is_full(trained_model):
    """The faster, inexact mode sees exactly the reference's context until the window first fills."""
    idx = prompts(trained_model, 5)
    block_size = trained_model.config.block_size
    exact = engine.generate(trained_model, idx, 3 * block_size, temperature=0)
    fast = engine.generate(trained_model, idx, 3 * block_size, temperature=0, refill_every=8)
    first = block_size + 1  # the 5 prompt tokens and new tokens up to the one computed from a full window
    assert torch.equal(fast[:, :first], exact[:, :first])


# -- sliding-window models: a rolling cache of W positions per layer, exact at any length


def sliding_model(block_size=16, window=5, n_layer=3, sharpen=20.0):
    """A small sliding-window model with rotary positions, attention sharpened: at initialisation it is nearly
    uniform, and a uniform average hides a key in the wrong slot or rotated for the wrong position."""
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(block_size=block_size, vocab_size=11, n_layer=n_layer, n_head=2, n_embd=16, pos_emb="rope",
                       attn_pattern="sliding", attn_window=window)
    model = GPT(config).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.c_attn.weight.mul_(sharpen)
    return model


@pytest.mark.parametrize("blocks", [4, 20])  # new tokens: 4x and 20x block_size, so the ring turns many times
@pytest.mark.parametrize("settings", [dict(temperature=0), dict(temperature=1.0)], ids=["greedy", "sampled"])
def test_rolling_cache_gives_the_full_forward_over_the_whole_text(blocks, settings):
    """The reference for a sliding model is its own definition: GPT.forward over the whole uncropped text.
    The rolling cache must give its tokens and, at every position, its logits."""
    model = sliding_model()
    idx = prompts(model, 2)  # (3, 2): shorter than the window, so the ring fills one token at a time first
    new = blocks * model.config.block_size
    with torch.no_grad():
        reference = model.generate(idx, new, generator=torch.Generator().manual_seed(3), **settings)  # never cropped
        cached = engine.generate(model, idx, new, generator=torch.Generator().manual_seed(3), **settings)
        assert torch.equal(cached, reference)
        full_logits, _ = model(reference)  # (3, 2 + new, V): one forward over the whole text, far past block_size
        cache = engine.make_cache(model, 3, "cpu")
        assert isinstance(cache, engine.RollingKVCache)
        cache.rotary.size = 7  # re-fill the run of rotary tables every 7 positions: its seams must not show
        logits = [engine.forward(model, reference[:, :2], cache)]  # prefill, then one token at a time
        logits += [engine.forward(model, reference[:, t : t + 1], cache) for t in range(2, reference.size(1))]
    torch.testing.assert_close(torch.stack(logits, dim=1), full_logits[:, 1:], atol=1e-5, rtol=0)


def test_rotary_table_rows_are_the_models_own():
    """The cache's run of rotary tables, re-filled as the text moves on (or jumps back), gives exactly the rows
    model.rotary_cos_sin computes for those positions alone."""
    from model import rotary_cos_sin

    table = engine.RotaryTable(8, "cpu", size=5)
    for start, T in [(0, 1), (1, 3), (4, 1), (5, 1), (6, 12), (40, 1), (41, 2), (2, 1)]:
        cos, sin = table(start, T)  # (T, 8) each
        expected_cos, expected_sin = rotary_cos_sin(torch.arange(start, start + T), 8)
        assert torch.equal(cos, expected_cos) and torch.equal(sin, expected_sin), (start, T)


def test_rolling_cache_takes_a_long_prompt_in_chunks():
    """A prompt several block_sizes long goes through the ring in chunks: the last position's logits are still
    the full forward's, and so is every token generated after it."""
    model = sliding_model()
    idx = prompts(model, 3 * model.config.block_size + 5)  # (3, 53)
    with torch.no_grad():
        reference = model.generate(idx, 40, temperature=0)
        assert torch.equal(engine.generate(model, idx, 40, temperature=0), reference)


def test_rolling_cache_memory_does_not_grow():
    """W slots per layer, allocated once: after thousands of tokens the cache holds the same tensors."""
    model = sliding_model()
    cache = engine.make_cache(model, 3, "cpu")
    expected = 2 * 3 * 3 * 2 * 5 * 8 * 4  # keys and values x n_layer x B x nh x W x hs x 4 bytes
    pointers = (cache.keys.data_ptr(), cache.values.data_ptr())
    token = torch.zeros(3, 1, dtype=torch.long)
    with torch.no_grad():
        for step in range(40 * model.config.block_size):
            engine.forward(model, token, cache)
            if step in (0, 10, 100, 639):
                assert engine.cache_bytes(cache) == expected  # the same size ...
                assert (cache.keys.data_ptr(), cache.values.data_ptr()) == pointers  # ... and the same memory
    assert cache.length == 40 * model.config.block_size  # the absolute position (RoPE's angle) keeps counting


@pytest.fixture(scope="module")
def sliding_run(slice_dir, tmp_path_factory):
    """A tiny sliding-window model (block 32, window 8), trained for a few steps."""
    from conftest import TINY, train_main

    out_dir = tmp_path_factory.mktemp("sliding")
    train_main("--data_dir", slice_dir, "--out_dir", out_dir, "--max_iters", 10, "--eval_interval", 10, "--overwrite",
               *TINY, "--pos_emb", "rope", "--attn_pattern", "sliding", "--attn_window", 8)
    return out_dir


def test_sample_cli_uses_the_rolling_cache_for_a_sliding_model(sliding_run, capsys):
    """sample.py picks the rolling cache by itself; --kv_cache 0 runs the uncropped reference: the same text,
    here 150 characters, almost 5 windows of block_size past the prompt."""
    args = ["--out_dir", sliding_run, "--start", "ROMEO:", "--max_new_tokens", 150, "--num_samples", 2]
    cached, reference = sample_stdout(capsys, *args), sample_stdout(capsys, *args, "--kv_cache", 0)
    assert cached == reference and cached.count("ROMEO:") == 2 and len(cached) > 2 * 150


def test_sample_cli_refuses_refill_every_for_a_sliding_model(sliding_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(sample.main, ["--out_dir", str(sliding_run), "--refill_every", "4"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: refill_every does not apply to a sliding-window model")


def drawn_tokens(probs, **settings):
    """The set of tokens sample_next_token ever picks from this distribution, over 4000 draws in one batch."""
    logits = torch.tensor(probs).log().repeat(4000, 1)  # (4000, V)
    return set(sample_next_token(logits, generator=torch.Generator().manual_seed(0), **settings)[:, 0].tolist())


@pytest.mark.parametrize("top_p, kept", [(0.3, {0}), (0.6, {0, 1}), (0.9, {0, 1, 2}), (0.97, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_with_enough_mass(top_p, kept):
    # probabilities 0.5, 0.3, 0.15, 0.05, in a shuffled vocabulary order to check the un-sorting too
    order = [2, 0, 3, 1]  # token 2 has 0.5, token 0 has 0.3, token 3 has 0.15, token 1 has 0.05
    probs = [0.0] * 4
    for rank, p in zip(order, [0.5, 0.3, 0.15, 0.05]):
        probs[rank] = p
    assert drawn_tokens(probs, top_p=top_p) == {order[i] for i in kept}


def test_top_k_keeps_exactly_k_even_with_ties():
    # four tokens share the top probability: top_k=2 must still keep exactly two of them, never three or four
    drawn = drawn_tokens([0.2, 0.2, 0.2, 0.2, 0.1, 0.1], top_k=2)
    assert len(drawn) == 2 and drawn <= {0, 1, 2, 3}


def sample_stdout(capsys, *argv):
    """Run sample.py's main in this process and return what it printed to stdout."""
    sample.main([str(a) for a in argv])
    return capsys.readouterr().out


def test_sample_cli_cache_on_and_off_print_the_same_text(trained_run, capsys):
    args = ["--out_dir", trained_run, "--start", "ROMEO:", "--max_new_tokens", 100, "--num_samples", 2, "--top_p", 0.95]
    cached, recomputed = sample_stdout(capsys, *args), sample_stdout(capsys, *args, "--kv_cache", 0)
    assert cached == recomputed and cached.count("ROMEO:") == 2


def test_sample_cli_stops_right_after_the_stop_text(trained_run, capsys):
    out = sample_stdout(capsys, "--out_dir", trained_run, "--start", "ROMEO:", "--max_new_tokens", 300, "--stop", "e")
    text = out[:-1]  # the final newline is printed after the sample
    assert text.startswith("ROMEO:") and text.endswith("e") and text.count("e") == 1


def test_interactive_answers_each_prompt_and_ends_at_end_of_input(trained_run):
    result = run_script("sample.py", "--out_dir", trained_run, "--interactive", "--max_new_tokens", 25,
                        stdin="ROMEO:\nJULIET:\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("> ") == 3  # asked for a prompt three times: two answered, then end of input
    assert len(result.stdout) == 2 * (25 + 1)  # two answers of 25 characters, each ended by a newline
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kv_cache", [True, False])
def test_zero_new_tokens_give_the_prompt_back_without_running_the_model(trained_model, kv_cache):
    # train.py asks for sample_chars tokens at every evaluation; 0 (no samples) must cost nothing
    calls = []
    hook = trained_model.token_embedding.register_forward_hook(lambda *_: calls.append(1))
    try:
        idx = prompts(trained_model, 5)
        assert torch.equal(engine.generate(trained_model, idx, 0, kv_cache=kv_cache), idx)
    finally:
        hook.remove()
    assert calls == []
