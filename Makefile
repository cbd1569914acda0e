# Convolutions, Verified — two commands: `make book` and `make test`.  `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# One torch/OpenMP thread per process: the test runs use pytest-xdist workers and notebook kernels side by
# side on 2 cores, and oversubscribed threads make tiny float64 checks 10-60x slower.
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tools/nbval-sanitize.cfg
NOTEBOOKS = $(wildcard notebooks/*.ipynb) $(wildcard book/*.ipynb)
HTML     ?= _build/html
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# `make lab` only: JupyterLab is installed into .venv on first use, pinned, and constrained to requirements.txt's
# pins (it adds packages, never changes one the book uses); `make test`/`make book` never install it.
JUPYTERLAB := 4.6.4
LAB_DIR    ?= notebooks
LAB_ARGS   ?=
LAB_ROOT   := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: bench-gpu bench-cpu bench-cpu-full lab help venv book test test-lib test-notebooks check-notebooks test-browser chromium pdf notebooks verify freeze clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)
	@echo "environment ready: $(VENV)"

venv: $(STAMP) ## create or refresh .venv from requirements.txt (only when it is missing or stale)

book: $(STAMP) ## build the HTML book into _build/html (strict: any Sphinx warning fails)
	$(PY) tools/nb.py check
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "open $(CURDIR)/_build/html/index.html"

lab: $(STAMP) ## open the chapters in JupyterLab, running on the book's environment (.venv); LAB_ARGS="--no-browser" etc.
	@$(PY) -c 'import sys, jupyterlab; sys.exit(jupyterlab.__version__ != "$(JUPYTERLAB)")' 2>/dev/null || { \
	  echo "installing jupyterlab==$(JUPYTERLAB) into $(VENV) (once)"; \
	  grep -v '^-e' requirements.txt > $(VENV)/lab-constraints.txt && \
	  $(PY) -m pip install --quiet "jupyterlab==$(JUPYTERLAB)" -c $(VENV)/lab-constraints.txt; }
	@echo "JupyterLab on $(VENV) (kernel: Python 3, the book's environment); open a chapter in $(LAB_DIR)/ and run it"
	$(VENV)/bin/jupyter lab $(LAB_DIR) $(LAB_ROOT) $(LAB_ARGS)

test: $(STAMP) chromium ## everything CI runs: notebook sync, lib tests, nbval, strict book build, then the built book in Chromium
	$(PY) tools/nb.py check
	$(MAKE) --no-print-directory test-lib
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory book
	$(MAKE) --no-print-directory test-browser

test-lib: $(STAMP) ## pytest over tests/ (lib, claims, planted failures, CLI)
	$(PY) -m pytest tests -n $(JOBS) -q

test-notebooks: $(STAMP) ## re-run every notebook and compare its stored outputs (nbval, strict)
	$(PY) -m pytest $(NBVAL) -n $(JOBS) --dist loadscope -q -p no:randomly $(NOTEBOOKS)

test-browser: $(STAMP) chromium ## the built book (_build/html) as a reader sees it: internal links, then every page in headless Chromium
	$(PY) tools/linkcheck.py $(HTML) --claim-sources notebooks/src --repo-root .
	$(PY) tools/browser_check.py $(HTML) --screenshots $(dir $(HTML))screenshots

chromium: ## install Debian's chromium for the browser check, where it is missing
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

pdf: $(STAMP) ## the whole book as one PDF via LaTeX, where a TeX installation is present (see README)
	@if ! command -v xelatex >/dev/null || ! command -v latexmk >/dev/null; then \
	  echo "make pdf: needs xelatex and latexmk (Debian: apt-get install --no-install-recommends texlive-xetex texlive-latex-extra texlive-fonts-recommended latexmk fonts-freefont-otf; about 80 MB to download, 360 MB installed)."; \
	  echo "They are not installed here and not installed by make: the HTML book (make book) is the book's published form."; \
	  echo "Without TeX, open the HTML book and use the download button's 'print to PDF' on a page."; \
	  exit 1; fi
	$(VENV)/bin/jupyter-book build . --builder pdflatex
	@echo "PDF: $(CURDIR)/_build/latex/convolutions-verified.pdf"

check-notebooks: $(STAMP) ## every notebook matches its text source, was run top to bottom, stored no error
	$(PY) tools/nb.py check

notebooks: $(STAMP) ## re-execute the notebooks from their sources (NB=notebooks/src/01-convolution.md for one)
	$(PY) tools/nb.py build $(NB)

verify: $(STAMP) ## run every claim and print the ledger (ARGS="--chapter 1", "--json", "--device cuda")
	$(PY) -m convbook verify $(ARGS)

freeze: $(STAMP) ## rewrite requirements.txt from the current environment
	@! $(PY) -c 'import jupyterlab' 2>/dev/null || { echo "make freeze: $(VENV) has JupyterLab from make lab, which the book does not need; freeze from a fresh .venv (rm -rf $(VENV); make venv)"; exit 1; }
	@{ sed -n '1,2p' requirements.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==.*/torch==2.13.0/'; echo "-e ."; } > requirements.tmp && mv requirements.tmp requirements.txt

bench-cpu: $(STAMP) ## every benchmark suite on the CPU at the small size, one thread (rewrites notebooks/data/bench/cpu-*-small.json)
	OMP_NUM_THREADS=1 $(PY) -m convbook bench --device cpu --size small --threads 1 --min-run-time 0.3 --force

bench-cpu-full: $(STAMP) ## chapter 11's algorithms against oneDNN at ResNet-50's real sizes, one thread (minutes; not part of make test)
	OMP_NUM_THREADS=1 $(PY) -m convbook bench --device cpu --size full --threads 1 --suite fast-algorithms --force

bench-gpu: $(STAMP) ## on a CUDA machine: every benchmark suite and every claim on the GPU; commit what lands in notebooks/data/
	@$(PY) -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "bench-gpu needs a CUDA device (torch.cuda.is_available() is False)")'
	@for suite in $$($(PY) -c 'from convbook.bench import suite_names; print(" ".join(suite_names()))'); do \
	  $(PY) -m convbook bench --device cuda --suite $$suite || exit 1; done
	$(PY) -m convbook verify --device cuda --json > notebooks/data/verify-cuda.json
	$(PY) tools/nb.py build notebooks/src/12-gpu-timing.md

clean: ## remove the built book (keeps .venv)
	rm -rf _build
