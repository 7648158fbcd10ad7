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

.PHONY: deps venv lint test unit demo clean install uninstall

deps:
	bash scripts/install-deps.sh

$(STAMP): setup.cfg setup.py
	@# A venv whose interpreter is gone (python upgraded, copied checkout) is rebuilt from scratch.
	@$(BIN)/python -c '' 2>/dev/null || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

# Seconds, and it fails the build before any service starts: ruff (ruff.toml) and mypy (mypy.ini).
lint: venv
	$(BIN)/ruff check lbgen tests bench
	$(BIN)/mypy

test: deps venv lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

demo: deps venv
	bash examples/demo/run.sh

# A Debian 12 LB node or Docker host, as root (docs/install.md): a virtualenv in $(LBGEN_HOME),
# $(PREFIX)/bin/lbgen, the systemd units, the docs, example settings under $(SYSCONFDIR)/lbgen
# (an edited file there is never overwritten). Every path can be overridden on the command line.
PREFIX ?= /usr/local
LBGEN_HOME ?= /opt/lbgen
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
LBGEN_USER ?= lbgen
INSTALL_ENV = PREFIX='$(PREFIX)' LBGEN_HOME='$(LBGEN_HOME)' SYSCONFDIR='$(SYSCONFDIR)' \
	UNITDIR='$(UNITDIR)' LBGEN_USER='$(LBGEN_USER)' PYTHON='$(PYTHON)'

install:
	$(INSTALL_ENV) bash scripts/install.sh install

uninstall:
	$(INSTALL_ENV) bash scripts/install.sh uninstall

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The quick benchmarks (bench/README.md, about 7 minutes; agent_keys starts a private etcd): each writes bench/results/<scenario>.json
# (commit, machine, load average, figures), then the tables in bench/*.md are regenerated from them.
.PHONY: bench bench-scale bench-tables
bench: venv
	$(BIN)/python bench/startup_bench.py
	$(BIN)/python bench/decode_bench.py
	$(BIN)/python bench/render_bench.py --check
	$(BIN)/python bench/render_bench.py --change 15
	$(BIN)/python bench/render_bench.py --change 15 --ports 1
	$(BIN)/python bench/agent_keys_bench.py
	$(BIN)/python bench/tables.py

# 10,000 services in a private etcd through `lbgen watch` (about 3 minutes more; needs etcd).
bench-scale: venv
	$(BIN)/python bench/scale_bench.py
	$(BIN)/python bench/tables.py

bench-tables: venv
	$(BIN)/python bench/tables.py

# The system benchmarks (bench/system.md): docker run / etcd put → served, failed requests under
# wrk load during reloads, HAProxy runtime API vs reload, the agent. About 6 minutes; root (private
# dockerd) and wrk (apt-get install -y wrk). Each writes bench/results/<scenario>.json; the tables follow.
.PHONY: bench-system
bench-system: venv
	$(BIN)/python bench/e2e_bench.py
	$(BIN)/python bench/load_bench.py
	$(BIN)/python bench/haproxy_runtime_bench.py
	$(BIN)/python bench/agent_bench.py
	$(BIN)/python bench/tables.py
