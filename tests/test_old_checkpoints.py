"""Checkpoints written by earlier code still sample and resume.

tests/fixtures/checkpoint-7e9e551-OPTIMIZER/ is a tiny run trained by commit 7e9e551 (babygpt before its runs
used torch.optim), on the first 20,000 characters of Tiny Shakespeare (the slice_dir fixture), with
    python train.py --preset classic --n_layer 1 --n_head 2 --n_embd 8 --block_size 8 --batch_size 4
        --max_iters 4 --eval_interval 2 --eval_iters 1 --sample_chars 0 --threads 1 --log_interval 2
        --optimizer OPTIMIZER
last.pt and metrics.jsonl are that run's; weights-at-6.pt holds the weights 7e9e551's own code reached when it
resumed that last.pt with --max_iters 6.
"""

import shutil

import pytest
import torch
from conftest import ROOT, train_main

import sample
from babygpt import checkpoint
from babygpt.runner import run

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_checkpoint_of_7e9e551_samples_and_resumes_the_way_that_code_did(optimizer, slice_dir, tmp_path,
                                                                          capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / f"checkpoint-7e9e551-{optimizer}", run_dir)
    run(sample.main, ["--ckpt", str(run_dir / "last.pt"), "--max_new_tokens", "20", "--start", "ROMEO:"])
    out, err = capsys.readouterr()
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) == len("ROMEO:") + 20
    assert "iteration 4" in err

    train_main("--out_dir", run_dir, "--resume", "--max_iters", 6, "--data_dir", slice_dir)
    resumed = checkpoint.load(run_dir / "last.pt")
    assert resumed["iter_num"] == 6
    # the optimizer went on from its saved state: its step counts say 6, not a fresh start's 2
    adamw_state = resumed["optimizer"]["adamw" if optimizer == "muon" else "state"]
    steps = (adamw_state["state"] if optimizer == "muon" else adamw_state).values()
    assert {float(s["step"]) for s in steps} == {6.0}
    # and the weights are those 7e9e551 reached from the same file: 2 steps of about lr (6e-5) apart from a
    # restart of the optimizer, so 1e-6 tells them apart (and leaves room for another CPU's rounding)
    expected = torch.load(FIXTURES / f"checkpoint-7e9e551-{optimizer}" / "weights-at-6.pt", weights_only=True)
    assert expected.keys() == resumed["model"].keys()
    for name, tensor in expected.items():
        # The blocks under Muon: a run in bfloat16 (a CPU with AVX-512 BF16) orthogonalises in it, where 7e9e551
        # did so in float32: its matrices up to ~1.7e-4 apart of the two steps' ~2.4e-3 (their biases, under
        # AdamW, follow them: ~2e-5). The embeddings and the head still tell a restarted AdamW apart at 1e-6.
        atol = 3e-4 if optimizer == "muon" and name.startswith("blocks.") else 1e-6
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=0, atol=atol, msg=name)


def test_a_checkpoint_that_set_the_retired_logit_softcap_is_refused_in_one_line(tmp_path, capsys):
    """logit_softcap is gone from model.py: a checkpoint with it off (0.0, as the fixtures above) loads; one that
    used it cannot be reproduced and is refused by name, with no traceback."""
    from test_errors import fails

    state = torch.load(FIXTURES / "checkpoint-7e9e551-adamw" / "last.pt", weights_only=True)
    assert state["model_config"]["logit_softcap"] == 0.0
    state["model_config"]["logit_softcap"] = 5.0
    torch.save(state, tmp_path / "capped.pt")
    err = fails(sample.main, ["--ckpt", tmp_path / "capped.pt"], capsys)
    assert "was trained with logit_softcap 5.0, an option this babygpt no longer has" in err
