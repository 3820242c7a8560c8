"""What a hostile world does, second round (issue 29), continued: a prompt file of many megabytes, sizes with
no memory budget, a training whose standard output is piped into `head`, `--interactive` with standard input
closed, torch.compile failing after its trial, and the smaller promises (SIGHUP, empty names, an earlier run's
metrics, the default prompt, a GPU that is not there). Every failure is one line; nothing good is lost."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, train_main
from test_hostile2 import one_line, run_with

import sample
from babygpt import checkpoint, compiling, device, runner
from babygpt.cli import UserError
from babygpt.runner import run
from model import GPT, GPTConfig


def sample_main(capsys, *argv):
    """sample.py in this process: (exit status, stdout, stderr)."""
    try:
        run(sample.main, [str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def train_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        train_main(*argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- 3. a prompt file of many megabytes: only its tail, what the model reads, is read

def test_a_huge_prompt_file_is_read_from_its_tail_only(trained_run, shakespeare_text, tmp_path, capsys):
    """The model reads the last block_size (32) tokens of a prompt; the file's first 20 MB are not even
    decoded -- here they are not UTF-8 at all, which reading the whole file would refuse."""
    tail = shakespeare_text[:2000]
    prompt = tmp_path / "prompt.txt"
    with open(prompt, "wb") as f:
        f.write(b"\xff" * 20_000_000)
        f.write(tail.encode("utf-8"))
    code, out, err = sample_main(capsys, "--out_dir", trained_run, "--start", f"FILE:{prompt}",
                                 "--max_new_tokens", 10, "--seed", 1)
    assert code == 0, err
    assert out.startswith(tail[-32:]) and not out.startswith(tail[-33:]), out
    assert len(out) == 32 + 10 + 1  # the prompt the model read, 10 new characters, a newline


def test_a_prompt_file_cut_inside_a_character_or_a_line_break(tmp_path):
    from babygpt.files import read_text_tail
    path = tmp_path / "p.txt"
    path.write_bytes("é€\r\nab".encode("utf-8"))  # é: 2 bytes, €: 3 bytes
    assert read_text_tail(path, 100) == path.read_text(encoding="utf-8") == "é€\nab"
    assert read_text_tail(path, 7) == "€\nab"  # the tail starts inside é: that half is dropped
    assert read_text_tail(path, 6) == "\nab"  # inside €


# -- 4. sizes with no memory budget: one line, exit 2, before anything is allocated

def test_a_billion_accumulation_steps_is_one_line_before_anything_is_allocated(slice_dir, tmp_path, capsys):
    """A random stream per micro-batch: a billion of them would need terabytes (a million: 2.8 GB, 17 s)."""
    err = train_error(capsys, "--data_dir", slice_dir, "--out_dir", tmp_path / "o", *TINY,
                      "--gradient_accumulation_steps", 10**9)
    assert "gradient_accumulation_steps 1,000,000,000 (a random stream per micro-batch) needs about" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("num_samples, max_new_tokens", [(10**7, 1), (1, 10**12)])
def test_samples_or_tokens_past_the_memory_are_one_line(num_samples, max_new_tokens, trained_run, capsys):
    """10 million samples: their KV cache alone is 164 GB for this tiny model (sample.py tried to allocate it
    and ended in a traceback); 10**12 tokens of text would not fit either."""
    code, out, err = sample_main(capsys, "--out_dir", trained_run, "--num_samples", num_samples,
                                 "--max_new_tokens", max_new_tokens)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.startswith(f"error: {num_samples:,} sample") and "use a smaller --num_samples or --max_new_tokens" \
        in err and len(err.splitlines()) == 1, err


def test_the_memory_estimate_of_generation_covers_the_kv_cache():
    from babygpt import engine
    config = GPTConfig(vocab_size=65, n_layer=2, n_head=2, n_embd=32, block_size=32)
    model = GPT(config).eval()
    cache = engine.make_cache(model, 100, "cpu")
    on_device, _ = engine.generation_memory(config, 100, 10)
    assert engine.cache_bytes(cache) <= on_device < 20 * engine.cache_bytes(cache)


def test_a_generation_past_the_window_still_matches_the_reference(trained_run):
    """stream() used to keep every generated token in one tensor, copied at every step; it now keeps the last
    block_size, all it reads: 100 tokens past a window of 32 are still the reference's tokens."""
    from babygpt import engine
    model = checkpoint.load_model(checkpoint.load(trained_run / "ckpt.pt")).eval()
    prompt = torch.zeros(1, 5, dtype=torch.long)
    tokens = engine.generate(model, prompt, 100, generator=torch.Generator().manual_seed(0))
    reference = model.generate(prompt, 100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, reference)


# -- 5. a training piped into `head`: it keeps training and saving

@pytest.mark.slow
def test_a_training_piped_into_head_keeps_training(slice_dir, tmp_path):
    """`python train.py ... | head -1`, with a real pipe and a real head: it used to stop at iteration 0
    with exit status 0 and no word."""
    out_dir = tmp_path / "o"
    train = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--data_dir", str(slice_dir), "--out_dir",
                              str(out_dir), *map(str, TINY), "--max_iters", "60", "--eval_interval", "20"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-1"], stdin=train.stdout, capture_output=True, timeout=300)
    train.stdout.close()  # head alone holds the pipe's reading end: when it exits, the pipe is closed
    _, err = train.communicate(timeout=300)
    err = err.decode()
    assert head.stdout.decode().startswith("model: ")
    assert train.returncode == 0 and "Traceback" not in err, err
    assert checkpoint.load(out_dir / "last.pt")["iter_num"] == 60
    assert json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[-1])["iter"] == 60
    assert err.count("standard output closed: training goes on") <= 1, err


def test_a_closed_pipe_in_training_goes_to_dev_null_and_says_so_once(tmp_path, capsys):
    """The same in this process, with a real pipe whose reading end is closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w")
    try:
        def main(argv):
            runner.outlive_a_closed_pipe(tmp_path)
            for i in range(3):
                print("x" * 100_000)  # past the buffer: the write itself meets the closed pipe
            return "went on"
        real = sys.stdout
        sys.stdout = stream
        try:
            assert run(main, []) == "went on"
        finally:
            sys.stdout = real
        assert capsys.readouterr().err == f"standard output closed: training goes on, see {tmp_path}/metrics.jsonl\n"
    finally:
        stream.close()


# -- 8. --interactive with standard input closed

def test_interactive_with_standard_input_closed_in_process(trained_run, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of a closed descriptor 0 (`<&-`)
    code, _, err = sample_main(capsys, "--out_dir", trained_run, "--interactive")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == "error: standard input is closed (<&-); type the prompts in a terminal or pipe " \
                                   "them in", err


@pytest.mark.slow
def test_interactive_with_standard_input_closed(trained_run):
    result = run_with("sample.py", "--out_dir", trained_run, "--interactive", close=(0,))
    one_line(result, "standard input is closed (<&-); type the prompts in a terminal or pipe them in")


# -- 9. torch.compile failing after its trial: one line, and the run goes on uncompiled

def failing_for(batch_sizes, in_backward=False):
    """A torch.compile backend (public API: any callable) whose compiled code runs the trial's batch of 2 and
    fails on the training batch: at once, like a kernel file cut short, or like a lazily compiled backward, in
    backward(). It decides when the code runs: torch may compile one graph for every batch size."""

    class BackwardFails(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("compiled backward: truncated kernel file")

    def backend(graph_module, example_inputs):
        def compiled(*args):
            batch = next(int(a.shape[0]) for a in args if isinstance(a, torch.Tensor) and a.dim() == 2
                         and not a.is_floating_point())
            if batch in batch_sizes and not in_backward:
                raise RuntimeError("compiled kernel: file too short")
            outputs = graph_module.forward(*args)
            if batch not in batch_sizes:
                return outputs
            return [BackwardFails.apply(t) if isinstance(t, torch.Tensor) and t.requires_grad else t
                    for t in outputs]
        return compiled
    return backend


def train_steps(step_model, params_model, steps=3):
    optimizer = torch.optim.SGD(params_model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for _ in range(2):  # two micro-steps: the trial must not touch the gradients of the first
            x = torch.randint(0, 11, (8, 16), generator=generator)
            step_model(x, x)[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            step_model.eval()
            step_model(x, x)
            step_model.train()


@pytest.mark.parametrize("in_backward", [False, True])
def test_a_compile_failure_after_the_trial_goes_on_uncompiled_with_one_line(in_backward, capsys):
    config = GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.0)
    torch.manual_seed(0)
    model, reference = GPT(config), GPT(config)
    reference.load_state_dict(model.state_dict())
    x = torch.randint(0, 11, (2, 16))
    compiled = compiling.compile_or_fallback(model, x, x, device.autocast_context("cpu", "float32"),
                                           backend=failing_for({8}, in_backward))
    assert compiled is not model  # the trial on a batch of 2 went through
    guarded = compiling.CompileGuard(model, compiled)
    train_steps(guarded, model)
    train_steps(reference, reference)
    err = capsys.readouterr().err
    assert err.count("warning: torch.compile failed") == 1 and "going on without it" in err, err
    assert guarded.failed
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        assert torch.equal(mine, theirs)  # the failed tries changed nothing: the eager run, exactly


@pytest.mark.slow
def test_a_half_written_compile_cache_costs_one_line(slice_dir, tmp_path):
    """The compile cache of a killed run: the training batch's compiled kernels cut short (the trial's batch
    of 2 left whole, so the trial passes and the failure comes mid-run, as it did in loss.backward())."""
    cache = tmp_path / "inductor-cache"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    common = ["--data_dir", slice_dir, *TINY, "--max_iters", 6, "--eval_interval", 5, "--sample_chars", 0,
              "--compile", "on"]

    def train(out, *extra):
        return subprocess.run([sys.executable, str(ROOT / "train.py"), "--out_dir", tmp_path / out,
                               *map(str, common + list(extra))], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)

    assert train("a", "--batch_size", 2).returncode == 0
    trial_kernels = set(cache.rglob("*.so"))
    assert train("b").returncode == 0
    for kernel in set(cache.rglob("*.so")) - trial_kernels:
        os.truncate(kernel, 100)
    result = train("c")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("warning: torch.compile failed") <= 1
    assert checkpoint.load(tmp_path / "c" / "last.pt")["iter_num"] == 6


# -- 14. smaller promises

@pytest.mark.slow
def test_sighup_saves_and_stops_like_sigterm(slice_dir, tmp_path):
    """A closed terminal (or a dropped ssh connection) sends SIGHUP: it used to kill the run unsaved."""
    out_dir = tmp_path / "o"
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--data_dir", str(slice_dir), "--out_dir",
                                str(out_dir), *map(str, TINY), "--max_iters", "100000", "--eval_interval", "5",
                                "--save_interval", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out_dir / "metrics.jsonl").exists() or '"ms_per_iter"' not in (out_dir / "metrics.jsonl").read_text():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 129, err  # 128 + SIGHUP: a stopped run is not a finished one
    assert "stopped by SIGHUP at iteration" in out and "--resume" in out
    assert checkpoint.load(out_dir / "last.pt")["iter_num"] >= 5  # past the step line waited for


def test_an_empty_out_dir_or_data_dir_or_preset_is_a_mistake(slice_dir, tmp_path, capsys, monkeypatch):
    """`--out_dir ''` trained into the working folder and said "checkpoints in /"; `--preset ''` ran the
    default preset."""
    monkeypatch.chdir(tmp_path)
    err = train_error(capsys, "--data_dir", slice_dir, "--out_dir", "", *TINY)
    assert err == "error: invalid setting: out_dir is empty; name a folder\n"
    err = train_error(capsys, "--data_dir", "", *TINY)
    assert err == "error: invalid setting: data_dir is empty; name a folder\n"
    err = train_error(capsys, "--data_dir", slice_dir, "--out_dir", tmp_path / "o", "--preset", "")
    assert err.startswith("error: unknown preset ''; known presets: ")
    assert sorted(os.listdir(tmp_path)) == []


def test_an_earlier_runs_metrics_alone_are_not_wiped_without_overwrite(slice_dir, tmp_path, capsys):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    earlier = '{"iter": 10, "tokens": 80, "train_loss": 3.0, "lr": 0.001}\n'
    (out_dir / "metrics.jsonl").write_text(earlier)
    err = train_error(capsys, "--data_dir", slice_dir, "--out_dir", out_dir, *TINY, "--max_iters", 2)
    assert err == (f"error: {out_dir} already holds metrics.jsonl of an earlier run; use --overwrite to start over "
                   f"(it is emptied), or another --out_dir\n")
    assert (out_dir / "metrics.jsonl").read_text() == earlier
    (out_dir / "metrics.jsonl").write_text("")  # an empty one holds nothing: a new run goes ahead
    train_main("--data_dir", slice_dir, "--out_dir", out_dir, *TINY, "--max_iters", 2, "--eval_interval", 2)
    assert (out_dir / "last.pt").exists()


def test_the_default_prompt_needs_no_newline_in_the_vocabulary(shakespeare_text, tmp_path, capsys):
    """The user typed no prompt: a vocabulary without a newline starts from token 0, not an error."""
    import prepare
    data_dir, out_dir = tmp_path / "d", tmp_path / "o"
    prepare.prepare(shakespeare_text[:5000].replace("\n", " "), data_dir)
    train_main("--data_dir", data_dir, "--out_dir", out_dir, *TINY, "--max_iters", 1, "--eval_interval", 1,
               "--sample_chars", 0)
    capsys.readouterr()
    code, out, err = sample_main(capsys, "--out_dir", out_dir, "--max_new_tokens", 5)
    assert code == 0 and len(out) == 1 + 5 + 1, err  # token 0 (a space), five tokens, a newline
    code, _, err = sample_main(capsys, "--out_dir", out_dir, "--start", "a\nb")  # typed: still checked
    assert code == 2 and "the prompt has" in err


def test_a_gpu_index_this_machine_does_not_have_is_one_line():
    missing = f"cuda:{torch.cuda.device_count()}"  # cuda:1 on a one-GPU machine, cuda:0 on one without
    with pytest.raises(UserError) as error:
        device.pick_device(missing)
    if torch.cuda.is_available():
        assert f"this machine has {torch.cuda.device_count()} CUDA GPU" in str(error.value)
    else:
        assert "sees no CUDA GPU" in str(error.value)
