# The two commands a new user runs (README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: deps venv test unit demo clean

deps:
	bash scripts/install-deps.sh

$(BIN)/lbgen: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/lbgen

test: deps venv
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: deps venv
	bash examples/demo.sh

clean:
	rm -rf $(VENV) *.egg-info
