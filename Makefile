PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools kafka run test test-unit test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

tools:
	bash scripts/ensure-tools.sh

kafka:
	bash scripts/fetch-kafka.sh

run: install
	$(BIN)/lapverse run

# Everything on Apache Kafka; the integration and end-to-end tiers again on Apache Kafka with
# exactly-once transactions (the crash drills run in both modes in the first pass); then the
# integration tier again on Tansu, the `make run` default.
test: install tools kafka
	LAPVERSE_EMBEDDED_BROKER=kafka $(BIN)/pytest -q tests
	LAPVERSE_EMBEDDED_BROKER=kafka LAPVERSE_PROCESSING_GUARANTEE=exactly_once \
		$(BIN)/pytest -q tests/integration tests/e2e --ignore tests/integration/test_crash.py
	LAPVERSE_EMBEDDED_BROKER=tansu $(BIN)/pytest -q -m 'kafka and not slow' tests/integration

test-fast: install tools kafka
	LAPVERSE_EMBEDDED_BROKER=kafka $(BIN)/pytest -q -m 'not slow' tests

test-unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check lapverse_streams agents tests bench scripts
	$(BIN)/ruff format --check lapverse_streams agents tests bench scripts
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
