# genforecast: every target sets itself up (venv + editable install) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Trainer preset (configs/trainer/<name>.yaml): gpu when nvidia-smi sees a GPU, else cpu.
TRAINER ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
# Logger preset (configs/logger/<name>.yaml): W&B by default (offline without credentials).
LOGGER ?= wandb
DATA ?= data/demo
GENFORECAST := $(BIN)/genforecast
STUDY := $(GENFORECAST) study --trainer $(TRAINER) --logger $(LOGGER) --demo-root $(DATA)

.PHONY: install test test-slow lint docs demo-data clean \
	train-fashion train-framegan train-segforecast train-f2f train-joint \
	bench-fashion bench-framegan bench-segforecast bench-f2f bench-joint human-study cluster-up cluster-down \
	bench-eval bench-data bench-memory bench-overhead bench-gpu gpu-wheels

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -m "slow" -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The result tables of docs/ from the newest study of each paper (outputs/<family>/study/latest/results.json; a paper
# whose study has not run keeps docs/results/<family>.json).
docs: install
	$(BIN)/python -m genforecast.docs_tables --from-studies

demo-data: install
	$(GENFORECAST) demo-data --root $(DATA)

train-fashion: install
	$(STUDY) fashion

bench-fashion: install
	$(GENFORECAST) bench fashion

train-framegan: install
	$(STUDY) framegan

bench-framegan: install
	$(GENFORECAST) bench framegan

train-f2f: install
	$(STUDY) f2f

train-segforecast: install
	$(STUDY) segforecast

bench-segforecast: install
	$(GENFORECAST) bench segforecast

bench-f2f: install
	$(GENFORECAST) bench f2f

train-joint: install
	$(STUDY) joint

bench-joint: install
	$(GENFORECAST) bench joint

bench-eval: install
	$(GENFORECAST) bench eval

bench-data: install
	$(GENFORECAST) bench data

bench-memory: install
	$(GENFORECAST) bench memory

bench-overhead: install
	$(GENFORECAST) bench overhead

# Every GPU figure in one run of at most 8 minutes: outputs/bench/gpu_report.md and .json. The GPU machine has python
# 3.12 with torch, lightning, torchmetrics, opencv and scikit-image, but neither this venv nor a network: there
# `make bench-gpu` runs python3 and unpacks onto PYTHONPATH the wheels `make gpu-wheels` downloaded here (PyAV and
# cityscapesscripts, 36 MB: carry outputs/gpu_wheels along). Where this venv exists, it runs in it.
GPU_WHEELS ?= outputs/gpu_wheels
GPU_SITE ?= outputs/gpu_site
BENCH_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-wheels: install
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --dest $(GPU_WHEELS) av==18.1.0 cityscapesscripts==2.3.0

bench-gpu:
	@for wheel in $(wildcard $(GPU_WHEELS)/*.whl); do $(BENCH_PYTHON) -m zipfile -e $$wheel $(GPU_SITE); done
	PYTHONPATH=$(abspath $(GPU_SITE))$${PYTHONPATH:+:$$PYTHONPATH} $(BENCH_PYTHON) -m genforecast.bench.cli gpu

# DesIGN's human evaluation on the fashion demo checkpoints: trains them (make train-fashion's study) when they are
# missing, creates the study once (reused with its answers afterwards), serves it on 127.0.0.1 and prints the links.
HUMAN_STUDY ?= outputs/human_study/demo
HUMAN_STUDY_PORT ?= 8000
human-study: install
	$(GENFORECAST) human-study demo --check || $(STUDY) fashion
	$(GENFORECAST) human-study demo --demo-root $(DATA) --out $(HUMAN_STUDY)
	$(GENFORECAST) human-study serve $(HUMAN_STUDY) --port $(HUMAN_STUDY_PORT)

# A single-node SLURM on this machine (root; Debian's slurm-wlm and munge) to try cluster/train.sbatch locally:
#   make cluster-up && export SLURM_CONF=$(CURDIR)/.cluster/slurm.conf && sbatch cluster/train.sbatch ...
cluster-up:
	cluster/local_slurm.sh install
	cluster/local_slurm.sh start .cluster

cluster-down:
	cluster/local_slurm.sh stop .cluster

clean:
	rm -rf outputs lightning_logs .pytest_cache .ruff_cache .import_linter_cache
