# Each target does its own setup: a fresh machine needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.newsbias-installed
DATA ?= ../shared/data/allsides
DEMO_DIR ?= runs/demo

.PHONY: setup test test-all demo lint clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

demo: $(STAMP)
	bash scripts/demo.sh $(VENV) $(DATA) $(DEMO_DIR)

clean:
	rm -rf runs .pytest_cache
