"""The build-up lesson: every step is the model it claims to be, learns, and the ordering that is the lesson's
point holds on Tiny Shakespeare; the last step is model.GPT."""

import numpy as np
import pytest
import torch
from conftest import train_main

import train
from babygpt import checkpoint
from babygpt.runner import run
from babygpt.tokenizer import read_meta
from lessons.build_up import (STEP_IDS, Bigram, StepBlock, bigram_floor, build_step, main,
                              mean_loss, parse_only, recipe, step_config, table, train_model,
                              whole_split)
from model import GPT, Block, GPTConfig
from prepare import prepare

# A small stand-in for the classic shape: the same structure, steps of a few milliseconds.
SMALL = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=32)


def trained(step_id, data, iters, seed, config=SMALL, learning_rate=3e-3):
    """Build step `step_id` from `seed` and train it with the lesson's loop; returns (model, training losses)."""
    _, cfg = recipe(iters, seed, learning_rate=learning_rate, warmup_iters=iters // 10)
    torch.manual_seed(seed)
    model = build_step(step_id, config)
    return model, train_model(model, data, cfg, config.block_size)


@pytest.fixture(scope="module")
def shakespeare(shakespeare_text, tmp_path_factory):
    """All of Tiny Shakespeare, prepared: (train tokens, val tokens)."""
    data_dir = tmp_path_factory.mktemp("build_up")
    prepare(shakespeare_text, data_dir)
    return train.load_split(data_dir, "train", 64), train.load_split(data_dir, "val", 64)


@pytest.mark.parametrize("step_id", STEP_IDS)
def test_every_step_builds_and_learns_on_a_tiny_slice(step_id, slice_dir):
    torch.set_num_threads(1)
    data = train.load_split(slice_dir, "train", SMALL.block_size)
    _, losses = trained(step_id, data, iters=40, seed=0, learning_rate=1e-2)
    assert losses[0] > 4.0  # a fresh model guesses about uniformly: ln 65 = 4.17
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5  # measured: 0.88 (step 8) to 1.49 lower


@pytest.mark.slow
def test_the_ordering_the_lesson_shows_holds_after_a_short_equal_budget(shakespeare):
    """150 steps each (a few seconds), val on the first 20,000 characters. Measured over seeds 0-3 (val loss):
    bigram 2.89-2.99 (it varies most: its embedding starts at N(0, 1)), one head 2.62-2.63, 4 blocks without
    residuals 3.35-3.36 (stuck at the unigram level), with residuals 2.63-2.65. So one head beats the bigram by
    0.26 to 0.36 and residuals win by 0.71 to 0.72; the margins below sit well inside both."""
    torch.set_num_threads(1)
    train_data, val_data = shakespeare
    val = whole_split(val_data[:20_000], SMALL.block_size)
    loss = {sid: mean_loss(trained(sid, train_data, iters=150, seed=0)[0], val) for sid in ("1", "2", "5a", "5b")}
    assert loss["2"] < loss["1"] - 0.15, loss  # attention beats the bigram
    assert loss["5b"] < loss["5a"] - 0.4, loss  # the residual stack beats the same stack without residuals
    assert loss["1"] > max(loss["2"], loss["5b"]), loss  # the bigram is worse than the models with residual pathways


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_last_steps_are_model_gpt(dropout):
    """Step 7 (no dropout) and step 8 are model.GPT with the same config: same parameters, and with copied
    weights the same logits, in eval mode and (same dropout masks from the same seed) in train mode."""
    classic = GPTConfig(vocab_size=65)  # the classic shape: 4 layers, 4 heads, 128 wide, block 64
    step_id = STEP_IDS[-1] if dropout else "7"
    torch.manual_seed(0)
    lesson = build_step(step_id, classic, dropout)
    gpt = GPT(step_config(step_id, classic, dropout))
    assert gpt.config.dropout == dropout and gpt.config.tie_head
    assert lesson.num_params() == gpt.num_params()
    lesson.load_state_dict(gpt.state_dict())  # strict: the same names and shapes
    x = torch.randint(0, 65, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(lesson.eval()(x)[0], gpt.eval()(x)[0], rtol=0, atol=0)
        torch.manual_seed(2)
        train_logits = lesson.train()(x)[0]
        torch.manual_seed(2)
        torch.testing.assert_close(train_logits, gpt.train()(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("step_id, dropout", [("7", 0.0), (STEP_IDS[-1], 0.1)])
@pytest.mark.slow
def test_the_last_steps_train_exactly_as_train_py_does(step_id, dropout, slice_dir, tmp_path):
    """From the same initial weights, the lesson's step 7 (step 8) built by build_step and trained by train_model,
    and `train.py --preset classic [--dropout 0.1] --dtype float32`, end identical: same batches, learning-rate
    schedule, AdamW settings, clipping and dropout masks. So --classic's train.py rows check the lesson's models.
    float32: train.py's auto dtype is bfloat16 autocast on CPUs with bf16 instructions; the lesson has none."""
    shape = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16}
    train_main("--preset", "classic", "--data_dir", slice_dir, "--out_dir", tmp_path, "--max_iters", 12, "--warmup_iters", 4,
               "--eval_interval", 12, "--eval_iters", 1, "--sample_chars", 0, "--save_interval", 0, "--threads", 1,
               "--dtype", "float32", "--dropout", dropout, *[f"--{k}={v}" for k, v in shape.items()])
    by_train_py = checkpoint.load_model(checkpoint.load(tmp_path / "last.pt")).state_dict()
    _, cfg = recipe(12, 1337, warmup_iters=4)  # 1337: train.py's default seed
    config = GPTConfig(vocab_size=read_meta(slice_dir)["vocab_size"], **shape)

    def lesson_trained(step_id, dropout):
        torch.manual_seed(cfg.seed)
        start = GPT(step_config(step_id, config, dropout)).state_dict()  # train.py's initial weights
        model = build_step(step_id, config, dropout)
        model.load_state_dict(start)
        assert model.config.dropout == dropout
        train_model(model, train.load_split(slice_dir, "train", 16), cfg, block_size=16)
        return model.state_dict()

    for (name, a), b in zip(lesson_trained(step_id, dropout).items(), by_train_py.values()):
        assert torch.equal(a, b), name
    if dropout:  # the masks made a difference, so the equality above is also one of dropout's random streams
        without = lesson_trained("7", 0.0)
        assert not all(torch.equal(a, b) for a, b in zip(without.values(), by_train_py.values()))


def test_step_block_with_everything_on_is_model_block():
    torch.manual_seed(0)
    block, ours = Block(SMALL), StepBlock(SMALL)
    ours.load_state_dict(block.state_dict())
    x = torch.randn(2, 8, SMALL.n_embd)
    torch.testing.assert_close(ours(x), block(x))


@torch.no_grad()
def test_without_residuals_a_block_replaces_the_stream():
    """Silence the last block's MLP: with residual pathways the input still reaches the head; without them the
    stream is gone and every position predicts the same thing."""
    x = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(0))
    for step_id, still_depends_on_input in (("5a", False), ("5b", True)):
        torch.manual_seed(0)
        model = build_step(step_id, SMALL).eval()
        model.blocks[-1].mlp.c_proj.weight.zero_()
        model.blocks[-1].mlp.c_proj.bias.zero_()
        logits = model(x)[0]  # (2, 16, V)
        assert (not torch.allclose(logits, logits[:1, :1].expand_as(logits))) == still_depends_on_input


@torch.no_grad()
def test_the_bigram_reads_only_the_current_character_and_the_later_steps_read_the_past():
    x = torch.randint(0, 65, (1, 16), generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[0, :8] = (changed[0, :8] + 1) % 65  # rewrite the first half only
    torch.manual_seed(0)
    bigram = Bigram(SMALL)
    for p in bigram.parameters():
        torch.nn.init.normal_(p)  # larger than the init's, so differences would show
    assert torch.equal(bigram(x)[0][0, 8:], bigram(changed)[0][0, 8:])
    assert torch.equal(bigram(x)[0][0], bigram.table()[x[0]])  # row x of the (V, V) table
    torch.manual_seed(0)
    head = build_step("2", SMALL).eval()
    assert not torch.allclose(head(x)[0][0, 8:], head(changed)[0][0, 8:])


def test_whole_split_predicts_every_token_exactly_once():
    data = np.arange(1, 200, dtype=np.uint16)  # 199 tokens: 198 predictions, 6 windows of 32 and a tail of 6
    parts = whole_split(data, 32)
    xs = torch.cat([x.flatten() for x, _ in parts])
    ys = torch.cat([y.flatten() for _, y in parts])
    assert xs.tolist() == list(range(1, 199)) and ys.tolist() == list(range(2, 200))


def test_bigram_floor_counts_pairs_with_add_one_smoothing():
    train_tokens, val_tokens = np.array([0, 1, 0, 1, 0]), np.array([0, 1, 1])
    # counts + 1: from 0 -> [1, 3], from 1 -> [3, 1]; val asks P(1 | 0) = 3/4 and P(1 | 1) = 1/4
    assert bigram_floor(train_tokens, val_tokens, 2) == pytest.approx(-(np.log(3 / 4) + np.log(1 / 4)) / 2)


def test_table_shows_each_steps_effect_seed_by_seed():
    results = {seed: {sid: {"params": 10, "train_loss": 3.0, "val_loss": v, "seconds": 1.0} for sid, v in zip(("1", "2"), vals)}
               for seed, vals in ((0, (3.0, 2.9)), (1, (3.2, 3.05)))}
    rows = table(["1", "2"], results).splitlines()
    assert rows[2].startswith("| 1 | bigram") and "3.100 (3.000 to 3.200)" in rows[2]
    assert "-0.125 (-0.150 to -0.100)" in rows[3]  # paired: seed 0 improved by 0.10, seed 1 by 0.15


def test_train_py_rows_sit_after_their_step_and_are_compared_with_it():
    def result(val_loss, command=None):
        return {"params": 10, "train_loss": 3.0, "val_loss": val_loss, "seconds": 1.0, "command": command}
    results = {0: {"7": result(2.10), "train.py": result(2.09, "train.py --preset classic"), "8": result(2.18),
                   "train.py + dropout": result(2.17, "train.py --preset classic --dropout 0.1")}}
    rows = table(["7", "8"], results).splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| 7", "| train.py", "| 8", "| train.py + dropout"]
    assert "`train.py --preset classic` itself: step 7's model" in rows[1] and "-0.010" in rows[1]  # vs step 7
    assert "+0.080" in rows[2]  # step 8 against step 7, not against the train.py row
    assert "`train.py --preset classic --dropout 0.1` itself: step 8's model" in rows[3] and "-0.010" in rows[3]


def test_only_picks_steps_in_order():
    assert parse_only("7,1,5") == ["1", "5a", "5b", "7"]


@pytest.mark.slow
def test_the_command_prints_the_table(slice_dir, tmp_path, capsys):
    run(main, ["--data_dir", str(slice_dir), "--steps", "3", "--only", "1,8", "--seed", "1", "2", "--threads", "1",
               "--classic", "--plot", "--figure", str(tmp_path / "build_up.png")])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 8", "| train.py + dropout"]  # step 8's check only
    assert all(" to " in row for row in rows)  # two seeds: mean and range
    assert "seed 2 train.py --preset classic --dropout 0.1:" in out
    assert (tmp_path / "build_up.png").stat().st_size > 5_000


@pytest.mark.parametrize("argv, message", [
    (["--only", "9"], "unknown step '9'"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--data_dir", "no/such/dir"], "not found"),
    (["--only", "1", "--classic"], "--only has neither"),
])
def test_mistakes_get_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
