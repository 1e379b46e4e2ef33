# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test lint demo broker-start broker-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[trainer,dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# make demo [SIZE=quick|book] [RATE=tx/s] [DURATION=s] [DEMO_ARGS="--reuse-bundle ..."]; see python -m ops.demo --help
demo: $(STAMP)
	$(PY) -m ops.demo $(strip $(if $(SIZE),--size $(SIZE)) $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION)) $(DEMO_ARGS))

broker-start: $(STAMP)
	$(PY) -m ops.kafka start

broker-stop: $(STAMP)
	$(PY) -m ops.kafka stop

clean:
	-$(PY) -m ops.kafka stop
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
