# The two commands of the quick start: `make demo` (the main job) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit lint format services-up services-down clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)  ## the main job: two closed-loop cycles (embedded unless CRM_KAFKA_BOOTSTRAP is set)
	$(BIN)/crm demo $(DEMO_ARGS)

test: $(STAMP)  ## lint, then unit and integration tests on real Kafka + PostgreSQL
	$(BIN)/ruff check .
	$(BIN)/pytest

unit: $(STAMP)  ## unit tests only: no services, seconds
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas events crm projections producers auth read_api privacy bench tests

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

services-up: $(STAMP)
	$(BIN)/crm dev up

services-down: $(STAMP)
	$(BIN)/crm dev down

clean:
	rm -rf $(VENV) .crm .pytest_cache .ruff_cache .mypy_cache
