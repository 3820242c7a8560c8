"""README.md and docs/usage.md: their commands, run in order after `make demo`, work as written; the README stays
a page a newcomer reads in five minutes.

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
from conftest import ROOT, TINY, skip_for_missing_data, train_main

import plot
import prepare
import sample
import train
from babygpt.runner import run
from babygpt.tokenizer import GPT2Tokenizer, TokenizerUnavailable

README = ROOT / "README.md"
USAGE = ROOT / "docs" / "usage.md"  # usage in full: the README keeps the essential commands, this page the rest
BASH = re.compile(r"```bash\n(.*?)```", re.S)


def readme_commands():
    """Every `python ...` command of the bash blocks of README.md, then docs/usage.md, as argv lists, in order."""
    commands = []
    text = README.read_text(encoding="utf-8") + "\n" + USAGE.read_text(encoding="utf-8")
    for block in BASH.findall(text):
        for line in block.replace("\\\n", " ").splitlines():  # a line ending in \ goes on
            words = shlex.split(line, comments=True)
            if words[:1] == ["python"]:
                commands.append(words[1:])
    return commands


NOT_HERE = {  # what this test leaves to others, and why
    "-m": "the lessons have their own tests (tests/test_lessons.py, test_vit.py, ...)",
    "my_text.txt": "a placeholder for the learner's own file",
    "my.txt": "a placeholder for the learner's own file",
    "bpe": "training a BPE takes 10 s or more; tests/test_tokenizers.py trains one",
    "explore": "a web server that runs until Ctrl-C: tests/test_explore_live.py starts and stops it",
    "--init_from": "GPT-2's weights need the network or a folder of them: tests/test_gpt2.py runs these",
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


def test_model_py_stays_short_enough_to_read_top_to_bottom():
    """A learner reads model.py top to bottom: the GPT and what it needs to run alone (the causal and sliding
    masks, the sampling of the next token) are in it; what is not the GPT lives beside it (optimizer.py: AdamW and its
    param groups), and the README's table says so."""
    assert "`generate`: about 300 lines that need nothing but torch" in README.read_text(encoding="utf-8")
    lines = (ROOT / "model.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 310, f"model.py has {len(lines)} lines"
    assert sum(len(line) > 100 for line in lines) <= 8, "model.py's lines are meant to fit 100 columns"


def test_the_readme_reads_in_five_minutes():
    """A newcomer meets the lesson first: a short README whose opening names the four files and the walkthrough,
    whose Quick start is two commands, and whose own commands train and sample (the rest is in docs/usage.md)."""
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines"
    too_long = [i for i, line in enumerate(lines, 1) if len(line) > 200]
    assert too_long == [], f"README.md lines over 200 characters: {too_long}"
    opening = "\n".join(lines[:15])
    for name in ("model.py", "prepare.py", "train.py", "sample.py", "](docs/walkthrough.md)"):
        assert name in opening, f"the README's first 15 lines do not name {name}"
    quick_start = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for line in BASH.search(quick_start).group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    own = set()  # the scripts the README's own bash blocks run
    for block in BASH.findall(text):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["python"]:
                own.add(words[1])
    assert {"prepare.py", "train.py", "sample.py"} <= own
