PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help bench-latency install tools kafka run test test-unit test-fast lint bench clean

install: $(STAMP) ## create .venv/ with the package and its test tools

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

tools: ## install the operator tools the tests need if missing, and check the dashboards against Grafana's schema
	bash scripts/ensure-tools.sh
	bash tools/grafana-schema/check.sh

kafka: ## fetch Apache Kafka's jars into .lapverse/kafka/ (needs Java 17+, Maven)
	bash scripts/fetch-kafka.sh

run: install ## embedded broker, worker, gateway, stand-ins and the demo tenant, in one command
	$(BIN)/lapverse run

# Everything on Apache Kafka; the integration and end-to-end tiers again on Apache Kafka with
# exactly-once transactions (the crash drills run in both modes in the first pass, and the
# dashboard check needs only one run); then the
# integration tier again on Tansu, the `make run` default.
test: install tools kafka ## all tiers on Apache Kafka, again exactly once, integration on Tansu
	LAPVERSE_EMBEDDED_BROKER=kafka $(BIN)/pytest -q tests
	LAPVERSE_EMBEDDED_BROKER=kafka LAPVERSE_PROCESSING_GUARANTEE=exactly_once \
		$(BIN)/pytest -q tests/integration tests/e2e --ignore tests/integration/test_crash.py \
		--ignore tests/integration/test_dashboards_live.py
	LAPVERSE_EMBEDDED_BROKER=tansu $(BIN)/pytest -q -m 'kafka and not slow' tests/integration

test-fast: install tools kafka ## every tier but the crash drills, on Apache Kafka
	LAPVERSE_EMBEDDED_BROKER=kafka $(BIN)/pytest -q -m 'not slow' tests

test-unit: install ## the unit tests only (no broker)
	$(BIN)/pytest -q tests/unit

lint: install ## ruff (lint and format check) and mypy strict
	$(BIN)/ruff check lapverse_streams agents tests bench scripts examples
	$(BIN)/ruff format --check lapverse_streams agents tests bench scripts examples
	$(BIN)/mypy

# One table, each figure the median of 3 repetitions (bench/README.md), on Apache Kafka unless
# LAPVERSE_EMBEDDED_BROKER=tansu; quicker: make bench BENCH_ARGS="--repeat 1 --events 5000 --duration 10"
bench: install kafka ## spec section 8 (admission, raw loop, gateway latency, bulk, recovery...); writes bench/results.json
	LAPVERSE_EMBEDDED_BROKER=$${LAPVERSE_EMBEDDED_BROKER:-kafka} $(BIN)/python -m bench.run $(BENCH_ARGS)

bench-latency: install kafka ## gateway latency alone, at 200 and 500 req/s, on Tansu and Apache Kafka; writes bench/latency-results.json
	$(BIN)/python -m bench.latency
	LAPVERSE_EMBEDDED_BROKER=kafka $(BIN)/python -m bench.latency

clean: ## remove .venv/ and the tool caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

help: ## list the targets, one line each (installs nothing)
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
