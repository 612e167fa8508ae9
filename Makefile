# allocator — developer entry points.  Quick start: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
PORT   ?= 5000
LINT_PATHS := allocator kits tests bench migrations tools wsgi.py setup.py

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck check serve clean venv wheel wheel-check sbom audit-deps validation

help:
	@echo "make demo       install into $(VENV), create a demo database and serve http://127.0.0.1:$(PORT)"
	@echo "make test       install with test extras and run the whole test suite (PYTEST_WORKERS=auto)"
	@echo "make lint       ruff (with security rules) and mypy"
	@echo "make check      lint + test (what CI runs)"
	@echo "make validation the whole suite with JUnit output, then the traceability matrix in $(VALIDATION_DIR)/ (VAL-01)"
	@echo "make wheel      build the wheel a hospital installs, in dist/"
	@echo "make wheel-check build the wheel, install it outside the checkout and run it from another folder"
	@echo "make sbom       CycloneDX SBOM of the wheel and its pinned runtime dependencies, in dist/"
	@echo "make audit-deps known vulnerabilities in the pinned dependencies (pip-audit over constraints.txt)"
	@echo "make clean      remove the virtualenv and caches (never the instance/ folder)"

# The venv is rebuilt when the dependency declarations change.
$(BIN)/.installed: pyproject.toml setup.py constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "allocator needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $@

$(BIN)/.installed-release: $(BIN)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[release]'
	touch $@

venv: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/allocator demo --port $(PORT)

# pytest-xdist: one worker per core by default; PYTEST_WORKERS=0 runs the tests in one process.
# loadfile sends each test file to one worker, so that a world kept for a file's tests
# (tests.conftest.Kept: the leak crawl, the page-words walk) is built once per backend. (The
# xdist_group markers used before were never applied: each world was built on both workers.)
PYTEST_WORKERS ?= auto
test: $(BIN)/.installed-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The validation report (VAL-01): the suite once, with JUnit XML, then the traceability matrix (HTML,
# PDF, CSV). The report is written even when tests fail; the target fails when a test failed or a
# MUST requirement has no passing test.
VALIDATION_DIR ?= build/validation
validation: $(BIN)/.installed-test
	mkdir -p $(VALIDATION_DIR)
	$(MAKE) test PYTEST_ARGS="$(PYTEST_ARGS) --junitxml=$(VALIDATION_DIR)/junit.xml"; tests=$$?; \
	$(BIN)/allocator validation-report --junit $(VALIDATION_DIR)/junit.xml --out $(VALIDATION_DIR); report=$$?; \
	test $$tests -eq 0 && test $$report -eq 0

lint: $(BIN)/.installed-test
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

typecheck: $(BIN)/.installed-test
	$(BIN)/mypy

check: lint test

# The wheel a hospital installs; checked from a fresh virtual environment outside the checkout.
wheel: $(BIN)/.installed
	PYTHON=$(BIN)/python .ci/build-wheel

wheel-check: $(BIN)/.installed
	PYTHON=$(BIN)/python .ci/wheel-check

sbom: $(BIN)/.installed-release
	PYTHON=$(BIN)/python .ci/sbom

audit-deps: $(BIN)/.installed-release
	$(BIN)/python tools/audit_deps.py constraints.txt $(AUDIT_ARGS)

serve: $(BIN)/.installed
	$(BIN)/allocator serve --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage
