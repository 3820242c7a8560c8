"""model.py stands alone: it imports only Python's standard library and torch, importing it does nothing but
define the model (no process, no signal handler, no exit), and a copy of the file by itself trains and samples,
the way a learner copies it into a notebook."""

import ast
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

MODEL = ROOT / "model.py"


def imported_modules(path):
    """The top-level names of every module a Python file imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module.split(".")[0])
    return names


def test_model_py_imports_only_the_standard_library_and_torch():
    imported = imported_modules(MODEL)
    assert "torch" in imported
    assert imported - {"torch"} <= set(sys.stdlib_module_names), imported - {"torch"} - set(sys.stdlib_module_names)


def test_the_import_check_sees_a_support_module(tmp_path):
    """The check above can fail: a model.py that imports the babygpt package is caught."""
    source = MODEL.read_text(encoding="utf-8").replace("import torch\n", "import torch\nfrom babygpt import cli\n", 1)
    (tmp_path / "model.py").write_text(source, encoding="utf-8")
    assert imported_modules(tmp_path / "model.py") - set(sys.stdlib_module_names) == {"torch", "babygpt"}


# Run in a fresh interpreter: records every process start (Python's audit events), the handlers of the signals a
# script might take over, and whether the import raised, then prints what changed.
IMPORT_AND_REPORT = r"""
import os, signal, sys
started = []
STARTS = {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system"}
sys.addaudithook(lambda event, args: started.append(event) if event in STARTS else None)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
before = [signal.getsignal(s) for s in SIGNALS]
try:
    import model
    outcome = "imported"
except BaseException as e:  # SystemExit included: that is what must not happen
    outcome = type(e).__name__
try:
    os.waitpid(-1, os.WNOHANG)
    children = "a child process"
except ChildProcessError:
    children = "no child process"
changed = [s.name for s, handler in zip(SIGNALS, before) if signal.getsignal(s) != handler]
print(outcome, "|", children, "|", started, "|", changed)
"""


def import_model_in_a_fresh_interpreter(env=None, cwd=ROOT):
    result = subprocess.run([sys.executable, "-c", IMPORT_AND_REPORT], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_model_starts_no_process_changes_no_signal_handler_and_never_exits():
    assert import_model_in_a_fresh_interpreter() == "imported | no child process | [] | []"


@pytest.mark.slow
def test_model_py_copied_alone_into_an_empty_folder_trains_and_generates(tmp_path):
    """No repo, no package beside it: a copy of model.py and torch are enough to train a step and sample, with
    every attention pattern; and the babygpt package is never imported on the way."""
    shutil.copy(MODEL, tmp_path / "model.py")
    script = r"""
import sys
import torch
import model

torch.manual_seed(0)
tiny = dict(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=24)
for extra in ({}, dict(attn_pattern="sliding", pos_emb="rope"), dict(attn_pattern="bigbird", bigbird_window=4)):
    # BigBird's links are drawn by the package (attention_patterns.py); any causal mask will do here
    pattern = model.causal_mask(16, window=4) if extra.get("attn_pattern") == "bigbird" else None
    gpt = model.GPT(model.GPTConfig(**tiny, **extra), pattern)
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-2)
    batch = torch.randint(0, 11, (4, 17))
    losses = []
    for _ in range(5):
        _, loss = gpt(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    gpt.eval()
    out = gpt.generate(batch[:2, :3], 20, temperature=0.8, top_k=5, top_p=0.9,
                       generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 23) and 0 <= int(out.min()) and int(out.max()) < 11, out
print(model.__file__, sorted(name for name in sys.modules if name.split(".")[0] == "babygpt"))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "model.py"), "[]"]
