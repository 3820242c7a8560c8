"""
tools/explore_screenshot.py -- a picture of `plot.py explore`'s page, as a learner sees it: the page opened in a
headless Chromium (the distribution's chromium and chromium-driver, driven by selenium), a text typed, a few
tokens generated step by step, a token hovered, then a screenshot of the whole page.

    python train.py --preset cpu --out_dir out-cpu                      # a minute or two
    python -m tools.explore_screenshot --ckpt out-cpu --out docs/figures/explore.png
"""

import re
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python tools/explore_screenshot.py): the project's folder, importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babygpt.cli import Parser, UserError
from babygpt.runner import run

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except Exception:  # noqa: BLE001 -- not drawn yet
            pass
        time.sleep(0.1)
    raise UserError(f"timed out waiting for {what}")


def screenshot(url, out, text, steps, width):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        wait_for(lambda: driver.find_elements("css selector", "#candidates tr"), "the page")
        area = driver.find_element("id", "text")
        area.clear()
        area.send_keys(text)
        driver.find_element("id", "step1").click()  # the first step, then the rest in one go
        wait_for(lambda: driver.find_element("id", "generated").get_attribute("data-steps") == "1", "a step")
        if steps > 1:
            driver.execute_script(f"step({steps - 1})")
        wait_for(lambda: driver.find_element("id", "generated").get_attribute("data-steps") == str(steps), "steps")
        time.sleep(1)  # the maps of the grown text
        tokens = driver.find_elements("css selector", "#tokens .tok")
        ActionChains(driver).move_to_element(tokens[-1]).perform()  # what the last token reads, in every head
        height = driver.execute_script("return document.documentElement.scrollHeight")
        chrome = driver.get_window_size()["height"] - driver.execute_script("return window.innerHeight")
        driver.set_window_size(width, height + chrome)  # the whole page in one picture
        time.sleep(1)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    from PIL import Image  # (pillow comes with matplotlib) 256 colours: half the bytes, the same look

    Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)


def main(argv=None):
    parser = Parser(prog="python -m tools.explore_screenshot", description="A screenshot of plot.py explore's page.")
    parser.add_argument("--ckpt", required=True, help="a run's folder or a checkpoint file")
    parser.add_argument("--out", default="explore.png", help="the PNG to write")
    parser.add_argument("--text", default="ROMEO: But soft", help="what is typed")
    parser.add_argument("--steps", type=int, default=20, help="tokens generated step by step after it")
    parser.add_argument("--width", type=int, default=1400, help="the window's width in pixels")
    args = parser.parse_args(argv)
    server = subprocess.Popen([sys.executable, str(ROOT / "plot.py"), "explore", "--ckpt", args.ckpt, "--no_open"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if not (address := re.search(r"http://\S+/", line)):
            raise UserError("plot.py explore did not start (its error is above)")
        screenshot(address.group(0), args.out, args.text, args.steps, args.width)
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    run(main)
