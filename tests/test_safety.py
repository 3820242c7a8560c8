"""Files babygpt reads are never trusted: no pickle can run code, and a tampered meta.json or checkpoint is refused
with a message that names the file and the field, before anything uses it."""

import ast
import json
import shutil

import pytest
import torch
from conftest import ROOT
from test_errors import fails

import sample
import train


def repo_python_files():
    return [p for p in ROOT.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_every_torch_load_in_the_repo_uses_weights_only_and_nothing_unpickles():
    """weights_only=True is what refuses code-running pickles; one forgotten call would undo it."""
    calls, unsafe = 0, []
    for path in repo_python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            keywords = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if owner == "torch" and node.func.attr == "load":
                calls += 1
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    unsafe.append(f"{where} torch.load without weights_only=True")
            if owner == "pickle" and node.func.attr in ("load", "loads", "Unpickler"):
                unsafe.append(f"{where} pickle.{node.func.attr}")
            if owner == "np" and node.func.attr == "load" and "allow_pickle" in keywords:
                unsafe.append(f"{where} np.load with allow_pickle")
    assert calls >= 1  # checkpoint.load at least: the search does find calls
    assert not unsafe, unsafe


# -- meta.json in a data folder

@pytest.fixture
def data_copy(slice_dir, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(slice_dir, target)
    return target


def edit_json(path, change):
    value = json.loads(path.read_text(encoding="utf-8"))
    change(value)
    path.write_text(json.dumps(value), encoding="utf-8")


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(vocab_size=m["vocab_size"] + 1), "vocab_size 59 does not match the 58 characters"),
    (lambda m: m.update(vocab_size=str(m["vocab_size"])), "vocab_size '58' does not match"),
    (lambda m: m.update(tokenizer="wordpiece"), "unknown tokenizer 'wordpiece'"),
    (lambda m: m.pop("tokenizer"), "unknown tokenizer None"),
    (lambda m: m.update(vocab="".join(m["vocab"])), "'vocab' must be a list of single characters"),
    (lambda m: m.update(vocab=m["vocab"][:-1] + ["ab"]), "'vocab' must be a list of single characters"),
    (lambda m: m.update(vocab=m["vocab"][:-1] + [m["vocab"][0]]), "'vocab' has repeated characters"),
    (lambda m: m.update(version=2), "not a babygpt meta.json version 1"),
    (lambda m: m.clear() or m.update(tokenizer="char", vocab=["a"], vocab_size=True), "vocab_size True does not match"),
])
def test_tampered_meta_json_is_refused_by_name(change, message, data_copy, tmp_path, capsys):
    edit_json(data_copy / "meta.json", change)
    err = fails(train.main, ["--data_dir", data_copy, "--out_dir", tmp_path / "out"], capsys)
    assert f"{data_copy / 'meta.json'}: " in err and message in err
    assert not (tmp_path / "out").exists()


def test_meta_json_that_is_not_json_is_refused(data_copy, tmp_path, capsys):
    (data_copy / "meta.json").write_bytes(b'{"tokenizer": "char", \xff')
    err = fails(train.main, ["--data_dir", data_copy, "--out_dir", tmp_path / "out"], capsys)
    assert "meta.json is not valid JSON" in err


def test_meta_json_from_another_dataset_is_caught_by_the_token_ids(data_copy, tmp_path, capsys):
    """A consistent meta.json, but too short for these .bin files: without the check, an index error mid-run."""
    edit_json(data_copy / "meta.json", lambda m: m.update(vocab=m["vocab"][:20], vocab_size=20))
    err = fails(train.main, ["--data_dir", data_copy, "--out_dir", tmp_path / "out"], capsys)
    assert "train.bin holds token id" in err and "only 20 characters" in err and "prepare.py" in err


# -- the meta and the other fields inside a checkpoint

def tampered_checkpoint(trained_run, tmp_path, change):
    state = torch.load(trained_run / "ckpt.pt", weights_only=True)
    change(state)
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda s: s["meta"].update(vocab_size=3), "(meta): vocab_size 3 does not match"),
    (lambda s: s["meta"].update(tokenizer="wordpiece"), "(meta): unknown tokenizer 'wordpiece'"),
    (lambda s: s["meta"].update(vocab=s["meta"]["vocab"][:10], vocab_size=10), "model_config has vocab_size 58 but meta has 10"),
    (lambda s: s["model_config"].update(n_head=5), "invalid model_config (n_embd (32) must be divisible by n_head (5))"),
    (lambda s: s["model_config"].update(n_embd=64), "the weights do not fit model_config"),
    (lambda s: s.update(best_val_loss="low"), "best_val_loss must be a number"),
    (lambda s: s.update(iter_num=-3), "iter_num must be a non-negative integer"),
    (lambda s: s["model"]["ln_f.bias"].fill_(float("inf")), "weight ln_f.bias holds NaN or infinite values"),
    (lambda s: s["model"].update(extra="not a tensor"), "model must map parameter names to tensors"),
])
def test_tampered_checkpoint_is_refused_by_name(change, message, trained_run, tmp_path, capsys):
    path = tampered_checkpoint(trained_run, tmp_path, change)
    err = fails(sample.main, ["--ckpt", path, "--max_new_tokens", 5], capsys)
    assert str(path) in err and message in err


def test_resuming_a_damaged_last_pt_is_refused(trained_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    state = torch.load(run_dir / "last.pt", weights_only=True)
    del state["optimizer"]["state"]
    torch.save(state, run_dir / "last.pt")
    err = fails(train.main, ["--out_dir", run_dir, "--resume", "--max_iters", 50], capsys)
    assert f"cannot resume: {run_dir / 'last.pt'} does not fit this run" in err
