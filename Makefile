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

.PHONY: setup demo test lint lab bench bench-anchors clean sync student hosting book app

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
	@# mup (a test-only reference for the muP parameterisation) declares torchvision, which would
	@# pull another torch build; it imports without it, so install it alone
	$(BIN)/python -m pip install --quiet --no-deps 'mup==1.0.0'
	@# curvlinops (a test-only cross-check of toolkit.hessian) needs backpack-for-pytorch, which
	@# declares torchvision; neither imports it, so they and their small deps install alone
	$(BIN)/python -m pip install --quiet --no-deps 'curvlinops-for-pytorch==3.0.1' \
	  'backpack-for-pytorch==1.7.1' 'einops==0.8.2' 'einconv==0.1.0' 'linear_operator==0.6.1' \
	  'opt_einsum==3.4.0' 'unfoldNd==0.2.3'
	$(BIN)/python -c "import torch, toolkit; print('toolkit ready: torch', torch.__version__, \
	  '| cuda' if torch.cuda.is_available() else '| cpu')"
	@touch $(STAMP)

demo: setup
	$(BIN)/python -m toolkit.run_notebooks --out build

lint: setup
	$(BIN)/ruff check toolkit tests tools $(wildcard benchmarks) notebooks/*.py

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Side-by-side with the libraries users would pick (issue 16); never part of `make test`. Each anchor
# installs into its own venv under build/anchors/: neural-tangents with its pinned jax, and
# PyHessian + loss-landscapes beside the same pinned torch as .venv (constraint file: pip cannot
# swap torch). One thread, interleaved rounds; each script prints the ratio and the agreement.
ANCHORS := build/anchors
NT_SPEC := "jax[cpu]==0.4.23" jaxlib==0.4.23 neural-tangents==0.6.5 "numpy<2" "scipy<1.13"

$(ANCHORS)/nt/.ok:
	$(PYTHON) -m venv $(ANCHORS)/nt
	$(ANCHORS)/nt/bin/python -m pip install --quiet $(NT_SPEC)
	@touch $@

$(ANCHORS)/torch/.ok: | $(STAMP)
	$(PYTHON) -m venv $(ANCHORS)/torch
	$(ANCHORS)/torch/bin/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(ANCHORS)/torch/bin/python -c "import torch; print('torch==' + torch.__version__)" \
	  > $(ANCHORS)/torch/torch-constraint.txt
	$(ANCHORS)/torch/bin/python -m pip install --quiet -c $(ANCHORS)/torch/torch-constraint.txt \
	  pyhessian==0.1 loss-landscapes==3.0.6 -e .
	@touch $@

bench-anchors: setup $(ANCHORS)/nt/.ok $(ANCHORS)/torch/.ok
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/anchors/ntk_vs_neural_tangents.py
	OMP_NUM_THREADS=1 $(ANCHORS)/torch/bin/python benchmarks/anchors/hessian_vs_pyhessian.py
	OMP_NUM_THREADS=1 $(ANCHORS)/torch/bin/python benchmarks/anchors/surface_vs_loss_landscapes.py

sync: setup
	$(BIN)/jupytext --sync notebooks/*.py

# The student edition: every notebook with its solution blocks replaced by their starters and its
# outputs cleared, in build/student/ (the .py notebooks are the instructor edition)
student: setup
	$(BIN)/python -m toolkit.exercises.editions --out build/student

# hosting.toml holds the repository URL: write it into every notebook's install cell (first code
# cell; Colab, Kaggle and kernels without the toolkit install it from there) and the README badges
hosting: setup
	$(BIN)/python tools/hosting.py

# The published forms (issue 19). `make book`: every notebook executed in its toy preset (cached in
# build/executed: an unchanged notebook on unchanged package sources is not re-run) and built by
# Jupyter Book 1 into build/book/_build/html, offline (MathJax served locally). Jupyter Book lives in
# its own venv so its Sphinx pins never touch .venv. `make app NB=01`: that notebook's explorer
# panels as a Voila app on http://localhost:8866 (code hidden).
BOOK_VENV := build/venvs/book
BOOK_SPEC := "jupyter-book==1.0.4.post1" "jupyter-server-mathjax==0.2.6"
NB ?= 00

$(BOOK_VENV)/.ok:
	$(PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_VENV)/bin/python -m pip install --quiet $(BOOK_SPEC)
	@touch $@

book: setup $(BOOK_VENV)/.ok
	$(BIN)/python -m toolkit.publish.book --out build/book --executed build/executed \
	  --book-python $(BOOK_VENV)/bin/python

app: setup
	$(BIN)/python -m toolkit.publish.app $(NB) --out build/apps

clean:
	rm -rf build .pytest_cache .ruff_cache
