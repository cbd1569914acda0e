# Convolutions, Verified — two commands: `make book` and `make test`.  `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tools/nbval-sanitize.cfg
NOTEBOOKS = $(wildcard notebooks/*.ipynb) $(wildcard book/*.ipynb)

.PHONY: help venv book test test-lib test-notebooks check-notebooks notebooks verify freeze clean

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
	$(PY) -m jupyter_book build . --warningiserror --nitpick --keep-going
	@echo "open $(CURDIR)/_build/html/index.html"

test: $(STAMP) ## everything CI runs: notebook sync, lib tests, nbval over every notebook, strict book build
	$(PY) tools/nb.py check
	$(MAKE) --no-print-directory test-lib
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory book

test-lib: $(STAMP) ## pytest over tests/ (lib, claims, planted failures, CLI)
	$(PY) -m pytest tests -n $(JOBS) -q

test-notebooks: $(STAMP) ## re-run every notebook and compare its stored outputs (nbval, strict)
	$(PY) -m pytest $(NBVAL) -n $(JOBS) --dist loadscope -q -p no:randomly $(NOTEBOOKS)

check-notebooks: $(STAMP) ## every notebook matches its text source, was run top to bottom, stored no error
	$(PY) tools/nb.py check

notebooks: $(STAMP) ## re-execute the notebooks from their sources (NB=notebooks/src/01-convolution.md for one)
	$(PY) tools/nb.py build $(NB)

verify: $(STAMP) ## run every claim and print the ledger (ARGS="--chapter 1", "--json", "--device cuda")
	$(PY) -m convbook verify $(ARGS)

freeze: $(STAMP) ## rewrite requirements.txt from the current environment
	@{ sed -n '1,2p' requirements.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==.*/torch==2.13.0/'; echo "-e ."; } > requirements.tmp && mv requirements.tmp requirements.txt

clean: ## remove the built book (keeps .venv)
	rm -rf _build
