# xaistudy — the README's two commands are `make demo` and `make test`.
# Both create (or reuse) the virtual environment $(VENV) from the pins in pyproject.toml.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PINS := $(shell $(PYTHON) scripts/requirements.py | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(PINS)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv demo test test-services lint bench bench-explainers bench-analysis bench-load bench-pipeline browser-deps deploy-check compose-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python scripts/requirements.py > $(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet -r $(VENV)/requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

# Debian's Chromium and its driver, for the browser tests (installed only when missing).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

demo: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo --host $(HOST) --port $(PORT)

test: venv browser-deps
	$(BIN)/python -m pytest -m "not services" -q

# Needs PostgreSQL and Redis (see .ci/run, which starts them and sets the URLs).
test-services: venv
	$(BIN)/python -m pytest -m services -q

lint: venv
	$(BIN)/ruff check .

# Benchmarks print figures; none of them passes or fails on time.
bench: venv
	$(BIN)/python bench/explainers.py --quick
	$(BIN)/python bench/metrics.py --quick
	$(BIN)/python bench/analysis_core.py

bench-explainers: venv
	$(BIN)/python bench/explainers.py

bench-analysis: venv
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/xaistudy_bench} $(BIN)/python bench/analysis.py

bench-load: venv
	$(BIN)/python bench/load.py

bench-pipeline: venv
	$(BIN)/python bench/pipeline.py

deploy-check: venv
	DJANGO_SETTINGS_MODULE=xaistudy.settings_production DJANGO_SECRET_KEY=ci-$(shell head -c 96 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9' | cut -c1-64) \
	  DJANGO_ALLOWED_HOSTS=xaistudy.example.org $(BIN)/python manage.py check --deploy --fail-level WARNING

compose-check:
	DJANGO_SECRET_KEY=compose-check docker-compose -f docker/compose.yml config --quiet

clean:
	rm -rf var
