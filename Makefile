# taskloom developer Makefile
#
#   make setup      create .venv (if missing) and install '.[all,dev]' (only when pyproject.toml changed)
#   make test       lint -> typecheck -> docs -> pytest with branch coverage -> smoke on Python 3.10 / 3.13
#   make test-load  the tests that start processes, threads or clocks, twice, with every CPU busy
#   make test-ft    the suite's core on a free-threaded CPython 3.13t (built once into build/), GIL off
#   make bench      quick benchmark run, writes bench.html
#   make docs       build the documentation site into site/ (mkdocs build --strict); open site/index.html
#   make lint       ruff check
#   make typecheck  mypy --strict (config in pyproject.toml)
#   make pythons    show which interpreters the smoke runs would use
#   make clean      remove virtualenvs, build artefacts, coverage data, caches, bench output, site/
#
# Every recipe runs as ONE bash script with `set -euo pipefail`, so any failing command stops make.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
# Targets in `test` must run in the order listed, even under `make -j`.
.NOTPARALLEL:
.DEFAULT_GOAL := test

# ---------------------------------------------------------------------------
# Variables (override on the command line or in the environment, e.g. `make PYTHON=python3.12`)
# ---------------------------------------------------------------------------

# Interpreter used to create .venv: python3.11 if it exists *and runs* (a pyenv shim may exist but
# fail), else python3.
PYTHON ?= $(shell python3.11 -c 'pass' >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV ?= .venv
VENV_BIN := $(VENV)/bin
VENV_PY := $(VENV_BIN)/python
STAMP := $(VENV)/.installed
EXTRAS ?= all,dev

# Python versions for the smoke runs, and where to look for them besides PATH.
SMOKE_VERSIONS ?= 3.10 3.13
PYENV_ROOT ?= /root/.pyenv

# Directories that ruff checks (only those that exist are passed; see `lint`).
LINT_DIRS ?= src tests benchmarks examples scripts

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

# Shell function: `find_python 3.10` prints the path of a working interpreter for that exact
# X.Y version (first `pythonX.Y` on PATH, else the newest $(PYENV_ROOT)/versions/X.Y*/bin/python),
# or prints nothing. Each candidate is executed, so broken pyenv shims are skipped.
define FIND_PYTHON
find_python() {
	local v="$$1" cand
	local -a cands=()
	if cand="$$(command -v "python$$v" 2>/dev/null)"; then
		cands+=("$$cand")
	fi
	while IFS= read -r cand; do
		if [[ -n "$$cand" ]]; then cands+=("$$cand"); fi
	done < <(compgen -G "$(PYENV_ROOT)/versions/$$v*/bin/python" | sort -V -r || true)
	for cand in "$${cands[@]}"; do
		if "$$cand" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$$v' else 1)" \
			>/dev/null 2>&1; then
			echo "$$cand"
			return 0
		fi
	done
	return 0
}
endef

.PHONY: venv setup lint typecheck cov smoke test test-load bench pythons clean

# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------

# Create the virtualenv only when its interpreter is missing.
$(VENV_PY):
	echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	$(PYTHON) -m venv $(VENV)

# (Re)install only when pyproject.toml is newer than the stamp. The venv is an order-only
# prerequisite: its interpreter is a symlink whose mtime says nothing useful; a recreated
# venv has no stamp anyway.
$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install -e '.[$(EXTRAS)]'
	touch $(STAMP)

venv setup: $(STAMP)

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

lint: setup
	$(VENV_BIN)/ruff check $$(for d in $(LINT_DIRS); do [[ -d "$$d" ]] && echo "$$d"; done; true)

typecheck: setup
	$(VENV_BIN)/mypy src/taskloom tests/typing_checks.py

# Main test run with branch coverage (settings in [tool.coverage.*]). parallel=true means each
# process writes its own data file, hence `combine`. Any pytest failure - including exit code 5,
# "no tests collected" - fails the target; the report is still printed first.
cov: setup
	$(VENV_BIN)/coverage erase
	rc=0
	$(VENV_BIN)/coverage run -m pytest || rc=$$?
	if [[ $$rc -eq 0 ]]; then
		$(VENV_BIN)/coverage combine
		$(VENV_BIN)/coverage report
	else
		$(VENV_BIN)/coverage combine >/dev/null 2>&1 && $(VENV_BIN)/coverage report || true
		echo "pytest failed with exit code $$rc" >&2
		exit $$rc
	fi

# Run the tests marked `smoke` on each of SMOKE_VERSIONS, each in its own .venv-X.Y
# (created when missing, reinstalled when pyproject.toml is newer than its stamp).
# A missing interpreter is skipped; "no tests collected" (exit 5) is tolerated here only.
smoke:
	@$(FIND_PYTHON)
	for v in $(SMOKE_VERSIONS); do
		py="$$(find_python "$$v")"
		if [[ -z "$$py" ]]; then
			echo "SKIP smoke on Python $$v: interpreter not found"
			continue
		fi
		venv=".venv-$$v"
		echo "=== smoke on Python $$v ($$py) in $$venv"
		[[ -x "$$venv/bin/python" ]] || "$$py" -m venv "$$venv"
		if [[ pyproject.toml -nt "$$venv/.installed" ]]; then
			"$$venv/bin/python" -m pip install -e '.[dev,shared]'
			touch "$$venv/.installed"
		fi
		rc=0
		"$$venv/bin/python" -m pytest -m "smoke and not dask" -q || rc=$$?
		if [[ $$rc -eq 5 ]]; then
			echo "WARNING: no smoke tests collected on Python $$v"
		elif [[ $$rc -ne 0 ]]; then
			echo "smoke tests failed on Python $$v (exit $$rc)" >&2
			exit $$rc
		fi
	done

# Show which interpreters the smoke runs would use.
pythons:
	@$(FIND_PYTHON)
	echo "venv interpreter: $(PYTHON) -> $$(command -v $(PYTHON) || echo missing)"
	for v in $(SMOKE_VERSIONS); do
		py="$$(find_python "$$v")"
		echo "Python $$v: $${py:-not found}"
	done

# Order matters (.NOTPARALLEL): lint, typecheck, docs site, coverage run, smoke.
test: setup lint typecheck docs cov smoke

# The suite's promises must hold on a busy machine, not only on an idle one: the tests that start
# processes, threads or clocks run LOAD_ROUNDS times while one CPU-bound process per CPU runs
# beside them (started here, stopped on any exit). A test that passes only when idle fails here.
LOAD_TESTS ?= tests/faults tests/test_processes.py tests/test_executor.py tests/test_imap.py \
	tests/test_pipeline.py tests/test_io.py tests/test_dask.py tests/test_joblib_backend.py tests/test_handover.py
LOAD_ROUNDS ?= 2
test-load: setup
	cpus="$$(nproc)"
	busy=()
	trap 'kill "$${busy[@]}" 2>/dev/null || true' EXIT
	for _ in $$(seq "$$cpus"); do
		$(VENV_PY) -c 'while True: pass' &
		busy+=("$$!")
	done
	for round in $$(seq $(LOAD_ROUNDS)); do
		echo "=== test-load: round $$round of $(LOAD_ROUNDS), $$cpus busy processes beside the tests"
		$(VENV_PY) -m pytest -q $(LOAD_TESTS)
	done

# The suite's core on a free-threaded CPython ("3.13t", no GIL): the interpreter is built once from
# Debian's source package into FT_DIR (scripts/build_free_threaded_python.sh; later runs reuse it),
# with a venv of its own holding taskloom[shared] and the test tools (--prefer-binary: the newest
# numpy with a free-threaded wheel, not a 10-minute build of the newest sdist; hypothesis 6.100.0,
# the last that installs without Rust). PYTHON_GIL=0 keeps the GIL off even if an extension
# module asks for it, the check below says so, and TASKLOOM_EXPECT_GIL=0 makes
# tests/test_free_threaded.py fail if anything turned it back on during the run.
FT_DIR ?= build/free-threaded
FT_VENV := $(FT_DIR)/venv
FT_TESTS ?= tests/test_free_threaded.py tests/test_behaviour.py tests/test_engine_seam.py tests/test_imap.py \
	tests/test_processes.py tests/test_run_scheduler.py tests/test_run_delivery.py tests/test_run_failures.py \
	tests/test_run_policy.py tests/test_async_engine.py tests/faults tests/test_executor.py \
	tests/test_sync.py tests/test_testing.py tests/test_shared.py tests/test_workload.py tests/test_handover.py
FT_DESELECT ?=
.PHONY: test-ft
test-ft:
	scripts/build_free_threaded_python.sh $(FT_DIR)
	[[ -x $(FT_VENV)/bin/python ]] || $(FT_DIR)/python/bin/python3.13t -m venv $(FT_VENV)
	if [[ pyproject.toml -nt $(FT_VENV)/.installed ]]; then
		$(FT_VENV)/bin/python -m pip install -q --prefer-binary -e '.[shared]' \
			pytest pytest-timeout hypothesis==6.100.0 threadpoolctl
		touch $(FT_VENV)/.installed
	fi
	export PYTHON_GIL=0 TASKLOOM_EXPECT_GIL=0
	$(FT_VENV)/bin/python -c 'import sys, sysconfig, numpy, psutil, cloudpickle, taskloom; \
		assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"; \
		assert not sys._is_gil_enabled(), "the GIL is on"; print("free-threaded, GIL off:", sys.version)'
	$(FT_VENV)/bin/python -m pytest -q -m "not dask" -p no:cacheprovider $(FT_DESELECT) $(FT_TESTS)

# ---------------------------------------------------------------------------
# Other
# ---------------------------------------------------------------------------

bench: setup
	$(VENV_BIN)/taskloom bench --quick --report bench.html

# The documentation site (mkdocs.yml): the pages of docs/ and the API reference that mkdocstrings
# renders from the docstrings, written to site/. --strict turns every warning into a failure: a broken
# link or #anchor, a cross-reference or `:::` entry to a name that does not exist, a page missing from
# the nav. tests/test_docs.py checks what the build does not (DEVELOPERS.md, "Documentation").
# NO_MKDOCS_2_WARNING silences the Material theme's notice about its successor.
.PHONY: docs
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV_BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf .venv .venv-* build dist *.egg-info src/*.egg-info
	rm -rf .coverage .coverage.* htmlcov bench.html bench.json site
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
