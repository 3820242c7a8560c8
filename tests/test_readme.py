"""README.md: its commands, run in order after `make demo`, work as written.

A folder laid out like the repo after `make demo` (Tiny Shakespeare prepared, a run in out/) stands in for the
learner's. Where a command is cheap it runs for real (prepare.py, sample.py, plot.py); a long training command
has its command line checked by train.py itself (flags, preset, --resume reading out/last.pt) without training.
"""

import io
import os
import re
import shlex
import shutil

import pytest

import plot
import prepare
import sample
import train
from babygpt.cli import run
from conftest import ROOT, TINY, skip_for_missing_data, train_main
from babygpt.tokenizer import GPT2Tokenizer, TokenizerUnavailable

README = ROOT / "README.md"
BASH = re.compile(r"```bash\n(.*?)```", re.S)


def readme_commands():
    """Every `python ...` command of the README's bash blocks, as argv lists, in the order of the file."""
    commands = []
    for block in BASH.findall(README.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():  # a line ending in \ goes on
            words = shlex.split(line, comments=True)
            if words[:1] == ["python"]:
                commands.append(words[1:])
    return commands


NOT_HERE = {  # what this test leaves to others, and why
    "-m": "the lessons have their own tests (tests/test_lessons.py, test_vit.py, ...)",
    "bench.py": "measurements of minutes, not a check",
    "my_text.txt": "a placeholder for the learner's own file",
    "my.txt": "a placeholder for the learner's own file",
    "bpe": "training a BPE takes 10 s or more; tests/test_tokenizers.py trains one",
}


@pytest.fixture(scope="module")
def after_make_demo(shakespeare_text, slice_dir, tmp_path_factory):
    """A folder like the repo after `make demo`: the text in data/shakespeare_char/, a short run in out/ (the
    tiny model on a slice instead of the 500-step cpu preset: the commands only need a run to be there)."""
    home = tmp_path_factory.mktemp("after-make-demo")
    (home / "data" / "shakespeare_char").mkdir(parents=True)
    (home / "data" / "shakespeare_char" / "input.txt").write_text(shakespeare_text, encoding="utf-8")
    (home / "prompt.txt").write_text("ROMEO:", encoding="utf-8")  # the README's FILE:prompt.txt
    train_main("--data_dir", slice_dir, "--out_dir", home / "out", "--max_iters", 20, "--eval_interval", 10, *TINY)
    return home


def test_the_readme_has_the_commands_a_learner_runs():
    scripts = [argv[0] for argv in readme_commands()]
    assert {"prepare.py", "train.py", "sample.py", "plot.py"} <= set(scripts)
    assert scripts.count("sample.py") >= 10


def gpt2_rank_file_missing():
    try:
        GPT2Tokenizer()
    except TokenizerUnavailable as e:
        return str(e)
    return None


@pytest.mark.slow
def test_every_readme_command_works_as_written_after_make_demo(after_make_demo, monkeypatch, capsys):
    monkeypatch.chdir(after_make_demo)
    shared_cache = ROOT.parent / "shared" / "data" / "tiktoken-cache"  # as in test_tokenizers.py: offline machines
    if "TIKTOKEN_CACHE_DIR" not in os.environ and shared_cache.is_dir():
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shared_cache))
    ran, missing_rank_file = 0, gpt2_rank_file_missing()
    for argv in readme_commands():
        if any(word in NOT_HERE for word in argv) or (missing_rank_file and "gpt2" in argv):
            continue
        script, args = argv[0], argv[1:]
        if script == "train.py" and "--resume" in args and "--preset" in args:
            continue  # the first command again plus --resume: tests/test_errors.py checks it against a real run
        if script == "train.py":
            train.resolve_settings(args)  # raises UserError if a flag, preset or out/last.pt is wrong
        elif script == "prepare.py":
            run(prepare.main, args)
        elif script in ("sample.py", "plot.py"):
            for name in args:  # a run named by another README command (python train.py ... --out_dir NAME)
                if name.startswith("out-") and not (after_make_demo / name).exists():
                    shutil.copytree(after_make_demo / "out", after_make_demo / name)
            if script == "plot.py":
                run(plot.main, args)
            else:
                monkeypatch.setattr("sys.stdin", io.StringIO("ROMEO:\n"))  # for --interactive
                run(sample.main, [*args, "--max_new_tokens", "20"])  # fewer tokens than written: the same command
        else:
            pytest.fail(f"a README command this test does not know: python {shlex.join(argv)}")
        ran += 1
    err = capsys.readouterr().err
    assert "error:" not in err and "Traceback" not in err
    assert ran >= 20
    if missing_rank_file:  # everything else passed; say what was left out
        skip_for_missing_data(f"the README's --tokenizer gpt2 command needs GPT-2's rank file: {missing_rank_file}")


def test_model_py_stays_under_the_300_lines_the_readme_promises():
    """A learner reads model.py top to bottom: what is not the GPT itself lives beside it (sampling.py: how a
    token is drawn; optimizer.py: AdamW and its param groups), and the README's table says so."""
    assert "`generate` (under 300 lines)" in README.read_text(encoding="utf-8")
    lines = (ROOT / "model.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 300, f"model.py has {len(lines)} lines"
