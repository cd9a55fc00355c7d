# The README's quickstart: `make run` and `make test` on a fresh machine
# (Python 3.11+, pip, make). Both create .venv on first use and are quick after.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean screenshot docs

$(STAMP): pyproject.toml tests/plugin/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet -e tests/plugin  # a third-party stage kind, for its test
	# Byte-compiled now, as a non-editable install would be: with
	# PYTHONDONTWRITEBYTECODE set, every start would compile flow's sources (~50 ms).
	$(BIN)/python -m compileall -q flow stages mocks
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flow run graph.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	./.ci/postgres  # PostgreSQL's server programs, for the postgres sink's tests (apt-get as root if missing)
	./.ci/chromium  # a headless browser, for the report's test (apt-get as root if missing)
	./.ci/json-server  # json-server 0.17.4 from npm, a real API for the paging detection tests
	./.ci/debian curl:curl ip:iproute2 redis-server:redis-server  # the README's curl examples; a cluster test's second address; budgets kept in Redis
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/mocks_throughput.py
	$(BIN)/python bench/mocks_memory.py
	$(BIN)/python bench/engine_overhead.py
	$(BIN)/python bench/telemetry_overhead.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/rate_floor.py
	$(BIN)/python bench/sinks.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/cluster.py  # in a network namespace of its own (unshare -n, as root): Ray listens widely

screenshot: $(STAMP)  # docs/report.png, the README's picture of the report: the default graph's run
	$(BIN)/python tests/browser.py --run graph.yaml --out docs/report.png

docs: $(STAMP)  # docs/stages.md, the stage reference, from the stage registry (a test keeps it current)
	$(BIN)/flow stages --format markdown --builtin > docs/stages.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis out
