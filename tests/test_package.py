"""The support package reads one subject per file: no file imports a file that imports it (directly or through
others), no file is a drawer of subjects, and each says in its first docstring line what it is for."""

import ast

from conftest import ROOT

PACKAGE = ROOT / "babygpt"


def babygpt_imports(path):
    """The babygpt modules a file imports, anywhere in it (an import inside a function counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "babygpt":
            if node.module == "babygpt":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("babygpt.")}
    return found & {p.stem for p in PACKAGE.glob("*.py")}


def find_cycle(graph):
    """A list of modules that import each other in a circle, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = {p.stem: babygpt_imports(p) - {p.stem} for p in PACKAGE.glob("*.py")}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_one():
    """The checker above can fail: a planted circle is found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_each_support_file_is_short_and_says_what_it_is_for():
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        # about 350 lines; one subject may take more (explore.py: the page's server and what it computes)
        assert len(text.splitlines()) <= 420, f"{path.name} is a drawer: split it by subject"
        docstring = ast.get_docstring(ast.parse(text))
        assert docstring and len(docstring.splitlines()[0]) > 20, f"{path.name} does not say what it is for"
