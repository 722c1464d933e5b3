# The two commands of the README:
#   make demo   set everything up, then run the workflow on the bundled SDC1 data
#   make test   set everything up, then run the test suite
# Other targets: setup, postgis, slurm, report, bench, bench-fields, bench-detector, lint, dryrun, clean.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the workflow's shell rules call tools of the venv (torchrun)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test setup postgis slurm lint dryrun clean bench bench-fields bench-detector report

$(STAMP): requirements.txt requirements-torch.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	# torch and torchvision as one consistent pair from PyPI (CUDA builds that also
	# run on CPU), ignoring the machine's pip configuration: a local CPU-only torch
	# wheel cannot load PyPI's torchvision ("operator torchvision::nms does not exist").
	env -u PIP_FIND_LINKS -u PIP_CONSTRAINT $(BIN)/pip install --quiet --isolated -r requirements-torch.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, torchvision.ops as ops; ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5); print('torch', torch.__version__, 'torchvision', __import__('torchvision').__version__, 'cuda', torch.cuda.is_available())"
	$(BIN)/python -c "import radiodet, astropy, pycocotools, geoalchemy2, snakemake, ska_sdc, bdsf; print('python environment ready')"
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

# Single-node SLURM for the end-to-end scheduler test (Debian's slurm-wlm and
# munge; root only: the test starts the daemons itself and skips, saying why,
# where it cannot).
slurm:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then \
	  echo "SLURM found: $$(slurmctld -V)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing slurm-wlm and munge (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; \
	else \
	  echo "SLURM not installed and cannot install it here: its test will be skipped"; \
	fi

setup: $(STAMP) postgis

demo: setup
	$(BIN)/snakemake --cores $(CORES)
	@echo "COCO dataset: results/sdc1-demo/coco; previews: results/sdc1-demo/preview"
	@echo "scores: results/sdc1-demo/score/scores.csv"
	@cat results/sdc1-demo/score/scores.csv

test: setup slurm
	RADIODET_REQUIRE_POSTGIS=1 \
	RADIODET_REQUIRE_SLURM=$$( [ "$$(id -u)" = 0 ] && command -v slurmctld >/dev/null && echo 1 || echo 0) \
	$(BIN)/python -m pytest

CONFIGS := config/config.yaml config/sdc1-cpu.yaml config/sdc1-faster-rcnn.yaml config/sdc1.yaml config/sdc1-gpu.yaml config/lotss.yaml config/mgcls.yaml config/mirabest.yaml config/hipass.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	for c in $(CONFIGS); do $(BIN)/snakemake --lint --configfile $$c || exit 1; done

dryrun: $(STAMP)
	for c in $(CONFIGS); do $(BIN)/snakemake -n --quiet rules --configfile $$c || exit 1; done

# The HTML report of the demo run (runs whatever is missing first)
report: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/sdc1-demo/report.html
	@echo "report: results/sdc1-demo/report.html"

# Dataset stages on a synthetic SDC1-size field (generated once into benchmarks/):
# time, peak memory and throughput per stage at 1/16, 1/4 and the full area,
# next to this machine's disk speed; each field is then cut and viewed again in
# one job and compared with the run's (8 parts at full size), and cut and viewed
# once more in the same parts with nothing else running. SCALES="--scale 1/16"
# for a quick look. As root it drops the machine's page cache before each timed
# copy and run (BENCH_CACHE=warm keeps the image in memory instead).
SCALES ?= --scale 1/16 --scale 1/4 --scale 1
BENCH_CACHE ?= cold
bench: setup
	$(BIN)/python -m radiodet.bench_dataset $(SCALES) --workdir benchmarks --compare-one-job --alone \
		--cache $(BENCH_CACHE)

# Hundreds of overlapping LoTSS-like mosaics (simulated, small): dry-run time and
# DAG size of the whole workflow, then the dataset stages up to the index
# (ownership and join). FIELDS=50 for a quick look.
FIELDS ?= 200
bench-fields: setup
	$(BIN)/python -m radiodet.bench_fields --fields $(FIELDS) --workdir benchmarks

# A trained detector (make demo's, or MODEL=...) over the full-size synthetic
# field of `make bench` (32768^2 px, 5.25 M sources; generated once into
# benchmarks/): wall time, peak memory, megapixels/s, sources measured/s.
# SCALE=1/16 for a quick look.
MODEL ?= results/sdc1-demo/train/model.pth
SCALE ?= 1
bench-detector: $(STAMP)
	$(BIN)/python -m radiodet.detector.bench --model $(MODEL) --scale $(SCALE) --workdir benchmarks

clean:
	rm -rf results/sdc1-demo .snakemake
