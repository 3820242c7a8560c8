"""User mistakes: one line that says what is wrong, exit status 2, no traceback, nothing good overwritten."""

import re
import shutil

import pytest
import torch
from conftest import TINY, run_script, train_main

import prepare
import sample
import train
from babygpt.runner import run


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
    (["--preset", "phone"], "unknown preset 'phone'"),
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


def test_the_first_command_again_with_resume_added_works_when_its_preset_agrees(trained_run, slice_dir, tmp_path,
                                                                                capsys):
    """The habit: re-run the command that started the run, with --resume. A preset that disagrees is named."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    first_command = ["--data_dir", slice_dir, "--out_dir", run_dir, "--max_iters", 40, "--eval_interval", 20, *TINY]
    train_main(*first_command, "--resume")  # the trained run's own command: accepted (it is already finished)
    assert "resuming" in capsys.readouterr().out
    other_preset = [{"classic": "cpu"}.get(arg, arg) for arg in first_command]
    err = fails(train.main, [*other_preset, "--resume"], capsys)
    assert "--preset cpu sets pos_emb = rope, but the run being resumed was trained with pos_emb = learned" in err


@pytest.mark.parametrize("path, preset", [("config/train_shakespeare_char.py", "cpu"), ("config/gpu.toml", "gpu"),
                                          ("my_configs/classic.py", "classic")])
def test_a_nanogpt_style_config_file_argument_is_told_to_use_preset(path, preset, capsys):
    err = fails(train.main, [path], capsys)
    assert f"babygpt uses --preset NAME" in err and f"did you mean --preset {preset}?" in err


def test_on_off_settings_take_booleans_as_nanogpt_spells_them(capsys):
    for typed, meant in (("False", "off"), ("True", "on"), ("0", "off"), ("1", "on"), ("off", "off"), ("auto", "auto")):
        assert train.resolve_settings([f"--compile={typed}"])[1].compile == meant
    assert "compile must be auto, on or off, got 'maybe'" in fails(train.main, ["--compile", "maybe"], capsys)


def help_text(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(main, [*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with single spaces


def test_help_lists_every_preset_and_shows_the_values_of_the_chosen_one(capsys):
    from babygpt.cli import known_presets, load_preset
    assert set(known_presets()) >= {"classic", "cpu", "gpu"}
    for preset in (None, *known_presets()):
        shown = help_text(train.main, ["--preset", preset] if preset else [], capsys)
        assert f"one of {', '.join(known_presets())} (default: cpu)" in shown
        values = {**train.DEFAULTS, **load_preset(preset or "cpu", train.DEFAULTS)}
        for name in ("n_embd", "learning_rate", "max_iters", "pos_emb", "batch_size"):
            assert re.search(rf"--{name} \S+ .*?\(default: {re.escape(str(values[name]))}\)", shown), (preset, name)
        assert "(default: )" not in shown


def test_no_script_help_shows_an_empty_default_and_ckpt_means_the_same_everywhere(capsys):
    import plot
    shown = help_text(sample.main, [], capsys)
    assert "(default: )" not in shown and "--ckpt STR read this checkpoint instead: a file" in shown
    assert "run's folder (its ckpt.pt)" in shown
    assert "run's folder (its ckpt.pt is read)" in help_text(plot.main, ["attention"], capsys)


def test_sample_ckpt_takes_a_run_folder_like_plot_does(trained_run, capsys):
    outputs = []
    for argv in (["--ckpt", trained_run], ["--ckpt", trained_run / "ckpt.pt"], ["--out_dir", trained_run]):
        run(sample.main, [str(a) for a in argv] + ["--max_new_tokens", "30", "--seed", "3"])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) > 30


# -- sample.py

def test_sample_unknown_prompt_characters_are_named(trained_run, capsys):
    err = fails(sample.main, ["--out_dir", trained_run, "--start", "ROMEO€ says ✓"], capsys)
    assert "'€'" in err and "'✓'" in err and "--unknown skip" in err


@pytest.mark.slow
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


@pytest.mark.slow
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
