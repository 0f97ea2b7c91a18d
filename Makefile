# Attention Zero To One: run the book, test it, build the site.
#
#   make lab     open the book in JupyterLab (creates .venv, installs the book's locked
#                requirements on first use: the package and its book extra, and the book's
#                own package, attention_book, from book/)
#   make test    installs the dev extra too (locked), then ruff, notebook pairing, the table of
#                contents check, pytest and every chapter re-run by nbval; rewrites no file
#   make lock    re-resolve requirements-lock.txt after a change to pyproject.toml
#   make book    build the static site into _build/html (needs Node.js and npm, see README)
#   make student the student edition into _build/student: the chapters without solutions or
#                answers (make student-book builds its site, without the Solutions part)
#   make grade   grade a class: make grade SUBMISSIONS=dir (one folder per student) -> grades.csv
#   make nbgrader  a chapter as an nbgrader assignment: make nbgrader CHAPTER=01 (a course
#                in _build/nbgrader, or NBGRADER_COURSE=dir); make nbgrader-tags rewrites the
#                chapters' nbgrader cell metadata (NB="chapters/NN_topic.ipynb ..." for some)
#   make help    every target
#
# Variables (make VAR=value ...):
#   PYTHON       the Python that creates .venv (3.10 or newer)          [python3]
#   TORCH_INDEX  an extra package index for torch, e.g. PyTorch's CPU-only wheel
#                index on Linux; empty: pip's own configuration decides   []
#   PYTEST_ARGS  extra pytest arguments, e.g. PYTEST_ARGS="-x -k attention"

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX ?=
PYTEST_ARGS ?=
NBVAL_CELL_TIMEOUT ?= 600

BIN := $(VENV)/bin
# requirements-lock.txt: the exact version of every package the book, its tests and its tools
# use (made by `make lock` from pyproject.toml and constraints.txt). Both installs take every
# version from it: `make lab` the package with its book extra, `make test` also the dev extra.
# Both install the book's own package too (book/: attention_book, the exercise checks and the
# chapters' figures), editable; it requires nothing the library's book extra does not (a test
# checks), so the lock holds its requirements as well.
BOOK_PKG := ./book
LOCK := requirements-lock.txt
STAMP_BOOK := $(VENV)/.installed-book
STAMP := $(VENV)/.installed
PIP_LOCKED := $(BIN)/python -m pip install -c $(LOCK) \
	$(if $(strip $(TORCH_INDEX)),--extra-index-url "$(TORCH_INDEX)")
# The lock is made on Linux x86-64 with Python 3.11 (what CI runs) and holds the CPU build's
# dependencies; torch's local label (+cpu) is dropped, so that `torch==2.13.0` takes the CPU
# wheel where one is offered (PyTorch's CPU index, TORCH_INDEX) and PyPI's wheel elsewhere.
LOCK_ARGS ?=
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/python -m piptools compile --quiet \
	--extra book --extra dev --constraint constraints.txt --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --annotation-style line \
	--output-file $(LOCK) $(LOCK_ARGS) pyproject.toml

# Chapter notebooks, found when a recipe runs (others may add chapters at any time).
FIND_NOTEBOOKS := find chapters -name '*.ipynb' -not -path '*/.*' -not -path '*/_build/*' 2>/dev/null | sort
FIRST_PAGE := chapters/00_how_to_use_this_book.ipynb
LINT_PATHS = $(wildcard conftest.py transformer_core book tests benchmarks chapters scripts _ext)
NBVAL_ARGS := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	--nbval-cell-timeout=$(NBVAL_CELL_TIMEOUT)
# Chapters are executed for commit with the explorers in static mode (every view pre-rendered,
# so the book site needs no kernel; see CONTRIBUTING.md), and nbval re-runs them the same way.
# A reader's JupyterLab does not set it: there the explorers are live.
STATIC_WIDGETS := TRANSFORMER_CORE_WIDGET_MODE=static
# pytest's exit status 5 means "no tests collected" (e.g. PYTEST_ARGS="-k name" selects none)
PYTEST_OK := [ $$? -eq 5 ]
NODE_STAMP := node_modules/.installed

.PHONY: help venv install install-book lock lab lint check-pairing check-toc test test-notebooks \
	test-strict execute toc book student student-book grade nbgrader nbgrader-tags clean clean-venv

help: ## list the targets
	@echo "Attention Zero To One"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-15s %s\n", $$1, $$2}'

# --- the environment --------------------------------------------------------------------------

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
	  echo "error: the book needs Python 3.10 or newer; '$(PYTHON)' is" \
	       "$$(command -v $(PYTHON) >/dev/null && $(PYTHON) --version 2>&1 | head -n1 || echo 'not found')." >&2; \
	  echo "       Install a newer Python and run e.g.: make $(or $(MAKECMDGOALS),test) PYTHON=python3.11" >&2; \
	  exit 1; }
	@echo "==> creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed. On Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	@# Editable installs from pyproject.toml need pip >= 21.3 (an already new pip is left as it is).
	@$(BIN)/python -m pip install --quiet "pip>=21.3"

# Reinstall only when the requirements or the lock change: a second `make test` starts at once.
CHECK_VENV_PYTHON := $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "error: $(VENV) uses Python older than 3.10; run 'make clean-venv' and try again" >&2; exit 1; }

# What a reader needs: transformer_core and the book extra, at the locked versions, and the book's
# own package (attention_book).
$(STAMP_BOOK): pyproject.toml $(BOOK_PKG)/pyproject.toml $(LOCK) | $(BIN)/python
	@$(CHECK_VENV_PYTHON)
	@echo "==> installing transformer_core with the book extra and attention_book into $(VENV) (versions from $(LOCK))"
	$(PIP_LOCKED) -e ".[book]" -e $(BOOK_PKG)
	@touch $@

# What the tests need as well: every package of the lock (the dev extra too), then pip check.
$(STAMP): pyproject.toml $(BOOK_PKG)/pyproject.toml $(LOCK) | $(BIN)/python
	@$(CHECK_VENV_PYTHON)
	@echo "==> installing $(LOCK), transformer_core with the book and dev extras and attention_book into $(VENV)"
	$(PIP_LOCKED) -r $(LOCK) -e ".[book,dev]" -e $(BOOK_PKG)
	$(BIN)/python -m pip check
	@if $(BIN)/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then \
	  echo "note: $(VENV) holds the CUDA build of torch (several GB). A CPU-only machine needs only"; \
	  echo "      the CPU build: make clean-venv, then run make again with TORCH_INDEX set to"; \
	  echo "      PyTorch's CPU wheel index (see README)."; fi
	@touch $@

venv: $(BIN)/python ## create .venv (Python >= 3.10) if it is missing

install: $(STAMP) ## install the locked package with its book and dev extras, and attention_book, into .venv (only when needed)

install-book: $(STAMP_BOOK) ## install the locked package with its book extra, and attention_book: what make lab needs

lock: $(BIN)/python ## re-resolve requirements-lock.txt from pyproject.toml (LOCK_ARGS=--upgrade: newest versions)
	@$(BIN)/python -c "import piptools" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet $(if $(wildcard $(LOCK)),-c $(LOCK)) pip-tools
	@echo "==> pip-compile pyproject.toml (extras book, dev; constraints.txt) -> $(LOCK)"
	$(PIP_COMPILE)
	@sed -i.bak -E 's/^(torch==[^+ ]+)\+[A-Za-z0-9.]+/\1/' $(LOCK) && rm -f $(LOCK).bak

# --- reading ----------------------------------------------------------------------------------

# The reader's JupyterLab (scripts/lab/): the file browser hides the chapters' .md twins
# (NN_topic.md; jupytext still pairs them on save) and the first start asks nothing about news.
# The user's own Jupyter settings still apply on top.
LAB_CONFIG := --config=scripts/lab/jupyter_server_config.json \
	--LabApp.app_settings_dir="$(CURDIR)/scripts/lab/settings"

lab: install-book ## open the book in JupyterLab
	@start=$$([ -f $(FIRST_PAGE) ] && echo $(FIRST_PAGE) || echo chapters); \
	echo "==> JupyterLab on $$start (Ctrl-C twice to stop)"; \
	exec $(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_CONFIG) $(LAB_ARGS) "$$start"

# --- testing ----------------------------------------------------------------------------------

lint: install ## ruff over the packages (transformer_core, book/attention_book), tests, benchmarks and the chapter notebooks
	@echo "==> ruff check $(LINT_PATHS)"
	@$(BIN)/ruff check $(LINT_PATHS)

check-pairing: install ## every chapter .ipynb and its .md twin hold the same cells
	@echo "==> notebook pairing (.ipynb <-> .md)"
	@$(BIN)/python -m pytest -q --no-header -p no:cacheprovider tests/test_notebook_pairing.py

check-toc: install ## _toc.yml lists every chapter notebook (make toc rewrites it)
	@echo "==> table of contents (scripts/update_toc.py --check)"
	@$(BIN)/python scripts/update_toc.py --check || { \
	  echo "error: _toc.yml is out of date: run 'make toc' and commit _toc.yml" >&2; exit 1; }

# make test checks what it could regenerate (_toc.yml, the .md twins) and rewrites nothing:
# after it a clean clone is still clean (.ci/run checks git status).
test: lint check-pairing check-toc ## ruff, pairing, table of contents, then pytest: tests/ (browser tests too) and every chapter through nbval
	@unset MPLBACKEND; notebooks=$$($(FIND_NOTEBOOKS)); failed=0; \
	echo "==> pytest tests"; \
	$(BIN)/python -m pytest tests $(PYTEST_ARGS) || $(PYTEST_OK) || failed=1; \
	if [ -z "$$notebooks" ]; then \
	  echo "==> nbval skipped: no chapter notebooks yet"; \
	else \
	  echo "==> nbval over $$(echo "$$notebooks" | wc -l) notebooks (widgets in static mode)"; \
	  $(STATIC_WIDGETS) $(BIN)/python -m pytest chapters $(NBVAL_ARGS) $(PYTEST_ARGS) \
	    || $(PYTEST_OK) || failed=1; \
	fi; \
	exit $$failed

test-notebooks: install ## only re-run the chapters with nbval
	@unset MPLBACKEND; notebooks=$$($(FIND_NOTEBOOKS)); \
	if [ -z "$$notebooks" ]; then echo "no chapter notebooks yet"; exit 0; fi; \
	$(STATIC_WIDGETS) $(BIN)/python -m pytest chapters $(NBVAL_ARGS) $(PYTEST_ARGS)

test-strict: install ## nbval twice, generic CPU kernels and one thread: finds outputs that vary by machine
	@echo "==> nbval with ATEN_CPU_CAPABILITY=default"
	@ATEN_CPU_CAPABILITY=default $(MAKE) --no-print-directory test-notebooks
	@echo "==> nbval with OMP_NUM_THREADS=1"
	@OMP_NUM_THREADS=1 $(MAKE) --no-print-directory test-notebooks

execute: install ## re-run chapter notebooks in place for commit: make execute NB="chapters/NN_topic.ipynb ..."
	@[ -n "$(NB)" ] || { echo 'usage: make execute NB="chapters/NN_topic.ipynb ..."' >&2; exit 1; }
	@unset MPLBACKEND; for nb in $(NB); do \
	  echo "==> executing $$nb (widgets in static mode)"; \
	  $(STATIC_WIDGETS) $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$$nb"; \
	done

# --- the site ---------------------------------------------------------------------------------

toc: install ## rewrite _toc.yml from the chapter notebooks that exist
	@$(BIN)/python scripts/update_toc.py

# The site serves require.js, the widget manager and MathJax itself (offline): npm packages
# pinned by package-lock.json, installed when the lock file changes.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { \
	  echo "error: make book needs Node.js and npm, for the scripts the site serves itself" >&2; \
	  echo "       (require.js, the widget manager, MathJax). Debian/Ubuntu: apt-get install nodejs npm" >&2; \
	  exit 1; }
	@echo "==> npm ci (require.js, @jupyter-widgets/html-manager, MathJax into node_modules/)"
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

book: install $(NODE_STAMP) toc ## build the static site strictly (warnings are errors) into _build/html
	@[ -f $(FIRST_PAGE) ] || { \
	  echo "error: $(FIRST_PAGE) does not exist yet: the book has no first page to build." >&2; exit 1; }
	$(BIN)/jupyter-book build --all -W -n --keep-going .
	@echo
	@echo "The book is built; it works offline. Open it in a browser:"
	@echo "  file://$(CURDIR)/_build/html/index.html"
	@echo "or serve it: $(BIN)/python -m http.server -d _build/html 8000  ->  http://localhost:8000"

# --- teaching ---------------------------------------------------------------------------------

STUDENT_DIR := _build/student

student: install-book ## the student edition into _build/student: the chapters without solutions or answers, and the student site's source
	@$(BIN)/python scripts/student_edition.py --out $(STUDENT_DIR)

student-book: student $(NODE_STAMP) ## build the student site (no Solutions part) into _build/student/_build/html
	$(BIN)/jupyter-book build --all -W -n --keep-going $(STUDENT_DIR)
	@echo "The student site: file://$(CURDIR)/$(STUDENT_DIR)/_build/html/index.html"

GRADE_TIMEOUT ?= 600
grade: install-book ## grade a class: make grade SUBMISSIONS=dir (one folder per student) -> grades.csv
	@[ -n "$(SUBMISSIONS)" ] || { echo 'usage: make grade SUBMISSIONS=dir [GRADES=grades.csv] [GRADE_TIMEOUT=600]' >&2; exit 1; }
	@$(BIN)/python scripts/grade.py "$(SUBMISSIONS)" --out "$(or $(GRADES),grades.csv)" --timeout $(GRADE_TIMEOUT)

# nbgrader (the dev extra): the chapters' exercise cells carry its metadata (scripts/nbgrader_metadata.py);
# scripts/nbgrader_course.py releases a chapter in a course directory with the book's settings
# (scripts/nbgrader_book_config.py). nbgrader runs `alembic` by name: .venv/bin goes first on PATH.
NBGRADER_COURSE ?= _build/nbgrader
nbgrader: install ## a chapter as an nbgrader assignment: make nbgrader CHAPTER=01 [NBGRADER_COURSE=dir] (source/, release/, gradebook.db)
	@[ -n "$(CHAPTER)" ] || { echo 'usage: make nbgrader CHAPTER=01 [NBGRADER_COURSE=_build/nbgrader]' >&2; exit 1; }
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/nbgrader_course.py "$(CHAPTER)" --course "$(NBGRADER_COURSE)"

nbgrader-tags: install ## write nbgrader's metadata into the chapters' exercise cells, both twins (NB="chapters/NN_topic.ipynb ..." for some)
	@$(BIN)/python scripts/nbgrader_metadata.py $(NB)

# --- cleaning ---------------------------------------------------------------------------------

clean: ## remove the site, caches and test artifacts (keeps .venv)
	rm -rf _build .pytest_cache .ruff_cache .hypothesis test-artifacts *.egg-info book/*.egg-info
	find . -path './.*' -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

clean-venv: ## remove .venv as well (the next make reinstalls)
	rm -rf $(VENV)
