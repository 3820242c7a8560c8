"""Shared fixtures: the real Tiny Shakespeare text, a small prepared slice of it, and a tiny trained run.

A fresh clone has no data: the first test that needs Tiny Shakespeare downloads it (as `python prepare.py`
would) into data/shakespeare_char/input.txt. Offline, those tests are skipped with the reason and what to do
(pytest -rs prints it); with BABYGPT_REQUIRE_DATA=1 (CI) they fail instead, so a missing file is never
mistaken for a passing suite.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import train
from babygpt.cli import UserError
from babygpt.runner import run
from prepare import download_shakespeare, prepare

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_CANDIDATES = [
    ROOT / "data" / "shakespeare_char" / "input.txt",
    ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt",
]

# A model small enough to train in a second or two on a CPU: the classic recipe's plain GPT (learned positions,
# LayerNorm, GELU, AdamW), shrunk.
TINY = ["--preset", "classic", "--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--batch_size", "8",
        "--eval_iters", "2", "--log_interval", "5", "--sample_chars", "20", "--warmup_iters", "5", "--threads", "1"]


def skip_for_missing_data(reason):
    """Skip (or, under BABYGPT_REQUIRE_DATA=1, fail) a test whose data cannot be had; the reason says what to do."""
    if os.environ.get("BABYGPT_REQUIRE_DATA") == "1":
        pytest.fail(f"missing data (BABYGPT_REQUIRE_DATA=1): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shakespeare_text():
    for path in SHAKESPEARE_CANDIDATES:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    try:
        download_shakespeare(SHAKESPEARE_CANDIDATES[0])
        return SHAKESPEARE_CANDIDATES[0].read_text(encoding="utf-8")
    except UserError as e:
        reason = f"needs Tiny Shakespeare: {e}"
    skip_for_missing_data(reason)


@pytest.fixture(scope="session")
def slice_dir(shakespeare_text, tmp_path_factory):
    """The first 20 KB of Tiny Shakespeare, prepared: train.bin, val.bin, meta.json."""
    data_dir = tmp_path_factory.mktemp("slice")
    prepare(shakespeare_text[:20_000], data_dir)
    return data_dir


def train_main(*argv):
    """Run train.py's main in this process, as the command line would (one-line errors, exit codes)."""
    return run(train.main, [str(a) for a in argv])


@pytest.fixture(scope="session")
def trained_run(slice_dir, tmp_path_factory):
    """A finished 40-iteration run of the tiny model on the slice."""
    out_dir = tmp_path_factory.mktemp("run")
    train_main("--data_dir", slice_dir, "--out_dir", out_dir, "--max_iters", 40, "--eval_interval", 20, "--overwrite", *TINY)
    return out_dir


def run_script(script, *args, cwd=ROOT, stdin=None, timeout=120):
    """Run one of the repo's scripts in a fresh Python process, as a user would."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def pytest_unconfigure(config):
    """The very last line, when tests were skipped for want of Tiny Shakespeare: a short, green-looking run must
    not be read as a full pass."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r for r in (reporter.stats.get("skipped", []) if reporter else []) if "needs Tiny Shakespeare" in str(r.longrepr)]
    if skipped:
        reporter.write_line(f"{len(skipped)} tests were skipped: Tiny Shakespeare is missing and could not be downloaded; "
                            f"copy its input.txt to {SHAKESPEARE_CANDIDATES[0]} (or connect to the internet) and run "
                            f"the tests again", yellow=True, bold=True)
