# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# The exact versions installed: requirements.lock (the SDK and the server extra, used by the
# Dockerfile) and requirements-test.lock (those and the test extra, used here), both with
# hashes. pyproject's base dependencies are the SDK's only; the locks carry the server's.
LOCK := requirements-test.lock
# The versions a test log shows (also in pytest's header, tests/conftest.py).
KEY_PACKAGES := lightgbm scikit-learn pandas numpy tensorflow-cpu fastapi sqlalchemy
# `make lock` re-resolves the locks with this uv; UPGRADE=--upgrade (or
# UPGRADE="--upgrade-package pandas") moves pins, otherwise existing pins are kept.
UV_VERSION ?= 0.13.9
UV := $(VENV)/.tools/bin/uv
UPGRADE ?=
LOCK_ARGS := --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--annotation-style line --custom-compile-command 'make lock' $(UPGRADE)

.PHONY: run test lint lock bench-ingest clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@# Offline, the extras' requirements must all be there already (pip check sees only
	@# the base dependencies, the SDK's).
	$(BIN)/python -m pip install --quiet --no-index 'hyperprior[server,test]' && $(BIN)/python -m pip check \
		|| { echo "$(LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	@$(BIN)/python -c 'import sys; from importlib.metadata import version; \
		print("installed from $(LOCK):", ", ".join(p + " " + version(p) for p in sys.argv[1:]))' \
		$(KEY_PACKAGES)
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
	@# mypy cannot follow the editable install's package-dir mapping: it reads the installed
	@# layout (hyperprior/db -> db/, ...) from a tree of links.
	rm -rf $(VENV)/.mypy-tree && mkdir -p $(VENV)/.mypy-tree/hyperprior
	for d in client db service training; do ln -s $(CURDIR)/$$d $(VENV)/.mypy-tree/hyperprior/$$d; done
	ln -s $(CURDIR)/hyperprior/*.py $(VENV)/.mypy-tree/hyperprior/
	cd $(VENV)/.mypy-tree && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p hyperprior

## Re-resolve both locks from pyproject.toml (keeping current pins unless UPGRADE says otherwise).
lock:
	test -x $(UV) || { $(PYTHON) -m venv $(VENV)/.tools && $(VENV)/.tools/bin/pip install --quiet uv==$(UV_VERSION); }
	$(UV) pip compile --quiet pyproject.toml --extra server $(LOCK_ARGS) -o requirements.lock
	$(UV) pip compile --quiet pyproject.toml --extra server --extra test -c requirements.lock \
		$(LOCK_ARGS) -o requirements-test.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
