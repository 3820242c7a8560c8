"""Works where learners are: the version floors are enforced in one line, babygpt installs with pip and imports
from any folder, the notebook snippet of docs/usage.md runs, and requirements.txt and pyproject.toml agree."""

import importlib.metadata
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from babygpt.cli import tomllib
from babygpt.versions import MIN_TORCH, environment_problem, version_tuple

USAGE = ROOT / "docs" / "usage.md"  # its "Use it from a notebook" section


def requirement_names(lines):
    return sorted(re.sub(r"\s+", "", line) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def test_requirements_txt_and_pyproject_list_the_same_dependencies_and_floors():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    in_requirements = requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    in_pyproject = requirement_names(pyproject["dependencies"] + pyproject["optional-dependencies"]["test"])
    assert [r.replace("'", '"') for r in in_pyproject] == in_requirements
    assert f"torch>={MIN_TORCH[0]}.{MIN_TORCH[1]}" in in_requirements
    assert pyproject["requires-python"] == ">=3.10"


def test_pip_install_ships_every_top_level_module():
    """A module left out of py-modules would be missing from an installed babygpt (an ImportError far away)."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["py-modules"]
    assert sorted(listed) == sorted(path.stem for path in ROOT.glob("*.py"))


def test_an_old_python_or_torch_is_refused_with_what_to_do_and_a_supported_one_passes():
    assert "needs Python 3.10 or newer, and this is 3.9.18" in environment_problem(python=(3, 9, 18))
    for old in ("2.2.2", "2.4.1+cpu", "1.13.1"):
        problem = environment_problem(python=(3, 11, 7), torch_version=old)
        assert f"needs torch 2.5 or newer" in problem and f"has torch {old}" in problem
        assert "pip install --upgrade 'torch>=2.5'" in problem
    for supported in ("2.5.1", "2.5.0a0+git1234", "2.13.0+cpu", "3.0.0"):
        assert environment_problem(python=(3, 10, 13), torch_version=supported) is None


def old_torch_on_path(tmp_path, version="2.2.2", importable=False):
    """An environment whose installed torch says it is `version`: only its package metadata, first on the path
    (installing a real torch 2.2 would take gigabytes; the check reads nothing but this metadata). importable:
    also an empty `torch` package, for make's "is there a torch at all?" test (whatever Python runs it)."""
    info = tmp_path / "old-torch" / f"torch-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    if importable:
        (info.parent / "torch").mkdir()
        (info.parent / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(info.parent), str(ROOT)])}


@pytest.mark.parametrize("command", [["train.py"], ["sample.py"], ["-m", "lessons.vit"]])
@pytest.mark.slow
def test_an_old_torch_gets_one_line_from_the_scripts(command, tmp_path):
    command = [str(ROOT / command[0])] if command[0].endswith(".py") else command
    result = subprocess.run([sys.executable, *command], cwd=ROOT if command[0] == "-m" else tmp_path,
                            env=old_torch_on_path(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("error: babygpt needs torch 2.5 or newer") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stand_in_torch", [False, True])
def test_import_model_never_exits_even_with_an_old_torch(stand_in_torch, tmp_path):
    """The version check is the scripts' (above), not model.py's: in a notebook, `import model` next to an old
    torch imports, or fails with an ordinary ImportError where that torch lacks something (here a stand-in
    torch package without torch.nn), and never raises SystemExit."""
    code = "try:\n    import model\n    print('imported')\nexcept BaseException as e:\n    print(type(e).__name__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=old_torch_on_path(tmp_path, importable=stand_in_torch), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("ModuleNotFoundError" if stand_in_torch else "imported")


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine (see docs/usage.md's path without make)")
@pytest.mark.slow
def test_make_stops_in_one_line_before_installing_anything_when_the_reused_torch_is_too_old(tmp_path):
    (tmp_path / "babygpt").mkdir()
    for name in ("Makefile", "babygpt/__init__.py", "babygpt/versions.py", "requirements.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = subprocess.run(["make", "install", f"PYTHON={sys.executable}"], cwd=tmp_path,
                            env=old_torch_on_path(tmp_path, importable=True), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and not (tmp_path / ".venv" / ".installed").exists()
    ours = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?:", line)]  # make[1]: under make
    assert len(ours) == 1 and ours[0].startswith("error: babygpt needs torch 2.5 or newer"), result.stderr
    assert "pip install --upgrade 'torch>=2.5'" in ours[0] and "Traceback" not in result.stderr


@pytest.mark.slow
def test_pip_install_e_makes_babygpt_importable_from_any_folder(tmp_path):
    """`pip install -e .` into a fresh venv that sees this Python's packages (so nothing is downloaded), then
    `import model` and friends from another folder, presets included."""
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "this-pythons-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # setuptools 70.1+ builds wheels by itself: then build with this Python's (offline); else pip fetches one
    try:
        ours = version_tuple(importlib.metadata.version("setuptools"))
    except importlib.metadata.PackageNotFoundError:  # Python 3.12+ venvs come without it
        ours = (0, 0)
    offline = ["--no-build-isolation", "--no-index"] if ours >= (70, 1) else []
    installed = subprocess.run([python, "-m", "pip", "install", *offline, "--no-deps", "-e", str(ROOT)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    shutil.rmtree(ROOT / "babygpt.egg-info", ignore_errors=True)  # what setuptools leaves in the source folder
    check = ("import model, sample, train; from babygpt import cli; from pathlib import Path; "
             "print(Path(model.__file__).parent, len(cli.known_presets()))")
    result = subprocess.run([python, "-c", check], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    folder, presets = result.stdout.split()
    assert Path(folder) == ROOT and int(presets) >= 3


def notebook_snippet():
    section = USAGE.read_text(encoding="utf-8").split("\n## Use it from a notebook\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_usage_notebook_snippet_trains_and_samples_from_another_folder(shakespeare_text, tmp_path):
    """Run as a notebook would: a fresh process in a folder of its own, babygpt on the path as after
    `pip install -e .`, the text where the snippet's comment says it is."""
    (tmp_path / "data" / "shakespeare_char").mkdir(parents=True)
    (tmp_path / "data" / "shakespeare_char" / "input.txt").write_text(shakespeare_text, encoding="utf-8")
    code = notebook_snippet()
    assert 12 <= len(code.splitlines()) <= 25  # a short cell
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # one thread: the machine is shared
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and not result.stderr, result.stderr  # no warnings either
    loss_line, sample = result.stdout.split("\n", 1)
    assert float(loss_line.split(": ")[1]) < 3.0  # it learned: from ln(65) = 4.17
    assert sample.startswith("ROMEO:") and len(sample.strip()) > 50
