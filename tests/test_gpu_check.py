"""tools/gpu_check.py, the one command for the first minutes with a GPU, run here on the CPU with a tiny model so
that it cannot rot: every step it takes on a GPU (the preset's run, compile on and off, sampling, torchrun) runs."""

import json

import pytest
from conftest import run_script
from test_errors import fails

from tools import gpu_check

TINY_FLAGS = ("--n_layer 1 --n_head 2 --n_embd 32 --block_size 32 --batch_size 4 --eval_iters 2 "
              "--eval_interval 10 --sample_chars 0 --threads 1 --log_interval 2")


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_on_a_cpu_and_prints_its_table(slice_dir, tmp_path):
    done = run_script("tools/gpu_check.py", "--device", "cpu", "--preset", "classic", "--data_dir", slice_dir,
                      "--flags", TINY_FLAGS, "--max_iters", 20, "--speed_iters", 4, "--samples", 2,
                      "--new_tokens", 10, "--work_dir", tmp_path / "w", "--json", tmp_path / "gc.json", timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "gc.json").read_text())
    assert rows["device"] == "cpu" and rows["preset"] == "classic"
    assert rows["best_val_loss"] < 4.2 and 0 < rows["whole_val"] < 4.2  # a uniform guess over ~58 chars: 4.06
    for key in ("tokens_per_s_compile_on", "tokens_per_s_compile_off", "sample_tokens_per_s",
                "torchrun_1gpu_tokens_per_s"):
        assert rows[key] > 0, key
    assert f"| whole_val | {rows['whole_val']} |" in done.stdout
    assert "compile on" in open(tmp_path / "w" / "gpu_check.log").read()  # the compiled run did compile


def test_the_gpu_check_without_cuda_says_so_in_one_line(capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    err = fails(gpu_check.main, [], capsys)
    assert "this torch sees no CUDA GPU" in err


def test_the_gpu_check_without_prepared_data_says_so_in_one_line(tmp_path, capsys):
    err = fails(gpu_check.main, ["--device", "cpu", "--data_dir", tmp_path], capsys)
    assert "is not prepared: run python prepare.py first" in err
