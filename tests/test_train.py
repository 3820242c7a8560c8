"""A real (tiny) training run: checkpoints, metrics, exact resume, and sampling from the result."""

import dataclasses
import json

import pytest
import torch
from conftest import TINY, run_script, train_main

from babygpt import checkpoint
from babygpt.device import pick_dtype
from train import TrainConfig, learning_rate_at


def test_learning_rate_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=100)
    rates = [learning_rate_at(it, cfg) for it in range(101)]
    assert 0 < rates[0] < rates[5] < rates[9] < 1e-3  # no zero-lr first step, rising
    assert rates[10] == pytest.approx(1e-3)  # peak after warmup
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # then only down
    assert rates[100] == pytest.approx(1e-4)


def test_dtype_choice():
    assert pick_dtype("auto", "cuda", bf16_supported=True) == "bfloat16"
    assert pick_dtype("auto", "cuda", bf16_supported=False) == "float32"
    assert pick_dtype("auto", "cpu", bf16_supported=False) == "float32"
    assert pick_dtype("auto", "mps", bf16_supported=False) == "float32"
    assert pick_dtype("float32", "cuda", bf16_supported=True) == "float32"


def test_training_writes_checkpoints_and_metrics_and_learns(trained_run):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    steps = [r for r in records if "val_loss" not in r]
    assert [r["iter"] for r in evals] == [0, 20, 40]
    assert [r["iter"] for r in steps] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert set(steps[0]) == {"iter", "tokens", "train_loss", "lr", "ms_per_iter", "tokens_per_s"}
    # an evaluation line never reuses a step line's key for another quantity: one batch's loss is not an average
    assert set(evals[0]) == {"iter", "tokens", "eval_train_loss", "val_loss", "val_bpc", "lr", "eval_seconds"}
    assert steps[-1]["tokens"] == 40 * 8 * 32  # iterations x batch x block
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3  # it learned something

    best, last = checkpoint.load(trained_run / "ckpt.pt"), checkpoint.load(trained_run / "last.pt")
    assert last["iter_num"] == 40
    assert best["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in evals))
    assert best["meta"]["vocab_size"] == best["model_config"]["vocab_size"]
    # weights_only=True reads it: only tensors and plain containers inside
    torch.load(trained_run / "last.pt", weights_only=True)
    model = checkpoint.load_model(last)
    assert not model.training


def test_resume_continues_exactly_like_an_uninterrupted_run(slice_dir, tmp_path):
    common = ["--data_dir", slice_dir, "--eval_interval", 10, "--dropout", 0.1, *TINY]
    train_main("--out_dir", tmp_path / "straight", "--max_iters", 30, *common)
    train_main("--out_dir", tmp_path / "halves", "--max_iters", 10, "--lr_decay_iters", 30, *common)
    train_main("--out_dir", tmp_path / "halves", "--resume", "--max_iters", 30)

    straight = checkpoint.load(tmp_path / "straight" / "last.pt")
    halves = checkpoint.load(tmp_path / "halves" / "last.pt")
    assert halves["iter_num"] == straight["iter_num"] == 30
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, halves["model"][name]), name  # bit-identical on CPU

    def losses(run):
        return [(r["iter"], r.get("train_loss", r.get("eval_train_loss"))) for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]
    assert losses("straight") == losses("halves")


def test_new_run_refuses_to_replace_an_earlier_runs_checkpoints(trained_run, slice_dir, capsys):
    before = (trained_run / "ckpt.pt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        train_main("--data_dir", slice_dir, "--out_dir", trained_run, "--max_iters", 5, *TINY)
    assert exit_info.value.code == 2
    assert "--resume" in capsys.readouterr().err
    assert (trained_run / "ckpt.pt").read_bytes() == before


def test_sample_cli_prints_only_text(trained_run):
    result = run_script("sample.py", "--out_dir", trained_run, "--start", "ROMEO:", "--max_new_tokens", 60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) == len("ROMEO:") + 60 + 1
    assert "iteration 40" in result.stderr  # diagnostics go to stderr


@pytest.mark.slow
def test_sample_cli_seed_and_batch(trained_run):
    args = ["--out_dir", trained_run, "--max_new_tokens", 40, "--num_samples", 3, "--seed", 7]
    first, second = run_script("sample.py", *args), run_script("sample.py", *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # same seed, same text
    assert first.stdout.count("-" * 40) == 2  # three samples, two separators


def test_python_train_py_with_no_preset_runs_the_cpu_recipe_and_classic_runs_the_plain_defaults():
    """What a learner gets from `python train.py`: the README's fast cpu recipe; --preset classic is the lecture's."""
    import train
    from babygpt.cli import load_preset

    model_values, cfg, _ = train.resolve_settings([])
    settings = {**model_values, **dataclasses.asdict(cfg)}
    assert load_preset("cpu", train.DEFAULTS).items() <= settings.items()
    assert (settings["optimizer"], settings["pos_emb"]) == ("muon", "rope")
    model_values, cfg, _ = train.resolve_settings(["--preset", "classic", "--max_iters", "7"])
    settings = {**model_values, **dataclasses.asdict(cfg)}
    assert settings == {**train.DEFAULTS, "max_iters": 7}  # classic = the dataclass defaults; flags win
