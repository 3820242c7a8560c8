"""The third hostile round: flags that never guess, text that can always be printed, interrupted runs that say
so in their exit status. Each test plants the fault for real (a real taskset, a real FIFO, a real encoding)."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TINY, run_script
from test_errors import fails

import plot
import prepare
import sample
import train
from babygpt import cli
from tools import whole_val


# -- flags that guess: argparse took any unambiguous prefix of a flag for the flag

@pytest.mark.parametrize("main, argv, typed", [
    (train.main, ["--lr", "3"], "--lr"),  # was --lr_decay_iters 3: trained at min_lr from step 3, exit 0
    (train.main, ["--lr", "3e-2"], "--lr"),  # was "argument --lr_decay_iters: invalid int value"
    (train.main, ["--max_it", "5"], "--max_it"),
    (train.main, ["--learning_rat", "1e-3"], "--learning_rat"),
    (sample.main, ["--temp", "0.5"], "--temp"),
    (sample.main, ["--num_sam", "2"], "--num_sam"),
    (prepare.main, ["--tok", "char"], "--tok"),
    (plot.main, ["attention", "--ckpt", "out", "--text", "x", "--dp", "9"], "--dp"),
    (whole_val.main, ["out", "--bat", "4"], "--bat"),
])
def test_a_prefix_of_a_flag_is_never_taken_for_the_flag(main, argv, typed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    err = fails(main, argv, capsys)
    assert f"unrecognized arguments: {typed}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("main, typo, meant", [
    (sample.main, "--temprature", "--temperature"),
    (train.main, "--learnin_rate", "--learning_rate"),
    (train.main, "--max_iter", "--max_iters"),
    (prepare.main, "--tokeniser", "--tokenizer"),
])
def test_a_misspelt_flag_gets_did_you_mean(main, typo, meant, capsys):
    err = fails(main, [typo, "1"], capsys)
    assert f"did you mean {meant}?" in err


def test_a_flag_nothing_resembles_gets_no_guess(capsys):
    err = fails(sample.main, ["--zzzzzz", "1"], capsys)
    assert "unrecognized arguments: --zzzzzz" in err and "did you mean" not in err


@pytest.mark.slow  # a fresh Python process, as a user runs it
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not shutil.which("taskset") or (os.cpu_count() or 1) < 2,
                    reason="needs taskset and two CPUs")
def test_threads_are_checked_against_the_cpus_the_process_may_use(trained_run):
    """Under `taskset -c 0` the process may use one CPU: --threads 2 was accepted (auto threads did use it)."""
    done = subprocess.run(["taskset", "-c", "0", sys.executable, str(ROOT / "sample.py"), "--out_dir",
                           str(trained_run), "--threads", "2", "--max_new_tokens", "5"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "--threads 2 is more than the 1 CPUs this process may use" in done.stderr


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    """A copy of config/ where a preset can be a folder, a FIFO or a file that is not UTF-8."""
    folder = tmp_path / "config"
    shutil.copytree(ROOT / "config", folder)
    monkeypatch.setattr(cli, "PRESET_DIR", folder)
    return folder


def test_a_preset_that_is_a_folder_or_a_fifo_is_named_not_listed(preset_dir, capsys):
    (preset_dir / "dir.toml").mkdir()
    os.mkfifo(preset_dir / "fifo.toml")
    for name in ("dir", "fifo"):
        err = fails(train.main, ["--preset", name], capsys)
        assert f"preset file {preset_dir / name}.toml is not a regular file" in err
    err = fails(train.main, ["--preset", "nope"], capsys)
    assert "known presets:" in err and "dir" not in err.split("known presets:")[1]


def test_a_preset_that_is_not_utf8_is_one_line(preset_dir, capsys):
    (preset_dir / "latin.toml").write_bytes(b"# caf\xe9\nmax_iters = 3\n")
    err = fails(train.main, ["--preset", "latin"], capsys)
    assert "latin.toml is not UTF-8 text" in err


# -- text that cannot be printed: a terminal whose encoding lacks a character

@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_prepare_prints_a_vocabulary_the_terminal_cannot_show(tmp_path):
    """PYTHONIOENCODING=ascii on a text with accents, CJK and emoji: prepare.py wrote the data set, then died
    printing the vocabulary (exit 1: the user believed it failed)."""
    (tmp_path / "in.txt").write_text("café naïve 東京 🙂 " * 200, encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--input", str(tmp_path / "in.txt"),
                           "--out_dir", str(tmp_path / "d")], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300, encoding="utf-8", errors="replace")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "\\xe9" in done.stdout + done.stderr  # é, spelled so the terminal can show it
    assert (tmp_path / "d" / "meta.json").is_file()


# -- interrupted means non-zero: the exit statuses themselves are tested with real signals in the slow tier
# (test_interrupt.py: SIGINT 130; test_hostile.py: SIGTERM 143; test_hostile3.py: SIGHUP 129)

@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_a_finished_training_exits_0(slice_dir, tmp_path):
    done = run_script("train.py", "--data_dir", slice_dir, "--out_dir", tmp_path / "o", *TINY, "--max_iters", 2,
                      "--eval_interval", 2)
    assert done.returncode == 0 and "done: 2 iterations" in done.stdout, done.stderr


# -- outputs that clobber: every --out, --json and --figure is checked before any work, by files.output_file

def special_files(tmp_path):
    """What must never be replaced by a PNG or a JSON file: a FIFO, a symbolic link, a device node (a real one,
    made with mknod, when the tests run as root)."""
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "target").write_text("keep me")
    (tmp_path / "link.png").symlink_to(tmp_path / "target")
    found = {"fifo.png": "is a FIFO (named pipe), not a regular file", "link.png": "is a symbolic link"}
    if os.geteuid() == 0:
        os.mknod(tmp_path / "null.png", 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))  # like /dev/null
        found["null.png"] = "is a device, not a regular file"
    return found


def test_plot_never_replaces_a_special_file_or_a_file_of_another_kind(trained_run, tmp_path, capsys):
    for name, says in special_files(tmp_path).items():
        err = fails(plot.main, ["embeddings", "--ckpt", trained_run, "--out", tmp_path / name], capsys)
        assert says in err, err
    assert (tmp_path / "target").read_text() == "keep me"
    if os.geteuid() == 0:
        assert __import__("stat").S_ISCHR(os.lstat(tmp_path / "null.png").st_mode)  # still a device node
    for name in ("ckpt.pt", "last.pt", "metrics.jsonl"):  # the run's own files, by what they hold
        before = (trained_run / name).read_bytes()
        err = fails(plot.main, ["loss", trained_run, "--out", trained_run / name], capsys)
        assert "already holds something other than PNG" in err and "not replaced" in err
        assert (trained_run / name).read_bytes() == before
    err = fails(plot.main, ["loss", trained_run, "--out", tmp_path / "no" / "such" / "x.png"], capsys)
    assert "folder" in err and "does not exist" in err and not (tmp_path / "no").exists()
    run_png = tmp_path / "loss.png"
    plot.main(["loss", str(trained_run), "--out", str(run_png)])  # a PNG may be replaced by a PNG
    plot.main(["loss", str(trained_run), "--out", str(run_png)])
    assert run_png.read_bytes().startswith(b"\x89PNG")


def test_a_tool_never_makes_folders_nor_writes_into_a_device(tmp_path, capsys):
    from tools import generation

    err = fails(generation.main, ["sample", "--json", tmp_path / "nope" / "dir" / "x.json"], capsys)
    assert "does not exist" in err and not (tmp_path / "nope").exists()
    for name, says in special_files(tmp_path).items():
        err = fails(generation.main, ["sample", "--json", tmp_path / name], capsys)
        assert says in err


@pytest.mark.slow  # a fresh Python process, as a user runs it
@pytest.mark.parametrize("argv", [["train.py", "--max_iters", "2", "--out_dir"], ["sample.py", "--out_dir"],
                                  ["tools/whole_val.py"], ["prepare.py", "--out_dir"]])
def test_a_name_longer_than_255_bytes_is_one_line(argv, slice_dir, tmp_path):
    long_name = str(tmp_path / ("a" * 300))
    data = ["--data_dir", slice_dir] if argv[0] == "train.py" else []  # prepared data: the out_dir is what fails
    done = run_script(*argv[:-1], *data, argv[-1], long_name) if len(argv) > 1 else run_script(*argv, long_name)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "File name too long" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# -- unbounded input: one prompt line that never ends

@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_an_endless_prompt_line_is_refused_not_read_forever(trained_run):
    with open("/dev/zero", "rb") as zeros:
        done = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--out_dir", str(trained_run), "--interactive"],
                              stdin=zeros, capture_output=True, cwd=ROOT, timeout=120)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "Traceback" not in stderr, stderr
    assert "a prompt line of more than 1,048,576 characters" in stderr


# -- concurrency and integrity

@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_a_second_prepare_into_a_folder_being_prepared_is_refused(shakespeare_text, tmp_path, capsys):
    """Two prepare.py into one folder both exited 0, and the last to finish replaced the other's data. Now the
    folder is held from the start: the second is refused with the holder's pid and command."""
    data_dir, source = tmp_path / "d", tmp_path / "in.txt"
    source.write_text(shakespeare_text[:400_000])
    first = subprocess.Popen([sys.executable, str(ROOT / "prepare.py"), "--input", str(source), "--out_dir",
                              str(data_dir), "--tokenizer", "bpe", "--vocab_size", "1024"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = __import__("time").monotonic() + 120
        while not (data_dir / ".babygpt.lock").exists() or "pid" not in (data_dir / ".babygpt.lock").read_text():
            assert first.poll() is None and __import__("time").monotonic() < deadline, first.communicate()
            __import__("time").sleep(0.02)
        (tmp_path / "other.txt").write_text("another text entirely " * 500)
        err = fails(prepare.main, ["--input", tmp_path / "other.txt", "--out_dir", data_dir], capsys)
        assert f"is in use by pid {first.pid} (python " in err
    finally:
        first.communicate(timeout=300)
    assert first.returncode == 0


def test_a_hand_edited_vocabulary_is_refused_naming_the_file(slice_dir, tmp_path, capsys):
    import json
    data_dir = tmp_path / "d"
    shutil.copytree(slice_dir, data_dir)
    meta = json.loads((data_dir / "meta.json").read_text())
    meta["vocab"][10], meta["vocab"][11] = meta["vocab"][11], meta["vocab"][10]  # two letters swapped
    (data_dir / "meta.json").write_text(json.dumps(meta))
    err = fails(train.main, ["--data_dir", data_dir, "--out_dir", tmp_path / "o", *TINY], capsys)
    assert "meta.json: 'vocab' is not in the sorted order prepare.py writes" in err


def test_the_lock_holders_command_is_cut_with_an_ellipsis(monkeypatch):
    from babygpt import locks
    monkeypatch.setattr(sys, "argv", ["train.py", "--out_dir", "/tmp/" + "x" * 400])
    line = locks.holder_line()
    assert line.endswith("…)") and len(line) < 240


# -- from another folder

@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_from_another_folder_the_advice_points_at_the_project(tmp_path):
    done = run_script("train.py", "--max_iters", 1, cwd=tmp_path)
    assert done.returncode == 2
    assert "data/shakespeare_char is relative to this folder" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing downloaded or made here


@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_the_last_line_names_the_scripts_as_they_were_run(slice_dir, tmp_path):
    done = subprocess.run([sys.executable, "../train.py", "--data_dir", str(slice_dir), "--out_dir",
                           str(tmp_path / "o"), *TINY, "--max_iters", "2", "--eval_interval", "2"],
                          cwd=ROOT / "docs", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(sample with: python ../sample.py --out_dir" in done.stdout


def test_plot_loss_on_checkpoints_without_metrics_says_that(trained_run, tmp_path, capsys):
    shutil.copytree(trained_run, tmp_path / "r")
    (tmp_path / "r" / "metrics.jsonl").unlink()
    err = fails(plot.main, ["loss", tmp_path / "r", "--out", tmp_path / "x.png"], capsys)
    assert "has checkpoints but no metrics.jsonl" in err and "train there" not in err


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["whole_val", "budget", "busy", "generation", "make_figures", "peer", "speed",
                                  "explore_screenshot", "gpu_check"])
def test_every_tool_runs_by_its_path(tool):
    done = run_script(f"tools/{tool}.py", "--help")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


# -- pictures: an unusable MPLBACKEND, characters the font lacks

@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_an_unusable_mplbackend_is_one_note_and_the_picture_is_drawn(trained_run, tmp_path):
    env = {**os.environ, "MPLBACKEND": "nonsense"}
    done = subprocess.run([sys.executable, str(ROOT / "plot.py"), "loss", str(trained_run), "--out",
                           str(tmp_path / "l.png")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "MPLBACKEND='nonsense' is not a matplotlib backend" in done.stderr
    assert (tmp_path / "l.png").read_bytes().startswith(b"\x89PNG")


def test_characters_the_font_lacks_are_one_note(tmp_path, capsys):
    import warnings

    from babygpt.loss_plot import new_figure, save_png
    fig = new_figure(3, 2)
    fig.subplots().set_title("東京 " + "".join(chr(0x4E00 + i) for i in range(12)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a glyph warning that escaped would fail here
        save_png(fig, tmp_path / "g.png")
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "the font has no glyph for 14 character(s)" in err


# -- sampling's small things

@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_sample_says_what_it_did_to_the_prompt(trained_run, capsys):
    from conftest import TINY as _  # noqa: F401  (the trained run is the tiny model: block_size 32)
    code = run_script("sample.py", "--out_dir", trained_run, "--start", "ROMEO: " * 20, "--max_new_tokens", 3)
    assert code.returncode == 0 and "note: the prompt is 140 tokens; the model reads (and this prints) its last 32" \
        in code.stderr
    err = fails(sample.main, ["--out_dir", trained_run, "--start", "FILE:"], capsys)
    assert "--start FILE: names no file" in err


# -- the newcomer's frictions

@pytest.mark.slow  # a fresh Python process, as a user runs it
@pytest.mark.skipif(not shutil.which("make") or sys.platform != "linux", reason="needs make on Linux")
def test_make_installs_the_cpu_only_torch_on_linux_without_an_nvidia_gpu():
    """N1: the Linux default was PyPI's 4.7 GB CUDA build, on a laptop with no NVIDIA GPU."""
    def install_commands(*variables):
        done = subprocess.run(["make", "-n", "-B", ".venv/.installed", *variables], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    has_nvidia = os.path.exists("/proc/driver/nvidia/version")
    assert ("--index-url https://download.pytorch.org/whl/cpu torch==" in install_commands()) != has_nvidia
    assert "download.pytorch.org" not in install_commands("TORCH_INDEX=")  # overridable: the default index
    assert "cannot be reached: torch from the default index" in install_commands("TORCH_INDEX=https://example.invalid/x")


# -- small things

def test_a_checkpoint_version_written_as_text_says_so(trained_run, tmp_path, capsys):
    import torch
    state = torch.load(trained_run / "ckpt.pt", weights_only=True)
    state["version"] = "1"
    torch.save(state, tmp_path / "v.pt")
    err = fails(sample.main, ["--ckpt", tmp_path / "v.pt"], capsys)
    assert "has checkpoint version '1' (a str, not a number); this babygpt reads version 1" in err


def test_resuming_a_checkpoint_without_its_optimizer_says_it_is_incomplete(trained_run, slice_dir, tmp_path, capsys):
    import torch
    shutil.copytree(trained_run, tmp_path / "r")
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, tmp_path / "r" / "last.pt")
    err = fails(train.main, ["--out_dir", tmp_path / "r", "--resume", "--data_dir", slice_dir, "--max_iters", 50],
                capsys)
    assert "last.pt is incomplete (missing optimizer)" in err


@pytest.mark.slow  # a fresh Python process, as a user runs it
def test_a_byte_that_is_not_utf8_is_shown_as_the_shell_shows_it():
    done = subprocess.run([sys.executable, "-m", "tools.whole_val", b"caf\xe9"], cwd=ROOT, capture_output=True,
                          timeout=120)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "'caf\\xe9' is not UTF-8 text" in stderr, stderr


ENTRY_POINTS = [  # every command a user runs, with the first letters of one of its flags
    ("lessons.build_up", ["--ste", "3"]), ("lessons.sparse_attention", ["--win", "4"]),
    ("lessons.infinite_memory", ["--block", "8"]), ("lessons.vit", ["--ite", "1"]),
    ("lessons.encoder_decoder", ["--len", "3"]), ("lessons.message_passing", ["--hel"]),
    ("tools.budget", ["--minu", "1"]), ("tools.busy", ["--thr", "1"]), ("tools.gpu_check", ["--pres", "x"]),
    ("tools.peer", ["--nanogpt", "x", "--sho", "5"]), ("tools.make_figures", ["--data", "x"]),
    ("tools.explore_screenshot", ["--ckpt", "x", "--ste", "2"]), ("tools.speed", ["throughput", "--pre", "x"]),
    ("tools.generation", ["sample", "--sam", "2"]), ("tools.whole_val", ["out", "--data", "x"]),
    ("exercises.__main__", ["check", "bigram", "--sol"]),
]


@pytest.mark.parametrize("module, argv", ENTRY_POINTS, ids=[m for m, _ in ENTRY_POINTS])
def test_no_entry_point_takes_a_prefix_for_a_flag(module, argv, capsys):
    import importlib
    main = importlib.import_module(module).main
    err = fails(main, argv, capsys)
    assert "unrecognized arguments: --" in err


@pytest.mark.parametrize("flags, says", [
    (["--min_lr", "1", "--learning_rate", "1e-3"], "min_lr (1) is above learning_rate (0.001): the decay would raise"),
    (["--lr_decay_iters", "2", "--warmup_iters", "10"], "lr_decay_iters (2) ends inside warmup_iters (10)"),
])
def test_a_schedule_that_contradicts_itself_is_one_line(flags, says, tmp_path, capsys):
    err = fails(train.main, [*flags, "--out_dir", tmp_path / "o"], capsys)
    assert says in err and not (tmp_path / "o").exists()
