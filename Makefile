# Each target does its own setup: a fresh machine needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.newsbias-installed
# The AllSides corpus: a clone of github.com/ramybaly/Article-Bias-Prediction, or a directory holding
# articles.jsonl.gz; data/allsides by default.
DATA ?= data/allsides
DEMO_DIR ?= runs/demo

.PHONY: setup test test-all lint demo demo-full clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

# the everyday suite (tiny models, small slices; 49-141 s on 2 cores by host, docs/benchmarks.md)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

# everything, `slow` tests included (the demo on a slice, torchrun, Chromium, hadolint, real GGUF): what CI runs
test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# pyflakes + bugbear over the code, tests and benchmarks (rules in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

demo: $(STAMP)
	bash scripts/demo.sh $(VENV) $(DATA) $(DEMO_DIR)

demo-full: $(STAMP)
	DEMO_PROFILE=full bash scripts/demo.sh $(VENV) $(DATA) runs/demo-full

clean:
	rm -rf runs .pytest_cache
