# flashnpu: two commands set up a fresh machine and pass the tests:
#   make setup && make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= default

.PHONY: setup test test-fast verilog lint demo bench fuzz clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[torch]'
	touch $@

test: setup
	$(PY) -m pytest -q tests

# Only the fast tests (no Verilator builds).
test-fast: setup
	$(PY) -m pytest -q tests -m "not rtl"

verilog: setup
	$(VENV)/bin/flashnpu generate --config $(CONFIG) -o build/$(CONFIG)

lint: setup
	$(VENV)/bin/flashnpu lint --config $(CONFIG)

demo: setup
	$(VENV)/bin/flashnpu run attention --config default --seq 256 --head-dim 64 --heads 2 --causal

bench: setup
	$(VENV)/bin/flashnpu bench

# The seeded fuzz campaign, about 30 minutes: table on stdout, build/fuzz/report.json (docs: flashnpu/fuzz.py).
FUZZ_SECONDS ?= 1800
FUZZ_SEED ?= 1
fuzz: setup
	$(VENV)/bin/flashnpu fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) --out build/fuzz

clean:
	rm -rf build .pytest_cache
