"""tools.peer end to end, against a stand-in for nanoGPT (tests/peer_standin: nanoGPT's command line, output
lines, data preparation and checkpoint format around a bigram model), so the harness cannot rot. The real
comparison is a documented command (docs/experiments.md), not a test."""

import shutil
import statistics

import pytest
from conftest import ROOT

from prepare import prepare
from tools import peer, whole_val

TINY_BABYGPT = ("--n_layer 1 --n_head 2 --n_embd 16 --block_size 16 --batch_size 4 --eval_iters 2 --sample_chars 8 "
                "--threads 1 --max_iters 6 --eval_interval 3 --warmup_iters 2")


@pytest.mark.slow
def test_peer_runs_both_programs_and_scores_both_checkpoints_with_one_evaluator(shakespeare_text, tmp_path, monkeypatch):
    # one thread for the stand-in too (babygpt's side has --threads 1): torch's default threads crawl on a busy machine
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data_dir = tmp_path / "data"
    prepare(shakespeare_text[:20_000], data_dir)
    (data_dir / "input.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    standin = tmp_path / "nanogpt"
    shutil.copytree(ROOT / "tests" / "peer_standin", standin)

    result = peer.main(["--nanogpt", str(standin), "--data_dir", str(data_dir), "--out_dir", str(tmp_path / "out"),
                         "--short", "2", "--long", "4", "--repeats", "2", "--target", "100", "--together", "1", "--whole", "2",
                         "--nanogpt_flags", "--max_iters=6 --eval_interval=3 --eval_iters=2 --batch_size=4 --block_size=16",
                         "--babygpt_flags", TINY_BABYGPT])

    # nanoGPT's prepare.py ran on our text: the same validation tokens, scored by the same evaluator
    assert (standin / "data" / "shakespeare_char" / "val.bin").read_bytes() == (data_dir / "val.bin").read_bytes()
    assert 0 < result["nanogpt_whole_val"] < 6 and 0 < result["babygpt_cpu_whole_val"] < 6
    # each program printed its evaluations (at 0, 3 and 6), and the generous target was met at the first one
    for name in ("nanogpt-classic", "babygpt-cpu"):  # two rounds of the whole runs (--whole 2): medians
        assert [[it for _, it, _ in run["evals"]] for run in result["runs"][name]] == [[0, 3, 6], [0, 3, 6]]
    assert result["nanogpt_wall_s"] == statistics.median(run["seconds"] for run in result["runs"]["nanogpt-classic"])
    assert result["nanogpt_seconds_to_target"] <= result["nanogpt_wall_s"]
    assert result["babygpt_cpu_seconds_to_target"] <= result["babygpt_cpu_wall_s"]
    assert result["babygpt_cpu_eval_s"] > 0 and result["nanogpt_peak_rss_mb"] > 0 and result["babygpt_peak_rss_mb"] > 0
    # the marginal time per step, also round by round: each round's four runs give one ratio, the median is theirs
    seconds = {name: [run["seconds"] for run in result["runs"][name]] for name in
               ("nanogpt-2", "nanogpt-4", "babygpt-2", "babygpt-4")}
    assert result["throughput_ratio_by_round"] == [
        (seconds["nanogpt-4"][r] - seconds["nanogpt-2"][r]) / (seconds["babygpt-4"][r] - seconds["babygpt-2"][r])
        for r in range(2)]
    assert result["throughput_ratio_median_of_rounds"] == statistics.median(result["throughput_ratio_by_round"])
    assert (tmp_path / "out" / "peer.json").is_file()


def test_the_evaluator_scores_every_token_but_the_first_once():
    import torch
    tokens = list(range(10)) * 5  # 50 tokens: 3 windows of 16, 48 predictions
    seen = []

    def logits_of(x):  # perfect predictions, recording what it was shown
        seen.append(x.clone())
        return torch.nn.functional.one_hot((x + 1) % 10, 10).float() * 100

    assert whole_val.whole_split_loss(logits_of, tokens, 16, batch_size=2) < 1e-6
    assert torch.cat(seen).flatten().tolist() == tokens[:48]

