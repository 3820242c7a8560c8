"""The laptop preset and the tool that measures it (tools/budget.py): the run says what to expect before it
starts, and the budget tool runs each budget with a schedule that ends at it, scores every run with the one
evaluator and keeps the results of separate calls together. The ten-minute figures themselves are measured
by the documented command (docs/experiments.md, "A laptop's ten minutes"), not by a test."""

import json
import shutil

import pytest
from conftest import ROOT, train_main
from test_tools import SWEEP, assert_one_line_or_done

import train
from babygpt.cli import load_preset
from tools import budget

# the laptop preset's recipe on a model small enough for a test (its optimizer, schedule and levers as they are)
TINY_LAPTOP = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16", "--batch_size", "4",
               "--eval_iters", "2", "--sample_chars", "8", "--threads", "1"]


def test_the_laptop_run_says_how_long_it_takes_and_how_to_shorten_it(slice_dir, tmp_path, capsys):
    train_main("--preset", "laptop", "--data_dir", slice_dir, "--out_dir", tmp_path / "out", "--max_iters", 2,
               "--eval_interval", 2, *TINY_LAPTOP)
    first = capsys.readouterr().out.splitlines()[0]
    assert "minutes" in first and "2-core" in first and "--max_iters" in first
    # the note is not a setting: the run's saved settings are the preset's, and no other preset prints one
    assert "note" not in load_preset("laptop", train.DEFAULTS)
    train_main("--preset", "cpu", "--data_dir", slice_dir, "--out_dir", tmp_path / "cpu", "--max_iters", 1,
               "--eval_interval", 1, *TINY_LAPTOP)
    assert "--max_iters" not in capsys.readouterr().out.splitlines()[0]


def test_a_budget_scales_the_presets_schedule_to_end_at_it():
    laptop = {**train.DEFAULTS, **load_preset("laptop", train.DEFAULTS)}
    assert budget.scaled_run(laptop, budget.PRESET_MINUTES) == (laptop["max_iters"], laptop["eval_interval"])
    steps, every = budget.scaled_run(laptop, budget.PRESET_MINUTES / 4)
    evaluations = len(range(0, laptop["max_iters"], laptop["eval_interval"]))  # (and one at the end)
    assert steps == round(laptop["max_iters"] / 4) and len(range(0, steps, every)) == evaluations
    assert budget.scaled_run(laptop, 1e-6) == (1, 1)  # at least one step, and an evaluation at its end


@pytest.mark.slow
def test_budgets_and_peers_are_run_scored_and_kept_across_calls(slice_dir, shakespeare_text, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the stand-in for nanoGPT too: no thread crawl on a busy machine
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(slice_dir, data)
    (data / "input.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    shutil.copytree(ROOT / "tests" / "peer_standin", tmp_path / "nanogpt")
    flags = " ".join(TINY_LAPTOP)
    # two tiny budgets (the preset's steps scaled down to a few), then the cpu preset and nanoGPT's stand-in
    first = budget.main(["--minutes", "0.002,0.004", "--data_dir", "data", "--flags", flags, "--nanogpt", "nanogpt",
                         "--nanogpt_flags", "--max_iters=4 --eval_interval=2 --eval_iters=2 --batch_size=4 "
                                            "--block_size=16", "--figure", "fig.png"])
    runs = first["runs"]
    assert set(runs) == {"laptop-0.002min-seed0", "laptop-0.004min-seed0", "cpu", "nanogpt-classic"}
    laptop = {**train.DEFAULTS, **load_preset("laptop", train.DEFAULTS)}
    for minutes in (0.002, 0.004):
        run = runs[f"laptop-{minutes:g}min-seed0"]
        assert run["max_iters"] == budget.scaled_run(laptop, minutes)[0]
        assert run["evals"][-1][1] == run["max_iters"]  # the schedule ended at the budget's last step
    assert all(0 < r["whole_val"] < 6 and r["seconds"] > 0 for r in runs.values())
    assert (tmp_path / "fig.png").stat().st_size > 1000

    # a second call adds another seed and keeps the first call's runs; --runs 0 only reads them back
    second = budget.main(["--minutes", "0.002", "--seeds", "1", "--peers", "0", "--data_dir", "data",
                          "--flags", flags, "--figure", ""])
    assert set(second["runs"]) == set(runs) | {"laptop-0.002min-seed1"}
    assert second["runs"]["laptop-0.002min-seed0"] == runs["laptop-0.002min-seed0"]
    saved = json.loads((tmp_path / "out-budget" / "budget.json").read_text())
    assert budget.main(["--runs", "0", "--figure", ""]) == saved


@pytest.mark.slow
def test_every_budget_flag_takes_any_value_without_a_traceback(slice_dir, tmp_path, monkeypatch):
    """Accepted values end in a table (from a results file made by one real tiny run, --runs 0) or in a run
    refused by its own check; refused ones in one line."""
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results.json"
    budget.main(["--minutes", "0.001", "--peers", "0", "--data_dir", str(slice_dir), "--json", str(results),
                 "--flags", " ".join(TINY_LAPTOP), "--figure", ""])
    base = {"minutes": "0.001", "seeds": "0", "preset": "laptop", "runs": "0", "peers": "0", "nanogpt": "",
            "nanogpt_flags": "", "flags": " ".join(TINY_LAPTOP), "data_dir": str(slice_dir),
            "out_dir": str(tmp_path / "out"), "json": str(results), "figure": ""}
    for flag in base:
        for value in SWEEP:
            assert_one_line_or_done(budget.main, [f"--{k}={value if k == flag else v}" for k, v in base.items()])
    for flag, value, says in [("minutes", "0", "--minutes: each budget"), ("minutes", "2,x", "comma-separated"),
                              ("seeds", "-1", "--seeds: each seed"), ("preset", "nope", "unknown preset 'nope'")]:
        argv = [f"--{k}={value if k == flag else v}" for k, v in {**base, "runs": "1"}.items()]
        code, err = assert_one_line_or_done(budget.main, argv)
        assert code == 2 and says in err, err
