# The two commands a new user runs (README): `make demo` and `make test`. On a fresh Debian 12
# machine as root both install what they need first (Debian packages, a virtualenv in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Each xdist worker starts its own etcd and dockerd (session fixtures), so 2 workers fit 2 vCPUs.
WORKERS ?= 2
PYTEST_ARGS ?=
# Written only after a complete install: an interrupted `pip install` is redone on the next run.
STAMP := $(VENV)/.lbgen-installed

.PHONY: deps venv test unit demo clean

deps:
	bash scripts/install-deps.sh

$(STAMP): setup.cfg setup.py
	@# A venv whose interpreter is gone (python upgraded, copied checkout) is rebuilt from scratch.
	@$(BIN)/python -c '' 2>/dev/null || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

test: deps venv
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

demo: deps venv
	bash examples/demo/run.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
