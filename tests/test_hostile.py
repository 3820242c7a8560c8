"""What a hostile world does to a run (issue 16): a moved out_dir, a real full disk, a kill -9 during prepare.py,
two processes at once, absurd sizes, special files, tampered files. One test (or a few) per kind, with real faults
wherever this machine can make them: a file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets) or a read-only mount
for a full or failing disk, a second real process for the locks, a real SIGKILL, an address-space limit
(RLIMIT_AS, `ulimit -v`) for memory. Every failure must be one line and exit status 2, and nothing good is lost.
"""

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter

import pytest
import regex
import torch
from conftest import ROOT, TINY, train_main
from test_errors import fails

import plot
import prepare
import sample
import train
from babygpt import checkpoint, stopping
from babygpt.runner import run


def run_limited(script, *args, file_size=None, address_space=None, cwd=ROOT):
    """One of the scripts in a fresh process under real resource limits: `ulimit -f` (a write past it fails with
    EFBIG, as on a full disk; SIGXFSZ, which would kill the process, is ignored like a shell with `trap '' XFSZ`)
    and `ulimit -v`."""
    def limit():
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=180, preexec_fn=limit)


@contextlib.contextmanager
def file_size_limit(n_bytes):
    """`ulimit -f` for this process, for a moment: a write past n_bytes fails with EFBIG, as on a full disk (and
    SIGXFSZ, which would kill the process, is ignored meanwhile). Only the soft limit moves: it can go back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def one_line_error(result):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def start(script, *args):
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, timeout=90):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended early: {process.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)


@pytest.fixture
def run_copy(trained_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained_run, target, ignore=shutil.ignore_patterns(".babygpt.lock"))
    return target


# -- 1. the folder a run reads is the folder it writes


def test_resume_writes_into_the_folder_it_read_never_the_out_dir_stored_in_the_checkpoint(trained_run, tmp_path,
                                                                                          monkeypatch, capsys):
    """A run trained in out-a, moved to out; then a new run trained in out-a. `train.py --resume` (out_dir: the
    default, ./out) reads out/last.pt: it must write there, and leave the other run in out-a untouched."""
    other, moved = tmp_path / "out-a", tmp_path / "out"
    shutil.copytree(trained_run, other)
    shutil.copytree(trained_run, moved)
    state = checkpoint.load(moved / "last.pt")
    state["train_config"]["out_dir"] = str(other)  # where the moved run was first trained
    checkpoint.save(state, moved / "last.pt")
    before = {name: (other / name).read_bytes() for name in ("last.pt", "ckpt.pt", "metrics.jsonl")}
    monkeypatch.chdir(tmp_path)
    train_main("--resume", "--max_iters", 45)
    assert "resuming out/last.pt at iteration 40" in capsys.readouterr().out
    assert {name: (other / name).read_bytes() for name in before} == before
    assert checkpoint.load(moved / "last.pt")["iter_num"] == 45
    assert max(json.loads(line)["iter"] for line in (moved / "metrics.jsonl").read_text().splitlines()) == 45


# -- 2. a real full disk, a disk that turns read-only


def test_a_real_full_disk_at_save_time_is_one_line_and_keeps_the_previous_checkpoint(run_copy, capsys):
    """`ulimit -f` below a checkpoint's size: torch.save itself fails (RuntimeError: unexpected pos ...), not an
    fsync. The evaluation at 60 improves the val loss, but "(best, saved)" must not be printed for a save that failed."""
    before = {name: (run_copy / name).read_bytes() for name in ("last.pt", "ckpt.pt")}
    with file_size_limit(len(before["last.pt"]) // 2), pytest.raises(SystemExit) as exit_info:
        run(train.main,
            ["--out_dir", str(run_copy), "--resume", "--max_iters", "60", "--save_interval", "0"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"could not write {run_copy / 'last.pt'}: the write failed (RuntimeError)" in err
    assert "the previous checkpoint is kept" in err
    assert "iter 60: loss" in out and "saved" not in out  # it got there, and claimed no save that failed
    assert {name: (run_copy / name).read_bytes() for name in before} == before
    assert not list(run_copy.glob("*.tmp"))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a read-only tmpfs needs root")
def test_a_read_only_disk_is_one_line_even_when_cleaning_up_fails(trained_run, tmp_path, capsys):
    """On a read-only filesystem even removing the temporary file fails (EROFS): that must not replace the message."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        err = fails(plot.main, ["loss", trained_run, "--out", read_only / "x.png"], capsys)
        assert f"could not write {read_only / 'x.png'}: Read-only file system" in err
        with pytest.raises(checkpoint.CheckpointError, match="Read-only file system; the previous checkpoint is kept"):
            checkpoint.save({"format": "x"}, read_only / "last.pt")
    finally:
        subprocess.run(["umount", str(read_only)])


# -- 3. prepare.py is atomic, and train.py checks what it reads


@pytest.fixture
def old_data(shakespeare_text, tmp_path):
    """A data folder prepared from the first 20 KB, and what it holds."""
    data_dir = tmp_path / "data"
    prepare.prepare(shakespeare_text[:20_000], data_dir)
    return data_dir, {p.name: p.read_bytes() for p in data_dir.iterdir() if p.name != ".babygpt.lock"}


def data_files(data_dir):
    return {p.name: p.read_bytes() if p.is_file() else "folder" for p in data_dir.iterdir() if p.name != ".babygpt.lock"}


def test_prepare_on_a_full_disk_leaves_the_old_data_set_whole(old_data, shakespeare_text, tmp_path):
    data_dir, before = old_data
    (tmp_path / "more.txt").write_text(shakespeare_text[:300_000], encoding="utf-8")
    result = run_limited("prepare.py", "--input", tmp_path / "more.txt", "--out_dir", data_dir, file_size=100_000)
    assert f"cannot write to {data_dir}" in one_line_error(result)
    assert data_files(data_dir) == before  # not a new partial train.bin beside the old meta.json


def test_kill_9_during_prepare_never_leaves_a_mix_that_trains(old_data, shakespeare_text, tmp_path, capsys):
    """SIGKILL at the first change prepare.py makes in the folder (the process is frozen by SIGSTOP the moment the
    change is seen, so the kill lands inside the writing): the folder holds the old data set, the new one, or no
    meta.json -- never new tokens described by the old meta.json."""
    data_dir, before = old_data
    (tmp_path / "more.txt").write_text(shakespeare_text[:600_000], encoding="utf-8")
    new_dir = tmp_path / "new"
    prepare.prepare(shakespeare_text[:600_000], new_dir, source_name="more.txt")
    after = data_files(new_dir)

    train_bin = data_dir / "train.bin"

    def signature():  # cheap enough to look every few microseconds: prepare.py's first write shows up here
        stat = train_bin.stat()
        return stat.st_size, stat.st_mtime_ns, os.path.exists(data_dir / prepare.STAGING)
    unchanged = signature()
    process = start("prepare.py", "--input", tmp_path / "more.txt", "--out_dir", data_dir)
    while signature() == unchanged and process.poll() is None:
        pass  # look as often as possible: a write takes milliseconds
    process.send_signal(signal.SIGSTOP)
    process.kill()
    process.communicate()
    files = data_files(data_dir)
    consistent = {k: v for k, v in files.items() if v != "folder"}  # the staging folder, the old set aside
    if "meta.json" not in consistent:
        assert "run `python prepare.py" in fails(train.main, ["--data_dir", data_dir, "--out_dir", tmp_path / "o",
                                                              "--max_iters", 1, *TINY], capsys)
    else:
        assert consistent in (before, after)


def test_train_checks_the_sizes_and_checksums_prepare_recorded(old_data, tmp_path, capsys):
    data_dir, _ = old_data
    args = ["--data_dir", data_dir, "--out_dir", tmp_path / "out", "--max_iters", 1, *TINY]
    train_bin = data_dir / "train.bin"
    good = train_bin.read_bytes()
    train_bin.write_bytes(good[:-1])  # an odd size: half a token
    assert "odd size" in fails(train.main, args, capsys)
    train_bin.write_bytes(good[:-200])  # cut short
    assert "holds 17,900 tokens but meta.json says 18,000" in fails(train.main, args, capsys)
    train_bin.write_bytes(good[2:] + good[:2])  # the right size, other bytes
    assert "does not match the checksum in meta.json" in fails(train.main, args, capsys)


# -- 4. one process per out_dir; no prepare into a data folder in use


@pytest.mark.slow
def test_a_second_run_into_a_busy_out_dir_or_a_prepare_into_its_data_is_refused_naming_the_other(
        old_data, shakespeare_text, tmp_path, capsys):
    data_dir, before = old_data
    out_dir = tmp_path / "out"
    first = start("train.py", "--data_dir", data_dir, "--out_dir", out_dir, "--max_iters", 100_000,
                  "--eval_interval", 100_000, *TINY)
    try:
        wait_for(lambda: (out_dir / "metrics.jsonl").exists() and (out_dir / "metrics.jsonl").stat().st_size, first)
        err = fails(train.main, ["--data_dir", data_dir, "--out_dir", out_dir, "--overwrite", "--max_iters", 5,
                                 *TINY], capsys)
        assert f"{out_dir} is in use by pid {first.pid}" in err and "another --out_dir" in err
        (data_dir / "in.txt").write_text(shakespeare_text[:5000])
        err = fails(prepare.main, ["--input", data_dir / "in.txt", "--out_dir", data_dir], capsys)
        assert f"{data_dir} is in use by pid {first.pid}" in err
        assert data_files(data_dir) == {**before, "in.txt": (data_dir / "in.txt").read_bytes()}
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143  # the first run was never disturbed: it saved and stopped (128 + SIGTERM)


@pytest.mark.slow
def test_a_lock_left_by_a_dead_process_is_stale_and_taken_over(old_data, tmp_path):
    data_dir, _ = old_data
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / ".babygpt.lock").write_text(f"pid {dead.pid} (python train.py)\n")
    train_main("--data_dir", data_dir, "--out_dir", out_dir, "--max_iters", 2, *TINY)
    assert checkpoint.load(out_dir / "last.pt")["iter_num"] == 2


# -- 5. metrics.jsonl is never rewritten in place


def test_resume_drops_the_metrics_tail_by_rename_so_a_full_disk_cuts_nothing(run_copy, capsys):
    metrics = run_copy / "metrics.jsonl"
    history = [json.dumps({"iter": i % 40, "tokens": 0, "train_loss": 1.0, "lr": 1e-3, "pad": "x" * 200})
               for i in range(4000)]  # ~1 MB of records the resume keeps
    metrics.write_text("\n".join(history + [json.dumps({"iter": 45, "train_loss": 1.0})]) + "\n")  # and a lost tail
    before = metrics.read_bytes()
    with file_size_limit(500_000):
        err = fails(train.main, ["--out_dir", run_copy, "--resume", "--max_iters", 50], capsys)
    assert "metrics.jsonl" in err and "kept as it was" in err
    assert metrics.read_bytes() == before


# -- 6. plot.py works for every tokenizer, and stays fast for large vocabularies


@pytest.fixture(scope="module")
def bpe_run(shakespeare_text, tmp_path_factory):
    data_dir, out_dir = tmp_path_factory.mktemp("bpe-data"), tmp_path_factory.mktemp("bpe-run")
    prepare.prepare(shakespeare_text[:20_000], data_dir, tokenizer="bpe", vocab_size=300)
    train_main("--data_dir", data_dir, "--out_dir", out_dir, "--max_iters", 3, "--eval_interval", 3, "--overwrite",
               *TINY)
    return out_dir


@pytest.mark.slow
def test_plot_embeddings_and_attention_of_a_bpe_model_label_tokens(bpe_run, tmp_path, capsys):
    run(plot.main, ["embeddings", "--ckpt", str(bpe_run), "--out", str(tmp_path / "e.png")])
    run(plot.main, ["attention", "--ckpt", str(bpe_run), "--text", "ROMEO: But soft, what light",
                    "--out", str(tmp_path / "a.png")])
    assert (tmp_path / "e.png").stat().st_size and (tmp_path / "a.png").stat().st_size
    state = checkpoint.load(bpe_run / "ckpt.pt")
    tokenizer = plot.tokenizer_from_meta(state["meta"])
    ids = tokenizer.encode("ROMEO: But soft")
    assert len(ids) < len("ROMEO: But soft")  # some tokens are several characters ...
    assert "".join(plot.token_labels(tokenizer, ids)) == "ROMEO:␣But␣soft"  # ... and each is labelled by its text


@pytest.mark.slow
def test_plot_embeddings_of_a_65536_token_vocabulary_labels_a_sample(tmp_path):
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=65536, n_layer=1, n_head=1, n_embd=8, block_size=8))
    labels = [f"t{i}" for i in range(65536)]
    plot.draw_embeddings(model, labels, tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size
    assert len(plot.labelled_tokens(65536)) <= plot.MAX_LABELS and plot.labelled_tokens(58) == list(range(58))


# -- 7. mistakes and limits: one line, never a traceback


def test_special_paths_are_one_line(trained_run, slice_dir, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file, not a folder" in fails(train.main, ["--data_dir", a_file, "--out_dir", tmp_path / "o", *TINY], capsys)
    data = tmp_path / "data"
    shutil.copytree(slice_dir, data, ignore=shutil.ignore_patterns(".babygpt.lock"))
    (data / "meta.json").unlink()
    (data / "meta.json").mkdir()
    assert "is a folder, not a regular file" in fails(train.main, ["--data_dir", data, "--out_dir", tmp_path / "o",
                                                                   *TINY], capsys)
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").mkdir()
    assert "is a folder" in fails(train.main, ["--out_dir", run_dir, "--resume", "--max_iters", 41], capsys)


def test_a_non_utf8_byte_in_metrics_does_not_stop_resume_or_plot(run_copy, capsys):
    with open(run_copy / "metrics.jsonl", "ab") as f:
        f.write(b'{"iter": 3, "note": "\xff"}\n')
    run(plot.main, ["loss", str(run_copy), "--out", str(run_copy / "l.png")])
    assert "skipped 1 line(s)" in capsys.readouterr().err
    train_main("--out_dir", run_copy, "--resume", "--max_iters", 42)
    assert checkpoint.load(run_copy / "last.pt")["iter_num"] == 42


def test_sizes_that_cannot_fit_are_refused_before_allocating(run_copy, slice_dir, tmp_path, capsys):
    err = fails(train.main, ["--data_dir", slice_dir, "--out_dir", tmp_path / "o", *TINY, "--n_embd", 131072,
                             "--n_head", 1], capsys)
    assert "parameters with batch_size 8 needs about" in err and "--n_embd" in err
    state = checkpoint.load(run_copy / "ckpt.pt")
    state["model_config"]["n_embd"] = 2**20  # hand-edited
    torch.save(state, run_copy / "ckpt.pt")
    assert "needs about" in fails(sample.main, ["--out_dir", run_copy], capsys)


def test_a_40_gb_input_is_refused_with_the_memory_it_would_need(tmp_path):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(40 * 2**30)  # sparse: no disk used
    result = run_limited("prepare.py", "--input", huge, "--out_dir", tmp_path / "d", address_space=4 * 2**30)
    assert "needs about 640.0 GB of memory" in one_line_error(result)


def test_ctrl_c_during_the_torch_import_exits_130_quietly(tmp_path):
    process = start("train.py", "--out_dir", tmp_path / "o")

    def torch_is_loading():
        try:
            return "libtorch" in (open(f"/proc/{process.pid}/maps").read())
        except OSError:
            return False
    if not os.path.exists(f"/proc/{process.pid}/maps"):
        pytest.skip("needs /proc to see when torch is being imported")
    wait_for(torch_is_loading, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr and stderr.strip() == "interrupted", stderr


# -- 8. nothing misleading, nothing silent


def test_resume_past_max_iters_says_so(trained_run, capsys):
    err = fails(train.main, ["--out_dir", trained_run, "--resume", "--max_iters", 20], capsys)
    assert "already at iteration 40, past --max_iters 20" in err


def test_a_float_setting_that_float32_cannot_hold_is_named(slice_dir, tmp_path, capsys):
    err = fails(train.main, ["--data_dir", slice_dir, "--out_dir", tmp_path / "o", *TINY, "--min_lr", "1e-320"],
                capsys)
    assert "min_lr is 9.99989e-321, which float32 cannot hold" in err


def test_a_symlink_loop_is_called_a_loop(tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert "a symbolic link loop" in fails(prepare.main, ["--input", tmp_path / "loop", "--out_dir", tmp_path], capsys)


def test_the_resume_hint_is_shell_quoted():
    line = stopping.farewell(True, "SIGINT", 3, "my runs/out 1", 1.0, 2.0)
    assert line.endswith("Continue with: python train.py --out_dir 'my runs/out 1' --resume")


def test_a_tampered_tiktoken_cache_file_is_named_and_kept(tmp_path, monkeypatch):
    from babygpt.tokenizer import GPT2Tokenizer, TokenizerUnavailable
    cached = tmp_path / hashlib.sha1(GPT2Tokenizer.URL.encode()).hexdigest()
    cached.write_bytes(b"IQ== 0\n")  # a rank file, but not the published one
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(TokenizerUnavailable, match="is damaged or altered"):
        GPT2Tokenizer()
    assert cached.exists()


def test_a_zip_bomb_checkpoint_is_refused_from_its_table_of_contents(tmp_path, capsys):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("archive/data/0", "w") as f:
        zeros = bytes(2**20)
        for _ in range(100):
            f.write(zeros)
    assert bomb.stat().st_size < 2**20
    assert "unpacks to 0.1 GB" in fails(sample.main, ["--ckpt", bomb], capsys)


def test_integer_weights_are_refused(run_copy, capsys):
    state = checkpoint.load(run_copy / "ckpt.pt")
    state["model"]["lm_head.weight"] = state["model"]["lm_head.weight"].round().long()
    torch.save(state, run_copy / "ckpt.pt")
    assert "holds torch.int64 numbers, not floating point" in fails(sample.main, ["--out_dir", run_copy], capsys)



def test_bpe_on_text_without_spaces_learns_from_a_bounded_amount_of_text(shakespeare_text):
    """The split pattern cuts text at spaces; without spaces 1 MB is one chunk, and every merge rescanned all of it
    (115 s). The merges are now learned from at most 256 KB of distinct pieces of at most 256 characters, while a
    normal text (Tiny Shakespeare: 100 KB of distinct words) is learned from in full, as before."""
    from babygpt.bpe import GPT2_SPLIT_PATTERN, MAX_DISTINCT_BYTES, learning_pieces
    no_spaces = "".join(shakespeare_text.split())
    pieces = learning_pieces(regex.findall(GPT2_SPLIT_PATTERN, no_spaces))
    assert sum(len(p.encode()) for p in pieces) <= MAX_DISTINCT_BYTES and max(map(len, pieces)) <= 256
    words = regex.findall(GPT2_SPLIT_PATTERN, shakespeare_text)
    assert learning_pieces(words) == Counter(words)
