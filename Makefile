# Two commands: `make demo` and `make test`. Both set up .venv first (once).
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint schemas bench clean

$(STAMP): pyproject.toml requirements/constraints.txt requirements/debian.txt scripts/setup.sh
	VENV=$(VENV) ./scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/mmdata demo

test: $(STAMP)
	./scripts/setup_llamafactory.sh
	./scripts/setup_labelstudio.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/mmdata schema --write schemas/

bench: $(STAMP)
	$(BIN)/mmdata bench

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
