# Two commands do all set-up on a fresh machine (see README.md):
#   make run    set up, then start the server with the bundled demo model on CPU
#   make test   set up (with the test-only tools), then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.boxmask-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup test-tools run test demo-model clean

setup: $(STAMP)

# pip takes torch/torchvision from the local wheel cache when it has them; the pair is pinned
# in pyproject.toml (torch 2.14.1 + torchvision 0.29.1 is the pair that imports together).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

# Real peers for the tests, each in its own place so their pins never meet boxmask's:
# - Label Studio 1.23.2 in .venv-labelstudio (tests marked `labelstudio`);
# - the tritonserver binary that nvidia-pytriton ships, in .triton (tests marked `triton`;
#   --no-deps: the package pins numpy < 2, and only its binary is used);
# - Debian's Chromium for the demo-page test (needs root).
# A peer that is missing when the tests run skips its tests locally and fails them with CI=true.
test-tools: setup
	bash scripts/install_labelstudio.sh
	test -x .triton/pytriton/tritonserver/bin/tritonserver || \
		$(PY) -m pip install --quiet --no-deps --target .triton nvidia-pytriton==0.7.0
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
		echo "chromium not installed (needs root): the demo-page browser test will be skipped, or fail with CI=true"; }

run: setup
	$(PY) -m boxmask.cli serve --host $(HOST) --port $(PORT)

# Any non-zero pytest exit fails, 5 ("no tests collected") included: a run that tested nothing
# has not passed.
test: test-tools
	$(PY) -m pytest -q

# Rebuild the bundled demo model from nothing (synthetic data, training, export).
demo-model: setup
	bash scripts/build_demo_model.sh

clean:
	rm -rf $(VENV) .venv-labelstudio .triton .pytest_cache
