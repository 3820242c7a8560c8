"""docs/walkthrough.md: every snippet of the read-along section runs, in order, and prints what the doc shows."""

import ast
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


LINK = re.compile(r"\[([^\]]*)\]\(([\w./-]+?)(?:#L(\d+))?\)")  # [text](path) or [text](path#L12)
CODE_FILE = re.compile(r"`(?:python |time python )?([\w/-]+\.(?:py|toml))\b")  # `lessons/vit.py`, `python prepare.py`
MODULE_NAME = re.compile(r"`([a-z_]+)\.(?!py`|toml`|md`|json`)([A-Za-z_]\w*)`")  # `model.Block`, not `train.py`


def definitions(path):
    """{"name", "Class.method", ...}: every function and class defined in a Python file, methods by dotted name."""
    names = set()

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(prefix + child.name)
                visit(child, prefix + child.name + ".")

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return names


def broken_references(markdown, doc_dir, root):
    """What a document cites that the code no longer has: link targets that are missing, `name`s linked to a .py
    file that does not define them, line anchors (#L12) whose line no longer holds the cited code, files named in
    `code`, and `module.name`s."""
    broken = []
    for text, target, line in LINK.findall(markdown):
        if target.startswith(("http", "mailto")):
            continue
        path = (doc_dir / target).resolve()
        if not path.exists():
            broken.append(f"[{text}]({target}): no such file")
            continue
        code = text[1:-1] if text.startswith("`") and text.endswith("`") else None
        if line:
            lines = path.read_text(encoding="utf-8").splitlines()
            if not (code and int(line) <= len(lines) and code in lines[int(line) - 1]):
                broken.append(f"[{text}]({target}#L{line}): line {line} does not hold {text}")
        elif code and path.suffix == ".py" and code != path.name and code not in definitions(path):
            broken.append(f"[{text}]({target}): {code} is not defined in {target}")
    for name in CODE_FILE.findall(markdown):  # a path from the repo root, or a file in one of its folders
        if not (root / name).exists() and not any(root.glob(f"*/{name}")):
            broken.append(f"`{name}`: no such file")
    for module, name in MODULE_NAME.findall(markdown):
        source = root / f"{module}.py"
        if source.exists() and name not in definitions(source):
            broken.append(f"`{module}.{name}`: not defined in {module}.py")
    return broken


def test_every_code_reference_in_the_walkthrough_exists():
    """The walkthrough cannot drift from the code: every function, class, file and line it cites is there."""
    markdown = WALKTHROUGH.read_text(encoding="utf-8")
    assert len(LINK.findall(markdown)) >= 20 and len(CODE_FILE.findall(markdown)) >= 5
    assert broken_references(markdown, WALKTHROUGH.parent, ROOT) == []


def test_the_reference_check_catches_a_renamed_function(tmp_path):
    """The check above can fail: rename a function the walkthrough links to, and it is reported."""
    (tmp_path / "docs").mkdir()
    source = (ROOT / "train.py").read_text(encoding="utf-8")
    (tmp_path / "train.py").write_text(source.replace("def learning_rate_at(", "def lr_at("), encoding="utf-8")
    markdown = "The schedule: [`learning_rate_at`](../train.py); the loop: `train.py`."
    assert broken_references(markdown, tmp_path / "docs", tmp_path) == [
        "[`learning_rate_at`](../train.py): learning_rate_at is not defined in ../train.py"]
    moved = "[`while iter_num < cfg.max_iters`](../train.py#L1)"  # a line anchor that points elsewhere
    assert len(broken_references(moved, tmp_path / "docs", tmp_path)) == 1


DOCS = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCED = re.compile(r"^```.*?^```", re.S | re.M)


def heading_anchors(markdown):
    """The #anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens, -1, -2 for
    repeats (headings inside code blocks are not headings)."""
    anchors, seen = set(), {}
    for line in FENCED.sub("", markdown).splitlines():
        match = re.match(r"#{1,6} (.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def broken_links(markdown, doc_dir):
    """Relative links of a markdown page that lead nowhere: a missing file, or a #heading the page does not have."""
    broken = []
    for target in MD_LINK.findall(FENCED.sub("", markdown)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc_dir / path).resolve() if path else None
        if file is not None and not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file is None or file.suffix == ".md"):
            page = file.read_text(encoding="utf-8") if file is not None else markdown
            if anchor not in heading_anchors(page):
                broken.append(f"{target}: no heading #{anchor}")
    return broken


def test_every_relative_link_in_the_docs_resolves():
    """README.md and docs/*.md link to each other and to the code: every link's file, and every #heading, is there."""
    assert len(DOCS) >= 6  # README, data/README, walkthrough, usage, experiments, troubleshooting, log
    broken = {doc.relative_to(ROOT).as_posix(): broken_links(doc.read_text(encoding="utf-8"), doc.parent)
              for doc in DOCS}
    assert {doc: links for doc, links in broken.items() if links} == {}


def test_the_link_check_catches_a_missing_page_and_a_renamed_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Sampling speed\n\n## Tokenizers: char vs BPE\n", encoding="utf-8")
    page = ("[ok](a.md#sampling-speed) [ok](a.md#tokenizers-char-vs-bpe) [gone](b.md) [renamed](a.md#speed) "
            "[here](#nothing)\n```\n[in code](ignored.md)\n```\n")
    assert broken_links(page, tmp_path) == ["b.md: no such file", "a.md#speed: no heading #speed",
                                            "#nothing: no heading #nothing"]
