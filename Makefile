# make demo  -- install, prepare Tiny Shakespeare, train the cpu preset into out/ (replacing a run there), print samples
# make test  -- install, run the fast tests: every feature, in about a minute (it fetches Tiny Shakespeare first
#               if it can, see tests/conftest.py)
# make test-slow -- the slow tests: real faults, torchrun, installs, other processes, the peer and build-up runs
# make test-all  -- both: the whole suite (several minutes)
#
# Everything runs in .venv, made with --system-site-packages so an already-installed torch (2.5 or newer) is
# reused; an older one stops make with one line saying how to upgrade it. Without any, TORCH is installed.
# Variables (make demo NAME=value):
#   PYTHON    the Python that makes .venv: 3.10 or newer (default python3)
#   TORCH     what to install when there is no torch (default torch==2.13.0; e.g. TORCH=torch==2.5.1)
#   PIP_ARGS  extra arguments for every pip install
#   TORCH_INDEX  where TORCH comes from. Default: on Linux without an NVIDIA GPU, PyTorch's CPU-only wheels (1.1 GB,
#             not PyPI's 4.9 GB CUDA build; the rest still comes from the default index, and if that index cannot be
#             reached, torch does too); elsewhere empty (the default index). TORCH_INDEX= forces the default.

PYTHON ?= python3
TORCH ?= torch==2.13.0
PIP_ARGS ?=
TORCH_INDEX ?= $(shell [ "$$(uname -s)" = Linux ] && [ ! -e /proc/driver/nvidia/version ] && echo https://download.pytorch.org/whl/cpu)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-slow test-all install clean gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:3]; sys.exit(0 if v >= (3, 10) else "error: babygpt needs Python 3.10 or newer, and $(PYTHON) is %d.%d.%d; run make with PYTHON=python3.12 (or another 3.10+)" % v)'
	$(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || { echo "no torch found: installing $(TORCH) into $(VENV)$(if $(TORCH_INDEX), (the CPU-only build: no NVIDIA GPU here; see TORCH_INDEX in the Makefile))"; \
	  $(if $(TORCH_INDEX),$(PY) -m pip install -q $(PIP_ARGS) --index-url $(TORCH_INDEX) $(TORCH) || { echo "$(TORCH_INDEX) cannot be reached: torch from the default index"; $(PY) -m pip install -q $(PIP_ARGS) $(TORCH); },$(PY) -m pip install -q $(PIP_ARGS) $(TORCH)); }
	@$(PY) -c "from babygpt import versions"  # one line, and a stop, if the torch reused from the system is older than 2.5
	$(PY) -m pip install -q $(PIP_ARGS) -r requirements.txt
	touch $@

demo: install
	$(PY) prepare.py
	$(PY) train.py --preset cpu --out_dir out --overwrite
	$(PY) sample.py --out_dir out --num_samples 2 --max_new_tokens 300

test: install
	$(PY) -m pytest -m "not slow"

test-slow: install
	$(PY) -m pytest -m slow

test-all: install
	$(PY) -m pytest

clean:  # the venv only: training runs (out*/) and data/ are kept
	rm -rf $(VENV) .pytest_cache

gpu-check:  # on a CUDA machine with torch installed: the gpu preset, compile on/off, sampling, torchrun, one table
	python -m tools.gpu_check
