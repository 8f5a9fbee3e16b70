# schnack: `make run` starts a server on localhost with zero configuration; `make test` runs every test.
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
WEBSTAMP := web/node_modules/.installed
PYTHON  ?= python3

.PHONY: run web test lint typecheck unit compiled unit-compiled bench bench-compare bench-micro bench-calls bench-cluster bench-tsung clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# converse.js for the web client at /web/ (web/package-lock.json); without npm the server runs
# without it and says so.
web: $(WEBSTAMP)

$(WEBSTAMP): web/package.json web/package-lock.json
	@if command -v npm >/dev/null; then \
		cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: no web client at /web/ (apt-get install npm, then make web)"; fi

run: $(STAMP) $(WEBSTAMP)
	$(BIN)/schnack serve $(if $(CONFIG),--config $(CONFIG))

# The message path compiled with mypyc (setup.py), in a package of its own laid over the editable
# install (PYTHONPATH=build/compiled): what a deployment built with SCHNACK_MYPYC=1 runs. Remade
# when a source changes; about a minute of CPU.
COMPILED := build/compiled
$(COMPILED)/.built: $(STAMP) setup.py pyproject.toml $(shell find src -name '*.py')
	rm -rf $(COMPILED)
	SCHNACK_MYPYC=1 $(BIN)/pip install -q --no-deps --no-build-isolation --target $(COMPILED) .
	touch $@

compiled: $(COMPILED)/.built

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(WEBSTAMP)
	$(BIN)/pytest -q

# The tests of the compiled modules' parts, run again on the compiled package.
unit-compiled: $(COMPILED)/.built
	PYTHONPATH=$(COMPILED) $(BIN)/pytest -q tests/xmpp tests/server tests/test_layers.py

test: lint typecheck unit unit-compiled

# schnack (compiled, as deployed) against Prosody (installed by .ci/system-packages); a few minutes;
# updates docs/benchmarks.md.
bench: $(COMPILED)/.built
	PYTHONPATH=$(COMPILED) $(BIN)/python -m bench.suite --write docs/benchmarks.md

# schnack, Prosody and ejabberd (apt-installed by .ci/bench-packages where missing, as root);
# about half an hour on 2 cores; updates docs/benchmarks.md.
bench-compare: $(COMPILED)/.built
	bash .ci/bench-packages
	PYTHONPATH=$(COMPILED) $(BIN)/python -m bench.suite --servers schnack,prosody,ejabberd --repeat 3 --write docs/benchmarks.md

# Parser, router and serializer microbenchmarks (pytest-benchmark); compare runs with
# `make bench-micro ARGS='--benchmark-compare'` (runs are kept in bench/results/micro).
bench-micro: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider bench/micro --benchmark-only --benchmark-autosave $(ARGS)

# Calls: a minute of espeak-ng conversation per profile and loss rate (0, 5, 10 %) through coturn
# and a lossy UDP proxy; bytes per minute, PESQ-WB, set-up time, delay (see docs/benchmarks.md).
bench-calls: $(STAMP)
	$(BIN)/python -m bench.calls $(ARGS)

# Cluster mode: messages/s and node CPU per message on 1, 2 and 3 nodes (local PostgreSQL and
# Redis), and the latency a hop between nodes adds; a few minutes (see docs/benchmarks.md).
bench-cluster: $(STAMP)
	$(BIN)/python -m bench.cluster $(ARGS)

# tsung (Debian's package) as a second, independent generator: login storm and 1:1 chat at a fixed
# rate against schnack, Prosody and ejabberd; a few minutes (see docs/benchmarks.md).
bench-tsung: $(STAMP)
	bash .ci/bench-packages
	$(BIN)/python -m bench.tsung $(ARGS)

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache web/node_modules
