# The two commands a newcomer types: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
FUZZ_ARGS ?=
# CI fuzzes with one seed, so that a red build is the code's doing and can be replayed; `make fuzz`
# draws a new seed each run (printed at the end) to explore further.
FUZZ_SEED ?= 20261128
TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
E2E_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432

.PHONY: run run-prod test browser test-postgres e2e e2e-postgres fuzz fuzz-ci bench bench-compare bench-ab lint format typecheck migrate install install-dev lock audit clean

run: $(VENV)/.installed-run  ## create .venv, install, migrate the SQLite database, serve on :8000
	$(BIN)/incident-management serve --host $(HOST) --port $(PORT)

# Production: ENVIRONMENT=production, so SECRET_KEY must be yours (32+ random characters; this
# never makes one up), and DATABASE_URL (environment or .env) must be PostgreSQL, checked first
# with the production checks off so that a wrong database is what is said. Settings of gunicorn:
# app/gunicorn_conf.py (GUNICORN_BIND, WEB_CONCURRENCY, GUNICORN_GRACEFUL_TIMEOUT, …).
run-prod: $(VENV)/.installed-run  ## migrate, then serve under gunicorn (app/gunicorn_conf.py) on PostgreSQL; needs DATABASE_URL and SECRET_KEY
	@ENVIRONMENT=development $(BIN)/python -c 'import sys; from app.core.config import settings_or_exit; \
	settings_or_exit().async_database_url.startswith("postgresql") or sys.exit( \
	"run-prod: DATABASE_URL must be PostgreSQL (postgresql://user:password@host/db); refusing to start")'
	ENVIRONMENT=production $(BIN)/incident-management migrate
	ENVIRONMENT=production exec $(BIN)/gunicorn -c python:app.gunicorn_conf app.main:app

test: $(VENV)/.installed-dev browser  ## create .venv with the dev extras and run the whole suite
	$(BIN)/pytest $(PYTEST_ARGS)

# The console's browser tests drive Debian's Chromium through Playwright (never a downloaded one).
browser:  ## install Debian's chromium (/usr/bin/chromium) if missing: apt-get, as root or with sudo
	@test -x /usr/bin/chromium || { \
	  echo "Installing Debian's chromium for the console's browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; }

test-postgres: $(VENV)/.installed-dev browser  ## the suite on PostgreSQL only (TEST_POSTGRES_URL)
	TEST_DATABASE_URL=$(TEST_POSTGRES_URL) $(BIN)/pytest --backend postgresql $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy run_e2e_tests.py scripts bench tests/e2e tests/support
	$(BIN)/hadolint Dockerfile

bench: $(VENV)/.installed-dev  ## every performance scenario on PostgreSQL (BENCH_POSTGRES_URL): report in bench/results/, docs/performance.md's table rewritten
	$(BIN)/python -m bench

bench-compare: $(VENV)/.installed-dev  ## ratios per figure between two reports, raw and calibrated: make bench-compare A=… B=…
	$(BIN)/python -m bench compare $(A) $(B)

# Two commits' servers measured alternately (A B, B A, A B …) by this checkout's harness, each from a
# temporary worktree of it: make bench-ab A=ce04e5c B=HEAD [ONLY=ingestion,incident_list] [ROUNDS=3]
bench-ab: $(VENV)/.installed-dev  ## two commits alternately, B/A per figure with its spread: make bench-ab A=… B=… [ONLY=…] [ROUNDS=n]
	$(BIN)/python -m bench ab $(A) $(B) $(if $(ONLY),--only $(ONLY)) $(if $(ROUNDS),--rounds $(ROUNDS))

e2e: $(VENV)/.installed-dev  ## the end-to-end run against a live server on SQLite (run_e2e_tests.py)
	$(BIN)/python run_e2e_tests.py --report e2e-report.json

e2e-postgres: $(VENV)/.installed-dev  ## the same on PostgreSQL (E2E_POSTGRES_URL: a server; a database is made and dropped)
	$(BIN)/python run_e2e_tests.py --database-url $(E2E_POSTGRES_URL) --report e2e-report-postgres.json

fuzz: $(VENV)/.installed-dev  ## Schemathesis on every operation, 300 cases each, against a live server on SQLite (FUZZ_ARGS: more options)
	$(BIN)/python scripts/fuzz_api.py --max-examples 300 $(FUZZ_ARGS)

fuzz-ci: $(VENV)/.installed-dev  ## the same, bounded for CI: 25 cases per operation, a 150 s budget, a fixed seed (FUZZ_SEED)
	$(BIN)/python scripts/fuzz_api.py --max-examples 25 --max-time 150 --seed $(FUZZ_SEED) $(FUZZ_ARGS)

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(VENV)/.installed-run
	$(BIN)/incident-management migrate

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

lock:  ## re-pin requirements*.txt from pyproject.toml's ranges in throw-away environments
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q .
	{ echo "# Pinned runtime dependencies (a lock of pyproject.toml's ranges); regenerate with 'make lock'."; \
	  .lock-venv/bin/pip freeze --exclude incident-management; echo "-e ."; } > requirements.txt
	.lock-venv/bin/pip install -q ".[dev]"
	{ echo "# Pinned development dependencies; regenerate with 'make lock'."; echo "-r requirements.txt"; \
	  .lock-venv/bin/pip freeze --exclude incident-management | grep -vxF -f requirements.txt; \
	  echo "-e .[dev]"; } > requirements-dev.txt
	rm -rf .lock-venv

# Every pin of both locks (not the project itself) against PyPI's vulnerability data, as pinned: no
# resolution, no environment built. Fails on a finding, and on a pin it could not check (--strict).
# Not in .ci/run: an advisory published tomorrow would fail unrelated changes; the GitHub workflow
# runs it as a job of its own (failing only the weekly run).
audit: $(VENV)/.installed-dev  ## pip-audit of requirements.txt and requirements-dev.txt (needs PyPI's JSON API)
	@pins=$$(mktemp); trap 'rm -f "$$pins"' EXIT; \
	grep -hvE '^-[er] ' requirements.txt requirements-dev.txt > "$$pins"; \
	$(BIN)/pip-audit --vulnerability-service pypi --requirement "$$pins" --no-deps --disable-pip \
	    --strict --progress-spinner off

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache htmlcov .coverage
