"""User mistakes: one line that says what is wrong, exit status 2, no traceback, nothing good overwritten."""

import shutil

import pytest
import torch

import prepare
import train
import sample
from cli import run
from conftest import run_script


def fails(main, argv, capsys):
    """Run main(argv) as the command line does; return its single stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        run(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# -- prepare.py

def test_prepare_missing_input(tmp_path, capsys):
    assert "not found" in fails(prepare.main, ["--input", tmp_path / "nope.txt"], capsys)


def test_prepare_empty_input(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert "empty" in fails(prepare.main, ["--input", tmp_path / "empty.txt"], capsys)


def test_prepare_non_utf8_input(tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    assert "UTF-8" in fails(prepare.main, ["--input", tmp_path / "latin1.txt"], capsys)


def test_prepare_without_network_says_where_to_put_the_file(tmp_path):
    result = run_script("prepare.py", "--out_dir", tmp_path / "shakespeare")
    if result.returncode == 0:
        pytest.skip("this machine has network access: the download worked")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "input.txt" in result.stderr and "by hand" in result.stderr


# -- train.py

def test_train_before_prepare(tmp_path, capsys):
    err = fails(train.main,
                ["--data_dir", tmp_path, "--out_dir", tmp_path / "out"], capsys)
    assert "prepare.py" in err


def test_train_dataset_shorter_than_block(tmp_path, capsys):
    prepare.prepare("just a few characters", tmp_path)
    err = fails(train.main, ["--data_dir", tmp_path, "--out_dir", tmp_path / "out", "--block_size", 32], capsys)
    assert "block_size" in err and "at least 33" in err


@pytest.mark.parametrize("flags, message", [
    (["--n_embd", 30, "--n_head", 4], "divisible by n_head"),
    (["--n_layer", 0], "n_layer must be at least 1"),
    (["--batch_size", -2], "batch_size must be at least 1"),
    (["--learning_rate", 0], "learning_rate must be positive"),
    (["--dropout", 1.5], "dropout must be in [0, 1)"),
    (["--preset", "laptop"], "unknown preset 'laptop'"),
    (["--n_layers", 4], "unrecognized arguments: --n_layers"),
    (["--n_layer=abc"], "--n_layer: invalid int value: 'abc'"),
    (["--bias", "maybe"], "--bias"),
    (["--device", "tpu"], "device must be"),
    (["--attn_pattern", "sliding", "--pos_emb", "learned"], "attn_pattern 'sliding' needs pos_emb 'rope'"),
    (["--attn_pattern", "sliding", "--pos_emb", "rope", "--attn_window", -1], "attn_window must be between 1 and block_size"),
    (["--attn_pattern", "sliding", "--pos_emb", "rope", "--block_size", 32, "--attn_window", 33], "between 1 and block_size (32), got 33"),
])
def test_train_impossible_settings(flags, message, slice_dir, tmp_path, capsys):
    err = fails(train.main, ["--data_dir", slice_dir, "--out_dir", tmp_path, *flags], capsys)
    assert message in err
    assert not (tmp_path / "ckpt.pt").exists()


def test_resume_without_a_checkpoint(slice_dir, tmp_path, capsys):
    err = fails(train.main, ["--data_dir", slice_dir, "--out_dir", tmp_path, "--resume"], capsys)
    assert "cannot resume" in err and "last.pt" in err


def test_resume_with_another_vocabulary_is_refused(trained_run, tmp_path, capsys):

    other = tmp_path / "other"
    prepare.prepare("a completely different text, all lower case " * 200, other)
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = (run_dir / "last.pt").read_bytes()
    err = fails(train.main, ["--data_dir", other, "--out_dir", run_dir, "--resume"], capsys)
    assert "vocabulary" in err
    assert (run_dir / "last.pt").read_bytes() == before


def test_resume_cannot_change_the_model_shape(trained_run, slice_dir, tmp_path, capsys):

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    err = fails(train.main, ["--data_dir", slice_dir, "--out_dir", run_dir, "--resume", "--n_layer", 6], capsys)
    assert "--n_layer cannot change" in err


# -- sample.py

def test_sample_unknown_prompt_characters_are_named(trained_run, capsys):
    err = fails(sample.main, ["--out_dir", trained_run, "--start", "ROMEO€ says ✓"], capsys)
    assert "'€'" in err and "'✓'" in err and "--unknown skip" in err


def test_sample_unknown_skip_and_empty_prompt_work(trained_run):
    skipped = run_script("sample.py", "--out_dir", trained_run, "--start", "ROMEO€:", "--unknown", "skip", "--max_new_tokens", 5)
    assert skipped.returncode == 0 and skipped.stdout.startswith("ROMEO:")
    empty = run_script("sample.py", "--out_dir", trained_run, "--start", "", "--max_new_tokens", 5)
    assert empty.returncode == 0 and empty.stdout.startswith("\n")


@pytest.mark.parametrize("flags, message", [
    (["--top_k", 0], "top_k must be at least 1"),
    (["--temperature", -0.5], "temperature must be 0"),
    (["--num_samples", 0], "num_samples"),
    (["--unknown", "ignore"], "unknown must be"),
    (["--start", "FILE:/no/such/prompt.txt"], "prompt file /no/such/prompt.txt not found"),
])
def test_sample_bad_settings(flags, message, trained_run, capsys):
    assert message in fails(sample.main, ["--out_dir", trained_run, *flags], capsys)


def test_sample_missing_checkpoint(tmp_path, capsys):
    err = fails(sample.main, ["--out_dir", tmp_path], capsys)
    assert "not found" in err and "train.py" in err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_sample_garbage_file(content, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(content)
    assert "not a babygpt checkpoint" in fails(sample.main, ["--ckpt", tmp_path / "junk.pt"], capsys)


def test_sample_torch_file_that_is_not_a_checkpoint(tmp_path, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert "not a babygpt checkpoint" in fails(sample.main, ["--ckpt", tmp_path / "other.pt"], capsys)


def test_cli_errors_in_a_real_process(tmp_path):
    result = run_script("train.py", "--no_such_flag")
    assert result.returncode == 2 and result.stderr.startswith("error: unrecognized arguments") and "Traceback" not in result.stderr
    result = run_script("sample.py", "--ckpt", tmp_path / "missing.pt")
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # unpickling would call open(marker, "w"): a stand-in for any code
            return (open, (str(marker), "w"))

    torch.save({"format": "babygpt-checkpoint", "version": 1, "model": Payload()}, tmp_path / "evil.pt")
    err = fails(sample.main, ["--ckpt", tmp_path / "evil.pt"], capsys)
    assert "could run code" in err and "refusing" in err
    assert not marker.exists()
