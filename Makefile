# One entry point for people and CI. `make test` and `make demo` set everything up on a fresh
# Debian/Ubuntu machine with Python 3.11: the virtualenv, the packages, and Prometheus and
# Chromium for the integration tests (installed with apt when running as root).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test unit integration lint bench nab clean prometheus chromium bytecode

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

setup: $(STAMP) bytecode prometheus chromium

# The project's own modules compiled to bytecode, as pip does for an installed package: where
# PYTHONDONTWRITEBYTECODE is set, an editable install would otherwise compile every imported
# module from source at each start (a tenth of `aiops detect`). Only changed files are redone.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q agent detectors remediations simulations

# Debian's prometheus package (2.42) serves the integration tests; only root can install it.
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's prometheus for the integration tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "prometheus not installed and not root: Prometheus integration tests will be skipped"; fi

# Debian's chromium renders the replay report in the headless-browser test; only root can install it.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the report's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "chromium not installed and not root: the report's browser test will be skipped"; fi

# SEEDS=5 (aiops replay's default) gives each policy's mean and range over five seeds; the demo
# shows one, each scenario's own.
SEEDS ?= 1

# Replays the shipped incident scenarios against the twin cluster (no external services) and
# writes the report to ./report/ (index.html, a PNG and summary JSON per scenario). Exit 1 from
# the replay means some expectation was not met: the table says which; only invalid input fails.
demo: $(STAMP)
	$(BIN)/aiops replay --seeds $(SEEDS) --report report; test $$? -le 1

test: setup
	$(BIN)/pytest -m "not bench" tests

unit: $(STAMP)
	$(BIN)/pytest -m "not bench and not integration and not e2e" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy agent detectors remediations simulations tests
	$(BIN)/lint-imports

bench: setup
	mkdir -p bench-results
	$(BIN)/pytest -m bench -s -p no:cacheprovider tests/bench

# The Numenta Anomaly Benchmark: every built-in detector beside the published scoreboard.
NAB_DATA ?= ../shared/data/nab-dev

nab: $(STAMP)
	$(BIN)/aiops nab $(NAB_DATA)

clean:
	rm -rf $(VENV) bench-results report .pytest_cache .mypy_cache .ruff_cache
