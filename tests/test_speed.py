"""Fast training: the modern model options, Muon, the GPU settings logic, torchrun DDP and the speed tools."""

import contextlib
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, train_main
from torch.nn import functional as F

import train
from babygpt import checkpoint, compiling, device
from babygpt.cli import PRESET_DIR, tomllib  # tomllib, or tomli on Python 3.10
from babygpt.muon import hidden_matrices, make_muon_optimizer, orthogonalize
from model import GPT, GPTConfig, apply_rotary, rotary_cos_sin
from tools import generation, speed, whole_val

MODERN = dict(pos_emb="rope", norm="rmsnorm", qk_norm=True, mlp_act="relu2", tie_head=False, zero_init_proj=True, bias=False)


def tiny_model(seed=0, **options):
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and kind to a shared machine
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=24, **options))


def test_classic_preset_is_the_lecture_recipe_and_the_defaults_are_plain():
    classic = tomllib.loads((PRESET_DIR / "classic.toml").read_text())
    assert classic == {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "batch_size": 12,
                       "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "max_iters": 2000, "beta2": 0.99,
                       "eval_interval": 250, "eval_iters": 20}
    plain = GPTConfig()
    assert (plain.pos_emb, plain.norm, plain.mlp_act, plain.tie_head, plain.qk_norm) == ("learned", "layernorm", "gelu", True, False)
    assert train.TrainConfig().optimizer == "adamw"


def test_rotary_scores_depend_only_on_the_distance_between_positions():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(query_pos, key_pos):
        rq = apply_rotary(q, *rotary_cos_sin(torch.tensor([query_pos]), 8))
        rk = apply_rotary(k, *rotary_cos_sin(torch.tensor([key_pos]), 8))
        return (rq * rk).sum()

    assert torch.allclose(score(5, 2), score(105, 102), atol=1e-4)  # same distance, far along: same score
    assert not torch.allclose(score(5, 2), score(5, 4), atol=1e-3)  # another distance: another score
    assert torch.allclose(apply_rotary(q, *rotary_cos_sin(torch.tensor([7]), 8)).norm(), q.norm())  # a rotation


def test_modern_options_keep_the_model_causal_and_trainable():
    model = tiny_model(**MODERN)
    assert not hasattr(model, "position_embedding") and model.lm_head.weight is not model.token_embedding.weight
    idx = torch.randint(0, 11, (4, 16), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 11
    with torch.no_grad():
        assert torch.equal(model(idx)[0][:, :9], model(changed)[0][:, :9])  # the future stays invisible
        assert model(idx)[0].abs().max() < 30.0  # soft-capped
    optimizer = make_muon_optimizer(model, 3e-3, 0.02, 0.95, 0.1, (0.9, 0.99))
    losses = []
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_zero_init_makes_every_block_start_as_the_identity():
    model = tiny_model(zero_init_proj=True)
    x = torch.randn(2, 16, 24)
    for block in model.blocks:
        assert torch.equal(block(x), x)


def test_muon_orthogonalizes_and_covers_every_parameter_once():
    torch.manual_seed(0)
    gradient = torch.linalg.qr(torch.randn(64, 16))[0] @ torch.diag(torch.logspace(-1, 1, 16))  # singular values 0.1..10
    singular_values = torch.linalg.svdvals(orthogonalize(gradient))
    assert singular_values.min() > 0.5 and singular_values.max() < 1.3  # every direction gets a similar step
    model = tiny_model(tie_head=False)
    optimizer = make_muon_optimizer(model, 1e-3, 0.02, 0.95, 0.1, (0.9, 0.99))
    ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each once
    assert {id(p) for p in optimizer.muon.param_groups[0]["params"]} == {id(p) for p in hidden_matrices(model)}
    muon_ids = {id(p) for p in optimizer.muon.param_groups[0]["params"]}
    assert id(model.token_embedding.weight) not in muon_ids and id(model.lm_head.weight) not in muon_ids



def test_muon_orthogonalizes_a_stack_of_matrices_each_on_its_own():
    # Muon.step does same-shaped matrices in one batched call (faster on 2 threads): it must change nothing
    torch.manual_seed(0)
    for shape in ((3, 48, 16), (2, 16, 48)):  # tall ones are done transposed, wide ones as they are
        stack = torch.randn(shape) * torch.tensor([0.1, 10.0, 1.0][:shape[0]])[:, None, None]  # different scales
        together = orthogonalize(stack)
        for matrix, result in zip(stack, together):
            torch.testing.assert_close(result, orthogonalize(matrix), rtol=0, atol=1e-6)


def test_muon_in_bfloat16_orthogonalizes_as_well_as_in_float32():
    # a run in bfloat16 (a GPU, a CPU with AVX-512 BF16) orthogonalises in it too, where its matmuls are fast
    torch.manual_seed(0)
    gradient = torch.linalg.qr(torch.randn(64, 16))[0] @ torch.diag(torch.logspace(-1, 1, 16))
    in_bf16 = orthogonalize(gradient, bf16=True)
    assert in_bf16.dtype == torch.float32  # handed back in the parameter's dtype
    singular_values = torch.linalg.svdvals(in_bf16)
    assert singular_values.min() > 0.5 and singular_values.max() < 1.3
    assert (in_bf16 - orthogonalize(gradient)).norm() < 0.05 * orthogonalize(gradient).norm()
    cfg = train.TrainConfig(optimizer="muon")
    assert train.build_optimizer(tiny_model(), cfg, bf16=True).muon.bf16
    assert not train.build_optimizer(tiny_model(), cfg).muon.bf16


def test_muon_weight_decay_shrinks_the_blocks_matrices_only():
    model = tiny_model()
    cfg = train.TrainConfig(optimizer="muon", learning_rate=1e-3, muon_lr=0.02, muon_weight_decay=0.5,
                            weight_decay=0.0)
    optimizer = train.build_optimizer(model, cfg)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only the decay moves the weights
    optimizer.step()
    matrices = {id(p) for p in hidden_matrices(model)}
    for name, p in model.named_parameters():
        shrink = 1 - 0.02 * 0.5 if id(p) in matrices else 1.0
        torch.testing.assert_close(p.detach(), before[name] * shrink, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="muon_weight_decay"):
        train.TrainConfig(muon_weight_decay=-0.1)


def test_linear_warm_down_goes_straight_to_min_lr():
    cfg = train.TrainConfig(learning_rate=1e-2, min_lr=0.0, warmup_iters=0, max_iters=100, decay="linear")
    assert [train.learning_rate_at(it, cfg) for it in (0, 50, 75, 100)] == pytest.approx([1e-2, 5e-3, 2.5e-3, 0.0])


# -- the GPU path's settings, checked on the CPU


def test_cuda_gets_bf16_autocast_compile_and_fused_adamw_and_the_cpu_fused_adamw_only():
    auto = train.TrainConfig()
    assert device.system_settings(auto, "cuda", bf16_supported=True) == {"dtype": "bfloat16", "compile": True, "fused": True}
    assert device.system_settings(auto, "cuda", bf16_supported=False)["dtype"] == "float32"  # e.g. a V100
    assert device.system_settings(auto, "cpu", bf16_supported=False) == {"dtype": "float32", "compile": False, "fused": True}
    # a CPU with bfloat16 instructions (AVX-512 BF16, AMX) multiplies bf16 matrices faster: autocast there too
    assert device.system_settings(auto, "cpu", bf16_supported=True) == {"dtype": "bfloat16", "compile": False, "fused": True}
    assert device.system_settings(train.TrainConfig(dtype="float32"), "cpu", True)["dtype"] == "float32"
    assert device.fast_bf16("mps") is False
    # the CPU's bf16 instructions, read from /proc/cpuinfo, agree with what torch's own (private) check says
    if Path("/proc/cpuinfo").exists():
        torch_says = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        assert device.fast_bf16("cpu") == torch_says
    assert device.system_settings(auto, "mps", bf16_supported=False)["fused"] is False
    assert device.system_settings(train.TrainConfig(compile="off"), "cuda", True)["compile"] is False
    assert device.system_settings(train.TrainConfig(compile="on"), "cpu", False)["compile"] is True
    a = torch.randn(4, 4)
    with device.autocast_context("cpu", "bfloat16"):
        assert (a @ a).dtype == torch.bfloat16  # matmuls in bf16 under autocast ...
    assert (a @ a).dtype == torch.float32  # ... and only there
    with device.autocast_context("cpu", "float32"):
        assert (a @ a).dtype == torch.float32


def test_a_failing_compiler_falls_back_to_the_eager_model_and_changes_nothing(capsys):
    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler found")

    model = tiny_model()
    x = torch.randint(0, 11, (2, 16))
    rng_before = torch.get_rng_state()
    chosen = compiling.compile_or_fallback(model, x, x, device.autocast_context("cpu", "float32"), backend=broken_backend)
    assert chosen is model
    assert "torch.compile failed" in capsys.readouterr().err
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(p.grad is None for p in model.parameters())


# -- torchrun


def torchrun(*args):
    """`torchrun --standalone --nproc_per_node=2 train.py ARGS`; its stdout. Each call is three Pythons that import
    torch (~10 CPU seconds, under 1 s of it training): on a loaded machine a call takes minutes, so the limit only
    catches a hang. torchrun runs in a process group of its own, killed whole if the limit passes (or on Ctrl-C):
    killing torchrun alone, as subprocess.run's timeout does, leaves its two workers training on."""
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                str(ROOT / "train.py"), *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=600)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, err[-2000:]
    return out


@pytest.mark.slow
def test_two_processes_with_ddp_equal_one_process_with_twice_the_accumulation(slice_dir, tmp_path):
    common = ["--data_dir", slice_dir, "--max_iters", 3, "--eval_interval", 100, "--eval_iters", 1,
              "--gradient_accumulation_steps", 2, *TINY, "--sample_chars", 0]
    stdout = torchrun("--out_dir", tmp_path / "ddp", *common)
    assert stdout.count("done: 3 iterations") == 1  # only rank 0 talks
    train_main("--out_dir", tmp_path / "one", *common)
    ddp, one = checkpoint.load(tmp_path / "ddp" / "last.pt"), checkpoint.load(tmp_path / "one" / "last.pt")
    for name, tensor in one["model"].items():
        assert torch.allclose(ddp["model"][name], tensor, atol=1e-5), name
    assert len(ddp["rng"]["data"]) == 2 and len(ddp["rng"]["torch"]) == 2  # every rank's streams, for resume


@pytest.mark.slow
def test_resume_under_torchrun_is_exact(slice_dir, tmp_path):
    """2 processes: 6 iterations straight == 3, then --resume for 3 more (dropout on, every rank's streams restored)."""
    common = ["--data_dir", slice_dir, "--eval_interval", 3, "--eval_iters", 1, "--gradient_accumulation_steps", 2,
              "--dropout", 0.1, *TINY, "--sample_chars", 0]

    torchrun("--out_dir", tmp_path / "straight", "--max_iters", 6, *common)
    torchrun("--out_dir", tmp_path / "halves", "--max_iters", 3, "--lr_decay_iters", 6, *common)
    torchrun("--out_dir", tmp_path / "halves", "--resume", "--max_iters", 6)
    straight, halves = checkpoint.load(tmp_path / "straight" / "last.pt"), checkpoint.load(tmp_path / "halves" / "last.pt")
    assert straight["iter_num"] == halves["iter_num"] == 6
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, halves["model"][name]), name


@pytest.mark.slow
def test_resume_is_exact_with_muon_and_the_modern_options(slice_dir, tmp_path):
    common = ["--data_dir", slice_dir, "--eval_interval", 10, *TINY, "--optimizer", "muon", "--pos_emb", "rope",
              "--norm", "rmsnorm", "--mlp_act", "relu2", "--gradient_accumulation_steps", 2, "--sample_chars", 0]
    train_main("--out_dir", tmp_path / "straight", "--max_iters", 20, *common)
    train_main("--out_dir", tmp_path / "halves", "--max_iters", 10, "--lr_decay_iters", 20, *common)
    train_main("--out_dir", tmp_path / "halves", "--resume", "--max_iters", 20)
    straight, halves = checkpoint.load(tmp_path / "straight" / "last.pt"), checkpoint.load(tmp_path / "halves" / "last.pt")
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, halves["model"][name]), name


# -- the speed tools (tools/speed.py, tools/generation.py, tools/whole_val.py)


def test_bench_time_to_loss_reports_every_preset_and_the_ratio(slice_dir, tmp_path):
    tiny = "n_layer=1,n_head=2,n_embd=16,block_size=16,batch_size=4,max_iters=4,threads=1"
    result = speed.main(["time-to-loss", "--presets", "classic,cpu", "--target", "10", "--evals", "2",
                         "--eval_batches", "1", "--data_dir", str(slice_dir), "--set", tiny, "--json", str(tmp_path / "t.json")])
    assert set(result["presets"]) == {"classic", "cpu"}
    for row in result["presets"].values():
        assert [point["iter"] for point in row["curve"]] == [0, 2, 4]
        assert row["seconds_to_target"] == row["curve"][1]["seconds"] > 0  # loss < 10 at the first evaluation
        assert row["tokens_to_target"] == 2 * 4 * 16
    assert result["presets"]["cpu"]["speedup"] > 0
    throughput = speed.main(["throughput", "--preset", "classic", "--iters", "1", "--rounds", "1", "--warmup", "1",
                             "--data_dir", str(slice_dir), "--set", tiny, "--json", str(tmp_path / "p.json")])
    assert throughput["tokens_per_s"] > 0 and 0 < throughput["fraction_of_matmul"] < 1.5


def test_levers_times_the_classic_step_with_one_change_at_a_time(slice_dir):
    times = speed.main(["levers", "--levers", "as train.py,no rng snapshot,for-loop AdamW,bfloat16 autocast", "--iters", "1",
                        "--rounds", "1", "--warmup", "1", "--data_dir", str(slice_dir)])
    assert set(times) == {"as train.py", "no rng snapshot", "for-loop AdamW", "bfloat16 autocast"} and all(t > 0 for t in times.values())


def test_bench_decode_step_is_the_rolling_cache_step_and_times_every_mode():
    # the step tools.generation decode-step compiles must be engine.forward's own (here eager: compiling takes ~30 s)
    result = generation.main(["decode-step", "--steps", "40", "--rounds", "1", "--compile", "0"])  # 40 > W: the ring wraps
    assert result["max_logit_difference"] < 1e-5
    assert len(result["ms"]) == 2 and all(len(t) == 1 and t[0] > 0 for t in result["ms"].values())


def test_bench_whole_val_scores_a_run_like_the_peer_evaluator(trained_run):
    saved = checkpoint.load(trained_run / "ckpt.pt")
    model = checkpoint.load_model(saved).eval()
    T = model.config.block_size
    tokens = np.fromfile(Path(saved["train_config"]["data_dir"]) / "val.bin", dtype=np.uint16)
    stream = torch.from_numpy(tokens[: (len(tokens) - 1) // T * T + 1].astype(np.int64))
    with torch.no_grad():  # the same mean in one go: non-overlapping windows, every token but the first once
        logits, _ = model(stream[:-1].view(-1, T))
        direct = F.cross_entropy(logits.reshape(-1, logits.size(-1)), stream[1:]).item()
    score = whole_val.main([str(trained_run)])[str(trained_run)]
    assert score == pytest.approx(direct, rel=1e-5) and score < math.log(model.config.vocab_size)
