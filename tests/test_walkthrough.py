"""docs/walkthrough.md: every snippet of the read-along section runs, in order, and prints what the doc shows."""

import contextlib
import io
import os
import re

import pytest

from conftest import ROOT
from prepare import prepare

WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def read_along_section():
    """The first section of the walkthrough (the read-along); the later sections belong to other topics."""
    text = WALKTHROUGH.read_text(encoding="utf-8")
    return text.split("\n## The family", 1)[0]


def snippets(markdown):
    """[(python code, the ```text block right after it or None)], in the order of the document."""
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(markdown)]
    pairs = []
    for i, (lang, body, _, end) in enumerate(blocks):
        if lang != "python":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        shown = following[1] if following and following[0] == "text" and not markdown[end:following[2]].strip() else None
        pairs.append((body, shown))
    return pairs


def run_snippets(pairs):
    """Execute the snippets one after another in one namespace, like cells of a notebook; yield their output."""
    namespace = {"__name__": "walkthrough"}
    for code, _ in pairs:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(WALKTHROUGH), "exec"), namespace)
        yield out.getvalue()


@pytest.fixture(scope="module")
def shakespeare_dir(shakespeare_text, tmp_path_factory):
    """A folder laid out like the repo after `python prepare.py`: data/shakespeare_char/ from the real text."""
    root = tmp_path_factory.mktemp("walkthrough")
    prepare(shakespeare_text, root / "data" / "shakespeare_char")
    return root


def test_walkthrough_snippets_run_and_print_what_the_doc_shows(shakespeare_dir, monkeypatch):
    pairs = snippets(read_along_section())
    assert len(pairs) >= 8, "the walkthrough should have a runnable snippet for each step"
    monkeypatch.chdir(shakespeare_dir)
    checked = 0
    for (code, shown), printed in zip(pairs, run_snippets(pairs)):
        if shown is not None:
            assert printed.strip() == shown.strip(), f"the doc shows other output for:\n{code}"
            checked += 1
    assert checked >= 6


def test_walkthrough_figures_exist_and_are_small():
    figures = re.findall(r"\]\((figures/[\w-]+\.png)\)", read_along_section())
    assert {"figures/loss.png", "figures/attention.png", "figures/embeddings.png"} <= set(figures)
    for figure in figures:
        size = os.path.getsize(ROOT / "docs" / figure)
        assert 5_000 < size < 150_000, (figure, size)


def test_walkthrough_links_point_to_real_functions():
    """Every `name` in file.py cited as [`name`](../file.py) is defined in that file."""
    links = re.findall(r"\[`([\w.]+)`\]\(\.\./([\w/]+\.py)\)", read_along_section())
    assert len(links) >= 10
    for name, path in links:
        if name == path.split("/")[-1]:  # a link to the file itself
            continue
        source = (ROOT / path).read_text(encoding="utf-8")
        for part in name.split("."):  # GPT.forward: both the class and the method
            assert re.search(rf"^\s*(def|class) {part}\b", source, re.M), f"{name} not found in {path}"
