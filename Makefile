# make demo  -- install, prepare Tiny Shakespeare, train the cpu preset, print samples
# make test  -- install, run the test suite
#
# Everything runs in .venv, made with --system-site-packages so an already-installed torch is reused.
# Without one, TORCH is installed (override for another build: make demo TORCH="torch==2.5.1").

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	touch $@

demo: install
	$(PY) prepare.py
	$(PY) train.py --preset cpu --out_dir out-demo --overwrite
	$(PY) sample.py --out_dir out-demo --num_samples 2 --max_new_tokens 300

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out-demo .pytest_cache
