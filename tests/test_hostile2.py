"""What a hostile world does, second round (issue 29): a prepare.py that fails or is killed at any of its
writes, crafted BPE vocabularies, command lines that are not UTF-8, a standard output that is full or
closed, degenerate models in plot.py, values that would train backwards. Real faults where this machine
can make them (/dev/full, closed descriptors, SIGKILL, a folder in the way); every failure is one line."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

import prepare
from babygpt import locks
from babygpt.bpe import ranks_to_base64
from babygpt.files import WriteError, remove_folder, verify_split
from babygpt.tokenizer import MAX_TOKEN_BYTES, read_meta


def data_files(data_dir):
    """Every file of a data folder (leftover folders included, by name), but the lock."""
    return {p.name: (p.read_bytes() if p.is_file() else "folder") for p in data_dir.iterdir()
            if p.name != locks.LOCK_NAME}


def readable_by_train(data_dir):
    """train.py's checks: meta.json valid, each split of the size and checksum it records."""
    read_meta(data_dir)
    for split in ("train", "val"):
        verify_split(data_dir, split)


def prepare_new(text, data_dir):
    return prepare.prepare(text, data_dir, source_name="new.txt", tokenizer="bpe", vocab_size=260)


@pytest.fixture
def old_and_new(shakespeare_text, tmp_path):
    """A data folder holding an old data set (char), and what a new one (bpe, with bpe.tiktoken) would be."""
    data_dir, reference = tmp_path / "data", tmp_path / "reference"
    prepare.prepare(shakespeare_text[:20_000], data_dir)
    new_text = shakespeare_text[20_000:30_000]
    prepare_new(new_text, reference)
    return data_dir, data_files(data_dir), new_text, data_files(reference)


# -- 1. a failed prepare.py leaves the old data set or the new one, never a mixture

def test_prepare_failing_at_each_rename_in_turn_leaves_the_old_data_set_whole(old_and_new, monkeypatch):
    """os.replace fails (as on a disk gone read-only) at its 1st, 2nd, ... call: each time the folder
    holds exactly the old data set, which train.py reads; once no call fails, the new one."""
    data_dir, before, new_text, after = old_and_new
    real_replace = os.replace
    for k in range(1, 50):
        calls = []

        def replace(src, dst, k=k, calls=calls):
            calls.append(dst)
            if len(calls) == k:
                raise OSError(30, "Read-only file system")
            return real_replace(src, dst)
        monkeypatch.setattr(os, "replace", replace)
        try:
            prepare_new(new_text, data_dir)
        except prepare.UserError as e:
            assert "Read-only file system" in str(e)
            assert data_files(data_dir) == before, f"rename {k} ({calls[-1]}) left a mixture"
            readable_by_train(data_dir)
            continue
        finally:
            monkeypatch.undo()
        break
    assert k > 6, "the test no longer reaches every rename"
    assert data_files(data_dir) == after
    readable_by_train(data_dir)


def test_prepare_failing_at_each_write_in_turn_leaves_the_old_data_set_whole(old_and_new, monkeypatch):
    data_dir, before, new_text, after = old_and_new
    real_write = prepare.files.write_atomically
    for k in range(1, 10):
        calls = []

        def write_atomically(path, write, k=k, calls=calls):
            calls.append(path)
            if len(calls) == k:
                raise WriteError(f"could not write {path}: No space left on device")
            return real_write(path, write)
        monkeypatch.setattr(prepare.files, "write_atomically", write_atomically)
        try:
            prepare_new(new_text, data_dir)
        except prepare.UserError as e:
            assert "No space left on device" in str(e)
            assert data_files(data_dir) == before, f"write {k} ({calls[-1]}) left a mixture"
            continue
        finally:
            monkeypatch.undo()
        break
    assert k == 5  # train.bin, val.bin, bpe.tiktoken, meta.json failed in turn; the 5th run went through
    assert data_files(data_dir) == after


@pytest.mark.parametrize("name", ["meta.json.tmp", "train.bin.new", "val.bin.new.tmp", ".prepare-new",
                                  ".prepare-old"])
def test_a_folder_in_the_way_of_prepares_temporary_names_costs_nothing(name, old_and_new):
    """The case of issue 29: `mkdir meta.json.tmp` in the data folder, and the like. The old data set
    must stay whole, or the new one be written whole."""
    data_dir, before, new_text, after = old_and_new
    (data_dir / name).mkdir()
    try:
        prepare_new(new_text, data_dir)
    except prepare.UserError:
        files = {k: v for k, v in data_files(data_dir).items() if v != "folder"}
        assert files == before
    else:
        readable_by_train(data_dir)
        files = {k: v for k, v in data_files(data_dir).items() if v != "folder"}
        assert files == after


def test_a_folder_in_the_way_of_a_target_name_puts_the_old_data_set_back(old_and_new):
    """bpe.tiktoken is a folder (the old set is char, so it has no such file): the swap fails at its last
    rename but one, after the old train.bin, val.bin and meta.json moved aside; all of them come back."""
    data_dir, before, new_text, _ = old_and_new
    (data_dir / "bpe.tiktoken").mkdir()
    (data_dir / "bpe.tiktoken" / "keep").write_text("x")
    with pytest.raises(prepare.UserError, match="cannot write to"):
        prepare_new(new_text, data_dir)
    assert data_files(data_dir) == {**before, "bpe.tiktoken": "folder"}
    readable_by_train(data_dir)


KILL_AT_RENAME = textwrap.dedent("""
    import os, runpy, signal, sys
    k, calls, real = int(sys.argv.pop(1)), [], os.replace
    def replace(src, dst):
        calls.append(dst)
        if len(calls) == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    os.replace = replace
    sys.argv[0] = "prepare.py"
    runpy.run_path("prepare.py", run_name="__main__")
""")


@pytest.mark.slow
def test_prepare_killed_at_each_rename_in_turn_loses_nothing(old_and_new, tmp_path):
    """SIGKILL at each rename in turn: the folder holds the old data set or the new one, or (killed in
    the swap) no meta.json -- train.py says to run prepare.py and names .prepare-old -- and the next
    prepare.py puts the old set back whole before anything else."""
    data_dir, before, new_text, after = old_and_new
    source = tmp_path / "new.txt"
    source.write_text(new_text, encoding="utf-8")
    for k in range(1, 50):
        result = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(k), "--input", source, "--out_dir",
                                 data_dir, "--tokenizer", "bpe", "--vocab_size", "260"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        files = data_files(data_dir)
        if result.returncode == 0:
            assert {n: v for n, v in files.items()} == after
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        in_place = {n: v for n, v in files.items() if n not in (prepare.STAGING, prepare.BACKUP)}
        if in_place == before or in_place == after:
            remove_folder(data_dir / prepare.STAGING)
            remove_folder(data_dir / prepare.BACKUP)
        else:
            assert "meta.json" not in files, f"killed at rename {k}: a mixture {sorted(files)}"
            with pytest.raises(FileNotFoundError, match=r"\.prepare-old"):
                read_meta(data_dir)
            prepare.restore_interrupted(data_dir)
            assert data_files(data_dir) == {**before, **({prepare.STAGING: "folder"}
                                                         if prepare.STAGING in files else {})}
            remove_folder(data_dir / prepare.STAGING)
        readable_by_train(data_dir)
    assert k > 6


# -- 6. a command line that is not UTF-8 (a file name in Latin-1, say)

def test_a_command_line_that_is_not_utf8_or_is_huge_still_takes_the_lock(tmp_path, monkeypatch):
    """The lock file names its holder's command line; Python hands bytes that are not UTF-8 over as
    lone surrogates, which a plain .encode() refuses."""
    for argv in (["prepare.py", "--input", "bad\udcff.txt"], ["train.py", "--out_dir", "x" * 1_000_000]):
        monkeypatch.setattr(sys, "argv", argv)
        locks.lock_folder(tmp_path, True, "")
        note = (tmp_path / locks.LOCK_NAME).read_bytes()
        locks.unlock_folder(tmp_path)
        assert note.startswith(f"pid {os.getpid()} (python {argv[0]}".encode()) and len(note) < 300, note


def test_prepare_with_a_file_name_that_is_not_utf8(shakespeare_text, tmp_path):
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(folder)
    with open(folder + b"/input.txt", "w", encoding="utf-8") as f:
        f.write(shakespeare_text[:2000])
    result = subprocess.run([sys.executable, "prepare.py", "--input", folder + b"/input.txt"], cwd=ROOT,
                            capture_output=True, timeout=120)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    assert os.path.exists(folder + b"/meta.json")


# -- 14. smaller promises of prepare.py

def run_prepare(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.run(prepare.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_an_empty_input_or_out_dir_is_a_mistake_not_the_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were it taken for the default, it would download Tiny Shakespeare here
    for flag in ("--input", "--out_dir"):
        code, _, err = run_prepare([flag, ""], capsys)
        assert code == 2 and f"{flag} is empty" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "data").exists()


def test_a_byte_order_mark_is_no_character_and_control_characters_print_escaped(tmp_path, capsys):
    source = tmp_path / "input.txt"
    source.write_bytes("\ufeffab\r\n\x00c\n".encode("utf-8"))
    prepare.main(["--input", str(source)])
    out = capsys.readouterr().out
    meta = read_meta(tmp_path)
    assert "\ufeff" not in meta["vocab"] and meta["vocab"] == sorted(set("ab\r\n\x00c\n"))
    vocabulary = next(line for line in out.splitlines() if line.startswith("vocabulary: "))
    assert vocabulary == r"vocabulary: \x00\n\rabc"
    assert meta["input_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_missing_data_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data folder .* not found: run `python prepare.py --out_dir"):
        read_meta(tmp_path / "nowhere")


# -- 2. crafted BPE vocabularies: bounded, and checked in linear time

def write_bpe_meta(data_dir, ranks):
    data_dir.mkdir()
    meta = {"format": "babygpt-meta", "version": 1, "tokenizer": "bpe", "pattern": "gpt2",
            "vocab_size": len(ranks), "ranks": ranks_to_base64(ranks), "train_chars": 1, "val_chars": 1,
            "train_tokens": 1, "val_tokens": 1}
    (data_dir / "meta.json").write_text(json.dumps(meta))


def test_a_megabyte_token_in_meta_json_is_refused_in_one_line(tmp_path):
    """One 1 MB token took the cut-by-cut check minutes (quadratic in its length)."""
    write_bpe_meta(tmp_path / "data", [bytes([b]) for b in range(256)] + [b"ab" * 500_000])
    with pytest.raises(ValueError, match=f"at most {MAX_TOKEN_BYTES} bytes, but token 256 has 1,000,000"):
        read_meta(tmp_path / "data")


def test_a_long_chain_of_valid_merges_up_to_the_bound_is_accepted_and_one_past_it_refused(tmp_path):
    chain = [bytes([b]) for b in range(256)] + [b"a" * n for n in range(2, MAX_TOKEN_BYTES + 1)]
    write_bpe_meta(tmp_path / "ok", chain)
    assert read_meta(tmp_path / "ok")["vocab_size"] == 256 + MAX_TOKEN_BYTES - 1
    write_bpe_meta(tmp_path / "long", chain + [b"a" * (MAX_TOKEN_BYTES + 1)])
    with pytest.raises(ValueError, match="at most"):
        read_meta(tmp_path / "long")


# -- 10. plot.py embeddings of degenerate models

@pytest.mark.parametrize("vocab_size, n_embd", [(1, 8), (5, 1), (1, 1)])
def test_plot_embeddings_of_one_token_or_one_dimension(vocab_size, n_embd, tmp_path):
    import plot
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=vocab_size, n_layer=1, n_head=1, n_embd=n_embd, block_size=4))
    path = plot.draw_embeddings(model, [chr(97 + i) for i in range(vocab_size)], tmp_path / "e.png")
    assert path.stat().st_size > 1000


# -- 13. values that would train backwards

@pytest.mark.parametrize("flag, value, message", [
    ("muon_lr", "-1", "muon_lr must be positive, got -1.0"),
    ("muon_lr", "0", "muon_lr must be positive, got 0.0"),
    ("muon_momentum", "-5", "muon_momentum must be in [0, 1), got -5.0"),
    ("muon_momentum", "1", "muon_momentum must be in [0, 1), got 1.0"),
    ("learning_rate", "-0.001", "learning_rate must be positive"),
    ("beta2", "1.5", "beta2 must be in [0, 1)"),
])
def test_every_learning_rate_momentum_and_beta_is_range_checked(flag, value, message, slice_dir, tmp_path,
                                                                capsys):
    from conftest import TINY, train_main
    with pytest.raises(SystemExit) as exit_info:
        train_main("--data_dir", slice_dir, "--out_dir", tmp_path / "out", *TINY, "--optimizer", "muon",
                   f"--{flag}", value)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "last.pt").exists()


# -- 7. a standard output that is full (/dev/full) or closed (>&-), a closed stderr

def run_with(script, *args, stdout=subprocess.PIPE, close=()):
    """One of the scripts in a fresh process, with real descriptors: stdout to /dev/full, or fds closed."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, stdout=stdout,
                          stderr=subprocess.PIPE if 2 not in close else None, text=True, timeout=180,
                          preexec_fn=lambda: [os.close(fd) for fd in close])


def one_line(result, message):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}", result.stderr  # after status lines


@pytest.fixture
def small_input(shakespeare_text, tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(shakespeare_text[:3000], encoding="utf-8")
    return path


def test_prepare_into_a_full_standard_output_says_so_and_keeps_the_data_set(small_input, tmp_path):
    with open("/dev/full", "w") as full:
        result = run_with("prepare.py", "--input", small_input, "--out_dir", tmp_path / "d", stdout=full)
    one_line(result, "cannot write to standard output: No space left on device")
    readable_by_train(tmp_path / "d")


def test_prepare_with_standard_output_closed_says_so(small_input, tmp_path):
    result = run_with("prepare.py", "--input", small_input, "--out_dir", tmp_path / "d", stdout=None, close=(1,))
    one_line(result, "standard output is closed (>&-); send it to a file or to /dev/null instead")


def test_a_full_standard_output_in_process(tmp_path, monkeypatch, capsys):
    """run() tells the standard output's failure from the disk's, with a real /dev/full."""
    from babygpt.runner import run
    full = open("/dev/full", "w")
    monkeypatch.setattr(sys, "stdout", full)

    def main(argv):
        print("x" * 100_000)  # past the buffer: the write itself fails
    with pytest.raises(SystemExit) as exit_info:
        run(main, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: cannot write to standard output: No space left on device\n"
    full.close()  # the descriptor now points at /dev/null: closing flushes without a second error


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "sample.py"])
def test_train_and_sample_with_a_full_or_closed_standard_output(script, trained_run, slice_dir, tmp_path):
    from conftest import TINY
    args = (["--data_dir", slice_dir, "--out_dir", tmp_path / "o", "--max_iters", 2, *TINY] if script == "train.py"
            else ["--out_dir", trained_run, "--max_new_tokens", 20])
    with open("/dev/full", "w") as full:
        result = run_with(script, *args, stdout=full)
    one_line(result, "cannot write to standard output: No space left on device")
    result = run_with(script, *args, stdout=None, close=(1,))
    one_line(result, "standard output is closed (>&-); send it to a file or to /dev/null instead")


@pytest.mark.slow
def test_with_stderr_closed_samples_alone_reach_stdout(trained_run):
    result = run_with("sample.py", "--out_dir", trained_run, "--max_new_tokens", 20, "--seed", 1, close=(2,))
    assert result.returncode == 0
    assert "ckpt.pt" not in result.stdout and "parameters" not in result.stdout, result.stdout
