# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench-ingest clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## Install, migrate, load the seed history and its surrogate (once), then serve on SQLite.
run: $(VENV)/.installed
	$(BIN)/hyperprior db upgrade
	$(BIN)/hyperprior db seed
	$(BIN)/hyperprior serve --host $(HOST) --port $(PORT)

## Install, lint, then run the default test suite (SQLite and the PostgreSQL on 127.0.0.1:5432).
test: $(VENV)/.installed
	@# The dashboard test drives a real headless Chromium (Debian's package); as root, install it.
	@command -v chromium >/dev/null 2>&1 || [ "$$HYPERPRIOR_TEST_BROWSER" = skip ] || [ "$$(id -u)" != 0 ] \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
