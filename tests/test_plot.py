"""plot.py: the pictures are drawn without a display, and what they show is the real data."""

import json
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, train_main
from test_errors import fails

import plot
from babygpt import checkpoint
from babygpt.attention_patterns import attention_pattern
from babygpt.runner import run


def png_size(path):
    """(width, height) of a PNG file, read from its header; fails if the file is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_sensible_png(path):
    width, height = png_size(path)
    assert 300 <= width <= 3000 and 200 <= height <= 3000, (width, height)
    assert 5_000 < path.stat().st_size < 1_000_000


def load_run(out_dir):
    state = checkpoint.load(checkpoint.resolve(out_dir))
    return state, checkpoint.load_model(state)


# -- loss


def test_training_draws_loss_png_and_the_curves_are_the_metrics_file(trained_run):
    assert_sensible_png(trained_run / "loss.png")  # train.py drew it at the evaluations
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    series = plot.loss_curves(plot.read_metrics(trained_run))
    evals = [r for r in records if "val_loss" in r]
    steps = [r for r in records if "val_loss" not in r]
    assert series["eval"]["iter"] == [0, 20, 40]  # --max_iters 40 --eval_interval 20
    assert series["eval"]["val_loss"] == [r["val_loss"] for r in evals]
    assert series["eval"]["train_loss"] == [r["eval_train_loss"] for r in evals]
    assert series["eval"]["tokens"] == [r["tokens"] for r in evals]
    assert series["batch"]["iter"] == [r["iter"] for r in steps] == list(range(5, 41, 5))
    assert series["batch"]["train_loss"] == [r["train_loss"] for r in steps]
    assert series["batch"]["lr"] == [r["lr"] for r in steps]
    # a fresh model guesses uniformly: its first loss is close to the dashed line at ln(vocab_size)
    vocab_size = plot.vocab_size_of_run(trained_run)
    assert abs(series["eval"]["val_loss"][0] - math.log(vocab_size)) < 0.1


def test_loss_png_shows_the_whole_run_when_training_returns(slice_dir, tmp_path):
    """train.py redraws loss.png in its own process after each evaluation: when train.main returns, the picture
    is there and was drawn after the last evaluation line was written."""
    train_main("--data_dir", slice_dir, "--out_dir", tmp_path, "--max_iters", 10, "--eval_interval", 5, *TINY)
    assert_sensible_png(tmp_path / "loss.png")
    assert plot.loss_curves(plot.read_metrics(tmp_path))["eval"]["iter"] == [0, 5, 10]
    assert (tmp_path / "loss.png").stat().st_mtime >= (tmp_path / "metrics.jsonl").stat().st_mtime


def in_a_fresh_python(script, *args):
    """Run script in a new interpreter in the repo's root (what it imports is not already imported here)."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          cwd=Path(plot.__file__).parent, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_training_starts_no_process_and_sampling_never_loads_the_plotting_code(slice_dir, tmp_path):
    """Nothing runs beside the training (no drawing child, no helper started between imports); sample.py,
    which reads checkpoints through checkpoint.py, does not import loss_plot.py or matplotlib."""
    script = ("import sys\n"
              "started = []\n"  # Python reports every process it starts to audit hooks
              "sys.addaudithook(lambda event, args: started.append((event, str(args))) if event in\n"
              "    ('subprocess.Popen', 'os.fork', 'os.forkpty', 'os.posix_spawn', 'os.spawn') else None)\n"
              "import train\n"
              "train.main(sys.argv[1:])\n"
              "print('python processes:', [e for e, a in started if e != 'subprocess.Popen' or sys.executable in a])\n")
    done = in_a_fresh_python(script, "--data_dir", slice_dir, "--out_dir", tmp_path, "--max_iters", 10,
                             "--eval_interval", 5, *TINY)
    assert "python processes: []" in done.stdout
    assert_sensible_png(tmp_path / "loss.png")
    script = ("import sys, sample\n"
              "sample.main(sys.argv[1:])\n"
              "print('plotting loaded:', any(m.startswith(('matplotlib', 'babygpt.loss_plot')) for m in sys.modules))\n")
    done = in_a_fresh_python(script, "--out_dir", tmp_path, "--max_new_tokens", 5)
    assert "plotting loaded: False" in done.stdout


@pytest.mark.slow
def test_without_matplotlib_training_warns_once_and_finishes(slice_dir, tmp_path):
    script = ("import sys\n"
              "sys.modules['matplotlib'] = None  # as if it were not installed: importing it raises\n"
              "import train\n"
              "train.main(sys.argv[1:])\n")
    done = in_a_fresh_python(script, "--data_dir", slice_dir, "--out_dir", tmp_path, "--max_iters", 10,
                             "--eval_interval", 5, *TINY)
    assert done.stderr.count("warning: could not draw") == 1 and "ModuleNotFoundError" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "loss.png").exists()
    assert checkpoint.load(tmp_path / "last.pt")["iter_num"] == 10


def test_metrics_files_written_before_eval_train_loss_existed_still_plot(tmp_path):
    """Until 2026-11-24 an evaluation line called its averaged train loss train_loss, like a step line."""
    old = [{"iter": 0, "tokens": 0, "train_loss": 4.2, "val_loss": 4.3, "val_bpc": 6.2, "lr": 1e-4},
           {"iter": 10, "tokens": 80, "train_loss": 3.0, "lr": 1e-3},
           {"iter": 10, "tokens": 80, "train_loss": 2.9, "val_loss": 3.1, "val_bpc": 4.5, "lr": 1e-3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    series = plot.loss_curves(plot.read_metrics(tmp_path))
    assert series["eval"]["train_loss"] == [4.2, 2.9] and series["batch"]["train_loss"] == [3.0]
    run(plot.main, ["loss", str(tmp_path), "--out", str(tmp_path / "old.png")])
    assert_sensible_png(tmp_path / "old.png")


def test_a_resumed_iteration_is_drawn_once_with_its_latest_value():
    records = [{"iter": 10, "tokens": 80, "train_loss": 3.0, "lr": 1e-3},
               {"iter": 10, "tokens": 80, "train_loss": 2.5, "lr": 1e-3}]
    assert plot.loss_curves(records)["batch"]["train_loss"] == [2.5]


def test_loss_cli_overlays_several_runs(trained_run, tmp_path, capsys):
    other = tmp_path / "other-run"  # a second run's metrics (no checkpoint: no ln(V) line for it, no error)
    other.mkdir()
    shutil.copy(trained_run / "metrics.jsonl", other / "metrics.jsonl")
    out = tmp_path / "compare.png"
    run(plot.main, ["loss", str(trained_run), str(other), "--out", str(out)])
    assert_sensible_png(out)
    assert str(out) in capsys.readouterr().out


def test_loss_cli_errors(tmp_path, capsys):
    assert "not a folder" in fails(plot.main, ["loss", tmp_path / "nope"], capsys)
    assert "metrics.jsonl not found" in fails(plot.main, ["loss", tmp_path], capsys)
    (tmp_path / "metrics.jsonl").write_text("")
    assert "empty" in fails(plot.main, ["loss", tmp_path], capsys)


def test_plotting_failure_never_stops_training(slice_dir, tmp_path, capsys):
    (tmp_path / "loss.png").mkdir()  # a folder where the picture should go: drawing it must fail
    train_main("--data_dir", slice_dir, "--out_dir", tmp_path, "--max_iters", 10, "--eval_interval", 5, *TINY)
    err = capsys.readouterr().err
    assert err.count("warning: could not draw") == 1  # said once, then plotting stays off for the run
    assert checkpoint.load(tmp_path / "last.pt")["iter_num"] == 10  # and the run finished


# -- attention


def test_attention_weights_are_the_ones_the_model_uses(trained_run):
    """Recomputed weights @ values, heads concatenated, c_proj == what each attention module returned."""
    state, model = load_run(trained_run)
    idx = torch.randint(model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    calls = plot.record_attention_calls(model, idx)
    maps = plot.attention_maps(model, idx)
    n_layer, n_head = model.config.n_layer, model.config.n_head
    assert len(calls) == n_layer and maps.shape == (n_layer, 2, n_head, 20, 20)
    for block, call, weights in zip(model.blocks, calls, maps):
        B, T, C = call["x"].shape
        v = block.attn.c_attn(call["x"]).split(C, dim=2)[2]  # (B, T, C)
        v = v.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = (weights @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        torch.testing.assert_close(block.attn.c_proj(y), call["out"], atol=1e-5, rtol=1e-5)
    assert torch.allclose(maps.sum(-1), torch.ones(()))  # every row is a distribution
    assert (maps.triu(1) == 0).all()  # the causal triangle: no weight on the future
    assert not any(b.attn._forward_hooks for b in model.blocks)  # the hooks are gone afterwards


@pytest.mark.parametrize("options", [dict(pos_emb="rope", qk_norm=True, norm="rmsnorm"),
                                     dict(attn_pattern="bigbird", bigbird_window=3, bigbird_global=1, bigbird_random=1),
                                     dict(pos_emb="rope", attn_pattern="sliding", attn_window=3)])
def test_attention_maps_follow_rotary_qk_norm_and_sparse_models(options, tmp_path):
    """The recomputed weights must include whatever the model's attention does: QK-norm, rotations, sparse masks."""
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=16, **options)
    model = GPT(config, attention_pattern(config)).eval()
    with torch.no_grad():  # sharpen attention, so a wrong mask or a missing rotation shows
        for block in model.blocks:
            block.attn.c_attn.weight.mul_(10)
    idx = torch.randint(11, (1, 16), generator=torch.Generator().manual_seed(0))
    for block, call, weights in zip(model.blocks, plot.record_attention_calls(model, idx), plot.attention_maps(model, idx)):
        _, _, v = block.attn.qkv(call["x"], call["rope"])  # (B, nh, T, hs)
        y = (weights @ v).transpose(1, 2).reshape(call["x"].shape)  # (B, T, C)
        torch.testing.assert_close(block.attn.c_proj(y), call["out"], atol=1e-5, rtol=1e-5)
    plot.draw_embeddings(model, [chr(97 + i) for i in range(11)], tmp_path / "embeddings.png")  # no position table is fine


def test_attention_cli_draws_a_grid_for_the_text(trained_run, tmp_path, capsys):
    out = tmp_path / "attention.png"
    run(plot.main, ["attention", "--ckpt", str(trained_run), "--text", "First Citizen:\nBefore we", "--out", str(out)])
    assert_sensible_png(out)
    width, height = png_size(out)
    assert width > height  # 2 layers (rows) x 2 heads (columns) plus a colour bar


def test_attention_cli_errors(trained_run, tmp_path, capsys):
    assert "not in the vocabulary" in fails(plot.main, ["attention", "--ckpt", trained_run, "--text", "café"], capsys)
    assert "empty" in fails(plot.main, ["attention", "--ckpt", trained_run, "--text", ""], capsys)
    assert "not found" in fails(plot.main, ["attention", "--ckpt", tmp_path, "--text", "hi"], capsys)


def test_long_text_keeps_the_last_block_size_characters(trained_run):
    state, model = load_run(trained_run)
    tokenizer = plot.tokenizer_from_meta(state["meta"])
    idx = plot.encode_text(tokenizer, "x" * 100 + "the end", model.config.block_size)
    assert idx.shape == (1, model.config.block_size)
    assert tokenizer.decode(idx[0].tolist()).endswith("the end")


# -- embeddings


def test_embedding_pca_keeps_the_two_directions_of_largest_variance():
    weight = torch.randn(65, 16, generator=torch.Generator().manual_seed(0)) * torch.linspace(3, 0.1, 16)
    coords, explained = plot.embedding_pca(weight)
    centered = weight - weight.mean(0)
    eigenvalues = torch.linalg.eigvalsh(centered.T @ centered).flip(0)  # largest first
    # the variance along each plotted axis is one of the two largest eigenvalues of the covariance
    torch.testing.assert_close((coords**2).sum(0), eigenvalues[:2], rtol=1e-4, atol=1e-4)
    assert abs((coords[:, 0] * coords[:, 1]).sum()) < 1e-3  # uncorrelated axes
    assert explained == pytest.approx(float(eigenvalues[:2].sum() / eigenvalues.sum()), rel=1e-4)


def test_position_similarity_is_the_cosine_of_every_pair(trained_run):
    _, model = load_run(trained_run)
    weight = model.position_embedding.weight
    similarity = plot.position_similarity(weight)
    assert similarity.shape == (model.config.block_size, model.config.block_size)
    torch.testing.assert_close(similarity.diagonal(), torch.ones(model.config.block_size))
    expected = torch.nn.functional.cosine_similarity(weight[3], weight[7], dim=0)
    assert similarity[3, 7].item() == pytest.approx(expected.item(), abs=1e-5)


def test_embeddings_cli(trained_run, tmp_path, capsys):
    out = tmp_path / "embeddings.png"
    run(plot.main, ["embeddings", "--ckpt", str(trained_run / "ckpt.pt"), "--out", str(out)])
    assert_sensible_png(out)


def test_every_subcommand_has_help(capsys):
    for command in ("loss", "attention", "embeddings"):
        with pytest.raises(SystemExit) as exit_info:
            plot.main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: plot.py " + command in capsys.readouterr().out
