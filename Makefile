# The two commands of the README:
#   make demo   set everything up, then run the workflow on the bundled SDC1 data
#   make test   set everything up, then run the test suite
# Other targets: setup, postgis, lint, dryrun, clean.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup postgis lint dryrun clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import radiodet, astropy, pycocotools, geoalchemy2, snakemake; print('python environment ready')"
	touch $(STAMP)

# PostgreSQL + PostGIS from Debian packages when missing (needs root); the
# workflow starts its own private server from these binaries unless
# database.url or PG* variables point at an existing PostGIS.
postgis:
	@if ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; then \
	  echo "PostGIS found: $$(ls /usr/share/postgresql/*/extension/postgis.control | head -1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing PostgreSQL 15 + PostGIS 3 (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-postgis-3 >/dev/null; \
	else \
	  echo "PostGIS is missing: install postgresql-15-postgis-3 (Debian) or set database.url in the config" >&2; \
	  exit 1; \
	fi

setup: $(STAMP) postgis

demo: setup
	$(BIN)/snakemake --cores $(CORES)
	@echo "COCO dataset: results/sdc1-demo/coco; previews: results/sdc1-demo/preview"

test: setup
	RADIODET_REQUIRE_POSTGIS=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/sdc1.yaml

dryrun: $(STAMP)
	$(BIN)/snakemake -n --quiet rules
	$(BIN)/snakemake -n --quiet rules --configfile config/sdc1.yaml

clean:
	rm -rf results/sdc1-demo .snakemake
