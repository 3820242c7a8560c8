"""
versions.py -- the Python and torch that babygpt needs. Importing it checks them: an unsupported one gets one
line naming the fix and exit status 2, before any code meets something an old version lacks (a traceback).
cli.py imports it first, so every script checks before it imports torch; model.py does not (`import model`
never exits: on a torch too old, what it lacks fails when it is used).
"""

import importlib.metadata
import re
import sys

MIN_PYTHON = (3, 10)  # also in pyproject.toml (requires-python) and the Makefile
MIN_TORCH = (2, 5)  # nn.RMSNorm, fused AdamW on the CPU, init_process_group(device_id=); the suite passes from 2.5.1


def version_tuple(text):
    """'2.5.1+cpu' -> (2, 5); '2.13.0a0+git...' -> (2, 13)."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def environment_problem(python=sys.version_info, torch_version=None):
    """Why this Python cannot run babygpt, in one sentence, or None. The torch version is read from the installed
    package's metadata, without importing torch (fast, and an old torch cannot fail on the way)."""
    if tuple(python[:2]) < MIN_PYTHON:
        return (f"babygpt needs Python {'.'.join(map(str, MIN_PYTHON))} or newer, and this is "
                f"{'.'.join(map(str, python[:3]))} ({sys.executable}); use a newer python3")
    if torch_version is None:
        try:
            torch_version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return None  # no torch yet: the import that needs it says so
    if version_tuple(torch_version) < MIN_TORCH:
        wanted = ".".join(map(str, MIN_TORCH))
        return (f"babygpt needs torch {wanted} or newer, and this Python ({sys.executable}) has torch {torch_version}; "
                f"upgrade it with: {sys.executable} -m pip install --upgrade 'torch>={wanted}'")
    return None


if environment_problem():  # at import, before model.py meets an attribute an old torch lacks: one line, no traceback
    print(f"error: {environment_problem()}", file=sys.stderr)
    sys.exit(2)
