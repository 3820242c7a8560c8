"""GPT-2 in babygpt: --init_from loads transformers' GPT-2 folders into model.py (the same logits, the same greedy
tokens), sample.py and the finetune preset run on them, and babygpt.export writes runs back as transformers
folders. The GPT-2s are tiny ones that transformers itself builds and saves (random weights, its own classes and
file format); the hub download is the one call a test replaces. Skipped where the gpt2 extra is not installed."""

import json
import os
import subprocess
import sys
from fractions import Fraction

import pytest
import torch

for package in ("transformers", "huggingface_hub", "safetensors", "tokenizers"):
    pytest.importorskip(package, reason=f"needs {package}: pip install -e .[gpt2]")
import transformers  # noqa: E402

import sample  # noqa: E402
from babygpt import checkpoint, engine, export, gpt2  # noqa: E402
from babygpt.runner import run  # noqa: E402
from babygpt.tokenizer import GPT2Tokenizer  # noqa: E402
from conftest import ROOT, TINY, train_main  # noqa: E402
from prepare import prepare  # noqa: E402
from tools import whole_val  # noqa: E402

# Three tiny GPT-2s: GPT-2's own vocabulary (for sample.py and the finetune), and two others: an untied head,
# the exact GELU, and one saved as pytorch_model.bin instead of model.safetensors.
CONFIGS = {
    "vocab50257": dict(n_layer=2, n_head=2, n_embd=32, n_positions=96, vocab_size=50257),
    "untied300": dict(n_layer=3, n_head=4, n_embd=48, n_positions=64, vocab_size=300, tie_word_embeddings=False),
    "bin1000": dict(n_layer=1, n_head=3, n_embd=24, n_positions=128, vocab_size=1000, activation_function="gelu"),
}


def build_gpt2(folder, seed=0, as_bin=False, **settings):
    """A GPT-2 made by transformers, every parameter (biases and LayerNorms too) random, saved to folder."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(bos_token_id=None, eos_token_id=None, **settings)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    if as_bin:  # the older format: a torch.save of the state_dict (read with weights_only=True)
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def gpt2s(tmp_path_factory):
    made = {}
    for name, settings in CONFIGS.items():
        folder = tmp_path_factory.mktemp(name)
        made[name] = folder, build_gpt2(folder, as_bin=name.startswith("bin"), **settings)
    return made


def transformers_greedy(model, prompt, n):
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
                          pad_token_id=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_init_from_folder_gives_transformers_logits_and_greedy_tokens(name, gpt2s):
    folder, theirs = gpt2s[name]
    ours = gpt2.load(str(folder)).eval()  # what --init_from FOLDER runs
    assert ours.config.mlp_act == ("gelu" if name == "bin1000" else "gelu_tanh")
    assert ours.config.tie_head == (name != "untied300")
    idx = torch.randint(CONFIGS[name]["vocab_size"], (3, CONFIGS[name]["n_positions"]),
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(idx)[0] - theirs(idx).logits).abs().max() <= 1e-4
    prompt = idx[:1, :6]
    assert torch.equal(engine.generate(ours, prompt, 50, temperature=0), transformers_greedy(theirs, prompt, 50))


def test_sample_init_from_folder_streams_transformers_greedy_text(gpt2s, capsys):
    folder, theirs = gpt2s["vocab50257"]
    run(sample.main, ["--init_from", str(folder), "--start", "ROMEO:", "--temperature", "0",
                      "--max_new_tokens", "30", "--threads", "1"])
    out, err = capsys.readouterr()
    tokenizer = GPT2Tokenizer()
    prompt = torch.tensor([tokenizer.encode("ROMEO:")])
    assert out == tokenizer.decode(transformers_greedy(theirs, prompt, 30)[0].tolist()) + "\n"
    assert f"{folder}: iteration 0" in err and f"{gpt2.GPT(gpt2.load(str(folder)).config).num_params():,}" in err


def test_finetune_preset_trains_resumes_and_is_scored(gpt2s, shakespeare_text, tmp_path):
    folder, _ = gpt2s["vocab50257"]
    data, out = tmp_path / "gpt2-data", tmp_path / "finetune"
    prepare(shakespeare_text[:20_000], data, tokenizer="gpt2")
    small = ["--data_dir", data, "--out_dir", out, "--block_size", 32, "--batch_size", 2, "--eval_iters", 2,
             "--eval_interval", 2, "--log_interval", 1, "--sample_chars", 5, "--warmup_iters", 1, "--threads", 1]
    train_main("--preset", "finetune", "--init_from", folder, "--max_iters", 2, *small)
    saved = checkpoint.load(out / "last.pt")
    assert saved["train_config"]["init_from"] == str(folder)  # the checkpoint says where it started
    assert {k: saved["model_config"][k] for k in ("n_layer", "n_embd", "mlp_act", "block_size")} == \
        {"n_layer": 2, "n_embd": 32, "mlp_act": "gelu_tanh", "block_size": 32}
    loaded = gpt2.load(str(folder), block_size=32).state_dict()  # two small steps away from GPT-2's weights
    assert max((saved["model"][k] - loaded[k]).abs().max() for k in loaded) < 0.01
    train_main("--resume", "--out_dir", out, "--max_iters", 4)  # the finetune goes on from last.pt
    assert checkpoint.load(out / "last.pt")["iter_num"] == 4
    score = whole_val.main([str(out)])[str(out)]
    assert 0 < score < 11


def test_init_from_gpt2_takes_the_download_path(gpt2s, monkeypatch, capsys):
    """--init_from gpt2 asks huggingface_hub for openai-community/gpt2 (here answered by a local folder: the
    network cannot run in tests) and samples from what it got."""
    import huggingface_hub
    folder, _ = gpt2s["vocab50257"]
    asked = []

    def download(repo_id, **kwargs):
        asked.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    run(sample.main, ["--init_from", "gpt2", "--max_new_tokens", "5", "--threads", "1", "--temperature", "0"])
    assert asked == [("openai-community/gpt2", {"allow_patterns": ["config.json", "model.safetensors"]})]
    assert "gpt2: iteration 0" in capsys.readouterr().err


def one_line_failure(args, env=None, cwd=ROOT):
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.slow
def test_without_network_init_from_gpt2_is_one_line(tmp_path):
    err = one_line_failure(["sample.py", "--init_from", "gpt2"],
                           {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")})
    assert "could not fetch GPT-2's weights (gpt2)" in err and "--init_from FOLDER" in err


@pytest.mark.slow
def test_an_unreachable_hub_is_one_line_and_fast(tmp_path):
    err = one_line_failure(["sample.py", "--init_from", "gpt2-medium"],
                           {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "empty-cache"),
                            "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"})
    assert "could not fetch GPT-2's weights (gpt2-medium)" in err and "--init_from FOLDER" in err


def test_what_is_not_gpt2_is_one_line(gpt2s, tmp_path, capsys):
    def fails(args):
        with pytest.raises(SystemExit) as exit:
            run(sample.main, args)
        assert exit.value.code == 2
        return capsys.readouterr().err

    assert "not a GPT-2 folder in transformers' format: it has no config.json" in fails(["--init_from", str(tmp_path)])
    (tmp_path / "config.json").write_text(json.dumps(transformers.GPT2Config(n_layer=1).to_dict()))
    assert "neither model.safetensors nor pytorch_model.bin" in fails(["--init_from", str(tmp_path)])
    other = tmp_path / "relu"
    build_gpt2(other, n_layer=1, n_head=2, n_embd=8, vocab_size=300, activation_function="relu")
    assert "activation_function 'relu'" in fails(["--init_from", str(other)])
    assert "vocab_size 300" in fails(["--init_from", str(gpt2s["untied300"][0])])
    assert "not a folder, and not one of gpt2" in fails(["--init_from", "gpt3"])
    pickled = tmp_path / "pickled"  # a pytorch_model.bin that would import (and could run) Python code
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(transformers.GPT2Config(n_layer=1).to_dict()))
    torch.save({"wte.weight": Fraction(1, 2)}, pickled / "pytorch_model.bin")
    assert "cannot be read as plain tensors (UnpicklingError); refusing it" in fails(["--init_from", str(pickled)])


def test_finetuning_characters_is_one_line(gpt2s, slice_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_main("--preset", "finetune", "--init_from", gpt2s["vocab50257"][0], "--data_dir", slice_dir,
                   "--out_dir", tmp_path / "out")
    assert "needs data tokenized for GPT-2: run `python prepare.py --tokenizer gpt2`" in capsys.readouterr().err


def test_without_the_extra_one_line_says_what_to_install(monkeypatch, capsys, gpt2s):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if it were not installed
    with pytest.raises(SystemExit):
        run(sample.main, ["--init_from", str(gpt2s["vocab50257"][0])])
    assert "needs the safetensors package: pip install -e .[gpt2]" in capsys.readouterr().err


# -- export: a babygpt run as a transformers folder -------------------------------------------------------------

def pipeline_greedy(folder, prompt, n):
    generate = transformers.pipeline("text-generation", model=str(folder))
    return generate(prompt, max_new_tokens=n, do_sample=False)[0]["generated_text"]


def assert_exported_equal(run_dir, dest, capsys, prompt="ROMEO:", n=20):
    """The exported model gives the run's logits in transformers and in babygpt again, and transformers'
    greedy pipeline prints sample.py --temperature 0's text (prompt and all within block_size: transformers'
    GPT-2 has no positions past it, where sample.py crops the context)."""
    saved = checkpoint.load(run_dir / "ckpt.pt")
    ours = checkpoint.load_model(saved)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(dest).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(dest)
    ids = tokenizer("First Citizen:\nBefore we proceed any further, hear me speak.")["input_ids"]
    idx = torch.tensor([ids[: ours.config.block_size]])
    with torch.no_grad():
        assert (ours(idx)[0] - theirs(idx).logits).abs().max() <= 1e-4
        assert (ours(idx)[0] - gpt2.load(str(dest))(idx)[0]).abs().max() <= 1e-4  # and back into model.py
    capsys.readouterr()
    run(sample.main, ["--out_dir", str(run_dir), "--start", prompt, "--temperature", "0",
                      "--max_new_tokens", str(n), "--threads", "1"])
    assert capsys.readouterr().out == pipeline_greedy(dest, prompt, n) + "\n"


def test_export_of_a_classic_char_run_runs_in_transformers(trained_run, tmp_path, capsys):
    dest = tmp_path / "hf"
    run(export.main, [str(trained_run), str(dest)])
    assert sorted(os.listdir(dest)) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert_exported_equal(trained_run, dest, capsys)


def test_export_never_clobbers_and_refuses_what_gpt2_cannot_express(trained_run, slice_dir, tmp_path, capsys):
    dest = tmp_path / "hf"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        run(export.main, [str(trained_run), str(dest)])
    assert "already holds files; use --overwrite" in capsys.readouterr().err
    assert os.listdir(dest) == ["mine.txt"]
    run(export.main, [str(trained_run), str(dest), "--overwrite"])
    assert "mine.txt" not in os.listdir(dest) and not any(p.name.startswith(".") for p in tmp_path.iterdir())

    rope = tmp_path / "rope"
    train_main("--data_dir", slice_dir, "--out_dir", rope, "--max_iters", 1, "--eval_interval", 1, *TINY,
               "--pos_emb", "rope")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run(export.main, [str(rope), str(tmp_path / "hf-rope")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPT-2 cannot express pos_emb 'rope'" in err and "--preset classic" in err
    assert not (tmp_path / "hf-rope").exists()


@pytest.mark.slow
def test_export_without_biases_and_with_an_untied_head(slice_dir, tmp_path, capsys):
    run_dir = tmp_path / "plain"
    train_main("--data_dir", slice_dir, "--out_dir", run_dir, "--max_iters", 3, "--eval_interval", 3, *TINY,
               "--bias", "false", "--tie_head", "false", "--mlp_act", "gelu_tanh")
    run(export.main, [str(run_dir), str(tmp_path / "hf")])
    assert_exported_equal(run_dir, tmp_path / "hf", capsys, n=10)


@pytest.mark.slow
def test_export_of_a_bpe_run_runs_in_transformers(shakespeare_text, tmp_path, capsys):
    data, run_dir = tmp_path / "bpe", tmp_path / "run"
    prepare(shakespeare_text[:50_000], data, tokenizer="bpe", vocab_size=400)
    train_main("--data_dir", data, "--out_dir", run_dir, "--max_iters", 60, "--eval_interval", 30, *TINY)
    run(export.main, [str(run_dir), str(tmp_path / "hf")])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = checkpoint.load(run_dir / "ckpt.pt")
    from babygpt.tokenizer import tokenizer_from_meta
    text = shakespeare_text[:20_000] + " naïve café 日本 🤖  \n\n x's 1234"
    assert tokenizer(text)["input_ids"] == tokenizer_from_meta(ours["meta"]).encode(text)
    assert_exported_equal(run_dir, tmp_path / "hf", capsys)


@pytest.mark.slow
def test_a_finetuned_gpt2_exports_with_gpt2s_tokenizer(gpt2s, shakespeare_text, tmp_path, capsys):
    folder, _ = gpt2s["vocab50257"]
    data, out = tmp_path / "gpt2-data", tmp_path / "finetune"
    prepare(shakespeare_text[:20_000], data, tokenizer="gpt2")
    train_main("--preset", "finetune", "--init_from", folder, "--data_dir", data, "--out_dir", out,
               "--max_iters", 2, "--eval_interval", 1, "--block_size", 64, "--batch_size", 2, "--eval_iters", 1,
               "--sample_chars", 0, "--threads", 1)
    run(export.main, [str(out), str(tmp_path / "hf")])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = shakespeare_text[:50_000] + " naïve café 日本 🤖  \n\n x's 1234"
    assert tokenizer(text)["input_ids"] == GPT2Tokenizer().encode(text)
    assert tokenizer.eos_token_id == 50256
    assert_exported_equal(out, tmp_path / "hf", capsys, n=20)


@pytest.mark.slow
def test_gpt2_small_has_124439808_parameters(tmp_path):
    """GPT2Config()'s defaults are GPT-2 small: through the loader, 124,439,808 parameters, the tied head once
    (random weights: the real ones need the network)."""
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(tmp_path)
    model = gpt2.load(str(tmp_path))
    assert model.num_params() == 124_439_808
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.block_size) == \
        (12, 12, 768, 1024)


def test_ci_installs_the_gpt2_extra_so_these_tests_run_there():
    from babygpt.cli import tomllib
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpt2"]
    installs = [line.split() for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert any(set(extra) <= set(words) for words in installs)
