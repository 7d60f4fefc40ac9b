# Two commands for a newcomer: `make demo` and `make test`. Everything installs into .venv/.
#
# torch is installed first and pinned, so nothing later can swap it for another build:
#   TORCH_SPEC      what to install (default torch==2.13.0; e.g. TORCH_SPEC='torch==2.5.1')
#   TORCH_PIP_ARGS  extra pip arguments for that step, e.g. a CPU-only index on other machines:
#                   TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'
#                   or a CUDA one: TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cu124'
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.toolkit-setup
PYTEST_ARGS ?=
# idle OpenMP threads sleep instead of spinning: small toy runs on few cores stay fast
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test lint lab bench clean sync

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') already installed"; \
	else $(BIN)/python -m pip install "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); fi
	@# pin the torch just installed so the next step can never pull a different (CUDA) build
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/torch-constraint.txt -e '.[lab,dev]'
	$(BIN)/python -c "import torch, toolkit; print('toolkit ready: torch', torch.__version__, \
	  '| cuda' if torch.cuda.is_available() else '| cpu')"
	@touch $(STAMP)

demo: setup
	$(BIN)/python -m toolkit.run_notebooks --out build

lint: setup
	$(BIN)/ruff check toolkit tests $(wildcard benchmarks) notebooks/*.py

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

sync: setup
	$(BIN)/jupytext --sync notebooks/*.py

clean:
	rm -rf build .pytest_cache .ruff_cache
