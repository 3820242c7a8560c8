"""plot.py explore as a learner uses it (slow tier): the command in its own process, a real headless Chromium
driven by Selenium reading the numbers off the page, a run that is training beside it, Ctrl-C, and an install
that ships the page. Without Chromium, its driver or selenium the browser tests are skipped with what to
install; with BABYGPT_REQUIRE_BROWSER=1 (CI) they fail instead."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import plot
from babygpt import checkpoint
from conftest import ROOT, run_script
from test_plot import assert_sensible_png

pytestmark = pytest.mark.slow
TEXT = "ROMEO: But soft"
TIMEOUT = 120  # seconds for anything to appear: the machine may be busy


def missing_browser(reason):
    if os.environ.get("BABYGPT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"no browser for the page tests (BABYGPT_REQUIRE_BROWSER=1): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser():
    """A headless Chromium (the distribution's chromium and chromium-driver), driven by selenium."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing_browser("selenium is not installed: pip install selenium")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_path).is_file():
        missing_browser("chromedriver not found: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1200"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as e:
        missing_browser(f"Chromium does not start: {e.msg}")
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def wait_for(condition, what, timeout=TIMEOUT):
    """condition()'s first true value, polled; a clear failure after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 -- the page is still being drawn: an element not there yet
            value = None
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Explore:
    """`python plot.py explore --ckpt RUN --no_open [--port P]` in its own process; its address and stderr."""

    def __init__(self, run_dir, *flags):
        self.process = subprocess.Popen([sys.executable, str(ROOT / "plot.py"), "explore", "--ckpt", str(run_dir),
                                         "--no_open", *map(str, flags)], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()  # "exploring RUN/ckpt.pt at http://127.0.0.1:PORT/ (Ctrl-C stops)"
        assert "http://127.0.0.1:" in line, line + self.process.stderr.read()
        self.line, self.url = line, re.search(r"http://\S+/", line).group(0)
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def stop(self):
        """Ctrl-C; returns (exit status, stderr)."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, err


@pytest.fixture
def explore_run(trained_run):
    started = []
    yield lambda run_dir=trained_run, *flags: started.append(Explore(run_dir, *flags)) or started[-1]
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def page_text(driver):
    return driver.execute_script("return document.getElementById('tokens').textContent")


def type_text(driver, text):
    area = driver.find_element("id", "text")
    area.clear()
    area.send_keys(text)
    shown = "".join(plot.shown(ch) for ch in text)
    wait_for(lambda: page_text(driver) == shown, f"the page to analyse {text!r}")


def test_the_page_shows_the_models_numbers_and_generates_what_sample_py_does(browser, explore_run, trained_run,
                                                                            tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    server = explore_run(trained_run, "--port", free_port())
    started = time.monotonic()
    browser.get(server.url)
    wait_for(lambda: "iteration" in browser.find_element("id", "model").text, "the checkpoint's summary")
    type_text(browser, TEXT)

    # next token: the top bar is softmax(model(text)[-1])'s likeliest, with its probability to 3 decimals
    state = checkpoint.load(checkpoint.resolve(trained_run))
    model, tokenizer = checkpoint.load_model(state), plot.tokenizer_of(state)
    idx = torch.tensor([tokenizer.encode(TEXT)])  # (1, T)
    with torch.no_grad():
        probs = F.softmax(model(idx)[0][0, -1], dim=-1)  # (V,)
    top = int(probs.argmax())
    row = browser.find_element("css selector", "#candidates tr")
    label, prob = row.find_element("css selector", ".label").text, row.find_element("css selector", ".prob").text
    assert label == plot.token_labels(tokenizer, [top])[0] and prob == f"{probs[top].item():.3f}"

    # attention: hovering a cell of the last layer's last head reads plot.py's attention_maps
    maps = plot.attention_maps(model, idx)[:, 0]  # (n_layer, nh, T, T)
    layer, head, query, key, T = model.config.n_layer - 1, model.config.n_head - 1, idx.size(1) - 1, 7, idx.size(1)
    canvas = browser.find_element("css selector", f'#maps canvas[data-layer="{layer}"][data-head="{head}"]')
    cell = canvas.size["width"] / T
    ActionChains(browser).move_to_element_with_offset(canvas, int((key + 0.5) * cell - canvas.size["width"] / 2),
                                                      int((query + 0.5) * cell - canvas.size["height"] / 2)).perform()
    readout = wait_for(lambda: browser.find_element("id", "readout").text, "the hovered cell's weight")
    assert f"(position {query}) reads" in readout and f"(position {key})" in readout
    assert readout.endswith(f"{maps[layer, head, query, key].item():.3f}"), readout

    # generation: 20 steps of +1 are sample.py's 20 characters with the same seed and settings (its defaults)
    for n in range(1, 21):
        browser.find_element("id", "step1").click()
        wait_for(lambda: browser.find_element("id", "generated").get_attribute("data-steps") == str(n),
                 f"step {n}")
    wait_for(lambda: "--max_new_tokens 20" in browser.find_element("id", "command").text, "the command")
    generated = browser.execute_script("return document.getElementById('text').value")
    sampled = run_script("sample.py", "--ckpt", trained_run, "--start", TEXT, "--max_new_tokens", 20)
    assert sampled.returncode == 0, sampled.stderr
    assert generated + "\n" == sampled.stdout and len(generated) == len(TEXT) + 20
    read = generated[-model.config.block_size:]  # what the model reads of it, as sample.py crops it
    wait_for(lambda: page_text(browser) == "".join(plot.shown(ch) for ch in read), "the grown maps")

    browser.save_screenshot(str(tmp_path / "explore.png"))
    assert_sensible_png(tmp_path / "explore.png")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors  # nothing failed to load, no script error
    print(f"page test: {time.monotonic() - started:.1f} s")


def test_the_page_offers_a_newer_checkpoint_of_a_run_that_is_training(browser, explore_run, slice_dir, tmp_path):
    """A training in its own process, the server pointed at its folder: each evaluation writes a new last.pt,
    and the page offers it before the next evaluation; loaded, the page shows the later iteration."""
    out_dir = tmp_path / "training"
    training = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--data_dir", str(slice_dir), "--out_dir",
                                 str(out_dir), "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size",
                                 "32", "--batch_size", "4", "--eval_iters", "2", "--eval_interval", "500",
                                 "--sample_chars", "20", "--threads", "1", "--max_iters", "100000",
                                 "--save_interval", "0"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out_dir / "ckpt.pt").exists(), "the run's first checkpoint")
        server = explore_run(out_dir)
        browser.get(server.url)
        wait_for(lambda: "iteration" in browser.find_element("id", "model").text, "the checkpoint's summary")
        loaded = int(re.search(r"iteration (\d+)", browser.find_element("id", "model").text).group(1))
        offered = wait_for(lambda: browser.find_element("id", "newer").is_displayed(), "the offer of a newer one")
        written = evaluations(out_dir)
        evaluations_since = [i for i in written if i > loaded]
        # offered within one evaluation interval: no second evaluation came after the one that made it newer
        assert offered and len(evaluations_since) == 1, (loaded, written)
        browser.find_element("css selector", '#newer button[data-name="last.pt"]').click()
        wait_for(lambda: f"iteration {evaluations_since[0]}" in browser.find_element("id", "model").text
                 or int(re.search(r"iteration (\d+)", browser.find_element("id", "model").text).group(1)) > loaded,
                 "the newer checkpoint to be shown")
        wait_for(lambda: browser.find_element("css selector", "#candidates tr"), "its next-token bars")
        assert training.poll() is None  # the run goes on while the page reads its checkpoints
    finally:
        training.send_signal(signal.SIGINT)  # train.py saves last.pt and stops
        _, err = training.communicate(timeout=TIMEOUT)
    assert "Traceback" not in err, err


def evaluations(out_dir):
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iter"] for line in lines if '"val_loss"' in line]


def test_the_command_prints_its_address_serves_the_page_and_ctrl_c_releases_the_port(explore_run, trained_run):
    import urllib.request

    server = explore_run(trained_run)
    assert server.line.startswith(f"exploring {trained_run / 'ckpt.pt'} at http://127.0.0.1:")
    with urllib.request.urlopen(server.url, timeout=TIMEOUT) as response:
        assert b"babygpt explore" in response.read()
    status, err = server.stop()
    assert status == 130 and err.strip() == "interrupted", err
    with socket.socket() as s:  # nobody listens there any more: a new explore can (http.server's SO_REUSEADDR
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # lets it past the closed connections' TIME_WAIT)
        s.bind(("127.0.0.1", server.port))
        s.listen()


def setuptools_builds_wheels():
    import importlib.metadata

    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2]) >= (70, 1)


def test_pip_install_ships_the_page(tmp_path):
    """The wheel that `pip install .` installs carries explore.html (package data), beside explore.py."""
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split("\n")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # setuptools 70.1+ builds wheels by itself: then with this Python's, offline (as test_install does)
    offline = ["--no-build-isolation", "--no-index"] if setuptools_builds_wheels() else []
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", *offline, "--no-deps", "-w",
                            str(tmp_path / "wheel"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("babygpt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "babygpt/explore.html" in names and "babygpt/explore.py" in names and "plot.py" in names
